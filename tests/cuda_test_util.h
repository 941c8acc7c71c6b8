// tests/cuda_test_util.h — a miniature streaming engine for the CUDA sink tests.
//
// Provides `SinkScenario` (a synthetic "file" of random bytes, the tensors in it,
// where each goes and which dtype it should arrive as), `MakeSpans` (spans of at most
// `slot_bytes`, tensors split across spans on element boundaries, optional dropped
// gaps between tensors) and `DriveSink`, which plays the engine's part from several
// reader threads: AcquireSlot → copy the span's bytes into the slot (at an offset
// inside the slot, as an O_DIRECT window would) → Commit, or DirectTargets; then
// Finish, or Abort on the first error. `ExpectedBytes` gives each destination's
// reference contents (loader/cast for casts). Test-only; used by cuda_*_test.cc.
//
//   SinkScenario sc = MakeScenario(seed, {{"a", Dtype::kF32, Dtype::kBF16, 1000, cpu}});
//   std::vector<ReadSpan> spans = MakeSpans(sc, 4096, /*max_gap=*/64);
//   Status s = DriveSink(sink, sc, spans, /*threads=*/3, dests);
#ifndef SHARDLOAD_TESTS_CUDA_TEST_UTIL_H_
#define SHARDLOAD_TESTS_CUDA_TEST_UTIL_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "format/dtype.h"
#include "format/status.h"
#include "loader/cast.h"
#include "loader/device.h"
#include "loader/sink.h"

namespace shardload::cuda_test {

// TensorSpec: one tensor of a scenario: stored dtype, wanted dtype, element count and
// destination device.
struct TensorSpec {
  std::string name;
  Dtype src = Dtype::kU8;
  Dtype dst = Dtype::kU8;
  uint64_t elements = 0;
  Device device;
  bool skip = false;  // stored but not loaded (its bytes become a gap in some span)
};

// SinkScenario: the file bytes and where each tensor lies in them.
struct SinkScenario {
  std::vector<TensorSpec> tensors;
  std::vector<uint64_t> offsets;  // file offset of each tensor
  std::vector<std::byte> file;
  std::vector<uint32_t> dest_index;  // tensor → destination index (UINT32_MAX if skipped)
};

inline uint64_t ElemBytes(Dtype d) { return static_cast<uint64_t>(DtypeBits(d)) / 8; }

// MakeScenario: random bytes (for float dtypes, a mix of ordinary values and special
// bit patterns: NaN with payloads, ±inf, ±0, subnormals, rounding ties) with each
// tensor at an offset aligned to its element size after `lead` junk bytes.
inline SinkScenario MakeScenario(uint32_t seed, std::vector<TensorSpec> tensors,
                                 uint64_t lead = 24) {
  SinkScenario sc;
  sc.tensors = std::move(tensors);
  std::mt19937_64 rng(seed);
  uint64_t offset = lead;
  uint32_t next_dest = 0;
  for (const TensorSpec& t : sc.tensors) {
    const uint64_t e = ElemBytes(t.src);
    offset = (offset + e - 1) / e * e;
    sc.offsets.push_back(offset);
    offset += t.elements * e;
    sc.dest_index.push_back(t.skip ? UINT32_MAX : next_dest++);
  }
  sc.file.resize(offset + 8);
  for (auto& b : sc.file) b = static_cast<std::byte>(rng() & 0xff);
  static const uint32_t kF32Specials[] = {
      0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x7FBFFFFFu, 0x7F800000u, 0xFF800000u,
      0x00000000u, 0x80000000u, 0x00000001u, 0x807FFFFFu, 0x33000000u, 0x33000001u,
      0x387FC000u, 0x477FF000u, 0x477FEFFFu, 0x3F808000u, 0x3F818000u, 0x7F7FFFFFu};
  static const uint16_t kHalfSpecials[] = {0x7E00, 0xFE01, 0x7C01, 0x7C00, 0xFC00, 0x0000,
                                           0x8000, 0x0001, 0x83FF, 0x7BFF, 0x0400, 0x7F81};
  for (size_t i = 0; i < sc.tensors.size(); ++i) {
    const TensorSpec& t = sc.tensors[i];
    std::byte* base = sc.file.data() + sc.offsets[i];
    for (uint64_t k = 0; k < t.elements; ++k) {
      const bool special = (rng() % 4) == 0;
      if (t.src == Dtype::kF32) {
        uint32_t v = 0;
        if (special) {
          v = kF32Specials[rng() % std::size(kF32Specials)];
        } else {
          switch (rng() % 3) {
            case 0:  // around the F16 range, subnormals included
              v = 0x33000000u + static_cast<uint32_t>(rng() % (0x47800000u - 0x33000000u));
              break;
            case 1:  // any finite magnitude
              v = static_cast<uint32_t>(rng() % 0x7F800000u);
              break;
            default:  // [0.5, 1): dense mantissas, many near-ties after narrowing
              v = 0x3F000000u + static_cast<uint32_t>(rng() % 0x00800000u);
              break;
          }
          v |= (rng() % 2) ? 0x80000000u : 0u;
        }
        std::memcpy(base + 4 * k, &v, 4);
      } else if ((t.src == Dtype::kF16 || t.src == Dtype::kBF16) && special) {
        uint16_t v = kHalfSpecials[rng() % std::size(kHalfSpecials)];
        std::memcpy(base + 2 * k, &v, 2);
      }
    }
  }
  return sc;
}

// MakeSpans: spans of at most `slot_bytes` over the tensors in file order. A tensor
// is split where a span fills up (on element boundaries when it is cast); skipped
// tensors and alignment padding up to `max_gap` bytes are read and dropped inside a
// span, larger gaps start a new span.
inline std::vector<ReadSpan> MakeSpans(const SinkScenario& sc, uint64_t slot_bytes,
                                       uint64_t max_gap) {
  std::vector<ReadSpan> spans;
  ReadSpan cur;
  bool open = false;
  auto close = [&]() {
    if (open && cur.length > 0) spans.push_back(cur);
    cur = ReadSpan();
    open = false;
  };
  for (size_t i = 0; i < sc.tensors.size(); ++i) {
    const TensorSpec& t = sc.tensors[i];
    if (t.skip) continue;
    const uint64_t unit = t.src != t.dst ? ElemBytes(t.src) : 1;
    const uint64_t total = t.elements * ElemBytes(t.src);
    uint64_t done = 0;
    while (done < total) {
      const uint64_t at = sc.offsets[i] + done;
      if (open) {
        const uint64_t end = cur.file_offset + cur.length;
        if (at < end || at - end > max_gap || at - cur.file_offset >= slot_bytes) close();
      }
      if (!open) {
        cur.shard = 0;
        cur.file_offset = at;
        cur.length = 0;
        open = true;
      }
      const uint64_t room = slot_bytes - (at - cur.file_offset);
      uint64_t take = std::min(total - done, room) / unit * unit;
      if (take == 0) {
        close();
        continue;
      }
      CopyRegion r;
      r.src_offset = at - cur.file_offset;
      r.length = take;
      r.dest = sc.dest_index[i];
      r.dst_offset = done;
      cur.regions.push_back(r);
      cur.length = r.src_offset + take;
      done += take;
      if (cur.length == slot_bytes) close();
    }
  }
  close();
  return spans;
}

// DestinationBytes: bytes of tensor i at its destination dtype.
inline uint64_t DestinationBytes(const TensorSpec& t) { return t.elements * ElemBytes(t.dst); }

// ExpectedBytes: what tensor i's destination must hold after the load.
inline std::vector<std::byte> ExpectedBytes(const SinkScenario& sc, size_t i) {
  const TensorSpec& t = sc.tensors[i];
  std::vector<std::byte> out(DestinationBytes(t));
  const std::byte* src = sc.file.data() + sc.offsets[i];
  if (out.empty()) return out;  // never memcpy with a null pointer, even of 0 bytes
  if (t.src == t.dst) {
    std::memcpy(out.data(), src, out.size());
  } else {
    Status s = CastElements(t.src, t.dst, src, t.elements, out.data());
    if (!s.ok()) out.clear();
  }
  return out;
}

// DriveOptions: how DriveSink plays the engine.
struct DriveOptions {
  int threads = 2;
  uint64_t slot_bytes = 4096;
  bool use_direct = true;       // ask DirectTargets first, as the engine does
  uint64_t window_shift = 512;  // bytes handed to Commit start this far into the slot
  // cancel_after: abort the load after this many commits (-1: never).
  int cancel_after = -1;
};

// DriveSink: Begin, reader threads, then Finish (or Abort on the first error, which
// is returned). `direct_count` (optional) counts spans delivered through DirectTargets.
inline Status DriveSink(Sink& sink, const SinkScenario& sc, const std::vector<ReadSpan>& spans,
                        std::span<const Destination> dests, const DriveOptions& options,
                        std::atomic<int>* direct_count = nullptr) {
  Status begin = sink.Begin(dests, options.slot_bytes);
  if (!begin.ok()) return begin;
  std::atomic<size_t> next{0};
  std::atomic<int> commits{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  Status first;
  auto fail = [&](Status s) {
    std::lock_guard<std::mutex> lock(mu);
    if (first.ok()) first = std::move(s);
    stop = true;
  };
  auto reader = [&]() {
    std::vector<iovec> iov;
    while (!stop) {
      const size_t k = next.fetch_add(1);
      if (k >= spans.size()) return;
      const ReadSpan& span = spans[k];
      const std::byte* src = sc.file.data() + span.file_offset;
      if (options.use_direct && sink.DirectTargets(span, &iov)) {
        uint64_t at = 0;
        for (const iovec& v : iov) {
          std::memcpy(v.iov_base, src + at, v.iov_len);
          at += v.iov_len;
        }
        if (direct_count) ++*direct_count;
        continue;
      }
      Result<StagingSlot> slot = sink.AcquireSlot();
      if (!slot.ok()) return fail(slot.status());
      const uint64_t shift = std::min<uint64_t>(options.window_shift,
                                                slot->memory.size() - span.length);
      std::byte* at = slot->memory.data() + shift;
      std::memcpy(at, src, span.length);
      Status s = sink.Commit(*slot, span, std::span<const std::byte>(at, span.length));
      if (!s.ok()) return fail(s);
      if (options.cancel_after >= 0 && commits.fetch_add(1) + 1 >= options.cancel_after) {
        return fail(CancelledError("test cancelled the load"));
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < options.threads; ++i) threads.emplace_back(reader);
  for (auto& t : threads) t.join();
  if (!first.ok()) {
    sink.Abort();
    return first;
  }
  return sink.Finish();
}

}  // namespace shardload::cuda_test

#endif  // SHARDLOAD_TESTS_CUDA_TEST_UTIL_H_
