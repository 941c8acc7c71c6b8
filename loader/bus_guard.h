// loader/bus_guard.h — copies out of a file mapping that survive the file shrinking.
//
// Provides `InstallBusGuard` (a process-wide SIGBUS handler, installed once) and
// `GuardedCopy` (memcpy that reports a SIGBUS, instead of dying of it, and which side
// faulted: the mapped source file truncated under it, or the destination). The mmap reader (loader/
// file.cc) checks the file size before every copy; this closes the window between that
// check and the copy.
//
//   InstallBusGuard();
//   if (GuardedCopy(dst, mapping + offset, n) == CopyFault::kSource) return DataLossError(...);
#ifndef SHARDLOAD_LOADER_BUS_GUARD_H_
#define SHARDLOAD_LOADER_BUS_GUARD_H_

#include <cstddef>

namespace shardload {

// InstallBusGuard: install the SIGBUS handler once per process (later calls do
// nothing). A fault inside a GuardedCopy jumps back to it; every other SIGBUS (a fault
// elsewhere, or one sent with kill/raise) gets what the handler installed before ours
// would have done. The handler runs on the thread's alternate signal stack where it
// has one. Thread-safe.
void InstallBusGuard();

// CopyFault: how a GuardedCopy ended.
enum class CopyFault {
  kNone,         // copied
  kSource,       // reading `src` raised SIGBUS (its file shrank under the mapping)
  kDestination,  // writing `dst` raised SIGBUS (memory backed by a full tmpfs, a
                 // truncated file, ...: the caller's memory, not the source's fault)
};

// GuardedCopy: copy `n` bytes from `src` to `dst`; on a SIGBUS inside the copy, which
// side faulted (by the fault address; then `dst` holds an unspecified prefix of the
// bytes). Requires InstallBusGuard() first. Thread-safe; not async-signal-safe.
CopyFault GuardedCopy(void* dst, const void* src, size_t n);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_BUS_GUARD_H_
