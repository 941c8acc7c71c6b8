// cuda/sticky_errors.h — which CUDA errors leave a context unusable.
//
// Provides `IsStickyCudaError`, shared by cuda/status.cc (which words such errors) and
// the fake runtime (which poisons a device on them), so both keep one list.
//
//   if (IsStickyCudaError(err)) { /* every later call in this process fails */ }
#ifndef SHARDLOAD_CUDA_STICKY_ERRORS_H_
#define SHARDLOAD_CUDA_STICKY_ERRORS_H_

#include <cuda_runtime_api.h>

namespace shardload::cuda {

// IsStickyCudaError: whether `error` is one of the asynchronous faults after which the
// device's context fails every later call of the process (illegal address, launch
// failure and timeout, device assert, hardware stack error, illegal or misaligned
// access, invalid PC, uncorrectable ECC; and the codes CUDA 13's driver_types.h marks
// "the process must be terminated and relaunched": a contained error, a tensor memory
// leak, a terminated MPS client, an external device's error). Pure function.
inline bool IsStickyCudaError(int error) {
  switch (static_cast<cudaError_t>(error)) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
    case cudaErrorContained:
    case cudaErrorTensorMemoryLeak:
    case cudaErrorMpsClientTerminated:
    case cudaErrorExternalDevice:
      return true;
    default:
      return false;
  }
}

}  // namespace shardload::cuda

#endif  // SHARDLOAD_CUDA_STICKY_ERRORS_H_
