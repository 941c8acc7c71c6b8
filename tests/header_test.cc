// tests/header_test.cc — format/header.h: one test per validation rule, the parse
// options, the returned structure, ReadHeaderFile, and a property test over random
// valid files serialized by hand (random dtypes, shapes, names, key order, whitespace).
#include "format/header.h"

#include <gtest/gtest.h>
#include <xxhash.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace shardload {
namespace {

std::string Le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

std::string File(std::string_view json, uint64_t data = 0) {
  return Le64(json.size()) + std::string(json) + std::string(data, '\0');
}

std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

Result<Header> Parse(const std::string& json, uint64_t data = 0, const ParseOptions& options = {}) {
  std::string file = File(json, data);
  return ParseBuffer(Bytes(file), "m.safetensors", options);
}

void ExpectError(const Result<Header>& h, StatusCode code, const std::string& message) {
  ASSERT_FALSE(h.ok()) << "expected: " << message;
  EXPECT_EQ(h.status().code(), code) << h.status().ToString();
  EXPECT_EQ(h.status().message(), "m.safetensors: " + message);
}

std::string Entry(std::string_view name, std::string_view dtype, std::string_view shape,
                  uint64_t begin, uint64_t end) {
  return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) +
         "\",\"shape\":" + std::string(shape) + ",\"data_offsets\":[" + std::to_string(begin) +
         "," + std::to_string(end) + "]}";
}

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// ---------------------------------------------------------------- framing

TEST(HeaderLengthTest, LimitIsInclusive) {
  std::string prefix = Le64(kMaxHeaderLength);
  Result<uint64_t> n = ParseHeaderLength(Bytes(prefix), 8 + kMaxHeaderLength, "m.safetensors");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, kMaxHeaderLength);

  prefix = Le64(kMaxHeaderLength + 1);
  n = ParseHeaderLength(Bytes(prefix), 16 + kMaxHeaderLength, "m.safetensors");
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status(), InvalidArgumentError(
                            "m.safetensors: header length 100000001 exceeds the limit of "
                            "100000000 bytes"));
}

TEST(HeaderLengthTest, MustFitInTheFile) {
  std::string prefix = Le64(60);
  EXPECT_EQ(*ParseHeaderLength(Bytes(prefix), 68, "m"), 60u);
  Result<uint64_t> n = ParseHeaderLength(Bytes(prefix), 67, "m");
  EXPECT_EQ(n.status(), DataLossError("m: header length 60 runs past the end of the file (67 bytes)"));
}

TEST(HeaderLengthTest, TooSmallFileAndShortPrefix) {
  std::string prefix = Le64(2);
  EXPECT_EQ(ParseHeaderLength(Bytes(prefix).first(1), 1, "m").status(),
            DataLossError("m: file is 1 byte, too small for the 8-byte header length"));
  EXPECT_EQ(ParseHeaderLength(Bytes(prefix).first(4), 100, "m").status(),
            InvalidArgumentError("m: ParseHeaderLength needs the first 8 bytes of the file, got 4"));
}

TEST(HeaderTest, ParseHeaderChecksLengthAndFileSizeItself) {
  std::string big(kMaxHeaderLength + 1, ' ');
  EXPECT_EQ(ParseHeader(big, 1ull << 40, "m").status(),
            InvalidArgumentError("m: header length 100000001 exceeds the limit of 100000000 bytes"));
  EXPECT_EQ(ParseHeader("{}", 9, "m").status(),
            DataLossError("m: header length 2 runs past the end of the file (9 bytes)"));
}

// ---------------------------------------------------------------- JSON

TEST(HeaderTest, RejectsInvalidUtf8) {
  ExpectError(Parse("{\"\xc0\xaf\":{}}"), StatusCode::kInvalidArgument,
              "header is not valid UTF-8 at header byte 2 (file offset 10)");
  ExpectError(Parse("{\"ok\":{},\"a\xe2\x82\xac\xed\xa0\x80\":{}}"), StatusCode::kInvalidArgument,
              "header is not valid UTF-8 at header byte 14 (file offset 22)");
}

TEST(HeaderTest, RejectsLoneSurrogateEscapes) {
  ExpectError(Parse("{\"\\udfff\":{}}"), StatusCode::kInvalidArgument,
              "header is not valid JSON at header byte 2 (file offset 10): Problem while parsing "
              "a string");
}

TEST(HeaderTest, WhitespaceAroundTheObjectOnly) {
  Result<Header> h = Parse(" \t\r\n{" + Entry("a", "U8", "[1]", 0, 1) + "}\n\t\r ", 1);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->tensors.size(), 1u);
  ExpectError(Parse("{} ;"), StatusCode::kInvalidArgument,
              "header is not valid JSON at header byte 3 (file offset 11): The JSON document has "
              "an improper structure: missing or superfluous commas, braces, missing keys, etc.");
}

TEST(HeaderTest, TopLevelMustBeAnObject) {
  ExpectError(Parse("[1]"), StatusCode::kInvalidArgument, "header must be a JSON object, got an array");
}

TEST(HeaderTest, NegativeZeroIsRejectedButNotInStringsOrExponents) {
  std::string json = "{" + Entry("a", "U8", "[1]", 0, 1) + "}";
  json.insert(json.find("[0,1]") + 1, "-");  // data_offsets [-0,1]
  ExpectError(Parse(json, 1), StatusCode::kInvalidArgument,
              "header has the number -0 at header byte " + std::to_string(json.find("-0")) +
                  "; shape and data_offsets entries must be non-negative integers");
  // "-0" inside strings (with escapes before it) and in float exponents is fine.
  Result<Header> h = Parse("{\"__metadata__\":{\"q\\\"-0\":\"\\\\-0\"},\"b-0\":{\"dtype\":\"U8\","
                           "\"shape\":[1],\"x\":[1e-0,-0.5],\"data_offsets\":[0,1]}}",
                           1);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->metadata.at("q\"-0"), "\\-0");
  // In shape too (after other entries and spaces), and with the reference: -0 in a
  // field it ignores is a float it ignores (accepted), as is -0 nested deeper.
  std::string shape = "{" + Entry("a", "U8", "[1, -0]", 0, 0) + "}";
  ExpectError(Parse(shape, 0), StatusCode::kInvalidArgument,
              "header has the number -0 at header byte " + std::to_string(shape.find("-0")) +
                  "; shape and data_offsets entries must be non-negative integers");
  for (const char* ignored : {"\"x\":-0", "\"y\":[-0]", "\"z\":{\"shape\":[[-0]]}",
                              "\"z\":{\"shape\":[-0]}", "\"z\":{\"data_offsets\":[1, -0]}",
                              "\"my\\\"shape\": [-0]", "\"myshape\":[-0]"}) {
    h = Parse(std::string("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],") + ignored +
                  ",\"data_offsets\":[0,1]}}",
              1);
    ASSERT_TRUE(h.ok()) << ignored << ": " << h.status().ToString();
  }
  // Keys are compared after unescaping, as the reference reads them.
  for (const char* key : {"\\u0073hape", "sh\\u0061pe", "\\u0064ata_offsets"}) {
    const bool offsets = std::string(key).find("offsets") != std::string::npos;
    const std::string escaped =
        offsets ? std::string("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"") + key + "\":[0,-0]}}"
                : std::string("{\"a\":{\"dtype\":\"U8\",\"") + key +
                      "\":[1,-0],\"data_offsets\":[0,0]}}";
    ExpectError(Parse(escaped, 0), StatusCode::kInvalidArgument,
                "header has the number -0 at header byte " + std::to_string(escaped.find("-0")) +
                    "; shape and data_offsets entries must be non-negative integers");
  }
  // Many -0s in an ignored array are classified in one pass (a walk back from each
  // one used to make this quadratic: minutes for a few hundred KiB).
  std::string many = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[-0";
  for (int i = 1; i < 300000; ++i) many += ",-0";
  many += "]}}";
  h = Parse(many, 1);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  // In __metadata__ a number is a type error, as in the reference.
  ExpectError(Parse("{\"__metadata__\":{\"k\":-0}}"), StatusCode::kInvalidArgument,
              "__metadata__ key 'k' must map to a string, got a number");
}

// ---------------------------------------------------------------- options

TEST(ParseOptionsTest, MaxDepthBoundary) {
  // The top-level object is depth 1; "x" adds arrays below the entry (depth 2).
  auto nested = [](int arrays) {
    return "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":" +
           std::string(arrays, '[') + "0" + std::string(arrays, ']') + "}}";
  };
  ParseOptions options;
  options.max_depth = 10;
  EXPECT_TRUE(Parse(nested(8), 1, options).ok());
  ExpectError(Parse(nested(9), 1, options), StatusCode::kInvalidArgument,
              "header nests deeper than 10 levels");
  // The per-thread parser is reused: a smaller depth afterwards still applies.
  options.max_depth = 3;
  EXPECT_TRUE(Parse(nested(1), 1, options).ok());  // as deep as "shape": [1]
  ExpectError(Parse(nested(2), 1, options), StatusCode::kInvalidArgument,
              "header nests deeper than 3 levels");
}

TEST(ParseOptionsTest, InvalidMaxDepthIsAnError) {
  for (int depth : {2, 0, -1, 10001}) {
    ParseOptions options;
    options.max_depth = depth;
    Result<Header> h = Parse("{}", 0, options);
    EXPECT_EQ(h.status(), InvalidArgumentError("ParseOptions.max_depth must be in [3, 10000], got " +
                                               std::to_string(depth)));
  }
}

TEST(ParseOptionsTest, RejectUnknownFields) {
  std::string json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"foo\":1}}";
  EXPECT_TRUE(Parse(json, 1).ok());
  ParseOptions strict;
  strict.reject_unknown_fields = true;
  ExpectError(Parse(json, 1, strict), StatusCode::kInvalidArgument, "tensor 'a': unknown field 'foo'");
  // __metadata__ is not a tensor entry: never an unknown field.
  EXPECT_TRUE(Parse("{\"__metadata__\":{\"k\":\"v\"}}", 0, strict).ok());
}

// ---------------------------------------------------------------- schema, shape, offsets

TEST(HeaderTest, MissingFieldsAreNamed) {
  ExpectError(Parse("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1),
              StatusCode::kInvalidArgument, "tensor 'a': missing field 'shape'");
}

TEST(HeaderTest, DuplicateFieldInAnEntry) {
  ExpectError(Parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
              StatusCode::kInvalidArgument, "tensor 'a': duplicate field 'shape'");
}

TEST(HeaderTest, DtypeNamesAreExact) {
  ExpectError(Parse("{" + Entry("a", "bf16", "[1]", 0, 2) + "}", 2), StatusCode::kInvalidArgument,
              "tensor 'a': unknown dtype 'bf16'");
  // After valid entries (whose dtype the parser remembers): still exact, "" included.
  const std::string ok = Entry("a", "BF16", "[1]", 0, 2) + "," + Entry("b", "BF16", "[1]", 2, 4);
  ExpectError(Parse("{" + ok + "," + Entry("c", "BF16 ", "[1]", 4, 6) + "}", 6),
              StatusCode::kInvalidArgument, "tensor 'c': unknown dtype 'BF16 '");
  ExpectError(Parse("{" + ok + "," + Entry("c", "", "[1]", 4, 6) + "}", 6),
              StatusCode::kInvalidArgument, "tensor 'c': unknown dtype ''");
  Result<Header> h = Parse("{" + ok + "," + Entry("c", "F16", "[1]", 4, 6) + "," +
                           Entry("d", "BF16", "[1]", 6, 8) + "}", 8);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->Find("b")->dtype, Dtype::kBF16);
  EXPECT_EQ(h->Find("c")->dtype, Dtype::kF16);
  EXPECT_EQ(h->Find("d")->dtype, Dtype::kBF16);
}

TEST(HeaderTest, ShapeEntriesAreUnsignedIntegers) {
  ExpectError(Parse("{" + Entry("a", "U8", "[3,-2]", 0, 1) + "}", 1), StatusCode::kInvalidArgument,
              "tensor 'a': shape[1] must be a non-negative integer, got -2");
  ExpectError(Parse("{" + Entry("a", "U8", "[true]", 0, 1) + "}", 1), StatusCode::kInvalidArgument,
              "tensor 'a': shape[0] must be a non-negative integer, got a boolean");
  // The largest u64 is an integer (and then overflows the byte size).
  ExpectError(Parse("{" + Entry("a", "U16", "[18446744073709551615]", 0, 1) + "}", 1),
              StatusCode::kOutOfRange,
              "tensor 'a': overflow computing byte size of U16[18446744073709551615]");
}

TEST(HeaderTest, OverflowIsOutOfRange) {
  ExpectError(Parse("{" + Entry("a", "U8", "[4294967296,4294967296,0]", 0, 0) + "}"),
              StatusCode::kOutOfRange,
              "tensor 'a': overflow computing element count of shape [4294967296, 4294967296, 0]");
}

TEST(HeaderTest, SubByteDtypesEndOnAByteBoundary) {
  EXPECT_TRUE(Parse("{" + Entry("a", "F4", "[2,3]", 0, 3) + "}", 3).ok());
  ExpectError(Parse("{" + Entry("a", "F6_E2M3", "[6]", 0, 5) + "}", 5), StatusCode::kInvalidArgument,
              "tensor 'a': F6_E2M3[6] is 36 bits, which does not end on a byte boundary");
}

TEST(HeaderTest, ByteRangeMustEqualShapeTimesDtype) {
  ExpectError(Parse("{" + Entry("w", "F32", "[3]", 0, 8) + "}", 8), StatusCode::kInvalidArgument,
              "tensor 'w': data_offsets [0, 8) do not match F32[3] (12 bytes)");
  ExpectError(Parse("{" + Entry("w", "U8", "[]", 0, 2) + "}", 2), StatusCode::kInvalidArgument,
              "tensor 'w': data_offsets [0, 2) do not match U8[] (1 byte)");
}

TEST(HeaderTest, EndBeforeBegin) {
  ExpectError(Parse("{" + Entry("w", "U8", "[0]", 5, 4) + "}", 5), StatusCode::kInvalidArgument,
              "tensor 'w': data_offsets [5, 4) end before they begin");
}

TEST(HeaderTest, TensorsTileTheDataSection) {
  ExpectError(Parse("{" + Entry("a", "U8", "[4]", 0, 4) + "," + Entry("b", "U8", "[4]", 8, 12) + "}", 12),
              StatusCode::kInvalidArgument, "tensor 'b': data_offsets [8, 12) leave a gap after byte 4");
  ExpectError(Parse("{" + Entry("a", "U8", "[4]", 0, 4) + "," + Entry("b", "U8", "[4]", 2, 6) + "}", 6),
              StatusCode::kInvalidArgument,
              "tensor 'b': data_offsets [2, 6) overlap tensor 'a' at [0, 4)");
}

TEST(HeaderTest, ZeroSizeTensorsOnlyAtTheRunningEnd) {
  Result<Header> h = Parse("{" + Entry("z2", "U8", "[0]", 4, 4) + "," + Entry("a", "U8", "[4]", 0, 4) +
                               "," + Entry("z1", "U8", "[0]", 0, 0) + "," +
                               Entry("z0", "U8", "[0]", 4, 4) + "}",
                           4);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  std::vector<std::string> order;
  for (const TensorInfo& t : h->tensors) order.push_back(t.name);
  EXPECT_EQ(order, (std::vector<std::string>{"z1", "a", "z0", "z2"}));
  ExpectError(Parse("{" + Entry("a", "U8", "[4]", 0, 4) + "," + Entry("z", "U8", "[0]", 3, 3) + "}", 4),
              StatusCode::kInvalidArgument, "tensor 'z': data_offsets [3, 3) overlap tensor 'a' at [0, 4)");
}

TEST(HeaderTest, DataEndsExactlyAtEndOfFile) {
  std::string json = "{" + Entry("a", "U8", "[4]", 0, 4) + "}";
  uint64_t end = 8 + json.size() + 4;
  ExpectError(Parse(json, 5), StatusCode::kInvalidArgument,
              "data section ends at byte " + std::to_string(end) + " but the file has " +
                  std::to_string(end + 1) + " bytes");
  ExpectError(Parse(json, 3), StatusCode::kDataLoss,
              "data section ends at byte " + std::to_string(end) + " but the file is truncated at " +
                  std::to_string(end - 1) + " bytes; tensor 'a' at file bytes [" +
                  std::to_string(end - 4) + ", " + std::to_string(end) + ") is the first cut off");
}

// A truncated file's error names the first tensor the end cuts into, in file order
// (not header order), also when the cut falls between tensors.
TEST(HeaderTest, TruncationNamesTheFirstTensorCutOff) {
  std::string json = "{" + Entry("z", "U8", "[4]", 0, 4) + "," + Entry("b", "U8", "[4]", 4, 8) +
                     "," + Entry("a", "U8", "[4]", 8, 12) + "}";
  uint64_t start = 8 + json.size();
  ExpectError(Parse(json, 6), StatusCode::kDataLoss,
              "data section ends at byte " + std::to_string(start + 12) +
                  " but the file is truncated at " + std::to_string(start + 6) +
                  " bytes; tensor 'b' at file bytes [" + std::to_string(start + 4) + ", " +
                  std::to_string(start + 8) + ") is the first cut off");
  ExpectError(Parse(json, 8), StatusCode::kDataLoss,
              "data section ends at byte " + std::to_string(start + 12) +
                  " but the file is truncated at " + std::to_string(start + 8) +
                  " bytes; tensor 'a' at file bytes [" + std::to_string(start + 8) + ", " +
                  std::to_string(start + 12) + ") is the first cut off");
}

TEST(HeaderTest, DuplicateTensorNamesHaveTheirOwnError) {
  ExpectError(Parse("{" + Entry("a", "U8", "[4]", 0, 4) + "," + Entry("a", "U8", "[4]", 4, 8) + "}", 8),
              StatusCode::kInvalidArgument, "duplicate tensor name 'a'");
  // Also when the first of them is invalid (the reference would keep the valid last
  // one): the duplicate is the fault reported, whatever the entry's own error.
  ExpectError(Parse("{" + Entry("a", "U8", "[1]", 0, 2) + "," + Entry("a", "U8", "[1]", 0, 1) + "}", 1),
              StatusCode::kInvalidArgument, "duplicate tensor name 'a'");
  ExpectError(Parse("{" + Entry("a", "U8", "[4294967296, 4294967296]", 0, 1) + "," +
                    Entry("a", "U8", "[1]", 0, 1) + "}", 1),
              StatusCode::kInvalidArgument, "duplicate tensor name 'a'");
  // A single invalid entry keeps its own error.
  ExpectError(Parse("{" + Entry("a", "U8", "[1]", 0, 2) + "}", 2), StatusCode::kInvalidArgument,
              "tensor 'a': data_offsets [0, 2) do not match U8[1] (1 byte)");
}

TEST(HeaderTest, MetadataRules) {
  Result<Header> h = Parse("{\"__metadata__\":{\"format\":\"pt\",\"\":\"\\u00e9\"}}");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"", "\xc3\xa9"}}));
  EXPECT_TRUE(h->has_metadata);
  ExpectError(Parse("{\"__metadata__\":{\"n\":true}}"), StatusCode::kInvalidArgument,
              "__metadata__ key 'n' must map to a string, got a boolean");
  ExpectError(Parse("{\"__metadata__\":\"pt\"}"), StatusCode::kInvalidArgument,
              "__metadata__ must be an object of strings, got a string");
  ExpectError(Parse("{\"__metadata__\":{\"k\":\"1\",\"k\":\"1\"}}"), StatusCode::kInvalidArgument,
              "__metadata__ has duplicate key 'k'");
}

TEST(HeaderTest, EmptyMetadataIsToldFromNone) {
  // safetensors: `{}` is an (empty) metadata map, absent and `null` are none.
  for (const auto& [json, has] : std::vector<std::pair<std::string, bool>>{
           {"{}", false},
           {"{\"__metadata__\":null}", false},
           {"{\"__metadata__\":{}}", true},
           {"{\"__metadata__\":{\"k\":\"v\"}}", true}}) {
    Result<Header> h = Parse(json);
    ASSERT_TRUE(h.ok()) << json << ": " << h.status().ToString();
    EXPECT_EQ(h->has_metadata, has) << json;
    EXPECT_EQ(h->metadata.empty(), json.find("\"k\"") == std::string::npos) << json;
  }
}

// ---------------------------------------------------------------- result structure

TEST(HeaderTest, ReturnsOffsetOrderIndexAndFrame) {
  std::string json = "{\"__metadata__\":{\"format\":\"pt\"}," + Entry("b", "F16", "[2,3]", 8, 20) +
                     "," + Entry(std::string("n\\u0000ul"), "I64", "[1]", 0, 8) + "}";
  Result<Header> h = Parse(json, 20);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->header_length, json.size());
  EXPECT_EQ(h->data_start, 8 + json.size());
  EXPECT_EQ(h->data_size, 20u);
  ASSERT_EQ(h->tensors.size(), 2u);
  const std::string nul_name("n\0ul", 4);
  EXPECT_EQ(h->tensors[0], (TensorInfo{nul_name, Dtype::kI64, {1}, 0, 8}));
  EXPECT_EQ(h->tensors[1], (TensorInfo{"b", Dtype::kF16, {2, 3}, 8, 20}));
  EXPECT_EQ(h->by_name.Lookup(nul_name, h->tensors), 0u);
  EXPECT_EQ(h->Find("b"), &h->tensors[1]);
  EXPECT_EQ(h->Find(nul_name)->size(), 8u);
  EXPECT_EQ(h->Find("n"), nullptr);  // the NUL is part of the name, not its end
  EXPECT_EQ(h->metadata.at("format"), "pt");
}

TEST(NameIndexTest, NamesAreHashedWithAProcessSeed) {
  // Unseeded XXH3 would let a file choose names that share a slot; the seed (random,
  // once per process) is applied and stable within the process.
  for (std::string_view name : {"", "w", "model.layers.0.mlp.down_proj.weight"}) {
    EXPECT_NE(NameHash(name), XXH3_64bits(name.data(), name.size())) << name;
    EXPECT_EQ(NameHash(name), NameHash(std::string(name))) << name;
  }
}

TEST(NameIndexTest, LookupFindsEveryNameAndNothingElse) {
  NameIndex empty;  // never built: every lookup misses
  std::vector<TensorInfo> tensors;
  EXPECT_EQ(empty.Lookup("w", tensors), NameIndex::kNotFound);
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.Build(tensors), NameIndex::kNotFound);
  EXPECT_EQ(empty.Lookup("", tensors), NameIndex::kNotFound);
  // Enough names to fill many probe chains; prefixes, NUL bytes and the empty name.
  for (int i = 0; i < 5000; ++i) tensors.push_back({"layer." + std::to_string(i)});
  tensors.push_back({std::string("layer.1\0", 8)});
  tensors.push_back({""});
  NameIndex index;
  ASSERT_EQ(index.Build(tensors), NameIndex::kNotFound);
  EXPECT_EQ(index.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_EQ(index.Lookup(tensors[i].name, tensors), i);
  EXPECT_EQ(index.Lookup("layer.", tensors), NameIndex::kNotFound);
  EXPECT_EQ(index.Lookup("layer.5000", tensors), NameIndex::kNotFound);
  EXPECT_EQ(index.Lookup(std::string("layer.2\0", 8), tensors), NameIndex::kNotFound);
  // A repeated name: Build reports the position of the second occurrence.
  tensors.push_back({"layer.17"});
  EXPECT_EQ(index.Build(tensors), tensors.size() - 1);
  tensors.pop_back();
  ASSERT_EQ(index.Build(tensors), NameIndex::kNotFound);  // rebuilt from scratch
  EXPECT_EQ(index.size(), tensors.size());
}

TEST(NameIndexTest, BuildWithHashesMatchesBuild) {
  std::vector<TensorInfo> tensors;
  for (int i = 0; i < 300; ++i) tensors.push_back({"w" + std::to_string(i)});
  tensors.push_back({""});
  std::vector<uint64_t> hashes;
  for (const TensorInfo& t : tensors) hashes.push_back(NameHash(t.name));
  NameIndex index;
  ASSERT_EQ(index.Build(tensors, hashes), NameIndex::kNotFound);
  EXPECT_EQ(index.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_EQ(index.Lookup(tensors[i].name, tensors), i);
  EXPECT_EQ(index.Lookup("w300", tensors), NameIndex::kNotFound);
  // A repeated name: the position of the second occurrence, as Build(tensors) gives.
  tensors.push_back({"w17"});
  hashes.push_back(NameHash("w17"));
  EXPECT_EQ(index.Build(tensors, hashes), tensors.size() - 1);
  EXPECT_EQ(index.Build(tensors), tensors.size() - 1);
  // Hashes of the wrong count are ignored: the names are hashed.
  tensors.pop_back();
  ASSERT_EQ(index.Build(tensors, std::span<const uint64_t>(hashes).first(3)), NameIndex::kNotFound);
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_EQ(index.Lookup(tensors[i].name, tensors), i);
}

TEST(HeaderTest, ConcurrentParsesOnTwoThreads) {
  auto make = [](int count) {
    std::string json = "{";
    for (int i = 0; i < count; ++i) {
      json += (i ? "," : "") + Entry("t" + std::to_string(i), "F32", "[2]", i * 8ull, (i + 1) * 8ull);
    }
    return File(json + "}", count * 8ull);
  };
  std::string small = make(10), large = make(5000);
  bool ok_small = true, ok_large = true;
  std::thread other([&] {
    for (int i = 0; i < 20; ++i) {
      Result<Header> h = ParseBuffer(Bytes(large), "l");
      ok_large = ok_large && h.ok() && h->tensors.size() == 5000;
    }
  });
  for (int i = 0; i < 200; ++i) {
    Result<Header> h = ParseBuffer(Bytes(small), "s");
    ok_small = ok_small && h.ok() && h->tensors.size() == 10;
  }
  other.join();
  EXPECT_TRUE(ok_small);
  EXPECT_TRUE(ok_large);
}

// ---------------------------------------------------------------- ReadHeaderFile

TEST(ReadHeaderFileTest, ReadsAValidFile) {
  std::string json = "{" + Entry("a", "BF16", "[2]", 0, 4) + "}";
  std::string path = TempDir() + "/read_valid.safetensors";
  std::ofstream(path, std::ios::binary) << File(json, 4);
  Result<Header> h = ReadHeaderFile(path);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->tensors, (std::vector<TensorInfo>{{"a", Dtype::kBF16, {2}, 0, 4}}));
}

TEST(ReadHeaderFileTest, ErrorsNameThePath) {
  std::string missing = TempDir() + "/does_not_exist.safetensors";
  EXPECT_EQ(ReadHeaderFile(missing).status(),
            NotFoundError(missing + ": No such file or directory"));
  EXPECT_EQ(ReadHeaderFile(TempDir()).status(), InvalidArgumentError(TempDir() + ": not a regular file"));
  std::string fifo = TempDir() + "/read_fifo.safetensors";
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(ReadHeaderFile(fifo).status(), InvalidArgumentError(fifo + ": not a regular file"));
  std::string truncated = TempDir() + "/read_truncated.safetensors";
  std::ofstream(truncated, std::ios::binary) << Le64(1000) << "{}";
  EXPECT_EQ(ReadHeaderFile(truncated).status(),
            DataLossError(truncated + ": header length 1000 runs past the end of the file (10 bytes)"));
  std::string empty = TempDir() + "/read_empty.safetensors";
  std::ofstream(empty, std::ios::binary) << "";
  EXPECT_EQ(ReadHeaderFile(empty).status(),
            DataLossError(empty + ": file is 0 bytes, too small for the 8-byte header length"));
}

// ---------------------------------------------------------------- property test

// RandomValidFile: a random valid file written by hand, with what it must parse to.
struct Generated {
  std::string file;
  std::vector<TensorInfo> tensors;  // in expected (offset, end, name) order
  std::map<std::string, std::string> metadata;
};

class RandomWriter {
 public:
  explicit RandomWriter(uint32_t seed) : rng_(seed) {}

  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  std::string Ws() {
    static const char kWs[] = " \t\n\r";
    std::string s;
    int n = Int(0, 3) == 0 ? Int(1, 3) : 0;
    for (int i = 0; i < n; ++i) s += kWs[Int(0, 3)];
    return s;
  }

  // A random name (bytes) and its JSON spelling, with random escaping.
  std::pair<std::string, std::string> Name() {
    static const std::vector<std::string> kPieces = {
        "model", ".", "layers", "_", "0", "17", "weight", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
        "\"", "\\", "\n", std::string(1, '\0'), "/", " ", "-0", "x"};
    std::string raw, json = "\"";
    int pieces = Int(0, 6);
    for (int i = 0; i < pieces; ++i) {
      const std::string& p = kPieces[Int(0, kPieces.size() - 1)];
      raw += p;
      if (p == "\"") json += "\\\"";
      else if (p == "\\") json += Int(0, 1) ? "\\\\" : "\\u005c";
      else if (p == "\n") json += Int(0, 1) ? "\\n" : "\\u000a";
      else if (p.size() == 1 && p[0] == '\0') json += "\\u0000";
      else if (p == "/") json += Int(0, 1) ? "/" : "\\/";
      else if (p == "\xc3\xa9" && Int(0, 1)) json += "\\u00e9";
      else if (p == "\xf0\x9f\x98\x80" && Int(0, 1)) json += "\\ud83d\\ude00";
      else json += p;
    }
    json += "\"";
    return {raw, json};
  }

  Generated Make() {
    Generated g;
    int count = Int(0, 12);
    std::vector<std::string> entries;
    std::set<std::string> used;
    uint64_t offset = 0;
    for (int i = 0; i < count; ++i) {
      auto [raw, json_name] = Name();
      raw += "#" + std::to_string(i);  // unique
      json_name.insert(json_name.size() - 1, "#" + std::to_string(i));
      TensorInfo t;
      t.name = raw;
      uint64_t bytes = 0;
      for (;;) {
        t.dtype = static_cast<Dtype>(Int(0, kDtypeCount - 1));
        t.shape.clear();
        int rank = Int(0, 4);
        for (int d = 0; d < rank; ++d) t.shape.push_back(Int(0, 9) == 0 ? 0 : Int(1, 8));
        Result<uint64_t> b = TensorByteSize(t.dtype, t.shape);
        if (b.ok()) {
          bytes = *b;
          break;
        }
      }
      t.begin = offset;
      t.end = offset + bytes;
      offset = t.end;
      g.tensors.push_back(t);
      // Fields in random order, maybe an ignored extra one.
      std::vector<std::string> fields = {
          "\"dtype\"" + Ws() + ":" + Ws() + "\"" + std::string(DtypeName(t.dtype)) + "\"",
          "\"shape\"" + Ws() + ":" + Ws() + ShapeJson(t.shape),
          "\"data_offsets\"" + Ws() + ":" + Ws() + "[" + Ws() + std::to_string(t.begin) + Ws() + "," +
              Ws() + std::to_string(t.end) + Ws() + "]"};
      if (Int(0, 4) == 0) fields.push_back("\"extra\":{\"k\":[1,-2.5e3,null,true,\"s\"]}");
      std::shuffle(fields.begin(), fields.end(), rng_);
      std::string entry = Ws() + json_name + Ws() + ":" + Ws() + "{";
      for (size_t f = 0; f < fields.size(); ++f) entry += (f ? "," : "") + Ws() + fields[f] + Ws();
      entries.push_back(entry + "}" + Ws());
    }
    if (Int(0, 2) != 0) {
      std::string md = "\"__metadata__\"" + Ws() + ":" + Ws() + "{";
      int n = Int(0, 3);
      for (int i = 0; i < n; ++i) {
        auto [key, key_json] = Name();
        auto [value, value_json] = Name();
        key += "@" + std::to_string(i);
        key_json.insert(key_json.size() - 1, "@" + std::to_string(i));
        g.metadata[key] = value;
        md += (i ? "," : "") + Ws() + key_json + Ws() + ":" + Ws() + value_json + Ws();
      }
      entries.push_back(md + "}");
    }
    std::shuffle(entries.begin(), entries.end(), rng_);
    std::string json = Ws() + "{";
    for (size_t i = 0; i < entries.size(); ++i) json += (i ? "," : "") + entries[i];
    json += "}" + Ws();
    if (Int(0, 1)) json.append(Int(0, 7), ' ');  // writer-style padding
    std::sort(g.tensors.begin(), g.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    g.file = File(json, offset);
    return g;
  }

 private:
  std::string ShapeJson(std::span<const uint64_t> shape) {
    std::string s = "[" + Ws();
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + Ws() + std::to_string(shape[i]) + Ws();
    return s + "]";
  }

  std::mt19937 rng_;
};

TEST(HeaderPropertyTest, RandomValidFilesParseToWhatWasWritten) {
  for (uint32_t seed = 1; seed <= 500; ++seed) {
    Generated g = RandomWriter(seed).Make();
    Result<Header> h = ParseBuffer(Bytes(g.file), "random.safetensors");
    ASSERT_TRUE(h.ok()) << "seed " << seed << ": " << h.status().ToString();
    ASSERT_EQ(h->tensors, g.tensors) << "seed " << seed;
    ASSERT_EQ(h->metadata, g.metadata) << "seed " << seed;
    ASSERT_EQ(h->by_name.size(), g.tensors.size()) << "seed " << seed;
    for (const TensorInfo& t : g.tensors) ASSERT_EQ(h->Find(t.name)->name, t.name) << "seed " << seed;
    ASSERT_EQ(h->data_start + h->data_size, g.file.size()) << "seed " << seed;
  }
}

TEST(HeaderPropertyTest, EveryTruncationOfAValidFileIsAnError) {
  Generated g;
  for (uint32_t seed = 1000; g.tensors.size() < 3; ++seed) g = RandomWriter(seed).Make();
  for (size_t n = 0; n < g.file.size(); ++n) {
    std::string cut = g.file.substr(0, n);
    Result<Header> h = ParseBuffer(Bytes(cut), "cut");
    ASSERT_FALSE(h.ok()) << "truncation to " << n << " bytes parsed";
    EXPECT_TRUE(h.status().code() == StatusCode::kDataLoss ||
                h.status().code() == StatusCode::kInvalidArgument)
        << h.status().ToString();
  }
}

}  // namespace
}  // namespace shardload
