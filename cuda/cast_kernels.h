// cuda/cast_kernels.h — launchers of the F32 / F16 / BF16 conversion kernels.
//
// Provides `LaunchCastKernel`, implemented in cuda/cast_kernels.cu (compiled by nvcc
// through a Bazel genrule into a static object). It enqueues one elementwise
// conversion on a stream and returns at once. The conversions are those of
// cuda/cast_math.h (round to nearest even, NaN kept). C++17 and free of CUDA headers
// so that both nvcc and the C++20 host code include it; higher-level code uses
// cuda/cast.h, which takes Dtype and returns Status.
//
//   int err = LaunchCastKernel(CastKind::kF32ToBf16, src, dst, count, stream);
//   if (err != 0) return CudaCallStatus(err, "cast kernel F32->BF16", device);
#ifndef SHARDLOAD_CUDA_CAST_KERNELS_H_
#define SHARDLOAD_CUDA_CAST_KERNELS_H_

#include <cstdint>

struct CUstream_st;

namespace shardload::cuda {

// CastKind: the six conversions among F32, F16 and BF16.
enum class CastKind : int {
  kF32ToF16 = 0,
  kF32ToBf16 = 1,
  kF16ToF32 = 2,
  kBf16ToF32 = 3,
  kF16ToBf16 = 4,
  kBf16ToF16 = 5,
};

// LaunchCastKernel: convert `count` elements from device memory `src` into device
// memory `dst` (which must not overlap) on `stream`, on the calling thread's current
// device (the stream's). `dst` must be aligned to its element size and `src`, `dst`
// non-null (cudaErrorInvalidValue, before any launch, otherwise); `src` may be at any
// byte. Before launching (not on those refusals) it clears the thread's last CUDA
// error, so the result is the launch's own: the cudaError_t as an int (0 = queued);
// errors of the kernel itself surface at the next synchronisation of the stream.
// count == 0 launches nothing. Thread safety: may be called concurrently (different or
// the same stream).
int LaunchCastKernel(CastKind kind, const void* src, void* dst, uint64_t count,
                     CUstream_st* stream);

}  // namespace shardload::cuda

#endif  // SHARDLOAD_CUDA_CAST_KERNELS_H_
