// loader/plan.h — the load planner: matched tensors → coalesced file reads.
//
// Provides `MakePlan`, a pure function (no I/O) that turns a checkpoint catalog and a
// successful MatchReport into one `Destination` per matched target and a list of
// `ReadSpan`s per shard, sorted by file offset, where neighbouring tensors share one
// read of up to `max_span_bytes` (the sink's slot size); and `LayoutArenas`, which
// places arena-backed destinations (null `ptr`) in one block per device, in the order
// the plan reads them (file order).
//
//   SL_ASSIGN_OR_RETURN(MatchReport report, Match(catalog, metadata, targets, {}));
//   if (!report.status.ok()) return report.status;
//   SL_ASSIGN_OR_RETURN(LoadPlan plan, MakePlan(catalog, report, targets, devices, {}));
//   SL_ASSIGN_OR_RETURN(ArenaLayout layout, LayoutArenas(plan.destinations, plan.spans));
//   ... allocate layout.bytes_per_device[d] per device, then
//   SL_RETURN_IF_ERROR(AssignArenaPointers(layout, bases, &plan.destinations));
//   SL_RETURN_IF_ERROR(sink.Begin(plan.destinations, PlanOptions{}.max_span_bytes));
//   ... stream plan.spans into the sink.
//
// Shape of a plan:
//   - destinations[i] is report.matched[i]'s target: ptr = Target::data (null for
//     arena placement), bytes at the target dtype, device = Target::device or the
//     DeviceMap's choice for the target name, src/dst dtype from the pair.
//   - Every byte of every destination's source tensor is delivered by exactly one
//     region of one span. A stored tensor that feeds several destinations (tied
//     weights) is read once; its span carries one region per destination, with the
//     same src range (so regions of a span may share source bytes — only then).
//   - Spans are sorted by (shard, file_offset) and never overlap. Tensors are taken in
//     file order and appended to the open span while the hole before them is at most
//     `max_gap_bytes` and the span stays within `max_span_bytes`; a hole left by
//     tensors that are not loaded is read and dropped. A tensor larger than
//     `max_span_bytes` is split at element boundaries into spans of its own (the
//     regions carry dst_offset); its last piece may be extended by its neighbours.
//   - Zero-byte tensors get a destination and no region.
#ifndef SHARDLOAD_LOADER_PLAN_H_
#define SHARDLOAD_LOADER_PLAN_H_

#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <string_view>
#include <vector>

#include "format/status.h"
#include "loader/backend.h"
#include "loader/device.h"
#include "loader/match.h"
#include "loader/sink.h"
#include "loader/stored_tensor.h"

namespace shardload {

// PlanOptions: read geometry. Validated by MakePlan.
struct PlanOptions {
  // max_span_bytes: the longest single read, equal to the sink's slot size.
  // Default kDefaultSlotBytes (16 MiB − 8 KiB, the default slot). Must be a positive
  // multiple of 4096 (O_DIRECT windows).
  uint64_t max_span_bytes = kDefaultSlotBytes;
  // max_gap_bytes: the longest run of bytes that are not loaded which a span may read
  // over to join two tensors into one read. Default 1 MiB; 0 joins only tensors that
  // touch. Any value is valid (it is bounded by max_span_bytes in effect).
  uint64_t max_gap_bytes = 1ull << 20;
};

// LoadPlan: what to read and where it goes. `read_bytes` is the sum of span lengths;
// `delivered_bytes` the sum of destination bytes (at the destination dtype; a tied
// tensor counts once per destination).
struct LoadPlan {
  std::vector<Destination> destinations;
  std::vector<ReadSpan> spans;
  uint64_t read_bytes = 0;
  uint64_t delivered_bytes = 0;
};

// MakePlan: plan the load of `report`'s matched pairs. `stored` and `targets` must be
// the spans `report` was made from. Pure, deterministic and thread-safe.
// Errors:
//   - the report's own status, unchanged, when it is not OK (a failed match);
//   - invalid_argument "max_span_bytes must be a positive multiple of 4096, got N";
//   - invalid_argument for a report that does not fit the inputs: "match report
//     refers to stored tensor 7, but the catalog has 3 tensors", "... target 5, but
//     there are 2 targets", "target 'x' is matched twice", "target 'x': stored tensor
//     'y' is F16[2], the target F32[3]" (shape differs or dtypes not castable);
//   - invalid_argument for a catalog that cannot be read as described: "stored tensor
//     'w': N bytes do not match F32[3] (12 bytes)", "stored tensor 'w': byte range at
//     offset X of N bytes overflows", "shard 0: stored tensors 'a' [64, 80) and 'b'
//     [72, 88) overlap".
Result<LoadPlan> MakePlan(std::span<const StoredTensor> stored, const MatchReport& report,
                          std::span<const Target> targets, const DeviceMap& devices,
                          const PlanOptions& options);

// ArenaPlacement: where LayoutArenas puts a host (cpu) tensor inside its alignment unit.
//   kAligned (the default everywhere): every tensor starts on an `alignment` boundary.
//   kFilePhase: a cpu tensor read without a cast starts at an offset congruent to its
//     first byte's file offset modulo `alignment`, so it is as aligned as it is in the
//     file, up to `alignment`, and neighbours in the file are neighbours in memory with
//     no padding between them. A data section starts at 8 + the header length, which
//     the reference writer pads to a multiple of 8 and keeps every tensor aligned to its
//     element size; a tensor whose file offset is not (possible in a hand-made file: no
//     reader checks it) is placed `alignment`-aligned instead, so a tensor is always at
//     least element-aligned. The kernel's copy out of
//     the page cache then runs with source and destination aligned alike, which was
//     15-47% faster for files whose data section does not start on a 64-byte boundary
//     (bench/RESULTS.md, "File phase"). Cast and device tensors stay `alignment`-aligned.
enum class ArenaPlacement { kAligned, kFilePhase };

// ParseArenaPlacement: "aligned" or "file-phase". Errors: invalid_argument "invalid
// arena placement 'x': expected aligned or file-phase".
Result<ArenaPlacement> ParseArenaPlacement(std::string_view text);
// ArenaPlacementName: "aligned" or "file-phase".
std::string_view ArenaPlacementName(ArenaPlacement placement);

// kNotInArena: ArenaLayout offset of a destination that has its own memory.
inline constexpr uint64_t kNotInArena = std::numeric_limits<uint64_t>::max();

// ArenaLayout: arena placement for load_file-style loads. `offsets[i]` is destination
// i's byte offset in its device's arena, or kNotInArena when its ptr is already set.
// `bytes_per_device` holds only devices with at least one arena destination (a
// device whose arena destinations are all empty maps to 0).
struct ArenaLayout {
  std::map<Device, uint64_t> bytes_per_device;
  std::vector<uint64_t> offsets;
};

// LayoutArenas: place every destination with a null ptr in its device's arena, in the
// order the plan reads them: destinations are taken in the order their first region
// appears when walking `spans` (span by span, each span's regions in order — for a
// MakePlan plan that is shard by shard in file order), then every destination no
// region names (zero-byte tensors; all of them when `spans` is empty) in destination
// order. So tensors that are neighbours in a file are neighbours in the arena, a span's
// regions land in one run of memory (fewer iovecs for a direct read, fewer device
// copies), and a tied stored tensor's destinations are placed one after the other,
// each with its own space. Each offset is aligned to `alignment` (default 256, what
// CUDA allocations and vectorized casts want), so tensors whose size is not a multiple
// of it are followed by padding; with `placement` kFilePhase, uncast cpu tensors keep
// their file offset's phase instead (see ArenaPlacement). `destinations` and `spans`
// must be one plan's (the offsets index `destinations`). Pure and thread-safe.
// Errors: invalid_argument "arena alignment must be a power of two, got N";
// invalid_argument "span 3 has a region for destination 9, but there are 4
// destinations"; out_of_range "arena for cuda:0 exceeds 2^64 bytes" on overflow.
Result<ArenaLayout> LayoutArenas(std::span<const Destination> destinations,
                                 std::span<const ReadSpan> spans, uint64_t alignment = 256,
                                 ArenaPlacement placement = ArenaPlacement::kAligned);

// AssignArenaPointers: set ptr = bases[device] + offsets[i] for each arena-placed
// destination of `destinations` (the same list `layout` was made from). Errors:
// invalid_argument "layout has N offsets for M destinations", not_found "no arena
// base for device cuda:1" (a device with non-empty arena destinations but no base;
// empty ones are left null).
Status AssignArenaPointers(const ArenaLayout& layout, const std::map<Device, void*>& bases,
                           std::vector<Destination>* destinations);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_PLAN_H_
