// Tests of loader/checkpoint_hash.h (HashCheckpoint, LayoutFreeDigest) and of the
// `shardload hash` command (run as a subprocess on fixtures; output checked exactly).
#include "loader/checkpoint_hash.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <atomic>
#include <string>
#include <vector>

#include "format/checksum.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"
#include "tests/fixtures.h"

namespace shardload {
namespace {

using ::shardload::testing::ByteRangeText;
using ::shardload::testing::FixtureTensor;
using ::shardload::testing::IndexJson;
using ::shardload::testing::MakeTestDir;
using ::shardload::testing::RunResult;
using ::shardload::testing::RunShardload;
using ::shardload::testing::ReadFile;
using ::shardload::testing::SafetensorsBytes;
using ::shardload::testing::TensorData;
using ::shardload::testing::WriteFile;

constexpr char kShard1[] = "model-00001-of-00002.safetensors";
constexpr char kShard2[] = "model-00002-of-00002.safetensors";


// The tensors every fixture here holds; "big" spans several 4 KiB chunks.
const std::vector<FixtureTensor>& Tensors() {
  static const std::vector<FixtureTensor> t = {
      {"b.w", "F32", {2, 3}, ""},
      {"a.w", "BF16", {5}, ""},
      {"big", "U8", {10000}, ""},
      {"empty", "F16", {0, 4}, ""},
      {"c.w", "U8", {7}, ""},
  };
  return t;
}

uint64_t HashOf(const FixtureTensor& t) {
  const std::string data = TensorData(t);
  return Xxh3(std::as_bytes(std::span(data)));
}

std::string Hex(const FixtureTensor& t) { return FormatXxh3(HashOf(t)); }

std::string SingleFile(const std::map<std::string, std::string>& metadata = {}) {
  std::string dir = MakeTestDir("single");
  EXPECT_TRUE(WriteFile(dir + "/model.safetensors", SafetensorsBytes(Tensors(), metadata)));
  return dir;
}

// The same tensors in two shards, in another file order.
std::string Sharded() {
  const auto& t = Tensors();
  std::string dir = MakeTestDir("sharded");
  EXPECT_TRUE(WriteFile(dir + "/" + kShard1, SafetensorsBytes({t[4], t[2], t[0]})));
  EXPECT_TRUE(WriteFile(dir + "/" + kShard2, SafetensorsBytes({t[3], t[1]})));
  EXPECT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
                        IndexJson({{"a.w", kShard2}, {"b.w", kShard1}, {"big", kShard1},
                                   {"c.w", kShard1}, {"empty", kShard2}})));
  return dir;
}

Result<CheckpointDigest> HashDir(const std::string& dir, HashOptions options = {}) {
  Result<Checkpoint> ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return ckpt.status();
  return HashCheckpoint(*ckpt, options);
}

TEST(HashCheckpointTest, EveryTensorSortedByNameWithItsXxh3) {
  HashOptions small;
  small.chunk_bytes = 4096;
  for (HashOptions options : {HashOptions{}, small}) {
    Result<CheckpointDigest> d = HashDir(SingleFile(), options);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_EQ(d->tensors.size(), 5u);
    const char* names[] = {"a.w", "b.w", "big", "c.w", "empty"};
    for (size_t i = 0; i < 5; ++i) {
      const TensorDigest& got = d->tensors[i];
      EXPECT_EQ(got.name, names[i]);
      const FixtureTensor* want = nullptr;
      for (const auto& t : Tensors()) {
        if (t.name == got.name) want = &t;
      }
      ASSERT_NE(want, nullptr);
      EXPECT_EQ(got.xxh3, HashOf(*want)) << got.name;
      EXPECT_EQ(got.bytes, TensorData(*want).size());
      EXPECT_EQ(got.shape, want->shape);
      EXPECT_EQ(DtypeName(got.dtype), want->dtype);
      EXPECT_FALSE(got.recorded.has_value());
    }
    EXPECT_EQ(d->tensors[4].xxh3, 0x2D06800538D394C2ULL);  // "empty": XXH3 of no bytes
    EXPECT_EQ(d->recorded, 0u);
  }
}

TEST(HashCheckpointTest, ShardingDoesNotChangeDigests) {
  Result<CheckpointDigest> single = HashDir(SingleFile());
  Result<CheckpointDigest> sharded = HashDir(Sharded());
  ASSERT_TRUE(single.ok()) << single.status().ToString();
  ASSERT_TRUE(sharded.ok()) << sharded.status().ToString();
  EXPECT_EQ(single->tensors, sharded->tensors);
  EXPECT_EQ(LayoutFreeDigest(single->tensors), LayoutFreeDigest(sharded->tensors));
}

// Any thread count gives the same digests, and the same error: the one at the first
// tensor in file order (here two recorded mismatches, in two shards, and a shard that
// changed size, each run of tensors finding its own).
TEST(HashCheckpointTest, ThreadCountChangesNeitherDigestsNorTheError) {
  const std::string dir = Sharded();
  Result<CheckpointDigest> one = [&] {
    HashOptions o;
    o.threads = 1;
    return HashDir(dir, o);
  }();
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  for (int threads : {0, 2, 3, 5, 64}) {
    HashOptions o;
    o.threads = threads;
    o.chunk_bytes = 4096;
    Result<CheckpointDigest> d = HashDir(dir, o);
    ASSERT_TRUE(d.ok()) << threads << ": " << d.status().ToString();
    EXPECT_EQ(d->tensors, one->tensors) << threads;
  }
  // Records: c.w (first in shard 1's file order) and a.w (shard 2) both wrong.
  const auto& t = Tensors();
  std::map<std::string, std::string> md1 = {{"format", "pt"}}, md2 = md1;
  AddChecksumsToMetadata({{"c.w", 1}, {"big", HashOf(t[2])}}, md1);
  AddChecksumsToMetadata({{"a.w", 2}}, md2);
  ASSERT_TRUE(WriteFile(dir + "/" + kShard1, SafetensorsBytes({t[4], t[2], t[0]}, md1)));
  ASSERT_TRUE(WriteFile(dir + "/" + kShard2, SafetensorsBytes({t[3], t[1]}, md2)));
  for (int threads : {1, 2, 5}) {
    HashOptions o;
    o.threads = threads;
    Result<CheckpointDigest> d = HashDir(dir, o);
    EXPECT_EQ(d.status(), DataLossError(std::string(kShard1) + ": tensor 'c.w'" + ByteRangeText(dir, "c.w") +
                                        ": XXH3 of its 7 bytes is " + Hex(t[4]) +
                                        ", recorded 0000000000000001"))
        << threads;
  }
  // Shard 2 shrinks after Open: with no mismatch before it, that is the error.
  ASSERT_TRUE(WriteFile(dir + "/" + kShard1, SafetensorsBytes({t[4], t[2], t[0]})));
  Result<Checkpoint> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  const ShardInfo& s2 = ckpt->shards()[1];
  ASSERT_EQ(::truncate(s2.path.c_str(), static_cast<off_t>(s2.size - 1)), 0);
  for (int threads : {1, 2, 5}) {
    HashOptions o;
    o.threads = threads;
    Result<CheckpointDigest> d = HashCheckpoint(*ckpt, o);
    EXPECT_EQ(d.status(), DataLossError(s2.file + ": file is now " + std::to_string(s2.size - 1) +
                                        " bytes, but its header was read from " +
                                        std::to_string(s2.size) + " bytes"))
        << threads;
  }
  HashOptions bad;
  bad.threads = 257;
  EXPECT_EQ(HashCheckpoint(*ckpt, bad).status(),
            InvalidArgumentError("HashOptions.threads is 257, must be between 0 and 256"));
}

TEST(HashCheckpointTest, LayoutFreeDigestFollowsItsDocumentedEncoding) {
  std::vector<TensorDigest> t = {{"b", Dtype::kF32, {2, 3}, 24, 7, std::nullopt},
                                 {"a", Dtype::kU8, {}, 1, 9, std::nullopt}};
  auto u64 = [](uint64_t v) {
    std::string s;
    for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
    return s;
  };
  std::string want = u64(1) + "a" + u64(2) + "U8" + u64(0) + u64(9) +                 //
                     u64(1) + "b" + u64(3) + "F32" + u64(2) + u64(2) + u64(3) + u64(7);
  EXPECT_EQ(LayoutFreeDigest(t), Xxh3(std::as_bytes(std::span(want))));

  // Any change of name, dtype, shape or bytes changes it.
  uint64_t base = LayoutFreeDigest(t);
  auto changed = t;
  changed[0].name = "c";
  EXPECT_NE(LayoutFreeDigest(changed), base);
  changed = t;
  changed[0].dtype = Dtype::kI32;
  EXPECT_NE(LayoutFreeDigest(changed), base);
  changed = t;
  changed[0].shape = {3, 2};
  EXPECT_NE(LayoutFreeDigest(changed), base);
  changed = t;
  changed[1].xxh3 = 10;
  EXPECT_NE(LayoutFreeDigest(changed), base);
}

TEST(HashCheckpointTest, RecordedHashesAreChecked) {
  const auto& t = Tensors();
  std::map<std::string, std::string> md = {{"format", "pt"}};
  AddChecksumsToMetadata({{"big", HashOf(t[2])}, {"a.w", HashOf(t[1])}}, md);
  Result<CheckpointDigest> ok = HashDir(SingleFile(md));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->recorded, 2u);
  EXPECT_EQ(ok->matched, 2u);
  EXPECT_EQ(ok->tensors[0].recorded, HashOf(t[1]));

  AddChecksumsToMetadata({{"big", 0x0123456789abcdefULL}}, md);
  std::string dir = SingleFile(md);
  Result<CheckpointDigest> bad = HashDir(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(bad.status().message(), "model.safetensors: tensor 'big'" + ByteRangeText(dir, "big") +
                                        ": XXH3 of its 10000 bytes is " +
                                        FormatXxh3(HashOf(t[2])) + ", recorded 0123456789abcdef");

  HashOptions no_check;
  no_check.check_recorded = false;
  Result<CheckpointDigest> reported = HashDir(dir, no_check);
  ASSERT_TRUE(reported.ok()) << reported.status().ToString();
  EXPECT_EQ(reported->recorded, 2u);
  EXPECT_EQ(reported->matched, 1u);
  EXPECT_EQ(reported->tensors[2].recorded, 0x0123456789abcdefULL);
  EXPECT_EQ(reported->tensors[2].xxh3, HashOf(t[2]));
}

TEST(HashCheckpointTest, MalformedRecordedHashIsDataLoss) {
  Result<CheckpointDigest> d = HashDir(SingleFile({{"shardload.xxh3.big", "12"}}));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(d.status().message(),
            "model.safetensors: __metadata__ key 'shardload.xxh3.big': '12' is not a 16-digit "
            "hex XXH3 value");
  // Without checking (hash --no-check) the digests are still computed; the malformed
  // record is skipped and counted, the file's other records still count.
  std::map<std::string, std::string> md = {{"shardload.xxh3.big", "12"}};
  AddChecksumsToMetadata({{"c.w", HashOf(Tensors()[4])}}, md);
  const std::string dir = SingleFile(md);
  Result<Checkpoint> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  HashOptions no_check;
  no_check.check_recorded = false;
  Result<CheckpointDigest> unchecked = HashCheckpoint(*ckpt, no_check);
  ASSERT_TRUE(unchecked.ok()) << unchecked.status().ToString();
  EXPECT_EQ(unchecked->recorded, 1u);
  EXPECT_EQ(unchecked->matched, 1u);
  EXPECT_EQ(unchecked->malformed, 1u);
  EXPECT_FALSE(unchecked->tensors.empty());
  RunResult cli = RunShardload("hash --no-check " + dir);
  EXPECT_EQ(cli.exit_code, 0);
  EXPECT_EQ(cli.err, "shardload hash: warning: 1 XXH3 record is not 16 hex digits and was "
                     "skipped\n");
  EXPECT_TRUE(cli.out.ends_with("records 1 of 5 tensors carry an XXH3 record; all match\n"))
      << cli.out;
}

TEST(HashCheckpointTest, InvalidChunkSize) {
  for (uint64_t chunk : {uint64_t{0}, uint64_t{4095}, (uint64_t{1} << 30) + 1}) {
    HashOptions options;
    options.chunk_bytes = chunk;
    Result<CheckpointDigest> d = HashDir(SingleFile(), options);
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(d.status().message(), "HashOptions.chunk_bytes is " + std::to_string(chunk) +
                                        ", must be between 4096 and 1073741824");
  }
}

TEST(HashCheckpointTest, CancelledStopsBetweenChunks) {
  std::atomic<int> calls{0};
  HashOptions options;
  options.chunk_bytes = 4096;
  options.threads = 1;
  options.cancelled = [&] { return ++calls > 2; };  // two chunks, then stop
  Result<CheckpointDigest> d = HashDir(Sharded(), options);
  EXPECT_EQ(d.status(), CancelledError("hashing cancelled"));
  EXPECT_EQ(calls.load(), 3);
  options.cancelled = [] { return false; };
  EXPECT_TRUE(HashDir(Sharded(), options).ok());
}

TEST(HashCheckpointTest, FileTruncatedAfterOpenIsDataLossNotACrash) {
  std::string dir = SingleFile();
  Result<Checkpoint> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  const ShardInfo& shard = ckpt->shards()[0];
  ASSERT_EQ(::truncate(shard.path.c_str(), static_cast<off_t>(shard.size - 100)), 0);
  Result<CheckpointDigest> d = HashCheckpoint(*ckpt);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kDataLoss) << d.status().ToString();
  EXPECT_EQ(d.status().message(), shard.file + ": file is now " +
                                      std::to_string(shard.size - 100) +
                                      " bytes, but its header was read from " +
                                      std::to_string(shard.size) + " bytes");
}

// A shard whose bytes change after Open but keep their size: only recorded hashes can
// tell, and they do (data_loss naming the shard and tensor, never a silent success).
TEST(HashCheckpointTest, SameSizeChangeIsCaughtByRecordedHashes) {
  std::string dir = MakeTestDir("same-size");
  std::vector<FixtureTensor> tensors = {{"a", "U8", {5000}, ""}, {"b", "U8", {5000}, ""}};
  std::string path = dir + "/model.safetensors";
  std::map<std::string, std::string> md;
  AddChecksumsToMetadata({{"a", HashOf(tensors[0])}, {"b", HashOf(tensors[1])}}, md);
  ASSERT_TRUE(WriteFile(path, SafetensorsBytes(tensors, md)));
  Result<Checkpoint> recorded = Checkpoint::Open(dir);
  ASSERT_TRUE(recorded.ok()) << recorded.status().ToString();
  const ShardInfo& shard = recorded->shards()[0];
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(shard.size - 10)), 0);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(shard.size)), 0);  // 10 zero bytes
  Result<CheckpointDigest> unchecked = HashCheckpoint(*recorded, {.check_recorded = false});
  ASSERT_TRUE(unchecked.ok()) << unchecked.status().ToString();
  EXPECT_EQ(unchecked->recorded, 2u);
  EXPECT_EQ(unchecked->matched, 1u);
  Result<CheckpointDigest> d = HashCheckpoint(*recorded);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kDataLoss);
  std::string b = TensorData(tensors[1]);
  b.replace(b.size() - 10, 10, std::string(10, '\0'));
  EXPECT_EQ(d.status().message(),
            "model.safetensors: tensor 'b'" + ByteRangeText(path, "b") + ": XXH3 of its 5000 bytes is " +
                FormatXxh3(Xxh3(std::as_bytes(std::span(b)))) + ", recorded " +
                FormatXxh3(HashOf(tensors[1])));
}

TEST(RecordedChecksumsTest, ShardAndIndexRecordsCheckLoadedBytes) {
  const auto& t = Tensors();
  std::string dir = MakeTestDir("recorded");
  std::map<std::string, std::string> shard1_md, index_md;
  // Shard 1 records c.w (correct) and a.w (which lives in shard 2: dropped).
  AddChecksumsToMetadata({{"c.w", HashOf(t[4])}, {"a.w", 42}}, shard1_md);
  // The index records b.w (correct), big (wrong) and a tensor that does not exist.
  AddChecksumsToMetadata({{"b.w", HashOf(t[0])}, {"big", 7}, {"ghost", 1}}, index_md);
  ASSERT_TRUE(WriteFile(dir + "/" + kShard1, SafetensorsBytes({t[4], t[2], t[0]}, shard1_md)));
  ASSERT_TRUE(WriteFile(dir + "/" + kShard2, SafetensorsBytes({t[3], t[1]})));
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
                        IndexJson({{"a.w", kShard2}, {"b.w", kShard1}, {"big", kShard1},
                                   {"c.w", kShard1}, {"empty", kShard2}},
                                  index_md)));
  Result<Checkpoint> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  Result<RecordedChecksums> sums = RecordedChecksums::FromCheckpoint(*ckpt);
  ASSERT_TRUE(sums.ok()) << sums.status().ToString();
  EXPECT_EQ(sums->size(), 3u);
  EXPECT_EQ(sums->Find("a.w"), nullptr);
  EXPECT_EQ(sums->Find("ghost"), nullptr);
  ASSERT_NE(sums->Find("c.w"), nullptr);
  EXPECT_EQ(*sums->Find("c.w"), HashOf(t[4]));
  ASSERT_NE(sums->Find("big"), nullptr);
  EXPECT_EQ(*sums->Find("big"), 7u);

  auto bytes = [](const FixtureTensor& f) { return TensorData(f); };
  std::string c = bytes(t[4]), b = bytes(t[0]), big = bytes(t[2]), a = bytes(t[1]);
  EXPECT_TRUE(sums->Check("c.w", std::as_bytes(std::span(c))).ok());
  EXPECT_TRUE(sums->Check("b.w", std::as_bytes(std::span(b))).ok());
  EXPECT_TRUE(sums->Check("a.w", std::as_bytes(std::span(a))).ok());  // no record
  Status bad_big = sums->Check("big", std::as_bytes(std::span(big)));
  EXPECT_EQ(bad_big, DataLossError(std::string(kShard1) + ": tensor 'big'" + ByteRangeText(dir, "big") +
                                   ": XXH3 of its 10000 bytes is " + Hex(t[2]) +
                                   ", recorded 0000000000000007 in model.safetensors.index.json"));
  c[0] ^= 1;
  Status bad_c = sums->Check("c.w", std::as_bytes(std::span(c)));
  EXPECT_EQ(bad_c, DataLossError(std::string(kShard1) + ": tensor 'c.w'" + ByteRangeText(dir, "c.w") +
                                 ": XXH3 of its 7 bytes is " +
                                 FormatXxh3(Xxh3(std::as_bytes(std::span(c)))) +
                                 ", recorded " + Hex(t[4])));

  // HashCheckpoint sees the same records.
  Result<CheckpointDigest> d = HashCheckpoint(*ckpt, {.check_recorded = false});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->recorded, 3u);
  EXPECT_EQ(d->matched, 2u);
}

// ---- the CLI ----

RunResult RunHashCli(const std::string& args) { return RunShardload("hash " + args); }

TEST(HashCliTest, TextOutputSortedByNameWithDigest) {
  const auto& t = Tensors();
  Result<CheckpointDigest> d = HashDir(SingleFile());
  ASSERT_TRUE(d.ok());
  std::string digest = FormatXxh3(LayoutFreeDigest(d->tensors));
  for (const std::string& dir : {SingleFile(), Sharded()}) {
    RunResult r = RunHashCli(dir);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out, Hex(t[1]) + "  BF16[5]  a.w\n" +          //
                         Hex(t[0]) + "  F32[2, 3]  b.w\n" +     //
                         Hex(t[2]) + "  U8[10000]  big\n" +     //
                         Hex(t[4]) + "  U8[7]  c.w\n" +         //
                         "2d06800538d394c2  F16[0, 4]  empty\n" //
                         "digest " + digest + "  5 tensors, 10041 bytes\n");
  }
}

TEST(HashCliTest, JsonOutputWithNastyNames) {
  std::string dir = MakeTestDir("nasty");
  std::string nul_name("nul\0x", 5);
  std::vector<FixtureTensor> tensors = {{"q\"b\\s", "U8", {1}, ""},
                                        {"ctl\n\x01", "I16", {}, ""},
                                        {nul_name, "BOOL", {2}, ""}};
  ASSERT_TRUE(WriteFile(dir + "/x.safetensors", SafetensorsBytes(tensors)));
  Result<CheckpointDigest> d = HashDir(dir);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  RunResult r = RunHashCli("--json " + dir + "/x.safetensors");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out, "{\"tensors\":["
                   "{\"name\":\"ctl\\n\\u0001\",\"dtype\":\"I16\",\"shape\":[],\"xxh3\":\"" +
                       Hex(tensors[1]) + "\"},"
                       "{\"name\":\"nul\\u0000x\",\"dtype\":\"BOOL\",\"shape\":[2],\"xxh3\":\"" +
                       Hex(tensors[2]) + "\"},"
                       "{\"name\":\"q\\\"b\\\\s\",\"dtype\":\"U8\",\"shape\":[1],\"xxh3\":\"" +
                       Hex(tensors[0]) + "\"}],"
                       "\"digest\":\"" + FormatXxh3(LayoutFreeDigest(d->tensors)) +
                       "\",\"total_bytes\":5,\"recorded\":0,\"matched\":0}\n");
  // Text mode keeps one line per tensor: names with control characters are quoted.
  RunResult text = RunHashCli(dir);
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, Hex(tensors[1]) + "  I16[]  \"ctl\\n\\u0001\"\n" + Hex(tensors[2]) +
                          "  BOOL[2]  \"nul\\u0000x\"\n" + Hex(tensors[0]) + "  U8[1]  q\"b\\s\n" +
                          "digest " + FormatXxh3(LayoutFreeDigest(d->tensors)) +
                          "  3 tensors, 5 bytes\n");
}

TEST(HashCliTest, RecordedMismatchFailsUnlessNoCheck) {
  std::map<std::string, std::string> md;
  AddChecksumsToMetadata({{"c.w", 1}}, md);
  std::string dir = SingleFile(md);
  std::string msg = "model.safetensors: tensor 'c.w'" + ByteRangeText(dir, "c.w") + ": XXH3 of its 7 bytes is " +
                    Hex(Tensors()[4]) + ", recorded 0000000000000001";
  RunResult r = RunHashCli(dir + " --json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "shardload hash: " + msg + "\n");
  EXPECT_EQ(r.out, "{\"error\":{\"code\":\"data_loss\",\"message\":\"" + msg + "\"}}\n");
  RunResult relaxed = RunHashCli("--no-check " + dir);
  EXPECT_EQ(relaxed.exit_code, 0) << relaxed.err;
  EXPECT_TRUE(relaxed.out.ends_with(
      " 5 tensors, 10041 bytes\nrecords 1 of 5 tensors carry an XXH3 record; 1 differ\n"))
      << relaxed.out;
  RunResult relaxed_json = RunHashCli("--no-check --json " + dir);
  EXPECT_EQ(relaxed_json.exit_code, 0) << relaxed_json.err;
  EXPECT_TRUE(relaxed_json.out.ends_with(",\"total_bytes\":10041,\"recorded\":1,\"matched\":0}\n"))
      << relaxed_json.out;

  // Correct records: reported as matching.
  std::map<std::string, std::string> good;
  AddChecksumsToMetadata({{"c.w", HashOf(Tensors()[4])}, {"big", HashOf(Tensors()[2])}}, good);
  RunResult ok = RunHashCli(SingleFile(good));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(ok.out.ends_with(
      " 5 tensors, 10041 bytes\nrecords 2 of 5 tensors carry an XXH3 record; all match\n"))
      << ok.out;
}

TEST(HashCliTest, UsageErrors) {
  RunResult none = RunHashCli("");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_TRUE(none.err.starts_with("shardload hash: missing PATH\nusage: shardload hash PATH"))
      << none.err;
  RunResult bad = RunHashCli("--frobnicate x");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(bad.err.starts_with("shardload hash: unknown option '--frobnicate'\n")) << bad.err;
  // A switch given a value is refused as in the other commands, not taken as unknown.
  RunResult valued = RunHashCli("x --json=1");
  EXPECT_EQ(valued.exit_code, 2);
  EXPECT_TRUE(valued.err.starts_with("shardload hash: --json takes no value (got '--json=1')\n"))
      << valued.err;
  RunResult two = RunHashCli("a b");
  EXPECT_EQ(two.exit_code, 2);
  EXPECT_TRUE(two.err.starts_with("shardload hash: more than one PATH ('a', 'b')\n")) << two.err;
  RunResult missing = RunHashCli("/nonexistent/x.safetensors");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err,
            "shardload hash: /nonexistent/x.safetensors: no such file or directory\n");
  EXPECT_EQ(missing.out, "");
}

}  // namespace
}  // namespace shardload
