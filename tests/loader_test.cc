// tests/loader_test.cc — the façade end to end: LoadAll / LoadInto / VerifyCheckpoint
// over real sharded files, every io mode, byte-exact; matching outcomes, casts, cancel,
// invalid options, freed arenas; a cross-check against files the Hugging Face
// reference writes (skipped when python safetensors is not importable).
#include "loader/loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "format/checksum.h"
#include "format/folder_lock.h"
#include "format/writer.h"
#include "loader/cast.h"
#include "loader/host_sink.h"
#include "tests/io_util.h"

namespace shardload {
namespace {

using testing::RandomBytes;
using testing::TempDir;

struct Source {
  std::string name;
  Dtype dtype;
  std::vector<uint64_t> shape;
  std::vector<std::byte> bytes;
};

// WriteCheckpoint: a 3-shard checkpoint of tensors with random bytes (some large
// enough to be split over several 64 KiB spans, some empty).
std::vector<Source> WriteCheckpoint(const std::string& dir, int shards = 3) {
  std::vector<Source> src = {
      {"model.embed.weight", Dtype::kF32, {300, 129}},
      {"model.layers.0.attn.w", Dtype::kF16, {64, 64}},
      {"model.layers.0.mlp.w", Dtype::kBF16, {257, 131}},
      {"model.layers.0.norm", Dtype::kF32, {64}},
      {"model.layers.1.attn.w", Dtype::kF16, {64, 64}},
      {"model.layers.1.mlp.w", Dtype::kBF16, {257, 131}},
      {"model.layers.1.norm", Dtype::kF32, {64}},
      {"model.empty", Dtype::kF32, {0, 5}},
      {"model.scalar", Dtype::kI64, {}},
      {"lm_head.weight", Dtype::kF32, {300, 129}},
  };
  std::vector<TensorToWrite> tw;
  uint32_t seed = 1;
  for (Source& s : src) {
    s.bytes = RandomBytes(*TensorByteSize(s.dtype, s.shape), seed++);
    tw.push_back(TensorToWrite::FromBytes(s.name, s.dtype, s.shape, s.bytes));
  }
  ShardOptions opt;
  opt.num_shards = shards;
  Result<ShardedWriteResult> r = WriteSharded(dir, tw, opt);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return src;
}

const Source& Find(const std::vector<Source>& src, const std::string& name) {
  for (const Source& s : src) {
    if (s.name == name) return s;
  }
  std::abort();
}

class LoaderTest : public ::testing::Test {
 protected:
  // LoadAllIn: LoadAll with `o` in io mode `mode` with `threads` readers; nullopt (and
  // a line saying why) when this filesystem or kernel refuses the mode.
  std::optional<Result<LoadedCheckpoint>> LoadAllIn(LoadOptions o, IoMode mode, int threads) {
    o.io = mode;
    o.threads = threads;
    Result<LoadedCheckpoint> all = LoadAll(*ckpt_, o);
    if (!all.ok() && all.status().code() == StatusCode::kUnimplemented) {
      std::printf("skipping %s: %s\n", std::string(IoModeName(mode)).c_str(),
                  all.status().message().c_str());
      return std::nullopt;
    }
    return all;
  }

  void SetUp() override {
    dir_ = TempDir("loader");
    src_ = WriteCheckpoint(dir_);
    Result<Checkpoint> c = Checkpoint::Open(dir_);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ckpt_ = std::make_unique<Checkpoint>(std::move(*c));
    options_.sink.slot_bytes = 64 << 10;  // small spans: many reads, split tensors
    options_.sink.slot_count = 2;
  }
  std::string dir_;
  std::vector<Source> src_;
  std::unique_ptr<Checkpoint> ckpt_;
  LoadOptions options_;
};

TEST_F(LoaderTest, LoadAllEveryIoModeIsByteExact) {
  for (IoMode mode : {IoMode::kAuto, IoMode::kPread, IoMode::kMmap, IoMode::kDirect}) {
    for (int threads : {1, 3}) {
      std::optional<Result<LoadedCheckpoint>> loaded = LoadAllIn(options_, mode, threads);
      if (!loaded) continue;
      Result<LoadedCheckpoint>& all = *loaded;
      ASSERT_TRUE(all.ok()) << all.status().ToString();
      EXPECT_EQ(all->io, mode == IoMode::kAuto ? kAutoIoMode : mode);
      ASSERT_EQ(all->tensors.size(), src_.size());
      for (const Source& s : src_) {
        const LoadedTensor* t = all->Find(s.name);
        ASSERT_NE(t, nullptr) << s.name;
        EXPECT_EQ(t->dtype, s.dtype);
        EXPECT_EQ(t->shape, s.shape);
        EXPECT_TRUE(t->device.is_cpu());
        ASSERT_EQ(t->bytes, s.bytes.size());
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 256, 0u) << s.name;
        if (!s.bytes.empty()) {
          EXPECT_EQ(0, std::memcmp(t->data, s.bytes.data(), s.bytes.size()))
              << s.name << " via " << IoModeName(mode);
        }
      }
      EXPECT_EQ(all->report.matched.size(), src_.size());
      EXPECT_GT(all->seconds, 0);
    }
  }
}

// ArenaPlacement::kFilePhase: the same bytes as the default, each host tensor at an
// address congruent to its file offset modulo 256, in every io mode; the pooled
// reload of such a layout still zeroes the bytes between tensors.
TEST_F(LoaderTest, LoadAllFilePhaseKeepsEachTensorsFileOffsetPhase) {
  std::map<std::string, uint64_t> file_offset;
  for (const StoredTensor& t : ckpt_->tensors()) file_offset[t.name] = t.file_offset;
  int checked_phases = 0;
  for (IoMode mode : {IoMode::kPread, IoMode::kMmap, IoMode::kDirect, IoMode::kUring}) {
    for (int threads : {1, 3}) {
      LoadOptions o = options_;
      o.host_placement = ArenaPlacement::kFilePhase;
      std::optional<Result<LoadedCheckpoint>> loaded = LoadAllIn(o, mode, threads);
      if (!loaded) continue;
      Result<LoadedCheckpoint>& all = *loaded;
      ASSERT_TRUE(all.ok()) << all.status().ToString();
      ASSERT_EQ(all->tensors.size(), src_.size());
      for (const Source& s : src_) {
        const LoadedTensor* t = all->Find(s.name);
        ASSERT_NE(t, nullptr) << s.name;
        ASSERT_EQ(t->bytes, s.bytes.size());
        if (s.bytes.empty()) continue;
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 256, file_offset.at(s.name) % 256)
            << s.name << " via " << IoModeName(mode);
        checked_phases += file_offset.at(s.name) % 256 != 0;
        EXPECT_EQ(0, std::memcmp(t->data, s.bytes.data(), s.bytes.size()))
            << s.name << " via " << IoModeName(mode);
      }
    }
  }
  EXPECT_GT(checked_phases, 0);  // the files do have tensors off a 256-byte boundary

  // A cast tensor stays 256-byte aligned; the uncast ones keep their phase.
  std::vector<Target> targets;
  for (const Source& s : src_) targets.push_back(Target{s.name, s.dtype, s.shape});
  for (Target& t : targets) {
    if (t.name == "model.layers.0.mlp.w") t.dtype = Dtype::kF32;  // stored BF16
  }
  LoadOptions cast = options_;
  cast.match.allow_cast = true;
  cast.host_placement = ArenaPlacement::kFilePhase;
  Result<LoadedCheckpoint> cast_all = LoadAll(*ckpt_, cast, targets);
  ASSERT_TRUE(cast_all.ok()) << cast_all.status().ToString();
  const LoadedTensor* widened = cast_all->Find("model.layers.0.mlp.w");
  ASSERT_NE(widened, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(widened->data) % 256, 0u);
  const LoadedTensor* norm = cast_all->Find("model.layers.1.norm");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(norm->data) % 256,
            file_offset.at("model.layers.1.norm") % 256);

  // Pooled: scribble over the first arena, then the reload holds zeros between tensors.
  HostArenaPool pool;
  LoadOptions pooled = options_;
  pooled.host_arena_pool = &pool;
  pooled.host_placement = ArenaPlacement::kFilePhase;
  // Used ranges of a result, by address (empty tensors left out).
  auto ranges = [](const LoadedCheckpoint& c) {
    std::vector<std::pair<std::byte*, uint64_t>> used;
    for (const LoadedTensor& t : c.tensors) {
      if (t.data != nullptr) used.emplace_back(static_cast<std::byte*>(t.data), t.bytes);
    }
    std::sort(used.begin(), used.end());
    return used;
  };
  {
    Result<LoadedCheckpoint> a = LoadAll(*ckpt_, pooled);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    auto used = ranges(*a);
    std::memset(used.front().first, 0xAB,
                used.back().first + used.back().second - used.front().first);
  }
  Result<LoadedCheckpoint> b = LoadAll(*ckpt_, pooled);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto used = ranges(*b);
  size_t gap_bytes = 0, nonzero = 0;
  for (size_t i = 0; i + 1 < used.size(); ++i) {
    for (const std::byte* p = used[i].first + used[i].second; p < used[i + 1].first; ++p) {
      ++gap_bytes;
      nonzero += *p != std::byte{0};
    }
  }
  EXPECT_GT(gap_bytes, 0u);  // the layout has padding to check
  EXPECT_EQ(nonzero, 0u);
  for (const LoadedTensor& t : b->tensors) {
    const Source& s = Find(src_, t.name);
    if (!s.bytes.empty()) {
      EXPECT_EQ(0, std::memcmp(t.data, s.bytes.data(), s.bytes.size()));
    }
  }
}

// LoadAll without targets makes one per renamed stored name; renames that map two
// stored names together are then Match's collision, not a duplicate target.
TEST_F(LoaderTest, LoadAllWithCollidingRenamesNamesTheCollision) {
  LoadOptions o = options_;
  o.match.strict = false;
  o.match.renames.push_back(*ParseRenameRule("s/^model\\.layers\\.1\\./model.layers.0./"));
  Result<LoadedCheckpoint> a = LoadAll(*ckpt_, o);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.status().message(),
            "Error(s) in loading state_dict: "
            "rename rules map both \"model.layers.0.attn.w\" and \"model.layers.1.attn.w\" "
            "to \"model.layers.0.attn.w\". "
            "rename rules map both \"model.layers.0.mlp.w\" and \"model.layers.1.mlp.w\" "
            "to \"model.layers.0.mlp.w\". "
            "rename rules map both \"model.layers.0.norm\" and \"model.layers.1.norm\" "
            "to \"model.layers.0.norm\".");
  Result<std::vector<Target>> targets = CheckpointTargets(*ckpt_, o.match);
  ASSERT_TRUE(targets.ok()) << targets.status().ToString();
  EXPECT_EQ(targets->size(), src_.size() - 3);
}

TEST_F(LoaderTest, LoadIntoCallerBuffersWithRenamesAndNonStrict) {
  // The model calls its tensors "module.<name>", lacks lm_head, and has an extra key.
  options_.match.strict = false;
  options_.match.renames.push_back(RenameRule::AddPrefix("module."));
  std::vector<std::vector<std::byte>> buffers;
  std::vector<Target> targets;
  for (const Source& s : src_) {
    if (s.name == "lm_head.weight") continue;
    buffers.emplace_back(s.bytes.size() + 1);  // +1: never a zero-size allocation
    targets.push_back(Target{"module." + s.name, s.dtype, s.shape, std::nullopt, buffers.back().data()});
  }
  std::vector<float> extra(4);
  targets.push_back(Target{"module.extra", Dtype::kF32, {4}, std::nullopt, extra.data()});
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  options_.progress = [&](uint64_t done, uint64_t total) {
    progress.push_back({done, total});
    return true;
  };
  Result<LoadResult> r = LoadInto(*ckpt_, targets, options_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->report.missing, std::vector<std::string>{"module.extra"});
  EXPECT_EQ(r->report.unexpected, std::vector<std::string>{"module.lm_head.weight"});
  for (size_t i = 0; i + 1 < targets.size(); ++i) {
    const Source& s = Find(src_, targets[i].name.substr(7));
    if (!s.bytes.empty()) {
      EXPECT_EQ(0, std::memcmp(buffers[i].data(), s.bytes.data(), s.bytes.size())) << s.name;
    }
  }
  ASSERT_GE(progress.size(), 2u);
  EXPECT_EQ(progress.front().first, 0u);
  EXPECT_EQ(progress.back().first, progress.back().second);
  EXPECT_EQ(progress.back().second, r->read_bytes);
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_LE(progress[i - 1].first, progress[i].first);
}

TEST_F(LoaderTest, StrictFailureIsThePyTorchMessage) {
  std::vector<float> w(300 * 129);
  std::vector<Target> targets = {{"lm_head.weight", Dtype::kF32, {300, 129}, std::nullopt, w.data()},
                                 {"nope", Dtype::kF32, {1}, std::nullopt, w.data()}};
  Result<LoadResult> r = LoadInto(*ckpt_, targets, options_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind("Error(s) in loading state_dict: Missing key(s) in state_dict: \"nope\". Unexpected key(s) in state_dict: ", 0), 0u)
      << r.status().message();
}

TEST_F(LoaderTest, CastOnLoad) {
  options_.match.allow_cast = true;
  options_.match.strict = false;
  const Source& s = Find(src_, "model.embed.weight");  // F32 in the file
  std::vector<uint16_t> bf16(300 * 129);
  std::vector<Target> targets = {{s.name, Dtype::kBF16, s.shape, std::nullopt, bf16.data()}};
  Result<LoadResult> r = LoadInto(*ckpt_, targets, options_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t i = 0; i < bf16.size(); ++i) {
    float f;
    std::memcpy(&f, s.bytes.data() + 4 * i, 4);
    ASSERT_EQ(bf16[i], F32ToBF16Bits(f)) << i;
  }
}

TEST_F(LoaderTest, LoadIntoNeedsCallerMemoryAndLoadAllRefusesIt) {
  std::vector<Target> targets = {{"model.layers.0.norm", Dtype::kF32, {64}, std::nullopt, nullptr}};
  options_.match.strict = false;
  Result<LoadResult> r = LoadInto(*ckpt_, targets, options_);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "target 'model.layers.0.norm' has no data pointer: LoadInto writes into caller memory "
            "(use LoadAll for loader-owned arenas)");
  float buf[64];
  targets[0].data = buf;
  Result<LoadedCheckpoint> a = LoadAll(*ckpt_, options_, targets);
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.status().message(),
            "target 'model.layers.0.norm' has a data pointer: LoadAll places tensors in its own "
            "arenas (use LoadInto for caller memory)");
  // Names in messages are escaped and bounded (a name can come from an untrusted header).
  std::string odd = "evil\nname" + std::string(300, 'x');
  targets = {{odd, Dtype::kF32, {64}, std::nullopt, buf}};
  a = LoadAll(*ckpt_, options_, targets);
  EXPECT_EQ(a.status().message(),
            "target 'evil\\x0aname" + std::string(191, 'x') +
                "'... (309 bytes) has a data pointer: LoadAll places tensors in its own "
                "arenas (use LoadInto for caller memory)");
}

TEST_F(LoaderTest, CudaWithoutBackendIsAFailedPrecondition) {
  options_.devices = *ParseDeviceMap("lm_head.*=cuda:0,cpu");
  int arenas = LiveHostArenas();
  Result<LoadedCheckpoint> a = LoadAll(*ckpt_, options_);
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.status().message(),
            "tensors go to cuda:0 but no device backend was given (LoadOptions::backend)");
  EXPECT_EQ(LiveHostArenas(), arenas);
}

TEST_F(LoaderTest, CpuDevicesWithAnIndexShareTheOneHostArena) {
  // A Device{kCpu, 1} (torch's "cpu:1" is the same memory) used to get an arena of
  // its own that replaced, and freed, the first: tensors read freed memory.
  Result<std::vector<Target>> targets = CheckpointTargets(*ckpt_, options_.match);
  ASSERT_TRUE(targets.ok()) << targets.status().ToString();
  for (size_t i = 0; i < targets->size(); ++i) {
    (*targets)[i].device = Device{Device::Kind::kCpu, static_cast<int>(i % 2)};
  }
  Result<LoadedCheckpoint> all = LoadAll(*ckpt_, options_, *targets);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  for (const Source& s : src_) {
    const LoadedTensor* t = all->Find(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    EXPECT_EQ(t->device, (Device{Device::Kind::kCpu, 0})) << s.name;
    ASSERT_EQ(t->bytes, s.bytes.size());
    if (!s.bytes.empty()) {
      EXPECT_EQ(0, std::memcmp(t->data, s.bytes.data(), t->bytes)) << s.name;
    }
  }
  options_.devices.set_default(Device{Device::Kind::kCpu, 5});
  Result<LoadedCheckpoint> by_map = LoadAll(*ckpt_, options_);
  ASSERT_TRUE(by_map.ok()) << by_map.status().ToString();
  EXPECT_EQ(by_map->tensors.front().device, (Device{Device::Kind::kCpu, 0}));
}

TEST(LoaderStatsTest, ThreadsAreTheReadersStarted) {
  // One tensor, one span: one reader, whatever was asked for.
  std::string dir = TempDir("one_span");
  const std::byte bytes[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
  std::vector<TensorToWrite> tw = {TensorToWrite::FromBytes("w", Dtype::kU8, {3}, bytes)};
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors", tw, std::nullopt).ok());
  Result<Checkpoint> c = Checkpoint::Open(dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  LoadOptions o;
  o.threads = 8;
  Result<LoadedCheckpoint> all = LoadAll(*c, o);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->threads, 1);
  // The arena's allocation is part of the call's time and reported on its own.
  EXPECT_GT(all->arena_seconds, 0);
  EXPECT_LE(all->arena_seconds, all->seconds);
  std::byte out[3];
  std::vector<Target> into = {{"w", Dtype::kU8, {3}, std::nullopt, out}};
  Result<LoadResult> r = LoadInto(*c, into, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->arena_seconds, 0);
}

TEST_F(LoaderTest, InvalidOptionsAreErrorsNotClamped) {
  LoadOptions o = options_;
  o.threads = 1000;
  Result<LoadedCheckpoint> a = LoadAll(*ckpt_, o);
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.status().message(), "invalid threads 1000: expected 0..256 (0 = hardware threads)");
  o = options_;
  o.sink.slot_count = 65;
  a = LoadAll(*ckpt_, o);
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.status().message(), "invalid slot_count 65: expected 1..64");
  o = options_;
  o.sink.slot_bytes = 1000;
  Result<VerifyReport> v = VerifyCheckpoint(*ckpt_, o);
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LoaderTest, CancelFreesTheArenaAndTheRing) {
  int arenas = LiveHostArenas();
  int rings = LiveStagingRings();
  std::atomic<bool> cancel{true};
  options_.cancel = &cancel;
  Result<LoadedCheckpoint> a = LoadAll(*ckpt_, options_);
  EXPECT_EQ(a.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(a.status().message(), "load cancelled");
  EXPECT_EQ(LiveHostArenas(), arenas);
  EXPECT_EQ(LiveStagingRings(), rings);
  options_.cancel = nullptr;
  options_.progress = [](uint64_t, uint64_t) { return false; };
  a = LoadAll(*ckpt_, options_);
  EXPECT_EQ(a.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(a.status().message(), "load cancelled by the progress callback");
  EXPECT_EQ(LiveHostArenas(), arenas);
  EXPECT_EQ(LiveStagingRings(), rings);
}

TEST_F(LoaderTest, FailedLoadsHandBackTheirReportOnceMatchingRan) {
  // Cancelled before matching: no report.
  std::atomic<bool> cancel{true};
  options_.cancel = &cancel;
  std::optional<MatchReport> report;
  EXPECT_EQ(LoadAll(*ckpt_, options_, {}, &report).status().code(), StatusCode::kCancelled);
  EXPECT_FALSE(report.has_value());
  // Cancelled after matching (by the progress callback): every stored tensor matched.
  options_.cancel = nullptr;
  options_.progress = [](uint64_t, uint64_t) { return false; };
  EXPECT_EQ(LoadAll(*ckpt_, options_, {}, &report).status().code(), StatusCode::kCancelled);
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->matched.size(), src_.size());
  // A strict failure: the report says why.
  options_.progress = nullptr;
  report.reset();
  std::vector<Target> targets = {Target{"nope", Dtype::kF32, {2}, std::nullopt, nullptr}};
  Status strict = LoadAll(*ckpt_, options_, targets, &report).status();
  EXPECT_EQ(strict.code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->missing, std::vector<std::string>{"nope"});
  EXPECT_EQ(report->unexpected.size(), src_.size());
  EXPECT_EQ(report->status, strict);
  report.reset();
  std::vector<float> buf(2);
  targets[0].data = buf.data();
  EXPECT_EQ(LoadInto(*ckpt_, targets, options_, &report).status(), strict);
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->missing, std::vector<std::string>{"nope"});
  // Invalid options fail before matching: no report.
  report.reset();
  options_.threads = -1;
  EXPECT_EQ(LoadAll(*ckpt_, options_, {}, &report).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(report.has_value());
}

TEST_F(LoaderTest, ArenaFollowsFileOrder) {
  // Stored tensors in read order: by shard, then file offset. Their arena addresses
  // must rise in that order (target-name order differs: embed is written first, lm_head
  // last, but the names sort the other way), each 256-aligned right after the last.
  std::vector<StoredTensor> by_file = ckpt_->tensors();
  std::sort(by_file.begin(), by_file.end(), [](const StoredTensor& a, const StoredTensor& b) {
    return std::tie(a.shard, a.file_offset) < std::tie(b.shard, b.file_offset);
  });
  ASSERT_NE(by_file.front().name, ckpt_->tensors().front().name);  // the orders differ
  Result<LoadedCheckpoint> all = LoadAll(*ckpt_, options_);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  const std::byte* expected = nullptr;
  for (const StoredTensor& s : by_file) {
    if (s.bytes == 0) continue;  // empty tensors are placed after all the others
    const LoadedTensor* t = all->Find(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    const auto* at = static_cast<const std::byte*>(t->data);
    if (expected != nullptr) {
      EXPECT_EQ(at, expected) << s.name;
    }
    uintptr_t end = reinterpret_cast<uintptr_t>(at) + t->bytes;
    expected = reinterpret_cast<const std::byte*>((end + 255) / 256 * 256);
  }
}

TEST_F(LoaderTest, ArenaLivesWithTheResult) {
  int arenas = LiveHostArenas();
  {
    Result<LoadedCheckpoint> a = LoadAll(*ckpt_, options_);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(LiveHostArenas(), arenas + 1);
    LoadedCheckpoint moved = std::move(*a);
    EXPECT_EQ(LiveHostArenas(), arenas + 1);
    EXPECT_NE(moved.Find("lm_head.weight"), nullptr);
    EXPECT_EQ(moved.Find("missing"), nullptr);
  }
  EXPECT_EQ(LiveHostArenas(), arenas);
}

TEST_F(LoaderTest, PooledLoadAllReusesTheArenaAndHoldsTheSameBytes) {
  HostArenaPool pool;
  options_.host_arena_pool = &pool;
  int arenas = LiveHostArenas();
  const void* first_base = nullptr;
  {
    Result<LoadedCheckpoint> a = LoadAll(*ckpt_, options_);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    first_base = a->Find("model.embed.weight")->data;
    // Scribble over the whole arena, padding included, before giving it back.
    const LoadedTensor* lo = &a->tensors.front();
    const LoadedTensor* hi = &a->tensors.front();
    for (const LoadedTensor& t : a->tensors) {
      if (t.data < lo->data) lo = &t;
      if (t.data > hi->data) hi = &t;
    }
    std::memset(lo->data, 0xAB,
                static_cast<std::byte*>(hi->data) + hi->bytes - static_cast<std::byte*>(lo->data));
    EXPECT_EQ(pool.cached_bytes(), 0u);
  }
  EXPECT_EQ(LiveHostArenas(), arenas);
  EXPECT_EQ(pool.cached_bytes(), 2u << 20);  // one 2 MiB-rounded mapping kept
  Result<LoadedCheckpoint> b = LoadAll(*ckpt_, options_);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(pool.cached_bytes(), 0u);
  EXPECT_EQ(b->Find("model.embed.weight")->data, first_base);  // the same memory
  std::vector<const LoadedTensor*> by_address;
  for (const LoadedTensor& t : b->tensors) by_address.push_back(&t);
  std::sort(by_address.begin(), by_address.end(),
            [](const LoadedTensor* x, const LoadedTensor* y) { return x->data < y->data; });
  for (size_t i = 0; i < by_address.size(); ++i) {
    const LoadedTensor* t = by_address[i];
    const Source& s = Find(src_, t->name);
    ASSERT_EQ(t->bytes, s.bytes.size());
    if (!s.bytes.empty()) {
      EXPECT_EQ(0, std::memcmp(t->data, s.bytes.data(), s.bytes.size())) << s.name;
    }
    // The padding up to the next tensor is zero again, as in a fresh arena.
    if (i + 1 < by_address.size()) {
      const auto* end = static_cast<const std::byte*>(t->data) + t->bytes;
      const auto* next = static_cast<const std::byte*>(by_address[i + 1]->data);
      for (const std::byte* p = end; p < next; ++p) {
        ASSERT_EQ(*p, std::byte{0}) << "padding after " << t->name;
      }
    }
  }
}

TEST_F(LoaderTest, FailedPooledLoadGivesTheArenaBack) {
  HostArenaPool pool;
  options_.host_arena_pool = &pool;
  // A failure once the arena exists (the progress callback cancels before any read;
  // a cancel flag set beforehand would stop the load before allocating).
  options_.progress = [](uint64_t, uint64_t) { return false; };
  int arenas = LiveHostArenas();
  Result<LoadedCheckpoint> a = LoadAll(*ckpt_, options_);
  EXPECT_EQ(a.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(a.status().message(), "load cancelled by the progress callback");
  EXPECT_EQ(LiveHostArenas(), arenas);
  EXPECT_EQ(pool.cached_bytes(), 2u << 20);
  // Cancelled beforehand: nothing is taken from the pool or allocated at all.
  options_.progress = nullptr;
  std::atomic<bool> cancel{true};
  options_.cancel = &cancel;
  a = LoadAll(*ckpt_, options_);
  EXPECT_EQ(a.status(), CancelledError("load cancelled"));
  EXPECT_EQ(pool.cached_bytes(), 2u << 20);
  pool.Trim();
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST_F(LoaderTest, ShardChangedSinceOpenIsDataLoss) {
  const ShardInfo& shard = ckpt_->shards()[1];
  ASSERT_EQ(::truncate(shard.path.c_str(), static_cast<off_t>(shard.size - 8)), 0);
  int arenas = LiveHostArenas();
  Result<LoadedCheckpoint> a = LoadAll(*ckpt_, options_);
  EXPECT_EQ(a.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(a.status().message(), shard.file + ": file is now " + std::to_string(shard.size - 8) +
                                      " bytes, but its header was read from " +
                                      std::to_string(shard.size) + " bytes");
  EXPECT_EQ(LiveHostArenas(), arenas);
  Result<VerifyReport> v = VerifyCheckpoint(*ckpt_, options_);
  EXPECT_EQ(v.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(v.status().message(), a.status().message());
}

// Another file renamed over a shard, or the shard removed, since Open: a rewrite raced
// the load (aborted: open the checkpoint again), not a damaged file.
TEST_F(LoaderTest, ShardReplacedOrRemovedSinceOpenIsAborted) {
  const ShardInfo& shard = ckpt_->shards()[1];
  ASSERT_TRUE(testing::WriteBytes(shard.path + ".new", std::vector<std::byte>(100)));
  ASSERT_EQ(std::rename((shard.path + ".new").c_str(), shard.path.c_str()), 0);
  const Status replaced =
      AbortedError(shard.file + ": file was replaced since the checkpoint was opened: it is now "
                                "100 bytes, " + std::to_string(shard.size) +
                   " when its header was read (open the checkpoint again)");
  int arenas = LiveHostArenas();
  EXPECT_EQ(LoadAll(*ckpt_, options_).status(), replaced);
  EXPECT_EQ(VerifyCheckpoint(*ckpt_, options_).status(), replaced);
  EXPECT_EQ(HashCheckpoint(*ckpt_).status().code(), StatusCode::kAborted);
  ASSERT_EQ(std::remove(shard.path.c_str()), 0);
  const Status removed = AbortedError(
      shard.file + ": removed since the checkpoint was opened (open the checkpoint again)");
  EXPECT_EQ(LoadAll(*ckpt_, options_).status(), removed);
  EXPECT_EQ(VerifyCheckpoint(*ckpt_, options_).status(), removed);
  for (const StoredTensor& t : ckpt_->tensors()) {
    if (t.shard != 1) continue;
    EXPECT_EQ(ckpt_->ReadTensor(t.name).status(), removed);
    EXPECT_EQ(ckpt_->MappedBytes(t.name).status(), removed);
    break;
  }
  EXPECT_EQ(LiveHostArenas(), arenas);
}

// ReadFile: the whole file at `path`.
std::vector<std::byte> ReadFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  std::vector<std::byte> out;
  if (f == nullptr) return out;
  std::byte buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

TEST_F(LoaderTest, ShardReplacedWithAnotherLayoutSinceOpenIsAborted) {
  // A file of the same size renamed over a shard (what a Hugging Face download does)
  // whose header differs: its tensors are no longer where the catalog says, so every
  // later read refuses it instead of loading whatever is there now.
  const ShardInfo& shard = ckpt_->shards()[1];
  const std::vector<std::byte> original = ReadFile(shard.path);
  ASSERT_EQ(original.size(), shard.size);
  std::string in_shard;
  for (const StoredTensor& t : ckpt_->tensors()) {
    if (t.shard == 1 && t.bytes > 0) in_shard = t.name;
  }
  ASSERT_FALSE(in_shard.empty());
  // Another layout of the same size: one letter of a name changed in the header.
  std::vector<std::byte> other = original;
  const std::string header(reinterpret_cast<const char*>(other.data()) + 8, shard.header_length);
  const size_t at = header.find("\"" + in_shard + "\"");
  ASSERT_NE(at, std::string::npos);
  other[8 + at + 1] = std::byte{'Z'};
  auto replace_with = [&](const std::vector<std::byte>& bytes) {
    ASSERT_TRUE(testing::WriteBytes(shard.path + ".new", bytes));
    ASSERT_EQ(std::rename((shard.path + ".new").c_str(), shard.path.c_str()), 0);
  };
  replace_with(other);
  const std::string replaced = shard.file +
                               ": file was replaced since the checkpoint was opened and its "
                               "header differs (open the checkpoint again)";
  int arenas = LiveHostArenas();
  for (IoMode mode : {IoMode::kPread, IoMode::kMmap, IoMode::kDirect}) {
    options_.io = mode;
    Result<LoadedCheckpoint> r = LoadAll(*ckpt_, options_);
    if (r.status().code() == StatusCode::kUnimplemented) continue;  // no O_DIRECT here
    EXPECT_EQ(r.status(), AbortedError(replaced)) << IoModeName(mode);
    EXPECT_EQ(VerifyCheckpoint(*ckpt_, options_).status(), AbortedError(replaced));
  }
  options_.io = IoMode::kPread;
  EXPECT_EQ(LiveHostArenas(), arenas);
  EXPECT_EQ(ckpt_->ReadTensor(in_shard).status(), AbortedError(replaced));
  EXPECT_EQ(ckpt_->MappedBytes(in_shard).status(), AbortedError(replaced));

  // The same header again (a new file of the same layout; only the data may differ):
  // it loads, and what it loads is that file's bytes.
  std::vector<std::byte> same_layout = original;
  for (uint64_t i = shard.data_start; i < same_layout.size(); ++i) same_layout[i] ^= std::byte{1};
  replace_with(same_layout);
  Result<std::vector<std::byte>> now = ckpt_->ReadTensor(in_shard);
  ASSERT_TRUE(now.ok()) << now.status().ToString();
  Result<LoadedCheckpoint> reloaded = LoadAll(*ckpt_, options_);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status().ToString();
  const LoadedTensor* t = reloaded->Find(in_shard);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(0, std::memcmp(t->data, now->data(), t->bytes));

  // Touched only (a new mtime and ctime, the same bytes): no false alarm.
  Result<Checkpoint> again = Checkpoint::Open(dir_);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  struct timespec times[2] = {{0, UTIME_OMIT}, {12345, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, shard.path.c_str(), times, 0), 0);
  EXPECT_TRUE(LoadAll(*again, options_).ok());

  // Its header written in place (same inode): refused.
  std::FILE* f = std::fopen(shard.path.c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fseek(f, static_cast<long>(8 + at + 1), SEEK_SET), 0);
  ASSERT_EQ(std::fputc('Z', f), 'Z');
  std::fclose(f);
  EXPECT_EQ(LoadAll(*again, options_).status(), AbortedError(replaced));
}

// A rewrite of the same layout (a training run saving over its last checkpoint)
// published while a load and a hash open their shards, renamed in one file at a time
// under the folder's exclusive lock as WriteSharded does: each sees one save, here
// the new one, never some shards of each. (Before the readers took the lock, both read
// shard 0 of the new save and the other shards of the old one, and said nothing.)
TEST_F(LoaderTest, ALoadAndAHashOpenTheirShardsFromOneSave) {
  const std::vector<ShardInfo>& shards = ckpt_->shards();
  ASSERT_EQ(shards.size(), 3u);
  for (size_t i = 0; i < shards.size(); ++i) {  // the new save, staged under hidden names
    std::ifstream in(shards[i].path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t k = shards[i].data_start; k < bytes.size(); ++k) bytes[k] ^= 0x5a;
    ASSERT_TRUE(testing::WriteBytes(dir_ + "/.new" + std::to_string(i),
                                    std::as_bytes(std::span(bytes.data(), bytes.size()))));
  }
  auto publish = [&](size_t i) {
    ASSERT_EQ(::rename((dir_ + "/.new" + std::to_string(i)).c_str(), shards[i].path.c_str()), 0);
  };
  Result<FolderLock> lock = LockFolder(dir_, FolderLock::kExclusive, kDefaultFolderLockWaitMs);
  ASSERT_TRUE(lock.ok() && lock->held());
  publish(0);
  Result<LoadedCheckpoint> loaded = InternalError("not run");
  Result<CheckpointDigest> hashed = InternalError("not run");
  std::thread load([&] { loaded = LoadAll(*ckpt_, options_); });
  std::thread hash([&] { hashed = HashCheckpoint(*ckpt_); });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // both are waiting
  publish(1);
  publish(2);
  lock->Release();
  load.join();
  hash.join();
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(hashed.ok()) << hashed.status().ToString();
  for (const Source& s : src_) {
    std::vector<std::byte> now = s.bytes;
    for (std::byte& b : now) b ^= std::byte{0x5a};
    const LoadedTensor* t = loaded->Find(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    ASSERT_EQ(t->bytes, now.size());
    EXPECT_TRUE(now.empty() || std::memcmp(t->data, now.data(), now.size()) == 0) << s.name;
    const StoredTensor* st = ckpt_->Find(s.name);
    EXPECT_EQ(hashed->tensors[st - ckpt_->tensors().data()].xxh3, Xxh3(now)) << s.name;
  }
}

TEST_F(LoaderTest, ShardShrinkingMidLoadNamesTheTensorsOfTheFailedRead) {
  // The shard is cut after the pre-read check (in the first progress call, before any
  // read): the read that fails names its bytes and the tensors stored there.
  const ShardInfo& shard = ckpt_->shards()[0];
  const std::string path = shard.path;
  options_.threads = 1;
  options_.io = IoMode::kPread;
  options_.progress = [&](uint64_t done, uint64_t) {
    if (done == 0) {
      EXPECT_EQ(::truncate(path.c_str(), 1000), 0);
    }
    return true;
  };
  Result<LoadedCheckpoint> a = LoadAll(*ckpt_, options_);
  EXPECT_EQ(a.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(std::regex_match(
      a.status().message(),
      std::regex(path + R"(: file shrank to 1000 bytes while reading \(expected \d+\) )"
                        R"(\(bytes \[\d+, \d+\)( of tensor '[^']+'|: tensors '[^']+' to '[^']+' \(\d+\))\))")))
      << a.status().message();
}

TEST_F(LoaderTest, DescribeBytesNamesTheTensorsStoredThere) {
  // The first two non-empty tensors of a shard holding two or more, by offset.
  std::vector<std::vector<const StoredTensor*>> by_shard(ckpt_->shards().size());
  for (size_t i : ckpt_->FileOrder()) {
    const StoredTensor& t = ckpt_->tensors()[i];
    if (t.bytes > 0) by_shard[t.shard].push_back(&t);
  }
  uint32_t shard = 0;
  while (shard < by_shard.size() && by_shard[shard].size() < 2) ++shard;
  ASSERT_LT(shard, by_shard.size());
  const StoredTensor& a = *by_shard[shard][0];
  const StoredTensor& b = *by_shard[shard][1];
  auto range = [](uint64_t x, uint64_t y) {
    return "bytes [" + std::to_string(x) + ", " + std::to_string(y) + ")";
  };
  EXPECT_EQ(ckpt_->DescribeBytes(shard, a.file_offset + 1, a.file_offset + 2),
            range(a.file_offset + 1, a.file_offset + 2) + " of tensor '" + a.name + "'");
  EXPECT_EQ(ckpt_->DescribeBytes(shard, a.file_offset, b.file_offset + 1),
            range(a.file_offset, b.file_offset + 1) + ": tensors '" + a.name + "' to '" +
                b.name + "' (2)");
  EXPECT_EQ(ckpt_->DescribeBytes(shard, 0, 8), range(0, 8) + ", outside any tensor");
}

TEST_F(LoaderTest, VerifyReadsEveryByte) {
  for (IoMode mode : {IoMode::kPread, IoMode::kMmap, IoMode::kDirect}) {
    options_.io = mode;
    uint64_t last = 0;
    options_.progress = [&](uint64_t done, uint64_t) {
      last = done;
      return true;
    };
    Result<VerifyReport> v = VerifyCheckpoint(*ckpt_, options_);
    if (!v.ok() && v.status().code() == StatusCode::kUnimplemented) continue;
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    uint64_t total = 0;
    for (const ShardInfo& s : ckpt_->shards()) total += s.size;
    EXPECT_EQ(v->bytes, total);
    EXPECT_EQ(last, total);
    EXPECT_EQ(v->files, 3u);
  }
}

// Files written by the Hugging Face reference load byte-exact through every mode.
TEST(LoaderReferenceTest, FilesWrittenByTheReference) {
  if (std::system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 with safetensors and numpy is not available";
  }
  std::string dir = TempDir("reference");
  std::string script =
      "import numpy as np\n"
      "from safetensors.numpy import save_file\n"
      "rng = np.random.default_rng(3)\n"
      "t = {'a': rng.standard_normal((33, 17)).astype(np.float32),\n"
      "     'b': rng.integers(-9, 9, (1000,), dtype=np.int8),\n"
      "     'c': rng.standard_normal((5, 7, 9)).astype(np.float16),\n"
      "     'd': np.zeros((0,), dtype=np.float64)}\n"
      "save_file(t, '" + dir + "/model.safetensors', metadata={'format': 'pt'})\n"
      "for k, v in t.items(): v.tofile('" + dir + "/' + k + '.raw')\n";
  std::string py = dir + "/make.py";
  ASSERT_TRUE(testing::WriteBytes(py, std::as_bytes(std::span(script.data(), script.size()))));
  ASSERT_EQ(std::system(("python3 " + py).c_str()), 0);
  Result<Checkpoint> c = Checkpoint::Open(dir + "/model.safetensors");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  for (IoMode mode : {IoMode::kPread, IoMode::kMmap, IoMode::kDirect}) {
    LoadOptions o;
    o.io = mode;
    Result<LoadedCheckpoint> a = LoadAll(*c, o);
    if (!a.ok() && a.status().code() == StatusCode::kUnimplemented) continue;
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    for (const char* name : {"a", "b", "c", "d"}) {
      std::FILE* f = std::fopen((dir + "/" + name + ".raw").c_str(), "rb");
      ASSERT_NE(f, nullptr);
      std::vector<char> want(1 << 20);
      want.resize(std::fread(want.data(), 1, want.size(), f));
      std::fclose(f);
      const LoadedTensor* t = a->Find(name);
      ASSERT_NE(t, nullptr);
      ASSERT_EQ(t->bytes, want.size()) << name;
      if (!want.empty()) {
        EXPECT_EQ(0, std::memcmp(t->data, want.data(), want.size())) << name;
      }
    }
  }
}

}  // namespace
}  // namespace shardload
