// Tests of format/checksum_writer.h: files and sharded checkpoints written with XXH3
// records read back through Checkpoint + HashCheckpoint, and the wrappers' errors.
#include "format/checksum_writer.h"

#include <cstring>
#include <string>
#include <vector>

#include "format/checksum.h"
#include "format/header.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"
#include "tests/fixtures.h"

namespace shardload {
namespace {

using ::shardload::testing::MakeTestDir;
using ::shardload::testing::PatternBytes;

// Generator bytes: byte i of tensor `seed` is (i * 7 + seed) & 0xff.
TensorFill Counting(uint8_t seed) {
  return [seed](uint64_t offset, std::span<std::byte> out) {
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<std::byte>(((offset + i) * 7 + seed) & 0xff);
    }
    return OkStatus();
  };
}

uint64_t CountingHash(uint8_t seed, size_t n) {
  std::vector<std::byte> all(n);
  EXPECT_TRUE(Counting(seed)(0, all).ok());
  return Xxh3(all);
}

struct Fixture {
  std::string a = PatternBytes(24, 1);
  std::string c = PatternBytes(3, 2);
  std::vector<TensorToWrite> tensors;
  Fixture() {
    tensors.push_back(TensorToWrite::FromBytes("a", Dtype::kF32, {2, 3}, std::as_bytes(std::span(a))));
    // 20000 bytes: several 4 KiB generator chunks.
    tensors.push_back(TensorToWrite::FromGenerator("big", Dtype::kU16, {10000}, Counting(5)));
    tensors.push_back(TensorToWrite::FromBytes("c", Dtype::kU8, {3}, std::as_bytes(std::span(c))));
  }
};

TEST(ChecksumWriterTest, ComputeChecksums) {
  Fixture f;
  Result<ChecksumMap> sums = ComputeChecksums(f.tensors, "x", 4096);
  ASSERT_TRUE(sums.ok()) << sums.status().ToString();
  EXPECT_EQ(*sums, (ChecksumMap{{"a", Xxh3(std::as_bytes(std::span(f.a)))},
                                {"big", CountingHash(5, 20000)},
                                {"c", Xxh3(std::as_bytes(std::span(f.c)))}}));
}

TEST(ChecksumWriterTest, SingleFileRecordsEveryTensorAndReadsBackClean) {
  Fixture f;
  std::string dir = MakeTestDir("cw-single");
  std::string path = dir + "/model.safetensors";
  WriteOptions options;
  options.buffer_bytes = 4096;
  options.sync = false;
  ASSERT_TRUE(WriteFileWithChecksums(path, f.tensors, Metadata{{"format", "pt"}}, options).ok());

  Result<Header> header = ReadHeaderFile(path);
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  EXPECT_EQ(header->metadata.at("format"), "pt");
  EXPECT_EQ(header->metadata.at("shardload.xxh3.big"), FormatXxh3(CountingHash(5, 20000)));
  EXPECT_EQ(header->metadata.size(), 4u);

  Result<Checkpoint> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  Result<CheckpointDigest> d = HashCheckpoint(*ckpt);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->recorded, 3u);
  EXPECT_EQ(d->matched, 3u);
}

TEST(ChecksumWriterTest, ShardedRecordsInEachShardAndTheIndexAndAMismatchIsCaught) {
  Fixture f;
  std::string dir = MakeTestDir("cw-sharded");
  ShardOptions options;
  options.num_shards = 2;
  options.write.sync = false;
  Result<ShardedWriteResult> r = WriteShardedWithChecksums(dir, f.tensors, options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->plan.files.size(), 2u);

  Result<Checkpoint> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->metadata().at("shardload.xxh3.c"),
            FormatXxh3(Xxh3(std::as_bytes(std::span(f.c)))));
  Result<CheckpointDigest> d = HashCheckpoint(*ckpt);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->recorded, 3u);
  EXPECT_EQ(d->matched, 3u);

  // Each shard records exactly its own tensors next to {"format": "pt"}.
  size_t shard_records = 0;
  for (const auto& shard : ckpt->shards()) {
    Result<Header> h = ReadHeaderFile(shard.path);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->metadata.at("format"), "pt");
    for (const TensorInfo& t : h->tensors) {
      ASSERT_EQ(h->metadata.count("shardload.xxh3." + t.name), 1u) << shard.path << " " << t.name;
      ++shard_records;
    }
    EXPECT_EQ(h->metadata.size(), h->tensors.size() + 1) << shard.path;
  }
  EXPECT_EQ(shard_records, 3u);

  // Flip one byte of tensor "c" in its shard: the shard's own record catches it first.
  const StoredTensor* c = ckpt->Find("c");
  ASSERT_NE(c, nullptr);
  std::string shard_path = ckpt->shards()[c->shard].path;
  FILE* fp = std::fopen(shard_path.c_str(), "r+b");
  ASSERT_NE(fp, nullptr);
  ASSERT_EQ(std::fseek(fp, static_cast<long>(c->file_offset), SEEK_SET), 0);
  ASSERT_EQ(std::fputc((f.c[0] ^ 0x40) & 0xff, fp), (f.c[0] ^ 0x40) & 0xff);
  std::fclose(fp);
  std::string changed = f.c;
  changed[0] = static_cast<char>(changed[0] ^ 0x40);
  Result<CheckpointDigest> bad = HashCheckpoint(*ckpt);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(bad.status().message(),
            ckpt->shards()[c->shard].file + ": tensor 'c' at bytes [" +
                std::to_string(c->file_offset) + ", " + std::to_string(c->file_offset + 3) +
                "): XXH3 of its 3 bytes is " +
                FormatXxh3(Xxh3(std::as_bytes(std::span(changed)))) + ", recorded " +
                FormatXxh3(Xxh3(std::as_bytes(std::span(f.c)))));
}

TEST(ChecksumWriterTest, Errors) {
  Fixture f;
  Result<ChecksumMap> small = ComputeChecksums(f.tensors, "x", 100);
  EXPECT_EQ(small.status(), InvalidArgumentError("chunk_bytes 100 must be in [4096, 1073741824]"));

  std::vector<TensorToWrite> dup = f.tensors;
  dup.push_back(dup[0]);
  EXPECT_EQ(ComputeChecksums(dup, "d/m.safetensors").status(),
            InvalidArgumentError("d/m.safetensors: duplicate tensor name 'a'"));

  std::string eight(8, 'x');
  std::vector<TensorToWrite> short_data = {
      TensorToWrite::FromBytes("w", Dtype::kF32, {3}, std::as_bytes(std::span(eight)))};
  EXPECT_EQ(ComputeChecksums(short_data, "m").status(),
            InvalidArgumentError("m: tensor 'w': data is 8 bytes, but F32[3] needs 12 bytes"));

  std::vector<TensorToWrite> failing = {TensorToWrite::FromGenerator(
      "g", Dtype::kU8, {10}, [](uint64_t, std::span<std::byte>) {
        return DataLossError("source vanished");
      })};
  EXPECT_EQ(ComputeChecksums(failing, "m").status(),
            DataLossError("m: tensor 'g': source vanished"));

  std::vector<TensorToWrite> odd = {TensorToWrite::FromGenerator("f", Dtype::kF4, {3}, Counting(1))};
  Result<ChecksumMap> r = ComputeChecksums(odd, "m");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(r.status().message().starts_with("m: tensor 'f': F4[3] is 12 bits")) << r.status().ToString();

  // The file is not written when hashing fails.
  std::string dir = MakeTestDir("cw-err");
  Status s = WriteFileWithChecksums(dir + "/m.safetensors", failing, std::nullopt);
  EXPECT_EQ(s, DataLossError(dir + "/m.safetensors: tensor 'g': source vanished"));
  EXPECT_FALSE(testing::ReadFile(dir + "/m.safetensors").has_value());
}

}  // namespace
}  // namespace shardload
