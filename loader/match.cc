// loader/match.cc — rename rules and load_state_dict-style key matching (see match.h).
#include "loader/match.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <deque>
#include <functional>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "format/header.h"
#include "format/text.h"

namespace shardload {
namespace {

// Quote: "name", as torch lists keys in its messages.
std::string Quote(std::string_view name) { return QuoteForMessage(name, '"'); }

// Single: 'name', as the project's other messages name tensors.
std::string Single(std::string_view name) { return QuoteForMessage(name, '\''); }

// Short: Single(name), cut to its first 64 bytes and "..." when longer (for messages
// about names that may be huge).
std::string Short(std::string_view name) {
  if (name.size() <= 64) return Single(name);
  std::string q = QuoteForMessage(name.substr(0, 64), '\'');
  q.insert(q.size() - 1, "...");
  return q;
}

// Plain: the escaped name without quotes (torch does not quote names in size mismatch
// messages).
std::string Plain(std::string_view name) {
  std::string q = QuoteForMessage(name, '"');
  return q.substr(1, q.size() - 2);
}

std::string DtypeShape(Dtype dtype, std::span<const uint64_t> shape) {
  return std::string(DtypeName(dtype)) + ShapeToString(shape);
}

bool IsFloatCastDtype(Dtype d) {
  return d == Dtype::kF32 || d == Dtype::kF16 || d == Dtype::kBF16;
}

// ConvertSedReplacement: sed replacement syntax → std::regex_replace format syntax.
// A group reference becomes two digits ("\1" → "$01"): "$1" before a digit would read
// as a two-digit group ("\10" is group 1 then '0' in sed). A reference past the
// regex's `groups` capture groups is an error, as in sed.
Result<std::string> ConvertSedReplacement(std::string_view sed, unsigned groups) {
  std::string out;
  for (size_t i = 0; i < sed.size(); ++i) {
    char c = sed[i];
    if (c == '\\') {
      if (i + 1 == sed.size()) return InvalidArgumentError("trailing backslash in replacement");
      char n = sed[++i];
      if (n == '0') {
        out += "$&";
      } else if (n >= '1' && n <= '9') {
        if (static_cast<unsigned>(n - '0') > groups) {
          return InvalidArgumentError(std::string("replacement refers to group \\") + n +
                                      " but the regex has " + std::to_string(groups) +
                                      (groups == 1 ? " group" : " groups"));
        }
        out += "$0";
        out += n;
      } else if (n == 'n') {
        out += '\n';
      } else if (n == 't') {
        out += '\t';
      } else if (n == '$') {
        out += "$$";
      } else {
        out += n;  // "\&" → '&', "\\" → '\', "\/" → '/'
      }
    } else if (c == '&') {
      out += "$&";
    } else if (c == '$') {
      out += "$$";
    } else {
      out += c;
    }
  }
  return out;
}

// ReplacementToSed: the inverse, for ToString.
std::string ReplacementToSed(std::string_view fmt) {
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '$' && i + 1 < fmt.size()) {
      char n = fmt[i + 1];
      if (n == '&') {
        out += '&';
        ++i;
        continue;
      }
      if (n >= '0' && n <= '9') {
        // "$N" or "$NM" (std::regex_replace reads up to two digits); "$0N" is what
        // ConvertSedReplacement writes.
        size_t group = n - '0';
        size_t end = i + 2;
        if (end < fmt.size() && fmt[end] >= '0' && fmt[end] <= '9') {
          group = group * 10 + (fmt[end] - '0');
          ++end;
        }
        if (group <= 9) {
          if (group == 0) {
            out += '&';
          } else {
            out += '\\';
            out += static_cast<char>('0' + group);
          }
          i = end - 1;
          continue;
        }
      }
      if (n == '$') {
        out += '$';
        ++i;
        continue;
      }
    }
    if (c == '\\' || c == '&' || c == '/') out += '\\';
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeDelimiter(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      out += s[i];
      out += s[++i];
    } else if (s[i] == '/') {
      out += "\\/";
    } else {
      out += s[i];
    }
  }
  return out;
}

// kPrefixDepth: auto_prefix candidates are a name's first 1..kPrefixDepth dotted
// components ("encoder.", "encoder.layers.", ...), never the whole name.
constexpr int kPrefixDepth = 3;
// kMaxComputedPrefixes: how many of the most frequent computed candidates are tried.
constexpr size_t kMaxComputedPrefixes = 8;

// FrequentLeadingComponents: the leading-component prefixes (see kPrefixDepth) that at
// least two of `names` share, most frequent first (ties by name), at most
// kMaxComputedPrefixes. A prefix seen in one name only is no evidence of a wrapper: a
// lone leftover "final_norm.scale" must not make "strip:final_norm." pair it with an
// unrelated "scale".
std::vector<std::string> FrequentLeadingComponents(const std::vector<std::string_view>& names) {
  std::unordered_map<std::string_view, size_t> count;
  for (std::string_view n : names) {
    size_t end = 0;
    for (int depth = 0; depth < kPrefixDepth; ++depth) {
      const size_t dot = n.find('.', end);
      if (dot == std::string_view::npos || dot + 1 >= n.size()) break;
      end = dot + 1;
      ++count[n.substr(0, end)];
    }
  }
  std::vector<std::pair<std::string_view, size_t>> ranked;
  for (const auto& [prefix, c] : count) {
    if (c >= 2) ranked.emplace_back(prefix, c);
  }
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  if (ranked.size() > kMaxComputedPrefixes) ranked.resize(kMaxComputedPrefixes);
  std::vector<std::string> out;
  for (const auto& [prefix, c] : ranked) out.emplace_back(prefix);
  return out;
}

// NameIdIndex: an open-addressing (linear probing) hash index from names to uint32 ids,
// kept at most ~2/3 full. It stores views: the caller keeps every inserted name alive
// for the index's lifetime. One flat allocation instead of a node per name, which
// matters for checkpoints of tens of thousands of tensors.
class NameIdIndex {
 public:
  static constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();

  // NameIdIndex: an empty index sized for `expected` names (it grows past that).
  explicit NameIdIndex(size_t expected) { Reset(CapacityFor(expected)); }

  // Insert: add `name` → `id` unless `name` is present. Returns the id already held
  // for `name`, or kNone when it was added.
  uint32_t Insert(std::string_view name, uint32_t id) {
    if (3 * (size_ + 1) > 2 * slots_.size()) Grow();
    uint32_t hash = Hash(name);
    size_t i = hash & mask_;
    while (slots_[i].id != kNone) {
      if (slots_[i].hash == hash && slots_[i].name == name) return slots_[i].id;
      i = (i + 1) & mask_;
    }
    slots_[i] = Slot{name, hash, id};
    ++size_;
    return kNone;
  }

  // Find: the id of `name`, or kNone.
  uint32_t Find(std::string_view name) const {
    uint32_t hash = Hash(name);
    size_t i = hash & mask_;
    while (slots_[i].id != kNone) {
      if (slots_[i].hash == hash && slots_[i].name == name) return slots_[i].id;
      i = (i + 1) & mask_;
    }
    return kNone;
  }

 private:
  struct Slot {
    std::string_view name;
    uint32_t hash = 0;
    uint32_t id = kNone;
  };

  // Hash: the low 32 bits of NameHash (seeded per process, so names from a file cannot
  // be chosen to collide), enough to index up to 2^32 slots.
  static uint32_t Hash(std::string_view name) { return static_cast<uint32_t>(NameHash(name)); }

  static size_t CapacityFor(size_t expected) {
    size_t capacity = 16;
    while (2 * capacity < 3 * expected + 3) capacity *= 2;
    return capacity;
  }

  void Reset(size_t capacity) {
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    size_ = 0;
  }

  void Grow() {
    std::vector<Slot> old = std::move(slots_);
    Reset(old.size() * 2);
    for (const Slot& slot : old) {
      if (slot.id != kNone) Insert(slot.name, slot.id);
    }
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// SortedByName: the indices of `targets` in ascending name order. Target lists are
// often sorted already (a model's state_dict order, or a catalog made of a few sorted
// shards), so ascending runs are found first and merged; many runs fall back to a
// plain sort.
std::vector<uint32_t> SortedByName(std::span<const Target> targets) {
  std::vector<uint32_t> order(targets.size());
  std::iota(order.begin(), order.end(), 0u);
  auto less = [&](uint32_t a, uint32_t b) { return targets[a].name < targets[b].name; };
  std::vector<size_t> bounds = {0};  // starts of ascending runs, then the end
  for (size_t i = 1; i < order.size(); ++i) {
    if (less(order[i], order[i - 1])) bounds.push_back(i);
  }
  bounds.push_back(order.size());
  if (bounds.size() > 258) {
    // Sort (name, index) pairs: comparisons then read the names without going through
    // the (large) Target records.
    std::vector<std::pair<std::string_view, uint32_t>> keyed(targets.size());
    for (uint32_t t = 0; t < targets.size(); ++t) keyed[t] = {targets[t].name, t};
    std::sort(keyed.begin(), keyed.end());  // names are distinct: a total order
    for (size_t i = 0; i < keyed.size(); ++i) order[i] = keyed[i].second;
    return order;
  }
  while (bounds.size() > 2) {  // merge neighbouring runs pairwise
    std::vector<size_t> next = {0};
    for (size_t k = 0; k + 1 < bounds.size(); k += 2) {
      if (k + 2 < bounds.size()) {
        std::inplace_merge(order.begin() + bounds[k], order.begin() + bounds[k + 1],
                           order.begin() + bounds[k + 2], less);
        next.push_back(bounds[k + 2]);
      } else {
        next.push_back(bounds[k + 1]);
      }
    }
    bounds = std::move(next);
  }
  return order;
}

// PrefixOp: one auto_prefix candidate.
struct PrefixOp {
  bool strip = true;
  std::string prefix;

  // Transform: the rewritten name, or nullopt when the op does not apply.
  std::optional<std::string> Transform(std::string_view name) const {
    if (strip) {
      if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) {
        return std::nullopt;
      }
      return std::string(name.substr(prefix.size()));
    }
    return prefix + std::string(name);
  }

  // Lookup: index.Find(*Transform(name)), or kNone when the op does not apply, without
  // building a string for a strip (`scratch` holds the name an add builds).
  uint32_t Lookup(std::string_view name, const NameIdIndex& index, std::string* scratch) const {
    if (strip) {
      if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) {
        return NameIdIndex::kNone;
      }
      return index.Find(name.substr(prefix.size()));
    }
    scratch->assign(prefix);
    scratch->append(name);
    return index.Find(*scratch);
  }

  std::string ToString() const { return (strip ? "strip:" : "add:") + prefix; }
};

std::string JoinQuoted(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ", ";
    out += Quote(names[i]);
  }
  return out;
}

}  // namespace

bool IsCastable(Dtype from, Dtype to) {
  return from == to || (IsFloatCastDtype(from) && IsFloatCastDtype(to));
}

RenameRule RenameRule::StripPrefix(std::string prefix) {
  RenameRule rule;
  rule.kind = Kind::kStripPrefix;
  rule.text = std::move(prefix);
  return rule;
}

RenameRule RenameRule::AddPrefix(std::string prefix) {
  RenameRule rule;
  rule.kind = Kind::kAddPrefix;
  rule.text = std::move(prefix);
  return rule;
}

Result<std::string> RenameRule::Apply(std::string_view name) const {
  switch (kind) {
    case Kind::kStripPrefix:
      if (name.substr(0, std::min(name.size(), text.size())) == text) {
        return std::string(name.substr(text.size()));
      }
      return std::string(name);
    case Kind::kAddPrefix:
      return text + std::string(name);
    case Kind::kRegex:
      if (regex == nullptr) {
        return InvalidArgumentError("rename rule '" + ToString() + "' has no compiled regex");
      }
      if (name.size() > kMaxRegexNameBytes) {
        return InvalidArgumentError("name of " + std::to_string(name.size()) +
                                    " bytes is longer than the " +
                                    std::to_string(kMaxRegexNameBytes) +
                                    "-byte limit for regex rules");
      }
      try {
        auto flags = global ? std::regex_constants::format_default
                            : std::regex_constants::format_first_only;
        std::string input(name);
        return std::regex_replace(input, *regex, replacement, flags);
      } catch (const std::regex_error& e) {
        return InternalError("rename rule '" + ToString() + "' failed on " + Short(name) +
                             ": " + e.what());
      }
  }
  return InternalError("unknown rename rule kind");
}

std::string RenameRule::ToString() const {
  switch (kind) {
    case Kind::kStripPrefix:
      return "strip:" + text;
    case Kind::kAddPrefix:
      return "add:" + text;
    case Kind::kRegex:
      return "s/" + EscapeDelimiter(text) + "/" + ReplacementToSed(replacement) + "/" +
             (global ? "g" : "");
  }
  return "?";
}

Result<RenameRule> ParseRenameRule(std::string_view expr) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("invalid rename rule '" + std::string(expr) +
                                "': " + std::string(why));
  };
  constexpr std::string_view kStrip = "strip:";
  constexpr std::string_view kAdd = "add:";
  if (expr.substr(0, kStrip.size()) == kStrip || expr.substr(0, kAdd.size()) == kAdd) {
    bool strip = expr.substr(0, kStrip.size()) == kStrip;
    std::string prefix(expr.substr(strip ? kStrip.size() : kAdd.size()));
    if (prefix.empty()) return bad("empty prefix");
    return strip ? RenameRule::StripPrefix(std::move(prefix))
                 : RenameRule::AddPrefix(std::move(prefix));
  }
  if (expr.size() < 2 || expr[0] != 's') {
    return bad("expected s/REGEX/REPLACEMENT/[g], strip:PREFIX or add:PREFIX");
  }
  char delim = expr[1];
  if (delim == '\\' || delim == '\n' ||
      std::isalnum(static_cast<unsigned char>(delim))) {
    return bad("the delimiter must not be a letter, digit, backslash or newline");
  }
  // Split the two delimited parts; "\<delim>" becomes <delim>, other escapes are kept.
  std::string parts[2];
  size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    bool closed = false;
    while (i < expr.size()) {
      char c = expr[i];
      if (c == '\\' && i + 1 < expr.size()) {
        if (expr[i + 1] == delim) {
          parts[part] += delim;
        } else {
          parts[part] += c;
          parts[part] += expr[i + 1];
        }
        i += 2;
        continue;
      }
      ++i;
      if (c == delim) {
        closed = true;
        break;
      }
      parts[part] += c;
    }
    if (!closed) return bad("missing closing delimiter");
  }
  std::string_view flags = expr.substr(i);
  RenameRule rule;
  rule.kind = RenameRule::Kind::kRegex;
  for (char f : flags) {
    if (f != 'g') return bad(std::string("unknown flag '") + f + "'");
    if (rule.global) return bad("flag 'g' given twice");
    rule.global = true;
  }
  if (parts[0].empty()) return bad("empty regex");
  if (RegexHasNestedQuantifiers(parts[0])) {
    return bad(kNestedQuantifiersRefusal);
  }
  try {
    rule.regex = std::make_shared<const std::regex>(parts[0], std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return bad(e.what());
  }
  Result<std::string> replacement = ConvertSedReplacement(parts[1], rule.regex->mark_count());
  if (!replacement.ok()) return bad(replacement.status().message());
  rule.text = std::move(parts[0]);
  rule.replacement = std::move(*replacement);
  return rule;
}

Result<MatchReport> Match(std::span<const StoredTensor> stored,
                          const std::map<std::string, std::string>& metadata,
                          std::span<const Target> targets, const MatchOptions& options) {
  constexpr uint64_t kMaxCount = std::numeric_limits<uint32_t>::max();
  if (stored.size() > kMaxCount || targets.size() > kMaxCount) {
    return InvalidArgumentError("too many tensors to match (more than 2^32 - 1)");
  }
  constexpr uint32_t kNone = NameIdIndex::kNone;

  // ---- Validate the inputs.
  NameIdIndex target_by_name(targets.size());
  for (uint32_t t = 0; t < targets.size(); ++t) {
    const Target& target = targets[t];
    if (target_by_name.Insert(target.name, t) != kNone) {
      return InvalidArgumentError("duplicate target name " + Single(target.name));
    }
    Result<uint64_t> bytes = TensorByteSize(target.dtype, target.shape);
    if (!bytes.ok()) return bytes.status().WithPrefix("target " + Single(target.name));
  }
  NameIdIndex stored_by_name(stored.size());
  for (uint32_t s = 0; s < stored.size(); ++s) {
    const StoredTensor& st = stored[s];
    if (stored_by_name.Insert(st.name, s) != kNone) {
      return InvalidArgumentError("duplicate stored tensor name " + Single(st.name));
    }
    Result<uint64_t> bytes = TensorByteSize(st.dtype, st.shape);
    if (!bytes.ok()) return bytes.status().WithPrefix("stored tensor " + Single(st.name));
    if (*bytes != st.bytes) {
      return InvalidArgumentError("stored tensor " + Single(st.name) + ": " +
                                  std::to_string(st.bytes) + " bytes do not match " +
                                  DtypeShape(st.dtype, st.shape) + " (" +
                                  std::to_string(*bytes) + " bytes)");
    }
  }
  std::unordered_map<std::string_view, std::string_view> caller_alias;
  for (const auto& [target_name, stored_name] : options.aliases) {
    if (target_name.empty() || stored_name.empty()) {
      return InvalidArgumentError("empty alias name");
    }
    if (!caller_alias.emplace(target_name, stored_name).second) {
      return InvalidArgumentError("alias for " + Single(target_name) + " is given twice");
    }
  }

  // ---- 1. Renames and collisions.
  // model_name[s] views either stored[s].name (not rewritten, the common case: no copy)
  // or a rewritten name owned by `owned_names` (a deque: its elements never move).
  auto apply_renames = [&](std::string_view name) -> Result<std::string> {
    std::string out(name);
    for (const RenameRule& rule : options.renames) {
      Result<std::string> next = rule.Apply(out);
      if (!next.ok()) {
        return InvalidArgumentError("rename rule '" + rule.ToString() + "' on " +
                                    Short(name) + ": " + next.status().message());
      }
      out = std::move(*next);
    }
    return out;
  };
  std::deque<std::string> owned_names;
  std::vector<std::string_view> model_name(stored.size());
  for (uint32_t s = 0; s < stored.size(); ++s) model_name[s] = stored[s].name;
  // is_renamed: whether model_name[s] differs from the stored name (by content).
  auto is_renamed = [&](uint32_t s) {
    return model_name[s].data() != stored[s].name.data() && model_name[s] != stored[s].name;
  };
  std::vector<bool> colliding(stored.size(), false);
  std::vector<std::string> collision_messages;
  if (!options.renames.empty()) {
    for (uint32_t s = 0; s < stored.size(); ++s) {
      SL_ASSIGN_OR_RETURN(std::string name, apply_renames(stored[s].name));
      if (name != stored[s].name) model_name[s] = owned_names.emplace_back(std::move(name));
    }
    // Without renames the names are the stored names, already known to be distinct.
    NameIdIndex by_model_name(stored.size());
    std::map<uint32_t, std::vector<uint32_t>> groups;  // first holder → all holders
    for (uint32_t s = 0; s < stored.size(); ++s) {
      uint32_t first = by_model_name.Insert(model_name[s], s);
      if (first == kNone) continue;
      std::vector<uint32_t>& group = groups[first];
      if (group.empty()) group.push_back(first);
      group.push_back(s);
    }
    for (const auto& [first, group] : groups) {
      std::vector<std::string_view> originals;
      for (uint32_t s : group) {
        colliding[s] = true;
        originals.push_back(stored[s].name);
      }
      std::sort(originals.begin(), originals.end());
      std::string msg = group.size() == 2 ? "rename rules map both " : "rename rules map ";
      for (size_t k = 0; k < originals.size(); ++k) {
        if (k > 0) msg += (k + 1 == originals.size()) ? " and " : ", ";
        msg += Quote(originals[k]);
      }
      msg += " to " + Quote(model_name[first]) + ".";
      collision_messages.push_back(std::move(msg));
    }
    std::sort(collision_messages.begin(), collision_messages.end());
  }

  // ---- 2. Direct matches.
  std::vector<uint32_t> source(targets.size(), kNone);  // target → stored
  std::vector<bool> via_rename(targets.size(), false);
  std::vector<bool> via_alias(targets.size(), false);
  std::vector<bool> used(stored.size(), false);
  for (uint32_t s = 0; s < stored.size(); ++s) {
    if (colliding[s]) continue;
    uint32_t t = target_by_name.Find(model_name[s]);
    if (t == kNone) continue;
    source[t] = s;
    via_rename[t] = is_renamed(s);
    used[s] = true;
  }

  // ---- 3. auto_prefix.
  std::optional<PrefixOp> chosen;
  if (options.auto_prefix) {
    std::vector<std::string_view> unmatched_target_names;
    for (uint32_t t = 0; t < targets.size(); ++t) {
      if (source[t] == kNone) unmatched_target_names.push_back(targets[t].name);
    }
    NameIdIndex unmatched_targets(unmatched_target_names.size());
    for (uint32_t t = 0; t < targets.size(); ++t) {
      if (source[t] == kNone) unmatched_targets.Insert(targets[t].name, t);
    }
    std::vector<uint32_t> unmatched_stored;
    std::vector<std::string_view> unmatched_stored_names;
    for (uint32_t s = 0; s < stored.size(); ++s) {
      if (used[s] || colliding[s]) continue;
      unmatched_stored.push_back(s);
      unmatched_stored_names.push_back(model_name[s]);
    }
    if (!unmatched_target_names.empty() && !unmatched_stored.empty()) {
      // The wrappers PyTorch adds ("module." from DataParallel, "model.") may win with
      // one match; a prefix computed from the names needs two.
      std::vector<std::string> prefixes = {"module.", "model."};
      const size_t standard = prefixes.size();
      for (const std::vector<std::string_view>* names :
           {&unmatched_stored_names, &unmatched_target_names}) {
        for (std::string& p : FrequentLeadingComponents(*names)) {
          prefixes.push_back(std::move(p));
        }
      }
      size_t best_count = 0;
      std::vector<std::string> seen;
      std::string scratch;
      for (size_t i = 0; i < prefixes.size(); ++i) {
        const std::string& prefix = prefixes[i];
        if (std::find(seen.begin(), seen.end(), prefix) != seen.end()) continue;
        seen.push_back(prefix);
        const size_t needed = i < standard ? 1 : 2;
        for (bool strip : {true, false}) {
          PrefixOp op{strip, prefix};
          size_t count = 0;
          for (uint32_t s : unmatched_stored) {
            if (op.Lookup(model_name[s], unmatched_targets, &scratch) != kNone) ++count;
          }
          if (count >= needed && count > best_count) {
            best_count = count;
            chosen = op;
          }
        }
      }
      if (chosen) {
        for (uint32_t s : unmatched_stored) {
          uint32_t t = chosen->Lookup(model_name[s], unmatched_targets, &scratch);
          if (t == kNone) continue;
          source[t] = s;
          via_rename[t] = true;
          used[s] = true;
          model_name[s] = owned_names.emplace_back(*chosen->Transform(model_name[s]));
        }
      }
    }
  }

  // ---- 4. Aliases (tied weights). Caller entries first; they win per target.
  std::unordered_map<uint32_t, uint32_t> alias_source;  // target → stored
  if (!caller_alias.empty()) {
    NameIdIndex by_final_name(stored.size());  // non-colliding; the first holder wins
    for (uint32_t s = 0; s < stored.size(); ++s) {
      if (!colliding[s]) by_final_name.Insert(model_name[s], s);
    }
    for (const auto& [target_name, stored_name] : caller_alias) {
      uint32_t t = target_by_name.Find(target_name);
      if (t == kNone) continue;  // not in this model: ignored
      uint32_t s = by_final_name.Find(stored_name);
      if (s == kNone) {
        uint32_t o = stored_by_name.Find(stored_name);
        if (o != kNone && !colliding[o]) s = o;
      }
      if (s != kNone) alias_source.emplace(t, s);
    }
  }
  if (options.aliases_from_metadata) {
    for (const auto& [key, value] : metadata) {
      uint32_t s = stored_by_name.Find(value);
      if (s == kNone || colliding[s]) continue;
      if (stored_by_name.Find(key) != kNone) continue;  // not an alias: key is a tensor
      Result<std::string> renamed = apply_renames(key);
      if (!renamed.ok()) continue;  // metadata is free text: not an alias we can use
      std::string name = std::move(*renamed);
      uint32_t t = target_by_name.Find(name);
      if (t == kNone && chosen) {
        std::optional<std::string> alt = chosen->Transform(name);
        if (alt) t = target_by_name.Find(*alt);
      }
      if (t == kNone) continue;  // not in this model: ignored
      // A note is a hint, not the caller's word: one whose shapes differ (the model
      // ties a view of the kept tensor, e.g. its first rows) leaves the target missing,
      // as torch leaves it, instead of failing the load with a size mismatch.
      if (stored[s].shape != targets[t].shape) continue;
      alias_source.emplace(t, s);  // keeps a caller entry
    }
  }
  for (const auto& [t, s] : alias_source) {
    if (source[t] != kNone) continue;  // the checkpoint has the target itself
    source[t] = s;
    via_alias[t] = true;
    used[s] = true;
  }

  // ---- 5. Shape and dtype checks; 6. missing and unexpected.
  // Targets are visited in name order, so matched, missing, mismatched and the
  // mismatch messages come out sorted (target names are distinct).
  std::vector<uint32_t> order = SortedByName(targets);
  MatchReport report;
  report.matched.reserve(targets.size());
  std::vector<std::string> mismatch_errors;
  for (uint32_t t : order) {
    const Target& target = targets[t];
    uint32_t s = source[t];
    if (s == kNone) {
      report.missing.push_back(target.name);
      continue;
    }
    const StoredTensor& st = stored[s];
    bool shape_ok = st.shape == target.shape;
    bool dtype_ok = st.dtype == target.dtype ||
                    (options.allow_cast && IsCastable(st.dtype, target.dtype));
    if (!shape_ok || st.dtype != target.dtype) {
      report.mismatched.push_back(Mismatch{target.name, st.name,
                                           DtypeShape(st.dtype, st.shape),
                                           DtypeShape(target.dtype, target.shape),
                                           !(shape_ok && dtype_ok)});
    }
    if (!shape_ok) {
      mismatch_errors.push_back("size mismatch for " + Plain(target.name) +
                                ": copying a param with shape " + ShapeToString(st.shape) +
                                " from checkpoint, the shape in current model is " +
                                ShapeToString(target.shape) + ".");
      continue;
    }
    if (!dtype_ok) {
      std::string msg = "dtype mismatch for " + Plain(target.name) +
                        ": copying a param with dtype " + std::string(DtypeName(st.dtype)) +
                        " from checkpoint, the dtype in current model is " +
                        std::string(DtypeName(target.dtype));
      msg += IsCastable(st.dtype, target.dtype) ? "; allow_cast would convert it." : ".";
      mismatch_errors.push_back(std::move(msg));
      continue;
    }
    report.matched.push_back(MatchedPair{s, t, st.name, target.name, via_rename[t],
                                         via_alias[t], st.dtype, target.dtype});
  }
  std::vector<std::string_view> unexpected;
  std::vector<uint32_t> renamed;
  for (uint32_t s = 0; s < stored.size(); ++s) {
    if (!used[s] && !colliding[s]) unexpected.push_back(model_name[s]);
    if (is_renamed(s)) renamed.push_back(s);
  }
  std::sort(unexpected.begin(), unexpected.end());
  report.unexpected.assign(unexpected.begin(), unexpected.end());
  std::sort(renamed.begin(), renamed.end(),
            [&](uint32_t a, uint32_t b) { return stored[a].name < stored[b].name; });
  report.renamed.reserve(renamed.size());
  for (uint32_t s : renamed) {
    report.renamed.push_back({stored[s].name, std::string(model_name[s])});
  }
  if (chosen) report.auto_prefix = chosen->ToString();

  std::vector<std::string> errors = std::move(collision_messages);
  // PyTorch's order: it inserts Unexpected, then Missing, at the front of its list.
  if (options.strict && !report.missing.empty()) {
    errors.push_back("Missing key(s) in state_dict: " + JoinQuoted(report.missing) + ".");
  }
  if (options.strict && !report.unexpected.empty()) {
    errors.push_back("Unexpected key(s) in state_dict: " + JoinQuoted(report.unexpected) + ".");
  }
  for (std::string& msg : mismatch_errors) errors.push_back(std::move(msg));
  if (!errors.empty()) {
    std::string msg = "Error(s) in loading state_dict:";
    for (const std::string& e : errors) msg += " " + e;
    report.status = InvalidArgumentError(std::move(msg));
  }
  return report;
}

std::string MatchReport::ToString() const {
  size_t renamed_count = 0, alias_count = 0, cast_count = 0;
  for (const MatchedPair& m : matched) {
    renamed_count += m.via_rename;
    alias_count += m.via_alias;
    cast_count += m.stored_dtype != m.dtype;
  }
  std::string out = "match: " + status.ToString() + "\n";
  out += "matched: " + std::to_string(matched.size()) + " (" + std::to_string(renamed_count) +
         " via rename, " + std::to_string(alias_count) + " via alias, " +
         std::to_string(cast_count) + " cast)\n";
  for (const MatchedPair& m : matched) {
    if (!m.via_rename && !m.via_alias && m.stored_dtype == m.dtype) continue;
    out += "  " + Quote(m.target_name) + " <- " + Quote(m.stored_name);
    if (m.via_alias) out += " (alias)";
    if (m.stored_dtype != m.dtype) {
      out += " (cast " + std::string(DtypeName(m.stored_dtype)) + " -> " +
             std::string(DtypeName(m.dtype)) + ")";
    }
    out += "\n";
  }
  auto list = [&](const char* title, const std::vector<std::string>& names) {
    out += std::string(title) + ": " + std::to_string(names.size()) + "\n";
    for (const std::string& n : names) out += "  " + Quote(n) + "\n";
  };
  list("missing", missing);
  list("unexpected", unexpected);
  // Allowed casts are listed with the matched pairs above ("(cast A -> B)"), not here:
  // this list is what failed (the JSON keeps both, with "error").
  size_t errors = 0;
  for (const Mismatch& m : mismatched) errors += m.is_error;
  out += "mismatched: " + std::to_string(errors) + "\n";
  for (const Mismatch& m : mismatched) {
    if (!m.is_error) continue;
    out += "  " + Quote(m.name) + ": checkpoint " + m.checkpoint + ", model " + m.target + "\n";
  }
  out += "renamed: " + std::to_string(renamed.size()) + "\n";
  for (const Renamed& r : renamed) out += "  " + Quote(r.from) + " -> " + Quote(r.to) + "\n";
  if (!auto_prefix.empty()) out += "auto prefix: " + auto_prefix + "\n";
  return out;
}

std::string MatchReport::ToJson() const {
  std::string out = "{\"ok\":";
  out += status.ok() ? "true" : "false";
  out += ",\"error\":";
  if (status.ok()) {
    out += "null";
  } else {
    out += "{\"code\":";
    AppendJsonString(&out, StatusCodeName(status.code()));
    out += ",\"message\":";
    AppendJsonString(&out, status.message());
    out += "}";
  }
  out += ",\"matched\":[";
  for (size_t i = 0; i < matched.size(); ++i) {
    const MatchedPair& m = matched[i];
    if (i > 0) out += ",";
    out += "{\"stored\":";
    AppendJsonString(&out, m.stored_name);
    out += ",\"target\":";
    AppendJsonString(&out, m.target_name);
    out += ",\"via_rename\":";
    out += m.via_rename ? "true" : "false";
    out += ",\"via_alias\":";
    out += m.via_alias ? "true" : "false";
    out += ",\"stored_dtype\":";
    AppendJsonString(&out, DtypeName(m.stored_dtype));
    out += ",\"dtype\":";
    AppendJsonString(&out, DtypeName(m.dtype));
    out += "}";
  }
  out += "],";
  AppendListsJson(&out);
  out += "}";
  return out;
}

void MatchReport::AppendListsJson(std::string* out_ptr) const {
  std::string& out = *out_ptr;
  auto names = [&](const char* key, const std::vector<std::string>& list) {
    out += std::string("\"") + key + "\":";
    AppendJsonStringArray(&out, list);
    out += ",";
  };
  names("missing", missing);
  names("unexpected", unexpected);
  out += "\"mismatched\":[";
  for (size_t i = 0; i < mismatched.size(); ++i) {
    const Mismatch& m = mismatched[i];
    if (i > 0) out += ",";
    out += "{\"name\":";
    AppendJsonString(&out, m.name);
    out += ",\"stored_name\":";
    AppendJsonString(&out, m.stored_name);
    out += ",\"checkpoint\":";
    AppendJsonString(&out, m.checkpoint);
    out += ",\"target\":";
    AppendJsonString(&out, m.target);
    out += ",\"error\":";
    out += m.is_error ? "true" : "false";
    out += "}";
  }
  out += "],\"renamed\":[";
  for (size_t i = 0; i < renamed.size(); ++i) {
    if (i > 0) out += ",";
    out += "{\"from\":";
    AppendJsonString(&out, renamed[i].from);
    out += ",\"to\":";
    AppendJsonString(&out, renamed[i].to);
    out += "}";
  }
  out += "],\"auto_prefix\":";
  AppendJsonString(&out, auto_prefix);
}

}  // namespace shardload
