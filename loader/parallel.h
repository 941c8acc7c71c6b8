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
#include <mutex>
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
// instead. Returns once every part has returned. Parts record their errors themselves;
// an exception a part throws anyway (std::bad_alloc from deep inside a parser) is
// caught on its thread and, once every part has returned, the first one is rethrown on
// the calling thread, where the caller's handlers see it (it would end the process
// from a started thread).
template <typename F>
void RunParts(size_t parts, F&& part) {
  std::mutex mu;
  std::exception_ptr first;
  auto run = [&](size_t i) {
    try {
      part(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!first) first = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(parts > 0 ? parts - 1 : 0);  // emplace_back below never reallocates
  for (size_t i = 1; i < parts; ++i) {
    try {
      pool.emplace_back([&run, i] { run(i); });
    } catch (const std::exception&) {  // system_error, or bad_alloc for its state
      run(i);  // no thread to be had
    }
  }
  if (parts > 0) run(0);
  for (std::thread& t : pool) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_PARALLEL_H_
