// `shardload load PATH [options]`: load a checkpoint, print the match report and the
// throughput.
//
// Without --expect every stored tensor is loaded into a loader-owned arena (load_file
// style); with --expect SPEC.json the targets are those of the spec (a JSON array of
// {"name","dtype","shape"} or the output of `inspect --json`), loaded the same way,
// and matched load_state_dict style (strict unless --non-strict); an empty spec is a
// model without tensors: strict, every stored tensor is unexpected and the load fails;
// non-strict, nothing is loaded. The spec is read to its end, so it may be a pipe
// (--expect <(shardload inspect m --json)). Exit status: 0 on
// success, 1 on a failed match (strict missing/unexpected keys, any size or dtype
// mismatch) or a load error, 2 on bad usage. --json prints exactly one object, also
// on failure:
//   {"matched":N,"missing":[...],"unexpected":[...],"mismatched":[{"name","checkpoint",
//    "target"}],"renamed":[{"from","to"}],"devices":{"cpu":{"tensors","bytes"},...},
//    "bytes":N,"seconds":S,"gbps":G,"io":"pread"|null,"threads":N,"verified":N|null,
//    "error":null|{"code","message"}}
// lists sorted ("io" null and "threads" 0 when no load ran; "verified": with --verify,
// the tensors checked against a recorded XXH3, else null). A progress bar goes to
// stderr when it is a terminal. Warnings on stderr: an --alias whose target is not a
// target or whose stored tensor does not exist, a --device-map rule that places no
// tensor, and --verify on a checkpoint that records no hashes (nothing checked).
#include <fcntl.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
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
    "  --threads N                reader threads, 0..256 (default 0: hardware threads)\n"
    "  --io auto|pread|mmap|direct|uring  how files are read (default auto)\n"
    "  --slots N                  staging slots in the ring (default 16)\n"
    "  --slot-size SIZE           bytes per slot, a multiple of 4096 (default 16MiB minus 8KiB)\n"
    "  --placement aligned|file-phase  host tensors 256-byte aligned (default), or each at\n"
    "                             its file offset's phase mod 256 (faster copy, see docs)\n"
    "  --verify                   check recorded XXH3 hashes on the bytes read\n"
    "  --lenient-index            also load tensors a shard holds but the index does not\n"
    "                             list (a warning each; default: an error)\n"
    "  --json                     one JSON object on stdout\n";

struct LoadArgs {
  std::string path;
  std::string expect;
  bool json = false;
  CatalogOptions catalog;  // --lenient-index: strict_index false
  LoadOptions options;
};

Result<LoadArgs> ParseLoadArgs(const Args& args) {
  LoadArgs a;
  FlagReader f(args);
  bool have_device = false, have_map = false;
  std::string strictness;  // the first of --strict / --non-strict given
  auto set_strictness = [&](bool strict) -> Status {
    SL_RETURN_IF_ERROR(f.NoValue());
    if (!strictness.empty() && strictness != f.arg()) {
      return InvalidArgumentError("--strict and --non-strict are exclusive");
    }
    strictness = f.arg();
    a.options.match.strict = strict;
    return OkStatus();
  };
  while (f.Next()) {
    if (f.IsPositional()) {
      if (!a.path.empty()) return InvalidArgumentError("unexpected argument '" + f.arg() + "'");
      a.path = f.arg();
    } else if (f.Is("--json")) {
      SL_RETURN_IF_ERROR(f.NoValue());
      a.json = true;
    } else if (f.Is("--verify")) {
      SL_RETURN_IF_ERROR(f.NoValue());
      a.options.verify = true;
    } else if (f.Is("--lenient-index")) {
      SL_RETURN_IF_ERROR(f.NoValue());
      a.catalog.strict_index = false;
    } else if (f.Is("--strict") || f.Is("--non-strict")) {
      SL_RETURN_IF_ERROR(set_strictness(f.Is("--strict")));
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
      SL_RETURN_IF_ERROR(f.NoValue());
      a.options.match.auto_prefix = true;
    } else if (f.Is("--allow-cast")) {
      SL_RETURN_IF_ERROR(f.NoValue());
      a.options.match.allow_cast = true;
    } else if (f.Is("--alias")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
        return InvalidArgumentError("invalid --alias '" + v + "': expected TARGET=STORED");
      }
      std::string target = v.substr(0, eq);
      for (const auto& [earlier, stored] : a.options.match.aliases) {
        if (earlier == target) {  // as Match would say, but as the usage error it is
          return InvalidArgumentError("alias for " + QuoteForMessage(target, '\'') +
                                      " is given twice");
        }
      }
      a.options.match.aliases.emplace_back(std::move(target), v.substr(eq + 1));
    } else if (f.Is("--threads")) {
      SL_ASSIGN_OR_RETURN(int64_t n, f.IntValue(0, 256));
      a.options.threads = static_cast<int>(n);
    } else if (f.Is("--io")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      SL_ASSIGN_OR_RETURN(a.options.io, ParseIoMode(v));
    } else if (f.Is("--placement")) {
      SL_ASSIGN_OR_RETURN(std::string v, f.Value());
      SL_ASSIGN_OR_RETURN(a.options.host_placement, ParseArenaPlacement(v));
    } else if (Result<bool> sink = ParseSinkFlag(f, &a.options.sink); !sink.ok()) {
      return sink.status();
    } else if (!*sink) {
      return InvalidArgumentError("unknown option '" + f.arg() + "'");
    }
  }
  if (a.path.empty()) return InvalidArgumentError("missing PATH");
  return a;
}

// kMaxExpectBytes: the largest --expect file read (inspect --json of a 100k-tensor
// checkpoint is about 15 MB).
constexpr size_t kMaxExpectBytes = size_t{1} << 30;

// ReadExpectFile: the whole of `path`, read to its end with read(2), so that a pipe
// (`--expect <(cmd)`), a FIFO (which, like cat, waits for a writer) or a character
// device works as well as a file. Errors name the path: not_found and the other
// errno codes of open/read ("<path>: No such file or directory"), invalid_argument
// "<path>: is a directory" and "<path>: more than 1073741824 bytes".
Result<simdjson::padded_string> ReadExpectFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, path);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, path);
  if (S_ISDIR(st.st_mode)) return InvalidArgumentError(path + ": is a directory");
  std::string data;
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) <= kMaxExpectBytes) {
    data.reserve(static_cast<size_t>(st.st_size));
  }
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoToStatus(errno, path);
    if (n == 0) break;
    if (data.size() + static_cast<size_t>(n) > kMaxExpectBytes) {
      return InvalidArgumentError(path + ": more than " + std::to_string(kMaxExpectBytes) + " bytes");
    }
    data.append(buf, static_cast<size_t>(n));
  }
  return simdjson::padded_string(data);
}

// ParseExpect: targets from a JSON array of {"name","dtype","shape"}, or from an object
// with a "tensors" array (the output of `inspect --json`). An empty list is a model
// with no tensors (every stored tensor is then unexpected).
Result<std::vector<Target>> ParseExpect(const std::string& path) {
  SL_ASSIGN_OR_RETURN(simdjson::padded_string json, ReadExpectFile(path));
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(json).get(root); err) {
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

// ReportJson: the --json object. `stats` and `placement`: what a load did (nullptr and
// empty when it did not run); `verify`: whether --verify was given.
std::string ReportJson(const MatchReport& r, const LoadStats* stats,
                       const std::map<Device, Placed>& placement, bool verify,
                       const Status& error) {
  std::string o = "{\"matched\":" + std::to_string(r.matched.size()) + ",";
  r.AppendListsJson(&o);
  o += ",\"devices\":{";
  bool first = true;
  for (const auto& [device, placed] : placement) {
    o += (first ? "" : ",") + JsonQuoted(device.ToString()) + ":{\"tensors\":" +
         std::to_string(placed.tensors) + ",\"bytes\":" + std::to_string(placed.bytes) + "}";
    first = false;
  }
  char nums[160];
  std::snprintf(nums, sizeof nums, "},\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.3f,\"io\":",
                static_cast<unsigned long long>(stats ? stats->delivered_bytes : 0),
                stats ? stats->seconds : 0.0, stats ? stats->gbps() : 0.0);
  o += nums;
  o += stats ? JsonQuoted(IoModeName(stats->io)) : std::string("null");
  o += ",\"threads\":" + std::to_string(stats ? stats->threads : 0) + ",\"verified\":";
  o += stats && verify ? std::to_string(stats->verified) : std::string("null");
  o += ",\"warnings\":";
  AppendJsonStringArray(&o, stats ? stats->warnings : std::vector<std::string>());
  o += ",\"error\":";
  if (error.ok()) {
    o += "null";
  } else {
    o += StatusJson(error);
  }
  return o + "}\n";
}

// LoadNotes: the warnings for arguments that did nothing: an --alias whose target is
// not among `targets` (ignored, as Match ignores it) or that found no stored tensor (its
// target stays missing), and --device-map rules that place none of the matched targets.
std::vector<std::string> LoadNotes(const LoadArgs& a, std::span<const Target> targets,
                                   const MatchReport& report) {
  std::vector<std::string> notes;
  std::set<std::string_view> target_names, missing(report.missing.begin(), report.missing.end());
  for (const Target& t : targets) target_names.insert(t.name);
  for (const auto& [target, stored] : a.options.match.aliases) {
    std::string alias = QuoteForMessage(target + "=" + stored, '\'');
    if (!target_names.contains(target)) {
      notes.push_back("--alias " + alias + ": no target is called " +
                      QuoteForMessage(target, '\'') +
                      (a.expect.empty() ? " (without --expect the targets are the "
                                          "checkpoint's own tensors); ignored"
                                        : "; ignored"));
    } else if (missing.contains(target)) {
      notes.push_back("--alias " + alias + ": the checkpoint has no tensor " +
                      QuoteForMessage(stored, '\'') + " (after renames), so " +
                      QuoteForMessage(target, '\'') + " stays missing");
    }
  }
  std::vector<std::string> matched;
  matched.reserve(report.matched.size());
  for (const MatchedPair& m : report.matched) matched.push_back(m.target_name);
  for (const std::string& rule : a.options.devices.UnusedRules(matched)) {
    notes.push_back("--device-map rule " + QuoteForMessage(rule, '\'') +
                    " places no tensor (no matched name reaches it)");
  }
  return notes;
}

int Fail(const LoadArgs& a, const MatchReport& report, const Status& s) {
  if (a.json) std::cout << ReportJson(report, nullptr, {}, a.options.verify, s);
  PrintError("load", s);
  return 1;
}

// PrintLoaded: the report of a load that succeeded, as text or (--json) JSON.
void PrintLoaded(const LoadArgs& a, const MatchReport& report, const LoadStats& stats,
                 size_t tensors, const std::map<Device, Placed>& placement) {
  PrintWarnings("load", stats.warnings);
  if (a.options.verify && stats.verified == 0 && tensors > 0) {
    PrintWarnings("load", {"--verify: the checkpoint records no XXH3 hash for the tensors "
                           "loaded, so none was checked (reshard writes them)"});
  }
  if (a.json) {
    std::cout << ReportJson(report, &stats, placement, a.options.verify, OkStatus());
    return;
  }
  std::cout << report.ToString();
  std::printf("loaded %s, %.3f GB in %.3f s: %.2f GB/s (io %s, %s)\n",
              Counted(tensors, "tensor").c_str(), stats.delivered_bytes / 1e9, stats.seconds,
              stats.gbps(), std::string(IoModeName(stats.io)).c_str(),
              Counted(stats.threads, "thread").c_str());
  if (a.options.verify) {
    std::printf("verified: %zu of %zu tensors against their recorded XXH3\n", stats.verified,
                tensors);
  }
  std::string where = "placed:";
  for (const auto& [device, placed] : placement) {
    where += " " + device.ToString() + " " + std::to_string(placed.tensors) + " tensors " +
             std::to_string(placed.bytes) + " bytes;";
  }
  if (where.back() == ';') where.pop_back();
  if (placement.empty()) where += " nothing";
  std::cout << where << "\n";
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
  Result<Checkpoint> ckpt = OpenCheckpoint(a.path, a.catalog);
  if (!ckpt.ok()) return Fail(a, empty, ckpt.status());
  PrintWarnings("load", ckpt->warnings());

  // The targets: the --expect spec's (possibly none: a model without tensors, for
  // which every stored tensor is unexpected), or one per stored tensor.
  std::vector<Target> targets;
  if (!a.expect.empty()) {
    Result<std::vector<Target>> t = ParseExpect(a.expect);
    if (!t.ok()) return Fail(a, empty, t.status());
    targets = std::move(*t);
  } else {
    Result<std::vector<Target>> all = CheckpointTargets(*ckpt, a.options.match);
    if (!all.ok()) return Fail(a, empty, all.status());
    targets = std::move(*all);
  }
  // Match first, so that a failed match still prints its whole report.
  std::span<const Target> match_targets = targets;
  Result<MatchReport> report = Match(ckpt->tensors(), ckpt->metadata(), match_targets, a.options.match);
  if (!report.ok()) return Fail(a, empty, report.status());
  PrintWarnings("load", LoadNotes(a, targets, *report));
  if (!report->status.ok()) {
    if (a.json) {
      std::cout << ReportJson(*report, nullptr, {}, a.options.verify, report->status);
    } else {
      std::cout << report->ToString();
    }
    PrintError("load", report->status);
    return 1;
  }

  if (!a.json) a.options.progress = MakeProgressBar();
  if (targets.empty()) {
    // No target (an empty --expect, non-strict; or a checkpoint without tensors):
    // nothing to load. Not LoadAll, which takes no targets as "every stored tensor".
    Result<LoadResult> none = LoadInto(*ckpt, {}, a.options);
    if (!none.ok()) return Fail(a, *report, none.status());
    PrintLoaded(a, none->report, *none, 0, {});
    return 0;
  }
  Result<LoadedCheckpoint> loaded = LoadAll(*ckpt, a.options, match_targets);
  if (!loaded.ok()) return Fail(a, *report, loaded.status());
  PrintLoaded(a, loaded->report, *loaded, loaded->tensors.size(), Placement(&*loaded));
  return 0;
}

}  // namespace shardload::cli
