// format/checksum.h — per-tensor XXH3-64 checksums and their place in `__metadata__`.
//
// Provides the hash the project uses to fingerprint tensor bytes, a streaming hasher
// (the loader sees a tensor in pieces), the 16-digit hex form, and the encoding of
// recorded hashes as `__metadata__` entries, one key per tensor:
//
//   "__metadata__": {"shardload.xxh3.model.embed.weight": "2d06800538d394c2", ...}
//
// Choice of hash: XXH3-64 with seed 0 over exactly the tensor's bytes (its data_offsets
// range; dtype and shape are not mixed in — compare them separately). 64 bits detect
// corruption (not an adversary) with a miss rate of 2^-64 per tensor and cost 16 hex
// characters of header per tensor; XXH3 runs at memory speed, so checking hashes while
// loading is nearly free. The values are the ones `xxhsum -H3` prints.
//
// Choice of encoding: one key per tensor, `kChecksumKeyPrefix` + the tensor name,
// value the lowercase hex digest. A JSON key may hold any Unicode string, so every
// tensor name (with '=', ';', '"', NUL, ...) has an unambiguous key and no escaping scheme
// of our own is needed; values stay strings, as the format demands. Each entry adds
// about len(name) + 40 bytes of header (15 000 tensors with 60-byte names: ~1.5 MB,
// far below the 100 MB limit). Other metadata keys are left alone.
//
//   Xxh3Hasher h;
//   for (std::span<const std::byte> piece : pieces) h.Update(piece);
//   std::string hex = FormatXxh3(h.Digest());                // "2d06800538d394c2"
//
//   std::map<std::string, std::string> md = header.metadata;
//   AddChecksumsToMetadata({{"w", h.Digest()}}, md);          // md["shardload.xxh3.w"]
//   SL_ASSIGN_OR_RETURN(ChecksumMap recorded, ParseChecksumMetadata(md, "model.safetensors"));
//   SL_RETURN_IF_ERROR(CheckTensorChecksum("model.safetensors", "w", /*file_offset=*/80,
//                                          /*bytes=*/12, recorded.at("w"), got));
#ifndef SHARDLOAD_FORMAT_CHECKSUM_H_
#define SHARDLOAD_FORMAT_CHECKSUM_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "format/status.h"

namespace shardload {

// kChecksumKeyPrefix: the `__metadata__` key of tensor NAME's hash is this + NAME.
inline constexpr std::string_view kChecksumKeyPrefix = "shardload.xxh3.";

// ChecksumMap: tensor name → XXH3-64 of its bytes.
using ChecksumMap = std::map<std::string, uint64_t>;

// Xxh3Hasher: streaming XXH3-64 (seed 0). Feeding the bytes of a tensor in any split
// gives the same value as Xxh3() over the whole.
// Never fails and never allocates (the state lives inside the object).
// Thread safety: one object per thread; distinct objects are independent. Copyable (a copy
// continues independently from the same point).
class Xxh3Hasher {
 public:
  // Xxh3Hasher: a hasher over zero bytes.
  Xxh3Hasher();
  // Xxh3Hasher(other) / operator=: a hasher at the same point as `other`, continuing
  // independently of it.
  Xxh3Hasher(const Xxh3Hasher& other);
  Xxh3Hasher& operator=(const Xxh3Hasher& other);

  // Update: append `bytes` to the hashed input. An empty span is allowed.
  void Update(std::span<const std::byte> bytes);
  // Digest: the hash of everything given so far. Does not change the state, so Update
  // may continue afterwards.
  uint64_t Digest() const;
  // Reset: back to zero bytes.
  void Reset();
  // bytes_hashed: the total length given to Update since construction or Reset.
  uint64_t bytes_hashed() const { return bytes_hashed_; }

 private:
  // Storage for xxHash's XXH3_state_t (576 bytes, 64-byte aligned in xxHash 0.8; the
  // .cc checks the size at compile time). Kept opaque so that this header does not
  // include <xxhash.h>.
  alignas(64) unsigned char state_[640];
  uint64_t bytes_hashed_ = 0;
};

// Xxh3: the XXH3-64 (seed 0) of `bytes` in one call.
uint64_t Xxh3(std::span<const std::byte> bytes);

// FormatXxh3: the 16 lowercase hex digits of `hash`, most significant first
// ("2d06800538d394c2" for the empty input).
std::string FormatXxh3(uint64_t hash);

// ParseXxh3: the inverse of FormatXxh3. Exactly 16 hex digits (either case).
// Errors: invalid_argument "'<text>' is not a 16-digit hex XXH3 value".
Result<uint64_t> ParseXxh3(std::string_view text);

// ChecksumKey: the `__metadata__` key recording the hash of `tensor_name`.
std::string ChecksumKey(std::string_view tensor_name);

// AddChecksumsToMetadata: set one `ChecksumKey(name)` → FormatXxh3(hash) entry in
// `metadata` per entry of `checksums`, replacing any value already there. Keys that are
// not checksums are kept. Never fails.
void AddChecksumsToMetadata(const ChecksumMap& checksums,
                            std::map<std::string, std::string>& metadata);

// ParseChecksumMetadata: the hashes recorded in `metadata` (keys starting with
// kChecksumKeyPrefix; other keys are ignored). An empty map when the file records none.
// `label` (the file name) starts error messages; `in_index`: the map is an index
// file's "metadata" rather than a shard's `__metadata__`. With `skipped_malformed`,
// a value that is not an XXH3 is left out and counted there (added to it) instead.
// Errors: data_loss "<label>: __metadata__ key 'shardload.xxh3.w': 'xyz' is not a
// 16-digit hex XXH3 value" ("<label>: metadata key ..." with `in_index`); none with
// `skipped_malformed`.
Result<ChecksumMap> ParseChecksumMetadata(const std::map<std::string, std::string>& metadata,
                                          std::string_view label, bool in_index = false,
                                          size_t* skipped_malformed = nullptr);

// CheckTensorChecksum: OK when `actual` == `expected`, else data_loss
// "<file>: tensor 'w' at bytes [80, 92): XXH3 of its 12 bytes is 0123456789abcdef,
// recorded 2d06800538d394c2" where `file` holds the tensor's bytes, at `file_offset`
// (absolute in the file), `bytes` long; with a non-empty `recorded_in` (the record is
// kept in another file: an index) the message ends "..., recorded 2d06800538d394c2 in
// model.safetensors.index.json".
Status CheckTensorChecksum(std::string_view file, std::string_view tensor_name,
                           uint64_t file_offset, uint64_t bytes, uint64_t expected,
                           uint64_t actual, std::string_view recorded_in = {});

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_CHECKSUM_H_
