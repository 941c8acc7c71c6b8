// `shardload bench PATH [options]`: load throughput against ceilings measured in the
// same run.
//
// Ceilings: memcpy on every hardware thread; a buffered sequential read of the shards
// like `dd if=F of=/dev/null bs=16M` (page cache when hot); an O_DIRECT read of the
// shards with several requests in flight; and, for a cuda device, the backend's pinned
// host-to-device copy; for a cpu load, filling the same number of bytes of fresh
// anonymous memory (page faults and zeroing included), which bounds any load that
// allocates its result. The load is LoadAll (arena allocation included) repeated
// --repeat times; with --cold the page cache is dropped before each load (root only).
// Then, for a cpu load, LoadAll again through a HostArenaPool (a reload: the arena's
// memory is reused, as a server that reloads weights would; null in --json for cuda),
// and LoadInto existing buffers.
// LoadAll's binding ceiling is the lowest of memcpy (hot) or the O_DIRECT read (cold),
// the fresh-memory fill (cpu), and the H2D copy (cuda); the pooled LoadAll and LoadInto
// write memory that already exists, so theirs leaves the fresh-memory fill out.
// A cuda device that does not exist fails before anything is measured. Warnings of the
// catalog, and of the load (pinned staging refused), go to stderr as
// "shardload bench: warning: ...".
// Exit 1 on any error, 2 on bad usage.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "bench/ceilings.h"
#include "cli/backend.h"
#include "cli/commands.h"
#include "cli/load_common.h"
#include "format/text.h"
#include "loader/checkpoint.h"
#include "loader/loader.h"

namespace shardload::cli {
namespace {

constexpr char kBenchUsage[] =
    "usage: shardload bench PATH [--device cpu|cuda:N] [--io auto|pread|mmap|direct|uring] [--cold]\n"
    "                      [--repeat N] [--threads N] [--slots N] [--slot-size SIZE]\n"
    "                      [--placement aligned|file-phase] [--lenient-index]\n"
    "                      [--uring-depth N] [--uring-chunk SIZE] [--uring-direct] [--json]\n";

struct BenchArgs {
  std::string path;
  Device device;
  LoadOptions options;
  CatalogOptions catalog;  // --lenient-index: strict_index false
  bool cold = false;
  bool json = false;
  int repeat = 3;
};

Result<BenchArgs> ParseBenchArgs(const Args& args) {
  BenchArgs a;
  bool uring_flag = false;  // any --uring-* flag given
  FlagReader f(args);
  while (f.Next()) {
    if (f.IsPositional() && a.path.empty()) {
      a.path = f.arg();
    } else if (f.Is("--device")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      SL_ASSIGN_OR_RETURN(a.device, ParseDevice(v));
    } else if (f.Is("--io")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      SL_ASSIGN_OR_RETURN(a.options.io, ParseIoMode(v));
    } else if (f.Is("--placement")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      SL_ASSIGN_OR_RETURN(a.options.host_placement, ParseArenaPlacement(v));
    } else if (f.Is("--cold")) {
      SL_RETURN_IF_ERROR(f.NoValue());
      a.cold = true;
    } else if (f.Is("--lenient-index")) {
      SL_RETURN_IF_ERROR(f.NoValue());
      a.catalog.strict_index = false;
    } else if (f.Is("--json")) {
      SL_RETURN_IF_ERROR(f.NoValue());
      a.json = true;
    } else if (f.Is("--repeat")) {
      SL_ASSIGN_OR_RETURN(int64_t n, f.IntValue(1, 1000));
      a.repeat = static_cast<int>(n);
    } else if (f.Is("--threads")) {
      SL_ASSIGN_OR_RETURN(int64_t n, f.IntValue(0, 256));
      a.options.threads = static_cast<int>(n);
    } else if (Result<bool> sink = ParseSinkFlag(f, &a.options.sink); !sink.ok()) {
      return sink.status();
    } else if (*sink) {
      // --slots / --slot-size
    } else if (f.Is("--uring-depth")) {
      uring_flag = true;
      SL_ASSIGN_OR_RETURN(int64_t n, f.IntValue(1, 1024));
      a.options.uring.queue_depth = static_cast<int>(n);
    } else if (f.Is("--uring-chunk")) {
      uring_flag = true;
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      Result<uint64_t> bytes = ParseByteSize(v);  // "64KiB" as --slot-size takes it
      if (!bytes.ok() || *bytes < 4096 || *bytes > (uint64_t{1} << 30)) {
        return InvalidArgumentError("invalid --uring-chunk '" + v +
                                    "': expected a size in 4KiB..1GiB");
      }
      a.options.uring.chunk_bytes = *bytes;
    } else if (f.Is("--uring-direct")) {
      SL_RETURN_IF_ERROR(f.NoValue());
      uring_flag = true;
      a.options.uring.direct = true;
    } else {
      return f.Unexpected();
    }
  }
  if (a.path.empty()) return InvalidArgumentError("missing PATH");
  if (uring_flag && a.options.io != IoMode::kUring) {
    return InvalidArgumentError("--uring-depth, --uring-chunk and --uring-direct need --io uring");
  }
  SL_RETURN_IF_ERROR(ValidateUringOptions(a.options.uring));
  a.options.devices = DeviceMap(a.device);
  return a;
}

// Num: `v` with `decimals` decimals (3 for GB/s; 6 for seconds, so that a
// sub-millisecond time does not print as 0).
// Num: `v` with `decimals` decimals; "null" when it is not finite (a ratio over a
// ceiling of 0, which a run reading no bytes could measure), so --json stays JSON.
std::string Num(double v, int decimals = 3) {
  if (!std::isfinite(v)) return "null";
  char b[48];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

std::string OptNum(const Result<double>& v) { return v.ok() ? Num(*v) : "null"; }

// Failed: the error on stderr, and as {"error":{...}} on stdout under --json.
int Failed(bool json, const Status& s) {
  if (json) std::cout << "{\"error\":" << StatusJson(s) << "}\n";
  PrintError("bench", s);
  return 1;
}

// Progress: under --json, one line on stderr per number as soon as it is measured
// ("bench: <what> <GB/s>"), so a run stopped from outside (a time limit) still leaves
// what it measured; the report on stdout comes only at the end.
void Progress(const BenchArgs& a, const std::string& what, const Result<double>& gbps) {
  if (a.json) std::cerr << "bench: " << what << " " << OptNum(gbps) << " GB/s" << std::endl;
}

// Timed: the GB/s of `runs` calls of `once` (a callable returning Result<double>) after
// `warmups` untimed ones, each call preceded by a page-cache drop when `cold`. The
// first error of a drop or a call is returned. Each timed run goes to Progress as
// "<label> run N".
template <typename F>
Result<std::vector<double>> Timed(const BenchArgs& a, const std::string& label, int warmups,
                                  int runs, bool cold, F&& once) {
  std::vector<double> gbps;
  for (int i = 0; i < warmups + runs; ++i) {
    if (cold) SL_RETURN_IF_ERROR(bench::DropPageCache());
    SL_ASSIGN_OR_RETURN(double g, once());
    if (i >= warmups) {
      gbps.push_back(g);
      Progress(a, label + " run " + std::to_string(gbps.size()), g);
    }
  }
  return gbps;
}

int Run(const BenchArgs& a) {
  Result<Checkpoint> ckpt = OpenCheckpoint(a.path, a.catalog);
  if (!ckpt.ok()) return Failed(a.json, ckpt.status());
  PrintWarnings("bench", ckpt->warnings());
  std::vector<std::string> paths;
  for (const ShardInfo& s : ckpt->shards()) paths.push_back(s.path);
  LoadOptions options = a.options;
  if (a.device.is_cuda()) {
    options.backend = CliBackend();
    if (options.backend == nullptr) {
      return Failed(a.json, FailedPreconditionError(a.device.ToString() +
                                            " needs the CUDA backend, which this build lacks"));
    }
    // A missing device fails now, not after the ceilings (seconds, and a read of the
    // whole checkpoint): the error the load would give ("cuda:1: no such CUDA device
    // (1 device)").
    if (a.device.index >= options.backend->DeviceCount()) {
      Result<std::string> d = options.backend->DescribeDevice(a.device.index);
      return Failed(a.json, d.ok() ? InvalidArgumentError(a.device.ToString() + ": no such CUDA device")
                                   : d.status());
    }
  }
  if (a.cold) {
    if (Status s = bench::DropPageCache(); !s.ok()) return Failed(a.json, s);
  }

  // Ceilings, from this run.
  int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  Result<double> memcpy_gbps = bench::MeasureMemcpyGBps(hw, 256ull << 20, 5);
  // At most 4 GiB of O_DIRECT reads: a rate, not a full pass over a 16 GiB checkpoint.
  Result<double> direct_gbps = bench::MeasureDirectReadGBps(paths, 16ull << 20, 8, 4ull << 30);
  if (!a.cold) (void)bench::MeasureBufferedReadGBps(paths, 16ull << 20);  // warm the cache
  else if (Status s = bench::DropPageCache(); !s.ok()) return Failed(a.json, s);
  Result<double> dd_gbps = bench::MeasureBufferedReadGBps(paths, 16ull << 20);
  Result<double> fresh_gbps = UnimplementedError("not a cpu load");
  if (a.device.is_cpu()) fresh_gbps = bench::MeasureFreshMemoryGBps(hw, ckpt->total_bytes());
  Result<double> h2d_gbps = UnimplementedError("no cuda device asked for");
  if (a.device.is_cuda()) h2d_gbps = options.backend->MeasureHostToDeviceGBps(a.device, 256ull << 20, 5);
  for (const Result<double>* r : {&memcpy_gbps, &dd_gbps}) {
    if (!r->ok()) return Failed(a.json, r->status());
  }
  Progress(a, "ceiling memcpy", memcpy_gbps);
  Progress(a, "ceiling buffered_read", dd_gbps);
  Progress(a, "ceiling direct_read", direct_gbps);
  if (fresh_gbps.ok()) Progress(a, "ceiling fresh_memory", fresh_gbps);
  if (a.device.is_cuda()) Progress(a, "ceiling h2d", h2d_gbps);

  // What any of the loads below said about how it ran (each line once).
  std::vector<std::string> warnings;
  auto note = [&warnings](const LoadStats& stats) {
    for (const std::string& w : stats.warnings) {
      if (std::find(warnings.begin(), warnings.end(), w) == warnings.end()) warnings.push_back(w);
    }
  };

  // The load, repeated.
  LoadStats last;
  Result<std::vector<double>> runs = Timed(a, "LoadAll", 0, a.repeat, a.cold, [&]() -> Result<double> {
    SL_ASSIGN_OR_RETURN(LoadedCheckpoint loaded, LoadAll(*ckpt, options));
    note(loaded);
    last = loaded;
    return loaded.gbps();
  });
  if (!runs.ok()) return Failed(a.json, runs.status());
  double best = *std::max_element(runs->begin(), runs->end());
  double median = bench::Median(*runs);

  // A reload: LoadAll through a host pool, after one load that fills the pool (cpu
  // only: a cuda load's arena is device memory, which the pool does not hold).
  Result<double> pooled_median = UnimplementedError("not a cpu load");
  if (a.device.is_cpu()) {
    HostArenaPool pool;
    LoadOptions pooled = options;
    pooled.host_arena_pool = &pool;
    Result<std::vector<double>> pooled_runs =
        Timed(a, "pooled LoadAll", 1, a.repeat, a.cold, [&]() -> Result<double> {
          SL_ASSIGN_OR_RETURN(LoadedCheckpoint loaded, LoadAll(*ckpt, pooled));
          note(loaded);
          return loaded.gbps();
        });
    if (!pooled_runs.ok()) return Failed(a.json, pooled_runs.status());
    pooled_median = bench::Median(*pooled_runs);
  }

  // load_state_dict style: LoadInto buffers that already exist (the arena of one more
  // LoadAll, so the pages are faulted in), which leaves out the allocation.
  Result<LoadedCheckpoint> owner = LoadAll(*ckpt, options);
  if (!owner.ok()) return Failed(a.json, owner.status());
  note(*owner);
  std::vector<Target> targets;
  for (const LoadedTensor& t : owner->tensors) {
    targets.push_back(Target{t.name, t.dtype, t.shape, t.device, t.data});
  }
  Result<std::vector<double>> into_runs = Timed(a, "LoadInto", 0, a.repeat, a.cold, [&]() -> Result<double> {
    SL_ASSIGN_OR_RETURN(LoadResult r, LoadInto(*ckpt, targets, options));
    note(r);
    return r.gbps();
  });
  if (!into_runs.ok()) return Failed(a.json, into_runs.status());
  PrintWarnings("bench", warnings);
  double into_median = bench::Median(*into_runs);

  std::string reuse_binding = a.cold ? "direct_read" : "memcpy";
  double reuse_ceiling = a.cold ? (direct_gbps.ok() ? *direct_gbps : *dd_gbps) : *memcpy_gbps;
  if (a.cold && !direct_gbps.ok()) reuse_binding = "buffered_read";
  if (h2d_gbps.ok() && *h2d_gbps < reuse_ceiling) {
    reuse_binding = "h2d";
    reuse_ceiling = *h2d_gbps;
  }
  Result<double> pooled_fraction = pooled_median;
  if (pooled_median.ok()) pooled_fraction = *pooled_median / reuse_ceiling;
  std::string binding = reuse_binding;
  double ceiling = reuse_ceiling;
  if (fresh_gbps.ok() && *fresh_gbps < ceiling) {
    binding = "fresh_memory";
    ceiling = *fresh_gbps;
  }

  // The staging ring the loads used (slots + the 8 KiB O_DIRECT margin each), and for a
  // cuda load what the backend still holds: pinned memory stays within one ring.
  const uint64_t ring_bytes = RingBytes(options.sink);
  if (a.json) {
    std::string warnings_json;
    AppendJsonStringArray(&warnings_json, warnings);
    std::string o = "{\"files\":" + std::to_string(paths.size()) +
                    ",\"bytes\":" + std::to_string(last.delivered_bytes) +
                    ",\"device\":" + JsonQuoted(a.device.ToString()) +
                    ",\"io\":" + JsonQuoted(IoModeName(last.io)) +
                    ",\"threads\":" + std::to_string(last.threads) +
                    (last.io == IoMode::kUring
                         ? ",\"uring\":{\"queue_depth\":" + std::to_string(options.uring.queue_depth) +
                               ",\"chunk_bytes\":" + std::to_string(options.uring.chunk_bytes) +
                               ",\"direct\":" + (options.uring.direct ? "true" : "false") + "}"
                         : std::string()) +
                    ",\"cold\":" + (a.cold ? "true" : "false") +
                    ",\"placement\":" + JsonQuoted(ArenaPlacementName(options.host_placement)) +
                    ",\"ceilings\":{\"memcpy_gbps\":" + OptNum(memcpy_gbps) +
                    ",\"buffered_read_gbps\":" + OptNum(dd_gbps) +
                    ",\"direct_read_gbps\":" + OptNum(direct_gbps) +
                    ",\"fresh_memory_gbps\":" + OptNum(fresh_gbps) +
                    ",\"h2d_gbps\":" + OptNum(h2d_gbps) + "},\"runs_gbps\":[";
    for (size_t i = 0; i < runs->size(); ++i) o += (i ? "," : "") + Num((*runs)[i]);
    o += "],\"best_gbps\":" + Num(best) + ",\"median_gbps\":" + Num(median) +
         ",\"pooled_median_gbps\":" + OptNum(pooled_median) +
         ",\"load_into_median_gbps\":" + Num(into_median) +
         ",\"binding\":" + JsonQuoted(binding) + ",\"median_fraction_of_binding\":" +
         Num(median / ceiling) + ",\"median_vs_buffered_read\":" + Num(median / *dd_gbps) +
         ",\"reuse_binding\":" + JsonQuoted(reuse_binding) +
         ",\"pooled_fraction_of_binding\":" + OptNum(pooled_fraction) +
         ",\"load_into_fraction_of_binding\":" + Num(into_median / reuse_ceiling) +
         ",\"staging_bytes\":" + (a.device.is_cuda() ? std::to_string(CliStagingBytes()) : "null") +
         ",\"staging_pinned\":" +
         (a.device.is_cuda() ? (CliStagingPinned() ? "true" : "false") : "null") +
         ",\"warnings\":" + warnings_json +
         ",\"ring_bytes\":" + std::to_string(ring_bytes) +
         ",\"last_arena_seconds\":" + Num(last.arena_seconds, 6) +
         ",\"last_seconds\":" + Num(last.seconds, 6) +
         ",\"slots\":" + std::to_string(options.sink.slot_count) +
         ",\"slot_bytes\":" + std::to_string(options.sink.slot_bytes) + "}\n";
    std::cout << o;
    return 0;
  }
  std::printf("checkpoint: %s, %.3f GB of tensors (%s load, io %s, %s, %s%s)\n",
              Counted(paths.size(), "file").c_str(), last.delivered_bytes / 1e9,
              a.cold ? "cold" : "hot", std::string(IoModeName(last.io)).c_str(),
              Counted(last.threads, "thread").c_str(), a.device.ToString().c_str(),
              options.host_placement == ArenaPlacement::kFilePhase ? ", file-phase placement" : "");
  std::printf("ceilings (same run):\n");
  std::printf("  memcpy, %d threads           %8s GB/s\n", hw, Num(*memcpy_gbps).c_str());
  std::printf("  buffered read, bs=16M (dd)   %8s GB/s%s\n", Num(*dd_gbps).c_str(),
              a.cold ? " (cold)" : " (page cache)");
  std::printf("  O_DIRECT read, 8 in flight   %8s GB/s\n", OptNum(direct_gbps).c_str());
  if (a.device.is_cuda()) std::printf("  pinned H2D                   %8s GB/s\n", OptNum(h2d_gbps).c_str());
  if (fresh_gbps.ok()) std::printf("  fresh memory fill, %d threads %7s GB/s\n", hw, Num(*fresh_gbps).c_str());
  std::printf("load (LoadAll, arena included), %s: best %s GB/s, median %s GB/s\n",
              Counted(a.repeat, "run").c_str(), Num(best).c_str(), Num(median).c_str());
  std::printf("median = %.2f x the binding ceiling (%s), %.2f x the buffered read\n", median / ceiling,
              binding.c_str(), median / *dd_gbps);
  if (pooled_median.ok()) {
    std::printf("LoadAll reloading through a pool, median %s GB/s = %.2f x %s, %.2f x buffered read\n",
                Num(*pooled_median).c_str(), *pooled_fraction, reuse_binding.c_str(),
                *pooled_median / *dd_gbps);
  }
  std::printf("LoadInto existing buffers, median %s GB/s = %.2f x %s, %.2f x buffered read\n",
              Num(into_median).c_str(), into_median / reuse_ceiling, reuse_binding.c_str(),
              into_median / *dd_gbps);
  if (a.device.is_cuda()) {
    std::printf("staging held after the loads: %llu bytes, %s (the ring: %llu bytes)\n",
                static_cast<unsigned long long>(CliStagingBytes()),
                CliStagingPinned() ? "pinned" : "pageable: pinning was refused",
                static_cast<unsigned long long>(ring_bytes));
  }
  return 0;
}

}  // namespace

int RunBench(const Args& args) {
  for (const std::string& s : args) {
    if (s == "--help" || s == "-h") {
      std::cout << kBenchUsage;
      return 0;
    }
  }
  Result<BenchArgs> a = ParseBenchArgs(args);
  if (!a.ok()) return UsageError("bench", a.status(), kBenchUsage, args);
  return Run(*a);
}

}  // namespace shardload::cli
