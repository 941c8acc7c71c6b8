// bench/cuda_bench.cc — host-to-device ceilings and the CudaSink's throughput, measured
// in one run on one GPU so that every number can be given as a ratio.
//
//   bazel build -c opt //bench:cuda_bench
//   bazel-bin/bench/cuda_bench [--device N] [--max-mib 1024] [--source-mib 4096] [--quick]
//
// Sections (one line each, "key=value" fields, easy to grep):
//   pinned_alloc  cudaHostAlloc vs aligned_alloc+cudaHostRegister: allocation and free
//                 time for 64 MiB .. max-mib;
//   h2d           pinned H2D copy rate per pinned mode, buffer size and stream count
//                 (1, 2, 4, 8 streams sharing one buffer), best of 5; the best of all
//                 is the ceiling;
//   pageable      H2D straight from pageable memory (what a loader without staging gets);
//   sink          CudaSink streaming source-mib of host memory into one device arena
//                 (memcpy into the slot plays the file read, as from the page cache),
//                 for slot counts, slot sizes, streams per device and reader threads, with
//                 its ratio to the ceiling; plus one run with an F32→BF16 cast on the GPU.
// Exits 0 after printing "SKIP: no CUDA device" when there is none.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_sink.h"
#include "cuda/runtime.h"
#include "loader/sink.h"

namespace shardload::cuda {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

struct Args {
  int device = 0;
  uint64_t max_mib = 1024;
  uint64_t source_mib = 4096;
  bool quick = false;
};

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto next = [&](uint64_t* out) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      *out = std::strtoull(argv[++i], &end, 10);
      return end != argv[i] && *end == '\0';
    };
    uint64_t v = 0;
    if (s == "--device" && next(&v)) {
      a->device = static_cast<int>(v);
    } else if (s == "--max-mib" && next(&v) && v >= 64) {
      a->max_mib = v;
    } else if (s == "--source-mib" && next(&v) && v >= 64) {
      a->source_mib = v;
    } else if (s == "--quick") {
      a->quick = true;
    } else {
      std::fprintf(stderr,
                   "usage: cuda_bench [--device N] [--max-mib M>=64] [--source-mib M>=64] [--quick]\n");
      return false;
    }
  }
  return true;
}

double g_ceiling = 0;

void PinnedAllocSection(const Args& a) {
  for (uint64_t mib = 64; mib <= a.max_mib; mib *= 4) {
    for (PinnedMode mode : {PinnedMode::kHostAlloc, PinnedMode::kHostRegister}) {
      const uint64_t bytes = mib << 20;
      auto t0 = Clock::now();
      Result<PinnedBuffer> b = PinnedBuffer::Allocate(bytes, mode);
      auto t1 = Clock::now();
      if (!b.ok()) {
        std::printf("pinned_alloc mode=%s mib=%llu error=\"%s\"\n", PinnedModeName(mode),
                    static_cast<unsigned long long>(mib), b.status().ToString().c_str());
        continue;
      }
      std::memset(b->data(), 1, bytes);  // first touch (cudaHostAlloc pages are already resident)
      auto t2 = Clock::now();
      { PinnedBuffer dropped = std::move(b).value(); }
      auto t3 = Clock::now();
      std::printf("pinned_alloc mode=%s mib=%llu alloc_ms=%.2f touch_ms=%.2f free_ms=%.2f\n",
                  PinnedModeName(mode), static_cast<unsigned long long>(mib),
                  Seconds(t0, t1) * 1e3, Seconds(t1, t2) * 1e3, Seconds(t2, t3) * 1e3);
    }
  }
}

void H2DSection(const Args& a) {
  for (PinnedMode mode : {PinnedMode::kHostAlloc, PinnedMode::kHostRegister}) {
    for (uint64_t mib = 64; mib <= a.max_mib; mib *= 2) {
      if (a.quick && mib != 256) continue;
      const uint64_t bytes = mib << 20;
      Result<PinnedBuffer> host = PinnedBuffer::Allocate(bytes, mode);
      Result<DeviceBuffer> dev = DeviceBuffer::Allocate(a.device, bytes);
      if (!host.ok() || !dev.ok()) {
        std::printf("h2d mode=%s mib=%llu error=\"%s\"\n", PinnedModeName(mode),
                    static_cast<unsigned long long>(mib),
                    (!host.ok() ? host.status() : dev.status()).ToString().c_str());
        continue;
      }
      std::memset(host->data(), 0x5a, bytes);
      for (int streams : {1, 2, 4, 8}) {
        Result<double> g = MeasureCopyGBps(a.device, dev->data(), host->data(), bytes, true,
                                           streams, 5);
        if (!g.ok()) {
          std::printf("h2d mode=%s mib=%llu streams=%d error=\"%s\"\n", PinnedModeName(mode),
                      static_cast<unsigned long long>(mib), streams, g.status().ToString().c_str());
          continue;
        }
        g_ceiling = std::max(g_ceiling, *g);
        std::printf("h2d mode=%s mib=%llu streams=%d gbps=%.2f\n", PinnedModeName(mode),
                    static_cast<unsigned long long>(mib), streams, *g);
      }
      if (mib == 256) {
        Result<double> d2h = MeasureCopyGBps(a.device, host->data(), dev->data(), bytes, false, 1, 5);
        if (d2h.ok()) {
          std::printf("d2h mode=%s mib=%llu streams=1 gbps=%.2f\n", PinnedModeName(mode),
                      static_cast<unsigned long long>(mib), *d2h);
        }
      }
    }
  }
  std::printf("ceiling h2d_pinned_best_gbps=%.2f\n", g_ceiling);
}

void PageableSection(const Args& a) {
  const uint64_t bytes = 256ull << 20;
  std::vector<char> host(bytes, 0x33);
  Result<DeviceBuffer> dev = DeviceBuffer::Allocate(a.device, bytes);
  if (!dev.ok()) return;
  Result<double> g = MeasureCopyGBps(a.device, dev->data(), host.data(), bytes, true, 1, 5);
  if (g.ok()) {
    std::printf("pageable mib=256 gbps=%.2f ratio_to_ceiling=%.3f\n", *g,
                g_ceiling > 0 ? *g / g_ceiling : 0.0);
  }
}

// OneSinkRun: stream `source` into `dst` through a CudaSink; GB/s of source bytes.
Result<double> OneSinkRun(const Args& a, const std::vector<std::byte>& source, void* dst,
                          int slots, uint64_t slot_bytes, int streams, int threads, bool cast,
                          PinnedMode mode, std::shared_ptr<StagingPool> pool) {
  CudaSinkOptions o;
  o.ring.slot_count = slots;
  o.ring.slot_bytes = slot_bytes;
  o.streams_per_device = streams;
  o.pinned_mode = mode;
  // This measures the pinned path: where pinned memory is refused the run fails (with
  // the refusal) rather than printing pageable rates under a pinned mode's label.
  o.pageable_fallback = false;
  SL_ASSIGN_OR_RETURN(std::unique_ptr<CudaSink> sink, CudaSink::Create(o, pool));
  Destination d;
  d.ptr = dst;
  d.bytes = cast ? source.size() / 2 : source.size();
  d.device = Device{Device::Kind::kCuda, a.device};
  d.src_dtype = Dtype::kF32;
  d.dst_dtype = cast ? Dtype::kBF16 : Dtype::kF32;
  d.name = "bench.tensor";
  // Spans of slot_bytes; every span one region (like one big tensor per span).
  std::vector<ReadSpan> spans;
  for (uint64_t off = 0; off < source.size(); off += slot_bytes) {
    const uint64_t len = std::min<uint64_t>(slot_bytes, source.size() - off);
    spans.push_back(ReadSpan{0, off, len, {CopyRegion{0, len, 0, off}}});
  }
  // Warm the ring (allocation is not part of a steady-state load).
  SL_RETURN_IF_ERROR(sink->Begin(std::span<const Destination>(&d, 1), slot_bytes));
  SL_RETURN_IF_ERROR(sink->Finish());
  const auto t0 = Clock::now();
  SL_RETURN_IF_ERROR(sink->Begin(std::span<const Destination>(&d, 1), slot_bytes));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  Status first;
  std::mutex mu;
  auto reader = [&]() {
    while (!failed) {
      const size_t k = next.fetch_add(1);
      if (k >= spans.size()) return;
      const ReadSpan& s = spans[k];
      Result<StagingSlot> slot = sink->AcquireSlot();
      Status st = slot.status();
      if (st.ok()) {
        std::memcpy(slot->memory.data(), source.data() + s.file_offset, s.length);
        st = sink->Commit(*slot, s, slot->memory.first(s.length));
      }
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = st;
        failed = true;
        return;
      }
    }
  };
  std::vector<std::thread> pool_threads;
  for (int i = 0; i < threads; ++i) pool_threads.emplace_back(reader);
  for (auto& t : pool_threads) t.join();
  if (!first.ok()) {
    sink->Abort();
    return first;
  }
  SL_RETURN_IF_ERROR(sink->Finish());
  const double s = Seconds(t0, Clock::now());
  return static_cast<double>(source.size()) / s / 1e9;
}

void SinkSection(const Args& a) {
  const uint64_t bytes = a.source_mib << 20;
  std::vector<std::byte> source(bytes);
  for (uint64_t i = 0; i < bytes; i += 4096) source[i] = static_cast<std::byte>(i >> 12);
  Result<DeviceBuffer> dst = DeviceBuffer::Allocate(a.device, bytes);
  if (!dst.ok()) {
    std::printf("sink error=\"%s\"\n", dst.status().ToString().c_str());
    return;
  }
  auto pool = std::make_shared<StagingPool>();
  struct Config {
    int slots;
    uint64_t slot_mib;
    int streams;
    int threads;
  };
  // The default ring (kDefaultSlotCount x kDefaultSlotBytes: 16 x 16 MiB) first, with as
  // many readers as slots; then other geometries and stream counts.
  const int default_slots = kDefaultSlotCount;
  const uint64_t default_mib = (kDefaultSlotBytes + kSlotMarginBytes) >> 20;
  std::vector<Config> configs = {{default_slots, default_mib, 2, default_slots},
                                 {4, 64, 2, 4},
                                 {default_slots, default_mib, 2, 8},
                                 {8, 32, 2, 8},
                                 {default_slots, default_mib, 1, default_slots},
                                 {default_slots, default_mib, 4, default_slots},
                                 {32, 8, 2, 16},
                                 {2, 64, 2, 4},
                                 {4, 64, 2, 8},
                                 {3, 128, 2, 4},
                                 {1, 64, 1, 1}};
  if (a.quick) configs.resize(2);
  for (const Config& c : configs) {
    for (PinnedMode mode : {PinnedMode::kHostAlloc, PinnedMode::kHostRegister}) {
      // Both pinned modes for the default ring; the default mode for the others.
      if (mode == PinnedMode::kHostRegister && &c != &configs.front()) continue;
      double best = 0;
      Status err;
      for (int r = 0; r < 3; ++r) {
        Result<double> g = OneSinkRun(a, source, dst->data(), c.slots, c.slot_mib << 20, c.streams,
                                      c.threads, false, mode, pool);
        if (!g.ok()) {
          err = g.status();
          break;
        }
        best = std::max(best, *g);
      }
      if (!err.ok()) {
        std::printf("sink slots=%d slot_mib=%llu error=\"%s\"\n", c.slots,
                    static_cast<unsigned long long>(c.slot_mib), err.ToString().c_str());
        continue;
      }
      std::printf(
          "sink mode=%s slots=%d slot_mib=%llu streams=%d threads=%d source_mib=%llu gbps=%.2f "
          "ratio_to_ceiling=%.3f\n",
          PinnedModeName(mode), c.slots, static_cast<unsigned long long>(c.slot_mib), c.streams,
          c.threads, static_cast<unsigned long long>(a.source_mib), best,
          g_ceiling > 0 ? best / g_ceiling : 0.0);
    }
  }
  Result<double> cast = OneSinkRun(a, source, dst->data(), default_slots, default_mib << 20, 2,
                                   default_slots, true, PinnedMode::kHostAlloc, pool);
  if (cast.ok()) {
    std::printf("sink_cast f32_to_bf16 slots=%d slot_mib=%llu gbps=%.2f ratio_to_ceiling=%.3f\n",
                default_slots, static_cast<unsigned long long>(default_mib), *cast,
                g_ceiling > 0 ? *cast / g_ceiling : 0.0);
  } else {
    std::printf("sink_cast error=\"%s\"\n", cast.status().ToString().c_str());
  }
}

int Main(int argc, char** argv) {
  Args a;
  if (!ParseArgs(argc, argv, &a)) return 2;
  std::printf("machine nproc=%u cpu=\"%s\"\n", std::thread::hardware_concurrency(),
              CpuModel().c_str());
  if (DeviceCount() == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", ProbeStatus().ToString().c_str());
    return 0;
  }
  Result<DeviceProperties> props = GetDeviceProperties(a.device);
  if (!props.ok()) {
    std::fprintf(stderr, "cuda_bench: %s\n", props.status().ToString().c_str());
    return 1;
  }
  std::printf("gpu \"%s\" copy_engines=%d\n", DescribeDeviceProperties(*props).c_str(),
              props->async_engine_count);
  PinnedAllocSection(a);
  H2DSection(a);
  PageableSection(a);
  SinkSection(a);
  return 0;
}

}  // namespace
}  // namespace shardload::cuda

int main(int argc, char** argv) { return shardload::cuda::Main(argc, argv); }
