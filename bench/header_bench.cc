// bench/header_bench.cc — Google Benchmark suite for header and index parsing.
//
//   bazel build -c opt //bench:header_bench && bazel-bin/bench/header_bench
//
// BM_ParseHeader/N: ParseHeader of an in-memory wide header (bench/wide_header.h) with
// N tensors; bytes/s counts header bytes; freeing the result is not timed.
// BM_ReadHeaderFile/N: the same through a file in /tmp (open + fstat + 2 preads +
// parse + freeing the result, as a caller pays it; page cache warm). BM_ParseIndex/N: an
// index of N tensors over 40 shards. bench/header_compare.py runs the 100k case next
// to the Hugging Face reference and json.loads for bench/RESULTS.md.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "bench/wide_header.h"
#include "format/header.h"
#include "format/index.h"

namespace shardload::bench {
namespace {

void BM_ParseHeader(benchmark::State& state) {
  const uint64_t n = static_cast<uint64_t>(state.range(0));
  const std::string json = WideHeaderJson(n);
  const uint64_t file_size = 8 + json.size() + n * 8;
  for (auto _ : state) {
    Result<Header> h = ParseHeader(json, file_size, "wide.safetensors");
    if (!h.ok() || h->tensors.size() != n) {
      state.SkipWithError(h.ok() ? "wrong tensor count" : h.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(h->tensors.data());
    state.PauseTiming();  // freeing the result is not parsing
    h = Status(StatusCode::kCancelled, "freed");
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * json.size()));
  state.counters["tensors/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["header_MB"] = static_cast<double>(json.size()) / 1e6;
}
BENCHMARK(BM_ParseHeader)->Arg(400)->Arg(10'000)->Arg(100'000)->Unit(benchmark::kMillisecond);

void BM_ReadHeaderFile(benchmark::State& state) {
  const uint64_t n = static_cast<uint64_t>(state.range(0));
  const std::string path = "/tmp/shardload_header_bench_" + std::to_string(::getpid()) + ".safetensors";
  const std::string file = WideSafetensorsFile(n);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(file.data(), 1, file.size(), f) != file.size()) {
    if (f) std::fclose(f);
    state.SkipWithError("cannot write the benchmark file in /tmp");
    return;
  }
  std::fclose(f);
  for (auto _ : state) {
    Result<Header> h = ReadHeaderFile(path);
    if (!h.ok()) {
      state.SkipWithError(h.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(h->tensors.data());
  }
  std::remove(path.c_str());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (file.size() - n * 8)));
}
BENCHMARK(BM_ReadHeaderFile)->Arg(100'000)->Unit(benchmark::kMillisecond);

void BM_ParseIndex(benchmark::State& state) {
  const uint64_t n = static_cast<uint64_t>(state.range(0));
  const std::string json = WideIndexJson(n, 40);
  for (auto _ : state) {
    Result<ShardIndex> index = ParseIndex(json, "model.safetensors.index.json");
    if (!index.ok() || index->weight_map.size() != n) {
      state.SkipWithError(index.ok() ? "wrong entry count" : index.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(index->weight_map.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * json.size()));
}
BENCHMARK(BM_ParseIndex)->Arg(1'000)->Arg(100'000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace shardload::bench

BENCHMARK_MAIN();
