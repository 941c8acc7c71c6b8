// loader/checkpoint.h — one catalog over every tensor of a checkpoint.
//
// Provides `Checkpoint`, opened from a single `.safetensors` file, a sharded index
// (`*.safetensors.index.json`) or a folder holding either, and `CatalogOptions`.
// Opening reads only the headers (positional reads, shards in parallel) and checks the
// shard set as a whole: every shard the index names exists inside the folder, every
// index entry is in the shard it names, no tensor is stored twice, and every stored
// tensor is listed. The result is one name-sorted `StoredTensor` list that matching
// and planning work on, plus the shard list, the metadata and any warnings.
//
//   SL_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open("/models/llama-8b"));
//   for (const StoredTensor& t : ckpt.tensors())        // sorted by name
//     std::cout << t.name << " in " << ckpt.shards()[t.shard].file << "\n";
//   if (const StoredTensor* w = ckpt.Find("lm_head.weight")) { ... }
//   SL_ASSIGN_OR_RETURN(std::vector<std::byte> bytes, ckpt.ReadTensor("lm_head.weight"));
//   for (const std::string& w : ckpt.warnings()) std::cerr << "warning: " << w << "\n";
//
// Error messages start with the file they are about, named relative to the checkpoint
// folder ("model.safetensors.index.json: shard 'model-00003-of-00003.safetensors' does
// not exist"), except errors about the path given to Open, which use it as given.
#ifndef SHARDLOAD_LOADER_CHECKPOINT_H_
#define SHARDLOAD_LOADER_CHECKPOINT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/folder_lock.h"
#include "format/index.h"
#include "format/scoped_fd.h"
#include "format/status.h"
#include "loader/file.h"
#include "loader/stored_tensor.h"

namespace shardload {

// kUnlistedTensorPhrase: how Open's error (and, without strict_index, its warning) for
// a shard tensor the index does not list ends, for callers that recognize it (the CLI
// adds its --lenient-index hint).
inline constexpr std::string_view kUnlistedTensorPhrase = ", which the index does not list";

// CatalogOptions: how Checkpoint::Open treats a shard set. Invalid values (see each
// field) make Open fail with invalid_argument before any file is touched.
struct CatalogOptions {
  // strict_index: a tensor stored in a shard but absent from the index's weight_map is
  // an error when true (default), a warning in Checkpoint::warnings() when false.
  bool strict_index = true;
  // read_threads: threads reading shard headers in parallel. 0 (default) means
  // min(number of shards, 8); must be between 0 and 256.
  int read_threads = 0;
  // max_shards: the most shard files an index may name. Default 10000 (as
  // huggingface.js); must be at least 1; may be raised above the default.
  size_t max_shards = kMaxShardCount;
  // writer_wait_ms: how long Open waits while another process holds the folder's lock
  // (format/folder_lock.h; a shardload writer holds it from a rewrite's first rename
  // to the end of its sweep) before failing with unavailable. Default
  // kDefaultFolderLockWaitMs (60 s); must be >= 0. (Loads and HashCheckpoint of a
  // sharded checkpoint wait the default while they open shard files.)
  int64_t writer_wait_ms = kDefaultFolderLockWaitMs;
  // cancelled: when set, asked at every poll while Open waits for the folder's lock
  // (from the calling thread); once it returns true Open fails with cancelled
  // "<folder>: stopped while waiting for the folder's lock". Default none.
  std::function<bool()> cancelled;
};

// ShardInfo: one file of the checkpoint (the only file for a single-file checkpoint).
struct ShardInfo {
  std::string path;           // path used to open it: checkpoint folder + "/" + file
  std::string file;           // file name relative to the checkpoint folder
  uint64_t size = 0;          // file size in bytes when the header was read
  uint64_t header_length = 0; // N, the 8-byte little-endian prefix
  uint64_t data_start = 0;    // 8 + N: file offset of the data section
  std::map<std::string, std::string> metadata;  // this file's `__metadata__`
  FileIdentity identity;      // the file the header came from (format/scoped_fd.h)
  uint64_t header_xxh3 = 0;   // XXH3-64 of its JSON header bytes
};

class Checkpoint;

// CheckShardFile: OK when `file`, opened from `shard.path` after the checkpoint was
// opened (or held open since), has now (ReadableFile::Stat: its descriptor, not its
// path) the layout the catalog read: the same size, and either the same
// FileIdentity (device, inode, mtime, ctime) or, when that differs (a rewrite, a
// rename over it, but also a chmod, a `touch` or a FUSE inode renumbering), the same
// header bytes, read again from `file` and compared by XXH3. Tensor bytes themselves
// are not compared (LoadOptions::verify does that). Errors: aborted (a rewrite raced
// the caller) "<file>: file was replaced since the checkpoint was opened: it is now N
// bytes, M when its header was read (open the checkpoint again)" for another file of
// another size, and "<file>: file was replaced since the checkpoint was opened and its
// header differs (open the checkpoint again)" (a Hugging Face download renames new
// files over old ones, possibly of the same size: the tensors would be read at the old
// offsets); data_loss "<file>: file is now N bytes, but its header was read from M
// bytes" for the same file grown or cut short in place; the re-read's own errors.
// Thread-safe.
Status CheckShardFile(const ShardInfo& shard, const ReadableFile& file);

// CheckShardFile: the same for a caller that has just taken `file`'s `size` and
// identity `now` (ReadableFile::Stat, or size() and identity() right after opening it):
// checked as they are, without a second fstat.
Status CheckShardFile(const ShardInfo& shard, const ReadableFile& file, uint64_t size,
                      const std::optional<FileIdentity>& now);

// CheckShardHeaderBytes: OK when `file`'s header bytes (read again through it) are
// those the catalog read (length and XXH3), whatever its identity says (a write in
// the same timestamp tick keeps it). Errors: CheckShardFile's aborted "... its header
// differs ..."; resource_exhausted for the buffer; the read's errors. Thread-safe.
Status CheckShardHeaderBytes(const ShardInfo& shard, const ReadableFile& file);

// CheckStillAtPath: OK when `file`, opened earlier from `shard.path`, is still the file
// that path names (the same device and inode: fstat of its descriptor against stat of
// the path), so that files opened from the paths now are of the same save as it. Call
// it under the folder's shared lock. Files without an identity (test doubles) pass.
// Errors (aborted: a rewrite raced the caller): "<file>: replaced on disk since this
// checkpoint handle opened it, so it and the shards opened now would be of two saves
// (open the checkpoint again)", and "removed from disk ..." likewise; stat's other
// errors. Thread-safe.
Status CheckStillAtPath(const ShardInfo& shard, const ReadableFile& file);

// ShardGoneIfNotFound: `open_error` (from opening `shard.path` after Open), except that
// not_found becomes aborted "<file>: removed since the checkpoint was opened (open the
// checkpoint again)": the catalog found the file, so a rewrite (or a person) removed it.
Status ShardGoneIfNotFound(const ShardInfo& shard, Status open_error);

// OpenShardChecked: shard `shard`'s file, opened with OpenFile in `mode` and checked
// with CheckShardFile on the size and identity the open saw (which its reads go by).
// Errors: ShardGoneIfNotFound's aborted for a file gone since Open; OpenFile's other
// errors; CheckShardFile's. Takes no lock. Thread-safe.
Result<std::unique_ptr<ReadableFile>> OpenShardChecked(const ShardInfo& shard, IoMode mode,
                                                       const UringOptions& uring);

// OpenShardFiles: the files of every shard i with `used[i]` (`used` has one entry per
// shard), opened with OpenFile in `mode` and checked with CheckShardFile (on the size
// and identity the open saw, which later reads go by), all while the folder's shared
// lock is held (LockFolder, waiting up to kDefaultFolderLockWaitMs, and asking
// `cancelled`, when set, at every poll): a shardload writer renames a rewrite's files
// in one by one under the exclusive lock, and CheckShardFile accepts a shard replaced
// since Open by one of the same layout, so files opened apart could be of two saves.
// No lock is taken when nothing is used, nor for a checkpoint of one file (whole by
// itself), unless that file is missing at first (a writer without hard links sets it
// aside for a moment): then it is opened again under the lock. `files` gets one entry per shard (null where
// unused). Errors: the lock's unavailable, or cancelled "<folder>: stopped while
// waiting for the folder's lock"; then the first shard's failure, in shard order — or,
// with `errors`, none: errors[i] says why shard i could not be opened and files[i]
// stays null. A shard whose path is gone since Open is aborted "<file>: removed since
// the checkpoint was opened (open the checkpoint again)". Thread-safe.
Status OpenShardFiles(const Checkpoint& ckpt, const std::vector<bool>& used, IoMode mode,
                      const UringOptions& uring,
                      std::vector<std::unique_ptr<ReadableFile>>* files,
                      std::vector<Status>* errors = nullptr,
                      const std::function<bool()>& cancelled = {});

// OpenShardFilesUnderLock: OpenShardFiles for a caller that already holds the folder's
// shared lock (and checks something else under it too); takes no lock itself.
Status OpenShardFilesUnderLock(const Checkpoint& ckpt, const std::vector<bool>& used,
                               IoMode mode, const UringOptions& uring,
                               std::vector<std::unique_ptr<ReadableFile>>* files,
                               std::vector<Status>* errors = nullptr);

// Checkpoint: an opened checkpoint's catalog. Move-only.
// Thread safety: every const method may be called concurrently from several threads
// (the lazy mappings behind MappedBytes are created under a per-shard lock).
// Lifetime: spans from MappedBytes stay valid while the Checkpoint lives (moving the
// Checkpoint keeps them valid: they then belong to the moved-to object). A moved-from
// Checkpoint may only be destroyed or assigned to.
class Checkpoint {
 public:
  // Open: resolve `path` and build the catalog.
  //  - a file ending in ".json" is a sharded index, unless it starts as a safetensors
  //    file does (an 8-byte length below 2^32, then '{'); any other file is a single
  //    safetensors file;
  //  - a folder: its "model.safetensors.index.json", else its only
  //    "*.safetensors.index.json", else "model.safetensors", else its only
  //    "*.safetensors" (unless that is named like one shard of several,
  //    "<p>-00001-of-00003.safetensors": an error below).
  // The folder's shared lock (LockFolder, format/folder_lock.h) is held from the listing
  // to the last shard header, waiting up to options.writer_wait_ms for a shardload
  // writer to finish publishing a rewrite. The path of a single file (a regular file
  // whose name does not end in ".json") takes no lock (one file is whole by itself;
  // should it be missing at first, a writer without hard links having set it aside,
  // Open runs again under the lock).
  // Errors:
  //  - invalid_argument "checkpoint path is empty"; not_found "<path>: no such file or
  //    directory"; invalid_argument "<path>: not a regular file or folder";
  //    not_found "<path>: folder holds no .safetensors file or index" for a folder
  //    without candidates;
  //  - invalid_argument "<path>: folder holds several .safetensors files and no index:
  //    a.safetensors, b.safetensors" (sorted; the same for several index files and no
  //    model.safetensors.index.json); invalid_argument "<path>: folder holds only
  //    model-00001-of-00003.safetensors (shard 1 of 3) and no index; give the file's
  //    own path to load it alone"; invalid_argument "<path>/<name>.safetensors.index.json:
  //    not a regular file (a folder, or a link to none)" when no index is usable but one
  //    is named there, and no model.safetensors either;
  //  - unavailable "<folder>: gave up after N ms waiting for the folder's lock, held by
  //    another process (...); try again" (LockFolder's); cancelled "<folder>: stopped
  //    while waiting for the folder's lock" (options.cancelled);
  //    invalid_argument "CatalogOptions.writer_wait_ms must be >= 0, got -1";
  //  - the index parser's errors (format/index.h), labelled with the index's file name;
  //    invalid_argument "<index>: index names more than M shard files" (max_shards);
  //  - not_found "<index>: shard 'f' does not exist", checked for every shard before
  //    any header is read; invalid_argument "<index>: shard 'f' resolves to '/x/f',
  //    outside the checkpoint folder '/y'" (symlinks are resolved with realpath; in a
  //    Hugging Face hub cache snapshot, <repo>/snapshots/<rev>/, the shards' targets
  //    may also lie in <repo>/blobs/);
  //    invalid_argument "<index>: shard 'f' is not a regular file";
  //  - header errors of each shard (format/header.h), labelled with the shard's file;
  //  - invalid_argument "<index>: index maps 'x' to 'f' but that shard has no tensor 'x'";
  //  - invalid_argument "<index>: tensor 'x' is stored in both 'a' and 'b'";
  //  - with strict_index, invalid_argument "<index>: shard 'f' holds tensor 'y', which
  //    the index does not list" (plus " (and N more)" when there are others).
  //  - resource_exhausted when memory runs out (no exception leaves Open).
  // Warnings (warnings()): unlisted tensors without strict_index, one per tensor;
  // "<index>: weight_map is empty; the checkpoint has no tensors"; "<folder>: holds
  // both <index> and model.safetensors; loading the index (transformers loads
  // model.safetensors)" (the folder's index chosen over a single file next to it);
  // "<index>: metadata total_size is N but the shards hold M tensor bytes".
  // Thread safety: Open may run concurrently with other Opens; it starts up to
  // `read_threads` threads and joins them before returning.
  static Result<Checkpoint> Open(const std::string& path, const CatalogOptions& options = {});

  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;
  ~Checkpoint();

  // folder: the checkpoint folder (the directory given, or the directory holding the
  // file given), as a path usable for opening files; never empty ("." at worst).
  const std::string& folder() const { return folder_; }
  // index_file: the index's file name relative to folder(), or empty when the
  // checkpoint is a single safetensors file.
  const std::string& index_file() const { return index_file_; }
  // sharded: true when opened through an index.
  bool sharded() const { return !index_file_.empty(); }

  // tensors: every stored tensor, sorted by name (byte-wise, which is code point order
  // for UTF-8), names unique across the checkpoint.
  const std::vector<StoredTensor>& tensors() const { return tensors_; }
  // Find: the tensor called `name`, or nullptr. O(log n).
  const StoredTensor* Find(std::string_view name) const;
  // FileOrder: indexes into tensors() by shard, then file offset: the order in which
  // reads go forward through each file. O(n log n), computed on each call.
  std::vector<size_t> FileOrder() const;
  // DescribeBytes: what bytes [begin, end) of shard `shard` hold, for error messages:
  // "bytes [a, b) of tensor 'x'", "bytes [a, b): tensors 'x' to 'y' (N)" (first and
  // last by offset), or "bytes [a, b), outside any tensor". O(number of tensors).
  std::string DescribeBytes(uint32_t shard, uint64_t begin, uint64_t end) const;
  // shards: the files, in index order for a sharded checkpoint (sorted by name, unique),
  // or the single file. StoredTensor::shard indexes this list.
  const std::vector<ShardInfo>& shards() const { return shards_; }
  // metadata: the index's "metadata" object for a sharded checkpoint, as format/index.h
  // gives it (string values as they are, any other value as its JSON text, so a
  // numeric total_size appears as "41"); for a single file, its `__metadata__`.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // metadata_json: the keys of metadata() whose value in the index was not a JSON
  // string (a number, true/false/null, an object or an array): their text in metadata()
  // is that JSON value, to be written back unquoted. Always empty for a single file,
  // whose `__metadata__` holds strings only.
  const std::set<std::string, std::less<>>& metadata_json() const { return metadata_json_; }
  // has_metadata: whether that metadata object is there at all: true for an empty `{}`,
  // false when absent (or, for a single file, `null`), as safetensors tells them apart.
  bool has_metadata() const { return has_metadata_; }
  // index_total_size: the index's metadata.total_size when present.
  std::optional<uint64_t> index_total_size() const { return index_total_size_; }
  // total_bytes: the sum of every tensor's bytes (headers not counted).
  uint64_t total_bytes() const { return total_bytes_; }
  // warnings: problems that did not stop Open (see Open), in the order found.
  const std::vector<std::string>& warnings() const { return warnings_; }

  // DataOffsets: the tensor's data_offsets [begin, end) as written in its shard's header.
  std::pair<uint64_t, uint64_t> DataOffsets(const StoredTensor& t) const;

  // MappedBytes: a zero-copy view of tensor `name`'s bytes in a read-only mapping of its
  // shard (mapped on first use, then kept). The view stays valid while the Checkpoint
  // lives. It need not be aligned for the dtype: memcpy out of it rather than casting.
  // Hazard: if another process truncates the shard after it was mapped, touching the
  // view raises SIGBUS; that is the caller's risk (ReadTensor is the safe path).
  // Errors: not_found "tensor 'x' is not in the checkpoint"; the mapping's open errors;
  // CheckShardFile's aborted or data_loss when the shard changed since Open (checked
  // when it is first mapped, on the size it was mapped at).
  Result<std::span<const std::byte>> MappedBytes(std::string_view name) const;

  // ReadTensor: a copy of tensor `name`'s bytes, read with positional reads (safe
  // against truncation: a shorter file gives data_loss, never SIGBUS).
  // Errors: not_found as above; open and read errors of the shard; CheckShardFile's
  // aborted or data_loss when the shard changed since Open (on the size its open saw);
  // the read's data_loss when it shrinks while read.
  Result<std::vector<std::byte>> ReadTensor(std::string_view name) const;

 private:
  struct Lazy;  // per-shard mappings and their locks
  Checkpoint();
  // OpenImpl: Open without the catch-all for allocation failures; a single file's
  // path skips the folder lock when `allow_unlocked` (then `*unlocked` is set).
  static Result<Checkpoint> OpenImpl(const std::string& path, const CatalogOptions& options,
                                     bool allow_unlocked, bool* unlocked);

  std::string folder_;
  std::string index_file_;
  std::vector<StoredTensor> tensors_;
  std::vector<ShardInfo> shards_;
  std::map<std::string, std::string> metadata_;
  std::set<std::string, std::less<>> metadata_json_;
  bool has_metadata_ = false;
  std::optional<uint64_t> index_total_size_;
  uint64_t total_bytes_ = 0;
  std::vector<std::string> warnings_;
  std::unique_ptr<Lazy> lazy_;
};

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_CHECKPOINT_H_
