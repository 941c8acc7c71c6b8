// bench/hash_bench.cc — `hash_bench CHECKPOINT [REPEATS]`: HashCheckpoint throughput
// (positional reads + XXH3 of every tensor, page cache warm) against the buffered
// sequential read ceiling of the same shard files (bench/ceilings.h, 1 MiB blocks, the
// same block size HashCheckpoint uses by default), measured interleaved in the same run;
// best of REPEATS (default 5) each.
//
//   bazel build -c opt //bench:hash_bench //cli:shardload
//   bazel-bin/cli/shardload write-sample /tmp/ckpt --size 1GiB --shards 4 --no-sync
//   bazel-bin/bench/hash_bench /tmp/ckpt
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/ceilings.h"
#include "format/checksum.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"

int main(int argc, char** argv) {
  using namespace shardload;
  if (argc < 2) {
    std::fprintf(stderr, "usage: hash_bench CHECKPOINT [REPEATS]\n");
    return 2;
  }
  int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  if (repeats < 1) repeats = 1;
  Result<Checkpoint> ckpt = Checkpoint::Open(argv[1]);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "hash_bench: %s\n", ckpt.status().ToString().c_str());
    return 1;
  }
  std::vector<std::string> paths;
  uint64_t file_bytes = 0;
  for (const ShardInfo& s : ckpt->shards()) {
    paths.push_back(s.path);
    file_bytes += s.size;
  }
  double best_read = 0, best_hash = 0;
  uint64_t digest = 0;
  for (int i = 0; i < repeats + 1; ++i) {  // the first round warms the page cache
    Result<double> read = bench::MeasureBufferedReadGBps(paths, uint64_t{1} << 20);
    if (!read.ok()) {
      std::fprintf(stderr, "hash_bench: %s\n", read.status().ToString().c_str());
      return 1;
    }
    auto t0 = std::chrono::steady_clock::now();
    Result<CheckpointDigest> d = HashCheckpoint(*ckpt);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!d.ok()) {
      std::fprintf(stderr, "hash_bench: %s\n", d.status().ToString().c_str());
      return 1;
    }
    digest = LayoutFreeDigest(d->tensors);
    if (i == 0) continue;
    best_read = std::max(best_read, *read);
    best_hash = std::max(best_hash, static_cast<double>(ckpt->total_bytes()) / s / 1e9);
  }
  std::printf("checkpoint: %zu tensors, %llu tensor bytes in %zu files (%llu bytes), digest %s\n",
              ckpt->tensors().size(), static_cast<unsigned long long>(ckpt->total_bytes()),
              paths.size(), static_cast<unsigned long long>(file_bytes),
              FormatXxh3(digest).c_str());
  std::printf("buffered read ceiling (1 MiB blocks): %.2f GB/s\n", best_read);
  std::printf("HashCheckpoint:                       %.2f GB/s\n", best_hash);
  std::printf("ratio hash / read ceiling:            %.2f\n", best_hash / best_read);
  return 0;
}
