// loader/plan.cc — coalescing planner and arena layout (see plan.h).
#include "loader/plan.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <string_view>
#include <tuple>

#include "format/dtype.h"
#include "format/text.h"

namespace shardload {
namespace {

// Q: 'name' with quotes, backslashes and control bytes escaped (one-line messages).
std::string Q(std::string_view name) { return QuoteForMessage(name, '\''); }

std::string Range(uint64_t begin, uint64_t bytes) {
  return "[" + std::to_string(begin) + ", " + std::to_string(begin + bytes) + ")";
}

// SplitUnit: the smallest whole number of bytes holding whole elements of `dtype`
// (1 for F4, 3 for F6_*, the element size otherwise).
uint64_t SplitUnit(Dtype dtype) {
  uint64_t bits = static_cast<uint64_t>(DtypeBits(dtype));
  return std::lcm(bits, uint64_t{8}) / 8;
}

constexpr uint32_t kNoDest = std::numeric_limits<uint32_t>::max();

// Used: one stored tensor that is read, with the destinations it feeds: a list
// threaded through MakePlan's `next_dest` (first_dest, then next_dest[first_dest], …,
// ascending), so the common one-destination tensor costs no allocation.
struct Used {
  uint32_t stored;
  uint32_t shard;
  uint64_t offset;
  uint64_t bytes;
  uint32_t first_dest;
  uint32_t last_dest;
};

}  // namespace

Result<LoadPlan> MakePlan(std::span<const StoredTensor> stored, const MatchReport& report,
                          std::span<const Target> targets, const DeviceMap& devices,
                          const PlanOptions& options) {
  if (!report.status.ok()) return report.status;
  if (options.max_span_bytes == 0 || options.max_span_bytes % 4096 != 0) {
    return InvalidArgumentError("max_span_bytes must be a positive multiple of 4096, got " +
                                std::to_string(options.max_span_bytes));
  }
  if (report.matched.size() > std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError("too many destinations (more than 2^32 - 1)");
  }

  LoadPlan plan;
  plan.destinations.reserve(report.matched.size());
  std::vector<bool> target_seen(targets.size(), false);
  std::vector<int64_t> used_index(stored.size(), -1);  // stored → index into `used`
  std::vector<Used> used;
  used.reserve(report.matched.size());
  std::vector<uint32_t> next_dest(report.matched.size(), kNoDest);  // see Used
  for (const MatchedPair& pair : report.matched) {
    if (pair.stored >= stored.size()) {
      return InvalidArgumentError("match report refers to stored tensor " +
                                  std::to_string(pair.stored) + ", but the catalog has " +
                                  std::to_string(stored.size()) + " tensors");
    }
    if (pair.target >= targets.size()) {
      return InvalidArgumentError("match report refers to target " +
                                  std::to_string(pair.target) + ", but there are " +
                                  std::to_string(targets.size()) + " targets");
    }
    const StoredTensor& st = stored[pair.stored];
    const Target& target = targets[pair.target];
    if (target_seen[pair.target]) {
      return InvalidArgumentError("target " + Q(target.name) + " is matched twice");
    }
    target_seen[pair.target] = true;
    if (st.shape != target.shape || !IsCastable(st.dtype, target.dtype)) {
      return InvalidArgumentError("target " + Q(target.name) + ": stored tensor " +
                                  Q(st.name) + " is " + std::string(DtypeName(st.dtype)) +
                                  ShapeToString(st.shape) + ", the target " +
                                  std::string(DtypeName(target.dtype)) +
                                  ShapeToString(target.shape));
    }
    SL_ASSIGN_OR_RETURN(uint64_t src_bytes, TensorByteSize(st.dtype, st.shape));
    if (src_bytes != st.bytes) {
      return InvalidArgumentError("stored tensor " + Q(st.name) + ": " +
                                  std::to_string(st.bytes) + " bytes do not match " +
                                  std::string(DtypeName(st.dtype)) + ShapeToString(st.shape) +
                                  " (" + std::to_string(src_bytes) + " bytes)");
    }
    if (st.file_offset > std::numeric_limits<uint64_t>::max() - st.bytes) {
      return InvalidArgumentError("stored tensor " + Q(st.name) + ": byte range at offset " +
                                  std::to_string(st.file_offset) + " of " +
                                  std::to_string(st.bytes) + " bytes overflows");
    }
    Result<uint64_t> dst_bytes = TensorByteSize(target.dtype, target.shape);
    if (!dst_bytes.ok()) return dst_bytes.status().WithPrefix("target " + Q(target.name));

    Destination d;
    d.ptr = target.data;
    d.bytes = *dst_bytes;
    d.device = (target.device.has_value() ? *target.device : devices.Resolve(target.name))
                   .Normalized();  // one host arena, whatever index a cpu Device carries
    d.src_dtype = st.dtype;
    d.dst_dtype = target.dtype;
    d.name = target.name;
    uint32_t dest_index = static_cast<uint32_t>(plan.destinations.size());
    plan.destinations.push_back(std::move(d));
    if (plan.delivered_bytes > std::numeric_limits<uint64_t>::max() - *dst_bytes) {
      return InvalidArgumentError("destinations exceed 2^64 bytes in total");
    }
    plan.delivered_bytes += *dst_bytes;

    if (st.bytes == 0) continue;  // nothing to read
    if (used_index[pair.stored] < 0) {
      used_index[pair.stored] = static_cast<int64_t>(used.size());
      used.push_back(Used{pair.stored, st.shard, st.file_offset, st.bytes, dest_index, dest_index});
    } else {
      Used& u = used[used_index[pair.stored]];
      next_dest[u.last_dest] = dest_index;
      u.last_dest = dest_index;
    }
  }

  auto by_position = [](const Used& a, const Used& b) {
    return std::tie(a.shard, a.offset) < std::tie(b.shard, b.offset);
  };
  // A strictly increasing list (matched order often is file order) is the one order
  // the sort could produce; skip it then.
  bool in_order = true;
  for (size_t i = 1; i < used.size() && in_order; ++i) {
    in_order = by_position(used[i - 1], used[i]);
  }
  if (!in_order) std::sort(used.begin(), used.end(), by_position);
  for (size_t i = 1; i < used.size(); ++i) {
    const Used& a = used[i - 1];
    const Used& b = used[i];
    if (a.shard == b.shard && b.offset < a.offset + a.bytes) {
      return InvalidArgumentError(
          "shard " + std::to_string(a.shard) + ": stored tensors " + Q(stored[a.stored].name) +
          " " + Range(a.offset, a.bytes) + " and " + Q(stored[b.stored].name) + " " +
          Range(b.offset, b.bytes) + " overlap");
    }
  }

  const uint64_t max_span = options.max_span_bytes;
  bool open = false;
  ReadSpan span;
  auto flush = [&] {
    if (!open) return;
    plan.read_bytes += span.length;
    plan.spans.push_back(std::move(span));
    span = ReadSpan{};
    open = false;
  };
  auto add_regions = [&](const Used& u, uint64_t src_offset, uint64_t length,
                         uint64_t dst_offset) {
    for (uint32_t dest = u.first_dest; dest != kNoDest; dest = next_dest[dest]) {
      span.regions.push_back(CopyRegion{src_offset, length, dest, dst_offset});
    }
  };
  for (const Used& u : used) {
    uint64_t span_end = span.file_offset + span.length;
    if (open && u.shard == span.shard && u.offset - span_end <= options.max_gap_bytes &&
        u.offset + u.bytes - span.file_offset <= max_span) {
      add_regions(u, u.offset - span.file_offset, u.bytes, 0);
      span.length = u.offset + u.bytes - span.file_offset;
      continue;
    }
    flush();
    if (u.bytes <= max_span) {
      open = true;
      span.shard = u.shard;
      span.file_offset = u.offset;
      span.length = u.bytes;
      add_regions(u, 0, u.bytes, 0);
      continue;
    }
    // Larger than a span: element-aligned pieces; the last one stays open.
    uint64_t unit = SplitUnit(stored[u.stored].dtype);
    uint64_t chunk = max_span - max_span % unit;
    for (uint64_t pos = 0; pos < u.bytes; pos += chunk) {
      flush();
      uint64_t length = std::min(chunk, u.bytes - pos);
      open = true;
      span.shard = u.shard;
      span.file_offset = u.offset + pos;
      span.length = length;
      add_regions(u, 0, length, pos);
    }
  }
  flush();
  return plan;
}

Result<ArenaPlacement> ParseArenaPlacement(std::string_view text) {
  if (text == "aligned") return ArenaPlacement::kAligned;
  if (text == "file-phase") return ArenaPlacement::kFilePhase;
  return InvalidArgumentError("invalid arena placement '" + std::string(text) +
                              "': expected aligned or file-phase");
}

std::string_view ArenaPlacementName(ArenaPlacement placement) {
  return placement == ArenaPlacement::kFilePhase ? "file-phase" : "aligned";
}

Result<ArenaLayout> LayoutArenas(std::span<const Destination> destinations,
                                 std::span<const ReadSpan> spans, uint64_t alignment,
                                 ArenaPlacement placement) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    return InvalidArgumentError("arena alignment must be a power of two, got " +
                                std::to_string(alignment));
  }
  // Placement order: each destination at its first region in span order (file order
  // within a shard), then those that no region reaches, in destination order.
  // With kFilePhase, `phase[i]` is the file offset of destination i's first byte
  // modulo `alignment` (the first region met is the tensor's first piece: a split
  // tensor's pieces come in file order), for the destinations it applies to.
  const bool file_phase = placement == ArenaPlacement::kFilePhase;
  std::vector<uint64_t> phase(file_phase ? destinations.size() : 0, 0);
  std::vector<size_t> order;
  order.reserve(destinations.size());
  std::vector<bool> placed(destinations.size(), false);
  for (size_t s = 0; s < spans.size(); ++s) {
    for (const CopyRegion& r : spans[s].regions) {
      if (r.dest >= destinations.size()) {
        return InvalidArgumentError("span " + std::to_string(s) + " has a region for destination " +
                                    std::to_string(r.dest) + ", but there are " +
                                    std::to_string(destinations.size()) + " destinations");
      }
      if (placed[r.dest]) continue;
      placed[r.dest] = true;
      order.push_back(r.dest);
      const Destination& d = destinations[r.dest];
      if (!file_phase || !d.device.is_cpu() || d.src_dtype != d.dst_dtype) continue;
      // The tensor's first byte in the file: the region's, less its offset in the tensor.
      const uint64_t region_at = spans[s].file_offset + r.src_offset;
      if (region_at < r.dst_offset) continue;  // not a plan's span: keep it aligned
      const uint64_t at = region_at - r.dst_offset;
      // Only where the file keeps the element alignment the reference writer gives
      // (its reader does not check it: a hand-made header may leave a tensor off it).
      if (at % static_cast<uint64_t>(DtypeAlignment(d.src_dtype)) == 0) {
        phase[r.dest] = at & (alignment - 1);
      }
    }
  }
  for (size_t i = 0; i < destinations.size(); ++i) {
    if (!placed[i]) order.push_back(i);
  }

  ArenaLayout layout;
  layout.offsets.assign(destinations.size(), kNotInArena);
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  for (size_t i : order) {
    const Destination& d = destinations[i];
    if (d.ptr != nullptr) continue;
    uint64_t& end = layout.bytes_per_device[d.device];
    if (end > kMax - (alignment - 1)) {
      return OutOfRangeError("arena for " + d.device.ToString() + " exceeds 2^64 bytes");
    }
    uint64_t offset = (end + alignment - 1) & ~(alignment - 1);
    if (file_phase) {  // the first offset >= end congruent to the phase (0 when aligned);
                       // phase[i] < alignment, so nothing wraps
      offset = end + ((phase[i] + alignment - (end & (alignment - 1))) & (alignment - 1));
    }
    if (offset > kMax - d.bytes || offset + d.bytes == kNotInArena) {
      return OutOfRangeError("arena for " + d.device.ToString() + " exceeds 2^64 bytes");
    }
    layout.offsets[i] = offset;
    end = offset + d.bytes;
  }
  return layout;
}

Status AssignArenaPointers(const ArenaLayout& layout, const std::map<Device, void*>& bases,
                           std::vector<Destination>* destinations) {
  if (layout.offsets.size() != destinations->size()) {
    return InvalidArgumentError("layout has " + std::to_string(layout.offsets.size()) +
                                " offsets for " + std::to_string(destinations->size()) +
                                " destinations");
  }
  for (size_t i = 0; i < destinations->size(); ++i) {
    if (layout.offsets[i] == kNotInArena) continue;
    Destination& d = (*destinations)[i];
    auto it = bases.find(d.device);
    if (it == bases.end() || it->second == nullptr) {
      if (d.bytes == 0) continue;  // nothing will be written there
      return NotFoundError("no arena base for device " + d.device.ToString());
    }
    d.ptr = static_cast<std::byte*>(it->second) + layout.offsets[i];
  }
  return OkStatus();
}

}  // namespace shardload
