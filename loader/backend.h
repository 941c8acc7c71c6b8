// loader/backend.h — how the loader reaches devices it does not know about.
//
// Provides `DeviceBackend`, the interface the CUDA package implements
// (cuda/cuda_backend.h) so that loader/ never includes CUDA headers. A load whose
// targets are all on `cpu` needs no backend; a load with any `cuda:N` target takes one
// through LoadOptions::backend.
//
//   shardload::cuda::CudaBackend cuda;           // probes the runtime once
//   LoadOptions options;
//   options.backend = &cuda;                     // nullptr: host only
//   options.devices = *ParseDeviceMap("cuda:0");
#ifndef SHARDLOAD_LOADER_BACKEND_H_
#define SHARDLOAD_LOADER_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "format/status.h"
#include "loader/device.h"
#include "loader/sink.h"

namespace shardload {

// DeviceAllocation: device memory owned by the backend; freed by the destructor.
// Lifetime: must not outlive the backend that made it.
class DeviceAllocation {
 public:
  virtual ~DeviceAllocation() = default;
  virtual void* data() const = 0;
  virtual uint64_t size() const = 0;
  virtual Device device() const = 0;
};

// kSlotMarginBytes: what each staging slot holds beyond slot_bytes, so that an O_DIRECT
// window (the span widened to 4096-byte boundaries at both ends) fits (loader/sink.h).
inline constexpr uint64_t kSlotMarginBytes = 2 * 4096;

// kDefaultSlotBytes: 16 MiB less that margin, so that a slot takes 16 MiB and the
// default ring of kDefaultSlotCount slots exactly 256 MiB.
inline constexpr uint64_t kDefaultSlotBytes = (uint64_t{16} << 20) - kSlotMarginBytes;

// kDefaultSlotCount: 16 slots. Reads into the ring run one per slot, so the slot count
// bounds how many are in flight: with 4 slots of 64 MiB a GPU load could keep only four
// page-cache reads going (about 4 x 8 GB/s, short of a PCIe Gen5 link's ~50 GB/s); 16
// slots of 16 MiB hold the same 256 MiB. Host loads measured the same with either
// (bench/RESULTS.md, "Ring geometry").
inline constexpr int kDefaultSlotCount = 16;

// SinkOptions: staging ring geometry for a sink. The ring takes
// slot_count × (slot_bytes + 8 KiB) bytes (pinned for GPU loads): 256 MiB by default.
struct SinkOptions {
  // slot_count: staging slots in the ring. Default kDefaultSlotCount (16). Valid: 1..64.
  int slot_count = kDefaultSlotCount;
  // slot_bytes: bytes per slot (and the planner's maximum span). Default
  // kDefaultSlotBytes (16 MiB − 8 KiB). Valid: 4 KiB .. 1 GiB, a multiple of 4096.
  uint64_t slot_bytes = kDefaultSlotBytes;
};

// RingBytes: the staging memory a sink with `options` holds:
// slot_count × (slot_bytes + kSlotMarginBytes) (slot_bytes as validated: a multiple of 4096).
inline uint64_t RingBytes(const SinkOptions& options) {
  return static_cast<uint64_t>(options.slot_count) * (options.slot_bytes + kSlotMarginBytes);
}

// DeviceBackend: allocation, sinks and probing for one kind of accelerator.
// Thread safety: all methods may be called concurrently.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  // name: "cuda".
  virtual std::string name() const = 0;

  // DeviceCount: usable devices; 0 when there is no driver or device (never an error).
  virtual int DeviceCount() const = 0;

  // DescribeDevice: "NVIDIA H100 80GB HBM3 (cuda:0, 79.1 GiB, PCIe Gen5 x16)" or an
  // error for an index out of range.
  virtual Result<std::string> DescribeDevice(int index) const = 0;

  // Allocate: `bytes` of device memory on `device` (aligned to at least 256 bytes).
  // Errors: resource_exhausted "cuda:0: out of memory allocating N bytes (F free)",
  // invalid_argument for a device that does not exist.
  virtual Result<std::unique_ptr<DeviceAllocation>> Allocate(const Device& device,
                                                             uint64_t bytes) = 0;

  // MakeSink: a sink that delivers to destinations on this backend's devices (and may
  // also serve host destinations in the same load). Pinned staging memory is bounded by
  // slot_count × slot_bytes and reused across loads where possible.
  virtual Result<std::unique_ptr<Sink>> MakeSink(const SinkOptions& options) = 0;

  // MeasureHostToDeviceGBps: the pinned host-to-device copy ceiling of `device`:
  // GB/s (10^9 bytes/s) of cudaMemcpyAsync from one pinned buffer of `bytes`, best of
  // `repeats`. Used by `shardload bench` as the same-run ceiling.
  virtual Result<double> MeasureHostToDeviceGBps(const Device& device, uint64_t bytes,
                                                 int repeats) = 0;
};

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_BACKEND_H_
