// CUDA error codes → Status (see cuda/status.h).
#include "cuda/status.h"

#include <cuda_runtime_api.h>

#include <string>

#include "cuda/sticky_errors.h"

namespace shardload::cuda {

std::string CudaDeviceLabel(int device) { return "cuda:" + std::to_string(device); }

std::string CudaErrorName(int error) {
  const char* name = cudaGetErrorName(static_cast<cudaError_t>(error));
  std::string text = name == nullptr ? std::string() : std::string(name);
  if (text.empty() || text.rfind("cuda", 0) != 0) {
    return "cudaErrorUnknownCode(" + std::to_string(error) + ")";
  }
  return text;
}

std::string CudaErrorText(int error) {
  const char* text = cudaGetErrorString(static_cast<cudaError_t>(error));
  return text == nullptr ? std::string("unknown error") : std::string(text);
}

Status CudaCallStatus(int error, std::string_view call, int device) {
  if (error == cudaSuccess) return OkStatus();
  std::string message(call);
  if (device != kNoDevice) message += "(" + CudaDeviceLabel(device) + ")";
  message += ": " + CudaErrorName(error) + ": " + CudaErrorText(error);
  if (IsStickyCudaError(error)) {
    // Sticky: the device's context in this process fails every later call.
    return InternalError(message + " (a sticky error: CUDA on this device is unusable in "
                                   "this process until it restarts)");
  }
  switch (static_cast<cudaError_t>(error)) {
    case cudaErrorMemoryAllocation:
      return ResourceExhaustedError(std::move(message));
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInitializationError:
    case cudaErrorDevicesUnavailable:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorStubLibrary:              // only the driver's stub library is installed
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorSystemNotReady:           // a driver daemon (Fabric Manager) is not running
    case cudaErrorCudartUnloading:          // the process is exiting
      return UnavailableError(std::move(message));
    case cudaErrorInvalidValue:
    case cudaErrorInvalidDevice:
    case cudaErrorInvalidDevicePointer:
      return InvalidArgumentError(std::move(message));
    default:
      return InternalError(std::move(message));
  }
}

}  // namespace shardload::cuda
