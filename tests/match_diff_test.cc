// tests/match_diff_test.cc — a seeded randomized differential test of Match against a
// plain reference written here with std::map, std::set and obvious loops, following the
// semantics match.h documents (renames and collisions, direct matches, auto_prefix,
// caller and metadata aliases, shape/dtype checks, sorted report lists, the
// PyTorch-style message). Inputs mix in the edge cases of Match's hash index: empty
// names, embedded NULs, non-UTF-8 bytes, table sizes around the growth points, more
// targets than stored tensors and the reverse, renames that collide, aliases with
// renames and auto_prefix. Every input is also matched with both sides shuffled: the
// report must not depend on the input order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "format/text.h"
#include "loader/match.h"

namespace shardload {
namespace {

// ---- The reference.

std::string RefQuote(std::string_view s) { return QuoteForMessage(s, '"'); }

std::string RefPlain(std::string_view s) {
  std::string q = QuoteForMessage(s, '"');
  return q.substr(1, q.size() - 2);
}

// RefFrequent: prefixes made of a name's first 1..3 dotted components (never the whole
// name) that at least two names share, most frequent first, then by name; at most 8.
std::vector<std::string> RefFrequent(const std::vector<std::string>& names) {
  std::map<std::string, size_t> count;
  for (const std::string& n : names) {
    std::vector<size_t> dots;
    for (size_t i = 0; i < n.size() && dots.size() < 3; ++i) {
      if (n[i] == '.') dots.push_back(i);
    }
    for (size_t d : dots) {
      if (d + 1 < n.size()) ++count[n.substr(0, d + 1)];
    }
  }
  std::vector<std::pair<size_t, std::string>> ranked;  // (-count as order, name)
  for (const auto& [p, c] : count) {
    if (c >= 2) ranked.emplace_back(c, p);
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < ranked.size() && i < 8; ++i) out.push_back(ranked[i].second);
  return out;
}

std::optional<std::string> RefTransform(bool strip, const std::string& prefix,
                                        const std::string& name) {
  if (!strip) return prefix + name;
  if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0) {
    return name.substr(prefix.size());
  }
  return std::nullopt;
}

std::optional<std::string> RefRenames(const MatchOptions& options, const std::string& name) {
  std::string out = name;
  for (const RenameRule& rule : options.renames) {
    Result<std::string> next = rule.Apply(out);
    if (!next.ok()) return std::nullopt;
    out = *next;
  }
  return out;
}

MatchReport Reference(const std::vector<StoredTensor>& stored,
                      const std::map<std::string, std::string>& metadata,
                      const std::vector<Target>& targets, const MatchOptions& options) {
  const size_t n = stored.size();
  std::map<std::string, size_t> target_index, stored_index;
  for (size_t t = 0; t < targets.size(); ++t) target_index[targets[t].name] = t;
  for (size_t s = 0; s < n; ++s) stored_index[stored[s].name] = s;

  // 1. Renames and collisions.
  std::vector<std::string> model(n);
  for (size_t s = 0; s < n; ++s) model[s] = *RefRenames(options, stored[s].name);
  std::map<std::string, std::vector<std::string>> holders;  // model name → originals
  for (size_t s = 0; s < n; ++s) holders[model[s]].push_back(stored[s].name);
  std::vector<bool> colliding(n, false);
  std::vector<std::string> errors;
  for (auto& [name, originals] : holders) {
    if (originals.size() < 2) continue;
    std::sort(originals.begin(), originals.end());
    std::string msg = originals.size() == 2 ? "rename rules map both " : "rename rules map ";
    for (size_t k = 0; k < originals.size(); ++k) {
      if (k > 0) msg += (k + 1 == originals.size()) ? " and " : ", ";
      msg += RefQuote(originals[k]);
    }
    errors.push_back(msg + " to " + RefQuote(name) + ".");
    for (size_t s = 0; s < n; ++s) {
      if (model[s] == name) colliding[s] = true;
    }
  }
  std::sort(errors.begin(), errors.end());

  // 2. Direct matches.
  std::map<std::string, size_t> source;  // target name → stored
  std::set<std::string> via_rename, via_alias;
  std::vector<bool> used(n, false);
  for (size_t s = 0; s < n; ++s) {
    if (colliding[s] || target_index.count(model[s]) == 0) continue;
    source[model[s]] = s;
    if (model[s] != stored[s].name) via_rename.insert(model[s]);
    used[s] = true;
  }

  // 3. auto_prefix.
  std::optional<std::pair<bool, std::string>> chosen;
  if (options.auto_prefix) {
    std::set<std::string> open_targets;
    std::vector<std::string> open_target_names, open_stored_names;
    for (const Target& t : targets) {
      if (source.count(t.name) == 0) {
        open_targets.insert(t.name);
        open_target_names.push_back(t.name);
      }
    }
    for (size_t s = 0; s < n; ++s) {
      if (!used[s] && !colliding[s]) open_stored_names.push_back(model[s]);
    }
    if (!open_targets.empty() && !open_stored_names.empty()) {
      std::vector<std::string> candidates = {"module.", "model."};
      for (const std::string& p : RefFrequent(open_stored_names)) candidates.push_back(p);
      for (const std::string& p : RefFrequent(open_target_names)) candidates.push_back(p);
      std::vector<std::string> tried;
      size_t best = 0;
      for (size_t i = 0; i < candidates.size(); ++i) {
        const std::string& p = candidates[i];
        if (std::count(tried.begin(), tried.end(), p) > 0) continue;
        tried.push_back(p);
        for (bool strip : {true, false}) {
          size_t count = 0;
          for (const std::string& name : open_stored_names) {
            std::optional<std::string> to = RefTransform(strip, p, name);
            if (to && open_targets.count(*to) > 0) ++count;
          }
          if (count >= (i < 2 ? 1u : 2u) && count > best) {
            best = count;
            chosen = std::make_pair(strip, p);
          }
        }
      }
      if (chosen) {
        for (size_t s = 0; s < n; ++s) {
          if (used[s] || colliding[s]) continue;
          std::optional<std::string> to = RefTransform(chosen->first, chosen->second, model[s]);
          if (!to || open_targets.count(*to) == 0) continue;
          source[*to] = s;
          via_rename.insert(*to);
          used[s] = true;
          model[s] = *to;
        }
      }
    }
  }

  // 4. Aliases.
  std::map<std::string, size_t> alias;  // target name → stored
  for (const auto& [target, name] : options.aliases) {
    if (target_index.count(target) == 0) continue;
    std::optional<size_t> s;
    for (size_t k = 0; k < n && !s; ++k) {
      if (!colliding[k] && model[k] == name) s = k;
    }
    if (!s && stored_index.count(name) > 0 && !colliding[stored_index[name]]) {
      s = stored_index[name];
    }
    if (s) alias.emplace(target, *s);
  }
  if (options.aliases_from_metadata) {
    for (const auto& [key, value] : metadata) {
      if (stored_index.count(value) == 0 || colliding[stored_index[value]]) continue;
      if (stored_index.count(key) > 0) continue;
      std::optional<std::string> name = RefRenames(options, key);
      if (!name) continue;
      std::optional<std::string> target;
      if (target_index.count(*name) > 0) {
        target = *name;
      } else if (chosen) {
        std::optional<std::string> alt = RefTransform(chosen->first, chosen->second, *name);
        if (alt && target_index.count(*alt) > 0) target = *alt;
      }
      // A note of another shape is ignored (the target stays missing).
      if (target && stored[stored_index[value]].shape == targets[target_index[*target]].shape) {
        alias.emplace(*target, stored_index[value]);
      }
    }
  }
  for (const auto& [target, s] : alias) {
    if (source.count(target) > 0) continue;
    source[target] = s;
    via_alias.insert(target);
    used[s] = true;
  }

  // 5. Checks, 6. lists.
  MatchReport report;
  std::vector<std::string> mismatch_errors;
  for (const auto& [name, t] : target_index) {
    const Target& target = targets[t];
    if (source.count(name) == 0) {
      report.missing.push_back(name);
      continue;
    }
    size_t s = source[name];
    const StoredTensor& st = stored[s];
    bool shape_ok = st.shape == target.shape;
    bool dtype_ok = st.dtype == target.dtype ||
                    (options.allow_cast && IsCastable(st.dtype, target.dtype));
    std::string ck = std::string(DtypeName(st.dtype)) + ShapeToString(st.shape);
    std::string tg = std::string(DtypeName(target.dtype)) + ShapeToString(target.shape);
    if (!shape_ok || st.dtype != target.dtype) {
      report.mismatched.push_back({name, st.name, ck, tg, !(shape_ok && dtype_ok)});
    }
    if (!shape_ok) {
      mismatch_errors.push_back("size mismatch for " + RefPlain(name) +
                                ": copying a param with shape " + ShapeToString(st.shape) +
                                " from checkpoint, the shape in current model is " +
                                ShapeToString(target.shape) + ".");
    } else if (!dtype_ok) {
      mismatch_errors.push_back(
          "dtype mismatch for " + RefPlain(name) + ": copying a param with dtype " +
          std::string(DtypeName(st.dtype)) +
          " from checkpoint, the dtype in current model is " +
          std::string(DtypeName(target.dtype)) +
          (IsCastable(st.dtype, target.dtype) ? "; allow_cast would convert it." : "."));
    } else {
      report.matched.push_back(MatchedPair{static_cast<uint32_t>(s), static_cast<uint32_t>(t),
                                           st.name, name, via_rename.count(name) > 0,
                                           via_alias.count(name) > 0, st.dtype, target.dtype});
    }
  }
  std::map<std::string, std::string> renamed;
  for (size_t s = 0; s < n; ++s) {
    if (!used[s] && !colliding[s]) report.unexpected.push_back(model[s]);
    if (model[s] != stored[s].name) renamed[stored[s].name] = model[s];
  }
  std::sort(report.unexpected.begin(), report.unexpected.end());
  for (const auto& [from, to] : renamed) report.renamed.push_back({from, to});
  if (chosen) report.auto_prefix = (chosen->first ? "strip:" : "add:") + chosen->second;

  auto join = [](const std::vector<std::string>& names) {
    std::string out;
    for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + RefQuote(names[i]);
    return out;
  };
  if (options.strict && !report.missing.empty()) {
    errors.push_back("Missing key(s) in state_dict: " + join(report.missing) + ".");
  }
  if (options.strict && !report.unexpected.empty()) {
    errors.push_back("Unexpected key(s) in state_dict: " + join(report.unexpected) + ".");
  }
  for (const std::string& e : mismatch_errors) errors.push_back(e);
  if (!errors.empty()) {
    std::string msg = "Error(s) in loading state_dict:";
    for (const std::string& e : errors) msg += " " + e;
    report.status = InvalidArgumentError(msg);
  }
  return report;
}

// ---- Random inputs.

// Name pieces: dotted prefixes auto_prefix and the rules act on, plus the awkward
// bytes (NUL, 0xff, a quote, a backslash, a newline) and the empty name.
const std::vector<std::string> kPieces = {
    "module.", "model.", "layers.", "0.", "1.", "x.", "a", "b", "weight", "bias",
    std::string("n\0ul", 4), "\xff\xfe", "q\"", "\\", "\n", "."};

std::string RandomName(std::mt19937_64& rng) {
  std::string name;
  int parts = static_cast<int>(rng() % 4);
  for (int i = 0; i < parts; ++i) name += kPieces[rng() % kPieces.size()];
  return name;
}

// Pool: distinct names; sometimes a few, sometimes around the index's growth points
// (16 slots hold 10 names, 32 hold 21, 64 hold 42).
std::vector<std::string> RandomPool(std::mt19937_64& rng) {
  static const size_t kSizes[] = {0, 1, 2, 3, 5, 9, 10, 11, 20, 21, 22, 41, 42, 43, 60};
  size_t want = kSizes[rng() % std::size(kSizes)];
  std::set<std::string> pool;
  for (size_t tries = 0; pool.size() < want && tries < 20 * want + 20; ++tries) {
    pool.insert(RandomName(rng));
  }
  return {pool.begin(), pool.end()};
}

struct Case {
  std::vector<StoredTensor> stored;
  std::vector<Target> targets;
  std::map<std::string, std::string> metadata;
  MatchOptions options;
};

Dtype RandomDtype(std::mt19937_64& rng) {
  static const Dtype kDtypes[] = {Dtype::kF32, Dtype::kF32, Dtype::kF32, Dtype::kF16,
                                  Dtype::kI32};
  return kDtypes[rng() % std::size(kDtypes)];
}

std::vector<uint64_t> RandomShape(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:
      return {};
    case 1:
      return {3};
    case 2:
      return {0, 2};
    default:
      return {2};
  }
}

Case RandomCase(std::mt19937_64& rng) {
  Case c;
  std::vector<std::string> pool = RandomPool(rng);
  // Targets and stored names: random subsets of one pool, so names overlap, and
  // extra names rewritten by one piece so renames and auto_prefix have work.
  uint64_t offset = 0;
  std::set<std::string> stored_names, target_names;
  for (const std::string& name : pool) {
    uint64_t r = rng() % 8;
    if (r < 5) stored_names.insert(name);
    if (r >= 2 && r < 7) target_names.insert(name);
    if (r == 7) stored_names.insert(kPieces[rng() % 3] + name);
  }
  for (const std::string& name : stored_names) {
    Dtype d = RandomDtype(rng);
    std::vector<uint64_t> shape = RandomShape(rng);
    uint64_t bytes = *TensorByteSize(d, shape);
    c.stored.push_back(StoredTensor{name, d, shape, 0, offset, bytes});
    offset += bytes;
  }
  for (const std::string& name : target_names) {
    bool like_stored = rng() % 4 != 0;
    Dtype d = like_stored ? Dtype::kF32 : RandomDtype(rng);
    std::vector<uint64_t> shape = like_stored ? std::vector<uint64_t>{2} : RandomShape(rng);
    c.targets.push_back(Target{name, d, shape});
  }
  // Stored shapes/dtypes mostly like the targets, so most pairs check out.
  for (StoredTensor& st : c.stored) {
    if (rng() % 4 != 0) {
      st.dtype = Dtype::kF32;
      st.shape = {2};
      st.bytes = 8;
    }
  }
  static const char* kRules[] = {"strip:module.", "add:model.", "strip:model.",
                                 "s/^x\\./module./", "s/a/b/g", "s/^layers\\.//",
                                 "s/\\.$//", "add:x."};
  int rules = static_cast<int>(rng() % 3);
  for (int i = 0; i < rules; ++i) {
    c.options.renames.push_back(*ParseRenameRule(kRules[rng() % std::size(kRules)]));
  }
  c.options.strict = rng() % 2 == 0;
  c.options.auto_prefix = rng() % 2 == 0;
  c.options.allow_cast = rng() % 3 == 0;
  c.options.aliases_from_metadata = rng() % 4 != 0;
  auto any_name = [&]() -> std::string {
    uint64_t r = rng() % 3;
    if (r == 0 && !c.stored.empty()) return c.stored[rng() % c.stored.size()].name;
    if (r == 1 && !c.targets.empty()) return c.targets[rng() % c.targets.size()].name;
    return RandomName(rng);
  };
  std::set<std::string> alias_targets;
  for (int i = static_cast<int>(rng() % 3); i > 0; --i) {
    std::string target = any_name(), name = any_name();
    if (target.empty() || name.empty() || !alias_targets.insert(target).second) continue;
    c.options.aliases.push_back({target, name});
  }
  for (int i = static_cast<int>(rng() % 4); i > 0; --i) c.metadata[any_name()] = any_name();
  if (rng() % 2 == 0) c.metadata["format"] = "pt";
  return c;
}

// ---- Comparison.

std::string Show(const MatchReport& r) {
  std::string out = r.status.ToString() + "\n";
  for (const MatchedPair& m : r.matched) {
    out += "M " + RefQuote(m.target_name) + "<-" + RefQuote(m.stored_name) +
           (m.via_rename ? " R" : "") + (m.via_alias ? " A" : "") + " " +
           std::string(DtypeName(m.stored_dtype)) + ">" + std::string(DtypeName(m.dtype)) +
           "\n";
  }
  for (const std::string& s : r.missing) out += "- " + RefQuote(s) + "\n";
  for (const std::string& s : r.unexpected) out += "+ " + RefQuote(s) + "\n";
  for (const Mismatch& m : r.mismatched) {
    out += "X " + RefQuote(m.name) + " " + RefQuote(m.stored_name) + " " + m.checkpoint +
           " " + m.target + (m.is_error ? " err" : " cast") + "\n";
  }
  for (const Renamed& m : r.renamed) out += "~ " + RefQuote(m.from) + ">" + RefQuote(m.to) + "\n";
  return out + "auto " + r.auto_prefix + "\n";
}

std::string Describe(const Case& c) {
  std::string out = "stored:";
  for (const StoredTensor& s : c.stored) {
    out += " " + RefQuote(s.name) + ":" + std::string(DtypeName(s.dtype)) +
           ShapeToString(s.shape);
  }
  out += "\ntargets:";
  for (const Target& t : c.targets) {
    out += " " + RefQuote(t.name) + ":" + std::string(DtypeName(t.dtype)) +
           ShapeToString(t.shape);
  }
  out += "\nrenames:";
  for (const RenameRule& r : c.options.renames) out += " " + r.ToString();
  out += "\naliases:";
  for (const auto& [t, s] : c.options.aliases) out += " " + RefQuote(t) + "->" + RefQuote(s);
  out += "\nmetadata:";
  for (const auto& [k, v] : c.metadata) out += " " + RefQuote(k) + "=" + RefQuote(v);
  out += std::string("\nstrict=") + (c.options.strict ? "1" : "0") +
         " auto_prefix=" + (c.options.auto_prefix ? "1" : "0") +
         " allow_cast=" + (c.options.allow_cast ? "1" : "0") +
         " metadata_aliases=" + (c.options.aliases_from_metadata ? "1" : "0") + "\n";
  return out;
}

// Indices: every matched pair's (stored, target) indices, as names, so inputs in another
// order compare equal.
std::string Indices(const MatchReport& r, const std::vector<StoredTensor>& stored,
                    const std::vector<Target>& targets) {
  std::string out;
  for (const MatchedPair& m : r.matched) {
    if (m.stored >= stored.size() || m.target >= targets.size()) return "index out of range";
    out += RefQuote(targets[m.target].name) + "<-" + RefQuote(stored[m.stored].name) + ";";
  }
  return out;
}

TEST(MatchDiffTest, AgreesWithTheReferenceInAnyInputOrder) {
  std::mt19937_64 rng(20261123);
  int checked = 0;
  // Coverage: how many cases reached each path (each must be reached, else the
  // generator has gone stale and the test proves little).
  std::map<std::string, int> seen;
  for (int i = 0; i < 3000; ++i) {
    Case c = RandomCase(rng);
    MatchReport want = Reference(c.stored, c.metadata, c.targets, c.options);
    const std::string& msg = want.status.message();
    seen["collision"] += msg.find("rename rules map") != std::string::npos;
    seen["size mismatch"] += msg.find("size mismatch") != std::string::npos;
    seen["dtype mismatch"] += msg.find("dtype mismatch") != std::string::npos;
    seen["auto_prefix"] += !want.auto_prefix.empty();
    seen["ok"] += want.status.ok();
    for (const MatchedPair& m : want.matched) {
      seen["alias"] += m.via_alias;
      seen["alias+rename"] += m.via_alias && !c.options.renames.empty();
      seen["rename"] += m.via_rename;
      seen["cast"] += m.stored_dtype != m.dtype;
      seen["empty name"] += m.target_name.empty();
      seen["NUL name"] += m.target_name.find('\0') != std::string::npos;
      seen["0xff name"] += m.target_name.find('\xff') != std::string::npos;
    }
    Result<MatchReport> got = Match(c.stored, c.metadata, c.targets, c.options);
    ASSERT_TRUE(got.ok()) << got.status().ToString() << "\n" << Describe(c);
    ASSERT_EQ(Show(*got), Show(want)) << "case " << i << "\n" << Describe(c);
    ASSERT_EQ(Indices(*got, c.stored, c.targets), Indices(want, c.stored, c.targets));
    // Shuffled inputs: the same report (indices follow the shuffle).
    Case s = c;
    std::shuffle(s.stored.begin(), s.stored.end(), rng);
    std::shuffle(s.targets.begin(), s.targets.end(), rng);
    Result<MatchReport> again = Match(s.stored, s.metadata, s.targets, s.options);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    ASSERT_EQ(Show(*again), Show(want)) << "shuffled case " << i << "\n" << Describe(s);
    ASSERT_EQ(Indices(*again, s.stored, s.targets), Indices(want, c.stored, c.targets));
    ++checked;
  }
  EXPECT_EQ(checked, 3000);
  for (const char* path : {"collision", "size mismatch", "dtype mismatch", "auto_prefix", "ok",
                           "alias", "alias+rename", "rename", "cast", "empty name", "NUL name",
                           "0xff name"}) {
    EXPECT_GT(seen[path], 10) << path;
  }
  for (const auto& [path, count] : seen) std::printf("%s: %d\n", path.c_str(), count);
}

// Many targets (past the 258-run threshold where SortedByName sorts instead of
// merging) in reverse and shuffled order against the reference.
TEST(MatchDiffTest, LargeUnsortedTargetListsAgree) {
  std::mt19937_64 rng(7);
  Case c;
  for (int i = 0; i < 600; ++i) {
    std::string name = "layers." + std::to_string(i) + ".w";
    if (i % 3 != 0) c.stored.push_back(StoredTensor{"module." + name, Dtype::kF32, {2}, 0,
                                                     static_cast<uint64_t>(8 * i), 8});
    if (i % 5 != 0) c.targets.push_back(Target{name, Dtype::kF32, {2}});
  }
  c.options.strict = false;
  c.options.auto_prefix = true;
  std::reverse(c.targets.begin(), c.targets.end());
  for (int round = 0; round < 3; ++round) {
    MatchReport want = Reference(c.stored, c.metadata, c.targets, c.options);
    Result<MatchReport> got = Match(c.stored, c.metadata, c.targets, c.options);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(Show(*got), Show(want));
    EXPECT_EQ(got->auto_prefix, "strip:module.");
    std::shuffle(c.targets.begin(), c.targets.end(), rng);
  }
}

}  // namespace
}  // namespace shardload
