#include "format/text.h"

#include <cstdint>
#include <cstdio>

namespace shardload {
namespace {

void AppendHexEscape(std::string* out, const char* format, unsigned char c) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), format, c);
  *out += buf;
}

}  // namespace

void AppendJsonString(std::string* out, std::string_view s) { AppendJsonStringTo(*out, s); }

void AppendJsonStringArray(std::string* out, std::span<const std::string> items) {
  *out += '[';
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) *out += ',';
    AppendJsonString(out, items[i]);
  }
  *out += ']';
}

std::string JsonQuoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  AppendJsonString(&out, s);
  return out;
}

std::string QuoteForMessage(std::string_view s, char quote) {
  std::string out(1, quote);
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == quote || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      AppendHexEscape(&out, "\\x%02x", u);
    } else {
      out += c;
    }
  }
  out += quote;
  return out;
}

std::string QuoteNameForMessage(std::string_view name) {
  std::string out = "'";
  size_t limit = name.size();
  bool cut = false;
  if (limit > kMaxNameBytesInMessage) {
    limit = kMaxNameBytesInMessage;
    // Do not split a UTF-8 sequence: back up over continuation bytes.
    while (limit > 0 && (static_cast<unsigned char>(name[limit]) & 0xC0) == 0x80) --limit;
    cut = true;
  }
  for (size_t i = 0; i < limit; ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7F) {
      AppendHexEscape(&out, "\\x%02x", c);
    } else if (c == '\\') {
      out += "\\\\";
    } else {
      out += static_cast<char>(c);
    }
  }
  out += "'";
  if (cut) out += "... (" + std::to_string(name.size()) + " bytes)";
  return out;
}

}  // namespace shardload
