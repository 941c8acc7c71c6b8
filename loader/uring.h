// loader/uring.h — a minimal io_uring instance over raw system calls.
//
// Provides `UringRing`: one io_uring (its descriptor and the three shared mappings:
// submission ring, completion ring, submission entries) set up with io_uring_setup(2)
// and driven with io_uring_enter(2) through syscall(2), with no library dependency.
// It queues vectored reads (IORING_OP_READV), submits them, and hands back completions;
// IoMode::kUring's UringFile (loader/file.cc) builds its reads on it.
// Also `UringUnavailable`, the failed_precondition status used when the kernel or the
// sandbox refuses io_uring.
//
//   SL_ASSIGN_OR_RETURN(std::unique_ptr<UringRing> ring, UringRing::Create(8));
//   iovec v{buffer, 4096};
//   ring->QueueReadV(fd, &v, 1, /*offset=*/0, /*tag=*/7);
//   SL_RETURN_IF_ERROR(ring->SubmitAndWait(1));
//   while (std::optional<UringCompletion> c = ring->PopCompletion()) {
//     // c->tag == 7, c->result: bytes read or -errno
//   }
#ifndef SHARDLOAD_LOADER_URING_H_
#define SHARDLOAD_LOADER_URING_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "format/status.h"

namespace shardload {

// UringCompletion: one reaped completion: the tag given to QueueReadV and the result
// (bytes transferred, or a negative errno).
struct UringCompletion {
  uint64_t tag = 0;
  int32_t result = 0;
};

// UringUnavailable: failed_precondition "io_uring is unavailable: <call>: <strerror>
// (<ERRNO NAME>)", with "; /proc/sys/kernel/io_uring_disabled is N" appended when that
// setting is readable and not 0.
Status UringUnavailable(std::string_view call, int err);

// UringRing: one io_uring instance. Owns the ring descriptor and its mappings (released
// by the destructor). Every request queued must have completed and been reaped before
// the memory it reads into is released; the ring itself does not track buffers.
// Thread safety: none; one thread at a time (a ring may move between threads).
class UringRing {
 public:
  // Create: a ring with room for at least `entries` (1..4096) submissions; the kernel
  // rounds up to a power of two and sizes the completion ring at twice that.
  // Errors: invalid_argument for `entries` out of range; failed_precondition
  // (UringUnavailable) when io_uring_setup fails with ENOSYS, EPERM, EACCES or EINVAL
  // (kernel without io_uring, disabled by sysctl or a seccomp filter); ErrnoToStatus
  // "io_uring_setup" / "mmap io_uring ..." otherwise (ENOMEM → resource_exhausted).
  static Result<std::unique_ptr<UringRing>> Create(unsigned entries);

  ~UringRing();
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  // entries: the submission ring's size (>= the number asked for).
  unsigned entries() const { return sq_entries_; }

  // QueueReadV: add a readv of `iov[0..count)` at `offset` of `fd`, tagged `tag`, to the
  // submission ring (not yet given to the kernel). `iov` and the memory it points to must
  // stay valid until the completion is reaped. Returns false (nothing queued) when the
  // submission ring is full.
  bool QueueReadV(int fd, const iovec* iov, unsigned count, uint64_t offset, uint64_t tag);

  // SubmitAndWait: hand every queued entry to the kernel and, when `wait_for` > 0, wait
  // until at least that many completions are ready. EINTR is retried; on EAGAIN/EBUSY
  // (kernel short of memory, completion ring busy) it returns OK early when completions
  // are ready (reap them and call again), else retries 1 ms later, up to 5000 times.
  // Errors: failed_precondition (UringUnavailable) for ENOSYS, EPERM or EACCES (a
  // sandbox that allows setup but not enter); internal "io_uring_enter: <strerror>" for
  // any other failure or too many retries (the ring should then be dropped).
  // Lifetime hazard on error: requests the kernel accepted before the failure may still
  // be in flight and go on writing into their buffers after this returns; destroying
  // the ring does not wait for them. The retry limit can be reached that way: requests
  // in flight that take over ~5 s (slow storage, large chunks) while every new
  // submission is refused with EAGAIN. Not handled: no error seen in practice leaves
  // requests in flight, and waiting for them needs the io_uring_enter that just failed.
  Status SubmitAndWait(unsigned wait_for);

  // PopCompletion: the oldest completion not yet reaped, or nullopt when none is ready.
  std::optional<UringCompletion> PopCompletion();

 private:
  // Mapping: one region mapped from the ring descriptor, unmapped by the destructor.
  struct Mapping {
    void* address = nullptr;
    size_t bytes = 0;
    Mapping() = default;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping();
  };

  UringRing() = default;

  int fd_ = -1;
  Mapping sq_ring_;
  Mapping cq_ring_;  // empty when the kernel maps both rings at once (IORING_FEAT_SINGLE_MMAP)
  Mapping sqes_;
  unsigned sq_entries_ = 0;
  // Pointers into the mappings.
  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned* sq_array_ = nullptr;
  void* sqe_base_ = nullptr;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned cq_mask_ = 0;
  void* cqe_base_ = nullptr;
  // queued_tail_: our tail, ahead of *sq_tail_ by the entries queued but not submitted.
  unsigned queued_tail_ = 0;
};

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_URING_H_
