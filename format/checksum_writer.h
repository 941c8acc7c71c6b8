// format/checksum_writer.h — write safetensors files that record their tensors' XXH3.
//
// Provides `ComputeChecksums` and wrappers over format/writer.h that record one
// `shardload.xxh3.<name>` entry per tensor (format/checksum.h): in the file's
// `__metadata__` for WriteFileWithChecksums; for WriteShardedWithChecksums in the
// index's "metadata" object (a single-shard result gets them in its `__metadata__`)
// and, per shard, each shard's own tensors in its `__metadata__` next to
// `{"format": "pt"}`.
// `shardload hash` / HashCheckpoint check both places when reading.
//
// Tensors with a generator (`TensorToWrite::fill`) are generated twice: once to hash,
// once to write, because the header (holding the hashes) precedes the data. The
// generator must therefore be deterministic; if it is not, reading the file back reports
// the mismatch as data_loss, it is never silently accepted.
//
//   std::vector<TensorToWrite> tensors = ...;
//   SL_RETURN_IF_ERROR(WriteFileWithChecksums("/ckpt/model.safetensors", tensors,
//                                             Metadata{{"format", "pt"}}));
#ifndef SHARDLOAD_FORMAT_CHECKSUM_WRITER_H_
#define SHARDLOAD_FORMAT_CHECKSUM_WRITER_H_

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "format/checksum.h"
#include "format/status.h"
#include "format/writer.h"

namespace shardload {

// ComputeChecksums: the XXH3-64 of each tensor's bytes (from `data`, or from `fill` in
// chunks of `chunk_bytes`, which must be in [4096, 1 GiB]). `label` (a file or folder)
// starts error messages.
// Errors: invalid_argument "chunk_bytes N must be in [4096, 1073741824]";
// invalid_argument "<label>: duplicate tensor name 'w'"; invalid_argument "<label>:
// tensor 'w': data is 8 bytes, but F32[3] needs 12 bytes"; the size errors of
// TensorByteSize and a generator's own errors, both as "<label>: tensor 'w': <message>"
// with their code.
Result<ChecksumMap> ComputeChecksums(std::span<const TensorToWrite> tensors,
                                     std::string_view label,
                                     size_t chunk_bytes = size_t{8} << 20);

// WriteFileWithChecksums: WriteFile with `metadata` (absent → just the checksums)
// extended by the checksum of every tensor (chunks of options.buffer_bytes). A user
// metadata key "shardload.xxh3.<name>" of a written tensor is replaced. Errors: those
// of ComputeChecksums (labelled with `path`) and WriteFile.
Status WriteFileWithChecksums(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::optional<Metadata>& metadata,
                              const WriteOptions& options = {});

// WriteShardedWithChecksums: WriteSharded with the checksum of every tensor added to
// `options.metadata` (so they land in the index, or in the file when one shard results)
// and, when sharded, each shard's own tensors' checksums in that shard's __metadata__
// (through ShardOptions::shard_metadata, after any the caller set there).
// Errors: those of ComputeChecksums (labelled with `dir`) and WriteSharded.
Result<ShardedWriteResult> WriteShardedWithChecksums(const std::string& dir,
                                                     std::span<const TensorToWrite> tensors,
                                                     const ShardOptions& options);

// WriteShardedWithChecksums (precomputed): the same, recording `sums` (ComputeChecksums
// of `tensors`, e.g. checked against a source's records first) instead of hashing the
// tensors again. Tensors without an entry in `sums` get no record.
Result<ShardedWriteResult> WriteShardedWithChecksums(const std::string& dir,
                                                     std::span<const TensorToWrite> tensors,
                                                     const ShardOptions& options,
                                                     const ChecksumMap& sums);

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_CHECKSUM_WRITER_H_
