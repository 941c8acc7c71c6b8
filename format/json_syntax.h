// format/json_syntax.h — where a JSON text first breaks the grammar.
//
// Provides `JsonSyntaxErrorOffset`, used on the error path of the header and index
// parsers: simdjson says *that* a document is invalid ("The JSON document has an
// improper structure"), this says *where*, so an error can name the byte.
//
//   if (std::optional<uint64_t> at = JsonSyntaxErrorOffset(text)) {
//     message += " at byte " + std::to_string(*at);
//   }
#ifndef SHARDLOAD_FORMAT_JSON_SYNTAX_H_
#define SHARDLOAD_FORMAT_JSON_SYNTAX_H_

#include <cstdint>
#include <optional>
#include <string_view>

namespace shardload {

// JsonSyntaxErrorOffset: the offset of the first byte of `text` at which it stops
// being one RFC 8259 JSON value surrounded by optional whitespace (the byte that
// cannot continue it, or text.size() when it ends too early), or nullopt when the
// grammar holds. Also reported: raw control characters in strings (at the character),
// invalid escapes and lone UTF-16 surrogate escapes (at the backslash), and integers
// outside [-2^63, 2^64 - 1] (at the number's first byte), as simdjson rejects them. Not checked: UTF-8 validity and nesting depth (their own errors say
// enough). Iterative: any nesting depth, O(size) time, O(depth) memory.
// Thread-safe (pure function).
std::optional<uint64_t> JsonSyntaxErrorOffset(std::string_view text);

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_JSON_SYNTAX_H_
