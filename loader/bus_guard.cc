// loader/bus_guard.cc — see bus_guard.h.
#include "loader/bus_guard.h"

#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace shardload {
namespace {

// t_bus_jump: where a fault in this thread's GuardedCopy jumps to (nullptr: none).
// Volatile, and fenced in GuardedCopy: memcpy does not read it, so an optimizer would
// otherwise drop the store before the copy as dead (it did, at -O2), leaving the
// handler nothing to jump to.
thread_local sigjmp_buf* volatile t_bus_jump = nullptr;
// t_copy_dst, t_copy_bytes: the destination of this thread's guarded copy, for telling a
// fault writing it from one reading the source (set before t_bus_jump).
thread_local char* volatile t_copy_dst = nullptr;
thread_local volatile size_t t_copy_bytes = 0;

// InDestination: whether fault address `addr` lies in the pages of the current copy's
// destination (the kernel reports the faulting address; whole pages, to be safe).
bool InDestination(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  const auto first = reinterpret_cast<uintptr_t>(t_copy_dst) & ~uintptr_t{4095};
  const uintptr_t end = reinterpret_cast<uintptr_t>(t_copy_dst) + t_copy_bytes;
  return t_copy_dst != nullptr && a >= first && a < ((end + 4095) & ~uintptr_t{4095});
}
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
  if (fault && t_bus_jump != nullptr) siglongjmp(*t_bus_jump, InDestination(info->si_addr) ? 2 : 1);
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

__attribute__((noinline)) CopyFault GuardedCopy(void* dst, const void* src, size_t n) {
  sigjmp_buf jump;
  // sigsetjmp as the whole controlling expression, one of the forms C allows.
  switch (sigsetjmp(jump, 0)) {
    case 0:
      break;
    case 2:
      t_bus_jump = nullptr;
      t_copy_dst = nullptr;
      return CopyFault::kDestination;
    default:
      t_bus_jump = nullptr;
      t_copy_dst = nullptr;
      return CopyFault::kSource;
  }
  t_copy_dst = static_cast<char*>(dst);
  t_copy_bytes = n;
  t_bus_jump = &jump;
  std::atomic_signal_fence(std::memory_order_seq_cst);  // stored before the copy starts
  std::memcpy(dst, src, n);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // cleared only after it ends
  t_bus_jump = nullptr;
  t_copy_dst = nullptr;
  return CopyFault::kNone;
}

}  // namespace shardload
