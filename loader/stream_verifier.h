// loader/stream_verifier.h — checks recorded XXH3 hashes on bytes as they stream by.
//
// Provides `StreamVerifier`, the machinery of LoadOptions::verify: the streaming engine
// hands it every region's source bytes (StreamOptions::observe_region, reader threads)
// and it hashes each destination's stored tensor and compares the result with the
// checkpoint's records (RecordedChecksums). A region covering a whole tensor is hashed
// and checked at once; a tensor split over several spans is fed to its own hasher in
// source order, a piece that arrives before its predecessor being copied aside until the
// gap is filled (memory: at most the tensor's size; in practice a few spans, since
// readers take spans in file order).
//
//   StreamVerifier v(std::move(sums), {{"w", 4096}});      // destination 0 = stored "w"
//   options.observe_region = [&v](const ReadSpan&, const CopyRegion& r,
//                                 std::span<const std::byte> b) { return v.Observe(r, b); };
//   SL_RETURN_IF_ERROR(Stream(files, spans, sink, options));
//   SL_RETURN_IF_ERROR(v.Finish());
#ifndef SHARDLOAD_LOADER_STREAM_VERIFIER_H_
#define SHARDLOAD_LOADER_STREAM_VERIFIER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "format/checksum.h"
#include "format/status.h"
#include "loader/checkpoint_hash.h"
#include "loader/sink.h"

namespace shardload {

// StreamVerifier: see the file comment. Thread safety: Observe may be called from any
// number of threads at once; Finish after every Observe has returned. Not copyable.
class StreamVerifier {
 public:
  // Source: the stored tensor behind one destination: its name (the records' key) and
  // its stored size in bytes (the source bytes regions carry, before any cast).
  struct Source {
    std::string name;
    uint64_t bytes = 0;
  };

  // StreamVerifier: destination i of the load is `sources[i]`. Destinations whose
  // tensor has no record are not hashed. When `collect` is false (LoadOptions::verify),
  // the first mismatch is returned by Observe or Finish and fails the stream; when
  // true (VerifyCheckpoint), mismatches are kept and listed by TakeMismatches, Observe
  // and Finish failing only for internal errors.
  StreamVerifier(RecordedChecksums sums, std::span<const Source> sources, bool collect = false);
  StreamVerifier(const StreamVerifier&) = delete;
  StreamVerifier& operator=(const StreamVerifier&) = delete;

  // Observe: `bytes` are the source bytes of `region` (region.length of them, at
  // source offset region.dst_offset of tensor region.dest). Errors: data_loss from
  // RecordedChecksums::CheckXxh3 once the tensor is complete and differs ("<file>:
  // tensor 'w' at bytes [a, b): XXH3 of its N bytes is X, recorded Y"); internal for a region naming no
  // destination, of the wrong length, passing the tensor's end or repeating a piece.
  Status Observe(const CopyRegion& region, std::span<const std::byte> bytes);

  // Finish: after a successful stream: checks recorded empty tensors (never observed)
  // and fails with internal if a recorded non-empty tensor was not seen whole ("verify:
  // tensor 'w' (N bytes) was never streamed" / "... was streamed up to byte K of N"), so
  // a region that never reached the verifier cannot pass as checked.
  Status Finish();

  // recorded: the number of destinations whose tensor has a record (each is checked).
  size_t recorded() const { return recorded_; }

  // TakeMismatches: collecting mode, after Finish: every mismatch (error: CheckXxh3's
  // data_loss), by destination index.
  std::vector<HashMismatch> TakeMismatches();

  // Observer: Observe as a StreamOptions::observe_region callback (the span is not
  // needed). The verifier must outlive the stream.
  auto Observer() {
    return [this](const ReadSpan&, const CopyRegion& region, std::span<const std::byte> bytes) {
      return Observe(region, bytes);
    };
  }

 private:
  // Checked: the outcome of comparing a complete tensor with its record: in collecting
  // mode a mismatch is kept and OK returned.
  Status Checked(size_t dest, uint64_t xxh3);

  struct Tensor {
    bool recorded = false;
    std::atomic<bool> checked{false};  // compared with its record (Checked ran)
    Source source;
    std::mutex mu;
    Xxh3Hasher hasher;  // split tensors: bytes [0, next) hashed so far
    uint64_t next = 0;
    std::map<uint64_t, std::vector<std::byte>> pending;  // early pieces by offset
  };
  RecordedChecksums sums_;
  std::unique_ptr<Tensor[]> tensors_;
  size_t count_ = 0;
  size_t recorded_ = 0;
  bool collect_ = false;
  std::mutex mismatches_mu_;
  std::vector<std::pair<size_t, HashMismatch>> mismatches_;  // by destination; mismatches_mu_
};

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_STREAM_VERIFIER_H_
