// Tests of format/checksum_writer.h: files and sharded checkpoints written with XXH3
// records read back through Checkpoint + HashCheckpoint, and the wrappers' errors.
#include "format/checksum_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>
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

// Names of the files in `dir`, sorted.
std::vector<std::string> FilesIn(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// TwoShards: options for a two-shard write without fsync.
ShardOptions TwoShards() {
  ShardOptions options;
  options.write.sync = false;
  options.num_shards = 2;
  return options;
}

// check_staged sees every file complete under its temporary name before anything is
// published: the shards read back clean there (CheckWrittenFile), the index comes last.
TEST(ChecksumWriterTest, StagedShardsReadBackBeforePublishing) {
  Fixture f;
  std::string dir = MakeTestDir("cw-staged");
  Result<ChecksumMap> sums = ComputeChecksums(f.tensors, dir);
  ASSERT_TRUE(sums.ok()) << sums.status().ToString();
  ShardOptions options = TwoShards();
  Result<ShardPlan> plan = PlanShards(f.tensors, options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->shards, (std::vector<std::vector<size_t>>{{0}, {1, 2}}));
  std::vector<StagedShardFile> seen;
  std::vector<std::string> read_back;
  options.check_staged = [&](std::span<const StagedShardFile> files) {
    seen.assign(files.begin(), files.end());
    EXPECT_EQ(FilesIn(dir).size(), 3u);  // the three temporaries only: nothing published
    for (const StagedShardFile& file : files) {
      EXPECT_EQ(file.temp_path.rfind(dir + "/." + file.name + ".tmp.", 0), 0u) << file.temp_path;
      if (file.shard < 0) continue;
      std::vector<std::string> names;
      for (size_t i : plan->shards[static_cast<size_t>(file.shard)]) {
        names.push_back(f.tensors[i].name);
      }
      Result<std::vector<TensorDigest>> d =
          CheckWrittenFile(file.temp_path, file.name, names, *sums);
      if (!d.ok()) return d.status();
      for (const TensorDigest& t : *d) read_back.push_back(t.name);
    }
    return OkStatus();
  };
  Result<ShardedWriteResult> r = WriteShardedWithChecksums(dir, f.tensors, options, *sums);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].name, "model-00001-of-00002.safetensors");
  EXPECT_EQ(seen[0].shard, 0);
  EXPECT_EQ(seen[1].name, "model-00002-of-00002.safetensors");
  EXPECT_EQ(seen[1].shard, 1);
  EXPECT_EQ(seen[2].name, "model.safetensors.index.json");
  EXPECT_EQ(seen[2].shard, -1);
  EXPECT_EQ(read_back, (std::vector<std::string>{"a", "big", "c"}));
  EXPECT_EQ(FilesIn(dir), (std::vector<std::string>{"model-00001-of-00002.safetensors",
                                                    "model-00002-of-00002.safetensors",
                                                    "model.safetensors.index.json"}));
}

// A refusal from check_staged fails the write; what the folder held stays, byte for
// byte, and no temporary file is left.
TEST(ChecksumWriterTest, RefusedStagedFilesReplaceNothing) {
  Fixture f;
  std::string dir = MakeTestDir("cw-refused");
  ShardOptions options;
  options.write.sync = false;
  ASSERT_TRUE(WriteShardedWithChecksums(dir, f.tensors, options).ok());
  const std::optional<std::string> before = testing::ReadFile(dir + "/model.safetensors");
  ASSERT_TRUE(before.has_value());
  std::vector<TensorToWrite> other = f.tensors;
  other.pop_back();
  options.num_shards = 2;
  options.check_staged = [](std::span<const StagedShardFile>) {
    return DataLossError("the bytes differ");
  };
  Result<ShardedWriteResult> r = WriteShardedWithChecksums(dir, other, options);
  EXPECT_EQ(r.status(), DataLossError("the bytes differ (nothing was replaced)"));
  EXPECT_EQ(FilesIn(dir), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(testing::ReadFile(dir + "/model.safetensors"), before);
}

// A cancellation that arrives during check_staged (a signal while the last shard is
// read back) is seen before anything is published.
TEST(ChecksumWriterTest, CancelledDuringTheStagedCheckReplacesNothing) {
  Fixture f;
  std::string dir = MakeTestDir("cw-cancel-staged");
  ShardOptions options = TwoShards();
  bool stop = false;
  options.cancelled = [&] { return stop; };
  options.check_staged = [&](std::span<const StagedShardFile>) {
    stop = true;  // after the check's own last look
    return OkStatus();
  };
  Result<ShardedWriteResult> r = WriteShardedWithChecksums(dir, f.tensors, options);
  EXPECT_EQ(r.status(), CancelledError(dir + ": stopped before publishing (nothing was replaced)"));
  EXPECT_EQ(FilesIn(dir), std::vector<std::string>{});
}

// CheckWrittenIndex: the staged index of a write lists exactly the tensors written, each
// in the file it went to; its refusals name the label.
TEST(ChecksumWriterTest, CheckWrittenIndex) {
  Fixture f;
  std::string dir = MakeTestDir("cw-index");
  ShardOptions options = TwoShards();
  using WeightMap = std::vector<std::pair<std::string, std::string>>;
  const WeightMap right = {{"a", "model-00001-of-00002.safetensors"},
                           {"big", "model-00002-of-00002.safetensors"},
                           {"c", "model-00002-of-00002.safetensors"}};
  std::vector<Status> results;
  uint64_t recorded_big = 0;
  options.check_staged = [&](std::span<const StagedShardFile> files) {
    const std::string& index = files.back().temp_path;
    EXPECT_EQ(files.back().shard, -1);
    const WeightMap moved = {right[0], right[1], {"c", "model-00001-of-00002.safetensors"}};
    const WeightMap fewer = {right[0], right[1]};
    const WeightMap other = {right[0], right[1], {"d", "model-00002-of-00002.safetensors"}};
    for (const WeightMap* m : {&right, &moved, &fewer, &other}) {
      results.push_back(CheckWrittenIndex(index, "new model.safetensors.index.json", *m));
    }
    // The index's XXH3 records: right, one wrong, one missing.
    ChecksumMap sums = *ComputeChecksums(f.tensors, dir);
    results.push_back(CheckWrittenIndex(index, "new model.safetensors.index.json", right, &sums));
    ChecksumMap wrong = sums;
    wrong["big"] ^= 1;
    results.push_back(CheckWrittenIndex(index, "new model.safetensors.index.json", right, &wrong));
    ChecksumMap extra = sums;
    extra["d"] = 5;
    results.push_back(CheckWrittenIndex(index, "new model.safetensors.index.json", right, &extra));
    recorded_big = sums.at("big");
    ::truncate(index.c_str(), 10);
    results.push_back(CheckWrittenIndex(index, "new model.safetensors.index.json", right));
    return OkStatus();
  };
  ASSERT_TRUE(WriteShardedWithChecksums(dir, f.tensors, options).ok());
  ASSERT_EQ(results.size(), 8u);
  EXPECT_TRUE(results[0].ok()) << results[0].ToString();
  EXPECT_EQ(results[1], DataLossError("new model.safetensors.index.json: maps tensor 'c' to "
                                      "'model-00002-of-00002.safetensors'; it was written to "
                                      "'model-00001-of-00002.safetensors'"));
  EXPECT_EQ(results[2],
            DataLossError("new model.safetensors.index.json: lists 3 tensors; 2 were written"));
  EXPECT_EQ(results[3], DataLossError("new model.safetensors.index.json: lists tensor 'c', "
                                      "which was not written"));
  EXPECT_TRUE(results[4].ok()) << results[4].ToString();
  EXPECT_EQ(results[5], DataLossError("new model.safetensors.index.json: records XXH3 " +
                                      FormatXxh3(recorded_big) + " for tensor 'big'; its bytes "
                                      "hash to " + FormatXxh3(recorded_big ^ 1)));
  EXPECT_EQ(results[6],
            DataLossError("new model.safetensors.index.json: records no XXH3 for tensor 'd'"));
  EXPECT_EQ(results[7].code(), StatusCode::kInvalidArgument) << results[7].ToString();
  EXPECT_TRUE(results[7].message().starts_with("new model.safetensors.index.json: "))
      << results[7].ToString();
  EXPECT_EQ(results[7].message().find(".tmp."), std::string::npos) << results[7].ToString();
}

// CheckWrittenFile's refusals: a tensor whose bytes are not the expected ones, one not
// meant for the file, a file without records, and an unreadable file, each named by
// its label.
TEST(ChecksumWriterTest, CheckWrittenFileErrors) {
  Fixture f;
  std::string dir = MakeTestDir("cw-check");
  const std::string path = dir + "/.m.safetensors.tmp.1";
  ASSERT_TRUE(WriteFileWithChecksums(path, f.tensors, std::nullopt).ok());
  Result<ChecksumMap> sums = ComputeChecksums(f.tensors, path);
  ASSERT_TRUE(sums.ok());
  const std::vector<std::string> names = {"a", "big", "c"};
  Result<std::vector<TensorDigest>> good = CheckWrittenFile(path, "m.safetensors", names, *sums);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  ASSERT_EQ(good->size(), 3u);
  EXPECT_EQ(good->at(0).name, "a");  // sorted by name

  ChecksumMap wrong = *sums;
  wrong["c"] ^= 1;
  EXPECT_EQ(CheckWrittenFile(path, "m.safetensors", names, wrong).status(),
            DataLossError("m.safetensors: tensor 'c': XXH3 of its bytes is " +
                          FormatXxh3(sums->at("c")) + ", expected " + FormatXxh3(wrong["c"])));
  const std::vector<std::string> other_names = {"a", "big", "d"};
  EXPECT_EQ(CheckWrittenFile(path, "m.safetensors", other_names, *sums).status(),
            DataLossError("m.safetensors: holds tensor 'c', which was not written to it"));
  const std::vector<std::string> two = {"a", "big"};
  EXPECT_EQ(CheckWrittenFile(path, "m.safetensors", two, *sums).status(),
            DataLossError("m.safetensors: holds 3 tensors, 3 with an XXH3 record; 2 were written"));

  const std::string plain = dir + "/plain.safetensors";
  ASSERT_TRUE(WriteFile(plain, f.tensors, std::nullopt).ok());
  EXPECT_EQ(CheckWrittenFile(plain, "p.safetensors", names, *sums).status(),
            DataLossError("p.safetensors: holds 3 tensors, 0 with an XXH3 record; 3 were written"));

  // A record that disagrees with the bytes on disk is HashCheckpoint's error, naming
  // the label rather than the temporary name.
  Result<Checkpoint> ckpt = Checkpoint::Open(path);
  ASSERT_TRUE(ckpt.ok());
  const StoredTensor* c = ckpt->Find("c");
  ASSERT_NE(c, nullptr);
  const uint64_t offset = c->file_offset;
  ckpt = InvalidArgumentError("closed");
  FILE* fp = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(fp, nullptr);
  ASSERT_EQ(std::fseek(fp, static_cast<long>(offset), SEEK_SET), 0);
  ASSERT_NE(std::fputc((f.c[0] ^ 0x40) & 0xff, fp), EOF);
  std::fclose(fp);
  std::string changed = f.c;
  changed[0] = static_cast<char>(changed[0] ^ 0x40);
  EXPECT_EQ(CheckWrittenFile(path, "m.safetensors", names, *sums).status(),
            DataLossError("m.safetensors: tensor 'c' at bytes [" + std::to_string(offset) + ", " +
                          std::to_string(offset + 3) + "): XXH3 of its 3 bytes is " +
                          FormatXxh3(Xxh3(std::as_bytes(std::span(changed)))) + ", recorded " +
                          FormatXxh3(sums->at("c"))));

  ASSERT_EQ(::truncate(path.c_str(), 20), 0);
  Result<std::vector<TensorDigest>> cut = CheckWrittenFile(path, "m.safetensors", names, *sums);
  ASSERT_FALSE(cut.ok());
  EXPECT_TRUE(cut.status().message().starts_with("m.safetensors: ")) << cut.status().ToString();
  EXPECT_EQ(cut.status().message().find(".tmp."), std::string::npos) << cut.status().ToString();
}

}  // namespace
}  // namespace shardload
