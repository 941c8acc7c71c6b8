// cli/interrupt.cc — see interrupt.h.
#include "cli/interrupt.h"

#include <signal.h>

#include <atomic>
#include <iostream>
#include <string>
#include <utility>

namespace shardload::cli {
namespace {

// Lock-free, so safe to store from a signal handler.
std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void RecordStopSignal(int sig) { g_signal.store(sig, std::memory_order_relaxed); }

// SIGHUP: the terminal of an interactive write was closed (under nohup it is ignored,
// and stays so).
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};
constexpr int kStopSignalCount = sizeof(kStopSignals) / sizeof(kStopSignals[0]);
// The dispositions StopOnSignals replaced, restored by EndStopOnSignals.
struct sigaction g_saved[kStopSignalCount];
bool g_installed[kStopSignalCount] = {};

}  // namespace

void StopOnSignals() {
  struct sigaction sa = {};
  sa.sa_handler = RecordStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // no SA_RESTART: a blocked write returns EINTR and retries
  for (int k = 0; k < kStopSignalCount; ++k) {
    struct sigaction current;
    ::sigaction(kStopSignals[k], nullptr, &current);
    // A signal the process was started ignoring (a background job's SIGINT, nohup)
    // stays ignored: Ctrl-C meant for the foreground must not stop this write.
    if (current.sa_handler == SIG_IGN) continue;
    g_installed[k] = ::sigaction(kStopSignals[k], &sa, &g_saved[k]) == 0;
  }
}

int InterruptSignal() { return g_signal.load(std::memory_order_relaxed); }

int EndStopOnSignals() {
  for (int k = 0; k < kStopSignalCount; ++k) {
    if (g_installed[k]) ::sigaction(kStopSignals[k], &g_saved[k], nullptr);
    g_installed[k] = false;
  }
  return InterruptSignal();
}

int SignalExit(std::string_view cmd, int sig, bool stopped, const std::string& folder,
               std::string_view late_note) {
  std::cerr << "shardload " << cmd << ": ";
  if (stopped) {
    std::cerr << "interrupted by signal " << sig << "; " << folder << " is as it was\n";
  } else {
    std::cerr << "signal " << sig << " came after the new files were in place; " << folder
              << " holds the new checkpoint" << late_note << "\n";
  }
  return 128 + sig;
}

TensorFill Interruptible(TensorFill fill) {
  if (!fill) return fill;
  return [fill = std::move(fill)](uint64_t offset, std::span<std::byte> out) {
    if (int sig = InterruptSignal(); sig != 0) {
      return CancelledError("interrupted by signal " + std::to_string(sig));
    }
    return fill(offset, out);
  };
}

}  // namespace shardload::cli
