// tests/fixtures.cc — see tests/fixtures.h.
#include "tests/fixtures.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "format/dtype.h"
#include "loader/checkpoint.h"

namespace shardload::testing {

std::string PatternBytes(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed * 2654435761u + 12345u;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x & 0xff);
  }
  return out;
}

std::string JsonQuote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string TensorData(const FixtureTensor& t) {
  if (!t.data.empty()) return t.data;
  Result<Dtype> d = DtypeFromName(t.dtype);
  if (!d.ok()) return "";
  Result<uint64_t> n = TensorByteSize(*d, t.shape);
  if (!n.ok()) return "";
  uint32_t seed = 0;
  for (char c : t.name) seed = seed * 31 + static_cast<unsigned char>(c);
  return PatternBytes(*n, seed);
}

std::string HeaderJson(const std::vector<FixtureTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool mfirst = true;
    for (const auto& [k, v] : metadata) {
      if (!mfirst) json += ",";
      mfirst = false;
      json += JsonQuote(k) + ":" + JsonQuote(v);
    }
    json += "}";
    first = false;
  }
  uint64_t offset = 0;
  for (const FixtureTensor& t : tensors) {
    if (!first) json += ",";
    first = false;
    uint64_t size = TensorData(t).size();
    json += JsonQuote(t.name) + ":{\"dtype\":" + JsonQuote(t.dtype) + ",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i) json += ",";
      json += std::to_string(t.shape[i]);
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," +
            std::to_string(offset + size) + "]}";
    offset += size;
  }
  json += "}";
  return json;
}

std::string SafetensorsBytes(const std::vector<FixtureTensor>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  std::string json = HeaderJson(tensors, metadata);
  while (json.size() % 8 != 0) json += ' ';
  std::string out;
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  out += json;
  for (const FixtureTensor& t : tensors) out += TensorData(t);
  return out;
}

std::string IndexJson(const std::vector<std::pair<std::string, std::string>>& weight_map,
                      const std::map<std::string, std::string>& metadata,
                      std::optional<uint64_t> total_size) {
  std::string json = "{\"metadata\":{";
  bool first = true;
  if (total_size) {
    json += "\"total_size\":" + std::to_string(*total_size);
    first = false;
  }
  for (const auto& [k, v] : metadata) {
    if (!first) json += ",";
    first = false;
    json += JsonQuote(k) + ":" + JsonQuote(v);
  }
  json += "},\"weight_map\":{";
  first = true;
  for (const auto& [k, v] : weight_map) {
    if (!first) json += ",";
    first = false;
    json += JsonQuote(k) + ":" + JsonQuote(v);
  }
  json += "}}";
  return json;
}

bool WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return false;
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(f);
}

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string MakeTestDir(std::string_view tag) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ = std::string(base != nullptr ? base : "/tmp") + "/" + std::string(tag) +
                      "-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  return templ;
}

RunResult RunShardload(const std::string& args) {
  std::string scratch = MakeTestDir("run");
  std::string cmd = "cli/shardload " + args + " >" + scratch + "/out 2>" + scratch + "/err";
  RunResult r;
  int status = std::system(cmd.c_str());
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = ReadFile(scratch + "/out").value_or("<no stdout>");
  r.err = ReadFile(scratch + "/err").value_or("<no stderr>");
  return r;
}

std::string ByteRangeText(const std::string& path, const std::string& name) {
  Result<Checkpoint> ckpt = Checkpoint::Open(path);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  if (!ckpt.ok()) return "";
  if (const StoredTensor* t = ckpt->Find(name)) {
    return " at bytes [" + std::to_string(t->file_offset) + ", " +
           std::to_string(t->file_offset + t->bytes) + ")";
  }
  ADD_FAILURE() << name << " is not in " << path;
  return "";
}

}  // namespace shardload::testing
