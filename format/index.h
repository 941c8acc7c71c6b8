// format/index.h — parse a sharded checkpoint's `*.safetensors.index.json`.
//
// Provides `ShardIndex` (the weight map, the distinct shard files, the metadata) and
// the parsers. Only the index file itself is validated here: JSON well-formed with no
// duplicate keys, `weight_map` an object of strings, every shard a plain file name in
// the checkpoint folder ending in ".safetensors", at most kMaxShardCount shards. That
// the shards exist, stay inside the folder (symlinks) and hold the tensors the index
// names is the checkpoint catalog's job (loader/checkpoint.h).
//
//   Result<ShardIndex> index = ReadIndexFile("ckpt/model.safetensors.index.json");
//   if (!index.ok()) return index.status();  // "...index.json: tensor 'w': shard file ..."
//   for (const std::string& shard : index->shard_files) OpenShard(shard);
//   for (const auto& [tensor, shard] : index->weight_map) ...  // sorted by tensor name
#ifndef SHARDLOAD_FORMAT_INDEX_H_
#define SHARDLOAD_FORMAT_INDEX_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "format/status.h"

namespace shardload {

// kMaxShardCount: the most distinct shard files an index may name (as huggingface.js).
inline constexpr size_t kMaxShardCount = 10'000;

// kMaxIndexFileSize: the largest index file ReadIndexFile reads (256 MiB; a
// 1M-tensor index is about 80 MB).
inline constexpr uint64_t kMaxIndexFileSize = 256ull << 20;

// kIndexMaxDepth: the deepest nesting ParseIndex accepts, in simdjson's count (an index
// needs 2 levels, 3 with nested metadata values); deeper input is rejected by the
// parser, never recursed into. A metadata value sits 2 levels down, so a writer may
// nest one at most kIndexMaxDepth - 2 deep.
inline constexpr size_t kIndexMaxDepth = 64;

// ShardIndex: a parsed, validated index.
struct ShardIndex {
  // weight_map: (tensor name, shard file name), sorted by tensor name, names unique.
  std::vector<std::pair<std::string, std::string>> weight_map;
  // shard_files: the distinct shard file names of weight_map, sorted.
  std::vector<std::string> shard_files;
  // metadata: the optional "metadata" object. Strings are kept as they are; every
  // other value as its JSON text (numbers in decimal, `true`, `null`, objects and
  // arrays minified).
  std::map<std::string, std::string> metadata;
  // metadata_json: the keys of `metadata` whose value is not a JSON string, so that
  // their text above is JSON to be written back as it is (total_size: 41 and
  // total_size: "41" both read as "41" in `metadata`; only the first is listed here).
  std::set<std::string, std::less<>> metadata_json;
  // has_metadata: whether the index has a "metadata" object (an empty `{}` counts;
  // `"metadata": null` is read as absent, an array or other value is an error).
  bool has_metadata = false;
  // total_size: metadata.total_size when it is an unsigned integer (or a string of
  // decimal digits that fits in 64 bits); advisory, never checked here.
  std::optional<uint64_t> total_size;

  // ShardOf: the shard file that holds `tensor`, or nullptr. O(log n).
  const std::string* ShardOf(std::string_view tensor) const;
};

// ValidateShardFileName: OK when `name` is a plain relative file name ending in
// ".safetensors". Otherwise invalid_argument "<label>: shard file name '<name>' ..."
// for: an empty name, a NUL byte, an absolute path ("/x", "\x"), a drive letter
// ("C:x"), a ".." component, any '/' or '\' separator, or another extension.
Status ValidateShardFileName(std::string_view name, std::string_view label);

// ParseIndex: parse the index JSON `json`; `label` (usually the index file name)
// starts every error message. Errors (all invalid_argument):
//   "<label>: index is not valid JSON at byte N: <simdjson error text>" (" at byte N"
//   where the offending byte is known); "<label>: index is not valid UTF-8 at byte N";
//   "<label>: index nests deeper than 64 levels"
//   "<label>: index must be a JSON object, got an array"
//   "<label>: duplicate key 'weight_map'"       (any duplicate key at top level)
//   "<label>: missing 'weight_map'" / "<label>: weight_map must be an object, got ..."
//   "<label>: weight_map lists tensor 'x' twice"
//   "<label>: tensor 'x': shard must be a string, got a number"
//   "<label>: tensor 'x': shard file name '../a.safetensors' ..." (ValidateShardFileName)
//   "<label>: index names more than 10000 shard files" (`max_shards`, default
//   kMaxShardCount; a larger one is allowed)
//   "<label>: metadata must be an object, got ..." / "<label>: metadata has duplicate key 'k'"
// Unknown top-level keys are ignored. Thread safety: reentrant, no shared state.
Result<ShardIndex> ParseIndex(std::string_view json, std::string_view label,
                              size_t max_shards = kMaxShardCount);

// ReadIndexFile: read `path` (at most kMaxIndexFileSize bytes) and ParseIndex it with
// `path` as the label and `max_shards`. Errors: not_found / permission_denied from open;
// invalid_argument "<path>: not a regular file" or "... index file is N bytes, above
// the limit of M"; data_loss when the file shrinks while read; ParseIndex's errors.
Result<ShardIndex> ReadIndexFile(const std::string& path, size_t max_shards = kMaxShardCount);

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_INDEX_H_
