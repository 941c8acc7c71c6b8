// `shardload verify PATH [--io MODE] [--threads N] [--json]`: read every byte of every
// shard through the loading pipeline and check that the files are still what their
// headers describe. Prints "OK: ..." (exit 0) or the error (exit 1); bad usage exits 2.
// --json prints {"ok":true,"files":N,"bytes":N,"seconds":S,"gbps":G} or
// {"ok":false,"error":{"code","message"}}.
#include <cstdio>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "cli/load_common.h"
#include "loader/checkpoint.h"
#include "loader/loader.h"

namespace shardload::cli {
namespace {

constexpr char kVerifyUsage[] =
    "usage: shardload verify PATH [--io auto|pread|mmap|direct] [--threads N] [--json]\n";

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
  if (!r.ok()) {
    if (json) {
      std::cout << "{\"ok\":false,\"error\":{\"code\":" << JsonQuoted(StatusCodeName(r.status().code()))
                << ",\"message\":" << JsonQuoted(r.status().message()) << "}}\n";
    }
    PrintError("verify", r.status());
    return 1;
  }
  double gbps = r->seconds > 0 ? r->bytes / r->seconds / 1e9 : 0;
  if (json) {
    std::printf("{\"ok\":true,\"files\":%zu,\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.3f}\n",
                r->files, static_cast<unsigned long long>(r->bytes), r->seconds, gbps);
  } else {
    std::printf("OK: %zu files, %llu bytes read in %.3f s (%.2f GB/s)\n", r->files,
                static_cast<unsigned long long>(r->bytes), r->seconds, gbps);
  }
  return 0;
}

}  // namespace shardload::cli
