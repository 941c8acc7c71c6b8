// Tests of Checkpoint::Open (loader/checkpoint.h): path resolution, the shard-set
// rules with their exact codes and messages, lookup, and tensor bytes.
#include "loader/checkpoint.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "format/folder_lock.h"
#include "loader/checkpoint_hash.h"
#include "tests/fixtures.h"

namespace shardload {
namespace {

using ::shardload::testing::FixtureTensor;
using ::shardload::testing::IndexJson;
using ::shardload::testing::MakeTestDir;
using ::shardload::testing::SafetensorsBytes;
using ::shardload::testing::TensorData;
using ::shardload::testing::WriteFile;

constexpr char kShard1[] = "model-00001-of-00002.safetensors";
constexpr char kShard2[] = "model-00002-of-00002.safetensors";
constexpr char kIndex[] = "model.safetensors.index.json";

std::string RealPath(const std::string& p) {
  char* r = ::realpath(p.c_str(), nullptr);
  std::string out = r != nullptr ? r : "";
  ::free(r);
  return out;
}

std::string AsString(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A two-shard checkpoint: shard 1 holds "b.w" and "a.w", shard 2 holds "c.w".
struct Sharded {
  std::string dir;
  std::vector<FixtureTensor> shard1 = {{"b.w", "F32", {2, 3}, ""}, {"a.w", "BF16", {5}, ""}};
  std::vector<FixtureTensor> shard2 = {{"c.w", "U8", {7}, ""}};
  std::vector<std::pair<std::string, std::string>> weight_map = {
      {"a.w", kShard1}, {"b.w", kShard1}, {"c.w", kShard2}};
  uint64_t total = 24 + 10 + 7;
};

Sharded WriteSharded(const std::string& tag, bool write_index = true) {
  Sharded s;
  s.dir = MakeTestDir(tag);
  EXPECT_TRUE(WriteFile(s.dir + "/" + kShard1, SafetensorsBytes(s.shard1, {{"format", "pt"}})));
  EXPECT_TRUE(WriteFile(s.dir + "/" + kShard2, SafetensorsBytes(s.shard2, {{"format", "pt"}})));
  if (write_index) {
    EXPECT_TRUE(WriteFile(s.dir + "/" + kIndex,
                          IndexJson(s.weight_map, {{"producer", "test"}}, s.total)));
  }
  return s;
}

TEST(CheckpointOpen, SingleFileByPath) {
  std::string dir = MakeTestDir("single");
  std::vector<FixtureTensor> ts = {{"zeta", "F32", {2, 2}, ""}, {"alpha", "I64", {}, ""}};
  std::string bytes = SafetensorsBytes(ts, {{"format", "pt"}});
  ASSERT_TRUE(WriteFile(dir + "/weights.safetensors", bytes));

  Result<Checkpoint> c = Checkpoint::Open(dir + "/weights.safetensors");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->sharded());
  EXPECT_EQ(c->folder(), dir);
  ASSERT_EQ(c->shards().size(), 1u);
  const ShardInfo& s = c->shards()[0];
  EXPECT_EQ(s.file, "weights.safetensors");
  EXPECT_EQ(s.path, dir + "/weights.safetensors");
  EXPECT_EQ(s.size, bytes.size());
  EXPECT_EQ(s.data_start, bytes.size() - 16 - 8);
  EXPECT_EQ(s.header_length, s.data_start - 8);
  EXPECT_EQ(c->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_TRUE(c->has_metadata());
  EXPECT_EQ(s.metadata, c->metadata());
  EXPECT_EQ(c->total_bytes(), 24u);
  EXPECT_TRUE(c->warnings().empty());
  ASSERT_EQ(c->tensors().size(), 2u);
  // Sorted by name although the file stores zeta first.
  EXPECT_EQ(c->tensors()[0],
            (StoredTensor{"alpha", Dtype::kI64, {}, 0, s.data_start + 16, 8}));
  EXPECT_EQ(c->tensors()[1],
            (StoredTensor{"zeta", Dtype::kF32, {2, 2}, 0, s.data_start, 16}));
  EXPECT_EQ(c->DataOffsets(c->tensors()[0]), (std::pair<uint64_t, uint64_t>{16, 24}));
  EXPECT_EQ(c->DataOffsets(c->tensors()[1]), (std::pair<uint64_t, uint64_t>{0, 16}));
  ASSERT_NE(c->Find("zeta"), nullptr);
  EXPECT_EQ(c->Find("zeta")->name, "zeta");
  EXPECT_EQ(c->Find("zet"), nullptr);
  EXPECT_EQ(c->Find("zetaa"), nullptr);
  EXPECT_EQ(c->Find(""), nullptr);
}

TEST(CheckpointOpen, CatalogIsInByteOrderOfNamesWhateverTheFileOrder) {
  // Names that share long prefixes, tie on their first 8 bytes after the common prefix,
  // are prefixes of each other, or hold NUL and bytes >= 0x80, in a shuffled file order.
  std::vector<std::string> names = {"p.", std::string("p.\0", 3), std::string("p.\0\0", 4)};
  for (int i = 0; i < 300; ++i) {
    std::string n = "p.layers." + std::to_string(i % 37) + ".experts." + std::to_string(i);
    names.push_back(n);
    if (i % 50 == 0) names.push_back(n + ".w");
  }
  names.push_back("p.\xc3\xa9");
  names.push_back("p.\x7f");
  std::mt19937 rng(7);
  // Random names over a 3-byte alphabet (with NUL), up to 40 bytes: long equal runs.
  std::set<std::string> seen(names.begin(), names.end());
  for (int i = 0; i < 400; ++i) {
    std::string n = "p.";
    for (size_t len = rng() % 41; n.size() < 2 + len;) n += "ab\0"[rng() % 3];
    if (seen.insert(n).second) names.push_back(n);
  }
  std::shuffle(names.begin(), names.end(), rng);
  std::vector<FixtureTensor> ts;
  for (const std::string& n : names) ts.push_back({n, "U8", {1}, ""});
  std::string dir = MakeTestDir("catalog_order");
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors", SafetensorsBytes(ts)));
  Result<Checkpoint> c = Checkpoint::Open(dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::string> got;
  for (const StoredTensor& t : c->tensors()) got.push_back(t.name);
  std::vector<std::string> want = names;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
  for (const std::string& n : names) {
    ASSERT_NE(c->Find(n), nullptr) << n;
    const auto [b, e] = c->DataOffsets(*c->Find(n));
    EXPECT_EQ(e - b, 1u);
    // File order is the shuffled order: the tensor keeps its own offset.
    EXPECT_EQ(b, static_cast<uint64_t>(std::find(names.begin(), names.end(), n) - names.begin()));
  }
}

TEST(CheckpointOpen, CatalogGathersEntriesAcrossShardsInNameOrder) {
  // Names interleave across three shards (and are out of order inside two): each entry
  // must keep its own shard, dtype, shape and offsets after the sort.
  std::string dir = MakeTestDir("gather_shards");
  const std::vector<std::vector<FixtureTensor>> shards = {
      {{"m", "U8", {3}, ""}, {"b", "F32", {2}, ""}},
      {{"a", "I64", {1, 1}, ""}, {"z", "U8", {5}, ""}, {"c", "BF16", {2, 2}, ""}},
      {{"n", "U8", {}, ""}}};
  const std::vector<std::string> files = {"s-1.safetensors", "s-2.safetensors", "s-3.safetensors"};
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    ASSERT_TRUE(WriteFile(dir + "/" + files[i], SafetensorsBytes(shards[i])));
    for (const FixtureTensor& t : shards[i]) weight_map.push_back({t.name, files[i]});
  }
  ASSERT_TRUE(WriteFile(dir + "/" + kIndex, IndexJson(weight_map)));
  Result<Checkpoint> c = Checkpoint::Open(dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->tensors().size(), 6u);
  const uint64_t d0 = c->shards()[0].data_start, d1 = c->shards()[1].data_start,
                 d2 = c->shards()[2].data_start;
  EXPECT_EQ(c->tensors()[0], (StoredTensor{"a", Dtype::kI64, {1, 1}, 1, d1, 8}));
  EXPECT_EQ(c->tensors()[1], (StoredTensor{"b", Dtype::kF32, {2}, 0, d0 + 3, 8}));
  EXPECT_EQ(c->tensors()[2], (StoredTensor{"c", Dtype::kBF16, {2, 2}, 1, d1 + 13, 8}));
  EXPECT_EQ(c->tensors()[3], (StoredTensor{"m", Dtype::kU8, {3}, 0, d0, 3}));
  EXPECT_EQ(c->tensors()[4], (StoredTensor{"n", Dtype::kU8, {}, 2, d2, 1}));
  EXPECT_EQ(c->tensors()[5], (StoredTensor{"z", Dtype::kU8, {5}, 1, d1 + 8, 5}));
  EXPECT_EQ(c->total_bytes(), 3u + 8 + 8 + 5 + 8 + 1);
}

// A safetensors file named *.json (safetensors loads any name) opens as one; an index
// still opens as an index, and text that is neither stays the index parser's error.
TEST(CheckpointOpen, SafetensorsFileNamedJsonIsNotAnIndex) {
  std::string dir = MakeTestDir("json_named");
  std::string bytes = SafetensorsBytes({{"w", "F32", {2}, ""}});
  ASSERT_TRUE(WriteFile(dir + "/weights.json", bytes));
  Result<Checkpoint> c = Checkpoint::Open(dir + "/weights.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->sharded());
  ASSERT_EQ(c->tensors().size(), 1u);
  EXPECT_EQ(c->tensors()[0].name, "w");
  ASSERT_TRUE(WriteFile(dir + "/w.safetensors", bytes));
  ASSERT_TRUE(WriteFile(dir + "/idx.json", "{\"weight_map\":{\"w\":\"w.safetensors\"}}"));
  Result<Checkpoint> index = Checkpoint::Open(dir + "/idx.json");
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_TRUE(index->sharded());
  EXPECT_EQ(index->index_file(), "idx.json");
  // Eight bytes then '{' but a length with high bytes set: text, read as an index.
  ASSERT_TRUE(WriteFile(dir + "/text.json", "12345678{}"));
  Result<Checkpoint> text = Checkpoint::Open(dir + "/text.json");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), StatusCode::kInvalidArgument) << text.status().ToString();
  EXPECT_TRUE(text.status().message().starts_with("text.json: ")) << text.status().ToString();
}

TEST(CheckpointOpen, RelativeFileNameHasDotFolder) {
  std::string dir = MakeTestDir("relative");
  ASSERT_TRUE(WriteFile(dir + "/m.safetensors", SafetensorsBytes({{"x", "U8", {1}, ""}})));
  char old_cwd[4096];
  ASSERT_NE(::getcwd(old_cwd, sizeof old_cwd), nullptr);
  ASSERT_EQ(::chdir(dir.c_str()), 0);
  Result<Checkpoint> c = Checkpoint::Open("m.safetensors");
  ASSERT_EQ(::chdir(old_cwd), 0);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->folder(), ".");
  EXPECT_EQ(c->shards()[0].path, "./m.safetensors");
}

TEST(CheckpointOpen, FolderPrefersModelSafetensors) {
  std::string dir = MakeTestDir("prefers");
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors", SafetensorsBytes({{"m", "U8", {1}, ""}})));
  ASSERT_TRUE(WriteFile(dir + "/extra.safetensors", SafetensorsBytes({{"e", "U8", {1}, ""}})));
  Result<Checkpoint> c = Checkpoint::Open(dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->shards()[0].file, "model.safetensors");
  EXPECT_NE(c->Find("m"), nullptr);
  EXPECT_EQ(c->Find("e"), nullptr);
}

TEST(CheckpointOpen, FolderWithOneOtherFile) {
  std::string dir = MakeTestDir("onefile");
  ASSERT_TRUE(WriteFile(dir + "/weights.safetensors", SafetensorsBytes({{"w", "U8", {3}, ""}})));
  ASSERT_TRUE(WriteFile(dir + "/README.md", "not a checkpoint"));
  Result<Checkpoint> c = Checkpoint::Open(dir + "/");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->shards()[0].file, "weights.safetensors");
  EXPECT_EQ(c->shards()[0].path, dir + "/weights.safetensors");
}

TEST(CheckpointOpen, FolderWithSeveralFilesAndNoIndexListsThemSorted) {
  std::string dir = MakeTestDir("several");
  for (const char* f : {"c.safetensors", "a.safetensors", "b.safetensors"}) {
    ASSERT_TRUE(WriteFile(dir + "/" + f, SafetensorsBytes({{"w", "U8", {1}, ""}})));
  }
  Result<Checkpoint> c = Checkpoint::Open(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status(), InvalidArgumentError(dir + ": folder holds several .safetensors files "
                                                   "and no index: a.safetensors, b.safetensors, "
                                                   "c.safetensors"));
}

TEST(CheckpointOpen, FolderWithSeveralIndexesAndNoDefaultListsThem) {
  std::string dir = MakeTestDir("indexes");
  ASSERT_TRUE(WriteFile(dir + "/b.safetensors.index.json", IndexJson({})));
  ASSERT_TRUE(WriteFile(dir + "/a.safetensors.index.json", IndexJson({})));
  Result<Checkpoint> c = Checkpoint::Open(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status(), InvalidArgumentError(dir + ": folder holds several index files and no "
                                                   "model.safetensors.index.json: "
                                                   "a.safetensors.index.json, "
                                                   "b.safetensors.index.json"));
}

TEST(CheckpointOpen, EmptyWeightMapIsAWarning) {
  // An index listing nothing next to a shard: a valid checkpoint of no tensors, said so.
  std::string dir = MakeTestDir("emptymap");
  ASSERT_TRUE(WriteFile(dir + "/model-00001-of-00001.safetensors",
                        SafetensorsBytes({{"w", "U8", {3}, ""}})));
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors.index.json", IndexJson({})));
  Result<Checkpoint> c = Checkpoint::Open(dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->tensors().empty());
  EXPECT_EQ(c->warnings(), std::vector<std::string>{
                               "model.safetensors.index.json: weight_map is empty; the "
                               "checkpoint has no tensors"});
}

TEST(CheckpointOpen, EmptyFolderIsNotFound) {
  std::string dir = MakeTestDir("empty");
  ASSERT_TRUE(WriteFile(dir + "/notes.txt", "x"));
  Result<Checkpoint> c = Checkpoint::Open(dir);
  EXPECT_EQ(c.status(), NotFoundError(dir + ": folder holds no .safetensors file or index"));
}

// A folder whose only .safetensors entries are a broken link and a folder says so,
// rather than only that it holds none.
TEST(CheckpointOpen, BrokenLinksAndFoldersNamedLikeFilesAreNamed) {
  std::string dir = MakeTestDir("broken_link");
  ASSERT_EQ(::symlink((dir + "/gone.safetensors").c_str(), (dir + "/model.safetensors").c_str()), 0);
  ASSERT_EQ(::mkdir((dir + "/x.safetensors").c_str(), 0755), 0);
  Result<Checkpoint> c = Checkpoint::Open(dir);
  EXPECT_EQ(c.status(), NotFoundError(dir + ": folder holds no .safetensors file or index (not "
                                            "regular files, or links to none: "
                                            "model.safetensors, x.safetensors)"));
}

TEST(CheckpointOpen, MissingPathIsNotFound) {
  std::string dir = MakeTestDir("missing");
  Result<Checkpoint> c = Checkpoint::Open(dir + "/nope.safetensors");
  EXPECT_EQ(c.status(), NotFoundError(dir + "/nope.safetensors: no such file or directory"));
  EXPECT_EQ(Checkpoint::Open("").status(), InvalidArgumentError("checkpoint path is empty"));
}

TEST(CheckpointOpen, InvalidOptionsAreErrors) {
  std::string dir = MakeTestDir("options");
  CatalogOptions o;
  o.read_threads = -1;
  EXPECT_EQ(Checkpoint::Open(dir, o).status(),
            InvalidArgumentError("CatalogOptions.read_threads must be between 0 and 256, got -1"));
  o.read_threads = 257;
  EXPECT_EQ(Checkpoint::Open(dir, o).status(),
            InvalidArgumentError("CatalogOptions.read_threads must be between 0 and 256, got 257"));
  o = CatalogOptions();
  o.max_shards = 0;
  EXPECT_EQ(Checkpoint::Open(dir, o).status(),
            InvalidArgumentError("CatalogOptions.max_shards must be at least 1"));
}

TEST(CheckpointOpen, ShardHeaderErrorsNameTheShardFile) {
  Sharded s = WriteSharded("badshard");
  ASSERT_TRUE(WriteFile(s.dir + "/" + kShard2, "abcd"));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), std::string(kShard2) +
                                      ": file is 4 bytes, too small for the 8-byte header length");
}

void ExpectShardedCatalog(const Checkpoint& c, const Sharded& s) {
  EXPECT_TRUE(c.sharded());
  EXPECT_EQ(c.index_file(), kIndex);
  ASSERT_EQ(c.shards().size(), 2u);
  EXPECT_EQ(c.shards()[0].file, kShard1);
  EXPECT_EQ(c.shards()[1].file, kShard2);
  EXPECT_EQ(c.shards()[0].path, s.dir + "/" + kShard1);
  EXPECT_EQ(c.shards()[1].metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(c.index_total_size(), std::optional<uint64_t>(s.total));
  EXPECT_EQ(c.metadata().at("producer"), "test");
  EXPECT_EQ(c.total_bytes(), s.total);
  EXPECT_TRUE(c.warnings().empty());
  ASSERT_EQ(c.tensors().size(), 3u);
  EXPECT_EQ(c.tensors()[0].name, "a.w");
  EXPECT_EQ(c.tensors()[1].name, "b.w");
  EXPECT_EQ(c.tensors()[2].name, "c.w");
  const uint64_t d1 = c.shards()[0].data_start, d2 = c.shards()[1].data_start;
  EXPECT_EQ(c.tensors()[0], (StoredTensor{"a.w", Dtype::kBF16, {5}, 0, d1 + 24, 10}));
  EXPECT_EQ(c.tensors()[1], (StoredTensor{"b.w", Dtype::kF32, {2, 3}, 0, d1, 24}));
  EXPECT_EQ(c.tensors()[2], (StoredTensor{"c.w", Dtype::kU8, {7}, 1, d2, 7}));
  EXPECT_EQ(c.shards()[0].size, d1 + 34);
  EXPECT_EQ(c.shards()[1].size, d2 + 7);
}

TEST(CheckpointOpen, ShardedByFolder) {
  Sharded s = WriteSharded("byfolder");
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ExpectShardedCatalog(*c, s);
}

TEST(CheckpointOpen, ShardedByIndexPath) {
  Sharded s = WriteSharded("byindex");
  Result<Checkpoint> c = Checkpoint::Open(s.dir + "/" + kIndex);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ExpectShardedCatalog(*c, s);
}

// HoldsBothWarning: Open's warning for a folder whose `index` is loaded while a
// model.safetensors lies next to it.
std::vector<std::string> HoldsBothWarning(const std::string& dir, const std::string& index) {
  return {dir + ": holds both " + index + " and model.safetensors; loading the index "
          "(transformers loads model.safetensors)"};
}

TEST(CheckpointOpen, FolderIndexWinsOverFiles) {
  Sharded s = WriteSharded("indexwins");
  ASSERT_TRUE(WriteFile(s.dir + "/model.safetensors", SafetensorsBytes({{"m", "U8", {1}, ""}})));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->sharded());
  EXPECT_EQ(c->Find("m"), nullptr);
  // Said, since transformers would take the single file.
  EXPECT_EQ(c->warnings(), HoldsBothWarning(s.dir, kIndex));
}

TEST(CheckpointOpen, FolderWithOnlyANonDefaultIndex) {
  Sharded s = WriteSharded("otherindex", /*write_index=*/false);
  ASSERT_TRUE(WriteFile(s.dir + "/diffusion_pytorch_model.safetensors.index.json",
                        IndexJson(s.weight_map, {}, s.total)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->index_file(), "diffusion_pytorch_model.safetensors.index.json");
  EXPECT_EQ(c->tensors().size(), 3u);
}

TEST(CheckpointOpen, NonDefaultIndexNextToModelSafetensorsIsSaid) {
  Sharded s = WriteSharded("otherindex_single", /*write_index=*/false);
  ASSERT_TRUE(WriteFile(s.dir + "/foo.safetensors.index.json", IndexJson(s.weight_map, {}, s.total)));
  ASSERT_TRUE(WriteFile(s.dir + "/model.safetensors", SafetensorsBytes({{"m", "U8", {1}, ""}})));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->index_file(), "foo.safetensors.index.json");
  EXPECT_EQ(c->warnings(), HoldsBothWarning(s.dir, "foo.safetensors.index.json"));
}

TEST(CheckpointOpen, IndexThatIsAFolderIsNamedNotReportedMissing) {
  Sharded s = WriteSharded("index_is_dir", /*write_index=*/false);
  ASSERT_EQ(::mkdir((s.dir + "/" + kIndex).c_str(), 0755), 0);
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status(), InvalidArgumentError(s.dir + "/" + kIndex +
                                             ": not a regular file (a folder, or a link to none)"));
  // A model.safetensors there is what transformers would load: so does Open.
  ASSERT_TRUE(WriteFile(s.dir + "/model.safetensors", SafetensorsBytes({{"m", "U8", {1}, ""}})));
  Result<Checkpoint> single = Checkpoint::Open(s.dir);
  ASSERT_TRUE(single.ok()) << single.status().ToString();
  EXPECT_EQ(single->shards()[0].file, "model.safetensors");
}

// A single file's path takes no folder lock: one file is always whole, and a lock on
// its folder (any user who can read /tmp could take one) must not hold up its loads.
TEST(CheckpointOpen, ASingleFileIsOpenedAndReadWithoutTheFolderLock) {
  std::string dir = MakeTestDir("single_nolock");
  ASSERT_TRUE(WriteFile(dir + "/w.safetensors", SafetensorsBytes({{"w", "U8", {16}, ""}})));
  Result<FolderLock> held = LockFolder(dir, FolderLock::kExclusive, kDefaultFolderLockWaitMs);
  ASSERT_TRUE(held.ok() && held->held());
  CatalogOptions quick;
  quick.writer_wait_ms = 30;
  Result<Checkpoint> c = Checkpoint::Open(dir + "/w.safetensors", quick);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::unique_ptr<ReadableFile>> files;
  EXPECT_TRUE(OpenShardFiles(*c, {true}, IoMode::kPread, UringOptions(), &files).ok());
  EXPECT_NE(files[0], nullptr);
  EXPECT_TRUE(HashCheckpoint(*c).ok());
  // A file replaced by another layout is aborted at once: only a missing file waits.
  ASSERT_TRUE(WriteFile(dir + "/w.new", SafetensorsBytes({{"v", "U8", {16}, ""}})));
  ASSERT_EQ(::rename((dir + "/w.new").c_str(), (dir + "/w.safetensors").c_str()), 0);
  EXPECT_EQ(OpenShardFiles(*c, {true}, IoMode::kPread, UringOptions(), &files).code(),
            StatusCode::kAborted);
  // The folder's own path (or a missing file's) still waits for the lock.
  EXPECT_EQ(Checkpoint::Open(dir, quick).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(Checkpoint::Open(dir + "/gone.safetensors", quick).status().code(),
            StatusCode::kUnavailable);
}

TEST(CheckpointOpen, LoneShardOfASetIsNotTakenForASingleFile) {
  // What a copy that stopped, or a writer killed between its renames (after setting the
  // old model.safetensors aside), leaves: shard 1 of 3 and nothing else.
  std::string dir = MakeTestDir("lone_shard");
  const std::string shard = "model-00001-of-00003.safetensors";
  ASSERT_TRUE(WriteFile(dir + "/" + shard, SafetensorsBytes({{"w", "U8", {3}, ""}})));
  Result<Checkpoint> c = Checkpoint::Open(dir);
  EXPECT_EQ(c.status(), InvalidArgumentError(dir + ": folder holds only " + shard +
                                             " (shard 1 of 3) and no index; give the file's own "
                                             "path to load it alone"));
  Result<Checkpoint> alone = Checkpoint::Open(dir + "/" + shard);  // asked for by name
  ASSERT_TRUE(alone.ok()) << alone.status().ToString();
  EXPECT_EQ(alone->tensors().size(), 1u);
  // "1 of 1", and names that only look similar, are single files.
  for (const char* name : {"model-00001-of-00001.safetensors", "model-of-00003.safetensors",
                           "model-x1-of-00003.safetensors", "model-00001-of-3x.safetensors",
                           "00001-of-00003.safetensors"}) {
    std::string d = MakeTestDir("single_like");
    ASSERT_TRUE(WriteFile(d + "/" + name, SafetensorsBytes({{"w", "U8", {3}, ""}})));
    Result<Checkpoint> one = Checkpoint::Open(d);
    EXPECT_TRUE(one.ok()) << name << ": " << one.status().ToString();
  }
}

TEST(CheckpointOpen, WaitsForAWriterHoldingTheFolderLock) {
  Sharded s = WriteSharded("writer_lock");
  {
    Result<FolderLock> held = LockFolder(s.dir, FolderLock::kExclusive, kDefaultFolderLockWaitMs);
    ASSERT_TRUE(held.ok() && held->held());
    CatalogOptions quick;
    quick.writer_wait_ms = 30;
    Result<Checkpoint> c = Checkpoint::Open(s.dir, quick);
    EXPECT_EQ(c.status(),
              Status(StatusCode::kUnavailable,
                     s.dir + ": gave up after 30 ms waiting for the folder's lock, held by "
                             "another process (a shardload writer publishing a rewrite there, "
                             "a reader opening the checkpoint, or any program holding an flock "
                             "on the folder); try again"));
  }
  // A "writer" replaces both shards and the index one rename at a time under the lock,
  // as WriteSharded does; an Open started meanwhile must see only the new files.
  std::vector<FixtureTensor> new1 = {{"x.w", "U8", {4}, ""}};
  std::vector<FixtureTensor> new2 = {{"y.w", "U8", {6}, ""}};
  ASSERT_TRUE(WriteFile(s.dir + "/.n1", SafetensorsBytes(new1)));
  ASSERT_TRUE(WriteFile(s.dir + "/.n2", SafetensorsBytes(new2)));
  ASSERT_TRUE(WriteFile(s.dir + "/.ni", IndexJson({{"x.w", kShard1}, {"y.w", kShard2}})));
  Result<FolderLock> lock = LockFolder(s.dir, FolderLock::kExclusive, kDefaultFolderLockWaitMs);
  ASSERT_TRUE(lock.ok() && lock->held());
  Result<Checkpoint> seen = InternalError("not run");
  std::thread reader([&] { seen = Checkpoint::Open(s.dir); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the reader is waiting
  ASSERT_EQ(::rename((s.dir + "/.n1").c_str(), (s.dir + "/" + kShard1).c_str()), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(::rename((s.dir + "/.n2").c_str(), (s.dir + "/" + kShard2).c_str()), 0);
  ASSERT_EQ(::rename((s.dir + "/.ni").c_str(), (s.dir + "/" + kIndex).c_str()), 0);
  lock->Release();
  reader.join();
  ASSERT_TRUE(seen.ok()) << seen.status().ToString();
  std::vector<std::string> names;
  for (const StoredTensor& t : seen->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"x.w", "y.w"}));
}

// Open, a hash and OpenShardFiles waiting for a writer's lock stop once cancelled.
TEST(CheckpointOpen, AWaitForTheFolderLockCanBeCancelled) {
  Sharded s = WriteSharded("cancel_lock");
  Result<Checkpoint> ckpt = Checkpoint::Open(s.dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  Result<FolderLock> held = LockFolder(s.dir, FolderLock::kExclusive, kDefaultFolderLockWaitMs);
  ASSERT_TRUE(held.ok() && held->held());
  int asked = 0;
  CatalogOptions options;
  options.cancelled = [&] { return ++asked == 3; };
  EXPECT_EQ(Checkpoint::Open(s.dir, options).status(),
            CancelledError(s.dir + ": stopped while waiting for the folder's lock"));
  EXPECT_EQ(asked, 3);
  HashOptions hash;
  hash.cancelled = [] { return true; };
  EXPECT_EQ(HashCheckpoint(*ckpt, hash).status(), CancelledError("hashing cancelled"));
  std::vector<std::unique_ptr<ReadableFile>> files;
  EXPECT_EQ(OpenShardFiles(*ckpt, std::vector<bool>(ckpt->shards().size(), true),
                           IoMode::kPread, UringOptions(), &files, nullptr, [] { return true; }),
            CancelledError(s.dir + ": stopped while waiting for the folder's lock"));
}

// Given the index's own path, Open waits for the folder's lock too, though a writer
// has the old index set aside (its path missing) while it publishes.
TEST(CheckpointOpen, AnIndexPathMissingWhileAWriterPublishesIsWaitedFor) {
  Sharded s = WriteSharded("index_path_lock");
  const std::string index = s.dir + "/" + kIndex;
  Result<FolderLock> lock = LockFolder(s.dir, FolderLock::kExclusive, 0);
  ASSERT_TRUE(lock.ok() && lock->held());
  ASSERT_EQ(::rename(index.c_str(), (s.dir + "/.index.old").c_str()), 0);
  Result<Checkpoint> seen = InternalError("not run");
  std::thread reader([&] { seen = Checkpoint::Open(index); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(::rename((s.dir + "/.index.old").c_str(), index.c_str()), 0);
  lock->Release();
  reader.join();
  ASSERT_TRUE(seen.ok()) << seen.status().ToString();
  EXPECT_EQ(seen->tensors().size(), 3u);
}

TEST(CheckpointShardSet, MissingShardIsNamedBeforeAnyHeaderIsRead) {
  Sharded s = WriteSharded("missingshard");
  // Shard 1 is corrupt; it would fail to parse, but the missing shard 3 is found first.
  ASSERT_TRUE(WriteFile(s.dir + "/" + kShard1, "garbage!"));
  s.weight_map.push_back({"d.w", "model-00003-of-00003.safetensors"});
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, IndexJson(s.weight_map)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status(), NotFoundError("model.safetensors.index.json: shard "
                                      "'model-00003-of-00003.safetensors' does not exist"));
}

TEST(CheckpointShardSet, IndexErrorsNameTheIndexFile) {
  Sharded s = WriteSharded("badindex");
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, IndexJson({{"w", "../evil.safetensors"}})));
  EXPECT_EQ(Checkpoint::Open(s.dir).status(),
            InvalidArgumentError("model.safetensors.index.json: tensor 'w': shard file name "
                                 "'../evil.safetensors' refers to the parent folder ('..')"));
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, "{}"));
  EXPECT_EQ(Checkpoint::Open(s.dir + "/" + kIndex).status(),
            InvalidArgumentError("model.safetensors.index.json: missing 'weight_map'"));
}

TEST(CheckpointShardSet, FileOrderIsByShardThenOffset) {
  Sharded s = WriteSharded("file_order");  // shard 1: b.w then a.w; shard 2: c.w
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::string> names;
  for (size_t k : c->FileOrder()) names.push_back(c->tensors()[k].name);
  EXPECT_EQ(names, (std::vector<std::string>{"b.w", "a.w", "c.w"}));
}

TEST(CheckpointShardSet, IndexMetadataKeepsTotalSizeAsText) {
  Sharded s = WriteSharded("metatext");
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->metadata(), (std::map<std::string, std::string>{{"producer", "test"},
                                                               {"total_size", "41"}}));
  EXPECT_TRUE(c->has_metadata());
}

TEST(CheckpointOpen, EmptyMetadataIsToldFromNone) {
  std::string dir = MakeTestDir("empty_metadata");
  // A file: `{}` as __metadata__ versus none (the fixture omits an empty map).
  std::string json = "{\"__metadata__\":{}}";
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
  ASSERT_TRUE(WriteFile(dir + "/empty.safetensors", file + json));
  ASSERT_TRUE(WriteFile(dir + "/none.safetensors", SafetensorsBytes({{"t", "U8", {2}, ""}})));
  Result<Checkpoint> empty = Checkpoint::Open(dir + "/empty.safetensors");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->has_metadata());
  EXPECT_TRUE(empty->metadata().empty());
  Result<Checkpoint> none = Checkpoint::Open(dir + "/none.safetensors");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_metadata());
  // An index: the shards' __metadata__ do not count, only the index's "metadata".
  Sharded s = WriteSharded("index_no_metadata", /*write_index=*/false);
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex,
                        std::string("{\"weight_map\":{\"a.w\":\"") + kShard1 + "\",\"b.w\":\"" +
                            kShard1 + "\",\"c.w\":\"" + kShard2 + "\"}}"));
  Result<Checkpoint> index = Checkpoint::Open(s.dir);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_FALSE(index->has_metadata());
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, IndexJson(s.weight_map)));  // "metadata":{}
  index = Checkpoint::Open(s.dir);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_TRUE(index->has_metadata());
  EXPECT_TRUE(index->metadata().empty());
}

TEST(CheckpointShardSet, SymlinkLeavingTheFolderIsRejected) {
  Sharded s = WriteSharded("escape");
  std::string outside = MakeTestDir("outside");
  ASSERT_TRUE(WriteFile(outside + "/stolen.safetensors",
                        SafetensorsBytes({{"c.w", "U8", {7}, ""}})));
  ASSERT_EQ(::unlink((s.dir + "/" + kShard2).c_str()), 0);
  ASSERT_EQ(::symlink((outside + "/stolen.safetensors").c_str(), (s.dir + "/" + kShard2).c_str()),
            0);
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status(),
            InvalidArgumentError("model.safetensors.index.json: shard '" + std::string(kShard2) +
                                 "' resolves to '" + RealPath(outside) +
                                 "/stolen.safetensors', outside the checkpoint folder '" +
                                 RealPath(s.dir) + "'"));
}

TEST(CheckpointShardSet, SymlinkInsideTheFolderIsAccepted) {
  Sharded s = WriteSharded("inside");
  ASSERT_EQ(::mkdir((s.dir + "/blobs").c_str(), 0755), 0);
  ASSERT_EQ(::rename((s.dir + "/" + kShard2).c_str(), (s.dir + "/blobs/abc123").c_str()), 0);
  ASSERT_EQ(::symlink("blobs/abc123", (s.dir + "/" + kShard2).c_str()), 0);
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->tensors().size(), 3u);
}

TEST(CheckpointShardSet, HubCacheSnapshotLinksIntoItsBlobs) {
  // The Hugging Face hub cache: <repo>/snapshots/<rev>/ holds symlinks to ../../blobs/.
  std::string repo = MakeTestDir("models--org--tiny");
  ASSERT_EQ(::mkdir((repo + "/blobs").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((repo + "/snapshots").c_str(), 0755), 0);
  std::string snap = repo + "/snapshots/0123abcd";
  ASSERT_EQ(::mkdir(snap.c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(repo + "/blobs/b1", SafetensorsBytes({{"a.w", "F32", {2}, ""}})));
  ASSERT_TRUE(WriteFile(repo + "/blobs/b2", SafetensorsBytes({{"b.w", "U8", {3}, ""}})));
  ASSERT_TRUE(WriteFile(repo + "/blobs/b3", IndexJson({{"a.w", "s1.safetensors"},
                                                        {"b.w", "s2.safetensors"}})));
  ASSERT_EQ(::symlink("../../blobs/b1", (snap + "/s1.safetensors").c_str()), 0);
  ASSERT_EQ(::symlink("../../blobs/b2", (snap + "/s2.safetensors").c_str()), 0);
  ASSERT_EQ(::symlink("../../blobs/b3", (snap + "/" + kIndex).c_str()), 0);
  Result<Checkpoint> c = Checkpoint::Open(snap);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->tensors().size(), 2u);
  // A blobs/ that is itself a symlink (to "/", say) admits nothing outside the folder.
  std::string evil = MakeTestDir("models--org--evil");
  ASSERT_EQ(::mkdir((evil + "/snapshots").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((evil + "/snapshots/r").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("/", (evil + "/blobs").c_str()), 0);
  ASSERT_EQ(::symlink((RealPath(repo) + "/blobs/b1").c_str(),
                      (evil + "/snapshots/r/s1.safetensors").c_str()), 0);
  ASSERT_EQ(::symlink((RealPath(repo) + "/blobs/b2").c_str(),
                      (evil + "/snapshots/r/s2.safetensors").c_str()), 0);
  ASSERT_TRUE(WriteFile(evil + "/snapshots/r/" + kIndex,
                        IndexJson({{"a.w", "s1.safetensors"}, {"b.w", "s2.safetensors"}})));
  EXPECT_EQ(Checkpoint::Open(evil + "/snapshots/r").status(),
            InvalidArgumentError("model.safetensors.index.json: shard 's1.safetensors' resolves "
                                 "to '" + RealPath(repo) + "/blobs/b1', outside the checkpoint "
                                 "folder '" + RealPath(evil) + "/snapshots/r'"));
  // Only that layout: the same links from a folder not under snapshots/ are refused.
  std::string other = repo + "/elsewhere";
  ASSERT_EQ(::mkdir(other.c_str(), 0755), 0);
  ASSERT_EQ(::symlink("../blobs/b1", (other + "/s1.safetensors").c_str()), 0);
  ASSERT_EQ(::symlink("../blobs/b2", (other + "/s2.safetensors").c_str()), 0);
  ASSERT_EQ(::symlink("../blobs/b3", (other + "/" + kIndex).c_str()), 0);
  EXPECT_EQ(Checkpoint::Open(other).status(),
            InvalidArgumentError("model.safetensors.index.json: shard 's1.safetensors' resolves "
                                 "to '" + RealPath(repo) + "/blobs/b1', outside the checkpoint "
                                 "folder '" + RealPath(other) + "'"));
}

TEST(CheckpointShardSet, ShardThatIsAFolderIsRejected) {
  Sharded s = WriteSharded("dirshard");
  ASSERT_EQ(::unlink((s.dir + "/" + kShard2).c_str()), 0);
  ASSERT_EQ(::mkdir((s.dir + "/" + kShard2).c_str(), 0755), 0);
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status(), InvalidArgumentError("model.safetensors.index.json: shard '" +
                                             std::string(kShard2) + "' is not a regular file"));
}

TEST(CheckpointShardSet, IndexEntryMissingFromItsShard) {
  Sharded s = WriteSharded("notinshard");
  s.weight_map[2] = {"c.w", kShard1};  // c.w really lives in shard 2
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, IndexJson(s.weight_map)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status(), InvalidArgumentError("model.safetensors.index.json: index maps 'c.w' to '" +
                                             std::string(kShard1) +
                                             "' but that shard has no tensor 'c.w'"));
}

TEST(CheckpointShardSet, IndexEntryForAnAbsentTensor) {
  Sharded s = WriteSharded("absent");
  s.weight_map.push_back({"ghost", kShard2});
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, IndexJson(s.weight_map)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status(), InvalidArgumentError("model.safetensors.index.json: index maps 'ghost' to '" +
                                             std::string(kShard2) +
                                             "' but that shard has no tensor 'ghost'"));
}

TEST(CheckpointShardSet, TensorStoredInTwoShards) {
  Sharded s = WriteSharded("twice");
  s.shard2.push_back({"a.w", "BF16", {5}, ""});
  ASSERT_TRUE(WriteFile(s.dir + "/" + kShard2, SafetensorsBytes(s.shard2)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status(), InvalidArgumentError(std::string(kIndex) +
                                             ": tensor 'a.w' is stored in both '" +
                                             std::string(kShard1) + "' and '" + kShard2 + "'"));
}

TEST(CheckpointShardSet, NamesInShardSetMessagesAreEscaped) {
  // A name with a newline stays one line in the message (control bytes as \xHH, as
  // every message quotes names).
  const std::string odd = "it's\nodd";
  Sharded s = WriteSharded("twice_odd", /*write_index=*/false);
  s.shard1.push_back({odd, "U8", {1}, ""});
  s.shard2.push_back({odd, "U8", {1}, ""});
  s.weight_map.push_back({odd, kShard1});
  ASSERT_TRUE(WriteFile(s.dir + "/" + kShard1, SafetensorsBytes(s.shard1)));
  ASSERT_TRUE(WriteFile(s.dir + "/" + kShard2, SafetensorsBytes(s.shard2)));
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, IndexJson(s.weight_map)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(), std::string(kIndex) + ": tensor 'it's\\x0aodd' is stored in both '" +
                                       kShard1 + "' and '" + kShard2 + "'");
}

TEST(CheckpointShardSet, UnlistedTensorIsAnErrorWhenStrict) {
  Sharded s = WriteSharded("unlisted");
  s.shard2.push_back({"z.extra", "U8", {1}, ""});
  s.shard2.push_back({"y.extra", "U8", {2}, ""});
  ASSERT_TRUE(WriteFile(s.dir + "/" + kShard2, SafetensorsBytes(s.shard2)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  EXPECT_EQ(c.status(),
            InvalidArgumentError("model.safetensors.index.json: shard '" + std::string(kShard2) +
                                 "' holds tensor 'y.extra', which the index does not list "
                                 "(and 1 more)"));
}

TEST(CheckpointShardSet, UnlistedTensorIsAWarningWhenNotStrict) {
  Sharded s = WriteSharded("unlistedwarn");
  s.shard2.push_back({"z.extra", "U8", {1}, ""});
  ASSERT_TRUE(WriteFile(s.dir + "/" + kShard2, SafetensorsBytes(s.shard2)));
  CatalogOptions o;
  o.strict_index = false;
  Result<Checkpoint> c = Checkpoint::Open(s.dir, o);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->tensors().size(), 4u);
  EXPECT_NE(c->Find("z.extra"), nullptr);
  EXPECT_EQ(c->warnings(),
            (std::vector<std::string>{
                "model.safetensors.index.json: shard '" + std::string(kShard2) +
                    "' holds tensor 'z.extra', which the index does not list",
                "model.safetensors.index.json: metadata total_size is 41 but the shards hold "
                "42 tensor bytes"}));
}

TEST(CheckpointShardSet, TotalSizeMismatchIsOnlyAWarning) {
  Sharded s = WriteSharded("totalsize");
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, IndexJson(s.weight_map, {}, 1000)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->warnings(),
            (std::vector<std::string>{"model.safetensors.index.json: metadata total_size is 1000 "
                                      "but the shards hold 41 tensor bytes"}));
}

TEST(CheckpointShardSet, NoTotalSizeNoWarning) {
  Sharded s = WriteSharded("nototal");
  ASSERT_TRUE(WriteFile(s.dir + "/" + kIndex, IndexJson(s.weight_map)));
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->index_total_size(), std::nullopt);
  EXPECT_TRUE(c->warnings().empty());
}

TEST(CheckpointShardSet, TooManyShards) {
  Sharded s = WriteSharded("toomany");
  CatalogOptions o;
  o.max_shards = 1;
  EXPECT_EQ(Checkpoint::Open(s.dir, o).status(),
            InvalidArgumentError("model.safetensors.index.json: index names more than 1 shard "
                                 "files"));
}

TEST(CheckpointShardSet, ManyShardsReadInParallel) {
  std::string dir = MakeTestDir("many");
  std::vector<std::pair<std::string, std::string>> wm;
  uint64_t total = 0;
  for (int i = 0; i < 40; ++i) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05d-of-00040.safetensors", i + 1);
    std::vector<FixtureTensor> ts = {{"layer." + std::to_string(i) + ".w", "F16", {3, 1}, ""},
                                     {"layer." + std::to_string(i) + ".b", "F16", {3}, ""}};
    ASSERT_TRUE(WriteFile(dir + "/" + file, SafetensorsBytes(ts)));
    for (const FixtureTensor& t : ts) wm.push_back({t.name, file});
    total += 12;
  }
  ASSERT_TRUE(WriteFile(dir + "/" + kIndex, IndexJson(wm, {}, total)));
  for (int threads : {1, 4, 0}) {
    CatalogOptions o;
    o.read_threads = threads;
    Result<Checkpoint> c = Checkpoint::Open(dir, o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ASSERT_EQ(c->tensors().size(), 80u);
    EXPECT_EQ(c->shards().size(), 40u);
    EXPECT_TRUE(c->warnings().empty());
    for (size_t i = 1; i < c->tensors().size(); ++i) {
      EXPECT_LT(c->tensors()[i - 1].name, c->tensors()[i].name);
    }
    const StoredTensor* t = c->Find("layer.17.b");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(c->shards()[t->shard].file, "model-00018-of-00040.safetensors");
  }
}

TEST(CheckpointBytes, MappedBytesAndReadTensorAreByteExact) {
  Sharded s = WriteSharded("bytes");
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<FixtureTensor> all = s.shard1;
  all.insert(all.end(), s.shard2.begin(), s.shard2.end());
  for (const FixtureTensor& t : all) {
    Result<std::span<const std::byte>> m = c->MappedBytes(t.name);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(AsString(*m), TensorData(t)) << t.name;
    Result<std::vector<std::byte>> r = c->ReadTensor(t.name);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(AsString(*r), TensorData(t)) << t.name;
  }
  // The view survives a move of the Checkpoint.
  std::span<const std::byte> view = *c->MappedBytes("c.w");
  Checkpoint moved = std::move(*c);
  EXPECT_EQ(AsString(view), TensorData(s.shard2[0]));
  EXPECT_EQ(moved.MappedBytes("c.w")->data(), view.data());
}

TEST(CheckpointBytes, UnknownTensorIsNotFound) {
  Sharded s = WriteSharded("unknown");
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->MappedBytes("nope").status(),
            NotFoundError("tensor 'nope' is not in the checkpoint"));
  EXPECT_EQ(c->ReadTensor("nope").status(), NotFoundError("tensor 'nope' is not in the checkpoint"));
}

TEST(CheckpointBytes, TruncatedShardIsDataLossNotSigbus) {
  Sharded s = WriteSharded("truncated");
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  uint64_t size = c->shards()[1].size;
  ASSERT_EQ(::truncate((s.dir + "/" + kShard2).c_str(), static_cast<off_t>(size - 3)), 0);
  std::string expected = std::string(kShard2) + ": file is now " + std::to_string(size - 3) +
                         " bytes, but its header was read from " + std::to_string(size) +
                         " bytes";
  EXPECT_EQ(c->ReadTensor("c.w").status(), DataLossError(expected));
  EXPECT_EQ(c->MappedBytes("c.w").status(), DataLossError(expected));
  // The other shard is untouched.
  EXPECT_TRUE(c->ReadTensor("a.w").ok());
}

TEST(CheckpointBytes, ConcurrentMappedBytesShareOneMapping) {
  Sharded s = WriteSharded("concurrent");
  Result<Checkpoint> c = Checkpoint::Open(s.dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<const std::byte*> seen(8, nullptr);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      Result<std::span<const std::byte>> m = c->MappedBytes("b.w");
      if (m.ok()) seen[i] = m->data();
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::byte* p : seen) EXPECT_EQ(p, seen[0]);
  EXPECT_NE(seen[0], nullptr);
}

}  // namespace
}  // namespace shardload
