// loader/arena.cc — HostArena: anonymous mapping, huge pages, parallel pre-fault;
// HostArenaPool: mappings kept for reuse.
#include "loader/arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>
#include <vector>

#include "loader/parallel.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace shardload {

int PrefaultPages(std::byte* p, uint64_t n) {
  while (::madvise(p, n, MADV_POPULATE_WRITE) != 0) {
    if (errno == EINTR || errno == EAGAIN) continue;
    // EINVAL: a kernel without MADV_POPULATE_WRITE (before 5.14): touch each page.
    // Anything else (ENOMEM, EFAULT, EHWPOISON) is the memory itself failing, where a
    // touch would bring the OOM killer or a SIGBUS instead of an error.
    if (errno != EINVAL) return errno;
    long page = ::sysconf(_SC_PAGESIZE);
    for (uint64_t i = 0; i < n; i += static_cast<uint64_t>(page)) {
      reinterpret_cast<volatile char*>(p)[i] = 0;
    }
    return 0;
  }
  return 0;
}

namespace {

std::atomic<int> g_live_arenas{0};
constexpr uint64_t kHugePage = 2ull << 20;

// kPrefaultStep: how much one thread prefaults between looks at the cancel flag.
constexpr uint64_t kPrefaultStep = uint64_t{64} << 20;

// PrefaultCancellable: PrefaultPages of [p, p + n) in kPrefaultStep pieces, stopping
// early once *cancel (when given) is set or *error is; the first failure's errno goes
// to *error.
void PrefaultCancellable(std::byte* p, uint64_t n, const std::atomic<bool>* cancel,
                         std::atomic<int>* error) {
  for (uint64_t off = 0; off < n; off += kPrefaultStep) {
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) return;
    if (error->load(std::memory_order_relaxed) != 0) return;
    if (int err = PrefaultPages(p + off, std::min(kPrefaultStep, n - off)); err != 0) {
      int expected = 0;
      error->compare_exchange_strong(expected, err);
      return;
    }
  }
}

// PrefaultResult: how PrefaultParallel ended.
struct PrefaultResult {
  bool completed = false;  // every page faulted in
  int error = 0;           // errno of a failed populate (then not completed)
};

// PrefaultParallel: PrefaultPages [data, data + rounded) on `threads` threads (2 MiB
// pieces); incomplete when *cancel stopped it or a populate failed.
PrefaultResult PrefaultParallel(std::byte* data, uint64_t rounded, int threads,
                                const std::atomic<bool>* cancel) {
  std::atomic<int> error{0};
  uint64_t per = (rounded / kHugePage + threads - 1) / threads * kHugePage;
  if (threads == 1 || rounded <= kHugePage * 4) {
    PrefaultCancellable(data, rounded, cancel, &error);
  } else {
    RunParts((rounded + per - 1) / per, [&](size_t part) {
      const uint64_t off = per * part;
      PrefaultCancellable(data + off, std::min(per, rounded - off), cancel, &error);
    });
  }
  PrefaultResult result;
  result.error = error.load();
  result.completed = result.error == 0 && (cancel == nullptr || !cancel->load());
  return result;
}

// PrefaultFailed: the resource_exhausted error for a populate that failed with `err`.
Status PrefaultFailed(uint64_t bytes, int err) {
  return ResourceExhaustedError("cannot allocate a host arena of " + std::to_string(bytes) +
                                " bytes: faulting its pages in failed: " + std::strerror(err));
}

}  // namespace

// HostArenaPoolState: what a pool and the arenas it lent share.
struct HostArenaPoolState {
  struct Entry {
    std::byte* data;
    uint64_t mapped;
    bool populated;
  };
  std::mutex mu;
  uint64_t max_cached_bytes = 0;
  uint64_t cached_bytes = 0;
  bool closed = false;          // the pool object is gone: unmap what comes back
  std::vector<Entry> entries;   // oldest first

  // Take: the smallest entry of at least `mapped` bytes and at most twice that,
  // removed from the cache. (A larger one is left for a load of its size: taken by a
  // small load, it would stay pinned, unusable, for as long as that result lives.)
  bool Take(uint64_t mapped, Entry* out) {
    std::lock_guard<std::mutex> lock(mu);
    size_t best = entries.size();
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].mapped >= mapped && entries[i].mapped / 2 <= mapped &&
          (best == entries.size() || entries[i].mapped < entries[best].mapped)) {
        best = i;
      }
    }
    if (best == entries.size()) return false;
    *out = entries[best];
    cached_bytes -= out->mapped;
    entries.erase(entries.begin() + static_cast<std::ptrdiff_t>(best));
    return true;
  }

  // Give: keep `e` for reuse, evicting the oldest entries past the limit; unmaps what
  // is not kept (outside the lock).
  void Give(Entry e) {
    std::vector<Entry> drop;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed || e.mapped > max_cached_bytes) {
        drop.push_back(e);
      } else {
        while (cached_bytes + e.mapped > max_cached_bytes) {
          drop.push_back(entries.front());
          cached_bytes -= entries.front().mapped;
          entries.erase(entries.begin());
        }
        entries.push_back(e);
        cached_bytes += e.mapped;
      }
    }
    for (const Entry& d : drop) ::munmap(d.data, d.mapped);
  }

  // Clear: unmap every cached entry; `close` also makes later returns unmap.
  void Clear(bool close) {
    std::vector<Entry> drop;
    {
      std::lock_guard<std::mutex> lock(mu);
      drop.swap(entries);
      cached_bytes = 0;
      if (close) closed = true;
    }
    for (const Entry& d : drop) ::munmap(d.data, d.mapped);
  }
};

HostArenaPool::HostArenaPool(uint64_t max_cached_bytes)
    : state_(std::make_shared<HostArenaPoolState>()) {
  state_->max_cached_bytes = max_cached_bytes;
}

HostArenaPool::~HostArenaPool() { state_->Clear(/*close=*/true); }

uint64_t HostArenaPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->cached_bytes;
}

void HostArenaPool::Trim() { state_->Clear(/*close=*/false); }

int LiveHostArenas() { return g_live_arenas.load(); }

Result<std::unique_ptr<HostArena>> HostArena::Allocate(uint64_t bytes,
                                                        const HostArenaOptions& options,
                                                        HostArenaPool* pool) {
  if (options.prefault_threads < 0 || options.prefault_threads > 256) {
    return InvalidArgumentError("invalid prefault_threads " +
                                std::to_string(options.prefault_threads) + ": expected 0..256");
  }
  std::shared_ptr<HostArenaPoolState> state = pool != nullptr ? pool->state_ : nullptr;
  if (bytes == 0) {
    g_live_arenas.fetch_add(1);
    return std::unique_ptr<HostArena>(new HostArena(nullptr, 0, 0, true, false, nullptr));
  }
  if (bytes > (1ull << 50)) {
    return ResourceExhaustedError("cannot allocate a host arena of " + std::to_string(bytes) +
                                  " bytes: larger than the address space allows");
  }
  uint64_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  int threads = ResolveThreadCount(options.prefault_threads);
  // The memory: a cached mapping of the pool, else a fresh one.
  HostArenaPoolState::Entry memory{};
  const bool reused = state != nullptr && state->Take(rounded, &memory);
  if (!reused) {
    // Map one huge page more than needed, then trim, so the arena starts 2 MiB aligned.
    uint64_t mapped = rounded + kHugePage;
    // Without MAP_NORESERVE: the kernel's overcommit check refuses an arena the machine
    // clearly cannot hold here, as an error, instead of the OOM killer during the load.
    void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
      return ResourceExhaustedError("cannot allocate a host arena of " + std::to_string(bytes) +
                                    " bytes: " + std::strerror(errno));
    }
    uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
    uintptr_t aligned = (begin + kHugePage - 1) / kHugePage * kHugePage;
    if (aligned > begin) ::munmap(raw, aligned - begin);
    uintptr_t end = begin + mapped;
    if (end > aligned + rounded) ::munmap(reinterpret_cast<void*>(aligned + rounded), end - (aligned + rounded));
    memory = HostArenaPoolState::Entry{reinterpret_cast<std::byte*>(aligned), rounded, false};
    if (options.huge_pages) ::madvise(memory.data, rounded, MADV_HUGEPAGE);  // advisory
  }
  PrefaultResult prefaulted;
  prefaulted.completed = memory.populated;
  if (options.prefault && !memory.populated) {
    prefaulted = PrefaultParallel(memory.data, memory.mapped, threads, options.cancel);
  }
  g_live_arenas.fetch_add(1);
  // A failed populate means memory is short: the mapping is unmapped rather than kept
  // in the pool (the arena gets no pool state).
  std::unique_ptr<HostArena> arena(
      new HostArena(memory.data, bytes, memory.mapped, prefaulted.completed, reused,
                    prefaulted.error != 0 ? nullptr : std::move(state)));
  if (prefaulted.error != 0) return PrefaultFailed(bytes, prefaulted.error);  // unmapped
  if (options.cancel != nullptr && options.cancel->load()) {
    return CancelledError("load cancelled");  // unmapped, or back in the pool it came from
  }
  return arena;
}

HostArena::~HostArena() {
  if (data_ != nullptr) {
    if (pool_ != nullptr) {
      pool_->Give(HostArenaPoolState::Entry{data_, mapped_, populated_});
    } else {
      ::munmap(data_, mapped_);
    }
  }
  g_live_arenas.fetch_sub(1);
}

}  // namespace shardload
