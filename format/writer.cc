#include "format/writer.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <set>
#include <utility>

#include <simdjson.h>

#include "format/folder_lock.h"
#include "format/index.h"
#include "format/scoped_fd.h"
#include "format/text.h"

namespace shardload {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference's MAX_HEADER_SIZE
constexpr size_t kMinBuffer = 4096;
constexpr size_t kMaxBuffer = size_t{1} << 30;
constexpr uint64_t kMaxInMemoryFile = uint64_t{1} << 30;

// IsOneJsonValue: whether `text` is exactly one JSON value (whitespace around it
// allowed) that an index can hold as a metadata value: nested at most
// kIndexMaxDepth - 2 deep, since it sits 2 levels below the index's root.
bool IsOneJsonValue(std::string_view text) {
  simdjson::dom::parser parser(text.size() + 64);
  simdjson::dom::element value;
  if (parser.allocate(std::max<size_t>(text.size(), 64), kIndexMaxDepth - 2)) return false;
  return !parser.parse(text.data(), text.size()).get(value);
}

std::string Quote(std::string_view name) {
  // Names in messages: printable as-is, except that control bytes are escaped so a
  // message stays on one line.
  std::string out = "'";
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += "'";
  return out;
}

// Decodes the code point at s[i]; returns its byte length, 0 when malformed.
size_t DecodeUtf8(std::string_view s, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t len;
  uint32_t v;
  uint32_t min;
  if ((c & 0xe0) == 0xc0) {
    len = 2, v = c & 0x1f, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3, v = c & 0x0f, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    v = (v << 6) | (b(i + k) & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return len;
}

void AppendHex4(std::string* out, uint32_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  *out += "\\u";
  for (int shift = 12; shift >= 0; shift -= 4) *out += kHex[(v >> shift) & 15];
}

// Python's json.dumps(ensure_ascii=True) string form. `s` must be valid UTF-8.
std::string EscapePythonJsonString(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    size_t len = DecodeUtf8(s, i, &cp);
    if (len == 0) len = 1, cp = 0xfffd;  // unreachable for validated input
    i += len;
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      default: break;
    }
    if (cp >= 0x20 && cp <= 0x7e) {
      out += static_cast<char>(cp);
    } else if (cp < 0x10000) {
      AppendHex4(&out, cp);
    } else {
      uint32_t v = cp - 0x10000;
      AppendHex4(&out, 0xd800 | (v >> 10));
      AppendHex4(&out, 0xdc00 | (v & 0x3ff));
    }
  }
  out += "\"";
  return out;
}

// CheckUtf8: "<label>: <kind> '<subject>' is not valid UTF-8 (byte N)" when `s` is not.
Status CheckUtf8(std::string_view s, std::string_view kind, std::string_view subject,
                 std::string_view label) {
  size_t bad = 0;
  if (IsValidUtf8(s, &bad)) return OkStatus();
  return InvalidArgumentError(std::string(label) + ": " + std::string(kind) + " " +
                              Quote(subject) + " is not valid UTF-8 (byte " +
                              std::to_string(bad) + ")");
}

using Fd = ScopedFd;

// TempFileGuard: removes the temporary file unless Release()d after the rename.
class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path) : path_(std::move(path)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

Status WriteAll(int fd, const std::byte* p, size_t n, std::string_view label) {
  while (n > 0) {
    size_t chunk = std::min<size_t>(n, size_t{1} << 30);
    ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, std::string(label) + ": write");
    }
    if (w == 0) return InternalError(std::string(label) + ": write returned 0 bytes");
    p += w;
    n -= static_cast<size_t>(w);
  }
  return OkStatus();
}

// BufferedWriter: large sequential writes to one fd.
class BufferedWriter {
 public:
  BufferedWriter(int fd, std::string_view label) : fd_(fd), label_(label) {}

  Status Init(size_t capacity) {
    buffer_.reset(new (std::nothrow) std::byte[capacity]);
    if (!buffer_) {
      return ResourceExhaustedError(std::string(label_) + ": cannot allocate a " +
                                    std::to_string(capacity) + "-byte write buffer");
    }
    capacity_ = capacity;
    return OkStatus();
  }

  Status Append(std::span<const std::byte> data) {
    if (data.empty()) return OkStatus();  // an empty span may have a null pointer
    // Large spans (a quarter of the buffer or more) go straight to the file: copying
    // them would cost a memcpy and save almost no system calls.
    if (data.size() >= capacity_ / 4) {
      SL_RETURN_IF_ERROR(Flush());
      return WriteAll(fd_, data.data(), data.size(), label_);
    }
    if (data.size() > capacity_ - used_) SL_RETURN_IF_ERROR(Flush());
    std::memcpy(buffer_.get() + used_, data.data(), data.size());
    used_ += data.size();
    return OkStatus();
  }

  // Generate: `size` bytes produced by `fill` straight into the buffer.
  Status Generate(uint64_t size, const TensorFill& fill, std::string_view tensor_name) {
    uint64_t offset = 0;
    while (offset < size) {
      if (used_ == capacity_) SL_RETURN_IF_ERROR(Flush());
      size_t chunk = static_cast<size_t>(std::min<uint64_t>(size - offset, capacity_ - used_));
      Status s = fill(offset, std::span<std::byte>(buffer_.get() + used_, chunk));
      if (!s.ok()) {
        return Status(s.code(), std::string(label_) + ": tensor " + Quote(tensor_name) + ": " +
                                    s.message());
      }
      used_ += chunk;
      offset += chunk;
    }
    return OkStatus();
  }

  Status Flush() {
    Status s = WriteAll(fd_, buffer_.get(), used_, label_);
    used_ = 0;
    return s;
  }

 private:
  int fd_;
  std::string_view label_;
  std::unique_ptr<std::byte[]> buffer_;
  size_t capacity_ = 0;
  size_t used_ = 0;
};

std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t seed = [] {
    std::random_device rd;
    return (uint64_t{rd()} << 32) ^ rd() ^
           static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }();
  uint64_t n = counter.fetch_add(1);
  uint64_t x = seed + n * 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%d.%llu.%016llx", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(n), static_cast<unsigned long long>(x));
  return buf;
}

std::pair<std::string, std::string> SplitDirBase(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return {".", path};
  if (slash == 0) return {"/", path.substr(1)};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

// HiddenSibling: the path of a hidden file next to `path` for `tag` ("tmp" or "old"):
// "<dir>/.<base>.<tag>.<UniqueSuffix>". A base too long for that to fit in a file name
// (255 bytes) is cut short in the hidden name, so a checkpoint file whose own name is
// near the limit can still be written (its leftovers, if a writer dies, are then not
// recognized by the stale sweep).
std::string HiddenSibling(const std::string& path, std::string_view tag) {
  constexpr size_t kNameMax = 255;
  auto [dir, base] = SplitDirBase(path);
  const std::string suffix = "." + std::string(tag) + "." + UniqueSuffix();
  if (1 + base.size() + suffix.size() > kNameMax) base.resize(kNameMax - 1 - suffix.size());
  return (dir == "/" ? "/" : dir + "/") + "." + base + suffix;
}

// OpenFolder: the folder `dir` opened for reading, before anything is published into
// it: the fsync that makes the renames durable and the sweep's listing need it, and a
// folder that cannot be opened (write and search permission, but no read) must fail
// the write before any file is replaced, not after. Errors: "<dir>: open directory:
// <strerror> (nothing was replaced)".
Result<Fd> OpenFolder(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) {
    Status s = ErrnoToStatus(errno, dir + ": open directory");
    return Status(s.code(), s.message() + " (nothing was replaced)");
  }
  return fd;
}

// SyncFolder: fsync the folder `folder` (OpenFolder's) after the renames into it.
// Errors: "<dir>: fsync directory: <strerror> (the new files are in place, but their
// names may not be on disk yet)".
Status SyncFolder(const Fd& folder, const std::string& dir) {
  if (::fsync(folder.get()) != 0 && errno != EINVAL && errno != EROFS) {
    Status s = ErrnoToStatus(errno, dir + ": fsync directory");
    return Status(s.code(), s.message() + " (the new files are in place, but their names may "
                                          "not be on disk yet)");
  }
  return OkStatus();
}

std::string ShardFileName(const std::string& prefix, size_t index, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "-%05zu-of-%05zu.safetensors", index + 1, count);
  return prefix + buf;
}

Status ValidatePrefix(const std::string& prefix) {
  if (prefix.empty() || prefix.front() == '.' || prefix.find('/') != std::string::npos ||
      prefix.find('\0') != std::string::npos) {
    // A leading '.' would make hidden files, named like the writers' own temporaries.
    return InvalidArgumentError("invalid shard prefix " + Quote(prefix) +
                                ": must be a non-empty file name without '/' that does not "
                                "start with '.'");
  }
  return OkStatus();
}

// IsOurCheckpointFile: names an earlier write with this prefix may have left.
bool IsOurCheckpointFile(const std::string& name, const std::string& prefix) {
  if (name == prefix + ".safetensors" || name == prefix + ".safetensors.index.json") return true;
  // <prefix>-NNNNN-of-NNNNN.safetensors
  if (name.size() != prefix.size() + 27 || name.compare(0, prefix.size(), prefix) != 0) {
    return false;
  }
  std::string_view rest = std::string_view(name).substr(prefix.size());
  if (rest[0] != '-' || rest.substr(6, 4) != "-of-" || rest.substr(15) != ".safetensors") {
    return false;
  }
  for (size_t i : {1, 2, 3, 4, 5, 10, 11, 12, 13, 14}) {
    if (rest[i] < '0' || rest[i] > '9') return false;
  }
  return true;
}

// kLeftoverGraceSeconds: how long after its last change a dead-looking writer's file
// (DeadWritersLeftover) is kept anyway: a writer in another PID namespace (a container
// sharing the folder) looks dead here while it is still writing (WriteSharded touches
// its finished temporaries after each shard).
constexpr time_t kLeftoverGraceSeconds = 600;

// DeadWritersLeftover: whether `name`, in the folder open as `dir_fd`, is, exactly in
// UniqueSuffix's format, a temporary (".<file>.tmp.<pid>.<n>.<16 hex>") or, unless
// `temp_only`, a backup (".<file>.old.<pid>.<n>.<16 hex>") file whose <file> passes
// `ours`, whose writing process no longer exists (a writer killed mid-write: nothing
// will rename or remove it) and which has not changed for kLeftoverGraceSeconds.
// Files of this process and of live processes are kept, and so are recent ones: a
// writer in another PID namespace looks dead here, but while it writes, its files keep
// changing (a single shard taking longer than that to write, or a check_staged
// read-back that long, can still lose one; that write then fails, "nothing was
// replaced").
template <typename Ours>
bool DeadWritersLeftover(int dir_fd, const std::string& name, Ours ours, bool temp_only) {
  // From the end: 16 hex digits, '.', counter digits, '.', pid digits, ".tmp."/".old.".
  auto digits_before = [&](size_t end, bool hex) {  // start of the digit run ending at `end`
    size_t i = end;
    while (i > 0 && (std::isdigit(static_cast<unsigned char>(name[i - 1])) ||
                     (hex && name[i - 1] >= 'a' && name[i - 1] <= 'f'))) {
      --i;
    }
    return i;
  };
  if (name.size() < 2 || name[0] != '.') return false;
  size_t hex = digits_before(name.size(), true);
  if (name.size() - hex != 16 || hex == 0 || name[hex - 1] != '.') return false;
  size_t counter = digits_before(hex - 1, false);
  if (counter == hex - 1 || counter == 0 || name[counter - 1] != '.') return false;
  size_t pid_start = digits_before(counter - 1, false);
  size_t pid_len = counter - 1 - pid_start;
  if (pid_len == 0 || pid_len > 9 || pid_start < 6) return false;
  std::string_view tag(name.data() + pid_start - 5, 5);
  if (tag != ".tmp." && (temp_only || tag != ".old.")) return false;
  if (!ours(name.substr(1, pid_start - 6))) return false;
  const pid_t pid = static_cast<pid_t>(std::stol(name.substr(pid_start, pid_len)));
  if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) return false;
  struct stat st;
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return false;
  return ::time(nullptr) - st.st_mtime >= kLeftoverGraceSeconds;
}

// LeftoverOfDeadWriter: DeadWritersLeftover for the temporaries and backups of one of
// our checkpoint files (IsOurCheckpointFile).
bool LeftoverOfDeadWriter(int dir_fd, const std::string& name, const std::string& prefix) {
  return DeadWritersLeftover(
      dir_fd, name, [&](const std::string& base) { return IsOurCheckpointFile(base, prefix); },
      /*temp_only=*/false);
}

// SweepDeadTemporaries: remove the temporary files of `base` (".<base>.tmp.<pid>...")
// in `dir` that killed writers of that file left (their pid gone). Best effort, for
// WriteFile after it has published: returns whether it removed any.
bool SweepDeadTemporaries(const std::string& dir, const std::string& base) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), &::closedir);
  if (!d) return false;
  std::vector<std::string> dead;
  while (dirent* e = ::readdir(d.get())) {
    std::string name = e->d_name;
    if (DeadWritersLeftover(dirfd(d.get()), name,
                            [&](const std::string& b) { return b == base; },
                            /*temp_only=*/true)) {
      dead.push_back(std::move(name));
    }
  }
  bool removed = false;
  for (const std::string& name : dead) removed |= ::unlinkat(dirfd(d.get()), name.c_str(), 0) == 0;
  return removed;
}

}  // namespace

TensorToWrite TensorToWrite::FromBytes(std::string name, Dtype dtype, Shape shape,
                                       std::span<const std::byte> data) {
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = data;
  return t;
}

TensorToWrite TensorToWrite::FromGenerator(std::string name, Dtype dtype,
                                           Shape shape, TensorFill fill) {
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.fill = std::move(fill);
  return t;
}

bool IsValidUtf8(std::string_view s, size_t* bad_offset) {
  const std::optional<size_t> bad = Utf8ErrorOffset(s);
  if (bad && bad_offset) *bad_offset = *bad;
  return !bad;
}

std::string EscapeJsonString(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  AppendJsonStringTo(out, s, {.escape_del = false, .replace_invalid = true});
  return out;
}

namespace {

// DataAlignmentError: the error for a data_alignment that is not a power of two from 8
// to 65536, or OK.
Status DataAlignmentError(uint64_t data_alignment, std::string_view label) {
  if (data_alignment >= 8 && data_alignment <= 65536 &&
      (data_alignment & (data_alignment - 1)) == 0) {
    return OkStatus();
  }
  return InvalidArgumentError(std::string(label) + ": data_alignment " +
                              std::to_string(data_alignment) +
                              " is not a power of two from 8 to 65536");
}

}  // namespace

Status ValidateWriteOptions(const WriteOptions& options, std::string_view label) {
  if (options.buffer_bytes < kMinBuffer || options.buffer_bytes > kMaxBuffer) {
    return InvalidArgumentError(std::string(label) + ": write buffer_bytes " +
                                std::to_string(options.buffer_bytes) +
                                " is outside [4096, 1073741824]");
  }
  return DataAlignmentError(options.data_alignment, label);
}

Result<FileLayout> SerializeHeader(std::span<const TensorToWrite> tensors,
                                   const std::optional<Metadata>& metadata,
                                   std::string_view label, uint64_t data_alignment) {
  SL_RETURN_IF_ERROR(DataAlignmentError(data_alignment, label));
  const std::string lbl(label);
  std::vector<uint64_t> sizes(tensors.size());
  std::set<std::string_view> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& t = tensors[i];
    SL_RETURN_IF_ERROR(CheckUtf8(t.name, "tensor name", t.name, lbl));
    if (t.name == "__metadata__") {
      return InvalidArgumentError(lbl + ": tensor name '__metadata__' is reserved");
    }
    if (!seen.insert(t.name).second) {
      return InvalidArgumentError(lbl + ": duplicate tensor name " + Quote(t.name));
    }
    Result<uint64_t> size = TensorByteSize(t.dtype, t.shape);
    if (!size.ok()) {
      return Status(size.status().code(),
                    lbl + ": tensor " + Quote(t.name) + ": " + size.status().message());
    }
    sizes[i] = *size;
    if (t.fill) {
      if (!t.data.empty()) {
        return InvalidArgumentError(lbl + ": tensor " + Quote(t.name) +
                                    ": both data and a generator are set");
      }
    } else if (t.data.size() != *size) {
      return InvalidArgumentError(lbl + ": tensor " + Quote(t.name) + ": data is " +
                                  std::to_string(t.data.size()) + " bytes, but " +
                                  std::string(DtypeName(t.dtype)) + ShapeToString(t.shape) +
                                  " needs " + std::to_string(*size) + " bytes");
    }
  }
  if (metadata) {
    for (const auto& [k, v] : *metadata) {
      SL_RETURN_IF_ERROR(CheckUtf8(k, "metadata key", k, lbl));
      SL_RETURN_IF_ERROR(CheckUtf8(v, "metadata value of", k, lbl));
    }
  }

  FileLayout layout;
  layout.order.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) layout.order[i] = i;
  std::sort(layout.order.begin(), layout.order.end(), [&](size_t a, size_t b) {
    if (tensors[a].dtype != tensors[b].dtype) return tensors[a].dtype > tensors[b].dtype;
    return tensors[a].name < tensors[b].name;
  });

  std::string json = "{";
  bool first = true;
  if (metadata) {
    json += "\"__metadata__\":{";
    bool first_kv = true;
    for (const auto& [k, v] : *metadata) {
      if (!first_kv) json += ',';
      first_kv = false;
      json += EscapeJsonString(k);
      json += ':';
      json += EscapeJsonString(v);
    }
    json += '}';
    first = false;
  }
  layout.begin.resize(tensors.size());
  layout.end.resize(tensors.size());
  uint64_t offset = 0;
  for (size_t k : layout.order) {
    const TensorToWrite& t = tensors[k];
    uint64_t end;
    if (__builtin_add_overflow(offset, sizes[k], &end)) {
      return OutOfRangeError(lbl + ": data section size overflows 64 bits at tensor " +
                             Quote(t.name));
    }
    layout.begin[k] = offset;
    layout.end[k] = end;
    if (!first) json += ',';
    first = false;
    json += EscapeJsonString(t.name);
    json += ":{\"dtype\":\"";
    json += DtypeName(t.dtype);
    json += "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (d) json += ',';
      json += std::to_string(t.shape[d]);
    }
    json += "],\"data_offsets\":[";
    json += std::to_string(offset);
    json += ',';
    json += std::to_string(end);
    json += "]}";
    offset = end;
    if (json.size() > kMaxHeaderBytes) {  // stop growing a header that cannot be written
      return ResourceExhaustedError(lbl + ": header is more than " +
                                    std::to_string(kMaxHeaderBytes) +
                                    " bytes, over the limit of " +
                                    std::to_string(kMaxHeaderBytes) + " bytes");
    }
  }
  json += '}';
  // The smallest padded length n >= the JSON's with 8 + n a multiple of the alignment
  // (for 8, the reference's next multiple of 8).
  const uint64_t a = data_alignment;
  uint64_t n = (8 + json.size() + a - 1) / a * a - 8;
  if (n > kMaxHeaderBytes) {
    return ResourceExhaustedError(lbl + ": header is " + std::to_string(n) +
                                  " bytes, over the limit of " +
                                  std::to_string(kMaxHeaderBytes) + " bytes");
  }
  json.resize(n, ' ');
  layout.data_size = offset;
  if (__builtin_add_overflow(offset, 8 + n, &layout.file_size)) {
    return OutOfRangeError(lbl + ": file size overflows 64 bits");
  }
  layout.prefix.resize(8);
  for (int i = 0; i < 8; ++i) layout.prefix[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  layout.prefix += json;
  return layout;
}

Result<std::string> SerializeToString(std::span<const TensorToWrite> tensors,
                                      const std::optional<Metadata>& metadata,
                                      std::string_view label) {
  SL_ASSIGN_OR_RETURN(FileLayout layout, SerializeHeader(tensors, metadata, label));
  if (layout.file_size > kMaxInMemoryFile) {
    return ResourceExhaustedError(std::string(label) + ": file would be " +
                                  std::to_string(layout.file_size) +
                                  " bytes, too large to build in memory (limit 1 GiB)");
  }
  std::string out = std::move(layout.prefix);
  size_t data_start = out.size();
  out.resize(static_cast<size_t>(layout.file_size));
  for (size_t k : layout.order) {
    const TensorToWrite& t = tensors[k];
    auto* dst = reinterpret_cast<std::byte*>(out.data()) + data_start + layout.begin[k];
    uint64_t size = layout.end[k] - layout.begin[k];
    if (!t.fill) {
      if (size) std::memcpy(dst, t.data.data(), size);
      continue;
    }
    constexpr uint64_t kChunk = uint64_t{8} << 20;
    for (uint64_t off = 0; off < size; off += kChunk) {
      size_t chunk = static_cast<size_t>(std::min(kChunk, size - off));
      Status s = t.fill(off, std::span<std::byte>(dst + off, chunk));
      if (!s.ok()) {
        return Status(s.code(),
                      std::string(label) + ": tensor " + Quote(t.name) + ": " + s.message());
      }
    }
  }
  return out;
}

namespace {

// StagedFile: a complete, fsynced temporary file next to its destination, published
// (renamed over the destination) on demand; removed when destroyed unpublished.
class StagedFile {
 public:
  StagedFile(std::string temp, std::string path) : guard_(temp), temp_(std::move(temp)),
                                                   path_(std::move(path)) {}

  // Publish: rename the temporary file over the destination.
  Status Publish() {
    if (::rename(temp_.c_str(), path_.c_str()) != 0) return ErrnoToStatus(errno, path_ + ": rename");
    guard_.Release();
    return OkStatus();
  }

  const std::string& path() const { return path_; }
  const std::string& temp() const { return temp_; }

 private:
  TempFileGuard guard_;
  std::string temp_;
  std::string path_;
};

// CreateTempFile: a new, uniquely named ".<base>.tmp.<suffix>" file next to `path`.
// A file replaced keeps its permission bits and, where this process may set it, its
// owner: private weights (0600) must not become world-readable. The temp file is
// created with the old file's permission bits (so it is never more open than the old
// one, whatever follows), plus read and write for its owner (the writer reads its
// files back); then the owner and group are set, best effort (a writer that cannot
// keep the old group drops the group bits, so they do not open the file to its own
// group instead): a file system that refuses
// chown/chmod (some FUSE and CIFS mounts) still gets the file, with at most the old
// file's permissions. Setuid/setgid bits are not carried (writing clears them). A new
// name (`path` absent) takes them from `like` when that is a regular file: the
// checkpoint being replaced, whose new shard names differ from the old ones when the
// layout changes. Only a regular file's attributes are carried, never a symlink
// target's, and in a folder with the sticky bit (shared by users, like /tmp) only
// those of a file this process's user owns: another user's file there must not make
// this one theirs, or world-writable.
Status CreateTempFile(const std::string& path, const std::string& like, std::string* temp,
                      Fd* fd) {
  const std::string dir = SplitDirBase(path).first;
  struct stat folder;
  const bool shared_folder = ::stat(dir.c_str(), &folder) == 0 && (folder.st_mode & S_ISVTX);
  struct stat old;
  auto carries = [&](const std::string& from) {
    return !from.empty() && ::lstat(from.c_str(), &old) == 0 && S_ISREG(old.st_mode) &&
           (!shared_folder || old.st_uid == ::geteuid());
  };
  const bool replacing = carries(path) || carries(like);
  const mode_t create_mode = replacing ? ((old.st_mode & 0777) | 0600) : 0666;
  for (int attempt = 0;; ++attempt) {
    *temp = HiddenSibling(path, "tmp");
    int raw = ::open(temp->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, create_mode);
    if (raw >= 0) {
      fd->Reset(raw);
      if (replacing) {
        // A user who may not give the file away may still keep its group (one of theirs).
        if (::fchown(raw, old.st_uid, old.st_gid) != 0) (void)!::fchown(raw, -1, old.st_gid);
        // Group bits meant for the old group must not open the file to another one.
        struct stat now;
        const bool group_kept = ::fstat(raw, &now) == 0 && now.st_gid == old.st_gid;
        (void)!::fchmod(raw, group_kept ? create_mode : (create_mode & ~mode_t{070}));
      }
      return OkStatus();
    }
    if (errno != EEXIST || attempt >= 16) {
      return ErrnoToStatus(errno, path + ": create temporary file in " + dir);
    }
  }
}

// StageFile: WriteFile up to, not including, the rename. `like`: see CreateTempFile.
Result<std::unique_ptr<StagedFile>> StageFile(const std::string& path,
                                              std::span<const TensorToWrite> tensors,
                                              const std::optional<Metadata>& metadata,
                                              const WriteOptions& options,
                                              const std::string& like = "") {
  SL_RETURN_IF_ERROR(ValidateWriteOptions(options, path));
  if (path.empty()) return InvalidArgumentError("invalid output path '': empty");
  if (path.back() == '/') {
    return InvalidArgumentError("invalid output path '" + path + "': names a directory");
  }
  SL_ASSIGN_OR_RETURN(FileLayout layout,
                      SerializeHeader(tensors, metadata, path, options.data_alignment));
  std::string temp;
  Fd fd;
  SL_RETURN_IF_ERROR(CreateTempFile(path, like, &temp, &fd));
  auto staged = std::make_unique<StagedFile>(temp, path);  // removes temp on any error

  BufferedWriter writer(fd.get(), path);
  SL_RETURN_IF_ERROR(writer.Init(options.buffer_bytes));
  SL_RETURN_IF_ERROR(writer.Append(std::as_bytes(std::span(layout.prefix))));
  for (size_t k : layout.order) {
    const TensorToWrite& t = tensors[k];
    if (t.fill) {
      SL_RETURN_IF_ERROR(writer.Generate(layout.end[k] - layout.begin[k], t.fill, t.name));
    } else {
      SL_RETURN_IF_ERROR(writer.Append(t.data));
    }
  }
  SL_RETURN_IF_ERROR(writer.Flush());
  if (options.sync && ::fsync(fd.get()) != 0) return ErrnoToStatus(errno, path + ": fsync");
  SL_RETURN_IF_ERROR(fd.Close(path));
  return staged;
}

// StageTextFile: a small text file, staged like StageFile.
Result<std::unique_ptr<StagedFile>> StageTextFile(const std::string& path, std::string_view text,
                                                  const WriteOptions& options,
                                                  const std::string& like = "") {
  std::string temp;
  Fd fd;
  SL_RETURN_IF_ERROR(CreateTempFile(path, like, &temp, &fd));
  auto staged = std::make_unique<StagedFile>(temp, path);
  SL_RETURN_IF_ERROR(
      WriteAll(fd.get(), reinterpret_cast<const std::byte*>(text.data()), text.size(), path));
  if (options.sync && ::fsync(fd.get()) != 0) return ErrnoToStatus(errno, path + ": fsync");
  SL_RETURN_IF_ERROR(fd.Close(path));
  return staged;
}

// PublishTogether: rename staged `files` into place as one change, as far as a folder
// allows. With `last_is_index`, the old index (if any) is moved aside first (after
// `retire`) and the new one renamed in last: a process killed half-way leaves shard
// files and no index, a folder that refuses to open ("several .safetensors files and
// no index"), never an old index over a mix of old and new shards. Each file replaced is kept under a hidden
// backup name (a hard link where the file system allows) until every rename is done;
// on an error the folder is restored and the error says so, or names what could not be
// restored. The backups are removed on success. `retire`: the path of the other
// layout's entry point, or empty (see below), moved aside before anything is published
// and removed with the backups; `*retired` is set on success when a file was there.
Status PublishTogether(std::span<const std::unique_ptr<StagedFile>> files, bool last_is_index,
                       const std::string& retire, bool* retired) {
  struct Undo {
    std::string path;
    std::string backup;  // the old file, to rename back; empty: there was none
  };
  std::vector<Undo> undo;
  auto backup_name = [](const std::string& path) { return HiddenSibling(path, "old"); };
  auto restore = [&](const Status& error) {
    std::vector<std::string> failed;
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
      if (it->backup.empty()) {
        if (::unlink(it->path.c_str()) != 0 && errno != ENOENT) failed.push_back(it->path);
      } else if (::rename(it->backup.c_str(), it->path.c_str()) != 0) {
        failed.push_back(it->path + " (the old file is " + it->backup + ")");
      } else {
        // When the failed rename left the path in place, the backup is a hard link to
        // it and rename(2) of one link over another does nothing: remove it.
        ::unlink(it->backup.c_str());
      }
    }
    if (failed.empty()) return Status(error.code(), error.message() + " (nothing was replaced)");
    std::string list;
    for (const std::string& f : failed) list += (list.empty() ? "" : ", ") + f;
    return Status(error.code(), error.message() + "; could not restore " + list);
  };
  // SetAside: keep the file now at `path` (if any) under a backup name, moved (`move`)
  // or hard-linked (else; a move where links are refused).
  auto set_aside = [&](const std::string& path, bool move) -> Status {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      // A name too long for the file system names no file, and none can appear there:
      // nothing to set aside or to undo.
      if (errno == ENAMETOOLONG) return OkStatus();
      if (errno != ENOENT) return ErrnoToStatus(errno, path);
      undo.push_back({path, ""});
      return OkStatus();
    }
    if (S_ISDIR(st.st_mode)) return OkStatus();  // the rename over it fails: nothing to undo
    std::string backup = backup_name(path);
    if (move || ::link(path.c_str(), backup.c_str()) != 0) {
      if (::rename(path.c_str(), backup.c_str()) != 0) {
        return ErrnoToStatus(errno, path + ": keep the old file as " + backup);
      }
    }
    undo.push_back({path, std::move(backup)});
    return OkStatus();
  };
  // The other layout's entry point goes first (a single file replacing a sharded
  // checkpoint retires its index; an index replacing a single file retires that file):
  // at no moment do two entry points name different checkpoints, which loaders would
  // choose between differently (shardload the index, transformers the single file).
  bool retired_a_file = false;
  if (!retire.empty()) {
    if (Status s = set_aside(retire, /*move=*/true); !s.ok()) return restore(s);
    retired_a_file = !undo.empty() && !undo.back().backup.empty();
  }
  const size_t shard_count = last_is_index && !files.empty() ? files.size() - 1 : files.size();
  if (shard_count < files.size()) {
    if (Status s = set_aside(files.back()->path(), /*move=*/true); !s.ok()) return restore(s);
  }
  for (size_t i = 0; i < files.size(); ++i) {
    if (i < shard_count) {
      if (Status s = set_aside(files[i]->path(), /*move=*/false); !s.ok()) return restore(s);
    }
    if (Status s = files[i]->Publish(); !s.ok()) return restore(s);
  }
  for (const Undo& u : undo) {
    if (!u.backup.empty()) ::unlink(u.backup.c_str());  // a left-over is hidden and harmless
  }
  *retired = retired_a_file;
  return OkStatus();
}

}  // namespace

Status WriteFile(const std::string& path, std::span<const TensorToWrite> tensors,
                 const std::optional<Metadata>& metadata, const WriteOptions& options) {
  const std::string dir = SplitDirBase(path).first;
  Fd folder;  // opened before anything is written (see OpenFolder)
  if (options.sync) {
    Result<Fd> opened = OpenFolder(dir);
    if (opened.ok()) {
      folder = std::move(opened).value();
    } else if (opened.status().code() != StatusCode::kNotFound) {
      return opened.status();
    }  // a missing folder: StageFile's error names the file
  }
  SL_ASSIGN_OR_RETURN(std::unique_ptr<StagedFile> staged,
                      StageFile(path, tensors, metadata, options));
  if (options.sync && !folder.valid()) {
    SL_ASSIGN_OR_RETURN(folder, OpenFolder(dir));
  }
  SL_RETURN_IF_ERROR(staged->Publish());
  if (options.sync) SL_RETURN_IF_ERROR(SyncFolder(folder, dir));
  // A killed earlier write of this file left its temporary: gone now (best effort).
  if (SweepDeadTemporaries(dir, SplitDirBase(path).second) && options.sync) {
    (void)SyncFolder(folder, dir);
  }
  return OkStatus();
}

Result<uint64_t> ParseByteSize(std::string_view text) {
  const std::string quoted = "'" + std::string(text) + "'";
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("invalid byte size " + quoted + ": " + std::string(why));
  };
  size_t i = 0;
  uint64_t whole = 0;
  size_t whole_digits = 0;
  bool overflow = false;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (__builtin_mul_overflow(whole, 10, &whole) ||
        __builtin_add_overflow(whole, static_cast<uint64_t>(text[i] - '0'), &whole)) {
      overflow = true;
    }
    ++i, ++whole_digits;
  }
  std::string_view frac;
  if (i < text.size() && text[i] == '.') {
    size_t start = ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    frac = text.substr(start, i - start);
    if (frac.empty()) return bad("expected digits after '.'");
  }
  if (whole_digits == 0) return bad("expected a number such as 5GB, 2GiB or 1048576");
  if (i < text.size() && text[i] == ' ') ++i;
  std::string_view unit = text.substr(i);
  if (!unit.empty() && unit.back() == 'b') {
    return bad("a lowercase 'b' means bits; use 'B' for bytes");
  }
  std::string u;
  for (char c : unit) u += static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
  struct Unit {
    const char* name;
    uint64_t factor;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"B", 1},
      {"KB", 1'000},
      {"MB", 1'000'000},
      {"GB", 1'000'000'000},
      {"TB", 1'000'000'000'000},
      {"KIB", uint64_t{1} << 10},
      {"MIB", uint64_t{1} << 20},
      {"GIB", uint64_t{1} << 30},
      {"TIB", uint64_t{1} << 40},
  };
  const Unit* found = nullptr;
  for (const Unit& cand : kUnits) {
    if (u == cand.name) found = &cand;
  }
  if (!found) return bad("unknown unit '" + std::string(unit) + "' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
  if (!frac.empty() && unit.empty()) return bad("a fraction needs a unit (e.g. 1.5GB)");
  uint64_t value;
  if (overflow || __builtin_mul_overflow(whole, found->factor, &value)) {
    return OutOfRangeError("byte size " + quoted + " does not fit in 64 bits");
  }
  // Fraction: floor(0.frac * factor), exactly, digit by digit (factor ≤ 2^40, so
  // remainder * 10 never overflows).
  uint64_t frac_bytes = 0;
  unsigned __int128 num = 0, den = 1;
  for (char c : frac) {
    if (den > (unsigned __int128)1 << 100) break;  // further digits cannot change the floor
    num = num * 10 + static_cast<unsigned>(c - '0');
    den *= 10;
  }
  frac_bytes = static_cast<uint64_t>(num * found->factor / den);
  if (__builtin_add_overflow(value, frac_bytes, &value)) {
    return OutOfRangeError("byte size " + quoted + " does not fit in 64 bits");
  }
  return value;
}

Result<ShardPlan> PlanShards(std::span<const TensorToWrite> tensors, const ShardOptions& options) {
  SL_RETURN_IF_ERROR(ValidatePrefix(options.prefix));
  if (options.num_shards < 0) {
    return InvalidArgumentError("num_shards must be >= 0, got " +
                                std::to_string(options.num_shards));
  }
  if (options.num_shards == 0 && options.max_shard_size == 0) {
    return InvalidArgumentError("max_shard_size must be > 0");
  }
  if (options.num_shards > 0 && static_cast<size_t>(options.num_shards) > tensors.size() &&
      !(options.num_shards == 1 && tensors.empty())) {
    return InvalidArgumentError("num_shards " + std::to_string(options.num_shards) +
                                " exceeds the number of tensors (" +
                                std::to_string(tensors.size()) + ")");
  }
  std::vector<uint64_t> sizes(tensors.size());
  ShardPlan plan;
  for (size_t i = 0; i < tensors.size(); ++i) {
    Result<uint64_t> size = TensorByteSize(tensors[i].dtype, tensors[i].shape);
    if (!size.ok()) {
      return Status(size.status().code(),
                    "tensor " + Quote(tensors[i].name) + ": " + size.status().message());
    }
    sizes[i] = *size;
    if (__builtin_add_overflow(plan.total_size, *size, &plan.total_size)) {
      return OutOfRangeError("total checkpoint size overflows 64 bits");
    }
  }

  if (tensors.empty()) {
    plan.shards.emplace_back();
  } else if (options.num_shards == 0) {
    std::vector<size_t> current;
    uint64_t current_size = 0;
    // huggingface_hub groups tensors by storage, and every empty torch tensor has the
    // same one (null, 0 bytes): the zero-byte tensors after the first join its shard.
    size_t first_empty = tensors.size();
    std::vector<size_t> later_empty;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (sizes[i] == 0 && first_empty != tensors.size()) {
        later_empty.push_back(i);
        continue;
      }
      if (sizes[i] == 0) first_empty = i;
      if (sizes[i] > options.max_shard_size) {
        plan.shards.push_back({i});  // oversize: its own shard, the current one continues
        continue;
      }
      if (!current.empty() && current_size + sizes[i] > options.max_shard_size) {
        plan.shards.push_back(std::move(current));
        current.clear();
        current_size = 0;
      }
      current.push_back(i);
      current_size += sizes[i];
    }
    if (!current.empty()) plan.shards.push_back(std::move(current));
    for (std::vector<size_t>& shard : plan.shards) {
      if (later_empty.empty() || std::find(shard.begin(), shard.end(), first_empty) == shard.end()) {
        continue;
      }
      shard.insert(shard.end(), later_empty.begin(), later_empty.end());
      break;
    }
  } else {
    const size_t n = tensors.size();
    const size_t shards = static_cast<size_t>(options.num_shards);
    std::vector<uint64_t> prefix(n + 1, 0);
    for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + sizes[i];
    std::vector<size_t> cuts = {0};
    for (size_t k = 1; k < shards; ++k) {
      unsigned __int128 target128 = (unsigned __int128)plan.total_size * k / shards;
      uint64_t target = static_cast<uint64_t>(target128);
      size_t lo = cuts.back() + 1;   // each shard gets at least one tensor
      size_t hi = n - (shards - k);  // leave one tensor for each remaining shard
      size_t c = static_cast<size_t>(
          std::lower_bound(prefix.begin() + lo, prefix.begin() + hi + 1, target) - prefix.begin());
      if (c > hi) c = hi;  // clamped: prefix[c] < target, and c is the closest cut
      if (c > lo && prefix[c] >= target && target - prefix[c - 1] <= prefix[c] - target) --c;
      cuts.push_back(c);
    }
    cuts.push_back(n);
    for (size_t k = 0; k < shards; ++k) {
      std::vector<size_t> shard;
      for (size_t i = cuts[k]; i < cuts[k + 1]; ++i) shard.push_back(i);
      plan.shards.push_back(std::move(shard));
    }
  }

  for (size_t s = 0; s < plan.shards.size(); ++s) {
    uint64_t bytes = 0;
    for (size_t i : plan.shards[s]) bytes += sizes[i];
    plan.shard_bytes.push_back(bytes);
    plan.files.push_back(plan.shards.size() == 1
                             ? options.prefix + ".safetensors"
                             : ShardFileName(options.prefix, s, plan.shards.size()));
  }
  if (plan.shards.size() > 1) plan.index_file = options.prefix + ".safetensors.index.json";
  // Names a file system cannot hold (NAME_MAX, 255 bytes on Linux file systems) fail
  // here, before anything is written, rather than at the first rename.
  constexpr size_t kNameMax = 255;
  for (const std::string* name : {&plan.files.back(), &plan.index_file}) {
    if (name->size() > kNameMax) {
      return InvalidArgumentError("shard prefix is too long: file name " + Quote(*name) +
                                  " would be " + std::to_string(name->size()) +
                                  " bytes, more than the 255 a file name may have");
    }
  }
  return plan;
}

Result<std::string> SerializeIndex(std::span<const TensorToWrite> tensors, const ShardPlan& plan,
                                   const Metadata& user_metadata,
                                   const std::set<std::string, std::less<>>& json_keys) {
  std::map<std::string, std::string> meta;  // key → JSON value text, sorted
  meta["total_size"] = std::to_string(plan.total_size);
  for (const auto& [k, v] : user_metadata) {
    if (k == "total_size") {
      return InvalidArgumentError("index metadata key 'total_size' is reserved");
    }
    SL_RETURN_IF_ERROR(CheckUtf8(k, "index metadata key", k, "index"));
    SL_RETURN_IF_ERROR(CheckUtf8(v, "index metadata value of", k, "index"));
    if (json_keys.contains(k)) {
      if (!IsOneJsonValue(v)) {
        return InvalidArgumentError("index metadata value of " + Quote(k) +
                                    " is not one JSON value: " + Quote(v));
      }
      meta[k] = v;
    } else {
      meta[k] = EscapePythonJsonString(v);
    }
  }
  std::map<std::string_view, size_t> weight_map;  // name → shard
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    for (size_t i : plan.shards[s]) {
      if (i >= tensors.size()) return InvalidArgumentError("shard plan does not match the tensors");
      SL_RETURN_IF_ERROR(CheckUtf8(tensors[i].name, "tensor name", tensors[i].name, "index"));
      if (!weight_map.emplace(tensors[i].name, s).second) {
        return InvalidArgumentError("index: duplicate tensor name " + Quote(tensors[i].name));
      }
    }
  }
  std::string out = "{\n  \"metadata\": {";
  bool first = true;
  for (const auto& [k, v] : meta) {
    out += first ? "\n    " : ",\n    ";
    first = false;
    out += EscapePythonJsonString(k);
    out += ": ";
    out += v;
  }
  out += "\n  },\n  \"weight_map\": {";
  first = true;
  for (const auto& [name, s] : weight_map) {
    out += first ? "\n    " : ",\n    ";
    first = false;
    out += EscapePythonJsonString(name);
    out += ": ";
    out += EscapePythonJsonString(plan.files[s]);
  }
  out += first ? "}\n}\n" : "\n  }\n}\n";
  return out;
}

// RivalCheckpointWarning: when, once `plan` is written into `dir`, a load of the folder
// (the folder rule of Checkpoint::Open: model.safetensors.index.json, else the only
// index, else model.safetensors, else the only .safetensors file) would not load the
// new checkpoint because of another checkpoint's files there, the warning that says so
// (see ShardedWriteResult::warnings); else "". Files of `prefix` count as the old
// version of this checkpoint, replaced or swept, only with `remove_stale`. Looked at
// before anything is written; a folder that cannot be listed gives no warning.
std::string RivalCheckpointWarning(const std::string& dir, const std::string& prefix,
                                   bool remove_stale, const ShardPlan& plan) {
  constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
  constexpr std::string_view kFileSuffix = ".safetensors";
  const bool sharded = !plan.index_file.empty();
  const std::string entry = sharded ? plan.index_file : plan.files.front();
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), &::closedir);
  if (!d) return "";
  std::vector<std::string> rivals;
  while (dirent* e = ::readdir(d.get())) {
    const std::string name = e->d_name;
    if (name == entry || name.front() == '.') continue;
    if (remove_stale && IsOurCheckpointFile(name, prefix)) continue;
    const bool is_index = name.ends_with(kIndexSuffix);
    if (!is_index && !name.ends_with(kFileSuffix)) continue;
    bool rival;
    if (sharded) {  // only another index can win over (or tie with) ours
      rival = is_index && entry != "model.safetensors.index.json";
    } else {  // any index wins; so do model.safetensors and, for another name, any file
      rival = is_index || entry != "model.safetensors";
    }
    if (rival) rivals.push_back(name);
  }
  if (rivals.empty()) return "";
  // An index first: it is what decides a load of the folder.
  std::sort(rivals.begin(), rivals.end(), [&](const std::string& a, const std::string& b) {
    const bool ai = a.ends_with(kIndexSuffix), bi = b.ends_with(kIndexSuffix);
    return ai != bi ? ai : a < b;
  });
  std::string base = dir;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  return base + ": also holds " + rivals.front() + (rivals.size() > 1 ? " (and more)" : "") +
         " of another checkpoint, so a load of the folder will not load the new " + entry +
         "; load it by its path, " + base + "/" + entry;
}

Result<ShardedWriteResult> WriteSharded(const std::string& dir,
                                        std::span<const TensorToWrite> tensors,
                                        const ShardOptions& options) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoToStatus(errno, dir);
  if (!S_ISDIR(st.st_mode)) return InvalidArgumentError(dir + ": not a directory");
  ShardedWriteResult result;
  SL_ASSIGN_OR_RETURN(result.plan, PlanShards(tensors, options));
  // Opened before anything is written: nothing after the renames needs a new open (the
  // fsync, the sweep's listing and unlinks go through it).
  Fd folder;
  if (options.write.sync || options.remove_stale) {
    SL_ASSIGN_OR_RETURN(folder, OpenFolder(dir));
  }
  const ShardPlan& plan = result.plan;
  if (std::string rival = RivalCheckpointWarning(dir, options.prefix, options.remove_stale, plan);
      !rival.empty()) {
    result.warnings.push_back(std::move(rival));
  }
  std::string index_text;
  if (!plan.index_file.empty()) {
    SL_ASSIGN_OR_RETURN(index_text,
                        SerializeIndex(tensors, plan, options.metadata, options.metadata_json));
  }
  Metadata file_metadata = {{"format", "pt"}};
  if (plan.shards.size() == 1) {
    for (const auto& [k, v] : options.metadata) file_metadata[k] = v;
  }
  const std::string base = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  // Every file is written and fsynced under a temporary name first; only when all of
  // them are complete are they renamed into place (PublishTogether: the other layout's
  // entry point and the old index set aside first, the new index last). A failure
  // before that (a full disk, a generator's error) leaves whatever the folder held
  // untouched; a failed rename restores it.
  // like: the entry point of the checkpoint being replaced (its index, else its single
  // file), whose permissions and owner files under new names take (CreateTempFile).
  std::string like;
  for (const std::string& name : {options.prefix + ".safetensors.index.json",
                                  options.prefix + ".safetensors"}) {
    struct stat st;
    if (::stat((base + name).c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      like = base + name;
      break;
    }
  }
  std::vector<std::unique_ptr<StagedFile>> staged;
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    std::vector<TensorToWrite> shard;
    shard.reserve(plan.shards[s].size());
    for (size_t i : plan.shards[s]) shard.push_back(tensors[i]);
    Metadata shard_metadata = file_metadata;
    if (options.shard_metadata && plan.shards.size() > 1) {
      for (auto& [k, v] : options.shard_metadata(s, plan.shards[s])) shard_metadata[k] = v;
    }
    SL_ASSIGN_OR_RETURN(std::unique_ptr<StagedFile> file,
                        StageFile(base + plan.files[s], shard, shard_metadata, options.write,
                                  like));
    // The finished temporaries look fresh while later shards are written: a writer in
    // another PID namespace takes them for a dead writer's once they sit unchanged for
    // kLeftoverGraceSeconds. All are touched together, so the first is the stalest: one
    // stat per shard, and the touches only once it is a quarter of the way there (not
    // n^2/2 calls for n shards). Best effort: a failed touch changes nothing else.
    struct stat first;
    if (!staged.empty() && ::stat(staged.front()->temp().c_str(), &first) == 0 &&
        ::time(nullptr) - first.st_mtime >= kLeftoverGraceSeconds / 4) {
      for (const auto& earlier : staged) {
        (void)::utimensat(AT_FDCWD, earlier->temp().c_str(), nullptr, 0);
      }
    }
    staged.push_back(std::move(file));
    SL_ASSIGN_OR_RETURN(FileLayout layout, SerializeHeader(shard, shard_metadata, plan.files[s],
                                                           options.write.data_alignment));
    result.file_sizes.push_back(layout.file_size);
  }
  if (!plan.index_file.empty()) {
    SL_ASSIGN_OR_RETURN(std::unique_ptr<StagedFile> index,
                        StageTextFile(base + plan.index_file, index_text, options.write, like));
    staged.push_back(std::move(index));
  }
  if (options.check_staged) {
    std::vector<StagedShardFile> files;
    for (size_t i = 0; i < staged.size(); ++i) {
      const bool index = i == plan.shards.size();
      files.push_back({index ? plan.index_file : plan.files[i], staged[i]->temp(),
                       index ? -1 : static_cast<int>(i)});
    }
    if (Status s = options.check_staged(files); !s.ok()) {
      return Status(s.code(), s.message() + " (nothing was replaced)");
    }
    if (options.cancelled && options.cancelled()) {  // e.g. a signal during the check
      return CancelledError(dir + ": stopped before publishing (nothing was replaced)");
    }
  }
  std::string retired_name;  // the other layout's entry point
  if (options.remove_stale) {
    const std::string single = options.prefix + ".safetensors";
    retired_name = plan.index_file.empty() ? single + ".index.json" : single;
  }
  // Writers into one folder take turns from the first rename to the end of the sweep
  // (LockFolder, released when `folder_lock` goes), so two writes at once leave one
  // checkpoint or the other, never shards of both under one index; readers
  // (Checkpoint::Open, loads, HashCheckpoint) hold it shared while they open files, so
  // none reads a mix of old and new files. Best effort: where the folder cannot be
  // locked (some network file systems), the write goes on unlocked.
  Result<FolderLock> folder_lock =
      LockFolder(dir, FolderLock::kExclusive, kDefaultFolderLockWaitMs, options.cancelled);
  if (!folder_lock.ok()) {
    return Status(folder_lock.status().code(),
                  folder_lock.status().message() + " (nothing was replaced)");
  }
  bool retired = false;
  SL_RETURN_IF_ERROR(PublishTogether(staged, !plan.index_file.empty(),
                                     retired_name.empty() ? "" : base + retired_name, &retired));
  if (retired) result.removed.push_back(retired_name);
  if (options.write.sync) SL_RETURN_IF_ERROR(SyncFolder(folder, dir));
  if (options.remove_stale) {
    std::set<std::string> keep(plan.files.begin(), plan.files.end());
    if (!plan.index_file.empty()) keep.insert(plan.index_file);
    const int listing = ::fcntl(folder.get(), F_DUPFD_CLOEXEC, 0);  // closedir closes it
    std::unique_ptr<DIR, int (*)(DIR*)> d(listing >= 0 ? ::fdopendir(listing) : nullptr,
                                          &::closedir);
    if (!d) {
      const int err = errno;
      if (listing >= 0) ::close(listing);
      Status s = ErrnoToStatus(err, dir + ": list directory");
      return Status(s.code(), s.message() + " (the new checkpoint is in place; old files of "
                                            "the prefix may be left next to it)");
    }
    std::vector<std::string> stale, leftovers, other_indexes;
    while (dirent* e = ::readdir(d.get())) {
      std::string name = e->d_name;
      if (keep.count(name)) continue;
      if (IsOurCheckpointFile(name, options.prefix)) stale.push_back(name);
      if (LeftoverOfDeadWriter(folder.get(), name, options.prefix)) leftovers.push_back(name);
      if (name.ends_with(".index.json") && name.front() != '.' &&
          !IsOurCheckpointFile(name, options.prefix)) {
        other_indexes.push_back(name);
      }
    }
    // Files another checkpoint's index names are that checkpoint's, whatever their
    // names: kept (huggingface_hub's sweep would delete them). An index that cannot be
    // read might name any of them: then none is removed.
    std::map<std::string, std::string> claimed;  // file -> the index naming it
    std::sort(other_indexes.begin(), other_indexes.end());
    for (const std::string& index : other_indexes) {
      Result<ShardIndex> other = ReadIndexFile(base + index);
      if (!other.ok()) {
        for (const std::string& name : stale) claimed.emplace(name, "");
        result.warnings.push_back(base + index + ": cannot be read (" + other.status().message() +
                                  "), so the old files of prefix " + Quote(options.prefix) +
                                  " it may name are kept");
        continue;
      }
      for (const std::string& file : other->shard_files) claimed.emplace(file, index);
    }
    std::sort(stale.begin(), stale.end());  // warnings in name order
    std::erase_if(stale, [&](const std::string& name) {
      auto it = claimed.find(name);
      if (it != claimed.end()) {
        if (!it->second.empty()) {
          result.warnings.push_back(base + name + ": kept: " + it->second + " names it");
        }
        return true;
      }
      struct stat entry;
      if (::fstatat(folder.get(), name.c_str(), &entry, AT_SYMLINK_NOFOLLOW) == 0 &&
          !S_ISREG(entry.st_mode) && !S_ISLNK(entry.st_mode)) {
        result.warnings.push_back(base + name + ": kept: not a file");
        return true;
      }
      return false;
    });
    const size_t removed_before_sweep = result.removed.size();
    Status first_failure;  // the first stale file that could not be removed
    size_t left = 0;
    for (const std::string& name : stale) {
      if (::unlinkat(folder.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
        if (left++ == 0) {
          first_failure = ErrnoToStatus(errno, base + name + ": remove stale checkpoint file");
        }
        continue;  // the others are still removed
      }
      result.removed.push_back(name);
    }
    // Best effort: a leftover that cannot be removed (another user's, in a sticky
    // folder) does not fail a write that has succeeded.
    std::sort(leftovers.begin(), leftovers.end());
    for (const std::string& name : leftovers) {
      if (::unlinkat(folder.get(), name.c_str(), 0) == 0) result.removed.push_back(name);
    }
    const bool swept = result.removed.size() > removed_before_sweep;
    std::sort(result.removed.begin(), result.removed.end());
    if (options.write.sync && swept) SL_RETURN_IF_ERROR(SyncFolder(folder, dir));
    if (left > 0) {
      // The new checkpoint is in place by now: say so, the error is only the leftovers.
      return Status(first_failure.code(),
                    first_failure.message() + " (the new checkpoint is in place; " +
                        (left == 1 ? std::string("this old file is")
                                   : std::to_string(left) + " old files are") +
                        " left next to it)");
    }
  }
  return result;
}

}  // namespace shardload
