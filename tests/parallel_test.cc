// tests/parallel_test.cc — RunParts runs every part once, on the caller and on threads
// of their own, and brings an exception thrown by a part back to the calling thread
// (it used to end the process from a started thread).
#include "loader/parallel.h"

#include <atomic>
#include <new>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace shardload {
namespace {

TEST(RunPartsTest, RunsEveryPartOnceWithPartZeroOnTheCaller) {
  std::vector<std::atomic<int>> calls(8);
  std::thread::id part0;
  RunParts(8, [&](size_t i) {
    ++calls[i];
    if (i == 0) part0 = std::this_thread::get_id();
  });
  for (const std::atomic<int>& c : calls) EXPECT_EQ(c.load(), 1);
  EXPECT_EQ(part0, std::this_thread::get_id());
  RunParts(0, [&](size_t) { ADD_FAILURE() << "no part to run"; });
}

TEST(RunPartsTest, AnExceptionOnAThreadReachesTheCallerAfterEveryPartReturned) {
  std::atomic<int> finished{0};
  EXPECT_THROW(RunParts(4,
                        [&](size_t i) {
                          if (i == 3) throw std::bad_alloc();
                          ++finished;
                        }),
               std::bad_alloc);
  EXPECT_EQ(finished.load(), 3);
  // Several throw: one of them comes back; the process survives either way.
  EXPECT_THROW(RunParts(4, [](size_t i) { throw std::runtime_error("part " + std::to_string(i)); }),
               std::runtime_error);
}

}  // namespace
}  // namespace shardload
