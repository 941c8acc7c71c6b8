// format/folder_lock.cc — see folder_lock.h.
#include "format/folder_lock.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <utility>
#include <vector>

namespace shardload {
namespace {

// The descriptors of the locks this process holds. A child made by fork() shares each
// one's open file description, and with it the lock, for as long as its copy stays
// open (an flock belongs to the description): the child handler closes those copies.
// `mu` is held across fork() (prepare/parent/child handlers), so a descriptor is never
// between open and registration, or between unregistration and close, in a child.
struct Registry {
  std::mutex mu;
  std::vector<int> fds;
};

Registry& TheRegistry() {
  static Registry* registry = [] {
    auto* r = new Registry;  // never destroyed: locks may be released during exit
    ::pthread_atfork([] { TheRegistry().mu.lock(); },
                     [] { TheRegistry().mu.unlock(); },
                     [] {
                       Registry& reg = TheRegistry();
                       for (int fd : reg.fds) ::close(fd);
                       reg.fds.clear();
                       reg.mu.unlock();
                     });
    return r;
  }();
  return *registry;
}

int OpenRegistered(const std::string& dir) {
  Registry& reg = TheRegistry();
  std::lock_guard<std::mutex> hold(reg.mu);
  reg.fds.reserve(reg.fds.size() + 1);  // may throw: before the descriptor exists
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) reg.fds.push_back(fd);
  return fd;
}

void CloseRegistered(int fd) {
  Registry& reg = TheRegistry();
  std::lock_guard<std::mutex> hold(reg.mu);
  auto it = std::find(reg.fds.begin(), reg.fds.end(), fd);
  if (it != reg.fds.end()) reg.fds.erase(it);
  ::close(fd);
}

}  // namespace

FolderLock::FolderLock(FolderLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

FolderLock& FolderLock::operator=(FolderLock&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void FolderLock::Release() {
  if (fd_ >= 0) CloseRegistered(std::exchange(fd_, -1));  // closing unlocks
}

Result<FolderLock> LockFolder(const std::string& dir, FolderLock::Mode mode, int64_t max_wait_ms,
                              const std::function<bool()>& cancelled) {
  constexpr int64_t kMaxWaitMs = int64_t{1} << 40;  // about 35 years
  const int64_t wait_ms = std::clamp<int64_t>(max_wait_ms, 0, kMaxWaitMs);
  const int operation = mode == FolderLock::kExclusive ? LOCK_EX : LOCK_SH;
  const int fd = OpenRegistered(dir);
  if (fd < 0) return FolderLock();
  FolderLock lock(fd);  // closes (and unregisters) the descriptor on every return
  const auto start = std::chrono::steady_clock::now();
  int64_t step_us = 100;
  while (::flock(fd, operation | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) return FolderLock();  // ENOLCK, EOPNOTSUPP...: unlocked
    if (cancelled && cancelled()) {
      return CancelledError(dir + ": stopped while waiting for the folder's lock");
    }
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited >= std::chrono::milliseconds(wait_ms)) {
      return Status(StatusCode::kUnavailable,
                    dir + ": gave up after " + std::to_string(wait_ms) +
                        " ms waiting for the folder's lock, held by another process (a "
                        "shardload writer publishing a rewrite there, a reader opening the "
                        "checkpoint, or any program holding an flock on the folder); try "
                        "again");
    }
    struct timespec ts = {0, static_cast<long>(step_us * 1000)};
    ::nanosleep(&ts, nullptr);
    step_us = std::min<int64_t>(step_us * 2, 20'000);
  }
  return lock;
}

}  // namespace shardload
