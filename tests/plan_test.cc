// tests/plan_test.cc — the load planner: coalescing, gaps, splitting, tied weights,
// shards, validation, arena layout, and a randomized property test that executes
// plans against simulated shard contents.
#include "loader/plan.h"

#include <gtest/gtest.h>

#include <random>

namespace shardload {
namespace {

const Device kCpu{Device::Kind::kCpu, 0};
Device Cuda(int i) { return Device{Device::Kind::kCuda, i}; }

struct Spec {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<uint64_t> shape;
  uint32_t shard = 0;
};

// Catalog: tensors tiled back to back per shard, each shard's data starting at 100.
std::vector<StoredTensor> Catalog(const std::vector<Spec>& specs) {
  std::vector<StoredTensor> out;
  std::map<uint32_t, uint64_t> next;
  for (const Spec& s : specs) {
    uint64_t bytes = *TensorByteSize(s.dtype, s.shape);
    auto [it, inserted] = next.emplace(s.shard, 100);
    out.push_back(StoredTensor{s.name, s.dtype, s.shape, s.shard, it->second, bytes});
    it->second += bytes;
  }
  return out;
}

std::vector<Target> SameTargets(const std::vector<StoredTensor>& stored) {
  std::vector<Target> out;
  for (const StoredTensor& s : stored) out.push_back(Target{s.name, s.dtype, s.shape});
  return out;
}

MatchReport MustMatch(const std::vector<StoredTensor>& stored,
                      const std::vector<Target>& targets, MatchOptions options = {}) {
  options.strict = false;
  Result<MatchReport> r = Match(stored, {}, targets, options);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->status.ok()) << r->status.ToString();
  return *r;
}

LoadPlan MustPlan(const std::vector<StoredTensor>& stored, const MatchReport& report,
                  const std::vector<Target>& targets, const PlanOptions& options = {},
                  const DeviceMap& devices = DeviceMap()) {
  Result<LoadPlan> plan = MakePlan(stored, report, targets, devices, options);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  if (!plan.ok()) return LoadPlan{};
  return *std::move(plan);
}

// DestIndex: the destination index of target `name`.
uint32_t DestIndex(const LoadPlan& plan, const std::string& name) {
  for (uint32_t i = 0; i < plan.destinations.size(); ++i) {
    if (plan.destinations[i].name == name) return i;
  }
  ADD_FAILURE() << "no destination " << name;
  return 0;
}

std::string Describe(const ReadSpan& s) {
  std::string out = "shard " + std::to_string(s.shard) + " @" + std::to_string(s.file_offset) +
                    "+" + std::to_string(s.length) + ":";
  for (const CopyRegion& r : s.regions) {
    out += " [" + std::to_string(r.src_offset) + "+" + std::to_string(r.length) + "->" +
           std::to_string(r.dest) + "@" + std::to_string(r.dst_offset) + "]";
  }
  return out;
}

std::vector<std::string> DescribeAll(const LoadPlan& plan) {
  std::vector<std::string> out;
  for (const ReadSpan& s : plan.spans) out.push_back(Describe(s));
  return out;
}

using Strings = std::vector<std::string>;

TEST(PlanTest, NeighboursShareOneReadAndDestinationsFollowTheReport) {
  auto stored = Catalog({{"c", Dtype::kF32, {4}}, {"a", Dtype::kF16, {2}},
                         {"b", Dtype::kU8, {3}}});
  std::vector<Target> targets = SameTargets(stored);
  int caller_buffer[4];
  targets[0].data = caller_buffer;          // "c": caller-owned
  targets[1].device = Cuda(2);              // "a": explicit device
  DeviceMap devices(Cuda(0));
  ASSERT_TRUE(devices.AddRule("b", kCpu).ok());
  MatchReport report = MustMatch(stored, targets);
  LoadPlan plan = MustPlan(stored, report, targets, {}, devices);
  ASSERT_EQ(plan.destinations.size(), 3u);  // report order: a, b, c
  EXPECT_EQ(plan.destinations[0].name, "a");
  EXPECT_EQ(plan.destinations[0].device, Cuda(2));
  EXPECT_EQ(plan.destinations[0].bytes, 4u);
  EXPECT_EQ(plan.destinations[0].ptr, nullptr);
  EXPECT_EQ(plan.destinations[1].device, kCpu);
  EXPECT_EQ(plan.destinations[2].device, Cuda(0));
  EXPECT_EQ(plan.destinations[2].ptr, caller_buffer);
  EXPECT_EQ(plan.destinations[2].src_dtype, Dtype::kF32);
  EXPECT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+23: [0+16->2@0] [16+4->0@0] [20+3->1@0]"}));
  EXPECT_EQ(plan.read_bytes, 23u);
  EXPECT_EQ(plan.delivered_bytes, 23u);
}

TEST(PlanTest, CastDestinationsAreSizedAtTheTargetDtype) {
  auto stored = Catalog({{"w", Dtype::kBF16, {8}}});
  std::vector<Target> targets = {Target{"w", Dtype::kF32, {8}}};
  MatchOptions cast;
  cast.allow_cast = true;
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets, cast), targets);
  ASSERT_EQ(plan.destinations.size(), 1u);
  EXPECT_EQ(plan.destinations[0].bytes, 32u);
  EXPECT_EQ(plan.destinations[0].src_dtype, Dtype::kBF16);
  EXPECT_EQ(plan.destinations[0].dst_dtype, Dtype::kF32);
  EXPECT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+16: [0+16->0@0]"}));
  EXPECT_EQ(plan.read_bytes, 16u);
  EXPECT_EQ(plan.delivered_bytes, 32u);
}

TEST(PlanTest, ReadsOverSmallGapsOfUnloadedTensorsOnly) {
  auto stored = Catalog({{"a", Dtype::kU8, {10}}, {"skip1", Dtype::kU8, {100}},
                         {"b", Dtype::kU8, {10}}, {"skip2", Dtype::kU8, {101}},
                         {"c", Dtype::kU8, {10}}});
  std::vector<Target> targets = {Target{"a", Dtype::kU8, {10}}, Target{"b", Dtype::kU8, {10}},
                                 Target{"c", Dtype::kU8, {10}}};
  MatchReport report = MustMatch(stored, targets);
  PlanOptions options;
  options.max_gap_bytes = 100;
  LoadPlan plan = MustPlan(stored, report, targets, options);
  EXPECT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+120: [0+10->0@0] [110+10->1@0]",
                                        "shard 0 @321+10: [0+10->2@0]"}));
  EXPECT_EQ(plan.read_bytes, 130u);
  options.max_gap_bytes = 0;
  EXPECT_EQ(MustPlan(stored, report, targets, options).spans.size(), 3u);
}

TEST(PlanTest, SpansNeverExceedTheMaximum) {
  auto stored = Catalog({{"a", Dtype::kU8, {3000}}, {"b", Dtype::kU8, {1096}},
                         {"c", Dtype::kU8, {1}}});
  std::vector<Target> targets = SameTargets(stored);
  PlanOptions options;
  options.max_span_bytes = 4096;
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets, options);
  EXPECT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+4096: [0+3000->0@0] [3000+1096->1@0]",
                                        "shard 0 @4196+1: [0+1->2@0]"}));
}

TEST(PlanTest, LargeTensorsSplitAtElementBoundariesAndTheTailJoinsNeighbours) {
  auto stored = Catalog({{"small", Dtype::kU8, {8}}, {"big", Dtype::kF32, {2500}},
                         {"after", Dtype::kU8, {16}}});
  std::vector<Target> targets = SameTargets(stored);
  PlanOptions options;
  options.max_span_bytes = 4096;
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets, options);
  // Destinations by name: after=0, big=1, small=2.
  EXPECT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+8: [0+8->2@0]",
                                        "shard 0 @108+4096: [0+4096->1@0]",
                                        "shard 0 @4204+4096: [0+4096->1@4096]",
                                        "shard 0 @8300+1824: [0+1808->1@8192] [1808+16->0@0]"}));
}

TEST(PlanTest, SubByteDtypesSplitOnWholeElements) {
  // F6: 4 elements in 3 bytes, so pieces are multiples of 3 bytes: 4095, then the rest.
  auto stored = Catalog({{"f6", Dtype::kF6_E2M3, {8000}}});
  std::vector<Target> targets = SameTargets(stored);
  PlanOptions options;
  options.max_span_bytes = 4096;
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets, options);
  EXPECT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+4095: [0+4095->0@0]",
                                        "shard 0 @4195+1905: [0+1905->0@4095]"}));
}

TEST(PlanTest, TiedTensorIsReadOnceWithOneRegionPerDestination) {
  auto stored = Catalog({{"embed", Dtype::kF32, {4}}, {"norm", Dtype::kF32, {1}}});
  std::vector<Target> targets = {Target{"embed", Dtype::kF32, {4}},
                                 Target{"lm_head", Dtype::kF32, {4}},
                                 Target{"norm", Dtype::kF32, {1}}};
  MatchOptions options;
  options.aliases = {{"lm_head", "embed"}};
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets, options), targets);
  EXPECT_EQ(DescribeAll(plan),
            (Strings{"shard 0 @100+20: [0+16->0@0] [0+16->1@0] [16+4->2@0]"}));
  EXPECT_EQ(plan.read_bytes, 20u);
  EXPECT_EQ(plan.delivered_bytes, 36u);
}

TEST(PlanTest, ShardsAreNeverJoinedAndComeInOrder) {
  auto stored = Catalog({{"s1a", Dtype::kU8, {4}, 1}, {"s0a", Dtype::kU8, {4}, 0},
                         {"s1b", Dtype::kU8, {4}, 1}, {"s0b", Dtype::kU8, {4}, 0}});
  std::vector<Target> targets = SameTargets(stored);
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets);
  EXPECT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+8: [0+4->0@0] [4+4->1@0]",
                                        "shard 1 @100+8: [0+4->2@0] [4+4->3@0]"}));
}

TEST(PlanTest, EmptyTensorsGetADestinationButNoRegion) {
  auto stored = Catalog({{"a", Dtype::kU8, {4}}, {"empty", Dtype::kF32, {0, 7}},
                         {"b", Dtype::kU8, {4}}});
  std::vector<Target> targets = SameTargets(stored);
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets);
  ASSERT_EQ(plan.destinations.size(), 3u);
  EXPECT_EQ(plan.destinations[DestIndex(plan, "empty")].bytes, 0u);
  EXPECT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+8: [0+4->0@0] [4+4->1@0]"}));
}

TEST(PlanTest, NineteenThousandSmallTensorsBecomeAHandfulOfSpans) {
  std::vector<Spec> specs;
  for (int i = 0; i < 19000; ++i) {
    specs.push_back({"experts." + std::to_string(i) + ".w", Dtype::kBF16, {2048}, uint32_t(i % 4)});
    specs.push_back({"experts." + std::to_string(i) + ".unused", Dtype::kBF16, {64}, uint32_t(i % 4)});
  }
  auto stored = Catalog(specs);
  std::vector<Target> targets;
  for (const StoredTensor& s : stored) {
    if (s.name.ends_with(".w")) targets.push_back(Target{s.name, s.dtype, s.shape});
  }
  MatchReport report = MustMatch(stored, targets);
  ASSERT_EQ(report.matched.size(), 19000u);
  LoadPlan plan = MustPlan(stored, report, targets);
  // 4750 × 4 KiB loaded with 128-byte holes per shard (~20 MB): two reads per shard
  // with the default 16 MiB − 8 KiB spans (one with 64 MiB spans).
  EXPECT_EQ(plan.spans.size(), 8u);
  uint64_t regions = 0;
  for (const ReadSpan& s : plan.spans) {
    EXPECT_LE(s.length, kDefaultSlotBytes);
    regions += s.regions.size();
  }
  EXPECT_EQ(regions, 19000u);
  EXPECT_EQ(plan.delivered_bytes, 19000u * 4096u);
  EXPECT_EQ(plan.read_bytes, plan.delivered_bytes + (19000u - 8u) * 128u);
  PlanOptions wide;
  wide.max_span_bytes = 64u << 20;
  EXPECT_EQ(MustPlan(stored, report, targets, wide).spans.size(), 4u);
}

TEST(PlanTest, InvalidOptionsAndFailedReports) {
  auto stored = Catalog({{"a", Dtype::kU8, {4}}});
  std::vector<Target> targets = SameTargets(stored);
  MatchReport report = MustMatch(stored, targets);
  for (uint64_t bad : {uint64_t{0}, uint64_t{4095}, uint64_t{4097}, uint64_t{1} << 20 | 1}) {
    PlanOptions options;
    options.max_span_bytes = bad;
    Result<LoadPlan> plan = MakePlan(stored, report, targets, DeviceMap(), options);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(plan.status().message(),
              "max_span_bytes must be a positive multiple of 4096, got " + std::to_string(bad));
  }
  Result<MatchReport> failed = Match(stored, {}, {}, {});  // strict: "a" is unexpected
  ASSERT_TRUE(failed.ok());
  ASSERT_FALSE(failed->status.ok());
  Result<LoadPlan> plan = MakePlan(stored, *failed, {}, DeviceMap(), {});
  EXPECT_EQ(plan.status(), failed->status);
}

TEST(PlanTest, ReportsThatDoNotFitTheInputsAreRejected) {
  auto stored = Catalog({{"a", Dtype::kF32, {4}}, {"b", Dtype::kF32, {2}}});
  std::vector<Target> targets = SameTargets(stored);
  MatchReport good = MustMatch(stored, targets);
  auto check = [&](const std::vector<StoredTensor>& s, const MatchReport& r,
                   const std::vector<Target>& t, const std::string& message) {
    Result<LoadPlan> plan = MakePlan(s, r, t, DeviceMap(), {});
    ASSERT_FALSE(plan.ok()) << message;
    EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(plan.status().message(), message);
  };
  MatchReport r = good;
  r.matched[0].stored = 7;
  check(stored, r, targets, "match report refers to stored tensor 7, but the catalog has 2 tensors");
  r = good;
  r.matched[1].target = 5;
  check(stored, r, targets, "match report refers to target 5, but there are 2 targets");
  r = good;
  r.matched[1].target = r.matched[0].target;
  check(stored, r, targets, "target 'a' is matched twice");
  std::vector<Target> reshaped = targets;
  reshaped[1].shape = {3};
  check(stored, good, reshaped, "target 'b': stored tensor 'b' is F32[2], the target F32[3]");
  std::vector<Target> retyped = targets;
  retyped[0].dtype = Dtype::kI32;
  check(stored, good, retyped, "target 'a': stored tensor 'a' is F32[4], the target I32[4]");
  auto wrong_bytes = stored;
  wrong_bytes[1].bytes = 9;
  check(wrong_bytes, good, targets, "stored tensor 'b': 9 bytes do not match F32[2] (8 bytes)");
  auto overflow = stored;
  overflow[0].file_offset = ~uint64_t{0} - 3;
  check(overflow, good, targets,
        "stored tensor 'a': byte range at offset 18446744073709551612 of 16 bytes overflows");
  auto overlap = stored;
  overlap[1].file_offset = 108;
  check(overlap, good, targets, "shard 0: stored tensors 'a' [100, 116) and 'b' [108, 116) overlap");
}

// Offsets: name → arena offset (kNotInArena for caller memory), for readable checks.
std::map<std::string, uint64_t> Offsets(const LoadPlan& plan, const ArenaLayout& layout) {
  std::map<std::string, uint64_t> out;
  for (size_t i = 0; i < plan.destinations.size(); ++i) {
    out[plan.destinations[i].name] = layout.offsets.at(i);
  }
  return out;
}

using OffsetMap = std::map<std::string, uint64_t>;

// TwoShards: shard 0 holds d @100 (400 bytes), b @500 (10), e @510 (empty); shard 1
// holds a @100 (12), c @112 (256). Listed in name order a, d, b, c, e.
std::vector<StoredTensor> TwoShards() {
  return Catalog({{"a", Dtype::kF32, {3}, 1},
                  {"d", Dtype::kF32, {100}, 0},
                  {"b", Dtype::kF16, {5}, 0},
                  {"c", Dtype::kF32, {64}, 1},
                  {"e", Dtype::kF32, {0}, 0}});
}

TEST(ArenaLayoutTest, DestinationsFollowFileOrderAcrossShards) {
  // File order: shard 0 holds d, b, e (empty); shard 1 holds a, c. Destination (name)
  // order is a, b, c, d, e; the arena must follow the reads instead.
  auto stored = TwoShards();
  std::vector<Target> targets = SameTargets(stored);
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets);
  ASSERT_EQ(DescribeAll(plan), (Strings{"shard 0 @100+410: [0+400->3@0] [400+10->1@0]",
                                        "shard 1 @100+268: [0+12->0@0] [12+256->2@0]"}));

  Result<ArenaLayout> layout = LayoutArenas(plan.destinations, plan.spans);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  // d [0, 400), b [512, 522), a [768, 780), c [1024, 1280), then the empty e.
  EXPECT_EQ(Offsets(plan, *layout),
            (OffsetMap{{"d", 0}, {"b", 512}, {"a", 768}, {"c", 1024}, {"e", 1280}}));
  EXPECT_EQ(layout->bytes_per_device, (std::map<Device, uint64_t>{{kCpu, 1280}}));

  // Alignment 4: padding only where a size is not a multiple of 4 (b's 10 bytes).
  Result<ArenaLayout> packed = LayoutArenas(plan.destinations, plan.spans, 4);
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  EXPECT_EQ(Offsets(plan, *packed),
            (OffsetMap{{"d", 0}, {"b", 400}, {"a", 412}, {"c", 424}, {"e", 680}}));
  EXPECT_EQ(packed->bytes_per_device, (std::map<Device, uint64_t>{{kCpu, 680}}));

  // Without spans (or for destinations no region names) the order is destination order.
  Result<ArenaLayout> unplanned = LayoutArenas(plan.destinations, {}, 4);
  ASSERT_TRUE(unplanned.ok());
  EXPECT_EQ(Offsets(plan, *unplanned),
            (OffsetMap{{"a", 0}, {"b", 12}, {"c", 24}, {"d", 280}, {"e", 680}}));

  // Each device's arena follows the file order of its own tensors; caller memory is
  // skipped and takes no space.
  std::vector<Destination> mixed = plan.destinations;
  int own[100];
  mixed[DestIndex(plan, "d")].ptr = own;
  mixed[DestIndex(plan, "c")].device = Cuda(0);
  mixed[DestIndex(plan, "b")].device = Cuda(0);
  Result<ArenaLayout> split = LayoutArenas(mixed, plan.spans, 4);
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  EXPECT_EQ(Offsets(plan, *split),
            (OffsetMap{{"d", kNotInArena}, {"b", 0}, {"a", 0}, {"c", 12}, {"e", 12}}));
  EXPECT_EQ(split->bytes_per_device,
            (std::map<Device, uint64_t>{{kCpu, 12}, {Cuda(0), 268}}));
}

TEST(ArenaLayoutTest, RegionsOfASpanLandContiguously) {
  // Sizes that are multiples of the alignment leave no padding: the span's three
  // regions become one run of arena memory, in file order (z, x, y).
  auto stored = Catalog({{"z", Dtype::kF32, {64}}, {"x", Dtype::kBF16, {256}},
                         {"y", Dtype::kU8, {512}}});
  std::vector<Target> targets = SameTargets(stored);
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets);
  ASSERT_EQ(plan.spans.size(), 1u);
  Result<ArenaLayout> layout = LayoutArenas(plan.destinations, plan.spans);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(Offsets(plan, *layout), (OffsetMap{{"z", 0}, {"x", 256}, {"y", 768}}));
  const ReadSpan& span = plan.spans[0];
  for (const CopyRegion& r : span.regions) {
    EXPECT_EQ(layout->offsets[r.dest] + r.dst_offset, r.src_offset) << plan.destinations[r.dest].name;
  }
}

TEST(ArenaLayoutTest, SplitTensorIsPlacedOnceAtItsFirstPiece) {
  auto stored = Catalog({{"small", Dtype::kU8, {8}}, {"big", Dtype::kF32, {2500}},
                         {"after", Dtype::kU8, {16}}});
  std::vector<Target> targets = SameTargets(stored);
  PlanOptions options;
  options.max_span_bytes = 4096;
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets, options);
  ASSERT_EQ(plan.spans.size(), 4u);  // small | big | big | big's tail + after
  Result<ArenaLayout> layout = LayoutArenas(plan.destinations, plan.spans);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  // small [0, 8), big [256, 10256), after at 10496 (10256 rounded up to 256).
  EXPECT_EQ(Offsets(plan, *layout), (OffsetMap{{"small", 0}, {"big", 256}, {"after", 10496}}));
  EXPECT_EQ(layout->bytes_per_device, (std::map<Device, uint64_t>{{kCpu, 10512}}));
}

TEST(ArenaLayoutTest, FilePhaseKeepsEachHostTensorsFileOffsetModuloTheAlignment) {
  auto stored = TwoShards();
  std::vector<Target> targets = SameTargets(stored);
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets);
  Result<ArenaLayout> layout =
      LayoutArenas(plan.destinations, plan.spans, 256, ArenaPlacement::kFilePhase);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  // d at 100 (≡ 100), b right after it at 500 (≡ 500), a at 612 (≡ 100: shard 1's
  // first tensor), c right after it at 624 (≡ 112); e, which no read reaches, aligned.
  EXPECT_EQ(Offsets(plan, *layout),
            (OffsetMap{{"d", 100}, {"b", 500}, {"a", 612}, {"c", 624}, {"e", 1024}}));
  EXPECT_EQ(layout->bytes_per_device, (std::map<Device, uint64_t>{{kCpu, 1024}}));
  // Neighbours in a span are neighbours in memory: each region at span offset + base.
  for (const ReadSpan& span : plan.spans) {
    const uint64_t base = layout->offsets[span.regions[0].dest];
    for (const CopyRegion& r : span.regions) {
      EXPECT_EQ(layout->offsets[r.dest] + r.dst_offset, base + r.src_offset)
          << plan.destinations[r.dest].name;
    }
  }
  // kAligned (the default) is the layout of DestinationsFollowFileOrderAcrossShards.
  Result<ArenaLayout> aligned =
      LayoutArenas(plan.destinations, plan.spans, 256, ArenaPlacement::kAligned);
  ASSERT_TRUE(aligned.ok());
  EXPECT_EQ(Offsets(plan, *aligned),
            (OffsetMap{{"d", 0}, {"b", 512}, {"a", 768}, {"c", 1024}, {"e", 1280}}));
}

TEST(ArenaLayoutTest, FilePhaseLeavesCastDeviceAndSplitTensorsAsTheyShouldBe) {
  // x (F16, cast to F32) @100, y (cuda:0) @116, z (cpu) @132 split into 4096-byte spans.
  auto stored = Catalog({{"x", Dtype::kF16, {8}}, {"y", Dtype::kU8, {16}},
                         {"z", Dtype::kF32, {2500}}});
  std::vector<Target> targets = {Target{"x", Dtype::kF32, {8}}, Target{"y", Dtype::kU8, {16}},
                                 Target{"z", Dtype::kF32, {2500}}};
  targets[1].device = Cuda(0);
  MatchOptions cast;
  cast.allow_cast = true;
  PlanOptions options;
  options.max_span_bytes = 4096;
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets, cast), targets, options);
  ASSERT_GT(plan.spans.size(), 2u);
  Result<ArenaLayout> layout =
      LayoutArenas(plan.destinations, plan.spans, 256, ArenaPlacement::kFilePhase);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  // The cast x is aligned (0); y is alone in cuda:0's arena (0); z keeps 132's phase.
  EXPECT_EQ(Offsets(plan, *layout), (OffsetMap{{"x", 0}, {"y", 0}, {"z", 132}}));
  EXPECT_EQ(layout->bytes_per_device,
            (std::map<Device, uint64_t>{{kCpu, 132 + 10000}, {Cuda(0), 16}}));
}

TEST(ArenaLayoutTest, FilePhaseNeverPlacesATensorOffItsElementAlignment) {
  // A hand-made file: 3 bytes of U8, then an F32 at file offset 103 (not 4-aligned),
  // then an I16 at 115 (not 2-aligned), then U8 at 119 (any offset is aligned for it).
  auto stored = Catalog({{"u", Dtype::kU8, {3}}, {"f", Dtype::kF32, {3}},
                         {"h", Dtype::kI16, {2}}, {"b", Dtype::kU8, {5}}});
  std::vector<Target> targets = SameTargets(stored);
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets), targets);
  Result<ArenaLayout> layout =
      LayoutArenas(plan.destinations, plan.spans, 256, ArenaPlacement::kFilePhase);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  // u keeps phase 100; f and h are placed aligned (256, 512); b keeps phase 119 (631).
  EXPECT_EQ(Offsets(plan, *layout), (OffsetMap{{"u", 100}, {"f", 256}, {"h", 512}, {"b", 631}}));
}

TEST(ArenaLayoutTest, ArenaPlacementNamesParse) {
  EXPECT_EQ(*ParseArenaPlacement("aligned"), ArenaPlacement::kAligned);
  EXPECT_EQ(*ParseArenaPlacement("file-phase"), ArenaPlacement::kFilePhase);
  EXPECT_EQ(ArenaPlacementName(ArenaPlacement::kAligned), "aligned");
  EXPECT_EQ(ArenaPlacementName(ArenaPlacement::kFilePhase), "file-phase");
  Result<ArenaPlacement> bad = ParseArenaPlacement("phase");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "invalid arena placement 'phase': expected aligned or file-phase");
}

TEST(ArenaLayoutTest, TiedDestinationsEachGetTheirOwnSpace) {
  // norm comes first in the file, then embed, which also feeds lm_head.
  auto stored = Catalog({{"norm", Dtype::kF32, {1}}, {"embed", Dtype::kF32, {64}}});
  std::vector<Target> targets = {Target{"embed", Dtype::kF32, {64}},
                                 Target{"lm_head", Dtype::kF32, {64}},
                                 Target{"norm", Dtype::kF32, {1}}};
  MatchOptions options;
  options.aliases = {{"lm_head", "embed"}};
  LoadPlan plan = MustPlan(stored, MustMatch(stored, targets, options), targets);
  ASSERT_EQ(DescribeAll(plan),
            (Strings{"shard 0 @100+260: [0+4->2@0] [4+256->0@0] [4+256->1@0]"}));
  Result<ArenaLayout> layout = LayoutArenas(plan.destinations, plan.spans);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(Offsets(plan, *layout), (OffsetMap{{"norm", 0}, {"embed", 256}, {"lm_head", 512}}));
  EXPECT_EQ(layout->bytes_per_device, (std::map<Device, uint64_t>{{kCpu, 768}}));
}

TEST(ArenaLayoutTest, RejectsSpansThatNameUnknownDestinations) {
  std::vector<Destination> dests = {{nullptr, 4, kCpu}, {nullptr, 4, kCpu}};
  std::vector<ReadSpan> spans(2);
  spans[0].regions = {CopyRegion{0, 4, 1, 0}};
  spans[1].regions = {CopyRegion{0, 4, 0, 0}, CopyRegion{4, 4, 2, 0}};
  Result<ArenaLayout> l = LayoutArenas(dests, spans);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(l.status().message(),
            "span 1 has a region for destination 2, but there are 2 destinations");
}

TEST(ArenaLayoutTest, OneAlignedBlockPerDevice) {
  int own;
  std::vector<Destination> dests(5);
  dests[0] = {nullptr, 10, Cuda(0)};
  dests[1] = {nullptr, 300, kCpu};
  dests[2] = {&own, 4, Cuda(0)};
  dests[3] = {nullptr, 1, Cuda(0)};
  dests[4] = {nullptr, 0, Cuda(1)};
  Result<ArenaLayout> layout = LayoutArenas(dests, {});
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->offsets, (std::vector<uint64_t>{0, 0, kNotInArena, 256, 0}));
  EXPECT_EQ(layout->bytes_per_device,
            (std::map<Device, uint64_t>{{kCpu, 300}, {Cuda(0), 257}, {Cuda(1), 0}}));

  Result<ArenaLayout> small = LayoutArenas(dests, {}, 8);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->offsets[3], 16u);

  alignas(256) std::byte cuda0[512];
  std::byte cpu[300];
  std::map<Device, void*> bases = {{Cuda(0), cuda0}, {kCpu, cpu}};
  ASSERT_TRUE(AssignArenaPointers(*layout, bases, &dests).ok());
  EXPECT_EQ(dests[0].ptr, cuda0);
  EXPECT_EQ(dests[1].ptr, cpu);
  EXPECT_EQ(dests[2].ptr, &own);
  EXPECT_EQ(dests[3].ptr, cuda0 + 256);
  EXPECT_EQ(dests[4].ptr, nullptr);  // empty, and cuda:1 has no base

  std::vector<Destination> needs_base = {{nullptr, 4, Cuda(3)}};
  Result<ArenaLayout> l3 = LayoutArenas(needs_base, {});
  Status missing = AssignArenaPointers(*l3, bases, &needs_base);
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "no arena base for device cuda:3");
  Status sizes = AssignArenaPointers(*layout, bases, &needs_base);
  EXPECT_EQ(sizes.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sizes.message(), "layout has 5 offsets for 1 destinations");
}

TEST(ArenaLayoutTest, RejectsBadAlignmentAndOverflow) {
  std::vector<Destination> dests = {{nullptr, 1, kCpu}};
  for (uint64_t bad : {uint64_t{0}, uint64_t{3}, uint64_t{96}}) {
    Result<ArenaLayout> l = LayoutArenas(dests, {}, bad);
    ASSERT_FALSE(l.ok());
    EXPECT_EQ(l.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(l.status().message(),
              "arena alignment must be a power of two, got " + std::to_string(bad));
  }
  std::vector<Destination> huge = {{nullptr, ~uint64_t{0} - 100, Cuda(0)},
                                   {nullptr, 1, Cuda(0)}};
  Result<ArenaLayout> l = LayoutArenas(huge, {});
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(l.status().message(), "arena for cuda:0 exceeds 2^64 bytes");
}

// ---- Property test: random catalogs × random targets, plans executed in memory.

uint8_t FileByte(uint32_t shard, uint64_t offset) {
  // No wrap-around (clean under -fsanitize=unsigned-integer-overflow).
  uint64_t x = (offset % 1000003) * 2654435761u + shard * 7919;
  return static_cast<uint8_t>((x >> 13) ^ x);
}

uint64_t Unit(Dtype d) {
  int bits = DtypeBits(d);
  return bits == 6 ? 3 : (bits < 8 ? 1 : bits / 8);
}

TEST(PlanPropertyTest, EveryDestinationByteIsDeliveredExactlyOnce) {
  std::mt19937_64 rng(20261123);
  const Dtype dtypes[] = {Dtype::kF32, Dtype::kF16, Dtype::kBF16, Dtype::kU8,
                          Dtype::kF64, Dtype::kF4,  Dtype::kF6_E3M2, Dtype::kI16};
  for (int iteration = 0; iteration < 300; ++iteration) {
    auto pick = [&](uint64_t n) { return rng() % n; };
    PlanOptions options;
    options.max_span_bytes = 4096 * (1 + pick(3));
    const uint64_t gaps[] = {0, 1, 100, 5000, 1u << 20};
    options.max_gap_bytes = gaps[pick(5)];
    uint32_t shards = 1 + pick(3);
    int count = 1 + pick(60);
    std::vector<Spec> specs;
    for (int i = 0; i < count; ++i) {
      Dtype d = dtypes[pick(std::size(dtypes))];
      // Mostly small tensors; one in 8 up to 3 spans long (so it is split).
      uint64_t elems = pick(8) == 0 ? pick(3 * options.max_span_bytes * 8 / DtypeBits(d))
                                    : pick(700);
      if (pick(10) == 0) elems = 0;
      if (DtypeBits(d) == 4) elems += elems % 2;
      if (DtypeBits(d) == 6) elems -= elems % 4;
      specs.push_back({"t" + std::to_string(i), d, {elems}, uint32_t(pick(shards))});
    }
    auto stored = Catalog(specs);
    std::vector<Target> targets;
    for (const StoredTensor& s : stored) {
      if (pick(10) < 3) continue;  // not loaded: a gap
      Dtype want = s.dtype;
      if (IsCastable(s.dtype, Dtype::kF32) && pick(3) == 0) {
        want = dtypes[pick(3)];  // F32, F16 or BF16
      }
      targets.push_back(Target{s.name, want, s.shape});
    }
    MatchOptions match_options;
    match_options.allow_cast = true;
    for (int k = 0; k < 3; ++k) {  // tied targets
      const StoredTensor& s = stored[pick(stored.size())];
      std::string name = "tied" + std::to_string(k);
      targets.push_back(Target{name, s.dtype, s.shape});
      match_options.aliases.push_back({name, s.name});
    }
    MatchReport report = MustMatch(stored, targets, match_options);
    LoadPlan plan = MustPlan(stored, report, targets, options);
    ASSERT_EQ(plan.destinations.size(), report.matched.size());
    SCOPED_TRACE("iteration " + std::to_string(iteration));

    // Execute the plan against simulated file contents.
    std::vector<std::vector<uint8_t>> buffers;
    std::vector<std::vector<uint8_t>> cover;
    uint64_t delivered = 0;
    for (size_t i = 0; i < plan.destinations.size(); ++i) {
      const Destination& d = plan.destinations[i];
      const StoredTensor& src = stored[report.matched[i].stored];
      ASSERT_EQ(d.name, report.matched[i].target_name);
      ASSERT_EQ(d.src_dtype, src.dtype);
      ASSERT_EQ(d.bytes, *TensorByteSize(d.dst_dtype, src.shape));
      delivered += d.bytes;
      buffers.emplace_back(src.bytes, 0);
      cover.emplace_back(src.bytes, 0);
    }
    EXPECT_EQ(plan.delivered_bytes, delivered);
    uint64_t read = 0;
    for (size_t k = 0; k < plan.spans.size(); ++k) {
      const ReadSpan& span = plan.spans[k];
      SCOPED_TRACE(Describe(span));
      read += span.length;
      ASSERT_GT(span.length, 0u);
      ASSERT_LE(span.length, options.max_span_bytes);
      if (k > 0) {
        const ReadSpan& prev = plan.spans[k - 1];
        ASSERT_TRUE(std::tie(prev.shard, prev.file_offset) < std::tie(span.shard, span.file_offset));
        const CopyRegion& first = span.regions.at(0);
        bool split_piece = first.length < buffers[first.dest].size();
        if (prev.shard == span.shard) {
          ASSERT_GE(span.file_offset, prev.file_offset + prev.length);  // no overlap
        }
        if (prev.shard == span.shard && !split_piece) {
          // Greedy: the two could not have been one read (pieces of a split tensor
          // start spans of their own by design).
          EXPECT_TRUE(span.file_offset - (prev.file_offset + prev.length) > options.max_gap_bytes ||
                      span.file_offset + span.length - prev.file_offset > options.max_span_bytes);
        }
      }
      ASSERT_FALSE(span.regions.empty());
      uint64_t covered_to = 0;  // holes inside a span are bounded by max_gap
      for (size_t j = 0; j < span.regions.size(); ++j) {
        const CopyRegion& r = span.regions[j];
        ASSERT_LT(r.dest, plan.destinations.size());
        ASSERT_GT(r.length, 0u);
        ASSERT_LE(r.src_offset + r.length, span.length);
        if (j > 0) {
          const CopyRegion& p = span.regions[j - 1];
          ASSERT_GE(r.src_offset, p.src_offset);
          // Regions either repeat the same source bytes (tied) or do not overlap.
          ASSERT_TRUE((r.src_offset == p.src_offset && r.length == p.length) ||
                      r.src_offset >= p.src_offset + p.length);
        }
        EXPECT_LE(r.src_offset - std::min(r.src_offset, covered_to), options.max_gap_bytes);
        covered_to = std::max(covered_to, r.src_offset + r.length);
        uint64_t unit = Unit(plan.destinations[r.dest].src_dtype);
        EXPECT_EQ(r.dst_offset % unit, 0u);
        EXPECT_EQ(r.length % unit, 0u);
        std::vector<uint8_t>& buf = buffers[r.dest];
        ASSERT_LE(r.dst_offset + r.length, buf.size());
        for (uint64_t b = 0; b < r.length; ++b) {
          buf[r.dst_offset + b] = FileByte(span.shard, span.file_offset + r.src_offset + b);
          ++cover[r.dest][r.dst_offset + b];
        }
      }
      EXPECT_EQ(covered_to, span.length);  // a span ends with loaded bytes
    }
    EXPECT_EQ(plan.read_bytes, read);

    // Arena layout (alignment 1, so no padding): destinations are packed back to back
    // in the order of their first region in the reads, then the region-less (empty) ones.
    Result<ArenaLayout> arena = LayoutArenas(plan.destinations, plan.spans, 1);
    ASSERT_TRUE(arena.ok()) << arena.status().ToString();
    std::vector<bool> seen(plan.destinations.size(), false);
    uint64_t arena_end = 0;
    for (const ReadSpan& span : plan.spans) {
      for (const CopyRegion& r : span.regions) {
        if (seen[r.dest]) continue;
        seen[r.dest] = true;
        ASSERT_EQ(arena->offsets[r.dest], arena_end) << plan.destinations[r.dest].name;
        ASSERT_EQ(r.dst_offset, 0u);  // placed at its first piece
        arena_end += plan.destinations[r.dest].bytes;
      }
    }
    for (size_t i = 0; i < plan.destinations.size(); ++i) {
      if (seen[i]) continue;
      EXPECT_EQ(plan.destinations[i].bytes, 0u) << plan.destinations[i].name;
      EXPECT_EQ(arena->offsets[i], arena_end) << plan.destinations[i].name;
    }
    if (!plan.destinations.empty()) {
      EXPECT_EQ(arena->bytes_per_device, (std::map<Device, uint64_t>{{kCpu, arena_end}}));
    }

    uint64_t unique_needed = 0;
    std::vector<bool> counted(stored.size(), false);
    for (size_t i = 0; i < plan.destinations.size(); ++i) {
      const StoredTensor& src = stored[report.matched[i].stored];
      if (!counted[report.matched[i].stored]) unique_needed += src.bytes;
      counted[report.matched[i].stored] = true;
      for (uint64_t b = 0; b < src.bytes; ++b) {
        ASSERT_EQ(cover[i][b], 1) << plan.destinations[i].name << " byte " << b;
        ASSERT_EQ(buffers[i][b], FileByte(src.shard, src.file_offset + b))
            << plan.destinations[i].name << " byte " << b;
      }
    }
    // Minimal-ish: everything read beyond the needed bytes is bounded gaps.
    EXPECT_GE(plan.read_bytes, unique_needed);
    uint64_t regions = 0;
    for (const ReadSpan& s : plan.spans) regions += s.regions.size();
    EXPECT_LE(plan.read_bytes - unique_needed, regions * options.max_gap_bytes);
  }
}

}  // namespace
}  // namespace shardload
