// bench/plan_bench.cc — Google Benchmark suite for key matching and load planning.
//
//   bazel build -c opt //bench:plan_bench && bazel-bin/bench/plan_bench
//
// The catalog is a Qwen3-30B-A3B-shaped MoE checkpoint described in memory (no file is
// written: matching and planning never touch data): 48 layers × 128 experts × 3
// projections of BF16[768, 2048] plus attention, norms, router, embedding and head,
// 18,867 tensors, ~61 GB over 16 shards.
//   BM_MatchMoe  Match() of the full model (strict, names as stored), targets in the
//                model's own order (numeric layer/expert order, not sorted by name).
//   BM_MatchMoeSorted  the same with targets sorted by name, as LoadInto gets them from
//                a LoadedCheckpoint (the `shardload bench` LoadInto case).
//   BM_MatchMoePrefix  the same with auto_prefix reconciling a "module." on every name.
//   BM_PlanMoe   MakePlan() of the match, default options (16 MiB − 8 KiB spans, 1 MiB gaps).
// Each reports `cpu_ms` (thread CPU time per call, robust on a busy machine) and
// `vs_memcpy_load`: that time as a fraction of copying
// the checkpoint's bytes at this machine's single-thread memcpy rate, measured in the
// same run (best of 5 copies of 256 MiB between pre-faulted buffers) — a floor for
// any page-cache load of that checkpoint.
#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "loader/match.h"
#include "loader/plan.h"

namespace shardload::bench {
namespace {

struct Model {
  std::vector<StoredTensor> stored;
  std::vector<Target> targets;
  uint64_t bytes = 0;
};

// MoeModel: the catalog (shards of at most ~4 GB, tensors tiled in name order per
// shard, as the Hugging Face sharder writes them) and matching targets.
Model MoeModel(const std::string& stored_prefix) {
  Model m;
  std::vector<std::pair<std::string, std::vector<uint64_t>>> specs;
  specs.push_back({"model.embed_tokens.weight", {151936, 2048}});
  for (int l = 0; l < 48; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({p + "input_layernorm.weight", {2048}});
    specs.push_back({p + "post_attention_layernorm.weight", {2048}});
    specs.push_back({p + "self_attn.q_proj.weight", {4096, 2048}});
    specs.push_back({p + "self_attn.k_proj.weight", {512, 2048}});
    specs.push_back({p + "self_attn.v_proj.weight", {512, 2048}});
    specs.push_back({p + "self_attn.o_proj.weight", {2048, 4096}});
    specs.push_back({p + "self_attn.q_norm.weight", {128}});
    specs.push_back({p + "self_attn.k_norm.weight", {128}});
    specs.push_back({p + "mlp.gate.weight", {128, 2048}});
    for (int e = 0; e < 128; ++e) {
      std::string x = p + "mlp.experts." + std::to_string(e) + ".";
      specs.push_back({x + "gate_proj.weight", {768, 2048}});
      specs.push_back({x + "up_proj.weight", {768, 2048}});
      specs.push_back({x + "down_proj.weight", {2048, 768}});
    }
  }
  specs.push_back({"model.norm.weight", {2048}});
  specs.push_back({"lm_head.weight", {151936, 2048}});
  const uint64_t kShardBytes = 4ull << 30;
  uint32_t shard = 0;
  uint64_t offset = 0;
  for (const auto& [name, shape] : specs) {
    uint64_t bytes = *TensorByteSize(Dtype::kBF16, shape);
    if (offset > 0 && offset + bytes > kShardBytes) {
      ++shard;
      offset = 0;
    }
    m.stored.push_back(StoredTensor{stored_prefix + name, Dtype::kBF16, shape, shard,
                                    100'000 + offset, bytes});
    m.targets.push_back(Target{name, Dtype::kBF16, shape});
    offset += bytes;
    m.bytes += bytes;
  }
  return m;
}

// ThreadCpuSeconds: CPU time of the calling thread.
double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// MemcpyBytesPerSecond: single-thread memcpy rate, measured once per run.
double MemcpyBytesPerSecond() {
  static const double rate = [] {
    const size_t bytes = 256u << 20;
    std::vector<char> src(bytes, 1), dst(bytes, 0);  // both pre-faulted by the fill
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
      auto start = std::chrono::steady_clock::now();
      std::memcpy(dst.data(), src.data(), bytes);
      benchmark::DoNotOptimize(dst.data());
      std::chrono::duration<double> t = std::chrono::steady_clock::now() - start;
      best = std::min(best, t.count());
    }
    return static_cast<double>(bytes) / best;
  }();
  return rate;
}

void Report(benchmark::State& state, double seconds, const Model& m) {
  double per = seconds / static_cast<double>(state.iterations());
  state.counters["tensors"] = static_cast<double>(m.stored.size());
  state.counters["cpu_ms"] = per * 1e3;
  double memcpy_rate = MemcpyBytesPerSecond();
  if (memcpy_rate > 0) {
    state.counters["memcpy_GBps"] = memcpy_rate / 1e9;
    state.counters["vs_memcpy_load"] = per / (static_cast<double>(m.bytes) / memcpy_rate);
  }
}

void MatchBench(benchmark::State& state, const std::string& prefix, bool auto_prefix,
                bool sorted_targets = false) {
  Model m = MoeModel(prefix);
  if (sorted_targets) {
    std::sort(m.targets.begin(), m.targets.end(),
              [](const Target& a, const Target& b) { return a.name < b.name; });
  }
  MatchOptions options;
  options.auto_prefix = auto_prefix;
  double start = ThreadCpuSeconds();
  for (auto _ : state) {
    Result<MatchReport> r = Match(m.stored, {}, m.targets, options);
    if (!r.ok() || !r->status.ok() || r->matched.size() != m.targets.size()) {
      state.SkipWithError("match failed");
      return;
    }
    benchmark::DoNotOptimize(r->matched.data());
  }
  Report(state, ThreadCpuSeconds() - start, m);
}

void BM_MatchMoe(benchmark::State& state) { MatchBench(state, "", false); }
BENCHMARK(BM_MatchMoe)->Unit(benchmark::kMillisecond);

void BM_MatchMoeSorted(benchmark::State& state) { MatchBench(state, "", false, true); }
BENCHMARK(BM_MatchMoeSorted)->Unit(benchmark::kMillisecond);

void BM_MatchMoePrefix(benchmark::State& state) { MatchBench(state, "module.", true); }
BENCHMARK(BM_MatchMoePrefix)->Unit(benchmark::kMillisecond);

void BM_PlanMoe(benchmark::State& state) {
  Model m = MoeModel("");
  Result<MatchReport> report = Match(m.stored, {}, m.targets, {});
  if (!report.ok() || !report->status.ok()) {
    state.SkipWithError("match failed");
    return;
  }
  DeviceMap devices(Device{Device::Kind::kCuda, 0});
  size_t spans = 0;
  double start = ThreadCpuSeconds();
  for (auto _ : state) {
    Result<LoadPlan> plan = MakePlan(m.stored, *report, m.targets, devices, {});
    if (!plan.ok()) {
      state.SkipWithError(plan.status().ToString().c_str());
      return;
    }
    spans = plan->spans.size();
    benchmark::DoNotOptimize(plan->spans.data());
  }
  Report(state, ThreadCpuSeconds() - start, m);
  state.counters["spans"] = static_cast<double>(spans);
  state.counters["GB"] = static_cast<double>(m.bytes) / 1e9;
}
BENCHMARK(BM_PlanMoe)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace shardload::bench

BENCHMARK_MAIN();
