// format/header.cc — safetensors header framing, JSON parse (simdjson DOM) and
// validation. See format/header.h for the contract and the reference notes (§1, §5)
// for the rules. Everything here is a pure function of its inputs except
// ReadHeaderFile, which does positional reads of one file.
//
// Order of checks (it decides which error a file with several faults reports):
//   1. framing: the 8-byte length, its limit, and that the header fits in the file;
//   2. JSON: UTF-8, syntax, nesting depth, negative zero, top level an object;
//   3. each entry in JSON order: __metadata__ shape, tensor schema, dtype, shape,
//      data_offsets, end >= begin, byte size (overflow, byte boundary, match); an
//      entry failing these whose name appears again reports the duplicate instead;
//   4. duplicate tensor names;
//   5. after sorting by (begin, end, name): the tiling of [0, data end);
//   6. the data section ends exactly at the end of the file.
#include "format/header.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>

#include <simdjson.h>
#include <xxhash.h>
#include "format/scoped_fd.h"
#include "format/text.h"
#include "format/json_kind.h"
#include "format/json_syntax.h"

namespace shardload {
namespace {

// kMaxShapeDimsInMessage: shapes with more dimensions are abbreviated in messages.
constexpr size_t kMaxShapeDimsInMessage = 16;
// kMinDepth / kMaxDepth: the accepted range of ParseOptions::max_depth.
constexpr int kMinDepth = 3;
constexpr int kMaxDepth = 10000;
// kReusedParserLimit: headers up to this size are parsed with a per-thread parser
// whose buffers are kept for the next call (resident: about 3x the largest header,
// measured: ~30 MB per thread after a 10.5 MB header).
constexpr size_t kReusedParserLimit = 16u << 20;

constexpr std::string_view kMetadataKey = "__metadata__";

std::string QuoteForMessage(std::string_view text) { return QuoteNameForMessage(text); }

// ShapeForMessage: ShapeToString, abbreviated beyond kMaxShapeDimsInMessage dims.
std::string ShapeForMessage(std::span<const uint64_t> shape) {
  if (shape.size() <= kMaxShapeDimsInMessage) return ShapeToString(shape);
  std::string s = "[";
  for (size_t i = 0; i < 8; ++i) s += std::to_string(shape[i]) + ", ";
  s += "... " + std::to_string(shape.size() - 10) + " more ..., ";
  s += std::to_string(shape[shape.size() - 2]) + ", " + std::to_string(shape.back()) + "]";
  return s;
}

std::string Range(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

std::string_view TypeName(simdjson::dom::element_type type) { return JsonKindName(type); }

// KeyIs: key == literal, with the literal's length known at compile time (an inline
// compare instead of a memcmp call per field).
template <size_t N>
bool KeyIs(std::string_view key, const char (&literal)[N]) {
  return key.size() == N - 1 && std::memcmp(key.data(), literal, N - 1) == 0;
}

// FastOk: an OK Status, like OkStatus(), for the per-tensor path. `Status()` is a
// value-initialization, which zero-fills the object before constructing it (a
// `rep stos`, slow to start, per call); a default-initialized local returned by name
// is constructed in place without it.
inline Status FastOk() {
  Status ok;
  return ok;
}

// OffsetLess: the order of Header::tensors: by begin, then end, then name.
bool OffsetLess(const TensorInfo& a, const TensorInfo& b) {
  if (a.begin != b.begin) return a.begin < b.begin;
  if (a.end != b.end) return a.end < b.end;
  return a.name < b.name;
}

// OrderScan: the order and tiling checks, done one tensor at a time as the tensors
// are appended (while each is still in cache) instead of in passes over the vector.
// Not thread-safe; a value type (CheckTiling takes a copy and may restart it).
class OrderScan {
 public:
  // kNoFault: fault() when the tensors added so far tile [0, running()) exactly.
  static constexpr size_t kNoFault = ~size_t{0};

  // Add: takes tensors[i], after tensors[0, i) were added in order.
  void Add(const std::vector<TensorInfo>& tensors, size_t i) {
    if (!sorted_) return;
    const TensorInfo& t = tensors[i];
    if (i > 0 && OffsetLess(t, tensors[i - 1])) {  // std::is_sorted's test
      sorted_ = false;
      return;
    }
    if (fault_ != kNoFault) return;
    if (t.begin != running_) {
      fault_ = i;
    } else {
      running_ = t.end;
    }
  }

  // sorted: whether the tensors added are in OffsetLess order (fault() and running()
  // only mean something while this holds).
  bool sorted() const { return sorted_; }
  // fault: the first position whose begin is not the end of the one before (a gap
  // when greater, an overlap when less), or kNoFault.
  size_t fault() const { return fault_; }
  // running: the end of the tiling before fault() (of all the tensors when none).
  uint64_t running() const { return running_; }

 private:
  bool sorted_ = true;
  size_t fault_ = kNoFault;
  uint64_t running_ = 0;
};

// Context of one header parse: builds the messages.
class HeaderParser {
 public:
  HeaderParser(std::string_view label, const ParseOptions& options)
      : label_(label), options_(options) {}

  Result<Header> Parse(const char* json, size_t size, bool padded, uint64_t file_size);

 private:
  Status Error(StatusCode code, std::string_view what) const {
    std::string m;
    m.reserve(label_.size() + 2 + what.size());
    m.append(label_).append(": ").append(what);
    return Status(code, std::move(m));
  }
  Status TensorError(StatusCode code, std::string_view name, std::string_view what) const {
    return Error(code, "tensor " + QuoteForMessage(name) + ": " + std::string(what));
  }

  Status CheckNoNegativeZero(const char* json, size_t size) const;
  Status ReadMetadata(simdjson::dom::element value, Header& header) const;
  Status ReadTensor(std::string_view name, simdjson::dom::element value, TensorInfo& out) const;
  Status ReadUnsigned(std::string_view name, std::string_view field, size_t index,
                      simdjson::dom::element value, uint64_t& out) const;
  // CheckTiling: sort header.tensors into OffsetLess order (permuting `hashes`, their
  // NameHash values, alike), index the names, then check that the tensors tile
  // [0, data end) and set header.data_size. `scan` is the OrderScan of the tensors
  // as parsed.
  Status CheckTiling(Header& header, std::vector<uint64_t>& hashes, OrderScan scan) const;

  std::string_view label_;
  const ParseOptions& options_;
  // The dtype of the last entry that named one (a cache for DtypeFromName);
  // last_dtype_name_ views DtypeName's static text.
  mutable std::string_view last_dtype_name_;
  mutable Dtype last_dtype_ = Dtype::kU8;
  mutable int last_dtype_bits_ = DtypeBits(Dtype::kU8);  // DtypeBits(last_dtype_)
};

// ReadSmallUnsigned: `value` as a non-negative integer below 2^63 (simdjson stores
// every integer below 2^63 as INT64), or false for anything else, which the caller
// then hands to HeaderParser::ReadUnsigned for the value or the error. No Status on
// the common path.
inline bool ReadSmallUnsigned(simdjson::dom::element value, uint64_t& out) {
  simdjson::simdjson_result<int64_t> v = value.get_int64();
  if (v.error() != simdjson::SUCCESS || v.value_unsafe() < 0) return false;
  out = static_cast<uint64_t>(v.value_unsafe());
  return true;
}

Status HeaderParser::ReadUnsigned(std::string_view name, std::string_view field, size_t index,
                                  simdjson::dom::element value, uint64_t& out) const {
  using T = simdjson::dom::element_type;
  switch (value.type()) {
    case T::UINT64:
      out = value.get_uint64().value_unsafe();
      return OkStatus();
    case T::INT64: {
      int64_t v = value.get_int64().value_unsafe();
      if (v >= 0) {
        out = static_cast<uint64_t>(v);
        return OkStatus();
      }
      return TensorError(StatusCode::kInvalidArgument, name,
                         std::string(field) + "[" + std::to_string(index) +
                             "] must be a non-negative integer, got " + std::to_string(v));
    }
    case T::DOUBLE:
      return TensorError(StatusCode::kInvalidArgument, name,
                         std::string(field) + "[" + std::to_string(index) +
                             "] must be a non-negative integer, got a number with a fraction "
                             "or exponent");
    default:
      return TensorError(StatusCode::kInvalidArgument, name,
                         std::string(field) + "[" + std::to_string(index) +
                             "] must be a non-negative integer, got " +
                             std::string(TypeName(value.type())));
  }
}

Status HeaderParser::ReadMetadata(simdjson::dom::element value, Header& header) const {
  using T = simdjson::dom::element_type;
  if (value.type() == T::NULL_VALUE) return OkStatus();  // same as absent
  if (value.type() != T::OBJECT) {
    return Error(StatusCode::kInvalidArgument,
                 "__metadata__ must be an object of strings, got " +
                     std::string(TypeName(value.type())));
  }
  header.has_metadata = true;
  simdjson::dom::object object = value.get_object().value_unsafe();
  for (simdjson::dom::key_value_pair kv : object) {
    if (kv.value.type() != T::STRING) {
      return Error(StatusCode::kInvalidArgument,
                   "__metadata__ key " + QuoteForMessage(kv.key) + " must map to a string, got " +
                       std::string(TypeName(kv.value.type())));
    }
    std::string_view text = kv.value.get_string().value_unsafe();
    auto [it, inserted] = header.metadata.try_emplace(std::string(kv.key), text);
    if (!inserted) {
      return Error(StatusCode::kInvalidArgument,
                   "__metadata__ has duplicate key " + QuoteForMessage(kv.key));
    }
  }
  return OkStatus();
}

Status HeaderParser::ReadTensor(std::string_view name, simdjson::dom::element value,
                                TensorInfo& out) const {
  using T = simdjson::dom::element_type;
  if (value.type() != T::OBJECT) {
    return TensorError(StatusCode::kInvalidArgument, name,
                       "entry must be an object, got " + std::string(TypeName(value.type())));
  }
  bool have_dtype = false, have_shape = false, have_offsets = false;
  simdjson::dom::object fields = value.get_object().value_unsafe();
  for (simdjson::dom::key_value_pair kv : fields) {
    std::string_view key = kv.key;
    if (KeyIs(key, "dtype")) {
      if (have_dtype) return TensorError(StatusCode::kInvalidArgument, name, "duplicate field 'dtype'");
      have_dtype = true;
      if (kv.value.type() != T::STRING) {
        return TensorError(StatusCode::kInvalidArgument, name,
                           "dtype must be a string, got " + std::string(TypeName(kv.value.type())));
      }
      std::string_view dtype_name = kv.value.get_string().value_unsafe();
      // Headers hold long runs of one dtype. (The cache starts empty, and no dtype is
      // called "": an empty name never hits it.)
      if (!last_dtype_name_.empty() && dtype_name == last_dtype_name_) {
        out.dtype = last_dtype_;
        continue;
      }
      Result<Dtype> dtype = DtypeFromName(dtype_name);
      if (!dtype.ok()) {
        // DtypeFromName's message ("unknown dtype 'f32'") does not escape the name.
        return TensorError(StatusCode::kInvalidArgument, name,
                           "unknown dtype " +
                               QuoteForMessage(kv.value.get_string().value_unsafe()));
      }
      out.dtype = *dtype;
      last_dtype_name_ = DtypeName(*dtype);
      last_dtype_ = *dtype;
      last_dtype_bits_ = DtypeBits(*dtype);
    } else if (KeyIs(key, "shape")) {
      if (have_shape) return TensorError(StatusCode::kInvalidArgument, name, "duplicate field 'shape'");
      have_shape = true;
      if (kv.value.type() != T::ARRAY) {
        return TensorError(StatusCode::kInvalidArgument, name,
                           "shape must be an array, got " + std::string(TypeName(kv.value.type())));
      }
      simdjson::dom::array dims = kv.value.get_array().value_unsafe();
      out.shape.reserve(dims.size());  // size() saturates at 2^24-1; only a hint
      size_t i = 0;
      for (simdjson::dom::element dim : dims) {
        uint64_t d = 0;
        if (!ReadSmallUnsigned(dim, d)) SL_RETURN_IF_ERROR(ReadUnsigned(name, "shape", i, dim, d));
        out.shape.push_back(d);
        ++i;
      }
    } else if (KeyIs(key, "data_offsets")) {
      if (have_offsets) {
        return TensorError(StatusCode::kInvalidArgument, name, "duplicate field 'data_offsets'");
      }
      have_offsets = true;
      if (kv.value.type() != T::ARRAY) {
        return TensorError(StatusCode::kInvalidArgument, name,
                           "data_offsets must be an array of 2 integers, got " +
                               std::string(TypeName(kv.value.type())));
      }
      // Read straight into out.begin and out.end (a local pair copied into them
      // compiled to one 16-byte load of two 8-byte stores, which stalls).
      size_t count = 0;
      simdjson::dom::array elements = kv.value.get_array().value_unsafe();
      for (simdjson::dom::element e : elements) {
        if (count < 2) {
          uint64_t& offset = count == 0 ? out.begin : out.end;
          if (!ReadSmallUnsigned(e, offset)) {
            SL_RETURN_IF_ERROR(ReadUnsigned(name, "data_offsets", count, e, offset));
          }
        }
        ++count;
      }
      if (count != 2) {
        return TensorError(StatusCode::kInvalidArgument, name,
                           "data_offsets must be an array of 2 integers, got " +
                               std::to_string(count) + (count == 1 ? " element" : " elements"));
      }
    } else if (options_.reject_unknown_fields) {
      return TensorError(StatusCode::kInvalidArgument, name,
                         "unknown field " + QuoteForMessage(key));
    }
  }
  if (!have_dtype) return TensorError(StatusCode::kInvalidArgument, name, "missing field 'dtype'");
  if (!have_shape) return TensorError(StatusCode::kInvalidArgument, name, "missing field 'shape'");
  if (!have_offsets) {
    return TensorError(StatusCode::kInvalidArgument, name, "missing field 'data_offsets'");
  }
  if (out.end < out.begin) {
    return TensorError(StatusCode::kInvalidArgument, name,
                       "data_offsets " + Range(out.begin, out.end) + " end before they begin");
  }
  // The byte size as TensorByteSize computes it, inline and without a Result;
  // TensorByteSize itself (for its message) only when the product overflows, ends off
  // a byte boundary or does not match.
  const uint64_t dtype_bits = static_cast<uint64_t>(
      out.dtype == last_dtype_ ? last_dtype_bits_ : DtypeBits(out.dtype));
  uint64_t elements = 1;
  bool size_fault = false;
  for (uint64_t d : out.shape) size_fault |= __builtin_mul_overflow(elements, d, &elements);
  uint64_t bits = 0;
  size_fault |= __builtin_mul_overflow(elements, dtype_bits, &bits);
  if (!size_fault && bits % 8 == 0 && out.end - out.begin == bits / 8) return FastOk();
  Result<uint64_t> bytes = TensorByteSize(out.dtype, out.shape);
  if (!bytes.ok()) {
    // Keep dtype.h's wording for ordinary shapes; abbreviate pathological ones.
    if (out.shape.size() <= kMaxShapeDimsInMessage) {
      return TensorError(bytes.status().code(), name, bytes.status().message());
    }
    std::string what = std::string(DtypeName(out.dtype)) + ShapeForMessage(out.shape);
    return TensorError(bytes.status().code(), name,
                       bytes.status().code() == StatusCode::kOutOfRange
                           ? "overflow computing the byte size of " + what
                           : what + " does not end on a byte boundary");
  }
  if (out.end - out.begin != *bytes) {
    return TensorError(StatusCode::kInvalidArgument, name,
                       "data_offsets " + Range(out.begin, out.end) + " do not match " +
                           std::string(DtypeName(out.dtype)) + ShapeForMessage(out.shape) + " (" +
                           std::to_string(*bytes) + (*bytes == 1 ? " byte)" : " bytes)"));
  }
  return OkStatus();
}

// JsonKeyIs: whether the raw (still escaped) string contents [begin, end) of valid JSON
// decode to the ASCII text `want` ("\u0073hape" is "shape").
bool JsonKeyIs(const char* begin, const char* end, std::string_view want) {
  size_t k = 0;
  for (const char* p = begin; p < end; ++k) {
    char c = *p++;
    if (c == '\\') {
      if (p >= end) return false;
      char e = *p++;
      if (e == 'u') {
        if (end - p < 4) return false;
        int v = 0;
        for (int i = 0; i < 4; ++i) {
          int d = HexDigitValue(*p++);
          if (d < 0) return false;
          v = v * 16 + d;
        }
        if (v > 0x7f) return false;  // `want` is ASCII
        c = static_cast<char>(v);
      } else {
        // '"', '\\' and '/' stand for themselves; b, f, n, r, t decode to controls,
        // which `want` never holds.
        if (e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') return false;
        c = e;
      }
    }
    if (k >= want.size() || want[k] != c) return false;
  }
  return k == want.size();
}

// CheckNoNegativeZero: simdjson reads the integer `-0` as 0, but the reference
// (serde_json) reads it as the float -0.0, which it rejects as a shape or offset entry
// and ignores in fields it does not know. So a `-0` that is a direct element of a
// tensor's "shape" or "data_offsets" array (keys compared after unescaping) is
// rejected, anywhere else accepted. Finding "-0" pairs is one memchr pass; the bytes
// before each are classified once, in one forward scan (string state, depth, and
// whether the array open at depth 3 is a shape or data_offsets array): linear time
// whatever the header holds.
Status HeaderParser::CheckNoNegativeZero(const char* json, size_t size) const {
  const char* end = json + size;
  const char* p = json;  // string-state scan position; bytes before it are classified
  bool in_string = false;
  int depth = 0;  // open objects and arrays before p, outside strings
  const char* key_begin = nullptr;  // contents of the last string opened at depth 2
  const char* key_end = nullptr;
  bool checked_array = false;  // the container open at depth 3 is shape/data_offsets
  for (const char* hit = json;
       (hit = static_cast<const char*>(std::memchr(hit, '-', end - hit))) != nullptr; ++hit) {
    if (hit + 1 >= end || hit[1] != '0') continue;
    // Advance the string state up to the hit. The JSON is already valid, so outside
    // strings a backslash never occurs and inside one it starts an escape.
    while (p < hit) {
      char c = *p;
      if (in_string && c == '\\') {
        p += 2;
        continue;
      }
      if (c == '"') {
        in_string = !in_string;
        if (depth == 2) (in_string ? key_begin : key_end) = in_string ? p + 1 : p;
      } else if (!in_string) {
        if (c == '{' || c == '[') {
          ++depth;
          // A container opening at depth 3 is the value of the key just read at depth 2.
          if (depth == 3) {
            checked_array = c == '[' && key_begin != nullptr && key_end >= key_begin &&
                            (JsonKeyIs(key_begin, key_end, "shape") ||
                             JsonKeyIs(key_begin, key_end, "data_offsets"));
          }
        }
        if (c == '}' || c == ']') --depth;
      }
      ++p;
    }
    if (p != hit || in_string || depth != 3 || !checked_array) continue;
    const char* next = hit + 2;
    bool is_float = next < end && (*next == '.' || *next == 'e' || *next == 'E');
    bool is_exponent = hit > json && (hit[-1] == 'e' || hit[-1] == 'E');
    if (!is_float && !is_exponent) {
      return Error(StatusCode::kInvalidArgument,
                   "header has the number -0 at header byte " + std::to_string(hit - json) +
                       "; shape and data_offsets entries must be non-negative integers");
    }
  }
  return OkStatus();
}

Status HeaderParser::CheckTiling(Header& header, std::vector<uint64_t>& hashes,
                                 OrderScan scan) const {
  std::vector<TensorInfo>& tensors = header.tensors;
  // Writers usually emit offset order; sort (an index, then one permutation) only
  // when needed.
  if (!scan.sorted()) {
    std::vector<uint32_t> order(tensors.size());
    std::iota(order.begin(), order.end(), 0u);
    std::sort(order.begin(), order.end(),
              [&](uint32_t a, uint32_t b) { return OffsetLess(tensors[a], tensors[b]); });
    std::vector<TensorInfo> sorted;
    sorted.reserve(tensors.size());
    std::vector<uint64_t> sorted_hashes(tensors.size());
    for (size_t k = 0; k < order.size(); ++k) {
      sorted.push_back(std::move(tensors[order[k]]));
      sorted_hashes[k] = hashes[order[k]];
    }
    tensors = std::move(sorted);
    hashes = std::move(sorted_hashes);
    scan = OrderScan();
    for (size_t i = 0; i < tensors.size(); ++i) scan.Add(tensors, i);
  }
  if (size_t dup = header.by_name.Build(tensors, hashes); dup != NameIndex::kNotFound) {
    return Error(StatusCode::kInvalidArgument,
                 "duplicate tensor name " + QuoteForMessage(tensors[dup].name));
  }
  if (scan.fault() != OrderScan::kNoFault) {
    const TensorInfo& t = tensors[scan.fault()];
    if (t.begin > scan.running()) {
      return TensorError(StatusCode::kInvalidArgument, t.name,
                         "data_offsets " + Range(t.begin, t.end) + " leave a gap after byte " +
                             std::to_string(scan.running()));
    }
    const TensorInfo& prev = tensors[scan.fault() - 1];  // running > 0 implies fault > 0
    return TensorError(StatusCode::kInvalidArgument, t.name,
                       "data_offsets " + Range(t.begin, t.end) + " overlap tensor " +
                           QuoteForMessage(prev.name) + " at " + Range(prev.begin, prev.end));
  }
  header.data_size = scan.running();
  return OkStatus();
}

Result<Header> HeaderParser::Parse(const char* json, size_t size, bool padded,
                                   uint64_t file_size) {
  if (options_.max_depth < kMinDepth || options_.max_depth > kMaxDepth) {
    return InvalidArgumentError("ParseOptions.max_depth must be in [" +
                                std::to_string(kMinDepth) + ", " + std::to_string(kMaxDepth) +
                                "], got " + std::to_string(options_.max_depth));
  }
  if (size > kMaxHeaderLength) {
    return Error(StatusCode::kInvalidArgument,
                 "header length " + std::to_string(size) + " exceeds the limit of " +
                     std::to_string(kMaxHeaderLength) + " bytes");
  }
  Header header;
  header.header_length = size;
  header.data_start = 8 + size;  // size <= 1e8: no overflow
  if (file_size < header.data_start) {
    return Error(StatusCode::kDataLoss, "header length " + std::to_string(size) +
                                            " runs past the end of the file (" +
                                            std::to_string(file_size) + " bytes)");
  }

  // Reuse this thread's parser for headers up to kReusedParserLimit: a fresh parser's
  // buffers (about 14 bytes per header byte, virtual) cost more in page faults than
  // the parse itself. Larger headers get a one-off parser, freed on return.
  thread_local simdjson::dom::parser reused_parser;
  std::unique_ptr<simdjson::dom::parser> one_off;
  simdjson::dom::parser* parser = &reused_parser;
  if (size > kReusedParserLimit) {
    one_off = std::make_unique<simdjson::dom::parser>();
    parser = one_off.get();
  }
  simdjson::error_code err = simdjson::SUCCESS;
  // simdjson counts one level more than we do for a container that holds a value
  // ("[1]" needs 2, "[]" needs 1); our depth is the container nesting. (An empty
  // container one level below max_depth is therefore also accepted.)
  size_t depth = static_cast<size_t>(options_.max_depth) + 1;
  if (parser->capacity() < size || parser->max_depth() != depth) {
    err = parser->allocate(std::max<size_t>({size, parser->capacity(), 64}), depth);
  }
  simdjson::dom::element root;
  // Unpadded input is copied into the parser's own padded buffer (reused, like the
  // parser); the DOM keeps its strings in the parser, never pointing into `json`.
  if (!err) err = parser->parse(json, size, /*realloc_if_needed=*/!padded).get(root);
  if (err) {
    switch (err) {
      case simdjson::UTF8_ERROR: {
        std::string what = "header is not valid UTF-8";
        if (std::optional<size_t> at = Utf8ErrorOffset({json, size})) {
          what += " at header byte " + std::to_string(*at) + " (file offset " +
                  std::to_string(8 + *at) + ")";
        }
        return Error(StatusCode::kInvalidArgument, what);
      }
      case simdjson::DEPTH_ERROR:
        return Error(StatusCode::kInvalidArgument,
                     "header nests deeper than " + std::to_string(options_.max_depth) +
                         " levels");
      case simdjson::MEMALLOC:
        return Error(StatusCode::kResourceExhausted,
                     "cannot allocate memory to parse a header of " + std::to_string(size) +
                         " bytes");
      default: {
        std::string what = "header is not valid JSON";
        if (std::optional<uint64_t> at = JsonSyntaxErrorOffset({json, size})) {
          what += " at header byte " + std::to_string(*at) + " (file offset " +
                  std::to_string(8 + *at) + ")";
        }
        return Error(StatusCode::kInvalidArgument,
                     what + ": " + simdjson::error_message(err));
      }
    }
  }
  SL_RETURN_IF_ERROR(CheckNoNegativeZero(json, size));
  if (root.type() != simdjson::dom::element_type::OBJECT) {
    return Error(StatusCode::kInvalidArgument,
                 "header must be a JSON object, got " + std::string(TypeName(root.type())));
  }
  simdjson::dom::object top = root.get_object().value_unsafe();
  header.tensors.reserve(top.size());  // saturates at 2^24-1; only a hint
  // hashes[i]: NameHash(header.tensors[i].name), computed while the name is in cache.
  std::vector<uint64_t> hashes;
  hashes.reserve(top.size());
  OrderScan scan;
  bool have_metadata = false;
  for (simdjson::dom::key_value_pair kv : top) {
    if (kv.key == kMetadataKey) {
      if (have_metadata) return Error(StatusCode::kInvalidArgument, "duplicate __metadata__ entry");
      have_metadata = true;
      SL_RETURN_IF_ERROR(ReadMetadata(kv.value, header));
      continue;
    }
    TensorInfo& t = header.tensors.emplace_back();
    t.name = std::string(kv.key);  // constructed at its size: cheaper than assign()
    if (Status s = ReadTensor(kv.key, kv.value, t); !s.ok()) {
      // An entry whose name comes again is one the reference ignores (it keeps the
      // last): the duplicate is the fault to report, not what is wrong with this one.
      int seen = 0;
      for (simdjson::dom::key_value_pair other : top) {
        if (other.key == kv.key && ++seen == 2) {
          return Error(StatusCode::kInvalidArgument,
                       "duplicate tensor name " + QuoteForMessage(t.name));
        }
      }
      return s;
    }
    hashes.push_back(NameHash(kv.key));
    scan.Add(header.tensors, header.tensors.size() - 1);
  }
  SL_RETURN_IF_ERROR(CheckTiling(header, hashes, scan));

  uint64_t data_end = 0;
  if (__builtin_add_overflow(header.data_start, header.data_size, &data_end)) {
    return Error(StatusCode::kOutOfRange,
                 "data section of " + std::to_string(header.data_size) + " bytes after byte " +
                     std::to_string(header.data_start) + " ends past the largest file offset");
  }
  if (data_end < file_size) {
    return Error(StatusCode::kInvalidArgument,
                 "data section ends at byte " + std::to_string(data_end) + " but the file has " +
                     std::to_string(file_size) + " bytes");
  }
  if (data_end > file_size) {
    // Name the first tensor (in file order) that the end of the file cuts into.
    const TensorInfo* cut = nullptr;
    for (const TensorInfo& t : header.tensors) {
      if (header.data_start + t.end > file_size && (cut == nullptr || t.begin < cut->begin)) {
        cut = &t;
      }
    }
    std::string first;
    if (cut != nullptr) {
      first = "; tensor " + QuoteForMessage(cut->name) + " at file bytes [" +
              std::to_string(header.data_start + cut->begin) + ", " +
              std::to_string(header.data_start + cut->end) + ") is the first cut off";
    }
    return Error(StatusCode::kDataLoss,
                 "data section ends at byte " + std::to_string(data_end) +
                     " but the file is truncated at " + std::to_string(file_size) + " bytes" +
                     first);
  }
  return header;
}

}  // namespace

uint64_t NameHash(std::string_view name) {
  static const uint64_t seed = [] {
    uint64_t s = static_cast<uint64_t>(
        std::chrono::steady_clock::now().time_since_epoch().count());
    s ^= reinterpret_cast<uintptr_t>(&s);  // ASLR
    try {
      std::random_device rd;
      s ^= (uint64_t{rd()} << 32) ^ rd();
    } catch (const std::exception&) {
      // No random device: the clock and the stack address above still vary.
    }
    return s;
  }();
  return XXH3_64bits_withSeed(name.data(), name.size(), seed);
}

template <typename HashOf>
size_t NameIndex::BuildWith(const std::vector<TensorInfo>& tensors, HashOf hash_of) {
  size_ = 0;
  slots_.clear();
  // Capacity: a power of two at least twice the entry count (load <= 1/2), min 8.
  size_t capacity = 8;
  while (capacity < 2 * tensors.size()) capacity *= 2;
  slots_.assign(capacity, 0);
  const size_t mask = capacity - 1;
  uint64_t* slots = slots_.data();
  // In blocks, one ahead: hash the next block of names (read in order) and prefetch
  // their slots, then insert this block's, so that the random slot accesses overlap
  // each other and the hashing instead of each waiting for its own cache miss.
  constexpr size_t kBlock = 32;
  uint64_t hashes[2][kBlock];
  const size_t count = tensors.size();
  auto hash_block = [&](size_t base, uint64_t* out) {
    const size_t n = std::min(kBlock, count - base);
    for (size_t k = 0; k < n; ++k) {
      out[k] = hash_of(base + k);
      __builtin_prefetch(&slots[static_cast<size_t>(out[k]) & mask], 1);
    }
  };
  if (count > 0) hash_block(0, hashes[0]);
  for (size_t base = 0, b = 0; base < count; base += kBlock, b ^= 1) {
    if (base + kBlock < count) hash_block(base + kBlock, hashes[b ^ 1]);
    const uint64_t* block = hashes[b];
    const size_t n = std::min(kBlock, count - base);
    for (size_t k = 0; k < n; ++k) {
      const size_t i = base + k;
      const uint64_t tag = block[k] & 0xFFFFFFFF00000000ull;
      for (size_t s = static_cast<size_t>(block[k]) & mask;; s = (s + 1) & mask) {
        uint64_t slot = slots[s];
        if (slot == 0) {
          slots[s] = tag | (static_cast<uint64_t>(i) + 1);
          ++size_;
          break;
        }
        if ((slot & 0xFFFFFFFF00000000ull) == tag &&
            tensors[static_cast<uint32_t>(slot) - 1].name == tensors[i].name) {
          return i;
        }
      }
    }
  }
  return kNotFound;
}

size_t NameIndex::Build(const std::vector<TensorInfo>& tensors) {
  return BuildWith(tensors, [&](size_t i) { return NameHash(tensors[i].name); });
}

size_t NameIndex::Build(const std::vector<TensorInfo>& tensors,
                        std::span<const uint64_t> hashes) {
  if (hashes.size() != tensors.size()) return Build(tensors);
  return BuildWith(tensors, [&](size_t i) { return hashes[i]; });
}

size_t NameIndex::Lookup(std::string_view name, const std::vector<TensorInfo>& tensors) const {
  if (slots_.empty()) return kNotFound;
  uint64_t hash = NameHash(name);
  uint64_t tag = hash & 0xFFFFFFFF00000000ull;
  const size_t mask = slots_.size() - 1;
  for (size_t s = static_cast<size_t>(hash) & mask;; s = (s + 1) & mask) {
    uint64_t slot = slots_[s];
    if (slot == 0) return kNotFound;
    if ((slot & 0xFFFFFFFF00000000ull) == tag) {
      size_t i = static_cast<uint32_t>(slot) - 1;
      if (i < tensors.size() && tensors[i].name == name) return i;
    }
  }
}

const TensorInfo* Header::Find(std::string_view name) const {
  size_t i = by_name.Lookup(name, tensors);
  return i == NameIndex::kNotFound ? nullptr : &tensors[i];
}

Result<uint64_t> ParseHeaderLength(std::span<const std::byte> prefix, uint64_t file_size,
                                   std::string_view label) {
  std::string l(label);
  if (file_size < 8) {
    return DataLossError(l + ": file is " + std::to_string(file_size) +
                         (file_size == 1 ? " byte" : " bytes") +
                         ", too small for the 8-byte header length");
  }
  if (prefix.size() < 8) {
    return InvalidArgumentError(l + ": ParseHeaderLength needs the first 8 bytes of the file, got " +
                                std::to_string(prefix.size()));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(prefix[i]);
  if (n > kMaxHeaderLength) {
    return InvalidArgumentError(l + ": header length " + std::to_string(n) +
                                " exceeds the limit of " + std::to_string(kMaxHeaderLength) +
                                " bytes");
  }
  if (n > file_size - 8) {
    return DataLossError(l + ": header length " + std::to_string(n) +
                         " runs past the end of the file (" + std::to_string(file_size) +
                         " bytes)");
  }
  return n;
}

Result<Header> ParseHeader(std::string_view json, uint64_t file_size, std::string_view label,
                           const ParseOptions& options) {
  try {
    return HeaderParser(label, options).Parse(json.data(), json.size(), /*padded=*/false, file_size);
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(std::string(label) + ": out of memory parsing the header");
  }
}

Result<Header> ParseBuffer(std::span<const std::byte> file, std::string_view label,
                           const ParseOptions& options) {
  SL_ASSIGN_OR_RETURN(uint64_t n,
                      ParseHeaderLength(file.first(std::min<size_t>(file.size(), 8)),
                                        file.size(), label));
  std::string_view json(reinterpret_cast<const char*>(file.data()) + 8, n);
  return ParseHeader(json, file.size(), label, options);
}

Result<Header> ReadHeaderFile(const std::string& path, const ParseOptions& options,
                              HeaderFileFacts* facts) {
  try {
    uint64_t file_size = 0;
    SL_ASSIGN_OR_RETURN(ScopedFd fd, OpenRegularFile(path, &file_size));
    if (facts != nullptr) {
      struct stat st;
      if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, path);
      facts->identity = IdentityOf(st);
    }

    std::byte prefix[8] = {};
    SL_ASSIGN_OR_RETURN(size_t got,
                        PreadFully(fd.get(), reinterpret_cast<char*>(prefix),
                                   std::min<uint64_t>(file_size, 8), 0, path));
    if (got < std::min<uint64_t>(file_size, 8)) {
      return DataLossError(path + ": file shrank to " + std::to_string(got) +
                           " bytes while its header was read");
    }
    SL_ASSIGN_OR_RETURN(uint64_t n,
                        ParseHeaderLength(std::span<const std::byte>(prefix, got), file_size, path));
    // n is now at most kMaxHeaderLength and inside the file: safe to allocate, with
    // simdjson's padding so the parser needs no second copy.
    std::unique_ptr<char[]> buf(new (std::nothrow) char[n + simdjson::SIMDJSON_PADDING]);
    if (!buf) {
      return ResourceExhaustedError(path + ": cannot allocate " + std::to_string(n) +
                                    " bytes for the header");
    }
    SL_ASSIGN_OR_RETURN(got, PreadFully(fd.get(), buf.get(), n, 8, path));
    if (got < n) {
      return DataLossError(path + ": file shrank while its header was read (got " +
                           std::to_string(got) + " of " + std::to_string(n) + " header bytes)");
    }
    std::memset(buf.get() + n, 0, simdjson::SIMDJSON_PADDING);
    if (facts != nullptr) facts->header_xxh3 = XXH3_64bits(buf.get(), n);
    return HeaderParser(path, options).Parse(buf.get(), n, /*padded=*/true, file_size);
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(path + ": out of memory reading the header");
  }
}

}  // namespace shardload
