// The GPU paths of the loader against the fake CUDA runtime (cuda/fake/fake_control.h):
// first that the fake really exposes the bugs it is meant to (copies from pinned memory
// run later than they are queued, device memory cannot be touched from the host, copies
// are bounds-checked), then what a machine without a GPU could not check before: that a
// load never hands pageable or file-backed memory to a copy, that pinned memory stays
// within the configured ring whatever the checkpoint size, that a slot is reused only
// after its copies completed, that injected CUDA failures (asynchronous copy faults,
// refused copies, kernel failures, pinned and device allocation failures, cancel) give
// errors naming the tensor and device and leave no device memory, pinned memory,
// streams or events behind, and that concurrent loads onto two devices are byte-exact.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_sink.h"
#include "cuda/fake/fake_control.h"
#include "cuda/runtime.h"
#include "loader/checkpoint.h"
#include "loader/device.h"
#include "loader/file.h"
#include "loader/loader.h"
#include "loader/sink.h"
#include "tests/fixtures.h"

namespace shardload::cuda {
namespace {

using testing::FixtureTensor;

// CUDA error codes (cudaError_t values) for the fake's injections.
constexpr int kInvalidValue = 1;
constexpr int kMemoryAllocation = 2;
constexpr int kInvalidDeviceFunction = 98;
constexpr int kIllegalAddress = 700;
constexpr int kLaunchFailure = 719;

const Device kCuda0{Device::Kind::kCuda, 0};

// Stored: what a checkpoint written by WriteSharded holds.
struct Stored {
  std::string dir;
  std::map<std::string, std::string> bytes;  // tensor name → stored bytes
};

// WriteSharded: `shards` files of `per_shard` F32 tensors of `elements` each, plus an
// index; tensor names "layers.<shard>.<k>.weight".
Stored WriteSharded(const std::string& tag, int shards, int per_shard, uint64_t elements) {
  Stored out;
  out.dir = testing::MakeTestDir(tag);
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (int s = 0; s < shards; ++s) {
    const std::string file = "model-0000" + std::to_string(s + 1) + "-of-0000" +
                             std::to_string(shards) + ".safetensors";
    std::vector<FixtureTensor> tensors;
    for (int k = 0; k < per_shard; ++k) {
      FixtureTensor t{"layers." + std::to_string(s) + "." + std::to_string(k) + ".weight", "F32",
                      {elements}, ""};
      t.data = testing::PatternBytes(elements * 4, static_cast<uint32_t>(s * 1000 + k));
      out.bytes[t.name] = t.data;
      weight_map.emplace_back(t.name, file);
      tensors.push_back(std::move(t));
    }
    EXPECT_TRUE(testing::WriteFile(out.dir + "/" + file, testing::SafetensorsBytes(tensors)));
  }
  EXPECT_TRUE(testing::WriteFile(out.dir + "/model.safetensors.index.json",
                                 testing::IndexJson(weight_map)));
  return out;
}

std::string DeviceBytes(const LoadedTensor& t) {
  std::string got(t.bytes, '\0');
  if (t.device.is_cuda()) {
    Status s = CopyDeviceToHost(t.device.index, got.data(), t.data, t.bytes);
    EXPECT_TRUE(s.ok()) << s.ToString();
  } else {
    std::memcpy(got.data(), t.data, t.bytes);
  }
  return got;
}

void ExpectByteExact(const Stored& stored, const LoadedCheckpoint& loaded) {
  ASSERT_EQ(loaded.tensors.size(), stored.bytes.size());
  for (const LoadedTensor& t : loaded.tensors) {
    auto it = stored.bytes.find(t.name);
    ASSERT_NE(it, stored.bytes.end()) << t.name;
    EXPECT_TRUE(DeviceBytes(t) == it->second) << t.name << " differs on " << t.device.ToString();
  }
}

LoadOptions Options(DeviceBackend* backend, const char* map, int slots, uint64_t slot_bytes) {
  LoadOptions o;
  o.backend = backend;
  o.devices = *ParseDeviceMap(map);
  o.sink.slot_count = slots;
  o.sink.slot_bytes = slot_bytes;
  o.threads = 3;
  return o;
}

// Nothing left: no device memory, pinned memory, stream or event (checked once every
// backend of a test is gone).
void ExpectNothingLive() {
  const fake::Counters c = fake::Snapshot();
  EXPECT_EQ(c.live_device_allocations, 0u);
  EXPECT_EQ(c.live_device_bytes[0] + c.live_device_bytes[1], 0u);
  EXPECT_EQ(c.live_pinned_bytes, 0u);
  EXPECT_EQ(c.live_streams, 0u);
  EXPECT_EQ(c.live_events, 0u);
  EXPECT_EQ(c.host_release_with_pending_work, 0u);
}

class FakeCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(DeviceCount(), fake::kDevices) << ProbeStatus().ToString();
    fake::ClearFailures();
    fake::PauseStreams(false);
    fake::SetMaxDelayMicros(200);
    fake::ResetCounters();
  }
  void TearDown() override {
    fake::ClearFailures();
    fake::PauseStreams(false);
    fake::SetHostAllocKernelInaccessible(false);
    fake::SetHostAllocMisaligned(false);
  }
};

// ---- the fake itself -----------------------------------------------------------------

TEST_F(FakeCudaTest, PinnedSourcesAreReadWhenTheCopyRunsNotWhenItIsQueued) {
  {
    Result<PinnedBuffer> host = PinnedBuffer::Allocate(4096);
    Result<DeviceBuffer> dev = DeviceBuffer::Allocate(0, 4096);
    Result<Stream> stream = Stream::Create(0);
    Result<Event> done = Event::Create(0, false, false);
    ASSERT_TRUE(host.ok() && dev.ok() && stream.ok() && done.ok());
    std::memset(host->data(), 1, 4096);
    fake::PauseStreams(true);
    ASSERT_TRUE(CopyHostToDeviceAsync(dev->data(), host->data(), 4096, *stream).ok());
    ASSERT_TRUE(done->Record(*stream).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    Result<bool> ready = done->Query();
    ASSERT_TRUE(ready.ok());
    EXPECT_FALSE(*ready);  // still queued
    std::memset(host->data(), 2, 4096);  // what a premature slot reuse would do
    fake::PauseStreams(false);
    ASSERT_TRUE(done->Synchronize().ok());
    std::string got(4096, '\0');
    ASSERT_TRUE(CopyDeviceToHost(0, got.data(), dev->data(), 4096).ok());
    EXPECT_EQ(got, std::string(4096, '\2'));
    EXPECT_EQ(fake::Snapshot().pageable_async_copies, 0u);
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, CopiesAreBoundsCheckedAndPageableOnesAreCounted) {
  Result<DeviceBuffer> dev = DeviceBuffer::Allocate(1, 1000);
  ASSERT_TRUE(dev.ok());
  std::vector<char> host(1001, 'x');
  // One byte past what was allocated (cudaMalloc's rounding does not make it valid).
  Status s = CopyHostToDevice(1, dev->data(), host.data(), 1001);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "cudaMemcpy(cuda:1): cudaErrorInvalidValue: invalid argument");
  ASSERT_TRUE(CopyHostToDevice(1, dev->data(), host.data(), 1000).ok());
  Result<Stream> stream = Stream::Create(1);
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE(CopyHostToDeviceAsync(dev->data(), host.data(), 1000, *stream).ok());
  ASSERT_TRUE(stream->Synchronize().ok());
  EXPECT_EQ(fake::Snapshot().pageable_async_copies, 1u);
  // A host address where a device one belongs is refused.
  s = CopyHostToDevice(1, host.data(), host.data(), 10);
  EXPECT_EQ(s.message(), "cudaMemcpy(cuda:1): cudaErrorInvalidValue: invalid argument");
}

TEST_F(FakeCudaTest, DevicePointersCannotBeDereferencedOnTheHost) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Result<DeviceBuffer> dev = DeviceBuffer::Allocate(0, 256);
  ASSERT_TRUE(dev.ok());
  volatile char* p = static_cast<volatile char*>(dev->data());
  EXPECT_DEATH({ p[0] = 1; }, "");
}

// ---- loads on the fake devices ---------------------------------------------------------

TEST_F(FakeCudaTest, PinnedMemoryStaysWithinTheRingAndNoCopyReadsPageableMemory) {
  // 18 MiB over 3 shards through a ring of 2 × 1 MiB, onto both devices and the host.
  Stored stored = WriteSharded("fake_ring", 3, 6, (1u << 20) / 4 + 1000);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  {
    CudaBackend backend;
    const uint64_t ring = 2 * ((1u << 20) + 8192);
    for (const char* map : {"cuda:0", "layers.1.*=cuda:1,layers.2.3.*=cpu,cuda:0"}) {
      SCOPED_TRACE(map);
      Result<LoadedCheckpoint> all = LoadAll(*ckpt, Options(&backend, map, 2, 1u << 20));
      ASSERT_TRUE(all.ok()) << all.status().ToString();
      ExpectByteExact(stored, *all);
      const fake::Counters c = fake::Snapshot();
      EXPECT_GT(c.async_copies, 24u);
      EXPECT_EQ(c.pageable_async_copies, 0u);
      EXPECT_EQ(c.peak_pinned_bytes, ring);
      EXPECT_EQ(c.host_release_with_pending_work, 0u);
    }
    EXPECT_EQ(backend.cached_staging_bytes(), ring);
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, EveryIoModeDeliversByteExactToDevices) {
  // Odd sizes, so spans and O_DIRECT windows start and end inside tensors; tiny slots,
  // so the ring wraps many times.
  Stored stored = WriteSharded("fake_io", 2, 7, 3001);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    for (IoMode io : {IoMode::kPread, IoMode::kMmap, IoMode::kDirect, IoMode::kUring}) {
      SCOPED_TRACE(std::string(IoModeName(io)));
      LoadOptions o = Options(&backend, "layers.1.*=cuda:1,layers.0.3.*=cpu,cuda:0", 3, 8192);
      o.io = io;
      Result<LoadedCheckpoint> all = LoadAll(*ckpt, o);
      const bool refused =
          !all.ok() && (all.status().code() == StatusCode::kUnimplemented ||
                        all.status().message().rfind("io_uring is unavailable", 0) == 0);
      if (refused) {
        std::cout << "[ skipped  ] " << IoModeName(io) << ": " << all.status().message() << "\n";
        continue;  // O_DIRECT refused by this filesystem, or io_uring unavailable
      }
      ASSERT_TRUE(all.ok()) << all.status().ToString();
      ExpectByteExact(stored, *all);
      EXPECT_EQ(fake::Snapshot().pageable_async_copies, 0u);
    }
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, PinnedMemoryTheKernelCannotWriteIsReplacedByRegisteredMemory) {
  // Under some gVisor versions a read(2) into cudaHostAlloc memory fails with EFAULT:
  // every file read into a staging slot would fail. PinnedBuffer probes the memory and
  // registers plain memory instead; loads then read into it as usual.
  fake::SetHostAllocKernelInaccessible(true);
  {
    Result<PinnedBuffer> b = PinnedBuffer::Allocate(3 * 4096 + 5);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_EQ(b->mode(), PinnedMode::kHostRegister);
    std::memset(b->data(), 0x5a, b->size());  // plain, user-writable memory
    EXPECT_EQ(fake::Snapshot().live_pinned_bytes, 4 * 4096u);
    Result<PinnedBuffer> registered = PinnedBuffer::Allocate(4096, PinnedMode::kHostRegister);
    ASSERT_TRUE(registered.ok());
    EXPECT_EQ(registered->mode(), PinnedMode::kHostRegister);
  }
  EXPECT_EQ(fake::Snapshot().live_pinned_bytes, 0u);
  Stored stored = WriteSharded("fake_efault", 2, 5, 3001);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    for (IoMode io : {IoMode::kPread, IoMode::kMmap}) {
      for (int round = 0; round < 2; ++round) {  // the second reuses the cached ring
        LoadOptions o = Options(&backend, "cuda:0", 3, 8192);
        o.io = io;
        Result<LoadedCheckpoint> all = LoadAll(*ckpt, o);
        ASSERT_TRUE(all.ok()) << all.status().ToString();
        ExpectByteExact(stored, *all);
      }
    }
    EXPECT_EQ(fake::Snapshot().peak_pinned_bytes, backend.cached_staging_bytes());
  }
  fake::SetHostAllocKernelInaccessible(false);
  ExpectNothingLive();
}

// cudaHostAlloc documents no alignment; staging slots take O_DIRECT windows, so
// PinnedBuffer registers page-aligned memory instead of keeping a misaligned block.
TEST_F(FakeCudaTest, MisalignedPinnedMemoryIsReplacedByRegisteredMemory) {
  fake::SetHostAllocMisaligned(true);
  {
    Result<PinnedBuffer> b = PinnedBuffer::Allocate(2 * 4096);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_EQ(b->mode(), PinnedMode::kHostRegister);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % 4096, 0u);
    EXPECT_EQ(fake::Snapshot().live_pinned_bytes, 2 * 4096u);
  }
  fake::SetHostAllocMisaligned(false);
  {
    Result<PinnedBuffer> b = PinnedBuffer::Allocate(2 * 4096);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_EQ(b->mode(), PinnedMode::kHostAlloc);
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, ASlotIsReusedOnlyAfterItsCopiesComplete) {
  Stored stored = WriteSharded("fake_reuse", 1, 4, 8192);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  CudaBackend backend;
  LoadOptions o = Options(&backend, "cuda:0", 1, 4096);
  o.threads = 1;
  fake::PauseStreams(true);  // the first slot's copy cannot complete
  std::atomic<bool> finished{false};
  Result<LoadedCheckpoint> all = InternalError("not run");
  std::thread loader([&] {
    all = LoadAll(*ckpt, o);
    finished = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(finished.load());
  EXPECT_LE(fake::Snapshot().async_copies, 1u);  // nothing queued into the busy slot
  fake::PauseStreams(false);
  loader.join();
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ExpectByteExact(stored, *all);
  EXPECT_EQ(fake::Snapshot().async_copies, 32u);  // 128 KiB of tensors in 4 KiB spans
}

TEST_F(FakeCudaTest, TensorsContiguousOnBothSidesShareOneCopyPerSpan) {
  // 200 tensors of 256 bytes: back to back in the file and in the 256-aligned arena,
  // so each 16 KiB span is one cudaMemcpyAsync. At 260 bytes the arena pads each
  // tensor to 512 and every tensor (or piece of one) is a copy of its own: the known
  // per-tensor cost of many small odd-sized tensors on the GPU path (ARCHITECTURE.md).
  for (uint64_t elements : {uint64_t{64}, uint64_t{65}}) {
    SCOPED_TRACE("elements=" + std::to_string(elements));
    Stored stored = WriteSharded("fake_merge_" + std::to_string(elements), 1, 200, elements);
    Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
    ASSERT_TRUE(ckpt.ok());
    CudaBackend backend;
    fake::ResetCounters();
    Result<LoadedCheckpoint> all = LoadAll(*ckpt, Options(&backend, "cuda:0", 2, 16384));
    ASSERT_TRUE(all.ok()) << all.status().ToString();
    ExpectByteExact(stored, *all);
    const uint64_t copies = fake::Snapshot().async_copies;
    if (elements == 64) {
      EXPECT_LE(copies, 8u);  // 51200 bytes in spans of at most 16 KiB (4, plus edges)
    } else {
      EXPECT_GE(copies, 200u);
    }
  }
}

TEST_F(FakeCudaTest, ManyLoadsAndTheirEndLeaveNothingBehind) {
  Stored stored = WriteSharded("fake_many", 2, 5, 3000);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    for (int i = 0; i < 20; ++i) {
      Result<LoadedCheckpoint> all =
          LoadAll(*ckpt, Options(&backend, i % 2 ? "cuda:1" : "layers.0.*=cuda:0,cuda:1", 3, 8192));
      ASSERT_TRUE(all.ok()) << all.status().ToString();
      ExpectByteExact(stored, *all);
    }
    const fake::Counters c = fake::Snapshot();
    EXPECT_EQ(c.live_device_allocations, 0u);  // every result is gone
    EXPECT_EQ(c.live_pinned_bytes, backend.cached_staging_bytes());  // the one kept ring
    EXPECT_EQ(c.live_streams, 0u);
    EXPECT_EQ(c.live_events, 0u);
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, AnAsynchronousCopyFaultNamesTensorAndDeviceAndFreesEverything) {
  Stored stored = WriteSharded("fake_async_fault", 2, 4, 4096);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    fake::FailAsync("cudaMemcpyAsync", 3, kIllegalAddress);
    Result<LoadedCheckpoint> all = LoadAll(*ckpt, Options(&backend, "cuda:1", 2, 16384));
    ASSERT_FALSE(all.ok());
    EXPECT_EQ(all.status().code(), StatusCode::kInternal);
    const std::string m = all.status().message();
    // Seen at a wait ("copies to cuda:1 failed, first seen at tensor ...") or, once the
    // device is poisoned, by a later copy call on another reader ("tensor '...':
    // cudaMemcpyAsync(cuda:1): ..."), whichever comes first.
    EXPECT_TRUE(m.rfind("copies to cuda:1 failed, first seen at tensor 'layers.", 0) == 0 ||
                m.rfind("tensor 'layers.", 0) == 0)
        << m;
    const std::string sticky =
        "(cuda:1): cudaErrorIllegalAddress: an illegal memory access was encountered (a sticky "
        "error: CUDA on this device is unusable in this process until it restarts)";
    EXPECT_NE(m.find(sticky), std::string::npos) << m;
    EXPECT_EQ(fake::Snapshot().live_device_allocations, 0u);
    // Nothing pinned beyond the one ring the backend keeps for the next load.
    EXPECT_EQ(fake::Snapshot().live_pinned_bytes, backend.cached_staging_bytes());
    // As on a real GPU, cuda:1 stays unusable in this process: the next load onto it
    // fails at once with the same error and takes nothing; cuda:0 still loads.
    Result<LoadedCheckpoint> again = LoadAll(*ckpt, Options(&backend, "cuda:1", 2, 16384));
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.status().code(), StatusCode::kInternal);
    EXPECT_NE(again.status().message().find(sticky), std::string::npos)
        << again.status().message();
    EXPECT_EQ(fake::Snapshot().live_device_allocations, 0u);
    Result<LoadedCheckpoint> on0 = LoadAll(*ckpt, Options(&backend, "cuda:0", 2, 16384));
    ASSERT_TRUE(on0.ok()) << on0.status().ToString();
    ExpectByteExact(stored, *on0);
    // In a new process (the fake's ClearFailures) the same load is whole.
    fake::ClearFailures();
    again = LoadAll(*ckpt, Options(&backend, "cuda:1", 2, 16384));
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    ExpectByteExact(stored, *again);
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, ARefusedCopyNamesTheTensorAndDevice) {
  Stored stored = WriteSharded("fake_refused", 1, 6, 2048);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    LoadOptions o = Options(&backend, "cuda:0", 2, 8192);
    o.threads = 1;  // spans go in file order: the third copy is tensor 2's
    fake::FailCall("cudaMemcpyAsync", 2, kInvalidValue);
    Result<LoadedCheckpoint> all = LoadAll(*ckpt, o);
    ASSERT_FALSE(all.ok());
    EXPECT_EQ(all.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(all.status().message(),
              "tensor 'layers.0.2.weight': cudaMemcpyAsync(cuda:0): cudaErrorInvalidValue: "
              "invalid argument");
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, CastKernelFailuresNameTheTensor) {
  Stored stored = WriteSharded("fake_kernel", 1, 3, 1024);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    std::vector<std::unique_ptr<DeviceAllocation>> buffers;
    std::vector<Target> targets;
    for (const auto& [name, bytes] : stored.bytes) {
      Result<std::unique_ptr<DeviceAllocation>> b = backend.Allocate(kCuda0, bytes.size() / 2);
      ASSERT_TRUE(b.ok());
      targets.push_back(Target{name, Dtype::kBF16, {1024}, kCuda0, (*b)->data()});
      buffers.push_back(std::move(b).value());
    }
    LoadOptions o = Options(&backend, "cuda:0", 2, 4096);
    o.match.allow_cast = true;
    o.threads = 1;
    fake::FailCall("LaunchCastKernel", 1, kInvalidDeviceFunction);
    Result<LoadResult> r = LoadInto(*ckpt, targets, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInternal);
    EXPECT_EQ(r.status().message(),
              "tensor 'layers.0.1.weight': cast kernel F32->BF16(cuda:0): "
              "cudaErrorInvalidDeviceFunction: invalid device function");
    fake::FailAsync("LaunchCastKernel", 0, kLaunchFailure);
    r = LoadInto(*ckpt, targets, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message().rfind(
                  "copies to cuda:0 failed, first seen at tensor 'layers.0.0.weight': ", 0),
              0u)
        << r.status().message();
    EXPECT_NE(r.status().message().find("cudaErrorLaunchFailure: unspecified launch failure"),
              std::string::npos);
    // The launch failure is sticky: cuda:0 fails every later load of this process.
    r = LoadInto(*ckpt, targets, o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("cudaErrorLaunchFailure: unspecified launch failure (a "
                                        "sticky error"),
              std::string::npos)
        << r.status().message();
    // In a new process the same load is exact (the kernel's host twin).
    fake::ClearFailures();
    r = LoadInto(*ckpt, targets, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, AllocationFailuresAreResourceExhaustedAndFreeWhatWasTaken) {
  Stored stored = WriteSharded("fake_alloc", 2, 3, 5000);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    // Pinned staging cannot be had, and the pageable fallback is off.
    CudaBackendOptions strict;
    strict.pageable_fallback = false;
    Result<std::unique_ptr<CudaBackend>> no_fallback = CudaBackend::Create(strict);
    ASSERT_TRUE(no_fallback.ok());
    fake::FailCall("cudaHostAlloc", 0, kMemoryAllocation);
    Result<LoadedCheckpoint> all = LoadAll(*ckpt, Options(no_fallback->get(), "cuda:0", 2, 65536));
    ASSERT_FALSE(all.ok());
    EXPECT_EQ(all.status().code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(all.status().message(),
              "cudaHostAlloc: cudaErrorMemoryAllocation: out of memory (allocating " +
                  std::to_string(2 * (65536 + 8192)) + " bytes of pinned memory)");
    EXPECT_EQ(fake::Snapshot().live_device_allocations, 0u);
    EXPECT_EQ(fake::Snapshot().live_pinned_bytes, 0u);
  }
  {
    CudaBackend backend;
    // The second device's arena cannot be had: the first one's is freed.
    fake::FailCall("cudaMalloc", 1, kMemoryAllocation);
    Result<LoadedCheckpoint> all =
        LoadAll(*ckpt, Options(&backend, "layers.1.*=cuda:1,cuda:0", 2, 65536));
    ASSERT_FALSE(all.ok());
    EXPECT_EQ(all.status().code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(all.status().message().rfind("cuda:1: out of memory allocating ", 0), 0u)
        << all.status().message();
    EXPECT_EQ(fake::Snapshot().live_device_allocations, 0u);
  }
  ExpectNothingLive();
}

// Where memory cannot be pinned at all (cudaHostAlloc memory the kernel cannot read
// into, as under some gVisor versions, and cudaHostRegister refused), a load stages
// through pageable memory: byte-exact, with a warning that names the refusal and no
// pinned memory held; later loads reuse that ring without asking again (it would be
// refused again) until the backend releases it. After a shortage (out of memory) the
// next load asks again, and once granted it is pinned and says nothing.
TEST_F(FakeCudaTest, RefusedPinningStagesThroughPageableMemoryWithAWarning) {
  constexpr int kNotSupported = 801;
  Stored stored = WriteSharded("fake_pageable", 2, 5, 3000);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  const uint64_t ring = 3 * (16384 + 8192);
  auto warning = [&](const std::string& refusal) {
    return std::vector<std::string>{
        "pinned staging memory was refused (" + refusal + " (allocating " +
        std::to_string(ring) + " bytes of pinned memory)): the copies to the GPU ran from " +
        std::to_string(ring) + " bytes of pageable memory instead, which is slower (the CUDA "
        "driver stages them)"};
  };
  const std::string kCannotPin = "cudaHostRegister: cudaErrorNotSupported: operation not supported";
  const std::string kShortage = "cudaHostAlloc: cudaErrorMemoryAllocation: out of memory";
  {
    CudaBackend backend;
    fake::SetHostAllocKernelInaccessible(true);
    fake::FailCall("cudaHostRegister", 0, kNotSupported);
    Result<LoadedCheckpoint> all = LoadAll(*ckpt, Options(&backend, "cuda:0", 3, 16384));
    fake::SetHostAllocKernelInaccessible(false);
    ASSERT_TRUE(all.ok()) << all.status().ToString();
    ExpectByteExact(stored, *all);
    EXPECT_EQ(all->warnings, warning(kCannotPin));
    fake::Counters c = fake::Snapshot();
    EXPECT_GT(c.pageable_async_copies, 0u);
    EXPECT_EQ(c.pageable_async_copies, c.async_copies);
    EXPECT_EQ(c.live_pinned_bytes, 0u);
    EXPECT_EQ(c.peak_pinned_bytes, ring);  // the cudaHostAlloc memory, until its probe failed
    EXPECT_EQ(backend.cached_staging_bytes(), ring);
    EXPECT_FALSE(backend.cached_staging_is_pinned());

    // The next load, into existing buffers, reuses that ring without asking for pinned
    // memory (the failure below stays pending) and warns again.
    std::vector<Target> targets;
    for (const LoadedTensor& t : all->tensors) {
      targets.push_back(Target{t.name, t.dtype, t.shape, t.device, t.data});
    }
    // reload: zero the loaded tensors on the device, then load into them again.
    auto reload = [&]() {
      for (const LoadedTensor& t : all->tensors) {
        EXPECT_TRUE(FillDevice(0, t.data, 0, t.bytes).ok());
      }
      return LoadInto(*ckpt, targets, Options(&backend, "cuda:0", 3, 16384));
    };
    fake::FailCall("cudaHostAlloc", 0, kMemoryAllocation);
    Result<LoadResult> into = reload();
    ASSERT_TRUE(into.ok()) << into.status().ToString();
    EXPECT_EQ(into->warnings, warning(kCannotPin));
    ExpectByteExact(stored, *all);
    Result<PinnedBuffer> probe = PinnedBuffer::Allocate(4096);
    ASSERT_FALSE(probe.ok());  // the rule was still pending
    EXPECT_EQ(probe.status().code(), StatusCode::kResourceExhausted);

    // Released, the next load asks again: refused for want of memory now, it warns so.
    EXPECT_EQ(backend.ReleaseCachedStaging(), ring);
    EXPECT_EQ(backend.cached_staging_bytes(), 0u);
    fake::FailCall("cudaHostAlloc", 0, kMemoryAllocation);
    into = reload();
    ASSERT_TRUE(into.ok()) << into.status().ToString();
    EXPECT_EQ(into->warnings, warning(kShortage));
    ExpectByteExact(stored, *all);
    EXPECT_EQ(fake::Snapshot().live_pinned_bytes, 0u);

    // After a shortage the next load asks again without being told: granted, it is
    // pinned, copies nothing from pageable memory and says nothing.
    fake::ResetCounters();
    into = reload();
    ASSERT_TRUE(into.ok()) << into.status().ToString();
    EXPECT_TRUE(into->warnings.empty());
    ExpectByteExact(stored, *all);
    EXPECT_EQ(fake::Snapshot().pageable_async_copies, 0u);
    EXPECT_EQ(fake::Snapshot().live_pinned_bytes, ring);
    EXPECT_TRUE(backend.cached_staging_is_pinned());
  }
  ExpectNothingLive();
}

// Only a refusal of pinned memory falls back: an allocation that fails because CUDA is
// unusable fails the load with that error, as it did before the fallback existed.
TEST_F(FakeCudaTest, OtherPinnedAllocationErrorsStillFailTheLoad) {
  constexpr int kDevicesUnavailable = 46;
  Stored stored = WriteSharded("fake_pinned_errors", 1, 2, 1000);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    fake::FailCall("cudaHostAlloc", 0, kDevicesUnavailable);
    Result<LoadedCheckpoint> all = LoadAll(*ckpt, Options(&backend, "cuda:0", 2, 16384));
    ASSERT_FALSE(all.ok());
    EXPECT_EQ(all.status().code(), StatusCode::kUnavailable);
    EXPECT_EQ(all.status().message().rfind("cudaHostAlloc: cudaErrorDevicesUnavailable: ", 0), 0u)
        << all.status().message();
    EXPECT_EQ(backend.cached_staging_bytes(), 0u);  // no pageable ring was made
    // The next load pins as usual.
    all = LoadAll(*ckpt, Options(&backend, "cuda:0", 2, 16384));
    ASSERT_TRUE(all.ok()) << all.status().ToString();
    ExpectByteExact(stored, *all);
    EXPECT_TRUE(all->warnings.empty());
  }
  ExpectNothingLive();
}

// Two sinks of one pool, one staging through pageable memory (pinning refused) and one
// pinned: whichever is destroyed last, the pool keeps the pinned ring.
TEST_F(FakeCudaTest, APoolKeepsAPinnedRingOverAPageableOne) {
  constexpr int kNotSupported = 801;
  CudaBackend backend;
  Result<std::unique_ptr<DeviceAllocation>> memory = backend.Allocate(kCuda0, 4096);
  ASSERT_TRUE(memory.ok());
  Destination d;
  d.ptr = (*memory)->data();
  d.bytes = 4096;
  d.device = kCuda0;
  d.src_dtype = d.dst_dtype = Dtype::kF32;
  d.name = "w";
  CudaSinkOptions o;
  o.ring.slot_count = 2;
  o.ring.slot_bytes = 16384;
  const uint64_t ring = 2 * (16384 + 8192);
  for (bool pageable_last : {true, false}) {
    SCOPED_TRACE(pageable_last ? "pageable sink destroyed last" : "pinned sink destroyed last");
    auto pool = std::make_shared<StagingPool>();
    Result<std::unique_ptr<CudaSink>> pageable = CudaSink::Create(o, pool);
    Result<std::unique_ptr<CudaSink>> pinned = CudaSink::Create(o, pool);
    ASSERT_TRUE(pageable.ok() && pinned.ok());
    fake::SetHostAllocKernelInaccessible(true);
    fake::FailCall("cudaHostRegister", 0, kNotSupported);
    Status begun = (*pageable)->Begin(std::span<const Destination>(&d, 1), 16384);
    fake::SetHostAllocKernelInaccessible(false);
    ASSERT_TRUE(begun.ok()) << begun.ToString();
    EXPECT_FALSE((*pageable)->staging_is_pinned());
    EXPECT_EQ((*pageable)->Warnings().size(), 1u);
    ASSERT_TRUE((*pinned)->Begin(std::span<const Destination>(&d, 1), 16384).ok());
    EXPECT_TRUE((*pinned)->staging_is_pinned());
    EXPECT_TRUE((*pinned)->Warnings().empty());
    ASSERT_TRUE((*pageable)->Finish().ok());
    ASSERT_TRUE((*pinned)->Finish().ok());
    if (pageable_last) {
      pinned->reset();
      pageable->reset();
    } else {
      pageable->reset();
      pinned->reset();
    }
    EXPECT_TRUE(pool->cached_is_pinned());
    EXPECT_EQ(pool->cached_bytes(), ring);
    EXPECT_EQ(fake::Snapshot().live_pinned_bytes, ring);
    pool->Clear();
    EXPECT_EQ(fake::Snapshot().live_pinned_bytes, 0u);
  }
}

TEST_F(FakeCudaTest, CancelWhileCopiesArePendingFreesEverything) {
  Stored stored = WriteSharded("fake_cancel", 2, 8, 4096);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    // The streams are paused, so the readers fill both slots and wait: the load is
    // surely in the middle when the first progress report comes. The callback cancels
    // (by its return value, or through LoadOptions::cancel) and lets the queued copies
    // run, which the abort must wait for before freeing the arena and the ring.
    for (bool by_flag : {false, true}) {
      SCOPED_TRACE(by_flag ? "cancel flag" : "progress callback");
      LoadOptions o = Options(&backend, "cuda:0", 2, 16384);
      o.threads = 2;
      std::atomic<bool> cancel{false};
      int mid_calls = 0;
      if (by_flag) o.cancel = &cancel;
      o.progress = [&](uint64_t done, uint64_t total) {
        if (done == 0 || done == total) return true;
        ++mid_calls;
        cancel = true;
        fake::PauseStreams(false);
        return by_flag;
      };
      fake::PauseStreams(true);
      Result<LoadedCheckpoint> all = LoadAll(*ckpt, o);
      fake::PauseStreams(false);
      ASSERT_FALSE(all.ok());
      EXPECT_EQ(all.status().code(), StatusCode::kCancelled);
      EXPECT_EQ(all.status().message(), by_flag ? "load cancelled"
                                                : "load cancelled by the progress callback");
      EXPECT_EQ(mid_calls, 1);
      const fake::Counters c = fake::Snapshot();
      EXPECT_EQ(c.live_device_allocations, 0u);
      EXPECT_EQ(c.live_streams, 0u);
      EXPECT_EQ(c.host_release_with_pending_work, 0u);
    }
  }
  ExpectNothingLive();
}

// A load onto cuda:1 from a thread whose current device is cuda:1 (as a rank of a
// multi-GPU server sets it) makes no CUDA context on cuda:0: the reader threads keep
// the device they switch to instead of restoring a fresh thread's default, device 0,
// which since CUDA 12 would create a context there (hundreds of MiB per process).
TEST_F(FakeCudaTest, ALoadOntoOneDeviceMakesNoContextOnAnother) {
  Stored stored = WriteSharded("fake_contexts", 2, 3, 5000);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  std::thread rank([&] {
    Result<ScopedDevice> on1 = ScopedDevice::Enter(1);
    ASSERT_TRUE(on1.ok()) << on1.status().ToString();
    fake::ForgetContexts();
    {
      CudaBackend backend;
      LoadOptions o = Options(&backend, "cuda:1", 2, 8192);
      Result<LoadedCheckpoint> all = LoadAll(*ckpt, o);
      ASSERT_TRUE(all.ok()) << all.status().ToString();
      ExpectByteExact(stored, *all);
      std::vector<Target> targets;
      for (const LoadedTensor& t : all->tensors) {
        targets.push_back(Target{t.name, t.dtype, t.shape, t.device, t.data});
      }
      Result<LoadResult> into = LoadInto(*ckpt, targets, o);
      ASSERT_TRUE(into.ok()) << into.status().ToString();
    }
    const fake::Counters c = fake::Snapshot();
    EXPECT_FALSE(c.contexts[0]);
    EXPECT_TRUE(c.contexts[1]);
  });
  rank.join();
  ExpectNothingLive();
}

// The same from a thread that never chose a device (its current device is an untouched
// cuda:0), with the results freed on another such thread (as a DLPack deleter or a
// garbage collector may run), the backend and its cached staging ring too: the caller's
// thread is left on cuda:1 rather than set back to cuda:0, which would create a context
// there; the ring is pinned and freed with cuda:1 current, and every free selects the
// memory's device first.
TEST_F(FakeCudaTest, AFreshThreadLoadingOntoOneDeviceMakesNoContextOnDevice0) {
  Stored stored = WriteSharded("fake_fresh_contexts", 2, 3, 5000);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  fake::ForgetContexts();
  std::optional<LoadedCheckpoint> loaded;
  auto backend = std::make_unique<CudaBackend>();  // its staging ring freed on `releaser`
  std::thread loader([&] {
    LoadOptions o = Options(backend.get(), "cuda:1", 2, 8192);
    Result<LoadedCheckpoint> all = LoadAll(*ckpt, o);
    ASSERT_TRUE(all.ok()) << all.status().ToString();
    ExpectByteExact(stored, *all);
    loaded.emplace(std::move(*all));
    EXPECT_EQ(fake::CurrentDevice(), 1);  // left on the load's device
  });
  loader.join();
  std::thread releaser([&] {
    EXPECT_GT(backend->cached_staging_bytes(), 0u);
    backend->ReleaseCachedStaging();  // the pinned ring first, on a thread still on cuda:0
    loaded.reset();
    backend.reset();
  });
  releaser.join();
  const fake::Counters c = fake::Snapshot();
  EXPECT_FALSE(c.contexts[0]);
  EXPECT_TRUE(c.contexts[1]);
  // A device whose context is active is made current again.
  std::thread rank([&] {
    ASSERT_TRUE(MakeDeviceCurrent(1).ok());
    {
      Result<ScopedDevice> on0 = ScopedDevice::Enter(0);
      ASSERT_TRUE(on0.ok());
      EXPECT_EQ(fake::CurrentDevice(), 0);
    }
    EXPECT_EQ(fake::CurrentDevice(), 1);
  });
  rank.join();
  ExpectNothingLive();
}

// A cuda:N destination whose memory is pinned host memory or another device's is
// refused before anything is copied, naming the tensor (a plain copy would reach it
// through unified addressing; a cast kernel would fault).
TEST_F(FakeCudaTest, DestinationMemoryOfAnotherKindOrDeviceIsRefused) {
  Stored stored = WriteSharded("fake_wrong_memory", 1, 2, 256);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    Result<DeviceBuffer> on0 = DeviceBuffer::Allocate(0, 2 * 1024);
    Result<DeviceBuffer> on1 = DeviceBuffer::Allocate(1, 2 * 1024);
    Result<PinnedBuffer> pinned = PinnedBuffer::Allocate(2 * 1024);
    ASSERT_TRUE(on0.ok() && on1.ok() && pinned.ok());
    const Device cuda1{Device::Kind::kCuda, 1};
    auto targets_at = [&](std::byte* base) {
      return std::vector<Target>{
          Target{"layers.0.0.weight", Dtype::kF32, {256}, cuda1, base},
          Target{"layers.0.1.weight", Dtype::kF32, {256}, cuda1, base + 1024}};
    };
    auto where = [](const void* p) {
      char at[32];
      std::snprintf(at, sizeof at, "%p", p);
      return std::string(at);
    };
    LoadOptions o = Options(&backend, "cuda:1", 2, 4096);
    Result<LoadResult> r = LoadInto(*ckpt, targets_at(static_cast<std::byte*>(on0->data())), o);
    EXPECT_EQ(r.status(), InvalidArgumentError("tensor 'layers.0.0.weight' (cuda:1): destination "
                                               "memory at " + where(on0->data()) +
                                               " is cuda:0 memory, not memory of cuda:1"));
    r = LoadInto(*ckpt, targets_at(static_cast<std::byte*>(pinned->data())), o);
    EXPECT_EQ(r.status(), InvalidArgumentError("tensor 'layers.0.0.weight' (cuda:1): destination "
                                               "memory at " + where(pinned->data()) +
                                               " is pinned host memory, not memory of cuda:1"));
    EXPECT_EQ(fake::Snapshot().async_copies, 0u);
    r = LoadInto(*ckpt, targets_at(static_cast<std::byte*>(on1->data())), o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::string got(1024, '\0');
    ASSERT_TRUE(CopyDeviceToHost(1, got.data(), static_cast<std::byte*>(on1->data()) + 1024,
                                 1024).ok());
    EXPECT_TRUE(got == stored.bytes["layers.0.1.weight"]);
  }
  ExpectNothingLive();
}

TEST_F(FakeCudaTest, ConcurrentLoadsOntoTwoDevicesAreByteExact) {
  Stored stored = WriteSharded("fake_concurrent", 3, 4, 6000);
  Result<Checkpoint> ckpt = Checkpoint::Open(stored.dir);
  ASSERT_TRUE(ckpt.ok());
  {
    CudaBackend backend;
    const char* maps[] = {"cuda:0", "cuda:1", "layers.1.*=cuda:0,cuda:1", "layers.0.*=cpu,cuda:0"};
    std::vector<std::thread> threads;
    std::atomic<int> good{0};
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 5; ++i) {
          Result<LoadedCheckpoint> all = LoadAll(*ckpt, Options(&backend, maps[t], 2, 8192));
          if (!all.ok()) {
            ADD_FAILURE() << all.status().ToString();
            return;
          }
          ExpectByteExact(stored, *all);
          for (const LoadedTensor& x : all->tensors) {
            EXPECT_EQ(x.device, ParseDeviceMap(maps[t])->Resolve(x.name));
          }
          ++good;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(good.load(), 20);
    EXPECT_EQ(fake::Snapshot().pageable_async_copies, 0u);
  }
  ExpectNothingLive();
}

}  // namespace
}  // namespace shardload::cuda
