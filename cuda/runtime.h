// cuda/runtime.h — the CUDA runtime, probed and wrapped in RAII handles.
//
// Provides the process-wide device probe (`DeviceCount`, `GetDeviceProperties`; no
// driver or no device simply means 0 devices, never a crash or an exception), memory
// queries and synchronous copies used by tests and benchmarks, and move-only owners of
// every CUDA handle the package uses: `ScopedDevice` (cudaSetDevice; the previous
// device restored on destruction where its primary context is active),
// `PinnedBuffer` (page-locked host memory by cudaHostAlloc or by aligned_alloc +
// cudaHostRegister), `DeviceBuffer` (cudaMalloc/cudaFree), `Stream` and `Event`. No CUDA header is included here: streams and events appear as pointers
// to CUDA's opaque `CUstream_st` / `CUevent_st`, which is what cudaStream_t and
// cudaEvent_t are.
//
//   if (cuda::DeviceCount() == 0) { /* host-only path */ }
//   SL_ASSIGN_OR_RETURN(cuda::PinnedBuffer host, cuda::PinnedBuffer::Allocate(n));
//   SL_ASSIGN_OR_RETURN(cuda::DeviceBuffer dev, cuda::DeviceBuffer::Allocate(0, n));
//   SL_ASSIGN_OR_RETURN(cuda::Stream stream, cuda::Stream::Create(0));
//   SL_RETURN_IF_ERROR(cuda::CopyHostToDeviceAsync(dev.data(), host.data(), n, stream));
//   SL_RETURN_IF_ERROR(stream.Synchronize());
#ifndef SHARDLOAD_CUDA_RUNTIME_H_
#define SHARDLOAD_CUDA_RUNTIME_H_

#include <cstdint>
#include <string>

#include "cuda/status.h"
#include "format/status.h"

struct CUstream_st;  // CUDA's opaque stream (cudaStream_t is CUstream_st*)
struct CUevent_st;   // CUDA's opaque event (cudaEvent_t is CUevent_st*)

namespace shardload::cuda {

// DeviceProperties: what the probe learns about one device. PCIe fields are 0 (and
// the bus id empty) when the platform does not say (read from the runtime and
// /sys/bus/pci/devices/<bus id>/{max,current}_link_{speed,width}).
struct DeviceProperties {
  int index = 0;
  std::string name;                 // "NVIDIA H100 80GB HBM3"
  uint64_t total_memory = 0;        // bytes
  int compute_major = 0;            // 9 for Hopper
  int compute_minor = 0;
  int async_engine_count = 0;       // copy engines
  std::string pci_bus_id;           // "0000:3b:00.0"
  int pcie_max_generation = 0;      // link capability (5 = Gen5)
  int pcie_max_width = 0;           // lanes (16)
  int pcie_current_generation = 0;  // as negotiated now (idle GPUs may train down)
  int pcie_current_width = 0;
};

// DeviceCount: the number of usable CUDA devices, probed once per process (the first
// call initialises the runtime). 0 when there is no driver or no device; never fails.
// Thread safety: may be called concurrently.
int DeviceCount();

// ProbeStatus: why DeviceCount() is 0 ("cudaGetDeviceCount: cudaErrorInsufficientDriver:
// CUDA driver version is insufficient for CUDA runtime version", unavailable), or OK
// when the probe succeeded (even with 0 devices). Thread safety: as DeviceCount.
Status ProbeStatus();

// GetDeviceProperties: properties of device `index` (cached after the first call).
// Errors: invalid_argument "cuda:3: no such CUDA device (2 devices)" for an index out of
// range (the message adds the probe failure when there are none). Thread-safe.
Result<DeviceProperties> GetDeviceProperties(int index);

// DescribeDeviceProperties: "NVIDIA H100 80GB HBM3 (cuda:0, 79.1 GiB, PCIe Gen5 x16)";
// the PCIe part is left out when unknown and gets ", now Gen1 x16" when the current
// link differs from its capability.
std::string DescribeDeviceProperties(const DeviceProperties& props);

// CheckDevice: OK when `index` names an existing device, else the error of
// GetDeviceProperties.
Status CheckDevice(int index);

// MemoryInfo: free and total bytes of one device (cudaMemGetInfo).
struct MemoryInfo {
  uint64_t free_bytes = 0;
  uint64_t total_bytes = 0;
};

// GetMemoryInfo: cudaMemGetInfo on `device`. Errors: CheckDevice's, or the CUDA error.
Result<MemoryInfo> GetMemoryInfo(int device);

// ScopedDevice: makes `device` current for the calling thread and, when destroyed,
// makes the previous current device current again if that device's primary context
// is active (as PyTorch's device guard does): on a thread that never chose a device,
// the "previous" device is device 0 with no context, and since CUDA 12 cudaSetDevice
// would create one there (hundreds of MiB of a GPU the caller never used), so the
// thread is left on `device` instead. Where the driver cannot be asked whether a
// context is active, the previous device is restored. Move-only; use on one thread.
class ScopedDevice {
 public:
  // Enter: cudaGetDevice + cudaSetDevice(device). Errors: CheckDevice's or CUDA's.
  static Result<ScopedDevice> Enter(int device);
  ScopedDevice(ScopedDevice&& other) noexcept;
  ScopedDevice& operator=(ScopedDevice&&) = delete;
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  ~ScopedDevice();

 private:
  ScopedDevice(int previous, bool restore) : previous_(previous), restore_(restore) {}
  int previous_ = 0;
  bool restore_ = false;
};

// MakeDeviceCurrent: make `device` current for the calling thread and leave it so
// (cudaGetDevice, then cudaSetDevice only when it differs). For threads the loader
// owns (Stream's readers, which live for one load): a ScopedDevice there would set the
// thread back to its previous device, device 0 on a fresh thread, and since CUDA 12
// cudaSetDevice creates that device's context (hundreds of MiB on a GPU the load never
// uses). Errors: CheckDevice's or CUDA's. Thread-safe (per-thread state).
Status MakeDeviceCurrent(int device);

// CheckDeviceMemory: OK when CUDA knows [ptr, ptr + bytes) (both ends) as memory of
// `device`: device memory there, or managed memory. `bytes` = 0 checks nothing. Queried
// with cudaPointerGetAttributes while `device` is current (ScopedDevice).
// Errors: invalid_argument "memory at 0x... is <what> memory, not memory of cuda:N"
// for pinned host memory ("host"), device memory of another device ("cuda:M"); memory
// CUDA does not know (plain host memory, or an allocator's mapping it cannot see) is
// accepted: the copy then fails on its own if it cannot reach it. Thread-safe.
Status CheckDeviceMemory(int device, const void* ptr, uint64_t bytes);

// PinnedMode: how PinnedBuffer obtains page-locked memory. Both give memory every
// device can DMA from (portable). Which is faster to allocate and to copy from is
// measured by bench/cuda_bench.cc on the GPU machine; kHostAlloc is the default.
enum class PinnedMode {
  kHostAlloc,     // cudaHostAlloc(cudaHostAllocPortable)
  kHostRegister,  // aligned_alloc(4096) + cudaHostRegister(cudaHostRegisterPortable)
};

// PinnedModeName: "host_alloc" / "host_register".
const char* PinnedModeName(PinnedMode mode);

// PinnedBuffer: page-locked host memory, at least 4096-aligned, freed (and
// unregistered) by the destructor; registered memory whose cudaHostUnregister fails
// (e.g. after a sticky error) is leaked rather than handed back to the heap still
// registered. Move-only. Thread safety: the memory is the caller's to share; the
// object itself is not synchronised.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  // Allocate: `bytes` (> 0) of pinned memory. kHostAlloc memory is probed with a
  // one-byte read(2) into it: where the kernel cannot write there (EFAULT, as with
  // cudaHostAlloc memory under some gVisor versions, which would make every file read
  // into a staging slot fail), or where it is not 4096-aligned (cudaHostAlloc does
  // not document its alignment), it is freed and kHostRegister memory is returned
  // instead; mode() says which. `device`: when a device index, the memory is
  // allocated and later freed with that device current (ScopedDevice), so neither
  // binds a context on the calling thread's device (device 0 on a fresh thread); the
  // memory is portable either way (usable by every device's copies); the allocating
  // thread, and later the freeing one, may be left on `device` (ScopedDevice's rule).
  // kNoDevice (default): the calling thread's current device. Errors: invalid_argument
  // for 0 bytes; when pinned memory is refused, resource_exhausted for a shortage
  // ("cudaHostAlloc: cudaErrorMemoryAllocation: out of memory (allocating N bytes of
  // pinned memory)", or cudaHostRegister's) and unimplemented where the platform cannot
  // pin at all (cudaErrorNotSupported from either call; cudaHostRegister's
  // cudaErrorInvalidValue, its answer to these valid arguments in such places);
  // unavailable without a driver; other CUDA errors as CudaCallStatus maps them (a
  // sticky one is internal); ScopedDevice::Enter's for `device` (CheckDevice's,
  // cudaGetDevice/cudaSetDevice).
  static Result<PinnedBuffer> Allocate(uint64_t bytes, PinnedMode mode = PinnedMode::kHostAlloc,
                                       int device = kNoDevice);
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();

  void* data() const { return data_; }
  uint64_t size() const { return size_; }
  PinnedMode mode() const { return mode_; }

 private:
  void Reset();
  void* data_ = nullptr;
  uint64_t size_ = 0;
  PinnedMode mode_ = PinnedMode::kHostAlloc;
  int device_ = kNoDevice;  // made current to free the memory (Allocate's `device`)
};

// DeviceBuffer: `bytes` of memory on one device (cudaMalloc: 256-byte aligned), freed
// by the destructor. Move-only. A 0-byte buffer holds no memory (data() == nullptr).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Allocate: Errors: CheckDevice's; resource_exhausted
  // "cuda:0: out of memory allocating N bytes (F bytes free)"; other CUDA errors.
  static Result<DeviceBuffer> Allocate(int device, uint64_t bytes);
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  uint64_t size() const { return size_; }
  int device() const { return device_; }

 private:
  void Reset();
  void* data_ = nullptr;
  uint64_t size_ = 0;
  int device_ = 0;
};

// Stream: a non-blocking stream on one device (cudaStreamCreateWithFlags), destroyed
// by the destructor. Move-only. CUDA streams may be used from several threads.
class Stream {
 public:
  Stream() = default;
  // Create: Errors: CheckDevice's or CUDA's.
  static Result<Stream> Create(int device);
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();

  CUstream_st* get() const { return stream_; }
  int device() const { return device_; }
  // Synchronize: wait for all work on the stream; the first asynchronous error.
  Status Synchronize() const;

 private:
  void Reset();
  CUstream_st* stream_ = nullptr;
  int device_ = 0;
};

// Event: an event on one device, destroyed by the destructor. Move-only.
class Event {
 public:
  Event() = default;
  // Create: `timing` false gives a cudaEventDisableTiming event (cheaper);
  // `blocking_sync` makes Synchronize sleep instead of spin (cudaEventBlockingSync).
  static Result<Event> Create(int device, bool timing, bool blocking_sync);
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  CUevent_st* get() const { return event_; }
  int device() const { return device_; }
  // Record: cudaEventRecord on `stream` (which must be on this event's device).
  Status Record(const Stream& stream) const;
  // Synchronize: wait until the recorded work has completed; its error if it failed.
  Status Synchronize() const;
  // Query: true when complete, false when still running, or the error.
  Result<bool> Query() const;
  // ElapsedMs: milliseconds between two completed timing events.
  static Result<float> ElapsedMs(const Event& start, const Event& stop);

 private:
  void Reset();
  CUevent_st* event_ = nullptr;
  int device_ = 0;
};

// CopyHostToDeviceAsync / CopyDeviceToHostAsync: cudaMemcpyAsync on `stream`
// (the current device is set to the stream's for the call). Errors name the call and
// device.
Status CopyHostToDeviceAsync(void* dst, const void* src, uint64_t bytes, const Stream& stream);
Status CopyDeviceToHostAsync(void* dst, const void* src, uint64_t bytes, const Stream& stream);

// CopyDeviceToHost / CopyHostToDevice / FillDevice: synchronous helpers for tests and
// tools (cudaMemcpy / cudaMemset on `device`).
Status CopyDeviceToHost(int device, void* dst, const void* src, uint64_t bytes);
Status CopyHostToDevice(int device, void* dst, const void* src, uint64_t bytes);
Status FillDevice(int device, void* dst, int byte_value, uint64_t bytes);

// SynchronizeDevice: cudaDeviceSynchronize on `device`.
Status SynchronizeDevice(int device);

}  // namespace shardload::cuda

#endif  // SHARDLOAD_CUDA_RUNTIME_H_
