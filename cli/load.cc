// `shardload load PATH [options]`: load a checkpoint, print the match report and the
// throughput.
//
// Without --expect every stored tensor is loaded into a loader-owned arena (load_file
// style); with --expect SPEC.json the targets are those of the spec (a JSON array of
// {"name","dtype","shape"} or the output of `inspect --json`), loaded the same way,
// and matched load_state_dict style (strict unless --non-strict). Exit status: 0 on
// success, 1 on a failed match (strict missing/unexpected keys, any size or dtype
// mismatch) or a load error, 2 on bad usage. --json prints exactly one object, also
// on failure:
//   {"matched":N,"missing":[...],"unexpected":[...],"mismatched":[{"name","checkpoint",
//    "target"}],"renamed":[{"from","to"}],"devices":{"cpu":{"tensors","bytes"},...},
//    "bytes":N,"seconds":S,"gbps":G,"error":null|{"code","message"}}
// lists sorted. A progress bar goes to stderr when it is a terminal.
#include <simdjson.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cli/backend.h"
#include "cli/commands.h"
#include "cli/load_common.h"
#include "format/dtype.h"
#include "format/text.h"
#include "loader/checkpoint.h"
#include "loader/loader.h"
#include "loader/match.h"

namespace shardload::cli {
namespace {

constexpr char kLoadUsage[] =
    "usage: shardload load PATH [options]\n"
    "  --device cpu|cuda|cuda:N   default device (default cpu; cpu:N is cpu)\n"
    "  --device-map SPEC          'PATTERN=DEVICE,...,DEFAULT' (first match wins; PATTERN a\n"
    "                             glob, or re:REGEX)\n"
    "  --strict | --non-strict    fail on missing/unexpected keys (default strict)\n"
    "  --expect SPEC.json         targets: [{\"name\",\"dtype\",\"shape\"}] or inspect --json output\n"
    "  --rename RULE              's/REGEX/REPL/', 'strip:PREFIX' or 'add:PREFIX' (repeatable)\n"
    "  --auto-prefix              reconcile one common prefix (module., model.) when keys differ\n"
    "  --alias TARGET=STORED      fill TARGET from stored tensor STORED (tied weights; repeatable)\n"
    "  --allow-cast               F32/F16/BF16 targets may load tensors of another of those dtypes\n"
    "  --threads N                reader threads (default: hardware threads)\n"
    "  --io auto|pread|mmap|direct|uring  how files are read (default auto)\n"
    "  --slots N                  staging slots in the ring (default 16)\n"
    "  --slot-size SIZE           bytes per slot, a multiple of 4096 (default 16MiB minus 8KiB)\n"
    "  --verify                   check recorded XXH3 hashes on the bytes read\n"
    "  --json                     one JSON object on stdout\n";

struct LoadArgs {
  std::string path;
  std::string expect;
  bool json = false;
  LoadOptions options;
};

Result<LoadArgs> ParseLoadArgs(const Args& args) {
  LoadArgs a;
  FlagReader f(args);
  bool have_device = false, have_map = false;
  while (f.Next()) {
    if (f.IsPositional()) {
      if (!a.path.empty()) return InvalidArgumentError("unexpected argument '" + f.arg() + "'");
      a.path = f.arg();
    } else if (f.Is("--json")) {
      a.json = true;
    } else if (f.Is("--verify")) {
      a.options.verify = true;
    } else if (f.Is("--strict")) {
      a.options.match.strict = true;
    } else if (f.Is("--non-strict")) {
      a.options.match.strict = false;
    } else if (f.Is("--device")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      SL_ASSIGN_OR_RETURN(Device d, ParseDevice(v));
      if (have_map) return InvalidArgumentError("--device and --device-map cannot be combined");
      a.options.devices = DeviceMap(d);
      have_device = true;
    } else if (f.Is("--device-map")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      if (have_device) return InvalidArgumentError("--device and --device-map cannot be combined");
      SL_ASSIGN_OR_RETURN(a.options.devices, ParseDeviceMap(v));
      have_map = true;
    } else if (f.Is("--expect")) {
      SL_ASSIGN_OR_RETURN(a.expect, f.Value());
    } else if (f.Is("--rename")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      SL_ASSIGN_OR_RETURN(RenameRule rule, ParseRenameRule(v));
      a.options.match.renames.push_back(std::move(rule));
    } else if (f.Is("--auto-prefix")) {
      a.options.match.auto_prefix = true;
    } else if (f.Is("--allow-cast")) {
      a.options.match.allow_cast = true;
    } else if (f.Is("--alias")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
        return InvalidArgumentError("invalid --alias '" + v + "': expected TARGET=STORED");
      }
      a.options.match.aliases.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else if (f.Is("--threads")) {
      SL_ASSIGN_OR_RETURN(int64_t n, f.IntValue(0, 256));
      a.options.threads = static_cast<int>(n);
    } else if (f.Is("--io")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      SL_ASSIGN_OR_RETURN(a.options.io, ParseIoMode(v));
    } else if (Result<bool> sink = ParseSinkFlag(f, &a.options.sink); !sink.ok()) {
      return sink.status();
    } else if (!*sink) {
      return InvalidArgumentError("unknown option '" + f.arg() + "'");
    }
  }
  if (a.path.empty()) return InvalidArgumentError("missing PATH");
  return a;
}

// ParseExpect: targets from a JSON array of {"name","dtype","shape"}, or from an object
// with a "tensors" array (the output of `inspect --json`).
Result<std::vector<Target>> ParseExpect(const std::string& path) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.load(path).get(root); err) {
    // simdjson says only "Error reading the file."; errno says why (fopen's).
    if (int e = errno; err == simdjson::IO_ERROR && e != 0) return ErrnoToStatus(e, path);
    return InvalidArgumentError(path + ": " + simdjson::error_message(err));
  }
  simdjson::dom::array list;
  if (root.is_object()) {
    if (root["tensors"].get_array().get(list)) {
      return InvalidArgumentError(path + ": expected an array of tensors or an object with a \"tensors\" array");
    }
  } else if (root.get_array().get(list)) {
    return InvalidArgumentError(path + ": expected an array of tensors or an object with a \"tensors\" array");
  }
  std::vector<Target> targets;
  size_t i = 0;
  for (simdjson::dom::element e : list) {
    std::string where = path + ": tensors[" + std::to_string(i++) + "]";
    std::string_view name, dtype;
    simdjson::dom::array shape;
    if (e["name"].get_string().get(name)) return InvalidArgumentError(where + ": \"name\" must be a string");
    if (e["dtype"].get_string().get(dtype)) return InvalidArgumentError(where + ": \"dtype\" must be a string");
    if (e["shape"].get_array().get(shape)) return InvalidArgumentError(where + ": \"shape\" must be an array");
    Target t;
    t.name = std::string(name);
    Result<Dtype> d = DtypeFromName(dtype);
    if (!d.ok()) return d.status().WithPrefix(where);
    t.dtype = *d;
    for (simdjson::dom::element dim : shape) {
      uint64_t v;
      if (dim.get_uint64().get(v)) return InvalidArgumentError(where + ": shape entries must be non-negative integers");
      t.shape.push_back(v);
    }
    targets.push_back(std::move(t));
  }
  std::set<std::string_view> names;
  for (size_t k = 0; k < targets.size(); ++k) {
    if (!names.insert(targets[k].name).second) {
      return InvalidArgumentError(path + ": tensors[" + std::to_string(k) + "]: name " +
                                  QuoteForMessage(targets[k].name, '\'') + " is given twice");
    }
  }
  return targets;
}

// Placement: tensors and bytes per device of a loaded checkpoint, in device order (cpu,
// then cuda:0, cuda:1, ..., cuda:10: Device's ordering, not the names').
struct Placed {
  size_t tensors = 0;
  uint64_t bytes = 0;
};
std::map<Device, Placed> Placement(const LoadedCheckpoint* loaded) {
  std::map<Device, Placed> out;
  if (loaded == nullptr) return out;
  for (const LoadedTensor& t : loaded->tensors) {
    Placed& p = out[t.device];
    ++p.tensors;
    p.bytes += t.bytes;
  }
  return out;
}

std::string ReportJson(const MatchReport& r, const LoadedCheckpoint* loaded, const Status& error) {
  const LoadStats* stats = loaded;
  std::string o = "{\"matched\":" + std::to_string(r.matched.size()) + ",\"missing\":[";
  for (size_t i = 0; i < r.missing.size(); ++i) o += (i ? "," : "") + JsonQuoted(r.missing[i]);
  o += "],\"unexpected\":[";
  for (size_t i = 0; i < r.unexpected.size(); ++i) o += (i ? "," : "") + JsonQuoted(r.unexpected[i]);
  o += "],\"mismatched\":[";
  for (size_t i = 0; i < r.mismatched.size(); ++i) {
    const Mismatch& m = r.mismatched[i];
    o += (i ? "," : "") + std::string("{\"name\":") + JsonQuoted(m.name) +
         ",\"checkpoint\":" + JsonQuoted(m.checkpoint) + ",\"target\":" + JsonQuoted(m.target) + "}";
  }
  o += "],\"renamed\":[";
  for (size_t i = 0; i < r.renamed.size(); ++i) {
    o += (i ? "," : "") + std::string("{\"from\":") + JsonQuoted(r.renamed[i].from) +
         ",\"to\":" + JsonQuoted(r.renamed[i].to) + "}";
  }
  o += "],\"devices\":{";
  bool first = true;
  for (const auto& [device, placed] : Placement(loaded)) {
    o += (first ? "" : ",") + JsonQuoted(device.ToString()) + ":{\"tensors\":" +
         std::to_string(placed.tensors) + ",\"bytes\":" + std::to_string(placed.bytes) + "}";
    first = false;
  }
  char nums[160];
  std::snprintf(nums, sizeof nums, "},\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.3f,\"error\":",
                static_cast<unsigned long long>(stats ? stats->delivered_bytes : 0),
                stats ? stats->seconds : 0.0, stats ? stats->gbps() : 0.0);
  o += nums;
  if (error.ok()) {
    o += "null";
  } else {
    o += StatusJson(error);
  }
  return o + "}\n";
}

int Fail(const LoadArgs& a, const MatchReport& report, const Status& s) {
  if (a.json) std::cout << ReportJson(report, nullptr, s);
  PrintError("load", s);
  return 1;
}

}  // namespace

int RunLoad(const Args& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << kLoadUsage;
      return 0;
    }
  }
  Result<LoadArgs> parsed = ParseLoadArgs(args);
  if (!parsed.ok()) return UsageError("load", parsed.status(), kLoadUsage, args);
  LoadArgs& a = *parsed;
  MatchReport empty;
  for (const Device& d : a.options.devices.Devices()) {
    if (d.is_cuda()) a.options.backend = CliBackend();
  }
  Result<Checkpoint> ckpt = Checkpoint::Open(a.path);
  if (!ckpt.ok()) return Fail(a, empty, ckpt.status());
  for (const std::string& w : ckpt->warnings()) std::cerr << "shardload load: warning: " << w << "\n";

  std::vector<Target> targets;
  if (!a.expect.empty()) {
    Result<std::vector<Target>> t = ParseExpect(a.expect);
    if (!t.ok()) return Fail(a, empty, t.status());
    targets = std::move(*t);
  }
  // Match first, so that a failed match still prints its whole report.
  if (targets.empty()) {
    Result<std::vector<Target>> all = CheckpointTargets(*ckpt, a.options.match);
    if (!all.ok()) return Fail(a, empty, all.status());
    targets = std::move(*all);
  }
  std::span<const Target> match_targets = targets;
  Result<MatchReport> report = Match(ckpt->tensors(), ckpt->metadata(), match_targets, a.options.match);
  if (!report.ok()) return Fail(a, empty, report.status());
  if (!report->status.ok()) {
    if (a.json) {
      std::cout << ReportJson(*report, nullptr, report->status);
    } else {
      std::cout << report->ToString();
    }
    PrintError("load", report->status);
    return 1;
  }

  if (!a.json) a.options.progress = MakeProgressBar();
  Result<LoadedCheckpoint> loaded = LoadAll(*ckpt, a.options, match_targets);
  if (!loaded.ok()) return Fail(a, *report, loaded.status());
  if (a.json) {
    std::cout << ReportJson(loaded->report, &*loaded, OkStatus());
  } else {
    std::cout << loaded->report.ToString();
    std::printf("loaded %zu tensors, %.3f GB in %.3f s: %.2f GB/s (io %s, %d threads)\n",
                loaded->tensors.size(), loaded->delivered_bytes / 1e9, loaded->seconds,
                loaded->gbps(), std::string(IoModeName(loaded->io)).c_str(), loaded->threads);
    std::string where = "placed:";
    for (const auto& [device, placed] : Placement(&*loaded)) {
      where += " " + device.ToString() + " " + std::to_string(placed.tensors) + " tensors " +
               std::to_string(placed.bytes) + " bytes;";
    }
    if (where.back() == ';') where.pop_back();
    std::cout << where << "\n";
  }
  return 0;
}

}  // namespace shardload::cli
