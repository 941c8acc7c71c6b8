// loader/arena.h — one large host allocation per load, tensors as aligned views.
//
// Provides `HostArena`: an anonymous private mapping, asked for transparent huge pages
// and pre-faulted (in parallel) so that filling 2 GiB does not take 500k page faults
// on the load's critical path. Unmapped by the destructor. `LiveHostArenas()` counts
// arenas alive in the process (tests use it to check that failed loads free memory).
//
//   SL_ASSIGN_OR_RETURN(std::unique_ptr<HostArena> arena, HostArena::Allocate(bytes, {}));
//   std::byte* w = arena->data() + offset_of_w;   // offsets from the plan's layout
#ifndef SHARDLOAD_LOADER_ARENA_H_
#define SHARDLOAD_LOADER_ARENA_H_

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
};

// HostArena: `size()` bytes of zero-initialized host memory, 2 MiB aligned.
// Thread safety: the memory is plain memory; the object itself is immutable.
// Lifetime: views into data() are valid until the arena is destroyed.
class HostArena {
 public:
  // Allocate: an arena of `bytes` (0 is allowed and maps nothing).
  // Errors: invalid_argument for bad options; resource_exhausted
  // "cannot allocate a host arena of N bytes: <strerror>" when mmap fails.
  static Result<std::unique_ptr<HostArena>> Allocate(uint64_t bytes,
                                                     const HostArenaOptions& options);
  ~HostArena();
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;

  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  HostArena(std::byte* data, uint64_t size, uint64_t mapped)
      : data_(data), size_(size), mapped_(mapped) {}
  std::byte* data_;
  uint64_t size_;
  uint64_t mapped_;
};

// LiveHostArenas: the number of HostArena objects currently alive in the process.
int LiveHostArenas();

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_ARENA_H_
