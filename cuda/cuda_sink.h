// cuda/cuda_sink.h — the Sink that streams checkpoint bytes into GPU memory.
//
// Provides `CudaSink` (implements loader/sink.h) and `StagingPool`. The sink owns a
// ring of staging slots in pinned host memory (pageable where pinning is refused, see
// CudaSinkOptions::pageable_fallback; each slot is slot_bytes + 8 KiB, 4096-aligned, so
// O_DIRECT windows fit; by default 16 × 16 MiB = 256 MiB in all). Reader threads fill a
// slot; Commit issues one cudaMemcpyAsync per run of contiguous regions on a
// per-device stream (round-robin over `streams_per_device` streams), records the
// slot's event on every device it touched and returns without waiting, so the read
// into slot k+1 overlaps the DMA of slot k. AcquireSlot hands out a free slot or
// waits (cudaEventSynchronize, outside the lock) for the oldest slot in flight.
// Host destinations in the same load are served by memcpy from the slot (or
// DirectTargets when a whole span goes to host memory uncast).
//
// Casts (F32 / F16 / BF16) run on the GPU: the raw bytes are copied into a per-slot
// device scratch buffer (slot_bytes on every device that receives a cast tensor,
// allocated at Begin) and a kernel converts them into the destination on the same
// stream. Host destinations are cast on the host with the same arithmetic.
//
// The slots are always this sink's own memory, so DMA never reads file-backed pages.
// Without any CUDA destination in a load the ring is plain (pageable) aligned memory
// and no CUDA call is made at all, so the ring logic also runs on machines without a
// GPU. The ring is reused by the next Begin while it is large enough; a StagingPool
// (held by CudaBackend) carries it from one sink to the next, so pinned memory never
// grows with the checkpoint.
//
//   CudaSinkOptions options;                          // 256 MiB ring, 2 streams/device
//   SL_ASSIGN_OR_RETURN(std::unique_ptr<CudaSink> sink, CudaSink::Create(options));
//   SL_RETURN_IF_ERROR(sink->Begin(destinations, options.ring.slot_bytes));
//   ... reader threads: AcquireSlot → read → Commit ...
//   SL_RETURN_IF_ERROR(sink->Finish());              // or sink->Abort()
#ifndef SHARDLOAD_CUDA_CUDA_SINK_H_
#define SHARDLOAD_CUDA_CUDA_SINK_H_

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cuda/runtime.h"
#include "format/status.h"
#include "loader/backend.h"
#include "loader/sink.h"

namespace shardload::cuda {

// CudaSinkOptions: geometry and tuning of a CudaSink.
struct CudaSinkOptions {
  // ring: slot count (default 16, valid 1..64) and slot bytes (default 16 MiB − 8 KiB, valid
  // 4 KiB .. 1 GiB, a multiple of 4096), as documented in loader/backend.h. Pinned
  // staging memory is slot_count × (slot_bytes + 8 KiB).
  SinkOptions ring;
  // pinned_mode: how pinned slots are allocated. Default kHostAlloc.
  PinnedMode pinned_mode = PinnedMode::kHostAlloc;
  // streams_per_device: copy streams per device, used round-robin by commits.
  // Default 2. Valid: 1..16.
  int streams_per_device = 2;
  // pageable_fallback: when pinned memory for the ring is refused (PinnedBuffer's
  // resource_exhausted, out of pinned memory, or unimplemented, a platform that cannot
  // pin: cudaHostAlloc memory the kernel cannot read into and cudaHostRegister
  // refused, as in some sandboxes), stage through pageable memory instead of failing
  // Begin, and say so in Warnings(). The copies still work (the driver stages pageable
  // memory itself; a slot is reused only after its copies' event completed, as with
  // pinned memory) but run slower. After a shortage every later Begin asks for pinned
  // memory again (so the slowdown ends with its cause); after an unimplemented refusal
  // the pageable ring is kept and reused without asking again (it would only be
  // refused again, at the cost of a full allocation) until the ring is dropped
  // (StagingPool::Clear, CudaBackend::ReleaseCachedStaging, another geometry). A
  // pageable ring never displaces a pinned one in a StagingPool. Other errors (no
  // usable device, a sticky error) fail Begin either way. Default true; false: Begin
  // fails with the allocation's error.
  bool pageable_fallback = true;
};

// ValidateCudaSinkOptions: invalid_argument naming the field and its valid range
// ("sink slot_count 0 is out of range 1..64"), never clamped.
Status ValidateCudaSinkOptions(const CudaSinkOptions& options);

// StagingPool: keeps the staging ring of a destroyed sink for the next sink created
// with the same pool (at most one ring is kept). Thread safety: all methods may be
// called concurrently. A pool may outlive or predecease its sinks (shared ownership).
class StagingPool {
 public:
  StagingPool();
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // cached_bytes: staging bytes held by the pool now (0 when empty).
  uint64_t cached_bytes() const;
  // cached_is_pinned: whether the held ring is pinned memory.
  bool cached_is_pinned() const;
  // Clear: free the held ring; returns its bytes (0 when empty).
  uint64_t Clear();

 private:
  friend class CudaSink;
  struct State;
  std::unique_ptr<State> state_;
};

// CudaSink: see the top of this file. Thread safety: as loader/sink.h (AcquireSlot,
// Commit, ReleaseSlot, DirectTargets concurrently; Begin, Finish, Abort from the
// driving thread). Lifetime: destinations passed to Begin must stay valid until
// Finish/Abort returns; the sink must not be destroyed while readers use it. After a
// Commit returns (OK or not) the slot is no longer the caller's. AcquireSlot and
// Commit leave a device of the load current on the calling thread (MakeDeviceCurrent:
// a fresh reader thread would otherwise bind device 0's context), so readers are
// threads the loader owns, never the caller's.
class CudaSink final : public Sink {
 public:
  // Create: a sink with `options` (validated) taking its ring from `pool` when it fits
  // and returning it there on destruction (pool may be null). Allocates nothing yet.
  static Result<std::unique_ptr<CudaSink>> Create(const CudaSinkOptions& options,
                                                  std::shared_ptr<StagingPool> pool = nullptr);
  ~CudaSink() override;
  CudaSink(const CudaSink&) = delete;
  CudaSink& operator=(const CudaSink&) = delete;

  // Begin: validates every destination (an existing device, a non-null pointer when it
  // has bytes, a convertible dtype pair, element-aligned cast destinations), then
  // prepares the ring (pinned when any destination is on CUDA; pageable when pinning
  // is refused, see CudaSinkOptions::pageable_fallback), streams, events and
  // cast scratch. Errors: invalid_argument naming the tensor ("tensor 'w': cuda:0: no
  // such CUDA device (0 devices: ...)", "tensor 'w': cannot convert I32 to F32 ..."),
  // invalid_argument when slot_bytes is 0 or larger than the ring's slot size,
  // failed_precondition when a previous load is still open; resource_exhausted when
  // staging or scratch memory cannot be had; CUDA errors naming call and device.
  Status Begin(std::span<const Destination> destinations, uint64_t slot_bytes) override;

  // AcquireSlot: a free slot; waits for the oldest slot in flight when none is free.
  // Errors: failed_precondition outside Begin..Finish; cancelled after Abort; the first
  // error of an earlier copy (naming the tensors of that slot and the device).
  Result<StagingSlot> AcquireSlot() override;

  // Commit: validates every region against the span's bytes and its destination
  // (out_of_range / invalid_argument naming tensor, device and byte range; nothing is
  // written then), delivers host regions synchronously and queues device regions.
  // `bytes` must lie inside slot.memory. Errors also name tensor and device for CUDA
  // failures: "tensor 'w': cudaMemcpyAsync(cuda:0): cudaErrorInvalidValue: invalid argument".
  Status Commit(const StagingSlot& slot, const ReadSpan& span,
                std::span<const std::byte> bytes) override;

  // ReleaseSlot: return a lent slot unused. Unknown or not-lent slots are ignored.
  void ReleaseSlot(const StagingSlot& slot) override;

  // DirectTargets: true (with one iovec per region) when every region of the span goes
  // uncast to host memory, the regions tile the span from byte 0 to its end, and all
  // of them are in bounds.
  bool DirectTargets(const ReadSpan& span, std::vector<iovec>* iov) override;

  // Finish: waits for every queued copy and kernel, synchronises the streams and returns
  // the first error of the load (OK otherwise). failed_precondition when slots are still
  // lent to readers. Ends the load either way; the ring stays for the next Begin.
  Status Finish() override;

  // Abort: wakes waiting readers (they get cancelled), waits for queued device work to
  // drain, drops everything and ends the load. Never fails.
  void Abort() override;

  // Warnings: for the load Begin last prepared, one line when its CUDA copies stage
  // through pageable memory because pinning was refused ("pinned staging memory was
  // refused (cudaHostAlloc: ...): the copies to the GPU ran from N bytes of pageable
  // memory instead, ..."); empty otherwise. Thread-safe.
  std::vector<std::string> Warnings() const override;

  // Introspection for tests and benchmarks (thread-safe).
  // staging_bytes: bytes of staging memory held by this sink now.
  uint64_t staging_bytes() const;
  // staging_is_pinned: whether that memory is pinned.
  bool staging_is_pinned() const;
  // ring_allocations: how many rings this sink has allocated itself (reuse keeps it 1).
  int ring_allocations() const;
  // scratch_bytes: device scratch held for casts, summed over devices.
  uint64_t scratch_bytes() const;

 private:
  struct Impl;
  explicit CudaSink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shardload::cuda

#endif  // SHARDLOAD_CUDA_CUDA_SINK_H_
