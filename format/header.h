// format/header.h — parse and validate one safetensors file's header.
//
// Provides `TensorInfo`, `Header` and the parsers. Validation follows the safetensors
// reference exactly, and is stricter where the reference is unsafe or misleading
// (duplicate names get their own error; JSON nesting depth is bounded). The parser
// never allocates from an unvalidated length and never trusts a shape product.
//
//   Result<Header> h = ReadHeaderFile("model-00001-of-00002.safetensors");
//   if (!h.ok()) return h.status();   // "model-...: tensor 'w': data_offsets [0, 8) ..."
//   for (const TensorInfo& t : h->tensors)            // in file-offset order
//     std::cout << t.name << " " << DtypeName(t.dtype) << " " << t.size() << "\n";
//   const TensorInfo* w = h->Find("lm_head.weight");  // nullptr when absent
#ifndef SHARDLOAD_FORMAT_HEADER_H_
#define SHARDLOAD_FORMAT_HEADER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"
#include "format/shape.h"
#include "format/scoped_fd.h"
#include "format/status.h"

namespace shardload {

// kMaxHeaderLength: the largest header the reference accepts (decimal 100 MB).
inline constexpr uint64_t kMaxHeaderLength = 100'000'000;

// TensorInfo: one tensor entry. `begin`/`end` are the data_offsets, relative to the
// start of the data section (file offset Header::data_start). Names may hold any
// Unicode, including NUL; they are never C strings.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::kU8;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t size() const { return end - begin; }
  friend bool operator==(const TensorInfo&, const TensorInfo&) = default;
};

// NameHash: the XXH3-64 hash of `name` under a seed chosen at random once per process,
// so a file cannot be crafted to send many names to one slot of a hash index (a
// flooding attack on linear probing). Values differ between processes: never store
// them. Thread-safe.
uint64_t NameHash(std::string_view name);

// NameIndex: a flat open-addressing hash index from tensor name to position in a
// `std::vector<TensorInfo>` it does not own (normally Header::tensors). One array of
// power-of-two size (at least twice the entry count), each slot holding a position and
// 32 bits of the name's NameHash; linear probing; names are compared against the
// vector, so an index is only meaningful together with the vector it was built from
// (positions, not pointers: copying or moving the pair keeps it valid).
// Thread safety: const methods may run concurrently; Build needs exclusive access.
//
//   NameIndex index;
//   size_t dup = index.Build(tensors);            // kNotFound: all names distinct
//   size_t i = index.Lookup("w", tensors);        // kNotFound when absent
class NameIndex {
 public:
  // kNotFound: what Build and Lookup return for "none".
  static constexpr size_t kNotFound = ~size_t{0};

  // Build: index the names of `tensors` (fewer than 2^32 entries), replacing any
  // previous content. Returns kNotFound when all names are distinct, else the position
  // of the first tensor whose name repeats an earlier one (the index then holds the
  // entries before it). Allocates one array; throws std::bad_alloc like std::vector.
  size_t Build(const std::vector<TensorInfo>& tensors);

  // Build (with hashes): the same, with the names' hashes given: `hashes` holds
  // NameHash(tensors[i].name) at index i, and then no name is hashed (a wrong hash
  // gives an index that misses that name). When hashes.size() != tensors.size() the
  // hashes are ignored and the names hashed, as Build(tensors) does.
  size_t Build(const std::vector<TensorInfo>& tensors, std::span<const uint64_t> hashes);

  // Lookup: the position in `tensors` (the vector given to Build) of the tensor
  // called `name`, or kNotFound. O(1) expected; computes one hash, no allocation.
  size_t Lookup(std::string_view name, const std::vector<TensorInfo>& tensors) const;

  // size: the number of names indexed.
  size_t size() const { return size_; }
  // empty: size() == 0.
  bool empty() const { return size_ == 0; }

 private:
  // BuildWith: Build, with the hash of tensors[i].name from hash_of(i).
  template <typename HashOf>
  size_t BuildWith(const std::vector<TensorInfo>& tensors, HashOf hash_of);

  // Each slot: (hash >> 32) << 32 | (position + 1); 0 is an empty slot.
  std::vector<uint64_t> slots_;
  size_t size_ = 0;
};

// Header: a validated header. Tensors are in file-offset order (ties by end), and
// tile [0, data_size) exactly. `metadata` is `__metadata__` (empty when absent or null);
// `has_metadata` tells an empty `{}` (true) from an absent or null one (false).
struct Header {
  uint64_t header_length = 0;  // N, the 8-byte little-endian prefix
  uint64_t data_start = 0;     // 8 + N: file offset of the data section
  uint64_t data_size = 0;      // bytes of the data section (file size - data_start)
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  bool has_metadata = false;  // `__metadata__` is an object, possibly empty
  NameIndex by_name;  // name → index into tensors (see NameIndex::Lookup)

  // Find: the tensor called `name`, or nullptr. O(1) expected, no allocation.
  const TensorInfo* Find(std::string_view name) const;
};

// ParseOptions: knobs of header validation. Defaults match the reference, except
// where noted.
struct ParseOptions {
  // max_depth: deepest JSON nesting accepted (the top-level object is depth 1).
  // Default 32: a valid header needs 3; deeper input is rejected before recursion
  // can exhaust the stack.
  int max_depth = 32;
  // reject_unknown_fields: an unknown key inside a tensor entry is an error when true.
  // Default false: ignored, like the reference.
  bool reject_unknown_fields = false;
};

// ParseHeaderLength: read N from the first 8 bytes (`prefix` holds at least
// min(8, file_size) bytes of the file) and check it against the file size.
// Errors (all data_loss or invalid_argument with "<label>: " first):
//   "<label>: file is N bytes, too small for the 8-byte header length"
//   "<label>: header length N exceeds the limit of 100000000 bytes"
//   "<label>: header length N runs past the end of the file (M bytes)"
Result<uint64_t> ParseHeaderLength(std::span<const std::byte> prefix, uint64_t file_size,
                                   std::string_view label);

// ParseHeader: validate the N header bytes `json` of a file of `file_size` bytes.
// `label` (usually the file name) starts every error message. Byte errors say where:
// "<label>: header is not valid JSON at header byte N (file offset N+8): <simdjson
// error text>", "<label>: header is not valid UTF-8 at header byte N (file offset
// N+8)" (the first byte of the first invalid sequence).
// Thread safety: reentrant; no shared state between threads. Memory: each thread keeps
// its JSON parser for the next call, sized to the largest header up to 16 MiB it has
// parsed (about 3 bytes per header byte stay resident: ~30 MB after a 10 MB header of
// 100k tensors) until the thread exits; larger headers get a parser freed on return.
// ReadHeaderFile, ParseBuffer and Checkpoint::Open parse through here (Open's extra
// reader threads end with the call, so only the calling thread keeps one).
Result<Header> ParseHeader(std::string_view json, uint64_t file_size, std::string_view label,
                           const ParseOptions& options = {});

// ParseBuffer: validate a whole safetensors file held in memory.
Result<Header> ParseBuffer(std::span<const std::byte> file, std::string_view label,
                           const ParseOptions& options = {});

// HeaderFileFacts: what ReadHeaderFile saw of the file besides the header: its
// FileIdentity (taken before the header was read) and the XXH3-64 of its JSON header
// bytes (the N bytes after the 8-byte length).
struct HeaderFileFacts {
  FileIdentity identity;
  uint64_t header_xxh3 = 0;
};

// ReadHeaderFile: open `path`, read the prefix and header with positional reads,
// validate against the file's size. The label in errors is `path` as given. With
// `facts`, what HeaderFileFacts holds goes there. Errors: not_found / permission_denied
// from open; the parse errors above.
Result<Header> ReadHeaderFile(const std::string& path, const ParseOptions& options = {},
                              HeaderFileFacts* facts = nullptr);

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_HEADER_H_
