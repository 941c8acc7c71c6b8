// cuda/cast.h — dtype conversions on the GPU (and the same arithmetic on the host).
//
// Provides the Dtype-level entry points over the conversion kernels: which pairs can
// be converted (`CanConvert`: any dtype to itself, and F32 / F16 / BF16 among each
// other) and `CastOnDevice` (enqueue a conversion on a stream). Host destinations use
// loader/cast.h, whose results the kernels' arithmetic (cuda/cast_math.h) matches bit
// for bit (tests/cuda_cast_math_test.cc). Rounding: to nearest, ties to even; NaN stays NaN (sign kept); overflow → ±inf.
//
//   SL_RETURN_IF_ERROR(CastOnDevice(Dtype::kF32, Dtype::kBF16, src_dev, dst_dev, n, stream));
//   SL_RETURN_IF_ERROR(stream.Synchronize());
#ifndef SHARDLOAD_CUDA_CAST_H_
#define SHARDLOAD_CUDA_CAST_H_

#include <cstdint>

#include "cuda/runtime.h"
#include "format/dtype.h"
#include "format/status.h"

namespace shardload::cuda {

// IsFloatCastDtype: F32, F16 or BF16.
bool IsFloatCastDtype(Dtype dtype);

// CanConvert: src == dst, or both are F32 / F16 / BF16.
bool CanConvert(Dtype src, Dtype dst);

// CastOnDevice: convert `count` elements of `src` (device memory of the stream's device,
// any alignment) into `dst` (same device, aligned to the dst element size, not
// overlapping src) on `stream`; returns once queued. src == dst dtypes is a
// cudaMemcpyAsync device-to-device. Errors: invalid_argument "cannot convert I32 to F32"
// or for a misaligned dst; the launch error naming the kernel and device. Errors of the
// kernel's execution appear at the stream's next synchronisation.
Status CastOnDevice(Dtype src_dtype, Dtype dst_dtype, const void* src, void* dst, uint64_t count,
                    const Stream& stream);

}  // namespace shardload::cuda

#endif  // SHARDLOAD_CUDA_CAST_H_
