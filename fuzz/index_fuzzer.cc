// fuzz/index_fuzzer.cc — libFuzzer target over the sharded-index parser (format/index.h).
//
// Beyond "no crash, no sanitizer report", every accepted index must keep the parser's
// promises (the fuzzer traps otherwise):
//  - weight_map is sorted by tensor name with unique names, and ShardOf finds each;
//  - shard_files is the sorted, de-duplicated set of weight_map's shard names, at most
//    kMaxShardCount, each passing ValidateShardFileName;
//  - total_size, when set, is the decimal value of metadata["total_size"] (digits only);
//  - every metadata_json key is a metadata key whose text is itself JSON: put back into
//    an index as it is, it parses to the same text, again listed as JSON (what reshard
//    relies on when it writes such values into a new index);
//  - parsing is deterministic (a second parse gives the same result or the same error).
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "format/index.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shardload;
  std::string_view json(reinterpret_cast<const char*>(data), size);
  Result<ShardIndex> index = ParseIndex(json, "fuzz.index.json");
  Result<ShardIndex> again = ParseIndex(json, "fuzz.index.json");
  Check(index.ok() == again.ok());
  if (!index.ok()) {
    Check(index.status() == again.status());
    Check(index.status().code() == StatusCode::kInvalidArgument);
    Check(index.status().message().starts_with("fuzz.index.json: "));
    return 0;
  }
  Check(index->weight_map == again->weight_map && index->metadata == again->metadata &&
        index->shard_files == again->shard_files && index->total_size == again->total_size &&
        index->metadata_json == again->metadata_json);
  for (const std::string& key : index->metadata_json) {
    auto it = index->metadata.find(key);
    Check(it != index->metadata.end() && !it->second.empty());
    Result<ShardIndex> rewrapped =
        ParseIndex("{\"metadata\":{\"k\":" + it->second + "},\"weight_map\":{}}", "re");
    Check(rewrapped.ok() && rewrapped->metadata_json.count("k") == 1 &&
          rewrapped->metadata.at("k") == it->second);
  }

  std::set<std::string> shards;
  for (size_t i = 0; i < index->weight_map.size(); ++i) {
    const auto& [tensor, shard] = index->weight_map[i];
    if (i > 0) Check(index->weight_map[i - 1].first < tensor);
    const std::string* found = index->ShardOf(tensor);
    Check(found != nullptr && *found == shard);
    Check(ValidateShardFileName(shard, "x").ok());
    shards.insert(shard);
  }
  Check(std::set<std::string>(index->shard_files.begin(), index->shard_files.end()) == shards);
  Check(index->shard_files.size() == shards.size());
  Check(index->shard_files.size() <= kMaxShardCount);
  if (index->total_size) {
    auto it = index->metadata.find("total_size");
    Check(it != index->metadata.end() && !it->second.empty());
    uint64_t value = 0;
    for (char c : it->second) {
      Check(c >= '0' && c <= '9');
      Check(value <= (UINT64_MAX - static_cast<uint64_t>(c - '0')) / 10);
      value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    Check(value == *index->total_size);
  }
  return 0;
}
