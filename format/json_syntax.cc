// format/json_syntax.cc — see json_syntax.h.
#include "format/json_syntax.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <system_error>
#include <vector>

#include "format/text.h"

namespace shardload {
namespace {

bool IsWhitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Scanner: one pass over the text; each Scan* function starts at text[i] and either
// advances i past what it read (true) or leaves i at the offending byte (false).
class Scanner {
 public:
  explicit Scanner(std::string_view text) : text_(text) {}

  std::optional<uint64_t> Run();

 private:
  enum class Want { kValue, kValueOrClose, kKeyOrClose, kKey, kAfterValue };

  bool AtEnd() const { return i_ >= text_.size(); }
  void SkipWhitespace() {
    while (!AtEnd() && IsWhitespace(text_[i_])) ++i_;
  }
  bool ScanString();
  bool ScanEscapeUnit(uint32_t* unit);  // at "\u": reads "\uXXXX"
  bool ScanNumber();
  bool ScanLiteral(std::string_view word);
  bool ScanScalar();  // string, number or literal at i_

  std::string_view text_;
  size_t i_ = 0;
};

bool Scanner::ScanEscapeUnit(uint32_t* unit) {
  if (i_ + 6 > text_.size() || text_[i_] != '\\' || text_[i_ + 1] != 'u') return false;
  uint32_t v = 0;
  for (size_t k = 2; k < 6; ++k) {
    const int h = HexDigitValue(text_[i_ + k]);
    if (h < 0) return false;
    v = v * 16 + static_cast<uint32_t>(h);
  }
  *unit = v;
  i_ += 6;
  return true;
}

bool Scanner::ScanString() {
  ++i_;  // the opening quote
  while (true) {
    if (AtEnd()) return false;
    const char c = text_[i_];
    if (c == '"') {
      ++i_;
      return true;
    }
    if (static_cast<unsigned char>(c) < 0x20) return false;
    if (c != '\\') {
      ++i_;
      continue;
    }
    const size_t escape = i_;
    if (i_ + 1 >= text_.size()) {  // ends in the escape: too early
      i_ = text_.size();
      return false;
    }
    const char e = text_[i_ + 1];
    if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
        e == 't') {
      i_ += 2;
      continue;
    }
    uint32_t unit = 0;
    if (e != 'u' || !ScanEscapeUnit(&unit)) {
      i_ = escape;
      return false;
    }
    if (unit >= 0xDC00 && unit <= 0xDFFF) {  // a low surrogate on its own
      i_ = escape;
      return false;
    }
    if (unit >= 0xD800 && unit <= 0xDBFF) {  // a high surrogate needs a low one next
      uint32_t low = 0;
      if (!ScanEscapeUnit(&low) || low < 0xDC00 || low > 0xDFFF) {
        i_ = escape;
        return false;
      }
    }
  }
}

bool Scanner::ScanNumber() {
  const size_t start = i_;
  const bool negative = text_[i_] == '-';
  if (negative) ++i_;
  if (AtEnd() || !IsDigit(text_[i_])) return false;
  const size_t digits_start = i_;
  if (text_[i_] == '0') {
    ++i_;
  } else {
    while (!AtEnd() && IsDigit(text_[i_])) ++i_;
  }
  const size_t digits_end = i_;
  bool integer = true;
  if (!AtEnd() && text_[i_] == '.') {
    integer = false;
    ++i_;
    if (AtEnd() || !IsDigit(text_[i_])) return false;
    while (!AtEnd() && IsDigit(text_[i_])) ++i_;
  }
  if (!AtEnd() && (text_[i_] == 'e' || text_[i_] == 'E')) {
    integer = false;
    ++i_;
    if (!AtEnd() && (text_[i_] == '+' || text_[i_] == '-')) ++i_;
    if (AtEnd() || !IsDigit(text_[i_])) return false;
    while (!AtEnd() && IsDigit(text_[i_])) ++i_;
  }
  if (integer) {
    // simdjson has 64-bit integers only: [-2^63, 2^64 - 1].
    const std::string_view digits = text_.substr(digits_start, digits_end - digits_start);
    const std::string_view limit = negative ? "9223372036854775808" : "18446744073709551615";
    if (digits.size() > limit.size() || (digits.size() == limit.size() && digits > limit)) {
      i_ = start;
      return false;
    }
    return true;
  }
  // A finite double, as simdjson requires (1e400 is an error; underflow is not).
  const char* first = text_.data() + start;
  const char* last = text_.data() + i_;
  double value = 0;
  const std::from_chars_result r = std::from_chars(first, last, value);
  bool overflow = false;
  if (r.ec == std::errc::result_out_of_range) {
    // Out of range is overflow (rounds to infinity) or underflow (rounds to zero); the
    // decimal magnitude tells them apart: integer digits (or minus the fraction's
    // leading zeros) plus the exponent, above 300 for any overflow and below -300 for
    // any underflow.
    const std::string_view number(first, static_cast<size_t>(last - first));
    size_t k = negative ? 1 : 0;
    while (k < number.size() && number[k] == '0') ++k;
    int64_t magnitude = 0;
    while (k < number.size() && IsDigit(number[k])) {
      ++k;
      ++magnitude;
    }
    if (magnitude == 0 && k < number.size() && number[k] == '.') {
      ++k;
      while (k < number.size() && number[k] == '0') {
        ++k;
        --magnitude;
      }
    }
    const size_t e = number.find_first_of("eE");
    if (e != std::string_view::npos) {
      size_t j = e + 1;
      const bool minus = j < number.size() && number[j] == '-';
      if (j < number.size() && (number[j] == '-' || number[j] == '+')) ++j;
      int64_t exponent = 0;
      for (; j < number.size(); ++j) {
        exponent = std::min<int64_t>(exponent * 10 + (number[j] - '0'), int64_t{1} << 40);
      }
      magnitude += minus ? -exponent : exponent;
    }
    overflow = magnitude > 0;
  }
  if (overflow) {
    i_ = start;
    return false;
  }
  return true;
}

bool Scanner::ScanLiteral(std::string_view word) {
  for (size_t k = 0; k < word.size(); ++k) {
    if (AtEnd() || text_[i_] != word[k]) return false;
    ++i_;
  }
  return true;
}

bool Scanner::ScanScalar() {
  const char c = text_[i_];
  if (c == '"') return ScanString();
  if (c == '-' || IsDigit(c)) return ScanNumber();
  if (c == 't') return ScanLiteral("true");
  if (c == 'f') return ScanLiteral("false");
  if (c == 'n') return ScanLiteral("null");
  return false;
}

std::optional<uint64_t> Scanner::Run() {
  std::vector<char> open;  // '{' or '[' per open container
  Want want = Want::kValue;
  while (true) {
    SkipWhitespace();
    switch (want) {
      case Want::kValue:
      case Want::kValueOrClose:
        if (AtEnd()) return i_;
        if (want == Want::kValueOrClose && text_[i_] == ']') {
          ++i_;
          open.pop_back();
          want = Want::kAfterValue;
        } else if (text_[i_] == '{' || text_[i_] == '[') {
          open.push_back(text_[i_]);
          want = text_[i_] == '{' ? Want::kKeyOrClose : Want::kValueOrClose;
          ++i_;
        } else {
          if (!ScanScalar()) return i_;
          want = Want::kAfterValue;
        }
        break;
      case Want::kKeyOrClose:
      case Want::kKey:
        if (AtEnd()) return i_;
        if (want == Want::kKeyOrClose && text_[i_] == '}') {
          ++i_;
          open.pop_back();
          want = Want::kAfterValue;
          break;
        }
        if (text_[i_] != '"' || !ScanString()) return i_;
        SkipWhitespace();
        if (AtEnd() || text_[i_] != ':') return i_;
        ++i_;
        want = Want::kValue;
        break;
      case Want::kAfterValue:
        if (open.empty()) {
          if (AtEnd()) return std::nullopt;
          return i_;  // a second value or other trailing bytes
        }
        if (AtEnd()) return i_;
        if (text_[i_] == ',') {
          want = open.back() == '{' ? Want::kKey : Want::kValue;
        } else if (text_[i_] == (open.back() == '{' ? '}' : ']')) {
          open.pop_back();
        } else {
          return i_;
        }
        ++i_;
        break;
    }
  }
}

}  // namespace

std::optional<uint64_t> JsonSyntaxErrorOffset(std::string_view text) {
  return Scanner(text).Run();
}

}  // namespace shardload
