// loader/host_sink.h — the Sink that delivers streamed bytes into host memory.
//
// Provides `HostSink`: a ring of `slot_count` staging slots of the span size (plus two
// 4096-byte pages so O_DIRECT windows fit), shared by the reader threads. Commit copies
// each region to its destination (memcpy, or an F32/F16/BF16 cast from loader/cast.h).
// When no cast is needed and a span's regions cover it end to end, DirectTargets hands
// the engine the destination addresses, so the read lands in place with no extra copy.
//
//   SL_ASSIGN_OR_RETURN(std::unique_ptr<HostSink> sink, HostSink::Create(SinkOptions{}));
//   SL_RETURN_IF_ERROR(sink->Begin(plan.destinations, options.slot_bytes));
//   SL_RETURN_IF_ERROR(Stream(files, plan.spans, *sink, stream_options));  // Finish/Abort inside
#ifndef SHARDLOAD_LOADER_HOST_SINK_H_
#define SHARDLOAD_LOADER_HOST_SINK_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "format/status.h"
#include "loader/backend.h"
#include "loader/sink.h"

namespace shardload {

// ValidateSinkOptions: invalid_argument naming the field and its valid range when
// slot_count is outside 1..64 or slot_bytes outside 4 KiB..1 GiB or not a multiple of 4096.
Status ValidateSinkOptions(const SinkOptions& options);

// HostSink: delivers to destinations on `cpu`.
// Thread safety: as Sink (AcquireSlot / Commit / ReleaseSlot / DirectTargets from any
// number of reader threads at once). Commit always gives its slot back, also on error.
// Memory: the ring (slot_count × (slot_bytes + 8 KiB)) is allocated at the first Begin,
// kept for later loads that fit, and freed by the destructor.
class HostSink final : public Sink {
 public:
  // Create: a sink with the given ring geometry. Errors: ValidateSinkOptions.
  static Result<std::unique_ptr<HostSink>> Create(const SinkOptions& options);
  ~HostSink() override;

  // Begin: errors are failed_precondition for a destination that is not on cpu,
  // invalid_argument for an unsupported cast or a null pointer with bytes > 0, and
  // resource_exhausted when the ring cannot be allocated.
  Status Begin(std::span<const Destination> destinations, uint64_t slot_bytes) override;
  // AcquireSlot: errors: cancelled "load aborted" after Abort.
  Result<StagingSlot> AcquireSlot() override;
  // Commit: `bytes` must be span.length long. Errors: invalid_argument for a region
  // outside the span or its destination, naming the tensor.
  Status Commit(const StagingSlot& slot, const ReadSpan& span,
                std::span<const std::byte> bytes) override;
  void ReleaseSlot(const StagingSlot& slot) override;
  // DirectTargets: true when every region is uncast and the regions tile the span in
  // order (no gap, no tied repeat). Consecutive regions whose destination memory is
  // contiguous (neighbours in an arena laid out in file order) share one iovec, so a
  // whole span can be a single read. On false `iov` is left empty.
  bool DirectTargets(const ReadSpan& span, std::vector<iovec>* iov) override;
  Status Finish() override;
  void Abort() override;

  // slots_in_use: slots lent out and not yet committed or released.
  int slots_in_use() const;

 private:
  explicit HostSink(const SinkOptions& options);
  Status Deliver(const CopyRegion& region, std::span<const std::byte> bytes) const;

  struct Ring;
  SinkOptions options_;
  std::vector<Destination> destinations_;
  std::unique_ptr<Ring> ring_;
  uint64_t slot_stride_ = 0;  // bytes per slot in the ring
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> free_;  // ids of free slots
  bool aborted_ = false;
};

// LiveStagingRings: the number of host staging rings currently allocated in the
// process (tests use it to check that every path frees its memory).
int LiveStagingRings();

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_HOST_SINK_H_
