// The `shardload` command: dispatches to one subcommand (cli/commands.h).
#include <sys/resource.h>

#include <cstring>
#include <iostream>
#include <string>

#include "cli/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: shardload COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  inspect PATH [--json]            files, tensor count, bytes, dtypes, metadata\n"
    "                                   (--json: every tensor's name, dtype, shape, offsets)\n"
    "  load PATH [options]              load a checkpoint; report matching and throughput\n"
    "  verify PATH [options]            read every byte; check consistency and recorded hashes\n"
    "  bench PATH [options]             load throughput against same-run ceilings\n"
    "  hash PATH [--json] [--no-check]  per-tensor XXH3 hashes and a layout-free digest\n"
    "  reshard PATH OUT (--max-shard-size S | --shards N) [options]\n"
    "                                   rewrite a checkpoint into new shards\n"
    "  write-sample DIR [--size S] [--shards N | --max-shard-size S] [options]\n"
    "                                   write a synthetic checkpoint\n"
    "  devices [--json]                 cpu and the CUDA devices loads can use (or why none)\n"
    "\n"
    "Run 'shardload COMMAND --help' for a command's options. Exit status: 0 on success,\n"
    "1 on an error, 2 on bad usage.\n";

// RaiseOpenFileLimit: the soft RLIMIT_NOFILE up to the hard one. A load keeps every
// shard open, and the usual soft limit of 1024 would stop at about 1000 shards (the
// catalog accepts up to 10,000). A program, not the library, decides its limits.
void RaiseOpenFileLimit() {
  struct rlimit r;
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);  // best effort: on failure the old limit stays
  }
}

}  // namespace

int main(int argc, char** argv) {
  RaiseOpenFileLimit();
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::cout << kUsage;  // asked for: to stdout, as each command's --help
    return 0;
  }
  std::string cmd = argv[1];
  shardload::cli::Args args(argv + 2, argv + argc);
  using namespace shardload::cli;
  if (cmd == "inspect") return RunInspect(args);
  if (cmd == "write-sample") return RunWriteSample(args);
  if (cmd == "load") return RunLoad(args);
  if (cmd == "verify") return RunVerify(args);
  if (cmd == "bench") return RunBench(args);
  if (cmd == "hash") return RunHash(args);
  if (cmd == "reshard") return RunReshard(args);
  if (cmd == "devices") return RunDevices(args);
  std::cerr << "shardload: unknown command '" << cmd << "'\n" << kUsage;
  return 2;
}
