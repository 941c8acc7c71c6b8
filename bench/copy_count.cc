// bench/copy_count.cc — how many cudaMemcpyAsync calls (and cast kernel launches) a GPU
// load makes, counted on the fake CUDA runtime (cuda/fake): a structural number, not a
// timing. Each call costs a few microseconds of host time on a real GPU, so the count
// per checkpoint says whether many small tensors multiply them.
//
//   bazel build //bench:copy_count
//   bazel-bin/bench/copy_count CHECKPOINT... [--slot-bytes N]
//
// Prints one line per checkpoint: tensors, bytes, copies, launches, copies per tensor.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/fake/fake_control.h"
#include "loader/checkpoint.h"
#include "loader/loader.h"

namespace shardload {
namespace {

int Main(int argc, char** argv) {
  std::vector<std::string> paths;
  LoadOptions options;
  options.devices = *ParseDeviceMap("cuda:0");
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--slot-bytes" && i + 1 < argc) {
      options.sink.slot_bytes = std::strtoull(argv[++i], nullptr, 10);
    } else if (!arg.empty() && arg[0] != '-') {
      paths.push_back(arg);
    } else {
      std::fprintf(stderr, "usage: copy_count CHECKPOINT... [--slot-bytes N]\n");
      return 2;
    }
  }
  if (paths.empty()) {
    std::fprintf(stderr, "usage: copy_count CHECKPOINT... [--slot-bytes N]\n");
    return 2;
  }
  cuda::fake::SetMaxDelayMicros(0);  // counts do not depend on timing
  for (const std::string& path : paths) {
    Result<Checkpoint> ckpt = Checkpoint::Open(path);
    if (!ckpt.ok()) {
      std::fprintf(stderr, "copy_count: %s\n", ckpt.status().ToString().c_str());
      return 1;
    }
    cuda::CudaBackend backend;
    options.backend = &backend;
    cuda::fake::ResetCounters();
    Result<LoadedCheckpoint> all = LoadAll(*ckpt, options);
    if (!all.ok()) {
      std::fprintf(stderr, "copy_count: %s\n", all.status().ToString().c_str());
      return 1;
    }
    const cuda::fake::Counters c = cuda::fake::Snapshot();
    std::printf("%s: tensors=%zu bytes=%llu slot_bytes=%llu copies=%llu launches=%llu "
                "copies_per_tensor=%.4f\n",
                path.c_str(), all->tensors.size(),
                static_cast<unsigned long long>(all->delivered_bytes),
                static_cast<unsigned long long>(options.sink.slot_bytes),
                static_cast<unsigned long long>(c.async_copies),
                static_cast<unsigned long long>(c.kernel_launches),
                static_cast<double>(c.async_copies) / static_cast<double>(all->tensors.size()));
  }
  return 0;
}

}  // namespace
}  // namespace shardload

int main(int argc, char** argv) { return shardload::Main(argc, argv); }
