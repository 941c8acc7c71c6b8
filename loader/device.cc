// loader/device.cc — Device parsing and the pattern → device map (see device.h).
#include "loader/device.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <set>
#include <vector>

namespace shardload {
namespace {

constexpr std::string_view kRegexPrefix = "re:";
// kMaxRegexNameBytes: std::regex recurses per character; longer names would risk the
// stack (the same bound as rename rules, loader/match.h).
constexpr size_t kMaxRegexNameBytes = 1024;

Status InvalidDevice(std::string_view text) {
  return InvalidArgumentError("invalid device '" + std::string(text) +
                              "': expected cpu, cuda or cuda:N");
}

// GlobMatch: whole-string glob match, `*` any run, `?` one character. Iterative with
// one backtrack point, so it is linear-ish and never recurses.
bool GlobMatch(std::string_view pattern, std::string_view name) {
  size_t p = 0;
  size_t n = 0;
  size_t star = std::string_view::npos;  // position of the last `*` in pattern
  size_t star_n = 0;                     // name position that `*` is matched up to
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n]) &&
        pattern[p] != '*') {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_n = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// EntryContinues: whether a device-map entry cut at a comma is a regex pattern with a
// bracket still open there ('{', '[' or '(' not yet closed, escapes and classes
// respected) or ending in an escaping '\', so the comma belongs to the regex
// ("re:x{1,2}=cuda:1", "re:a\,b=cpu"). Anything else
// ends at the comma as before, so a typo such as "re:a=cuda:o,b=cpu" stays an error.
bool EntryContinues(std::string_view entry) {
  if (entry.substr(0, kRegexPrefix.size()) != kRegexPrefix) return false;
  int braces = 0;
  int parens = 0;
  bool in_class = false;
  for (size_t i = kRegexPrefix.size(); i < entry.size(); ++i) {
    const char c = entry[i];
    if (c == '\\') {
      if (i + 1 == entry.size()) return true;  // "\," : an escaped comma
      ++i;  // the next character is literal
    } else if (in_class) {
      if (c == ']') in_class = false;
    } else if (c == '[') {
      in_class = true;
    } else if (c == '{') {
      ++braces;
    } else if (c == '}') {
      braces = std::max(0, braces - 1);
    } else if (c == '(') {
      ++parens;
    } else if (c == ')') {
      parens = std::max(0, parens - 1);
    }
  }
  return in_class || braces > 0 || parens > 0;
}

}  // namespace

Device Device::Normalized() const {
  return is_cpu() ? Device{Kind::kCpu, 0} : *this;
}

std::string Device::ToString() const {
  if (is_cpu()) return "cpu";
  return "cuda:" + std::to_string(index);
}

Result<Device> ParseDevice(std::string_view text) {
  if (text == "cpu") return Device{Device::Kind::kCpu, 0};
  if (text == "cuda") return Device{Device::Kind::kCuda, 0};
  constexpr std::string_view kCudaColon = "cuda:";
  constexpr std::string_view kCpuColon = "cpu:";
  Device::Kind kind = Device::Kind::kCuda;
  std::string_view digits;
  if (text.size() > kCudaColon.size() && text.substr(0, kCudaColon.size()) == kCudaColon) {
    digits = text.substr(kCudaColon.size());
  } else if (text.size() > kCpuColon.size() && text.substr(0, kCpuColon.size()) == kCpuColon) {
    kind = Device::Kind::kCpu;  // torch accepts "cpu:N"; there is one host memory
    digits = text.substr(kCpuColon.size());
  } else {
    return InvalidDevice(text);
  }
  // Decimal digits only, no sign, no leading zero (as PyTorch), fits an int.
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      (digits.size() > 1 && digits[0] == '0')) {
    return InvalidDevice(text);
  }
  int index = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  if (ec != std::errc() || ptr != digits.data() + digits.size()) return InvalidDevice(text);
  return Device{kind, index}.Normalized();
}

bool RegexHasNestedQuantifiers(std::string_view p) {
  // unbounded_at: the length of an unbounded quantifier at p[j] ('*', '+', "{n,}"),
  // else 0.
  auto unbounded_at = [&](size_t j) -> size_t {
    if (j >= p.size()) return 0;
    if (p[j] == '*' || p[j] == '+') return 1;
    if (p[j] == '{') {
      const size_t close = p.find('}', j);
      if (close == std::string_view::npos) return 0;
      const std::string_view body = p.substr(j + 1, close - j - 1);
      if (!body.empty() && body.back() == ',') return close - j + 1;
    }
    return 0;
  };
  std::vector<bool> open = {false};  // per open group: holds an unbounded quantifier
  size_t i = 0;
  while (i < p.size()) {
    bool atom_holds_unbounded = false;
    const char c = p[i];
    if (c == '\\') {
      i += 2;
    } else if (c == '[') {  // a class: skip to its ']' (a ']' first is literal)
      size_t j = i + 1;
      if (j < p.size() && p[j] == '^') ++j;
      if (j < p.size() && p[j] == ']') ++j;
      while (j < p.size() && p[j] != ']') j += p[j] == '\\' ? 2 : 1;
      i = j + 1;
    } else if (c == '(') {
      open.push_back(false);
      ++i;
      continue;
    } else if (c == ')') {
      atom_holds_unbounded = open.back();
      if (open.size() > 1) open.pop_back();
      ++i;
    } else if (c == '|') {
      ++i;
      continue;
    } else {
      ++i;
    }
    if (const size_t q = unbounded_at(i); q > 0) {
      if (atom_holds_unbounded) return true;
      open.back() = true;
      i += q;
    } else {
      if (atom_holds_unbounded) open.back() = true;
      if (i < p.size() && p[i] == '{') {  // a bounded quantifier: skip it
        const size_t close = p.find('}', i);
        if (close != std::string_view::npos) i = close + 1;
      }
    }
    if (i < p.size() && p[i] == '?') ++i;  // optional, or a lazy quantifier's '?'
  }
  return false;
}

Status DeviceMap::AddRule(std::string_view pattern, Device device) {
  Rule rule;
  rule.pattern = std::string(pattern);
  rule.device = device.Normalized();
  if (pattern.substr(0, kRegexPrefix.size()) != kRegexPrefix) {
    if (pattern.find('=') != std::string_view::npos) {
      return InvalidArgumentError("invalid device-map pattern '" + std::string(pattern) +
                                  "': a glob pattern cannot hold '=' (a typo such as "
                                  "'w==cpu'?); use re: for such names");
    }
    if (pattern.find_first_of("[]") != std::string_view::npos) {
      return InvalidArgumentError("invalid device-map pattern '" + std::string(pattern) +
                                  "': globs match '*' and '?' only; write a character class "
                                  "as re:");
    }
  } else {
    if (RegexHasNestedQuantifiers(pattern.substr(kRegexPrefix.size()))) {
      return InvalidArgumentError("invalid device-map pattern '" + std::string(pattern) +
                                  "': " + std::string(kNestedQuantifiersRefusal));
    }
    try {
      rule.re = std::regex(std::string(pattern.substr(kRegexPrefix.size())),
                           std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return InvalidArgumentError("invalid device-map pattern '" + std::string(pattern) +
                                  "': " + e.what());
    }
  }
  rules_.push_back(std::move(rule));
  return OkStatus();
}

size_t DeviceMap::FirstRule(std::string_view name) const {
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& rule = rules_[i];
    std::string_view pattern = rule.pattern;
    if (pattern.substr(0, kRegexPrefix.size()) == kRegexPrefix) {
      if (name.size() > kMaxRegexNameBytes) continue;  // see device.h
      try {
        if (std::regex_match(name.begin(), name.end(), rule.re)) return i;
      } catch (const std::regex_error&) {
        // The engine gave up (complexity limits): the rule does not match this name.
      }
    } else if (GlobMatch(pattern, name)) {
      return i;
    }
  }
  return rules_.size();
}

Device DeviceMap::Resolve(std::string_view name) const {
  const size_t i = FirstRule(name);
  return i < rules_.size() ? rules_[i].device : default_;
}

std::vector<std::string> DeviceMap::UnusedRules(std::span<const std::string> names) const {
  std::vector<bool> used(rules_.size(), false);
  for (const std::string& name : names) {
    const size_t i = FirstRule(name);
    if (i < rules_.size()) used[i] = true;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < rules_.size(); ++i) {
    if (!used[i]) out.push_back(rules_[i].pattern + "=" + rules_[i].device.ToString());
  }
  return out;
}

std::vector<Device> DeviceMap::Devices() const {
  std::set<Device> all;
  all.insert(default_);
  for (const Rule& rule : rules_) all.insert(rule.device);
  return std::vector<Device>(all.begin(), all.end());
}

Result<DeviceMap> ParseDeviceMap(std::string_view text) {
  if (Trim(text).empty()) return InvalidArgumentError("empty device map");
  DeviceMap map;
  bool default_set = false;
  size_t start = 0;  // where the current entry starts
  size_t pos = 0;    // where to look for its ending comma
  while (true) {
    size_t comma = text.find(',', pos);
    std::string_view raw = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    std::string_view entry = Trim(raw);
    if (comma != std::string_view::npos && EntryContinues(entry)) {
      pos = comma + 1;  // a comma inside a regex ("re:x{1,2}=cuda:1")
      continue;
    }
    auto bad_entry = [&](std::string_view why) {
      return InvalidArgumentError("invalid device-map entry '" + std::string(entry) +
                                  "': " + std::string(why));
    };
    // bad_device: a device that does not parse; only a regex's open '[', '{' or '('
    // keeps a comma inside an entry, so one there is what went wrong.
    auto bad_device = [&](std::string_view device_text, const Status& why) {
      if (device_text.find(',') == std::string_view::npos) return bad_entry(why.message());
      return bad_entry(why.message() + " (a re: pattern's '[', '{' or '(' left open took " +
                       "the comma into this entry)");
    };
    if (entry.empty()) return bad_entry("empty entry");
    // A device never contains '=', so the last '=' separates pattern from device
    // (a regex pattern may contain '=' itself).
    size_t eq = entry.rfind('=');
    if (eq == std::string_view::npos) {
      Result<Device> device = ParseDevice(entry);
      if (!device.ok()) return bad_device(entry, device.status());
      if (default_set) return bad_entry("the default device is already set");
      map.set_default(*device);
      default_set = true;
    } else {
      std::string_view pattern = Trim(entry.substr(0, eq));
      std::string_view device_text = Trim(entry.substr(eq + 1));
      if (pattern.empty()) return bad_entry("empty pattern");
      Result<Device> device = ParseDevice(device_text);
      if (!device.ok()) return bad_device(device_text, device.status());
      Status added = map.AddRule(pattern, *device);
      if (!added.ok()) return bad_entry(added.message());
    }
    if (comma == std::string_view::npos) break;
    start = pos = comma + 1;
  }
  return map;
}

}  // namespace shardload
