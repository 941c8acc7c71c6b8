// tests/bus_guard_copy_test.cc — GuardedCopy (loader/bus_guard.h) turns a fault in its
// source into `false`: a mapping of a file truncated after it was mapped. Built from
// the sources at -O2 (see BUILD.bazel): optimized, the compiler once dropped the store
// that tells the handler where to jump (memcpy does not read it), so a truncation
// between the mmap reader's size check and its copy killed release builds with SIGBUS.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "loader/bus_guard.h"

namespace shardload {
namespace {

class GuardedCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char path[] = "/tmp/shardload_bus_guard_XXXXXX";
    fd_ = ::mkstemp(path);
    ASSERT_GE(fd_, 0);
    ::unlink(path);
    const std::vector<char> bytes(kBytes, 'x');
    ASSERT_EQ(::write(fd_, bytes.data(), bytes.size()), static_cast<ssize_t>(kBytes));
    map_ = ::mmap(nullptr, kBytes, PROT_READ, MAP_SHARED, fd_, 0);
    ASSERT_NE(map_, MAP_FAILED);
    InstallBusGuard();
  }
  void TearDown() override {
    if (map_ != MAP_FAILED) ::munmap(map_, kBytes);
    if (fd_ >= 0) ::close(fd_);
  }

  // UnderTsan: the guard turns a SIGBUS into an error by siglongjmp out of the
  // signal handler, which ThreadSanitizer does not support (the process dies); the
  // plain and ASan builds run the faulting cases (as truncate_test's mmap cases).
  static bool UnderTsan() {
#if defined(__SANITIZE_THREAD__)
    return true;
#else
    return false;
#endif
  }

  static constexpr size_t kBytes = 4 * 4096;
  int fd_ = -1;
  void* map_ = MAP_FAILED;
};

TEST_F(GuardedCopyTest, CopiesAnIntactMapping) {
  std::string dst(kBytes, '\0');
  EXPECT_EQ(GuardedCopy(dst.data(), map_, kBytes), CopyFault::kNone);
  EXPECT_EQ(dst, std::string(kBytes, 'x'));
}

TEST_F(GuardedCopyTest, ATruncatedSourceIsFalseNotSigbus) {
  if (UnderTsan()) GTEST_SKIP() << "SIGBUS guard not testable under TSan";
  ASSERT_EQ(::ftruncate(fd_, 4096), 0);  // pages 1..3 of the mapping now fault
  std::string dst(kBytes, '\0');
  for (int round = 0; round < 3; ++round) {  // the guard is re-armed each time
    EXPECT_EQ(GuardedCopy(dst.data(), map_, kBytes), CopyFault::kSource) << round;
    EXPECT_EQ(GuardedCopy(dst.data(), static_cast<char*>(map_) + 2 * 4096, 100),
              CopyFault::kSource)
        << round;
  }
  // The page still backed by the file copies as before.
  EXPECT_EQ(GuardedCopy(dst.data(), map_, 4096), CopyFault::kNone);
  EXPECT_EQ(dst.substr(0, 4096), std::string(4096, 'x'));
}

// A destination that faults (memory mapped from a file truncated since) is told apart
// from a faulting source: the caller's memory, not the checkpoint.
TEST_F(GuardedCopyTest, AFaultingDestinationIsToldApart) {
  if (UnderTsan()) GTEST_SKIP() << "SIGBUS guard not testable under TSan";
  char path[] = "/tmp/shardload_bus_guard_dst_XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  ASSERT_EQ(::ftruncate(fd, kBytes), 0);
  void* dst = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(dst, MAP_FAILED);
  ASSERT_EQ(::ftruncate(fd, 0), 0);
  const std::string src(kBytes, 'y');
  EXPECT_EQ(GuardedCopy(dst, src.data(), kBytes), CopyFault::kDestination);
  EXPECT_EQ(GuardedCopy(static_cast<char*>(dst) + 4096, src.data(), 10), CopyFault::kDestination);
  // And a source fault still reads as one afterwards.
  ASSERT_EQ(::ftruncate(fd_, 0), 0);
  std::string out(kBytes, '\0');
  EXPECT_EQ(GuardedCopy(out.data(), map_, kBytes), CopyFault::kSource);
  ::munmap(dst, kBytes);
  ::close(fd);
}

}  // namespace
}  // namespace shardload
