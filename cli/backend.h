// cli/backend.h — the one place the `shardload` command gets its device backend.
//
// Provides `CliBackend()`: the DeviceBackend used for `--device cuda[:N]`, or nullptr
// in a host-only build. The CUDA package wires `cuda::CudaBackend` in here
// (cli/backend.cc) and nowhere else.
//
//   DeviceBackend* backend = CliBackend();   // nullptr: cpu only
#ifndef SHARDLOAD_CLI_BACKEND_H_
#define SHARDLOAD_CLI_BACKEND_H_

#include "loader/backend.h"

namespace shardload::cli {

// CliBackend: the process-wide backend (created on first call, never destroyed before
// exit), or nullptr when this build has none. Thread-safe.
DeviceBackend* CliBackend();

}  // namespace shardload::cli

#endif  // SHARDLOAD_CLI_BACKEND_H_
