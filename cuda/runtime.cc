// The CUDA runtime probe and RAII handles (see cuda/runtime.h).
#include "cuda/runtime.h"

#include <cuda.h>  // CUdevice, CUresult: the driver calls PrimaryContextActive makes
#include <cuda_runtime_api.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cuda/status.h"
#include "format/scoped_fd.h"

namespace shardload::cuda {
namespace {

constexpr uint64_t kPage = 4096;

struct ProbeState {
  int count = 0;
  Status status;
  std::vector<DeviceProperties> devices;
};

std::string ReadSysfsLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return {};
  return line;
}

// PcieGeneration: "32.0 GT/s PCIe" → 5; 0 when unknown.
int PcieGeneration(const std::string& speed) {
  if (speed.empty()) return 0;
  char* end = nullptr;
  double gts = std::strtod(speed.c_str(), &end);
  if (end == speed.c_str()) return 0;
  if (gts >= 60) return 6;
  if (gts >= 30) return 5;
  if (gts >= 15) return 4;
  if (gts >= 7.5) return 3;
  if (gts >= 4.5) return 2;
  if (gts >= 2) return 1;
  return 0;
}

int ParseWidth(const std::string& text) {
  if (text.empty()) return 0;
  char* end = nullptr;
  long width = std::strtol(text.c_str(), &end, 10);
  if (end == text.c_str() || width < 0 || width > 64) return 0;
  return static_cast<int>(width);
}

DeviceProperties ProbeOne(int index) {
  DeviceProperties props;
  props.index = index;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) == cudaSuccess) {
    props.name = prop.name;
    props.total_memory = prop.totalGlobalMem;
    props.compute_major = prop.major;
    props.compute_minor = prop.minor;
    props.async_engine_count = prop.asyncEngineCount;
  } else {
    (void)cudaGetLastError();
    props.name = "unknown CUDA device";
  }
  char bus_id[64] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), index) == cudaSuccess) {
    std::string id(bus_id);
    std::transform(id.begin(), id.end(), id.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    props.pci_bus_id = id;
    const std::string dir = "/sys/bus/pci/devices/" + id + "/";
    props.pcie_max_generation = PcieGeneration(ReadSysfsLine(dir + "max_link_speed"));
    props.pcie_max_width = ParseWidth(ReadSysfsLine(dir + "max_link_width"));
    props.pcie_current_generation = PcieGeneration(ReadSysfsLine(dir + "current_link_speed"));
    props.pcie_current_width = ParseWidth(ReadSysfsLine(dir + "current_link_width"));
  } else {
    (void)cudaGetLastError();
  }
  return props;
}

// DriverVersionNote: after cudaErrorInsufficientDriver, which the runtime returns both
// without any NVIDIA driver and with one too old for it, which of the two it is
// (cudaDriverGetVersion reports 0 when no driver is installed).
std::string DriverVersionNote() {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) {
    (void)cudaGetLastError();
    return "";
  }
  auto cuda_version = [](int v) {
    return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
  };
  if (driver == 0) return " (no NVIDIA driver is installed: libcuda.so.1 was not found)";
  std::string note = " (the installed driver supports CUDA " + cuda_version(driver) +
                     "; this build's CUDA " + cuda_version(CUDART_VERSION) +
                     " runtime needs a driver for that version or newer";
  if (CUDART_VERSION / 1000 == 13) note += ": r580 or newer";
  return note + ")";
}

const ProbeState& Probe() {
  static const ProbeState* state = [] {
    auto* s = new ProbeState();  // process lifetime: never destroyed (no teardown order issues)
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      s->count = 0;
      s->status = CudaCallStatus(err, "cudaGetDeviceCount", kNoDevice);
      if (err == cudaErrorInsufficientDriver) {
        s->status = Status(s->status.code(), s->status.message() + DriverVersionNote());
      }
      return s;
    }
    s->count = std::max(count, 0);
    for (int i = 0; i < s->count; ++i) s->devices.push_back(ProbeOne(i));
    return s;
  }();
  return *state;
}

Status NoSuchDevice(int index) {
  const ProbeState& state = Probe();
  std::string message = CudaDeviceLabel(index) + ": no such CUDA device (" +
                        std::to_string(state.count) +
                        (state.count == 1 ? " device" : " devices");
  if (!state.status.ok()) message += ": " + state.status.message();
  message += ")";
  return InvalidArgumentError(std::move(message));
}

uint64_t RoundUpToPage(uint64_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

}  // namespace

int DeviceCount() { return Probe().count; }

Status ProbeStatus() { return Probe().status; }

Result<DeviceProperties> GetDeviceProperties(int index) {
  const ProbeState& state = Probe();
  if (index < 0 || index >= state.count) return NoSuchDevice(index);
  return state.devices[index];
}

Status CheckDevice(int index) {
  if (index < 0 || index >= DeviceCount()) return NoSuchDevice(index);
  return OkStatus();
}

std::string DescribeDeviceProperties(const DeviceProperties& props) {
  char gib[32];
  std::snprintf(gib, sizeof(gib), "%.1f GiB",
                static_cast<double>(props.total_memory) / (1024.0 * 1024.0 * 1024.0));
  std::string text = props.name + " (" + CudaDeviceLabel(props.index) + ", " + gib;
  if (props.pcie_max_generation > 0) {
    text += ", PCIe Gen" + std::to_string(props.pcie_max_generation);
    if (props.pcie_max_width > 0) text += " x" + std::to_string(props.pcie_max_width);
    if (props.pcie_current_generation > 0 &&
        (props.pcie_current_generation != props.pcie_max_generation ||
         props.pcie_current_width != props.pcie_max_width)) {
      text += ", now Gen" + std::to_string(props.pcie_current_generation) + " x" +
              std::to_string(props.pcie_current_width);
    }
  }
  return text + ")";
}

Result<MemoryInfo> GetMemoryInfo(int device) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaCallStatus(err, "cudaMemGetInfo", device);
  }
  return MemoryInfo{free_bytes, total_bytes};
}

// ---- ScopedDevice ----------------------------------------------------------------

Result<ScopedDevice> ScopedDevice::Enter(int device) {
  SL_RETURN_IF_ERROR(CheckDevice(device));
  int previous = 0;
  cudaError_t err = cudaGetDevice(&previous);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaCallStatus(err, "cudaGetDevice", device);
  }
  if (previous == device) return ScopedDevice(previous, false);
  err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaCallStatus(err, "cudaSetDevice", device);
  }
  return ScopedDevice(previous, true);
}

ScopedDevice::ScopedDevice(ScopedDevice&& other) noexcept
    : previous_(other.previous_), restore_(std::exchange(other.restore_, false)) {}

namespace {

// PrimaryContextQuery: the driver's cuDeviceGet and cuDevicePrimaryCtxGetState, looked
// up once through the runtime (both null where it cannot give them).
struct PrimaryContextQuery {
  CUresult (*get)(CUdevice*, int) = nullptr;
  CUresult (*state)(CUdevice, unsigned int*, int*) = nullptr;
};

const PrimaryContextQuery& DriverQuery() {
  static const PrimaryContextQuery query = [] {
    PrimaryContextQuery q;
    void* get = nullptr;
    void* state = nullptr;
    cudaDriverEntryPointQueryResult found_get = cudaDriverEntryPointSymbolNotFound;
    cudaDriverEntryPointQueryResult found_state = cudaDriverEntryPointSymbolNotFound;
    // 12000: the ABI of CUDA 12, which both symbols have had since CUDA 2-7.
    if (cudaGetDriverEntryPointByVersion("cuDeviceGet", &get, 12000, cudaEnableDefault,
                                         &found_get) == cudaSuccess &&
        cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &state, 12000,
                                         cudaEnableDefault, &found_state) == cudaSuccess &&
        found_get == cudaDriverEntryPointSuccess && found_state == cudaDriverEntryPointSuccess &&
        get != nullptr && state != nullptr) {
      q.get = reinterpret_cast<CUresult (*)(CUdevice*, int)>(get);
      q.state = reinterpret_cast<CUresult (*)(CUdevice, unsigned int*, int*)>(state);
    }
    (void)cudaGetLastError();
    return q;
  }();
  return query;
}

// PrimaryContextActive: whether `device`'s primary context exists (so making it
// current creates nothing); true when the driver cannot say.
bool PrimaryContextActive(int device) {
  const PrimaryContextQuery& q = DriverQuery();
  if (q.get == nullptr) return true;
  CUdevice handle = 0;
  unsigned int flags = 0;
  int active = 0;
  if (q.get(&handle, device) != CUDA_SUCCESS || q.state(handle, &flags, &active) != CUDA_SUCCESS) {
    return true;
  }
  return active != 0;
}

}  // namespace

ScopedDevice::~ScopedDevice() {
  if (!restore_ || !PrimaryContextActive(previous_)) return;
  if (cudaSetDevice(previous_) != cudaSuccess) (void)cudaGetLastError();
}

Status MakeDeviceCurrent(int device) {
  SL_RETURN_IF_ERROR(CheckDevice(device));
  int current = -1;
  cudaError_t err = cudaGetDevice(&current);
  if (err == cudaSuccess && current == device) return OkStatus();
  if (err == cudaSuccess) err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaCallStatus(err, current == -1 ? "cudaGetDevice" : "cudaSetDevice", device);
  }
  return OkStatus();
}

Status CheckDeviceMemory(int device, const void* ptr, uint64_t bytes) {
  if (bytes == 0) return OkStatus();
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  const auto* first = static_cast<const std::byte*>(ptr);
  for (const std::byte* p : {first, first + (bytes - 1)}) {
    cudaPointerAttributes attr{};
    cudaError_t err = cudaPointerGetAttributes(&attr, p);
    if (err != cudaSuccess) {
      // Older drivers answer invalid_value for memory they do not know: accept it, as
      // for cudaMemoryTypeUnregistered.
      (void)cudaGetLastError();
      if (err == cudaErrorInvalidValue) continue;
      return CudaCallStatus(err, "cudaPointerGetAttributes", device);
    }
    std::string what;
    if (attr.type == cudaMemoryTypeHost) {
      what = "pinned host";
    } else if (attr.type == cudaMemoryTypeDevice && attr.device != device) {
      what = "cuda:" + std::to_string(attr.device);
    } else {
      continue;  // device memory of `device`, managed, or unknown to CUDA
    }
    char at[32];
    std::snprintf(at, sizeof at, "%p", static_cast<const void*>(p));
    return InvalidArgumentError(std::string("memory at ") + at + " is " + what +
                                " memory, not memory of cuda:" + std::to_string(device));
  }
  return OkStatus();
}

// ---- PinnedBuffer ----------------------------------------------------------------

const char* PinnedModeName(PinnedMode mode) {
  return mode == PinnedMode::kHostAlloc ? "host_alloc" : "host_register";
}

namespace {

// KernelCanWriteInto: false when a read into `p` fails with EFAULT: the memory is
// usable from user space but not by the kernel (cudaHostAlloc memory under some gVisor
// versions), so file reads into it would fail. One byte read from a file (this
// program's own executable), else through a pipe; true when the probe itself cannot
// run (then the loads' reads will say what is wrong).
bool KernelCanWriteInto(void* p) {
  // read_one: one byte from `fd` into p: 1, 0 at its end, or -errno.
  auto read_one = [p](const ScopedFd& fd) -> ssize_t {
    ssize_t r;
    do {
      r = ::read(fd.get(), p, 1);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
  };
  ScopedFd exe(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  if (exe.valid()) {
    const ssize_t r = read_one(exe);
    if (r == 1) return true;
    if (r == -EFAULT) return false;
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return true;
  ScopedFd out(fds[0]);
  ScopedFd in(fds[1]);
  const char byte = 0;
  if (::write(in.get(), &byte, 1) != 1) return true;
  return read_one(out) != -EFAULT;
}

}  // namespace

Result<PinnedBuffer> PinnedBuffer::Allocate(uint64_t bytes, PinnedMode mode, int device) {
  if (bytes == 0) return InvalidArgumentError("pinned buffer of 0 bytes requested");
  if (bytes > (uint64_t{1} << 46)) {
    return InvalidArgumentError("pinned buffer of " + std::to_string(bytes) +
                                " bytes requested (more than 64 TiB)");
  }
  std::optional<ScopedDevice> scope;
  if (device != kNoDevice) {
    SL_ASSIGN_OR_RETURN(ScopedDevice entered, ScopedDevice::Enter(device));
    scope.emplace(std::move(entered));
  }
  const std::string what =
      " (allocating " + std::to_string(bytes) + " bytes of pinned memory)";
  PinnedBuffer buffer;
  buffer.mode_ = mode;
  buffer.device_ = device;
  if (mode == PinnedMode::kHostAlloc) {
    void* p = nullptr;
    cudaError_t err = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      Status s = CudaCallStatus(err, "cudaHostAlloc", kNoDevice);
      // "Not supported": this platform cannot pin memory at all.
      return Status(err == cudaErrorNotSupported ? StatusCode::kUnimplemented : s.code(),
                    s.message() + what);
    }
    buffer.data_ = p;
    buffer.size_ = bytes;
    // The header promises page alignment (O_DIRECT windows are read into the slots);
    // cudaHostAlloc gives it in practice but does not document it.
    if (reinterpret_cast<uintptr_t>(p) % kPage == 0 && KernelCanWriteInto(p)) return buffer;
    buffer.Reset();  // misaligned, or reads into it would fail with EFAULT: register
    buffer.mode_ = mode = PinnedMode::kHostRegister;
  }
  const uint64_t rounded = RoundUpToPage(bytes);
  void* p = std::aligned_alloc(kPage, rounded);
  if (p == nullptr) {
    return ResourceExhaustedError("aligned_alloc: out of memory" + what);
  }
  cudaError_t err = cudaHostRegister(p, rounded, cudaHostRegisterPortable);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    std::free(p);
    Status s = CudaCallStatus(err, "cudaHostRegister", kNoDevice);
    // These arguments are valid (page-aligned heap memory, portable flag), so "not
    // supported" or "invalid value" is the platform refusing to pin it (a sandbox, a
    // kernel without support), not a passing shortage.
    const bool cannot_pin = err == cudaErrorNotSupported || err == cudaErrorInvalidValue;
    return Status(cannot_pin ? StatusCode::kUnimplemented : s.code(), s.message() + what);
  }
  buffer.data_ = p;
  buffer.size_ = bytes;
  return buffer;
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mode_(other.mode_),
      device_(other.device_) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mode_ = other.mode_;
    device_ = other.device_;
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() { Reset(); }

void PinnedBuffer::Reset() {
  if (data_ == nullptr) return;
  // Freed with the allocating device current, when there was one (a failure to switch
  // still frees: the free itself then reports what is wrong).
  std::optional<Result<ScopedDevice>> scope;
  if (device_ != kNoDevice) scope.emplace(ScopedDevice::Enter(device_));
  if (mode_ == PinnedMode::kHostAlloc) {
    if (cudaFreeHost(data_) != cudaSuccess) (void)cudaGetLastError();
  } else if (cudaHostUnregister(data_) != cudaSuccess) {
    // Still registered as far as the driver knows (e.g. after a sticky error): giving
    // the range back to the heap could hand registered memory to a later
    // cudaHostRegister, which then fails. Leaked instead.
    (void)cudaGetLastError();
  } else {
    std::free(data_);
  }
  data_ = nullptr;
  size_ = 0;
}

// ---- DeviceBuffer ----------------------------------------------------------------

Result<DeviceBuffer> DeviceBuffer::Allocate(int device, uint64_t bytes) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  DeviceBuffer buffer;
  buffer.device_ = device;
  if (bytes == 0) return buffer;
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // allocation failures are not sticky; clear them
    if (err == cudaErrorMemoryAllocation) {
      size_t free_bytes = 0;
      size_t total_bytes = 0;
      std::string free_text = "free memory unknown";
      if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
        free_text = std::to_string(free_bytes) + " bytes free of " +
                    std::to_string(total_bytes);
      } else {
        (void)cudaGetLastError();
      }
      return ResourceExhaustedError(CudaDeviceLabel(device) + ": out of memory allocating " +
                                    std::to_string(bytes) + " bytes (" + free_text + ")");
    }
    return CudaCallStatus(err, "cudaMalloc", device);
  }
  buffer.data_ = p;
  buffer.size_ = bytes;
  return buffer;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      device_(other.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    device_ = other.device_;
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { Reset(); }

void DeviceBuffer::Reset() {
  if (data_ == nullptr) return;
  Result<ScopedDevice> scope = ScopedDevice::Enter(device_);
  if (cudaFree(data_) != cudaSuccess) (void)cudaGetLastError();
  data_ = nullptr;
  size_ = 0;
}

// ---- Stream ----------------------------------------------------------------------

Result<Stream> Stream::Create(int device) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  cudaStream_t s = nullptr;
  cudaError_t err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaCallStatus(err, "cudaStreamCreateWithFlags", device);
  }
  Stream stream;
  stream.stream_ = s;
  stream.device_ = device;
  return stream;
}

Stream::Stream(Stream&& other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)), device_(other.device_) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    Reset();
    stream_ = std::exchange(other.stream_, nullptr);
    device_ = other.device_;
  }
  return *this;
}

Stream::~Stream() { Reset(); }

void Stream::Reset() {
  if (stream_ == nullptr) return;
  Result<ScopedDevice> scope = ScopedDevice::Enter(device_);
  // cudaStreamDestroy returns at once; work still queued completes before the
  // stream's resources are released.
  if (cudaStreamDestroy(stream_) != cudaSuccess) (void)cudaGetLastError();
  stream_ = nullptr;
}

Status Stream::Synchronize() const {
  cudaError_t err = cudaStreamSynchronize(stream_);
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaStreamSynchronize", device_);
}

// ---- Event -----------------------------------------------------------------------

Result<Event> Event::Create(int device, bool timing, bool blocking_sync) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  unsigned flags = cudaEventDefault;
  if (!timing) flags |= cudaEventDisableTiming;
  if (blocking_sync) flags |= cudaEventBlockingSync;
  cudaEvent_t e = nullptr;
  cudaError_t err = cudaEventCreateWithFlags(&e, flags);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaCallStatus(err, "cudaEventCreateWithFlags", device);
  }
  Event event;
  event.event_ = e;
  event.device_ = device;
  return event;
}

Event::Event(Event&& other) noexcept
    : event_(std::exchange(other.event_, nullptr)), device_(other.device_) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    Reset();
    event_ = std::exchange(other.event_, nullptr);
    device_ = other.device_;
  }
  return *this;
}

Event::~Event() { Reset(); }

void Event::Reset() {
  if (event_ == nullptr) return;
  Result<ScopedDevice> scope = ScopedDevice::Enter(device_);
  if (cudaEventDestroy(event_) != cudaSuccess) (void)cudaGetLastError();
  event_ = nullptr;
}

Status Event::Record(const Stream& stream) const {
  if (stream.device() != device_) {
    return InvalidArgumentError("cudaEventRecord: event of " + CudaDeviceLabel(device_) +
                                " recorded on a stream of " + CudaDeviceLabel(stream.device()));
  }
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device_));
  cudaError_t err = cudaEventRecord(event_, stream.get());
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaEventRecord", device_);
}

Status Event::Synchronize() const {
  cudaError_t err = cudaEventSynchronize(event_);
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaEventSynchronize", device_);
}

Result<bool> Event::Query() const {
  cudaError_t err = cudaEventQuery(event_);
  if (err == cudaSuccess) return true;
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaEventQuery", device_);
}

Result<float> Event::ElapsedMs(const Event& start, const Event& stop) {
  float ms = 0;
  cudaError_t err = cudaEventElapsedTime(&ms, start.event_, stop.event_);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaCallStatus(err, "cudaEventElapsedTime", stop.device_);
  }
  return ms;
}

// ---- copies ----------------------------------------------------------------------

Status CopyHostToDeviceAsync(void* dst, const void* src, uint64_t bytes, const Stream& stream) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(stream.device()));
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream.get());
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaMemcpyAsync", stream.device());
}

Status CopyDeviceToHostAsync(void* dst, const void* src, uint64_t bytes, const Stream& stream) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(stream.device()));
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream.get());
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaMemcpyAsync", stream.device());
}

Status CopyDeviceToHost(int device, void* dst, const void* src, uint64_t bytes) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaMemcpy", device);
}

Status CopyHostToDevice(int device, void* dst, const void* src, uint64_t bytes) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  const char* call = "cudaMemcpy";
  // From pageable memory cudaMemcpy may return before the last bytes reach the device;
  // work on other (non-blocking) streams, such as a test's kernel, would not wait.
  if (err == cudaSuccess) {
    err = cudaDeviceSynchronize();
    call = "cudaDeviceSynchronize";
  }
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, call, device);
}

Status FillDevice(int device, void* dst, int byte_value, uint64_t bytes) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  cudaError_t err = cudaMemset(dst, byte_value, bytes);
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaMemset", device);
}

Status SynchronizeDevice(int device) {
  SL_ASSIGN_OR_RETURN(ScopedDevice scope, ScopedDevice::Enter(device));
  cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) (void)cudaGetLastError();
  return CudaCallStatus(err, "cudaDeviceSynchronize", device);
}

}  // namespace shardload::cuda
