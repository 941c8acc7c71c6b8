// bench/checksum_bench.cc — XXH3-64 throughput against the memory-copy ceiling measured
// in the same run, on cache-resident (1 MiB) and memory-bound (256 MiB) buffers.
//
//   bazel build -c opt //bench:checksum_bench && bazel-bin/bench/checksum_bench
// The ratio that matters: BM_Xxh3 bytes/s ÷ BM_Memcpy bytes/s at the same size (hashing
// reads each byte once; memcpy reads and writes it, so a ratio near or above 1 means
// hashing while loading costs no more than the copy it rides along with).
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "format/checksum.h"

namespace {

std::vector<std::byte> Buffer(size_t n) {
  std::vector<std::byte> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = static_cast<std::byte>((i * 131) >> 3);
  return buf;
}

void BM_Memcpy(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<std::byte> src = Buffer(n), dst(n);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}

void BM_Xxh3(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<std::byte> src = Buffer(n);
  for (auto _ : state) benchmark::DoNotOptimize(shardload::Xxh3(src));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}

// Streaming in 1 MiB pieces, as HashCheckpoint reads by default.
void BM_Xxh3Streaming1MiB(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<std::byte> src = Buffer(n);
  const size_t piece = size_t{1} << 20;
  for (auto _ : state) {
    shardload::Xxh3Hasher h;
    for (size_t pos = 0; pos < n; pos += piece) {
      h.Update(std::span(src).subspan(pos, std::min(piece, n - pos)));
    }
    benchmark::DoNotOptimize(h.Digest());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}

BENCHMARK(BM_Memcpy)->Arg(1 << 20)->Arg(256 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Xxh3)->Arg(1 << 20)->Arg(256 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Xxh3Streaming1MiB)->Arg(256 << 20)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
