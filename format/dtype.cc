#include "format/dtype.h"

#include <array>
#include <string>

namespace shardload {
namespace {

struct DtypeRow {
  std::string_view name;
  int bits;
};

// Indexed by Dtype; the order must match the enum.
constexpr std::array<DtypeRow, kDtypeCount> kDtypes = {{
    {"BOOL", 8},         {"F4", 4},          {"F6_E2M3", 6},     {"F6_E3M2", 6},
    {"U8", 8},           {"I8", 8},          {"F8_E5M2", 8},     {"F8_E4M3", 8},
    {"F8_E8M0", 8},      {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},
    {"U16", 16},         {"F16", 16},        {"BF16", 16},       {"I32", 32},
    {"U32", 32},         {"F32", 32},        {"C64", 64},        {"F64", 64},
    {"I64", 64},         {"U64", 64},
}};

}  // namespace

std::string_view DtypeName(Dtype dtype) { return kDtypes[static_cast<int>(dtype)].name; }

int DtypeBits(Dtype dtype) { return kDtypes[static_cast<int>(dtype)].bits; }

int DtypeAlignment(Dtype dtype) {
  int bytes = DtypeBits(dtype) / 8;
  return bytes < 1 ? 1 : bytes;
}

Result<Dtype> DtypeFromName(std::string_view name) {
  for (int i = 0; i < kDtypeCount; ++i) {
    if (kDtypes[i].name == name) return static_cast<Dtype>(i);
  }
  return InvalidArgumentError("unknown dtype '" + std::string(name) + "'");
}

std::string ShapeToString(std::span<const uint64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "]";
  return s;
}

Result<uint64_t> ElementCount(std::span<const uint64_t> shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) {
      return OutOfRangeError("overflow computing element count of shape " + ShapeToString(shape));
    }
  }
  return n;
}

Result<uint64_t> TensorByteSize(Dtype dtype, std::span<const uint64_t> shape) {
  SL_ASSIGN_OR_RETURN(uint64_t elements, ElementCount(shape));
  uint64_t bits = 0;
  if (__builtin_mul_overflow(elements, static_cast<uint64_t>(DtypeBits(dtype)), &bits)) {
    return OutOfRangeError("overflow computing byte size of " + std::string(DtypeName(dtype)) +
                           ShapeToString(shape));
  }
  if (bits % 8 != 0) {
    return InvalidArgumentError(std::string(DtypeName(dtype)) + ShapeToString(shape) + " is " +
                                std::to_string(bits) +
                                " bits, which does not end on a byte boundary");
  }
  return bits / 8;
}

}  // namespace shardload
