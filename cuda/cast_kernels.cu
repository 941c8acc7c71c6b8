// The F32 / F16 / BF16 conversion kernels (see cuda/cast_kernels.h). Built by nvcc
// from the genrule in cuda/BUILD.bazel.
#include "cuda/cast_kernels.h"

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cast_math.h"

namespace shardload::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint64_t kMaxBlocks = 65535ull * 8;

struct F32ToF16Op {
  __device__ uint16_t operator()(uint32_t x) const { return F32BitsToF16Bits(x); }
};
struct F32ToBf16Op {
  __device__ uint16_t operator()(uint32_t x) const { return F32BitsToBf16Bits(x); }
};
struct F16ToF32Op {
  __device__ uint32_t operator()(uint16_t x) const { return F16BitsToF32Bits(x); }
};
struct Bf16ToF32Op {
  __device__ uint32_t operator()(uint16_t x) const { return Bf16BitsToF32Bits(x); }
};
struct F16ToBf16Op {
  __device__ uint16_t operator()(uint16_t x) const { return F16BitsToBf16Bits(x); }
};
struct Bf16ToF16Op {
  __device__ uint16_t operator()(uint16_t x) const { return Bf16BitsToF16Bits(x); }
};

// LoadUnaligned: an element assembled from single bytes (little-endian, as the
// file stores it), for sources that are not aligned to their element size.
template <typename In>
__device__ __forceinline__ In LoadUnaligned(const unsigned char* p) {
  In v = 0;
#pragma unroll
  for (int b = 0; b < static_cast<int>(sizeof(In)); ++b) {
    v |= static_cast<In>(static_cast<In>(p[b]) << (8 * b));
  }
  return v;
}

// Grid-stride elementwise conversion with 64-bit indices. `kAlignedSrc` selects plain
// element loads; otherwise each element is assembled from bytes (a region of a span
// may start at any byte of a file whose writer did not align its tensors).
template <typename In, typename Out, typename Op, bool kAlignedSrc>
__global__ void CastKernel(const void* __restrict__ src, Out* __restrict__ dst, uint64_t count,
                           Op op) {
  const uint64_t stride = static_cast<uint64_t>(blockDim.x) * gridDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    In v;
    if constexpr (kAlignedSrc) {
      v = static_cast<const In*>(src)[i];
    } else {
      v = LoadUnaligned<In>(static_cast<const unsigned char*>(src) + i * sizeof(In));
    }
    dst[i] = op(v);
  }
}

template <typename In, typename Out, typename Op>
int Launch(const void* src, void* dst, uint64_t count, cudaStream_t stream) {
  // Refused before any launch: an invalid argument, not the sticky fault a misaligned
  // store in the kernel would be.
  if (reinterpret_cast<uintptr_t>(dst) % sizeof(Out) != 0) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  (void)cudaGetLastError();  // so that the check after the launch sees only the launch's
  uint64_t blocks = (count + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  if (reinterpret_cast<uintptr_t>(src) % sizeof(In) == 0) {
    CastKernel<In, Out, Op, true><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        src, static_cast<Out*>(dst), count, Op{});
  } else {
    CastKernel<In, Out, Op, false><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        src, static_cast<Out*>(dst), count, Op{});
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int LaunchCastKernel(CastKind kind, const void* src, void* dst, uint64_t count,
                     CUstream_st* stream) {
  if (count == 0) return static_cast<int>(cudaSuccess);
  if (src == nullptr || dst == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  switch (kind) {
    case CastKind::kF32ToF16:
      return Launch<uint32_t, uint16_t, F32ToF16Op>(src, dst, count, stream);
    case CastKind::kF32ToBf16:
      return Launch<uint32_t, uint16_t, F32ToBf16Op>(src, dst, count, stream);
    case CastKind::kF16ToF32:
      return Launch<uint16_t, uint32_t, F16ToF32Op>(src, dst, count, stream);
    case CastKind::kBf16ToF32:
      return Launch<uint16_t, uint32_t, Bf16ToF32Op>(src, dst, count, stream);
    case CastKind::kF16ToBf16:
      return Launch<uint16_t, uint16_t, F16ToBf16Op>(src, dst, count, stream);
    case CastKind::kBf16ToF16:
      return Launch<uint16_t, uint16_t, Bf16ToF16Op>(src, dst, count, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace shardload::cuda
