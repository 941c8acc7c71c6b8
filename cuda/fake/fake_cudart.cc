// The fake CUDA runtime (see cuda/fake/fake_control.h): the runtime calls cuda/ makes,
// and LaunchCastKernel, implemented on the host with the checks and the asynchrony
// that make ordering and lifetime bugs show up as wrong bytes or errors.
//
// Model. One mutex guards all state. Each device owns a PROT_NONE reservation of
// kDeviceBytes (the addresses handed out) and a separate read-write backing of the
// same size (MAP_NORESERVE: pages exist once touched); an allocation at device address
// base + off lives at backing + off. Each stream has a FIFO of operations and one
// worker thread; an operation stays at the head of its queue while it runs, so the
// host memory it reads or writes is known to be in use until it completes. Events
// count how often they were recorded and how many of those records have run.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "cuda/cast_kernels.h"
#include "cuda/cast_math.h"
#include "cuda/fake/fake_control.h"
#include "cuda/sticky_errors.h"

struct CUevent_st {
  int device = 0;
  unsigned flags = 0;
  uint64_t recorded = 0;   // records queued
  uint64_t completed = 0;  // highest record that has run
  cudaError_t error = cudaSuccess;
  std::chrono::steady_clock::time_point when;
};

namespace shardload::cuda::fake {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kAlign = 512;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kGarbageFillLimit = uint64_t{64} << 20;

enum class OpKind { kCopy, kCast, kRecord, kWait };

struct Op {
  OpKind kind = OpKind::kCopy;
  // kCopy: dst/src are host addresses (device ones already translated to backing).
  std::byte* dst = nullptr;
  const std::byte* src = nullptr;
  uint64_t bytes = 0;
  // kCast
  CastKind cast = CastKind::kF32ToF16;
  uint64_t count = 0;
  cudaError_t deferred_error = cudaSuccess;  // a launch that faults when it runs
  // kRecord / kWait
  CUevent_st* event = nullptr;
  uint64_t generation = 0;
  // the host range (pinned memory) the operation reads or writes, for release checks
  const std::byte* host_lo = nullptr;
  uint64_t host_bytes = 0;
  bool fail = false;  // injected asynchronous failure
  cudaError_t fail_error = cudaSuccess;
};

}  // namespace
}  // namespace shardload::cuda::fake

struct CUstream_st {
  int device = 0;
  std::deque<shardload::cuda::fake::Op> queue;
  uint64_t queued = 0;
  uint64_t done = 0;
  cudaError_t error = cudaSuccess;  // sticky after an asynchronous failure
  bool stop = false;
  std::thread worker;
  std::mt19937 rng;
};

namespace shardload::cuda::fake {
namespace {

struct Rule {
  std::string call;
  int remaining = 0;
  cudaError_t error = cudaSuccess;
};

struct Block {
  uint64_t rounded = 0;    // bytes reserved (a multiple of kAlign)
  uint64_t requested = 0;  // bytes asked for: the only ones that may be touched
};

struct FakeDevice {
  std::byte* addresses = nullptr;  // PROT_NONE: what callers see
  std::byte* backing = nullptr;    // read-write: where the bytes are
  std::map<uint64_t, Block> live;  // offset → block
  uint64_t used = 0;
};

struct PinnedRange {
  uint64_t bytes = 0;
  bool host_alloc = false;  // cudaHostAlloc (else cudaHostRegister)
  uint64_t unmapped = 0;    // > 0: a PROT_NONE mapping of this size (munmap, not free)
  uint64_t misaligned = 0;  // > 0: handed out this far into its allocation (free that)
  // portable: allocated or registered with the Portable flag, so pinned for every
  // device; otherwise only for `device`, the one current then (CUDA: "the memory
  // returned by this call will be considered as pinned memory only by the CUDA context
  // that is current when the call is made"), and pageable for copies on other devices.
  bool portable = false;
  int device = 0;
};

struct State {
  std::mutex mu;
  std::condition_variable cv;  // any operation completed
  FakeDevice devices[kDevices];
  std::map<const std::byte*, PinnedRange> pinned;  // start → range
  std::set<CUstream_st*> streams;
  std::set<CUevent_st*> events;
  std::vector<CUevent_st*> destroyed_events;  // destroyed while queued work named them
  std::vector<Rule> call_rules;
  std::vector<Rule> async_rules;
  Counters counters;
  int max_delay_us = 200;
  bool paused = false;  // PauseStreams: workers start nothing new
  bool host_alloc_kernel_inaccessible = false;  // SetHostAllocKernelInaccessible
  bool host_alloc_misaligned = false;           // SetHostAllocMisaligned
  // poisoned[d]: the sticky error an asynchronous fault left on device d (CUDA's
  // context is then unusable: every later call on it fails with that error, and so
  // does queued work on any of its streams), cudaSuccess while healthy. ClearFailures
  // resets it (a new process, for the fake).
  cudaError_t poisoned[kDevices] = {};
  // context[d]: whether a real runtime would have created device d's primary context
  // by now: cudaSetDevice(d) (CUDA >= 12 initializes it), or a call that needs a
  // context made while d was current. ForgetContexts clears it.
  bool context[kDevices] = {};
  uint32_t seed = 1;
};

thread_local int current_device = 0;
thread_local cudaError_t last_error = cudaSuccess;

State& S() {
  static State* state = [] {
    auto* s = new State();  // process lifetime: workers may run during exit
    for (auto& d : s->devices) {
      void* a = mmap(nullptr, kDeviceBytes, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      void* b = mmap(nullptr, kDeviceBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (a == MAP_FAILED || b == MAP_FAILED) std::abort();
      d.addresses = static_cast<std::byte*>(a);
      d.backing = static_cast<std::byte*>(b);
    }
    return s;
  }();
  return *state;
}

cudaError_t Fail(State& s, cudaError_t err) {
  ++s.counters.failed_calls;
  last_error = err;
  return err;
}

// Injected: the error of a pending FailCall rule for `call` (consuming it), or success.
cudaError_t Injected(State& s, std::string_view call) {
  for (auto it = s.call_rules.begin(); it != s.call_rules.end(); ++it) {
    if (it->call != call) continue;
    if (it->remaining-- > 0) continue;
    const cudaError_t err = it->error;
    s.call_rules.erase(it);
    return err;
  }
  return cudaSuccess;
}

// TakeAsyncRule: whether this queued operation of `call` is to fail when it runs.
bool TakeAsyncRule(State& s, std::string_view call, cudaError_t* error) {
  for (auto it = s.async_rules.begin(); it != s.async_rules.end(); ++it) {
    if (it->call != call) continue;
    if (it->remaining-- > 0) continue;
    *error = it->error;
    s.async_rules.erase(it);
    return true;
  }
  return false;
}

bool ValidDevice(int device) { return device >= 0 && device < kDevices; }

// UseContext: a call that needs a context on the current device (see State::context).
void UseContext(State& s) { s.context[current_device] = true; }

// Poisoned: the current device's sticky error (through Fail), or cudaSuccess.
cudaError_t Poisoned(State& s) {
  const cudaError_t p = s.poisoned[current_device];
  return p == cudaSuccess ? p : Fail(s, p);
}

// DeviceOf: the device whose address range holds `p`, or -1 (host memory).
int DeviceOf(const State& s, const void* p) {
  const auto* b = static_cast<const std::byte*>(p);
  for (int d = 0; d < kDevices; ++d) {
    if (b >= s.devices[d].addresses && b < s.devices[d].addresses + kDeviceBytes) return d;
  }
  return -1;
}

// Translate: the backing address of device range [p, p + bytes) on `device`, or null
// when the range is not inside one live allocation.
std::byte* Translate(State& s, int device, const void* p, uint64_t bytes) {
  FakeDevice& d = s.devices[device];
  const uint64_t off = static_cast<uint64_t>(static_cast<const std::byte*>(p) - d.addresses);
  auto it = d.live.upper_bound(off);
  if (it == d.live.begin()) return nullptr;
  --it;
  const uint64_t size = it->second.requested;
  if (off < it->first || off - it->first > size || bytes > size - (off - it->first)) {
    return nullptr;
  }
  return d.backing + off;
}

// PinnedContains: whether host range [p, p + bytes) lies inside one pinned range that
// is pinned for `device` (portable, or allocated with `device` current); any device
// when `device` is -1.
bool PinnedContains(const State& s, const void* p, uint64_t bytes, int device = -1) {
  const auto* b = static_cast<const std::byte*>(p);
  auto it = s.pinned.upper_bound(b);
  if (it == s.pinned.begin()) return false;
  --it;
  return b >= it->first && b - it->first <= static_cast<std::ptrdiff_t>(it->second.bytes) &&
         bytes <= it->second.bytes - static_cast<uint64_t>(b - it->first) &&
         (device < 0 || it->second.portable || it->second.device == device);
}

bool LiveStream(const State& s, CUstream_st* stream) { return s.streams.count(stream) > 0; }
bool LiveEvent(const State& s, CUevent_st* event) { return s.events.count(event) > 0; }

// CastLoop: the kernels' host twin: element i of `op.src` (In, any alignment) converted
// by `convert` into element i of `op.dst` (Out).
template <typename In, typename Out>
void CastLoop(const Op& op, Out (*convert)(In)) {
  for (uint64_t i = 0; i < op.count; ++i) {
    In x;
    std::memcpy(&x, op.src + sizeof(In) * i, sizeof(In));
    const Out y = convert(x);
    std::memcpy(op.dst + sizeof(Out) * i, &y, sizeof(Out));
  }
}

void RunCast(const Op& op) {
  switch (op.cast) {
    case CastKind::kF32ToF16: return CastLoop<uint32_t, uint16_t>(op, F32BitsToF16Bits);
    case CastKind::kF32ToBf16: return CastLoop<uint32_t, uint16_t>(op, F32BitsToBf16Bits);
    case CastKind::kF16ToF32: return CastLoop<uint16_t, uint32_t>(op, F16BitsToF32Bits);
    case CastKind::kBf16ToF32: return CastLoop<uint16_t, uint32_t>(op, Bf16BitsToF32Bits);
    case CastKind::kF16ToBf16: return CastLoop<uint16_t, uint16_t>(op, F16BitsToBf16Bits);
    case CastKind::kBf16ToF16: return CastLoop<uint16_t, uint16_t>(op, Bf16BitsToF16Bits);
  }
}

void Worker(CUstream_st* stream) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  while (true) {
    s.cv.wait(lock, [&] {
      return stream->queue.empty() ? stream->stop : (!s.paused || stream->stop);
    });
    if (stream->queue.empty()) return;  // stopped and drained
    Op& op = stream->queue.front();
    if (op.kind == OpKind::kWait) {
      CUevent_st* e = op.event;
      s.cv.wait(lock, [&] { return e->completed >= op.generation; });
    }
    const int max_delay = s.max_delay_us;
    // A failed stream, or any stream of a poisoned device, runs nothing more.
    const cudaError_t poisoned = s.poisoned[stream->device];
    const bool skip = stream->error != cudaSuccess || poisoned != cudaSuccess;
    lock.unlock();
    if (max_delay > 0 && op.kind != OpKind::kWait) {
      std::uniform_int_distribution<int> delay(0, max_delay);
      std::this_thread::sleep_for(std::chrono::microseconds(delay(stream->rng)));
    }
    cudaError_t failure = cudaSuccess;
    if (op.fail) {
      failure = op.fail_error;
    } else if (op.deferred_error != cudaSuccess) {
      failure = op.deferred_error;
    } else if (!skip) {
      if (op.kind == OpKind::kCopy && op.bytes > 0) {
        std::memcpy(op.dst, op.src, op.bytes);
      } else if (op.kind == OpKind::kCast) {
        RunCast(op);
      }
    }
    if (failure == cudaSuccess && poisoned != cudaSuccess) failure = poisoned;
    lock.lock();
    if (failure != cudaSuccess && stream->error == cudaSuccess) stream->error = failure;
    if (IsStickyCudaError(failure) && s.poisoned[stream->device] == cudaSuccess) {
      s.poisoned[stream->device] = failure;
    }
    if (op.kind == OpKind::kRecord) {
      CUevent_st* e = op.event;
      if (op.generation > e->completed) {
        e->completed = op.generation;
        e->error = stream->error;
        e->when = Clock::now();
      }
    }
    stream->queue.pop_front();
    ++stream->done;
    s.cv.notify_all();
  }
}

// Enqueue: append `op` to `stream` (the lock is held); returns its position.
uint64_t Enqueue(State& s, CUstream_st* stream, Op op) {
  stream->queue.push_back(std::move(op));
  s.cv.notify_all();
  return ++stream->queued;
}

void WaitStreamLocked(State& s, std::unique_lock<std::mutex>& lock, CUstream_st* stream,
                      uint64_t upto) {
  s.cv.wait(lock, [&] { return stream->done >= upto; });
}

// WaitHostRangeLocked: waits until no queued operation reads or writes host memory in
// [p, p + bytes); counts it when there was one.
void WaitHostRangeLocked(State& s, std::unique_lock<std::mutex>& lock, const std::byte* p,
                         uint64_t bytes) {
  bool counted = false;
  while (true) {
    bool pending = false;
    for (CUstream_st* st : s.streams) {
      for (const Op& op : st->queue) {
        if (op.host_bytes > 0 && op.host_lo < p + bytes && p < op.host_lo + op.host_bytes) {
          pending = true;
        }
      }
    }
    if (!pending) return;
    if (!counted) ++s.counters.host_release_with_pending_work;
    counted = true;
    s.cv.wait(lock);
  }
}

// AddPinnedLocked / ReleasePinnedLocked: record a pinned range; forget the one starting
// at `p` once no queued operation uses it any more.
void AddPinnedLocked(State& s, const std::byte* p, uint64_t bytes, bool host_alloc,
                     bool portable, uint64_t unmapped = 0) {
  s.pinned[p] = {bytes, host_alloc, unmapped, 0, portable, current_device};
  s.counters.live_pinned_bytes += bytes;
  s.counters.peak_pinned_bytes = std::max(s.counters.peak_pinned_bytes, s.counters.live_pinned_bytes);
}

void ReleasePinnedLocked(State& s, std::unique_lock<std::mutex>& lock, const std::byte* p) {
  WaitHostRangeLocked(s, lock, p, s.pinned.at(p).bytes);
  auto it = s.pinned.find(p);
  s.counters.live_pinned_bytes -= it->second.bytes;
  s.pinned.erase(it);
}

// WaitDeviceLocked: waits until every stream of `device` has run what was queued. The
// scan restarts after each wait: other threads may create or destroy streams meanwhile.
void WaitDeviceLocked(State& s, std::unique_lock<std::mutex>& lock, int device) {
  while (true) {
    bool busy = false;
    for (CUstream_st* st : s.streams) {
      if (st->device == device && st->done < st->queued) busy = true;
    }
    if (!busy) return;
    s.cv.wait(lock);
  }
}

// kErrors: the codes the fake returns, with the runtime's own names and texts.
struct ErrorInfo {
  cudaError_t code;
  const char* name;
  const char* text;
};
constexpr ErrorInfo kErrors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInitializationError, "cudaErrorInitializationError", "initialization error"},
    {cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver",
     "CUDA driver version is insufficient for CUDA runtime version"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorDevicesUnavailable, "cudaErrorDevicesUnavailable",
     "CUDA-capable device(s) is/are busy or unavailable"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorNotReady, "cudaErrorNotReady", "device not ready"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress",
     "an illegal memory access was encountered"},
    {cudaErrorHostMemoryAlreadyRegistered, "cudaErrorHostMemoryAlreadyRegistered",
     "part or all of the requested memory range is already mapped"},
    {cudaErrorHostMemoryNotRegistered, "cudaErrorHostMemoryNotRegistered",
     "pointer does not correspond to a registered memory region"},
    {cudaErrorMisalignedAddress, "cudaErrorMisalignedAddress", "misaligned address"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure"},
    {cudaErrorInvalidDeviceFunction, "cudaErrorInvalidDeviceFunction", "invalid device function"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported"},
    {cudaErrorUnknown, "cudaErrorUnknown", "unknown error"},
};

const ErrorInfo* FindError(cudaError_t e) {
  for (const ErrorInfo& info : kErrors) {
    if (info.code == e) return &info;
  }
  return nullptr;
}

// CopyArgs: a validated copy: addresses the worker may use directly.
struct CopyArgs {
  std::byte* dst = nullptr;
  const std::byte* src = nullptr;
  bool src_host = false;
  bool dst_host = false;
};

cudaError_t CheckCopy(State& s, void* dst, const void* src, uint64_t bytes, cudaMemcpyKind kind,
                      CopyArgs* out) {
  if (dst == nullptr || src == nullptr) return cudaErrorInvalidValue;
  const int dd = DeviceOf(s, dst);
  const int sd = DeviceOf(s, src);
  if (kind == cudaMemcpyDefault) {
    kind = dd >= 0 ? (sd >= 0 ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                   : (sd >= 0 ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  }
  const bool want_dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool want_src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if ((dd >= 0) != want_dst_device || (sd >= 0) != want_src_device) return cudaErrorInvalidValue;
  out->dst_host = dd < 0;
  out->src_host = sd < 0;
  out->dst = dd >= 0 ? Translate(s, dd, dst, bytes) : static_cast<std::byte*>(dst);
  out->src = sd >= 0 ? Translate(s, sd, src, bytes) : static_cast<const std::byte*>(src);
  if (out->dst == nullptr || out->src == nullptr) return cudaErrorInvalidValue;
  return cudaSuccess;
}

}  // namespace

// ---- controls ----------------------------------------------------------------------

Counters Snapshot() {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  Counters c = s.counters;
  c.live_device_allocations = 0;
  for (int d = 0; d < kDevices; ++d) {
    c.live_device_bytes[d] = s.devices[d].used;
    c.live_device_allocations += s.devices[d].live.size();
  }
  c.live_streams = s.streams.size();
  c.live_events = s.events.size();
  for (int d = 0; d < kDevices; ++d) c.contexts[d] = s.context[d];
  return c;
}

void ForgetContexts() {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  for (bool& c : s.context) c = false;
}

int CurrentDevice() { return current_device; }

void ResetCounters() {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  const uint64_t live_pinned = s.counters.live_pinned_bytes;
  s.counters = Counters();
  s.counters.live_pinned_bytes = live_pinned;
  s.counters.peak_pinned_bytes = live_pinned;
}

void FailCall(std::string_view call, int after, int error) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.call_rules.push_back(Rule{std::string(call), after, static_cast<cudaError_t>(error)});
}

void FailAsync(std::string_view call, int after, int error) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.async_rules.push_back(Rule{std::string(call), after, static_cast<cudaError_t>(error)});
}

void ClearFailures() {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.call_rules.clear();
  s.async_rules.clear();
  for (cudaError_t& p : s.poisoned) p = cudaSuccess;
}

void SetHostAllocKernelInaccessible(bool inaccessible) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.host_alloc_kernel_inaccessible = inaccessible;
}

void SetHostAllocMisaligned(bool misaligned) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.host_alloc_misaligned = misaligned;
}

void PauseStreams(bool paused) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.paused = paused;
  s.cv.notify_all();
}

void SetMaxDelayMicros(int micros) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.max_delay_us = std::max(micros, 0);
}

}  // namespace shardload::cuda::fake

// ---- the cast kernels ----------------------------------------------------------------

namespace shardload::cuda {
namespace fake {
namespace {

// LaunchCast: LaunchCastKernel on the fake: checked like a launch, queued like a kernel.
int LaunchCast(CastKind kind, const void* src, void* dst, uint64_t count, CUstream_st* stream) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  if (count == 0) return cudaSuccess;
  last_error = cudaSuccess;  // as LaunchCastKernel clears it before launching
  if (cudaError_t e = Injected(s, "LaunchCastKernel"); e != cudaSuccess) return Fail(s, e);
  if (cudaError_t p = Poisoned(s); p != cudaSuccess) return p;
  UseContext(s);
  if (src == nullptr || dst == nullptr) return Fail(s, cudaErrorInvalidValue);
  // A launch goes to a stream of the current device, or fails (as with real kernels).
  if (!LiveStream(s, stream) || stream->device != current_device) {
    return Fail(s, cudaErrorInvalidResourceHandle);
  }
  uint64_t in = 4, out = 2;
  switch (kind) {
    case CastKind::kF32ToF16:
    case CastKind::kF32ToBf16:
      break;
    case CastKind::kF16ToF32:
    case CastKind::kBf16ToF32:
      in = 2;
      out = 4;
      break;
    case CastKind::kF16ToBf16:
    case CastKind::kBf16ToF16:
      in = 2;
      break;
    default:
      return Fail(s, cudaErrorInvalidValue);
  }
  if (reinterpret_cast<uintptr_t>(dst) % out != 0) return Fail(s, cudaErrorInvalidValue);
  Op op;
  op.kind = OpKind::kCast;
  op.cast = kind;
  op.count = count;
  // The kernel reads and writes device memory of the stream's device only; anything
  // else faults when it runs, as an out-of-bounds kernel access would.
  if (count > (uint64_t{1} << 40) || DeviceOf(s, src) != stream->device ||
      DeviceOf(s, dst) != stream->device) {
    op.deferred_error = cudaErrorIllegalAddress;
  } else {
    op.src = Translate(s, stream->device, src, count * in);
    op.dst = Translate(s, stream->device, dst, count * out);
    if (op.src == nullptr || op.dst == nullptr) op.deferred_error = cudaErrorIllegalAddress;
  }
  cudaError_t async_error = cudaSuccess;
  if (TakeAsyncRule(s, "LaunchCastKernel", &async_error)) {
    op.fail = true;
    op.fail_error = async_error;
  }
  ++s.counters.kernel_launches;
  Enqueue(s, stream, std::move(op));
  return cudaSuccess;
}

}  // namespace
}  // namespace fake

int LaunchCastKernel(CastKind kind, const void* src, void* dst, uint64_t count,
                     CUstream_st* stream) {
  return fake::LaunchCast(kind, src, dst, count, stream);
}

}  // namespace shardload::cuda

// ---- the runtime API ---------------------------------------------------------------

using shardload::cuda::fake::CheckCopy;
using shardload::cuda::fake::CopyArgs;
using shardload::cuda::fake::current_device;
using shardload::cuda::fake::DeviceOf;
using shardload::cuda::fake::Enqueue;
using shardload::cuda::fake::Fail;
using shardload::cuda::fake::Injected;
using shardload::cuda::fake::kAlign;
using shardload::cuda::fake::kDeviceBytes;
using shardload::cuda::fake::kDevices;
using shardload::cuda::fake::kGarbageFillLimit;
using shardload::cuda::fake::kPage;
using shardload::cuda::fake::last_error;
using shardload::cuda::fake::LiveEvent;
using shardload::cuda::fake::LiveStream;
using shardload::cuda::fake::Poisoned;
using shardload::cuda::fake::Op;
using shardload::cuda::fake::OpKind;
using shardload::cuda::fake::PinnedContains;
using shardload::cuda::fake::S;
using shardload::cuda::fake::State;
using shardload::cuda::fake::TakeAsyncRule;
using shardload::cuda::fake::Translate;
using shardload::cuda::fake::UseContext;
using shardload::cuda::fake::ValidDevice;
using shardload::cuda::fake::WaitDeviceLocked;
using shardload::cuda::fake::WaitStreamLocked;

#define FAKE_INJECT(s, name)                                              \
  do {                                                                    \
    if (cudaError_t injected = Injected(s, name); injected != cudaSuccess) \
      return Fail(s, injected);                                           \
  } while (0)

// FAKE_STICKY: a call on the current device's context fails with the device's sticky
// error once it is poisoned.
#define FAKE_STICKY(s)                                                          \
  do {                                                                          \
    if (cudaError_t p = Poisoned(s); p != cudaSuccess) return p;                \
  } while (0)

extern "C" {

cudaError_t CUDARTAPI cudaGetLastError(void) { return std::exchange(last_error, cudaSuccess); }

cudaError_t CUDARTAPI cudaPeekAtLastError(void) { return last_error; }

const char* CUDARTAPI cudaGetErrorName(cudaError_t error) {
  const auto* info = shardload::cuda::fake::FindError(error);
  return info != nullptr ? info->name : nullptr;
}

const char* CUDARTAPI cudaGetErrorString(cudaError_t error) {
  const auto* info = shardload::cuda::fake::FindError(error);
  return info != nullptr ? info->text : "unrecognized error code";
}

namespace {

// ReportInt: the body of a call that only reports one int: an injected failure of
// `call`, cudaErrorInvalidValue for a NULL `out`, else *out = value.
cudaError_t ReportInt(const char* call, int* out, int value) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, call);
  if (out == nullptr) return Fail(s, cudaErrorInvalidValue);
  *out = value;
  return cudaSuccess;
}

// The two driver calls the runtime hands out (cudaGetDriverEntryPointByVersion): a
// device's handle is its index, and its primary context is active once
// State::context says a real runtime would have made it.
CUresult FakeCuDeviceGet(CUdevice* device, int ordinal) {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

CUresult FakeCuDevicePrimaryCtxGetState(CUdevice device, unsigned int* flags, int* active) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  if (flags == nullptr || active == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (!ValidDevice(device)) return CUDA_ERROR_INVALID_DEVICE;
  *flags = 0;
  *active = s.context[device] ? 1 : 0;
  return CUDA_SUCCESS;
}

}  // namespace

cudaError_t CUDARTAPI cudaGetDriverEntryPointByVersion(const char* symbol, void** func,
                                                       unsigned int cuda_version,
                                                       unsigned long long flags,
                                                       cudaDriverEntryPointQueryResult* status) {
  (void)flags;
  if (symbol == nullptr || func == nullptr) return last_error = cudaErrorInvalidValue;
  if (cuda_version > CUDART_VERSION) return last_error = cudaErrorInvalidValue;
  const std::string_view name(symbol);
  *func = nullptr;
  if (name == "cuDeviceGet") *func = reinterpret_cast<void*>(&FakeCuDeviceGet);
  if (name == "cuDevicePrimaryCtxGetState") {
    *func = reinterpret_cast<void*>(&FakeCuDevicePrimaryCtxGetState);
  }
  if (status != nullptr) {
    *status = *func != nullptr ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  }
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  return ReportInt("cudaGetDeviceCount", count, kDevices);
}

cudaError_t CUDARTAPI cudaDriverGetVersion(int* version) {
  // A driver exactly as new as the runtime.
  return ReportInt("cudaDriverGetVersion", version, CUDART_VERSION);
}

cudaError_t CUDARTAPI cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaGetDeviceProperties");
  if (prop == nullptr) return Fail(s, cudaErrorInvalidValue);
  if (!ValidDevice(device)) return Fail(s, cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "shardload fake CUDA device %d", device);
  prop->totalGlobalMem = kDeviceBytes;
  prop->major = 9;
  prop->minor = 0;
  prop->asyncEngineCount = 2;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceGetPCIBusId(char* bus_id, int len, int device) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  (void)bus_id;
  (void)len;
  if (!ValidDevice(device)) return Fail(s, cudaErrorInvalidDevice);
  return Fail(s, cudaErrorNotSupported);  // no PCI device behind a fake
}

cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  if (device == nullptr) return last_error = cudaErrorInvalidValue;
  *device = current_device;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaSetDevice(int device) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaSetDevice");
  if (!ValidDevice(device)) return Fail(s, cudaErrorInvalidDevice);
  current_device = device;
  UseContext(s);  // CUDA >= 12: cudaSetDevice initializes the device's primary context
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaMemGetInfo");
  FAKE_STICKY(s);
  UseContext(s);
  if (free_bytes == nullptr || total_bytes == nullptr) return Fail(s, cudaErrorInvalidValue);
  *total_bytes = kDeviceBytes;
  *free_bytes = kDeviceBytes - s.devices[current_device].used;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t size) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaMalloc");
  FAKE_STICKY(s);
  UseContext(s);
  if (ptr == nullptr) return Fail(s, cudaErrorInvalidValue);
  if (size == 0) {
    *ptr = nullptr;
    return cudaSuccess;
  }
  auto& d = s.devices[current_device];
  if (size > kDeviceBytes) return Fail(s, cudaErrorMemoryAllocation);
  const uint64_t want = (size + kAlign - 1) / kAlign * kAlign;
  uint64_t at = 0;  // first fit
  bool found = false;
  for (const auto& [off, block] : d.live) {
    if (off - at >= want) {
      found = true;
      break;
    }
    at = off + block.rounded;
  }
  if (!found && kDeviceBytes - at >= want) found = true;
  if (!found) return Fail(s, cudaErrorMemoryAllocation);
  d.live[at] = {want, size};
  d.used += want;
  // Fresh device memory holds garbage, not zeros: callers must not rely on either.
  std::memset(d.backing + at, 0xA5, std::min<uint64_t>(want, kGarbageFillLimit));
  *ptr = d.addresses + at;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaFree(void* ptr) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaFree");
  UseContext(s);  // as the runtime binds the current device's context
  if (ptr == nullptr) return cudaSuccess;
  const int dev = DeviceOf(s, ptr);
  if (dev < 0) return Fail(s, cudaErrorInvalidValue);
  auto& d = s.devices[dev];
  const uint64_t off = static_cast<uint64_t>(static_cast<std::byte*>(ptr) - d.addresses);
  auto it = d.live.find(off);
  if (it == d.live.end()) return Fail(s, cudaErrorInvalidValue);  // not an allocation start
  // cudaFree synchronises: queued work on the device finishes first.
  WaitDeviceLocked(s, lock, dev);
  const uint64_t bytes = it->second.rounded;
  d.used -= bytes;
  d.live.erase(it);
  const uint64_t lo = (off + kPage - 1) / kPage * kPage;
  const uint64_t hi = (off + bytes) / kPage * kPage;
  if (hi > lo) madvise(d.backing + lo, hi - lo, MADV_DONTNEED);
  return Poisoned(s);  // released, but the call reports a poisoned context

}

// CannotPin: the environment's SHARDLOAD_FAKE_CUDA_CANNOT_PIN (fake_control.h), read at
// each call so that a test program may change it between loads.
bool CannotPin() {
  const char* v = std::getenv("SHARDLOAD_FAKE_CUDA_CANNOT_PIN");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

cudaError_t CUDARTAPI cudaHostAlloc(void** ptr, size_t size, unsigned int flags) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  const bool portable = (flags & cudaHostAllocPortable) != 0;
  FAKE_INJECT(s, "cudaHostAlloc");
  FAKE_STICKY(s);
  UseContext(s);
  if (ptr == nullptr || size == 0) return Fail(s, cudaErrorInvalidValue);
  const uint64_t rounded = (size + kPage - 1) / kPage * kPage;
  if (s.host_alloc_kernel_inaccessible || CannotPin()) {
    void* m = ::mmap(nullptr, rounded, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return Fail(s, cudaErrorMemoryAllocation);
    AddPinnedLocked(s, static_cast<std::byte*>(m), size, /*host_alloc=*/true, portable, rounded);
    *ptr = m;
    return cudaSuccess;
  }
  if (s.host_alloc_misaligned) {
    constexpr uint64_t kOffset = 256;
    void* base = std::aligned_alloc(kPage, rounded + kPage);
    if (base == nullptr) return Fail(s, cudaErrorMemoryAllocation);
    std::byte* p = static_cast<std::byte*>(base) + kOffset;
    AddPinnedLocked(s, p, size, /*host_alloc=*/true, portable);
    s.pinned[p].misaligned = kOffset;
    *ptr = p;
    return cudaSuccess;
  }
  void* p = std::aligned_alloc(kPage, rounded);
  if (p == nullptr) return Fail(s, cudaErrorMemoryAllocation);
  AddPinnedLocked(s, static_cast<std::byte*>(p), size, /*host_alloc=*/true, portable);
  *ptr = p;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaFreeHost(void* ptr) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaFreeHost");
  UseContext(s);  // as the runtime binds the current device's context
  if (ptr == nullptr) return cudaSuccess;
  auto it = s.pinned.find(static_cast<std::byte*>(ptr));
  if (it == s.pinned.end() || !it->second.host_alloc) return Fail(s, cudaErrorInvalidValue);
  const uint64_t unmapped = it->second.unmapped;
  const uint64_t misaligned = it->second.misaligned;
  ReleasePinnedLocked(s, lock, it->first);
  if (unmapped > 0) {
    ::munmap(ptr, unmapped);
  } else {
    std::free(static_cast<std::byte*>(ptr) - misaligned);
  }
  return Poisoned(s);  // released, but the call reports a poisoned context

}

cudaError_t CUDARTAPI cudaHostRegister(void* ptr, size_t size, unsigned int flags) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  const bool portable = (flags & cudaHostRegisterPortable) != 0;
  FAKE_INJECT(s, "cudaHostRegister");
  FAKE_STICKY(s);
  UseContext(s);
  if (ptr == nullptr || size == 0 || DeviceOf(s, ptr) >= 0) return Fail(s, cudaErrorInvalidValue);
  if (CannotPin()) return Fail(s, cudaErrorNotSupported);
  const auto* p = static_cast<const std::byte*>(ptr);
  for (const auto& [start, range] : s.pinned) {
    if (start < p + size && p < start + range.bytes) {
      return Fail(s, cudaErrorHostMemoryAlreadyRegistered);
    }
  }
  AddPinnedLocked(s, p, size, /*host_alloc=*/false, portable);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaHostUnregister(void* ptr) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaHostUnregister");
  UseContext(s);  // as the runtime binds the current device's context
  auto it = s.pinned.find(static_cast<std::byte*>(ptr));
  if (it == s.pinned.end() || it->second.host_alloc) {
    return Fail(s, cudaErrorHostMemoryNotRegistered);
  }
  ReleasePinnedLocked(s, lock, it->first);
  return Poisoned(s);  // released, but the call reports a poisoned context

}

cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  (void)flags;
  FAKE_INJECT(s, "cudaStreamCreateWithFlags");
  FAKE_STICKY(s);
  UseContext(s);
  if (stream == nullptr) return Fail(s, cudaErrorInvalidValue);
  auto* st = new CUstream_st();
  st->device = current_device;
  st->rng.seed(s.seed++);
  s.streams.insert(st);
  st->worker = std::thread(shardload::cuda::fake::Worker, st);
  *stream = st;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaStreamDestroy");
  UseContext(s);  // as the runtime binds the current device's context
  if (!LiveStream(s, stream)) return Fail(s, cudaErrorInvalidResourceHandle);
  // Queued work completes before the stream goes away (the real call returns at once;
  // waiting here only changes timing).
  stream->stop = true;
  s.cv.notify_all();
  lock.unlock();
  stream->worker.join();
  lock.lock();
  s.streams.erase(stream);
  delete stream;
  return Poisoned(s);  // released, but the call reports a poisoned context

}

cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t stream) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaStreamSynchronize");
  FAKE_STICKY(s);
  UseContext(s);  // as the runtime binds the current device's context
  if (!LiveStream(s, stream)) return Fail(s, cudaErrorInvalidResourceHandle);
  WaitStreamLocked(s, lock, stream, stream->queued);
  if (stream->error != cudaSuccess) return Fail(s, stream->error);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event,
                                          unsigned int flags) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  (void)flags;
  FAKE_INJECT(s, "cudaStreamWaitEvent");
  FAKE_STICKY(s);
  UseContext(s);
  if (!LiveStream(s, stream) || !LiveEvent(s, event)) {
    return Fail(s, cudaErrorInvalidResourceHandle);
  }
  if (event->recorded == 0) return cudaSuccess;  // never recorded: nothing to wait for
  Op op;
  op.kind = OpKind::kWait;
  op.event = event;
  op.generation = event->recorded;
  Enqueue(s, stream, std::move(op));
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceSynchronize(void) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaDeviceSynchronize");
  FAKE_STICKY(s);
  UseContext(s);
  WaitDeviceLocked(s, lock, current_device);
  for (CUstream_st* st : s.streams) {
    if (st->device == current_device && st->error != cudaSuccess) return Fail(s, st->error);
  }
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaEventCreateWithFlags");
  FAKE_STICKY(s);
  UseContext(s);
  if (event == nullptr) return Fail(s, cudaErrorInvalidValue);
  auto* e = new CUevent_st();
  e->device = current_device;
  e->flags = flags;
  s.events.insert(e);
  *event = e;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaEventDestroy");
  UseContext(s);  // as the runtime binds the current device's context
  if (!LiveEvent(s, event)) return Fail(s, cudaErrorInvalidResourceHandle);
  s.events.erase(event);
  // Freed once no queued record or wait names it (the real call may also return
  // before such work has run).
  s.destroyed_events.push_back(event);
  auto named = [&](CUevent_st* e) {
    for (CUstream_st* st : s.streams) {
      for (const Op& op : st->queue) {
        if (op.event == e) return true;
      }
    }
    return false;
  };
  std::erase_if(s.destroyed_events, [&](CUevent_st* e) {
    if (named(e)) return false;
    delete e;
    return true;
  });
  return Poisoned(s);  // released, but the call reports a poisoned context

}

cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaEventRecord");
  FAKE_STICKY(s);
  UseContext(s);
  if (!LiveEvent(s, event) || !LiveStream(s, stream) || event->device != stream->device) {
    return Fail(s, cudaErrorInvalidResourceHandle);
  }
  Op op;
  op.kind = OpKind::kRecord;
  op.event = event;
  op.generation = ++event->recorded;
  Enqueue(s, stream, std::move(op));
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventQuery(cudaEvent_t event) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaEventQuery");
  FAKE_STICKY(s);
  UseContext(s);  // as the runtime binds the current device's context
  if (!LiveEvent(s, event)) return Fail(s, cudaErrorInvalidResourceHandle);
  if (event->completed < event->recorded) return Fail(s, cudaErrorNotReady);
  if (event->error != cudaSuccess) return Fail(s, event->error);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t event) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaEventSynchronize");
  FAKE_STICKY(s);
  UseContext(s);  // as the runtime binds the current device's context
  if (!LiveEvent(s, event)) return Fail(s, cudaErrorInvalidResourceHandle);
  const uint64_t target = event->recorded;
  s.cv.wait(lock, [&] { return event->completed >= target; });
  if (event->error != cudaSuccess) return Fail(s, event->error);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaEventElapsedTime");
  if (ms == nullptr) return Fail(s, cudaErrorInvalidValue);
  if (!LiveEvent(s, start) || !LiveEvent(s, end) || (start->flags & cudaEventDisableTiming) ||
      (end->flags & cudaEventDisableTiming) || start->recorded == 0 || end->recorded == 0) {
    return Fail(s, cudaErrorInvalidResourceHandle);
  }
  if (start->completed < start->recorded || end->completed < end->recorded) {
    return Fail(s, cudaErrorNotReady);
  }
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, size_t count,
                                      enum cudaMemcpyKind kind, cudaStream_t stream) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaMemcpyAsync");
  FAKE_STICKY(s);
  UseContext(s);
  if (!LiveStream(s, stream)) return Fail(s, cudaErrorInvalidResourceHandle);
  if (count == 0) return cudaSuccess;
  CopyArgs args;
  if (cudaError_t e = CheckCopy(s, dst, src, count, kind, &args); e != cudaSuccess) {
    return Fail(s, e);
  }
  Op op;
  op.kind = OpKind::kCopy;
  op.dst = args.dst;
  op.src = args.src;
  op.bytes = count;
  ++s.counters.async_copies;
  bool pageable_dst = false;
  if (args.src_host && !args.dst_host) {
    if (PinnedContains(s, src, count, stream->device)) {
      op.host_lo = args.src;  // read when the copy runs: must stay untouched until then
      op.host_bytes = count;
    } else {
      // The real driver stages a pageable source into its own pinned memory, at the
      // call or later ("may synchronize with the stream and stage the copy"): the fake
      // takes the later, reading the source when the copy runs, so a caller that
      // reuses it before the copy completed shows wrong bytes.
      ++s.counters.pageable_async_copies;
    }
  } else if (args.dst_host && !args.src_host) {
    if (PinnedContains(s, dst, count, stream->device)) {
      op.host_lo = args.dst;
      op.host_bytes = count;
    } else {
      ++s.counters.pageable_async_copies;
      pageable_dst = true;  // returns only once the bytes are there
    }
  }
  cudaError_t async_error = cudaSuccess;
  if (TakeAsyncRule(s, "cudaMemcpyAsync", &async_error)) {
    op.fail = true;
    op.fail_error = async_error;
  }
  const uint64_t position = Enqueue(s, stream, std::move(op));
  if (pageable_dst) WaitStreamLocked(s, lock, stream, position);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t count,
                                 enum cudaMemcpyKind kind) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaMemcpy");
  FAKE_STICKY(s);
  UseContext(s);
  if (count == 0) return cudaSuccess;
  CopyArgs args;
  if (cudaError_t e = CheckCopy(s, dst, src, count, kind, &args); e != cudaSuccess) {
    return Fail(s, e);
  }
  std::memmove(args.dst, args.src, count);  // the legacy stream: done when it returns
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaPointerGetAttributes(struct cudaPointerAttributes* attributes,
                                               const void* ptr) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaPointerGetAttributes");
  FAKE_STICKY(s);
  UseContext(s);
  if (attributes == nullptr) return Fail(s, cudaErrorInvalidValue);
  *attributes = cudaPointerAttributes{};
  const int dev = DeviceOf(s, ptr);
  if (dev >= 0 && Translate(s, dev, ptr, 1) != nullptr) {
    attributes->type = cudaMemoryTypeDevice;
    attributes->device = dev;
    attributes->devicePointer = const_cast<void*>(ptr);
  } else if (dev < 0 && PinnedContains(s, ptr, 1)) {
    attributes->type = cudaMemoryTypeHost;
    attributes->device = current_device;
    attributes->devicePointer = const_cast<void*>(ptr);
    attributes->hostPointer = const_cast<void*>(ptr);
  } else {
    // CUDA >= 11: memory the runtime does not know (plain host memory, a freed device
    // range) is "unregistered", and the call succeeds.
    attributes->type = cudaMemoryTypeUnregistered;
    attributes->device = -2;
    if (dev < 0) attributes->hostPointer = const_cast<void*>(ptr);
  }
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemset(void* ptr, int value, size_t count) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  FAKE_INJECT(s, "cudaMemset");
  FAKE_STICKY(s);
  UseContext(s);
  if (count == 0) return cudaSuccess;
  const int dev = DeviceOf(s, ptr);
  std::byte* at = dev >= 0 ? Translate(s, dev, ptr, count) : nullptr;
  if (at == nullptr) return Fail(s, cudaErrorInvalidValue);
  std::memset(at, value, count);
  return cudaSuccess;
}

}  // extern "C"
