// CudaBackend (see cuda/cuda_backend.h).
#include "cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda/status.h"

namespace shardload::cuda {
namespace {

constexpr uint64_t kMaxMeasureBytes = uint64_t{16} << 30;

class CudaAllocation final : public DeviceAllocation {
 public:
  CudaAllocation(DeviceBuffer buffer, Device device)
      : buffer_(std::move(buffer)), device_(device) {}
  void* data() const override { return buffer_.data(); }
  uint64_t size() const override { return buffer_.size(); }
  Device device() const override { return device_; }

 private:
  DeviceBuffer buffer_;
  Device device_;
};

Status ValidateBackendOptions(const CudaBackendOptions& options) {
  if (options.streams_per_device < 1 || options.streams_per_device > 16) {
    return InvalidArgumentError("cuda backend streams_per_device " +
                                std::to_string(options.streams_per_device) +
                                " is out of range 1..16");
  }
  if (options.pinned_mode != PinnedMode::kHostAlloc &&
      options.pinned_mode != PinnedMode::kHostRegister) {
    return InvalidArgumentError("cuda backend pinned_mode is not a known PinnedMode");
  }
  return OkStatus();
}

Status CheckCudaDevice(const Device& device) {
  if (!device.is_cuda()) {
    return InvalidArgumentError("cpu: the CUDA backend serves cuda devices only");
  }
  return CheckDevice(device.index);
}

}  // namespace

CudaBackend::CudaBackend() : CudaBackend(CudaBackendOptions()) {}

CudaBackend::CudaBackend(const CudaBackendOptions& options)
    : options_(options), pool_(std::make_shared<StagingPool>()) {}

CudaBackend::~CudaBackend() = default;

Result<std::unique_ptr<CudaBackend>> CudaBackend::Create(const CudaBackendOptions& options) {
  SL_RETURN_IF_ERROR(ValidateBackendOptions(options));
  return std::unique_ptr<CudaBackend>(new CudaBackend(options));
}

std::string CudaBackend::name() const { return "cuda"; }

int CudaBackend::DeviceCount() const { return cuda::DeviceCount(); }

Result<std::string> CudaBackend::DescribeDevice(int index) const {
  SL_ASSIGN_OR_RETURN(DeviceProperties props, GetDeviceProperties(index));
  return DescribeDeviceProperties(props);
}

Result<std::unique_ptr<DeviceAllocation>> CudaBackend::Allocate(const Device& device,
                                                                uint64_t bytes) {
  SL_RETURN_IF_ERROR(CheckCudaDevice(device));
  SL_ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::Allocate(device.index, bytes));
  return std::unique_ptr<DeviceAllocation>(new CudaAllocation(std::move(buffer), device));
}

Result<std::unique_ptr<Sink>> CudaBackend::MakeSink(const SinkOptions& options) {
  CudaSinkOptions sink_options;
  sink_options.ring = options;
  sink_options.pinned_mode = options_.pinned_mode;
  sink_options.streams_per_device = options_.streams_per_device;
  sink_options.pageable_fallback = options_.pageable_fallback;
  SL_ASSIGN_OR_RETURN(std::unique_ptr<CudaSink> sink, CudaSink::Create(sink_options, pool_));
  return std::unique_ptr<Sink>(std::move(sink));
}

Result<double> MeasureCopyGBps(int device, void* dst, const void* src, uint64_t bytes,
                               bool host_to_device, int streams, int repeats) {
  if (bytes == 0 || dst == nullptr || src == nullptr) {
    return InvalidArgumentError("measure copy: empty buffer");
  }
  if (streams < 1 || streams > 16) {
    return InvalidArgumentError("measure copy: streams " + std::to_string(streams) +
                                " is out of range 1..16");
  }
  if (repeats < 1 || repeats > 1000) {
    return InvalidArgumentError("measure copy: repeats " + std::to_string(repeats) +
                                " is out of range 1..1000");
  }
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  std::vector<Stream> stream_list;
  for (int i = 0; i < streams; ++i) {
    SL_ASSIGN_OR_RETURN(Stream s, Stream::Create(device));
    stream_list.push_back(std::move(s));
  }
  SL_ASSIGN_OR_RETURN(Event start, Event::Create(device, /*timing=*/true, /*blocking_sync=*/false));
  SL_ASSIGN_OR_RETURN(Event stop, Event::Create(device, /*timing=*/true, /*blocking_sync=*/false));
  std::vector<Event> done;
  for (int i = 0; i < streams; ++i) {
    SL_ASSIGN_OR_RETURN(Event e, Event::Create(device, /*timing=*/false, /*blocking_sync=*/false));
    done.push_back(std::move(e));
  }
  const cudaMemcpyKind kind = host_to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  const uint64_t share = (bytes + streams - 1) / streams;
  // One round: start on stream 0, every stream waits for it, copies its share, and
  // stream 0 waits for all of them before recording stop.
  auto round = [&](bool timed) -> Status {
    if (timed) SL_RETURN_IF_ERROR(start.Record(stream_list[0]));
    for (int i = 0; i < streams; ++i) {
      if (timed && i > 0) {
        cudaError_t err = cudaStreamWaitEvent(stream_list[i].get(), start.get(), 0);
        if (err != cudaSuccess) {
          (void)cudaGetLastError();
          return CudaCallStatus(err, "cudaStreamWaitEvent", device);
        }
      }
      const uint64_t offset = share * static_cast<uint64_t>(i);
      if (offset >= bytes) continue;
      const uint64_t n = std::min(share, bytes - offset);
      cudaError_t err = cudaMemcpyAsync(static_cast<char*>(dst) + offset,
                                        static_cast<const char*>(src) + offset, n, kind,
                                        stream_list[i].get());
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return CudaCallStatus(err, "cudaMemcpyAsync", device);
      }
      SL_RETURN_IF_ERROR(done[i].Record(stream_list[i]));
      if (i > 0) {
        err = cudaStreamWaitEvent(stream_list[0].get(), done[i].get(), 0);
        if (err != cudaSuccess) {
          (void)cudaGetLastError();
          return CudaCallStatus(err, "cudaStreamWaitEvent", device);
        }
      }
    }
    if (timed) SL_RETURN_IF_ERROR(stop.Record(stream_list[0]));
    return stream_list[0].Synchronize();
  };
  SL_RETURN_IF_ERROR(round(false));  // warm-up: first-touch costs, clocks
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    SL_RETURN_IF_ERROR(round(true));
    SL_ASSIGN_OR_RETURN(float ms, Event::ElapsedMs(start, stop));
    if (ms > 0) best = std::max(best, static_cast<double>(bytes) / (ms * 1e-3) / 1e9);
  }
  if (best <= 0) return InternalError("measure copy: the copies took no measurable time");
  return best;
}

Result<double> CudaBackend::MeasureHostToDeviceGBps(const Device& device, uint64_t bytes,
                                                    int repeats) {
  SL_RETURN_IF_ERROR(CheckCudaDevice(device));
  if (bytes == 0 || bytes > kMaxMeasureBytes) {
    return InvalidArgumentError("measure host-to-device: " + std::to_string(bytes) +
                                " bytes is out of range 1..17179869184");
  }
  if (repeats < 1 || repeats > 1000) {
    return InvalidArgumentError("measure host-to-device: repeats " + std::to_string(repeats) +
                                " is out of range 1..1000");
  }
  SL_ASSIGN_OR_RETURN(PinnedBuffer host,
                      PinnedBuffer::Allocate(bytes, options_.pinned_mode, device.index));
  std::memset(host.data(), 0x5a, bytes);
  SL_ASSIGN_OR_RETURN(DeviceBuffer dev, DeviceBuffer::Allocate(device.index, bytes));
  return MeasureCopyGBps(device.index, dev.data(), host.data(), bytes, /*host_to_device=*/true,
                         /*streams=*/1, repeats);
}

uint64_t CudaBackend::cached_staging_bytes() const { return pool_->cached_bytes(); }

bool CudaBackend::cached_staging_is_pinned() const { return pool_->cached_is_pinned(); }

uint64_t CudaBackend::ReleaseCachedStaging() { return pool_->Clear(); }

}  // namespace shardload::cuda
