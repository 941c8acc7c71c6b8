// cli/backend.cc — CliBackend(): the process-wide CUDA backend of the `shardload` command.
//
// The backend probes the CUDA runtime on first use; without a driver or device it
// reports 0 devices and host loads never touch CUDA. It lives until the process
// exits (deliberately never destroyed, so no CUDA call runs during static teardown,
// after the runtime may already have unloaded).
#include "cli/backend.h"

#include "cuda/cuda_backend.h"
#include "cuda/runtime.h"

namespace shardload::cli {

namespace {

cuda::CudaBackend* Backend() {
  static cuda::CudaBackend* const backend = new cuda::CudaBackend();
  return backend;
}

}  // namespace

DeviceBackend* CliBackend() { return Backend(); }

uint64_t CliStagingBytes() { return Backend()->cached_staging_bytes(); }

bool CliStagingPinned() { return Backend()->cached_staging_is_pinned(); }

Status CliDeviceProbe() {
  (void)Backend()->DeviceCount();  // the probe runs once, on first use
  return cuda::ProbeStatus();
}

}  // namespace shardload::cli
