// fuzz/checkpoint_fuzzer.cc — libFuzzer target over a whole checkpoint on disk:
// Checkpoint::Open, then every tensor read three ways (HashCheckpoint's chunked reads,
// ReadTensor, MappedBytes), which must agree.
//
// Input layout:
//  - "SHARDS\n" <index json> ("\n==SHARD==\n" <shard bytes>)*  — a sharded checkpoint:
//    the index is written as model.safetensors.index.json and shard k of n (n <= 4) as
//    model-0000k-of-0000n.safetensors (the names the seeds' indexes use);
//  - anything else — one file, model.safetensors.
// The files go to a private folder under $TMPDIR (default /tmp), rewritten each run.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "format/checksum.h"
#include "format/dtype.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"

namespace {

constexpr std::string_view kShardsMagic = "SHARDS\n";
constexpr std::string_view kSeparator = "\n==SHARD==\n";
constexpr size_t kMaxShards = 4;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

const std::string& Dir() {
  static const std::string dir = [] {
    const char* tmp = getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/shardload-fuzz-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) {
      perror("mkdtemp");
      abort();
    }
    return std::string(buf.data());
  }();
  return dir;
}

// Written: the files the previous input left in Dir(), removed before the next one.
std::vector<std::string>& Written() {
  static std::vector<std::string> written;
  return written;
}

void Write(const std::string& name, std::string_view bytes) {
  Written().push_back(name);
  std::string path = Dir() + "/" + name;
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    perror(path.c_str());
    abort();
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      perror("write");
      abort();
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
}

void RemoveAll() {
  for (const std::string& name : Written()) unlink((Dir() + "/" + name).c_str());
  Written().clear();
}

std::string ShardName(size_t k, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", k, n);
  return buf;
}

void Materialize(std::string_view input) {
  RemoveAll();
  if (!input.starts_with(kShardsMagic)) {
    Write("model.safetensors", input);
    return;
  }
  input.remove_prefix(kShardsMagic.size());
  std::vector<std::string_view> parts;
  while (parts.size() < kMaxShards) {
    size_t at = input.find(kSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + kSeparator.size());
  }
  parts.push_back(input);  // the last part takes the rest, separators included
  Write("model.safetensors.index.json", parts[0]);
  size_t shards = parts.size() - 1;
  for (size_t k = 1; k <= shards; ++k) Write(ShardName(k, shards), parts[k]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shardload;
  Materialize(std::string_view(reinterpret_cast<const char*>(data), size));

  Result<Checkpoint> opened = Checkpoint::Open(Dir());
  if (!opened.ok()) {
    Check(!opened.status().message().empty());
    return 0;
  }
  const Checkpoint& ckpt = *opened;

  // Catalog invariants.
  uint64_t total = 0;
  const std::vector<StoredTensor>& tensors = ckpt.tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const StoredTensor& t = tensors[i];
    if (i > 0) Check(tensors[i - 1].name < t.name);
    Check(ckpt.Find(t.name) == &t);
    Check(t.shard < ckpt.shards().size());
    Result<uint64_t> bytes = TensorByteSize(t.dtype, t.shape);
    Check(bytes.ok() && *bytes == t.bytes);
    const ShardInfo& shard = ckpt.shards()[t.shard];
    Check(t.file_offset >= shard.data_start && t.file_offset <= shard.size &&
          t.bytes <= shard.size - t.file_offset);
    total += t.bytes;
  }
  Check(total == ckpt.total_bytes());

  // Every tensor, three ways.
  HashOptions options;
  options.chunk_bytes = 4096;  // the smallest allowed: exercises multi-chunk tensors
  options.check_recorded = false;
  Result<CheckpointDigest> digest = HashCheckpoint(ckpt, options);
  if (!digest.ok()) {
    // Nothing changed the files since Open: the only possible error is a malformed
    // recorded hash in some shard's __metadata__.
    Check(digest.status().code() == StatusCode::kDataLoss &&
          digest.status().message().ends_with("is not a 16-digit hex XXH3 value"));
    return 0;
  }
  Check(digest->tensors.size() == tensors.size());
  size_t matched = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const StoredTensor& t = tensors[i];
    const TensorDigest& d = digest->tensors[i];
    Check(d.name == t.name && d.bytes == t.bytes);
    Result<std::vector<std::byte>> copy = ckpt.ReadTensor(t.name);
    Check(copy.ok() && copy->size() == t.bytes);
    Check(Xxh3(*copy) == d.xxh3);
    Result<std::span<const std::byte>> view = ckpt.MappedBytes(t.name);
    Check(view.ok() && view->size() == t.bytes);
    Check(t.bytes == 0 || std::memcmp(view->data(), copy->data(), t.bytes) == 0);
    if (d.recorded && *d.recorded == d.xxh3) ++matched;
  }
  Check(matched == digest->matched);
  std::vector<TensorDigest> reversed(digest->tensors.rbegin(), digest->tensors.rend());
  Check(LayoutFreeDigest(reversed) == LayoutFreeDigest(digest->tensors));

  // With checking on, the call fails exactly when a recorded hash differs (with no
  // records it cannot differ from the pass above; skipped to keep runs fast).
  if (digest->recorded == 0) return 0;
  Result<CheckpointDigest> checked = HashCheckpoint(ckpt);
  Check(checked.ok() == (digest->matched == digest->recorded));
  if (!checked.ok()) Check(checked.status().code() == StatusCode::kDataLoss);
  return 0;
}
