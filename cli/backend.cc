// cli/backend.cc — CliBackend(): the process-wide CUDA backend of the `shardload` command.
//
// The backend probes the CUDA runtime on first use; without a driver or device it
// reports 0 devices and host loads never touch CUDA. It lives until the process
// exits (deliberately never destroyed, so no CUDA call runs during static teardown,
// after the runtime may already have unloaded).
#include "cli/backend.h"

#include "cuda/cuda_backend.h"

namespace shardload::cli {

DeviceBackend* CliBackend() {
  static cuda::CudaBackend* const backend = new cuda::CudaBackend();
  return backend;
}

}  // namespace shardload::cli
