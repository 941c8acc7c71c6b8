// tests/bus_guard_test.cc — the mmap reader's SIGBUS guard leaves SIGBUSes that are not
// faults in its own copies to what the process had before it: a SIGBUS sent with kill()
// kills a process whose action was the default, is ignored by one that ignored it (and
// the guard stays installed), and reaches an earlier handler. Each case runs in a
// forked child, because the guard is installed once per process.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "loader/file.h"
#include "tests/io_util.h"

namespace shardload {
namespace {

using testing::RandomBytes;
using testing::TempDir;
using testing::WriteBytes;

// Child exit codes.
constexpr int kSurvived = 0;
constexpr int kSetupFailed = 2;
constexpr int kGuardGone = 3;
constexpr int kHandlerNotCalled = 4;

volatile sig_atomic_t g_handler_calls = 0;
void CountingHandler(int) { g_handler_calls = g_handler_calls + 1; }

// RunChild: the wait status of a child that sets SIGBUS's action with `before`, maps a
// file through OpenFile (installing the guard), reads it, sends itself a SIGBUS and
// returns `after()`.
int RunChild(const std::function<bool()>& before, const std::function<int()>& after) {
  const std::string path = TempDir("bus") + "/f.bin";
  if (!WriteBytes(path, RandomBytes(1 << 16, 3))) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    if (!before()) ::_exit(kSetupFailed);
    Result<std::unique_ptr<ReadableFile>> f = OpenFile(path, IoMode::kMmap);
    if (!f.ok()) ::_exit(kSetupFailed);
    std::byte b[16];
    if (!(*f)->ReadAt(100, b).ok()) ::_exit(kSetupFailed);
    ::kill(::getpid(), SIGBUS);
    ::_exit(after());
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

bool SetAction(void (*handler)(int)) {
  struct sigaction sa = {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  return ::sigaction(SIGBUS, &sa, nullptr) == 0;
}

// GuardInstalled: SIGBUS's current action is a handler (the guard's), not SIG_DFL/SIG_IGN.
bool GuardInstalled() {
  struct sigaction now = {};
  ::sigaction(SIGBUS, nullptr, &now);
  return (now.sa_flags & SA_SIGINFO) != 0;
}

TEST(BusGuardTest, SentSigbusKillsUnderTheDefaultAction) {
  int status = RunChild([] { return SetAction(SIG_DFL); }, [] { return kSurvived; });
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGBUS);
}

TEST(BusGuardTest, SentSigbusIsIgnoredWhenItWasIgnoredAndTheGuardStays) {
  int status = RunChild([] { return SetAction(SIG_IGN); },
                        [] { return GuardInstalled() ? kSurvived : kGuardGone; });
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), kSurvived);
}

TEST(BusGuardTest, SentSigbusReachesTheEarlierHandler) {
  int status = RunChild([] { return SetAction(CountingHandler); }, [] {
    if (g_handler_calls != 1) return kHandlerNotCalled;
    return GuardInstalled() ? kSurvived : kGuardGone;
  });
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), kSurvived);
}

}  // namespace
}  // namespace shardload
