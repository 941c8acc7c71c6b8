// `shardload verify PATH [--io MODE] [--threads N] [--json]`: read every byte of every
// shard through the loading pipeline and check that the files are still what their
// headers describe, hashing, in the same pass, every tensor for which the checkpoint
// records an XXH3 (shard `__metadata__`, index "metadata") and comparing. Prints "OK: ..."
// (exit 0), or the error (exit 1); every tensor that differs from its record is named on
// its own stderr line, followed by "N of M recorded tensors do not match their XXH3";
// bad usage exits 2. With no records it says so and checks consistency only.
// --json prints {"ok":true,"files":N,"bytes":N,"seconds":S,"gbps":G,"recorded":R} or
// {"ok":false,"error":{"code","message"},"mismatched":[{"name","message"}]} ("mismatched"
// only when records differ; a usage error under --json too, with exit 2).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/load_common.h"
#include "format/text.h"
#include "loader/checkpoint.h"
#include "loader/loader.h"

namespace shardload::cli {
namespace {

constexpr char kVerifyUsage[] =
    "usage: shardload verify PATH [--io auto|pread|mmap|direct|uring] [--threads N]\n"
    "                       [--lenient-index] [--json]\n"
    "  reads every byte of every shard: checks that the files hold what their headers\n"
    "  and index say, and each tensor against its recorded XXH3 hash where the\n"
    "  checkpoint records one (reshard writes them); exit 1 on the first problem found\n"
    "  (every hash mismatch is listed)\n"
    "  --io MODE     how files are read (default auto)\n"
    "  --threads N   reader threads, 0..256 (default 0: hardware threads)\n"
    "  --lenient-index  also read tensors a shard holds but the index does not list (a\n"
    "                warning each; default: an error)\n"
    "  --json        one JSON object on stdout: {\"ok\",\"files\",\"bytes\",\"seconds\",\n"
    "                \"gbps\",\"recorded\"}, or {\"ok\":false,\"error\"[,\"mismatched\"]}\n";

void PrintJsonError(const Status& s, const std::vector<HashMismatch>* mismatches) {
  std::cout << "{\"ok\":false,\"error\":" << StatusJson(s);
  if (mismatches != nullptr) {
    std::cout << ",\"mismatched\":[";
    for (size_t i = 0; i < mismatches->size(); ++i) {
      const HashMismatch& m = (*mismatches)[i];
      std::cout << (i ? "," : "") << "{\"name\":" << JsonQuoted(m.name)
                << ",\"message\":" << JsonQuoted(m.error.message()) << "}";
    }
    std::cout << "]";
  }
  std::cout << "}\n";
}

}  // namespace

int RunVerify(const Args& args) {
  std::string path;
  bool json = false;
  CatalogOptions catalog;  // --lenient-index: strict_index false
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
      usage = f.NoValue();
      json = true;
    } else if (f.Is("--lenient-index")) {
      usage = f.NoValue();
      catalog.strict_index = false;
    } else if (f.Is("--threads")) {
      Result<int64_t> n = f.IntValue(0, 256);
      if (n.ok()) options.threads = static_cast<int>(*n); else usage = n.status();
    } else if (f.Is("--io")) {
      Result<std::string> v = f.Value();
      Result<IoMode> m = v.ok() ? ParseIoMode(*v) : Result<IoMode>(v.status());
      if (m.ok()) options.io = *m; else usage = m.status();
    } else {
      usage = f.Unexpected();
    }
  }
  if (usage.ok() && path.empty()) usage = InvalidArgumentError("missing PATH");
  if (!usage.ok()) {
    // As UsageError, but under --json verify's own error object ("ok":false).
    for (const std::string& arg : args) {
      if (arg == "--json") {
        PrintJsonError(usage, nullptr);
        break;
      }
    }
    PrintError("verify", usage);
    std::cerr << kVerifyUsage;
    return 2;
  }
  if (!json) options.progress = MakeProgressBar();
  options.verify = true;  // hash every recorded tensor in the same pass, listing mismatches
  Result<Checkpoint> ckpt = OpenCheckpoint(path, catalog);
  if (ckpt.ok()) {
    PrintWarnings("verify", ckpt->warnings());
  }
  Result<VerifyReport> r = ckpt.ok() ? VerifyCheckpoint(*ckpt, options) : Result<VerifyReport>(ckpt.status());
  if (!r.ok()) {
    if (json) PrintJsonError(r.status(), nullptr);
    PrintError("verify", r.status());
    return 1;
  }
  if (!r->mismatches.empty()) {
    Status summary = DataLossError(std::to_string(r->mismatches.size()) + " of " +
                                   std::to_string(r->recorded) +
                                   " recorded tensors do not match their XXH3");
    if (json) PrintJsonError(summary, &r->mismatches);
    for (const HashMismatch& m : r->mismatches) PrintError("verify", m.error);
    PrintError("verify", summary);
    return 1;
  }
  double gbps = r->seconds > 0 ? r->bytes / r->seconds / 1e9 : 0;
  if (json) {
    std::printf("{\"ok\":true,\"files\":%zu,\"bytes\":%llu,\"seconds\":%.6f,\"gbps\":%.3f,"
                "\"recorded\":%zu}\n",
                r->files, static_cast<unsigned long long>(r->bytes), r->seconds, gbps,
                r->recorded);
  } else {
    std::printf("OK: %s, %llu bytes read in %.3f s (%.2f GB/s)\n",
                Counted(r->files, "file").c_str(), static_cast<unsigned long long>(r->bytes),
                r->seconds, gbps);
    if (r->recorded == 0) {
      std::printf("no XXH3 records: checked consistency only\n");
    } else {
      std::printf("XXH3: all %zu recorded tensors match\n", r->recorded);
    }
  }
  return 0;
}

}  // namespace shardload::cli
