// examples/cpp_load.cc — the smallest C++ use of shardload: open a checkpoint (a
// .safetensors file, an index .json or a folder), load every tensor into host memory,
// print what arrived.
//
//   bazel build //examples:cpp_load && bazel-bin/examples/cpp_load /models/tiny
#include <cstdio>
#include <cstring>
#include <string>

#include "format/dtype.h"
#include "format/status.h"
#include "loader/checkpoint.h"
#include "loader/loader.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT\n", argv[0]);
    return 2;
  }
  shardload::Result<shardload::Checkpoint> ckpt = shardload::Checkpoint::Open(argv[1]);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "error: %s\n", ckpt.status().ToString().c_str());
    return 1;
  }
  shardload::Result<shardload::LoadedCheckpoint> loaded =
      shardload::LoadAll(*ckpt, shardload::LoadOptions{});
  if (!loaded.ok()) {
    std::fprintf(stderr, "error: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  // How the load ran, when there is something to say (a GPU load that could not pin its
  // staging memory): a server would log these.
  for (const std::string& w : loaded->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::printf("%zu shard(s), %zu tensor(s)\n", ckpt->shards().size(), loaded->tensors.size());
  for (const shardload::LoadedTensor& t : loaded->tensors) {
    std::printf("%s %s %s on %s", t.name.c_str(), std::string(shardload::DtypeName(t.dtype)).c_str(),
                shardload::ShapeToString(t.shape).c_str(), t.device.ToString().c_str());
    if (t.dtype == shardload::Dtype::kF32 && t.bytes >= sizeof(float)) {
      float first;
      std::memcpy(&first, t.data, sizeof first);  // data is a host pointer here
      std::printf(" first=%g", first);
    }
    std::printf("\n");
  }
  std::printf("loaded %llu bytes\n", static_cast<unsigned long long>(loaded->delivered_bytes));
  return 0;
}
