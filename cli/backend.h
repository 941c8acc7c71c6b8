// cli/backend.h — the one place the `shardload` command gets its device backend.
//
// Provides `CliBackend()`: the DeviceBackend used for `--device cuda[:N]`, always the
// process-wide `cuda::CudaBackend` (cli/backend.cc, the only place the command wires
// it in). Without a driver or device it reports 0 devices, and cuda loads fail with
// a clear error while cpu loads never touch CUDA.
//
//   DeviceBackend* backend = CliBackend();
//   ... loads ...
//   uint64_t held = CliStagingBytes();  // the cached staging ring
#ifndef SHARDLOAD_CLI_BACKEND_H_
#define SHARDLOAD_CLI_BACKEND_H_

#include <cstdint>

#include "format/status.h"
#include "loader/backend.h"

namespace shardload::cli {

// CliBackend: the process-wide backend (created on first call, never destroyed before
// exit); never nullptr. Thread-safe.
DeviceBackend* CliBackend();

// CliStagingBytes: the staging memory (pinned for cuda loads) that backend keeps now
// for the next load: one ring at most. Thread-safe.
uint64_t CliStagingBytes();

// CliStagingPinned: whether that memory is pinned (false when there is none, or when
// pinning was refused and the loads staged through pageable memory).
bool CliStagingPinned();

// CliDeviceProbe: why the backend sees no CUDA device (the CUDA probe's error, e.g.
// unavailable "cudaGetDeviceCount: cudaErrorInsufficientDriver: ..."), or OK when the
// probe succeeded. Thread-safe.
Status CliDeviceProbe();

}  // namespace shardload::cli

#endif  // SHARDLOAD_CLI_BACKEND_H_
