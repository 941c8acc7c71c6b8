// format/dtype.h — the safetensors element types.
//
// Provides `Dtype` (all 22 dtypes of the reference implementation), their exact
// case-sensitive names, bit widths, and checked byte-size arithmetic for a shape.
//
//   Result<Dtype> d = DtypeFromName("BF16");          // ok, Dtype::kBF16
//   DtypeBits(Dtype::kF4);                             // 4
//   Result<uint64_t> n = TensorByteSize(Dtype::kF32, Shape{4096, 4096});  // 67108864
//                                      // (Shape: format/shape.h)
#ifndef SHARDLOAD_FORMAT_DTYPE_H_
#define SHARDLOAD_FORMAT_DTYPE_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "format/status.h"

namespace shardload {

// Dtype: the element types of the safetensors format. The enumerators are in the
// reference's "increasing alignment" order, which the writer uses to lay out tensors
// (larger alignment first) so that every tensor is aligned to its element size.
enum class Dtype : uint8_t {
  kBOOL,
  kF4,
  kF6_E2M3,
  kF6_E3M2,
  kU8,
  kI8,
  kF8_E5M2,
  kF8_E4M3,
  kF8_E8M0,
  kF8_E4M3FNUZ,
  kF8_E5M2FNUZ,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kC64,
  kF64,
  kI64,
  kU64,
};

// kDtypeCount: the number of dtypes; `static_cast<Dtype>(i)` for i < kDtypeCount is valid.
inline constexpr int kDtypeCount = 22;

// DtypeName: the exact header string ("F32", "F8_E4M3FNUZ", ...). Never fails.
std::string_view DtypeName(Dtype dtype);

// DtypeFromName: the dtype whose exact (case-sensitive) name is `name`; anything
// else ("f32", "float32", "F128") is invalid_argument "unknown dtype 'f32'".
Result<Dtype> DtypeFromName(std::string_view name);

// DtypeBits: bits per element (4 for F4, 6 for F6_*, 8 ... 64).
int DtypeBits(Dtype dtype);

// DtypeAlignment: the alignment in bytes a tensor of this dtype gets from the writer
// (its element size, at least 1).
int DtypeAlignment(Dtype dtype);

// ElementCount: the product of the dimensions, 1 for a scalar ([]).
// Errors: out_of_range "overflow computing element count of shape [..]" on overflow.
Result<uint64_t> ElementCount(std::span<const uint64_t> shape);

// TensorByteSize: the number of bytes a tensor of `dtype` and `shape` occupies.
// Errors: out_of_range on overflow of elements × bits; invalid_argument
// "F4[3] is 12 bits, which does not end on a byte boundary" for sub-byte dtypes.
Result<uint64_t> TensorByteSize(Dtype dtype, std::span<const uint64_t> shape);

// ShapeToString: "[10, 5]" (and "[]" for a scalar).
std::string ShapeToString(std::span<const uint64_t> shape);

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_DTYPE_H_
