// cuda/status.h — CUDA runtime errors as shardload Status values.
//
// Provides `CudaCallStatus`, which turns the error code of one CUDA runtime call into
// a Status naming the call, the device and CUDA's own error name and text:
//   "cudaMemcpyAsync(cuda:0): cudaErrorInvalidValue: invalid argument".
// Out-of-memory errors become resource_exhausted; everything else internal (or
// unavailable when there is no driver or device). The header takes the error as an
// int so that it can be included without CUDA headers; pass a cudaError_t directly.
//
//   cudaError_t err = cudaMalloc(&p, n);
//   if (err != cudaSuccess) return CudaCallStatus(err, "cudaMalloc", 0);
//   SL_RETURN_IF_ERROR(CudaCallStatus(cudaStreamSynchronize(s), "cudaStreamSynchronize", 1));
#ifndef SHARDLOAD_CUDA_STATUS_H_
#define SHARDLOAD_CUDA_STATUS_H_

#include <string>
#include <string_view>

#include "format/status.h"

namespace shardload::cuda {

// kNoDevice: the device argument of CudaCallStatus for calls that concern no single
// device (cudaGetDeviceCount, cudaHostAlloc); the call is then named without "(cuda:N)".
inline constexpr int kNoDevice = -1;

// CudaDeviceLabel: "cuda:N" for index N. Never fails.
std::string CudaDeviceLabel(int device);

// CudaErrorName / CudaErrorText: CUDA's name ("cudaErrorInvalidValue") and description
// ("invalid argument") of an error code; "cudaErrorUnknownCode(N)" for a code the
// runtime does not know. Never fail; safe without a driver.
std::string CudaErrorName(int error);
std::string CudaErrorText(int error);

// CudaCallStatus: OK for cudaSuccess (0); otherwise
// "<call>(cuda:<device>): <error name>: <error text>" (without "(cuda:N)" when device
// is kNoDevice). Codes: cudaErrorMemoryAllocation → resource_exhausted;
// cudaErrorNoDevice / cudaErrorInsufficientDriver / driver-not-loaded style errors
// (also a stub driver library, a driver too old for the call, a driver daemon not
// running, the runtime unloading at exit) → unavailable; cudaErrorInvalidValue /
// cudaErrorInvalidDevice / cudaErrorInvalidDevicePointer → invalid_argument;
// anything else → internal. The sticky errors (illegal address, launch failure and
// timeout, misaligned address, illegal instruction, device assert, uncorrectable ECC...)
// end with " (a sticky error: CUDA on this device is unusable in this process until it
// restarts)". Thread safety: pure function.
Status CudaCallStatus(int error, std::string_view call, int device);

}  // namespace shardload::cuda

#endif  // SHARDLOAD_CUDA_STATUS_H_
