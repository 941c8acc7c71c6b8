// cuda/cuda_backend.h — the CUDA implementation of loader/backend.h.
//
// Provides `CudaBackend`: probes the CUDA runtime once (no driver or no device simply
// means DeviceCount() == 0; host-only loads never touch CUDA), allocates device arenas
// (one cudaMalloc per call, 256-byte aligned; the loader lays tensors out as views),
// makes CudaSinks that share one cached staging ring (so pinned memory is allocated
// once per process, not once per load), and measures the pinned host-to-device copy
// ceiling. No CUDA type appears here.
//
//   shardload::cuda::CudaBackend cuda;               // default options
//   if (cuda.DeviceCount() > 0) {
//     LoadOptions options;
//     options.backend = &cuda;
//     options.devices = *ParseDeviceMap("cuda:0");
//     Result<double> ceiling = cuda.MeasureHostToDeviceGBps(Device{Device::Kind::kCuda, 0},
//                                                           256 << 20, 5);
//   }
#ifndef SHARDLOAD_CUDA_CUDA_BACKEND_H_
#define SHARDLOAD_CUDA_CUDA_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "cuda/cuda_sink.h"
#include "cuda/runtime.h"
#include "format/status.h"
#include "loader/backend.h"

namespace shardload::cuda {

// CudaBackendOptions: tuning of the sinks a CudaBackend makes.
struct CudaBackendOptions {
  // pinned_mode: how staging rings are pinned. Default kHostAlloc (see runtime.h).
  PinnedMode pinned_mode = PinnedMode::kHostAlloc;
  // streams_per_device: copy streams per device in each sink. Default 2; valid 1..16.
  int streams_per_device = 2;
  // pageable_fallback: stage through pageable memory, with a warning in the load's
  // LoadStats::warnings, when pinned memory is refused (CudaSinkOptions). Default true.
  bool pageable_fallback = true;
};

// CudaBackend: see the top of this file. Thread safety: every method may be called
// concurrently. Lifetime: allocations and sinks it makes must not outlive it.
class CudaBackend final : public DeviceBackend {
 public:
  // CudaBackend(): default options (always valid).
  CudaBackend();
  // Create: a backend with `options`; invalid_argument for options out of range.
  static Result<std::unique_ptr<CudaBackend>> Create(const CudaBackendOptions& options);
  ~CudaBackend() override;

  // name: "cuda".
  std::string name() const override;
  // DeviceCount: usable devices (0 without driver or device).
  int DeviceCount() const override;
  // DescribeDevice: "NVIDIA H100 80GB HBM3 (cuda:0, 79.1 GiB, PCIe Gen5 x16)";
  // invalid_argument "cuda:1: no such CUDA device (1 device)" out of range.
  Result<std::string> DescribeDevice(int index) const override;
  // Allocate: `bytes` on `device` (cudaMalloc; 0 bytes gives an allocation with null
  // data). Errors: invalid_argument for a cpu device or a missing CUDA device
  // ("cuda:0: no such CUDA device (0 devices: cudaGetDeviceCount: cudaErrorInsufficientDriver:
  // ...)"); resource_exhausted "cuda:0: out of memory allocating N bytes (F bytes free of T)".
  Result<std::unique_ptr<DeviceAllocation>> Allocate(const Device& device, uint64_t bytes) override;
  // MakeSink: a CudaSink with `options` and this backend's pinned mode, streams and
  // pageable fallback, taking the cached staging ring. Errors: invalid_argument for
  // options out of range.
  Result<std::unique_ptr<Sink>> MakeSink(const SinkOptions& options) override;
  // MeasureHostToDeviceGBps: best of `repeats` (1..1000) timed cudaMemcpyAsync of
  // `bytes` (1 .. 16 GiB) from one pinned buffer to one device buffer (one untimed
  // warm-up copy first). Errors: invalid_argument for bad arguments or device; CUDA
  // errors naming call and device; resource_exhausted when the buffers do not fit.
  Result<double> MeasureHostToDeviceGBps(const Device& device, uint64_t bytes,
                                         int repeats) override;

  // cached_staging_bytes: pinned (or host) staging memory kept for the next sink.
  uint64_t cached_staging_bytes() const;
  // cached_staging_is_pinned: whether that memory is pinned (false when there is none,
  // or when it is the pageable ring of loads whose pinning was refused).
  bool cached_staging_is_pinned() const;
  // ReleaseCachedStaging: free that memory now (the next GPU load allocates a ring
  // again; loads running meanwhile keep theirs and hand it back when they end).
  // Returns the bytes freed.
  uint64_t ReleaseCachedStaging();
  // options: the options in use.
  const CudaBackendOptions& options() const { return options_; }

 private:
  explicit CudaBackend(const CudaBackendOptions& options);
  CudaBackendOptions options_;
  std::shared_ptr<StagingPool> pool_;
};

// MeasureCopyGBps: the timing loop behind MeasureHostToDeviceGBps, over caller-owned
// memory: best GB/s of `repeats` copies of `bytes` from `src` to `dst` (either
// direction per `host_to_device`) spread over `streams` (1..16) streams of `device`,
// each stream copying an equal share concurrently. Used by bench/cuda_bench.cc.
Result<double> MeasureCopyGBps(int device, void* dst, const void* src, uint64_t bytes,
                               bool host_to_device, int streams, int repeats);

}  // namespace shardload::cuda

#endif  // SHARDLOAD_CUDA_CUDA_BACKEND_H_
