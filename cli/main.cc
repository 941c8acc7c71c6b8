// The `shardload` command: dispatches to one subcommand (cli/commands.h).
#include <cstring>
#include <iostream>
#include <string>

#include "cli/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: shardload COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  inspect PATH [--json]            list tensors, dtypes, shapes and metadata\n"
    "  write-sample DIR --size S --shards N [--layout llama|moe|tiny] [--dtype bf16] [--seed N]\n"
    "                                   write a synthetic checkpoint\n"
    "  load PATH [options]              load a checkpoint and report matching and throughput\n"
    "  verify PATH                      read every byte and check consistency and hashes\n"
    "  bench PATH [options]             load throughput against same-run ceilings\n"
    "  hash PATH [--json]               per-tensor XXH3 hashes\n"
    "  reshard PATH OUT --max-shard-size S  rewrite a checkpoint into new shards\n"
    "  devices [--json]                 cpu and the CUDA devices loads can use (or why none)\n"
    "\n"
    "Run 'shardload COMMAND --help' for a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::cerr << kUsage;
    return argc < 2 ? 2 : 0;
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
