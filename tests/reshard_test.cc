// Tests of `shardload reshard` (cli/reshard.cc), run as a subprocess on fixtures: the
// new shards hold the same tensors (same per-tensor XXH3 and layout-free digest), carry
// XXH3 records that read back clean, keep the source metadata, and bad usage fails.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "format/checksum.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"
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
using ::shardload::testing::WriteFile;

RunResult Reshard(const std::string& args) { return RunShardload("reshard " + args); }

CheckpointDigest Digest(const std::string& dir);

// A two-shard source with index metadata and an XXH3 record for w1 (the old records are
// not carried over: the new ones replace them). `w1_record`: the recorded value, the
// right one when empty.
std::string Source(std::string w1_record = "") {
  std::string dir = MakeTestDir("src");
  EXPECT_TRUE(WriteFile(dir + "/a.safetensors",
                        SafetensorsBytes({{"w1", "F32", {64, 33}, ""}, {"b1", "BF16", {7}, ""}})));
  EXPECT_TRUE(WriteFile(dir + "/b.safetensors",
                        SafetensorsBytes({{"w2", "U8", {5000}, ""}, {"s", "I64", {}, ""}})));
  auto write_index = [&](const std::string& record) {
    EXPECT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
                          IndexJson({{"b1", "a.safetensors"}, {"s", "b.safetensors"},
                                     {"w1", "a.safetensors"}, {"w2", "b.safetensors"}},
                                    {{"producer", "test"}, {"shardload.xxh3.w1", record}},
                                    8448 + 14 + 5000 + 8)));
  };
  write_index("0000000000000000");
  if (w1_record.empty()) w1_record = FormatXxh3(Digest(dir).tensors[2].xxh3);  // b1, s, w1, w2
  write_index(w1_record);
  return dir;
}

CheckpointDigest Digest(const std::string& dir) {
  Result<Checkpoint> ckpt = Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  HashOptions options;
  options.check_recorded = false;
  Result<CheckpointDigest> d = HashCheckpoint(*ckpt, options);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return *d;
}

TEST(ReshardTest, ThreeBalancedShardsHoldTheSameTensors) {
  std::string src = Source();
  std::string out = MakeTestDir("out") + "/new";
  RunResult r = Reshard(src + " " + out + " --shards 3 --no-sync");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  CheckpointDigest before = Digest(src);
  CheckpointDigest after = Digest(out);
  EXPECT_EQ(r.out, "wrote 4 files into " + out + ": 4 tensors, 13470 bytes; XXH3 verified\n"
                   "digest " + FormatXxh3(LayoutFreeDigest(before.tensors)) + "\n");
  EXPECT_EQ(r.err, "");
  ASSERT_EQ(after.tensors.size(), 4u);
  EXPECT_EQ(after.recorded, 4u);
  EXPECT_EQ(after.matched, 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(after.tensors[i].xxh3, before.tensors[i].xxh3) << before.tensors[i].name;
    EXPECT_EQ(after.tensors[i].recorded, before.tensors[i].xxh3);
  }
  Result<Checkpoint> ckpt = Checkpoint::Open(out);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ(ckpt->shards().size(), 3u);
  EXPECT_EQ(ckpt->shards()[0].file, "model-00001-of-00003.safetensors");
  EXPECT_EQ(ckpt->metadata().at("producer"), "test");
  EXPECT_EQ(ckpt->metadata().at("shardload.xxh3.w1"), FormatXxh3(before.tensors[2].xxh3));  // sorted: b1, s, w1, w2
  EXPECT_EQ(ckpt->index_total_size(), 13470u);
}

// --align-data: every new shard's data section starts on the boundary, the tensors are
// the same, and a value that is not a power of two from 8 to 65536 is bad usage.
TEST(ReshardTest, AlignDataPutsEveryDataSectionOnTheBoundary) {
  std::string src = Source();
  for (const char* a : {"64", "4096"}) {
    std::string out = MakeTestDir("out") + "/aligned";
    RunResult r = Reshard(src + " " + out + " --shards 3 --no-sync --align-data " + a);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(Digest(out).tensors.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(Digest(out).tensors[i].xxh3, Digest(src).tensors[i].xxh3);
    }
    Result<Checkpoint> ckpt = Checkpoint::Open(out);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
    for (const StoredTensor& t : ckpt->tensors()) {
      uint64_t first = UINT64_MAX;  // the shard's first tensor: where its data starts
      for (const StoredTensor& u : ckpt->tensors()) {
        if (u.shard == t.shard) first = std::min(first, u.file_offset);
      }
      EXPECT_EQ(first % std::stoull(a), 0u) << t.name << " --align-data " << a;
    }
  }
  RunResult bad = Reshard(src + " /tmp/x --shards 2 --align-data 48");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(bad.err.starts_with("shardload reshard: invalid --align-data '48': expected a "
                                  "power of two from 8 to 65536\nusage:"))
      << bad.err;
}

// New shards follow the source's order (shard, then offset), not the names' sort: a
// checkpoint whose shards go layer by layer keeps layers.2 next to layers.3, not after
// layers.10 and layers.11.
TEST(ReshardTest, ShardsFollowTheSourceOrder) {
  std::string src = MakeTestDir("layers_src");
  std::vector<std::pair<std::string, std::string>> map;
  for (int layer = 0; layer < 12; ++layer) {
    const std::string name = "layers." + std::to_string(layer) + ".w";
    const std::string file = "s" + std::to_string(100 + layer) + ".safetensors";
    ASSERT_TRUE(WriteFile(src + "/" + file, SafetensorsBytes({{name, "U8", {16}, ""}})));
    map.emplace_back(name, file);
  }
  ASSERT_TRUE(WriteFile(src + "/model.safetensors.index.json", IndexJson(map, {}, 12 * 16)));
  std::string out = MakeTestDir("layers_out");
  RunResult r = Reshard(src + " " + out + " --shards 6 --no-sync --no-checksums");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Result<Checkpoint> ckpt = Checkpoint::Open(out);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  for (const StoredTensor& t : ckpt->tensors()) {
    const int layer = std::stoi(t.name.substr(7));
    EXPECT_EQ(t.shard, static_cast<uint32_t>(layer / 2)) << t.name;
  }
}

// An index's values that are not strings (transformers writes a numeric
// "total_parameters") stay JSON values in the new index, and become their text in a
// single file's __metadata__, which holds strings only.
TEST(ReshardTest, IndexMetadataKeepsItsJsonTypes) {
  std::string src = MakeTestDir("typed_src");
  ASSERT_TRUE(WriteFile(src + "/a.safetensors", SafetensorsBytes({{"w1", "U8", {8}, ""}})));
  ASSERT_TRUE(WriteFile(src + "/b.safetensors", SafetensorsBytes({{"w2", "U8", {8}, ""}})));
  ASSERT_TRUE(WriteFile(src + "/model.safetensors.index.json",
                        "{\"metadata\": {\"total_size\": 16, \"total_parameters\": 16, "
                        "\"flags\": {\"a\": [1, true, null]}, \"producer\": \"7\"},\n"
                        " \"weight_map\": {\"w1\": \"a.safetensors\", \"w2\": \"b.safetensors\"}}"));
  std::string out = MakeTestDir("typed_out");
  RunResult r = Reshard(src + " " + out + " --shards 2 --no-sync --no-checksums");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::optional<std::string> index = ReadFile(out + "/model.safetensors.index.json");
  ASSERT_TRUE(index.has_value());
  EXPECT_NE(index->find("\n    \"flags\": {\"a\":[1,true,null]},\n    \"producer\": \"7\",\n"
                        "    \"total_parameters\": 16,\n    \"total_size\": 16\n"),
            std::string::npos)
      << *index;
  Result<Checkpoint> ckpt = Checkpoint::Open(out);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->metadata_json(),
            (std::set<std::string, std::less<>>{"flags", "total_parameters", "total_size"}));
  EXPECT_EQ(ckpt->metadata().at("producer"), "7");

  std::string one = MakeTestDir("typed_one");
  r = Reshard(src + " " + one + " --shards 1 --no-sync --no-checksums");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Result<Checkpoint> file = Checkpoint::Open(one + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->metadata().at("total_parameters"), "16");
  EXPECT_EQ(file->metadata().at("flags"), "{\"a\":[1,true,null]}");
  EXPECT_TRUE(file->metadata_json().empty());
}

TEST(ReshardTest, OneFileWithoutChecksums) {
  std::string src = Source();
  std::string out = MakeTestDir("one");
  RunResult r = Reshard(src + " " + out + " --max-shard-size 1GB --prefix m --no-checksums");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "wrote 1 file into " + out + ": 4 tensors, 13470 bytes\n");
  Result<Checkpoint> ckpt = Checkpoint::Open(out + "/m.safetensors");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->metadata().count("shardload.xxh3.w1"), 0u);
  EXPECT_EQ(ckpt->metadata().at("producer"), "test");
  EXPECT_EQ(LayoutFreeDigest(Digest(out).tensors), LayoutFreeDigest(Digest(src).tensors));
}

TEST(ReshardTest, Errors) {
  std::string src = Source();
  RunResult same = Reshard(src + " " + src + " --shards 2");
  EXPECT_EQ(same.exit_code, 2);
  EXPECT_TRUE(same.err.starts_with("shardload reshard: " + src +
                                   ": is the checkpoint's own folder; write the new shards "
                                   "elsewhere\nusage: shardload reshard PATH OUT"))
      << same.err;
  // The same folder through a component that does not exist yet: refused before it is
  // made (it would be created, and the source rewritten in place).
  RunResult via_new = Reshard(src + " " + src + "/new/.. --shards 2");
  EXPECT_EQ(via_new.exit_code, 2);
  EXPECT_TRUE(via_new.err.starts_with("shardload reshard: " + src +
                                      "/new/..: is the checkpoint's own folder; write the new "
                                      "shards elsewhere\nusage:"))
      << via_new.err;
  struct stat st;
  EXPECT_NE(stat((src + "/new").c_str(), &st), 0) << "made a folder for a refused OUT";
  RunResult both = Reshard(src + " /tmp/x --shards 2 --max-shard-size 1GB");
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_TRUE(both.err.starts_with(
      "shardload reshard: give exactly one of --max-shard-size and --shards\nusage:"))
      << both.err;
  RunResult bad_size = Reshard(src + " /tmp/x --max-shard-size 12XB");
  EXPECT_EQ(bad_size.exit_code, 2);
  EXPECT_TRUE(bad_size.err.starts_with("shardload reshard: invalid byte size '12XB'"))
      << bad_size.err;
  RunResult bad_n = Reshard(src + " /tmp/x --shards 0");
  EXPECT_EQ(bad_n.exit_code, 2);
  EXPECT_TRUE(bad_n.err.starts_with(
      "shardload reshard: invalid --shards '0': expected an integer in 1..10000 (the most "
      "shard files a reader accepts)\nusage:"))
      << bad_n.err;
  // More shard files than the reader accepts (CatalogOptions::max_shards) is refused.
  RunResult over = Reshard(src + " /tmp/x --shards=10001");
  EXPECT_EQ(over.exit_code, 2);
  EXPECT_TRUE(over.err.starts_with(
      "shardload reshard: invalid --shards '10001': expected an integer in 1..10000 (the "
      "most shard files a reader accepts)\nusage:"))
      << over.err;
  RunResult empty_out = Reshard(src + " '' --shards 2");
  EXPECT_EQ(empty_out.exit_code, 2);
  EXPECT_TRUE(empty_out.err.starts_with("shardload reshard: OUT is empty\nusage:"))
      << empty_out.err;
  RunResult no_value = Reshard(src + " /tmp/x --shards");
  EXPECT_EQ(no_value.exit_code, 2);
  EXPECT_TRUE(no_value.err.starts_with("shardload reshard: --shards needs a value\nusage:"))
      << no_value.err;
  // Option errors are found before OUT is created.
  std::string many = MakeTestDir("many") + "/out";
  RunResult too_many = Reshard(src + " " + many + " --shards 5");
  EXPECT_EQ(too_many.exit_code, 2);
  EXPECT_TRUE(too_many.err.starts_with(
      "shardload reshard: num_shards 5 exceeds the number of tensors (4)\nusage:"))
      << too_many.err;
  RunResult bad_prefix = Reshard(src + " " + many + " --shards 2 --prefix a/b");
  EXPECT_EQ(bad_prefix.exit_code, 2);
  EXPECT_TRUE(bad_prefix.err.starts_with("shardload reshard: invalid shard prefix 'a/b'"))
      << bad_prefix.err;
  EXPECT_NE(::access(many.c_str(), F_OK), 0);
  RunResult missing = Reshard("/nonexistent/ckpt /tmp/x --shards 1");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "shardload reshard: /nonexistent/ckpt: no such file or directory\n");
}

TEST(ReshardTest, FlagsTakeInlineValuesAndOutGetsItsParents) {
  std::string src = Source();
  std::string out = MakeTestDir("inline") + "/a/b/out";  // neither a nor a/b exists
  RunResult r = Reshard(src + " " + out + " --shards=2 --prefix=p --no-sync");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.starts_with("wrote 3 files into " + out + ": 4 tensors, 13470 bytes; "))
      << r.out;
  Result<Checkpoint> two = Checkpoint::Open(out + "/p.safetensors.index.json");
  ASSERT_TRUE(two.ok()) << two.status().ToString();
  EXPECT_EQ(two->shards().size(), 2u);
  r = Reshard(src + " " + out + " --max-shard-size=1GB --prefix=q --no-sync");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Checkpoint::Open(out + "/q.safetensors").ok());
}

TEST(ReshardTest, ReadsBackWhatItWroteNotAnotherCheckpointInOut) {
  // OUT already holds a `model` checkpoint (other tensors, no records), which opening
  // the folder resolves to; the read-back must open the --prefix files just written.
  std::string src = Source();
  const std::string digest = FormatXxh3(LayoutFreeDigest(Digest(src).tensors));
  // A single model.safetensors there; one new file q.safetensors.
  std::string single_out = MakeTestDir("other_single");
  ASSERT_TRUE(WriteFile(single_out + "/model.safetensors",
                        SafetensorsBytes({{"old", "U8", {3}, ""}})));
  std::optional<std::string> old_bytes = ReadFile(single_out + "/model.safetensors");
  RunResult single = Reshard(src + " " + single_out + " --shards 1 --prefix q --no-sync");
  EXPECT_EQ(single.exit_code, 0) << single.err;
  EXPECT_EQ(single.out, "wrote 1 file into " + single_out +
                            ": 4 tensors, 13470 bytes; XXH3 verified\ndigest " + digest + "\n");
  // The write says that a load of OUT still finds the other checkpoint.
  EXPECT_EQ(single.err, "shardload reshard: warning: " + single_out +
                            ": also holds model.safetensors of another checkpoint, so a load "
                            "of the folder will not load the new q.safetensors; load it by its "
                            "path, " + single_out + "/q.safetensors\n");
  EXPECT_EQ(ReadFile(single_out + "/model.safetensors"), old_bytes);
  // A sharded model checkpoint there (its index); two new shards and p's index.
  std::string sharded_out = MakeTestDir("other_sharded");
  ASSERT_TRUE(WriteFile(sharded_out + "/old.safetensors", SafetensorsBytes({{"old", "U8", {3}, ""}})));
  ASSERT_TRUE(WriteFile(sharded_out + "/model.safetensors.index.json",
                        IndexJson({{"old", "old.safetensors"}})));
  RunResult sharded = Reshard(src + " " + sharded_out + " --shards 2 --prefix p --no-sync");
  EXPECT_EQ(sharded.exit_code, 0) << sharded.err;
  EXPECT_EQ(sharded.out, "wrote 3 files into " + sharded_out +
                             ": 4 tensors, 13470 bytes; XXH3 verified\ndigest " + digest + "\n");
  EXPECT_EQ(sharded.err, "shardload reshard: warning: " + sharded_out +
                             ": also holds model.safetensors.index.json of another checkpoint, "
                             "so a load of the folder will not load the new "
                             "p.safetensors.index.json; load it by its path, " +
                             sharded_out + "/p.safetensors.index.json\n");
  Result<Checkpoint> old = Checkpoint::Open(sharded_out);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->tensors().size(), 1u);  // still the old `model` one
}

TEST(ReshardTest, MoreShardFilesThanAReaderAcceptsIsRefusedUpFront) {
  // 10001 one-byte tensors split at 1 byte each: 10001 shard files, one more than a
  // reader accepts. Refused before OUT is made, as --shards 10001 is.
  std::vector<FixtureTensor> tensors;
  for (int i = 0; i < 10001; ++i) tensors.push_back({"t" + std::to_string(i), "U8", {1}, ""});
  std::string src = MakeTestDir("wide");
  ASSERT_TRUE(WriteFile(src + "/model.safetensors", SafetensorsBytes(tensors)));
  std::string out = MakeTestDir("wide_out") + "/out";
  RunResult r = Reshard(src + " " + out + " --max-shard-size 1 --no-sync");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.err.starts_with("shardload reshard: --max-shard-size 1 needs 10001 shard files, "
                                "more than the 10000 a reader accepts\nusage:"))
      << r.err;
  EXPECT_NE(::access(out.c_str(), F_OK), 0);
  // 2 bytes a shard: 5001 files, which a reader takes.
  RunResult ok = Reshard(src + " " + out + " --max-shard-size 2 --no-sync --no-checksums");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "wrote 5002 files into " + out + ": 10001 tensors, 10001 bytes\n");
}

TEST(ReshardTest, CorruptSourceIsRefusedBeforeAnythingIsWritten) {
  // The source records a hash its bytes do not have: copying it under fresh records
  // would launder the corruption, so nothing is written and OUT keeps what it held.
  std::string src = Source("0123456789abcdef");
  std::string out = MakeTestDir("keep");
  ASSERT_TRUE(WriteFile(out + "/model.safetensors", SafetensorsBytes({{"old", "U8", {3}, ""}})));
  std::optional<std::string> old_bytes = ReadFile(out + "/model.safetensors");
  ASSERT_TRUE(old_bytes.has_value());
  RunResult r = Reshard(src + " " + out + " --shards 1 --no-sync");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "shardload reshard: a.safetensors: tensor 'w1'" + ByteRangeText(src, "w1") +
                       ": XXH3 of its 8448 bytes is " +
                       FormatXxh3(Digest(src).tensors[2].xxh3) +
                       ", recorded 0123456789abcdef in model.safetensors.index.json; nothing was "
                       "written\n");
  EXPECT_EQ(ReadFile(out + "/model.safetensors"), old_bytes);
  // An OUT that did not exist is not made for a refused source.
  std::string fresh = MakeTestDir("fresh") + "/out";
  EXPECT_EQ(Reshard(src + " " + fresh + " --shards 1 --no-sync").exit_code, 1);
  EXPECT_NE(::access(fresh.c_str(), F_OK), 0);
  // Without hashing, the bytes are copied and no record vouches for them.
  RunResult plain = Reshard(src + " " + out + " --shards 1 --no-sync --no-checksums");
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
}

TEST(ReshardTest, ReplacedFilesOfAnEarlierCheckpointAreListed) {
  std::string src = Source();
  std::string out = MakeTestDir("relist");
  ASSERT_EQ(Reshard(src + " " + out + " --shards 3 --no-sync").exit_code, 0);
  RunResult r = Reshard(src + " " + out + " --shards 2 --no-sync");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.ends_with("\n  removed stale model-00001-of-00003.safetensors\n"
                              "  removed stale model-00002-of-00003.safetensors\n"
                              "  removed stale model-00003-of-00003.safetensors\n"))
      << r.out;
}

}  // namespace
}  // namespace shardload
