// loader/host_sink.cc — HostSink: staging ring, memcpy / cast delivery, direct targets.
#include "loader/host_sink.h"

#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "format/text.h"
#include "loader/cast.h"

namespace shardload {
namespace {

std::atomic<int> g_live_rings{0};
constexpr uint64_t kPad = kSlotMarginBytes;

}  // namespace

// Ring: one anonymous mapping holding every slot; unmapped by the destructor.
struct HostSink::Ring {
  std::byte* data = nullptr;
  uint64_t bytes = 0;
  Ring(std::byte* d, uint64_t n) : data(d), bytes(n) { g_live_rings.fetch_add(1); }
  ~Ring() {
    ::munmap(data, bytes);
    g_live_rings.fetch_sub(1);
  }
};

int LiveStagingRings() { return g_live_rings.load(); }

Status ValidateSinkOptions(const SinkOptions& options) {
  if (options.slot_count < 1 || options.slot_count > 64) {
    return InvalidArgumentError("invalid slot_count " + std::to_string(options.slot_count) +
                                ": expected 1..64");
  }
  if (options.slot_bytes < 4096 || options.slot_bytes > (1ull << 30) ||
      options.slot_bytes % 4096 != 0) {
    return InvalidArgumentError("invalid slot_bytes " + std::to_string(options.slot_bytes) +
                                ": expected a multiple of 4096 in 4096..1073741824");
  }
  return OkStatus();
}

Result<std::unique_ptr<HostSink>> HostSink::Create(const SinkOptions& options) {
  SL_RETURN_IF_ERROR(ValidateSinkOptions(options));
  return std::unique_ptr<HostSink>(new HostSink(options));
}

HostSink::HostSink(const SinkOptions& options) : options_(options) {}
HostSink::~HostSink() = default;

Status HostSink::Begin(std::span<const Destination> destinations, uint64_t slot_bytes) {
  if (slot_bytes == 0 || slot_bytes > (1ull << 30)) {
    return InvalidArgumentError("invalid span size " + std::to_string(slot_bytes) +
                                ": expected 1..1073741824");
  }
  for (const Destination& d : destinations) {
    if (!d.device.is_cpu()) {
      return FailedPreconditionError("tensor " + QuoteNameForMessage(d.name) + ": device cuda:" +
                                     std::to_string(d.device.index) +
                                     " needs a device backend; the host sink delivers to cpu only");
    }
    if (!CastSupported(d.src_dtype, d.dst_dtype)) {
      return InvalidArgumentError("tensor " + QuoteNameForMessage(d.name) + ": cannot cast " +
                                  std::string(DtypeName(d.src_dtype)) + " to " +
                                  std::string(DtypeName(d.dst_dtype)));
    }
    if (d.ptr == nullptr && d.bytes > 0) {
      return InvalidArgumentError("tensor " + QuoteNameForMessage(d.name) + ": destination pointer is null");
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  destinations_.assign(destinations.begin(), destinations.end());
  aborted_ = false;
  uint64_t stride = (slot_bytes + 4095) / 4096 * 4096 + kPad;
  if (ring_ == nullptr || stride > slot_stride_) {
    ring_.reset();
    uint64_t total = stride * static_cast<uint64_t>(options_.slot_count);
    void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return ResourceExhaustedError("cannot allocate a staging ring of " + std::to_string(total) +
                                    " bytes: " + std::strerror(errno));
    }
    ring_ = std::make_unique<Ring>(static_cast<std::byte*>(p), total);
    slot_stride_ = stride;
  }
  free_.clear();
  for (int i = options_.slot_count - 1; i >= 0; --i) free_.push_back(i);
  return OkStatus();
}

Result<StagingSlot> HostSink::AcquireSlot() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!aborted_ && free_.empty()) WaitNotified(cv_, lock);
  if (aborted_) return CancelledError("load aborted");
  if (ring_ == nullptr) return FailedPreconditionError("host sink used before Begin");
  int id = free_.back();
  free_.pop_back();
  StagingSlot slot;
  slot.id = id;
  slot.memory = {ring_->data + static_cast<uint64_t>(id) * slot_stride_, slot_stride_};
  return slot;
}

void HostSink::ReleaseSlot(const StagingSlot& slot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (slot.id < 0 || slot.id >= options_.slot_count) return;
    for (int f : free_) {
      if (f == slot.id) return;  // already free: ignore a double release
    }
    free_.push_back(slot.id);
  }
  cv_.notify_one();
}

Status HostSink::Deliver(const CopyRegion& r, std::span<const std::byte> bytes) const {
  if (r.dest >= destinations_.size()) {
    return InvalidArgumentError("copy region names destination " + std::to_string(r.dest) +
                                " of " + std::to_string(destinations_.size()));
  }
  const Destination& d = destinations_[r.dest];
  if (r.src_offset > bytes.size() || r.length > bytes.size() - r.src_offset) {
    return InvalidArgumentError("tensor " + QuoteNameForMessage(d.name) + ": region [" + std::to_string(r.src_offset) +
                                ", +" + std::to_string(r.length) + ") passes the end of its span (" +
                                std::to_string(bytes.size()) + " bytes)");
  }
  const std::byte* src = bytes.data() + r.src_offset;
  auto* dst_base = static_cast<std::byte*>(d.ptr);
  if (d.src_dtype == d.dst_dtype) {
    if (r.dst_offset > d.bytes || r.length > d.bytes - r.dst_offset) {
      return InvalidArgumentError("tensor " + QuoteNameForMessage(d.name) + " (cpu): bytes [" +
                                  std::to_string(r.dst_offset) + ", " +
                                  std::to_string(r.dst_offset + r.length) +
                                  ") do not fit its destination of " + std::to_string(d.bytes) +
                                  " bytes");
    }
    if (r.length > 0) std::memcpy(dst_base + r.dst_offset, src, r.length);
    return OkStatus();
  }
  const uint64_t se = static_cast<uint64_t>(DtypeBits(d.src_dtype)) / 8;
  const uint64_t de = static_cast<uint64_t>(DtypeBits(d.dst_dtype)) / 8;
  if (r.length % se != 0 || r.dst_offset % se != 0) {
    return InvalidArgumentError("tensor " + QuoteNameForMessage(d.name) + ": cast region at byte " +
                                std::to_string(r.dst_offset) + " (+" + std::to_string(r.length) +
                                ") does not fall on " + std::string(DtypeName(d.src_dtype)) +
                                " element boundaries");
  }
  uint64_t count = r.length / se;
  uint64_t dst_pos = r.dst_offset / se * de;
  if (dst_pos > d.bytes || count > (d.bytes - dst_pos) / de) {
    return InvalidArgumentError("tensor " + QuoteNameForMessage(d.name) + " (cpu): " + std::to_string(count) +
                                " elements at element " + std::to_string(r.dst_offset / se) +
                                " do not fit its destination of " + std::to_string(d.bytes) +
                                " bytes");
  }
  return CastElements(d.src_dtype, d.dst_dtype, src, count, dst_base + dst_pos);
}

Status HostSink::Commit(const StagingSlot& slot, const ReadSpan& span,
                        std::span<const std::byte> bytes) {
  // The slot goes back on every exit, an exception (out of memory for a message)
  // included: a slot lost would leave readers waiting for it.
  struct Release {
    HostSink* sink;
    const StagingSlot& slot;
    ~Release() { sink->ReleaseSlot(slot); }
  } release{this, slot};
  if (bytes.size() != span.length) {
    return InvalidArgumentError("commit of " + std::to_string(bytes.size()) +
                                " bytes for a span of " + std::to_string(span.length));
  }
  for (const CopyRegion& r : span.regions) SL_RETURN_IF_ERROR(Deliver(r, bytes));
  return OkStatus();
}

bool HostSink::DirectTargets(const ReadSpan& span, std::vector<iovec>* iov) {
  iov->clear();
  auto refuse = [iov] {
    iov->clear();  // never leave a partial list behind
    return false;
  };
  uint64_t pos = 0;
  for (const CopyRegion& r : span.regions) {
    if (r.src_offset != pos || r.dest >= destinations_.size()) return refuse();
    const Destination& d = destinations_[r.dest];
    if (d.src_dtype != d.dst_dtype) return refuse();
    if (r.dst_offset > d.bytes || r.length > d.bytes - r.dst_offset) return refuse();
    std::byte* base = static_cast<std::byte*>(d.ptr) + r.dst_offset;
    if (!iov->empty() &&
        static_cast<std::byte*>(iov->back().iov_base) + iov->back().iov_len == base) {
      iov->back().iov_len += r.length;  // destination memory continues: one entry
    } else {
      iov->push_back({base, r.length});
    }
    pos += r.length;
  }
  if (pos != span.length || iov->empty()) return refuse();
  return true;
}

Status HostSink::Finish() { return OkStatus(); }

void HostSink::Abort() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
  }
  cv_.notify_all();
}

int HostSink::slots_in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (ring_ == nullptr) return 0;
  return options_.slot_count - static_cast<int>(free_.size());
}

}  // namespace shardload
