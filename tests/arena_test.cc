// tests/arena_test.cc — HostArena and HostArenaPool: alignment, zeroed fresh memory,
// reuse (best fit, the same memory back), the cache limit and eviction, arenas that
// outlive their pool, concurrent use, and option errors.
#include "loader/arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace shardload {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

std::unique_ptr<HostArena> MustAllocate(uint64_t bytes, HostArenaPool* pool,
                                        HostArenaOptions options = {}) {
  Result<std::unique_ptr<HostArena>> a = HostArena::Allocate(bytes, options, pool);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return a.ok() ? std::move(*a) : nullptr;
}

TEST(HostArenaTest, FreshMemoryIsZeroAligned2MiBAndNotReused) {
  std::unique_ptr<HostArena> a = MustAllocate(3 * kMiB + 5, nullptr);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->size(), 3 * kMiB + 5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data()) % (2 * kMiB), 0u);
  EXPECT_FALSE(a->reused());
  for (uint64_t i = 0; i < a->size(); i += 4093) ASSERT_EQ(a->data()[i], std::byte{0}) << i;
}

TEST(HostArenaTest, BadPrefaultThreadsIsInvalidArgument) {
  HostArenaOptions o;
  o.prefault_threads = 257;
  Result<std::unique_ptr<HostArena>> a = HostArena::Allocate(kMiB, o);
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.status().message(), "invalid prefault_threads 257: expected 0..256");
}

TEST(HostArenaTest, ArenaTheMachineCannotHoldIsResourceExhausted) {
  // 64 TiB: the kernel's overcommit check (modes 0 and 2) refuses it at mmap time, so
  // the load fails with an error instead of the OOM killer faulting it in. (It used to
  // be mapped MAP_NORESERVE, which skips that check.)
  std::FILE* f = std::fopen("/proc/sys/vm/overcommit_memory", "r");
  int mode = -1;
  if (f != nullptr) {
    if (std::fscanf(f, "%d", &mode) != 1) mode = -1;
    std::fclose(f);
  }
  if (mode != 0 && mode != 2) GTEST_SKIP() << "overcommit_memory is " << mode;
  HostArenaOptions options;
  options.prefault = false;  // nothing is touched even where the mapping succeeded
  int live = LiveHostArenas();
  Result<std::unique_ptr<HostArena>> a = HostArena::Allocate(uint64_t{1} << 46, options);
  EXPECT_EQ(a.status(), ResourceExhaustedError("cannot allocate a host arena of "
                                               "70368744177664 bytes: Cannot allocate memory"));
  EXPECT_EQ(LiveHostArenas(), live);
}

TEST(HostArenaTest, FailedPopulateIsReportedNotTouched) {
  // A populate the memory refuses (here: a shared mapping past the end of its file,
  // EFAULT; for an arena, ENOMEM) returns its errno; touching the pages instead, as
  // for a kernel without MADV_POPULATE_WRITE, would raise SIGBUS (or call the OOM
  // killer).
  int fd = ::memfd_create("arena_test", 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  void* p = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_EQ(PrefaultPages(static_cast<std::byte*>(p), 8192), EFAULT);
  EXPECT_EQ(PrefaultPages(static_cast<std::byte*>(p), 4096), 0);
  ::munmap(p, 8192);
  ::close(fd);
}

TEST(HostArenaTest, CancelledPrefaultReleasesTheMemory) {
  // A cancelled flag stops the prefault (checked every 64 MiB per thread) and the
  // allocation fails, its memory unmapped, or back in the pool it came from.
  std::atomic<bool> cancel{true};
  HostArenaOptions options;
  options.cancel = &cancel;
  int live = LiveHostArenas();
  Result<std::unique_ptr<HostArena>> a = HostArena::Allocate(uint64_t{1} << 30, options);
  EXPECT_EQ(a.status(), CancelledError("load cancelled"));
  EXPECT_EQ(LiveHostArenas(), live);
  HostArenaPool pool;
  {
    Result<std::unique_ptr<HostArena>> fresh = HostArena::Allocate(8 << 20, {}, &pool);
    ASSERT_TRUE(fresh.ok());
  }
  ASSERT_GT(pool.cached_bytes(), 0u);
  Result<std::unique_ptr<HostArena>> pooled = HostArena::Allocate(8 << 20, options, &pool);
  EXPECT_EQ(pooled.status(), CancelledError("load cancelled"));
  EXPECT_GT(pool.cached_bytes(), 0u);  // the mapping went back
  cancel = false;
  EXPECT_TRUE(HostArena::Allocate(8 << 20, options, &pool).ok());
}

TEST(HostArenaPoolTest, ReturnedMemoryIsReusedWithItsBytes) {
  HostArenaPool pool;
  int live = LiveHostArenas();
  std::unique_ptr<HostArena> a = MustAllocate(5 * kMiB, &pool);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(LiveHostArenas(), live + 1);
  std::byte* base = a->data();
  std::memset(base, 0x5A, a->size());
  a.reset();
  EXPECT_EQ(LiveHostArenas(), live);
  EXPECT_EQ(pool.cached_bytes(), 6 * kMiB);  // rounded up to 2 MiB
  // A smaller arena (4 MiB rounded, at least half the mapping) fits in the cached
  // mapping: the same memory, not zeroed.
  std::unique_ptr<HostArena> b = MustAllocate(3 * kMiB, &pool);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->data(), base);
  EXPECT_EQ(b->size(), 3 * kMiB);
  EXPECT_TRUE(b->reused());
  EXPECT_EQ(b->data()[kMiB - 1], std::byte{0x5A});
  EXPECT_EQ(pool.cached_bytes(), 0u);
  // Nothing cached now: the next one is fresh.
  std::unique_ptr<HostArena> c = MustAllocate(kMiB, &pool);
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(c->reused());
  EXPECT_NE(c->data(), base);
}

TEST(HostArenaPoolTest, TooSmallMappingsAreNotUsedAndBestFitWins) {
  HostArenaPool pool;
  std::unique_ptr<HostArena> small = MustAllocate(2 * kMiB, &pool);
  std::unique_ptr<HostArena> big = MustAllocate(8 * kMiB, &pool);
  std::unique_ptr<HostArena> mid = MustAllocate(4 * kMiB, &pool);
  std::byte* big_base = big->data();
  std::byte* mid_base = mid->data();
  small.reset();
  big.reset();
  mid.reset();
  EXPECT_EQ(pool.cached_bytes(), 14 * kMiB);
  std::unique_ptr<HostArena> x = MustAllocate(3 * kMiB, &pool);  // 4 MiB fits best
  EXPECT_EQ(x->data(), mid_base);
  std::unique_ptr<HostArena> y = MustAllocate(6 * kMiB, &pool);  // only 8 MiB fits
  EXPECT_EQ(y->data(), big_base);
  std::unique_ptr<HostArena> z = MustAllocate(4 * kMiB, &pool);  // 2 MiB left: too small
  EXPECT_FALSE(z->reused());
  EXPECT_EQ(pool.cached_bytes(), 2 * kMiB);
}

// A small load does not take a cached mapping more than twice its (2 MiB-rounded)
// size: one tensor loaded through the pool would otherwise pin a whole checkpoint's
// arena, and the next full reload would map all of it afresh.
TEST(HostArenaPoolTest, MuchLargerMappingsAreLeftForLoadsTheirSize) {
  HostArenaPool pool;
  std::unique_ptr<HostArena> big = MustAllocate(64 * kMiB, &pool);
  std::byte* big_base = big->data();
  big.reset();
  EXPECT_EQ(pool.cached_bytes(), 64 * kMiB);
  std::unique_ptr<HostArena> tiny = MustAllocate(kMiB, &pool);  // 2 MiB: 32x smaller
  EXPECT_FALSE(tiny->reused());
  EXPECT_NE(tiny->data(), big_base);
  EXPECT_EQ(pool.cached_bytes(), 64 * kMiB);
  std::unique_ptr<HostArena> half = MustAllocate(31 * kMiB, &pool);  // 32 MiB rounded
  EXPECT_TRUE(half->reused());
  EXPECT_EQ(half->data(), big_base);
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(HostArenaPoolTest, LimitEvictsTheOldestAndRefusesOversizedMappings) {
  HostArenaPool pool(6 * kMiB);
  std::unique_ptr<HostArena> a = MustAllocate(2 * kMiB, &pool);
  std::unique_ptr<HostArena> b = MustAllocate(4 * kMiB, &pool);
  std::unique_ptr<HostArena> c = MustAllocate(2 * kMiB, &pool);
  std::unique_ptr<HostArena> huge = MustAllocate(8 * kMiB, &pool);
  std::byte* b_base = b->data();
  a.reset();  // cached: 2
  b.reset();  // cached: 2 + 4 = 6
  EXPECT_EQ(pool.cached_bytes(), 6 * kMiB);
  c.reset();  // 8 > 6: evicts the oldest (a), keeps b and c
  EXPECT_EQ(pool.cached_bytes(), 6 * kMiB);
  huge.reset();  // larger than the limit by itself: unmapped, the cache unchanged
  EXPECT_EQ(pool.cached_bytes(), 6 * kMiB);
  std::unique_ptr<HostArena> d = MustAllocate(3 * kMiB, &pool);
  EXPECT_EQ(d->data(), b_base);
  pool.Trim();
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(HostArenaPoolTest, ZeroLimitKeepsNothing) {
  HostArenaPool pool(0);
  MustAllocate(2 * kMiB, &pool).reset();
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(HostArenaPoolTest, ArenaMayOutliveItsPool) {
  std::unique_ptr<HostArena> a;
  int live = LiveHostArenas();
  {
    HostArenaPool pool;
    a = MustAllocate(2 * kMiB, &pool);
    MustAllocate(2 * kMiB, &pool).reset();
    EXPECT_EQ(pool.cached_bytes(), 2 * kMiB);
  }  // the pool unmaps its cache; `a` still works and unmaps itself later
  std::memset(a->data(), 1, a->size());
  a.reset();
  EXPECT_EQ(LiveHostArenas(), live);
}

TEST(HostArenaPoolTest, ConcurrentAllocateAndReturn) {
  HostArenaPool pool(64 * kMiB);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < 50; ++i) {
        uint64_t bytes = (1 + (t + i) % 4) * kMiB;
        Result<std::unique_ptr<HostArena>> a = HostArena::Allocate(bytes, {}, &pool);
        ASSERT_TRUE(a.ok());
        std::memset((*a)->data(), t + 1, bytes);  // no two live arenas share memory
        for (uint64_t k = 0; k < bytes; k += 4096) {
          ASSERT_EQ((*a)->data()[k], std::byte(t + 1));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(pool.cached_bytes(), 64 * kMiB);
}

}  // namespace
}  // namespace shardload
