// Tests of recorded-XXH3 checking: `shardload verify` (every mismatching tensor named)
// and LoadOptions::verify (hashes checked on the streamed bytes: direct and staged
// paths, casts, tied and split tensors). Files are written with WriteFileWithChecksums
// and then corrupted by flipping one byte of a tensor's data.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "format/checksum.h"
#include "format/checksum_writer.h"
#include "format/dtype.h"
#include "format/writer.h"
#include "gtest/gtest.h"
#include "loader/arena.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"
#include "loader/loader.h"
#include "loader/stream_verifier.h"
#include "tests/fixtures.h"

namespace shardload {
namespace {

using ::shardload::testing::ByteRangeText;
using ::shardload::testing::MakeTestDir;
using ::shardload::testing::RunResult;
using ::shardload::testing::RunShardload;
using ::shardload::testing::PatternBytes;
using ::shardload::testing::ReadFile;

// Three tensors: a (F32[64], 256 bytes), big (U8[20000], split by 4 KiB slots), c (F32[3]).
struct Model {
  std::string a = PatternBytes(256, 1);
  std::string big = PatternBytes(20000, 2);
  std::string c = PatternBytes(12, 3);
  std::string dir;
  std::string path;

  static std::span<const std::byte> Bytes(const std::string& s) {
    return std::as_bytes(std::span(s.data(), s.size()));
  }

  explicit Model(bool with_checksums = true) {
    dir = MakeTestDir("integrity");
    path = dir + "/model.safetensors";
    std::vector<TensorToWrite> tensors = {
        TensorToWrite::FromBytes("a", Dtype::kF32, {64}, Bytes(a)),
        TensorToWrite::FromBytes("big", Dtype::kU8, {20000}, Bytes(big)),
        TensorToWrite::FromBytes("c", Dtype::kF32, {3}, Bytes(c))};
    WriteOptions options;
    options.sync = false;
    Status s = with_checksums
                   ? WriteFileWithChecksums(path, tensors, Metadata{{"format", "pt"}}, options)
                       : shardload::WriteFile(path, tensors, Metadata{{"format", "pt"}}, options);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }

  // Flip: invert byte `at` of tensor `name`'s data in the file; returns the
  // "XXH3 of its N bytes is X, recorded Y" tail expected for it.
  std::string Flip(const std::string& name, uint64_t at) {
    Result<Checkpoint> ckpt = Checkpoint::Open(path);
    EXPECT_TRUE(ckpt.ok()) << ckpt.status().ToString();
    const StoredTensor* t = nullptr;
    for (const StoredTensor& s : ckpt->tensors()) {
      if (s.name == name) t = &s;
    }
    EXPECT_NE(t, nullptr);
    std::string file = *ReadFile(path);
    std::string& data = name == "a" ? a : name == "big" ? big : c;
    uint64_t before = Xxh3(Bytes(data));
    data[at] = static_cast<char>(~data[at]);
    file[t->file_offset + at] = data[at];
    EXPECT_TRUE(::shardload::testing::WriteFile(path, file));
    return "model.safetensors: tensor '" + name + "'" + ByteRangeText(path, name) +
           ": XXH3 of its " + std::to_string(data.size()) +
           " bytes is " + FormatXxh3(Xxh3(Bytes(data))) + ", recorded " + FormatXxh3(before);
  }
};

RunResult RunCli(const std::string& args) { return RunShardload(args); }

std::string SecondLine(const std::string& s) {
  size_t nl = s.find('\n');
  return nl == std::string::npos ? "" : s.substr(nl + 1);
}

TEST(VerifyCliTest, CleanFileMatchesEveryRecord) {
  Model m;
  RunResult r = RunCli("verify " + m.dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("OK: 1 file, ", 0), 0u) << r.out;
  EXPECT_EQ(SecondLine(r.out), "XXH3: all 3 recorded tensors match\n");
  EXPECT_EQ(r.err, "");
}

TEST(VerifyCliTest, NamesEveryMismatchingTensor) {
  Model m;
  std::string a = m.Flip("a", 7);
  std::string big = m.Flip("big", 12345);
  RunResult r = RunCli("verify " + m.path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "shardload verify: " + a + "\nshardload verify: " + big +
                       "\nshardload verify: 2 of 3 recorded tensors do not match their XXH3\n");
}

TEST(VerifyCliTest, JsonListsTheMismatches) {
  Model m;
  std::string c = m.Flip("c", 0);
  RunResult r = RunCli("verify " + m.path + " --json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out,
            "{\"ok\":false,\"error\":{\"code\":\"data_loss\",\"message\":\"1 of 3 recorded "
            "tensors do not match their XXH3\"},\"mismatched\":[{\"name\":\"c\",\"message\":\"" +
                c + "\"}]}\n");
}

TEST(VerifyCliTest, WithoutRecordsChecksConsistencyOnly) {
  Model m(/*with_checksums=*/false);
  m.Flip("a", 3);  // undetectable without a record
  RunResult r = RunCli("verify " + m.path);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(SecondLine(r.out), "no XXH3 records: checked consistency only\n");
}

// Load helpers.
Result<LoadedCheckpoint> Load(const Model& m, LoadOptions options, std::vector<Target> targets = {}) {
  Result<Checkpoint> ckpt = Checkpoint::Open(m.path);
  if (!ckpt.ok()) return ckpt.status();
  return LoadAll(*ckpt, options, targets);
}

LoadOptions Verifying(uint64_t slot_bytes = uint64_t{1} << 20, int threads = 2) {
  LoadOptions o;
  o.verify = true;
  o.threads = threads;
  o.sink.slot_bytes = slot_bytes;
  return o;
}

void ExpectBytes(const LoadedCheckpoint& loaded, const std::string& name, const std::string& want) {
  const LoadedTensor* t = loaded.Find(name);
  ASSERT_NE(t, nullptr) << name;
  ASSERT_EQ(t->bytes, want.size());
  EXPECT_EQ(std::string(static_cast<const char*>(t->data), t->bytes), want) << name;
}

TEST(LoadVerifyTest, DefaultIsOff) { EXPECT_FALSE(LoadOptions{}.verify); }

// VerifyCheckpoint with verify: one pass reads every byte and hashes every recorded
// tensor, listing each mismatch (in name order) instead of stopping at the first.
Result<VerifyReport> VerifyFile(const Model& m, LoadOptions options) {
  Result<Checkpoint> ckpt = Checkpoint::Open(m.path);
  if (!ckpt.ok()) return ckpt.status();
  return VerifyCheckpoint(*ckpt, options);
}

TEST(VerifyCheckpointTest, CleanFileEveryPathEveryRecordChecked) {
  Model m;
  for (IoMode io : {IoMode::kPread, IoMode::kMmap, IoMode::kDirect}) {
    for (uint64_t slot : {uint64_t{4096}, uint64_t{1} << 20}) {
      for (int threads : {1, 4}) {
        LoadOptions o = Verifying(slot, threads);
        o.io = io;
        Result<VerifyReport> r = VerifyFile(m, o);
        if (!r.ok() && r.status().code() == StatusCode::kUnimplemented) continue;  // no O_DIRECT
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        EXPECT_EQ(r->recorded, 3u);
        EXPECT_TRUE(r->mismatches.empty()) << r->mismatches[0].error.ToString();
      }
    }
  }
}

TEST(VerifyCheckpointTest, ListsEveryMismatchInNameOrder) {
  Model m;
  std::string c = m.Flip("c", 2);
  std::string big = m.Flip("big", 15000);  // split over 4 KiB spans
  std::string a = m.Flip("a", 0);
  for (int threads : {1, 3}) {
    Result<VerifyReport> r = VerifyFile(m, Verifying(4096, threads));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->recorded, 3u);
    ASSERT_EQ(r->mismatches.size(), 3u) << threads;
    EXPECT_EQ(r->mismatches[0].name, "a");
    EXPECT_EQ(r->mismatches[0].error, DataLossError(a));
    EXPECT_EQ(r->mismatches[1].name, "big");
    EXPECT_EQ(r->mismatches[1].error, DataLossError(big));
    EXPECT_EQ(r->mismatches[2].name, "c");
    EXPECT_EQ(r->mismatches[2].error, DataLossError(c));
  }
}

TEST(VerifyCheckpointTest, WithoutVerifyOrRecordsNothingIsHashed) {
  Model m;
  m.Flip("a", 1);
  LoadOptions o = Verifying(4096, 2);
  o.verify = false;
  Result<VerifyReport> r = VerifyFile(m, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->recorded, 0u);
  EXPECT_TRUE(r->mismatches.empty());
  Model plain(/*with_checksums=*/false);
  r = VerifyFile(plain, Verifying(4096, 2));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->recorded, 0u);
  EXPECT_TRUE(r->mismatches.empty());
}

TEST(LoadVerifyTest, CleanFileLoadsOnEveryPath) {
  Model m;
  for (uint64_t slot : {uint64_t{4096}, uint64_t{1} << 20}) {
    for (int threads : {1, 4}) {
      Result<LoadedCheckpoint> r = Load(m, Verifying(slot, threads));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ExpectBytes(*r, "a", m.a);
      ExpectBytes(*r, "big", m.big);
      ExpectBytes(*r, "c", m.c);
    }
  }
}

TEST(LoadVerifyTest, FlippedByteFailsTheLoadNamingFileAndTensor) {
  Model m;
  std::string want = m.Flip("a", 100);
  ASSERT_TRUE(Load(m, LoadOptions{}).ok());  // unchecked, the load "works"
  int arenas = LiveHostArenas();
  Result<LoadedCheckpoint> r = Load(m, Verifying());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(r.status().message(), want);
  EXPECT_EQ(LiveHostArenas(), arenas);  // nothing kept
}

TEST(LoadVerifyTest, SplitTensorIsCheckedAcrossSpans) {
  Model m;
  std::string want = m.Flip("big", 15000);
  for (int threads : {1, 3}) {
    Result<LoadedCheckpoint> r = Load(m, Verifying(4096, threads));
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << threads;
    EXPECT_EQ(r.status().message(), want) << threads;
  }
}

TEST(LoadVerifyTest, CastTensorIsCheckedOnItsStoredBytes) {
  Model m;
  LoadOptions o = Verifying(4096, 2);
  o.match.allow_cast = true;
  o.match.strict = false;
  std::vector<Target> targets = {{"a", Dtype::kF16, {64}, std::nullopt, nullptr}};
  Result<LoadedCheckpoint> clean = Load(m, o, targets);  // staged path: cast in Commit
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  EXPECT_EQ(clean->Find("a")->bytes, 128u);
  std::string want = m.Flip("a", 0);
  Result<LoadedCheckpoint> r = Load(m, o, targets);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(r.status().message(), want);
}

TEST(LoadVerifyTest, TiedTensorIsCheckedForEachDestination) {
  Model m;
  LoadOptions o = Verifying();
  o.match.strict = false;
  o.match.aliases.push_back({"a_tied", "a"});
  std::vector<Target> targets = {{"a", Dtype::kF32, {64}, std::nullopt, nullptr},
                                 {"a_tied", Dtype::kF32, {64}, std::nullopt, nullptr}};
  Result<LoadedCheckpoint> clean = Load(m, o, targets);
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  ExpectBytes(*clean, "a", m.a);
  ExpectBytes(*clean, "a_tied", m.a);
  std::string want = m.Flip("a", 255);
  Result<LoadedCheckpoint> r = Load(m, o, targets);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(r.status().message(), want);
}

TEST(LoadVerifyTest, LoadIntoCallerBuffersFailsToo) {
  Model m;
  std::string want = m.Flip("c", 11);
  std::vector<std::byte> buf(12);
  std::vector<Target> targets = {{"c", Dtype::kF32, {3}, std::nullopt, buf.data()}};
  LoadOptions o = Verifying();
  o.match.strict = false;
  Result<Checkpoint> ckpt = Checkpoint::Open(m.path);
  ASSERT_TRUE(ckpt.ok());
  Result<LoadResult> r = LoadInto(*ckpt, targets, o);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(r.status().message(), want);
}

// SharedTarget: a LoadInto target placed `offset` bytes into a shared buffer.
struct SharedTarget {
  std::string name;
  Dtype dtype;
  uint64_t elements;
  size_t offset;
};

// ExpectOverlappingTargetsLoad: write `tensors` with recorded checksums into a fresh
// `dir_name`, then load `targets`, all in one 4 MiB buffer, with verify 30 times: every
// load must succeed (a race shows in some loads only).
void ExpectOverlappingTargetsLoad(const std::string& dir_name,
                                  const std::vector<TensorToWrite>& tensors,
                                  const std::vector<SharedTarget>& targets, bool allow_cast) {
  const std::string path = MakeTestDir(dir_name) + "/model.safetensors";
  WriteOptions w;
  w.sync = false;
  ASSERT_TRUE(WriteFileWithChecksums(path, tensors, Metadata{{"format", "pt"}}, w).ok());
  Result<Checkpoint> ckpt = Checkpoint::Open(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  std::vector<std::byte> shared(4 << 20);
  std::vector<Target> load_targets;
  for (const SharedTarget& t : targets) {
    load_targets.push_back({t.name, t.dtype, {t.elements}, std::nullopt, shared.data() + t.offset});
  }
  LoadOptions o = Verifying(64 << 10, 2);
  o.match.allow_cast = allow_cast;
  for (int round = 0; round < 30; ++round) {
    Result<LoadResult> r = LoadInto(*ckpt, load_targets, o);
    ASSERT_TRUE(r.ok()) << round << ": " << r.status().ToString();
  }
}

// Two targets sharing one buffer (tied weights given twice) with verify: each tensor is
// hashed as read, never after the other reader wrote over the shared buffer, so an
// intact checkpoint never fails. (Read straight into the buffer and hashed there, it
// failed about one load in twenty.)
TEST(LoadVerifyTest, OverlappingTargetsNeverFailAnIntactCheckpoint) {
#if defined(__SANITIZE_THREAD__)
  // The two readers write the shared buffer at once by design (documented: no defined
  // order); ThreadSanitizer rightly reports that race, which is not what is tested.
  GTEST_SKIP() << "overlapping targets race by design";
#endif
  const std::string x = PatternBytes(4 << 20, 5), y = PatternBytes(4 << 20, 6);
  ExpectOverlappingTargetsLoad(
      "overlap",
      {TensorToWrite::FromBytes("x", Dtype::kU8, {4 << 20}, Model::Bytes(x)),
       TensorToWrite::FromBytes("y", Dtype::kU8, {4 << 20}, Model::Bytes(y))},
      {{"x", Dtype::kU8, 4 << 20, 0}, {"y", Dtype::kU8, 4 << 20, 0}}, /*allow_cast=*/false);
}

// The same with a cast: the F32 -> F16 target's memory is its F16 size (2 MiB), which
// reaches into the F16 target read straight into [1.5, 3.5) MiB of the buffer. Taken as
// half that size (the F16 size converted once more), the overlap went unseen and the
// direct target was hashed in memory the cast was writing.
TEST(LoadVerifyTest, OverlapWithACastTargetIsMeasuredAtTheDestinationDtype) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "overlapping targets race by design";
#endif
  const std::string x = PatternBytes(4 << 20, 7), y = PatternBytes(2 << 20, 8);
  ExpectOverlappingTargetsLoad(
      "overlap-cast",
      {TensorToWrite::FromBytes("x", Dtype::kF32, {1 << 20}, Model::Bytes(x)),
       TensorToWrite::FromBytes("y", Dtype::kF16, {1 << 20}, Model::Bytes(y))},
      {{"x", Dtype::kF16, 1 << 20, 0}, {"y", Dtype::kF16, 1 << 20, 3 << 19}},
      /*allow_cast=*/true);
}

// A tensor above the direct path's 512 KiB observation piece: read and hashed in pieces.
TEST(LoadVerifyTest, LargeTensorOnTheDirectPathIsHashedInPieces) {
  std::string data = PatternBytes(1300000, 9);
  std::string dir = MakeTestDir("integrity-large");
  std::string path = dir + "/model.safetensors";
  std::vector<TensorToWrite> tensors = {
      TensorToWrite::FromBytes("large", Dtype::kU8, {1300000}, Model::Bytes(data))};
  WriteOptions wo;
  wo.sync = false;
  ASSERT_TRUE(WriteFileWithChecksums(path, tensors, std::nullopt, wo).ok());
  Result<Checkpoint> ckpt = Checkpoint::Open(path);
  ASSERT_TRUE(ckpt.ok());
  LoadOptions o = Verifying(uint64_t{2} << 20, 2);
  Result<LoadedCheckpoint> clean = LoadAll(*ckpt, o);
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  ExpectBytes(*clean, "large", data);

  std::string file = *ReadFile(path);
  const uint64_t at = ckpt->tensors()[0].file_offset + 1299999;  // the last piece
  file[at] = static_cast<char>(~file[at]);
  ASSERT_TRUE(::shardload::testing::WriteFile(path, file));
  std::string bad = data;
  bad[1299999] = file[at];
  Result<Checkpoint> again = Checkpoint::Open(path);
  ASSERT_TRUE(again.ok());
  Result<LoadedCheckpoint> r = LoadAll(*again, o);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(r.status().message(), "model.safetensors: tensor 'large'" + ByteRangeText(path, "large") +
                                      ": XXH3 of its 1300000 bytes is " +
                                      FormatXxh3(Xxh3(Model::Bytes(bad))) + ", recorded " +
                                      FormatXxh3(Xxh3(Model::Bytes(data))));
}

TEST(LoadVerifyTest, CliLoadVerifyFails) {
  Model m;
  std::string want = m.Flip("big", 1);
  RunResult r = RunCli("load " + m.path + " --verify");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
  RunResult unchecked = RunCli("load " + m.path);
  EXPECT_EQ(unchecked.exit_code, 0) << unchecked.err;
}

// StreamVerifier directly: pieces of a split tensor in any order.
RecordedChecksums Sums(const Model& m) {
  Result<Checkpoint> ckpt = Checkpoint::Open(m.path);
  EXPECT_TRUE(ckpt.ok());
  Result<RecordedChecksums> sums = RecordedChecksums::FromCheckpoint(*ckpt);
  EXPECT_TRUE(sums.ok());
  return std::move(*sums);
}

Status Feed(StreamVerifier& v, const std::string& data, std::vector<uint64_t> starts,
            uint64_t piece) {
  for (uint64_t at : starts) {
    uint64_t n = std::min<uint64_t>(piece, data.size() - at);
    SL_RETURN_IF_ERROR(v.Observe(CopyRegion{0, n, 0, at}, Model::Bytes(data).subspan(at, n)));
  }
  return v.Finish();
}

TEST(StreamVerifierTest, PiecesInAnyOrderGiveTheWholeHash) {
  Model m;
  const StreamVerifier::Source sources[] = {{"big", 20000}};
  for (std::vector<uint64_t> order : {std::vector<uint64_t>{0, 8192, 16384},
                                      std::vector<uint64_t>{16384, 8192, 0},
                                      std::vector<uint64_t>{8192, 0, 16384}}) {
    StreamVerifier v(Sums(m), sources);
    EXPECT_TRUE(Feed(v, m.big, order, 8192).ok()) << order[0];
  }
  std::string bad = m.big;
  bad[9000] ^= 1;
  StreamVerifier v(Sums(m), sources);
  Status s = Feed(v, bad, {16384, 8192, 0}, 8192);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "model.safetensors: tensor 'big'" + ByteRangeText(m.path, "big") +
                             ": XXH3 of its 20000 bytes is " +
                             FormatXxh3(Xxh3(Model::Bytes(bad))) + ", recorded " +
                             FormatXxh3(Xxh3(Model::Bytes(m.big))));
}

TEST(StreamVerifierTest, MissingOrRepeatedPiecesAreInternalErrors) {
  Model m;
  const StreamVerifier::Source sources[] = {{"big", 20000}};
  StreamVerifier missing(Sums(m), sources);
  Status s = Feed(missing, m.big, {0, 16384}, 8192);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), "verify: tensor 'big' was streamed up to byte 8192 of 20000");
  StreamVerifier never(Sums(m), sources);
  s = Feed(never, m.big, {}, 8192);  // a recorded tensor no region reached
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), "verify: tensor 'big' (20000 bytes) was never streamed");
  StreamVerifier twice(Sums(m), sources);
  s = Feed(twice, m.big, {0, 0}, 8192);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(),
            "verify: region [0, +8192) of destination 0 of tensor 'big' was already hashed");
}

}  // namespace
}  // namespace shardload
