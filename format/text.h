// format/text.h — quoting names for messages and JSON output, one way everywhere.
//
// Provides `AppendJsonString` / `JsonQuoted` (a string as a JSON string literal) and
// `QuoteForMessage` (a tensor name inside an error message, one line whatever it holds).
// Tensor names may hold any Unicode, NUL and control characters included.
//
//   std::string json = "{\"name\":" + JsonQuoted(t.name) + "}";
//   return InvalidArgumentError("tensor " + QuoteForMessage(name, '\'') + " is missing");
#ifndef SHARDLOAD_FORMAT_TEXT_H_
#define SHARDLOAD_FORMAT_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace shardload {

// AppendJsonString: append `s` to `out` as a JSON string literal, quotes included.
// '"' and '\' are backslash-escaped; \b \f \n \r \t use their short escapes; other
// control characters and DEL become \u00XX; valid UTF-8 sequences are copied as they
// are; a byte that does not start a valid UTF-8 sequence becomes \u00XX (so the output
// is always valid JSON and the byte stays visible). Never fails.
void AppendJsonString(std::string* out, std::string_view s);

// JsonQuoted: AppendJsonString into a new string.
std::string JsonQuoted(std::string_view s);

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
