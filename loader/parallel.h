// loader/parallel.h — the few threading helpers the loader's parallel passes share.
//
// Provides `ResolveThreadCount` (0 = the hardware's threads) and `RunParts` (run parts
// 1..n-1 on threads of their own and part 0 on the caller, joining before returning).
//
//   RunParts(ResolveThreadCount(options.threads), [&](size_t part) { Hash(part); });
#ifndef SHARDLOAD_LOADER_PARALLEL_H_
#define SHARDLOAD_LOADER_PARALLEL_H_

#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace shardload {

// ResolveThreadCount: `threads` when positive, else the hardware's thread count (at
// least 1). Thread-safe.
inline int ResolveThreadCount(int threads) {
  return threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// RunParts: call part(i) for every i in [0, parts): i >= 1 each on a new thread, 0 on
// the calling thread; a part whose thread cannot be started runs on the calling thread
// instead. Returns once every part has returned. `part` must not throw (an exception
// on a started thread would end the process): parts record their errors themselves.
template <typename F>
void RunParts(size_t parts, F&& part) {
  std::vector<std::thread> pool;
  pool.reserve(parts > 0 ? parts - 1 : 0);  // emplace_back below never reallocates
  for (size_t i = 1; i < parts; ++i) {
    try {
      pool.emplace_back([&part, i] { part(i); });
    } catch (const std::exception&) {  // system_error, or bad_alloc for its state
      part(i);  // no thread to be had
    }
  }
  if (parts > 0) part(0);
  for (std::thread& t : pool) t.join();
}

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_PARALLEL_H_
