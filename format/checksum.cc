// XXH3-64 checksums over tensor bytes (see checksum.h for the choices made).
#include "format/checksum.h"

#include <cstring>
#include <new>

#define XXH_STATIC_LINKING_ONLY  // exposes XXH3_state_t's size for in-object storage
#include <xxhash.h>

#include "format/text.h"

namespace shardload {
namespace {

static_assert(sizeof(XXH3_state_t) <= 640, "grow Xxh3Hasher::state_");
static_assert(alignof(XXH3_state_t) <= 64, "raise Xxh3Hasher::state_ alignment");

XXH3_state_t* State(unsigned char* storage) {
  return std::launder(reinterpret_cast<XXH3_state_t*>(storage));
}
const XXH3_state_t* State(const unsigned char* storage) {
  return std::launder(reinterpret_cast<const XXH3_state_t*>(storage));
}

constexpr char kHexDigits[] = "0123456789abcdef";

}  // namespace

Xxh3Hasher::Xxh3Hasher() {
  new (state_) XXH3_state_t;
  Reset();
}

// XXH3_state_t with the default secret holds no pointer into itself (extSecret is
// null), so a byte copy is a valid, independent state: XXH3_copyState is a memcpy.
Xxh3Hasher::Xxh3Hasher(const Xxh3Hasher& other) : bytes_hashed_(other.bytes_hashed_) {
  new (state_) XXH3_state_t;
  XXH3_copyState(State(state_), State(other.state_));
}

Xxh3Hasher& Xxh3Hasher::operator=(const Xxh3Hasher& other) {
  if (this != &other) {
    XXH3_copyState(State(state_), State(other.state_));
    bytes_hashed_ = other.bytes_hashed_;
  }
  return *this;
}

void Xxh3Hasher::Update(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  // XXH3_64bits_update only fails for a null state or a null pointer with a non-zero
  // length, neither of which can happen here.
  (void)XXH3_64bits_update(State(state_), bytes.data(), bytes.size());
  bytes_hashed_ += bytes.size();
}

uint64_t Xxh3Hasher::Digest() const { return XXH3_64bits_digest(State(state_)); }

void Xxh3Hasher::Reset() {
  (void)XXH3_64bits_reset(State(state_));
  bytes_hashed_ = 0;
}

uint64_t Xxh3(std::span<const std::byte> bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

std::string FormatXxh3(uint64_t hash) {
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[i] = kHexDigits[hash & 0xf];
    hash >>= 4;
  }
  return out;
}

Result<uint64_t> ParseXxh3(std::string_view text) {
  uint64_t value = 0;
  bool ok = text.size() == 16;
  for (size_t i = 0; ok && i < text.size(); ++i) {
    int digit = HexDigitValue(text[i]);
    if (digit < 0) ok = false;
    value = (value << 4) | static_cast<uint64_t>(digit & 0xf);
  }
  if (!ok) {
    return InvalidArgumentError("'" + std::string(text) + "' is not a 16-digit hex XXH3 value");
  }
  return value;
}

std::string ChecksumKey(std::string_view tensor_name) {
  std::string key;
  key.reserve(kChecksumKeyPrefix.size() + tensor_name.size());
  key.append(kChecksumKeyPrefix);
  key.append(tensor_name);
  return key;
}

void AddChecksumsToMetadata(const ChecksumMap& checksums,
                            std::map<std::string, std::string>& metadata) {
  for (const auto& [name, hash] : checksums) {
    metadata.insert_or_assign(ChecksumKey(name), FormatXxh3(hash));
  }
}

Result<ChecksumMap> ParseChecksumMetadata(const std::map<std::string, std::string>& metadata,
                                          std::string_view label, bool in_index,
                                          size_t* skipped_malformed) {
  ChecksumMap out;
  // Keys sharing the prefix are contiguous in the sorted map.
  for (auto it = metadata.lower_bound(std::string(kChecksumKeyPrefix));
       it != metadata.end() && it->first.starts_with(kChecksumKeyPrefix); ++it) {
    Result<uint64_t> hash = ParseXxh3(it->second);
    if (!hash.ok() && skipped_malformed != nullptr) {
      ++*skipped_malformed;
      continue;
    }
    if (!hash.ok()) {
      return DataLossError(std::string(label) + (in_index ? ": metadata key " : ": __metadata__ key ") +
                           QuoteNameForMessage(it->first) + ": " +
                           hash.status().message());
    }
    out.emplace(it->first.substr(kChecksumKeyPrefix.size()), *hash);
  }
  return out;
}

Status CheckTensorChecksum(std::string_view file, std::string_view tensor_name,
                           uint64_t file_offset, uint64_t bytes, uint64_t expected,
                           uint64_t actual, std::string_view recorded_in) {
  if (expected == actual) return OkStatus();
  std::string message = std::string(file) + ": tensor " + QuoteNameForMessage(tensor_name) +
                        " at bytes [" + std::to_string(file_offset) + ", " +
                        std::to_string(file_offset + bytes) + "): XXH3 of its " +
                        std::to_string(bytes) + " bytes is " + FormatXxh3(actual) +
                        ", recorded " + FormatXxh3(expected);
  if (!recorded_in.empty()) message += " in " + std::string(recorded_in);
  return DataLossError(std::move(message));
}

}  // namespace shardload
