/* capi/shardload.h — the C API of shardload (plain C99; usable from C, Rust, Go, ctypes).
 *
 * Provides opaque handles over the C++ library: `sl_checkpoint` (an opened checkpoint:
 * one .safetensors file, a sharded index, or a folder holding either), `sl_options`
 * (devices, strict matching, renames, aliases, casts, threads, I/O mode, progress,
 * verification against recorded hashes, host memory pool, cancel token),
 * `sl_report` (the load_state_dict-style match report), `sl_loaded` (tensors the loader
 * placed in its own arenas, exportable as DLPack tensors), `sl_host_pool` (arena memory
 * reused across loads), `sl_cancel_token` (stops loads from any thread), and writers for
 * single-file and sharded checkpoints. Link with
 * libshardload.so (SONAME libshardload.so; it needs libsimdjson.so.14, libxxhash.so.0
 * and the C/C++ runtime at run time), which exports the `sl_*` symbols and, besides them, only one
 * or two weak libstdc++ std::string members that libstdc++ itself exports. Install this
 * header next to dlpack.h (it includes "dlpack.h" from its own folder).
 *
 *   sl_checkpoint* ckpt = NULL;
 *   if (sl_checkpoint_open("/models/llama", &ckpt) != SL_OK) {
 *     fprintf(stderr, "%s\n", sl_last_error());
 *     return 1;
 *   }
 *   sl_options* opt = NULL;
 *   sl_options_new(&opt);
 *   sl_options_set_device(opt, "cpu");
 *   sl_loaded* loaded = NULL;
 *   if (sl_load_all(ckpt, opt, NULL, 0, &loaded, NULL) == SL_OK) {
 *     sl_loaded_tensor t;
 *     sl_loaded_get(loaded, 0, &t);              // t.name, t.dtype, t.shape, t.data
 *     DLManagedTensor* dl = NULL;
 *     if (sl_loaded_export_dlpack(loaded, 0, 0, &dl) == SL_OK) {  // keeps the arena
 *       sl_loaded_free(loaded);                  // dl stays valid
 *       loaded = NULL;
 *       dl->deleter(dl);                         // last reference: arena freed
 *     }
 *     sl_loaded_free(loaded);                    // NULL: no-op
 *   }
 *   sl_options_free(opt);
 *   sl_checkpoint_free(ckpt);
 *
 * Stability: new functions are added instead of changing signatures, and the structs
 * callers allocate or fill (sl_tensor_info, sl_target, sl_loaded_tensor,
 * sl_tensor_view) keep their layout: a field is never added, removed or reordered (a
 * new layout would come with new functions). Status values equal shardload's canonical
 * codes (format/status.h); codes may be added, so bindings should read an sl_status
 * as an integer and treat values they do not know as errors (sl_status_name names
 * them).
 *
 * Signals: a load with io "mmap" installs, once per process, a SIGBUS handler
 * (SA_SIGINFO | SA_NODEFER | SA_ONSTACK) that turns a fault inside the loader's own
 * copies from a mapping (a file truncated under it) into SL_DATA_LOSS and passes every
 * other SIGBUS to the action installed before it (a handler; the default action; or,
 * for a SIGBUS sent with kill to a process that ignored it, nothing). The other io
 * modes install nothing.
 *
 * Errors: every fallible call returns an `sl_status`. When it is not SL_OK, the message
 * (naming the file and, where it applies, the tensor) is available from sl_last_error()
 * on the same thread until that thread's next failing call; successful calls leave it
 * unchanged. No C++ exception crosses this API. Every function taking a handle or an
 * out pointer returns SL_INVALID_ARGUMENT ("<what> is NULL") when one is NULL, besides
 * the errors listed with it; counts and other non-status getters return 0 for NULL.
 * Shapes whose element count overflows 64 bits are SL_OUT_OF_RANGE ("overflow
 * computing element count") wherever a shape is taken (targets, tensors to save), and
 * so are shapes whose size in bits does (2^61 bytes or more: "overflow computing byte
 * size of U8[...]"). Messages carry names as given: bytes of a name that are not UTF-8
 * are copied as they are (bindings should decode lossily).
 *
 * Ownership: each `*_new` / `*_open` / `sl_load_*` output is owned by the caller and is
 * released by its `*_free` function. Every `*_free` accepts NULL (a no-op); freeing the
 * same handle twice is a programming error (not detected). Strings and arrays that a
 * getter returns are borrowed from the handle they came from and stay valid until it
 * is freed (or, for sl_last_error, until the thread's next failing call). A handle
 * passed to a call must stay valid until the call returns, also from inside that
 * call's callbacks (a progress callback must not free the checkpoint it is loading).
 *
 * Thread safety: sl_checkpoint and sl_loaded may be read and loaded from concurrently
 * (getters, sl_load_*, exports, DLPack deleters may run on any thread); an
 * sl_host_pool may be used from any thread. An sl_options must not be modified while a
 * load that uses it runs (a load keeps its own references to the options' pool and
 * cancel token, so even then neither is freed under it); an sl_report is immutable.
 *
 * The calling thread's CUDA device: a load onto a GPU and the free of device tensors
 * (sl_loaded_free, DLPack deleters) make a device of theirs current for their CUDA
 * calls, then make the thread's previous device current again only when that device's
 * primary context is active (or the driver cannot say); a thread that never chose a
 * device (device 0, no context) is left on a device of the load (its first) instead
 * of being given a context on device 0. A thread that then relies on the default
 * device should call cudaSetDevice(0) first.
 */
#ifndef SHARDLOAD_CAPI_SHARDLOAD_H_
#define SHARDLOAD_CAPI_SHARDLOAD_H_

#include <stddef.h>
#include <stdint.h>

#include "dlpack.h" /* capi/dlpack.h: found next to this header */

#ifdef __cplusplus
extern "C" {
#endif

/* sl_status: the outcome of a call; the values are shardload's canonical codes. */
typedef enum sl_status {
  SL_OK = 0,
  SL_CANCELLED = 1,
  SL_UNKNOWN = 2,
  SL_INVALID_ARGUMENT = 3,
  SL_NOT_FOUND = 5,
  SL_ALREADY_EXISTS = 6,
  SL_PERMISSION_DENIED = 7,
  SL_RESOURCE_EXHAUSTED = 8,
  SL_FAILED_PRECONDITION = 9,
  SL_ABORTED = 10,
  SL_OUT_OF_RANGE = 11,
  SL_UNIMPLEMENTED = 12,
  SL_INTERNAL = 13,
  SL_UNAVAILABLE = 14,
  SL_DATA_LOSS = 15
} sl_status;

/* sl_status_name: "ok", "invalid_argument", "data_loss", ... ("unknown" for values not
 * listed above). The string is static. */
const char* sl_status_name(int status);

/* sl_last_error: the message of the last failing call on this thread ("" when none).
 * Borrowed: valid until this thread's next failing call. */
const char* sl_last_error(void);

/* sl_last_error_code: the status of the last failing call on this thread (SL_OK when
 * none). */
sl_status sl_last_error_code(void);

/* sl_version: the library version, "0.1.12" for this header. Static string. */
const char* sl_version(void);

/* sl_cuda_device_count: how many CUDA devices the library can load onto: 0 without a
 * driver or device, or with a driver too old for its CUDA 13 runtime (r580 or newer is
 * needed), whatever other CUDA software in the process sees. Probed once, on first
 * use; never fails; thread-safe. Added in 0.1.1. */
int sl_cuda_device_count(void);

/* sl_cuda_staging_bytes: host memory the library keeps between GPU loads for staging
 * (one ring for the process: 256 MiB by default, pinned unless pinning was refused; 0
 * before the first GPU load and after sl_cuda_release_staging). A load running now
 * holds its ring itself and is not counted. Never fails; thread-safe. Added in 0.1.10. */
uint64_t sl_cuda_staging_bytes(void);

/* sl_cuda_release_staging: free that memory now, e.g. once a server has loaded its
 * weights and wants its pinned memory back; the next GPU load allocates a ring again.
 * Loads running meanwhile keep theirs and hand it back when they end. Returns the
 * bytes freed. Never fails; thread-safe. Added in 0.1.10. */
uint64_t sl_cuda_release_staging(void);

/* ----------------------------------------------------------------- checkpoints */

/* sl_checkpoint: an opened checkpoint's catalog (headers only; no tensor data read). */
typedef struct sl_checkpoint sl_checkpoint;

/* sl_checkpoint_open: open `path` (a .safetensors file, an index .json, or a folder).
 * On success *out is a new handle. Errors: SL_INVALID_ARGUMENT for NULL arguments, and
 * every error of Checkpoint::Open (not found, malformed headers, bad shard sets), with
 * the message naming the file; SL_UNAVAILABLE "<folder>: gave up after 60000 ms waiting
 * for the folder's lock, ..." when another process (a shardload writer publishing a
 * rewrite there, or any program holding an flock on the folder) holds the folder's lock
 * that long. Loads (sl_load_*) and sl_checkpoint_hold_files of a sharded checkpoint
 * wait the same way while they open the shard files, so that all of them are of one
 * save; the path of a single file (any regular file not ending in .json) takes no lock
 * (it is whole by itself; should it be missing at first, the open waits for the lock
 * and tries again). A
 * rewrite published after the open fails them with SL_ABORTED (open the checkpoint
 * again and retry). */
sl_status sl_checkpoint_open(const char* path, sl_checkpoint** out);

/* sl_checkpoint_free: release the handle (NULL: no-op). Tensors already loaded from it
 * (sl_loaded, DLPack exports) stay valid. */
void sl_checkpoint_free(sl_checkpoint* checkpoint);

/* sl_tensor_info: one stored tensor, as the catalog lists it. All pointers are borrowed
 * from the checkpoint. `name` is NUL-terminated but may itself contain NUL bytes, so
 * `name_len` is authoritative. `file` is the shard file relative to the checkpoint
 * folder. `file_offset` is the absolute offset of the first byte in that file. */
typedef struct sl_tensor_info {
  const char* name;
  size_t name_len;
  const char* dtype; /* "F32", "BF16", "F8_E4M3", ... */
  const uint64_t* shape;
  size_t ndim;
  const char* file;
  uint64_t file_offset;
  uint64_t bytes;
} sl_tensor_info;

/* sl_checkpoint_tensor_count: the number of stored tensors (0 for NULL). */
size_t sl_checkpoint_tensor_count(const sl_checkpoint* checkpoint);

/* sl_checkpoint_tensor: tensor `index` (name order, byte-wise) into *out.
 * Errors: SL_OUT_OF_RANGE "tensor index N is out of range (M tensors)". */
sl_status sl_checkpoint_tensor(const sl_checkpoint* checkpoint, size_t index,
                               sl_tensor_info* out);

/* sl_checkpoint_tensors: tensors [first, first + count) (name order, as
 * sl_checkpoint_tensor gives them) into out[0..count), in one call: a binding that
 * lists a checkpoint of 20,000 tensors makes one foreign call instead of 20,000. count 0
 * is OK (out may then be NULL). Nothing is written on error.
 * Errors: SL_INVALID_ARGUMENT "checkpoint is NULL" / "out is NULL";
 * SL_OUT_OF_RANGE "tensors [F, F + C) are out of range (M tensors)". Since 0.1.12. */
sl_status sl_checkpoint_tensors(const sl_checkpoint* checkpoint, size_t first, size_t count,
                                sl_tensor_info* out);

/* sl_checkpoint_find: the index of the tensor called name[0..name_len).
 * Errors: SL_NOT_FOUND "tensor 'x' is not in the checkpoint". */
sl_status sl_checkpoint_find(const sl_checkpoint* checkpoint, const char* name,
                             size_t name_len, size_t* index);

/* sl_checkpoint_metadata_count / sl_checkpoint_metadata: the checkpoint's metadata
 * (a single file's __metadata__, or a sharded index's "metadata"), sorted by key.
 * Any out pointer may be NULL (that output is not written).
 * Errors: SL_OUT_OF_RANGE for an index past the end. */
size_t sl_checkpoint_metadata_count(const sl_checkpoint* checkpoint);
sl_status sl_checkpoint_metadata(const sl_checkpoint* checkpoint, size_t index,
                                 const char** key, const char** value);

/* sl_checkpoint_metadata_n: sl_checkpoint_metadata plus the byte lengths of the key and
 * value. Metadata strings may hold NUL characters (a backslash-u0000 escape in the
 * JSON), where the NUL-terminated strings of sl_checkpoint_metadata end early; use
 * this to read them whole. Any out pointer may be NULL. The strings live as long as
 * the checkpoint. Added in 0.1.1. Errors: as sl_checkpoint_metadata. */
sl_status sl_checkpoint_metadata_n(const sl_checkpoint* checkpoint, size_t index,
                                   const char** key, size_t* key_len, const char** value,
                                   size_t* value_len);

/* sl_checkpoint_has_metadata: 1 when the checkpoint has a metadata object at all, even
 * an empty `{}` (a single file's __metadata__, a sharded index's "metadata"); 0 when it
 * is absent (or, in a single file, null) and for NULL. Tells safetensors' `{}` from
 * None where sl_checkpoint_metadata_count is 0 for both. Added in 0.1.1. */
int sl_checkpoint_has_metadata(const sl_checkpoint* checkpoint);

/* sl_checkpoint_warning_count / sl_checkpoint_warning: what Checkpoint::Open found
 * questionable but not wrong enough to refuse, as one-line messages naming the file
 * (an empty weight_map, a total_size that disagrees, a folder holding both an index
 * and model.safetensors; a shard tensor the index does not list, which is an error
 * unless sl_options_set_strict_index(options, 0) was given to sl_checkpoint_open_with).
 * Borrowed strings, valid until the checkpoint is freed. Errors: SL_OUT_OF_RANGE for
 * an index past the end. Added in 0.1.2. */
size_t sl_checkpoint_warning_count(const sl_checkpoint* checkpoint);
sl_status sl_checkpoint_warning(const sl_checkpoint* checkpoint, size_t index,
                                const char** message);

/* sl_checkpoint_recorded_hash_count: in *count, how many stored tensors have an XXH3
 * recorded for them (a shard's __metadata__ or the index's "metadata", as
 * sl_options_set_verify checks them; a record naming a tensor that is not stored where
 * it says does not count). 0 means a verifying load checks nothing. Parses the records
 * each call. Errors: SL_INVALID_ARGUMENT for a NULL argument; SL_DATA_LOSS "<file>:
 * __metadata__ key 'shardload.xxh3.w': 'xyz' is not a 16-digit hex XXH3 value"
 * ("<index>: metadata key ..." for the index's) for a malformed record.
 * Thread-safe. Added in 0.1.8. */
sl_status sl_checkpoint_recorded_hash_count(const sl_checkpoint* checkpoint, size_t* count);

/* sl_checkpoint_shard_count / sl_checkpoint_shard: the shard files (relative to the
 * checkpoint folder) in index order, or the single file. Errors: SL_OUT_OF_RANGE for
 * an index past the end. */
size_t sl_checkpoint_shard_count(const sl_checkpoint* checkpoint);
sl_status sl_checkpoint_shard(const sl_checkpoint* checkpoint, size_t index, const char** file);

/* sl_checkpoint_read: copy bytes [offset, offset + bytes) of stored tensor `index` into
 * host memory `dst` with positional reads (safe against truncated files). Used for
 * slices. The first read from a shard opens it; the handle keeps the first 64 shards
 * it reads open (later ones are opened for each read): later reads, and loads from the
 * handle, see a kept file even if its path is renamed over or deleted (see
 * sl_checkpoint_hold_files to keep every shard). The kept files are all of one save: a
 * shard is kept only when opened under the folder's lock (tried, never waited for:
 * while a shardload writer publishes, the read goes ahead without keeping; the one
 * wait is for a single-file handle whose file is missing at first, set aside by a
 * writer without hard links: the read waits for that writer's lock as a load does, up
 * to 60 s, SL_UNAVAILABLE after that) while every
 * file kept before is still the one its path names (0.1.5; once a rewrite has replaced
 * a kept file, no more files are kept and the new ones are read once each), and a load
 * that reads kept files and opens the other shards fails
 * with SL_ABORTED "<file>: replaced on disk since this checkpoint handle opened it,
 * so it and the shards opened now would be of two saves (open the checkpoint again)"
 * (or "removed from disk ...") rather than mix them. Every read checks, through the open
 * descriptor, that the file still has the layout the checkpoint was opened with (a
 * file written to in place since is SL_DATA_LOSS or SL_ABORTED, below); a shard that fails that check when
 * first opened is not kept, so a later read opens its path again. Thread-safe. Errors:
 * SL_OUT_OF_RANGE for a bad index or a range past the tensor's end ("tensor 'x': bytes [60, 60 + 8) are outside its 64 bytes": offset and bytes as
 * given, since their sum may not fit in 64 bits); the shard's open errors (SL_INVALID_ARGUMENT "<file>: not a regular file"
 * for a path that is now a FIFO or a device, among them); SL_DATA_LOSS when the shard's
 * size changed in place since the checkpoint was opened ("<file>: file is now N bytes,
 * but its header was read from M bytes") or a read comes up short; SL_ABORTED when a
 * rewrite raced the handle: another file at the path ("<file>: file was replaced since
 * the checkpoint was opened: it is now N bytes, M when its header was read (open the
 * checkpoint again)"), a changed header ("<file>: file was replaced since the
 * checkpoint was opened and its header differs (open the checkpoint again)"), or the
 * file gone ("<file>: removed since the checkpoint was opened ..."). A short read
 * says "<file>: ... (reading tensor 'x')". `dst` may be NULL when `bytes` is 0 (nothing is
 * written); otherwise NULL is SL_INVALID_ARGUMENT. */
sl_status sl_checkpoint_read(const sl_checkpoint* checkpoint, size_t index, uint64_t offset,
                             uint64_t bytes, void* dst);

/* sl_checkpoint_hold_files: open every shard now, as sl_checkpoint_read's first read of
 * it would, and keep them open until sl_checkpoint_free, so that reads see the files
 * as they were when the checkpoint was opened (safetensors' safe_open maps its file at
 * open): a checkpoint saved again over the same names, a deleted file or a changed
 * working directory do not affect them. Loads from this handle (sl_load_into,
 * sl_load_all) read the files it holds too, with positional reads whatever the io
 * option says. Costs one descriptor per shard. Errors: the
 * shards' open errors and the SL_ABORTED / SL_DATA_LOSS errors of sl_checkpoint_read (a
 * shard replaced between sl_checkpoint_open and this call), and SL_ABORTED "<file>: replaced on disk
 * since this checkpoint handle opened it, ..." when a file that earlier reads kept is
 * no longer the one at its path (0.1.5: the held files would be of two saves). Added
 * in 0.1.3. */
sl_status sl_checkpoint_hold_files(const sl_checkpoint* checkpoint);

/* ----------------------------------------------------------------- options */

/* sl_options: how a load matches names and where it puts tensors. Defaults: device
 * "cpu", strict, no renames or aliases, aliases from __metadata__ on, no casts, threads
 * 0 (hardware threads), io "auto", no progress callback, no verification, no host
 * memory pool, no cancel token. */
typedef struct sl_options sl_options;

/* sl_progress_fn: called on the loading thread with (bytes read, bytes to read) — first
 * (0, total), last (total, total). Return nonzero to go on, 0 to cancel the load, which
 * then fails with SL_CANCELLED; the answer to the last call, made once every byte is
 * in place, is ignored (there is nothing left to cancel: the load succeeds). The first
 * call is answered before any byte is read, also when total is 0 (a load of zero bytes
 * starts with (0, 0), and 0 to that call cancels it). */
typedef int (*sl_progress_fn)(uint64_t done, uint64_t total, void* user_data);

/* sl_options_new: default options into *out. sl_options_free: release (NULL: no-op). */
sl_status sl_options_new(sl_options** out);
void sl_options_free(sl_options* options);

/* sl_options_set_device: a device ("cpu", "cuda", "cuda:1"; torch's "cpu:N" is "cpu") or
 * a device map "PATTERN=DEVICE,...,DEFAULT" (globs over target names, or "re:REGEX"
 * whose commas inside open brackets or after '\' stay in the regex; first match wins).
 * Errors: SL_INVALID_ARGUMENT naming the bad entry; the options are unchanged then. */
sl_status sl_options_set_device(sl_options* options, const char* device_or_map);

/* sl_device_map_first_cuda: in *device, the lowest CUDA device index that
 * `device_or_map` (as sl_options_set_device takes it, "cuda" reading as cuda:0) names
 * in its rules or default, or -1 when it names none: the device a load with it makes
 * current first (bindings that keep their own notion of the current device, like
 * torch's, guard the load with it). Errors: SL_INVALID_ARGUMENT for a NULL argument
 * and sl_options_set_device's for a map that does not parse. Thread-safe. Added in
 * 0.1.9. */
sl_status sl_device_map_first_cuda(const char* device_or_map, int* device);

/* sl_options_set_strict: nonzero (default) fails loads with missing or unexpected keys. */
sl_status sl_options_set_strict(sl_options* options, int strict);

/* sl_options_set_strict_index: nonzero (default) makes sl_checkpoint_open_with of a
 * sharded checkpoint fail when a shard holds a tensor its index does not list:
 * SL_INVALID_ARGUMENT "<index>: shard 'f' holds tensor 'y', which the index does not
 * list" (" (and N more)"). 0 keeps such tensors in the catalog, loaded like the listed
 * ones, each with a warning (sl_checkpoint_warning), as huggingface_hub and transformers
 * load whole shards. Only sl_checkpoint_open_with reads it (sl_checkpoint_open is
 * strict). Errors: SL_INVALID_ARGUMENT "options is NULL". Added in 0.1.6. */
sl_status sl_options_set_strict_index(sl_options* options, int strict);

/* sl_options_add_rename: append a rename rule applied to checkpoint names: sed-style
 * "s/REGEX/REPL/[g]", "strip:PREFIX" or "add:PREFIX".
 * Errors: SL_INVALID_ARGUMENT "invalid rename rule 'EXPR': <why>". */
sl_status sl_options_add_rename(sl_options* options, const char* rule);

/* sl_options_set_auto_prefix: nonzero tries one common prefix strip/add when targets
 * stay unmatched (see loader/match.h). Default 0. */
sl_status sl_options_set_auto_prefix(sl_options* options, int enabled);

/* sl_options_add_alias: tied weight — a target with no stored tensor of its own is
 * filled from `stored_name`. Errors: SL_INVALID_ARGUMENT "target_name is NULL" /
 * "stored_name is NULL", and "empty alias name" for an empty one. */
sl_status sl_options_add_alias(sl_options* options, const char* target_name,
                               const char* stored_name);

/* sl_options_set_metadata_aliases: nonzero (default) also fills a target the file
 * lacks from the tensor a `__metadata__` entry names (the "dropped name" -> "kept
 * name" notes safetensors' save_model writes for tied weights; only for a target of
 * the stored tensor's shape); 0 leaves such targets missing, as safetensors'
 * load_model does (it ties through the model, not the file). Added in 0.1.4. */
sl_status sl_options_set_metadata_aliases(sl_options* options, int enabled);

/* sl_options_set_allow_cast: nonzero accepts F32/F16/BF16 differences (converted while
 * loading). Default 0. */
sl_status sl_options_set_allow_cast(sl_options* options, int allow);

/* sl_options_set_threads: reader threads, 0 (default) = hardware threads; 0..256.
 * Errors: SL_INVALID_ARGUMENT "threads must be between 0 and 256, got N". */
sl_status sl_options_set_threads(sl_options* options, int threads);

/* sl_options_set_io: "auto" (default), "pread", "mmap", "direct" or "uring".
 * Errors: SL_INVALID_ARGUMENT for other strings; "uring" where io_uring is
 * unavailable makes the load fail with SL_FAILED_PRECONDITION. "uring" loads keep up
 * to 32 idle io_uring rings (one descriptor each) cached in the process for later
 * loads, after every handle is freed too. */
sl_status sl_options_set_io(sl_options* options, const char* mode);

/* sl_options_set_host_placement: where sl_load_all puts host (cpu) tensors in its arena.
 * "aligned" (default): every tensor's data 256-byte aligned. "file-phase": a tensor
 * loaded without a cast starts at an address congruent to its offset in its file
 * modulo 256, so it is as aligned as it is in the file (files the reference writes
 * keep every tensor aligned to its element size; a tensor a file leaves off that is
 * placed 256-byte aligned instead) and neighbours in a file are neighbours in memory; the copy out of the page cache is then faster
 * for the many files whose data section does not start on a 64-byte boundary
 * (bench/RESULTS.md, "File phase"). Cast and cuda tensors stay 256-byte aligned; a
 * DLPack export of a file-phase tensor carries its address in `data` (byte_offset 0),
 * as torch exports its own tensors. sl_load_into ignores it. Errors:
 * SL_INVALID_ARGUMENT "invalid arena placement 'x': expected aligned or file-phase".
 * Added in 0.1.7. */
sl_status sl_options_set_host_placement(sl_options* options, const char* placement);

/* sl_options_set_progress: progress callback and its user data (fn NULL: none). */
sl_status sl_options_set_progress(sl_options* options, sl_progress_fn fn, void* user_data);

/* sl_options_set_verify: nonzero checks every loaded tensor against the XXH3-64 hash its
 * checkpoint records (`shardload.xxh3.<name>` in a file's __metadata__ or the index's
 * "metadata", as SL_SAVE_CHECKSUMS and `shardload reshard` record them) on the bytes the load read; tensors without a record are not checked.
 * A mismatch fails sl_load_into / sl_load_all with SL_DATA_LOSS "<file>: tensor 'w' at
 * bytes [a, b): XXH3 of its N bytes is X, recorded Y" (<file> holds the tensor; " in
 * <index>" ends it when the record is the index's). Default 0. Added in 0.1.1; sl_options is
 * opaque, so this is a new setter and no struct layout changes. */
sl_status sl_options_set_verify(sl_options* options, int verify);

/* ----------------------------------------------------------------- host memory pool */

/* sl_host_pool: a cache of host arena memory reused across sl_load_all calls. When a
 * pooled result's arena dies (the sl_loaded handle and every DLPack export of it are
 * gone), its mapping stays mapped in the pool instead of going back to the kernel, and
 * the next pooled sl_load_all takes the smallest cached mapping large enough for its
 * cpu tensors (and at most twice their 2 MiB-rounded size, so that a small load does
 * not pin a large arena): no page faults, no zeroing of fresh memory (on small VMs
 * that costs more than reading the checkpoint from the page cache). The padding
 * between tensors of a reused arena is zeroed, so a pooled result holds the same bytes as a fresh one.
 * Memory kept in the pool counts in the process's resident set until it is reused,
 * trimmed, or the pool goes away. Only host (cpu) arenas are pooled; sl_load_into
 * writes into caller memory and ignores the pool.
 *
 *   sl_host_pool* pool = NULL;
 *   sl_host_pool_new(8ull << 30, &pool);   // keep at most 8 GiB for reuse
 *   sl_options_set_host_pool(opt, pool);   // opt now holds a reference too
 *   sl_load_all(ckpt, opt, NULL, 0, &a, NULL);  ... sl_loaded_free(a);  // arena cached
 *   sl_load_all(ckpt, opt, NULL, 0, &b, NULL);  // reuses a's memory
 *   sl_host_pool_free(pool);               // the handle's reference
 *
 * Thread safety: every sl_host_pool_* call may run on any thread, concurrently with
 * loads that use the pool; one pool may serve many sl_options and concurrent loads.
 * Lifetime: reference counted. The handle holds one reference and every sl_options it
 * was set on holds one (until sl_options_free or another sl_options_set_host_pool);
 * the pool, and the memory it caches, is released when the last reference goes.
 * Arenas lent from a pool may outlive it (a loaded result or a DLPack export kept after
 * the pool is gone): they then unmap their memory themselves when they die. Added in
 * 0.1.1 (new functions only). */
typedef struct sl_host_pool sl_host_pool;

/* SL_HOST_POOL_DEFAULT_MAX_CACHED_BYTES: the C++ HostArenaPool default, 64 GiB. */
#define SL_HOST_POOL_DEFAULT_MAX_CACHED_BYTES (64ull << 30)

/* sl_host_pool_new: a new, empty pool into *out that keeps at most `max_cached_bytes`
 * of returned arena memory (mappings are 2 MiB-rounded). An arena returned while the
 * cache is full evicts the oldest cached mappings first; one larger than the limit by
 * itself is unmapped at once (0 therefore caches nothing). Nothing is allocated until a
 * pooled load returns memory. Errors: SL_INVALID_ARGUMENT "out is NULL". */
sl_status sl_host_pool_new(uint64_t max_cached_bytes, sl_host_pool** out);

/* sl_host_pool_free: drop the handle's reference (NULL: no-op). When no sl_options
 * holds the pool any more, every cached mapping is unmapped now; arenas in use are not
 * affected. */
void sl_host_pool_free(sl_host_pool* pool);

/* sl_host_pool_cached_bytes: bytes of mappings waiting for reuse now (0 for NULL). */
uint64_t sl_host_pool_cached_bytes(const sl_host_pool* pool);

/* sl_host_pool_trim: unmap every cached mapping now (arenas in use are not affected and
 * still return to the pool when they die). Errors: SL_INVALID_ARGUMENT "pool is NULL". */
sl_status sl_host_pool_trim(sl_host_pool* pool);

/* sl_options_set_host_pool: make sl_load_all with these options take its host arena
 * from `pool` and return it there (NULL: no pool, fresh memory for every load, the
 * default). The options hold a reference on the pool, so `pool` may be freed before
 * them. Like every setter, not while a load uses the options. Added in 0.1.1.
 * Errors: SL_INVALID_ARGUMENT "options is NULL". */
sl_status sl_options_set_host_pool(sl_options* options, sl_host_pool* pool);

/* ----------------------------------------------------------------- cancel tokens */

/* sl_cancel_token: a flag that stops loads from any thread, for servers that abort a
 * load on shutdown or when its request goes away (the progress callback can cancel
 * too, but only from the loading thread and only when progress moves).
 *
 *   sl_cancel_token* stop = NULL;
 *   sl_cancel_token_new(&stop);
 *   sl_options_set_cancel_token(opt, stop);  // opt now holds a reference too
 *   ... another thread: sl_cancel_token_cancel(stop);
 *   sl_load_all(...) == SL_CANCELLED ("load cancelled"); nothing is kept
 *
 * A cancelled token stays cancelled: every later load with options that hold it fails
 * with SL_CANCELLED before allocating anything (make a new token for the next load). Lifetime: reference
 * counted like sl_host_pool (the handle and each sl_options holding it). Thread safety:
 * every call may run on any thread, concurrently with loads. Added in 0.1.2. */
typedef struct sl_cancel_token sl_cancel_token;

/* sl_cancel_token_new: a new, not cancelled token into *out. Errors:
 * SL_INVALID_ARGUMENT "out is NULL". sl_cancel_token_free: drop the handle's reference
 * (NULL: no-op). */
sl_status sl_cancel_token_new(sl_cancel_token** out);
void sl_cancel_token_free(sl_cancel_token* token);

/* sl_cancel_token_cancel: cancel every load using the token, running or later: each
 * stops at its next check — before its arenas are allocated, every 64 MiB per thread
 * while the host arena is pre-faulted, before the shards are opened, and before each
 * span is read (a span is at most one staging slot, 16 MiB by default), and while it
 * waits for the folder's lock to open the shards (0.1.5) — and fails with SL_CANCELLED
 * "load cancelled", its arenas freed. sl_checkpoint_open_with stops a wait for the
 * folder's lock on it too. Errors: SL_INVALID_ARGUMENT "token is NULL". */
sl_status sl_cancel_token_cancel(sl_cancel_token* token);

/* sl_cancel_token_is_cancelled: 1 once cancelled, else 0 (0 for NULL). */
int sl_cancel_token_is_cancelled(const sl_cancel_token* token);

/* sl_options_set_cancel_token: loads with these options stop when `token` is cancelled
 * (NULL: no token, the default). The options hold a reference, so `token` may be freed
 * first. Not while a load uses the options. Errors: SL_INVALID_ARGUMENT "options is
 * NULL". */
sl_status sl_options_set_cancel_token(sl_options* options, sl_cancel_token* token);

/* sl_checkpoint_open_with: sl_checkpoint_open, with what of `options` applies to
 * opening (NULL: none): its cancel token, once cancelled, stops a wait for the folder's
 * lock (a shardload writer publishing there) with SL_CANCELLED "<folder>: stopped while
 * waiting for the folder's lock", where sl_checkpoint_open waits up to 60 s; and its
 * sl_options_set_strict_index (0.1.6). The options are only read during the call.
 * Errors: those of sl_checkpoint_open. Added in 0.1.5. */
sl_status sl_checkpoint_open_with(const char* path, const sl_options* options,
                                  sl_checkpoint** out);

/* ----------------------------------------------------------------- match report */

/* sl_report: what matched, what is missing, unexpected, mismatched or renamed, and
 * (SL_REPORT_WARNINGS) what a load that succeeded says about how it ran. */
typedef struct sl_report sl_report;

/* sl_report_list: which list of a report to read. */
typedef enum sl_report_list {
  SL_REPORT_MATCHED = 0,    /* target names that received data */
  SL_REPORT_MISSING = 1,    /* target names with no stored tensor */
  SL_REPORT_UNEXPECTED = 2, /* stored names (after renames) no target wanted */
  SL_REPORT_MISMATCHED = 3, /* target names whose shape/dtype differ (or were cast) */
  SL_REPORT_RENAMED = 4,    /* original stored names that rename rules rewrote */
  SL_REPORT_WARNINGS = 5    /* lines about how a load that succeeded ran, e.g. "pinned
                               staging memory was refused (...): the copies to the GPU
                               ran from N bytes of pageable memory instead, ..." (since
                               0.1.10; not in sl_report_json) */
} sl_report_list;

/* sl_report_status: SL_OK when the load could go on, else the failure's code;
 * *message (may be NULL) gets the PyTorch-style message ("" when OK). This returns the
 * report's status and does not set sl_last_error; for a NULL report it returns
 * SL_INVALID_ARGUMENT and sets it ("report is NULL"). */
sl_status sl_report_status(const sl_report* report, const char** message);

/* sl_report_count: entries in `list`, an sl_report_list value (0 for NULL or an unknown
 * list). Lists are passed as int so that any value from another language is defined. */
size_t sl_report_count(const sl_report* report, int list);

/* sl_report_item: entry `index` of `list` as a borrowed name (length in *len when len is
 * not NULL; `name` may be NULL too). Errors: SL_OUT_OF_RANGE; SL_INVALID_ARGUMENT for
 * an unknown list. */
sl_status sl_report_item(const sl_report* report, int list, size_t index,
                         const char** name, size_t* len);

/* sl_report_mismatch: details of SL_REPORT_MISMATCHED entry `index`: the stored and
 * target dtype+shape ("F32[10, 5]") and whether it is an error (0: an allowed cast).
 * Any out pointer may be NULL. `name` is NUL-terminated: for names holding NUL bytes,
 * use sl_report_item(SL_REPORT_MISMATCHED) (with its length) or sl_report_json.
 * Errors: SL_OUT_OF_RANGE for an index past the end. */
sl_status sl_report_mismatch(const sl_report* report, size_t index, const char** name,
                             const char** checkpoint, const char** target, int* is_error);

/* sl_report_renamed: SL_REPORT_RENAMED entry `index`: original and new name. Any out
 * pointer may be NULL. Both are NUL-terminated: for names holding NUL bytes, take the
 * original from sl_report_item(SL_REPORT_RENAMED) (with its length) and both from
 * sl_report_json. Errors: SL_OUT_OF_RANGE for an index past the end. */
sl_status sl_report_renamed(const sl_report* report, size_t index, const char** from,
                            const char** to);

/* sl_report_json: the whole report as JSON (see MatchReport::ToJson), rendered on the
 * first call (thread-safe). Borrowed; "" (not NULL) for a NULL report, and when memory
 * to render it ran out (a later call tries again). Names are JSON-escaped as \u00XX
 * per byte where they are not valid UTF-8. */
const char* sl_report_json(const sl_report* report);

/* sl_report_free: release (NULL: no-op). */
void sl_report_free(sl_report* report);

/* ----------------------------------------------------------------- loads */

/* sl_target: one tensor the caller expects (like one entry of a model's state_dict).
 * `name` has `name_len` bytes (it need not be NUL-terminated). `device` NULL means the
 * options' device map decides. `data` is caller memory of exactly dtype × shape bytes
 * on that device (sl_load_into), or NULL (sl_load_all with targets). */
typedef struct sl_target {
  const char* name;
  size_t name_len;
  const char* dtype;
  const uint64_t* shape;
  size_t ndim;
  const char* device;
  void* data;
} sl_target;

/* sl_load_into: load_state_dict — load the checkpoint into the targets' memory, which
 * must stay valid for the call. When report_out is not NULL it receives the match
 * report whenever matching ran, also when the load then failed (strict failures and
 * size mismatches come back as SL_INVALID_ARGUMENT with the report's message); after
 * a load that succeeded its SL_REPORT_WARNINGS list says what the caller should know
 * about how it ran (a CUDA load that staged through pageable memory because pinned
 * memory was refused: slower, but complete). On any
 * error nothing may be assumed written. Errors: invalid targets or options
 * (SL_INVALID_ARGUMENT), SL_INVALID_ARGUMENT "tensor 'x': cuda:N: no such CUDA device (M
 * devices: <probe's reason>)" for a cuda target the machine lacks (sl_load_all says it
 * without the "tensor 'x': ", as the device map decides it for every tensor;
 * sl_cuda_device_count() says how many there are), read errors, SL_DATA_LOSS (a
 * shard shortened while it is read: "<path>: file shrank to N bytes while reading
 * (expected M) (bytes [a, b) of tensor 'x')", <path> the shard's path as opened, the
 * checkpoint's folder included; a read span of several tensors says "(bytes [a, b):
 * tensors 'x' to 'y' (N))"), SL_ABORTED (a rewrite of the
 * checkpoint raced the load: "<file>: file was replaced while loading (inode changed)",
 * "... since the checkpoint was opened and its header differs (open the checkpoint
 * again)"; open it again and retry), SL_CANCELLED. Targets whose
 * memory overlaps (tied weights) are written in no defined order, possibly at once:
 * give such targets separate buffers, or one target and an alias, unless they are
 * known to receive the same stored tensor. Device targets: the copies run on the
 * loader's own CUDA streams and do not wait for other GPU work, so nothing may still
 * use target memory when this is called (synchronize first); they are complete when it
 * returns. A cuda:N target in pinned host memory or in another device's memory is
 * SL_INVALID_ARGUMENT. */
sl_status sl_load_into(const sl_checkpoint* checkpoint, const sl_target* targets,
                       size_t target_count, const sl_options* options, sl_report** report_out);

/* sl_loaded: tensors placed by the loader in arenas it owns (one per device).
 * Reference counted: the handle and every DLPack export hold a reference; the arenas
 * are freed when the last one goes. */
typedef struct sl_loaded sl_loaded;

/* sl_load_all: load_file — load every stored tensor (target_count 0; names after the
 * options' renames) or the given targets (each `data` must be NULL) into arenas.
 * report_out (may be NULL) receives the report whenever matching ran, also when the
 * load failed after it (free it with sl_report_free in either case; it stays NULL when
 * the call failed before matching), with SL_REPORT_WARNINGS as in sl_load_into. On
 * error *out is NULL and every arena is freed.
 * Errors: as sl_load_into, plus SL_INVALID_ARGUMENT "target 'x' has a data pointer:
 * LoadAll places tensors in its own arenas (use LoadInto for caller memory)" and
 * SL_RESOURCE_EXHAUSTED when an arena cannot be allocated. */
sl_status sl_load_all(const sl_checkpoint* checkpoint, const sl_options* options,
                      const sl_target* targets, size_t target_count, sl_loaded** out,
                      sl_report** report_out);

/* sl_loaded_tensor: one loaded tensor; pointers borrowed from the sl_loaded. `device`
 * is "cpu" or "cuda:N"; `data` is a host or device pointer, 256-byte aligned (NULL for
 * a tensor of zero bytes; a cpu tensor of a "file-phase" load: as aligned as in its
 * file, see sl_options_set_host_placement). */
typedef struct sl_loaded_tensor {
  const char* name;
  size_t name_len;
  const char* dtype;
  const uint64_t* shape;
  size_t ndim;
  const char* device;
  void* data;
  uint64_t bytes;
} sl_loaded_tensor;

/* sl_loaded_count: the number of loaded tensors (0 for NULL); sorted by name. */
size_t sl_loaded_count(const sl_loaded* loaded);

/* sl_loaded_get: tensor `index` into *out. Errors: SL_OUT_OF_RANGE. */
sl_status sl_loaded_get(const sl_loaded* loaded, size_t index, sl_loaded_tensor* out);

/* sl_loaded_find: index of the tensor called name[0..name_len). Errors: SL_NOT_FOUND. */
sl_status sl_loaded_find(const sl_loaded* loaded, const char* name, size_t name_len,
                         size_t* index);

/* SL_DLPACK_AS_BYTES: export the tensor's raw bytes as a uint8 tensor whose last
 * dimension is multiplied by the element size ([bytes] for scalars and sub-byte
 * dtypes); for dtypes a consumer cannot take natively. */
#define SL_DLPACK_AS_BYTES 1

/* sl_loaded_export_dlpack: tensor `index` as a new DLManagedTensor (compact, row-major,
 * strides NULL). The export holds a reference on the loaded arenas: its memory stays
 * valid after sl_loaded_free until its deleter runs (call it exactly once, from any
 * thread). Dtype codes: F16/F32/F64 float, BF16 bfloat, I* int, U* uint, BOOL bool
 * (code 6, DLPack 0.8), C64 complex. Errors: SL_OUT_OF_RANGE for an index past the
 * end, and "tensor 'x': dimension K (N) does not fit DLPack's int64_t" (a zero-element
 * tensor may declare dimensions up to 2^64 - 1; as bytes, "dimension K (N) times 4 bytes
 * does not fit ..." for the scaled last dimension); SL_INVALID_ARGUMENT for unknown flags;
 * SL_UNIMPLEMENTED "tensor 'x': dtype F8_E4M3 has no DLPack type; export it with
 * SL_DLPACK_AS_BYTES" for F4/F6/F8 dtypes without the flag. */
sl_status sl_loaded_export_dlpack(sl_loaded* loaded, size_t index, int flags,
                                  DLManagedTensor** out);

/* sl_loaded_free: drop the handle's reference (NULL: no-op). */
void sl_loaded_free(sl_loaded* loaded);

/* sl_live_arena_sets: how many loaded results (handles or exports keeping them) are
 * alive in this process; for leak checks in tests. */
size_t sl_live_arena_sets(void);

/* ----------------------------------------------------------------- writing */

/* sl_tensor_view: a host tensor to write: name (name_len bytes; NULL only with
 * name_len 0), dtype, shape and exactly dtype × shape bytes at `data`. */
typedef struct sl_tensor_view {
  const char* name;
  size_t name_len;
  const char* dtype;
  const uint64_t* shape;
  size_t ndim;
  const void* data;
} sl_tensor_view;

/* sl_save_file: write one .safetensors file atomically (same bytes as the Hugging Face
 * reference). metadata_keys/values: metadata_count NUL-terminated strings each; with
 * metadata_count 0 no __metadata__ is written. Errors: the writer's (duplicate names,
 * sizes that do not match, system errors naming the path); SL_INVALID_ARGUMENT
 * "<path>: metadata key 'k' appears twice", "<path>: metadata entry N is NULL" and
 * "<path>: tensor N has a NULL name of K bytes"; SL_OUT_OF_RANGE for a shape whose element
 * count overflows. */
sl_status sl_save_file(const char* path, const sl_tensor_view* tensors, size_t tensor_count,
                       const char* const* metadata_keys, const char* const* metadata_values,
                       size_t metadata_count);

/* sl_save_sharded: write a huggingface_hub-style checkpoint into the existing folder
 * `dir`: "<prefix>-0000k-of-0000n.safetensors" shards of at most `max_shard_size`
 * tensor bytes ("5GB", "100MB", "2GiB"; NULL = "5GB") and
 * "<prefix>.safetensors.index.json", or "<prefix>.safetensors" when one shard suffices.
 * prefix NULL = "model". Metadata goes to the index's "metadata" (each shard's
 * __metadata__ is {"format": "pt"}), or, when one shard suffices, into the file's
 * __metadata__ over {"format": "pt"} (a user "format" wins). The files are renamed
 * into place together (the old index set aside first, the new one last): a failed
 * rename restores the folder, a process killed between renames leaves shards with no
 * index (which a load refuses), never an old index over mixed shards. Errors: the
 * writer's; SL_INVALID_ARGUMENT "invalid byte size '...': ..." and "max_shard_size must
 * be > 0"; SL_OUT_OF_RANGE "byte size '...' does not fit in 64 bits". */
sl_status sl_save_sharded(const char* dir, const sl_tensor_view* tensors, size_t tensor_count,
                          const char* max_shard_size, const char* prefix,
                          const char* const* metadata_keys, const char* const* metadata_values,
                          size_t metadata_count);

/* Flags of sl_save_file_ex / sl_save_sharded_ex (bitwise or).
 * SL_SAVE_EMPTY_METADATA: sl_save_file_ex only — write `"__metadata__":{}` when
 *   metadata_count is 0 (safetensors' save_file(..., metadata={})); without it no
 *   __metadata__ is written for count 0. Shard files always carry __metadata__.
 * SL_SAVE_CHECKSUMS: also record the XXH3-64 of every tensor as
 *   `shardload.xxh3.<name>` metadata (format/checksum_writer.h): in the file's
 *   __metadata__; sharded, in the index's "metadata" and in each shard's __metadata__
 *   for its own tensors. A user key of that form for a written tensor is replaced.
 *   Loads with sl_options_set_verify check them.
 * SL_SAVE_ALIGN_64, SL_SAVE_ALIGN_4096 (at most one; added in 0.1.7): pad each
 *   header with spaces so that every file's data section starts at a multiple of 64
 *   (cache lines: loads into aligned memory copy at the full rate) or 4096 bytes
 *   (pages) instead of 8; without them the bytes are the reference's. Both at once is
 *   SL_INVALID_ARGUMENT "SL_SAVE_ALIGN_64 and SL_SAVE_ALIGN_4096 are exclusive". */
#define SL_SAVE_EMPTY_METADATA 1
#define SL_SAVE_CHECKSUMS 2
#define SL_SAVE_ALIGN_64 4
#define SL_SAVE_ALIGN_4096 8

/* sl_save_file_ex: sl_save_file with `flags`. Errors: those of sl_save_file, and
 * SL_INVALID_ARGUMENT "unknown save flags N" for bits other than those above. */
sl_status sl_save_file_ex(const char* path, const sl_tensor_view* tensors, size_t tensor_count,
                          const char* const* metadata_keys, const char* const* metadata_values,
                          size_t metadata_count, int flags);

/* sl_save_sharded_ex: sl_save_sharded with `flags` (SL_SAVE_CHECKSUMS and the
 * SL_SAVE_ALIGN_ flags; metadata goes where sl_save_sharded puts it). Errors: those of sl_save_sharded, and
 * SL_INVALID_ARGUMENT "unknown save flags N" for any other bit. */
sl_status sl_save_sharded_ex(const char* dir, const sl_tensor_view* tensors,
                             size_t tensor_count, const char* max_shard_size, const char* prefix,
                             const char* const* metadata_keys,
                             const char* const* metadata_values, size_t metadata_count,
                             int flags);

/* sl_last_save_warning: what this thread's last sl_save_sharded / sl_save_sharded_ex
 * call found worth saying, one warning per line, or "" (also after a failed call):
 * today, that the folder holds another checkpoint which a load of the folder would
 * pick, or fail on, instead of the new one ("<dir>: also holds <file> of another
 * checkpoint, so a load of the folder will not load the new <entry>; load it by its
 * path, <dir>/<entry>"). Valid until this thread's next save call. Never NULL. */
const char* sl_last_save_warning(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* SHARDLOAD_CAPI_SHARDLOAD_H_ */
