// loader/arena.h — one large host allocation per load, tensors as aligned views.
//
// Provides `HostArena`: an anonymous private mapping, pre-faulted (in parallel) so that
// filling 2 GiB does not take 500k page faults on the load's critical path, unmapped by
// the destructor; and `HostArenaPool`, which keeps the mappings of destroyed arenas for
// the next Allocate, so that a process that loads again (a server reloading or swapping
// weights) skips the kernel's page faults and zeroing. `LiveHostArenas()` counts arenas
// alive in the process (tests use it to check that failed loads free memory).
//
//   SL_ASSIGN_OR_RETURN(std::unique_ptr<HostArena> arena, HostArena::Allocate(bytes, {}));
//   std::byte* w = arena->data() + offset_of_w;   // offsets from the plan's layout
//
//   HostArenaPool pool;                             // keeps up to 64 GiB by default
//   auto a = HostArena::Allocate(bytes, {}, &pool); // fresh memory the first time
//   a.reset();                                      // the mapping goes back to the pool
//   auto b = HostArena::Allocate(bytes, {}, &pool); // reuses it: b->reused() is true
#ifndef SHARDLOAD_LOADER_ARENA_H_
#define SHARDLOAD_LOADER_ARENA_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "format/status.h"

namespace shardload {

// HostArenaOptions: how an arena's memory is prepared.
struct HostArenaOptions {
  // huge_pages: madvise(MADV_HUGEPAGE) before faulting. Default false: with the
  // common THP setting `defrag=madvise`, the kernel compacts memory synchronously to
  // find huge pages, and right after a checkpoint was written or read (page cache full
  // of its files) that stall measured 4-8x the cost of faulting 4 KiB pages (1 GiB:
  // 1.5-3.1 s vs 0.37 s, 2-core VM; 0.05 s only when free huge pages happen to exist).
  bool huge_pages = false;
  // prefault: fault every page in at allocation time (MADV_POPULATE_WRITE, or a touch
  // of each page where the kernel lacks it). Default true.
  bool prefault = true;
  // prefault_threads: threads used to pre-fault; 0 = hardware threads. Default 0.
  // Valid: 0..256.
  int prefault_threads = 0;
  // cancel: when set (from any thread), the prefault stops within 64 MiB per thread
  // and Allocate returns cancelled "load cancelled", its memory released (or pooled).
  // LoadAll points it at LoadOptions::cancel. Default none.
  const std::atomic<bool>* cancel = nullptr;
};

class HostArenaPool;
struct HostArenaPoolState;

// PrefaultPages: fault every page of [p, p + n) in for writing: one
// madvise(MADV_POPULATE_WRITE), or, where the kernel lacks it (before Linux 5.14,
// EINVAL), a zero byte written to the start of each page. Returns 0, or the errno of a
// populate the memory itself refused (ENOMEM: the machine cannot back it; EFAULT,
// EHWPOISON), in which case some pages may be resident and none is touched further. For
// fresh anonymous memory (all zero already): `p` must be page-aligned and the range
// mapped writable. Thread-safe on disjoint ranges. HostArena's prefault uses it (on
// several threads for large arenas).
int PrefaultPages(std::byte* p, uint64_t n);

// HostArena: `size()` bytes of host memory, 2 MiB aligned: zero-initialized when
// freshly mapped; when taken from a pool (`reused()`), holding whatever its previous
// user left there. Thread safety: the memory is plain memory; the object itself is
// immutable. Lifetime: views into data() are valid until the arena is destroyed; then
// the mapping is unmapped, or handed back to the pool it came from (which may outlive
// the arena or not: the pool's state is shared).
class HostArena {
 public:
  // Allocate: an arena of `bytes` (0 is allowed and maps nothing). With a `pool`, the
  // smallest cached mapping that is large enough, and at most twice the 2 MiB-rounded
  // size, is reused (no page faults, no zeroing, not pre-faulted again when it was
  // pre-faulted before); without one, or when none fits, fresh memory is mapped (and
  // pre-faulted per `options`). Thread-safe
  // with respect to the pool. Errors: invalid_argument for bad options;
  // resource_exhausted "cannot allocate a host arena of N bytes: <strerror>" when mmap
  // fails (the kernel's overcommit heuristic refuses an arena larger than RAM plus swap;
  // it knows nothing of cgroup limits), "...: faulting its pages in failed: <strerror>"
  // when the pre-fault does (its memory is then unmapped, not pooled). Short of that, a
  // machine or container out of memory may still meet the OOM killer while faulting
  // pages in: the kernel's page allocator calls it before any ENOMEM comes back.
  static Result<std::unique_ptr<HostArena>> Allocate(uint64_t bytes,
                                                     const HostArenaOptions& options,
                                                     HostArenaPool* pool = nullptr);
  ~HostArena();
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;

  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  // reused: true when the memory came from a pool (its bytes are not zero).
  bool reused() const { return reused_; }

 private:
  HostArena(std::byte* data, uint64_t size, uint64_t mapped, bool populated, bool reused,
            std::shared_ptr<HostArenaPoolState> pool)
      : data_(data), size_(size), mapped_(mapped), populated_(populated), reused_(reused),
        pool_(std::move(pool)) {}
  std::byte* data_;
  uint64_t size_;
  uint64_t mapped_;
  bool populated_;  // every page was pre-faulted
  bool reused_;
  std::shared_ptr<HostArenaPoolState> pool_;  // null: unmap on destruction
};

// HostArenaPool: a cache of host arena mappings for reuse across loads. Memory kept
// here stays mapped and resident (it counts in the process's RSS) until it is reused,
// trimmed, or the pool is destroyed. Pass it to HostArena::Allocate, or to LoadAll
// through LoadOptions::host_arena_pool. Thread safety: every method may be called from
// any thread; arenas may be allocated from and returned to one pool concurrently.
// Lifetime: arenas may outlive the pool (they then unmap their memory themselves).
class HostArenaPool {
 public:
  // kDefaultMaxCachedBytes: the default cache limit, 64 GiB (also the C API's
  // SL_HOST_POOL_DEFAULT_MAX_CACHED_BYTES and Python's DEFAULT_MAX_CACHED_BYTES).
  static constexpr uint64_t kDefaultMaxCachedBytes = uint64_t{64} << 30;

  // HostArenaPool: keep at most `max_cached_bytes` of returned mappings (default
  // kDefaultMaxCachedBytes). A returned mapping that would push the cache past it evicts
  // the oldest cached mappings first; one larger than the limit by itself is unmapped.
  explicit HostArenaPool(uint64_t max_cached_bytes = kDefaultMaxCachedBytes);
  ~HostArenaPool();  // unmaps every cached mapping
  HostArenaPool(const HostArenaPool&) = delete;
  HostArenaPool& operator=(const HostArenaPool&) = delete;

  // cached_bytes: bytes of mappings waiting for reuse now.
  uint64_t cached_bytes() const;
  // Trim: unmap every cached mapping (arenas in use are not affected).
  void Trim();

 private:
  friend class HostArena;
  std::shared_ptr<HostArenaPoolState> state_;
};

// LiveHostArenas: the number of HostArena objects currently alive in the process.
int LiveHostArenas();

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_ARENA_H_
