// loader/arena.cc — HostArena: anonymous mapping, huge pages, parallel pre-fault.
#include "loader/arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <thread>
#include <vector>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace shardload {
namespace {

std::atomic<int> g_live_arenas{0};
constexpr uint64_t kHugePage = 2ull << 20;

// Prefault: fault [p, p + n) in, page by page only where MADV_POPULATE_WRITE is missing.
void Prefault(std::byte* p, uint64_t n) {
  if (::madvise(p, n, MADV_POPULATE_WRITE) == 0) return;
  long page = ::sysconf(_SC_PAGESIZE);
  for (uint64_t i = 0; i < n; i += static_cast<uint64_t>(page)) {
    reinterpret_cast<volatile char*>(p)[i] = 0;
  }
}

}  // namespace

int LiveHostArenas() { return g_live_arenas.load(); }

Result<std::unique_ptr<HostArena>> HostArena::Allocate(uint64_t bytes,
                                                        const HostArenaOptions& options) {
  if (options.prefault_threads < 0 || options.prefault_threads > 256) {
    return InvalidArgumentError("invalid prefault_threads " +
                                std::to_string(options.prefault_threads) + ": expected 0..256");
  }
  if (bytes == 0) {
    g_live_arenas.fetch_add(1);
    return std::unique_ptr<HostArena>(new HostArena(nullptr, 0, 0));
  }
  if (bytes > (1ull << 50)) {
    return ResourceExhaustedError("cannot allocate a host arena of " + std::to_string(bytes) +
                                  " bytes: larger than the address space allows");
  }
  // Map one huge page more than needed, then trim, so the arena starts 2 MiB aligned.
  uint64_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  uint64_t mapped = rounded + kHugePage;
  void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    return ResourceExhaustedError("cannot allocate a host arena of " + std::to_string(bytes) +
                                  " bytes: " + std::strerror(errno));
  }
  uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
  uintptr_t aligned = (begin + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > begin) ::munmap(raw, aligned - begin);
  uintptr_t end = begin + mapped;
  if (end > aligned + rounded) ::munmap(reinterpret_cast<void*>(aligned + rounded), end - (aligned + rounded));
  std::byte* data = reinterpret_cast<std::byte*>(aligned);
  if (options.huge_pages) ::madvise(data, rounded, MADV_HUGEPAGE);  // advisory; failure is fine
  if (options.prefault) {
    int threads = options.prefault_threads > 0
                      ? options.prefault_threads
                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    uint64_t per = (rounded / kHugePage + threads - 1) / threads * kHugePage;
    if (threads == 1 || rounded <= kHugePage * 4) {
      Prefault(data, rounded);
    } else {
      std::vector<std::thread> pool;
      for (uint64_t off = 0; off < rounded; off += per) {
        uint64_t n = std::min(per, rounded - off);
        try {
          pool.emplace_back([data, off, n] { Prefault(data + off, n); });
        } catch (const std::exception&) {
          Prefault(data + off, n);  // no thread to be had: do this part here
        }
      }
      for (std::thread& t : pool) t.join();
    }
  }
  g_live_arenas.fetch_add(1);
  return std::unique_ptr<HostArena>(new HostArena(data, bytes, rounded));
}

HostArena::~HostArena() {
  if (data_ != nullptr) ::munmap(data_, mapped_);
  g_live_arenas.fetch_sub(1);
}

}  // namespace shardload
