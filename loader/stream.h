// loader/stream.h — the streaming engine: planned reads → a Sink, on several threads.
//
// Provides `Stream`, which drives reader threads over a list of planned `ReadSpan`s.
// Spans of different shards are interleaved so that several files are read at once.
// Per span a reader either reads straight into destination memory (when the sink's
// DirectTargets gives iovecs: the zero-extra-copy host path) or borrows a staging slot,
// reads into it (an aligned window for O_DIRECT files) and commits it to the sink.
// On any error or cancel every reader stops, the sink is aborted and the FIRST error is
// returned; a load never reports partial success.
//
//   std::vector<const ReadableFile*> files = ...;    // one per shard, index = ReadSpan::shard
//   SL_RETURN_IF_ERROR(sink.Begin(plan.destinations, slot_bytes));
//   StreamOptions options;
//   options.progress = [](uint64_t done, uint64_t total) { return true; };
//   SL_RETURN_IF_ERROR(Stream(files, plan.spans, sink, options));
#ifndef SHARDLOAD_LOADER_STREAM_H_
#define SHARDLOAD_LOADER_STREAM_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "format/status.h"
#include "loader/file.h"
#include "loader/sink.h"

namespace shardload {

// StreamOptions: knobs of one Stream call.
struct StreamOptions {
  // threads: reader threads; 0 = std::thread::hardware_concurrency(). Default 0.
  // Valid: 0..256.
  int threads = 0;
  // progress: called on the calling thread with (bytes read, total bytes of all spans):
  // first (0, total) before any read, then non-decreasing values as spans complete,
  // and last (total, total) once the sink has finished. Returning
  // false before that cancels the load (Stream then returns cancelled); the final
  // call's answer is ignored. An exception it throws fails the load with internal
  // "progress callback: unexpected exception: <what>" (resource_exhausted "progress
  // callback: out of memory" for bad_alloc), after the readers have stopped (from the
  // final call: the bytes are in place, but the load reports that error). Default: none.
  std::function<bool(uint64_t done, uint64_t total)> progress;
  // cancel: when it becomes true the load stops and returns cancelled. Default: none.
  const std::atomic<bool>* cancel = nullptr;
  // check_unchanged: before reading, check that every file still has its size and
  // inode from open (CheckUnchanged), and again after the last read. Default true.
  bool check_unchanged = true;
  // allow_direct_targets: let the sink take reads straight into destination memory.
  // Default true; false forces every span through the staging ring (tests, benchmarks).
  bool allow_direct_targets = true;
  // observe_region: when set, called on the reader thread with the SOURCE bytes (file
  // bytes, before any cast) of every region of every span, right after they were read:
  // inside the staging slot before Commit (the whole region at once), or on the direct
  // path in destination memory, where the region is read and observed in consecutive
  // pieces of at most 512 KiB (a CopyRegion with src_offset/dst_offset advanced and the
  // piece's length), so the bytes are still in cache. Regions and pieces of one span
  // are observed in order on one thread; spans arrive in any order and concurrently, so
  // the callback must be thread-safe. A non-OK status fails the load with that status
  // (the slot is released, the sink aborted). Used by LoadOptions::verify. Default: none.
  std::function<Status(const ReadSpan& span, const CopyRegion& region,
                       std::span<const std::byte> source)>
      observe_region;
  // describe_span: when set, a failed read of a span (a file that shrank, an I/O error)
  // gets " (<description>)" appended to its message, e.g. the tensors stored in the
  // span's bytes (Checkpoint::DescribeBytes). Called on the reader thread, only after
  // a failure. Default: none.
  std::function<std::string(const ReadSpan& span)> describe_span;
};

// StreamThreadCount: how many reader threads Stream starts for `threads` (0 = hardware
// threads) and `span_count` spans: never more than the spans, at least one.
int StreamThreadCount(int threads, size_t span_count);

// InterleaveShards: the order Stream reads `spans` in: indices round-robin over the
// shards that still have spans (span.shard < shard_count), each shard's spans in
// their given order, so neighbouring readers hit different files. O(spans + shards).
std::vector<size_t> InterleaveShards(std::span<const ReadSpan> spans, size_t shard_count);

// Stream: read every span of `spans` from `files[span.shard]` and deliver it to `sink`.
// The caller has called sink.Begin(...); Stream calls sink.Finish() on success and
// sink.Abort() on failure. Errors: invalid_argument for bad options or a span that
// names a missing shard or passes its file's end ("<path>: span [a, b) passes the end of
// the file (N bytes)"); the first error of a read, an observe_region call, a commit or
// the final Finish; an exception thrown on a reader thread (by an observer or a sink) as
// internal "<path>: reading bytes [a, b): unexpected exception: <what>"
// (resource_exhausted "...: out of memory" for bad_alloc); data_loss
// from CheckUnchanged; cancelled "load cancelled" (cancel flag) or "load cancelled by the
// progress callback". Thread safety: `files` must allow concurrent reads (every
// ReadableFile does); the call itself blocks until all readers have stopped.
Status Stream(std::span<const ReadableFile* const> files, std::span<const ReadSpan> spans,
              Sink& sink, const StreamOptions& options);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_STREAM_H_
