// Tests of format/folder_lock.h: shared and exclusive modes, the bounded wait and its
// message, best effort on what cannot be locked, and fork() children not keeping a
// parent's lock.
#include "format/folder_lock.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace shardload {
namespace {

using ::shardload::testing::MakeTestDir;
using ::shardload::testing::WriteFile;

std::string GaveUp(const std::string& dir, int64_t ms) {
  return dir + ": gave up after " + std::to_string(ms) +
         " ms waiting for the folder's lock, held by another process (a shardload writer "
         "publishing a rewrite there, a reader opening the checkpoint, or any program "
         "holding an flock on the folder); try again";
}

TEST(FolderLockTest, ReadersShareWritersExclude) {
  std::string dir = MakeTestDir("folder_lock");
  Result<FolderLock> reader1 = LockFolder(dir, FolderLock::kShared, 0);
  Result<FolderLock> reader2 = LockFolder(dir, FolderLock::kShared, 0);
  ASSERT_TRUE(reader1.ok() && reader1->held());
  ASSERT_TRUE(reader2.ok() && reader2->held());
  Result<FolderLock> writer = LockFolder(dir, FolderLock::kExclusive, 20);
  EXPECT_EQ(writer.status(), Status(StatusCode::kUnavailable, GaveUp(dir, 20)));
  reader1->Release();
  EXPECT_FALSE(reader1->held());
  *reader2 = FolderLock();  // move-assigning releases too
  writer = LockFolder(dir, FolderLock::kExclusive, 0);
  ASSERT_TRUE(writer.ok() && writer->held());
  // A negative wait is no wait; one past ~35 years is taken as that, not overflowed.
  EXPECT_EQ(LockFolder(dir, FolderLock::kShared, -5).status(),
            Status(StatusCode::kUnavailable, GaveUp(dir, 0)));
  FolderLock moved = std::move(*writer);
  EXPECT_FALSE(writer->held());
  EXPECT_TRUE(moved.held());
  moved.Release();
  Result<FolderLock> long_wait = LockFolder(dir, FolderLock::kShared, INT64_MAX);
  EXPECT_TRUE(long_wait.ok() && long_wait->held());
}

TEST(FolderLockTest, WhatCannotBeLockedIsNotAnError) {
  std::string dir = MakeTestDir("folder_lock_none");
  ASSERT_TRUE(WriteFile(dir + "/f", "x"));
  for (const std::string& path : {dir + "/f", dir + "/missing"}) {
    Result<FolderLock> lock = LockFolder(path, FolderLock::kExclusive, 0);
    ASSERT_TRUE(lock.ok()) << path << ": " << lock.status().ToString();
    EXPECT_FALSE(lock->held()) << path;
  }
}

// A child forked while the parent holds a lock shares the descriptor's open file
// description, which an flock belongs to; the child's copy is closed at the fork, so
// the lock goes when the parent releases it, not when the child exits. (Without that,
// a DataLoader worker forked during a load's catalog read kept every writer waiting.)
TEST(FolderLockTest, ForkedChildrenDoNotKeepTheParentsLock) {
  std::string dir = MakeTestDir("folder_lock_fork");
  Result<FolderLock> held = LockFolder(dir, FolderLock::kShared, 0);
  ASSERT_TRUE(held.ok() && held->held());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::pause();  // lives until killed, holding whatever it inherited
    ::_exit(0);
  }
  held->Release();
  Result<FolderLock> writer = LockFolder(dir, FolderLock::kExclusive, 2000);
  EXPECT_TRUE(writer.ok() && writer->held()) << writer.status().ToString();
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
}

}  // namespace
}  // namespace shardload
