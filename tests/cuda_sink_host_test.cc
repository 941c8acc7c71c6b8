// CudaSink's ring logic with host destinations. A load without CUDA destinations makes
// no CUDA call, so these run on machines without a GPU: slot hand-out and blocking,
// reuse of the ring across loads and sinks, validation of every region, casts to host
// memory, DirectTargets, cancellation and error propagation.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_sink.h"
#include "tests/cuda_test_util.h"

namespace shardload::cuda {
namespace {

using cuda_test::DestinationBytes;
using cuda_test::DriveOptions;
using cuda_test::DriveSink;
using cuda_test::ExpectedBytes;
using cuda_test::MakeScenario;
using cuda_test::MakeSpans;
using cuda_test::SinkScenario;
using cuda_test::TensorSpec;

constexpr uint64_t kSlot = 4096;

std::unique_ptr<CudaSink> MakeSink(int count, uint64_t slot_bytes,
                                   std::shared_ptr<StagingPool> pool = nullptr) {
  CudaSinkOptions o;
  o.ring.slot_count = count;
  o.ring.slot_bytes = slot_bytes;
  Result<std::unique_ptr<CudaSink>> s = CudaSink::Create(o, std::move(pool));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

// HostTargets: host buffers for every loaded tensor of a scenario, filled with 0xEE.
struct HostTargets {
  std::vector<std::vector<std::byte>> buffers;
  std::vector<Destination> dests;
};

HostTargets MakeTargets(const SinkScenario& sc) {
  HostTargets t;
  for (const TensorSpec& spec : sc.tensors) {
    if (spec.skip) continue;
    t.buffers.emplace_back(DestinationBytes(spec), std::byte{0xEE});
  }
  size_t k = 0;
  for (const TensorSpec& spec : sc.tensors) {
    if (spec.skip) continue;
    Destination d;
    d.ptr = t.buffers[k].data();
    d.bytes = t.buffers[k].size();
    d.src_dtype = spec.src;
    d.dst_dtype = spec.dst;
    d.name = spec.name;
    t.dests.push_back(d);
    ++k;
  }
  return t;
}

void ExpectDelivered(const SinkScenario& sc, const HostTargets& t) {
  size_t k = 0;
  for (size_t i = 0; i < sc.tensors.size(); ++i) {
    if (sc.tensors[i].skip) continue;
    std::vector<std::byte> want = ExpectedBytes(sc, i);
    ASSERT_EQ(want.size(), t.buffers[k].size());
    EXPECT_TRUE(want.empty() || std::memcmp(want.data(), t.buffers[k].data(), want.size()) == 0)
        << "tensor " << sc.tensors[i].name << " differs";
    ++k;
  }
}

std::vector<TensorSpec> MixedTensors() {
  std::vector<TensorSpec> t;
  for (int i = 0; i < kDtypeCount; ++i) {
    const Dtype d = static_cast<Dtype>(i);
    if (DtypeBits(d) % 8 != 0) continue;  // sub-byte dtypes: whole bytes are copied below
    t.push_back({"plain." + std::string(DtypeName(d)), d, d, 700u + 37u * i, Device{}, false});
  }
  t.push_back({"f4.packed", Dtype::kU8, Dtype::kU8, 999, Device{}, false});
  t.push_back({"skipped.a", Dtype::kF32, Dtype::kF32, 20, Device{}, true});
  t.push_back({"cast.f32_bf16", Dtype::kF32, Dtype::kBF16, 3001, Device{}, false});
  t.push_back({"cast.f32_f16", Dtype::kF32, Dtype::kF16, 2500, Device{}, false});
  t.push_back({"skipped.big", Dtype::kU8, Dtype::kU8, 9000, Device{}, true});
  t.push_back({"cast.f16_f32", Dtype::kF16, Dtype::kF32, 1777, Device{}, false});
  t.push_back({"cast.bf16_f32", Dtype::kBF16, Dtype::kF32, 1500, Device{}, false});
  t.push_back({"cast.f16_bf16", Dtype::kF16, Dtype::kBF16, 1234, Device{}, false});
  t.push_back({"cast.bf16_f16", Dtype::kBF16, Dtype::kF16, 4321, Device{}, false});
  t.push_back({"scalar", Dtype::kF64, Dtype::kF64, 1, Device{}, false});
  t.push_back({"empty", Dtype::kF32, Dtype::kF32, 0, Device{}, false});
  return t;
}

TEST(CudaSinkHostTest, ByteExactAcrossRingGeometriesThreadsAndWraps) {
  uint32_t seed = 1;
  for (int count = 1; count <= 4; ++count) {
    for (uint64_t slot : {kSlot, 3 * kSlot}) {
      for (int threads : {1, 3}) {
        for (bool direct : {false, true}) {
          SCOPED_TRACE("slots=" + std::to_string(count) + " slot_bytes=" + std::to_string(slot) +
                       " threads=" + std::to_string(threads) + " direct=" + std::to_string(direct));
          SinkScenario sc = MakeScenario(seed++, MixedTensors());
          std::vector<ReadSpan> spans = MakeSpans(sc, slot, /*max_gap=*/256);
          ASSERT_GT(spans.size(), static_cast<size_t>(2 * count));  // every slot is reused
          HostTargets t = MakeTargets(sc);
          std::unique_ptr<CudaSink> sink = MakeSink(count, slot);
          DriveOptions o;
          o.threads = threads;
          o.slot_bytes = slot;
          o.use_direct = direct;
          std::atomic<int> direct_spans{0};
          Status s = DriveSink(*sink, sc, spans, t.dests, o, &direct_spans);
          ASSERT_TRUE(s.ok()) << s.ToString();
          ExpectDelivered(sc, t);
          EXPECT_FALSE(sink->staging_is_pinned());
          EXPECT_EQ(sink->staging_bytes(), static_cast<uint64_t>(count) * (slot + 8192));
          EXPECT_EQ(sink->scratch_bytes(), 0u);
          if (direct) {
            EXPECT_GT(direct_spans.load(), 0);
          } else {
            EXPECT_EQ(direct_spans.load(), 0);
          }
        }
      }
    }
  }
}

TEST(CudaSinkHostTest, RingIsReusedAcrossLoadsAndCarriedToTheNextSinkByThePool) {
  auto pool = std::make_shared<StagingPool>();
  SinkScenario sc = MakeScenario(42, MixedTensors());
  std::vector<ReadSpan> spans = MakeSpans(sc, kSlot, 64);
  DriveOptions o;
  o.slot_bytes = kSlot;
  const std::byte* first_slot = nullptr;
  {
    std::unique_ptr<CudaSink> sink = MakeSink(3, kSlot, pool);
    for (int load = 0; load < 5; ++load) {
      HostTargets t = MakeTargets(sc);
      ASSERT_TRUE(DriveSink(*sink, sc, spans, t.dests, o).ok());
      ExpectDelivered(sc, t);
      EXPECT_EQ(sink->ring_allocations(), 1);
      EXPECT_TRUE(sink->Warnings().empty());  // a pageable ring for a host load is no fallback
    }
    // Smaller spans reuse the same ring too.
    HostTargets t = MakeTargets(sc);
    ASSERT_TRUE(sink->Begin(t.dests, 1024).ok());
    Result<StagingSlot> slot = sink->AcquireSlot();
    ASSERT_TRUE(slot.ok());
    first_slot = slot->memory.data();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first_slot) % 4096, 0u);
    EXPECT_EQ(slot->memory.size(), kSlot + 8192);
    sink->ReleaseSlot(*slot);
    ASSERT_TRUE(sink->Finish().ok());
    EXPECT_EQ(sink->ring_allocations(), 1);
    EXPECT_EQ(pool->cached_bytes(), 0u);
    // StagingPool::Clear on an empty pool frees nothing.
    EXPECT_EQ(pool->Clear(), 0u);
  }
  EXPECT_EQ(pool->cached_bytes(), 3 * (kSlot + 8192));
  EXPECT_FALSE(pool->cached_is_pinned());
  {
    std::unique_ptr<CudaSink> next = MakeSink(3, kSlot, pool);
    HostTargets t = MakeTargets(sc);
    ASSERT_TRUE(DriveSink(*next, sc, spans, t.dests, o).ok());
    ExpectDelivered(sc, t);
    EXPECT_EQ(next->ring_allocations(), 0);  // took the pool's ring
    EXPECT_EQ(pool->cached_bytes(), 0u);
  }
  // A sink with another geometry does not take it; the unfitting ring is dropped so the
  // memory held never adds up.
  {
    std::unique_ptr<CudaSink> other = MakeSink(2, kSlot, pool);
    HostTargets t = MakeTargets(sc);
    ASSERT_TRUE(DriveSink(*other, sc, spans, t.dests, o).ok());
    EXPECT_EQ(other->ring_allocations(), 1);
    EXPECT_EQ(pool->cached_bytes(), 0u);
  }
  EXPECT_EQ(pool->cached_bytes(), 2 * (kSlot + 8192));
  pool->Clear();
  EXPECT_EQ(pool->cached_bytes(), 0u);
}

TEST(CudaSinkHostTest, BackendSinksShareTheCachedRing) {
  CudaBackend backend;
  SinkOptions so;
  so.slot_count = 2;
  so.slot_bytes = kSlot;
  SinkScenario sc = MakeScenario(5, MixedTensors());
  std::vector<ReadSpan> spans = MakeSpans(sc, kSlot, 64);
  DriveOptions o;
  o.slot_bytes = kSlot;
  for (int load = 0; load < 3; ++load) {
    Result<std::unique_ptr<Sink>> sink = backend.MakeSink(so);
    ASSERT_TRUE(sink.ok());
    auto* cuda_sink = dynamic_cast<CudaSink*>(sink->get());
    ASSERT_NE(cuda_sink, nullptr);
    HostTargets t = MakeTargets(sc);
    ASSERT_TRUE(DriveSink(**sink, sc, spans, t.dests, o).ok());
    ExpectDelivered(sc, t);
    EXPECT_EQ(cuda_sink->ring_allocations(), load == 0 ? 1 : 0);
  }
  EXPECT_EQ(backend.cached_staging_bytes(), 2 * (kSlot + 8192));
  backend.ReleaseCachedStaging();
  EXPECT_EQ(backend.cached_staging_bytes(), 0u);
}

TEST(CudaSinkHostTest, ManyReadersOnFewSlotsStayByteExact) {
  // More readers than slots: most AcquireSlot calls wait; every load must still be exact.
  std::unique_ptr<CudaSink> sink = MakeSink(2, kSlot);
  for (int load = 0; load < 4; ++load) {
    SinkScenario sc = MakeScenario(900 + load, MixedTensors());
    std::vector<ReadSpan> spans = MakeSpans(sc, kSlot, 64);
    HostTargets t = MakeTargets(sc);
    DriveOptions o;
    o.threads = 8;
    o.slot_bytes = kSlot;
    o.use_direct = load % 2 == 0;
    Status s = DriveSink(*sink, sc, spans, t.dests, o);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ExpectDelivered(sc, t);
  }
  EXPECT_EQ(sink->ring_allocations(), 1);
}

TEST(CudaSinkHostTest, DestroyingAnOpenSinkDrainsAndKeepsTheRing) {
  auto pool = std::make_shared<StagingPool>();
  std::vector<std::byte> buf(64);
  Destination d{buf.data(), 64, Device{}, Dtype::kU8, Dtype::kU8, "t"};
  {
    std::unique_ptr<CudaSink> sink = MakeSink(2, kSlot, pool);
    ASSERT_TRUE(sink->Begin(std::span<const Destination>(&d, 1), kSlot).ok());
    Result<StagingSlot> slot = sink->AcquireSlot();
    ASSERT_TRUE(slot.ok());
    ReadSpan span{0, 0, 64, {{0, 64, 0, 0}}};
    std::memset(slot->memory.data(), 0x5A, 64);
    ASSERT_TRUE(sink->Commit(*slot, span, slot->memory.first(64)).ok());
    // No Finish: the destructor ends the load.
  }
  EXPECT_EQ(buf[63], std::byte{0x5A});
  EXPECT_EQ(pool->cached_bytes(), 2 * (kSlot + 8192));
}

TEST(CudaSinkHostTest, AcquireSlotBlocksUntilASlotIsReleased) {
  std::unique_ptr<CudaSink> sink = MakeSink(1, kSlot);
  std::vector<std::byte> buf(16);
  Destination d{buf.data(), 16, Device{}, Dtype::kU8, Dtype::kU8, "t"};
  ASSERT_TRUE(sink->Begin(std::span<const Destination>(&d, 1), kSlot).ok());
  Result<StagingSlot> held = sink->AcquireSlot();
  ASSERT_TRUE(held.ok());
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    Result<StagingSlot> s = sink->AcquireSlot();
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->id, 0);
    got = true;
    sink->ReleaseSlot(*s);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(got.load());  // the only slot is lent
  // Committing the held slot (host-only: delivered at once) frees it for the waiter.
  ReadSpan span{0, 0, 16, {{0, 16, 0, 0}}};
  std::memset(held->memory.data(), 0x42, 16);
  ASSERT_TRUE(sink->Commit(*held, span, held->memory.first(16)).ok());
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_EQ(buf[15], std::byte{0x42});
  EXPECT_TRUE(sink->Finish().ok());
}

TEST(CudaSinkHostTest, AbortWakesWaitingReadersWithCancelled) {
  std::unique_ptr<CudaSink> sink = MakeSink(1, kSlot);
  std::vector<std::byte> buf(16);
  Destination d{buf.data(), 16, Device{}, Dtype::kU8, Dtype::kU8, "t"};
  ASSERT_TRUE(sink->Begin(std::span<const Destination>(&d, 1), kSlot).ok());
  Result<StagingSlot> held = sink->AcquireSlot();
  ASSERT_TRUE(held.ok());
  Status waiter_status;
  std::thread waiter([&] { waiter_status = sink->AcquireSlot().status(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  sink->Abort();
  waiter.join();
  EXPECT_EQ(waiter_status.code(), StatusCode::kCancelled);
  EXPECT_EQ(waiter_status.message(), "cuda sink: the load was aborted");
  // The sink starts over cleanly.
  ASSERT_TRUE(sink->Begin(std::span<const Destination>(&d, 1), kSlot).ok());
  Result<StagingSlot> again = sink->AcquireSlot();
  ASSERT_TRUE(again.ok());
  sink->ReleaseSlot(*again);
  EXPECT_TRUE(sink->Finish().ok());
}

TEST(CudaSinkHostTest, CancelledLoadAbortsAndTheSinkIsReusable) {
  SinkScenario sc = MakeScenario(9, MixedTensors());
  std::vector<ReadSpan> spans = MakeSpans(sc, kSlot, 64);
  std::unique_ptr<CudaSink> sink = MakeSink(2, kSlot);
  DriveOptions o;
  o.slot_bytes = kSlot;
  o.threads = 3;
  o.use_direct = false;
  o.cancel_after = 3;
  HostTargets t = MakeTargets(sc);
  Status s = DriveSink(*sink, sc, spans, t.dests, o);
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_EQ(s.message(), "test cancelled the load");
  o.cancel_after = -1;
  HostTargets t2 = MakeTargets(sc);
  ASSERT_TRUE(DriveSink(*sink, sc, spans, t2.dests, o).ok());
  ExpectDelivered(sc, t2);
  EXPECT_EQ(sink->ring_allocations(), 1);
}

class CommitValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sink_ = MakeSink(2, kSlot);
    buf_.assign(64, std::byte{0xEE});
    cast_buf_.assign(32, std::byte{0xEE});
    dests_.push_back({buf_.data(), 64, Device{}, Dtype::kU8, Dtype::kU8, "layers.3.w"});
    dests_.push_back({cast_buf_.data(), 32, Device{}, Dtype::kF32, Dtype::kBF16, "layers.3.c"});
    ASSERT_TRUE(sink_->Begin(dests_, kSlot).ok());
  }
  // CommitOne: acquire, fill with 0x11, commit `span` with `length` bytes.
  Status CommitOne(const ReadSpan& span, uint64_t length) {
    Result<StagingSlot> slot = sink_->AcquireSlot();
    if (!slot.ok()) return slot.status();
    std::memset(slot->memory.data(), 0x11, slot->memory.size());
    return sink_->Commit(*slot, span, slot->memory.first(length));
  }
  void ExpectUntouched() {
    for (std::byte b : buf_) ASSERT_EQ(b, std::byte{0xEE});
    for (std::byte b : cast_buf_) ASSERT_EQ(b, std::byte{0xEE});
  }
  std::unique_ptr<CudaSink> sink_;
  std::vector<std::byte> buf_, cast_buf_;
  std::vector<Destination> dests_;
};

TEST_F(CommitValidationTest, RegionPastTheCommittedBytes) {
  ReadSpan span{2, 4096, 32, {{0, 16, 0, 0}, {16, 24, 0, 16}}};
  Status s = CommitOne(span, 32);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s.message(),
            "tensor 'layers.3.w' (cpu): region [16, 40) of the span at file offset 4096 passes "
            "the 32 bytes committed");
  ExpectUntouched();  // validated before anything is written
  // The failure is the load's first error: readers and Finish report it.
  Result<StagingSlot> next = sink_->AcquireSlot();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status(), s);
  EXPECT_EQ(sink_->Finish(), s);
  // A new load starts clean.
  ASSERT_TRUE(sink_->Begin(dests_, kSlot).ok());
  EXPECT_TRUE(sink_->Finish().ok());
}

TEST_F(CommitValidationTest, RegionPastTheDestination) {
  ReadSpan span{0, 0, 32, {{0, 32, 0, 40}}};
  Status s = CommitOne(span, 32);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s.message(),
            "tensor 'layers.3.w' (cpu): region writes bytes [40, 72) but the destination holds 64");
  ExpectUntouched();
  sink_->Abort();
}

TEST_F(CommitValidationTest, UnknownDestination) {
  ReadSpan span{1, 100, 8, {{0, 8, 7, 0}}};
  Status s = CommitOne(span, 8);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "span of shard 1 at file offset 100: region names destination 7 but the load has 2");
  sink_->Abort();
}

TEST_F(CommitValidationTest, CastRegionOffElementBoundaries) {
  ReadSpan span{0, 0, 10, {{0, 10, 1, 0}}};
  Status s = CommitOne(span, 10);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "tensor 'layers.3.c' (cpu): F32->BF16 region of 10 bytes at tensor offset 0 is not "
            "on F32 element boundaries");
  sink_->Abort();
}

TEST_F(CommitValidationTest, CastRegionPastTheDestination) {
  // 32 destination bytes hold 16 BF16 elements; elements [12, 20) do not fit.
  ReadSpan span{0, 0, 32, {{0, 32, 1, 48}}};
  Status s = CommitOne(span, 32);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s.message(),
            "tensor 'layers.3.c' (cpu): cast region writes elements [12, 20) but the destination "
            "holds 16");
  ExpectUntouched();
  sink_->Abort();
}

TEST_F(CommitValidationTest, BytesOutsideTheSlotAndOversizedSpans) {
  Result<StagingSlot> a = sink_->AcquireSlot();
  ASSERT_TRUE(a.ok());
  std::vector<std::byte> elsewhere(16);
  ReadSpan span{0, 0, 16, {{0, 16, 0, 0}}};
  Status s = sink_->Commit(*a, span, elsewhere);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "cuda sink: committed bytes of the span at file offset 0 are not inside staging slot " +
                std::to_string(a->id));
  sink_->Abort();
  ASSERT_TRUE(sink_->Begin(dests_, 1024).ok());
  Result<StagingSlot> b = sink_->AcquireSlot();
  ASSERT_TRUE(b.ok());
  ReadSpan big{0, 0, 2048, {{0, 16, 0, 0}}};
  s = sink_->Commit(*b, big, b->memory.first(2048));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "cuda sink: span at file offset 0 has 2048 bytes, more than the load's 1024-byte slots");
  sink_->Abort();
}

TEST_F(CommitValidationTest, SlotThatIsNotLent) {
  Result<StagingSlot> a = sink_->AcquireSlot();
  ASSERT_TRUE(a.ok());
  sink_->ReleaseSlot(*a);
  ReadSpan span{0, 0, 16, {{0, 16, 0, 0}}};
  Status s = sink_->Commit(*a, span, a->memory.first(16));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "cuda sink: Commit of staging slot " + std::to_string(a->id) + ", which is not lent");
  StagingSlot bogus;
  bogus.id = 99;
  s = sink_->Commit(bogus, span, {});
  EXPECT_EQ(s.message(), "cuda sink: Commit of staging slot 99, which is not lent");
  sink_->ReleaseSlot(bogus);  // ignored
  EXPECT_TRUE(sink_->Finish().ok());
}

TEST_F(CommitValidationTest, FinishWithALentSlotIsAnError) {
  Result<StagingSlot> a = sink_->AcquireSlot();
  ASSERT_TRUE(a.ok());
  Status s = sink_->Finish();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "cuda sink: Finish called while 1 staging slot is still lent to readers");
  sink_->Abort();
  Status again = sink_->Finish();
  EXPECT_EQ(again.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(again.message(), "cuda sink: Finish without Begin");
}

TEST(CudaSinkHostTest, BeginValidatesDestinations) {
  std::unique_ptr<CudaSink> sink = MakeSink(2, kSlot);
  std::vector<std::byte> buf(64);
  Destination null_ptr{nullptr, 8, Device{}, Dtype::kU8, Dtype::kU8, "a.null"};
  Status s = sink->Begin(std::span<const Destination>(&null_ptr, 1), kSlot);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "tensor 'a.null' (cpu): destination pointer is null for 8 bytes");
  Destination empty{nullptr, 0, Device{}, Dtype::kU8, Dtype::kU8, "a.empty"};
  EXPECT_TRUE(sink->Begin(std::span<const Destination>(&empty, 1), kSlot).ok());
  s = sink->Begin(std::span<const Destination>(&empty, 1), kSlot);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "cuda sink: Begin called while a load is open (call Finish or Abort first)");
  ASSERT_TRUE(sink->Finish().ok());

  Destination bad_cast{buf.data(), 16, Device{}, Dtype::kI32, Dtype::kF32, "a.int"};
  s = sink->Begin(std::span<const Destination>(&bad_cast, 1), kSlot);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "tensor 'a.int' (cpu): cannot convert I32 to F32 (only F32, F16 and BF16 convert "
            "among each other)");
  Destination ragged{buf.data(), 7, Device{}, Dtype::kF32, Dtype::kF16, "a.ragged"};
  s = sink->Begin(std::span<const Destination>(&ragged, 1), kSlot);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "tensor 'a.ragged' (cpu): 7 bytes is not a whole number of F16 elements");
  s = sink->Begin(std::span<const Destination>(&empty, 1), 2 * kSlot);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "cuda sink: spans of 8192 bytes do not fit its slots of 4096 bytes");
  s = sink->Begin(std::span<const Destination>(&empty, 1), 0);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  // Nothing was allocated by the failed Begins.
  EXPECT_EQ(sink->ring_allocations(), 1);  // only the successful one
  Result<StagingSlot> outside = sink->AcquireSlot();
  EXPECT_EQ(outside.status().code(), StatusCode::kFailedPrecondition);
}

TEST(CudaSinkHostTest, DirectTargetsOnlyForWholeUncastHostSpans) {
  std::unique_ptr<CudaSink> sink = MakeSink(2, kSlot);
  std::vector<std::byte> a(32), b(32), c(32);
  std::vector<Destination> d = {
      {a.data(), 32, Device{}, Dtype::kU8, Dtype::kU8, "a"},
      {b.data(), 32, Device{}, Dtype::kU8, Dtype::kU8, "b"},
      {c.data(), 32, Device{}, Dtype::kF32, Dtype::kF16, "c"},
  };
  ASSERT_TRUE(sink->Begin(d, kSlot).ok());
  std::vector<iovec> iov;
  ReadSpan whole{0, 0, 40, {{0, 32, 0, 0}, {32, 8, 1, 4}}};
  ASSERT_TRUE(sink->DirectTargets(whole, &iov));
  ASSERT_EQ(iov.size(), 2u);
  EXPECT_EQ(iov[0].iov_base, a.data());
  EXPECT_EQ(iov[0].iov_len, 32u);
  EXPECT_EQ(iov[1].iov_base, b.data() + 4);
  EXPECT_EQ(iov[1].iov_len, 8u);
  ReadSpan gap{0, 0, 40, {{0, 16, 0, 0}, {24, 16, 1, 0}}};
  EXPECT_FALSE(sink->DirectTargets(gap, &iov));
  ReadSpan tail{0, 0, 40, {{0, 32, 0, 0}}};
  EXPECT_FALSE(sink->DirectTargets(tail, &iov));
  ReadSpan cast{0, 0, 16, {{0, 16, 2, 0}}};
  EXPECT_FALSE(sink->DirectTargets(cast, &iov));
  ReadSpan too_far{0, 0, 16, {{0, 16, 0, 24}}};
  EXPECT_FALSE(sink->DirectTargets(too_far, &iov));
  ReadSpan unknown{0, 0, 16, {{0, 16, 9, 0}}};
  EXPECT_FALSE(sink->DirectTargets(unknown, &iov));
  EXPECT_TRUE(sink->Finish().ok());
}

}  // namespace
}  // namespace shardload::cuda
