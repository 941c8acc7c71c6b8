// loader/device.h — where a tensor goes, written the way PyTorch writes it.
//
// Provides `Device` ("cpu", "cuda", "cuda:1") and `DeviceMap` (name patterns → device,
// first match wins, then the default), as `map_location` / `device_map` users expect.
//
//   Result<Device> d = ParseDevice("cuda:1");        // {kCuda, 1}
//   Result<DeviceMap> m = ParseDeviceMap("lm_head.*=cpu,*=cuda:0");
//   Device where = m->Resolve("model.layers.0.mlp.up_proj.weight");   // cuda:0
#ifndef SHARDLOAD_LOADER_DEVICE_H_
#define SHARDLOAD_LOADER_DEVICE_H_

#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/status.h"

namespace shardload {

// Device: a host or CUDA device. `cuda` without an index means index 0.
struct Device {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;  // 0 for kCpu (the loader normalizes any other, see Normalized)

  bool is_cpu() const { return kind == Kind::kCpu; }
  bool is_cuda() const { return kind == Kind::kCuda; }
  // Normalized: this device with a kCpu index set to 0 (one host memory, as torch's
  // "cpu:1" is the same memory as "cpu"). DeviceMap and MakePlan store devices
  // normalized, so every host tensor of a load lands in one host arena.
  Device Normalized() const;
  // ToString: "cpu" or "cuda:N".
  std::string ToString() const;
  friend bool operator==(const Device&, const Device&) = default;
  friend auto operator<=>(const Device&, const Device&) = default;
};

// ParseDevice: "cpu", "cuda", "cuda:N" (N a non-negative decimal integer without a
// sign or leading zero, as torch), and torch's "cpu:N", which is "cpu".
// Errors: invalid_argument "invalid device 'gpu': expected cpu, cuda or cuda:N".
// Whether the CUDA device exists is checked at load time, not here.
Result<Device> ParseDevice(std::string_view text);

// RegexHasNestedQuantifiers: whether ECMAScript regex `pattern` applies an unbounded
// quantifier ('*', '+', "{n,}") to a group that itself holds one, as "(a+)+" or
// "(.*\.)*weight": std::regex backtracks through such a pattern in time exponential in
// the name's length (seconds for a 25-byte name), and names come from checkpoints.
// Rename rules and device-map regexes with nested quantifiers are refused. A guard,
// not a proof: alternations such as "(a|a)*" can still backtrack badly. Pure function.
bool RegexHasNestedQuantifiers(std::string_view pattern);

// kNestedQuantifiersRefusal: the reason given when RegexHasNestedQuantifiers refuses a
// pattern, for both callers' messages.
inline constexpr std::string_view kNestedQuantifiersRefusal =
    "nested quantifiers can take exponential time; write it without a quantified group "
    "that holds '*' or '+'";

// DeviceMap: ordered (pattern → device) rules plus a default device.
// A pattern is a glob over the whole tensor name (target name, after renames):
// `*` matches any run of characters, `?` one character, everything else itself.
// A pattern that starts with "re:" is an ECMAScript regex for the rest, matched
// against the whole name; a regex rule never matches a name longer than 1024 bytes
// (std::regex recursion is bounded that way; glob rules have no limit).
// Thread safety: const methods may be called concurrently.
class DeviceMap {
 public:
  DeviceMap() = default;
  explicit DeviceMap(Device default_device) : default_(default_device.Normalized()) {}

  // AddRule: append a rule; rules are tried in order. Errors: invalid_argument for a
  // malformed regex ("invalid device-map pattern 're:(': ..."), a regex with nested
  // quantifiers ("... nested quantifiers can take exponential time ..."), and a glob
  // holding '=' (a typo such as "w==cpu") or '[' / ']' (classes need "re:").
  Status AddRule(std::string_view pattern, Device device);
  void set_default(Device d) { default_ = d.Normalized(); }
  const Device& default_device() const { return default_; }

  // Resolve: the device of the first rule whose pattern matches `name`, else default.
  Device Resolve(std::string_view name) const;

  // Devices: every distinct device the map can produce (rules and default), sorted.
  std::vector<Device> Devices() const;

  // UnusedRules: "PATTERN=DEVICE" of each rule that gives none of `names` its device
  // (it matches none of them, or only names an earlier rule takes), in rule order: a
  // pattern with a typo, or a device that a load would never check. Never fails.
  std::vector<std::string> UnusedRules(std::span<const std::string> names) const;

 private:
  // FirstRule: the index of the first rule matching `name`, or rules_.size().
  size_t FirstRule(std::string_view name) const;

  struct Rule {
    std::string pattern;
    std::regex re;
    Device device;
  };
  std::vector<Rule> rules_;
  Device default_;
};

// ParseDeviceMap: "PATTERN=DEVICE,PATTERN=DEVICE,..."; a bare DEVICE entry sets the
// default. Example: "lm_head.*=cpu,cuda:0". A regex pattern may hold commas inside
// brackets or escaped: a comma where a "re:" entry has a '{', '[' or '(' still open, or
// right after a '\', belongs to the regex ("re:layers\.[0-9]{1,2}\..*=cuda:1,cpu" is one
// rule and a default; "re:(a,b)" and "re:a\,b" too); any other comma ends the entry.
// Errors: invalid_argument naming the entry.
Result<DeviceMap> ParseDeviceMap(std::string_view text);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_DEVICE_H_
