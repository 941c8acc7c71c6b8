#include "format/text.h"

#include <cstdint>
#include <cstdio>

namespace shardload {
namespace {

// Utf8Length: the length of the valid UTF-8 sequence starting at s[i] (a lead byte
// ≥ 0x80), or 0 when it is not one (overlong forms, surrogates, > U+10FFFF, cut short).
size_t Utf8Length(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if ((c & 0xe0) == 0xc0) {
    n = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3f);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

void AppendHexEscape(std::string* out, const char* format, unsigned char c) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), format, c);
  *out += buf;
}

}  // namespace

void AppendJsonString(std::string* out, std::string_view s) {
  *out += '"';
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      *out += '\\';
      *out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      switch (c) {
        case '\b': *out += "\\b"; break;
        case '\f': *out += "\\f"; break;
        case '\n': *out += "\\n"; break;
        case '\r': *out += "\\r"; break;
        case '\t': *out += "\\t"; break;
        default: AppendHexEscape(out, "\\u%04x", c);
      }
      ++i;
    } else if (c < 0x80) {
      *out += static_cast<char>(c);
      ++i;
    } else if (size_t n = Utf8Length(s, i); n > 0) {
      out->append(s.substr(i, n));
      i += n;
    } else {
      AppendHexEscape(out, "\\u%04x", c);
      ++i;
    }
  }
  *out += '"';
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
