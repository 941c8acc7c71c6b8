// loader/sink.h — the contract between the streaming engine and where bytes end up.
//
// Provides `Destination` (one target tensor's memory), `CopyRegion` / `ReadSpan` (a
// planned contiguous file read and where its pieces go) and `Sink`, the interface the
// streaming engine drives. `HostSink` (loader/host_sink.h) copies into host memory;
// `CudaSink` (cuda/cuda_sink.h) stages through pinned slots and copies asynchronously.
//
//   The engine, for every planned span, on each of its reader threads:
//     StagingSlot slot = sink.AcquireSlot();           // blocks until a slot is free
//     file.ReadAt(span.file_offset, slot.memory ...);   // pread / mmap copy / O_DIRECT
//     sink.Commit(slot, span, bytes_in_slot);           // memcpy, cast, or cudaMemcpyAsync
//   then sink.Finish() once (or sink.Abort() on any error or cancel).
#ifndef SHARDLOAD_LOADER_SINK_H_
#define SHARDLOAD_LOADER_SINK_H_

#include <sys/uio.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "format/status.h"
#include "loader/device.h"

namespace shardload {

// WaitNotified: what `cv.wait(lock)` does (returns after a notification or a spurious
// wake-up; the caller re-checks its condition), through `wait_until` on the steady
// clock. The reason is the binary's portability: libstdc++ 12 moved
// condition_variable::wait(unique_lock&) to a new symbol version (GLIBCXX_3.4.30),
// which would make libshardload.so need GCC 12's libstdc++ at run time (no
// manylinux_2_34 wheel, no RHEL 9), while wait_until is inlined into a
// pthread_cond_clockwait call. The sinks' waits go through this; plain cv.wait is
// not used in the library.
inline void WaitNotified(std::condition_variable& cv, std::unique_lock<std::mutex>& lock) {
  cv.wait_until(lock, std::chrono::steady_clock::now() + std::chrono::hours(1));
}

// Destination: the memory one matched target is written to.
// `ptr` is a host pointer for a cpu device and a device pointer for a cuda device;
// `bytes` is the size at the destination dtype. The memory is owned by the caller
// (load_state_dict style) or by an arena of the load (load_file style) and must
// outlive the load.
struct Destination {
  void* ptr = nullptr;
  uint64_t bytes = 0;
  Device device;
  Dtype src_dtype = Dtype::kU8;  // dtype stored in the checkpoint
  Dtype dst_dtype = Dtype::kU8;  // dtype wanted; differs only for a requested cast
  std::string name;              // target name, for error messages
};

// CopyRegion: `length` source bytes at `src_offset` inside a span go to destination
// `dest` (an index into the plan's destinations) at source-byte offset `dst_offset`
// of that tensor. With a cast the destination byte position is
// dst_offset / src_elem_bytes * dst_elem_bytes; regions of a cast tensor always start
// and end on element boundaries.
struct CopyRegion {
  uint64_t src_offset = 0;
  uint64_t length = 0;
  uint32_t dest = 0;
  uint64_t dst_offset = 0;
};

// ReadSpan: one contiguous read of `length` bytes at absolute `file_offset` of shard
// `shard`, at most the plan's slot size, with the regions it feeds (sorted by
// src_offset, not overlapping — except that a tied stored tensor feeding several
// destinations has one region per destination over the same source bytes, so a sink
// must not assume each source byte goes to one place). Bytes of a span not covered
// by a region are read and dropped (gaps left by tensors that are not loaded, when
// coalescing over them is cheaper than another read).
struct ReadSpan {
  uint32_t shard = 0;
  uint64_t file_offset = 0;
  uint64_t length = 0;
  std::vector<CopyRegion> regions;
};

// StagingSlot: one buffer of the sink's ring, lent to one reader thread between
// AcquireSlot and Commit/ReleaseSlot. `memory` is at least slot_bytes + 2 * 4096 long
// and 4096-aligned so O_DIRECT windows fit.
struct StagingSlot {
  int id = -1;
  std::span<std::byte> memory;
};

// Sink: where streamed bytes are delivered. Implementations document their own ring
// geometry. Thread safety: AcquireSlot, Commit, ReleaseSlot and DirectTargets may be
// called concurrently from several reader threads; Begin, Finish and Abort are called
// from the driving thread only, Begin before and Finish/Abort after all others.
class Sink {
 public:
  virtual ~Sink() = default;

  // Begin: prepare for a load writing into `destinations` with spans of at most
  // `slot_bytes`. Allocates the ring (or reuses it if large enough).
  // Errors: resource_exhausted when staging memory cannot be had.
  virtual Status Begin(std::span<const Destination> destinations, uint64_t slot_bytes) = 0;

  // AcquireSlot: a free staging slot; blocks until one is free (for CUDA, until the
  // event of its previous copy has completed). Errors: a failed earlier copy.
  virtual Result<StagingSlot> AcquireSlot() = 0;

  // Commit: `bytes` (inside slot.memory) hold span's file bytes; deliver each region.
  // May complete asynchronously; the slot becomes free again when delivery is done.
  // Errors name the destination tensor and device.
  virtual Status Commit(const StagingSlot& slot, const ReadSpan& span,
                        std::span<const std::byte> bytes) = 0;

  // ReleaseSlot: give back a slot that will not be committed (error paths).
  virtual void ReleaseSlot(const StagingSlot& slot) = 0;

  // DirectTargets: when the sink can take the span's bytes straight into destination
  // memory with no staging (host memory, no cast, regions covering the whole span),
  // fill `iov` with the regions' destination memory in order (one entry per region, or
  // fewer where a sink merges regions whose memory is contiguous) and return true.
  // Default: false.
  virtual bool DirectTargets(const ReadSpan& span, std::vector<iovec>* iov) {
    (void)span;
    (void)iov;
    return false;
  }

  // Finish: wait until every committed delivery is complete. Returns the first error.
  virtual Status Finish() = 0;

  // Abort: stop, wait for in-flight work to drain and drop it; after Abort no
  // destination may be assumed written. Never fails.
  virtual void Abort() = 0;

  // Warnings: what the caller of the load Begin last prepared should be told about how
  // it ran (one line each, e.g. a CUDA sink staging through pageable memory because
  // pinning was refused). Read after Finish. Default: none.
  virtual std::vector<std::string> Warnings() const { return {}; }
};

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_SINK_H_
