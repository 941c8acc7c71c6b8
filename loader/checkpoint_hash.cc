// loader/checkpoint_hash.cc — per-tensor XXH3 over a whole checkpoint (see the header).
#include "loader/checkpoint_hash.h"

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <numeric>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "format/checksum.h"
#include "loader/file.h"

namespace shardload {
namespace {

constexpr uint64_t kMinChunk = 4096;
constexpr uint64_t kMaxChunk = uint64_t{1} << 30;

void AppendU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void AppendBytes(std::string& out, std::string_view s) {
  AppendU64(out, s.size());
  out.append(s);
}

// Piece: one positional read of `length` bytes at `offset` of tensor `tensor`'s shard;
// `last` marks the tensor's final piece.
struct Piece {
  size_t tensor;
  uint64_t offset;
  size_t length;
  bool last;
};

// ReadAhead: a reader thread that reads `pieces` in order into two buffers, one piece
// ahead of the consumer. Take(k) waits for piece k (its bytes, or the read's error);
// Release(k) hands its buffer back. The destructor stops and joins the thread, so an
// early return of the consumer is always safe.
class ReadAhead {
 public:
  ReadAhead(const Checkpoint& ckpt, const std::vector<Piece>& pieces, size_t buffer_bytes)
      : ckpt_(ckpt), pieces_(pieces) {
    for (Slot& s : slots_) s.buffer.resize(buffer_bytes);
  }
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;
  ~ReadAhead() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Start: launch the reader. Errors: resource_exhausted when no thread can be had.
  Status Start() {
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::system_error& e) {
      return ResourceExhaustedError(std::string("cannot start the hashing reader thread: ") +
                                    e.what());
    }
    return OkStatus();
  }

  Result<std::span<const std::byte>> Take(size_t k) {
    Slot& s = slots_[k % 2];
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return s.full; });
    if (!s.status.ok()) return s.status;
    return std::span<const std::byte>(s.buffer.data(), pieces_[k].length);
  }

  void Release(size_t k) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      slots_[k % 2].full = false;
    }
    cv_.notify_all();
  }

 private:
  struct Slot {
    std::vector<std::byte> buffer;
    Status status;
    bool full = false;
  };

  void Run() {
    const std::vector<StoredTensor>& tensors = ckpt_.tensors();
    const std::vector<ShardInfo>& shards = ckpt_.shards();
    std::unique_ptr<ReadableFile> file;
    uint32_t open_shard = 0;
    bool opened = false;
    for (size_t k = 0; k < pieces_.size(); ++k) {
      Slot& s = slots_[k % 2];
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !s.full; });
        if (stop_) return;
      }
      const Piece& p = pieces_[k];
      const StoredTensor& t = tensors[p.tensor];
      Status status;
      if (!opened || t.shard != open_shard) {
        file.reset();
        status = Open(shards[t.shard], &file);
        open_shard = t.shard;
        opened = status.ok();
      }
      if (status.ok() && p.length > 0) {
        status = file->ReadAt(p.offset, std::span<std::byte>(s.buffer.data(), p.length));
        if (!status.ok()) {
          status = Status(status.code(),
                          status.message() + " (reading tensor '" + t.name + "')");
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        s.status = status;
        s.full = true;
      }
      cv_.notify_all();
      if (!status.ok()) return;  // the consumer stops at this piece
    }
  }

  static Status Open(const ShardInfo& shard, std::unique_ptr<ReadableFile>* out) {
    SL_ASSIGN_OR_RETURN(*out, OpenFile(shard.path, IoMode::kPread));
    if ((*out)->size() != shard.size) {
      return DataLossError(shard.path + ": file changed since the checkpoint was opened: now " +
                           std::to_string((*out)->size()) + " bytes, was " +
                           std::to_string(shard.size));
    }
    return OkStatus();
  }

  const Checkpoint& ckpt_;
  const std::vector<Piece>& pieces_;
  std::mutex mu_;
  std::condition_variable cv_;
  Slot slots_[2];
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

Result<CheckpointDigest> HashCheckpoint(const Checkpoint& ckpt, const HashOptions& options) {
  if (options.chunk_bytes < kMinChunk || options.chunk_bytes > kMaxChunk) {
    return InvalidArgumentError("HashOptions.chunk_bytes is " +
                                std::to_string(options.chunk_bytes) +
                                ", must be between 4096 and 1073741824");
  }
  const std::vector<StoredTensor>& tensors = ckpt.tensors();
  const std::vector<ShardInfo>& shards = ckpt.shards();

  CheckpointDigest result;
  result.tensors.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const StoredTensor& t = tensors[i];
    result.tensors[i].name = t.name;
    result.tensors[i].dtype = t.dtype;
    result.tensors[i].shape = t.shape;
    result.tensors[i].bytes = t.bytes;
  }

  // File order: by shard, then by offset, so reads go forward through each file.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::pair(tensors[a].shard, tensors[a].file_offset) <
           std::pair(tensors[b].shard, tensors[b].file_offset);
  });

  // Records: every shard's, then the index's (parsed before any read).
  std::vector<ChecksumMap> shard_recorded(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    SL_ASSIGN_OR_RETURN(shard_recorded[i],
                        ParseChecksumMetadata(shards[i].metadata, shards[i].file));
  }
  ChecksumMap index_recorded;
  if (ckpt.sharded()) {
    SL_ASSIGN_OR_RETURN(index_recorded,
                        ParseChecksumMetadata(ckpt.metadata(), ckpt.index_file()));
  }

  // The reads, in file order, each at most chunk_bytes; a tensor of 0 bytes is one
  // empty piece so that every tensor ends with a `last` piece.
  std::vector<Piece> pieces;
  uint64_t largest = 0;
  for (size_t idx : order) {
    const StoredTensor& t = tensors[idx];
    if (t.shard >= shards.size()) {
      return InternalError("tensor '" + t.name + "' names shard " + std::to_string(t.shard) +
                           " of " + std::to_string(shards.size()));
    }
    largest = std::max(largest, t.bytes);
    uint64_t done = 0;
    do {
      const uint64_t n = std::min<uint64_t>(t.bytes - done, options.chunk_bytes);
      pieces.push_back(Piece{idx, t.file_offset + done, static_cast<size_t>(n),
                             done + n == t.bytes});
      done += n;
    } while (done < t.bytes);
  }

  // A reader thread fills one buffer while this thread hashes the other.
  const size_t buffer_bytes = static_cast<size_t>(std::min(options.chunk_bytes, largest));
  ReadAhead reader(ckpt, pieces, buffer_bytes);
  SL_RETURN_IF_ERROR(reader.Start());
  Xxh3Hasher hasher;
  for (size_t k = 0; k < pieces.size(); ++k) {
    const Piece& p = pieces[k];
    SL_ASSIGN_OR_RETURN(std::span<const std::byte> bytes, reader.Take(k));
    hasher.Update(bytes);
    reader.Release(k);
    if (!p.last) continue;

    const StoredTensor& t = tensors[p.tensor];
    TensorDigest& d = result.tensors[p.tensor];
    d.xxh3 = hasher.Digest();
    hasher.Reset();
    // The shard's own record first, then the index's; every record present must match.
    bool any = false, all_match = true;
    for (auto [sums, label] : {std::pair(&shard_recorded[t.shard], &shards[t.shard].file),
                               std::pair(&index_recorded, &ckpt.index_file())}) {
      auto it = sums->find(t.name);
      if (it == sums->end()) continue;
      if (!any) d.recorded = it->second;
      any = true;
      if (it->second != d.xxh3) {
        all_match = false;
        if (options.check_recorded) {
          return CheckTensorChecksum(*label, t.name, t.bytes, it->second, d.xxh3);
        }
      }
    }
    if (any) {
      ++result.recorded;
      if (all_match) ++result.matched;
    }
  }
  return result;
}

Result<RecordedChecksums> RecordedChecksums::FromCheckpoint(const Checkpoint& ckpt) {
  RecordedChecksums out;
  out.index_file_ = ckpt.index_file();
  const std::vector<ShardInfo>& shards = ckpt.shards();
  std::vector<ChecksumMap> per_shard(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    SL_ASSIGN_OR_RETURN(per_shard[i], ParseChecksumMetadata(shards[i].metadata, shards[i].file));
  }
  ChecksumMap index_sums;
  if (ckpt.sharded()) {
    SL_ASSIGN_OR_RETURN(index_sums, ParseChecksumMetadata(ckpt.metadata(), ckpt.index_file()));
  }
  for (const StoredTensor& t : ckpt.tensors()) {
    if (t.shard >= shards.size()) continue;
    Record r;
    if (auto it = per_shard[t.shard].find(t.name); it != per_shard[t.shard].end()) {
      r.shard = it->second;
      r.shard_file = shards[t.shard].file;
    }
    if (auto it = index_sums.find(t.name); it != index_sums.end()) r.index = it->second;
    if (r.shard || r.index) out.records_.emplace(t.name, std::move(r));
  }
  return out;
}

const uint64_t* RecordedChecksums::Find(std::string_view name) const {
  auto it = records_.find(name);
  if (it == records_.end()) return nullptr;
  return it->second.shard ? &*it->second.shard : &*it->second.index;
}

Status RecordedChecksums::Check(std::string_view name, std::span<const std::byte> bytes) const {
  auto it = records_.find(name);
  if (it == records_.end()) return OkStatus();
  const uint64_t actual = Xxh3(bytes);
  const Record& r = it->second;
  if (r.shard) {
    SL_RETURN_IF_ERROR(CheckTensorChecksum(r.shard_file, name, bytes.size(), *r.shard, actual));
  }
  if (r.index) {
    SL_RETURN_IF_ERROR(CheckTensorChecksum(index_file_, name, bytes.size(), *r.index, actual));
  }
  return OkStatus();
}

uint64_t LayoutFreeDigest(std::span<const TensorDigest> tensors) {
  std::vector<const TensorDigest*> sorted;
  sorted.reserve(tensors.size());
  for (const TensorDigest& t : tensors) sorted.push_back(&t);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const TensorDigest* a, const TensorDigest* b) { return a->name < b->name; });
  Xxh3Hasher hasher;
  std::string record;
  for (const TensorDigest* t : sorted) {
    record.clear();
    AppendBytes(record, t->name);
    AppendBytes(record, DtypeName(t->dtype));
    AppendU64(record, t->shape.size());
    for (uint64_t dim : t->shape) AppendU64(record, dim);
    AppendU64(record, t->xxh3);
    hasher.Update(std::as_bytes(std::span(record)));
  }
  return hasher.Digest();
}

}  // namespace shardload
