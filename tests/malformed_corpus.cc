// tests/malformed_corpus.cc — the cases of MalformedCorpus(). Expected messages are
// spelled out in full; the JSON-syntax ones carry simdjson 3.0.1's error text.
#include "tests/malformed_corpus.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace shardload::testing {
namespace {

// simdjson 3.0.1's texts for the syntax errors the corpus triggers.
constexpr std::string_view kTapeError =
    "The JSON document has an improper structure: missing or superfluous commas, braces, "
    "missing keys, etc.";
constexpr std::string_view kNumberError = "Problem while parsing a number";
constexpr std::string_view kStringError = "Problem while parsing a string";
constexpr std::string_view kUnescapedError =
    "Within strings, some characters must be escaped, we found unescaped characters";
constexpr std::string_view kEmptyError = "Empty: no JSON found";

std::string Le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// File: the 8-byte length of `json`, `json`, then `data` zero bytes.
std::string File(std::string_view json, uint64_t data = 0) {
  std::string s = Le64(json.size());
  s.append(json);
  s.append(data, '\0');
  return s;
}

// T: one tensor entry (without braces around the whole header).
std::string T(std::string_view name, std::string_view dtype, std::string_view shape,
              uint64_t begin, uint64_t end) {
  return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) + "\",\"shape\":" +
         std::string(shape) + ",\"data_offsets\":[" + std::to_string(begin) + "," +
         std::to_string(end) + "]}";
}

std::string L(std::string_view message) {
  return std::string(kCorpusLabel) + ": " + std::string(message);
}
Status Invalid(std::string_view m) { return InvalidArgumentError(L(m)); }
Status Loss(std::string_view m) { return DataLossError(L(m)); }
Status Range(std::string_view m) { return OutOfRangeError(L(m)); }
// Json: simdjson's description of a syntax error found at header byte `at`.
Status Json(std::string_view simdjson_text, uint64_t at) {
  return Invalid("header is not valid JSON at header byte " + std::to_string(at) +
                 " (file offset " + std::to_string(8 + at) + "): " + std::string(simdjson_text));
}

// WideName: realistic MoE tensor names.
std::string WideName(uint64_t i) {
  static const char* const kProj[] = {"gate_proj.weight", "up_proj.weight", "down_proj.weight"};
  return "model.layers." + std::to_string(i / 192) + ".mlp.experts." +
         std::to_string((i / 3) % 64) + "." + kProj[i % 3];
}

class Builder {
 public:
  void Valid(std::string name, std::string bytes, size_t tensors, bool large = false) {
    cases_.push_back({std::move(name), std::move(bytes), OkStatus(), tensors, large});
  }
  void Bad(std::string name, std::string bytes, Status expected, bool large = false) {
    cases_.push_back({std::move(name), std::move(bytes), std::move(expected), 0, large});
  }
  std::vector<CorpusCase> Take() { return std::move(cases_); }

 private:
  std::vector<CorpusCase> cases_;
};

void AddFraming(Builder& b) {
  b.Bad("framing/empty_file", "", Loss("file is 0 bytes, too small for the 8-byte header length"));
  b.Bad("framing/seven_bytes", std::string(7, '\0'),
        Loss("file is 7 bytes, too small for the 8-byte header length"));
  b.Bad("framing/length_zero", Le64(0), Json(kEmptyError, 0));
  b.Bad("framing/length_60_nothing_after", Le64(60),
        Loss("header length 60 runs past the end of the file (8 bytes)"));
  b.Bad("framing/one_byte_short", Le64(3) + "{}", Loss("header length 3 runs past the end of the file (10 bytes)"));
  b.Bad("framing/over_limit", Le64(100'000'001) + "{}",
        Invalid("header length 100000001 exceeds the limit of 100000000 bytes"));
  b.Bad("framing/all_ones", std::string(8, '\xff') + "{}",
        Invalid("header length 18446744073709551615 exceeds the limit of 100000000 bytes"));
  b.Bad("framing/tob_prefix", std::string("\x3c\x00\x00\x00\x00\xff\xff\xff", 8) + "{}",
        Invalid("header length " + std::to_string(0xFFFFFF000000003Cull) +
                " exceeds the limit of 100000000 bytes"));
  b.Bad("framing/big_endian", std::string("\x00\x00\x00\x00\x00\x00\x00\x3c", 8) + "{}",
        Invalid("header length " + std::to_string(0x3C00000000000000ull) +
                " exceeds the limit of 100000000 bytes"));
  // N = 60, not a multiple of 8: F32 data starts at byte 68, unaligned. Valid.
  std::string json = "{" + T("w", "F32", "[2]", 0, 8) + "}";
  json.resize(60, ' ');
  b.Valid("framing/unaligned_data_start", File(json, 8), 1);
}

void AddSyntax(Builder& b) {
  std::string entry = ":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  b.Bad("syntax/byte_ff", File("{\"\xff\"" + entry, 1), Invalid("header is not valid UTF-8 at header byte 2 (file offset 10)"));
  b.Bad("syntax/overlong_utf8", File("{\"\xc0\xaf\"" + entry, 1), Invalid("header is not valid UTF-8 at header byte 2 (file offset 10)"));
  b.Bad("syntax/encoded_surrogate", File("{\"\xed\xa0\x80\"" + entry, 1),
        Invalid("header is not valid UTF-8 at header byte 2 (file offset 10)"));
  b.Bad("syntax/above_u10ffff", File("{\"\xf4\x90\x80\x80\"" + entry, 1),
        Invalid("header is not valid UTF-8 at header byte 2 (file offset 10)"));
  b.Bad("syntax/bom", File("\xef\xbb\xbf{}"), Json(kTapeError, 0));
  b.Bad("syntax/truncated_json", File("{"), Json(kTapeError, 1));
  b.Valid("syntax/leading_whitespace", File("\t\n\r {}"), 0);
  b.Valid("syntax/trailing_whitespace", File("{} \r\n\t"), 0);
  b.Bad("syntax/trailing_nuls", File(std::string("{}\0\0", 4)), Json(kTapeError, 2));
  b.Bad("syntax/two_values", File("{}{}"), Json(kTapeError, 2));
  b.Bad("syntax/trailing_garbage", File("{} x"), Json(kTapeError, 3));
  b.Bad("syntax/top_array", File("[]"), Invalid("header must be a JSON object, got an array"));
  b.Bad("syntax/top_null", File("null"), Invalid("header must be a JSON object, got null"));
  b.Bad("syntax/top_string", File("\"x\""), Invalid("header must be a JSON object, got a string"));
  b.Bad("syntax/top_number", File("1"), Invalid("header must be a JSON object, got a number"));
  b.Bad("syntax/comment", File("{/* c */}"), Json(kTapeError, 1));
  const std::string comma = "{" + T("a", "U8", "[1]", 0, 1) + ",}";
  b.Bad("syntax/trailing_comma", File(comma, 1), Json(kTapeError, comma.size() - 1));
  b.Bad("syntax/single_quotes", File("{'a':1}"), Json(kTapeError, 1));
  b.Bad("syntax/nan_literal", File("{\"a\":{\"dtype\":\"U8\",\"shape\":[NaN],\"data_offsets\":[0,1]}}", 1),
        Json(kTapeError, 28));
  b.Bad("syntax/leading_zero", File("{\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}", 1),
        Json(kNumberError, 29));
  b.Bad("syntax/raw_newline_in_key", File("{\"a\nb\"" + entry, 1), Json(kUnescapedError, 3));
  b.Bad("syntax/raw_control_in_key", File("{\"a\x01\"" + entry, 1), Json(kUnescapedError, 3));
  b.Bad("syntax/lone_high_surrogate", File("{\"\\ud800\"" + entry, 1), Json(kStringError, 2));
  b.Bad("syntax/lone_low_surrogate", File("{\"\\udc00\"" + entry, 1), Json(kStringError, 2));
  b.Bad("syntax/invalid_escape", File("{\"\\q\"" + entry, 1), Json(kStringError, 2));
  b.Valid("syntax/surrogate_pair", File("{\"\\ud83d\\ude00\"" + entry, 1), 1);
  b.Valid("syntax/nul_in_name", File("{\"\\u0000abc\"" + entry, 1), 1);
  // An unknown field nested 100,000 levels deep.
  std::string deep = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":" +
                     std::string(100'000, '[') + std::string(100'000, ']') + "}}";
  b.Bad("syntax/deep_nesting", File(deep, 1), Invalid("header nests deeper than 32 levels"));
}

void AddSchema(Builder& b) {
  b.Bad("schema/entry_not_object", File("{\"a\":1}"),
        Invalid("tensor 'a': entry must be an object, got a number"));
  b.Bad("schema/missing_data_offsets", File("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1),
        Invalid("tensor 'a': missing field 'data_offsets'"));
  b.Bad("schema/missing_dtype", File("{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a': missing field 'dtype'"));
  b.Bad("schema/missing_shape", File("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a': missing field 'shape'"));
  b.Valid("schema/unknown_field_ignored",
          File("{\"a\":{\"dtype\":\"U8\",\"foo\":[1,{\"x\":null},-5,2.5],\"shape\":[1],"
               "\"data_offsets\":[0,1]}}",
               1),
          1);
  b.Bad("schema/dtype_twice",
        File("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a': duplicate field 'dtype'"));
  b.Bad("schema/shape_twice",
        File("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a': duplicate field 'shape'"));
  b.Bad("schema/offsets_twice",
        File("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a': duplicate field 'data_offsets'"));
  for (std::string_view bad : {"F128", "f32", "float32", "E8M0", "FP4", "", "F32 "}) {
    b.Bad("schema/dtype_" + (bad.empty() ? std::string("empty") : std::string(bad)),
          File("{" + T("a", bad, "[1]", 0, 4) + "}", 4),
          Invalid("tensor 'a': unknown dtype '" + std::string(bad) + "'"));
  }
  b.Bad("schema/dtype_number", File("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a': dtype must be a string, got a number"));
  b.Bad("schema/dtype_null", File("{\"a\":{\"dtype\":null,\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a': dtype must be a string, got null"));
  b.Bad("schema/shape_object", File("{\"a\":{\"dtype\":\"U8\",\"shape\":{},\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a': shape must be an array, got an object"));
  // Every dtype with its byte count, newest ones included, in reference layout order.
  std::string all = "{" + T("c64", "C64", "[2]", 0, 16) + "," + T("u64", "U64", "[1]", 16, 24) +
                    "," + T("u32", "U32", "[1]", 24, 28) + "," + T("u16", "U16", "[1]", 28, 30) +
                    "," + T("e8m0", "F8_E8M0", "[4]", 30, 34) + "," +
                    T("fnuz1", "F8_E4M3FNUZ", "[2]", 34, 36) + "," +
                    T("fnuz2", "F8_E5M2FNUZ", "[2]", 36, 38) + "," + T("f4", "F4", "[2]", 38, 39) +
                    "," + T("f6", "F6_E2M3", "[4]", 39, 42) + "," + T("f6b", "F6_E3M2", "[4]", 42, 45) +
                    "," + T("b", "BOOL", "[3]", 45, 48) + "}";
  b.Valid("schema/new_dtypes", File(all, 48), 11);
  // The name needs escaping in messages.
  b.Bad("schema/control_byte_name_in_message",
        File("{\"a\\u0001\\\\b\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
        Invalid("tensor 'a\\x01\\\\b': missing field 'dtype'"));
}

void AddShape(Builder& b) {
  b.Valid("shape/scalar", File("{" + T("a", "I32", "[]", 0, 4) + "}", 4), 1);
  b.Bad("shape/scalar_zero_bytes", File("{" + T("a", "I32", "[]", 0, 0) + "}"),
        Invalid("tensor 'a': data_offsets [0, 0) do not match I32[] (4 bytes)"));
  b.Valid("shape/zero_size", File("{" + T("a", "BF16", "[2,0]", 0, 0) + "}"), 1);
  b.Bad("shape/negative", File("{" + T("a", "U8", "[-1]", 0, 1) + "}", 1),
        Invalid("tensor 'a': shape[0] must be a non-negative integer, got -1"));
  b.Bad("shape/float", File("{" + T("a", "U8", "[1,2.0]", 0, 2) + "}", 2),
        Invalid("tensor 'a': shape[1] must be a non-negative integer, got a number with a "
                "fraction or exponent"));
  b.Bad("shape/exponent", File("{" + T("a", "U8", "[1e2]", 0, 100) + "}", 100),
        Invalid("tensor 'a': shape[0] must be a non-negative integer, got a number with a "
                "fraction or exponent"));
  b.Bad("shape/string", File("{" + T("a", "U8", "[\"2\"]", 0, 2) + "}", 2),
        Invalid("tensor 'a': shape[0] must be a non-negative integer, got a string"));
  {
    std::string json = "{" + T("a", "U8", "[-0]", 0, 0) + "}";
    b.Bad("shape/negative_zero", File(json),
          Invalid("header has the number -0 at header byte " + std::to_string(json.find("-0")) +
                  "; shape and data_offsets entries must be non-negative integers"));
  }
  b.Valid("shape/minus_zero_in_names_is_fine",
          File("{" + T("x-0", "U8", "[1]", 0, 1) + ",\"__metadata__\":{\"v\":\"-0\"}}", 1), 1);
  b.Bad("shape/overflow_elements", File("{" + T("a", "I32", "[2,18446744073709551614]", 0, 8) + "}", 8),
        Range("tensor 'a': overflow computing element count of shape [2, 18446744073709551614]"));
  b.Bad("shape/overflow_bits", File("{" + T("a", "I32", "[2,9223372036854775807]", 0, 8) + "}", 8),
        Range("tensor 'a': overflow computing byte size of I32[2, 9223372036854775807]"));
  b.Bad("shape/wraps_to_zero", File("{" + T("a", "U8", "[4294967296,4294967296]", 0, 0) + "}"),
        Range("tensor 'a': overflow computing element count of shape [4294967296, 4294967296]"));
  b.Bad("shape/safetensors_cpp_poc",
        File("{" + T("a", "F32", "[4194305,4194305,211106198978564]", 0, 16) + "}", 16),
        Range("tensor 'a': overflow computing element count of shape [4194305, 4194305, "
              "211106198978564]"));
  b.Bad("shape/above_u64", File("{" + T("a", "U8", "[18446744073709551616]", 0, 1) + "}", 1),
        Json(kNumberError, 28));
  b.Bad("shape/f4_odd", File("{" + T("a", "F4", "[3]", 0, 2) + "}", 2),
        Invalid("tensor 'a': F4[3] is 12 bits, which does not end on a byte boundary"));
  b.Bad("shape/f6_two", File("{" + T("a", "F6_E3M2", "[2]", 0, 2) + "}", 2),
        Invalid("tensor 'a': F6_E3M2[2] is 12 bits, which does not end on a byte boundary"));
  {
    // 1,000,000 dimensions, all 1.
    std::string shape = "[1";
    shape.reserve(2'000'002);
    for (int i = 1; i < 1'000'000; ++i) shape += ",1";
    shape += "]";
    b.Valid("scale/million_dim_shape", File("{" + T("a", "F32", shape, 0, 4) + "}", 4), 1, true);
    // The same with a mismatch: the message abbreviates the shape.
    b.Bad("scale/million_dim_shape_mismatch", File("{" + T("a", "F32", shape, 0, 8) + "}", 8),
          Invalid("tensor 'a': data_offsets [0, 8) do not match F32[1, 1, 1, 1, 1, 1, 1, 1, ... "
                  "999990 more ..., 1, 1] (4 bytes)"),
          true);
  }
}

void AddOffsets(Builder& b) {
  b.Bad("offsets/size_mismatch", File("{" + T("a", "I32", "[2,2]", 0, 4) + "}", 4),
        Invalid("tensor 'a': data_offsets [0, 4) do not match I32[2, 2] (16 bytes)"));
  b.Bad("offsets/end_before_begin", File("{" + T("a", "U8", "[16]", 16, 0) + "}", 16),
        Invalid("tensor 'a': data_offsets [16, 0) end before they begin"));
  b.Bad("offsets/hole_at_front", File("{" + T("a", "U8", "[16]", 4, 20) + "}", 20),
        Invalid("tensor 'a': data_offsets [4, 20) leave a gap after byte 0"));
  b.Bad("offsets/gap", File("{" + T("a", "U8", "[16]", 0, 16) + "," + T("b", "U8", "[16]", 20, 36) + "}", 36),
        Invalid("tensor 'b': data_offsets [20, 36) leave a gap after byte 16"));
  {
    std::string json = "{";
    for (int i = 0; i < 10; ++i) {
      json += (i ? "," : "") + T("t" + std::to_string(9 - i), "U8", "[16]", 0, 16);
    }
    json += "}";
    b.Bad("offsets/ten_on_same_bytes", File(json, 16),
          Invalid("tensor 't1': data_offsets [0, 16) overlap tensor 't0' at [0, 16)"));
  }
  b.Bad("offsets/partial_overlap",
        File("{" + T("a", "U8", "[16]", 0, 16) + "," + T("b", "U8", "[16]", 8, 24) + "}", 24),
        Invalid("tensor 'b': data_offsets [8, 24) overlap tensor 'a' at [0, 16)"));
  b.Valid("offsets/reverse_key_order",
          File("{" + T("b", "U8", "[16]", 16, 32) + "," + T("a", "U8", "[16]", 0, 16) + "}", 32), 2);
  b.Valid("offsets/zero_size_then_tensor",
          File("{" + T("a", "U8", "[16]", 0, 16) + "," + T("z", "U8", "[0]", 0, 0) + "}", 16), 2);
  b.Valid("offsets/zero_size_at_end",
          File("{" + T("a", "U8", "[16]", 0, 16) + "," + T("z", "U8", "[0]", 16, 16) + "}", 16), 2);
  b.Bad("offsets/zero_size_inside",
        File("{" + T("a", "U8", "[16]", 0, 16) + "," + T("z", "U8", "[0]", 8, 8) + "}", 16),
        Invalid("tensor 'z': data_offsets [8, 8) overlap tensor 'a' at [0, 16)"));
  b.Bad("offsets/one_element", File("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1),
        Invalid("tensor 'a': data_offsets must be an array of 2 integers, got 1 element"));
  b.Bad("offsets/three_elements",
        File("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1),
        Invalid("tensor 'a': data_offsets must be an array of 2 integers, got 3 elements"));
  b.Bad("offsets/object",
        File("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{\"b\":0,\"e\":1}}}", 1),
        Invalid("tensor 'a': data_offsets must be an array of 2 integers, got an object"));
  b.Bad("offsets/negative", File("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,-1]}}", 1),
        Invalid("tensor 'a': data_offsets[1] must be a non-negative integer, got -1"));
  {
    // Above 2^53: compared exactly, never through a double.
    std::string json = "{" + T("a", "U8", "[9007199254740993]", 0, 9007199254740993ull) + "}";
    b.Bad("offsets/above_2_53", File(json, 8),
          Loss("data section ends at byte " + std::to_string(8 + json.size() + 9007199254740993ull) +
               " but the file is truncated at " + std::to_string(8 + json.size() + 8) +
               " bytes; tensor 'a' at file bytes [" + std::to_string(8 + json.size()) + ", " +
               std::to_string(8 + json.size() + 9007199254740993ull) + ") is the first cut off"));
  }
  {
    // Eight U8 tensors of 2^61-1 bytes: data end 2^64-8; 8 + N + that wraps.
    const uint64_t kEach = (1ull << 61) - 1;
    std::string json = "{";
    for (uint64_t i = 0; i < 8; ++i) {
      json += (i ? "," : "") + T("t" + std::to_string(i), "U8", "[" + std::to_string(kEach) + "]",
                                 i * kEach, (i + 1) * kEach);
    }
    json += "}";
    b.Bad("offsets/end_wraps_u64", File(json, 16),
          Range("data section of " + std::to_string(8 * kEach) + " bytes after byte " +
                std::to_string(8 + json.size()) + " ends past the largest file offset"));
  }
}

void AddCoverage(Builder& b) {
  std::string json = "{" + T("a", "F32", "[4]", 0, 16) + "}";
  uint64_t end = 8 + json.size() + 16;
  b.Bad("coverage/trailing_bytes", File(json, 18),
        Invalid("data section ends at byte " + std::to_string(end) + " but the file has " +
                std::to_string(end + 2) + " bytes"));
  b.Bad("coverage/polyglot_zip", File(json, 16) + "PK\x05\x06" + std::string(18, '\0'),
        Invalid("data section ends at byte " + std::to_string(end) + " but the file has " +
                std::to_string(end + 22) + " bytes"));
  b.Bad("coverage/truncated", File(json, 14),
        Loss("data section ends at byte " + std::to_string(end) + " but the file is truncated at " +
             std::to_string(end - 2) + " bytes; tensor 'a' at file bytes [" +
             std::to_string(end - 16) + ", " + std::to_string(end) + ") is the first cut off"));
  b.Valid("coverage/empty_header", File("{}"), 0);
  b.Bad("coverage/empty_header_one_extra_byte", File("{}", 1),
        Invalid("data section ends at byte 10 but the file has 11 bytes"));
}

void AddMetadata(Builder& b) {
  std::string t = T("a", "U8", "[1]", 0, 1);
  b.Valid("metadata/format_pt", File("{\"__metadata__\":{\"format\":\"pt\"}," + t + "}", 1), 1);
  b.Valid("metadata/empty", File("{\"__metadata__\":{}," + t + "}", 1), 1);
  b.Valid("metadata/null", File("{\"__metadata__\":null," + t + "}", 1), 1);
  b.Bad("metadata/number_value", File("{\"__metadata__\":{\"n\":1}," + t + "}", 1),
        Invalid("__metadata__ key 'n' must map to a string, got a number"));
  b.Bad("metadata/object_value", File("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}," + t + "}", 1),
        Invalid("__metadata__ key 'a' must map to a string, got an object"));
  b.Bad("metadata/array_value", File("{\"__metadata__\":{\"a\":[\"x\"]}," + t + "}", 1),
        Invalid("__metadata__ key 'a' must map to a string, got an array"));
  b.Bad("metadata/null_value", File("{\"__metadata__\":{\"a\":null}," + t + "}", 1),
        Invalid("__metadata__ key 'a' must map to a string, got null"));
  b.Bad("metadata/not_object", File("{\"__metadata__\":[]," + t + "}", 1),
        Invalid("__metadata__ must be an object of strings, got an array"));
  b.Bad("metadata/tensor_named_metadata", File("{" + T("__metadata__", "U8", "[1]", 0, 1) + "}", 1),
        Invalid("__metadata__ key 'shape' must map to a string, got an array"));
  b.Bad("metadata/twice",
        File("{\"__metadata__\":{},\"__metadata__\":{}," + t + "}", 1),
        Invalid("duplicate __metadata__ entry"));
  b.Bad("metadata/duplicate_key",
        File("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}," + t + "}", 1),
        Invalid("__metadata__ has duplicate key 'a'"));
}

void AddDuplicates(Builder& b) {
  b.Bad("duplicates/different_offsets",
        File("{" + T("a", "U8", "[16]", 0, 16) + "," + T("a", "U8", "[16]", 16, 32) + "}", 32),
        Invalid("duplicate tensor name 'a'"));
  b.Bad("duplicates/identical",
        File("{" + T("a", "U8", "[16]", 0, 16) + "," + T("a", "U8", "[16]", 0, 16) + "}", 16),
        Invalid("duplicate tensor name 'a'"));
}

void AddScale(Builder& b) {
  {
    constexpr int kCount = 100'000;
    std::string json = "{\"__metadata__\":{\"format\":\"pt\"}";
    json.reserve(kCount * 105);
    for (int i = 0; i < kCount; ++i) json += "," + T(WideName(i), "BF16", "[2,2]", i * 8ull, (i + 1) * 8ull);
    json += "}";
    b.Valid("scale/100k_tensors", File(json, kCount * 8ull), kCount, true);
  }
  {
    std::string name(1'000'000, 'n');
    b.Valid("scale/long_name", File("{" + T(name, "U8", "[1]", 0, 1) + "}", 1), 1, true);
    b.Bad("scale/long_name_in_message", File("{" + T(name, "U8", "[2]", 0, 1) + "}", 1),
          Invalid("tensor '" + std::string(200, 'n') +
                  "'... (1000000 bytes): data_offsets [0, 1) do not match U8[2] (2 bytes)"),
          true);
  }
}

}  // namespace

std::vector<CorpusCase> MalformedCorpus() {
  Builder b;
  AddFraming(b);
  AddSyntax(b);
  AddSchema(b);
  AddShape(b);
  AddOffsets(b);
  AddCoverage(b);
  AddMetadata(b);
  AddDuplicates(b);
  AddScale(b);
  return b.Take();
}

Status WriteMalformedCorpus(const std::string& dir, const WriteCorpusOptions& options) {
  for (const CorpusCase& c : MalformedCorpus()) {
    if (c.large && !options.include_large) continue;
    std::string file = c.name;
    for (char& ch : file) {
      bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                   ch == '_' || ch == '-';
      if (!plain) ch = '_';
    }
    std::string path = dir + "/" + file + ".safetensors";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoToStatus(errno, path);
    size_t done = 0;
    while (done < c.bytes.size()) {
      ssize_t n = ::write(fd, c.bytes.data() + done, c.bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = n < 0 ? errno : EIO;
        ::close(fd);
        return ErrnoToStatus(err, path);
      }
      done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0) return ErrnoToStatus(errno, path);
  }
  return OkStatus();
}

}  // namespace shardload::testing
