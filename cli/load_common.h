// cli/load_common.h — pieces shared by `shardload load`, `verify` and `bench`.
//
// Provides a small flag reader (`FlagReader`), a terminal progress bar
// (`MakeProgressBar`) and `PrintError` for the commands' error output. CLI-only; not
// part of the library.
//
//   FlagReader flags(args);
//   while (flags.Next()) {
//     if (flags.Is("--threads")) { SL_ASSIGN_OR_RETURN(threads, flags.IntValue(0, 256)); }
//     else if (flags.IsPositional()) path = flags.arg();
//   }
#ifndef SHARDLOAD_CLI_LOAD_COMMON_H_
#define SHARDLOAD_CLI_LOAD_COMMON_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "cli/commands.h"
#include "format/status.h"
#include "loader/backend.h"

namespace shardload::cli {

// FlagReader: walks "--flag value", "--flag=value", bare flags and positionals.
class FlagReader {
 public:
  explicit FlagReader(const Args& args) : args_(args) {}
  // Next: advance to the next argument; false at the end.
  bool Next();
  // arg: the current argument's flag name ("--threads") or the positional itself.
  const std::string& arg() const { return name_; }
  bool Is(std::string_view flag) const { return name_ == flag; }
  bool IsPositional() const { return positional_; }
  // Value: the flag's value ("--f=v" or the next argument). Errors: invalid_argument
  // "--threads needs a value".
  Result<std::string> Value();
  // IntValue: Value() as a decimal integer in [lo, hi]. Errors name the flag.
  Result<int64_t> IntValue(int64_t lo, int64_t hi);

 private:
  const Args& args_;
  size_t next_ = 0;
  std::string name_;
  std::string inline_value_;
  bool has_inline_ = false;
  bool positional_ = false;
};


// ParseSinkFlag: when the reader is at "--slots N" (staging slots, 1..64) or
// "--slot-size SIZE" (bytes per slot, "16MiB", a multiple of 4096 in 4 KiB..1 GiB),
// store it in `sink` and return true; false for any other flag. Errors:
// invalid_argument naming the flag and its valid range.
Result<bool> ParseSinkFlag(FlagReader& flags, SinkOptions* sink);

// MakeProgressBar: a progress callback drawing "[#####     ] 45%  1.02/2.25 GB" on
// stderr when stderr is a terminal, or an empty function when it is not.
std::function<bool(uint64_t, uint64_t)> MakeProgressBar();

// PrintError: "shardload CMD: message" on stderr.
void PrintError(std::string_view cmd, const Status& status);

// StatusJson: {"code":"<StatusCodeName>","message":"..."} for a non-OK status, as the
// commands' --json output reports errors.
std::string StatusJson(const Status& status);

// UsageError: a command's bad usage: "shardload CMD: message" and `usage` on stderr,
// plus {"error":{...}} on stdout when `args` hold "--json" (the output a script asked
// for, even when the arguments are wrong). Returns 2, the exit status for bad usage.
int UsageError(std::string_view cmd, const Status& status, std::string_view usage,
               const Args& args);

}  // namespace shardload::cli

#endif  // SHARDLOAD_CLI_LOAD_COMMON_H_
