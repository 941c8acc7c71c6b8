// loader/stream.cc — reader threads pulling planned spans into a Sink.
#include "loader/stream.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "loader/parallel.h"

namespace shardload {
namespace {

// ExceptionStatus: an exception caught where a Status is returned: resource_exhausted
// for bad_alloc, internal otherwise; `where()` (a callable returning std::string) says
// what threw. With no memory even for that message: resource_exhausted "out of
// memory". Never throws.
template <typename Where>
Status ExceptionStatus(const Where& where, std::exception_ptr e) noexcept {
  try {
    try {
      std::rethrow_exception(e);
    } catch (const std::bad_alloc&) {
      return ResourceExhaustedError(where() + ": out of memory");
    } catch (const std::exception& ex) {
      return InternalError(where() + ": unexpected exception: " + ex.what());
    } catch (...) {
      return InternalError(where() + ": unexpected exception");
    }
  } catch (...) {  // building the message failed
    return ResourceExhaustedError("out of memory");
  }
}

// CallProgress: options.progress(done, total) into *go_on; an exception it throws
// becomes an internal (or resource_exhausted) error naming the callback.
Status CallProgress(const StreamOptions& options, uint64_t done, uint64_t total, bool* go_on) {
  try {
    *go_on = options.progress(done, total);
    return OkStatus();
  } catch (...) {
    return ExceptionStatus([] { return std::string("progress callback"); },
                           std::current_exception());
  }
}

// Shared state of one Stream call.
struct Run {
  std::mutex mu;
  std::condition_variable cv;
  Status first_error;   // guarded by mu
  uint64_t done = 0;    // guarded by mu
  int running = 0;      // guarded by mu
  std::atomic<bool> stop{false};
  std::atomic<size_t> next{0};

  void Fail(Status s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (first_error.ok()) first_error = std::move(s);
    }
    stop.store(true);
    cv.notify_all();
  }
};

Status ValidateSpans(std::span<const ReadableFile* const> files, std::span<const ReadSpan> spans,
                     uint64_t* total) {
  *total = 0;
  for (const ReadSpan& s : spans) {
    if (s.shard >= files.size() || files[s.shard] == nullptr) {
      return InvalidArgumentError("span names shard " + std::to_string(s.shard) + " of " +
                                  std::to_string(files.size()) + " open files");
    }
    const ReadableFile& f = *files[s.shard];
    if (s.file_offset > f.size() || s.length > f.size() - s.file_offset) {
      return InvalidArgumentError(f.path() + ": span [" + std::to_string(s.file_offset) + ", " +
                                  std::to_string(s.file_offset + s.length) +
                                  ") passes the end of the file (" + std::to_string(f.size()) +
                                  " bytes)");
    }
    *total += s.length;  // each length is bounded by its file's size: no overflow in practice
  }
  return OkStatus();
}

Status CheckFiles(std::span<const ReadableFile* const> files, std::span<const ReadSpan> spans) {
  std::vector<bool> used(files.size(), false);
  for (const ReadSpan& s : spans) used[s.shard] = true;
  for (size_t i = 0; i < files.size(); ++i) {
    if (used[i]) SL_RETURN_IF_ERROR(files[i]->CheckUnchanged());
  }
  return OkStatus();
}

// ObserveStaged: options.observe_region over each region of a span read into `bytes`.
Status ObserveStaged(const ReadSpan& span, std::span<const std::byte> bytes,
                     const StreamOptions& options) {
  for (const CopyRegion& r : span.regions) {
    if (r.src_offset > bytes.size() || r.length > bytes.size() - r.src_offset) {
      return InternalError("region [" + std::to_string(r.src_offset) + ", +" +
                           std::to_string(r.length) + ") passes its span (" +
                           std::to_string(bytes.size()) + " bytes)");
    }
    SL_RETURN_IF_ERROR(options.observe_region(span, r, bytes.subspan(r.src_offset, r.length)));
  }
  return OkStatus();
}

// Described: a failed read's status with options.describe_span's text appended.
Status Described(Status s, const ReadSpan& span, const StreamOptions& options) {
  if (s.ok() || !options.describe_span) return s;
  return Status(s.code(), s.message() + " (" + options.describe_span(span) + ")");
}

// kObservedChunk: with observe_region on the direct path, each region is read and
// observed in pieces of at most this size, so the observer sees bytes still in cache.
constexpr uint64_t kObservedChunk = uint64_t{512} << 10;

// ReadObservedDirect: read a span straight into `iov` (its destination memory) region by
// region, in kObservedChunk pieces, calling observe_region on each piece right after its
// read. The regions tile the span in order (DirectTargets' contract), so a region's
// bytes sit at its src_offset in the concatenation of the iovecs, inside a single iovec
// (merging joins whole regions).
Status ReadObservedDirect(const ReadableFile& file, const ReadSpan& span,
                          const std::vector<iovec>& iov, const StreamOptions& options) {
  size_t k = 0;
  uint64_t base = 0;  // span offset of iov[k]
  for (const CopyRegion& r : span.regions) {
    if (r.length == 0) {
      SL_RETURN_IF_ERROR(options.observe_region(span, r, {}));
      continue;
    }
    while (k < iov.size() && r.src_offset >= base + iov[k].iov_len) {
      base += iov[k].iov_len;
      ++k;
    }
    if (k == iov.size() || r.src_offset < base || r.src_offset + r.length > base + iov[k].iov_len) {
      return InternalError("region [" + std::to_string(r.src_offset) + ", +" +
                           std::to_string(r.length) + ") is not inside one direct target");
    }
    std::byte* memory = static_cast<std::byte*>(iov[k].iov_base) + (r.src_offset - base);
    for (uint64_t at = 0; at < r.length; at += kObservedChunk) {
      const uint64_t n = std::min(kObservedChunk, r.length - at);
      std::span<std::byte> piece(memory + at, n);
      SL_RETURN_IF_ERROR(
          Described(file.ReadAt(span.file_offset + r.src_offset + at, piece), span, options));
      SL_RETURN_IF_ERROR(options.observe_region(
          span, CopyRegion{r.src_offset + at, n, r.dest, r.dst_offset + at}, piece));
    }
  }
  return OkStatus();
}

// DeliverSpan: read `span` and deliver it: straight into destination memory where the
// sink allows, else through a staging slot (observed, then committed). Sets *stopped,
// reading nothing, when the run stopped while it waited for a slot. A slot not yet
// handed to Commit goes back to the sink on every exit, exceptions included.
Status DeliverSpan(const ReadableFile& file, const ReadSpan& span, Sink& sink,
                   const StreamOptions& options, const Run& run, std::vector<iovec>& iov,
                   bool* stopped) {
  if (span.length == 0) return OkStatus();  // empty tensors: nothing to read or deliver
  if (options.allow_direct_targets && !file.direct_io() && sink.DirectTargets(span, &iov)) {
    return options.observe_region ? ReadObservedDirect(file, span, iov, options)
                                  : Described(file.ReadVAt(span.file_offset, iov), span, options);
  }
  SL_ASSIGN_OR_RETURN(StagingSlot slot, sink.AcquireSlot());
  struct Lent {
    Sink& sink;
    const StagingSlot& slot;
    bool held = true;
    ~Lent() {
      if (held) sink.ReleaseSlot(slot);
    }
  } lent{sink, slot};
  if (run.stop.load()) {
    *stopped = true;
    return OkStatus();
  }
  Result<std::span<const std::byte>> read =
      file.ReadWindowAt(span.file_offset, span.length, slot.memory);
  if (!read.ok()) return Described(read.status(), span, options);
  std::span<const std::byte> window = *read;
  if (options.observe_region) SL_RETURN_IF_ERROR(ObserveStaged(span, window, options));
  lent.held = false;  // Commit frees the slot itself, on success and on error
  return sink.Commit(slot, span, window);
}

void ReadLoop(std::span<const ReadableFile* const> files, std::span<const ReadSpan> spans,
              const std::vector<size_t>& order, Sink& sink, const StreamOptions& options, Run& run) {
  std::vector<iovec> iov;
  while (!run.stop.load(std::memory_order_relaxed)) {
    if (options.cancel != nullptr && options.cancel->load()) {
      run.Fail(CancelledError("load cancelled"));
      break;
    }
    size_t k = run.next.fetch_add(1);
    if (k >= order.size()) break;
    const ReadSpan& span = spans[order[k]];
    const ReadableFile& file = *files[span.shard];
    Status st;
    bool stopped = false;
    try {
      st = DeliverSpan(file, span, sink, options, run, iov, &stopped);
    } catch (...) {
      // An exception on a reader thread (out of memory in an observer, a sink or a
      // message; an observer's own): an error for the load, never std::terminate.
      st = ExceptionStatus(
          [&] {
            return file.path() + ": reading bytes [" + std::to_string(span.file_offset) + ", " +
                   std::to_string(span.file_offset + span.length) + ")";
          },
          std::current_exception());
    }
    if (stopped) break;
    if (!st.ok()) {
      run.Fail(std::move(st));
      break;
    }
    {
      std::lock_guard<std::mutex> lock(run.mu);
      run.done += span.length;
    }
    run.cv.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(run.mu);
    --run.running;
  }
  run.cv.notify_all();
}

}  // namespace

std::vector<size_t> InterleaveShards(std::span<const ReadSpan> spans, size_t shard_count) {
  std::vector<std::vector<size_t>> per_shard(shard_count);
  for (size_t i = 0; i < spans.size(); ++i) per_shard[spans[i].shard].push_back(i);
  // Shards that still have spans: each round visits only those, so the cost is
  // O(spans + shards), not rounds x shards (one big shard among thousands of small
  // ones with tiny slots made the latter ~10^10 steps).
  std::vector<size_t> active;
  for (size_t s = 0; s < shard_count; ++s) {
    if (!per_shard[s].empty()) active.push_back(s);
  }
  std::vector<size_t> order;
  order.reserve(spans.size());
  for (size_t round = 0; !active.empty(); ++round) {
    size_t kept = 0;
    for (size_t s : active) {
      order.push_back(per_shard[s][round]);
      if (round + 1 < per_shard[s].size()) active[kept++] = s;
    }
    active.resize(kept);
  }
  return order;
}

int StreamThreadCount(int threads, size_t span_count) {
  return static_cast<int>(
      std::min<size_t>(ResolveThreadCount(threads), std::max<size_t>(1, span_count)));
}

Status Stream(std::span<const ReadableFile* const> files, std::span<const ReadSpan> spans,
              Sink& sink, const StreamOptions& options) {
  auto abort_with = [&sink](Status s) {
    sink.Abort();
    return s;
  };
  if (options.threads < 0 || options.threads > 256) {
    return abort_with(InvalidArgumentError("invalid threads " + std::to_string(options.threads) +
                                           ": expected 0..256 (0 = hardware threads)"));
  }
  uint64_t total = 0;
  if (Status s = ValidateSpans(files, spans, &total); !s.ok()) return abort_with(s);
  if (options.check_unchanged) {
    if (Status s = CheckFiles(files, spans); !s.ok()) return abort_with(s);
  }
  if (options.cancel != nullptr && options.cancel->load()) {
    return abort_with(CancelledError("load cancelled"));
  }

  if (options.progress) {
    bool go_on = true;
    if (Status s = CallProgress(options, 0, total, &go_on); !s.ok()) return abort_with(s);
    if (!go_on) return abort_with(CancelledError("load cancelled by the progress callback"));
  }

  const std::vector<size_t> order = InterleaveShards(spans, files.size());
  const int threads = StreamThreadCount(options.threads, spans.size());

  Run run;
  std::vector<std::thread> readers;
  readers.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    {
      std::lock_guard<std::mutex> lock(run.mu);
      ++run.running;
    }
    try {
      readers.emplace_back(
          [&] { ReadLoop(files, spans, order, sink, options, run); });
    } catch (const std::exception& e) {
      {
        std::lock_guard<std::mutex> lock(run.mu);
        --run.running;
      }
      if (readers.empty()) {
        run.Fail(ResourceExhaustedError(std::string("cannot start a reader thread: ") + e.what()));
      }
      break;  // go on with the readers that did start
    }
  }

  // Report progress and watch the cancel flag until every reader has stopped.
  uint64_t reported = 0;
  {
    std::unique_lock<std::mutex> lock(run.mu);
    while (true) {
      run.cv.wait_for(lock, std::chrono::milliseconds(20),
                      [&] { return run.running == 0 || run.done != reported; });
      bool finished = run.running == 0;
      uint64_t done = run.done;
      if (options.cancel != nullptr && options.cancel->load() && !run.stop.load()) {
        lock.unlock();
        run.Fail(CancelledError("load cancelled"));
        lock.lock();
      }
      if (options.progress && done != reported && !run.stop.load() && done != total) {
        lock.unlock();
        bool go_on = true;
        Status s = CallProgress(options, done, total, &go_on);
        if (!s.ok()) {
          run.Fail(std::move(s));  // the readers stop; joined below
        } else if (!go_on) {
          run.Fail(CancelledError("load cancelled by the progress callback"));
        }
        lock.lock();
      }
      reported = done;
      if (finished) break;
    }
  }
  for (std::thread& t : readers) t.join();

  Status status;
  {
    std::lock_guard<std::mutex> lock(run.mu);
    status = run.first_error;
  }
  if (!status.ok()) return abort_with(status);
  if (options.check_unchanged) {
    if (Status s = CheckFiles(files, spans); !s.ok()) return abort_with(s);
  }
  if (Status s = sink.Finish(); !s.ok()) return abort_with(s);
  if (options.progress) {  // complete: nothing left to cancel, but a throw is an error
    bool ignored = true;
    SL_RETURN_IF_ERROR(CallProgress(options, total, total, &ignored));
  }
  return OkStatus();
}

}  // namespace shardload
