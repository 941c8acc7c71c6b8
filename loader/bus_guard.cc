// loader/bus_guard.cc — see bus_guard.h.
#include "loader/bus_guard.h"

#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace shardload {
namespace {

// t_bus_jump: where a fault in this thread's GuardedCopy jumps to (nullptr: none).
// Volatile, and fenced in GuardedCopy: memcpy does not read it, so an optimizer would
// otherwise drop the store before the copy as dead (it did, at -O2), leaving the
// handler nothing to jump to.
thread_local sigjmp_buf* volatile t_bus_jump = nullptr;
struct sigaction g_previous_bus_action;

// BusHandler: a fault (si_code > 0: raised by the kernel for an access) inside a
// guarded copy jumps back to it. Everything else gets what the handler installed
// before ours would have done: a SIGBUS sent by kill/raise (si_code <= 0) to a
// process that ignored SIGBUS is ignored, and kills it under the default action; a
// fault outside a guarded copy kills it in both cases (the kernel does not let a
// process ignore a fault), by restoring the default action and returning, which
// re-executes the access.
void BusHandler(int sig, siginfo_t* info, void* context) {
  const bool fault = info != nullptr && info->si_code > 0;
  if (fault && t_bus_jump != nullptr) siglongjmp(*t_bus_jump, 1);
  const struct sigaction& prev = g_previous_bus_action;
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, context);
    return;
  }
  if (prev.sa_handler == SIG_IGN && !fault) return;
  if (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN) {
    ::signal(SIGBUS, SIG_DFL);
    if (!fault) ::raise(SIGBUS);  // SA_NODEFER: delivered now, with the default action
    return;
  }
  prev.sa_handler(sig);
}

}  // namespace

void InstallBusGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = BusHandler;
    sigemptyset(&sa.sa_mask);
    // SA_ONSTACK: run on the thread's alternate signal stack where it has one, as
    // runtimes that install those (Go) require of handlers set up by foreign code.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    ::sigaction(SIGBUS, &sa, &g_previous_bus_action);
  });
}

__attribute__((noinline)) bool GuardedCopy(void* dst, const void* src, size_t n) {
  sigjmp_buf jump;
  if (sigsetjmp(jump, 0) != 0) {
    t_bus_jump = nullptr;
    return false;
  }
  t_bus_jump = &jump;
  std::atomic_signal_fence(std::memory_order_seq_cst);  // stored before the copy starts
  std::memcpy(dst, src, n);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // cleared only after it ends
  t_bus_jump = nullptr;
  return true;
}

}  // namespace shardload
