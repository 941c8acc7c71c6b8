// cli/load_common.cc — flag reading, error output (text and JSON), progress bar.
#include "cli/load_common.h"

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "format/text.h"
#include "format/writer.h"

namespace shardload::cli {

bool FlagReader::Next() {
  if (next_ >= args_.size()) return false;
  if (!options_ended_ && args_[next_] == "--") {  // the rest are positional
    options_ended_ = true;
    if (++next_ >= args_.size()) return false;
  }
  const std::string& a = args_[next_++];
  has_inline_ = false;
  positional_ = options_ended_ || !(a.size() > 1 && a[0] == '-');
  if (!positional_ && a.rfind("--", 0) == 0) {
    size_t eq = a.find('=');
    if (eq != std::string::npos) {
      name_ = a.substr(0, eq);
      inline_value_ = a.substr(eq + 1);
      has_inline_ = true;
      return true;
    }
  }
  name_ = a;
  return true;
}

Result<std::string> FlagReader::Value() {
  if (has_inline_) return inline_value_;
  if (next_ >= args_.size()) return InvalidArgumentError(name_ + " needs a value");
  return args_[next_++];
}

Status FlagReader::NoValue() const {
  if (!has_inline_) return OkStatus();
  return InvalidArgumentError(name_ + " takes no value (got '" + name_ + "=" + inline_value_ +
                              "')");
}

Status FlagReader::Unexpected() const {
  return InvalidArgumentError((positional_ ? "unexpected argument '" : "unknown option '") +
                              name_ + "'");
}

Result<int64_t> FlagReader::IntValue(int64_t lo, int64_t hi) {
  SL_ASSIGN_OR_RETURN(std::string v, Value());
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) {
    return InvalidArgumentError("invalid " + name_ + " '" + v + "': expected an integer in " +
                                std::to_string(lo) + ".." + std::to_string(hi));
  }
  return n;
}

Result<bool> ParseSinkFlag(FlagReader& flags, SinkOptions* sink) {
  if (flags.Is("--slots")) {
    SL_ASSIGN_OR_RETURN(int64_t n, flags.IntValue(1, 64));
    sink->slot_count = static_cast<int>(n);
    return true;
  }
  if (flags.Is("--slot-size")) {
    SL_ASSIGN_OR_RETURN(std::string v, flags.Value());
    Result<uint64_t> bytes = ParseByteSize(v);
    if (!bytes.ok() || *bytes < 4096 || *bytes > (uint64_t{1} << 30) || *bytes % 4096 != 0) {
      return InvalidArgumentError("invalid --slot-size '" + v +
                                  "': expected a multiple of 4096 bytes in 4KiB..1GiB");
    }
    sink->slot_bytes = *bytes;
    return true;
  }
  return false;
}

Result<int> ParseShardCount(std::string_view value) {
  int64_t n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size() || n < 1 ||
      static_cast<uint64_t>(n) > kMaxShardFiles) {
    return InvalidArgumentError("invalid --shards '" + std::string(value) +
                                "': expected an integer in 1.." + std::to_string(kMaxShardFiles) +
                                " (the most shard files a reader accepts)");
  }
  return static_cast<int>(n);
}

Result<uint64_t> ParseDataAlignment(std::string_view value) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size() || n < 8 || n > 65536 ||
      (n & (n - 1)) != 0) {
    return InvalidArgumentError("invalid --align-data '" + std::string(value) +
                                "': expected a power of two from 8 to 65536");
  }
  return n;
}

Status CheckShardFileCount(const ShardPlan& plan, std::string_view max_shard_size) {
  if (plan.files.size() <= kMaxShardFiles) return OkStatus();
  return InvalidArgumentError("--max-shard-size " + std::string(max_shard_size) + " needs " +
                              std::to_string(plan.files.size()) + " shard files, more than the " +
                              std::to_string(kMaxShardFiles) + " a reader accepts");
}

std::function<bool(uint64_t, uint64_t)> MakeProgressBar() {
  if (!::isatty(STDERR_FILENO)) return {};
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [last](uint64_t done, uint64_t total) {
    auto now = std::chrono::steady_clock::now();
    if (done != total && now - *last < std::chrono::milliseconds(100)) return true;
    *last = now;
    int pct = total == 0 ? 100 : static_cast<int>(done * 100 / total);
    int fill = pct / 5;
    std::fprintf(stderr, "\r[%.*s%*s] %3d%%  %.2f/%.2f GB", fill, "####################",
                 20 - fill, "", pct, done / 1e9, total / 1e9);
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
    return true;
  };
}

std::string OneLineMessage(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (char ch : message) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

void PrintError(std::string_view cmd, const Status& status) {
  std::cerr << "shardload " << cmd << ": " << OneLineMessage(status.message()) << "\n";
}

void PrintWarnings(std::string_view cmd, const std::vector<std::string>& warnings) {
  for (const std::string& w : warnings) {
    std::cerr << "shardload " << cmd << ": warning: " << OneLineMessage(w) << "\n";
  }
}

Result<Checkpoint> OpenCheckpoint(const std::string& path, const CatalogOptions& catalog) {
  Result<Checkpoint> ckpt = Checkpoint::Open(path, catalog);
  if (ckpt.ok() || !catalog.strict_index || ckpt.status().code() != StatusCode::kInvalidArgument ||
      ckpt.status().message().find(kUnlistedTensorPhrase) == std::string::npos) {
    return ckpt;
  }
  return Status(StatusCode::kInvalidArgument,
                ckpt.status().message() + " (--lenient-index loads it, with a warning)");
}

std::string Counted(uint64_t n, std::string_view noun) {
  return std::to_string(n) + " " + std::string(noun) + (n == 1 ? "" : "s");
}

std::string OneLineText(std::string_view s) {
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return JsonQuoted(s);
  }
  return std::string(s);
}

std::string StatusJson(const Status& status) {
  return "{\"code\":" + JsonQuoted(StatusCodeName(status.code())) +
         ",\"message\":" + JsonQuoted(status.message()) + "}";
}

int UsageError(std::string_view cmd, const Status& status, std::string_view usage,
               const Args& args) {
  for (const std::string& a : args) {
    if (a == "--json") {
      std::cout << "{\"error\":" << StatusJson(status) << "}\n";
      break;
    }
  }
  PrintError(cmd, status);
  std::cerr << usage;
  return 2;
}

}  // namespace shardload::cli
