// format/json_kind.h — naming simdjson value kinds in error messages.
//
// Provides `JsonKindName`, shared by the header and index parsers so both say
// "expected an object, got an array" the same way.
//
//   return InvalidArgumentError(label + ": weight_map must be an object, got " +
//                               std::string(JsonKindName(value.type())));
#ifndef SHARDLOAD_FORMAT_JSON_KIND_H_
#define SHARDLOAD_FORMAT_JSON_KIND_H_

#include <simdjson.h>

#include <string_view>

namespace shardload {

// JsonKindName: "an object", "an array", "a string", "a number", "a boolean" or "null".
// Never fails.
inline std::string_view JsonKindName(simdjson::dom::element_type type) {
  using T = simdjson::dom::element_type;
  switch (type) {
    case T::OBJECT: return "an object";
    case T::ARRAY: return "an array";
    case T::STRING: return "a string";
    case T::INT64:
    case T::UINT64:
    case T::DOUBLE: return "a number";
    case T::BOOL: return "a boolean";
    case T::NULL_VALUE: return "null";
  }
  return "an unknown value";
}

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_JSON_KIND_H_
