// Dtype-level casts over the kernels (see cuda/cast.h).
#include "cuda/cast.h"

#include <cuda_runtime_api.h>

#include <string>

#include "cuda/cast_kernels.h"
#include "cuda/status.h"

namespace shardload::cuda {
namespace {

Status CannotConvert(Dtype src, Dtype dst) {
  return InvalidArgumentError("cannot convert " + std::string(DtypeName(src)) + " to " +
                              std::string(DtypeName(dst)) +
                              " (only F32, F16 and BF16 convert among each other)");
}

Result<CastKind> KindFor(Dtype src, Dtype dst) {
  if (src == Dtype::kF32 && dst == Dtype::kF16) return CastKind::kF32ToF16;
  if (src == Dtype::kF32 && dst == Dtype::kBF16) return CastKind::kF32ToBf16;
  if (src == Dtype::kF16 && dst == Dtype::kF32) return CastKind::kF16ToF32;
  if (src == Dtype::kBF16 && dst == Dtype::kF32) return CastKind::kBf16ToF32;
  if (src == Dtype::kF16 && dst == Dtype::kBF16) return CastKind::kF16ToBf16;
  if (src == Dtype::kBF16 && dst == Dtype::kF16) return CastKind::kBf16ToF16;
  return CannotConvert(src, dst);
}

}  // namespace

bool IsFloatCastDtype(Dtype dtype) {
  return dtype == Dtype::kF32 || dtype == Dtype::kF16 || dtype == Dtype::kBF16;
}

bool CanConvert(Dtype src, Dtype dst) {
  return src == dst || (IsFloatCastDtype(src) && IsFloatCastDtype(dst));
}

Status CastOnDevice(Dtype src_dtype, Dtype dst_dtype, const void* src, void* dst, uint64_t count,
                    const Stream& stream) {
  if (!CanConvert(src_dtype, dst_dtype)) return CannotConvert(src_dtype, dst_dtype);
  if (count == 0) return OkStatus();
  const uint64_t src_elem = static_cast<uint64_t>(DtypeBits(src_dtype)) / 8;
  const uint64_t dst_elem = static_cast<uint64_t>(DtypeBits(dst_dtype)) / 8;
  if (src_elem == 0 || count > UINT64_MAX / (src_elem > dst_elem ? src_elem : dst_elem)) {
    return InvalidArgumentError("cast of " + std::to_string(count) + " elements overflows");
  }
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(stream.device()));
  if (src_dtype == dst_dtype) {
    cudaError_t err = cudaMemcpyAsync(dst, src, count * src_elem, cudaMemcpyDeviceToDevice,
                                      stream.get());
    if (err != cudaSuccess) (void)cudaGetLastError();
    return CudaCallStatus(err, "cudaMemcpyAsync", stream.device());
  }
  if (reinterpret_cast<uintptr_t>(dst) % dst_elem != 0) {
    return InvalidArgumentError("cast destination " + std::to_string(reinterpret_cast<uintptr_t>(dst)) +
                                " is not aligned to " + std::string(DtypeName(dst_dtype)) +
                                " elements");
  }
  SL_ASSIGN_OR_RETURN(CastKind kind, KindFor(src_dtype, dst_dtype));
  const int err = LaunchCastKernel(kind, src, dst, count, stream.get());
  return CudaCallStatus(err,
                        "cast kernel " + std::string(DtypeName(src_dtype)) + "->" +
                            std::string(DtypeName(dst_dtype)),
                        stream.device());
}

}  // namespace shardload::cuda
