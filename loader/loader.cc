// loader/loader.cc — LoadInto / LoadAll / VerifyCheckpoint: match → plan → arenas →
// sink → stream.
#include "loader/loader.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <unordered_set>
#include <utility>

#include "format/folder_lock.h"
#include "format/text.h"
#include "loader/checkpoint_hash.h"
#include "loader/stream_verifier.h"
#include "loader/host_sink.h"
#include "loader/parallel.h"
#include "loader/plan.h"
#include "loader/stream.h"

namespace shardload {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

IoMode ResolveIoMode(IoMode mode) { return mode == IoMode::kAuto ? kAutoIoMode : mode; }

// OpenShards: a ReadableFile for every shard some span reads (nullptr for the others),
// each checked against the layout its header was read from (CheckShardFile); `held[i]`,
// where given, is used for shard i (checked the same way, through its descriptor).
// When a load reads some held files and opens others, the held ones must still be the
// files their paths name (CheckStillAtPath, under the folder's lock that the opening
// takes too): a handle that kept a shard open across a rewrite of the same layout
// would otherwise mix that save's shard with the new save's others. A set `cancel`
// stops a wait for the folder's lock with cancelled "load cancelled".
Status OpenShards(const Checkpoint& ckpt, std::span<const ReadSpan> spans, IoMode mode,
                  const UringOptions& uring, std::span<const ReadableFile* const> held,
                  const std::atomic<bool>* cancel,
                  std::vector<std::unique_ptr<ReadableFile>>* owned,
                  std::vector<const ReadableFile*>* files) {
  const std::vector<ShardInfo>& shards = ckpt.shards();
  std::vector<bool> used(shards.size(), false);
  for (const ReadSpan& s : spans) {
    if (s.shard < used.size()) used[s.shard] = true;
  }
  // The shards no held file covers, opened together under the folder's lock.
  std::vector<bool> to_open = used;
  bool reads_held = false;
  for (size_t i = 0; i < held.size() && i < to_open.size(); ++i) {
    if (held[i] != nullptr && used[i]) reads_held = true;
    if (held[i] != nullptr) to_open[i] = false;
  }
  const bool opens_some = std::find(to_open.begin(), to_open.end(), true) != to_open.end();
  std::function<bool()> cancelled;
  if (cancel != nullptr) cancelled = [cancel] { return cancel->load(std::memory_order_relaxed); };
  auto as_load_cancel = [](Status s) {
    return s.code() == StatusCode::kCancelled ? CancelledError("load cancelled") : s;
  };
  if (reads_held && opens_some) {
    // One hold of the lock over the held files' check and the opening of the others.
    Result<FolderLock> lock =
        LockFolder(ckpt.folder(), FolderLock::kShared, kDefaultFolderLockWaitMs, cancelled);
    if (!lock.ok()) return as_load_cancel(lock.status());
    for (size_t i = 0; i < held.size() && i < used.size(); ++i) {
      if (held[i] != nullptr && used[i]) SL_RETURN_IF_ERROR(CheckStillAtPath(shards[i], *held[i]));
    }
    SL_RETURN_IF_ERROR(OpenShardFilesUnderLock(ckpt, to_open, mode, uring, owned));
  } else if (Status opened = OpenShardFiles(ckpt, to_open, mode, uring, owned, nullptr, cancelled);
             !opened.ok()) {
    return as_load_cancel(std::move(opened));
  }
  files->assign(shards.size(), nullptr);
  for (size_t i = 0; i < shards.size(); ++i) {
    if (!used[i]) continue;
    if (!to_open[i]) {
      SL_RETURN_IF_ERROR(CheckShardFile(shards[i], *held[i]));  // written to in place since?
      (*files)[i] = held[i];
    } else {
      (*files)[i] = (*owned)[i].get();
    }
  }
  return OkStatus();
}

// MakeSink: the host sink when every destination is on cpu, else the backend's.
Result<std::unique_ptr<Sink>> MakeSink(std::span<const Destination> destinations,
                                       const LoadOptions& options) {
  for (const Destination& d : destinations) {
    if (d.device.is_cpu()) continue;
    if (options.backend == nullptr) {
      return FailedPreconditionError("tensor " + QuoteNameForMessage(d.name) + " goes to " + d.device.ToString() +
                                     " but no device backend was given (LoadOptions::backend)");
    }
    return options.backend->MakeSink(options.sink);
  }
  SL_ASSIGN_OR_RETURN(std::unique_ptr<HostSink> host, HostSink::Create(options.sink));
  return std::unique_ptr<Sink>(std::move(host));
}

StreamOptions MakeStreamOptions(const Checkpoint& ckpt, const LoadOptions& options) {
  StreamOptions s;
  s.threads = options.threads;
  s.progress = options.progress;
  s.cancel = options.cancel;
  s.describe_span = [&ckpt](const ReadSpan& span) {
    return ckpt.DescribeBytes(span.shard, span.file_offset, span.file_offset + span.length);
  };
  return s;
}

// CheckCancel: cancelled "load cancelled" once options.cancel is set: checked before
// each costly step (arena allocation, opening shards), not only between spans.
Status CheckCancel(const LoadOptions& options) {
  if (options.cancel != nullptr && options.cancel->load()) return CancelledError("load cancelled");
  return OkStatus();
}

// HostDestinationsOverlap: whether the memory of two host destinations overlaps
// (LoadInto targets sharing a buffer: tied weights given twice).
bool HostDestinationsOverlap(std::span<const Destination> destinations) {
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;  // [begin, end)
  for (const Destination& d : destinations) {
    if (d.device.is_cuda() || d.ptr == nullptr || d.bytes == 0) continue;
    const auto begin = reinterpret_cast<uintptr_t>(d.ptr);
    ranges.emplace_back(begin, begin + d.bytes);  // d.bytes: at the destination dtype
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return true;
  }
  return false;
}

// Execute: begin the sink, open the shards and stream the plan.
Status Execute(const Checkpoint& ckpt, const LoadPlan& plan, const LoadOptions& options,
               const MatchReport& report, LoadStats* stats) {
  std::unique_ptr<StreamVerifier> verifier;
  StreamOptions stream_options = MakeStreamOptions(ckpt, options);
  if (options.verify) {
    if (report.matched.size() != plan.destinations.size()) {
      return InternalError("verify: the plan has " + std::to_string(plan.destinations.size()) +
                           " destinations for " + std::to_string(report.matched.size()) +
                           " matched tensors");
    }
    SL_ASSIGN_OR_RETURN(RecordedChecksums sums, RecordedChecksums::FromCheckpoint(ckpt));
    std::vector<StreamVerifier::Source> sources;
    sources.reserve(report.matched.size());
    for (const MatchedPair& m : report.matched) {
      const StoredTensor& stored = ckpt.tensors()[m.stored];
      sources.push_back({stored.name, stored.bytes});
    }
    verifier = std::make_unique<StreamVerifier>(std::move(sums), sources);
    stream_options.observe_region = verifier->Observer();
    // Bytes read straight into a destination are hashed there, after the read; another
    // reader filling an overlapping destination could change them in between and fail
    // an intact checkpoint. Overlapping targets go through the staging slots instead,
    // where each span is hashed before it is copied out.
    if (HostDestinationsOverlap(plan.destinations)) stream_options.allow_direct_targets = false;
  }
  SL_ASSIGN_OR_RETURN(std::unique_ptr<Sink> sink, MakeSink(plan.destinations, options));
  std::vector<std::unique_ptr<ReadableFile>> owned;
  std::vector<const ReadableFile*> files;
  stats->io = ResolveIoMode(options.io);
  stats->threads = StreamThreadCount(options.threads, plan.spans.size());
  SL_RETURN_IF_ERROR(CheckCancel(options));
  SL_RETURN_IF_ERROR(
      OpenShards(ckpt, plan.spans, stats->io, options.uring, options.shard_files, options.cancel,
                 &owned, &files));
  SL_RETURN_IF_ERROR(sink->Begin(plan.destinations, options.sink.slot_bytes));
  SL_RETURN_IF_ERROR(Stream(files, plan.spans, *sink, stream_options));
  stats->warnings = sink->Warnings();
  if (verifier != nullptr) {
    SL_RETURN_IF_ERROR(verifier->Finish());
    stats->verified = verifier->recorded();
  }
  stats->read_bytes = plan.read_bytes;
  stats->delivered_bytes = plan.delivered_bytes;
  stats->tensors = plan.destinations.size();
  return OkStatus();
}

// MatchAndPlan: validate, match (setting *report and *matched) and plan.
Result<LoadPlan> MatchAndPlan(const Checkpoint& ckpt, std::span<const Target> targets,
                              const LoadOptions& options, MatchReport* report, bool* matched) {
  SL_RETURN_IF_ERROR(ValidateLoadOptions(options));
  SL_ASSIGN_OR_RETURN(*report, Match(ckpt.tensors(), ckpt.metadata(), targets, options.match));
  *matched = true;
  if (!report->status.ok()) return report->status;
  PlanOptions plan_options;
  plan_options.max_span_bytes = options.sink.slot_bytes;
  plan_options.max_gap_bytes = options.max_gap_bytes;
  return MakePlan(ckpt.tensors(), *report, targets, options.devices, plan_options);
}

}  // namespace

Status ValidateLoadOptions(const LoadOptions& options) {
  if (options.threads < 0 || options.threads > 256) {
    return InvalidArgumentError("invalid threads " + std::to_string(options.threads) +
                                ": expected 0..256 (0 = hardware threads)");
  }
  SL_RETURN_IF_ERROR(ValidateUringOptions(options.uring));
  return ValidateSinkOptions(options.sink);
}

Result<std::vector<Target>> CheckpointTargets(const Checkpoint& checkpoint, const MatchOptions& match) {
  std::vector<Target> targets;
  targets.reserve(checkpoint.tensors().size());
  std::unordered_set<std::string> seen;
  for (const StoredTensor& t : checkpoint.tensors()) {
    std::string name = t.name;
    for (const RenameRule& rule : match.renames) {
      Result<std::string> renamed = rule.Apply(name);
      if (!renamed.ok()) {
        return renamed.status().WithPrefix("rename rule '" + rule.ToString() + "' on " + QuoteNameForMessage(t.name));
      }
      name = std::move(*renamed);
    }
    // Names the renames map together give one target: Match then reports the
    // collision (a second target of the same name would be "duplicate target name").
    if (!seen.insert(name).second) continue;
    targets.push_back(Target{std::move(name), t.dtype, t.shape, std::nullopt, nullptr});
  }
  return targets;
}

namespace {

// ZeroArenaPadding: zero every byte of `arena` that no cpu destination covers (the
// alignment padding), so a reused arena holds nothing of its previous load.
void ZeroArenaPadding(const HostArena& arena, std::span<const Destination> destinations) {
  std::vector<std::pair<std::byte*, uint64_t>> used;
  std::byte* begin = arena.data();
  std::byte* end = begin + arena.size();
  for (const Destination& d : destinations) {
    std::byte* p = static_cast<std::byte*>(d.ptr);
    if (d.device.is_cpu() && p >= begin && p < end) used.emplace_back(p, d.bytes);
  }
  std::sort(used.begin(), used.end());
  std::byte* at = begin;
  for (const auto& [p, n] : used) {
    if (p > at) std::memset(at, 0, static_cast<size_t>(p - at));
    at = std::max(at, p + n);
  }
  if (end > at) std::memset(at, 0, static_cast<size_t>(end - at));
}

}  // namespace

LoadedCheckpoint::~LoadedCheckpoint() = default;

const LoadedTensor* LoadedCheckpoint::Find(std::string_view name) const {
  auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                             [](const LoadedTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors.end() && it->name == name ? &*it : nullptr;
}

Result<LoadResult> LoadInto(const Checkpoint& checkpoint, std::span<const Target> targets,
                            const LoadOptions& options, std::optional<MatchReport>* failed_report) {
  Clock::time_point start = Clock::now();
  SL_RETURN_IF_ERROR(CheckCancel(options));
  LoadResult result;
  bool matched = false;
  auto run = [&]() -> Status {
    SL_ASSIGN_OR_RETURN(LoadPlan plan,
                        MatchAndPlan(checkpoint, targets, options, &result.report, &matched));
    for (const Destination& d : plan.destinations) {
      if (d.ptr == nullptr && d.bytes > 0) {
        return InvalidArgumentError("target " + QuoteNameForMessage(d.name) +
                                    " has no data pointer: LoadInto writes into caller memory "
                                    "(use LoadAll for loader-owned arenas)");
      }
    }
    return Execute(checkpoint, plan, options, result.report, &result);
  };
  if (Status s = run(); !s.ok()) {
    if (failed_report != nullptr && matched) failed_report->emplace(std::move(result.report));
    return s;
  }
  result.seconds = SecondsSince(start);
  return result;
}

Result<LoadedCheckpoint> LoadAll(const Checkpoint& checkpoint, const LoadOptions& options,
                                 std::span<const Target> targets,
                                 std::optional<MatchReport>* failed_report) {
  Clock::time_point start = Clock::now();
  SL_RETURN_IF_ERROR(CheckCancel(options));
  std::vector<Target> all;
  if (targets.empty()) {
    SL_ASSIGN_OR_RETURN(all, CheckpointTargets(checkpoint, options.match));
    targets = all;
  }
  for (const Target& t : targets) {
    if (t.data != nullptr) {
      return InvalidArgumentError("target " + QuoteNameForMessage(t.name) +
                                  " has a data pointer: LoadAll places tensors in its own "
                                  "arenas (use LoadInto for caller memory)");
    }
  }
  LoadedCheckpoint out;
  bool matched = false;
  auto run = [&]() -> Status {
    SL_ASSIGN_OR_RETURN(LoadPlan plan,
                        MatchAndPlan(checkpoint, targets, options, &out.report, &matched));
    SL_ASSIGN_OR_RETURN(ArenaLayout layout, LayoutArenas(plan.destinations, plan.spans, 256,
                                                         options.host_placement));
    std::map<Device, void*> bases;
    HostArenaOptions arena_options = options.host_arena;
    if (arena_options.cancel == nullptr) arena_options.cancel = options.cancel;
    const Clock::time_point arenas_start = Clock::now();
    for (const auto& [device, bytes] : layout.bytes_per_device) {
      SL_RETURN_IF_ERROR(CheckCancel(options));
      if (device.is_cpu()) {
        if (out.host_arena_ != nullptr) {  // MakePlan normalizes cpu devices: one arena
          return InternalError("a second host arena was laid out (" + device.ToString() + ")");
        }
        SL_ASSIGN_OR_RETURN(out.host_arena_, HostArena::Allocate(bytes, arena_options,
                                                                 options.host_arena_pool));
        bases[device] = out.host_arena_->data();
      } else {
        if (options.backend == nullptr) {
          return FailedPreconditionError("tensors go to " + device.ToString() +
                                         " but no device backend was given (LoadOptions::backend)");
        }
        SL_ASSIGN_OR_RETURN(std::unique_ptr<DeviceAllocation> a,
                            options.backend->Allocate(device, bytes));
        bases[device] = a->data();
        out.device_arenas_.push_back(std::move(a));
      }
    }
    out.arena_seconds = SecondsSince(arenas_start);
    SL_RETURN_IF_ERROR(AssignArenaPointers(layout, bases, &plan.destinations));
    if (out.host_arena_ != nullptr && out.host_arena_->reused()) {
      ZeroArenaPadding(*out.host_arena_, plan.destinations);
    }
    SL_RETURN_IF_ERROR(Execute(checkpoint, plan, options, out.report, &out));
    out.tensors.reserve(plan.destinations.size());
    for (size_t i = 0; i < plan.destinations.size(); ++i) {
      Destination& d = plan.destinations[i];
      const Target& t = targets[out.report.matched[i].target];
      out.tensors.push_back(
          LoadedTensor{std::move(d.name), d.dst_dtype, t.shape, d.device, d.ptr, d.bytes});
    }
    // Destinations follow report.matched, which Match sorts by target name, so this is
    // normally already in order; names are distinct, so skipping the sort then is exact.
    auto by_name = [](const LoadedTensor& a, const LoadedTensor& b) { return a.name < b.name; };
    if (!std::is_sorted(out.tensors.begin(), out.tensors.end(), by_name)) {
      std::sort(out.tensors.begin(), out.tensors.end(), by_name);
    }
    return OkStatus();
  };
  if (Status s = run(); !s.ok()) {
    if (failed_report != nullptr && matched) failed_report->emplace(std::move(out.report));
    return s;
  }
  out.seconds = SecondsSince(start);
  return out;
}

namespace {

// ReadOnlySink: a HostSink's staging ring whose commits deliver nothing. VerifyCheckpoint
// reads through it; its spans' regions exist only for the hashing observer.
class ReadOnlySink final : public Sink {
 public:
  explicit ReadOnlySink(std::unique_ptr<HostSink> ring) : ring_(std::move(ring)) {}
  Status Begin(std::span<const Destination>, uint64_t slot_bytes) override {
    return ring_->Begin({}, slot_bytes);
  }
  Result<StagingSlot> AcquireSlot() override { return ring_->AcquireSlot(); }
  Status Commit(const StagingSlot& slot, const ReadSpan&, std::span<const std::byte>) override {
    ring_->ReleaseSlot(slot);
    return OkStatus();
  }
  void ReleaseSlot(const StagingSlot& slot) override { ring_->ReleaseSlot(slot); }
  Status Finish() override { return ring_->Finish(); }
  void Abort() override { ring_->Abort(); }

 private:
  std::unique_ptr<HostSink> ring_;
};

// AddTensorRegions: a region, for the hashing observer, for each piece of a tensor in
// `span`. `tensors`: the span's shard's non-empty tensors by file offset; `next`: the
// first of them that may still overlap, advanced as the shard's spans go by in order;
// `base`: Checkpoint::tensors().data(), a tensor's position there being its
// destination index.
void AddTensorRegions(std::span<const StoredTensor* const> tensors, const StoredTensor* base,
                      size_t* next, ReadSpan* span) {
  const uint64_t begin = span->file_offset, end = begin + span->length;
  while (*next < tensors.size() && tensors[*next]->file_offset + tensors[*next]->bytes <= begin) {
    ++*next;
  }
  for (size_t k = *next; k < tensors.size() && tensors[k]->file_offset < end; ++k) {
    const StoredTensor& t = *tensors[k];
    const uint64_t from = std::max(begin, t.file_offset);
    const uint64_t to = std::min(end, t.file_offset + t.bytes);
    span->regions.push_back(CopyRegion{from - begin, to - from,
                                       static_cast<uint32_t>(&t - base),
                                       from - t.file_offset});
  }
}

}  // namespace

Result<VerifyReport> VerifyCheckpoint(const Checkpoint& checkpoint, const LoadOptions& options) {
  Clock::time_point start = Clock::now();
  SL_RETURN_IF_ERROR(ValidateLoadOptions(options));
  VerifyReport report;
  const std::vector<ShardInfo>& shards = checkpoint.shards();
  const std::vector<StoredTensor>& tensors = checkpoint.tensors();

  // With verify: a hashing observer over every tensor (destination i = tensors[i]).
  std::unique_ptr<StreamVerifier> verifier;
  StreamOptions stream_options = MakeStreamOptions(checkpoint, options);
  if (options.verify) {
    SL_ASSIGN_OR_RETURN(RecordedChecksums sums, RecordedChecksums::FromCheckpoint(checkpoint));
    if (sums.size() > 0) {
      std::vector<StreamVerifier::Source> sources;
      sources.reserve(tensors.size());
      for (const StoredTensor& t : tensors) sources.push_back({t.name, t.bytes});
      verifier = std::make_unique<StreamVerifier>(std::move(sums), sources, /*collect=*/true);
      stream_options.observe_region = verifier->Observer();
    }
  }

  // Spans of at most a slot over every byte of every file, delivering nothing. When
  // hashing, a span that would end inside a tensor ends before it instead (unless the
  // tensor starts the span): only tensors larger than a slot are split, and their
  // pieces are the only ones the verifier may have to hold until their turn.
  std::vector<ReadSpan> spans;
  const uint64_t step = options.sink.slot_bytes;
  std::vector<std::vector<const StoredTensor*>> in_files(shards.size());  // non-empty, by offset
  if (verifier != nullptr) {
    for (size_t k : checkpoint.FileOrder()) {
      if (tensors[k].bytes > 0) in_files[tensors[k].shard].push_back(&tensors[k]);
    }
  }
  for (uint32_t i = 0; i < shards.size(); ++i) {
    const std::vector<const StoredTensor*>& in_file = in_files[i];
    size_t next = 0, cut = 0;
    for (uint64_t at = 0, end = 0; at < shards[i].size; at = end) {
      end = at + std::min(step, shards[i].size - at);
      while (cut < in_file.size() && in_file[cut]->file_offset + in_file[cut]->bytes <= end) ++cut;
      if (cut < in_file.size() && in_file[cut]->file_offset < end && in_file[cut]->file_offset > at) {
        end = in_file[cut]->file_offset;  // the tensor that would be cut starts the next span
      }
      spans.push_back(ReadSpan{i, at, end - at, {}});
      if (verifier != nullptr) AddTensorRegions(in_file, tensors.data(), &next, &spans.back());
    }
    report.bytes += shards[i].size;
  }
  std::vector<std::unique_ptr<ReadableFile>> owned;
  std::vector<const ReadableFile*> files;
  SL_RETURN_IF_ERROR(
      OpenShards(checkpoint, spans, ResolveIoMode(options.io), options.uring, {}, options.cancel,
                 &owned, &files));
  SL_ASSIGN_OR_RETURN(std::unique_ptr<HostSink> ring, HostSink::Create(options.sink));
  ReadOnlySink sink(std::move(ring));
  SL_RETURN_IF_ERROR(sink.Begin({}, options.sink.slot_bytes));
  SL_RETURN_IF_ERROR(Stream(files, spans, sink, stream_options));
  if (verifier != nullptr) {
    SL_RETURN_IF_ERROR(verifier->Finish());
    report.recorded = verifier->recorded();
    report.mismatches = verifier->TakeMismatches();
  }
  // The files read must still have the size and header the catalog was built from
  // (checked through their descriptors: the stream has checked that their paths still
  // name them; the header bytes are compared even when the identity looks unchanged).
  for (uint32_t i = 0; i < shards.size(); ++i) {
    if (files[i] == nullptr) continue;
    uint64_t size = 0;
    std::optional<FileIdentity> now;
    SL_RETURN_IF_ERROR(files[i]->Stat(&size, &now));
    SL_RETURN_IF_ERROR(CheckShardFile(shards[i], *files[i], size, now));
    // CheckShardFile compared the header bytes if the identity changed; else compare
    // them here (a write in the same timestamp tick keeps the identity).
    if (!now.has_value() || *now == shards[i].identity) {
      SL_RETURN_IF_ERROR(CheckShardHeaderBytes(shards[i], *files[i]));
    }
  }
  report.files = shards.size();
  report.seconds = SecondsSince(start);
  return report;
}

}  // namespace shardload
