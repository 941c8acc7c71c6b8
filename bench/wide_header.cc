// bench/wide_header.cc — see wide_header.h.
#include "bench/wide_header.h"

#include <cstdio>

namespace shardload::bench {

std::string WideTensorName(uint64_t i) {
  static const char* const kProj[] = {"gate_proj.weight", "up_proj.weight", "down_proj.weight",
                                      "gate_proj.scales", "up_proj.scales", "down_proj.scales"};
  uint64_t proj = i % 6, expert = (i / 6) % 64, layer = i / (6 * 64);
  return "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(expert) +
         "." + kProj[proj];
}

std::string WideHeaderJson(uint64_t n) {
  std::string json = "{\"__metadata__\":{\"format\":\"pt\"}";
  json.reserve(n * 110 + 64);
  for (uint64_t i = 0; i < n; ++i) {
    json += ",\"" + WideTensorName(i) + "\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[" +
            std::to_string(i * 8) + "," + std::to_string((i + 1) * 8) + "]}";
  }
  json += "}";
  while (json.size() % 8 != 0) json += ' ';
  return json;
}

std::string WideSafetensorsFile(uint64_t n) {
  std::string json = WideHeaderJson(n);
  std::string file(8, '\0');
  for (int b = 0; b < 8; ++b) file[b] = static_cast<char>(static_cast<uint64_t>(json.size()) >> (8 * b));
  file += json;
  file.append(n * 8, '\0');
  return file;
}

std::string WideIndexJson(uint64_t n, uint64_t shards) {
  std::string json = "{\"metadata\":{\"total_size\":" + std::to_string(n * 8) + "},\"weight_map\":{";
  char shard[64];
  for (uint64_t i = 0; i < n; ++i) {
    std::snprintf(shard, sizeof(shard), "model-%05llu-of-%05llu.safetensors",
                  static_cast<unsigned long long>(i * shards / (n ? n : 1) + 1),
                  static_cast<unsigned long long>(shards));
    json += (i ? ",\"" : "\"") + WideTensorName(i) + "\":\"" + shard + "\"";
  }
  return json + "}}";
}

}  // namespace shardload::bench
