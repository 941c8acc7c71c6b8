// format/folder_lock.h — the lock that writers and readers of a checkpoint folder share.
//
// Provides `FolderLock` (an flock(2) on a folder, held until it is destroyed) and
// `LockFolder`. The protocol: a shardload writer holds the exclusive lock from its
// first rename into the folder to the end of its sweep of stale files; readers of a
// sharded checkpoint (or of a folder) hold the shared lock while they list the folder,
// read the index and open the shard files they read, so what they open is all of one
// save (a single file's path needs no lock: one rename replaces it whole). Children made by fork() do not keep
// a lock their parent holds (their copies of its descriptor are closed in the child).
//
//   SL_ASSIGN_OR_RETURN(FolderLock lock, LockFolder(dir, FolderLock::kShared, 60000));
//   ... open the files ...                          // unlocked when `lock` goes away
#ifndef SHARDLOAD_FORMAT_FOLDER_LOCK_H_
#define SHARDLOAD_FORMAT_FOLDER_LOCK_H_

#include <cstdint>
#include <functional>
#include <string>

#include "format/status.h"

namespace shardload {

// kDefaultFolderLockWaitMs: how long readers and writers wait for a folder's lock by
// default (60 s): far longer than a publish or a catalog read takes, short enough that
// a stopped or stuck holder becomes an error rather than a hang.
inline constexpr int64_t kDefaultFolderLockWaitMs = 60000;

// FolderLock: a held flock on one folder, or nothing (a default-constructed one, or
// one LockFolder could not take on a file system without flock). Move-only; the lock
// is released when the object is destroyed or Release is called. Thread safety: a
// value type; distinct objects may be used from different threads.
class FolderLock {
 public:
  enum Mode { kShared, kExclusive };

  FolderLock() = default;
  FolderLock(FolderLock&& other) noexcept;
  FolderLock& operator=(FolderLock&& other) noexcept;
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;
  ~FolderLock() { Release(); }

  // held: whether a lock is held.
  bool held() const { return fd_ >= 0; }
  // Release: unlock now (nothing when none is held).
  void Release();

 private:
  friend Result<FolderLock> LockFolder(const std::string& dir, Mode mode, int64_t max_wait_ms,
                                       const std::function<bool()>& cancelled);
  explicit FolderLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// LockFolder: take `mode` on the folder `dir` (its own descriptor, so threads of one
// process exclude each other as processes do), waiting up to `max_wait_ms` (>= 0;
// values past about 35 years are taken as that) with a steady clock. Best effort: a
// folder that cannot be opened (no read permission, not a folder) or locked (a file
// system without flock) gives a FolderLock that holds nothing, and no error. After the
// wait: unavailable "<dir>: gave up after N ms waiting for the folder's lock, held by
// another process (a shardload writer publishing a rewrite there, a reader opening the
// checkpoint, or any program holding an flock on the folder); try again". The lock is
// cooperative: any process that may open the folder for reading can hold it, and so
// delay (then fail) shardload's readers and writers there. `cancelled`, when set, is asked at
// every poll (from this thread); once it returns true: cancelled "<dir>: stopped while
// waiting for the folder's lock". Thread-safe.
Result<FolderLock> LockFolder(const std::string& dir, FolderLock::Mode mode, int64_t max_wait_ms,
                              const std::function<bool()>& cancelled = {});

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_FOLDER_LOCK_H_
