// tests/index_test.cc — format/index.h: a table of index cases (exact code and
// message, or the parsed result), shard file name rules, metadata, limits, files.
#include "format/index.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace shardload {
namespace {

constexpr std::string_view kLabel = "model.safetensors.index.json";

std::string L(std::string_view m) { return std::string(kLabel) + ": " + std::string(m); }

struct IndexCase {
  std::string name;
  std::string json;
  Status expected;  // OK: valid
};

std::vector<IndexCase> IndexCases() {
  const std::string tape =
      "The JSON document has an improper structure: missing or superfluous commas, braces, "
      "missing keys, etc.";
  auto bad_name = [](std::string_view tensor, std::string_view why) {
    return InvalidArgumentError(L("tensor '" + std::string(tensor) + "': shard file name " +
                                  std::string(why)));
  };
  auto wm = [](std::string_view shard_json) {
    return "{\"weight_map\":{\"x\":" + std::string(shard_json) + "}}";
  };
  return {
      {"valid/minimal", "{\"weight_map\":{\"a\":\"model.safetensors\"}}", OkStatus()},
      {"valid/no_metadata_empty_map", "{\"weight_map\":{}}", OkStatus()},
      {"valid/odd_shard_names", "{\"weight_map\":{\"a\":\"weights_a.safetensors\",\"b\":\"..x.safetensors\"}}",
       OkStatus()},
      {"valid/unknown_top_level_key", "{\"other\":[1,{}],\"weight_map\":{\"a\":\"m.safetensors\"}}", OkStatus()},
      {"syntax/not_json", "{\"weight_map\":", InvalidArgumentError(L("index is not valid JSON at byte 14: " + tape))},
      {"syntax/utf8", "{\"weight_map\":{\"\xff\":\"a.safetensors\"}}",
       InvalidArgumentError(L("index is not valid UTF-8 at byte 16"))},
      {"syntax/too_deep", "{\"metadata\":{\"x\":" + std::string(70, '[') + std::string(70, ']') + "},\"weight_map\":{}}",
       InvalidArgumentError(L("index nests deeper than 64 levels"))},
      {"syntax/top_array", "[]", InvalidArgumentError(L("index must be a JSON object, got an array"))},
      {"weight_map/missing", "{\"metadata\":{}}", InvalidArgumentError(L("missing 'weight_map'"))},
      {"weight_map/not_object", "{\"weight_map\":[]}",
       InvalidArgumentError(L("weight_map must be an object, got an array"))},
      {"weight_map/value_number", "{\"weight_map\":{\"x\":1}}",
       InvalidArgumentError(L("tensor 'x': shard must be a string, got a number"))},
      {"weight_map/duplicate_tensor",
       "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"a.safetensors\",\"x\":\"b.safetensors\"}}",
       InvalidArgumentError(L("weight_map lists tensor 'x' twice"))},
      {"weight_map/duplicate_tensor_same_shard",
       "{\"weight_map\":{\"x\":\"a.safetensors\",\"x\":\"a.safetensors\"}}",
       InvalidArgumentError(L("weight_map lists tensor 'x' twice"))},
      {"top/duplicate_weight_map", "{\"weight_map\":{},\"weight_map\":{}}",
       InvalidArgumentError(L("duplicate key 'weight_map'"))},
      {"shard/parent", wm("\"../other/model.safetensors\""),
       bad_name("x", "'../other/model.safetensors' refers to the parent folder ('..')")},
      {"shard/absolute", wm("\"/etc/passwd\""), bad_name("x", "'/etc/passwd' is an absolute path")},
      {"shard/drive", wm("\"C:\\\\x.safetensors\""),
       bad_name("x", "'C:\\\\x.safetensors' starts with a drive letter")},
      {"shard/unc", wm("\"\\\\\\\\srv\\\\share\\\\x\""),
       bad_name("x", "'\\\\\\\\srv\\\\share\\\\x' is an absolute path")},
      {"shard/subfolder", wm("\"sub/a.safetensors\""),
       bad_name("x",
                "'sub/a.safetensors' contains a path separator; shards must be plain file names "
                "in the checkpoint folder")},
      {"shard/bin", wm("\"pytorch_model-00001-of-00002.bin\""),
       bad_name("x", "'pytorch_model-00001-of-00002.bin' does not end in .safetensors")},
      {"shard/empty", wm("\"\""), InvalidArgumentError(L("tensor 'x': shard file name is empty"))},
      {"shard/nul", wm("\"a\\u0000.safetensors\""),
       bad_name("x", "'a\\x00.safetensors' contains a NUL byte")},
      {"shard/only_suffix", wm("\".safetensors\""),
       bad_name("x", "'.safetensors' has nothing before .safetensors")},
      {"metadata/not_object", "{\"metadata\":[],\"weight_map\":{}}",
       InvalidArgumentError(L("metadata must be an object, got an array"))},
      {"metadata/null_is_absent", "{\"metadata\":null,\"weight_map\":{}}", OkStatus()},
      {"metadata/duplicate_key", "{\"metadata\":{\"k\":1,\"k\":2},\"weight_map\":{}}",
       InvalidArgumentError(L("metadata has duplicate key 'k'"))},
  };
}

TEST(IndexTest, Cases) {
  for (const IndexCase& c : IndexCases()) {
    Result<ShardIndex> r = ParseIndex(c.json, kLabel);
    EXPECT_EQ(r.status(), c.expected) << c.name << "\n  got: " << r.status().ToString();
  }
}

TEST(IndexTest, ManyTopLevelKeysAreCheckedForDuplicatesInOnePass) {
  // 200k unknown top-level keys (a hostile index within the size limit): accepted, and a
  // duplicate after them all is still found. (Checked by sorting; the quadratic scan it
  // replaces took minutes here, and a hash set could be flooded with colliding keys.)
  std::string json = "{";
  for (int i = 0; i < 200000; ++i) json += "\"k" + std::to_string(i) + "\":0,";
  std::string tail = "\"weight_map\":{\"a\":\"m.safetensors\"}}";
  Result<ShardIndex> ok = ParseIndex(json + tail, kLabel);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->weight_map.size(), 1u);
  Result<ShardIndex> dup = ParseIndex(json + "\"k7\":1," + tail, kLabel);
  EXPECT_EQ(dup.status(), InvalidArgumentError(L("duplicate key 'k7'")));
}

TEST(IndexTest, WeightMapSortedShardsDistinctAndSorted) {
  Result<ShardIndex> r = ParseIndex(
      R"({"metadata": {"total_size": 16060522496, "total_parameters": 8030261248,
                        "format": "pt", "ratio": 0.5, "nested": {"a": [1, true, null]}, "flag": false},
          "weight_map": {"z.w": "model-00002-of-00002.safetensors",
                         "a.w": "model-00001-of-00002.safetensors",
                         "m.w": "model-00002-of-00002.safetensors"}})",
      kLabel);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  using Pair = std::pair<std::string, std::string>;
  EXPECT_EQ(r->weight_map, (std::vector<Pair>{{"a.w", "model-00001-of-00002.safetensors"},
                                              {"m.w", "model-00002-of-00002.safetensors"},
                                              {"z.w", "model-00002-of-00002.safetensors"}}));
  EXPECT_EQ(r->shard_files, (std::vector<std::string>{"model-00001-of-00002.safetensors",
                                                      "model-00002-of-00002.safetensors"}));
  EXPECT_EQ(r->total_size, 16060522496u);
  EXPECT_EQ(r->metadata, (std::map<std::string, std::string>{{"total_size", "16060522496"},
                                                             {"total_parameters", "8030261248"},
                                                             {"format", "pt"},
                                                             {"ratio", "0.5"},
                                                             {"nested", R"({"a":[1,true,null]})"},
                                                             {"flag", "false"}}));
  EXPECT_EQ(r->metadata_json,
            (std::set<std::string, std::less<>>{"total_size", "total_parameters", "ratio",
                                                "nested", "flag"}));  // not "format"
  ASSERT_NE(r->ShardOf("m.w"), nullptr);
  EXPECT_EQ(*r->ShardOf("m.w"), "model-00002-of-00002.safetensors");
  EXPECT_EQ(r->ShardOf("m"), nullptr);
}

TEST(IndexTest, EmptyMetadataIsToldFromNone) {
  Result<ShardIndex> none = ParseIndex("{\"weight_map\":{}}", kLabel);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_metadata);
  Result<ShardIndex> empty = ParseIndex("{\"metadata\":{},\"weight_map\":{}}", kLabel);
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->has_metadata);
  EXPECT_TRUE(empty->metadata.empty());
}

TEST(IndexTest, TotalSizeIsAdvisory) {
  auto total = [](std::string_view value) {
    Result<ShardIndex> r =
        ParseIndex("{\"metadata\":{\"total_size\":" + std::string(value) + "},\"weight_map\":{}}", kLabel);
    EXPECT_TRUE(r.ok()) << value << ": " << r.status().ToString();
    return r.ok() ? r->total_size : std::nullopt;
  };
  EXPECT_EQ(total("0"), 0u);
  EXPECT_EQ(total("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(total("\"123\""), 123u);  // digits in a string
  EXPECT_EQ(total("-5"), std::nullopt);
  EXPECT_EQ(total("1.5e3"), std::nullopt);
  EXPECT_EQ(total("\"18446744073709551616\""), std::nullopt);  // does not fit
  EXPECT_EQ(total("\"12a\""), std::nullopt);
  EXPECT_EQ(total("null"), std::nullopt);
}

TEST(IndexTest, ShardCountLimit) {
  auto index = [](size_t shards) {
    std::string json = "{\"weight_map\":{";
    for (size_t i = 0; i < shards; ++i) {
      json += (i ? ",\"t" : "\"t") + std::to_string(i) + "\":\"s" + std::to_string(i) + ".safetensors\"";
    }
    return json + "}}";
  };
  Result<ShardIndex> at_limit = ParseIndex(index(kMaxShardCount), kLabel);
  ASSERT_TRUE(at_limit.ok()) << at_limit.status().ToString();
  EXPECT_EQ(at_limit->shard_files.size(), kMaxShardCount);
  EXPECT_EQ(ParseIndex(index(kMaxShardCount + 1), kLabel).status(),
            InvalidArgumentError(L("index names more than 10000 shard files")));
  // 100,000 distinct shards: rejected at the 10,001st.
  EXPECT_EQ(ParseIndex(index(100'000), kLabel).status(),
            InvalidArgumentError(L("index names more than 10000 shard files")));
  // The limit is a parameter (CatalogOptions::max_shards): raised, lowered.
  Result<ShardIndex> raised = ParseIndex(index(kMaxShardCount + 1), kLabel, 20'000);
  ASSERT_TRUE(raised.ok()) << raised.status().ToString();
  EXPECT_EQ(raised->shard_files.size(), kMaxShardCount + 1);
  EXPECT_EQ(ParseIndex(index(3), kLabel, 2).status(),
            InvalidArgumentError(L("index names more than 2 shard files")));
}

TEST(IndexTest, ValidateShardFileNameDirectly) {
  EXPECT_TRUE(ValidateShardFileName("model-00001-of-00003.safetensors", "i").ok());
  EXPECT_TRUE(ValidateShardFileName("model.safetensors", "i").ok());
  EXPECT_EQ(ValidateShardFileName("a\\..\\b.safetensors", "i"),
            InvalidArgumentError("i: shard file name 'a\\\\..\\\\b.safetensors' refers to the parent "
                                 "folder ('..')"));
  EXPECT_EQ(ValidateShardFileName("z:model.safetensors", "i"),
            InvalidArgumentError("i: shard file name 'z:model.safetensors' starts with a drive letter"));
  EXPECT_EQ(ValidateShardFileName("model.safetensors.bak", "i"),
            InvalidArgumentError("i: shard file name 'model.safetensors.bak' does not end in .safetensors"));
}

TEST(IndexTest, ReadIndexFile) {
  std::string dir = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  std::string path = dir + "/model.safetensors.index.json";
  std::ofstream(path) << R"({"metadata": {"total_size": 8}, "weight_map": {"w": "model.safetensors"}})";
  Result<ShardIndex> r = ReadIndexFile(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->shard_files, std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(r->total_size, 8u);

  std::ofstream(path) << R"({"weight_map": {"w": "../model.safetensors"}})";
  EXPECT_EQ(ReadIndexFile(path).status(),
            InvalidArgumentError(path + ": tensor 'w': shard file name '../model.safetensors' refers "
                                        "to the parent folder ('..')"));
  EXPECT_EQ(ReadIndexFile(dir + "/missing.index.json").status(),
            NotFoundError(dir + "/missing.index.json: No such file or directory"));
  EXPECT_EQ(ReadIndexFile(dir).status(), InvalidArgumentError(dir + ": not a regular file"));
  std::string fifo = dir + "/index_fifo.json";
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(ReadIndexFile(fifo).status(), InvalidArgumentError(fifo + ": not a regular file"));
}

}  // namespace
}  // namespace shardload
