// format/scoped_fd.h — an owned POSIX file descriptor.
//
// Provides `ScopedFd`, the project's one RAII owner of a file descriptor: closed by the
// destructor, movable, never copied; `OpenRegularFile` and `PreadFully`, the open and
// read steps the header and index readers share.
//
//   ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
//   if (!fd.valid()) return ErrnoToStatus(errno, path + ": open");
//   SL_ASSIGN_OR_RETURN(size_t got, PreadFully(fd.get(), buf, n, 0, path));
//   // fd is closed when it goes out of scope
#ifndef SHARDLOAD_FORMAT_SCOPED_FD_H_
#define SHARDLOAD_FORMAT_SCOPED_FD_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "format/status.h"

namespace shardload {

// ScopedFd: owns one descriptor (or none, -1). Thread safety: a value type; the
// descriptor itself may be used for positional reads from several threads.
class ScopedFd {
 public:
  ScopedFd() = default;
  // ScopedFd(fd): take ownership of `fd` (a negative value means none).
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(ScopedFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  ScopedFd& operator=(ScopedFd&& o) noexcept {
    if (this != &o) Reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() { Reset(-1); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Reset: close the descriptor held (errors ignored) and take ownership of `fd`.
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

  // Release: give up ownership without closing; returns the descriptor.
  int Release() { return std::exchange(fd_, -1); }

  // Close: close now and report a failure ("<label>: close: <strerror>"), which after
  // writing can mean lost data. Holding none is OK.
  Status Close(std::string_view label) {
    int fd = std::exchange(fd_, -1);
    if (fd >= 0 && ::close(fd) != 0) return ErrnoToStatus(errno, std::string(label) + ": close");
    return OkStatus();
  }

 private:
  int fd_ = -1;
};

// FileIdentity: which file an fstat saw and when it last changed: device, inode,
// modification and status-change times (ns). A file renamed over the path or written
// since compares unequal (ctime, which no user call can set back, changes with every
// write, extract or chmod; a reused inode number gets a new ctime). Equal identities do
// not prove equal bytes (timestamps have a resolution), and unequal ones do not prove
// different bytes (a chmod, a FUSE inode renumbering): callers use it as a cheap first
// check.
struct FileIdentity {
  uint64_t device = 0;
  uint64_t inode = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  friend bool operator==(const FileIdentity&, const FileIdentity&) = default;
};

// IdentityOf: the FileIdentity of an fstat/stat result.
inline FileIdentity IdentityOf(const struct stat& st) {
  return FileIdentity{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                      static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 +
                          static_cast<int64_t>(st.st_mtim.tv_nsec),
                      static_cast<int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 +
                          static_cast<int64_t>(st.st_ctim.tv_nsec)};
}

// kIdentitySettleNs: how old a file's last change must be before an unchanged
// FileIdentity may stand for "not written since" (2 s: coarse kernel timestamp ticks
// and NFS attribute times are well below that).
inline constexpr int64_t kIdentitySettleNs = 2'000'000'000;

// IdentityIsSettled: whether `identity`'s last change (mtime and ctime) is at least
// kIdentitySettleNs older than `now_ns` (CLOCK_REALTIME, ns). A write in the same
// timestamp tick as an fstat leaves the identity unchanged, so a cache keyed on an
// identity that is not settled could miss it (git's "racily clean" entries): callers
// cache only settled identities. A change time in the future is not settled.
inline bool IdentityIsSettled(const FileIdentity& identity, int64_t now_ns) {
  return identity.mtime_ns <= now_ns - kIdentitySettleNs &&
         identity.ctime_ns <= now_ns - kIdentitySettleNs;
}

// RealtimeNs: CLOCK_REALTIME in ns, the clock file timestamps are taken from.
inline int64_t RealtimeNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// OpenRegularFile: `path` opened read-only (O_NONBLOCK: opening a FIFO must not wait
// for a writer; fstat then rejects it — it changes nothing for reads of a regular file),
// with its size in `*size`. Errors: the open or fstat errno as ErrnoToStatus(errno,
// path); invalid_argument "<path>: not a regular file".
inline Result<ScopedFd> OpenRegularFile(const std::string& path, uint64_t* size) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return ErrnoToStatus(errno, path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoToStatus(errno, path);
  if (!S_ISREG(st.st_mode)) return InvalidArgumentError(path + ": not a regular file");
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

// PreadFully: read `size` bytes at `offset`, retrying on EINTR and short reads.
// Returns the number of bytes read (less than `size` only at end of file). Errors: the
// read errno as ErrnoToStatus(errno, path).
inline Result<size_t> PreadFully(int fd, char* buf, size_t size, uint64_t offset,
                                 const std::string& path) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, buf + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, path);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_SCOPED_FD_H_
