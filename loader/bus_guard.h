// loader/bus_guard.h — copies out of a file mapping that survive the file shrinking.
//
// Provides `InstallBusGuard` (a process-wide SIGBUS handler, installed once) and
// `GuardedCopy` (memcpy that returns false, instead of killing the process, when its
// source faults: the mapped file was truncated under it). The mmap reader (loader/
// file.cc) checks the file size before every copy; this closes the window between that
// check and the copy.
//
//   InstallBusGuard();
//   if (!GuardedCopy(dst, mapping + offset, n)) return DataLossError(...);
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

// GuardedCopy: copy `n` bytes from `src` to `dst`; false when reading `src` raised
// SIGBUS (then `dst` holds an unspecified prefix of the bytes), true otherwise.
// Requires InstallBusGuard() first. Faults writing `dst` are not guarded against (the
// caller owns that memory). Thread-safe; async-signal-safe it is not.
bool GuardedCopy(void* dst, const void* src, size_t n);

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_BUS_GUARD_H_
