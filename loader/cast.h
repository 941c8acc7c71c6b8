// loader/cast.h — host dtype conversion between F32, F16 and BF16.
//
// Provides `CastSupported` and `CastElements`, used by the host sink when a target
// asks for a different floating-point dtype than the checkpoint stores. Narrowing
// rounds to nearest, ties to even; NaN stays NaN (quiet, sign kept), infinities and
// signed zeros are kept, values beyond the narrow range become infinity, and
// subnormals are produced and consumed exactly. Data is little-endian (the
// safetensors byte order) and may be unaligned.
//
//   if (CastSupported(Dtype::kBF16, Dtype::kF32))
//     SL_RETURN_IF_ERROR(CastElements(Dtype::kBF16, Dtype::kF32, in, n, out));
#ifndef SHARDLOAD_LOADER_CAST_H_
#define SHARDLOAD_LOADER_CAST_H_

#include <cstddef>
#include <cstdint>

#include "format/dtype.h"
#include "format/status.h"

namespace shardload {

// CastSupported: true when `src` can be delivered as `dst`: equal dtypes (a copy), or
// both among F32, F16 and BF16.
bool CastSupported(Dtype src, Dtype dst);

// CastElements: convert `count` elements at `in` (dtype `src`) to `out` (dtype `dst`).
// `in` and `out` must not overlap. Errors: invalid_argument "cannot cast F32 to I8"
// when !CastSupported(src, dst). Thread safety: reentrant.
Status CastElements(Dtype src, Dtype dst, const std::byte* in, uint64_t count, std::byte* out);

// Scalar conversions (exposed for tests and for the CUDA kernels' reference).
// F32ToF16Bits / F32ToBF16Bits round to nearest even; the widening ones are exact.
uint16_t F32ToF16Bits(float value);
uint16_t F32ToBF16Bits(float value);
float F16BitsToF32(uint16_t bits);
float BF16BitsToF32(uint16_t bits);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_CAST_H_
