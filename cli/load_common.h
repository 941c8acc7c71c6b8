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
#include <vector>

#include "cli/commands.h"
#include "format/status.h"
#include "format/writer.h"
#include "loader/backend.h"
#include "loader/checkpoint.h"

namespace shardload::cli {

// FlagReader: walks "--flag value", "--flag=value", bare flags and positionals.
class FlagReader {
 public:
  explicit FlagReader(const Args& args) : args_(args) {}
  // Next: advance to the next argument; false at the end. A bare "--" is skipped and
  // makes every later argument positional (a path that starts with "--").
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
  // NoValue: OK for a flag written alone; a switch given an inline value ("--cold=no",
  // which would otherwise count as --cold) is invalid_argument "--cold takes no value
  // (got '--cold=no')".
  Status NoValue() const;
  // Unexpected: the usage error for an argument the command does not take:
  // invalid_argument "unknown option '--x'" for a flag (the name, without an inline
  // value), "unexpected argument 'x'" for a positional.
  Status Unexpected() const;

 private:
  const Args& args_;
  size_t next_ = 0;
  std::string name_;
  std::string inline_value_;
  bool has_inline_ = false;
  bool positional_ = false;
  bool options_ended_ = false;  // after a bare "--": every argument is positional
};


// ParseSinkFlag: when the reader is at "--slots N" (staging slots, 1..64) or
// "--slot-size SIZE" (bytes per slot, "16MiB", a multiple of 4096 in 4 KiB..1 GiB),
// store it in `sink` and return true; false for any other flag. Errors:
// invalid_argument naming the flag and its valid range.
Result<bool> ParseSinkFlag(FlagReader& flags, SinkOptions* sink);

// kMaxShardFiles: the most shard files a checkpoint's index may name for the reader
// (CatalogOptions::max_shards, by default): the writers (`reshard`, `write-sample`)
// refuse to make more, so that what they write can be read back.
inline constexpr size_t kMaxShardFiles = kMaxShardCount;

// ParseShardCount: a --shards value, an integer in 1..kMaxShardFiles. Errors:
// invalid_argument "invalid --shards '0': expected an integer in 1..10000 (the most
// shard files a reader accepts)".
Result<int> ParseShardCount(std::string_view value);

// ParseDataAlignment: an --align-data value (WriteOptions::data_alignment), a power
// of two from 8 to 65536. Errors: invalid_argument "invalid --align-data '100':
// expected a power of two from 8 to 65536".
Result<uint64_t> ParseDataAlignment(std::string_view value);

// CheckShardFileCount: OK when `plan` (made with --max-shard-size `max_shard_size`) has
// at most kMaxShardFiles files, else invalid_argument "--max-shard-size 1KB needs 20001
// shard files, more than the 10000 a reader accepts".
Status CheckShardFileCount(const ShardPlan& plan, std::string_view max_shard_size);

// MakeProgressBar: a progress callback drawing "[#####     ] 45%  1.02/2.25 GB" on
// stderr when stderr is a terminal, or an empty function when it is not.
std::function<bool(uint64_t, uint64_t)> MakeProgressBar();

// PrintError: "shardload CMD: message" on stderr.
void PrintError(std::string_view cmd, const Status& status);

// PrintWarnings: each of a catalog's warnings (Checkpoint::warnings()) on stderr as
// "shardload CMD: warning: <warning>", as the commands print them right after opening
// a checkpoint.
void PrintWarnings(std::string_view cmd, const std::vector<std::string>& warnings);

// OneLineMessage: an error or warning message for stderr with its control characters
// escaped ("\n" as the two characters \n, others as \xHH), so that it stays the one
// line the CLI promises even when a file name holds a newline.
std::string OneLineMessage(std::string_view message);

// OpenCheckpoint: Checkpoint::Open(path, catalog) for a command that takes
// --lenient-index: an index that leaves a shard's tensor unlisted fails as there, with
// " (--lenient-index loads it, with a warning)" after the message (strict_index only).
Result<Checkpoint> OpenCheckpoint(const std::string& path, const CatalogOptions& catalog);

// Counted: "1 file", "3 files": `n` and `noun`, with an "s" unless n is 1.
std::string Counted(uint64_t n, std::string_view noun);

// OneLineText: `s` as it is, or JSON-quoted (JsonQuoted) when it holds a control
// character or DEL, so that a name or metadata value printed in text output is always
// one line and cannot move the terminal's cursor.
std::string OneLineText(std::string_view s);

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
