// `shardload verify PATH [--io MODE] [--threads N] [--json]`: read every byte of every
// shard through the loading pipeline and check that the files are still what their
// headers describe, then hash every tensor (HashCheckpoint) and compare the XXH3 hashes
// the checkpoint records (shard `__metadata__`, index "metadata"). Prints "OK: ..."
// (exit 0), or the error (exit 1); every tensor that differs from its record is named on
// its own stderr line, followed by "N of M recorded tensors do not match their XXH3";
// bad usage exits 2. With no records it says so and checks consistency only.
// --json prints {"ok":true,"files":N,"bytes":N,"seconds":S,"gbps":G,"recorded":R} or
// {"ok":false,"error":{"code","message"},"mismatched":[{"name","message"}]}.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/load_common.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"
#include "loader/loader.h"

namespace shardload::cli {
namespace {

constexpr char kVerifyUsage[] =
    "usage: shardload verify PATH [--io auto|pread|mmap|direct|uring] [--threads N] [--json]\n";

struct HashCheck {
  size_t recorded = 0;              // tensors with a record
  std::vector<std::string> names;   // tensors whose bytes differ from a record
  std::vector<Status> mismatches;   // one data_loss per name
};

// CheckRecordedHashes: hash every tensor and compare with every record it has.
Result<HashCheck> CheckRecordedHashes(const Checkpoint& ckpt) {
  SL_ASSIGN_OR_RETURN(RecordedChecksums sums, RecordedChecksums::FromCheckpoint(ckpt));
  HashCheck out;
  out.recorded = sums.size();
  if (sums.size() == 0) return out;
  HashOptions options;
  options.check_recorded = false;  // collect every mismatch, not just the first
  SL_ASSIGN_OR_RETURN(CheckpointDigest digest, HashCheckpoint(ckpt, options));
  for (const TensorDigest& t : digest.tensors) {
    Status s = sums.CheckXxh3(t.name, t.bytes, t.xxh3);
    if (!s.ok()) {
      out.names.push_back(t.name);
      out.mismatches.push_back(std::move(s));
    }
  }
  return out;
}

void PrintJsonError(const Status& s, const HashCheck* check) {
  std::cout << "{\"ok\":false,\"error\":{\"code\":" << JsonQuoted(StatusCodeName(s.code()))
            << ",\"message\":" << JsonQuoted(s.message()) << "}";
  if (check != nullptr) {
    std::cout << ",\"mismatched\":[";
    for (size_t i = 0; i < check->names.size(); ++i) {
      std::cout << (i ? "," : "") << "{\"name\":" << JsonQuoted(check->names[i])
                << ",\"message\":" << JsonQuoted(check->mismatches[i].message()) << "}";
    }
    std::cout << "]";
  }
  std::cout << "}\n";
}

}  // namespace

int RunVerify(const Args& args) {
  std::string path;
  bool json = false;
  LoadOptions options;
  FlagReader f(args);
  Status usage;
  while (usage.ok() && f.Next()) {
    if (f.Is("--help") || f.Is("-h")) {
      std::cout << kVerifyUsage;
      return 0;
    } else if (f.IsPositional() && path.empty()) {
      path = f.arg();
    } else if (f.Is("--json")) {
      json = true;
    } else if (f.Is("--threads")) {
      Result<int64_t> n = f.IntValue(0, 256);
      if (n.ok()) options.threads = static_cast<int>(*n); else usage = n.status();
    } else if (f.Is("--io")) {
      Result<std::string> v = f.Value();
      Result<IoMode> m = v.ok() ? ParseIoMode(*v) : Result<IoMode>(v.status());
      if (m.ok()) options.io = *m; else usage = m.status();
    } else {
      usage = InvalidArgumentError("unexpected argument '" + f.arg() + "'");
    }
  }
  if (usage.ok() && path.empty()) usage = InvalidArgumentError("missing PATH");
  if (!usage.ok()) {
    PrintError("verify", usage);
    std::cerr << kVerifyUsage;
    return 2;
  }
  if (!json) options.progress = MakeProgressBar();
  Result<Checkpoint> ckpt = Checkpoint::Open(path);
  Result<VerifyReport> r = ckpt.ok() ? VerifyCheckpoint(*ckpt, options) : Result<VerifyReport>(ckpt.status());
  Result<HashCheck> check = r.ok() ? CheckRecordedHashes(*ckpt) : Result<HashCheck>(r.status());
  if (!check.ok()) {
    if (json) PrintJsonError(check.status(), nullptr);
    PrintError("verify", check.status());
    return 1;
  }
  if (!check->mismatches.empty()) {
    Status summary = DataLossError(std::to_string(check->names.size()) + " of " +
                                   std::to_string(check->recorded) +
                                   " recorded tensors do not match their XXH3");
    if (json) PrintJsonError(summary, &*check);
    for (const Status& s : check->mismatches) PrintError("verify", s);
    PrintError("verify", summary);
    return 1;
  }
  double gbps = r->seconds > 0 ? r->bytes / r->seconds / 1e9 : 0;
  if (json) {
    std::printf("{\"ok\":true,\"files\":%zu,\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.3f,"
                "\"recorded\":%zu}\n",
                r->files, static_cast<unsigned long long>(r->bytes), r->seconds, gbps,
                check->recorded);
  } else {
    std::printf("OK: %zu files, %llu bytes read in %.3f s (%.2f GB/s)\n", r->files,
                static_cast<unsigned long long>(r->bytes), r->seconds, gbps);
    if (check->recorded == 0) {
      std::printf("no XXH3 records: checked consistency only\n");
    } else {
      std::printf("XXH3: all %zu recorded tensors match\n", check->recorded);
    }
  }
  return 0;
}

}  // namespace shardload::cli
