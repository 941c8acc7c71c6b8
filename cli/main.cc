// The `shardload` command: dispatches to one subcommand (cli/commands.h).
//
// Standard output: every command writes it through stdio (printf, std::cout), which
// main routes through a FILE of its own (StdoutFile) that remembers the errno of the
// first write to fd 1 that failed. After the command, main flushes it and, when any
// write failed (a full disk, /dev/full, a closed descriptor), says
// "shardload CMD: cannot write output: <strerror>" on stderr and exits 1 (or the
// command's own non-zero status), so output lost is never a success.
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <new>
#include <streambuf>
#include <string>

#include "cli/commands.h"
#include "format/version.h"

namespace {

constexpr char kUsage[] =
    "usage: shardload COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  inspect PATH [--json] [--lenient-index]\n"
    "                                   files, tensor count, bytes, dtypes, metadata\n"
    "                                   (--json: every tensor's name, dtype, shape, offsets)\n"
    "  load PATH [options]              load a checkpoint; report matching and throughput\n"
    "  verify PATH [options]            read every byte; check consistency and recorded hashes\n"
    "  bench PATH [options]             load throughput against same-run ceilings\n"
    "  hash PATH [options]              per-tensor XXH3 hashes and a layout-free digest\n"
    "  reshard PATH OUT (--max-shard-size S | --shards N) [options]\n"
    "                                   rewrite a checkpoint into new shards\n"
    "  write-sample DIR [--size S] [--shards N | --max-shard-size S] [options]\n"
    "                                   write a synthetic checkpoint\n"
    "  devices [--json]                 cpu and the CUDA devices loads can use (or why none)\n"
    "  --version                        print \"shardload VERSION\" (also: version)\n"
    "\n"
    "Run 'shardload COMMAND --help' for a command's options. Exit status: 0 on success,\n"
    "1 on an error (also when the output cannot be written), 2 on bad usage.\n";

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

// IgnoreFileSizeSignal: SIGXFSZ ignored, so that a write past RLIMIT_FSIZE (`ulimit -f`)
// fails with EFBIG ("File too large"), which the writers report and clean up after,
// instead of killing the command with its temporary file left behind.
void IgnoreFileSizeSignal() { std::signal(SIGXFSZ, SIG_IGN); }

// g_stdout_errno: errno of the first write to fd 1 that failed; 0 while none has.
int g_stdout_errno = 0;

// WriteStdout: fopencookie's write function for StdoutFile: all of `buf` to fd 1
// (retrying short writes and EINTR); 0 after an error, which stdio then reports by
// ferror(). Writes after a failure are not attempted (the output is already broken).
ssize_t WriteStdout(void*, const char* buf, size_t size) {
  if (g_stdout_errno != 0) return 0;
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(STDOUT_FILENO, buf + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      g_stdout_errno = n < 0 ? errno : EIO;
      return 0;
    }
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(size);
}

// StdoutBuf: std::cout's buffer: forwards every character to `stdout` (no buffer of
// its own), so that std::cout and printf output stay in order, as with the default
// synchronised std::cout.
class StdoutBuf : public std::streambuf {
 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    return std::fputc(c, stdout) == EOF ? traits_type::eof() : c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    return static_cast<std::streamsize>(std::fwrite(s, 1, static_cast<size_t>(n), stdout));
  }
  int sync() override { return std::fflush(stdout) == 0 ? 0 : -1; }
};

// RouteStdout: make `stdout` (glibc lets a program assign it) a FILE over WriteStdout,
// line-buffered on a terminal and fully buffered otherwise, as the standard stdout,
// and point std::cout at it. Best effort: when fopencookie fails, the standard stdout
// stays, and a failed write is still caught by ferror() (without its errno).
void RouteStdout() {
  FILE* f = ::fopencookie(nullptr, "w",
                          cookie_io_functions_t{nullptr, WriteStdout, nullptr, nullptr});
  if (f == nullptr) return;
  std::setvbuf(f, nullptr, ::isatty(STDOUT_FILENO) ? _IOLBF : _IOFBF, BUFSIZ);
  stdout = f;
  static StdoutBuf* const buf = new StdoutBuf();  // never destroyed: used until exit
  std::cout.rdbuf(buf);
}

// FinishStdout: flush standard output; when any write to it failed, say so on stderr
// as "shardload CMD: cannot write output: <strerror>" and return 1 in place of a 0
// `rc` (a non-zero `rc` stays: the command's own failure comes first).
int FinishStdout(const std::string& cmd, int rc) {
  std::cout.flush();
  errno = 0;
  const bool flush_failed = std::fflush(stdout) != 0;
  const int flush_errno = errno;
  if (!flush_failed && !std::ferror(stdout) && !std::cout.bad() && g_stdout_errno == 0) return rc;
  int err = g_stdout_errno != 0 ? g_stdout_errno : flush_errno;
  std::string message = "shardload" + (cmd.empty() ? std::string() : " " + cmd) +
                        ": cannot write output";
  if (err != 0) message += std::string(": ") + std::strerror(err);
  std::fprintf(stderr, "%s\n", message.c_str());
  return rc != 0 ? rc : 1;
}

int Dispatch(const std::string& cmd, const shardload::cli::Args& args) {
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

}  // namespace

int main(int argc, char** argv) {
  RaiseOpenFileLimit();
  IgnoreFileSizeSignal();
  RouteStdout();
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::cout << kUsage;  // asked for: to stdout, as each command's --help
    return FinishStdout("", 0);
  }
  if (std::strcmp(argv[1], "--version") == 0 || std::strcmp(argv[1], "version") == 0) {
    if (argc == 3 && (std::strcmp(argv[2], "--help") == 0 || std::strcmp(argv[2], "-h") == 0)) {
      std::cout << "usage: shardload --version   (also: shardload version)\n"
                   "prints \"shardload VERSION\", the library's version\n";
      return FinishStdout(argv[1], 0);
    }
    if (argc > 2) {
      std::cerr << "shardload: " << argv[1] << " takes no arguments\n" << kUsage;
      return 2;
    }
    std::printf("shardload %s\n", shardload::kVersion);
    return FinishStdout("", 0);
  }
  std::string cmd = argv[1];
  shardload::cli::Args args(argv + 2, argv + argc);
  int rc = 1;
  try {
    rc = Dispatch(cmd, args);
  } catch (const std::bad_alloc&) {
    // An allocation the library could not turn into a status (it returns
    // resource_exhausted where it can): a message and exit 1, not an abort.
    std::cerr << "shardload " << cmd << ": out of memory\n";
    rc = 1;
  }
  return FinishStdout(cmd, rc);
}
