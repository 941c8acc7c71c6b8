// GPU tests of the cuda/ package. Every test skips itself (GTEST_SKIP, with the
// probe's reason) without a CUDA device; on a GPU machine they check device contents
// byte for byte after loads through CudaSink with 1–4 slots and tiny slots that wrap
// many times, the cast kernels against the host casts (loader/cast.h), arenas, OOM
// handling and that nothing leaks (cudaMemGetInfo before/after), aborts, both pinned
// modes, several streams, and several GPUs when present.
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda/cast.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_sink.h"
#include "cuda/runtime.h"
#include "loader/cast.h"
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

Device Cuda(int i) { return Device{Device::Kind::kCuda, i}; }

// kLeakSlack: free-memory difference tolerated before/after (cudaMemGetInfo counts the
// whole device: driver page granularity and internal pools); the loads checked below
// allocate far more than this each time (a leak of one load's arena would show).
constexpr uint64_t kLeakSlack = 64ull << 20;

class CudaGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DeviceCount() == 0) {
      GTEST_SKIP() << "no CUDA device (" << ProbeStatus().ToString() << ")";
    }
  }
};

// Targets: destinations for the loaded tensors of a scenario: device tensors as
// 256-byte-aligned views of one arena per device (backend.Allocate), host tensors in
// vectors. Device memory is first filled with 0xEE so stale bytes show.
struct Targets {
  std::vector<std::unique_ptr<DeviceAllocation>> arenas;  // index: device
  std::vector<std::vector<std::byte>> host;               // per destination (host ones)
  std::vector<Destination> dests;
};

Targets MakeTargets(CudaBackend& backend, const SinkScenario& sc) {
  Targets t;
  std::vector<uint64_t> arena_bytes(DeviceCount(), 0);
  std::vector<uint64_t> offsets;
  for (const TensorSpec& spec : sc.tensors) {
    if (spec.skip) continue;
    uint64_t off = 0;
    if (spec.device.is_cuda()) {
      uint64_t& used = arena_bytes[spec.device.index];
      off = used;
      used = (used + DestinationBytes(spec) + 255) / 256 * 256;
    }
    offsets.push_back(off);
  }
  t.arenas.resize(DeviceCount());
  for (int d = 0; d < DeviceCount(); ++d) {
    if (arena_bytes[d] == 0) continue;
    Result<std::unique_ptr<DeviceAllocation>> a = backend.Allocate(Cuda(d), arena_bytes[d]);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    if (!a.ok()) return t;
    EXPECT_EQ(reinterpret_cast<uintptr_t>((*a)->data()) % 256, 0u);
    EXPECT_TRUE(FillDevice(d, (*a)->data(), 0xEE, arena_bytes[d]).ok());
    t.arenas[d] = std::move(a).value();
  }
  size_t k = 0;
  t.host.resize(sc.tensors.size());
  for (size_t i = 0; i < sc.tensors.size(); ++i) {
    const TensorSpec& spec = sc.tensors[i];
    if (spec.skip) continue;
    Destination d;
    d.bytes = DestinationBytes(spec);
    d.device = spec.device;
    d.src_dtype = spec.src;
    d.dst_dtype = spec.dst;
    d.name = spec.name;
    if (spec.device.is_cuda()) {
      d.ptr = static_cast<std::byte*>(t.arenas[spec.device.index]->data()) + offsets[k];
    } else {
      t.host[i].assign(d.bytes, std::byte{0xEE});
      d.ptr = t.host[i].data();
    }
    t.dests.push_back(d);
    ++k;
  }
  return t;
}

void ExpectDelivered(const SinkScenario& sc, const Targets& t) {
  size_t k = 0;
  for (size_t i = 0; i < sc.tensors.size(); ++i) {
    const TensorSpec& spec = sc.tensors[i];
    if (spec.skip) continue;
    const Destination& d = t.dests[k++];
    std::vector<std::byte> want = ExpectedBytes(sc, i);
    ASSERT_EQ(want.size(), d.bytes) << spec.name;
    std::vector<std::byte> got(d.bytes);
    if (spec.device.is_cuda()) {
      if (d.bytes > 0) {
        ASSERT_TRUE(CopyDeviceToHost(spec.device.index, got.data(), d.ptr, d.bytes).ok());
      }
    } else {
      got = t.host[i];
    }
    size_t first_diff = 0;
    while (first_diff < got.size() && got[first_diff] == want[first_diff]) ++first_diff;
    EXPECT_EQ(first_diff, got.size())
        << "tensor " << spec.name << " (" << DtypeName(spec.src) << "->" << DtypeName(spec.dst)
        << " on " << (spec.device.is_cuda() ? "cuda" : "cpu") << ") differs at byte " << first_diff;
  }
}

// Tensors of every whole-byte dtype plus every cast pair, spread over `devices` GPUs
// (round-robin) with every fifth tensor on the host.
std::vector<TensorSpec> MixedTensors(int devices, uint64_t scale) {
  std::vector<TensorSpec> t;
  int n = 0;
  auto where = [&]() { return (n++ % 5 == 4) ? Device{} : Cuda(n % devices); };
  for (int i = 0; i < kDtypeCount; ++i) {
    const Dtype d = static_cast<Dtype>(i);
    if (DtypeBits(d) % 8 != 0) continue;
    t.push_back({"plain." + std::string(DtypeName(d)), d, d, scale * (7 + i), where(), false});
  }
  const Dtype casts[][2] = {{Dtype::kF32, Dtype::kBF16}, {Dtype::kF32, Dtype::kF16},
                            {Dtype::kF16, Dtype::kF32},  {Dtype::kBF16, Dtype::kF32},
                            {Dtype::kF16, Dtype::kBF16}, {Dtype::kBF16, Dtype::kF16}};
  int c = 0;
  for (const auto& pair : casts) {
    t.push_back({"cast." + std::to_string(c++) + "." + std::string(DtypeName(pair[0])) + "_" +
                     std::string(DtypeName(pair[1])),
                 pair[0], pair[1], scale * 31 + 3, where(), false});
    t.push_back({"skipped." + std::to_string(c), Dtype::kU8, Dtype::kU8, 77, Device{}, true});
  }
  t.push_back({"scalar", Dtype::kF32, Dtype::kF16, 1, Cuda(0), false});
  t.push_back({"empty", Dtype::kF32, Dtype::kF32, 0, Cuda(0), false});
  return t;
}

TEST_F(CudaGpuTest, KernelsMatchHostCastsForEveryPairAndAlignment) {
  const int dev = 0;
  Result<Stream> stream = Stream::Create(dev);
  ASSERT_TRUE(stream.ok());
  // Inputs: every 16-bit pattern; for F32, specials plus 4M random patterns.
  std::vector<uint16_t> h16(65536);
  for (uint32_t i = 0; i < 65536; ++i) h16[i] = static_cast<uint16_t>(i);
  std::vector<uint32_t> h32 = {0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x7F800000u, 0xFF800000u,
                               0x0u,        0x80000000u, 0x1u,        0x33000000u, 0x33000001u,
                               0x387FE000u, 0x477FF000u, 0x477FEFFFu, 0x3F808000u, 0x7F7FFFFFu};
  std::mt19937 rng(11);
  while (h32.size() < (4u << 20)) h32.push_back(rng());
  struct Pair {
    Dtype src, dst;
  };
  const Pair pairs[] = {{Dtype::kF32, Dtype::kF16},  {Dtype::kF32, Dtype::kBF16},
                        {Dtype::kF16, Dtype::kF32},  {Dtype::kBF16, Dtype::kF32},
                        {Dtype::kF16, Dtype::kBF16}, {Dtype::kBF16, Dtype::kF16},
                        {Dtype::kF32, Dtype::kF32}};
  for (const Pair& p : pairs) {
    for (uint64_t misalign : {0, 1, 2, 3}) {
      SCOPED_TRACE(std::string(DtypeName(p.src)) + "->" + std::string(DtypeName(p.dst)) +
                   " source offset " + std::to_string(misalign));
      const bool wide = p.src == Dtype::kF32;
      const uint64_t count = wide ? h32.size() : h16.size();
      const uint64_t se = DtypeBits(p.src) / 8;
      const uint64_t de = DtypeBits(p.dst) / 8;
      const std::byte* host_src =
          wide ? reinterpret_cast<const std::byte*>(h32.data()) : reinterpret_cast<const std::byte*>(h16.data());
      Result<DeviceBuffer> src = DeviceBuffer::Allocate(dev, count * se + 8);
      Result<DeviceBuffer> dst = DeviceBuffer::Allocate(dev, count * de);
      ASSERT_TRUE(src.ok() && dst.ok());
      std::byte* src_at = static_cast<std::byte*>(src->data()) + misalign;
      ASSERT_TRUE(CopyHostToDevice(dev, src_at, host_src, count * se).ok());
      Status s = CastOnDevice(p.src, p.dst, src_at, dst->data(), count, *stream);
      ASSERT_TRUE(s.ok()) << s.ToString();
      ASSERT_TRUE(stream->Synchronize().ok());
      std::vector<std::byte> got(count * de), want(count * de);
      ASSERT_TRUE(CopyDeviceToHost(dev, got.data(), dst->data(), got.size()).ok());
      ASSERT_TRUE(CastElements(p.src, p.dst, host_src, count, want.data()).ok());
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size()), 0);
    }
  }
  // Misaligned destinations are refused, not faulted on.
  Result<DeviceBuffer> buf = DeviceBuffer::Allocate(dev, 64);
  ASSERT_TRUE(buf.ok());
  Status s = CastOnDevice(Dtype::kF16, Dtype::kF32, buf->data(),
                          static_cast<std::byte*>(buf->data()) + 34, 4, *stream);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = CastOnDevice(Dtype::kI32, Dtype::kF32, buf->data(), buf->data(), 4, *stream);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "cannot convert I32 to F32 (only F32, F16 and BF16 convert among each other)");
}

TEST_F(CudaGpuTest, ByteExactThroughTheSinkAcrossRingGeometries) {
  CudaBackend backend;
  uint32_t seed = 100;
  for (int count = 1; count <= 4; ++count) {
    for (uint64_t slot : {uint64_t{4096}, uint64_t{12288}, uint64_t{1} << 20}) {
      for (int threads : {1, 4}) {
        SCOPED_TRACE("slots=" + std::to_string(count) + " slot_bytes=" + std::to_string(slot) +
                     " threads=" + std::to_string(threads));
        SinkScenario sc = MakeScenario(seed++, MixedTensors(1, slot >= (1 << 20) ? 9000 : 300));
        std::vector<ReadSpan> spans = MakeSpans(sc, slot, /*max_gap=*/128);
        ASSERT_GT(spans.size(), static_cast<size_t>(count));
        CudaSinkOptions o;
        o.ring.slot_count = count;
        o.ring.slot_bytes = slot;
        Result<std::unique_ptr<CudaSink>> sink = CudaSink::Create(o);
        ASSERT_TRUE(sink.ok());
        Targets t = MakeTargets(backend, sc);
        DriveOptions d;
        d.threads = threads;
        d.slot_bytes = slot;
        Status s = DriveSink(**sink, sc, spans, t.dests, d);
        ASSERT_TRUE(s.ok()) << s.ToString();
        ExpectDelivered(sc, t);
        EXPECT_TRUE((*sink)->staging_is_pinned());
        EXPECT_EQ((*sink)->staging_bytes(), static_cast<uint64_t>(count) * (slot + 8192));
        EXPECT_EQ((*sink)->scratch_bytes(), static_cast<uint64_t>(count) * slot);
      }
    }
  }
}

TEST_F(CudaGpuTest, StreamsAndPinnedModesAllDeliverTheSameBytes) {
  for (PinnedMode mode : {PinnedMode::kHostAlloc, PinnedMode::kHostRegister}) {
    for (int streams : {1, 2, 4}) {
      SCOPED_TRACE(std::string(PinnedModeName(mode)) + " streams=" + std::to_string(streams));
      CudaBackendOptions bo;
      bo.pinned_mode = mode;
      bo.streams_per_device = streams;
      Result<std::unique_ptr<CudaBackend>> backend = CudaBackend::Create(bo);
      ASSERT_TRUE(backend.ok());
      SinkScenario sc = MakeScenario(7 + streams, MixedTensors(1, 2000));
      std::vector<ReadSpan> spans = MakeSpans(sc, 65536, 128);
      SinkOptions so;
      so.slot_count = 3;
      so.slot_bytes = 65536;
      Result<std::unique_ptr<Sink>> sink = (*backend)->MakeSink(so);
      ASSERT_TRUE(sink.ok());
      Targets t = MakeTargets(**backend, sc);
      DriveOptions d;
      d.threads = 3;
      d.slot_bytes = 65536;
      Status s = DriveSink(**sink, sc, spans, t.dests, d);
      ASSERT_TRUE(s.ok()) << s.ToString();
      ExpectDelivered(sc, t);
    }
  }
}

TEST_F(CudaGpuTest, AllocationsAreAlignedAndSized) {
  CudaBackend backend;
  for (uint64_t bytes : {uint64_t{1}, uint64_t{1000}, uint64_t{1} << 20}) {
    Result<std::unique_ptr<DeviceAllocation>> a = backend.Allocate(Cuda(0), bytes);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    EXPECT_EQ((*a)->size(), bytes);
    EXPECT_EQ((*a)->device(), Cuda(0));
    EXPECT_EQ(reinterpret_cast<uintptr_t>((*a)->data()) % 256, 0u);
  }
  Result<std::unique_ptr<DeviceAllocation>> none = backend.Allocate(Cuda(0), 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ((*none)->data(), nullptr);
  Result<std::unique_ptr<DeviceAllocation>> missing = backend.Allocate(Cuda(DeviceCount()), 16);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(CudaGpuTest, OutOfMemoryIsResourceExhaustedAndLeaksNothing) {
  CudaBackend backend;
  {
    Result<std::unique_ptr<DeviceAllocation>> warm = backend.Allocate(Cuda(0), 1 << 20);
    ASSERT_TRUE(warm.ok());  // creates the context before measuring
  }
  Result<MemoryInfo> before = GetMemoryInfo(0);
  ASSERT_TRUE(before.ok());
  const uint64_t too_much = before->total_bytes * 2;
  Result<std::unique_ptr<DeviceAllocation>> a = backend.Allocate(Cuda(0), too_much);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kResourceExhausted);
  const std::string prefix = "cuda:0: out of memory allocating " + std::to_string(too_much) + " bytes (";
  EXPECT_EQ(a.status().message().rfind(prefix, 0), 0u) << a.status().message();
  EXPECT_NE(a.status().message().find(" bytes free of "), std::string::npos);
  // The failure is not sticky: the device still works.
  Result<std::unique_ptr<DeviceAllocation>> small = backend.Allocate(Cuda(0), 4096);
  ASSERT_TRUE(small.ok());
  small->reset();
  Result<MemoryInfo> after = GetMemoryInfo(0);
  ASSERT_TRUE(after.ok());
  // The driver may keep a small allocation's page around; nothing near `too_much` leaked.
  EXPECT_GE(after->free_bytes + kLeakSlack, before->free_bytes);
}

TEST_F(CudaGpuTest, AbortMidLoadDrainsAndTheSinkIsReusable) {
  CudaBackend backend;
  SinkScenario sc = MakeScenario(77, MixedTensors(1, 3000));
  std::vector<ReadSpan> spans = MakeSpans(sc, 16384, 128);
  CudaSinkOptions o;
  o.ring.slot_count = 2;
  o.ring.slot_bytes = 16384;
  Result<std::unique_ptr<CudaSink>> sink = CudaSink::Create(o);
  ASSERT_TRUE(sink.ok());
  for (int cancel_after : {1, 3, 10}) {
    Targets t = MakeTargets(backend, sc);
    DriveOptions d;
    d.threads = 3;
    d.slot_bytes = 16384;
    d.cancel_after = cancel_after;
    Status s = DriveSink(**sink, sc, spans, t.dests, d);
    EXPECT_EQ(s.code(), StatusCode::kCancelled);
    Result<StagingSlot> after_abort = (*sink)->AcquireSlot();
    EXPECT_EQ(after_abort.status().code(), StatusCode::kCancelled);
  }
  Targets t = MakeTargets(backend, sc);
  DriveOptions d;
  d.threads = 3;
  d.slot_bytes = 16384;
  ASSERT_TRUE(DriveSink(**sink, sc, spans, t.dests, d).ok());
  ExpectDelivered(sc, t);
  EXPECT_EQ((*sink)->ring_allocations(), 1);
}

TEST_F(CudaGpuTest, ManyLoadsLeakNeitherDeviceNorPinnedMemory) {
  constexpr uint64_t kSlot = 4ull << 20;  // 16 MiB of cast scratch per load
  CudaBackend backend;
  SinkScenario sc = MakeScenario(5, MixedTensors(1, 40000));
  std::vector<ReadSpan> spans = MakeSpans(sc, kSlot, 128);
  SinkOptions so;
  so.slot_count = 4;
  so.slot_bytes = kSlot;
  auto one_load = [&]() {
    Result<std::unique_ptr<Sink>> sink = backend.MakeSink(so);
    ASSERT_TRUE(sink.ok());
    Targets t = MakeTargets(backend, sc);
    DriveOptions d;
    d.threads = 2;
    d.slot_bytes = kSlot;
    ASSERT_TRUE(DriveSink(**sink, sc, spans, t.dests, d).ok());
    ExpectDelivered(sc, t);
  };
  one_load();  // warm: context, cached ring
  Result<MemoryInfo> before = GetMemoryInfo(0);
  ASSERT_TRUE(before.ok());
  const uint64_t cached = backend.cached_staging_bytes();
  EXPECT_EQ(cached, 4u * (kSlot + 8192));
  for (int i = 0; i < 25; ++i) one_load();
  Result<MemoryInfo> after = GetMemoryInfo(0);
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->free_bytes + kLeakSlack, before->free_bytes);
  EXPECT_EQ(backend.cached_staging_bytes(), cached);  // one ring, reused every time
}

TEST_F(CudaGpuTest, MisalignedCastDestinationIsRefusedAtBegin) {
  CudaBackend backend;
  Result<std::unique_ptr<DeviceAllocation>> a = backend.Allocate(Cuda(0), 1024);
  ASSERT_TRUE(a.ok());
  Destination d;
  d.ptr = static_cast<std::byte*>((*a)->data()) + 1;
  d.bytes = 64;
  d.device = Cuda(0);
  d.src_dtype = Dtype::kF32;
  d.dst_dtype = Dtype::kF16;
  d.name = "odd";
  Result<std::unique_ptr<CudaSink>> sink = CudaSink::Create(CudaSinkOptions());
  ASSERT_TRUE(sink.ok());
  Status s = (*sink)->Begin(std::span<const Destination>(&d, 1), kDefaultSlotBytes);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "tensor 'odd' (cuda:0): destination is not aligned to 2 bytes, as a cast requires");
}

TEST_F(CudaGpuTest, HostToDeviceCeilingIsPlausible) {
  CudaBackend backend;
  Result<double> gbps = backend.MeasureHostToDeviceGBps(Cuda(0), 256ull << 20, 5);
  ASSERT_TRUE(gbps.ok()) << gbps.status().ToString();
  Result<DeviceProperties> props = GetDeviceProperties(0);
  ASSERT_TRUE(props.ok());
  if (props->name.rfind("shardload fake CUDA device", 0) == 0) {
    // The fake runtime (cuda/fake) copies with the host's memcpy, instrumented under
    // sanitizers: only the measuring code is checked there, not the rate.
    EXPECT_GT(*gbps, 0.0);
  } else {
    EXPECT_GT(*gbps, 1.0);
    EXPECT_LT(*gbps, 1000.0);
  }
  std::cout << "[ ceiling  ] pinned H2D cuda:0 256 MiB: " << *gbps << " GB/s\n";
}

TEST_F(CudaGpuTest, SeveralGpusInOneLoad) {
  if (DeviceCount() < 2) GTEST_SKIP() << "only " << DeviceCount() << " CUDA device";
  CudaBackend backend;
  SinkScenario sc = MakeScenario(31, MixedTensors(DeviceCount(), 2000));
  std::vector<ReadSpan> spans = MakeSpans(sc, 65536, 128);
  SinkOptions so;
  so.slot_count = 4;
  so.slot_bytes = 65536;
  Result<std::unique_ptr<Sink>> sink = backend.MakeSink(so);
  ASSERT_TRUE(sink.ok());
  Targets t = MakeTargets(backend, sc);
  DriveOptions d;
  d.threads = 4;
  d.slot_bytes = 65536;
  ASSERT_TRUE(DriveSink(**sink, sc, spans, t.dests, d).ok());
  ExpectDelivered(sc, t);
}

}  // namespace
}  // namespace shardload::cuda
