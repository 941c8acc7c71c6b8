// tests/stream_test.cc — the streaming engine with the host sink: random plans through
// every io mode, ring size and thread count, byte-exact; progress, cancel, error paths.
#include "loader/stream.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <new>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "loader/cast.h"
#include "loader/host_sink.h"
#include "tests/io_util.h"

namespace shardload {
namespace {

using testing::RandomBytes;
using testing::TempDir;
using testing::WriteBytes;

// Shard: a file of random bytes cut into tensors; some are loaded.
struct Shard {
  std::string path;
  std::vector<std::byte> data;
  std::vector<std::pair<uint64_t, uint64_t>> tensors;  // [offset, size)
};

// Fixture: shards on disk, destinations for the loaded tensors, and a plan of spans
// no longer than `span_bytes`, coalescing over gaps of unloaded tensors and splitting
// tensors larger than a span.
struct Fixture {
  std::vector<Shard> shards;
  std::vector<std::vector<std::byte>> buffers;  // one per destination
  std::vector<Destination> destinations;
  std::vector<std::pair<uint32_t, uint32_t>> sources;  // destination → (shard, tensor)
  std::vector<ReadSpan> spans;
  uint64_t total = 0;
};

Fixture MakeFixture(const std::string& dir, int shard_count, uint64_t span_bytes, uint32_t seed) {
  std::mt19937 gen(seed);
  Fixture fx;
  for (int s = 0; s < shard_count; ++s) {
    Shard sh;
    sh.path = dir + "/shard" + std::to_string(s);
    uint64_t size = 20000 + gen() % 60000;
    sh.data = RandomBytes(size, seed * 31 + s);
    EXPECT_TRUE(WriteBytes(sh.path, sh.data));
    uint64_t pos = 64 + gen() % 100;  // a "header" that is never read
    while (pos < size) {
      uint64_t n = std::min<uint64_t>(size - pos, gen() % 3 == 0 ? gen() % 20000 : gen() % 600);
      sh.tensors.push_back({pos, n});
      pos += n;
    }
    fx.shards.push_back(std::move(sh));
  }
  for (uint32_t s = 0; s < fx.shards.size(); ++s) {
    const Shard& sh = fx.shards[s];
    ReadSpan cur;
    bool open = false;
    for (uint32_t t = 0; t < sh.tensors.size(); ++t) {
      if (gen() % 4 == 0) continue;  // not loaded: a gap
      auto [off, size] = sh.tensors[t];
      uint32_t dest = static_cast<uint32_t>(fx.destinations.size());
      fx.buffers.emplace_back(size, std::byte{0x5a});
      Destination d;
      d.ptr = fx.buffers.back().data();
      d.bytes = size;
      d.name = "s" + std::to_string(s) + ".t" + std::to_string(t);
      fx.destinations.push_back(d);
      fx.sources.push_back({s, t});
      uint64_t done = 0;
      do {
        uint64_t at = off + done;
        if (open && at + 1 > cur.file_offset + span_bytes) {  // no room left: close
          fx.spans.push_back(cur);
          open = false;
        }
        if (!open) {
          cur = ReadSpan{s, at, 0, {}};
          open = true;
        }
        uint64_t room = cur.file_offset + span_bytes - at;
        uint64_t n = std::min(size - done, room);
        cur.regions.push_back({at - cur.file_offset, n, dest, done});
        cur.length = at + n - cur.file_offset;
        done += n;
      } while (done < size);
      // A large gap to the next tensor closes the span; a small one is read over.
      if (gen() % 3 == 0 && open) {
        fx.spans.push_back(cur);
        open = false;
      }
    }
    if (open) fx.spans.push_back(cur);
  }
  for (const ReadSpan& s : fx.spans) fx.total += s.length;
  return fx;
}

void ExpectDelivered(const Fixture& fx) {
  for (size_t i = 0; i < fx.destinations.size(); ++i) {
    auto [s, t] = fx.sources[i];
    auto [off, size] = fx.shards[s].tensors[t];
    if (size == 0) continue;
    ASSERT_EQ(0, std::memcmp(fx.buffers[i].data(), fx.shards[s].data.data() + off, size))
        << fx.destinations[i].name;
  }
}

struct Opened {
  std::vector<std::unique_ptr<ReadableFile>> owned;
  std::vector<const ReadableFile*> files;
  std::string skip;
};

Opened OpenAll(const Fixture& fx, IoMode mode) {
  Opened o;
  for (const Shard& sh : fx.shards) {
    Result<std::unique_ptr<ReadableFile>> f = OpenFile(sh.path, mode);
    if (!f.ok()) {
      const bool refused = f.status().code() == StatusCode::kUnimplemented ||
                           (mode == IoMode::kUring &&
                            f.status().code() == StatusCode::kFailedPrecondition);
      if (refused) o.skip = f.status().message();
      EXPECT_TRUE(refused) << f.status().ToString();
      return o;
    }
    o.files.push_back(f->get());
    o.owned.push_back(std::move(*f));
  }
  return o;
}

struct Params {
  IoMode mode;
  int slots;
  int threads;
  bool direct_targets;
};

class StreamMatrixTest : public ::testing::TestWithParam<Params> {};

TEST_P(StreamMatrixTest, RandomPlansAreByteExact) {
  const Params p = GetParam();
  std::string dir = TempDir("stream");
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    // Tiny spans (4 KiB) force many wraps of a 1..4-slot ring.
    Fixture fx = MakeFixture(dir, 1 + seed % 3, 4096 * seed, seed * 7 + p.slots);
    Opened o = OpenAll(fx, p.mode);
    if (!o.skip.empty()) GTEST_SKIP() << "refused here: " << o.skip;
    ASSERT_EQ(o.files.size(), fx.shards.size());
    SinkOptions so;
    so.slot_count = p.slots;
    so.slot_bytes = 4096 * seed;
    Result<std::unique_ptr<HostSink>> sink = HostSink::Create(so);
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Begin(fx.destinations, so.slot_bytes).ok());
    StreamOptions opt;
    opt.threads = p.threads;
    opt.allow_direct_targets = p.direct_targets;
    std::vector<std::pair<uint64_t, uint64_t>> progress;
    opt.progress = [&](uint64_t done, uint64_t total) {
      progress.push_back({done, total});
      return true;
    };
    Status s = Stream(o.files, fx.spans, **sink, opt);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ExpectDelivered(fx);
    EXPECT_EQ((*sink)->slots_in_use(), 0);
    ASSERT_FALSE(progress.empty());
    EXPECT_EQ(progress.back(), std::make_pair(fx.total, fx.total));
    for (size_t i = 1; i < progress.size(); ++i) {
      EXPECT_LE(progress[i - 1].first, progress[i].first);
      EXPECT_EQ(progress[i].second, fx.total);
    }
  }
}

std::vector<Params> AllParams() {
  std::vector<Params> out;
  for (IoMode m : testing::AllIoModes()) {
    for (int slots : {1, 2, 4}) {
      for (int threads : {1, 4}) {
        for (bool direct : {false, true}) out.push_back({m, slots, threads, direct});
      }
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(
    All, StreamMatrixTest, ::testing::ValuesIn(AllParams()),
    [](const ::testing::TestParamInfo<Params>& i) {
      return std::string(IoModeName(i.param.mode)) + "_slots" + std::to_string(i.param.slots) +
             "_threads" + std::to_string(i.param.threads) +
             (i.param.direct_targets ? "_direct" : "_staged");
    });

class StreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("stream");
    fx_ = MakeFixture(dir_, 2, 4096, 99);
    opened_ = OpenAll(fx_, IoMode::kPread);
    ASSERT_EQ(opened_.files.size(), 2u);
    SinkOptions so;
    so.slot_count = 2;
    so.slot_bytes = 4096;
    sink_ = std::move(*HostSink::Create(so));
    ASSERT_TRUE(sink_->Begin(fx_.destinations, 4096).ok());
  }
  std::string dir_;
  Fixture fx_;
  Opened opened_;
  std::unique_ptr<HostSink> sink_;
};

TEST_F(StreamTest, CancelFlagSetBeforeStart) {
  std::atomic<bool> cancel{true};
  StreamOptions opt;
  opt.cancel = &cancel;
  Status s = Stream(opened_.files, fx_.spans, *sink_, opt);
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_EQ(s.message(), "load cancelled");
  EXPECT_EQ(sink_->slots_in_use(), 0);
}

// HookSink: a HostSink that runs `hook(n)` before its n-th Commit (1-based).
class HookSink : public Sink {
 public:
  HookSink(HostSink* inner, std::function<void(int)> hook) : inner_(inner), hook_(std::move(hook)) {}
  Status Begin(std::span<const Destination> d, uint64_t b) override { return inner_->Begin(d, b); }
  Result<StagingSlot> AcquireSlot() override { return inner_->AcquireSlot(); }
  Status Commit(const StagingSlot& slot, const ReadSpan& span,
                std::span<const std::byte> bytes) override {
    hook_(++commits_);
    return inner_->Commit(slot, span, bytes);
  }
  void ReleaseSlot(const StagingSlot& slot) override { inner_->ReleaseSlot(slot); }
  Status Finish() override { return inner_->Finish(); }
  void Abort() override {
    aborted_ = true;
    inner_->Abort();
  }
  bool aborted_ = false;

 private:
  HostSink* inner_;
  std::function<void(int)> hook_;
  std::atomic<int> commits_{0};
};

TEST_F(StreamTest, CancelFlagSetMidLoad) {
  ASSERT_GT(fx_.spans.size(), 10u);
  std::atomic<bool> cancel{false};
  HookSink hook(sink_.get(), [&](int n) {
    if (n == 3) cancel.store(true);
  });
  StreamOptions opt;
  opt.threads = 2;
  opt.cancel = &cancel;
  opt.allow_direct_targets = false;
  Status s = Stream(opened_.files, fx_.spans, hook, opt);
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_EQ(s.message(), "load cancelled");
  EXPECT_TRUE(hook.aborted_);
  EXPECT_EQ(sink_->slots_in_use(), 0);
  // After Abort the sink refuses new slots until the next Begin.
  EXPECT_EQ(sink_->AcquireSlot().status().code(), StatusCode::kCancelled);
}

TEST_F(StreamTest, ProgressCallbackCancels) {
  int calls = 0;
  StreamOptions opt;
  opt.threads = 1;
  opt.progress = [&](uint64_t, uint64_t) {
    ++calls;
    return false;
  };
  Status s = Stream(opened_.files, fx_.spans, *sink_, opt);
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_EQ(s.message(), "load cancelled by the progress callback");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(sink_->slots_in_use(), 0);
}

// A progress callback that throws fails the load with an error naming it, never
// std::terminate (readers still running when the exception left Stream did that);
// bad_alloc is resource_exhausted, anything else internal.
TEST_F(StreamTest, ProgressCallbackThatThrowsFailsTheLoad) {
  enum class When { kStart, kMidLoad, kEnd };
  for (When when : {When::kStart, When::kMidLoad, When::kEnd}) {
    for (bool oom : {false, true}) {
      ASSERT_TRUE(sink_->Begin(fx_.destinations, 4096).ok());
      StreamOptions opt;
      opt.threads = 1;
      // Slow spans, so the progress loop (20 ms tick) sees the load part done.
      opt.observe_region = [](const ReadSpan&, const CopyRegion&,
                              std::span<const std::byte>) -> Status {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        return OkStatus();
      };
      bool threw = false;
      opt.progress = [&](uint64_t done, uint64_t total) -> bool {
        const When now = done == 0 ? When::kStart : done == total ? When::kEnd : When::kMidLoad;
        if (now == when) {
          threw = true;
          if (oom) throw std::bad_alloc();
          throw std::runtime_error("boom");
        }
        return true;
      };
      Status s = Stream(opened_.files, fx_.spans, *sink_, opt);
      ASSERT_TRUE(threw) << static_cast<int>(when);
      EXPECT_EQ(s, oom ? ResourceExhaustedError("progress callback: out of memory")
                       : InternalError("progress callback: unexpected exception: boom"))
          << static_cast<int>(when);
      EXPECT_EQ(sink_->slots_in_use(), 0);
    }
  }
}

TEST_F(StreamTest, SpanNamingAMissingShard) {
  std::vector<ReadSpan> spans = fx_.spans;
  spans.push_back({7, 0, 10, {}});
  Status s = Stream(opened_.files, spans, *sink_, {});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "span names shard 7 of 2 open files");
}

TEST_F(StreamTest, SpanPastTheEndOfItsFile) {
  uint64_t size = opened_.files[1]->size();
  std::vector<ReadSpan> spans = {{1, size - 10, 20, {}}};
  Status s = Stream(opened_.files, spans, *sink_, {});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), fx_.shards[1].path + ": span [" + std::to_string(size - 10) + ", " +
                             std::to_string(size + 10) + ") passes the end of the file (" +
                             std::to_string(size) + " bytes)");
}

TEST_F(StreamTest, InvalidThreadCount) {
  StreamOptions opt;
  opt.threads = -1;
  Status s = Stream(opened_.files, fx_.spans, *sink_, opt);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "invalid threads -1: expected 0..256 (0 = hardware threads)");
}

TEST_F(StreamTest, RegionOutsideItsDestinationFailsAndFreesSlots) {
  std::vector<ReadSpan> spans = fx_.spans;
  // Make one region of the last span write past its tensor's end.
  CopyRegion* found = nullptr;
  for (ReadSpan& span : spans) {
    for (CopyRegion& region : span.regions) {
      if (region.length > 0) found = &region;
    }
  }
  ASSERT_NE(found, nullptr);
  CopyRegion& r = *found;
  const Destination& d = fx_.destinations[r.dest];
  r.dst_offset = d.bytes;  // one whole region beyond the end
  for (bool direct : {false, true}) {
    ASSERT_TRUE(sink_->Begin(fx_.destinations, 4096).ok());
    StreamOptions opt;
    opt.threads = 3;
    opt.allow_direct_targets = direct;
    Status s = Stream(opened_.files, spans, *sink_, opt);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "tensor '" + d.name + "' (cpu): bytes [" + std::to_string(d.bytes) +
                               ", " + std::to_string(d.bytes + r.length) +
                               ") do not fit its destination of " + std::to_string(d.bytes) +
                               " bytes");
    EXPECT_EQ(sink_->slots_in_use(), 0);
  }
}

// An exception on a reader thread (out of memory in an observer, say) is an error of
// the load naming the file and bytes, never std::terminate; the slot goes back.
// bad_alloc is resource_exhausted; any other exception internal, not "out of memory".
TEST_F(StreamTest, ExceptionOnAReaderIsAnErrorAndFreesSlots) {
  for (bool direct : {false, true}) {
    for (bool oom : {true, false}) {
      ASSERT_TRUE(sink_->Begin(fx_.destinations, 4096).ok());
      StreamOptions opt;
      opt.threads = 1;  // the first span read is the first in the plan
      opt.allow_direct_targets = direct;
      opt.observe_region = [oom](const ReadSpan&, const CopyRegion&,
                                 std::span<const std::byte>) -> Status {
        if (oom) throw std::bad_alloc();
        throw std::out_of_range("observer index");
      };
      Status s = Stream(opened_.files, fx_.spans, *sink_, opt);
      const ReadSpan& first = fx_.spans[0];
      const std::string where = fx_.shards[first.shard].path + ": reading bytes [" +
                                std::to_string(first.file_offset) + ", " +
                                std::to_string(first.file_offset + first.length) + ")";
      EXPECT_EQ(s, oom ? ResourceExhaustedError(where + ": out of memory")
                       : InternalError(where + ": unexpected exception: observer index"))
          << direct;
      EXPECT_EQ(sink_->slots_in_use(), 0);
    }
  }
}

// Shards are interleaved round-robin, each keeping its own order, also when one
// shard has far more spans than the others.
TEST(InterleaveTest, RoundRobinOverShardsThatStillHaveSpans) {
  std::vector<ReadSpan> spans;
  auto add = [&](uint32_t shard, uint64_t offset) {
    ReadSpan s;
    s.shard = shard;
    s.file_offset = offset;
    s.length = 1;
    spans.push_back(s);
  };
  for (uint64_t i = 0; i < 4; ++i) add(0, i);  // spans 0..3
  add(1, 0);                                    // 4
  add(2, 0);                                    // 5
  add(2, 1);                                    // 6
  EXPECT_EQ(InterleaveShards(spans, 4),
            (std::vector<size_t>{0, 4, 5, 1, 6, 2, 3}));
  EXPECT_TRUE(InterleaveShards({}, 3).empty());
}

TEST_F(StreamTest, StagingRingsAreFreedWithTheSink) {
  int before = LiveStagingRings();
  {
    Result<std::unique_ptr<HostSink>> sink = HostSink::Create(SinkOptions{3, 8192});
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Begin(fx_.destinations, 8192).ok());
    EXPECT_EQ(LiveStagingRings(), before + 1);
    ASSERT_TRUE((*sink)->Begin(fx_.destinations, 4096).ok());  // fits: reused
    EXPECT_EQ(LiveStagingRings(), before + 1);
  }
  EXPECT_EQ(LiveStagingRings(), before);
}

TEST(HostSinkTest, InvalidOptions) {
  Result<std::unique_ptr<HostSink>> s = HostSink::Create(SinkOptions{0, 4096});
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message(), "invalid slot_count 0: expected 1..64");
  s = HostSink::Create(SinkOptions{4, 5000});
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message(),
            "invalid slot_bytes 5000: expected a multiple of 4096 in 4096..1073741824");
}

TEST(HostSinkTest, RejectsCudaDestinationsAndUnsupportedCasts) {
  std::unique_ptr<HostSink> sink = std::move(*HostSink::Create({}));
  std::vector<float> buf(4);
  Destination d{buf.data(), 16, Device{Device::Kind::kCuda, 1}, Dtype::kF32, Dtype::kF32, "w"};
  Status s = sink->Begin({&d, 1}, 4096);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "tensor 'w': device cuda:1 needs a device backend; the host sink delivers to cpu only");
  d.device = Device{};
  d.dst_dtype = Dtype::kI32;
  s = sink->Begin({&d, 1}, 4096);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "tensor 'w': cannot cast F32 to I32");
}

TEST(HostSinkTest, DirectTargetsMergeRegionsWhoseMemoryIsContiguous) {
  // An arena laid out in file order: a, b and d are back to back there; c lives
  // elsewhere, and e sits in the arena *before* a (contiguous memory, wrong order).
  alignas(64) std::byte arena[64] = {};
  std::byte other[8] = {};
  std::vector<Destination> dests = {
      {arena + 8, 16, Device{}, Dtype::kU8, Dtype::kU8, "a"},
      {arena + 24, 8, Device{}, Dtype::kU8, Dtype::kU8, "b"},
      {other, 8, Device{}, Dtype::kU8, Dtype::kU8, "c"},
      {arena + 32, 8, Device{}, Dtype::kU8, Dtype::kU8, "d"},
      {arena, 8, Device{}, Dtype::kU8, Dtype::kU8, "e"},
  };
  std::unique_ptr<HostSink> sink = std::move(*HostSink::Create(SinkOptions{1, 4096}));
  ASSERT_TRUE(sink->Begin(dests, 4096).ok());
  std::vector<iovec> iov;
  ReadSpan span{0, 100, 40, {{0, 16, 0, 0}, {16, 8, 1, 0}, {24, 8, 2, 0}, {32, 8, 3, 0}}};
  ASSERT_TRUE(sink->DirectTargets(span, &iov));
  ASSERT_EQ(iov.size(), 3u);  // a+b, c, d
  EXPECT_EQ(iov[0].iov_base, arena + 8);
  EXPECT_EQ(iov[0].iov_len, 24u);
  EXPECT_EQ(iov[1].iov_base, other);
  EXPECT_EQ(iov[1].iov_len, 8u);
  EXPECT_EQ(iov[2].iov_base, arena + 32);
  EXPECT_EQ(iov[2].iov_len, 8u);

  // Pieces of one tensor continue it; memory that is contiguous only backwards
  // (a's start right after e's end, but a read first) is not merged.
  ReadSpan pieces{0, 0, 16, {{0, 8, 0, 0}, {8, 8, 0, 8}}};
  ASSERT_TRUE(sink->DirectTargets(pieces, &iov));
  ASSERT_EQ(iov.size(), 1u);
  EXPECT_EQ(iov[0].iov_base, arena + 8);
  EXPECT_EQ(iov[0].iov_len, 16u);
  ReadSpan backwards{0, 0, 16, {{0, 8, 0, 8}, {8, 8, 4, 0}}};
  ASSERT_TRUE(sink->DirectTargets(backwards, &iov));
  ASSERT_EQ(iov.size(), 2u);
  EXPECT_EQ(iov[0].iov_base, arena + 16);
  EXPECT_EQ(iov[1].iov_base, arena);

  // Tied regions (same source bytes twice) cannot be one read into place.
  ReadSpan tied{0, 0, 8, {{0, 8, 3, 0}, {0, 8, 4, 0}}};
  EXPECT_FALSE(sink->DirectTargets(tied, &iov));
  EXPECT_TRUE(iov.empty());

  // Streamed for real (preadv through the merged iovecs), every byte lands in place.
  std::string dir = TempDir("merge");
  std::vector<std::byte> file = RandomBytes(200, 7);
  ASSERT_TRUE(WriteBytes(dir + "/f", file));
  std::unique_ptr<ReadableFile> f = std::move(*OpenFile(dir + "/f", IoMode::kPread));
  const ReadableFile* files[] = {f.get()};
  StreamOptions opt;
  opt.threads = 1;
  Status s = Stream(files, std::span<const ReadSpan>(&span, 1), *sink, opt);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(std::memcmp(arena + 8, file.data() + 100, 24), 0);
  EXPECT_EQ(std::memcmp(other, file.data() + 124, 8), 0);
  EXPECT_EQ(std::memcmp(arena + 32, file.data() + 132, 8), 0);
  EXPECT_EQ(sink->slots_in_use(), 0);
}

TEST(HostSinkTest, CastsWhileStreaming) {
  std::string dir = TempDir("cast");
  std::vector<float> values(3000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 1.0001f - 1000.5f;
  std::vector<std::byte> file(100 + values.size() * 4);
  std::memcpy(file.data() + 100, values.data(), values.size() * 4);
  ASSERT_TRUE(WriteBytes(dir + "/f", file));
  std::unique_ptr<ReadableFile> f = std::move(*OpenFile(dir + "/f", IoMode::kPread));
  std::vector<uint16_t> bf16(values.size()), f16(values.size());
  std::vector<Destination> dests = {
      {bf16.data(), bf16.size() * 2, Device{}, Dtype::kF32, Dtype::kBF16, "as_bf16"},
      {f16.data(), f16.size() * 2, Device{}, Dtype::kF32, Dtype::kF16, "as_f16"}};
  // Both targets read the same stored bytes (tied), in 4 KiB spans (1024 elements).
  std::vector<ReadSpan> spans;
  for (uint64_t at = 0; at < values.size() * 4; at += 4096) {
    uint64_t n = std::min<uint64_t>(4096, values.size() * 4 - at);
    spans.push_back({0, 100 + at, n, {{0, n, 0, at}}});
    spans.push_back({0, 100 + at, n, {{0, n, 1, at}}});
  }
  std::unique_ptr<HostSink> sink = std::move(*HostSink::Create(SinkOptions{2, 4096}));
  ASSERT_TRUE(sink->Begin(dests, 4096).ok());
  const ReadableFile* files[] = {f.get()};
  StreamOptions opt;
  opt.threads = 2;
  Status s = Stream(files, spans, *sink, opt);
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(bf16[i], F32ToBF16Bits(values[i])) << i;
    ASSERT_EQ(f16[i], F32ToF16Bits(values[i])) << i;
  }
}

}  // namespace
}  // namespace shardload
