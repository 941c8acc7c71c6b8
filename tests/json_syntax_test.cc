// tests/json_syntax_test.cc — JsonSyntaxErrorOffset: exact offsets on hand-made cases,
// and agreement with simdjson (valid exactly when simdjson parses) on mutated headers.
#include "format/json_syntax.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <simdjson.h>

namespace shardload {
namespace {

TEST(JsonSyntaxTest, ValidTextsHaveNoErrorOffset) {
  for (std::string_view ok :
       {"{}", " \t\r\n{} \n", "[]", "[1,-2,3.5e-7,0,-0.0,1E+2]", "\"x\"", "true", "null",
        "{\"a\":{\"b\":[[],{}]},\"c\":\"\\u00e9\\ud83d\\ude00\\n\\\"\"}",
        "18446744073709551615", "-9223372036854775808", "1.7e308"}) {
    EXPECT_EQ(JsonSyntaxErrorOffset(ok), std::nullopt) << ok;
  }
}

TEST(JsonSyntaxTest, TheOffsetIsTheFirstByteThatCannotContinueTheText) {
  struct Case {
    std::string text;
    uint64_t offset;
  };
  const std::vector<Case> cases = {
      {"", 0},                       // nothing at all
      {"\xef\xbb\xbf{}", 0},         // a BOM is not JSON
      {"{", 1},                      // ends too early
      {"{}{}", 2},                   // a second value
      {"{} x", 3},                   // trailing garbage after whitespace
      {std::string("{}\0", 3), 2},   // a trailing NUL
      {"{/* c */}", 1},              // comments
      {"{\"a\":1,}", 7},             // trailing comma: the '}' where a key must be
      {"[1,]", 3},
      {"{'a':1}", 1},                // single quotes
      {"{\"a\" 1}", 5},              // missing colon
      {"{\"a\":[NaN]}", 6},          // NaN
      {"{\"a\":[01]}", 7},           // a leading zero: "0" then an unexpected '1'
      {"{\"a\":1.}", 7},             // a fraction without digits
      {"{\"a\":-}", 6},
      {"{\"a\":1e}", 7},
      {"{\"a\":tru}", 8},
      {"{\"a\nb\":1}", 3},           // a raw newline in a string
      {"{\"\\q\":1}", 2},            // an invalid escape: at the backslash
      {"{\"\\u12G4\":1}", 2},
      {"{\"\\ud800\":1}", 2},        // a lone high surrogate
      {"{\"\\udc00\":1}", 2},        // a lone low surrogate
      {"{\"\\ud800\\u0041\":1}", 2}, // a high surrogate followed by a non-low one
      {"[18446744073709551616]", 1}, // above 2^64 - 1
      {"[-9223372036854775809]", 1}, // below -2^63
      {"[1e400]", 1},                // not a finite double
      {"[-2.5E+99999]", 1},
      {"[1.7976931348623158e308,x]", 24},  // a valid number, then the error
      {"\"ab\\", 4},                       // ends in an escape
      {"{\"a\":1]", 6},              // the wrong closer
      {"[1}", 2},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(JsonSyntaxErrorOffset(c.text), std::optional<uint64_t>(c.offset)) << c.text;
  }
}

// Numbers at the edges of double: as simdjson decides.
TEST(JsonSyntaxTest, NumberRangeAsSimdjson) {
  simdjson::dom::parser parser;
  const std::string long_integer_part = "[1" + std::string(5000, '0') + ".0]";
  const std::string long_fraction = "[0." + std::string(5000, '0') + "1e4990]";
  for (std::string text :
       {std::string("[1e-400]"), std::string("[1.7976931348623157e308]"),
        std::string("[1.7976931348623158e308]"),  // rounds down to DBL_MAX
        std::string("[1.797693134862315807e308]"), std::string("[1.8e308]"),
        std::string("[-1e309]"), std::string("[0.0000001e-99999]"),
        std::string("[123456789012345678901234567890.5]"), long_integer_part, long_fraction,
        std::string("[1e99999999999999999999999]")}) {
    simdjson::dom::element root;
    const bool valid = !parser.parse(text).get(root);
    EXPECT_EQ(JsonSyntaxErrorOffset(text).has_value(), !valid) << text;
  }
}

TEST(JsonSyntaxTest, DeepNestingNeedsNoRecursion) {
  std::string deep(1'000'000, '[');
  EXPECT_EQ(JsonSyntaxErrorOffset(deep), std::optional<uint64_t>(deep.size()));
  deep += std::string(1'000'000, ']');
  EXPECT_EQ(JsonSyntaxErrorOffset(deep), std::nullopt);
}

// Mutations of a realistic header: wherever simdjson accepts the text (valid UTF-8 and
// shallow here), the scanner finds no error, and wherever simdjson rejects it for its
// syntax, the scanner names an offset inside the text (or its end).
TEST(JsonSyntaxTest, AgreesWithSimdjsonOnMutatedHeaders) {
  const std::string base =
      "{\"__metadata__\":{\"format\":\"pt\"},\"model.embed.weight\":{\"dtype\":\"BF16\","
      "\"shape\":[32000,4096],\"data_offsets\":[0,262144000]},\"l\\u00e9\":{\"dtype\":"
      "\"F32\",\"shape\":[],\"data_offsets\":[262144000,262144004]}}";
  const std::string alphabet = "{}[]\":,.-+eE0123456789 \\utrfalsn\n\x01";
  std::mt19937 rng(7);
  simdjson::dom::parser parser;
  int rejected = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % (text.size() + 1);
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          if (at < text.size()) text[at] = c;
          break;
        case 1:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          if (at < text.size()) text.erase(at, 1);
      }
    }
    simdjson::dom::element root;
    const simdjson::error_code err = parser.parse(text).get(root);
    const std::optional<uint64_t> offset = JsonSyntaxErrorOffset(text);
    if (!err) {
      EXPECT_EQ(offset, std::nullopt) << text;
    } else if (err != simdjson::UTF8_ERROR && err != simdjson::DEPTH_ERROR) {
      ++rejected;
      ASSERT_TRUE(offset.has_value()) << simdjson::error_message(err) << ": " << text;
      EXPECT_LE(*offset, text.size());
    }
  }
  EXPECT_GT(rejected, 1000);  // the mutations do reach the error path
}

}  // namespace
}  // namespace shardload
