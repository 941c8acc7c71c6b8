// loader/checkpoint_hash.h — XXH3 of every tensor of a checkpoint, checked against the
// hashes its shards record.
//
// Provides `HashCheckpoint`: reads every tensor's bytes with positional reads (runs of
// tensors in file order, one per thread, each through one reusable buffer, so memory
// stays at threads × `HashOptions::chunk_bytes` whatever the tensor sizes) and returns
// one `TensorDigest`
// per tensor, sorted by name. Hashes recorded in a shard's `__metadata__` or, for a
// sharded checkpoint, in the index's "metadata" object (format/checksum.h,
// format/checksum_writer.h) are compared as the bytes go by. `LayoutFreeDigest` folds the
// per-tensor results into one value that depends only on names, dtypes, shapes and
// bytes, not on how tensors are split into shards or ordered in files.
//
//   SL_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open("/models/llama"));
//   SL_ASSIGN_OR_RETURN(CheckpointDigest d, HashCheckpoint(ckpt));
//   for (const TensorDigest& t : d.tensors) std::cout << FormatXxh3(t.xxh3) << " " << t.name;
//   std::cout << FormatXxh3(LayoutFreeDigest(d.tensors)) << "\n";
#ifndef SHARDLOAD_LOADER_CHECKPOINT_HASH_H_
#define SHARDLOAD_LOADER_CHECKPOINT_HASH_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "format/checksum.h"
#include "format/dtype.h"
#include "format/shape.h"
#include "format/status.h"
#include "loader/checkpoint.h"

namespace shardload {

// HashOptions: how HashCheckpoint reads and checks. Invalid values give
// invalid_argument before any read.
struct HashOptions {
  // chunk_bytes: the size of each positional read (and of each thread's one buffer).
  // Default 1 MiB (stays in cache between the read and the hash; measured faster than
  // 8 MiB, see bench/RESULTS.md); must be in [4096, 1 GiB].
  uint64_t chunk_bytes = uint64_t{1} << 20;
  // threads: how many threads read and hash, each a run of tensors in file order of
  // about equal bytes, with its own buffer (the shard files are opened together
  // first: OpenShardFiles, checkpoint.h); 0 (default) = the
  // hardware's threads. Must be in [0, 256]. Results and errors do not depend on it.
  int threads = 0;
  // check_recorded: when true (default), a tensor whose shard or index records a hash
  // that differs from its bytes fails the call with data_loss (CheckTensorChecksum's
  // message: the shard file holding the tensor, " in <index>" for the index's record),
  // and so does a malformed record (data_loss "<file>: __metadata__ key
  // 'shardload.xxh3.w': 'zz' is not a 16-digit hex XXH3 value"); when false,
  // mismatches are only reported through TensorDigest::recorded, and a malformed record
  // is skipped and counted in CheckpointDigest::malformed (the file's other records
  // still count).
  bool check_recorded = true;
  // cancelled: when set, called before each chunk is read (from the hashing threads,
  // so it must be thread-safe) and while waiting for the folder's lock to open the
  // shards; once it returns true the call fails with cancelled "hashing cancelled".
  // Default none.
  std::function<bool()> cancelled;
};

// TensorDigest: one tensor's identity and the XXH3-64 of its bytes. `recorded` is the
// hash recorded for it, if any: its shard's `__metadata__` entry, else the index's.
struct TensorDigest {
  std::string name;
  Dtype dtype = Dtype::kU8;
  Shape shape;
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
  std::optional<uint64_t> recorded;
  friend bool operator==(const TensorDigest&, const TensorDigest&) = default;
};

// CheckpointDigest: every tensor (sorted by name, as Checkpoint::tensors()), plus
// counts of the recorded hashes that were found and that matched.
struct CheckpointDigest {
  std::vector<TensorDigest> tensors;
  size_t recorded = 0;  // tensors with a recorded hash (shard or index)
  size_t matched = 0;   // ... whose bytes match every record
  // malformed: records skipped because their value is not 16 hex digits (only without
  // HashOptions::check_recorded, which fails on the first instead).
  size_t malformed = 0;
};

// HashCheckpoint: hash every tensor of `ckpt` (on options.threads threads).
// Errors: invalid_argument for bad options; the shard open/read errors of
// loader/file.h with " (reading tensor 'w')" appended; CheckShardFile's aborted (a
// shard replaced or removed since the checkpoint was opened: a rewrite raced the hash)
// or data_loss (its size changed in place; never SIGBUS); with
// check_recorded, the malformed-value error of ParseChecksumMetadata (shard or index) and
// data_loss "<file>: tensor 'w' at bytes [a, b): XXH3 of its N bytes is
// X, recorded Y" at the first mismatch in file order, <file> being the shard holding the
// tensor (" in <index>" appended when the record is the index's). Of several errors, the one at the earliest tensor in file order is
// returned, whatever the thread count (records are parsed before any read). A record naming a tensor that is not there (in that shard, or in the
// checkpoint for the index) is ignored.
// Thread safety: reads `ckpt` through const methods only; may run concurrently with
// other readers of the same Checkpoint.
Result<CheckpointDigest> HashCheckpoint(const Checkpoint& ckpt, const HashOptions& options = {});

// HashMismatch: a tensor whose bytes differ from the XXH3 its checkpoint records.
struct HashMismatch {
  std::string name;
  Status error;  // data_loss "<file>: tensor 'w' at bytes [a, b): XXH3 of its N bytes is X, recorded Y"
};

// RecordedChecksums: every hash a checkpoint records (shard `__metadata__` and index
// "metadata"), gathered once, for checking tensors loaded some other way (e.g. the
// bytes a load copied into host memory: `load --verify`).
//
//   SL_ASSIGN_OR_RETURN(RecordedChecksums sums, RecordedChecksums::FromCheckpoint(ckpt));
//   SL_RETURN_IF_ERROR(sums.Check("lm_head.weight", host_bytes));
// Thread safety: const methods may be called concurrently.
class RecordedChecksums {
 public:
  // FromCheckpoint: parse the records of every shard and of the index. A record for a
  // tensor that is not stored where it claims (another shard, or not in the
  // checkpoint) is dropped. Errors: ParseChecksumMetadata's data_loss for a malformed
  // value.
  static Result<RecordedChecksums> FromCheckpoint(const Checkpoint& ckpt);

  // size: the number of tensors with at least one record.
  size_t size() const { return records_.size(); }
  // Find: the recorded hash of `name` (the shard's record when both exist), or nullptr.
  const uint64_t* Find(std::string_view name) const;
  // Check: OK when `name` has no record or every record equals Xxh3(bytes); else
  // data_loss from CheckTensorChecksum: the file holding the tensor, its byte range,
  // and " in <index>" when the failing record is the index's.
  Status Check(std::string_view name, std::span<const std::byte> bytes) const;
  // CheckXxh3: as Check, for a tensor of `bytes` bytes whose XXH3 `actual` was computed
  // elsewhere (while streaming, or by HashCheckpoint).
  Status CheckXxh3(std::string_view name, uint64_t bytes, uint64_t actual) const;

 private:
  struct Record {
    std::optional<uint64_t> shard;  // from the tensor's shard
    std::optional<uint64_t> index;  // from the index
    std::string shard_file;         // the file holding the tensor's bytes
    uint64_t file_offset = 0;       // where they start in it
  };
  std::map<std::string, Record, std::less<>> records_;
  std::string index_file_;
};

// CheckWrittenFile: read back one safetensors file a writer just made (e.g. a staged
// shard, ShardOptions::check_staged in format/writer.h): open `path` as a one-file
// checkpoint, hash every tensor (HashCheckpoint with `options`, so each record the file
// carries is checked against its bytes), and check that the file holds exactly the
// tensors `names` (any order), each with an XXH3 record of its own (checked against
// its bytes when options.check_recorded, the default), equal to `expected` (e.g. the
// source's hashes, from ComputeChecksums). Returns the digests
// sorted by name (HashCheckpoint's order). `label` names the file in errors (e.g. "new
// <final name>" when `path` is a temporary one). Errors: Checkpoint::Open's and
// HashCheckpoint's, with `label` where they named `path` or its file name; data_loss
// "<label>: holds N tensors, M with an XXH3 record; K were written", "<label>: holds
// tensor 'w', which was not written to it" (not among `names`, or without an entry in
// `expected`) and "<label>: tensor 'w': XXH3 of its bytes
// is X, expected Y".
// Thread safety: reads only its arguments; may run concurrently with other calls.
Result<std::vector<TensorDigest>> CheckWrittenFile(const std::string& path,
                                                   const std::string& label,
                                                   std::span<const std::string> names,
                                                   const ChecksumMap& expected,
                                                   const HashOptions& options = {});

// CheckWrittenIndex: read back an index file a writer just made (e.g. the staged
// index of ShardOptions::check_staged): `path` must parse as an index
// (ReadIndexFile) whose weight map is exactly `weight_map` (tensor name → shard file
// name, any order). `label` names the file in errors. Errors: ReadIndexFile's, with
// `label` where they named `path` or its file name; data_loss "<label>: lists N
// tensors; M were written", "<label>: lists tensor 'w', which was not written" and
// "<label>: maps tensor 'w' to 'a.safetensors'; it was written to 'b.safetensors'".
// With `records`, the index's "metadata" must also hold each of those tensors' XXH3
// (format/checksum.h) with that value: ParseChecksumMetadata's data_loss for a
// malformed one, data_loss "<label>: records no XXH3 for tensor 'w'" and "<label>:
// records XXH3 X for tensor 'w'; its bytes hash to Y".
// Thread safety: reads only its arguments; may run concurrently with other calls.
Status CheckWrittenIndex(const std::string& path, const std::string& label,
                         std::span<const std::pair<std::string, std::string>> weight_map,
                         const ChecksumMap* records = nullptr);

// LayoutFreeDigest: the XXH3-64 of a canonical serialization of `tensors` sorted by
// name: for each tensor, little-endian u64 length + name bytes, u64 length + dtype
// name, u64 rank, each dimension as u64, then its u64 xxh3. Two checkpoints holding the
// same tensors (names, dtypes, shapes, bytes) give the same value however they are
// sharded; any difference changes it (up to hash collisions). `tensors` need not be
// sorted (a sorted copy is hashed); duplicate names are hashed as given.
uint64_t LayoutFreeDigest(std::span<const TensorDigest> tensors);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_CHECKPOINT_HASH_H_
