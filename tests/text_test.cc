#include "format/text.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace shardload {
namespace {

using namespace std::string_literals;

TEST(TextTest, JsonQuotedEscapesWhatJsonRequires) {
  EXPECT_EQ(JsonQuoted("plain.name"), "\"plain.name\"");
  EXPECT_EQ(JsonQuoted("q\"b\\s"), "\"q\\\"b\\\\s\"");
  EXPECT_EQ(JsonQuoted("a\nb\tc\rd\be\ff"), "\"a\\nb\\tc\\rd\\be\\ff\"");
  EXPECT_EQ(JsonQuoted("nul\0x\x01\x7f"s), "\"nul\\u0000x\\u0001\\u007f\"");
}

TEST(TextTest, JsonQuotedKeepsValidUtf8AndShowsStrayBytes) {
  EXPECT_EQ(JsonQuoted("caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80\"");
  EXPECT_EQ(JsonQuoted("e\xff"), "\"e\\u00ff\"");
  EXPECT_EQ(JsonQuoted("\xc0\xaf"), "\"\\u00c0\\u00af\"");      // overlong '/'
  EXPECT_EQ(JsonQuoted("\xed\xa0\x80"), "\"\\u00ed\\u00a0\\u0080\"");  // UTF-8 surrogate
  EXPECT_EQ(JsonQuoted("\xe4\xb8"), "\"\\u00e4\\u00b8\"");      // cut short
}

TEST(TextTest, AppendJsonStringAppends) {
  std::string out = "[";
  AppendJsonString(&out, "a");
  out += ",";
  AppendJsonString(&out, "");
  EXPECT_EQ(out, "[\"a\",\"\"");
}

TEST(TextTest, AppendJsonStringArrayAppendsEachItemQuoted) {
  std::string out = "x=";
  AppendJsonStringArray(&out, {});
  EXPECT_EQ(out, "x=[]");
  const std::vector<std::string> items = {"a", "q\"b", std::string("n\0l", 3)};
  AppendJsonStringArray(&out, items);
  EXPECT_EQ(out, "x=[][\"a\",\"q\\\"b\",\"n\\u0000l\"]");
}

TEST(TextTest, AppendJsonStringToStylesInsideAndOutsideLongAsciiRuns) {
  // DEL and a stray byte in the middle of runs long enough for the 8-byte fast path.
  const std::string s = std::string("abcdefgh\x7fijklmnop\xffqrstuvwxyz0123") + "\xc3\xa9";
  std::string by_default, like_inspect;
  AppendJsonStringTo(by_default, s);
  AppendJsonStringTo(like_inspect, s, {.escape_del = false, .replace_invalid = true});
  EXPECT_EQ(by_default, "\"abcdefgh\\u007fijklmnop\\u00ffqrstuvwxyz0123\xc3\xa9\"");
  EXPECT_EQ(like_inspect, "\"abcdefgh\x7fijklmnop\\ufffdqrstuvwxyz0123\xc3\xa9\"");
  std::string via_string;
  AppendJsonString(&via_string, s);
  EXPECT_EQ(via_string, by_default);
}

TEST(TextTest, Utf8SequenceLengthRejectsOverlongsSurrogatesAndCutSequences) {
  EXPECT_EQ(Utf8SequenceLength("\xc3\xa9", 0), 2u);
  EXPECT_EQ(Utf8SequenceLength("\xe2\x82\xac", 0), 3u);
  EXPECT_EQ(Utf8SequenceLength("\xf0\x9f\x98\x80", 0), 4u);
  EXPECT_EQ(Utf8SequenceLength("\xc0\xaf", 0), 0u);          // overlong '/'
  EXPECT_EQ(Utf8SequenceLength("\xed\xa0\x80", 0), 0u);      // surrogate U+D800
  EXPECT_EQ(Utf8SequenceLength("\xf4\x90\x80\x80", 0), 0u);  // past U+10FFFF
  EXPECT_EQ(Utf8SequenceLength("\xe2\x82", 0), 0u);          // cut short
}

TEST(TextTest, QuoteForMessageKeepsOneLine) {
  EXPECT_EQ(QuoteForMessage("w", '\''), "'w'");
  EXPECT_EQ(QuoteForMessage("it's\\", '\''), "'it\\'s\\\\'");
  EXPECT_EQ(QuoteForMessage("a\"b", '"'), "\"a\\\"b\"");
  EXPECT_EQ(QuoteForMessage("l1\nl2\0\x7f"s, '\''), "'l1\\x0al2\\x00\\x7f'");
  EXPECT_EQ(QuoteForMessage("caf\xc3\xa9", '\''), "'caf\xc3\xa9'");
}

}  // namespace
}  // namespace shardload
