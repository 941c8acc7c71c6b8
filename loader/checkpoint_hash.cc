// loader/checkpoint_hash.cc — per-tensor XXH3 over a whole checkpoint (see the header).
#include "loader/checkpoint_hash.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string_view>
#include <utility>

#include "format/checksum.h"
#include "format/index.h"
#include "format/text.h"
#include "loader/file.h"
#include "loader/parallel.h"

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

}  // namespace

Result<CheckpointDigest> HashCheckpoint(const Checkpoint& ckpt, const HashOptions& options) {
  if (options.chunk_bytes < kMinChunk || options.chunk_bytes > kMaxChunk) {
    return InvalidArgumentError("HashOptions.chunk_bytes is " +
                                std::to_string(options.chunk_bytes) +
                                ", must be between 4096 and 1073741824");
  }
  if (options.threads < 0 || options.threads > 256) {
    return InvalidArgumentError("HashOptions.threads is " + std::to_string(options.threads) +
                                ", must be between 0 and 256");
  }
  const std::vector<StoredTensor>& tensors = ckpt.tensors();
  const std::vector<ShardInfo>& shards = ckpt.shards();

  CheckpointDigest result;
  result.tensors.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const StoredTensor& t = tensors[i];
    if (t.shard >= shards.size()) {
      return InternalError("tensor " + QuoteNameForMessage(t.name) + " names shard " + std::to_string(t.shard) +
                           " of " + std::to_string(shards.size()));
    }
    result.tensors[i].name = t.name;
    result.tensors[i].dtype = t.dtype;
    result.tensors[i].shape = t.shape;
    result.tensors[i].bytes = t.bytes;
  }

  // File order, so reads go forward through each file.
  const std::vector<size_t> order = ckpt.FileOrder();

  // The records: each shard's, and the whole checkpoint's in the index's metadata.
  // Without check_recorded, a malformed record is skipped (and counted); the file's
  // other records still count.
  auto records_of = [&](const std::map<std::string, std::string>& metadata, const std::string& label,
                        bool in_index, ChecksumMap* out) -> Status {
    SL_ASSIGN_OR_RETURN(*out, ParseChecksumMetadata(metadata, label, in_index,
                                                    options.check_recorded ? nullptr : &result.malformed));
    return OkStatus();
  };
  std::vector<ChecksumMap> recorded(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    SL_RETURN_IF_ERROR(records_of(shards[i].metadata, shards[i].file, false, &recorded[i]));
  }
  ChecksumMap index_recorded;
  if (ckpt.sharded()) {
    SL_RETURN_IF_ERROR(records_of(ckpt.metadata(), ckpt.index_file(), true, &index_recorded));
  }

  // Runs of `order` of about equal bytes, one per thread.
  uint64_t total = 0, largest = 0;
  for (const StoredTensor& t : tensors) {
    total += t.bytes;
    largest = std::max(largest, t.bytes);
  }
  const size_t threads = std::max<size_t>(
      1, std::min(static_cast<size_t>(ResolveThreadCount(options.threads)), order.size()));
  // A run ends after the tensor that brings it to its share of the bytes.
  std::vector<size_t> run_begin = {0};
  unsigned __int128 acc = 0;
  for (size_t pos = 0; pos + 1 < order.size() && run_begin.size() < threads; ++pos) {
    acc += tensors[order[pos]].bytes;
    if (acc * threads >= static_cast<unsigned __int128>(total) * run_begin.size()) {
      run_begin.push_back(pos + 1);
    }
  }
  run_begin.push_back(order.size());

  // Each run: hash its tensors in order; stop at its first read error, noting where.
  struct RunError {
    size_t pos = SIZE_MAX;  // position in `order` of the failing tensor
    Status status;
  };
  std::vector<RunError> errors(run_begin.size() - 1);
  // Every shard holding a tensor is opened before any is read (OpenShardFiles: together,
  // under the folder's lock, so all are of one save). An open's failure is reported at
  // the first tensor of that shard that a run reaches, as a read error would be.
  std::vector<std::unique_ptr<ReadableFile>> files;
  std::vector<Status> open_status;
  {
    std::vector<bool> used(shards.size(), false);
    for (const StoredTensor& t : tensors) used[t.shard] = true;
    Status opened = OpenShardFiles(ckpt, used, IoMode::kPread, UringOptions(), &files,
                                   &open_status, options.cancelled);
    if (opened.code() == StatusCode::kCancelled) return CancelledError("hashing cancelled");
    SL_RETURN_IF_ERROR(opened);
  }
  const size_t buffer_bytes = static_cast<size_t>(std::min(options.chunk_bytes, largest));
  auto hash_run_or_throw = [&](size_t r, size_t* at) {
    std::vector<std::byte> buffer(buffer_bytes);
    for (size_t pos = run_begin[r]; pos < run_begin[r + 1]; ++pos) {
      *at = pos;
      const StoredTensor& t = tensors[order[pos]];
      const ReadableFile* file = files[t.shard].get();
      Status st = open_status[t.shard];
      Xxh3Hasher hasher;
      for (uint64_t done = 0; st.ok() && done < t.bytes;) {
        if (options.cancelled && options.cancelled()) {
          st = CancelledError("hashing cancelled");
          break;
        }
        size_t n = static_cast<size_t>(std::min<uint64_t>(t.bytes - done, buffer.size()));
        std::span<std::byte> piece(buffer.data(), n);
        Status read = file->ReadAt(t.file_offset + done, piece);
        if (!read.ok()) {
          st = Status(read.code(),
                      read.message() + " (reading tensor " + QuoteNameForMessage(t.name) + ")");
          break;
        }
        hasher.Update(piece);
        done += n;
      }
      if (!st.ok()) {
        errors[r] = RunError{pos, std::move(st)};
        return;
      }
      result.tensors[order[pos]].xxh3 = hasher.Digest();
    }
  };
  // Each run on its own thread; an exception (out of memory for the buffer or a
  // message) is recorded as the run's error at the tensor it reached, never
  // std::terminate on a worker.
  RunParts(errors.size(), [&](size_t r) {
    size_t at = run_begin[r];
    try {
      hash_run_or_throw(r, &at);
    } catch (const std::exception& e) {
      errors[r] = RunError{at, ResourceExhaustedError(
                                   "hashing tensor " + QuoteNameForMessage(tensors[order[at]].name) +
                                   ": " + e.what())};
    }
  });

  // In file order: the first read error, or with check_recorded the first mismatch.
  size_t r = 0;
  for (size_t pos = 0; pos < order.size(); ++pos) {
    while (pos >= run_begin[r + 1]) ++r;
    if (errors[r].pos == pos) return errors[r].status;
    const size_t idx = order[pos];
    const StoredTensor& t = tensors[idx];
    TensorDigest& d = result.tensors[idx];
    // The shard's own record first, then the index's; every record present must match.
    bool any = false, all_match = true;
    for (auto [sums, in_index] : {std::pair(&recorded[t.shard], false),
                                  std::pair(&index_recorded, true)}) {
      auto it = sums->find(t.name);
      if (it == sums->end()) continue;
      if (!any) d.recorded = it->second;
      any = true;
      if (it->second != d.xxh3) {
        all_match = false;
        if (options.check_recorded) {
          return CheckTensorChecksum(shards[t.shard].file, t.name, t.file_offset, t.bytes,
                                     it->second, d.xxh3,
                                     in_index ? std::string_view(ckpt.index_file()) : "");
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
    SL_ASSIGN_OR_RETURN(index_sums,
                        ParseChecksumMetadata(ckpt.metadata(), ckpt.index_file(), true));
  }
  for (const StoredTensor& t : ckpt.tensors()) {
    if (t.shard >= shards.size()) continue;
    Record r;
    if (auto it = per_shard[t.shard].find(t.name); it != per_shard[t.shard].end()) {
      r.shard = it->second;
    }
    if (auto it = index_sums.find(t.name); it != index_sums.end()) r.index = it->second;
    if (!r.shard && !r.index) continue;
    r.shard_file = shards[t.shard].file;
    r.file_offset = t.file_offset;
    out.records_.emplace(t.name, std::move(r));
  }
  return out;
}

const uint64_t* RecordedChecksums::Find(std::string_view name) const {
  auto it = records_.find(name);
  if (it == records_.end()) return nullptr;
  return it->second.shard ? &*it->second.shard : &*it->second.index;
}

Status RecordedChecksums::Check(std::string_view name, std::span<const std::byte> bytes) const {
  if (records_.find(name) == records_.end()) return OkStatus();
  return CheckXxh3(name, bytes.size(), Xxh3(bytes));
}

Status RecordedChecksums::CheckXxh3(std::string_view name, uint64_t bytes, uint64_t actual) const {
  auto it = records_.find(name);
  if (it == records_.end()) return OkStatus();
  const Record& r = it->second;
  if (r.shard) {
    SL_RETURN_IF_ERROR(
        CheckTensorChecksum(r.shard_file, name, r.file_offset, bytes, *r.shard, actual));
  }
  if (r.index) {
    SL_RETURN_IF_ERROR(CheckTensorChecksum(r.shard_file, name, r.file_offset, bytes, *r.index,
                                           actual, index_file_));
  }
  return OkStatus();
}

namespace {

// Relabel: `s` naming `label` wherever it named `path` or its file name (the longer
// first: an error may name either).
Status Relabel(const Status& s, const std::string& path, const std::string& label) {
  std::string message = s.message();
  const std::string base = path.substr(path.find_last_of('/') + 1);
  for (const std::string& name : {path, base}) {
    for (size_t at = message.find(name); !name.empty() && at != std::string::npos;
         at = message.find(name, at + label.size())) {
      message.replace(at, name.size(), label);
    }
  }
  return Status(s.code(), std::move(message));
}

}  // namespace

Result<std::vector<TensorDigest>> CheckWrittenFile(const std::string& path,
                                                   const std::string& label,
                                                   std::span<const std::string> names,
                                                   const ChecksumMap& expected,
                                                   const HashOptions& options) {
  auto relabel = [&](const Status& s) { return Relabel(s, path, label); };
  Result<Checkpoint> file = Checkpoint::Open(path);
  if (!file.ok()) return relabel(file.status());
  Result<CheckpointDigest> hashed = HashCheckpoint(*file, options);
  if (!hashed.ok()) return relabel(hashed.status());
  CheckpointDigest& digest = *hashed;
  if (digest.tensors.size() != names.size() || digest.recorded != names.size()) {
    return DataLossError(label + ": holds " + std::to_string(digest.tensors.size()) +
                         " tensors, " + std::to_string(digest.recorded) +
                         " with an XXH3 record; " + std::to_string(names.size()) +
                         " were written");
  }
  std::set<std::string_view> written(names.begin(), names.end());
  for (const TensorDigest& t : digest.tensors) {
    auto want = expected.find(t.name);
    if (!written.contains(t.name) || want == expected.end()) {
      return DataLossError(label + ": holds tensor " + QuoteNameForMessage(t.name) +
                           ", which was not written to it");
    }
    if (want->second != t.xxh3) {
      return DataLossError(label + ": tensor " + QuoteNameForMessage(t.name) +
                           ": XXH3 of its bytes is " + FormatXxh3(t.xxh3) + ", expected " +
                           FormatXxh3(want->second));
    }
  }
  return std::move(digest.tensors);
}

Status CheckWrittenIndex(const std::string& path, const std::string& label,
                         std::span<const std::pair<std::string, std::string>> weight_map,
                         const ChecksumMap* records) {
  Result<ShardIndex> index = ReadIndexFile(path);
  if (!index.ok()) return Relabel(index.status(), path, label);
  if (index->weight_map.size() != weight_map.size()) {
    return DataLossError(label + ": lists " + std::to_string(index->weight_map.size()) +
                         " tensors; " + std::to_string(weight_map.size()) + " were written");
  }
  std::map<std::string_view, std::string_view> written;
  for (const auto& [name, file] : weight_map) written.emplace(name, file);
  for (const auto& [name, file] : index->weight_map) {
    auto it = written.find(name);
    if (it == written.end()) {
      return DataLossError(label + ": lists tensor " + QuoteNameForMessage(name) +
                           ", which was not written");
    }
    if (it->second != file) {
      return DataLossError(label + ": maps tensor " + QuoteNameForMessage(name) + " to " +
                           QuoteForMessage(file, '\'') + "; it was written to " +
                           QuoteForMessage(it->second, '\''));
    }
  }
  if (records == nullptr) return OkStatus();
  SL_ASSIGN_OR_RETURN(ChecksumMap recorded,
                      ParseChecksumMetadata(index->metadata, label, /*in_index=*/true));
  for (const auto& [name, want] : *records) {
    auto it = recorded.find(name);
    if (it == recorded.end()) {
      return DataLossError(label + ": records no XXH3 for tensor " + QuoteNameForMessage(name));
    }
    if (it->second != want) {
      return DataLossError(label + ": records XXH3 " + FormatXxh3(it->second) + " for tensor " +
                           QuoteNameForMessage(name) + "; its bytes hash to " + FormatXxh3(want));
    }
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
