// cli/commands.h — the subcommands of the `shardload` program.
//
// Each subcommand is a function taking its own arguments (argv after the subcommand
// name) and returning the process exit status. They live in one file each
// (cli/inspect.cc, cli/write_sample.cc, ...) and are dispatched by cli/main.cc.
//
//   int rc = RunInspect({"--json", "model/"});
#ifndef SHARDLOAD_CLI_COMMANDS_H_
#define SHARDLOAD_CLI_COMMANDS_H_

#include <string>
#include <vector>

namespace shardload::cli {

// Args: the arguments after the subcommand name.
using Args = std::vector<std::string>;

// RunInspect: `shardload inspect PATH [--json]`.
int RunInspect(const Args& args);
// RunWriteSample: `shardload write-sample DIR --size S --shards N [--layout L] [--dtype D] [--seed N]`.
int RunWriteSample(const Args& args);
// RunLoad: `shardload load PATH [--device D] [--strict|--non-strict] ...`.
int RunLoad(const Args& args);
// RunVerify: `shardload verify PATH`.
int RunVerify(const Args& args);
// RunBench: `shardload bench PATH ...`.
int RunBench(const Args& args);
// RunHash: `shardload hash PATH [--json]`.
int RunHash(const Args& args);
// RunReshard: `shardload reshard PATH OUT --max-shard-size S`.
int RunReshard(const Args& args);
// RunDevices: `shardload devices [--json]`.
int RunDevices(const Args& args);

}  // namespace shardload::cli

#endif  // SHARDLOAD_CLI_COMMANDS_H_
