// loader/checkpoint.cc — resolve a checkpoint path, read every shard header and check
// the shard set as a whole (see loader/checkpoint.h for the rules and messages).
#include "loader/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <new>
#include <numeric>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "format/checksum.h"
#include "format/header.h"
#include "format/index.h"
#include "format/scoped_fd.h"
#include "format/text.h"
#include "loader/file.h"
#include "loader/parallel.h"

namespace shardload {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
constexpr std::string_view kFileSuffix = ".safetensors";
constexpr std::string_view kDefaultIndex = "model.safetensors.index.json";
constexpr std::string_view kDefaultFile = "model.safetensors";
constexpr int kMaxReadThreads = 256;
constexpr int kDefaultReadThreads = 8;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// ShardHeader: what reading one shard yields.
struct ShardHeader {
  uint64_t size = 0;
  HeaderFileFacts facts;
  Header header;
};

// ReadShardHeader: ReadHeaderFile (positional reads, validation) on `path`, with errors
// relabelled from the path to `label` (the file name within the checkpoint folder).
Result<ShardHeader> ReadShardHeader(const std::string& path, const std::string& label) {
  ShardHeader out;
  Result<Header> h = ReadHeaderFile(path, {}, &out.facts);
  if (!h.ok()) return h.status().Relabeled(path, label);
  // The parser checked that the data section ends exactly at the end of the file.
  out.size = h->data_start + h->data_size;
  out.header = std::move(*h);
  return out;
}

// ReadAllHeaders: read every shard's header, `threads` at a time. The first error in
// shard order is returned, so the message does not depend on scheduling.
Result<std::vector<ShardHeader>> ReadAllHeaders(const std::vector<ShardInfo>& shards,
                                                int threads) {
  std::vector<std::optional<Result<ShardHeader>>> results(shards.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < shards.size(); i = next.fetch_add(1)) {
      try {
        results[i].emplace(ReadShardHeader(shards[i].path, shards[i].file));
      } catch (const std::bad_alloc&) {
        results[i].emplace(ResourceExhaustedError(shards[i].file +
                                                  ": out of memory while reading its header"));
      }
    }
  };
  RunParts(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(threads), shards.size())),
           [&](size_t) { work(); });

  std::vector<ShardHeader> out;
  out.reserve(shards.size());
  for (auto& r : results) {
    if (!r->ok()) return r->status();
    out.push_back(std::move(**r));
  }
  return out;
}

// Candidates: the names in `dir` that end in `suffix` (regular files or links to them),
// sorted.
Result<std::vector<std::string>> ListCandidates(const fs::path& dir, std::string_view suffix,
                                                const std::string& label,
                                                std::vector<std::string>* skipped = nullptr) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return ErrnoToStatus(ec.value(), label + ": cannot list folder");
  std::vector<std::string> out;
  for (fs::directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return ErrnoToStatus(ec.value(), label + ": cannot list folder");
    std::string name = it->path().filename().string();
    if (!EndsWith(name, suffix)) continue;
    std::error_code type_ec;
    if (!fs::is_regular_file(it->path(), type_ec)) {  // follows symlinks
      // A folder that may be listed but not searched (no x permission): its entries
      // cannot be looked at, which is not the same as their being folders or broken.
      // (A link whose target is out of reach is skipped like a broken one: the entry
      // itself can be looked at.)
      if (type_ec.value() == EACCES || type_ec.value() == EPERM) {
        std::error_code link_ec;
        (void)fs::symlink_status(it->path(), link_ec);  // only the error matters
        if (link_ec.value() == EACCES || link_ec.value() == EPERM) {
          return ErrnoToStatus(link_ec.value(), it->path().string());
        }
      }
      if (skipped != nullptr) skipped->push_back(std::move(name));
      continue;
    }
    out.push_back(std::move(name));
  }
  if (ec) return ErrnoToStatus(ec.value(), label + ": cannot list folder");
  std::sort(out.begin(), out.end());
  return out;
}

// ShardNumberOf: (i, n) for a file named like the hub's shards,
// "<prefix>-<i>-of-<n>.safetensors" with decimal i and n (any width, at most 9
// digits); std::nullopt for any other name.
std::optional<std::pair<uint64_t, uint64_t>> ShardNumberOf(std::string_view name) {
  if (!EndsWith(name, kFileSuffix)) return std::nullopt;
  name.remove_suffix(kFileSuffix.size());
  auto trailing_number = [](std::string_view& s) -> std::optional<uint64_t> {
    size_t digits = 0;
    while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[s.size() - 1 - digits]))) {
      ++digits;
    }
    if (digits == 0 || digits > 9) return std::nullopt;
    uint64_t v = std::stoull(std::string(s.substr(s.size() - digits)));
    s.remove_suffix(digits);
    return v;
  };
  std::optional<uint64_t> n = trailing_number(name);
  if (!n || !EndsWith(name, "-of-")) return std::nullopt;
  name.remove_suffix(4);
  std::optional<uint64_t> i = trailing_number(name);
  if (!i || !EndsWith(name, "-")) return std::nullopt;
  return std::make_pair(*i, *n);
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

// Resolved: what a path given to Open names.
std::string JoinPath(const std::string& folder, const std::string& file);

struct Resolved {
  std::string folder;
  std::string file;  // relative to folder
  bool is_index = false;
  std::vector<std::string> warnings;
};

// StartsLikeSafetensors: whether the file at `path` opens as a safetensors file does:
// an 8-byte little-endian header length below 2^32 (its bytes 4..7 zero: a JSON text,
// an index, holds no NUL) and a header starting with '{'. Used for a file named *.json,
// which is otherwise read as an index (safetensors itself loads any name). False when
// it cannot be read (the open that follows reports that).
bool StartsLikeSafetensors(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  char head[9];
  Result<size_t> n = PreadFully(fd.get(), head, sizeof head, 0, path);
  if (!n.ok() || *n != sizeof head) return false;
  return head[4] == 0 && head[5] == 0 && head[6] == 0 && head[7] == 0 && head[8] == '{';
}

// Resolve: apply the file / index / folder rules of Checkpoint::Open.
Result<Resolved> Resolve(const std::string& path) {
  if (path.empty()) return InvalidArgumentError("checkpoint path is empty");
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return NotFoundError(path + ": no such file or directory");
    }
    return ErrnoToStatus(errno, path);
  }
  Resolved r;
  if (S_ISDIR(st.st_mode)) {
    r.folder = path;
    std::vector<std::string> not_indexes;  // named like an index but folders, broken links
    SL_ASSIGN_OR_RETURN(std::vector<std::string> indexes,
                        ListCandidates(path, kIndexSuffix, path, &not_indexes));
    // An index chosen while model.safetensors is also there: two checkpoints in one
    // folder, and transformers' from_pretrained would take the single file. Say which
    // one this is.
    auto warn_if_single_too = [&] {
      struct stat single;
      if (::stat(JoinPath(path, std::string(kDefaultFile)).c_str(), &single) == 0 &&
          S_ISREG(single.st_mode)) {
        std::string folder = path;
        while (folder.size() > 1 && folder.back() == '/') folder.pop_back();
        r.warnings.push_back(folder + ": holds both " + r.file + " and " +
                             std::string(kDefaultFile) + "; loading the index (transformers "
                             "loads " + std::string(kDefaultFile) + ")");
      }
    };
    if (std::find(indexes.begin(), indexes.end(), kDefaultIndex) != indexes.end()) {
      r.file = kDefaultIndex;
      r.is_index = true;
      warn_if_single_too();
      return r;
    }
    if (indexes.size() == 1) {
      r.file = indexes[0];
      r.is_index = true;
      warn_if_single_too();
      return r;
    }
    if (indexes.size() > 1) {
      return InvalidArgumentError(path + ": folder holds several index files and no " +
                                  std::string(kDefaultIndex) + ": " + JoinNames(indexes));
    }
    std::vector<std::string> not_files;  // named like files but folders, broken links, ...
    SL_ASSIGN_OR_RETURN(std::vector<std::string> files,
                        ListCandidates(path, kFileSuffix, path, &not_files));
    if (std::find(files.begin(), files.end(), kDefaultFile) != files.end()) {
      r.file = kDefaultFile;  // as transformers, whatever else is there
      return r;
    }
    if (!not_indexes.empty()) {
      // An index is meant to be there; going on to the shard files would give a
      // misleading "no index".
      std::sort(not_indexes.begin(), not_indexes.end());
      return InvalidArgumentError(JoinPath(path, not_indexes[0]) +
                                  ": not a regular file (a folder, or a link to none)");
    }
    if (files.size() == 1) {
      // A lone "<prefix>-00001-of-00003.safetensors" is one shard of a sharded
      // checkpoint whose index and other shards are missing (a copy that stopped, a
      // writer killed between its renames): not a checkpoint to load as it stands.
      if (std::optional<std::pair<uint64_t, uint64_t>> part = ShardNumberOf(files[0]);
          part && part->second > 1) {
        return InvalidArgumentError(
            path + ": folder holds only " + files[0] + " (shard " + std::to_string(part->first) +
            " of " + std::to_string(part->second) + ") and no index; give the file's own path "
            "to load it alone");
      }
      r.file = files[0];
      return r;
    }
    if (files.empty()) {
      std::string why;
      if (!not_files.empty()) {
        std::sort(not_files.begin(), not_files.end());
        why = " (not regular files, or links to none: " + JoinNames(not_files) + ")";
      }
      return NotFoundError(path + ": folder holds no .safetensors file or index" + why);
    }
    return InvalidArgumentError(path + ": folder holds several .safetensors files and no index: " +
                                JoinNames(files));
  }
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgumentError(path + ": not a regular file or folder");
  }
  fs::path p(path);
  r.folder = p.has_parent_path() ? p.parent_path().string() : std::string(".");
  r.file = p.filename().string();
  r.is_index = EndsWith(r.file, ".json") && !StartsLikeSafetensors(path);
  return r;
}

std::string JoinPath(const std::string& folder, const std::string& file) {
  if (!folder.empty() && folder.back() == '/') return folder + file;
  return folder + "/" + file;
}

// HubBlobsFolder: for a checkpoint folder laid out as the Hugging Face hub cache
// (<repo>/snapshots/<revision>/, whose files are symlinks into <repo>/blobs/), the path
// of that blobs folder; "" for any other folder. `real_folder` is canonical, so
// <repo> is a real directory; blobs must be one too, not a symlink (a "blobs" link to
// "/" would otherwise admit every file on the system).
std::string HubBlobsFolder(const std::string& real_folder) {
  fs::path folder(real_folder);
  if (folder.parent_path().filename() != "snapshots") return "";
  fs::path blobs = folder.parent_path().parent_path() / "blobs";
  std::error_code ec;
  fs::file_status st = fs::symlink_status(blobs, ec);
  return !ec && fs::is_directory(st) ? blobs.string() : std::string();
}

// Inside: whether real path `p` lies below real folder `folder`.
bool Inside(const std::string& p, const std::string& folder) {
  std::string prefix = folder == "/" ? folder : folder + "/";
  return p.size() > prefix.size() && p.compare(0, prefix.size(), prefix) == 0;
}

// CheckShardPath: the shard exists, is a regular file, and its real path lies inside
// the real checkpoint folder `real_folder`, or in `blobs_folder` (HubBlobsFolder) when
// that is not empty.
Status CheckShardPath(const std::string& index_label, const std::string& real_folder,
                      const std::string& blobs_folder, const ShardInfo& shard) {
  const std::string& f = shard.file;
  if (f.empty() || f.front() == '/') {
    return InvalidArgumentError(index_label + ": shard " + QuoteForMessage(f, '\'') +
                                " is not a relative file name");
  }
  std::error_code ec;
  fs::path real = fs::canonical(shard.path, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) {
      return NotFoundError(index_label + ": shard " + QuoteForMessage(f, '\'') + " does not exist");
    }
    return ErrnoToStatus(ec.value(), index_label + ": shard " + QuoteForMessage(f, '\''));
  }
  std::string real_s = real.string();
  if (!Inside(real_s, real_folder) && (blobs_folder.empty() || !Inside(real_s, blobs_folder))) {
    return InvalidArgumentError(index_label + ": shard " + QuoteForMessage(f, '\'') + " resolves to " +
                                QuoteForMessage(real_s, '\'') + ", outside the checkpoint folder " +
                                QuoteForMessage(real_folder, '\''));
  }
  struct stat st;
  if (::stat(real_s.c_str(), &st) != 0) {
    return ErrnoToStatus(errno, index_label + ": shard " + QuoteForMessage(f, '\''));
  }
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgumentError(index_label + ": shard " + QuoteForMessage(f, '\'') + " is not a regular file");
  }
  return OkStatus();
}

// KeyAt: bytes [offset, offset + 8) of the `size` bytes at `data` as a big-endian
// number, zero-padded past the end.
uint64_t KeyAt(const char* data, size_t size, size_t offset) {
  if (offset + 8 <= size) {
    uint64_t key;
    std::memcpy(&key, data + offset, 8);
    if constexpr (std::endian::native == std::endian::little) key = __builtin_bswap64(key);
    return key;
  }
  uint64_t key = 0;
  for (size_t b = 0; b < 8; ++b) {
    size_t at = offset + b;
    key = (key << 8) | (at < size ? static_cast<unsigned char>(data[at]) : 0u);
  }
  return key;
}

// NameKey: one record of the name sort: 8 bytes of the name as a big-endian number,
// the name's bytes (owned by the header entry), and the entry's position in the
// catalog's original (shard, then header) order.
struct NameKey {
  uint64_t key;
  const char* data;
  size_t size;
  size_t pos;
};

// SortNameKeys: sorts `keys` by name (byte order, as std::string's operator<), most
// significant bytes first: the key is 8 bytes of the name (big-endian, zero-padded)
// starting after the prefix that all names share; a run of equal keys is split into
// the names that end within those 8 bytes (each a prefix of the longer ones: ordered
// by length, first) and the rest, which are keyed on their next 8 bytes (an explicit
// work list, not recursion, so long names cannot exhaust the stack).
void SortNameKeys(std::vector<NameKey>& keys) {
  if (keys.empty()) return;
  std::string_view first(keys[0].data, keys[0].size);
  size_t common = first.size();
  for (const NameKey& k : keys) {
    if (k.size >= common && std::memcmp(k.data, first.data(), common) == 0) continue;
    size_t n = std::min(common, k.size);
    size_t i = 0;
    while (i < n && k.data[i] == first[i]) ++i;
    common = i;
  }
  struct Work {
    size_t begin, end, offset;
  };
  std::vector<Work> work = {{0, keys.size(), common}};
  while (!work.empty()) {
    const Work w = work.back();
    work.pop_back();
    NameKey* lo = keys.data() + w.begin;
    NameKey* hi = keys.data() + w.end;
    for (NameKey* k = lo; k != hi; ++k) {
      if (hi - k > 8) __builtin_prefetch(k[8].data + w.offset);
      k->key = KeyAt(k->data, k->size, w.offset);
    }
    std::sort(lo, hi, [](const NameKey& a, const NameKey& b) { return a.key < b.key; });
    for (NameKey* run = lo; run != hi;) {
      NameKey* run_end = run + 1;
      while (run_end != hi && run_end->key == run->key) ++run_end;
      if (run_end - run > 1) {
        const size_t next = w.offset + 8;
        NameKey* rest =
            std::partition(run, run_end, [&](const NameKey& k) { return k.size <= next; });
        std::sort(run, rest, [](const NameKey& a, const NameKey& b) { return a.size < b.size; });
        if (run_end - rest > 1) {
          work.push_back({static_cast<size_t>(rest - keys.data()),
                          static_cast<size_t>(run_end - keys.data()), next});
        }
      }
      run = run_end;
    }
  }
}

}  // namespace

struct Checkpoint::Lazy {
  struct Slot {
    std::mutex mu;
    std::unique_ptr<MappedFile> map;  // set once, then never changed
  };
  explicit Lazy(size_t n) : slots(std::make_unique<Slot[]>(n)) {}
  std::unique_ptr<Slot[]> slots;
};

Checkpoint::Checkpoint() = default;
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() = default;

Result<Checkpoint> Checkpoint::Open(const std::string& path, const CatalogOptions& options) {
  try {
    // A single file's path is opened without the folder lock; should the file be
    // missing meanwhile (a writer without hard links sets it aside for a moment, or
    // converts the checkpoint to shards), the open is done again under the lock, which
    // waits for that writer.
    bool unlocked = false;
    Result<Checkpoint> opened = OpenImpl(path, options, /*allow_unlocked=*/true, &unlocked);
    if (unlocked && !opened.ok() && opened.status().code() == StatusCode::kNotFound) {
      opened = OpenImpl(path, options, /*allow_unlocked=*/false, &unlocked);
    }
    return opened;
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(path + ": out of memory building the checkpoint catalog");
  } catch (const std::exception& e) {  // e.g. std::filesystem or std::thread internals
    return InternalError(path + ": " + e.what());
  }
}

Result<Checkpoint> Checkpoint::OpenImpl(const std::string& path, const CatalogOptions& options,
                                        bool allow_unlocked, bool* unlocked) {
  if (options.read_threads < 0 || options.read_threads > kMaxReadThreads) {
    return InvalidArgumentError("CatalogOptions.read_threads must be between 0 and " +
                                std::to_string(kMaxReadThreads) + ", got " +
                                std::to_string(options.read_threads));
  }
  if (options.max_shards < 1) {
    return InvalidArgumentError("CatalogOptions.max_shards must be at least 1");
  }
  if (options.writer_wait_ms < 0) {
    return InvalidArgumentError("CatalogOptions.writer_wait_ms must be >= 0, got " +
                                std::to_string(options.writer_wait_ms));
  }
  // Hold the folder's shared lock from the listing to the last shard header, so that a
  // shardload writer replacing the checkpoint (which renames its files one by one under
  // the exclusive lock) is seen entirely before or entirely after. Files are checked
  // against the identities read here when loads open them later.
  // An index path locks the folder holding it, also while it is missing (a writer sets
  // the old index aside before it publishes the new one), and so does a missing path.
  // The path of a single .safetensors file that is there takes no lock: one file is
  // replaced by one rename, so it is always whole, and a lock on, say, /tmp would let
  // any user who can read /tmp hold up every load of a file in it.
  std::string lock_dir = path;
  bool lock = true;
  struct stat st;
  const bool found = ::stat(path.c_str(), &st) == 0;
  if (!found || !S_ISDIR(st.st_mode)) {
    fs::path p(path);
    lock_dir = p.has_parent_path() ? p.parent_path().string() : std::string(".");
    lock = !(allow_unlocked && found && S_ISREG(st.st_mode) && !EndsWith(path, ".json"));
  }
  *unlocked = !lock;
  FolderLock folder_lock;
  if (lock) {
    SL_ASSIGN_OR_RETURN(folder_lock, LockFolder(lock_dir, FolderLock::kShared,
                                                options.writer_wait_ms, options.cancelled));
  }
  SL_ASSIGN_OR_RETURN(Resolved where, Resolve(path));

  Checkpoint ckpt;
  ckpt.folder_ = where.folder;
  ckpt.warnings_ = std::move(where.warnings);
  std::vector<std::pair<std::string, std::string>> weight_map;
  if (where.is_index) {
    ckpt.index_file_ = where.file;
    const std::string& label = ckpt.index_file_;
    std::string index_path = JoinPath(where.folder, where.file);
    Result<ShardIndex> parsed = ReadIndexFile(index_path, options.max_shards);
    if (!parsed.ok()) return parsed.status().Relabeled(index_path, label);
    ShardIndex index = std::move(*parsed);
    std::vector<std::string> files = index.shard_files;  // distinct, sorted, <= max_shards
    std::error_code ec;
    fs::path real_folder = fs::canonical(where.folder, ec);
    if (ec) return ErrnoToStatus(ec.value(), where.folder + ": cannot resolve folder");
    const std::string blobs_folder = HubBlobsFolder(real_folder.string());
    for (std::string& f : files) {
      ShardInfo s;
      s.path = JoinPath(where.folder, f);
      s.file = std::move(f);
      SL_RETURN_IF_ERROR(CheckShardPath(label, real_folder.string(), blobs_folder, s));
      ckpt.shards_.push_back(std::move(s));
    }
    weight_map = std::move(index.weight_map);
    ckpt.metadata_ = std::move(index.metadata);
    ckpt.metadata_json_ = std::move(index.metadata_json);
    ckpt.has_metadata_ = index.has_metadata;
    ckpt.index_total_size_ = index.total_size;
  } else {
    ShardInfo s;
    s.path = JoinPath(where.folder, where.file);
    s.file = where.file;
    ckpt.shards_.push_back(std::move(s));
  }

  int threads = options.read_threads == 0 ? kDefaultReadThreads : options.read_threads;
  SL_ASSIGN_OR_RETURN(std::vector<ShardHeader> headers, ReadAllHeaders(ckpt.shards_, threads));
  folder_lock.Release();

  size_t tensor_count = 0;
  for (size_t i = 0; i < headers.size(); ++i) {
    ShardInfo& s = ckpt.shards_[i];
    s.size = headers[i].size;
    s.identity = headers[i].facts.identity;
    s.header_xxh3 = headers[i].facts.header_xxh3;
    s.header_length = headers[i].header.header_length;
    s.data_start = headers[i].header.data_start;
    tensor_count += headers[i].header.tensors.size();
  }

  // Every index entry must be in the shard it names (checked while names are intact).
  if (ckpt.sharded()) {
    std::unordered_map<std::string_view, uint32_t> shard_of_file;
    for (size_t i = 0; i < ckpt.shards_.size(); ++i) {
      shard_of_file.emplace(ckpt.shards_[i].file, static_cast<uint32_t>(i));
    }
    for (const auto& [name, file] : weight_map) {
      auto it = shard_of_file.find(file);
      if (it == shard_of_file.end()) {
        return InternalError(ckpt.index_file_ + ": index maps " + QuoteNameForMessage(name) + " to " +
                             QuoteForMessage(file, '\'') + ", which is missing from the index's shard list");
      }
      if (headers[it->second].header.Find(name) == nullptr) {
        return InvalidArgumentError(ckpt.index_file_ + ": index maps " + QuoteNameForMessage(name) + " to " +
                                    QuoteForMessage(file, '\'') + " but that shard has no tensor " + QuoteNameForMessage(name));
      }
    }
  }

  // One catalog over all shards, in name order, names moved out of the headers. Writers
  // usually emit names in order, so that is checked first; otherwise the names are
  // sorted as small records (SortNameKeys) and the catalog is filled by gathering the
  // header entries in that order (each entry written once, no permutation pass).
  std::vector<size_t> first_pos(headers.size() + 1, 0);  // shard i: [first_pos[i], [i+1])
  for (size_t i = 0; i < headers.size(); ++i) {
    first_pos[i + 1] = first_pos[i] + headers[i].header.tensors.size();
  }
  bool in_order = true;
  {
    const std::string* prev = nullptr;
    for (size_t i = 0; i < headers.size() && in_order; ++i) {
      for (const TensorInfo& t : headers[i].header.tensors) {
        if (prev != nullptr && t.name < *prev) {
          in_order = false;
          break;
        }
        prev = &t.name;
      }
    }
  }
  ckpt.tensors_.reserve(tensor_count);  // before `keys`: it takes the freed header buffer
  std::vector<NameKey> keys;
  if (!in_order) {
    keys.reserve(tensor_count);
    size_t pos = 0;
    for (const ShardHeader& sh : headers) {
      for (const TensorInfo& t : sh.header.tensors) {
        keys.push_back({0, t.name.data(), t.name.size(), pos++});
      }
    }
    SortNameKeys(keys);
  }
  // EntryAt: the header entry at catalog position `pos` and its shard.
  auto entry_at = [&](size_t pos, uint32_t& shard) -> TensorInfo& {
    size_t i = headers.size() == 1
                   ? 0
                   : static_cast<size_t>(std::upper_bound(first_pos.begin(), first_pos.end(), pos) -
                                         first_pos.begin()) - 1;
    shard = static_cast<uint32_t>(i);
    return headers[i].header.tensors[pos - first_pos[i]];
  };
  uint64_t total = 0;
  constexpr size_t kAhead = 8;  // gather prefetch distance
  for (size_t n = 0; n < tensor_count; ++n) {
    uint32_t shard = 0;
    if (!in_order && n + kAhead < tensor_count) {
      uint32_t unused;
      const char* ahead = reinterpret_cast<const char*>(&entry_at(keys[n + kAhead].pos, unused));
      __builtin_prefetch(ahead);
      __builtin_prefetch(ahead + sizeof(TensorInfo) - 1);
    }
    TensorInfo& t = entry_at(in_order ? n : keys[n].pos, shard);
    StoredTensor st;
    st.name = std::move(t.name);
    st.dtype = t.dtype;
    st.shape = std::move(t.shape);
    st.shard = shard;
    st.file_offset = headers[shard].header.data_start + t.begin;  // ≤ file size: no overflow
    st.bytes = t.end - t.begin;
    if (__builtin_add_overflow(total, st.bytes, &total)) {
      return OutOfRangeError(path + ": total tensor bytes overflow 64 bits");
    }
    ckpt.tensors_.push_back(std::move(st));
  }
  for (size_t i = 0; i < headers.size(); ++i) {
    Header& h = headers[i].header;
    if (!ckpt.sharded()) {
      ckpt.metadata_ = std::move(h.metadata);
      ckpt.has_metadata_ = h.has_metadata;
    }
    ckpt.shards_[i].metadata = ckpt.sharded() ? std::move(h.metadata) : ckpt.metadata_;
  }
  keys = std::vector<NameKey>();
  headers.clear();
  ckpt.total_bytes_ = total;

  // One shard's names are distinct already (the header parser rejects duplicates).
  for (size_t i = 1; ckpt.shards_.size() > 1 && i < ckpt.tensors_.size(); ++i) {
    const StoredTensor& a = ckpt.tensors_[i - 1];
    const StoredTensor& b = ckpt.tensors_[i];
    if (a.name == b.name) {
      uint32_t lo = std::min(a.shard, b.shard), hi = std::max(a.shard, b.shard);
      return InvalidArgumentError(ckpt.index_file_ + ": tensor " + QuoteNameForMessage(a.name) +
                                  " is stored in both " +
                                  QuoteForMessage(ckpt.shards_[lo].file, '\'') + " and " +
                                  QuoteForMessage(ckpt.shards_[hi].file, '\''));
    }
  }

  if (ckpt.sharded()) {
    // Tensors the index does not list.
    // weight_map is sorted by name and unique (ParseIndex): binary search, not a hash
    // set an index's names could flood.
    auto listed = [&](const std::string& name) {
      auto it = std::lower_bound(weight_map.begin(), weight_map.end(), name,
                                 [](const auto& entry, const std::string& n) { return entry.first < n; });
      return it != weight_map.end() && it->first == name;
    };
    std::vector<const StoredTensor*> unlisted;
    if (weight_map.size() != ckpt.tensors_.size()) {
      for (const StoredTensor& t : ckpt.tensors_) {
        if (!listed(t.name)) unlisted.push_back(&t);
      }
    }
    auto describe = [&](const StoredTensor& t) {
      return ckpt.index_file_ + ": shard " + QuoteForMessage(ckpt.shards_[t.shard].file, '\'') +
             " holds tensor " + QuoteNameForMessage(t.name) + std::string(kUnlistedTensorPhrase);
    };
    if (!unlisted.empty() && options.strict_index) {
      std::string msg = describe(*unlisted[0]);
      if (unlisted.size() > 1) msg += " (and " + std::to_string(unlisted.size() - 1) + " more)";
      return InvalidArgumentError(std::move(msg));
    }
    for (const StoredTensor* t : unlisted) ckpt.warnings_.push_back(describe(*t));
    if (weight_map.empty()) {
      // Valid, but a checkpoint of nothing: the shards next to it are not read.
      ckpt.warnings_.push_back(ckpt.index_file_ + ": weight_map is empty; the checkpoint "
                                                  "has no tensors");
    }
    if (ckpt.index_total_size_ && *ckpt.index_total_size_ != total) {
      ckpt.warnings_.push_back(ckpt.index_file_ + ": metadata total_size is " +
                               std::to_string(*ckpt.index_total_size_) + " but the shards hold " +
                               std::to_string(total) + " tensor bytes");
    }
  }

  ckpt.lazy_ = std::make_unique<Lazy>(ckpt.shards_.size());
  return ckpt;
}

std::string Checkpoint::DescribeBytes(uint32_t shard, uint64_t begin, uint64_t end) const {
  const StoredTensor* first = nullptr;
  const StoredTensor* last = nullptr;
  size_t count = 0;
  for (const StoredTensor& t : tensors_) {
    if (t.shard != shard || t.bytes == 0 || t.file_offset >= end ||
        t.file_offset + t.bytes <= begin) {
      continue;
    }
    ++count;
    if (first == nullptr || t.file_offset < first->file_offset) first = &t;
    if (last == nullptr || t.file_offset > last->file_offset) last = &t;
  }
  std::string range = "bytes [" + std::to_string(begin) + ", " + std::to_string(end) + ")";
  if (count == 0) return range + ", outside any tensor";
  if (count == 1) return range + " of tensor " + QuoteForMessage(first->name, '\'');
  return range + ": tensors " + QuoteForMessage(first->name, '\'') + " to " +
         QuoteForMessage(last->name, '\'') + " (" + std::to_string(count) + ")";
}

std::vector<size_t> Checkpoint::FileOrder() const {
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::pair(tensors_[a].shard, tensors_[a].file_offset) <
           std::pair(tensors_[b].shard, tensors_[b].file_offset);
  });
  return order;
}

const StoredTensor* Checkpoint::Find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const StoredTensor& t, std::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

std::pair<uint64_t, uint64_t> Checkpoint::DataOffsets(const StoredTensor& t) const {
  uint64_t begin = t.file_offset - shards_[t.shard].data_start;
  return {begin, begin + t.bytes};
}

Status CheckShardFile(const ShardInfo& shard, const ReadableFile& file) {
  uint64_t size = 0;
  std::optional<FileIdentity> now;
  SL_RETURN_IF_ERROR(file.Stat(&size, &now));
  return CheckShardFile(shard, file, size, now);
}

Status CheckShardFile(const ShardInfo& shard, const ReadableFile& file, uint64_t size,
                      const std::optional<FileIdentity>& now) {
  if (size != shard.size) {
    if (now.has_value() &&
        (now->device != shard.identity.device || now->inode != shard.identity.inode)) {
      return AbortedError(shard.file + ": file was replaced since the checkpoint was opened: "
                          "it is now " + std::to_string(size) + " bytes, " +
                          std::to_string(shard.size) +
                          " when its header was read (open the checkpoint again)");
    }
    return DataLossError(shard.file + ": file is now " + std::to_string(size) +
                         " bytes, but its header was read from " + std::to_string(shard.size) +
                         " bytes");
  }
  if (!now.has_value() || *now == shard.identity) return OkStatus();
  // Changed on disk since Open: the layout still holds if the header bytes are the same.
  return CheckShardHeaderBytes(shard, file);
}

Status CheckShardHeaderBytes(const ShardInfo& shard, const ReadableFile& file) {
  const uint64_t n = shard.header_length;
  std::unique_ptr<std::byte, decltype(&std::free)> buffer(
      static_cast<std::byte*>(std::aligned_alloc(4096, (8 + n + 8192 + 4095) / 4096 * 4096)),
      &std::free);
  if (buffer == nullptr) {
    return ResourceExhaustedError(shard.file + ": cannot allocate " + std::to_string(8 + n) +
                                  " bytes to check its header again");
  }
  SL_ASSIGN_OR_RETURN(std::span<const std::byte> bytes,
                      file.ReadWindowAt(0, 8 + n, std::span<std::byte>(buffer.get(),
                                                                       8 + n + 8192)));
  Result<uint64_t> length = ParseHeaderLength(bytes.first(8), shard.size, shard.file);
  if (!length.ok() || *length != n || Xxh3(bytes.subspan(8)) != shard.header_xxh3) {
    return AbortedError(shard.file + ": file was replaced since the checkpoint was opened "
                        "and its header differs (open the checkpoint again)");
  }
  return OkStatus();
}

Status CheckStillAtPath(const ShardInfo& shard, const ReadableFile& file) {
  uint64_t size = 0;
  std::optional<FileIdentity> held;
  SL_RETURN_IF_ERROR(file.Stat(&size, &held));
  if (!held.has_value()) return OkStatus();
  struct stat st;
  if (::stat(shard.path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return AbortedError(shard.file + ": removed from disk since this checkpoint handle "
                           "opened it, so it and the shards opened now would be of two saves "
                           "(open the checkpoint again)");
    }
    return ErrnoToStatus(errno, shard.path + ": stat");
  }
  const FileIdentity now = IdentityOf(st);
  if (now.device != held->device || now.inode != held->inode) {
    return AbortedError(shard.file + ": replaced on disk since this checkpoint handle "
                         "opened it, so it and the shards opened now would be of two saves "
                         "(open the checkpoint again)");
  }
  return OkStatus();
}

Status ShardGoneIfNotFound(const ShardInfo& shard, Status open_error) {
  if (open_error.code() != StatusCode::kNotFound) return open_error;
  return AbortedError(shard.file + ": removed since the checkpoint was opened (open the "
                      "checkpoint again)");
}

Status OpenShardFiles(const Checkpoint& ckpt, const std::vector<bool>& used, IoMode mode,
                      const UringOptions& uring,
                      std::vector<std::unique_ptr<ReadableFile>>* files,
                      std::vector<Status>* errors, const std::function<bool()>& cancelled) {
  files->clear();
  files->resize(ckpt.shards().size());
  if (errors != nullptr) errors->assign(ckpt.shards().size(), OkStatus());
  if (std::find(used.begin(), used.end(), true) == used.end()) return OkStatus();
  if (!ckpt.sharded()) {
    // One file is whole by itself: no lock, unless it is missing for a moment (a
    // writer without hard links sets it aside), when the lock waits for that writer.
    Status st = OpenShardFilesUnderLock(ckpt, used, mode, uring, files, errors);
    const Status& failure = errors != nullptr ? (*errors)[0] : st;
    struct stat gone;
    if (failure.ok() || ::stat(ckpt.shards()[0].path.c_str(), &gone) == 0 || errno != ENOENT) {
      return st;
    }
  }
  SL_ASSIGN_OR_RETURN(FolderLock folder_lock, LockFolder(ckpt.folder(), FolderLock::kShared,
                                                         kDefaultFolderLockWaitMs, cancelled));
  return OpenShardFilesUnderLock(ckpt, used, mode, uring, files, errors);
}

Status OpenShardFilesUnderLock(const Checkpoint& ckpt, const std::vector<bool>& used,
                               IoMode mode, const UringOptions& uring,
                               std::vector<std::unique_ptr<ReadableFile>>* files,
                               std::vector<Status>* errors) {
  const std::vector<ShardInfo>& shards = ckpt.shards();
  files->clear();
  files->resize(shards.size());
  if (errors != nullptr) errors->assign(shards.size(), OkStatus());
  for (size_t i = 0; i < shards.size() && i < used.size(); ++i) {
    if (!used[i]) continue;
    Result<std::unique_ptr<ReadableFile>> opened = OpenShardChecked(shards[i], mode, uring);
    if (opened.ok()) {
      (*files)[i] = std::move(opened).value();
    } else if (errors != nullptr) {
      (*errors)[i] = opened.status();
    } else {
      return opened.status();
    }
  }
  return OkStatus();
}

Result<std::unique_ptr<ReadableFile>> OpenShardChecked(const ShardInfo& shard, IoMode mode,
                                                       const UringOptions& uring) {
  Result<std::unique_ptr<ReadableFile>> opened = OpenFile(shard.path, mode, uring);
  if (!opened.ok()) return ShardGoneIfNotFound(shard, opened.status());
  // Checked on what the open saw: the size the file's reads are bounded by.
  SL_RETURN_IF_ERROR(CheckShardFile(shard, **opened, (*opened)->size(), (*opened)->identity()));
  return opened;
}

Result<std::span<const std::byte>> Checkpoint::MappedBytes(std::string_view name) const {
  const StoredTensor* t = Find(name);
  if (t == nullptr) return NotFoundError("tensor " + QuoteNameForMessage(name) + " is not in the checkpoint");
  const ShardInfo& shard = shards_[t->shard];
  Lazy::Slot& slot = lazy_->slots[t->shard];
  const MappedFile* map = nullptr;
  {
    std::lock_guard<std::mutex> lock(slot.mu);
    if (slot.map == nullptr) {
      Result<std::unique_ptr<MappedFile>> opened = MappedFile::Open(shard.path);
      if (!opened.ok()) return ShardGoneIfNotFound(shard, opened.status());
      std::unique_ptr<MappedFile> m = std::move(opened).value();
      SL_RETURN_IF_ERROR(CheckShardFile(shard, *m, m->size(), m->identity()));  // as mapped
      slot.map = std::move(m);
    }
    map = slot.map.get();
  }
  std::span<const std::byte> all = map->Bytes();
  if (all.size() < t->file_offset + t->bytes) {
    return DataLossError(shard.file + ": mapping is " + std::to_string(all.size()) +
                         " bytes, too short for tensor " + QuoteNameForMessage(t->name) + " (ends at " +
                         std::to_string(t->file_offset + t->bytes) + ")");
  }
  return all.subspan(t->file_offset, t->bytes);
}

Result<std::vector<std::byte>> Checkpoint::ReadTensor(std::string_view name) const {
  const StoredTensor* t = Find(name);
  if (t == nullptr) return NotFoundError("tensor " + QuoteNameForMessage(name) + " is not in the checkpoint");
  const ShardInfo& shard = shards_[t->shard];
  SL_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f,
                      OpenShardChecked(shard, IoMode::kPread, UringOptions()));
  std::vector<std::byte> out;
  try {
    out.resize(t->bytes);
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("cannot allocate " + std::to_string(t->bytes) +
                                  " bytes for tensor " + QuoteNameForMessage(t->name));
  }
  SL_RETURN_IF_ERROR(f->ReadAt(t->file_offset, out));
  return out;
}

}  // namespace shardload
