// loader/uring.cc — UringRing over io_uring_setup / io_uring_enter (see loader/uring.h).
#include "loader/uring.h"

#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

namespace shardload {
namespace {

constexpr unsigned kMaxEntries = 4096;
// kMaxBusyRetries: EAGAIN/EBUSY answers from io_uring_enter tolerated in a row (1 ms apart).
constexpr int kMaxBusyRetries = 5000;

std::string ErrnoName(int err) {
  switch (err) {
    case ENOSYS:
      return "ENOSYS";
    case EPERM:
      return "EPERM";
    case EACCES:
      return "EACCES";
    case EINVAL:
      return "EINVAL";
    case ENOMEM:
      return "ENOMEM";
    case EFAULT:
      return "EFAULT";
    case EMFILE:
      return "EMFILE";
    default:
      return "errno " + std::to_string(err);
  }
}

// DisabledSetting: the value of /proc/sys/kernel/io_uring_disabled, or -1 when unreadable.
int DisabledSetting() {
  std::ifstream in("/proc/sys/kernel/io_uring_disabled");
  int value = -1;
  if (!(in >> value)) return -1;
  return value;
}

int SysSetup(unsigned entries, io_uring_params* params) {
  return static_cast<int>(::syscall(__NR_io_uring_setup, entries, params));
}

int SysEnter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
  return static_cast<int>(
      ::syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, nullptr, size_t{0}));
}

template <typename T>
T* At(void* base, uint32_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

unsigned LoadAcquire(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void StoreRelease(unsigned* p, unsigned v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

}  // namespace

Status UringUnavailable(std::string_view call, int err) {
  std::string m = "io_uring is unavailable: " + std::string(call) + ": " + std::strerror(err) +
                  " (" + ErrnoName(err) + ")";
  int disabled = DisabledSetting();
  if (disabled > 0) {
    m += "; /proc/sys/kernel/io_uring_disabled is " + std::to_string(disabled);
  }
  return FailedPreconditionError(std::move(m));
}

UringRing::Mapping::~Mapping() {
  if (address != nullptr) ::munmap(address, bytes);
}

UringRing::~UringRing() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<UringRing>> UringRing::Create(unsigned entries) {
  if (entries < 1 || entries > kMaxEntries) {
    return InvalidArgumentError("io_uring queue depth " + std::to_string(entries) +
                                ": expected 1.." + std::to_string(kMaxEntries));
  }
  io_uring_params params;
  std::memset(&params, 0, sizeof(params));
  int fd = SysSetup(entries, &params);
  if (fd < 0) {
    int err = errno;
    if (err == ENOSYS || err == EPERM || err == EACCES || err == EINVAL) {
      return UringUnavailable("io_uring_setup", err);
    }
    return ErrnoToStatus(err, "io_uring_setup");
  }
  std::unique_ptr<UringRing> ring(new UringRing());
  ring->fd_ = fd;  // closed by the destructor from here on
  ring->sq_entries_ = params.sq_entries;

  size_t sq_bytes = params.sq_off.array + params.sq_entries * sizeof(unsigned);
  size_t cq_bytes = params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe);
  const bool single = (params.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single) sq_bytes = cq_bytes = std::max(sq_bytes, cq_bytes);

  auto map = [fd](Mapping* m, size_t bytes, off_t offset, const char* what) -> Status {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset);
    if (p == MAP_FAILED) return ErrnoToStatus(errno, std::string("mmap io_uring ") + what);
    m->address = p;
    m->bytes = bytes;
    return OkStatus();
  };
  SL_RETURN_IF_ERROR(map(&ring->sq_ring_, sq_bytes, IORING_OFF_SQ_RING, "submission ring"));
  void* cq_base = ring->sq_ring_.address;
  if (!single) {
    SL_RETURN_IF_ERROR(map(&ring->cq_ring_, cq_bytes, IORING_OFF_CQ_RING, "completion ring"));
    cq_base = ring->cq_ring_.address;
  }
  SL_RETURN_IF_ERROR(map(&ring->sqes_, params.sq_entries * sizeof(io_uring_sqe), IORING_OFF_SQES,
                         "submission entries"));

  void* sq_base = ring->sq_ring_.address;
  ring->sq_head_ = At<unsigned>(sq_base, params.sq_off.head);
  ring->sq_tail_ = At<unsigned>(sq_base, params.sq_off.tail);
  ring->sq_mask_ = *At<unsigned>(sq_base, params.sq_off.ring_mask);
  ring->sq_array_ = At<unsigned>(sq_base, params.sq_off.array);
  ring->sqe_base_ = ring->sqes_.address;
  ring->cq_head_ = At<unsigned>(cq_base, params.cq_off.head);
  ring->cq_tail_ = At<unsigned>(cq_base, params.cq_off.tail);
  ring->cq_mask_ = *At<unsigned>(cq_base, params.cq_off.ring_mask);
  ring->cqe_base_ = At<void>(cq_base, params.cq_off.cqes);
  ring->queued_tail_ = *ring->sq_tail_;
  return ring;
}

bool UringRing::QueueReadV(int fd, const iovec* iov, unsigned count, uint64_t offset,
                           uint64_t tag) {
  const unsigned head = LoadAcquire(sq_head_);
  if (queued_tail_ - head >= sq_entries_) return false;
  const unsigned index = queued_tail_ & sq_mask_;
  io_uring_sqe* sqe = static_cast<io_uring_sqe*>(sqe_base_) + index;
  std::memset(sqe, 0, sizeof(*sqe));
  sqe->opcode = IORING_OP_READV;
  sqe->fd = fd;
  sqe->off = offset;
  sqe->addr = reinterpret_cast<uint64_t>(iov);
  sqe->len = count;
  sqe->user_data = tag;
  sq_array_[index] = index;
  ++queued_tail_;
  return true;
}

Status UringRing::SubmitAndWait(unsigned wait_for) {
  StoreRelease(sq_tail_, queued_tail_);
  int busy_retries = 0;
  while (true) {
    const unsigned to_submit = queued_tail_ - LoadAcquire(sq_head_);
    unsigned ready = LoadAcquire(cq_tail_) - LoadAcquire(cq_head_);
    const unsigned min_complete = ready >= wait_for ? 0 : wait_for;
    if (to_submit == 0 && min_complete == 0) return OkStatus();
    const unsigned flags = min_complete > 0 ? IORING_ENTER_GETEVENTS : 0;
    int r = SysEnter(fd_, to_submit, min_complete, flags);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == ENOSYS || err == EPERM || err == EACCES) {
        return UringUnavailable("io_uring_enter", err);
      }
      if (err == EAGAIN || err == EBUSY) {
        // The kernel is short of resources now. Completions that are ready free some:
        // let the caller reap them; otherwise back off briefly and try again.
        if (LoadAcquire(cq_tail_) != LoadAcquire(cq_head_)) return OkStatus();
        if (++busy_retries > kMaxBusyRetries) {
          return InternalError("io_uring_enter: " + std::string(std::strerror(err)) + " " +
                               std::to_string(kMaxBusyRetries) + " times in a row");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      return InternalError("io_uring_enter: " + std::string(std::strerror(err)));
    }
    // Everything submitted and (when asked) enough completions ready: done. The loop
    // re-checks, since a submission may stop early.
  }
}

std::optional<UringCompletion> UringRing::PopCompletion() {
  const unsigned head = *cq_head_;  // only we write the head
  if (head == LoadAcquire(cq_tail_)) return std::nullopt;
  const io_uring_cqe* cqe = static_cast<const io_uring_cqe*>(cqe_base_) + (head & cq_mask_);
  UringCompletion c{cqe->user_data, cqe->res};
  StoreRelease(cq_head_, head + 1);
  return c;
}

}  // namespace shardload
