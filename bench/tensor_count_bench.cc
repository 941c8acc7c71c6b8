// bench/tensor_count_bench.cc — does the number of tensors cost load rate? Two
// checkpoints of about the same bytes (e.g. an 18.8k-tensor MoE layout and a 156-tensor
// llama layout) loaded alternately in one process, so both see the same machine state.
//
//   bazel build -c opt //bench:tensor_count_bench
//   bazel-out/k8-opt/bin/bench/tensor_count_bench /tmp/moe_ckpt /tmp/shardload_host_ckpt 9
//
// Per round, for each checkpoint in turn: LoadInto the buffers of an earlier LoadAll
// (load_state_dict style; pages already faulted in), then LoadAll through a per-checkpoint
// HostArenaPool (a server's reload; round 0 fills the pool and is not counted); then the
// same two with ArenaPlacement::kFilePhase (LoadInto into a file-phase LoadAll's
// buffers, and a pooled file-phase LoadAll). Otherwise default LoadOptions (host, pread,
// hardware threads). Prints each checkpoint's shard data phases (the file offset of
// each shard's first tensor modulo 64: the copy out of the page cache is slower when
// source and destination differ there, see bench/RESULTS.md "File phase"), then the
// median and best GB/s of each and the ratio MANY / FEW (first / second argument);
// LoadStats::seconds covers the whole call: Match, MakePlan, arena placement, the
// reads and the copies.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bench/ceilings.h"
#include "loader/arena.h"
#include "loader/checkpoint.h"
#include "loader/loader.h"

namespace shardload::bench {
namespace {

// Case: one checkpoint, the arena its LoadInto targets point into, and the samples.
struct Case {
  std::string path;
  std::optional<Checkpoint> checkpoint;  // set once opened (no default constructor)
  LoadedCheckpoint owner;        // aligned layout
  LoadedCheckpoint phase_owner;  // file-phase layout
  std::vector<Target> targets;
  std::vector<Target> phase_targets;
  HostArenaPool pool;
  HostArenaPool phase_pool;
  std::string phases;  // shard data phases mod 64, e.g. "24 32 48 24"
  std::vector<double> into_gbps;
  std::vector<double> pooled_gbps;
  std::vector<double> into_phase_gbps;
  std::vector<double> pooled_phase_gbps;
};

// TargetsInto: one target per tensor of `loaded`, pointing at its memory.
std::vector<Target> TargetsInto(const LoadedCheckpoint& loaded) {
  std::vector<Target> out;
  for (const LoadedTensor& t : loaded.tensors) {
    out.push_back(Target{t.name, t.dtype, t.shape, t.device, t.data});
  }
  return out;
}

// ShardPhases: each shard's smallest tensor file offset modulo 64, space-separated.
std::string ShardPhases(const Checkpoint& checkpoint) {
  std::vector<uint64_t> first(checkpoint.shards().size(), UINT64_MAX);
  for (const StoredTensor& t : checkpoint.tensors()) {
    first[t.shard] = std::min(first[t.shard], t.file_offset);
  }
  std::string out;
  for (uint64_t f : first) {
    if (!out.empty()) out += ' ';
    out += f == UINT64_MAX ? "-" : std::to_string(f % 64);
  }
  return out;
}

double Best(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

int Fail(const std::string& what, const Status& status) {
  std::fprintf(stderr, "tensor_count_bench: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 1;
}

int Run(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: tensor_count_bench MANY_TENSORS_CKPT FEW_TENSORS_CKPT ROUNDS\n");
    return 2;
  }
  const int rounds = std::atoi(argv[3]);
  if (rounds < 2 || rounds > 1000) {
    std::fprintf(stderr, "tensor_count_bench: ROUNDS must be in 2..1000, got '%s'\n", argv[3]);
    return 2;
  }
  std::vector<std::unique_ptr<Case>> cases;
  for (int i = 1; i <= 2; ++i) {
    auto c = std::make_unique<Case>();
    c->path = argv[i];
    Result<Checkpoint> checkpoint = Checkpoint::Open(c->path);
    if (!checkpoint.ok()) return Fail(c->path, checkpoint.status());
    c->checkpoint = std::move(*checkpoint);
    Result<LoadedCheckpoint> owner = LoadAll(*c->checkpoint, LoadOptions{});
    if (!owner.ok()) return Fail(c->path, owner.status());
    c->owner = std::move(*owner);
    c->targets = TargetsInto(c->owner);
    LoadOptions phase;
    phase.host_placement = ArenaPlacement::kFilePhase;
    Result<LoadedCheckpoint> phase_owner = LoadAll(*c->checkpoint, phase);
    if (!phase_owner.ok()) return Fail(c->path, phase_owner.status());
    c->phase_owner = std::move(*phase_owner);
    c->phase_targets = TargetsInto(c->phase_owner);
    c->phases = ShardPhases(*c->checkpoint);
    cases.push_back(std::move(c));
  }
  for (int r = 0; r < rounds; ++r) {
    for (auto& c : cases) {
      Result<LoadResult> into = LoadInto(*c->checkpoint, c->targets, LoadOptions{});
      if (!into.ok()) return Fail(c->path, into.status());
      c->into_gbps.push_back(into->gbps());
      LoadOptions pooled;
      pooled.host_arena_pool = &c->pool;
      Result<LoadedCheckpoint> loaded = LoadAll(*c->checkpoint, pooled);
      if (!loaded.ok()) return Fail(c->path, loaded.status());
      if (r > 0) c->pooled_gbps.push_back(loaded->gbps());

      Result<LoadResult> into_phase = LoadInto(*c->checkpoint, c->phase_targets, LoadOptions{});
      if (!into_phase.ok()) return Fail(c->path, into_phase.status());
      c->into_phase_gbps.push_back(into_phase->gbps());
      LoadOptions pooled_phase;
      pooled_phase.host_arena_pool = &c->phase_pool;
      pooled_phase.host_placement = ArenaPlacement::kFilePhase;
      Result<LoadedCheckpoint> phase_loaded = LoadAll(*c->checkpoint, pooled_phase);
      if (!phase_loaded.ok()) return Fail(c->path, phase_loaded.status());
      if (r > 0) c->pooled_phase_gbps.push_back(phase_loaded->gbps());
    }
  }
  const Case& many = *cases[0];
  const Case& few = *cases[1];
  std::printf("%s: %zu tensors, shard phases %s; %s: %zu tensors, shard phases %s; %d rounds\n",
              many.path.c_str(), many.targets.size(), many.phases.c_str(), few.path.c_str(),
              few.targets.size(), few.phases.c_str(), rounds);
  auto line = [](const char* what, const std::vector<double>& a, const std::vector<double>& b) {
    std::printf("%-16s median %6.2f / %6.2f GB/s = %.3f   best %6.2f / %6.2f GB/s = %.3f\n", what,
                Median(a), Median(b), Median(a) / Median(b), Best(a), Best(b), Best(a) / Best(b));
  };
  line("LoadInto", many.into_gbps, few.into_gbps);
  line("pooled LoadAll", many.pooled_gbps, few.pooled_gbps);
  line("LoadInto phase", many.into_phase_gbps, few.into_phase_gbps);
  line("pooled phase", many.pooled_phase_gbps, few.pooled_phase_gbps);
  return 0;
}

}  // namespace
}  // namespace shardload::bench

int main(int argc, char** argv) { return shardload::bench::Run(argc, argv); }
