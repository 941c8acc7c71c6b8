// tests/match_test.cc — the load_state_dict matching matrix: strict / non-strict,
// size and dtype mismatches, casts, rename rules, collisions, auto_prefix, tied
// weights (caller and save_model metadata aliases), invalid inputs, report output.
#include "loader/match.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace shardload {
namespace {

struct Spec {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<uint64_t> shape;
};

// Catalog: stored tensors laid out back to back in shard 0.
std::vector<StoredTensor> Catalog(const std::vector<Spec>& specs) {
  std::vector<StoredTensor> out;
  uint64_t offset = 64;
  for (const Spec& s : specs) {
    uint64_t bytes = *TensorByteSize(s.dtype, s.shape);
    out.push_back(StoredTensor{s.name, s.dtype, s.shape, 0, offset, bytes});
    offset += bytes;
  }
  return out;
}

std::vector<Target> Targets(const std::vector<Spec>& specs) {
  std::vector<Target> out;
  for (const Spec& s : specs) out.push_back(Target{s.name, s.dtype, s.shape});
  return out;
}

const std::map<std::string, std::string> kNoMetadata;

MatchReport MustMatch(const std::vector<StoredTensor>& stored,
                      const std::vector<Target>& targets, const MatchOptions& options,
                      const std::map<std::string, std::string>& metadata = kNoMetadata) {
  Result<MatchReport> r = Match(stored, metadata, targets, options);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return MatchReport{};
  return *std::move(r);
}

// Pairs: "target<-stored" strings of the matched list, in report order.
std::vector<std::string> Pairs(const MatchReport& r) {
  std::vector<std::string> out;
  for (const MatchedPair& m : r.matched) {
    out.push_back(m.target_name + "<-" + m.stored_name + (m.via_rename ? " R" : "") +
                  (m.via_alias ? " A" : ""));
  }
  return out;
}

using Names = std::vector<std::string>;

TEST(MatchTest, ExactMatchIsOkAndSortedByTargetName) {
  auto stored = Catalog({{"b", Dtype::kF32, {2}}, {"a", Dtype::kF16, {3, 1}}});
  auto targets = Targets({{"a", Dtype::kF16, {3, 1}}, {"b", Dtype::kF32, {2}}});
  MatchReport r = MustMatch(stored, targets, {});
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_EQ(r.matched.size(), 2u);
  EXPECT_EQ(r.matched[0].target_name, "a");
  EXPECT_EQ(r.matched[0].stored, 1u);
  EXPECT_EQ(r.matched[0].target, 0u);
  EXPECT_EQ(r.matched[0].dtype, Dtype::kF16);
  EXPECT_EQ(r.matched[1].stored, 0u);
  EXPECT_EQ(r.matched[1].target, 1u);
  EXPECT_FALSE(r.matched[1].via_rename);
  EXPECT_FALSE(r.matched[1].via_alias);
  EXPECT_TRUE(r.missing.empty());
  EXPECT_TRUE(r.unexpected.empty());
  EXPECT_TRUE(r.mismatched.empty());
  EXPECT_TRUE(r.renamed.empty());
  EXPECT_EQ(r.auto_prefix, "");
}

TEST(MatchTest, StrictListsAllUnexpectedThenAllMissing) {
  auto stored = Catalog({{"w", Dtype::kF32, {1}}, {"b", Dtype::kF32, {1}},
                         {"a", Dtype::kF32, {1}}, {"shared", Dtype::kF32, {1}}});
  auto targets = Targets({{"shared", Dtype::kF32, {1}}, {"d", Dtype::kF32, {1}},
                          {"c", Dtype::kF32, {1}}});
  MatchReport r = MustMatch(stored, targets, {});
  EXPECT_EQ(r.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"c\", \"d\". "
            "Unexpected key(s) in state_dict: \"a\", \"b\", \"w\".");
  EXPECT_EQ(r.unexpected, (Names{"a", "b", "w"}));
  EXPECT_EQ(r.missing, (Names{"c", "d"}));
  EXPECT_EQ(Pairs(r), (Names{"shared<-shared"}));
}

TEST(MatchTest, StrictWithOnlyOneKindOfProblem) {
  auto stored = Catalog({{"a", Dtype::kF32, {1}}});
  MatchReport missing = MustMatch(stored, Targets({{"a", Dtype::kF32, {1}},
                                                   {"z", Dtype::kF32, {1}}}), {});
  EXPECT_EQ(missing.status.message(),
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"z\".");
  MatchReport unexpected = MustMatch(stored, {}, {});
  EXPECT_EQ(unexpected.status.message(),
            "Error(s) in loading state_dict: Unexpected key(s) in state_dict: \"a\".");
}

TEST(MatchTest, NonStrictLoadsTheRestAndReports) {
  auto stored = Catalog({{"a", Dtype::kF32, {1}}, {"extra", Dtype::kF32, {1}}});
  auto targets = Targets({{"a", Dtype::kF32, {1}}, {"gone", Dtype::kF32, {1}}});
  MatchOptions options;
  options.strict = false;
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"a<-a"}));
  EXPECT_EQ(r.missing, (Names{"gone"}));
  EXPECT_EQ(r.unexpected, (Names{"extra"}));
}

TEST(MatchTest, SizeMismatchFailsInBothModes) {
  auto stored = Catalog({{"k", Dtype::kF32, {10, 5}}, {"ok", Dtype::kF32, {2}}});
  auto targets = Targets({{"k", Dtype::kF32, {10, 4}}, {"ok", Dtype::kF32, {2}}});
  for (bool strict : {true, false}) {
    MatchOptions options;
    options.strict = strict;
    MatchReport r = MustMatch(stored, targets, options);
    EXPECT_EQ(r.status.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status.message(),
              "Error(s) in loading state_dict: size mismatch for k: copying a param with "
              "shape [10, 5] from checkpoint, the shape in current model is [10, 4].");
    EXPECT_EQ(Pairs(r), (Names{"ok<-ok"}));
    EXPECT_TRUE(r.missing.empty());  // as torch: neither missing nor unexpected
    EXPECT_TRUE(r.unexpected.empty());
    ASSERT_EQ(r.mismatched.size(), 1u);
    EXPECT_EQ(r.mismatched[0].name, "k");
    EXPECT_EQ(r.mismatched[0].checkpoint, "F32[10, 5]");
    EXPECT_EQ(r.mismatched[0].target, "F32[10, 4]");
    EXPECT_TRUE(r.mismatched[0].is_error);
  }
}

TEST(MatchTest, ScalarVersusOneElementIsASizeMismatch) {
  auto stored = Catalog({{"s", Dtype::kF32, {1}}});
  MatchReport r = MustMatch(stored, Targets({{"s", Dtype::kF32, {}}}), {});
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: size mismatch for s: copying a param with "
            "shape [1] from checkpoint, the shape in current model is [].");
}

// As torch.nn.Module.load_state_dict (checked with torch 1.13 and 2.x): Missing, then
// Unexpected, then the per-key errors.
TEST(MatchTest, ErrorOrderIsMissingUnexpectedThenMismatchesByName) {
  auto stored = Catalog({{"z", Dtype::kF32, {2}}, {"y", Dtype::kF16, {2}},
                         {"u", Dtype::kF32, {1}}});
  auto targets = Targets({{"z", Dtype::kF32, {3}}, {"y", Dtype::kI32, {2}},
                          {"m", Dtype::kF32, {1}}});
  MatchReport r = MustMatch(stored, targets, {});
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"m\". "
            "Unexpected key(s) in state_dict: \"u\". dtype mismatch for y: copying a param "
            "with dtype F16 from checkpoint, the dtype in current model is I32. size "
            "mismatch for z: copying a param with shape [2] from checkpoint, the shape in "
            "current model is [3].");
}

TEST(MatchTest, DtypeMismatchIsAnErrorWithoutAllowCast) {
  auto stored = Catalog({{"w", Dtype::kF16, {4}}});
  auto targets = Targets({{"w", Dtype::kF32, {4}}});
  MatchReport r = MustMatch(stored, targets, {});
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: dtype mismatch for w: copying a param with "
            "dtype F16 from checkpoint, the dtype in current model is F32; allow_cast "
            "would convert it.");
  EXPECT_TRUE(r.matched.empty());
  ASSERT_EQ(r.mismatched.size(), 1u);
  EXPECT_EQ(r.mismatched[0].checkpoint, "F16[4]");
  EXPECT_EQ(r.mismatched[0].target, "F32[4]");
  EXPECT_TRUE(r.mismatched[0].is_error);
}

TEST(MatchTest, AllowCastAcceptsOnlyFloat32Float16BFloat16) {
  MatchOptions options;
  options.allow_cast = true;
  const Dtype floats[] = {Dtype::kF32, Dtype::kF16, Dtype::kBF16};
  for (Dtype from : floats) {
    for (Dtype to : floats) {
      auto stored = Catalog({{"w", from, {3}}});
      MatchReport r = MustMatch(stored, Targets({{"w", to, {3}}}), options);
      EXPECT_TRUE(r.status.ok()) << r.status.ToString();
      ASSERT_EQ(r.matched.size(), 1u);
      EXPECT_EQ(r.matched[0].stored_dtype, from);
      EXPECT_EQ(r.matched[0].dtype, to);
      if (from == to) {
        EXPECT_TRUE(r.mismatched.empty());
      } else {
        ASSERT_EQ(r.mismatched.size(), 1u);
        EXPECT_FALSE(r.mismatched[0].is_error);
      }
    }
  }
  for (auto [from, to] : {std::pair{Dtype::kI32, Dtype::kF32}, {Dtype::kF32, Dtype::kF64},
                          {Dtype::kF8_E4M3, Dtype::kBF16}, {Dtype::kU8, Dtype::kI8}}) {
    auto stored = Catalog({{"w", from, {3}}});
    MatchReport r = MustMatch(stored, Targets({{"w", to, {3}}}), options);
    EXPECT_EQ(r.status.message(),
              "Error(s) in loading state_dict: dtype mismatch for w: copying a param with "
              "dtype " + std::string(DtypeName(from)) +
                  " from checkpoint, the dtype in current model is " +
                  std::string(DtypeName(to)) + ".");
    EXPECT_TRUE(r.matched.empty());
  }
  EXPECT_TRUE(IsCastable(Dtype::kBF16, Dtype::kF16));
  EXPECT_TRUE(IsCastable(Dtype::kI64, Dtype::kI64));
  EXPECT_FALSE(IsCastable(Dtype::kF64, Dtype::kF32));
}

TEST(RenameRuleTest, ParsesSedStripAndAdd) {
  Result<RenameRule> sed = ParseRenameRule("s/^module\\.//");
  ASSERT_TRUE(sed.ok()) << sed.status().ToString();
  EXPECT_EQ(sed->kind, RenameRule::Kind::kRegex);
  EXPECT_EQ(*sed->Apply("module.a.module.b"), "a.module.b");
  EXPECT_EQ(*sed->Apply("x.module.b"), "x.module.b");
  EXPECT_EQ(sed->ToString(), "s/^module\\.//");

  Result<RenameRule> groups = ParseRenameRule("s|^h\\.([0-9]+)\\.|model.layers.\\1.|");
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  EXPECT_EQ(*groups->Apply("h.12.attn.w"), "model.layers.12.attn.w");
  EXPECT_EQ(groups->ToString(), "s/^h\\.([0-9]+)\\./model.layers.\\1./");

  // A group reference followed by a digit is that group and then the digit, as in sed
  // (std::regex_replace alone would read "$10" as group 10).
  Result<RenameRule> digit = ParseRenameRule("s/^layers\\.(\\d)\\./layers.\\10.\\0/");
  ASSERT_TRUE(digit.ok()) << digit.status().ToString();
  EXPECT_EQ(*digit->Apply("layers.1.w"), "layers.10.layers.1.w");
  EXPECT_EQ(digit->ToString(), "s/^layers\\.(\\d)\\./layers.\\10.&/");
  EXPECT_EQ(*ParseRenameRule(digit->ToString())->Apply("layers.1.w"), "layers.10.layers.1.w");

  Result<RenameRule> first = ParseRenameRule("s/a/[&]/");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first->Apply("banana"), "b[a]nana");
  Result<RenameRule> all = ParseRenameRule("s/a/\\&$/g");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all->Apply("banana"), "b&$n&$n&$");
  Result<RenameRule> slash = ParseRenameRule("s/a\\/b/c\\/d/");
  ASSERT_TRUE(slash.ok());
  EXPECT_EQ(*slash->Apply("xa/by"), "xc/dy");

  Result<RenameRule> strip = ParseRenameRule("strip:model.");
  ASSERT_TRUE(strip.ok());
  EXPECT_EQ(strip->kind, RenameRule::Kind::kStripPrefix);
  EXPECT_EQ(*strip->Apply("model.x"), "x");
  EXPECT_EQ(*strip->Apply("modelx"), "modelx");
  EXPECT_EQ(*strip->Apply("mod"), "mod");
  EXPECT_EQ(strip->ToString(), "strip:model.");
  Result<RenameRule> add = ParseRenameRule("add:model.");
  ASSERT_TRUE(add.ok());
  EXPECT_EQ(*add->Apply("x"), "model.x");
  EXPECT_EQ(add->ToString(), "add:model.");
  EXPECT_EQ(*RenameRule::StripPrefix("a.").Apply("a.b"), "b");
  EXPECT_EQ(*RenameRule::AddPrefix("a.").Apply("b"), "a.b");
}

TEST(RenameRuleTest, RejectsMalformedRulesWithExactMessages) {
  struct Case {
    const char* expr;
    const char* why;
  } cases[] = {
      {"", "expected s/REGEX/REPLACEMENT/[g], strip:PREFIX or add:PREFIX"},
      {"module.", "expected s/REGEX/REPLACEMENT/[g], strip:PREFIX or add:PREFIX"},
      {"s", "expected s/REGEX/REPLACEMENT/[g], strip:PREFIX or add:PREFIX"},
      {"s/a/b", "missing closing delimiter"},
      {"s/a", "missing closing delimiter"},
      {"s/a/b/x", "unknown flag 'x'"},
      {"s/a/b/gg", "flag 'g' given twice"},
      {"s//b/", "empty regex"},
      {"sxaxbx", "the delimiter must not be a letter, digit, backslash or newline"},
      {"s/a/b\\/", "missing closing delimiter"},
      {"strip:", "empty prefix"},
      {"add:", "empty prefix"},
      {"s/^(a)\\.weight/\\2/", "replacement refers to group \\2 but the regex has 1 group"},
      {"s/a/\\1/", "replacement refers to group \\1 but the regex has 0 groups"},
      {"s/^(a+)+$/x/", "nested quantifiers can take exponential time; write it without a "
                       "quantified group that holds '*' or '+'"},
  };
  for (const Case& c : cases) {
    Result<RenameRule> r = ParseRenameRule(c.expr);
    ASSERT_FALSE(r.ok()) << c.expr;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(),
              std::string("invalid rename rule '") + c.expr + "': " + c.why);
  }
  Result<RenameRule> bad_re = ParseRenameRule("s/(/x/");
  ASSERT_FALSE(bad_re.ok());
  EXPECT_EQ(bad_re.status().message().rfind("invalid rename rule 's/(/x/': ", 0), 0u);
}

TEST(MatchTest, RenamesApplyInOrderAndAreReported) {
  auto stored = Catalog({{"module.h.0.w", Dtype::kF32, {1}}, {"module.ln.gamma", Dtype::kF32, {1}},
                         {"plain", Dtype::kF32, {1}}});
  auto targets = Targets({{"model.layers.0.w", Dtype::kF32, {1}},
                          {"model.ln.weight", Dtype::kF32, {1}}, {"plain", Dtype::kF32, {1}}});
  MatchOptions options;
  for (const char* expr : {"s/^module\\.//", "s/^h\\.([0-9]+)\\./layers.\\1./",
                           "s/\\.gamma$/.weight/", "s/^(layers|ln)\\./model.&/"}) {
    Result<RenameRule> rule = ParseRenameRule(expr);
    ASSERT_TRUE(rule.ok()) << expr << ": " << rule.status().ToString();
    options.renames.push_back(*rule);
  }
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"model.layers.0.w<-module.h.0.w R", "model.ln.weight<-module.ln.gamma R",
                             "plain<-plain"}));
  ASSERT_EQ(r.renamed.size(), 2u);
  EXPECT_EQ(r.renamed[0].from, "module.h.0.w");
  EXPECT_EQ(r.renamed[0].to, "model.layers.0.w");
  EXPECT_EQ(r.renamed[1].from, "module.ln.gamma");
  EXPECT_EQ(r.renamed[1].to, "model.ln.weight");
}

TEST(MatchTest, UnexpectedKeysAreReportedUnderTheirRenamedNames) {
  auto stored = Catalog({{"module.a", Dtype::kF32, {1}}, {"module.extra", Dtype::kF32, {1}}});
  MatchOptions options;
  options.renames.push_back(RenameRule::StripPrefix("module."));
  MatchReport r = MustMatch(stored, Targets({{"a", Dtype::kF32, {1}}}), options);
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: Unexpected key(s) in state_dict: \"extra\".");
  EXPECT_EQ(r.renamed.size(), 2u);
}

TEST(MatchTest, RenameCollisionFailsNamingBothEvenWhenNotStrict) {
  auto stored = Catalog({{"x", Dtype::kF32, {1}}, {"module.x", Dtype::kF32, {1}},
                         {"module.y", Dtype::kF32, {1}}});
  auto targets = Targets({{"x", Dtype::kF32, {1}}, {"y", Dtype::kF32, {1}}});
  MatchOptions options;
  options.strict = false;
  options.renames.push_back(RenameRule::StripPrefix("module."));
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_EQ(r.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: rename rules map both \"module.x\" and \"x\" to "
            "\"x\".");
  EXPECT_EQ(Pairs(r), (Names{"y<-module.y R"}));
  EXPECT_EQ(r.missing, (Names{"x"}));  // neither colliding tensor is used
  EXPECT_TRUE(r.unexpected.empty());

  auto three = Catalog({{"a.w", Dtype::kF32, {1}}, {"b.w", Dtype::kF32, {1}},
                        {"c.w", Dtype::kF32, {1}}});
  MatchOptions to_one;
  to_one.renames.push_back(*ParseRenameRule("s/^[abc]\\.//"));
  MatchReport r3 = MustMatch(three, Targets({{"w", Dtype::kF32, {1}}}), to_one);
  EXPECT_EQ(r3.status.message(),
            "Error(s) in loading state_dict: rename rules map \"a.w\", \"b.w\" and \"c.w\" to "
            "\"w\". Missing key(s) in state_dict: \"w\".");
}

TEST(MatchTest, AutoPrefixIsOffByDefault) {
  auto stored = Catalog({{"module.a", Dtype::kF32, {1}}});
  MatchReport r = MustMatch(stored, Targets({{"a", Dtype::kF32, {1}}}), {});
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.auto_prefix, "");
}

TEST(MatchTest, AutoPrefixStripsDataParallelModule) {
  auto stored = Catalog({{"module.a", Dtype::kF32, {1}}, {"module.b.c", Dtype::kF32, {1}},
                         {"module.extra", Dtype::kF32, {1}}});
  auto targets = Targets({{"a", Dtype::kF32, {1}}, {"b.c", Dtype::kF32, {1}}});
  MatchOptions options;
  options.auto_prefix = true;
  options.strict = false;
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.auto_prefix, "strip:module.");
  EXPECT_EQ(Pairs(r), (Names{"a<-module.a R", "b.c<-module.b.c R"}));
  EXPECT_EQ(r.unexpected, (Names{"module.extra"}));  // not rewritten: it matched nothing
  ASSERT_EQ(r.renamed.size(), 2u);
  EXPECT_EQ(r.renamed[0].from, "module.a");
  EXPECT_EQ(r.renamed[0].to, "a");
}

TEST(MatchTest, AutoPrefixAddsModelOnlyWhereItHelps) {
  // A bare base-model checkpoint into a *ForCausalLM: "model." is missing, lm_head is not.
  auto stored = Catalog({{"embed.weight", Dtype::kF32, {4}}, {"layers.0.w", Dtype::kF32, {2}},
                         {"lm_head.weight", Dtype::kF32, {4}}});
  auto targets = Targets({{"model.embed.weight", Dtype::kF32, {4}},
                          {"model.layers.0.w", Dtype::kF32, {2}},
                          {"lm_head.weight", Dtype::kF32, {4}}});
  MatchOptions options;
  options.auto_prefix = true;
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.auto_prefix, "add:model.");
  EXPECT_EQ(Pairs(r), (Names{"lm_head.weight<-lm_head.weight", "model.embed.weight<-embed.weight R",
                             "model.layers.0.w<-layers.0.w R"}));
}

TEST(MatchTest, AutoPrefixFindsTheLongestCommonLeadingComponents) {
  auto stored = Catalog({{"transformer.h.0.w", Dtype::kF32, {1}},
                         {"transformer.h.1.w", Dtype::kF32, {1}},
                         {"transformer.wte", Dtype::kF32, {1}}});
  auto targets = Targets({{"h.0.w", Dtype::kF32, {1}}, {"h.1.w", Dtype::kF32, {1}},
                          {"wte", Dtype::kF32, {1}}});
  MatchOptions options;
  options.auto_prefix = true;
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.auto_prefix, "strip:transformer.");

  // Target side: every unmatched target shares "backbone.encoder.".
  auto stored2 = Catalog({{"l0", Dtype::kF32, {1}}, {"l1", Dtype::kF32, {1}}});
  auto targets2 = Targets({{"backbone.encoder.l0", Dtype::kF32, {1}},
                           {"backbone.encoder.l1", Dtype::kF32, {1}}});
  MatchReport r2 = MustMatch(stored2, targets2, options);
  EXPECT_TRUE(r2.status.ok()) << r2.status.ToString();
  EXPECT_EQ(r2.auto_prefix, "add:backbone.encoder.");
}

// A prefix taken from one leftover name is no evidence of a wrapper: it must not pair
// two unrelated tensors (strict would then pass with a wrong tensor loaded).
TEST(MatchTest, AutoPrefixNeedsTwoNamesForAComputedPrefix) {
  MatchOptions options;
  options.auto_prefix = true;
  auto stored = Catalog({{"blocks.0.w", Dtype::kF32, {4}}, {"blocks.1.w", Dtype::kF32, {4}},
                         {"final_norm.scale", Dtype::kF32, {4}}});
  auto targets = Targets({{"blocks.0.w", Dtype::kF32, {4}}, {"blocks.1.w", Dtype::kF32, {4}},
                          {"scale", Dtype::kF32, {4}}});
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_EQ(r.auto_prefix, "");
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"scale\". "
            "Unexpected key(s) in state_dict: \"final_norm.scale\".");
  // The add direction: one target's leading components do not make "bias" its tensor.
  auto stored2 = Catalog({{"blocks.0.w", Dtype::kF32, {4}}, {"bias", Dtype::kF32, {4}}});
  auto targets2 = Targets({{"blocks.0.w", Dtype::kF32, {4}},
                           {"blocks.0.attn.out.bias", Dtype::kF32, {4}}});
  MatchReport r2 = MustMatch(stored2, targets2, options);
  EXPECT_EQ(r2.auto_prefix, "");
  EXPECT_FALSE(r2.status.ok());
}

// The prefix is a wrapper's leading components, not everything the names share:
// "encoder.layers.N.w" loads into "layers.N.w", and one extra missing target does not
// stop "transformer." from being added.
TEST(MatchTest, AutoPrefixFindsTheWrapperNotTheWholeCommonPrefix) {
  MatchOptions options;
  options.auto_prefix = true;
  auto stored = Catalog({{"encoder.layers.0.w", Dtype::kF32, {1}},
                         {"encoder.layers.1.w", Dtype::kF32, {1}}});
  auto targets = Targets({{"layers.0.w", Dtype::kF32, {1}}, {"layers.1.w", Dtype::kF32, {1}}});
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.auto_prefix, "strip:encoder.");
  auto stored2 = Catalog({{"h.0.w", Dtype::kF32, {1}}, {"h.1.w", Dtype::kF32, {1}},
                          {"wte", Dtype::kF32, {1}}});
  auto targets2 = Targets({{"transformer.h.0.w", Dtype::kF32, {1}},
                           {"transformer.h.1.w", Dtype::kF32, {1}},
                           {"transformer.wte", Dtype::kF32, {1}},
                           {"lm_head.weight", Dtype::kF32, {1}}});
  MatchOptions non_strict = options;
  non_strict.strict = false;
  MatchReport r2 = MustMatch(stored2, targets2, non_strict);
  EXPECT_EQ(r2.auto_prefix, "add:transformer.");
  EXPECT_EQ(r2.matched.size(), 3u);
  EXPECT_EQ(r2.missing, (std::vector<std::string>{"lm_head.weight"}));
}

TEST(MatchTest, AutoPrefixDoesNothingWhenNoPrefixHelps) {
  auto stored = Catalog({{"x.a", Dtype::kF32, {1}}, {"y.b", Dtype::kF32, {1}}});
  auto targets = Targets({{"z.a", Dtype::kF32, {1}}});
  MatchOptions options;
  options.auto_prefix = true;
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_EQ(r.auto_prefix, "");
  EXPECT_TRUE(r.renamed.empty());
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"z.a\". "
            "Unexpected key(s) in state_dict: \"x.a\", \"y.b\".");
}

TEST(MatchTest, CallerAliasFillsTiedTargetsFromOneStoredTensor) {
  auto stored = Catalog({{"embed.weight", Dtype::kF32, {4, 2}}});
  auto targets = Targets({{"embed.weight", Dtype::kF32, {4, 2}},
                          {"lm_head.weight", Dtype::kF32, {4, 2}},
                          {"decoder.weight", Dtype::kF32, {4, 2}}});
  MatchOptions options;
  options.aliases = {{"lm_head.weight", "embed.weight"}, {"decoder.weight", "embed.weight"},
                     {"not.in.model", "embed.weight"}};  // ignored
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"decoder.weight<-embed.weight A", "embed.weight<-embed.weight",
                             "lm_head.weight<-embed.weight A"}));
  for (const MatchedPair& m : r.matched) EXPECT_EQ(m.stored, 0u);
  EXPECT_TRUE(r.missing.empty());
}

TEST(MatchTest, AliasedTensorNeedNotBeATargetItself) {
  auto stored = Catalog({{"shared", Dtype::kF32, {2}}});
  auto targets = Targets({{"a", Dtype::kF32, {2}}, {"b", Dtype::kF32, {2}}});
  MatchOptions options;
  options.aliases = {{"a", "shared"}, {"b", "shared"}};
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_TRUE(r.unexpected.empty());  // it was used
}

TEST(MatchTest, CheckpointTensorWinsOverAlias) {
  auto stored = Catalog({{"embed", Dtype::kF32, {2}}, {"head", Dtype::kF32, {2}}});
  auto targets = Targets({{"embed", Dtype::kF32, {2}}, {"head", Dtype::kF32, {2}}});
  MatchOptions options;
  options.aliases = {{"head", "embed"}};
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"embed<-embed", "head<-head"}));
}

TEST(MatchTest, AliasShapeMismatchAndUnresolvedAlias) {
  auto stored = Catalog({{"embed", Dtype::kF32, {2}}});
  auto targets = Targets({{"embed", Dtype::kF32, {2}}, {"head", Dtype::kF32, {3}},
                          {"other", Dtype::kF32, {2}}});
  MatchOptions options;
  options.aliases = {{"head", "embed"}, {"other", "nowhere"}};
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"other\". size "
            "mismatch for head: copying a param with shape [2] from checkpoint, the shape in "
            "current model is [3].");
  ASSERT_EQ(r.mismatched.size(), 1u);
  EXPECT_EQ(r.mismatched[0].stored_name, "embed");
}

TEST(MatchTest, CallerAliasResolvesRenamedNamesFirst) {
  auto stored = Catalog({{"module.embed", Dtype::kF32, {2}}, {"embed2", Dtype::kF32, {1}}});
  auto targets = Targets({{"embed", Dtype::kF32, {2}}, {"head", Dtype::kF32, {2}},
                          {"head2", Dtype::kF32, {2}}, {"embed2", Dtype::kF32, {1}}});
  MatchOptions options;
  options.renames.push_back(RenameRule::StripPrefix("module."));
  options.aliases = {{"head", "embed"}, {"head2", "module.embed"}};
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"embed<-module.embed R", "embed2<-embed2", "head<-module.embed A",
                             "head2<-module.embed A"}));
}

TEST(MatchTest, SaveModelMetadataAliases) {
  // safetensors save_model kept "embed.weight" and recorded the removed tied name.
  auto stored = Catalog({{"embed.weight", Dtype::kF32, {4}}, {"format_tensor", Dtype::kF32, {1}}});
  std::map<std::string, std::string> metadata = {
      {"lm_head.weight", "embed.weight"},   // alias
      {"gone.weight", "embed.weight"},      // alias whose target the model lacks: ignored
      {"format", "pt"},                     // value is no tensor: not an alias
      {"format_tensor", "embed.weight"},    // key is a stored tensor: not an alias
  };
  auto targets = Targets({{"embed.weight", Dtype::kF32, {4}},
                          {"lm_head.weight", Dtype::kF32, {4}},
                          {"format_tensor", Dtype::kF32, {1}}});
  MatchReport r = MustMatch(stored, targets, {}, metadata);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"embed.weight<-embed.weight", "format_tensor<-format_tensor",
                             "lm_head.weight<-embed.weight A"}));

  MatchOptions no_meta;
  no_meta.aliases_from_metadata = false;
  MatchReport r2 = MustMatch(stored, targets, no_meta, metadata);
  EXPECT_EQ(r2.status.message(),
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"lm_head.weight\".");
}

TEST(MatchTest, MetadataAliasOfAnotherShapeLeavesTheTargetMissing) {
  // The model ties "head" to the first rows of "embed"; save_model noted head -> embed.
  // The note cannot feed a [6, 4] target from an [8, 4] tensor: "head" stays missing
  // (torch and safetensors' load_model report it so), not a size mismatch.
  auto stored = Catalog({{"embed", Dtype::kF32, {8, 4}}});
  std::map<std::string, std::string> metadata = {{"head", "embed"}};
  auto targets = Targets({{"embed", Dtype::kF32, {8, 4}}, {"head", Dtype::kF32, {6, 4}}});
  MatchOptions options;
  options.strict = false;
  MatchReport r = MustMatch(stored, targets, options, metadata);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"embed<-embed"}));
  EXPECT_EQ(r.missing, (Names{"head"}));
  EXPECT_TRUE(r.mismatched.empty());
  // The caller's own alias is the caller's word: the same shapes are a size mismatch.
  options.aliases = {{"head", "embed"}};
  MatchReport r2 = MustMatch(stored, targets, options, metadata);
  EXPECT_EQ(r2.status.message(),
            "Error(s) in loading state_dict: size mismatch for head: copying a param with "
            "shape [8, 4] from checkpoint, the shape in current model is [6, 4].");
}

TEST(MatchTest, MetadataAliasKeysGoThroughRenamesAndCallerAliasesWin) {
  auto stored = Catalog({{"module.embed", Dtype::kF32, {4}}, {"module.pos", Dtype::kF32, {4}}});
  std::map<std::string, std::string> metadata = {{"module.head", "module.embed"}};
  auto targets = Targets({{"embed", Dtype::kF32, {4}}, {"pos", Dtype::kF32, {4}},
                          {"head", Dtype::kF32, {4}}});
  MatchOptions options;
  options.renames.push_back(RenameRule::StripPrefix("module."));
  MatchReport r = MustMatch(stored, targets, options, metadata);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"embed<-module.embed R", "head<-module.embed A", "pos<-module.pos R"}));

  options.aliases = {{"head", "pos"}};
  MatchReport r2 = MustMatch(stored, targets, options, metadata);
  EXPECT_EQ(Pairs(r2), (Names{"embed<-module.embed R", "head<-module.pos A", "pos<-module.pos R"}));
}

TEST(MatchTest, MetadataAliasFollowsAutoPrefix) {
  auto stored = Catalog({{"module.embed", Dtype::kF32, {4}}});
  std::map<std::string, std::string> metadata = {{"module.head", "module.embed"}};
  auto targets = Targets({{"embed", Dtype::kF32, {4}}, {"head", Dtype::kF32, {4}}});
  MatchOptions options;
  options.auto_prefix = true;
  MatchReport r = MustMatch(stored, targets, options, metadata);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Pairs(r), (Names{"embed<-module.embed R", "head<-module.embed A"}));
}

TEST(MatchTest, InvalidInputsAreErrorResults) {
  auto stored = Catalog({{"a", Dtype::kF32, {1}}});
  auto check = [](const Result<MatchReport>& r, const std::string& message) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), message);
  };
  check(Match(stored, kNoMetadata, Targets({{"t", Dtype::kF32, {1}}, {"t", Dtype::kF32, {2}}}), {}),
        "duplicate target name 't'");
  auto dup = stored;
  dup.push_back(dup[0]);
  check(Match(dup, kNoMetadata, {}, {}), "duplicate stored tensor name 'a'");
  auto bad_bytes = stored;
  bad_bytes[0].bytes = 8;
  check(Match(bad_bytes, kNoMetadata, {}, {}),
        "stored tensor 'a': 8 bytes do not match F32[1] (4 bytes)");
  check(Match(stored, kNoMetadata, Targets({{"f4", Dtype::kF4, {3}}}), {}),
        "target 'f4': F4[3] is 12 bits, which does not end on a byte boundary");
  MatchOptions twice;
  twice.aliases = {{"x", "a"}, {"x", "b"}};
  check(Match(stored, kNoMetadata, {}, twice), "alias for 'x' is given twice");
  MatchOptions empty;
  empty.aliases = {{"", "a"}};
  check(Match(stored, kNoMetadata, {}, empty), "empty alias name");
  MatchOptions uncompiled;
  RenameRule broken;
  broken.kind = RenameRule::Kind::kRegex;
  broken.text = "x";
  uncompiled.renames.push_back(broken);
  check(Match(stored, kNoMetadata, {}, uncompiled),
        "rename rule 's/x//' on 'a': rename rule 's/x//' has no compiled regex");
  std::vector<Target> overflow = {Target{"big", Dtype::kF64, {1ull << 62, 4}}};
  Result<MatchReport> o = Match(stored, kNoMetadata, overflow, {});
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(o.status().message().rfind("target 'big': ", 0), 0u) << o.status().message();
}

TEST(MatchTest, HugeNamesNeverReachTheRegexEngine) {
  // std::regex recurses per character; a 50,000-byte name would overflow the stack.
  std::string huge(50000, 'a');
  auto stored = Catalog({{huge, Dtype::kF32, {1}}, {"ok", Dtype::kF32, {1}}});
  MatchOptions options;
  options.renames.push_back(*ParseRenameRule("s/^(.*)\\.gamma$/\\1.weight/"));
  Result<MatchReport> r = Match(stored, kNoMetadata, Targets({{"ok", Dtype::kF32, {1}}}), options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "rename rule 's/^(.*)\\.gamma$/\\1.weight/' on '" + std::string(64, 'a') +
                "...': name of 50000 bytes is longer than the 1024-byte limit for regex rules");
  // At the limit it works; prefix rules have no limit.
  std::string longest(kMaxRegexNameBytes - 6, 'b');
  EXPECT_EQ(*options.renames[0].Apply(longest + ".gamma"), longest + ".weight");
  MatchOptions strip;
  strip.strict = false;
  strip.renames.push_back(RenameRule::StripPrefix("a"));
  Result<MatchReport> s = Match(stored, kNoMetadata, Targets({{"ok", Dtype::kF32, {1}}}), strip);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->unexpected, (Names{std::string(49999, 'a')}));
  // A huge metadata key is free text, not an alias: ignored, not an error.
  std::map<std::string, std::string> metadata = {{std::string(50000, 'k'), "ok"}};
  Result<MatchReport> m =
      Match(Catalog({{"ok", Dtype::kF32, {1}}}), metadata, Targets({{"ok", Dtype::kF32, {1}}}),
            options);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->status.ok());
}

TEST(MatchTest, OddNamesAreEscapedInMessages) {
  std::string nul("a\0b", 3);
  auto stored = Catalog({{"q\"uote", Dtype::kF32, {1}}, {nul, Dtype::kF32, {1}},
                         {"line\nbreak", Dtype::kF32, {1}}});
  MatchReport r = MustMatch(stored, {}, {});
  EXPECT_EQ(r.status.message(),
            "Error(s) in loading state_dict: Unexpected key(s) in state_dict: \"a\\x00b\", "
            "\"line\\x0abreak\", \"q\\\"uote\".");
  EXPECT_EQ(r.unexpected[0], nul);  // the report keeps the exact names
}

TEST(MatchTest, JsonAndTextReports) {
  auto stored = Catalog({{"module.w", Dtype::kF16, {2}}, {"e\xff", Dtype::kF32, {1}}});
  auto targets = Targets({{"w", Dtype::kF32, {2}}, {"tied", Dtype::kF32, {2}},
                          {"m", Dtype::kF32, {1}}});
  MatchOptions options;
  options.strict = false;
  options.allow_cast = true;
  options.renames.push_back(RenameRule::StripPrefix("module."));
  options.aliases = {{"tied", "w"}};
  MatchReport r = MustMatch(stored, targets, options);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.ToJson(),
            "{\"ok\":true,\"error\":null,\"matched\":["
            "{\"stored\":\"module.w\",\"target\":\"tied\",\"via_rename\":false,\"via_alias\":true,"
            "\"stored_dtype\":\"F16\",\"dtype\":\"F32\"},"
            "{\"stored\":\"module.w\",\"target\":\"w\",\"via_rename\":true,\"via_alias\":false,"
            "\"stored_dtype\":\"F16\",\"dtype\":\"F32\"}],"
            "\"missing\":[\"m\"],\"unexpected\":[\"e\\u00ff\"],\"mismatched\":["
            "{\"name\":\"tied\",\"stored_name\":\"module.w\",\"checkpoint\":\"F16[2]\","
            "\"target\":\"F32[2]\",\"error\":false},"
            "{\"name\":\"w\",\"stored_name\":\"module.w\",\"checkpoint\":\"F16[2]\","
            "\"target\":\"F32[2]\",\"error\":false}],"
            "\"renamed\":[{\"from\":\"module.w\",\"to\":\"w\"}],\"auto_prefix\":\"\"}");
  std::string text = r.ToString();
  EXPECT_NE(text.find("match: OK\n"), std::string::npos) << text;
  EXPECT_NE(text.find("matched: 2 (1 via rename, 1 via alias, 2 cast)\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("  \"tied\" <- \"module.w\" (alias) (cast F16 -> F32)\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("missing: 1\n  \"m\"\n"), std::string::npos) << text;
  // The allowed casts are in the matched list only: "mismatched" counts failures.
  EXPECT_NE(text.find("mismatched: 0\nrenamed:"), std::string::npos) << text;
  EXPECT_NE(text.find("renamed: 1\n  \"module.w\" -> \"w\"\n"), std::string::npos) << text;

  MatchReport failed = MustMatch(stored, targets, {});
  std::string json = failed.ToJson();
  EXPECT_EQ(json.rfind("{\"ok\":false,\"error\":{\"code\":\"invalid_argument\",\"message\":"
                       "\"Error(s) in loading state_dict: Missing key(s) in state_dict: ",
                       0),
            0u)
      << json;
}

TEST(MatchTest, NineteenThousandTensorsMatchQuickly) {
  std::vector<Spec> specs;
  for (int layer = 0; layer < 19; ++layer) {
    for (int expert = 0; expert < 1000; ++expert) {
      specs.push_back({"model.layers." + std::to_string(layer) + ".experts." +
                           std::to_string(expert) + ".w",
                       Dtype::kBF16, {64}});
    }
  }
  auto stored = Catalog(specs);
  std::vector<Spec> target_specs = specs;
  for (Spec& s : target_specs) s.name = s.name.substr(std::string("model.").size());
  auto targets = Targets(target_specs);
  MatchOptions options;
  options.auto_prefix = true;
  MatchReport r = MustMatch(stored, targets, options);
  EXPECT_TRUE(r.status.ok()) << r.status.message().substr(0, 200);
  EXPECT_EQ(r.matched.size(), 19000u);
  EXPECT_EQ(r.auto_prefix, "strip:model.");
}

// Report lists must come out sorted by name however the targets are ordered: in model
// order (numeric, a few dozen ascending runs by name), reversed (one run per target)
// and shuffled, which take different sorting paths inside Match.
TEST(MatchTest, ReportListsAreSortedWhateverTheTargetOrder) {
  std::vector<Spec> specs;
  for (int i = 0; i < 600; ++i) specs.push_back({"w." + std::to_string(i), Dtype::kF16, {2}});
  auto stored = Catalog(specs);
  std::vector<Spec> model;  // 550 of the stored names, in numeric order, and 20 absent ones
  for (int i = 0; i < 600; ++i) {
    if (i % 12 != 5) model.push_back(specs[i]);
    if (i % 30 == 7) model.push_back({"x." + std::to_string(i), Dtype::kF16, {2}});
  }
  ASSERT_EQ(model.size(), 570u);
  Names matched_names, want_pairs, want_missing, want_unexpected;
  for (const Spec& s : model) {
    if (s.name[0] == 'w') matched_names.push_back(s.name);
    if (s.name[0] == 'x') want_missing.push_back(s.name);
  }
  for (int i = 5; i < 600; i += 12) want_unexpected.push_back("w." + std::to_string(i));
  std::sort(matched_names.begin(), matched_names.end());  // by target name, not by pair text
  for (const std::string& n : matched_names) want_pairs.push_back(n + "<-" + n);
  std::sort(want_missing.begin(), want_missing.end());
  std::sort(want_unexpected.begin(), want_unexpected.end());
  ASSERT_EQ(want_pairs.size(), 550u);
  ASSERT_EQ(want_missing.size(), 20u);
  ASSERT_EQ(want_unexpected.size(), 50u);

  std::vector<Spec> reversed(model.rbegin(), model.rend());
  std::sort(reversed.begin(), reversed.end(),
            [](const Spec& a, const Spec& b) { return a.name > b.name; });
  std::vector<Spec> shuffled = model;
  std::mt19937 rng(7);
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  MatchOptions options;
  options.strict = false;
  for (const std::vector<Spec>* order : {&model, &reversed, &shuffled}) {
    auto targets = Targets(*order);
    MatchReport r = MustMatch(stored, targets, options);
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_EQ(Pairs(r), want_pairs);
    EXPECT_EQ(r.missing, want_missing);
    EXPECT_EQ(r.unexpected, want_unexpected);
    for (const MatchedPair& m : r.matched) {  // indices agree with the names
      ASSERT_LT(m.stored, stored.size());
      ASSERT_LT(m.target, targets.size());
      EXPECT_EQ(stored[m.stored].name, m.stored_name);
      EXPECT_EQ(targets[m.target].name, m.target_name);
    }
  }
}

}  // namespace
}  // namespace shardload
