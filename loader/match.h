// loader/match.h — key matching with PyTorch `load_state_dict` semantics.
//
// Provides `Target` (one tensor a model expects), `RenameRule` (prefix strip/add and
// sed-style regex rewrites of checkpoint names), `MatchOptions`, `MatchReport` and
// `Match`, a pure function from a checkpoint catalog and a list of targets to a report
// of what matched, what is missing, unexpected or mismatched, and whether the load may
// go on. No I/O: everything is testable in memory.
//
//   std::vector<Target> targets = {{"embed.weight", Dtype::kF32, {100, 8}},
//                                  {"lm_head.weight", Dtype::kF32, {100, 8}}};
//   MatchOptions options;
//   SL_ASSIGN_OR_RETURN(RenameRule strip, ParseRenameRule("s/^module\\.//"));
//   options.renames.push_back(strip);
//   options.aliases.push_back({"lm_head.weight", "embed.weight"});   // tied
//   SL_ASSIGN_OR_RETURN(MatchReport report,
//                       Match(catalog, metadata, targets, options));
//   if (!report.status.ok()) return report.status;   // PyTorch-style message
//   // report.matched: stored index → target index pairs, ready for MakePlan.
//
// Semantics (mirrors torch.nn.Module.load_state_dict and safetensors load_model):
//   1. Every checkpoint name goes through `renames` in order. Two checkpoint names
//      that end up equal are a collision: the load fails naming both (neither is
//      matched), even when not strict — unlike torch's consume_prefix, which silently
//      keeps one.
//   2. A target whose name equals a (renamed) checkpoint name matches it.
//   3. With `auto_prefix`, targets still unmatched may match a checkpoint name that
//      differs by one common prefix (see MatchOptions::auto_prefix).
//   4. Targets still unmatched may be filled through an alias (tied weights).
//   5. Each matched pair must agree in shape (else "size mismatch", an error in both
//      modes) and dtype (else an error unless `allow_cast` and both are F32/F16/BF16).
//   6. Unused checkpoint tensors are unexpected; unmatched targets are missing. In
//      strict mode (default) either fails the load; otherwise they are only reported.
// Not mirrored: torch's legacy rule that loads a 1-dim input into a 0-dim parameter
// (torch 2.x: a [1] input; 1.x: element 0 of any [N]; here a size mismatch, while the
// Python load_model hands such entries to torch), and torch's silent overwrite on
// prefix collisions.
#ifndef SHARDLOAD_LOADER_MATCH_H_
#define SHARDLOAD_LOADER_MATCH_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "format/dtype.h"
#include "format/shape.h"
#include "format/status.h"
#include "loader/device.h"
#include "loader/stored_tensor.h"

namespace shardload {

// Target: one tensor a model expects, like one entry of module.state_dict().
// `device` unset means the DeviceMap decides. `data` is caller-owned destination memory
// of TensorByteSize(dtype, shape) bytes on `device` (it must outlive the load), or null
// to have the loader place the tensor in an arena.
struct Target {
  std::string name;
  Dtype dtype = Dtype::kF32;
  Shape shape;
  std::optional<Device> device;
  void* data = nullptr;
};

// kMaxRegexNameBytes: the longest name a regex rule is applied to. std::regex
// recurses once per input character, so an unbounded name (tensor names come from
// untrusted headers) could overflow the stack; real names are far shorter.
inline constexpr size_t kMaxRegexNameBytes = 1024;

// RenameRule: one rewrite of checkpoint tensor names. Value type; copies share the
// compiled regex, which is immutable, so rules may be used from several threads.
struct RenameRule {
  enum class Kind {
    kStripPrefix,  // remove `text` from names that start with it; others unchanged
    kAddPrefix,    // put `text` in front of every name
    kRegex,        // ECMAScript regex `text`; replace the first match (all with `global`)
  };
  Kind kind = Kind::kStripPrefix;
  std::string text;         // the prefix, or the regex source
  std::string replacement;  // kRegex only, in std::regex_replace syntax ($1, $&, $$)
  bool global = false;      // kRegex only: replace every match, not just the first
  std::shared_ptr<const std::regex> regex;  // kRegex only: compiled `text`

  // StripPrefix / AddPrefix: the prefix rules. Never fail.
  static RenameRule StripPrefix(std::string prefix);
  static RenameRule AddPrefix(std::string prefix);

  // Apply: `name` rewritten by this rule. Errors: invalid_argument for a kRegex rule
  // without a compiled regex, or for a name longer than kMaxRegexNameBytes ("name of
  // N bytes is longer than the 1024-byte limit for regex rules"); internal when the
  // regex engine gives up on `name`.
  Result<std::string> Apply(std::string_view name) const;

  // ToString: "strip:PREFIX", "add:PREFIX" or the sed form "s/REGEX/REPLACEMENT/[g]"
  // (replacement shown in std::regex_replace syntax).
  std::string ToString() const;
};

// ParseRenameRule: one rule from text, in one of three forms:
//   "s/REGEX/REPLACEMENT/" or ".../g"  sed-style substitute. Any character after `s`
//       is the delimiter; "\<delim>" stands for the delimiter itself in both parts.
//       REGEX is ECMAScript (not POSIX BRE). In REPLACEMENT, "\1".."\9" are groups,
//       "&" is the whole match, "\&" a literal '&', "\\" a backslash.
//       Example: "s/^module\\.//" (strip DDP's "module."), "s/\\.gamma$/.weight/".
//   "strip:PREFIX"  same as RenameRule::StripPrefix(PREFIX)
//   "add:PREFIX"    same as RenameRule::AddPrefix(PREFIX)
// Errors: invalid_argument "invalid rename rule 'EXPR': <why>" for anything else
// (missing delimiter, unknown flag, empty regex, a malformed regex, a regex with nested
// quantifiers (RegexHasNestedQuantifiers), an empty prefix).
Result<RenameRule> ParseRenameRule(std::string_view expr);

// MatchOptions: how checkpoint names are reconciled with targets. The key-matching
// defaults are torch's load_state_dict(strict=True) behaviour plus safetensors'
// metadata aliases; dtypes are stricter than torch (see allow_cast).
struct MatchOptions {
  // strict: missing or unexpected keys fail the load (default true, as torch).
  bool strict = true;
  // renames: applied in order to every checkpoint name (default none).
  std::vector<RenameRule> renames;
  // auto_prefix: opt-in (default false). When some targets stay unmatched after
  // renames, try each candidate prefix P ("module.", "model.", then the first one to
  // three dotted components of the unmatched checkpoint names and of the unmatched
  // target names that at least two names share, the eight most frequent of each side)
  // with each of two operations — strip P from a checkpoint name, or add P to it. The
  // (operation, P) that matches the most still unmatched targets wins (ties: the order
  // just given, strip before add); a computed P must match at least two (one leftover
  // "final_norm.scale" must not pair with an unrelated "scale"), "module." and
  // "model." one. It is applied only to names it makes match, recorded in
  // MatchReport::auto_prefix, and its rewrites are listed in `renamed`.
  bool auto_prefix = false;
  // aliases: target name → stored name (tied weights). A target with no checkpoint
  // tensor of its own is filled from the aliased one. The stored name is looked up
  // among renamed checkpoint names first, then original ones. Entries whose target
  // is not in the model are ignored. Default none.
  std::vector<std::pair<std::string, std::string>> aliases;
  // aliases_from_metadata: also use the alias entries safetensors `save_model` writes
  // to __metadata__ (removed name → kept name). An entry counts only when its value
  // is a stored tensor name and its key is not; its key goes through the renames
  // (an entry whose key a rule cannot be applied to is ignored), and the target's
  // shape equals the stored tensor's (otherwise the target stays missing: a model
  // may tie a view of part of the kept tensor).
  // Caller aliases win over metadata ones for the same target. Default true.
  bool aliases_from_metadata = true;
  // allow_cast: accept dtype differences among F32, F16 and BF16 (the data is
  // converted on the way); default false, where any dtype difference is an error, in
  // strict and non-strict matching alike. Unlike torch, whose copy_ converts any pair
  // (an I64 checkpoint value into an F32 parameter loads there), other pairs are never
  // converted; the Python package's load_model converts them through torch.
  bool allow_cast = false;
};

// MatchedPair: one stored tensor feeding one target. Several pairs may share `stored`
// (tied weights); `target` is unique.
struct MatchedPair {
  uint32_t stored = 0;       // index into the catalog passed to Match
  uint32_t target = 0;       // index into the targets passed to Match
  std::string stored_name;   // original checkpoint name
  std::string target_name;
  bool via_rename = false;   // matched only because renames/auto_prefix rewrote the name
  bool via_alias = false;    // matched through an alias (tied weight)
  Dtype stored_dtype = Dtype::kU8;
  Dtype dtype = Dtype::kU8;  // final dtype (the target's); differs only for a cast
};

// Mismatch: a name present on both sides whose shape or dtype disagree, or an
// accepted cast (`is_error` false). Strings are "F32[10, 5]".
struct Mismatch {
  std::string name;         // target name
  std::string stored_name;  // original checkpoint name
  std::string checkpoint;   // stored dtype and shape
  std::string target;       // target dtype and shape
  bool is_error = true;     // false: an allowed cast, also listed in `matched`
};

// Renamed: a checkpoint name rewritten by renames or auto_prefix.
struct Renamed {
  std::string from;
  std::string to;
};

// MatchReport: the outcome of Match. All lists are sorted: matched and mismatched by
// target name, missing and unexpected by name, renamed by `from`. `unexpected` uses
// names after renames (as torch reports keys of the renamed state_dict).
// `status` is OK when the load may go on, else invalid_argument with the PyTorch-style
// message "Error(s) in loading state_dict: <msg> <msg> ...", where the messages are,
// in order: rename collisions ('rename rules map both "a" and "b" to "c".'), then
// 'Missing key(s) in state_dict: "c".' and 'Unexpected key(s) in state_dict: "a",
// "b".' (strict only; torch's order), then one per erroneous mismatch, by target name:
// 'size mismatch for k: copying a param with shape [10, 5] from checkpoint, the shape
// in current model is [10, 4].' or 'dtype mismatch for k: copying a param with dtype
// F16 from checkpoint, the dtype in current model is I32.' (ending instead in
// '; allow_cast would convert it.' when both dtypes are among F32/F16/BF16). Names are quoted with
// control characters, '"' and '\' escaped.
struct MatchReport {
  Status status;
  std::vector<MatchedPair> matched;
  std::vector<std::string> missing;
  std::vector<std::string> unexpected;
  std::vector<Mismatch> mismatched;
  std::vector<Renamed> renamed;
  std::string auto_prefix;  // "" or the chosen rewrite: "strip:module." / "add:model."

  // ToString: a multi-line human summary (counts, then each list; allowed casts appear
  // among the matched pairs as "(cast A -> B)", and "mismatched" counts and lists only
  // the failing entries).
  std::string ToString() const;
  // ToJson: {"ok":bool,"error":{"code","message"}|null,"matched":[{"stored","target",
  // "via_rename","via_alias","stored_dtype","dtype"}],"missing":[..],"unexpected":[..],
  // "mismatched":[{"name","stored_name","checkpoint","target","error"}],
  // "renamed":[{"from","to"}],"auto_prefix":".."}. Names are JSON-escaped (bytes
  // that are not valid UTF-8 become \u00XX).
  std::string ToJson() const;
  // AppendListsJson: append ToJson's members from "missing" to "auto_prefix", as
  // `"missing":[..],...,"auto_prefix":".."` (no braces, no leading comma), for callers
  // that embed them in an object of their own (`shardload load --json`).
  void AppendListsJson(std::string* out) const;
};

// Match: reconcile `stored` (a checkpoint catalog) and its `metadata` with `targets`
// under `options`. Pure and deterministic; thread-safe.
// Returns an error Result only for invalid input, all invalid_argument:
//   "duplicate target name 'x'", "duplicate stored tensor name 'x'",
//   "target 'x': <TensorByteSize error>", "stored tensor 'x': N bytes do not match
//   F32[3] (12 bytes)", "alias for 'x' is given twice", "empty alias name",
//   "rename rule 'R' on 'x': ..." (a rule that cannot be applied).
// A failed match is a report whose `status` is not OK.
Result<MatchReport> Match(std::span<const StoredTensor> stored,
                          const std::map<std::string, std::string>& metadata,
                          std::span<const Target> targets, const MatchOptions& options);

// IsCastable: whether allow_cast accepts converting `from` into `to` (both in
// {F32, F16, BF16}; equal dtypes need no cast and return true).
bool IsCastable(Dtype from, Dtype to);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_MATCH_H_
