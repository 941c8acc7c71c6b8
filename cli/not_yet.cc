// Subcommands that are not built yet answer with a clear message. Each moves to its
// own file (and out of this one) when it is implemented.
#include <iostream>

#include "cli/commands.h"

namespace shardload::cli {
namespace {
int NotYet(const char* name) {
  std::cerr << "shardload " << name << ": not implemented in this build\n";
  return 2;
}
}  // namespace

int RunReshard(const Args&) { return NotYet("reshard"); }

}  // namespace shardload::cli
