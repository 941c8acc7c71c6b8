// capi/shardload.cc — the C API (capi/shardload.h) over the C++ library.
//
// Every exported function catches everything (no exception crosses the C boundary),
// turns a non-OK Status into its sl_status and stores the message in a thread-local
// for sl_last_error(). Loaded results are shared_ptr-owned so that DLPack exports keep
// the arenas alive after the sl_loaded handle is freed. Host pools are shared_ptr-owned
// by their handle and by every sl_options set with them.
#include "capi/shardload.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cuda/cuda_backend.h"
#include "format/checksum_writer.h"
#include "format/dtype.h"
#include "format/scoped_fd.h"
#include "format/status.h"
#include "format/text.h"
#include "format/version.h"
#include "format/writer.h"
#include "loader/arena.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"
#include "loader/device.h"
#include "loader/file.h"
#include "loader/loader.h"
#include "loader/match.h"

namespace {

using shardload::Checkpoint;
using shardload::Device;
using shardload::Dtype;
using shardload::LoadedCheckpoint;
using shardload::LoadOptions;
using shardload::MatchReport;
using shardload::RecordedChecksums;
using shardload::Result;
using shardload::Status;
using shardload::StatusCode;
using shardload::Target;

thread_local std::string t_last_error;
// t_last_save_warning: the warnings of this thread's last sl_save_sharded(_ex) call.
thread_local std::string t_last_save_warning;
thread_local sl_status t_last_code = SL_OK;
// t_out_of_memory: the last error is FailOutOfMemory's (its message is static, so
// recording it needs no memory); constant-initialized, so setting it cannot throw.
thread_local bool t_out_of_memory = false;
constexpr char kOutOfMemoryMessage[] = "out of host memory";

// FailOutOfMemory: record resource_exhausted "out of host memory" without allocating,
// so a bad_alloc never escapes an extern "C" function.
sl_status FailOutOfMemory() noexcept {
  t_out_of_memory = true;
  t_last_code = SL_RESOURCE_EXHAUSTED;
  return t_last_code;
}

// Fail: record `status` as this thread's last error and return its code. Never throws.
sl_status Fail(const Status& status) noexcept {
  try {
    t_last_error = status.message();
  } catch (...) {
    return FailOutOfMemory();
  }
  t_out_of_memory = false;
  t_last_code = static_cast<sl_status>(status.code());
  return t_last_code;
}

sl_status Fail(StatusCode code, std::string message) {
  return Fail(Status(code, std::move(message)));
}

// OutOfRange: the out_of_range error of an index accessor: "<what> N is out of range
// (M <unit>)".
sl_status OutOfRange(const char* what, size_t index, size_t count, const char* unit) {
  return Fail(StatusCode::kOutOfRange, std::string(what) + " " + std::to_string(index) +
                                           " is out of range (" + std::to_string(count) +
                                           " " + unit + ")");
}


// FailUnexpected: internal "unexpected exception[: <what>]" (out of memory when even
// that message does not fit). Never throws.
sl_status FailUnexpected(const char* what) noexcept {
  try {
    std::string message = "unexpected exception";
    if (what != nullptr) message += std::string(": ") + what;
    return Fail(Status(StatusCode::kInternal, std::move(message)));
  } catch (...) {
    return FailOutOfMemory();
  }
}

// Guard: run `body` (returning sl_status), converting any exception to an error.
template <typename F>
sl_status Guard(F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return FailOutOfMemory();
  } catch (const std::exception& e) {
    return FailUnexpected(e.what());
  } catch (...) {
    return FailUnexpected(nullptr);
  }
}

// DtypeCName: NUL-terminated, static name of a dtype.
const char* DtypeCName(Dtype dtype) {
  static const std::vector<std::string>* names = [] {
    auto* v = new std::vector<std::string>();
    for (int i = 0; i < shardload::kDtypeCount; ++i) {
      v->emplace_back(shardload::DtypeName(static_cast<Dtype>(i)));
    }
    return v;
  }();
  return (*names)[static_cast<size_t>(dtype)].c_str();
}

// Backend: the process-wide CUDA backend, created on first use and never destroyed
// (device arenas must not outlive it, and DLPack deleters may run at any time).
shardload::cuda::CudaBackend* Backend() {
  static shardload::cuda::CudaBackend* const backend = new shardload::cuda::CudaBackend();
  return backend;
}

std::string QuoteName(std::string_view name) { return shardload::QuoteNameForMessage(name); }

std::atomic<size_t> g_live_arena_sets{0};

}  // namespace

// ----------------------------------------------------------------- handle types

struct sl_checkpoint {
  explicit sl_checkpoint(Checkpoint c)
      : ckpt(std::move(c)), files(ckpt.shards().size()), verified(ckpt.shards().size()) {
    for (const auto& [k, v] : ckpt.metadata()) metadata.emplace_back(&k, &v);
  }

  // kMaxKeptFiles: how many shards sl_checkpoint_read keeps open on its own (beyond
  // that, a shard is opened for each read, as before 0.1.3, so a long-lived handle on
  // a checkpoint of thousands of shards does not run out of descriptors);
  // sl_checkpoint_hold_files keeps every shard whatever this says.
  static constexpr size_t kMaxKeptFiles = 64;

  // FileRef: a shard's file for one use: a kept one (`owned` empty), or one opened for
  // this use alone.
  struct FileRef {
    const shardload::ReadableFile* file = nullptr;
    std::unique_ptr<shardload::ReadableFile> owned;
  };

  // File: shard `shard` for a read: the kept file, else opened (and kept while fewer
  // than kMaxKeptFiles are, or always with `keep`), so that later reads see that file
  // whatever happens to its path; checked against what the catalog read
  // (CheckShardFile, through the descriptor) on every use, so a file written to in
  // place since is aborted or data_loss, never read at the old offsets. A file that fails the
  // check when first opened is not kept (a later use opens the path again, so a shard
  // put back as it was reads again). Opens and checks run outside the lock.
  // Thread-safe; a kept file stays valid until the handle is freed.
  shardload::Result<FileRef> File(size_t shard, bool keep = false) const {
    const shardload::ShardInfo& info = ckpt.shards()[shard];
    FileRef ref;
    {
      std::lock_guard<std::mutex> lock(files_mu);
      ref.file = files[shard].get();
    }
    // The clock is read before each fstat (the open's, or Stat): an identity counts as
    // settled only when its last change was 2 s before the fstat, however long the
    // check after it takes.
    if (ref.file == nullptr) {
      // The kept files are of one save: a file to be kept is opened under the folder's
      // shared lock (no shardload writer publishes meanwhile), and kept only if every
      // file kept before is still the one its path names. Otherwise it is read this
      // once: while a writer holds the lock (tried, never waited for: a read does not
      // block), and for good once a rewrite has replaced a kept file (`kept_stale`).
      // `keep` (sl_checkpoint_hold_files) holds the lock and has checked already.
      shardload::FolderLock folder_lock;  // until the file is in `files`
      bool may_keep = keep;
      if (!keep) {
        {
          std::lock_guard<std::mutex> lock(files_mu);
          may_keep = kept_files < kMaxKeptFiles && !kept_stale;
        }
        if (may_keep && ckpt.sharded()) {  // one file: nothing to be of two saves
          shardload::Result<shardload::FolderLock> taken = shardload::LockFolder(
              ckpt.folder(), shardload::FolderLock::kShared, /*max_wait_ms=*/0);
          may_keep = taken.ok();
          if (may_keep) {
            folder_lock = std::move(taken).value();
            if (!KeptFilesStillAtPaths().ok()) {
              may_keep = false;
              std::lock_guard<std::mutex> lock(files_mu);
              kept_stale = true;
            }
          }
        }
      }
      const int64_t clock_ns = shardload::RealtimeNs();
      shardload::Result<std::unique_ptr<shardload::ReadableFile>> file =
          shardload::OpenFile(info.path, shardload::IoMode::kPread);
      if (!file.ok() && file.status().code() == shardload::StatusCode::kNotFound &&
          !ckpt.sharded() && !folder_lock.held()) {
        // A single file missing for a moment (a writer without hard links sets it
        // aside): the folder's lock waits for that writer, then the path is opened again.
        shardload::Result<shardload::FolderLock> taken = shardload::LockFolder(
            ckpt.folder(), shardload::FolderLock::kShared, shardload::kDefaultFolderLockWaitMs);
        if (!taken.ok()) return taken.status();
        folder_lock = std::move(taken).value();
        file = shardload::OpenFile(info.path, shardload::IoMode::kPread);
      }
      if (!file.ok()) {
        return shardload::ShardGoneIfNotFound(info, file.status().Relabeled(info.path, info.file));
      }
      const uint64_t size = (*file)->size();  // as the open's fstat found them
      const std::optional<shardload::FileIdentity> now = (*file)->identity();
      SL_RETURN_IF_ERROR(shardload::CheckShardFile(info, **file, size, now));
      std::lock_guard<std::mutex> lock(files_mu);
      if (files[shard] == nullptr) {
        if (may_keep && (keep || kept_files < kMaxKeptFiles)) {
          files[shard] = shardload::DetachFromPath(std::move(*file));
          ++kept_files;
          Verified(shard, size, now, clock_ns);
          ref.file = files[shard].get();
        } else {
          ref.owned = std::move(*file);
          ref.file = ref.owned.get();
        }
        return ref;
      }
      ref.file = files[shard].get();  // another thread kept one meanwhile: use (check) it
    }
    // A kept file that passed the check as it is now needs no second one: after a
    // touch (identity changed, same header) each check would read the header again.
    const int64_t clock_ns = shardload::RealtimeNs();
    uint64_t size = 0;
    std::optional<shardload::FileIdentity> now;
    SL_RETURN_IF_ERROR(ref.file->Stat(&size, &now));
    if (size == info.size && now.has_value()) {
      std::lock_guard<std::mutex> lock(files_mu);
      if (verified[shard] == now) return ref;
    }
    SL_RETURN_IF_ERROR(shardload::CheckShardFile(info, *ref.file, size, now));
    std::lock_guard<std::mutex> lock(files_mu);
    Verified(shard, size, now, clock_ns);  // as it was before the check: a later change is seen
    return ref;
  }

  // KeptFilesStillAtPaths: OK when every kept file is still the file its path names
  // (CheckStillAtPath), so that files opened from the paths now are of the same save;
  // else the first one's aborted. Call it under the folder's shared lock.
  shardload::Status KeptFilesStillAtPaths() const {
    for (size_t i = 0; i < ckpt.shards().size(); ++i) {
      const shardload::ReadableFile* kept = nullptr;
      {
        std::lock_guard<std::mutex> lock(files_mu);
        kept = files[i].get();
      }
      if (kept != nullptr) SL_RETURN_IF_ERROR(shardload::CheckStillAtPath(ckpt.shards()[i], *kept));
    }
    return shardload::OkStatus();
  }

  // Verified: record that kept file `shard`, of `size` bytes and identity `now` (taken
  // before its check, at `clock_ns` or later), passed CheckShardFile; only a settled
  // identity is cached (a write in the same timestamp tick would keep it, see
  // IdentityIsSettled). Requires files_mu.
  void Verified(size_t shard, uint64_t size, const std::optional<shardload::FileIdentity>& now,
                int64_t clock_ns) const {
    const bool settled = size == ckpt.shards()[shard].size && now.has_value() &&
                         shardload::IdentityIsSettled(*now, clock_ns);
    verified[shard] = settled ? now : std::nullopt;
  }

  // HeldFiles: the shards opened so far (nullptr for the others), for
  // LoadOptions::shard_files: loads read the same files as sl_checkpoint_read.
  std::vector<const shardload::ReadableFile*> HeldFiles() const {
    std::lock_guard<std::mutex> lock(files_mu);
    std::vector<const shardload::ReadableFile*> out;
    out.reserve(files.size());
    for (const auto& f : files) out.push_back(f.get());
    return out;
  }

  Checkpoint ckpt;
  std::vector<std::pair<const std::string*, const std::string*>> metadata;
  mutable std::mutex files_mu;
  mutable std::vector<std::unique_ptr<shardload::ReadableFile>> files;  // guarded by files_mu
  mutable size_t kept_files = 0;                                         // guarded by files_mu
  // kept_stale: a kept file was found replaced or removed at its path: no file is kept
  // any more (the kept ones and the new ones would be of two saves).
  mutable bool kept_stale = false;                                       // guarded by files_mu
  // verified[i]: the settled identity kept file i had when it last passed
  // CheckShardFile (nullopt: check again on next use).
  mutable std::vector<std::optional<shardload::FileIdentity>> verified;  // guarded by files_mu
};

struct sl_host_pool {
  std::shared_ptr<shardload::HostArenaPool> pool;
};

struct sl_cancel_token {
  std::shared_ptr<std::atomic<bool>> flag;
};

struct sl_options {
  LoadOptions load;
  sl_progress_fn progress = nullptr;
  void* progress_user = nullptr;
  // host_pool: the pool of sl_options_set_host_pool (a reference of its own, so that
  // the sl_host_pool handle may be freed first); load.host_arena_pool is set from it
  // per load.
  std::shared_ptr<shardload::HostArenaPool> host_pool;
  // cancel: the flag of sl_options_set_cancel_token (a reference of its own, like
  // host_pool); load.cancel points at it per load.
  std::shared_ptr<std::atomic<bool>> cancel;
  // strict_index: sl_options_set_strict_index, for sl_checkpoint_open_with.
  bool strict_index = true;
};

// sl_report: a load's MatchReport, the lines of SL_REPORT_WARNINGS (LoadStats::warnings
// of a load that succeeded) and its JSON, made on the first sl_report_json call (most
// callers never ask, and a 100k-tensor report takes tens of milliseconds to render).
struct sl_report {
  MatchReport report;
  std::vector<std::string> warnings;
  mutable std::once_flag json_once;
  mutable std::string json;
};

namespace {

// LoadedState: a LoadAll result and the strings its getters lend; shared by the
// handle and every DLPack export.
struct LoadedState {
  explicit LoadedState(LoadedCheckpoint l) : loaded(std::move(l)) {
    devices.reserve(loaded.tensors.size());
    for (const auto& t : loaded.tensors) devices.push_back(t.device.ToString());
    g_live_arena_sets.fetch_add(1);
  }
  ~LoadedState() { g_live_arena_sets.fetch_sub(1); }
  LoadedCheckpoint loaded;
  std::vector<std::string> devices;
};

// Export: one DLPack tensor and the reference that keeps its arena alive.
struct Export {
  DLManagedTensor managed;
  std::shared_ptr<LoadedState> keep;
  std::vector<int64_t> shape;
};

void DeleteExport(DLManagedTensor* self) {
  if (self == nullptr) return;
  delete static_cast<Export*>(self->manager_ctx);
}

// DlType: the DLPack type of a dtype, or nullopt when DLPack has none.
std::optional<DLDataType> DlType(Dtype d) {
  auto make = [](DLDataTypeCode code, int bits) {
    return DLDataType{static_cast<uint8_t>(code), static_cast<uint8_t>(bits), 1};
  };
  switch (d) {
    case Dtype::kBOOL: return make(kDLBool, 8);
    case Dtype::kU8: return make(kDLUInt, 8);
    case Dtype::kI8: return make(kDLInt, 8);
    case Dtype::kI16: return make(kDLInt, 16);
    case Dtype::kU16: return make(kDLUInt, 16);
    case Dtype::kF16: return make(kDLFloat, 16);
    case Dtype::kBF16: return make(kDLBfloat, 16);
    case Dtype::kI32: return make(kDLInt, 32);
    case Dtype::kU32: return make(kDLUInt, 32);
    case Dtype::kF32: return make(kDLFloat, 32);
    case Dtype::kC64: return make(kDLComplex, 64);
    case Dtype::kF64: return make(kDLFloat, 64);
    case Dtype::kI64: return make(kDLInt, 64);
    case Dtype::kU64: return make(kDLUInt, 64);
    default: return std::nullopt;
  }
}

// ToTargets: C targets into C++ ones. `need_data` is true for sl_load_into.
Result<std::vector<Target>> ToTargets(const sl_target* targets, size_t count) {
  if (count > 0 && targets == nullptr) {
    return shardload::InvalidArgumentError("targets is NULL but target_count is " +
                                           std::to_string(count));
  }
  std::vector<Target> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const sl_target& t = targets[i];
    if (t.name == nullptr && t.name_len > 0) {
      return shardload::InvalidArgumentError("target " + std::to_string(i) + " has a NULL name");
    }
    Target target;
    target.name.assign(t.name == nullptr ? "" : t.name, t.name_len);
    if (t.dtype == nullptr) {
      return shardload::InvalidArgumentError("target " + QuoteName(target.name) +
                                             " has no dtype");
    }
    Result<Dtype> dtype = shardload::DtypeFromName(t.dtype);
    if (!dtype.ok()) return dtype.status().WithPrefix("target " + QuoteName(target.name));
    target.dtype = *dtype;
    if (t.ndim > 0 && t.shape == nullptr) {
      return shardload::InvalidArgumentError("target " + QuoteName(target.name) +
                                             " has a NULL shape but ndim " +
                                             std::to_string(t.ndim));
    }
    target.shape.assign(t.shape, t.shape + t.ndim);
    if (t.device != nullptr) {
      Result<Device> device = shardload::ParseDevice(t.device);
      if (!device.ok()) return device.status().WithPrefix("target " + QuoteName(target.name));
      target.device = *device;
    }
    target.data = t.data;
    out.push_back(std::move(target));
  }
  return out;
}

// EffectiveOptions: the stored options with the C progress callback bound and the
// CUDA backend attached when any device involved is a cuda device (the host pool and
// the cancel flag are attached by HandleLoadOptions, which keeps them alive).
LoadOptions EffectiveOptions(const sl_options* options, const std::vector<Target>& targets) {
  LoadOptions load = options->load;
  if (options->progress != nullptr) {
    sl_progress_fn fn = options->progress;
    void* user = options->progress_user;
    load.progress = [fn, user](uint64_t done, uint64_t total) {
      return fn(done, total, user) != 0;
    };
  }
  bool cuda = false;
  for (const Device& d : load.devices.Devices()) cuda = cuda || d.is_cuda();
  for (const Target& t : targets) cuda = cuda || (t.device && t.device->is_cuda());
  if (cuda) load.backend = Backend();
  return load;
}

std::string_view ReportItem(const sl_report& report, sl_report_list list, size_t i) {
  const MatchReport& r = report.report;
  switch (list) {
    case SL_REPORT_MATCHED: return r.matched[i].target_name;
    case SL_REPORT_MISSING: return r.missing[i];
    case SL_REPORT_UNEXPECTED: return r.unexpected[i];
    case SL_REPORT_MISMATCHED: return r.mismatched[i].name;
    case SL_REPORT_RENAMED: return r.renamed[i].from;
    case SL_REPORT_WARNINGS: return report.warnings[i];
  }
  return {};
}

size_t ReportCount(const sl_report& report, int list) {
  const MatchReport& r = report.report;
  switch (list) {
    case SL_REPORT_MATCHED: return r.matched.size();
    case SL_REPORT_MISSING: return r.missing.size();
    case SL_REPORT_UNEXPECTED: return r.unexpected.size();
    case SL_REPORT_MISMATCHED: return r.mismatched.size();
    case SL_REPORT_RENAMED: return r.renamed.size();
    case SL_REPORT_WARNINGS: return report.warnings.size();
  }
  return 0;
}

void GiveReport(MatchReport report, sl_report** out, std::vector<std::string> warnings = {}) {
  if (out == nullptr) return;
  *out = new sl_report{std::move(report), std::move(warnings)};
}

Status NullArgument(const char* what) {
  return shardload::InvalidArgumentError(std::string(what) + " is NULL");
}

// ToWrite: C tensor views into writer inputs.
Result<std::vector<shardload::TensorToWrite>> ToWrite(const sl_tensor_view* tensors,
                                                      size_t count) {
  if (count > 0 && tensors == nullptr) return NullArgument("tensors");
  std::vector<shardload::TensorToWrite> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const sl_tensor_view& t = tensors[i];
    if (t.name == nullptr && t.name_len > 0) {
      return shardload::InvalidArgumentError("tensor " + std::to_string(i) +
                                             " has a NULL name of " + std::to_string(t.name_len) +
                                             " bytes");
    }
    std::string name(t.name == nullptr ? "" : t.name, t.name_len);
    if (t.dtype == nullptr) {
      return shardload::InvalidArgumentError("tensor " + QuoteName(name) + " has no dtype");
    }
    Result<Dtype> dtype = shardload::DtypeFromName(t.dtype);
    if (!dtype.ok()) return dtype.status().WithPrefix("tensor " + QuoteName(name));
    if (t.ndim > 0 && t.shape == nullptr) {
      return shardload::InvalidArgumentError("tensor " + QuoteName(name) + " has a NULL shape");
    }
    std::vector<uint64_t> shape(t.shape, t.shape + t.ndim);
    Result<uint64_t> bytes = shardload::TensorByteSize(*dtype, shape);
    if (!bytes.ok()) return bytes.status().WithPrefix("tensor " + QuoteName(name));
    if (*bytes > 0 && t.data == nullptr) {
      return shardload::InvalidArgumentError("tensor " + QuoteName(name) + " has NULL data");
    }
    out.push_back(shardload::TensorToWrite::FromBytes(
        std::move(name), *dtype, std::move(shape),
        std::span<const std::byte>(static_cast<const std::byte*>(t.data), *bytes)));
  }
  return out;
}

Result<shardload::Metadata> ToMetadata(const char* const* keys, const char* const* values,
                                       size_t count) {
  shardload::Metadata m;
  if (count > 0 && (keys == nullptr || values == nullptr)) {
    return NullArgument("metadata keys or values");
  }
  for (size_t i = 0; i < count; ++i) {
    if (keys[i] == nullptr || values[i] == nullptr) {
      return shardload::InvalidArgumentError("metadata entry " + std::to_string(i) +
                                             " is NULL");
    }
    if (!m.emplace(keys[i], values[i]).second) {
      return shardload::InvalidArgumentError("metadata key " + QuoteName(keys[i]) +
                                             " appears twice");
    }
  }
  return m;
}

// UnknownSaveFlags: the error of a save call given flag bits it does not know.
sl_status UnknownSaveFlags(int flags) {
  return Fail(StatusCode::kInvalidArgument, "unknown save flags " + std::to_string(flags));
}

// SaveWriteOptions: the WriteOptions the SL_SAVE_ALIGN_ flags ask for, into *out.
// SL_OK, or the error for both at once.
sl_status SaveWriteOptions(int flags, shardload::WriteOptions* out) {
  if ((flags & SL_SAVE_ALIGN_64) != 0 && (flags & SL_SAVE_ALIGN_4096) != 0) {
    return Fail(StatusCode::kInvalidArgument,
                "SL_SAVE_ALIGN_64 and SL_SAVE_ALIGN_4096 are exclusive");
  }
  if ((flags & SL_SAVE_ALIGN_64) != 0) out->data_alignment = 64;
  if ((flags & SL_SAVE_ALIGN_4096) != 0) out->data_alignment = 4096;
  return SL_OK;
}

// NewHandle: the body of every handle constructor without inputs to check: `out` must
// not be NULL, then *out = make() (NULL while make runs, so a failure leaves it NULL).
template <typename T, typename Make>
sl_status NewHandle(T** out, Make&& make) {
  return Guard([&] {
    if (out == nullptr) return Fail(NullArgument("out"));
    *out = nullptr;
    *out = make();
    return SL_OK;
  });
}

// SetOption: the body of every sl_options setter: `options` must not be NULL, then
// `update(*options)` changes it and returns the call's status (SL_OK, or a Fail(...)
// for a refused value, leaving the options as they were).
template <typename F>
sl_status SetOption(sl_options* options, F&& update) {
  return Guard([&]() -> sl_status {
    if (options == nullptr) return Fail(NullArgument("options"));
    return update(*options);
  });
}

// SetFlag: a boolean setter: the LoadOptions field `field` returns becomes value != 0.
template <typename F>
sl_status SetFlag(sl_options* options, int value, F&& field) {
  return SetOption(options, [&](sl_options& o) {
    field(o.load) = value != 0;
    return SL_OK;
  });
}

// SetParsed: a setter taking text: NULL `text` is NullArgument(`what`), then `parse`
// (returning a Result) must accept it, and `apply(options, value)` stores the value.
template <typename Parse, typename Apply>
sl_status SetParsed(sl_options* options, const char* text, const char* what, Parse&& parse,
                    Apply&& apply) {
  return SetOption(options, [&](sl_options& o) {
    if (text == nullptr) return Fail(NullArgument(what));
    auto value = parse(text);
    if (!value.ok()) return Fail(value.status());
    apply(o, std::move(value).value());
    return SL_OK;
  });
}

}  // namespace

struct sl_loaded {
  std::shared_ptr<LoadedState> state;
};

// ----------------------------------------------------------------- basics

extern "C" {

const char* sl_status_name(int status) {
  switch (status) {
    case SL_OK: return "ok";
    case SL_CANCELLED: return "cancelled";
    case SL_INVALID_ARGUMENT: return "invalid_argument";
    case SL_NOT_FOUND: return "not_found";
    case SL_ALREADY_EXISTS: return "already_exists";
    case SL_PERMISSION_DENIED: return "permission_denied";
    case SL_RESOURCE_EXHAUSTED: return "resource_exhausted";
    case SL_FAILED_PRECONDITION: return "failed_precondition";
    case SL_ABORTED: return "aborted";
    case SL_OUT_OF_RANGE: return "out_of_range";
    case SL_UNIMPLEMENTED: return "unimplemented";
    case SL_INTERNAL: return "internal";
    case SL_UNAVAILABLE: return "unavailable";
    case SL_DATA_LOSS: return "data_loss";
    default: return "unknown";
  }
}

const char* sl_last_error(void) {
  return t_out_of_memory ? kOutOfMemoryMessage : t_last_error.c_str();
}

sl_status sl_last_error_code(void) { return t_last_code; }

const char* sl_version(void) { return shardload::kVersion; }

int sl_cuda_device_count(void) { return Backend()->DeviceCount(); }

uint64_t sl_cuda_staging_bytes(void) { return Backend()->cached_staging_bytes(); }

uint64_t sl_cuda_release_staging(void) { return Backend()->ReleaseCachedStaging(); }

// ----------------------------------------------------------------- checkpoints

sl_status sl_checkpoint_open(const char* path, sl_checkpoint** out) {
  return sl_checkpoint_open_with(path, nullptr, out);
}

sl_status sl_checkpoint_open_with(const char* path, const sl_options* options,
                                  sl_checkpoint** out) {
  return Guard([&] {
    if (path == nullptr) return Fail(NullArgument("path"));
    if (out == nullptr) return Fail(NullArgument("out"));
    *out = nullptr;
    shardload::CatalogOptions catalog;
    if (options != nullptr) catalog.strict_index = options->strict_index;
    if (options != nullptr && options->cancel != nullptr) {
      std::shared_ptr<std::atomic<bool>> flag = options->cancel;  // outlives the call
      catalog.cancelled = [flag] { return flag->load(std::memory_order_relaxed); };
    }
    Result<Checkpoint> ckpt = Checkpoint::Open(path, catalog);
    if (!ckpt.ok()) return Fail(ckpt.status());
    *out = new sl_checkpoint(std::move(ckpt).value());
    return SL_OK;
  });
}

void sl_checkpoint_free(sl_checkpoint* checkpoint) { delete checkpoint; }

size_t sl_checkpoint_tensor_count(const sl_checkpoint* checkpoint) {
  return checkpoint == nullptr ? 0 : checkpoint->ckpt.tensors().size();
}

namespace {

// FillTensorInfo: the C view of stored tensor `index` (< the tensor count) of `checkpoint`.
void FillTensorInfo(const sl_checkpoint& checkpoint, size_t index, sl_tensor_info* out) {
  const shardload::StoredTensor& t = checkpoint.ckpt.tensors()[index];
  out->name = t.name.c_str();
  out->name_len = t.name.size();
  out->dtype = DtypeCName(t.dtype);
  out->shape = t.shape.data();
  out->ndim = t.shape.size();
  out->file = checkpoint.ckpt.shards()[t.shard].file.c_str();
  out->file_offset = t.file_offset;
  out->bytes = t.bytes;
}

}  // namespace

sl_status sl_checkpoint_tensor(const sl_checkpoint* checkpoint, size_t index,
                               sl_tensor_info* out) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (out == nullptr) return Fail(NullArgument("out"));
    const size_t count = checkpoint->ckpt.tensors().size();
    if (index >= count) return OutOfRange("tensor index", index, count, "tensors");
    FillTensorInfo(*checkpoint, index, out);
    return SL_OK;
  });
}

sl_status sl_checkpoint_tensors(const sl_checkpoint* checkpoint, size_t first, size_t count,
                                sl_tensor_info* out) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (out == nullptr && count > 0) return Fail(NullArgument("out"));
    const size_t total = checkpoint->ckpt.tensors().size();
    if (first > total || count > total - first) {
      return Fail(StatusCode::kOutOfRange,
                  "tensors [" + std::to_string(first) + ", " + std::to_string(first) + " + " +
                      std::to_string(count) + ") are out of range (" + std::to_string(total) +
                      " tensors)");
    }
    for (size_t i = 0; i < count; ++i) FillTensorInfo(*checkpoint, first + i, &out[i]);
    return SL_OK;
  });
}

sl_status sl_checkpoint_find(const sl_checkpoint* checkpoint, const char* name,
                             size_t name_len, size_t* index) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (index == nullptr) return Fail(NullArgument("index"));
    if (name == nullptr && name_len > 0) return Fail(NullArgument("name"));
    std::string_view n(name == nullptr ? "" : name, name_len);
    const shardload::StoredTensor* t = checkpoint->ckpt.Find(n);
    if (t == nullptr) {
      return Fail(StatusCode::kNotFound, "tensor " + QuoteName(n) + " is not in the checkpoint");
    }
    *index = static_cast<size_t>(t - checkpoint->ckpt.tensors().data());
    return SL_OK;
  });
}

size_t sl_checkpoint_metadata_count(const sl_checkpoint* checkpoint) {
  return checkpoint == nullptr ? 0 : checkpoint->metadata.size();
}

int sl_checkpoint_has_metadata(const sl_checkpoint* checkpoint) {
  return checkpoint != nullptr && checkpoint->ckpt.has_metadata() ? 1 : 0;
}

size_t sl_checkpoint_warning_count(const sl_checkpoint* checkpoint) {
  return checkpoint == nullptr ? 0 : checkpoint->ckpt.warnings().size();
}

sl_status sl_checkpoint_warning(const sl_checkpoint* checkpoint, size_t index,
                                const char** message) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (message == nullptr) return Fail(NullArgument("message"));
    const std::vector<std::string>& w = checkpoint->ckpt.warnings();
    if (index >= w.size()) return OutOfRange("warning index", index, w.size(), "warnings");
    *message = w[index].c_str();
    return SL_OK;
  });
}

sl_status sl_checkpoint_metadata(const sl_checkpoint* checkpoint, size_t index,
                                 const char** key, const char** value) {
  return sl_checkpoint_metadata_n(checkpoint, index, key, nullptr, value, nullptr);
}

sl_status sl_checkpoint_metadata_n(const sl_checkpoint* checkpoint, size_t index,
                                   const char** key, size_t* key_len, const char** value,
                                   size_t* value_len) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (index >= checkpoint->metadata.size()) {
      return OutOfRange("metadata index", index, checkpoint->metadata.size(), "entries");
    }
    const auto& [k, v] = checkpoint->metadata[index];
    if (key != nullptr) *key = k->c_str();
    if (key_len != nullptr) *key_len = k->size();
    if (value != nullptr) *value = v->c_str();
    if (value_len != nullptr) *value_len = v->size();
    return SL_OK;
  });
}

size_t sl_checkpoint_shard_count(const sl_checkpoint* checkpoint) {
  return checkpoint == nullptr ? 0 : checkpoint->ckpt.shards().size();
}

sl_status sl_checkpoint_shard(const sl_checkpoint* checkpoint, size_t index, const char** file) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (file == nullptr) return Fail(NullArgument("file"));
    const auto& shards = checkpoint->ckpt.shards();
    if (index >= shards.size()) return OutOfRange("shard index", index, shards.size(), "shards");
    *file = shards[index].file.c_str();
    return SL_OK;
  });
}

sl_status sl_checkpoint_recorded_hash_count(const sl_checkpoint* checkpoint, size_t* count) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (count == nullptr) return Fail(NullArgument("count"));
    Result<RecordedChecksums> sums = RecordedChecksums::FromCheckpoint(checkpoint->ckpt);
    if (!sums.ok()) return Fail(sums.status());
    *count = sums->size();
    return SL_OK;
  });
}

sl_status sl_checkpoint_read(const sl_checkpoint* checkpoint, size_t index, uint64_t offset,
                             uint64_t bytes, void* dst) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    const auto& tensors = checkpoint->ckpt.tensors();
    if (index >= tensors.size()) return OutOfRange("tensor index", index, tensors.size(), "tensors");
    const shardload::StoredTensor& t = tensors[index];
    if (offset > t.bytes || bytes > t.bytes - offset) {
      return Fail(StatusCode::kOutOfRange,
                  "tensor " + QuoteName(t.name) + ": bytes [" + std::to_string(offset) + ", " +
                      std::to_string(offset) + " + " + std::to_string(bytes) +
                      ") are outside its " + std::to_string(t.bytes) + " bytes");
    }
    if (bytes == 0) return SL_OK;
    if (dst == nullptr) return Fail(NullArgument("dst"));
    const shardload::ShardInfo& shard = checkpoint->ckpt.shards()[t.shard];
    shardload::Result<sl_checkpoint::FileRef> file = checkpoint->File(t.shard);
    if (!file.ok()) return Fail(file.status());
    shardload::Status read = file->file->ReadAt(
        t.file_offset + offset, std::span<std::byte>(static_cast<std::byte*>(dst), bytes));
    if (!read.ok()) {
      return Fail(shardload::Status(read.code(), read.Relabeled(shard.path, shard.file).message() +
                                                     " (reading tensor " + QuoteName(t.name) + ")"));
    }
    return SL_OK;
  });
}

sl_status sl_checkpoint_hold_files(const sl_checkpoint* checkpoint) {
  return Guard([&] {
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    // All under the folder's shared lock, as loads open theirs: the files kept are of
    // one save even when a rewrite of the same layout is being published. (One file is
    // whole by itself: no lock, and a file kept by an earlier read is simply held.)
    shardload::FolderLock folder_lock;
    if (checkpoint->ckpt.sharded()) {
      shardload::Result<shardload::FolderLock> lock =
          shardload::LockFolder(checkpoint->ckpt.folder(), shardload::FolderLock::kShared,
                                shardload::kDefaultFolderLockWaitMs);
      if (!lock.ok()) return Fail(lock.status());
      folder_lock = std::move(lock).value();
      // Files kept by earlier reads join the held set only if they are of the save
      // there now, the one the others are opened from.
      if (shardload::Status kept = checkpoint->KeptFilesStillAtPaths(); !kept.ok()) {
        return Fail(kept);
      }
    }
    for (size_t i = 0; i < checkpoint->files.size(); ++i) {
      shardload::Result<sl_checkpoint::FileRef> file = checkpoint->File(i, /*keep=*/true);
      if (!file.ok()) return Fail(file.status());
    }
    return SL_OK;
  });
}

// ----------------------------------------------------------------- options

sl_status sl_options_new(sl_options** out) {
  return NewHandle(out, [] { return new sl_options(); });
}

void sl_options_free(sl_options* options) { delete options; }

sl_status sl_options_set_device(sl_options* options, const char* device_or_map) {
  return SetParsed(options, device_or_map, "device", shardload::ParseDeviceMap,
                   [](sl_options& o, shardload::DeviceMap map) { o.load.devices = std::move(map); });
}

sl_status sl_device_map_first_cuda(const char* device_or_map, int* device) {
  return Guard([&] {
    if (device_or_map == nullptr) return Fail(NullArgument("device_or_map"));
    if (device == nullptr) return Fail(NullArgument("device"));
    Result<shardload::DeviceMap> map = shardload::ParseDeviceMap(device_or_map);
    if (!map.ok()) return Fail(map.status());
    *device = -1;
    for (const shardload::Device& d : map->Devices()) {  // sorted: the first CUDA one
      if (d.is_cuda()) {
        *device = d.index;
        break;
      }
    }
    return SL_OK;
  });
}

sl_status sl_options_set_strict(sl_options* options, int strict) {
  return SetFlag(options, strict, [](shardload::LoadOptions& l) -> bool& { return l.match.strict; });
}

sl_status sl_options_set_strict_index(sl_options* options, int strict) {
  return SetOption(options, [&](sl_options& o) {
    o.strict_index = strict != 0;
    return SL_OK;
  });
}

sl_status sl_options_add_rename(sl_options* options, const char* rule) {
  return SetParsed(options, rule, "rule", shardload::ParseRenameRule,
                   [](sl_options& o, shardload::RenameRule r) {
                     o.load.match.renames.push_back(std::move(r));
                   });
}

sl_status sl_options_set_auto_prefix(sl_options* options, int enabled) {
  return SetFlag(options, enabled,
                 [](shardload::LoadOptions& l) -> bool& { return l.match.auto_prefix; });
}

sl_status sl_options_add_alias(sl_options* options, const char* target_name,
                               const char* stored_name) {
  return SetOption(options, [&](sl_options& o) {
    if (target_name == nullptr) return Fail(NullArgument("target_name"));
    if (stored_name == nullptr) return Fail(NullArgument("stored_name"));
    if (*target_name == '\0' || *stored_name == '\0') {
      return Fail(StatusCode::kInvalidArgument, "empty alias name");
    }
    o.load.match.aliases.emplace_back(target_name, stored_name);
    return SL_OK;
  });
}

sl_status sl_options_set_metadata_aliases(sl_options* options, int enabled) {
  return SetFlag(options, enabled, [](shardload::LoadOptions& l) -> bool& {
    return l.match.aliases_from_metadata;
  });
}

sl_status sl_options_set_allow_cast(sl_options* options, int allow) {
  return SetFlag(options, allow,
                 [](shardload::LoadOptions& l) -> bool& { return l.match.allow_cast; });
}

sl_status sl_options_set_threads(sl_options* options, int threads) {
  return SetOption(options, [&](sl_options& o) {
    if (threads < 0 || threads > 256) {
      return Fail(StatusCode::kInvalidArgument,
                  "threads must be between 0 and 256, got " + std::to_string(threads));
    }
    o.load.threads = threads;
    return SL_OK;
  });
}

sl_status sl_options_set_io(sl_options* options, const char* mode) {
  return SetParsed(options, mode, "mode", shardload::ParseIoMode,
                   [](sl_options& o, shardload::IoMode m) { o.load.io = m; });
}

sl_status sl_options_set_host_placement(sl_options* options, const char* placement) {
  return SetParsed(options, placement, "placement", shardload::ParseArenaPlacement,
                   [](sl_options& o, shardload::ArenaPlacement p) { o.load.host_placement = p; });
}

sl_status sl_options_set_progress(sl_options* options, sl_progress_fn fn, void* user_data) {
  return SetOption(options, [&](sl_options& o) {
    o.progress = fn;
    o.progress_user = user_data;
    return SL_OK;
  });
}

sl_status sl_options_set_verify(sl_options* options, int verify) {
  return SetFlag(options, verify, [](shardload::LoadOptions& l) -> bool& { return l.verify; });
}

// ----------------------------------------------------------------- host memory pool

static_assert(SL_HOST_POOL_DEFAULT_MAX_CACHED_BYTES ==
                  shardload::HostArenaPool::kDefaultMaxCachedBytes,
              "the C API's default pool limit must be the library's");

sl_status sl_host_pool_new(uint64_t max_cached_bytes, sl_host_pool** out) {
  return NewHandle(out, [&] {
    return new sl_host_pool{std::make_shared<shardload::HostArenaPool>(max_cached_bytes)};
  });
}

void sl_host_pool_free(sl_host_pool* pool) { delete pool; }

uint64_t sl_host_pool_cached_bytes(const sl_host_pool* pool) {
  return pool == nullptr ? 0 : pool->pool->cached_bytes();
}

sl_status sl_host_pool_trim(sl_host_pool* pool) {
  return Guard([&] {
    if (pool == nullptr) return Fail(NullArgument("pool"));
    pool->pool->Trim();
    return SL_OK;
  });
}

sl_status sl_options_set_host_pool(sl_options* options, sl_host_pool* pool) {
  return SetOption(options, [&](sl_options& o) {
    o.host_pool = pool == nullptr ? nullptr : pool->pool;  // shared_ptr: self-assignment safe
    return SL_OK;
  });
}

// ----------------------------------------------------------------- cancel tokens

sl_status sl_cancel_token_new(sl_cancel_token** out) {
  return NewHandle(out, [] {
    return new sl_cancel_token{std::make_shared<std::atomic<bool>>(false)};
  });
}

void sl_cancel_token_free(sl_cancel_token* token) { delete token; }

sl_status sl_cancel_token_cancel(sl_cancel_token* token) {
  return Guard([&] {
    if (token == nullptr) return Fail(NullArgument("token"));
    token->flag->store(true);
    return SL_OK;
  });
}

int sl_cancel_token_is_cancelled(const sl_cancel_token* token) {
  return token != nullptr && token->flag->load() ? 1 : 0;
}

sl_status sl_options_set_cancel_token(sl_options* options, sl_cancel_token* token) {
  return SetOption(options, [&](sl_options& o) {
    o.cancel = token == nullptr ? nullptr : token->flag;
    return SL_OK;
  });
}

// ----------------------------------------------------------------- reports

sl_status sl_report_status(const sl_report* report, const char** message) {
  if (report == nullptr) return Guard([&] { return Fail(NullArgument("report")); });
  if (message != nullptr) *message = report->report.status.message().c_str();
  return static_cast<sl_status>(report->report.status.code());
}

size_t sl_report_count(const sl_report* report, int list) {
  return report == nullptr ? 0 : ReportCount(*report, list);
}

sl_status sl_report_item(const sl_report* report, int list, size_t index,
                         const char** name, size_t* len) {
  return Guard([&] {
    if (report == nullptr) return Fail(NullArgument("report"));
    if (list < SL_REPORT_MATCHED || list > SL_REPORT_WARNINGS) {
      return Fail(StatusCode::kInvalidArgument, "unknown report list " + std::to_string(list));
    }
    size_t count = ReportCount(*report, list);
    if (index >= count) return OutOfRange("report entry", index, count, "entries");
    std::string_view item =
        ReportItem(*report, static_cast<sl_report_list>(list), index);
    if (name != nullptr) *name = item.data();
    if (len != nullptr) *len = item.size();
    return SL_OK;
  });
}

sl_status sl_report_mismatch(const sl_report* report, size_t index, const char** name,
                             const char** checkpoint, const char** target, int* is_error) {
  return Guard([&] {
    if (report == nullptr) return Fail(NullArgument("report"));
    const auto& list = report->report.mismatched;
    if (index >= list.size()) return OutOfRange("report entry", index, list.size(), "entries");
    if (name != nullptr) *name = list[index].name.c_str();
    if (checkpoint != nullptr) *checkpoint = list[index].checkpoint.c_str();
    if (target != nullptr) *target = list[index].target.c_str();
    if (is_error != nullptr) *is_error = list[index].is_error ? 1 : 0;
    return SL_OK;
  });
}

sl_status sl_report_renamed(const sl_report* report, size_t index, const char** from,
                            const char** to) {
  return Guard([&] {
    if (report == nullptr) return Fail(NullArgument("report"));
    const auto& list = report->report.renamed;
    if (index >= list.size()) return OutOfRange("report entry", index, list.size(), "entries");
    if (from != nullptr) *from = list[index].from.c_str();
    if (to != nullptr) *to = list[index].to.c_str();
    return SL_OK;
  });
}

const char* sl_report_json(const sl_report* report) {
  if (report == nullptr) return "";
  try {
    std::call_once(report->json_once, [report] { report->json = report->report.ToJson(); });
  } catch (...) {  // out of memory rendering it: the once flag lets a later call retry
    return "";
  }
  return report->json.c_str();
}

void sl_report_free(sl_report* report) { delete report; }

// ----------------------------------------------------------------- loads

namespace {

// LoadKeepAlive: what one load's LoadOptions point into, owned for the whole call: the
// list of files the handle holds, and references to the options' pool and cancel flag
// (a safety net: should a progress callback call sl_options_set_host_pool or
// sl_options_set_cancel_token during the load, which the header forbids, the load's
// pool and flag still live until it returns).
struct LoadKeepAlive {
  std::vector<const shardload::ReadableFile*> held;
  std::shared_ptr<shardload::HostArenaPool> pool;
  std::shared_ptr<std::atomic<bool>> cancel;
};

// HandleLoadOptions: the effective options of a load from `checkpoint`, reading the
// files the handle holds (*keep keeps what they point into alive for the load).
// LoadInto/LoadAll check the cancel token before anything else, matching included.
LoadOptions HandleLoadOptions(const sl_checkpoint* checkpoint, const sl_options* options,
                              const std::vector<Target>& targets, LoadKeepAlive* keep) {
  LoadOptions load = EffectiveOptions(options, targets);
  keep->held = checkpoint->HeldFiles();
  keep->pool = options->host_pool;
  keep->cancel = options->cancel;
  load.shard_files = keep->held;
  load.host_arena_pool = keep->pool.get();
  load.cancel = keep->cancel.get();
  return load;
}

}  // namespace

sl_status sl_load_into(const sl_checkpoint* checkpoint, const sl_target* targets,
                       size_t target_count, const sl_options* options, sl_report** report_out) {
  return Guard([&] {
    if (report_out != nullptr) *report_out = nullptr;
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (options == nullptr) return Fail(NullArgument("options"));
    Result<std::vector<Target>> converted = ToTargets(targets, target_count);
    if (!converted.ok()) return Fail(converted.status());
    LoadKeepAlive keep;
    LoadOptions load = HandleLoadOptions(checkpoint, options, *converted, &keep);
    // The report reaches the caller also when the load fails after matching.
    std::optional<MatchReport> failed;
    Result<shardload::LoadResult> result =
        shardload::LoadInto(checkpoint->ckpt, *converted, load, &failed);
    if (!result.ok()) {
      if (failed) GiveReport(std::move(*failed), report_out);
      return Fail(result.status());
    }
    GiveReport(std::move(result->report), report_out, std::move(result->warnings));
    return SL_OK;
  });
}

sl_status sl_load_all(const sl_checkpoint* checkpoint, const sl_options* options,
                      const sl_target* targets, size_t target_count, sl_loaded** out,
                      sl_report** report_out) {
  return Guard([&] {
    if (report_out != nullptr) *report_out = nullptr;
    if (out != nullptr) *out = nullptr;
    if (checkpoint == nullptr) return Fail(NullArgument("checkpoint"));
    if (options == nullptr) return Fail(NullArgument("options"));
    if (out == nullptr) return Fail(NullArgument("out"));
    Result<std::vector<Target>> converted = ToTargets(targets, target_count);
    if (!converted.ok()) return Fail(converted.status());
    LoadKeepAlive keep;
    LoadOptions load = HandleLoadOptions(checkpoint, options, *converted, &keep);
    // The report reaches the caller also when the load fails after matching (also with
    // no targets, where LoadAll makes one per stored tensor).
    std::optional<MatchReport> failed;
    Result<LoadedCheckpoint> loaded = shardload::LoadAll(checkpoint->ckpt, load, *converted, &failed);
    if (!loaded.ok()) {
      if (failed) GiveReport(std::move(*failed), report_out);
      return Fail(loaded.status());
    }
    GiveReport(std::move(loaded->report), report_out, std::move(loaded->warnings));
    auto state = std::make_shared<LoadedState>(std::move(loaded).value());
    *out = new sl_loaded{std::move(state)};
    return SL_OK;
  });
}

size_t sl_loaded_count(const sl_loaded* loaded) {
  return loaded == nullptr ? 0 : loaded->state->loaded.tensors.size();
}

sl_status sl_loaded_get(const sl_loaded* loaded, size_t index, sl_loaded_tensor* out) {
  return Guard([&] {
    if (loaded == nullptr) return Fail(NullArgument("loaded"));
    if (out == nullptr) return Fail(NullArgument("out"));
    const auto& tensors = loaded->state->loaded.tensors;
    if (index >= tensors.size()) return OutOfRange("tensor index", index, tensors.size(), "tensors");
    const shardload::LoadedTensor& t = tensors[index];
    out->name = t.name.c_str();
    out->name_len = t.name.size();
    out->dtype = DtypeCName(t.dtype);
    out->shape = t.shape.data();
    out->ndim = t.shape.size();
    out->device = loaded->state->devices[index].c_str();
    out->data = t.bytes == 0 ? nullptr : t.data;  // the header's promise
    out->bytes = t.bytes;
    return SL_OK;
  });
}

sl_status sl_loaded_find(const sl_loaded* loaded, const char* name, size_t name_len,
                         size_t* index) {
  return Guard([&] {
    if (loaded == nullptr) return Fail(NullArgument("loaded"));
    if (index == nullptr) return Fail(NullArgument("index"));
    if (name == nullptr && name_len > 0) return Fail(NullArgument("name"));
    std::string_view n(name == nullptr ? "" : name, name_len);
    const shardload::LoadedTensor* t = loaded->state->loaded.Find(n);
    if (t == nullptr) {
      return Fail(StatusCode::kNotFound, "tensor " + QuoteName(n) + " was not loaded");
    }
    *index = static_cast<size_t>(t - loaded->state->loaded.tensors.data());
    return SL_OK;
  });
}

sl_status sl_loaded_export_dlpack(sl_loaded* loaded, size_t index, int flags,
                                  DLManagedTensor** out) {
  return Guard([&] {
    if (loaded == nullptr) return Fail(NullArgument("loaded"));
    if (out == nullptr) return Fail(NullArgument("out"));
    *out = nullptr;
    if ((flags & ~SL_DLPACK_AS_BYTES) != 0) {
      return Fail(StatusCode::kInvalidArgument, "unknown DLPack export flags " +
                                                    std::to_string(flags));
    }
    const auto& tensors = loaded->state->loaded.tensors;
    if (index >= tensors.size()) return OutOfRange("tensor index", index, tensors.size(), "tensors");
    const shardload::LoadedTensor& t = tensors[index];
    // DLPack's dimensions are int64_t: a zero-element tensor may declare larger ones.
    // (As bytes, scalars and sub-byte dtypes export the single dimension [t.bytes].)
    constexpr uint64_t kMaxDim = uint64_t{std::numeric_limits<int64_t>::max()};
    const int dtype_bits = shardload::DtypeBits(t.dtype);
    const bool flat = (flags & SL_DLPACK_AS_BYTES) && (t.shape.empty() || dtype_bits % 8 != 0);
    const uint64_t element_bytes = (flags & SL_DLPACK_AS_BYTES) ? dtype_bits / 8 : 1;
    for (size_t k = 0; !flat && k < t.shape.size(); ++k) {
      const uint64_t limit = k + 1 == t.shape.size() && element_bytes > 1 ? kMaxDim / element_bytes
                                                                          : kMaxDim;
      if (t.shape[k] > limit) {
        const std::string scaled =
            limit == kMaxDim ? "" : " times " + std::to_string(element_bytes) + " bytes";
        return Fail(StatusCode::kOutOfRange,
                    "tensor " + QuoteName(t.name) + ": dimension " + std::to_string(k) + " (" +
                        std::to_string(t.shape[k]) + ")" + scaled + " does not fit DLPack's int64_t");
      }
    }
    auto e = std::make_unique<Export>();
    DLDataType type;
    if (flags & SL_DLPACK_AS_BYTES) {
      type = DLDataType{kDLUInt, 8, 1};
      int bits = shardload::DtypeBits(t.dtype);
      if (t.shape.empty() || bits % 8 != 0) {
        e->shape.push_back(static_cast<int64_t>(t.bytes));
      } else {
        for (uint64_t d : t.shape) e->shape.push_back(static_cast<int64_t>(d));
        e->shape.back() *= bits / 8;  // checked above against INT64_MAX / (bits / 8)
      }
    } else {
      std::optional<DLDataType> dl = DlType(t.dtype);
      if (!dl) {
        return Fail(StatusCode::kUnimplemented,
                    "tensor " + QuoteName(t.name) + ": dtype " +
                        std::string(shardload::DtypeName(t.dtype)) +
                        " has no DLPack type; export it with SL_DLPACK_AS_BYTES");
      }
      type = *dl;
      for (uint64_t d : t.shape) e->shape.push_back(static_cast<int64_t>(d));
    }
    e->keep = loaded->state;
    DLTensor& dl = e->managed.dl_tensor;
    dl.data = t.data;
    dl.device.device_type = t.device.is_cuda() ? kDLCUDA : kDLCPU;
    dl.device.device_id = t.device.is_cuda() ? t.device.index : 0;
    dl.ndim = static_cast<int32_t>(e->shape.size());
    dl.dtype = type;
    dl.shape = e->shape.data();
    dl.strides = nullptr;
    dl.byte_offset = 0;
    e->managed.manager_ctx = e.get();
    e->managed.deleter = &DeleteExport;
    *out = &e.release()->managed;
    return SL_OK;
  });
}

void sl_loaded_free(sl_loaded* loaded) { delete loaded; }

size_t sl_live_arena_sets(void) { return g_live_arena_sets.load(); }

// ----------------------------------------------------------------- writing

sl_status sl_save_file(const char* path, const sl_tensor_view* tensors, size_t tensor_count,
                       const char* const* metadata_keys, const char* const* metadata_values,
                       size_t metadata_count) {
  return sl_save_file_ex(path, tensors, tensor_count, metadata_keys, metadata_values,
                         metadata_count, 0);
}

sl_status sl_save_file_ex(const char* path, const sl_tensor_view* tensors, size_t tensor_count,
                          const char* const* metadata_keys, const char* const* metadata_values,
                          size_t metadata_count, int flags) {
  return Guard([&] {
    if (path == nullptr) return Fail(NullArgument("path"));
    if ((flags & ~(SL_SAVE_EMPTY_METADATA | SL_SAVE_CHECKSUMS | SL_SAVE_ALIGN_64 |
                   SL_SAVE_ALIGN_4096)) != 0) {
      return UnknownSaveFlags(flags);
    }
    shardload::WriteOptions write_options;
    if (sl_status s = SaveWriteOptions(flags, &write_options); s != SL_OK) return s;
    Result<std::vector<shardload::TensorToWrite>> write = ToWrite(tensors, tensor_count);
    if (!write.ok()) return Fail(write.status().WithPrefix(path));
    std::optional<shardload::Metadata> metadata;
    if (metadata_count > 0 || (flags & SL_SAVE_EMPTY_METADATA) != 0) {
      Result<shardload::Metadata> m = ToMetadata(metadata_keys, metadata_values, metadata_count);
      if (!m.ok()) return Fail(m.status().WithPrefix(path));
      metadata = std::move(m).value();
    }
    Status s = (flags & SL_SAVE_CHECKSUMS) != 0
                   ? shardload::WriteFileWithChecksums(path, *write, metadata, write_options)
                   : shardload::WriteFile(path, *write, metadata, write_options);
    if (!s.ok()) return Fail(s);
    return SL_OK;
  });
}

sl_status sl_save_sharded(const char* dir, const sl_tensor_view* tensors, size_t tensor_count,
                          const char* max_shard_size, const char* prefix,
                          const char* const* metadata_keys, const char* const* metadata_values,
                          size_t metadata_count) {
  return sl_save_sharded_ex(dir, tensors, tensor_count, max_shard_size, prefix, metadata_keys,
                            metadata_values, metadata_count, 0);
}

sl_status sl_save_sharded_ex(const char* dir, const sl_tensor_view* tensors,
                             size_t tensor_count, const char* max_shard_size, const char* prefix,
                             const char* const* metadata_keys,
                             const char* const* metadata_values, size_t metadata_count,
                             int flags) {
  t_last_save_warning.clear();
  return Guard([&] {
    if (dir == nullptr) return Fail(NullArgument("dir"));
    if ((flags & ~(SL_SAVE_CHECKSUMS | SL_SAVE_ALIGN_64 | SL_SAVE_ALIGN_4096)) != 0) {
      return UnknownSaveFlags(flags);
    }
    shardload::ShardOptions options;
    if (sl_status s = SaveWriteOptions(flags, &options.write); s != SL_OK) return s;
    Result<std::vector<shardload::TensorToWrite>> write = ToWrite(tensors, tensor_count);
    if (!write.ok()) return Fail(write.status().WithPrefix(dir));
    if (max_shard_size != nullptr) {
      Result<uint64_t> size = shardload::ParseByteSize(max_shard_size);
      if (!size.ok()) return Fail(size.status());
      options.max_shard_size = *size;
    }
    if (prefix != nullptr) options.prefix = prefix;
    Result<shardload::Metadata> m = ToMetadata(metadata_keys, metadata_values, metadata_count);
    if (!m.ok()) return Fail(m.status().WithPrefix(dir));
    options.metadata = std::move(m).value();
    Result<shardload::ShardedWriteResult> r =
        (flags & SL_SAVE_CHECKSUMS) != 0
            ? shardload::WriteShardedWithChecksums(dir, *write, options)
            : shardload::WriteSharded(dir, *write, options);
    if (!r.ok()) return Fail(r.status());
    for (const std::string& w : r->warnings) {
      t_last_save_warning += (t_last_save_warning.empty() ? "" : "\n") + w;
    }
    return SL_OK;
  });
}

const char* sl_last_save_warning(void) { return t_last_save_warning.c_str(); }

}  // extern "C"
