// format/checksum_writer.cc — writer wrappers recording per-tensor XXH3 (see header).
#include "format/checksum_writer.h"

#include <algorithm>
#include <vector>

namespace shardload {
namespace {

constexpr size_t kMinChunk = 4096;
constexpr size_t kMaxChunk = size_t{1} << 30;

std::string TensorPrefix(std::string_view label, std::string_view name) {
  return std::string(label) + ": tensor '" + std::string(name) + "': ";
}

}  // namespace

Result<ChecksumMap> ComputeChecksums(std::span<const TensorToWrite> tensors,
                                     std::string_view label, size_t chunk_bytes) {
  if (chunk_bytes < kMinChunk || chunk_bytes > kMaxChunk) {
    return InvalidArgumentError("chunk_bytes " + std::to_string(chunk_bytes) +
                                " must be in [4096, 1073741824]");
  }
  ChecksumMap out;
  std::vector<std::byte> buffer;  // allocated on the first generator
  for (const TensorToWrite& t : tensors) {
    if (out.count(t.name) != 0) {
      return InvalidArgumentError(std::string(label) + ": duplicate tensor name '" + t.name + "'");
    }
    Result<uint64_t> size = TensorByteSize(t.dtype, t.shape);
    if (!size.ok()) {
      return Status(size.status().code(), TensorPrefix(label, t.name) + size.status().message());
    }
    if (!t.fill) {
      if (t.data.size() != *size) {
        return InvalidArgumentError(TensorPrefix(label, t.name) + "data is " +
                                    std::to_string(t.data.size()) + " bytes, but " +
                                    std::string(DtypeName(t.dtype)) + ShapeToString(t.shape) +
                                    " needs " + std::to_string(*size) + " bytes");
      }
      out.emplace(t.name, Xxh3(t.data));
      continue;
    }
    if (buffer.empty()) buffer.resize(chunk_bytes);
    Xxh3Hasher hasher;
    for (uint64_t offset = 0; offset < *size;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(*size - offset, buffer.size()));
      std::span<std::byte> piece(buffer.data(), n);
      Status s = t.fill(offset, piece);
      if (!s.ok()) return Status(s.code(), TensorPrefix(label, t.name) + s.message());
      hasher.Update(piece);
      offset += n;
    }
    out.emplace(t.name, hasher.Digest());
  }
  return out;
}

Status WriteFileWithChecksums(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::optional<Metadata>& metadata,
                              const WriteOptions& options) {
  SL_ASSIGN_OR_RETURN(ChecksumMap sums, ComputeChecksums(tensors, path, options.buffer_bytes));
  Metadata md = metadata.value_or(Metadata{});
  AddChecksumsToMetadata(sums, md);
  return WriteFile(path, tensors, md, options);
}

Result<ShardedWriteResult> WriteShardedWithChecksums(const std::string& dir,
                                                     std::span<const TensorToWrite> tensors,
                                                     const ShardOptions& options) {
  SL_ASSIGN_OR_RETURN(ChecksumMap sums,
                      ComputeChecksums(tensors, dir, options.write.buffer_bytes));
  return WriteShardedWithChecksums(dir, tensors, options, sums);
}

Result<ShardedWriteResult> WriteShardedWithChecksums(const std::string& dir,
                                                     std::span<const TensorToWrite> tensors,
                                                     const ShardOptions& options,
                                                     const ChecksumMap& sums) {
  ShardOptions with_sums = options;
  // Every shard records the hashes of its own tensors; the index (or the single file)
  // records all of them.
  AddChecksumsToMetadata(sums, with_sums.metadata);
  with_sums.shard_metadata = [&sums, tensors, user = options.shard_metadata](
                                 size_t shard, std::span<const size_t> indices) {
    Metadata m = user ? user(shard, indices) : Metadata{};
    ChecksumMap mine;
    for (size_t i : indices) {
      auto it = sums.find(tensors[i].name);
      if (it != sums.end()) mine.insert(*it);
    }
    AddChecksumsToMetadata(mine, m);
    return m;
  };
  return WriteSharded(dir, tensors, with_sums);
}

}  // namespace shardload
