// format/text.h — quoting names for messages and JSON output, one way everywhere.
//
// Provides `AppendJsonString` / `JsonQuoted` (a string as a JSON string literal),
// `AppendJsonStringTo` (the same for any output buffer, with the two styles the writer
// and `inspect --json` need), `Utf8SequenceLength`, `Utf8ErrorOffset`, `HexDigitValue`, and
// `QuoteForMessage` (a tensor name inside an error message, one line whatever it holds).
// Tensor names may hold any Unicode, NUL and control characters included.
//
//   std::string json = "{\"name\":" + JsonQuoted(t.name) + "}";
//   return InvalidArgumentError("tensor " + QuoteForMessage(name, '\'') + " is missing");
#ifndef SHARDLOAD_FORMAT_TEXT_H_
#define SHARDLOAD_FORMAT_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace shardload {

// HexDigitValue: the value of the hex digit `c` (either case), or -1 when `c` is not one.
inline int HexDigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Utf8SequenceLength: the length of the valid UTF-8 sequence starting at s[i] (i <
// s.size()), or 0 when the bytes there are not one (an ASCII byte is not a sequence
// here: callers handle bytes < 0x80 first; overlong forms, surrogates, code points past
// U+10FFFF and cut-short sequences are 0).
inline size_t Utf8SequenceLength(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  auto cont = [&](size_t k) { return (byte(k) & 0xC0) == 0x80; };
  unsigned char c = byte(i);
  size_t n = s.size() - i;
  if (c >= 0xC2 && c <= 0xDF) return n >= 2 && cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    unsigned char c1 = byte(i + 1);
    if (c == 0xE0 && c1 < 0xA0) return 0;   // overlong
    if (c == 0xED && c1 >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    unsigned char c1 = byte(i + 1);
    if (c == 0xF0 && c1 < 0x90) return 0;   // overlong
    if (c == 0xF4 && c1 >= 0x90) return 0;  // > U+10FFFF
    return 4;
  }
  return 0;
}

// Utf8ErrorOffset: the offset of the first byte of `s` that does not start a valid
// UTF-8 sequence (Utf8SequenceLength's rules: no overlong forms, surrogates or values
// past U+10FFFF), or nullopt when `s` is valid. Linear, 8 ASCII bytes at a time (the
// writer checks megabytes of tensor names with it). Thread-safe (pure function).
inline std::optional<size_t> Utf8ErrorOffset(std::string_view s) {
  constexpr uint64_t kHighBits = 0x8080808080808080ULL;
  for (size_t i = 0; i < s.size();) {
    uint64_t word;
    if (s.size() - i >= 8 && (std::memcpy(&word, s.data() + i, 8), word & kHighBits) == 0) {
      i += 8;  // 8 ASCII bytes
      continue;
    }
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t len = Utf8SequenceLength(s, i);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

// JsonStringStyle: the two choices on which JSON string writers differ.
struct JsonStringStyle {
  // escape_del: write DEL (0x7f) as \u007f (true) or as it is (false). Default true.
  bool escape_del = true;
  // replace_invalid: a byte that does not start a valid UTF-8 sequence becomes \ufffd
  // (true) or \u00XX of the byte itself, which keeps it visible (false). Default false.
  bool replace_invalid = false;
};

namespace text_internal {
// NeedsAttention: whether any of the 8 bytes in `w` is < 0x20, '"', '\', DEL or >= 0x80.
// Never a false negative; a rare false positive only sends bytes to the slow loop.
inline bool NeedsAttention(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHigh = 0x8080808080808080ull;
  auto has_zero = [](uint64_t x) { return (x - kOnes) & ~x & kHigh; };
  uint64_t below_space = (w - kOnes * 0x20) & ~w & kHigh;  // bytes < 0x20 (when < 0x80)
  return ((w & kHigh) | below_space | has_zero(w ^ (kOnes * '"')) |
          has_zero(w ^ (kOnes * '\\')) | has_zero(w ^ (kOnes * 0x7f))) != 0;
}
}  // namespace text_internal

// AppendJsonStringTo: append `s` to `out` as a JSON string literal, quotes included:
// '"' and '\' backslash-escaped, \b \f \n \r \t short, other control characters as
// \u00XX (lowercase hex), valid UTF-8 copied as it is, DEL and invalid bytes per
// `style`. Runs of plain ASCII are copied 8 bytes at a time. `Out` needs `+= char`,
// `+= const char*` and `append(const char*, size_t)` (std::string has them). Never fails.
template <typename Out>
void AppendJsonStringTo(Out& out, std::string_view s, JsonStringStyle style = {}) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  size_t run = 0;  // start of the pending run of bytes copied verbatim
  size_t i = 0;
  while (i < s.size()) {
    while (i + 8 <= s.size()) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (text_internal::NeedsAttention(w)) break;
      i += 8;
    }
    if (i >= s.size()) break;
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && (c < 0x7f || (c == 0x7f && !style.escape_del))) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (size_t len = Utf8SequenceLength(s, i); len != 0) {
        i += len;
        continue;
      }
    }
    out.append(s.data() + run, i - run);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c >= 0x80 && style.replace_invalid) {
          out += "\\ufffd";
        } else {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        }
    }
    ++i;
    run = i;
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

// AppendJsonString: append `s` to `out` as a JSON string literal, quotes included.
// '"' and '\' are backslash-escaped; \b \f \n \r \t use their short escapes; other
// control characters and DEL become \u00XX; valid UTF-8 sequences are copied as they
// are; a byte that does not start a valid UTF-8 sequence becomes \u00XX (so the output
// is always valid JSON and the byte stays visible). Never fails. (AppendJsonStringTo
// with the default style.)
void AppendJsonString(std::string* out, std::string_view s);

// JsonQuoted: AppendJsonString into a new string.
std::string JsonQuoted(std::string_view s);

// AppendJsonStringArray: append `items` to `out` as a JSON array of strings ("[]" when
// empty), each as AppendJsonString writes it. Never fails.
void AppendJsonStringArray(std::string* out, std::span<const std::string> items);

// QuoteForMessage: `s` between two `quote` characters, with `quote`, '\' and control
// bytes (and DEL) escaped as \<quote>, \\ and \xHH, so an error message stays on one
// line. Other bytes are copied as they are.
std::string QuoteForMessage(std::string_view s, char quote);

// kMaxNameBytesInMessage: names longer than this are cut in QuoteNameForMessage.
inline constexpr size_t kMaxNameBytesInMessage = 200;

// QuoteNameForMessage: `name` between single quotes, with control bytes and DEL as
// \xHH and '\' as \\, cut after kMaxNameBytesInMessage bytes (never inside a UTF-8
// sequence) and then followed by "... (N bytes)", so that any name from an untrusted
// header fits on one line of an error message. The parsers' messages use it.
std::string QuoteNameForMessage(std::string_view name);

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_TEXT_H_
