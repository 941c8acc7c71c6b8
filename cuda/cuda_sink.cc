// CudaSink: pinned staging ring + asynchronous copies (see cuda/cuda_sink.h).
#include "cuda/cuda_sink.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cast.h"
#include "cuda/status.h"
#include "format/text.h"
#include "loader/cast.h"

namespace shardload::cuda {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kSlotPadding = kSlotMarginBytes;  // room for O_DIRECT windows
constexpr uint64_t kMinSlotBytes = 4096;
constexpr uint64_t kMaxSlotBytes = uint64_t{1} << 30;
constexpr int kMaxSlots = 64;
constexpr int kMaxStreams = 16;

// next_load_id: the number the next Begin gives its load (CudaSink::Impl::load_id), from
// 1; shared by every sink so that a thread never mistakes one sink's load for another's.
std::atomic<uint64_t> next_load_id{1};

std::string DeviceText(const Device& device) {
  return device.is_cpu() ? std::string("cpu") : CudaDeviceLabel(device.index);
}

std::string TensorText(const Destination& d) {
  return "tensor " + QuoteNameForMessage(d.name) + " (" + DeviceText(d.device) + ")";
}

uint64_t ElementBytes(Dtype dtype) { return static_cast<uint64_t>(DtypeBits(dtype)) / 8; }

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};

}  // namespace

// StagingRing: the staging memory, slot i at base() + i * stride.
struct StagingRing {
  bool pinned = false;
  PinnedBuffer pinned_memory;
  PinnedMode requested_mode = PinnedMode::kHostAlloc;  // pinned_memory.mode() may differ
  std::unique_ptr<std::byte, FreeDeleter> host_memory;
  // pinning_refused: for a ring made for CUDA copies whose pinned memory could not be
  // had (pinned is then false and host_memory holds the slots), why; OK otherwise.
  Status pinning_refused;
  int slot_count = 0;
  uint64_t slot_bytes = 0;  // span bytes a slot takes (rounded up to 4096)
  uint64_t stride = 0;      // slot_bytes + kSlotPadding

  std::byte* base() const {
    return pinned ? static_cast<std::byte*>(pinned_memory.data()) : host_memory.get();
  }
  uint64_t total_bytes() const { return stride * static_cast<uint64_t>(slot_count); }
  // Fits: whether a load with this geometry may use the ring as it is. A load with CUDA
  // destinations needs pinned memory of the requested mode, or, with the pageable
  // fallback on (`pageable_fallback`), a pageable ring whose pinning the platform
  // refused outright (unimplemented: asking again would be refused again).
  bool Fits(int count, uint64_t bytes, bool need_pinned, PinnedMode mode,
            bool pageable_fallback) const {
    if (slot_count != count || slot_bytes < bytes) return false;
    if (!need_pinned) return true;
    if (requested_mode != mode) return false;
    return pinned ||
           (pageable_fallback && pinning_refused.code() == StatusCode::kUnimplemented);
  }
};

namespace {

// IsPinningRefusal: whether a PinnedBuffer::Allocate error means pinned memory cannot be
// had (resource_exhausted: not now; unimplemented: not on this platform), rather than
// that CUDA is unusable.
bool IsPinningRefusal(const Status& s) {
  return s.code() == StatusCode::kResourceExhausted || s.code() == StatusCode::kUnimplemented;
}

// AllocateRing: `pinned` memory is allocated (and freed) with `device` current, the
// load's first CUDA device, so that it binds no context on the calling thread's device.
// Errors: PinnedBuffer::Allocate's (resource_exhausted or unimplemented when pinned
// memory is refused), resource_exhausted when plain memory cannot be had.
Result<std::unique_ptr<StagingRing>> AllocateRing(int count, uint64_t slot_bytes, bool pinned,
                                                  PinnedMode mode, int device) {
  auto ring = std::make_unique<StagingRing>();
  ring->slot_count = count;
  ring->slot_bytes = (slot_bytes + kPage - 1) / kPage * kPage;
  ring->stride = ring->slot_bytes + kSlotPadding;
  ring->requested_mode = mode;
  const uint64_t total = ring->total_bytes();  // ≤ 64 × (1 GiB + 8 KiB): no overflow
  ring->pinned = pinned;
  if (pinned) {
    SL_ASSIGN_OR_RETURN(ring->pinned_memory, PinnedBuffer::Allocate(total, mode, device));
  } else {
    auto* p = static_cast<std::byte*>(std::aligned_alloc(kPage, total));
    if (p == nullptr) {
      return ResourceExhaustedError("cuda sink: out of host memory allocating a staging ring of " +
                                    std::to_string(total) + " bytes");
    }
    ring->host_memory.reset(p);
  }
  return ring;
}

}  // namespace

// ---- StagingPool -------------------------------------------------------------------

struct StagingPool::State {
  mutable std::mutex mu;
  std::unique_ptr<StagingRing> ring;
};

StagingPool::StagingPool() : state_(std::make_unique<State>()) {}
StagingPool::~StagingPool() = default;

uint64_t StagingPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->ring ? state_->ring->total_bytes() : 0;
}

bool StagingPool::cached_is_pinned() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->ring && state_->ring->pinned;
}

uint64_t StagingPool::Clear() {
  std::unique_ptr<StagingRing> dropped;  // freed after the lock (cudaFreeHost is slow)
  std::lock_guard<std::mutex> lock(state_->mu);
  dropped = std::move(state_->ring);
  return dropped ? dropped->total_bytes() : 0;
}

// ---- options -----------------------------------------------------------------------

Status ValidateCudaSinkOptions(const CudaSinkOptions& options) {
  if (options.ring.slot_count < 1 || options.ring.slot_count > kMaxSlots) {
    return InvalidArgumentError("sink slot_count " + std::to_string(options.ring.slot_count) +
                                " is out of range 1..64");
  }
  if (options.ring.slot_bytes < kMinSlotBytes || options.ring.slot_bytes > kMaxSlotBytes ||
      options.ring.slot_bytes % kPage != 0) {
    return InvalidArgumentError("sink slot_bytes " + std::to_string(options.ring.slot_bytes) +
                                " must be a multiple of 4096 in 4096..1073741824");
  }
  if (options.streams_per_device < 1 || options.streams_per_device > kMaxStreams) {
    return InvalidArgumentError("cuda sink streams_per_device " +
                                std::to_string(options.streams_per_device) +
                                " is out of range 1..16");
  }
  if (options.pinned_mode != PinnedMode::kHostAlloc &&
      options.pinned_mode != PinnedMode::kHostRegister) {
    return InvalidArgumentError("cuda sink pinned_mode is not a known PinnedMode");
  }
  return OkStatus();
}

// ---- CudaSink::Impl ----------------------------------------------------------------

namespace {

// DeviceState: what one device needs for a load. Created in Begin; read-only (except
// the atomic stream counter) while readers commit.
struct DeviceState {
  int device = 0;
  std::vector<Stream> streams;
  std::vector<Event> events;          // one per slot
  std::vector<DeviceBuffer> scratch;  // one per slot when casts land here, else empty
  uint64_t scratch_each = 0;
  std::atomic<uint32_t> next_stream{0};
  bool used_in_load = false;
};

enum class SlotState { kFree, kLent, kInFlight, kReclaiming };

struct Slot {
  SlotState state = SlotState::kFree;
  uint64_t seq = 0;               // commit order, for reclaiming the oldest first
  std::vector<int> devices;       // devices whose event was recorded by the last commit
  uint32_t first_dest = 0;        // for messages about asynchronous failures
  uint32_t device_regions = 0;
};

// PlannedRegion: one validated region of a commit.
struct PlannedRegion {
  const CopyRegion* region = nullptr;
  const Destination* dest = nullptr;
  std::byte* dst = nullptr;  // destination address of the first byte/element
  bool cast = false;
  uint64_t count = 0;        // elements, for casts
};

}  // namespace

struct CudaSink::Impl {
  CudaSinkOptions options;
  std::shared_ptr<StagingPool> pool;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::unique_ptr<StagingRing> ring;
  int ring_allocations = 0;
  std::vector<Slot> slots;
  std::vector<std::unique_ptr<DeviceState>> devices;  // index: device id
  std::vector<Destination> destinations;
  bool begun = false;
  bool aborted = false;
  Status first_error;
  uint64_t seq = 0;
  uint64_t load_slot_bytes = 0;
  // home_device: the first device this load copies to (-1: none). A reader makes it
  // current before its first CUDA call of the load (AcquireSlot's event queries): on a
  // fresh thread device 0 is current, and the runtime would bind device 0's context.
  // Later slots need nothing: Deliver leaves another device of the same load current.
  int home_device = -1;
  // load_id: this load's number among all sinks' loads (next_load_id), so that a reader
  // thread sets home_device once per load, not once per slot.
  uint64_t load_id = 0;
  // load_warnings: Warnings() of the load Begin last prepared.
  std::vector<std::string> load_warnings;

  ~Impl();

  void RecordErrorLocked(const Status& s) {
    if (!s.ok() && first_error.ok()) first_error = s;
  }

  std::string SlotWhat(const Slot& slot) const {
    if (slot.first_dest >= destinations.size()) return "staging slot";
    std::string text = "tensor " + QuoteNameForMessage(destinations[slot.first_dest].name);
    if (slot.device_regions > 1) {
      text += " and " + std::to_string(slot.device_regions - 1) + " more region" +
              (slot.device_regions > 2 ? "s" : "");
    }
    return text;
  }

  // WaitSlot: waits for every event the slot's last commit recorded. Called without
  // the lock by the thread that marked the slot kReclaiming. Returns the first error.
  Status WaitSlot(int id) {
    Slot& slot = slots[id];
    Status first;
    for (int d : slot.devices) {
      Status s = devices[d]->events[id].Synchronize();
      if (!s.ok() && first.ok()) {
        // An asynchronous error surfaces at the first wait after it: the fault may lie
        // in an earlier copy or kernel on that device than this slot's.
        first = Status(s.code(), "copies to " + CudaDeviceLabel(d) + " failed, first seen at " +
                                     SlotWhat(slot) + ": " + s.message());
      }
    }
    slot.devices.clear();
    return first;
  }

  // SlotCompleted: true when every event of the slot's last commit has completed
  // successfully (an error or "not ready" is false: the blocking path reports errors).
  bool SlotCompleted(int id) const {
    for (int d : slots[id].devices) {
      Result<bool> done = devices[d]->events[id].Query();
      if (!done.ok() || !*done) return false;
    }
    return true;
  }

  // DrainLocked: waits (releasing the lock meanwhile) until no slot is in flight or
  // being reclaimed, then synchronises every stream of the load. Returns the first
  // error met.
  Status DrainLocked(std::unique_lock<std::mutex>& lock) {
    Status first;
    while (true) {
      bool reclaiming = false;
      std::vector<int> in_flight;
      for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
        if (slots[i].state == SlotState::kReclaiming) reclaiming = true;
        if (slots[i].state == SlotState::kInFlight) {
          slots[i].state = SlotState::kReclaiming;
          in_flight.push_back(i);
        }
      }
      if (in_flight.empty()) {
        if (!reclaiming) break;
        WaitNotified(cv, lock);
        continue;
      }
      lock.unlock();
      std::vector<Status> results;
      for (int id : in_flight) results.push_back(WaitSlot(id));
      lock.lock();
      for (size_t k = 0; k < in_flight.size(); ++k) {
        slots[in_flight[k]].state = SlotState::kFree;
        if (!results[k].ok() && first.ok()) first = results[k];
      }
      cv.notify_all();
    }
    lock.unlock();
    for (auto& ds : devices) {
      if (!ds || !ds->used_in_load) continue;
      for (const Stream& s : ds->streams) {
        Status st = s.Synchronize();
        if (!st.ok() && first.ok()) first = st;
      }
    }
    lock.lock();
    return first;
  }

  StagingSlot MakeSlot(int id) const {
    StagingSlot s;
    s.id = id;
    s.memory = std::span<std::byte>(ring->base() + static_cast<uint64_t>(id) * ring->stride,
                                    ring->stride);
    return s;
  }

  Status ValidateDestinations(std::span<const Destination> dests, std::vector<bool>* cuda_used,
                              std::vector<bool>* cuda_cast) const;
  // CheckDestinationMemory: CheckDeviceMemory over runs of nearby device destinations.
  Status CheckDestinationMemory(std::span<const Destination> dests) const;
  Status PlanRegions(const ReadSpan& span, std::span<const std::byte> bytes,
                     std::vector<PlannedRegion>* planned) const;
  Status Deliver(int id, const ReadSpan& span, std::span<const std::byte> bytes);
};

CudaSink::Impl::~Impl() = default;

Status CudaSink::Impl::ValidateDestinations(std::span<const Destination> dests,
                                            std::vector<bool>* cuda_used,
                                            std::vector<bool>* cuda_cast) const {
  int count = -1;  // probed lazily: host-only loads make no CUDA call at all
  for (const Destination& d : dests) {
    if (d.device.is_cuda()) {
      if (count < 0) count = DeviceCount();
      Status s = CheckDevice(d.device.index);
      if (!s.ok()) return Status(s.code(), "tensor " + QuoteNameForMessage(d.name) + ": " + s.message());
      if (cuda_used->size() < static_cast<size_t>(count)) cuda_used->resize(count, false);
      if (cuda_cast->size() < static_cast<size_t>(count)) cuda_cast->resize(count, false);
      (*cuda_used)[d.device.index] = true;
    }
    if (d.bytes > 0 && d.ptr == nullptr) {
      return InvalidArgumentError(TensorText(d) + ": destination pointer is null for " +
                                  std::to_string(d.bytes) + " bytes");
    }
    if (d.src_dtype != d.dst_dtype) {
      if (!CanConvert(d.src_dtype, d.dst_dtype)) {
        return InvalidArgumentError(TensorText(d) + ": cannot convert " +
                                    std::string(DtypeName(d.src_dtype)) + " to " +
                                    std::string(DtypeName(d.dst_dtype)) +
                                    " (only F32, F16 and BF16 convert among each other)");
      }
      const uint64_t de = ElementBytes(d.dst_dtype);
      if (d.bytes % de != 0) {
        return InvalidArgumentError(TensorText(d) + ": " + std::to_string(d.bytes) +
                                    " bytes is not a whole number of " +
                                    std::string(DtypeName(d.dst_dtype)) + " elements");
      }
      if (d.device.is_cuda()) {
        if (reinterpret_cast<uintptr_t>(d.ptr) % de != 0) {
          return InvalidArgumentError(TensorText(d) + ": destination is not aligned to " +
                                      std::to_string(de) + " bytes, as a cast requires");
        }
        (*cuda_cast)[d.device.index] = true;
      }
    }
  }
  return CheckDestinationMemory(dests);
}

Status CudaSink::Impl::CheckDestinationMemory(std::span<const Destination> dests) const {
  // Device destinations by (device, address), in runs of memory at most kRunGap apart:
  // one arena, or a caching allocator's segment, is one run. Checking each run's two
  // ends finds a host pointer or another device's memory given for a cuda:N tensor
  // (plain copies would reach it through unified addressing; a cast kernel would fault)
  // with two queries per run, not two per tensor.
  constexpr uint64_t kRunGap = uint64_t{64} << 10;
  std::vector<const Destination*> on_device;
  for (const Destination& d : dests) {
    if (d.device.is_cuda() && d.bytes > 0) on_device.push_back(&d);
  }
  std::sort(on_device.begin(), on_device.end(), [](const Destination* a, const Destination* b) {
    return std::make_pair(a->device.index, reinterpret_cast<uintptr_t>(a->ptr)) <
           std::make_pair(b->device.index, reinterpret_cast<uintptr_t>(b->ptr));
  });
  for (size_t i = 0; i < on_device.size();) {
    const Destination& first = *on_device[i];
    const uintptr_t begin = reinterpret_cast<uintptr_t>(first.ptr);
    uintptr_t end = begin + first.bytes;
    size_t j = i + 1;
    for (; j < on_device.size() && on_device[j]->device == first.device; ++j) {
      const uintptr_t p = reinterpret_cast<uintptr_t>(on_device[j]->ptr);
      if (p > end + kRunGap) break;
      end = std::max<uintptr_t>(end, p + on_device[j]->bytes);
    }
    Status s = CheckDeviceMemory(first.device.index, first.ptr, end - begin);
    if (!s.ok()) return Status(s.code(), TensorText(first) + ": destination " + s.message());
    i = j;
  }
  return OkStatus();
}

Status CudaSink::Impl::PlanRegions(const ReadSpan& span, std::span<const std::byte> bytes,
                                   std::vector<PlannedRegion>* planned) const {
  planned->clear();
  planned->reserve(span.regions.size());
  for (const CopyRegion& r : span.regions) {
    if (r.dest >= destinations.size()) {
      return InvalidArgumentError("span of shard " + std::to_string(span.shard) +
                                  " at file offset " + std::to_string(span.file_offset) +
                                  ": region names destination " + std::to_string(r.dest) +
                                  " but the load has " + std::to_string(destinations.size()));
    }
    const Destination& d = destinations[r.dest];
    if (r.length == 0) continue;
    if (r.src_offset > bytes.size() || r.length > bytes.size() - r.src_offset) {
      return OutOfRangeError(TensorText(d) + ": region [" + std::to_string(r.src_offset) + ", " +
                             std::to_string(r.src_offset + r.length) + ") of the span at file offset " +
                             std::to_string(span.file_offset) + " passes the " +
                             std::to_string(bytes.size()) + " bytes committed");
    }
    PlannedRegion p;
    p.region = &r;
    p.dest = &d;
    if (d.src_dtype == d.dst_dtype) {
      if (r.dst_offset > d.bytes || r.length > d.bytes - r.dst_offset) {
        return OutOfRangeError(TensorText(d) + ": region writes bytes [" +
                               std::to_string(r.dst_offset) + ", " +
                               std::to_string(r.dst_offset + r.length) +
                               ") but the destination holds " + std::to_string(d.bytes));
      }
      p.dst = static_cast<std::byte*>(d.ptr) + r.dst_offset;
    } else {
      const uint64_t se = ElementBytes(d.src_dtype);
      const uint64_t de = ElementBytes(d.dst_dtype);
      if (r.dst_offset % se != 0 || r.length % se != 0) {
        return InvalidArgumentError(
            TensorText(d) + ": " + std::string(DtypeName(d.src_dtype)) + "->" +
            std::string(DtypeName(d.dst_dtype)) + " region of " + std::to_string(r.length) +
            " bytes at tensor offset " + std::to_string(r.dst_offset) + " is not on " +
            std::string(DtypeName(d.src_dtype)) + " element boundaries");
      }
      const uint64_t first = r.dst_offset / se;
      const uint64_t n = r.length / se;
      const uint64_t capacity = d.bytes / de;
      if (first > capacity || n > capacity - first) {
        return OutOfRangeError(TensorText(d) + ": cast region writes elements [" +
                               std::to_string(first) + ", " + std::to_string(first + n) +
                               ") but the destination holds " + std::to_string(capacity));
      }
      p.cast = true;
      p.count = n;
      p.dst = static_cast<std::byte*>(d.ptr) + first * de;
    }
    planned->push_back(p);
  }
  return OkStatus();
}

Status CudaSink::Impl::Deliver(int id, const ReadSpan& span, std::span<const std::byte> bytes) {
  std::vector<PlannedRegion> planned;
  SL_RETURN_IF_ERROR(PlanRegions(span, bytes, &planned));
  Slot& slot = slots[id];
  slot.devices.clear();
  slot.device_regions = 0;
  slot.first_dest = UINT32_MAX;

  // Host destinations: synchronously, from the slot.
  std::vector<int> device_order;
  for (const PlannedRegion& p : planned) {
    const CopyRegion& r = *p.region;
    if (p.dest->device.is_cuda()) {
      const int dev = p.dest->device.index;
      if (std::find(device_order.begin(), device_order.end(), dev) == device_order.end()) {
        device_order.push_back(dev);
      }
      if (slot.first_dest == UINT32_MAX) slot.first_dest = r.dest;
      ++slot.device_regions;
      continue;
    }
    const std::byte* src = bytes.data() + r.src_offset;
    if (!p.cast) {
      std::memcpy(p.dst, src, r.length);
    } else {
      Status s = CastElements(p.dest->src_dtype, p.dest->dst_dtype, src, p.count, p.dst);
      if (!s.ok()) return Status(s.code(), TensorText(*p.dest) + ": " + s.message());
    }
  }
  if (device_order.empty()) return OkStatus();

  // Device destinations: one stream per device for this commit; contiguous runs merged.
  std::vector<const Stream*> used_streams;
  Status failure;
  for (int dev : device_order) {
    DeviceState& ds = *devices[dev];
    const Stream& stream =
        ds.streams[ds.next_stream.fetch_add(1, std::memory_order_relaxed) % ds.streams.size()];
    // Readers are the loader's own threads: the device stays current (see
    // MakeDeviceCurrent; restoring would create a context on device 0).
    if (Status s = MakeDeviceCurrent(dev); !s.ok()) {
      failure = s;
      break;
    }
    used_streams.push_back(&stream);
    std::byte* run_dst = nullptr;
    const std::byte* run_src = nullptr;
    uint64_t run_len = 0;
    const Destination* run_dest = nullptr;
    auto flush = [&]() -> Status {
      if (run_len == 0) return OkStatus();
      cudaError_t err = cudaMemcpyAsync(run_dst, run_src, run_len, cudaMemcpyHostToDevice,
                                        stream.get());
      run_len = 0;
      if (err == cudaSuccess) return OkStatus();
      (void)cudaGetLastError();
      Status s = CudaCallStatus(err, "cudaMemcpyAsync", dev);
      return Status(s.code(), "tensor " + QuoteNameForMessage(run_dest->name) + ": " + s.message());
    };
    for (const PlannedRegion& p : planned) {
      if (!p.dest->device.is_cuda() || p.dest->device.index != dev) continue;
      const CopyRegion& r = *p.region;
      const std::byte* src = bytes.data() + r.src_offset;
      if (!p.cast) {
        if (run_len > 0 && run_src + run_len == src && run_dst + run_len == p.dst) {
          run_len += r.length;
          continue;
        }
        failure = flush();
        if (!failure.ok()) break;
        run_dst = p.dst;
        run_src = src;
        run_len = r.length;
        run_dest = p.dest;
        continue;
      }
      failure = flush();
      if (!failure.ok()) break;
      // Cast: raw bytes into this slot's scratch at the same offset, then the kernel.
      std::byte* scratch = static_cast<std::byte*>(ds.scratch[id].data()) + r.src_offset;
      cudaError_t err =
          cudaMemcpyAsync(scratch, src, r.length, cudaMemcpyHostToDevice, stream.get());
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        Status s = CudaCallStatus(err, "cudaMemcpyAsync", dev);
        failure = Status(s.code(), "tensor " + QuoteNameForMessage(p.dest->name) + ": " + s.message());
        break;
      }
      Status s = CastOnDevice(p.dest->src_dtype, p.dest->dst_dtype, scratch, p.dst, p.count, stream);
      if (!s.ok()) {
        failure = Status(s.code(), "tensor " + QuoteNameForMessage(p.dest->name) + ": " + s.message());
        break;
      }
    }
    if (failure.ok()) failure = flush();
    if (failure.ok()) failure = ds.events[id].Record(stream);
    if (!failure.ok()) break;
    slot.devices.push_back(dev);
  }
  if (!failure.ok()) {
    // Whatever was queued may still read the slot: wait for it before the slot is reused.
    for (const Stream* s : used_streams) (void)s->Synchronize();
    slot.devices.clear();
    return failure;
  }
  return OkStatus();
}

// ---- CudaSink ----------------------------------------------------------------------

CudaSink::CudaSink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<CudaSink>> CudaSink::Create(const CudaSinkOptions& options,
                                                   std::shared_ptr<StagingPool> pool) {
  SL_RETURN_IF_ERROR(ValidateCudaSinkOptions(options));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->pool = std::move(pool);
  return std::unique_ptr<CudaSink>(new CudaSink(std::move(impl)));
}

CudaSink::~CudaSink() {
  if (!impl_) return;
  {
    std::unique_lock<std::mutex> lock(impl_->mu);
    if (impl_->begun) {
      impl_->aborted = true;
      impl_->cv.notify_all();
      (void)impl_->DrainLocked(lock);
      impl_->begun = false;
    }
  }
  if (impl_->pool && impl_->ring) {
    std::unique_ptr<StagingRing> dropped;  // freed after the lock
    std::lock_guard<std::mutex> lock(impl_->pool->state_->mu);
    std::unique_ptr<StagingRing>& cached = impl_->pool->state_->ring;
    if (cached && cached->pinned && !impl_->ring->pinned) {
      dropped = std::move(impl_->ring);  // a pinned ring is worth more than a pageable one
    } else {
      dropped = std::move(cached);
      cached = std::move(impl_->ring);
    }
  }
}

Status CudaSink::Begin(std::span<const Destination> destinations, uint64_t slot_bytes) {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  if (m.begun) {
    return FailedPreconditionError(
        "cuda sink: Begin called while a load is open (call Finish or Abort first)");
  }
  m.load_warnings.clear();
  if (slot_bytes == 0 || slot_bytes > m.options.ring.slot_bytes) {
    return InvalidArgumentError("cuda sink: spans of " + std::to_string(slot_bytes) +
                                " bytes do not fit its slots of " +
                                std::to_string(m.options.ring.slot_bytes) + " bytes");
  }
  std::vector<bool> cuda_used;
  std::vector<bool> cuda_cast;
  SL_RETURN_IF_ERROR(m.ValidateDestinations(destinations, &cuda_used, &cuda_cast));
  const auto first_used = std::find(cuda_used.begin(), cuda_used.end(), true);
  const bool need_pinned = first_used != cuda_used.end();
  const int count = m.options.ring.slot_count;
  const uint64_t ring_slot_bytes = m.options.ring.slot_bytes;

  // The ring: keep ours if it fits, else try the pool's, else allocate (ours freed first
  // so staging memory never exceeds one ring per sink). Where pinned memory is refused
  // (pageable_fallback), a pageable ring instead; one refused because the platform
  // cannot pin (unimplemented) fits later loads as it is, while one refused for want of
  // memory (resource_exhausted) does not: each later load asks for pinned memory again.
  const bool fallback = need_pinned && m.options.pageable_fallback;
  if (!m.ring ||
      !m.ring->Fits(count, slot_bytes, need_pinned, m.options.pinned_mode, fallback)) {
    m.ring.reset();
    if (m.pool) {
      std::unique_ptr<StagingRing> unfit;  // freed after the lock (cudaFreeHost is slow)
      std::lock_guard<std::mutex> pool_lock(m.pool->state_->mu);
      std::unique_ptr<StagingRing>& cached = m.pool->state_->ring;
      if (cached &&
          cached->Fits(count, slot_bytes, need_pinned, m.options.pinned_mode, fallback)) {
        m.ring = std::move(cached);
      } else {
        unfit = std::move(cached);  // a ring that does not fit would only add to the memory held
      }
    }
    if (!m.ring) {
      const int home = need_pinned ? static_cast<int>(first_used - cuda_used.begin()) : kNoDevice;
      Result<std::unique_ptr<StagingRing>> made =
          AllocateRing(count, ring_slot_bytes, need_pinned, m.options.pinned_mode, home);
      if (!made.ok() && fallback && IsPinningRefusal(made.status())) {
        const Status refused = made.status();
        made = AllocateRing(count, ring_slot_bytes, /*pinned=*/false, m.options.pinned_mode,
                            kNoDevice);
        if (!made.ok()) {
          return Status(made.status().code(), made.status().message() +
                                                  " (after pinned memory was refused: " +
                                                  refused.message() + ")");
        }
        (*made)->pinning_refused = refused;
      }
      if (!made.ok()) return made.status();
      m.ring = std::move(made).value();
      ++m.ring_allocations;
    }
  }
  m.slots.assign(count, Slot());
  if (need_pinned && !m.ring->pinned) {
    m.load_warnings.push_back(
        "pinned staging memory was refused (" + m.ring->pinning_refused.message() +
        "): the copies to the GPU ran from " + std::to_string(m.ring->total_bytes()) +
        " bytes of pageable memory instead, which is slower (the CUDA driver stages them)");
  }

  // Devices: streams, one event per slot, cast scratch where casts land.
  if (m.devices.size() < cuda_used.size()) m.devices.resize(cuda_used.size());
  for (auto& ds : m.devices) {
    if (ds) ds->used_in_load = false;
  }
  for (int dev = 0; dev < static_cast<int>(cuda_used.size()); ++dev) {
    if (!cuda_used[dev]) continue;
    if (!m.devices[dev]) {
      m.devices[dev] = std::make_unique<DeviceState>();
      m.devices[dev]->device = dev;
    }
    DeviceState& ds = *m.devices[dev];
    while (static_cast<int>(ds.streams.size()) < m.options.streams_per_device) {
      SL_ASSIGN_OR_RETURN(Stream s, Stream::Create(dev));
      ds.streams.push_back(std::move(s));
    }
    if (static_cast<int>(ds.events.size()) != count) {
      ds.events.clear();
      for (int i = 0; i < count; ++i) {
        SL_ASSIGN_OR_RETURN(Event e, Event::Create(dev, /*timing=*/false, /*blocking_sync=*/true));
        ds.events.push_back(std::move(e));
      }
    }
    if (cuda_cast[dev] && (static_cast<int>(ds.scratch.size()) != count ||
                           ds.scratch_each < m.ring->slot_bytes)) {
      ds.scratch.clear();
      ds.scratch_each = 0;
      for (int i = 0; i < count; ++i) {
        Result<DeviceBuffer> b = DeviceBuffer::Allocate(dev, m.ring->slot_bytes);
        if (!b.ok()) {
          ds.scratch.clear();
          return Status(b.status().code(),
                        "cuda sink: cast scratch: " + b.status().message());
        }
        ds.scratch.push_back(std::move(b).value());
      }
      ds.scratch_each = m.ring->slot_bytes;
    }
    ds.used_in_load = true;
  }

  m.destinations.assign(destinations.begin(), destinations.end());
  m.load_slot_bytes = slot_bytes;
  m.home_device = need_pinned ? static_cast<int>(first_used - cuda_used.begin()) : -1;
  m.load_id = next_load_id.fetch_add(1, std::memory_order_relaxed);
  m.first_error = OkStatus();
  m.aborted = false;
  m.seq = 0;
  m.begun = true;
  return OkStatus();
}

Result<StagingSlot> CudaSink::AcquireSlot() {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  // The load this thread last set a device for (Impl::load_id).
  thread_local uint64_t thread_load_id = 0;
  if (m.begun && m.home_device >= 0 && thread_load_id != m.load_id) {
    // Readers are the loader's own threads: the device stays current (as in Deliver).
    const int home = m.home_device;
    const uint64_t load_id = m.load_id;
    lock.unlock();
    Status s = MakeDeviceCurrent(home);
    lock.lock();
    if (!s.ok()) {
      m.RecordErrorLocked(s);
      return s;
    }
    thread_load_id = load_id;
  }
  while (true) {
    if (m.aborted) return CancelledError("cuda sink: the load was aborted");
    if (!m.begun) return FailedPreconditionError("cuda sink: AcquireSlot outside Begin..Finish");
    if (!m.first_error.ok()) return m.first_error;
    int oldest = -1;
    for (int i = 0; i < static_cast<int>(m.slots.size()); ++i) {
      Slot& s = m.slots[i];
      if (s.state == SlotState::kFree) {
        s.state = SlotState::kLent;
        return m.MakeSlot(i);
      }
      if (s.state == SlotState::kInFlight && (oldest < 0 || s.seq < m.slots[oldest].seq)) {
        oldest = i;
      }
    }
    // A slot whose copies have already completed (streams finish out of order) is
    // taken without blocking; cudaEventQuery does not wait.
    for (int i = 0; i < static_cast<int>(m.slots.size()); ++i) {
      Slot& s = m.slots[i];
      if (s.state != SlotState::kInFlight || !m.SlotCompleted(i)) continue;
      s.devices.clear();
      s.state = SlotState::kLent;
      return m.MakeSlot(i);
    }
    if (oldest < 0) {  // every slot is lent or being reclaimed by another reader
      WaitNotified(m.cv, lock);
      continue;
    }
    m.slots[oldest].state = SlotState::kReclaiming;
    lock.unlock();
    Status s = m.WaitSlot(oldest);
    lock.lock();
    if (!s.ok() || m.aborted) {
      m.RecordErrorLocked(s);
      m.slots[oldest].state = SlotState::kFree;
      m.cv.notify_all();
      continue;  // reports the error (or the abort) at the top of the loop
    }
    m.slots[oldest].state = SlotState::kLent;
    m.cv.notify_all();  // Finish/Abort may wait for reclaims to end
    return m.MakeSlot(oldest);
  }
}

Status CudaSink::Commit(const StagingSlot& slot, const ReadSpan& span,
                        std::span<const std::byte> bytes) {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.begun) return FailedPreconditionError("cuda sink: Commit outside Begin..Finish");
    if (slot.id < 0 || slot.id >= static_cast<int>(m.slots.size()) ||
        m.slots[slot.id].state != SlotState::kLent) {
      return FailedPreconditionError("cuda sink: Commit of staging slot " +
                                     std::to_string(slot.id) + ", which is not lent");
    }
  }
  const std::byte* base = m.ring->base() + static_cast<uint64_t>(slot.id) * m.ring->stride;
  Status status;
  if (bytes.data() < base || bytes.size() > m.ring->stride ||
      bytes.data() - base > static_cast<std::ptrdiff_t>(m.ring->stride - bytes.size())) {
    status = InvalidArgumentError("cuda sink: committed bytes of the span at file offset " +
                                  std::to_string(span.file_offset) +
                                  " are not inside staging slot " + std::to_string(slot.id));
  } else if (Status earlier = [&] {
               std::lock_guard<std::mutex> lock(m.mu);
               return m.first_error;
             }();
             !earlier.ok()) {
    status = earlier;  // the load has already failed: deliver nothing more
  } else if (bytes.size() > m.load_slot_bytes) {
    status = InvalidArgumentError("cuda sink: span at file offset " +
                                  std::to_string(span.file_offset) + " has " +
                                  std::to_string(bytes.size()) + " bytes, more than the load's " +
                                  std::to_string(m.load_slot_bytes) + "-byte slots");
  } else {
    status = m.Deliver(slot.id, span, bytes);
  }
  std::lock_guard<std::mutex> lock(m.mu);
  Slot& s = m.slots[slot.id];
  if (!status.ok()) {
    m.RecordErrorLocked(status);
    s.state = SlotState::kFree;
  } else if (!s.devices.empty()) {
    s.state = SlotState::kInFlight;
    s.seq = ++m.seq;
  } else {
    s.state = SlotState::kFree;
  }
  m.cv.notify_all();
  return status;
}

void CudaSink::ReleaseSlot(const StagingSlot& slot) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  if (slot.id < 0 || slot.id >= static_cast<int>(m.slots.size())) return;
  if (m.slots[slot.id].state != SlotState::kLent) return;
  m.slots[slot.id].state = SlotState::kFree;
  m.cv.notify_all();
}

bool CudaSink::DirectTargets(const ReadSpan& span, std::vector<iovec>* iov) {
  const Impl& m = *impl_;
  if (span.regions.empty()) return false;
  uint64_t expected = 0;
  std::vector<iovec> out;
  out.reserve(span.regions.size());
  for (const CopyRegion& r : span.regions) {
    if (r.dest >= m.destinations.size()) return false;
    const Destination& d = m.destinations[r.dest];
    if (!d.device.is_cpu() || d.src_dtype != d.dst_dtype) return false;
    if (r.src_offset != expected || r.length == 0) return false;
    if (r.dst_offset > d.bytes || r.length > d.bytes - r.dst_offset) return false;
    out.push_back(iovec{static_cast<std::byte*>(d.ptr) + r.dst_offset, r.length});
    expected += r.length;
  }
  if (expected != span.length) return false;
  *iov = std::move(out);
  return true;
}

Status CudaSink::Finish() {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  if (!m.begun) return FailedPreconditionError("cuda sink: Finish without Begin");
  int lent = 0;
  for (const Slot& s : m.slots) lent += s.state == SlotState::kLent ? 1 : 0;
  if (lent > 0) {
    return FailedPreconditionError("cuda sink: Finish called while " + std::to_string(lent) +
                                   " staging slot" + (lent > 1 ? "s are" : " is") +
                                   " still lent to readers");
  }
  Status drained = m.DrainLocked(lock);
  m.RecordErrorLocked(drained);
  Status result = m.first_error;
  m.first_error = OkStatus();
  m.begun = false;
  m.cv.notify_all();
  return result;
}

void CudaSink::Abort() {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mu);
  m.aborted = true;
  m.cv.notify_all();
  (void)m.DrainLocked(lock);
  for (Slot& s : m.slots) {
    s.state = SlotState::kFree;
    s.devices.clear();
  }
  m.first_error = OkStatus();
  m.begun = false;
  m.cv.notify_all();
}

uint64_t CudaSink::staging_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->ring ? impl_->ring->total_bytes() : 0;
}

bool CudaSink::staging_is_pinned() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->ring && impl_->ring->pinned;
}

std::vector<std::string> CudaSink::Warnings() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->load_warnings;
}

int CudaSink::ring_allocations() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->ring_allocations;
}

uint64_t CudaSink::scratch_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  uint64_t total = 0;
  for (const auto& ds : impl_->devices) {
    if (ds) total += ds->scratch_each * ds->scratch.size();
  }
  return total;
}

}  // namespace shardload::cuda
