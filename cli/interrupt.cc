// cli/interrupt.cc — see interrupt.h.
#include "cli/interrupt.h"

#include <signal.h>

#include <atomic>
#include <string>
#include <utility>

namespace shardload::cli {
namespace {

// Lock-free, so safe to store from a signal handler.
std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void RecordStopSignal(int sig) { g_signal.store(sig, std::memory_order_relaxed); }

}  // namespace

void StopOnSignals() {
  struct sigaction sa = {};
  sa.sa_handler = RecordStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // no SA_RESTART: a blocked write returns EINTR and retries
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

int InterruptSignal() { return g_signal.load(std::memory_order_relaxed); }

int EndStopOnSignals() {
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  return InterruptSignal();
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
