// format/writer.h — write safetensors files and sharded checkpoints.
//
// Provides `TensorToWrite` (a named tensor whose bytes come from memory or from a
// chunked generator), `SerializeHeader` / `SerializeToString` (the exact bytes the
// Hugging Face reference writes), `WriteFile` (one file, written atomically),
// `PlanShards` / `WriteSharded` (huggingface_hub-style shards plus
// `model.safetensors.index.json`) and `ParseByteSize` ("5GB", "2GiB").
//
//   std::vector<float> w(4096 * 4096);
//   std::vector<TensorToWrite> tensors;
//   tensors.push_back(TensorToWrite::FromBytes("w", Dtype::kF32, {4096, 4096},
//                                              std::as_bytes(std::span(w))));
//   tensors.push_back(TensorToWrite::FromGenerator(
//       "big", Dtype::kBF16, {1 << 30},
//       [](uint64_t offset, std::span<std::byte> out) { /* fill out */ return OkStatus(); }));
//   SL_RETURN_IF_ERROR(WriteFile("/ckpt/model.safetensors", tensors, Metadata{{"format", "pt"}}));
//
//   ShardOptions shard;
//   SL_ASSIGN_OR_RETURN(shard.max_shard_size, ParseByteSize("5GB"));
//   SL_ASSIGN_OR_RETURN(ShardedWriteResult r, WriteSharded("/ckpt", tensors, shard));
//
// Layout (same as the reference `prepare`): tensors sorted by dtype alignment,
// largest first, then by name (byte order); the JSON header is compact, in that
// order, with `__metadata__` first when present (its keys sorted by byte order;
// the reference keeps them in hash order, so files with two or more metadata keys
// match the reference byte for byte only up to the order of those keys), then
// padded with spaces to a multiple of 8 bytes, so every tensor starts aligned to
// its element size.
#ifndef SHARDLOAD_FORMAT_WRITER_H_
#define SHARDLOAD_FORMAT_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"
#include "format/shape.h"
#include "format/status.h"

namespace shardload {

// Metadata: the string → string `__metadata__` map (or user metadata of an index).
using Metadata = std::map<std::string, std::string>;

// TensorFill: fills `out` with the tensor bytes [offset, offset + out.size()).
// The writer calls it with increasing, contiguous offsets covering the tensor once,
// in chunks of at most WriteOptions::buffer_bytes; a non-OK return aborts the write
// and is reported with the file and tensor name in front. Called from the writing
// thread only.
using TensorFill = std::function<Status(uint64_t offset, std::span<std::byte> out)>;

// TensorToWrite: one tensor to serialize. Its bytes come from `fill` when it is set,
// otherwise from `data` (which must then hold exactly TensorByteSize(dtype, shape)
// bytes and stay valid until the write returns). The writer never copies the struct's
// data into an intermediate whole-file buffer.
struct TensorToWrite {
  std::string name;
  Dtype dtype = Dtype::kU8;
  Shape shape;
  std::span<const std::byte> data;
  TensorFill fill;

  // FromBytes: a tensor whose bytes are `data` (not copied; must outlive the write).
  static TensorToWrite FromBytes(std::string name, Dtype dtype, Shape shape,
                                 std::span<const std::byte> data);
  // FromGenerator: a tensor whose bytes are produced by `fill` while writing.
  static TensorToWrite FromGenerator(std::string name, Dtype dtype, Shape shape,
                                     TensorFill fill);
};

// WriteOptions: knobs of the file writer.
struct WriteOptions {
  // buffer_bytes: size of the write buffer (and of the chunks given to generators).
  // Default 8 MiB. Must be in [4096, 1 GiB]; tensors from memory of a quarter of
  // the buffer or more are written straight from their span (no copy).
  size_t buffer_bytes = size_t{8} << 20;
  // sync: fsync the file before the rename and the directory after it. Default true
  // (durable); false is only for scratch files where speed matters more.
  bool sync = true;
  // data_alignment: the header is padded with spaces so that the data section starts
  // at a multiple of this many bytes from the start of the file. Default 8, what the
  // reference writer does (the files are then byte-identical to its). A power of two
  // from 8 to 65536: 64 puts tensors whose offsets are multiples of 64 on cache lines,
  // so a loader's copy out of the page cache into aligned memory runs at full speed
  // (docs/ARCHITECTURE.md "File phase"); 4096 puts them on pages (O_DIRECT windows, GPU
  // direct-storage reads). Every reader accepts the padding (the format allows
  // trailing whitespace in the header).
  uint64_t data_alignment = 8;
};

// ValidateWriteOptions: invalid_argument "<label>: write buffer_bytes N is outside
// [4096, 1073741824]" or "<label>: data_alignment N is not a power of two from 8 to
// 65536".
Status ValidateWriteOptions(const WriteOptions& options, std::string_view label);

// FileLayout: where each tensor goes in a file. `order[i]` is the index (into the
// input) of the i-th tensor in the file; `begin[k]`/`end[k]` are the data_offsets of
// input tensor k. `prefix` is the 8-byte length plus the padded header.
struct FileLayout {
  std::string prefix;
  std::vector<size_t> order;
  std::vector<uint64_t> begin;
  std::vector<uint64_t> end;
  uint64_t data_size = 0;
  uint64_t file_size = 0;
};

// SerializeHeader: validate `tensors` and lay them out, the header padded so that the
// data section starts at a multiple of `data_alignment` (8 by default, as the reference;
// a power of two, see WriteOptions). `label` (a file name) starts every error message.
// `metadata` absent → no `__metadata__` key; present but empty → `"__metadata__":{}`
// (as the reference does).
// Errors (invalid_argument unless noted):
//   "<label>: duplicate tensor name 'w'"
//   "<label>: tensor name '__metadata__' is reserved"
//   "<label>: tensor name is not valid UTF-8 (byte 3)"  (likewise metadata keys/values)
//   "<label>: tensor 'w': data is 8 bytes, but F32[3] needs 12 bytes"
//   "<label>: tensor 'w': both data and a generator are set"
//   "<label>: tensor 'w': F4[3] is 12 bits, ..." (from TensorByteSize; out_of_range on overflow)
//   "<label>: header is N bytes, over the limit of 100000000 bytes" (resource_exhausted;
//   "is more than 100000000 bytes" when building stopped early)
// Thread safety: reentrant.
Result<FileLayout> SerializeHeader(std::span<const TensorToWrite> tensors,
                                   const std::optional<Metadata>& metadata,
                                   std::string_view label, uint64_t data_alignment = 8);

// SerializeToString: the whole file in memory (for small files and tests). Same
// errors as SerializeHeader, plus generator errors; resource_exhausted when the file
// would be larger than 1 GiB.
Result<std::string> SerializeToString(std::span<const TensorToWrite> tensors,
                                      const std::optional<Metadata>& metadata,
                                      std::string_view label = "<memory>");

// WriteFile: write `tensors` to `path` atomically: a uniquely named temporary file
// in the same directory is written, fsynced, renamed over `path`, and the directory
// is fsynced. An existing file at `path` is never truncated or modified in place
// (readers that mapped it keep seeing the old bytes). On any error before the rename
// the temporary file is removed and `path` is untouched; with `sync`, the directory is
// opened before the rename (a folder that cannot be: "<dir>: open directory: ...
// (nothing was replaced)"), and an error fsyncing it after the rename ("<dir>: fsync
// directory: ... (the new files are in place, but their names may not be on disk
// yet)") is reported with the new file in place. After the rename, the temporaries of
// `path` that killed earlier writes left (".<base>.tmp.<pid>.…" whose pid no longer
// exists in this PID namespace, unchanged for 10 minutes) are removed, best effort.
// Errors: those of SerializeHeader with `path` as label, generator errors ("<path>: tensor 'w': <generator message>"),
// and system errors ("<path>: write: No space left on device", codes from errno).
// Thread safety: distinct paths may be written concurrently.
Status WriteFile(const std::string& path, std::span<const TensorToWrite> tensors,
                 const std::optional<Metadata>& metadata, const WriteOptions& options = {});

// ParseByteSize: a byte count from text. Accepts an integer or a decimal number
// followed by an optional unit: B, KB/MB/GB/TB (powers of 10, like huggingface_hub),
// KiB/MiB/GiB/TiB (powers of 2); units are case-insensitive except that the final
// "B" must be uppercase ("5Gb" is rejected: elsewhere a lowercase b means bits);
// one optional space between number and unit. A fraction is allowed with a unit ("1.5GB" = 1500000000)
// and the result is rounded down to a whole byte; a fraction without a unit is an error.
// Errors: invalid_argument "invalid byte size '12XB': ..." naming the text;
// out_of_range when the value does not fit in 64 bits.
Result<uint64_t> ParseByteSize(std::string_view text);

// kDefaultMaxShardSize: huggingface_hub's default max_shard_size ("5GB").
inline constexpr uint64_t kDefaultMaxShardSize = 5'000'000'000;

// StagedShardFile: one file of a sharded write, complete under its temporary name
// (and synced, unless WriteOptions::sync is false), not yet published
// (ShardOptions::check_staged).
struct StagedShardFile {
  std::string name;       // its file name once published ("model-00001-of-00002.safetensors")
  std::string temp_path;  // where it is now: a hidden file in the same folder
  // shard: the shard's number in ShardPlan::shards, or -1 for the index.
  int shard = -1;
};

// ShardOptions: how WriteSharded splits a checkpoint.
struct ShardOptions {
  // max_shard_size: greedy split limit in tensor bytes (headers not counted), used
  // when num_shards is 0. Default 5 GB. Must be > 0.
  uint64_t max_shard_size = kDefaultMaxShardSize;
  // num_shards: when > 0, split into exactly this many shards with balanced bytes
  // (tensors keep their order; each shard gets at least one tensor, so it must not
  // exceed the number of tensors). Default 0 (greedy by max_shard_size).
  int num_shards = 0;
  // prefix: shard files are "<prefix>-00001-of-00003.safetensors", a single file is
  // "<prefix>.safetensors", the index "<prefix>.safetensors.index.json".
  // Default "model". Must be non-empty, without '/' or NUL, and not "." or "..".
  std::string prefix = "model";
  // metadata: user metadata. Sharded: merged into the index's "metadata" (the key
  // "total_size" is reserved there). One shard: merged into the file's __metadata__
  // over {"format": "pt"} (a user "format" wins, as in huggingface_hub). Default empty.
  Metadata metadata;
  // metadata_json: keys of `metadata` whose value is the text of one JSON value (a
  // number, true/false/null, an object, an array), written into a sharded index as it
  // is rather than as a string, so "total_parameters": 7 stays a number when a
  // checkpoint is resharded. One shard: the text is stored as a string, since
  // `__metadata__` holds only strings. Default empty.
  std::set<std::string, std::less<>> metadata_json;
  // shard_metadata: extra `__metadata__` entries for each shard file (sharded writes
  // only), given the shard's number and the input indices it holds; merged over
  // {"format": "pt"}. Used to record per-tensor checksums in every shard. Default none.
  std::function<Metadata(size_t shard, std::span<const size_t> tensor_indices)> shard_metadata;
  // remove_stale: after a successful write, delete files in the folder from an
  // earlier write with the same prefix ("<prefix>-NNNNN-of-NNNNN.safetensors",
  // "<prefix>.safetensors", the index) that the new checkpoint does not use, like
  // huggingface_hub, and the hidden temporary and backup files of such files left by a
  // writer that was killed (".<file>.tmp.<pid>.…" / ".<file>.old.<pid>.…" whose
  // process no longer exists and which have not changed for 10 minutes: a writer in
  // another PID namespace looks dead here while it writes). It also makes a layout
  // change safe to interrupt: the other layout's entry point (the old index when one
  // file is written, the old "<prefix>.safetensors" when an index is) is moved aside
  // before anything new is published, so no moment has two entry points naming
  // different checkpoints (shardload prefers the index, transformers the single
  // file), and listed in `removed`. Stale files that cannot be removed fail the call
  // after the new checkpoint was published and the others were removed: "<file>:
  // remove stale checkpoint file: <reason> (the new checkpoint is in place; this old
  // file is left next to it)" for the first, "N old files are" when several. Kept, each with a
  // warning (ShardedWriteResult::warnings), rather than removed: a file another index
  // in the folder names ("<dir>/<file>: kept: <other index> names it"), every
  // candidate when another index cannot be read ("<dir>/<index>: cannot be read
  // (<reason>), so the old files of prefix 'model' it may name are kept"), and
  // anything not a regular file or symlink, such as a folder of a shard's name
  // ("<dir>/<file>: kept: not a file").
  // Default true.
  bool remove_stale = true;
  // write: options for each file.
  WriteOptions write;
  // check_staged: when set, called once with every file of the write (the shards in
  // order, then the index; the span and its paths are valid during the call only)
  // once all are written (and synced, unless write.sync is
  // false) under their temporary names, before the folder is locked and anything is
  // published: a caller can read the new files back there (CheckWrittenFile and
  // CheckWrittenIndex, loader/checkpoint_hash.h) and refuse them. An error it returns
  // fails the write with its code and message + " (nothing was replaced)"; the
  // temporary files are removed. `cancelled` is asked once more right after it. Called
  // on the writing thread; the files must not be changed, renamed or removed. Default
  // none.
  std::function<Status(std::span<const StagedShardFile>)> check_staged;
  // cancelled: when set, asked after check_staged (when set) and while the write waits
  // for the folder's lock before publishing (LockFolder, format/folder_lock.h;
  // generators check for themselves); once it returns true the write fails with
  // cancelled "<dir>: stopped before publishing (nothing was replaced)", or "<dir>:
  // stopped while waiting for the folder's lock (nothing was replaced)". Default none.
  std::function<bool()> cancelled;
};

// ShardPlan: the split, before any I/O. `shards[s]` lists input indices in order;
// `files[s]` is the file name of shard s; `index_file` is empty for one shard.
struct ShardPlan {
  std::vector<std::vector<size_t>> shards;
  std::vector<std::string> files;
  std::string index_file;
  std::vector<uint64_t> shard_bytes;  // tensor bytes per shard
  uint64_t total_size = 0;            // sum of tensor bytes (the index's total_size)
};

// PlanShards: split `tensors` (pure, no I/O). Greedy (num_shards == 0): walk the
// tensors in the given order, start a new shard when adding the next tensor would
// pass max_shard_size; a tensor larger than the maximum gets a shard of its own; the
// zero-byte tensors after the first go into the first one's shard (huggingface_hub's
// split groups tensors by storage, and empty torch tensors all have the null one), so
// that the files are those save_torch_state_dict writes.
// Balanced (num_shards = N): cut the ordered list into N contiguous non-empty runs
// whose byte totals are as close to total/N as the tensor boundaries allow.
// No tensors → one empty shard. Errors: invalid_argument for invalid options
// ("num_shards 4 exceeds the number of tensors (3)", "max_shard_size must be > 0",
// "invalid shard prefix 'a/b'") and the per-tensor size errors of SerializeHeader.
Result<ShardPlan> PlanShards(std::span<const TensorToWrite> tensors, const ShardOptions& options);

// SerializeIndex: the text of `model.safetensors.index.json` for a plan, formatted
// like Python's `json.dumps(index, indent=2, sort_keys=True) + "\n"` (the form
// transformers writes; non-ASCII escaped as \uXXXX):
//   {"metadata": {"total_size": N, ...user}, "weight_map": {name: file, ...}}.
// The values of keys in `json_keys` (ShardOptions::metadata_json) are JSON text written
// as it is (not re-indented, re-sorted or \u-escaped: the one exception to the
// json.dumps form), after a check that it is one JSON value an index reader accepts
// (nested at most kIndexMaxDepth - 2 deep). Errors: invalid_argument when user
// metadata uses "total_size" or is not UTF-8, and "index metadata value of 'k' is not
// one JSON value: <text>" for a bad value of a `json_keys` key.
Result<std::string> SerializeIndex(std::span<const TensorToWrite> tensors, const ShardPlan& plan,
                                   const Metadata& user_metadata,
                                   const std::set<std::string, std::less<>>& json_keys = {});

// ShardedWriteResult: what WriteSharded wrote (file names relative to the folder).
struct ShardedWriteResult {
  ShardPlan plan;
  std::vector<uint64_t> file_sizes;  // per shard file, in bytes
  std::vector<std::string> removed;  // stale files deleted (remove_stale)
  // warnings: what the caller should pass on: the folder also holds another
  // checkpoint, which a load of the folder would choose instead of this one (or fail
  // on: several indexes) — "<dir>: also holds <file> of another checkpoint, so a load
  // of the folder will not load the new <entry>; load it by its path, <dir>/<entry>";
  // and the stale files the sweep kept (ShardOptions::remove_stale). The CLI writers print them, the C API hands them out
  // (sl_last_save_warning) and Python's save_sharded warns (ShardloadWarning).
  std::vector<std::string> warnings;
};

// WriteSharded: PlanShards, then write every shard into the existing folder `dir`
// (each shard's __metadata__ is {"format": "pt"}) and the index (when there are 2+
// shards). Every file is first written and fsynced under a temporary name; only when
// all are complete are they renamed into place, and the folder fsynced. So an error
// while writing (a full disk, a generator's error) leaves the folder as it was,
// temporary files removed, and an earlier checkpoint there intact; the folder needs
// room for the new files next to the old ones. The renames: the old index is moved
// aside to a hidden backup first, each replaced shard is kept as a hidden backup (a
// hard link), the new index goes in last. A rename that fails restores every file
// (the error ends "(nothing was replaced)", or names what could not be restored); a
// process killed between the renames leaves shards without an index, which a load
// refuses ("several .safetensors files and no index"), never an old index over a mix
// of old and new shards (the old index and shards are then the hidden
// ".<name>.old.<unique>" files). Replaced files keep their permissions (and owner,
// where allowed); files under new names take those of the checkpoint replaced (see
// CreateTempFile in writer.cc: regular files only, and in a sticky folder only the
// writing user's). The folder is opened before anything is published (its fsync and
// the sweep need it): one that cannot be ("<dir>: open directory: Permission denied
// (nothing was replaced)") fails the write with the old checkpoint untouched. With
// ShardOptions::check_staged, the caller sees the complete temporary files before any
// rename and may refuse them (the write then fails the same way).
// Thread safety: writers into the same folder (threads or processes) publish one at
// a time (an flock on the folder from the first rename to the end of the sweep), so
// the last one's checkpoint is what remains, whole; best effort where the file system
// refuses flock on a folder. Errors: those of PlanShards, SerializeIndex and
// WriteFile; not_found when `dir` does not exist; check_staged's error, its message
// + " (nothing was replaced)"; cancelled "<dir>: stopped before publishing (nothing
// was replaced)" and "<dir>: stopped while waiting for the folder's lock (nothing was
// replaced)" (ShardOptions::cancelled).
Result<ShardedWriteResult> WriteSharded(const std::string& dir,
                                        std::span<const TensorToWrite> tensors,
                                        const ShardOptions& options);

// EscapeJsonString: `s` as a JSON string literal with quotes, escaped like
// serde_json (\" \\ \b \f \n \r \t, other control characters as \u00xx, everything
// else verbatim). `s` must be valid UTF-8 (callers check with IsValidUtf8).
std::string EscapeJsonString(std::string_view s);

// IsValidUtf8: whether `s` is well-formed UTF-8 (no overlong forms, surrogates or
// code points above U+10FFFF). On failure `*bad_offset` (if given) is the offset of
// the first bad byte.
bool IsValidUtf8(std::string_view s, size_t* bad_offset = nullptr);

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_WRITER_H_
