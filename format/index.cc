// format/index.cc — `*.safetensors.index.json` parsing (simdjson DOM). See index.h.
#include "format/index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <set>
#include <vector>

#include <simdjson.h>
#include "format/scoped_fd.h"
#include "format/text.h"
#include "format/json_kind.h"
#include "format/json_syntax.h"

namespace shardload {
namespace {

constexpr std::string_view kSuffix = ".safetensors";

std::string Quote(std::string_view text) { return QuoteNameForMessage(text); }

std::string_view TypeName(simdjson::dom::element_type type) { return JsonKindName(type); }

// ParseDecimal: a string of 1-20 decimal digits that fits in 64 bits.
std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    if (__builtin_mul_overflow(v, 10u, &v) || __builtin_add_overflow(v, uint64_t(c - '0'), &v)) {
      return std::nullopt;
    }
  }
  return v;
}

Status ReadMetadata(simdjson::dom::element value, std::string_view label, ShardIndex& index) {
  using T = simdjson::dom::element_type;
  std::string l(label);
  if (value.type() == T::NULL_VALUE) return OkStatus();  // as absent, like __metadata__: null
  if (value.type() != T::OBJECT) {
    return InvalidArgumentError(l + ": metadata must be an object, got " +
                                std::string(TypeName(value.type())));
  }
  index.has_metadata = true;
  simdjson::dom::object object = value.get_object().value_unsafe();
  for (simdjson::dom::key_value_pair kv : object) {
    std::string text;
    const bool is_string = kv.value.type() == T::STRING;
    if (is_string) {
      text = std::string(kv.value.get_string().value_unsafe());
    } else {
      text = simdjson::to_string(kv.value);  // numbers in decimal, others minified
    }
    if (kv.key == "total_size") {
      using T2 = simdjson::dom::element_type;
      if (kv.value.type() == T2::UINT64) {
        index.total_size = kv.value.get_uint64().value_unsafe();
      } else if (kv.value.type() == T2::INT64 && kv.value.get_int64().value_unsafe() >= 0) {
        index.total_size = static_cast<uint64_t>(kv.value.get_int64().value_unsafe());
      } else if (kv.value.type() == T2::STRING) {
        index.total_size = ParseDecimal(text);
      }
    }
    if (!index.metadata.try_emplace(std::string(kv.key), std::move(text)).second) {
      return InvalidArgumentError(l + ": metadata has duplicate key " + Quote(kv.key));
    }
    if (!is_string) index.metadata_json.emplace(kv.key);
  }
  return OkStatus();
}

Result<ShardIndex> ParseIndexImpl(std::string_view json, std::string_view label,
                                  size_t max_shards) {
  std::string l(label);
  simdjson::padded_string padded(json.data(), json.size());
  if (padded.data() == nullptr && !json.empty()) {
    return ResourceExhaustedError(l + ": cannot allocate " + std::to_string(json.size()) +
                                  " bytes to parse the index");
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::error_code err = parser.allocate(std::max<size_t>(json.size(), 64), kIndexMaxDepth);
  if (!err) err = parser.parse(padded).get(root);
  if (err == simdjson::UTF8_ERROR) {
    std::string what = l + ": index is not valid UTF-8";
    if (std::optional<size_t> at = Utf8ErrorOffset(json)) what += " at byte " + std::to_string(*at);
    return InvalidArgumentError(what);
  }
  if (err == simdjson::DEPTH_ERROR) {
    return InvalidArgumentError(l + ": index nests deeper than " + std::to_string(kIndexMaxDepth) +
                                " levels");
  }
  if (err == simdjson::MEMALLOC) {
    return ResourceExhaustedError(l + ": cannot allocate memory to parse the index");
  }
  if (err) {
    std::string what = l + ": index is not valid JSON";
    if (std::optional<uint64_t> at = JsonSyntaxErrorOffset(json)) {
      what += " at byte " + std::to_string(*at);
    }
    return InvalidArgumentError(what + ": " + simdjson::error_message(err));
  }
  using T = simdjson::dom::element_type;
  if (root.type() != T::OBJECT) {
    return InvalidArgumentError(l + ": index must be a JSON object, got " +
                                std::string(TypeName(root.type())));
  }
  ShardIndex index;
  simdjson::dom::object top = root.get_object().value_unsafe();
  // Top-level keys, checked for duplicates by sorting: a valid index has a handful, but
  // a hostile one may hold millions, where a linear scan is quadratic and a hash set can
  // be flooded with keys of one std::hash value. (Which duplicate is named when there
  // are several: the smallest.)
  std::vector<std::string_view> keys;
  for (simdjson::dom::key_value_pair kv : top) keys.push_back(kv.key);
  std::sort(keys.begin(), keys.end());
  if (auto dup = std::adjacent_find(keys.begin(), keys.end()); dup != keys.end()) {
    return InvalidArgumentError(l + ": duplicate key " + Quote(*dup));
  }
  simdjson::dom::element weight_map;
  bool have_weight_map = false;
  for (simdjson::dom::key_value_pair kv : top) {
    if (kv.key == "weight_map") {
      weight_map = kv.value;
      have_weight_map = true;
    } else if (kv.key == "metadata") {
      SL_RETURN_IF_ERROR(ReadMetadata(kv.value, label, index));
    }
  }
  if (!have_weight_map) return InvalidArgumentError(l + ": missing 'weight_map'");
  if (weight_map.type() != T::OBJECT) {
    return InvalidArgumentError(l + ": weight_map must be an object, got " +
                                std::string(TypeName(weight_map.type())));
  }
  simdjson::dom::object entries = weight_map.get_object().value_unsafe();
  index.weight_map.reserve(entries.size());  // size() saturates; only a hint
  // Shard names repeat for every tensor: validate each distinct name once. An ordered
  // set: a hash set could be flooded with names of one std::hash value.
  std::set<std::string_view> shards;
  for (simdjson::dom::key_value_pair kv : entries) {
    if (kv.value.type() != T::STRING) {
      return InvalidArgumentError(l + ": tensor " + Quote(kv.key) +
                                  ": shard must be a string, got " +
                                  std::string(TypeName(kv.value.type())));
    }
    std::string_view shard = kv.value.get_string().value_unsafe();
    if (!shards.contains(shard)) {
      SL_RETURN_IF_ERROR(ValidateShardFileName(shard, l + ": tensor " + Quote(kv.key)));
      if (shards.size() == max_shards) {
        return InvalidArgumentError(l + ": index names more than " +
                                    std::to_string(max_shards) + " shard files");
      }
      shards.insert(shard);  // views into the parser's string buffer, alive until return
    }
    index.weight_map.emplace_back(std::string(kv.key), std::string(shard));
  }
  std::sort(index.weight_map.begin(), index.weight_map.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < index.weight_map.size(); ++i) {
    if (index.weight_map[i].first == index.weight_map[i - 1].first) {
      return InvalidArgumentError(l + ": weight_map lists tensor " +
                                  Quote(index.weight_map[i].first) + " twice");
    }
  }
  index.shard_files.assign(shards.begin(), shards.end());
  std::sort(index.shard_files.begin(), index.shard_files.end());
  return index;
}

}  // namespace

const std::string* ShardIndex::ShardOf(std::string_view tensor) const {
  auto it = std::lower_bound(weight_map.begin(), weight_map.end(), tensor,
                             [](const auto& entry, std::string_view t) { return entry.first < t; });
  if (it == weight_map.end() || it->first != tensor) return nullptr;
  return &it->second;
}

Status ValidateShardFileName(std::string_view name, std::string_view label) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(std::string(label) + ": shard file name " + Quote(name) + " " +
                                std::string(why));
  };
  if (name.empty()) return InvalidArgumentError(std::string(label) + ": shard file name is empty");
  if (name.find('\0') != std::string_view::npos) return bad("contains a NUL byte");
  if (name[0] == '/' || name[0] == '\\') return bad("is an absolute path");
  if (name.size() >= 2 && name[1] == ':' &&
      ((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z'))) {
    return bad("starts with a drive letter");
  }
  // A ".." component, with either separator.
  size_t start = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '/' || name[i] == '\\') {
      if (name.substr(start, i - start) == "..") return bad("refers to the parent folder ('..')");
      start = i + 1;
    }
  }
  if (name.find_first_of("/\\") != std::string_view::npos) {
    return bad("contains a path separator; shards must be plain file names in the checkpoint "
               "folder");
  }
  if (!name.ends_with(kSuffix)) return bad("does not end in .safetensors");
  if (name.size() == kSuffix.size()) return bad("has nothing before .safetensors");
  return OkStatus();
}

Result<ShardIndex> ParseIndex(std::string_view json, std::string_view label,
                              size_t max_shards) {
  try {
    return ParseIndexImpl(json, label, max_shards);
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(std::string(label) + ": out of memory parsing the index");
  }
}

Result<ShardIndex> ReadIndexFile(const std::string& path, size_t max_shards) {
  try {
    uint64_t size = 0;
    SL_ASSIGN_OR_RETURN(ScopedFd fd, OpenRegularFile(path, &size));
    if (size > kMaxIndexFileSize) {
      return InvalidArgumentError(path + ": index file is " + std::to_string(size) +
                                  " bytes, above the limit of " +
                                  std::to_string(kMaxIndexFileSize));
    }
    std::string text(size, '\0');
    SL_ASSIGN_OR_RETURN(size_t done, PreadFully(fd.get(), text.data(), size, 0, path));
    if (done < size) {
      return DataLossError(path + ": file shrank while it was read (got " +
                           std::to_string(done) + " of " + std::to_string(size) + " bytes)");
    }
    return ParseIndexImpl(text, path, max_shards);
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(path + ": out of memory reading the index");
  }
}

}  // namespace shardload
