// loader/loader.h — the public façade: load a checkpoint into memory, PyTorch style.
//
// Provides `LoadOptions`, `LoadInto` (load_state_dict style: into buffers the caller
// owns), `LoadAll` (load_file style: into arenas the loader owns, one per device, with
// tensors as views) and `VerifyCheckpoint` (read every byte of every shard through the
// same pipeline). All three stream planned, coalesced reads on several threads into a
// sink (host memory, or a device through LoadOptions::backend) and never report partial
// success: on any error or cancel nothing may be assumed written.
//
//   SL_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open("/models/llama-8b"));
//
//   // load_file: every tensor into a host arena.
//   SL_ASSIGN_OR_RETURN(LoadedCheckpoint all, LoadAll(ckpt, LoadOptions{}));
//   const LoadedTensor* w = all.Find("lm_head.weight");   // w->data, w->dtype, w->shape
//
//   // load_state_dict: into the model's own buffers, non-strict, stripping "module.".
//   std::vector<Target> targets = {{"lm_head.weight", Dtype::kBF16, {32000, 4096},
//                                   std::nullopt, my_buffer}};
//   LoadOptions options;
//   options.match.strict = false;
//   options.match.renames.push_back(*ParseRenameRule("s/^module\\.//"));
//   options.progress = [](uint64_t done, uint64_t total) { return true; };
//   SL_ASSIGN_OR_RETURN(LoadResult r, LoadInto(ckpt, targets, options));
//   std::cout << r.report.missing.size() << " missing, " << r.gbps() << " GB/s\n";
#ifndef SHARDLOAD_LOADER_LOADER_H_
#define SHARDLOAD_LOADER_LOADER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"
#include "format/shape.h"
#include "format/status.h"
#include "loader/arena.h"
#include "loader/backend.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"
#include "loader/device.h"
#include "loader/file.h"
#include "loader/match.h"
#include "loader/plan.h"

namespace shardload {

// kAutoIoMode: what IoMode::kAuto resolves to, chosen from the host-load measurements
// in bench/RESULTS.md (## Host load).
inline constexpr IoMode kAutoIoMode = IoMode::kPread;

// LoadOptions: everything a load can be told. Invalid values are invalid_argument
// errors naming the field; nothing is clamped.
struct LoadOptions {
  // match: key matching (strict by default, like torch's load_state_dict).
  MatchOptions match;
  // devices: where each target goes when its Target::device is unset. Default: cpu.
  DeviceMap devices;
  // io: how files are read. Default kAuto (= kAutoIoMode). kDirect fails with
  // unimplemented on filesystems that refuse O_DIRECT.
  IoMode io = IoMode::kAuto;
  // uring: queue depth, chunk size and O_DIRECT choice of IoMode::kUring reads (see
  // UringOptions for defaults and valid values); ignored by the other modes.
  UringOptions uring;
  // threads: reader threads; 0 (default) = hardware threads. Valid 0..256.
  int threads = 0;
  // sink: staging ring (default 16 slots of 16 MiB − 8 KiB, 256 MiB with their O_DIRECT
  // margins); slot_bytes is also the longest read.
  SinkOptions sink;
  // host_arena: how LoadAll prepares its host arena (pre-faulted, 4 KiB pages by
  // default; see HostArenaOptions).
  HostArenaOptions host_arena;
  // host_arena_pool: where LoadAll takes its host arena from and where the arena's
  // memory goes when the LoadedCheckpoint is destroyed (see HostArenaPool): a process
  // that loads again skips the page faults and zeroing of fresh memory. Not owned; may
  // be shared by concurrent loads. nullptr (default): fresh memory for every load,
  // unmapped when the result is destroyed. A reused arena's padding between tensors is
  // zeroed, so a LoadAll result holds the same bytes either way.
  HostArenaPool* host_arena_pool = nullptr;
  // host_placement: where LoadAll puts host tensors in its arena (see ArenaPlacement,
  // loader/plan.h). kAligned (default): every tensor 256-byte aligned. kFilePhase: an
  // uncast cpu tensor keeps its file offset modulo 256 (as aligned as in the file, and
  // never off its element size: see ArenaPlacement), which makes the copy out of the
  // page cache faster for shards whose data section is not 64-byte aligned (most files:
  // the reference writer, and ours, pad headers to 8 bytes only). LoadInto ignores it
  // (the caller's memory is where it is).
  ArenaPlacement host_placement = ArenaPlacement::kAligned;
  // max_gap_bytes: the largest hole of unloaded bytes one read may cover to join two
  // tensors. Default 1 MiB.
  uint64_t max_gap_bytes = 1 << 20;
  // progress: (bytes read, bytes to read); first (0, total), last (total, total).
  // Return false to cancel. Called on the thread that called the load. An exception it
  // throws fails the load (internal "progress callback: unexpected exception: ...",
  // see StreamOptions::progress). Default none.
  std::function<bool(uint64_t done, uint64_t total)> progress;
  // cancel: set to true from any thread to stop the load (cancelled "load cancelled"):
  // checked before the arenas are allocated, every 64 MiB per thread of the host
  // arena's prefault, before the shards are opened and while waiting for the folder's
  // lock to open them, and before each span. Default none.
  const std::atomic<bool>* cancel = nullptr;
  // backend: reaches cuda devices; nullptr (default) means host only, and a load with
  // any cuda destination then fails with failed_precondition.
  DeviceBackend* backend = nullptr;
  // shard_files: files already open for the checkpoint's shards (index i: shards()[i];
  // nullptr, or an index past the end, means "open the path as usual"), read instead of
  // opening the shard again, whatever `io` says; each is checked with CheckShardFile
  // (through its descriptor: a file written to in place since is caught, a path renamed
  // over is not its concern when every shard read is held; when the load opens others
  // too, each held file read must still be the one its path names, else aborted
  // "<file>: replaced on disk since this checkpoint handle opened it, so it and the
  // shards opened now would be of two saves ...": CheckStillAtPath, checkpoint.h)
  // before the load (the C API's sl_checkpoint_hold_files).
  // Not owned; they must outlive the load. LoadInto/LoadAll only (VerifyCheckpoint opens its
  // own). Default empty.
  std::span<const ReadableFile* const> shard_files;
  // verify: check every loaded tensor against the XXH3 hash its checkpoint records
  // (shard `__metadata__` or index "metadata", format/checksum.h) on the bytes this
  // load actually read, while streaming: each region is hashed on the reader thread
  // right after its read (in the staging slot before the copy/cast, or in destination
  // memory after a direct read), so a cast tensor is checked on its stored bytes. A
  // tensor split over several spans is hashed piece by piece in file order; a piece that
  // arrives before its predecessor is copied aside until the gap is filled (at most the
  // tensor's size, in practice a few spans). Tensors without a record are not checked.
  // A mismatch fails the load with data_loss "<file>: tensor 'w' at bytes [a, b): XXH3
  // of its N bytes is X, recorded Y" (<file>: the shard holding the tensor; " in
  // <index>" appended when the index's record differs). Default false.
  bool verify = false;
};

// ValidateLoadOptions: invalid_argument for threads outside 0..256, bad uring options
// (ValidateUringOptions) or a bad sink geometry (see SinkOptions). Devices are checked
// when a load resolves them.
Status ValidateLoadOptions(const LoadOptions& options);

// LoadStats: what a load moved and how long it took.
struct LoadStats {
  uint64_t read_bytes = 0;       // bytes read from files (spans, gaps included)
  uint64_t delivered_bytes = 0;  // bytes written to destinations (at their dtype)
  size_t tensors = 0;            // destinations written
  double seconds = 0;            // wall time of the whole call (match, plan, alloc, read)
  double arena_seconds = 0;      // of which allocating LoadAll's arenas (0 for LoadInto;
                                 // not the staging ring, made once per backend or sink)
  IoMode io = IoMode::kPread;    // the mode used (kAuto resolved)
  int threads = 0;               // reader threads started (at most one per span)
  size_t verified = 0;           // LoadOptions::verify: tensors checked against a
                                 // recorded XXH3 (all matched); 0 when none has a record
  // warnings: what the caller should be told about how the load ran, one line each
  // (Sink::Warnings: a CUDA load that staged through pageable memory because pinned
  // memory was refused); empty normally.
  std::vector<std::string> warnings;
  // gbps: delivered_bytes / seconds in GB/s (10^9 bytes per second); 0 when no time.
  double gbps() const { return seconds > 0 ? delivered_bytes / seconds / 1e9 : 0; }
};

// LoadResult: the outcome of LoadInto: the match report (OK status) and the stats.
struct LoadResult : LoadStats {
  MatchReport report;
};

// LoadedTensor: one tensor of a LoadAll result: a view into its device's arena.
struct LoadedTensor {
  std::string name;  // target name (after renames)
  Dtype dtype = Dtype::kU8;
  Shape shape;
  Device device;
  void* data = nullptr;  // host pointer on cpu, device pointer on cuda; 256-byte aligned
                         // (a cpu tensor under ArenaPlacement::kFilePhase: as in the file)
  uint64_t bytes = 0;
};

// LoadedCheckpoint: the tensors of LoadAll and the arenas that hold them. Move-only.
// Lifetime: every LoadedTensor::data is valid while this object lives.
class LoadedCheckpoint : public LoadStats {
 public:
  LoadedCheckpoint() = default;
  LoadedCheckpoint(LoadedCheckpoint&&) noexcept = default;
  LoadedCheckpoint& operator=(LoadedCheckpoint&&) noexcept = default;
  LoadedCheckpoint(const LoadedCheckpoint&) = delete;
  LoadedCheckpoint& operator=(const LoadedCheckpoint&) = delete;
  ~LoadedCheckpoint();

  MatchReport report;
  // tensors: sorted by name.
  std::vector<LoadedTensor> tensors;
  // Find: the tensor called `name`, or nullptr. O(log n).
  const LoadedTensor* Find(std::string_view name) const;

 private:
  friend Result<LoadedCheckpoint> LoadAll(const Checkpoint&, const LoadOptions&,
                                          std::span<const Target>,
                                          std::optional<MatchReport>*);
  std::unique_ptr<HostArena> host_arena_;
  std::vector<std::unique_ptr<DeviceAllocation>> device_arenas_;
};

// LoadInto: load the checkpoint into the caller's buffers (Target::data, which must be
// set for every target that matches and outlive the call). Errors: the match report's
// status (strict failures, size mismatches) unchanged; invalid_argument "target 'x' has
// no data pointer: LoadInto writes into caller memory (use LoadAll for loader-owned
// arenas)"; failed_precondition "tensor 'x' goes to cuda:0 but no device backend was
// given"; the plan's, open, read, sink and stream errors (aborted when a rewrite of the
// checkpoint raced the load: files replaced or removed since the header was read or
// while they were read — open the checkpoint again and retry; data_loss for files cut
// short or changed in size in place; unavailable when another process (a shardload
// writer publishing) holds the folder's lock for longer than kDefaultFolderLockWaitMs
// while a sharded checkpoint's files are opened: OpenShardFiles, checkpoint.h; or with
// options.verify a tensor whose bytes differ from
// its recorded XXH3; cancelled). Thread safety: concurrent loads are
// independent. Targets whose buffers overlap (tied weights) are written in no defined
// order, possibly by several threads at once: give them separate buffers, or one
// target and an alias, unless they receive the same stored tensor (with
// options.verify, such targets are read through the staging slots, so the hashes are
// of the bytes read, whatever the other writers do).
// Device targets: the copies run on the backend's own streams, which do not wait for
// GPU work queued elsewhere; no work may still read or write target memory when
// LoadInto is called (synchronize the streams that used it first, as the Python
// package does with torch.cuda.synchronize). A cuda:N target whose memory is pinned
// host memory or another device's is invalid_argument "tensor 'x' (cuda:N):
// destination memory at 0x... is cuda:M memory, not memory of cuda:N". The copies
// are complete when LoadInto returns. `failed_report`, when given, receives the match
// report if the call fails after matching ran (a strict failure, a size mismatch, or
// any later error), so that a caller can show what was matched; it is left alone
// otherwise (on success the report is LoadResult::report).
Result<LoadResult> LoadInto(const Checkpoint& checkpoint, std::span<const Target> targets,
                            const LoadOptions& options,
                            std::optional<MatchReport>* failed_report = nullptr);

// LoadAll: load every tensor (when `targets` is empty: one target per stored tensor,
// named after the renames in options.match, with its stored dtype and shape) or the
// given targets (their `data` must be null) into arenas owned by the result, one per
// device. Errors: as LoadInto, plus resource_exhausted when an arena cannot be had and
// invalid_argument "target 'x' has a data pointer: LoadAll places tensors in its own
// arenas (use LoadInto for caller memory)". On error every arena is freed.
// `failed_report`: as LoadInto's.
Result<LoadedCheckpoint> LoadAll(const Checkpoint& checkpoint, const LoadOptions& options,
                                 std::span<const Target> targets = {},
                                 std::optional<MatchReport>* failed_report = nullptr);

// CheckpointTargets: one target per stored tensor of `checkpoint` (name order), named as
// `match.renames` rewrite it, with the stored dtype and shape, no device and no data:
// what LoadAll loads when given no targets. Stored names that the renames map to one
// name give one target (the first in name order), so that Match reports the collision.
// Errors: a rename rule that cannot be applied ("rename rule 'R' on 'x': ...").
Result<std::vector<Target>> CheckpointTargets(const Checkpoint& checkpoint, const MatchOptions& match);

// VerifyReport: what VerifyCheckpoint read and, with options.verify, what it found.
struct VerifyReport {
  size_t files = 0;
  uint64_t bytes = 0;  // every byte of every shard, headers included
  double seconds = 0;
  size_t recorded = 0;  // options.verify: tensors with a recorded XXH3 (all checked)
  std::vector<HashMismatch> mismatches;  // options.verify: every mismatch, in name order
};

// VerifyCheckpoint: read every byte of every shard through the streaming pipeline
// (options.io, threads, sink geometry, progress and cancel apply; matching does not)
// and check that each file still has the size, inode and header it was opened with.
// With options.verify, every tensor with a recorded XXH3 is hashed in the same pass, as
// its bytes stream by (as LoadOptions::verify does), and every mismatch is listed in
// the report rather than failing the call: one read of the files checks both. Memory
// beyond the ring: early pieces of split tensors held until their predecessors are
// hashed (StreamVerifier; at worst about threads - 1 slots per tensor).
// Errors: CheckShardFile's aborted or data_loss (checkpoint.h: replaced, or another
// size or header, since Open; checked when the files are opened and again after the
// read, through their descriptors, header bytes included); OpenShardFiles' errors; the
// stream's read errors (aborted "file was replaced while loading" among them);
// cancelled; with options.verify, ParseChecksumMetadata's data_loss for a malformed
// record.
Result<VerifyReport> VerifyCheckpoint(const Checkpoint& checkpoint, const LoadOptions& options);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_LOADER_H_
