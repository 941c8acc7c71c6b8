// `shardload inspect PATH [--json]`: list a checkpoint's files, tensors and metadata.
//
// PATH is a .safetensors file, an index (*.safetensors.index.json) or a folder holding
// either (resolved as Checkpoint::Open does). Without flags a short human summary;
// with --json exactly
//   {"files":[...],"metadata":{...},"tensors":[{"name","dtype","shape",
//    "data_offsets":[b,e],"file"}],"total_bytes":N}
// tensors sorted by name, `file` relative to the checkpoint folder, `data_offsets` as
// in the shard's header. `metadata` is the index's "metadata" object for a sharded
// checkpoint and the file's `__metadata__` for a single file (an empty object when it
// has none); its values are as the index wrote them (a numeric total_size stays a
// number, "total_size":41; a string stays a string; objects and arrays are minified).
// Shards' own `__metadata__` are not shown for sharded checkpoints. Strings are escaped
// (quote, backslash, control characters, NUL as \u0000); valid UTF-8 is passed through
// and bytes that are not valid UTF-8 (possible only in paths) become \ufffd.
// In the summary, file names and metadata keys and values that hold a control
// character are JSON-quoted (OneLineText), so one entry is always one line.
// Warnings of the catalog go to stderr as "shardload inspect: warning: ..." under --json
// (stdout stays pure JSON) and into the summary otherwise.
// Errors: exit 1 (2 for bad usage) with "shardload inspect: <message>" on stderr, and
// under --json {"error":{"code":"<StatusCodeName>","message":"..."}} on stdout; output
// that cannot be written is exit 1 with "shardload inspect: cannot write output:
// <strerror>".
// The JSON is rendered into a fixed 256 KiB block written out each time it fills.
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.h"
#include "cli/load_common.h"
#include "format/dtype.h"
#include "format/status.h"
#include "format/text.h"
#include "loader/checkpoint.h"

namespace shardload::cli {
namespace {

constexpr char kInspectUsage[] =
    "usage: shardload inspect PATH [--json] [--lenient-index]\n"
    "  PATH             a .safetensors file, a *.safetensors.index.json, or a folder holding\n"
    "                   either\n"
    "  --json           machine-readable output: files, metadata, tensors (sorted by name),\n"
    "                   total_bytes\n"
    "  --lenient-index  also list tensors a shard holds but the index does not list (a\n"
    "                   warning each; default: an error)\n";

// OutputBuffer: the JSON text, rendered into one fixed block (kOutputChunk bytes) that
// is written to `fd` each time it fills, and by Flush at the end, so the memory touched
// stays the same whatever the checkpoint's size (a 100k-tensor listing is ~15 MB). The
// block is its own anonymous mapping on 4 KiB pages, not a heap block (the heap is on
// huge pages, see ReserveHugePageHeap): a short listing touches a page, not 2 MiB.
// Allocation failure (at construction) is reported by ok() == false and nothing is
// written; a failed write is reported by Flush() == false and later data is dropped.
class OutputBuffer {
 public:
  static constexpr size_t kOutputChunk = 256 << 10;

  explicit OutputBuffer(int fd) : fd_(fd) {
    void* p = ::mmap(nullptr, kOutputChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (p != MAP_FAILED) {
      ::madvise(p, kOutputChunk, MADV_NOHUGEPAGE);
      data_ = static_cast<char*>(p);
    }
  }
  OutputBuffer(const OutputBuffer&) = delete;
  OutputBuffer& operator=(const OutputBuffer&) = delete;
  ~OutputBuffer() {
    if (data_ != nullptr) ::munmap(data_, kOutputChunk);
  }

  bool ok() const { return data_ != nullptr; }

  void append(const char* p, size_t n) {
    while (n > kOutputChunk - size_) {
      size_t fit = kOutputChunk - size_;
      std::memcpy(data_ + size_, p, fit);
      size_ = kOutputChunk;
      p += fit;
      n -= fit;
      Drain();
    }
    std::memcpy(data_ + size_, p, n);
    size_ += n;
  }
  OutputBuffer& operator+=(std::string_view s) {
    append(s.data(), s.size());
    return *this;
  }
  OutputBuffer& operator+=(char c) {
    if (size_ == kOutputChunk) Drain();
    data_[size_++] = c;
    return *this;
  }

  // AppendUint: `v` in decimal, written straight into the block.
  void AppendUint(uint64_t v) {
    if (kOutputChunk - size_ < 20) Drain();  // 20: the digits of 2^64 - 1
    char* end = std::to_chars(data_ + size_, data_ + kOutputChunk, v).ptr;
    size_ = static_cast<size_t>(end - data_);
  }

  // Flush: writes what is buffered; false when this or any earlier write failed
  // (write_errno() then says why).
  bool Flush() {
    Drain();
    return write_errno_ == 0;
  }
  int write_errno() const { return write_errno_; }

 private:
  void Drain();

  int fd_;
  char* data_ = nullptr;
  size_t size_ = 0;
  int write_errno_ = 0;  // errno of the failed write; 0 while none failed
};

// kInspectJson: how `inspect --json` writes strings (DEL as it is, an invalid byte —
// possible only in file names — as U+FFFD).
constexpr JsonStringStyle kInspectJson{.escape_del = false, .replace_invalid = true};

// HumanBytes: "512 B", "1.50 KiB", "14.96 GiB".
std::string HumanBytes(uint64_t n) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (n < 1024) return std::to_string(n) + " B";
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024.0 && u < 6) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, kUnits[u]);
  return buf;
}

// WriteAll: all of `data` to `fd`; 0, or the errno of the write that failed.
int WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

// CannotWrite: "shardload inspect: cannot write output: <strerror>" on stderr (as
// cli/main.cc says it for the commands that write through stdio); returns 1.
int CannotWrite(int err) {
  std::string message =
      "shardload inspect: cannot write output: " + std::string(std::strerror(err)) + "\n";
  WriteAll(STDERR_FILENO, message);
  return 1;
}

void OutputBuffer::Drain() {
  if (write_errno_ == 0 && size_ > 0) {
    write_errno_ = WriteAll(fd_, std::string_view(data_, size_));
  }
  size_ = 0;
}

// RenderJson: the --json document into `out`.
void RenderJson(const Checkpoint& ckpt, OutputBuffer& out) {
  out += "{\"files\":[";
  for (size_t i = 0; i < ckpt.shards().size(); ++i) {
    if (i) out += ',';
    AppendJsonStringTo(out, ckpt.shards()[i].file, kInspectJson);
  }
  out += "],\"metadata\":{";
  bool first = true;
  for (const auto& [k, v] : ckpt.metadata()) {
    if (!first) out += ',';
    first = false;
    AppendJsonStringTo(out, k, kInspectJson);
    out += ':';
    if (ckpt.metadata_json().contains(k)) {
      out += v;  // JSON text as the index had it (minified by the parser)
    } else {
      AppendJsonStringTo(out, v, kInspectJson);
    }
  }
  out += "},\"tensors\":[";
  // File names escaped once per shard, not once per tensor.
  std::vector<std::string> files;
  files.reserve(ckpt.shards().size());
  for (const ShardInfo& s : ckpt.shards()) {
    std::string f;
    AppendJsonStringTo(f, s.file, kInspectJson);
    files.push_back(std::move(f));
  }
  // Names (and shapes of rank > Shape::kInlineDims) live in their own heap blocks, which
  // are not in catalog (name) order when the writer's order differed: fetch a few
  // entries ahead.
  constexpr size_t kAhead = 8;
  const std::vector<StoredTensor>& tensors = ckpt.tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (i + kAhead < tensors.size()) {
      __builtin_prefetch(tensors[i + kAhead].name.data());
      __builtin_prefetch(tensors[i + kAhead].shape.data());
    }
    const StoredTensor& t = tensors[i];
    out += i == 0 ? "{\"name\":" : ",{\"name\":";
    AppendJsonStringTo(out, t.name, kInspectJson);
    out += ",\"dtype\":\"";
    out += DtypeName(t.dtype);
    out += "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (d) out += ',';
      out.AppendUint(t.shape[d]);
    }
    auto [b, e] = ckpt.DataOffsets(t);
    out += "],\"data_offsets\":[";
    out.AppendUint(b);
    out += ',';
    out.AppendUint(e);
    out += "],\"file\":";
    out += files[t.shard];
    out += '}';
  }
  out += "],\"total_bytes\":";
  out.AppendUint(ckpt.total_bytes());
  out += "}\n";
}

std::string RenderHuman(const Checkpoint& ckpt) {
  std::string out;
  // A single file is named itself (a folder may hold other files); a sharded one by
  // its folder, with the index.
  out += "checkpoint: " +
         OneLineText(ckpt.sharded() || ckpt.shards().empty() ? ckpt.folder() : ckpt.shards()[0].path);
  if (ckpt.sharded()) {
    out += " (index " + OneLineText(ckpt.index_file()) + ", " + std::to_string(ckpt.shards().size()) +
           (ckpt.shards().size() == 1 ? " shard)\n" : " shards)\n");
  } else {
    out += " (single file)\n";
  }
  out += "files:\n";
  for (const ShardInfo& s : ckpt.shards()) {
    out += "  " + OneLineText(s.file) + "  " + HumanBytes(s.size) + " (" +
           std::to_string(s.size) + " bytes)\n";
  }
  out += "tensors: " + std::to_string(ckpt.tensors().size()) + "\n";
  out += "total bytes: " + HumanBytes(ckpt.total_bytes()) + " (" +
         std::to_string(ckpt.total_bytes()) + " bytes)\n";
  std::array<uint64_t, kDtypeCount> count{}, bytes{};
  for (const StoredTensor& t : ckpt.tensors()) {
    ++count[static_cast<int>(t.dtype)];
    bytes[static_cast<int>(t.dtype)] += t.bytes;  // sum ≤ total_bytes: no overflow
  }
  out += "dtypes:\n";
  for (int d = 0; d < kDtypeCount; ++d) {
    if (count[d] == 0) continue;
    char line[128];
    std::snprintf(line, sizeof line, "  %-12s %10llu tensors  %s\n",
                  std::string(DtypeName(static_cast<Dtype>(d))).c_str(),
                  static_cast<unsigned long long>(count[d]), HumanBytes(bytes[d]).c_str());
    out += line;
  }
  if (!ckpt.metadata().empty()) {
    out += "metadata:\n";
    for (const auto& [k, v] : ckpt.metadata()) {
      out += "  " + OneLineText(k) + " = " + OneLineText(v) + "\n";
    }
  }
  if (!ckpt.warnings().empty()) {
    out += "warnings:\n";
    for (const std::string& w : ckpt.warnings()) out += "  " + w + "\n";
  }
  return out;
}

// kHugePageHeapBytes: address space ReserveHugePageHeap reserves (not memory: only
// pages that are touched are backed).
constexpr size_t kHugePageHeapBytes = size_t{512} << 20;

// ReserveHugePageHeap: process-wide malloc policy for this one-shot command. Every
// block comes from the heap (no per-block mappings), the heap is grown by `bytes` of
// address space up front and that range is marked MADV_HUGEPAGE, then released to the
// heap (kept: trimming is off). A 100k-tensor header's parse touches ~60 MB of fresh
// memory (simdjson's tape and strings, the entries, names and shapes); on 4 KiB pages
// that is ~16k page faults, most of the command's kernel time; on transparent huge
// pages a few dozen. Best effort: on failure the heap simply stays on 4 KiB pages.
void ReserveHugePageHeap(size_t bytes) {
  ::mallopt(M_MMAP_MAX, 0);
  void* block = std::malloc(bytes);
  if (block == nullptr) return;
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  uintptr_t begin = (reinterpret_cast<uintptr_t>(block) + kHuge - 1) & ~(kHuge - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(block) + bytes) & ~(kHuge - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  std::free(block);
}

int Fail(const Status& status, bool json, int exit_code) {
  std::string err = "shardload inspect: " + OneLineMessage(status.message()) + "\n";
  WriteAll(STDERR_FILENO, err);
  if (json) {
    std::string out = "{\"error\":{\"code\":";
    AppendJsonStringTo(out, StatusCodeName(status.code()), kInspectJson);
    out += ",\"message\":";
    AppendJsonStringTo(out, status.message(), kInspectJson);
    out += "}}\n";
    if (int err = WriteAll(STDOUT_FILENO, out); err != 0) CannotWrite(err);
  }
  return exit_code;
}

}  // namespace

int RunInspect(const Args& args) {
  bool json = false;
  CatalogOptions catalog;
  std::string path;
  int paths = 0;
  std::string bad;
  bool options_ended = false;  // after a bare "--": a PATH that starts with "--"
  for (const std::string& a : args) {
    if (!options_ended && a == "--") {
      options_ended = true;
    } else if (options_ended) {
      if (!a.empty()) {
        path = a;
        ++paths;
      }
    } else if (a == "--json") {
      json = true;
    } else if (a == "--lenient-index") {
      catalog.strict_index = false;
    } else if (a == "--help" || a == "-h") {
      int err = WriteAll(STDOUT_FILENO, kInspectUsage);
      return err == 0 ? 0 : CannotWrite(err);
    } else if ((a.starts_with("--json=") || a.starts_with("--lenient-index=")) && bad.empty()) {
      // as FlagReader::NoValue words it
      bad = a.substr(0, a.find('=')) + " takes no value (got '" + a + "')";
    } else if (a.size() > 1 && a[0] == '-' && bad.empty()) {
      bad = "unknown option '" + a + "'";
    } else if (!a.empty() && (a.size() == 1 || a[0] != '-')) {  // "" is no PATH, as elsewhere
      path = a;
      ++paths;
    }
  }
  if (bad.empty() && paths != 1) {
    bad = paths == 0 ? "missing PATH" : "expected one PATH, got " + std::to_string(paths);
  }
  if (!bad.empty()) {
    int rc = Fail(InvalidArgumentError(bad), json, 2);
    WriteAll(STDERR_FILENO, kInspectUsage);
    return rc;
  }

  // A one-shot process: keep freed memory in the heap (no trimming; ReserveHugePageHeap
  // turns off per-block mappings) so that later allocations, such as the
  // catalog after the header buffer is freed, reuse pages already faulted in.
  // (Process-wide malloc policy, set by the command, never by the library.)
  ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
  ReserveHugePageHeap(kHugePageHeapBytes);
  Result<Checkpoint> ckpt = OpenCheckpoint(path, catalog);
  if (!ckpt.ok()) return Fail(ckpt.status(), json, 1);

  int write_errno = 0;
  if (json) {
    std::string warn;
    for (const std::string& w : ckpt->warnings()) warn += "shardload inspect: warning: " + w + "\n";
    if (!warn.empty()) WriteAll(STDERR_FILENO, warn);
    OutputBuffer out(STDOUT_FILENO);
    if (!out.ok()) {
      return Fail(ResourceExhaustedError("cannot allocate memory for the output"), json, 1);
    }
    RenderJson(*ckpt, out);
    out.Flush();
    write_errno = out.write_errno();
  } else {
    write_errno = WriteAll(STDOUT_FILENO, RenderHuman(*ckpt));
  }
  // The catalog is kept, not destroyed: freeing 100k names and shapes one by one
  // costs more than the process exit that reclaims them anyway. (Held by a static, so
  // it stays reachable for leak checkers.)
  static Checkpoint* kept = nullptr;
  delete kept;  // only when RunInspect runs twice in one process
  kept = new Checkpoint(std::move(*ckpt));
  return write_errno == 0 ? 0 : CannotWrite(write_errno);
}

}  // namespace shardload::cli
