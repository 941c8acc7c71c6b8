// loader/file.cc — PreadFile, MappedFile, DirectFile and UringFile (see loader/file.h).
#include "loader/file.h"

#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/detail/os_file_functions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <vector>
#include "format/scoped_fd.h"
#include "loader/bus_guard.h"
#include "loader/uring.h"

namespace shardload {
namespace {

constexpr uint64_t kDirectAlignment = 4096;
// kMaxSyscallBytes: the most one read(2) is asked for (Linux caps a read near 2 GiB).
constexpr uint64_t kMaxSyscallBytes = 1ull << 30;
// kDirectBounceBytes: bounce buffer size for DirectFile::ReadAt into unaligned memory.
constexpr uint64_t kDirectBounceBytes = 8ull << 20;
// kShiftChunkBytes: the piece size of a phase-shifted read (PreadPhased); small enough
// that a piece is still in the CPU's cache when it is moved into place.
constexpr uint64_t kShiftChunkBytes = 256ull << 10;

// PhaseShift: how far PreadPhased moves a read of file `offset` into `memory` (0: read
// in place). Measured on the AMD EPYC host (bench/RESULTS.md, "File phase"), the
// kernel's copy out of the page cache runs at full speed when source and destination
// differ by a multiple of 32 bytes, and at 0.68-0.87x that otherwise; so only those
// reads are shifted, by the distance that aligns them to kCopyPhaseBytes.
uint64_t PhaseShift(uint64_t offset, const void* memory) {
  const uint64_t shift =
      PhaseDistance(offset, reinterpret_cast<uintptr_t>(memory), kCopyPhaseBytes);
  return shift % 32 == 0 ? 0 : shift;
}

using Fd = ScopedFd;

// AlignedBuffer: heap memory aligned to kDirectAlignment, freed by the destructor.
struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte, FreeDeleter>;

Result<AlignedBuffer> AllocateAligned(uint64_t bytes) {
  void* p = nullptr;
  int rc = posix_memalign(&p, kDirectAlignment, std::max<uint64_t>(bytes, kDirectAlignment));
  if (rc != 0) return ErrnoToStatus(rc, "allocating " + std::to_string(bytes) + " aligned bytes");
  return AlignedBuffer(static_cast<std::byte*>(p));
}

uint64_t RoundDown(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

Status RangeError(const std::string& path, uint64_t offset, uint64_t length, uint64_t size) {
  return OutOfRangeError(path + ": read of " + std::to_string(length) + " bytes at offset " +
                         std::to_string(offset) + " passes the end of the file (" +
                         std::to_string(size) + " bytes)");
}

Status CheckRange(const std::string& path, uint64_t offset, uint64_t length, uint64_t size) {
  if (offset > size || length > size - offset) return RangeError(path, offset, length, size);
  return OkStatus();
}

Status ShrankError(const std::string& path, uint64_t now, uint64_t expected) {
  return DataLossError(path + ": file shrank to " + std::to_string(now) +
                       " bytes while reading (expected " + std::to_string(expected) + ")");
}

// ShortReadError: the error for a read that ended early at `offset`: "shrank" when
// the file is now shorter than at open, else "short read".
Status ShortReadError(int fd, const std::string& path, uint64_t size, uint64_t offset) {
  struct stat st;
  if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) < size) {
    return ShrankError(path, static_cast<uint64_t>(st.st_size), size);
  }
  return DataLossError(path + ": short read at offset " + std::to_string(offset));
}

Status ReadError(int err, const std::string& path, uint64_t offset) {
  return ErrnoToStatus(err, path + ": read at offset " + std::to_string(offset));
}

struct Opened {
  Fd fd;
  struct stat st;
};

// AdoptFd: take ownership of `fd` (closed on error too) and fstat it.
Result<Opened> AdoptFd(int fd, const std::string& path) {
  Opened o;
  o.fd = Fd(fd);
  if (::fstat(fd, &o.st) != 0) return ErrnoToStatus(errno, path + ": fstat");
  if (S_ISDIR(o.st.st_mode)) return InvalidArgumentError(path + ": is a directory");
  if (!S_ISREG(o.st.st_mode)) return InvalidArgumentError(path + ": not a regular file");
  return o;
}

Result<Opened> OpenForRead(const std::string& path, int extra_flags) {
  // O_NONBLOCK: a path that became a FIFO since the catalog read it must not block
  // the open until a writer comes (AdoptFd then refuses it); cleared again for the
  // regular file, where io_uring would otherwise answer -EAGAIN instead of waiting.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra_flags);
  if (fd < 0) {
    int err = errno;
    if (err == EINVAL && (extra_flags & O_DIRECT)) {
      struct stat st;
      if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        return InvalidArgumentError(path + (S_ISDIR(st.st_mode) ? ": is a directory"
                                                                : ": not a regular file"));
      }
      return UnimplementedError(path + ": the filesystem refuses O_DIRECT");
    }
    return ErrnoToStatus(err, path);
  }
  SL_ASSIGN_OR_RETURN(Opened o, AdoptFd(fd, path));
  const int flags = ::fcntl(o.fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(o.fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return ErrnoToStatus(errno, path + ": fcntl");
  }
  return o;
}

// FdFile: the state shared by every mode: the path, the size and identity at open,
// and a descriptor kept open for fstat (and for reads in the positional modes).
class FdFile {
 public:
  FdFile(std::string path, Opened o)
      : path_(std::move(path)),
        fd_(std::move(o.fd)),
        size_(static_cast<uint64_t>(o.st.st_size)),
        identity_(IdentityOf(o.st)) {}

  Status CheckUnchangedImpl() const {
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) return ErrnoToStatus(errno, path_ + ": fstat");
    if (static_cast<uint64_t>(st.st_size) < size_) {
      return ShrankError(path_, static_cast<uint64_t>(st.st_size), size_);
    }
    if (::stat(path_.c_str(), &st) != 0) {
      int err = errno;
      if (err == ENOENT || err == ENOTDIR) {
        return AbortedError(path_ + ": file was removed while loading");
      }
      return ErrnoToStatus(err, path_ + ": stat");
    }
    if (static_cast<uint64_t>(st.st_ino) != identity_.inode ||
        static_cast<uint64_t>(st.st_dev) != identity_.device) {
      return AbortedError(path_ + ": file was replaced while loading (inode changed)");
    }
    return OkStatus();
  }

  // StatImpl: ReadableFile::Stat through the descriptor.
  Status StatImpl(uint64_t* size, std::optional<FileIdentity>* identity) const {
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) return ErrnoToStatus(errno, path_ + ": fstat");
    *size = static_cast<uint64_t>(st.st_size);
    *identity = IdentityOf(st);
    return OkStatus();
  }

  // CurrentSizeCovers: OK when the file is still at least `end` bytes long.
  // Buffered reads call it AFTER copying too: a truncation that races a read can zero
  // the tail of the page holding the new end of file while the kernel copies it, and the
  // read still reports every byte (it checked the size before copying). The kernel sets
  // the new size before it zeroes, so a size check after the copy sees any such
  // truncation, and the read becomes data_loss instead of returning zeros.
  Status CurrentSizeCovers(uint64_t end) const {
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) return ErrnoToStatus(errno, path_ + ": fstat");
    if (static_cast<uint64_t>(st.st_size) < end) {
      return ShrankError(path_, static_cast<uint64_t>(st.st_size), size_);
    }
    return OkStatus();
  }

  // PreadAll: positional read of exactly out.size() bytes (EINTR and short reads handled).
  Status PreadAll(uint64_t offset, std::span<std::byte> out) const {
    uint64_t done = 0;
    while (done < out.size()) {
      uint64_t want = std::min<uint64_t>(out.size() - done, kMaxSyscallBytes);
      ssize_t r = ::pread(fd_.get(), out.data() + done, want, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ReadError(errno, path_, offset + done);
      }
      if (r == 0) return ShortReadError(fd_.get(), path_, size_, offset + done);
      done += static_cast<uint64_t>(r);
    }
    return OkStatus();
  }

  // PreadPhased: as PreadAll, but when PhaseShift says `out` is off the file's phase
  // and it spans more than two kShiftChunkBytes pieces, each piece but the last is read
  // aligned with its source, d (< 64) bytes further on in `out`, and moved back by d
  // while it is in cache: the kernel's copy out of the page cache runs at the aligned
  // rate, and the move costs less than what that saves (bench/RESULTS.md, "File
  // phase"). A piece's d extra bytes land inside `out`, on bytes the next piece
  // rewrites; the last piece is read in place.
  Status PreadPhased(uint64_t offset, std::span<std::byte> out) const {
    const uint64_t shift = PhaseShift(offset, out.data());
    if (shift == 0 || out.size() <= 2 * kShiftChunkBytes) return PreadAll(offset, out);
    uint64_t done = 0;
    for (; out.size() - done > kShiftChunkBytes + kCopyPhaseBytes; done += kShiftChunkBytes) {
      std::byte* piece = out.data() + done;
      SL_RETURN_IF_ERROR(PreadAll(offset + done, {piece + shift, kShiftChunkBytes}));
      std::memmove(piece, piece + shift, kShiftChunkBytes);
    }
    return PreadAll(offset + done, out.subspan(done));
  }

  std::string path_;
  Fd fd_;
  uint64_t size_;
  FileIdentity identity_;  // at open; CheckUnchangedImpl compares its device and inode
};

// ---------------------------------------------------------------------------------
// PreadFile

class PreadFile final : public ReadableFile {
 public:
  PreadFile(std::string path, Opened o) : f_(std::move(path), std::move(o)) {}
  const std::string& path() const override { return f_.path_; }
  uint64_t size() const override { return f_.size_; }
  Status CheckUnchanged() const override { return f_.CheckUnchangedImpl(); }
  std::optional<FileIdentity> identity() const override { return f_.identity_; }
  Status Stat(uint64_t* size, std::optional<FileIdentity>* identity) const override {
    return f_.StatImpl(size, identity);
  }

  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    SL_RETURN_IF_ERROR(CheckRange(f_.path_, offset, out.size(), f_.size_));
    SL_RETURN_IF_ERROR(f_.PreadPhased(offset, out));
    return f_.CurrentSizeCovers(offset + out.size());  // see CurrentSizeCovers
  }

  // ReadVAt: runs of segments go to one preadv, except that a segment PreadPhased
  // would shift (long, not at the file's phase) is read by it alone.
  Status ReadVAt(uint64_t offset, std::span<const iovec> iov) const override {
    uint64_t total = 0;
    for (const iovec& v : iov) total += v.iov_len;
    SL_RETURN_IF_ERROR(CheckRange(f_.path_, offset, total, f_.size_));
    uint64_t pos = offset;
    size_t run = 0;            // first segment not yet read
    uint64_t run_pos = offset;  // its file offset
    for (size_t i = 0; i <= iov.size(); ++i) {
      const bool shifted = i < iov.size() && iov[i].iov_len > 2 * kShiftChunkBytes &&
                           PhaseShift(pos, iov[i].iov_base) != 0;
      if (i == iov.size() || shifted) {
        SL_RETURN_IF_ERROR(PreadvAll(run_pos, iov.subspan(run, i - run)));
        if (i == iov.size()) break;
        SL_RETURN_IF_ERROR(
            f_.PreadPhased(pos, {static_cast<std::byte*>(iov[i].iov_base), iov[i].iov_len}));
        run = i + 1;
        run_pos = pos + iov[i].iov_len;
      }
      pos += iov[i].iov_len;
    }
    return f_.CurrentSizeCovers(offset + total);  // see CurrentSizeCovers
  }

 private:
  // PreadvAll: preadv of every byte `iov` names at `offset` (EINTR, short reads and
  // more than IOV_MAX segments handled).
  Status PreadvAll(uint64_t offset, std::span<const iovec> iov) const {
    std::vector<iovec> pending(iov.begin(), iov.end());
    size_t first = 0;
    uint64_t pos = offset;
    while (first < pending.size()) {
      if (pending[first].iov_len == 0) {
        ++first;
        continue;
      }
      int count = static_cast<int>(std::min<size_t>(pending.size() - first, IOV_MAX));
      ssize_t r = ::preadv(f_.fd_.get(), pending.data() + first, count, static_cast<off_t>(pos));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ReadError(errno, f_.path_, pos);
      }
      if (r == 0) return ShortReadError(f_.fd_.get(), f_.path_, f_.size_, pos);
      pos += static_cast<uint64_t>(r);
      uint64_t left = static_cast<uint64_t>(r);
      while (left > 0) {
        iovec& v = pending[first];
        uint64_t take = std::min<uint64_t>(left, v.iov_len);
        v.iov_base = static_cast<std::byte*>(v.iov_base) + take;
        v.iov_len -= take;
        left -= take;
        if (v.iov_len == 0) ++first;
      }
    }
    return OkStatus();
  }

  FdFile f_;
};

// ---------------------------------------------------------------------------------
// MappedFile

// DescriptorMapping: a Boost.Interprocess "MemoryMappable" over a descriptor we hold.
// bip::file_mapping would re-open the file by path, and a file renamed over that path
// after our open/fstat would then be mapped in its place — another inode, possibly
// shorter than the size we checked, so touching the view past its end is a SIGBUS.
// mapped_region only needs get_mapping_handle(), so handing it our own descriptor maps
// exactly the inode whose size and identity FdFile recorded. Nothing is re-opened.
class DescriptorMapping {
 public:
  explicit DescriptorMapping(int fd) : fd_(fd) {}
  boost::interprocess::mapping_handle_t get_mapping_handle() const {
    return boost::interprocess::ipcdetail::mapping_handle_from_file_handle(fd_);
  }

 private:
  int fd_;
};

class MappedFileImpl final : public MappedFile {
 public:
  MappedFileImpl(std::string path, Opened o) : f_(std::move(path), std::move(o)) {}

  // Map: map the first size() bytes of the descriptor opened (and fstat'ed) at open.
  // The mapping holds its own reference to the inode; the descriptor stays open for
  // fstat checks. A file truncated below size() between the fstat and the mmap is
  // caught by the size check after mapping (data_loss).
  Status Map() {
    if (f_.size_ == 0) return OkStatus();
    try {
      namespace bip = boost::interprocess;
      region_ = bip::mapped_region(DescriptorMapping(f_.fd_.get()), bip::read_only, 0, f_.size_);
      region_.advise(bip::mapped_region::advice_sequential);
      region_.advise(bip::mapped_region::advice_willneed);
    } catch (const std::exception& e) {
      return InternalError(f_.path_ + ": cannot map the file: " + e.what());
    }
    if (region_.get_size() < f_.size_) {
      return InternalError(f_.path_ + ": mapping is shorter than the file");
    }
    SL_RETURN_IF_ERROR(f_.CurrentSizeCovers(f_.size_));
    InstallBusGuard();
    return OkStatus();
  }

  const std::string& path() const override { return f_.path_; }
  uint64_t size() const override { return f_.size_; }
  Status CheckUnchanged() const override { return f_.CheckUnchangedImpl(); }
  std::optional<FileIdentity> identity() const override { return f_.identity_; }
  Status Stat(uint64_t* size, std::optional<FileIdentity>* identity) const override {
    return f_.StatImpl(size, identity);
  }

  std::span<const std::byte> Bytes() const override {
    if (f_.size_ == 0) return {};
    return {static_cast<const std::byte*>(region_.get_address()), f_.size_};
  }

  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    iovec v{out.data(), out.size()};
    return ReadVAt(offset, std::span<const iovec>(&v, 1));
  }

  Status ReadVAt(uint64_t offset, std::span<const iovec> iov) const override {
    uint64_t total = 0;
    for (const iovec& v : iov) total += v.iov_len;
    SL_RETURN_IF_ERROR(CheckRange(f_.path_, offset, total, f_.size_));
    if (total == 0) return OkStatus();
    SL_RETURN_IF_ERROR(f_.CurrentSizeCovers(offset + total));
    const std::byte* base = static_cast<const std::byte*>(region_.get_address());
    uint64_t pos = offset;
    for (const iovec& v : iov) {
      if (v.iov_len == 0) continue;
      const CopyFault fault = GuardedCopy(v.iov_base, base + pos, v.iov_len);
      if (fault == CopyFault::kSource) return ShortReadError(f_.fd_.get(), f_.path_, f_.size_, pos);
      if (fault == CopyFault::kDestination) {
        return ResourceExhaustedError(
            f_.path_ + ": copying bytes [" + std::to_string(pos) + ", " +
            std::to_string(pos + v.iov_len) +
            ") out of the mapping: writing the destination memory raised SIGBUS (memory "
            "backed by a full tmpfs or a truncated file?); the file itself is intact");
      }
      pos += v.iov_len;
    }
    return f_.CurrentSizeCovers(offset + total);  // see CurrentSizeCovers
  }

 private:
  FdFile f_;
  boost::interprocess::mapped_region region_;
};

// ---------------------------------------------------------------------------------
// DirectFile

class DirectFile final : public ReadableFile {
 public:
  DirectFile(std::string path, Opened o) : f_(std::move(path), std::move(o)) {}

  // Probe: some filesystems accept O_DIRECT at open and refuse it at read time.
  Status Probe() const {
    if (f_.size_ == 0) return OkStatus();
    SL_ASSIGN_OR_RETURN(AlignedBuffer buf, AllocateAligned(kDirectAlignment));
    ssize_t r;
    do {
      r = ::pread(f_.fd_.get(), buf.get(), kDirectAlignment, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EINVAL) return UnimplementedError(f_.path_ + ": the filesystem refuses O_DIRECT");
      return ReadError(errno, f_.path_, 0);
    }
    return OkStatus();
  }

  const std::string& path() const override { return f_.path_; }
  uint64_t size() const override { return f_.size_; }
  Status CheckUnchanged() const override { return f_.CheckUnchangedImpl(); }
  std::optional<FileIdentity> identity() const override { return f_.identity_; }
  Status Stat(uint64_t* size, std::optional<FileIdentity>* identity) const override {
    return f_.StatImpl(size, identity);
  }
  bool direct_io() const override { return true; }

  Result<std::span<const std::byte>> ReadWindowAt(uint64_t offset, uint64_t length,
                                                  std::span<std::byte> buffer) const override {
    SL_RETURN_IF_ERROR(CheckRange(f_.path_, offset, length, f_.size_));
    if (length == 0) return std::span<const std::byte>();
    uint64_t start = RoundDown(offset, kDirectAlignment);
    uint64_t end = RoundUp(offset + length, kDirectAlignment);
    uint64_t window = end - start;
    if (reinterpret_cast<uintptr_t>(buffer.data()) % kDirectAlignment != 0 ||
        buffer.size() < window) {
      return InvalidArgumentError(f_.path_ + ": O_DIRECT window of " + std::to_string(window) +
                                  " bytes needs a 4096-aligned buffer of at least that size (got " +
                                  std::to_string(buffer.size()) + ")");
    }
    uint64_t needed = offset + length - start;  // bytes of the window that must arrive
    uint64_t done = 0;
    while (done < needed) {
      uint64_t want = std::min<uint64_t>(window - done, kMaxSyscallBytes);
      ssize_t r = ::pread(f_.fd_.get(), buffer.data() + done, want, static_cast<off_t>(start + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ReadError(errno, f_.path_, start + done);
      }
      if (r == 0) return ShortReadError(f_.fd_.get(), f_.path_, f_.size_, start + done);
      done += static_cast<uint64_t>(r);
      if (done < needed && done % kDirectAlignment != 0) {
        // A partial block before the range is complete: the file ended early.
        return ShortReadError(f_.fd_.get(), f_.path_, f_.size_, start + done);
      }
    }
    return std::span<const std::byte>(buffer.data() + (offset - start), length);
  }

  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    SL_RETURN_IF_ERROR(CheckRange(f_.path_, offset, out.size(), f_.size_));
    if (out.empty()) return OkStatus();
    uint64_t chunk = std::min<uint64_t>(kDirectBounceBytes, out.size());
    SL_ASSIGN_OR_RETURN(AlignedBuffer bounce, AllocateAligned(chunk + 2 * kDirectAlignment));
    std::span<std::byte> buffer(bounce.get(), chunk + 2 * kDirectAlignment);
    uint64_t done = 0;
    while (done < out.size()) {
      uint64_t n = std::min<uint64_t>(chunk, out.size() - done);
      SL_ASSIGN_OR_RETURN(std::span<const std::byte> got, ReadWindowAt(offset + done, n, buffer));
      std::memcpy(out.data() + done, got.data(), n);
      done += n;
    }
    return OkStatus();
  }

 private:
  FdFile f_;
};


// ---------------------------------------------------------------------------------
// UringFile

// kMaxUringRetries: -EAGAIN / -EINTR completions tolerated in a row for one request.
constexpr int kMaxUringRetries = 1000;
constexpr int kMaxQueueDepth = 1024;
constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 30;
// kMaxIdleRings: idle rings the process keeps for later reads (each holds a descriptor
// and a few pages); a ring given back past this is closed.
constexpr size_t kMaxIdleRings = 32;

// IdleRings: rings not in use by any read, shared by every UringFile of the process. A
// ring is not tied to a file (each request names its descriptor), so reads of any file
// reuse one: the rings alive are those in use (one per concurrently reading thread)
// plus at most kMaxIdleRings, however many files are open. (Keeping rings per file made
// descriptors grow as files x threads: 163 shards read by 16 threads needed ~2,800
// ring descriptors, past the common 1,024 limit, and the load failed with EMFILE.)
// Every ring here has been drained: nothing queued, nothing in flight. After fork() the
// child drops the rings it inherited (their ring memory is shared with the parent's
// instance: a child submitting through one would corrupt the parent's reads) and makes
// its own (files opened before the fork then read through the child's rings too).
class IdleRings {
 public:
  static IdleRings& Get() {
    static IdleRings* rings = new IdleRings();  // never destroyed: readers may run at exit
    return *rings;
  }
  // Take: the smallest idle ring with room for `depth` requests, or null.
  std::unique_ptr<UringRing> Take(unsigned depth) {
    std::vector<std::unique_ptr<UringRing>> inherited;  // closed outside the lock
    std::lock_guard<std::mutex> lock(mu_);
    DropInherited(&inherited);
    size_t best = idle_.size();
    for (size_t i = 0; i < idle_.size(); ++i) {
      if (idle_[i]->entries() >= depth &&
          (best == idle_.size() || idle_[i]->entries() < idle_[best]->entries())) {
        best = i;
      }
    }
    if (best == idle_.size()) return nullptr;
    std::unique_ptr<UringRing> ring = std::move(idle_[best]);
    idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(best));
    return ring;
  }
  // Give: keep `ring` for a later read, or close it when kMaxIdleRings are idle already.
  void Give(std::unique_ptr<UringRing> ring) {
    std::unique_ptr<UringRing> drop;
    std::vector<std::unique_ptr<UringRing>> inherited;
    {
      std::lock_guard<std::mutex> lock(mu_);
      DropInherited(&inherited);
      if (idle_.size() < kMaxIdleRings) {
        idle_.push_back(std::move(ring));
      } else {
        drop = std::move(ring);
      }
    }
  }

 private:
  // DropInherited: in a process forked since the rings were kept, move them to `out`.
  void DropInherited(std::vector<std::unique_ptr<UringRing>>* out) {
    const pid_t pid = ::getpid();
    if (pid == pid_) return;
    out->swap(idle_);
    pid_ = pid;
  }

  std::mutex mu_;
  pid_t pid_ = ::getpid();                        // the process the rings belong to
  std::vector<std::unique_ptr<UringRing>> idle_;  // guarded by mu_
};

class UringFile final : public ReadableFile {
 public:
  UringFile(std::string path, Opened o, UringOptions options)
      : f_(std::move(path), std::move(o)), options_(std::move(options)) {}

  // Start: read the first block through `ring` (made at open), so that a ring that
  // cannot read (io_uring_enter refused, O_DIRECT refused at read time) is reported at
  // open; the ring then goes to IdleRings for later reads.
  Status Start(std::unique_ptr<UringRing> ring) {
    if (f_.size_ == 0) {
      IdleRings::Get().Give(std::move(ring));
      return OkStatus();
    }
    SL_ASSIGN_OR_RETURN(AlignedBuffer buf, AllocateAligned(kDirectAlignment));
    std::vector<iovec> iovs = {{buf.get(), kDirectAlignment}};
    std::vector<Request> requests = {
        {0, 1, 0, kDirectAlignment, std::min<uint64_t>(kDirectAlignment, f_.size_), 0}};
    Status s = Run(iovs, requests, /*probe=*/true, std::move(ring));
    if (!s.ok() && options_.direct && s.code() == StatusCode::kInvalidArgument) {
      return UnimplementedError(f_.path_ + ": the filesystem refuses O_DIRECT");
    }
    return s;
  }

  const std::string& path() const override { return f_.path_; }
  uint64_t size() const override { return f_.size_; }
  Status CheckUnchanged() const override { return f_.CheckUnchangedImpl(); }
  std::optional<FileIdentity> identity() const override { return f_.identity_; }
  Status Stat(uint64_t* size, std::optional<FileIdentity>* identity) const override {
    return f_.StatImpl(size, identity);
  }
  bool direct_io() const override { return options_.direct; }

  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    SL_RETURN_IF_ERROR(CheckRange(f_.path_, offset, out.size(), f_.size_));
    if (out.empty()) return OkStatus();
    if (!options_.direct) {
      iovec v{out.data(), out.size()};
      SL_RETURN_IF_ERROR(ReadBuffered(offset, std::span<const iovec>(&v, 1)));
      return f_.CurrentSizeCovers(offset + out.size());  // see CurrentSizeCovers
    }
    // O_DIRECT into memory of any alignment: through an aligned bounce buffer.
    uint64_t chunk = std::min<uint64_t>(kDirectBounceBytes, out.size());
    SL_ASSIGN_OR_RETURN(AlignedBuffer bounce, AllocateAligned(chunk + 2 * kDirectAlignment));
    std::span<std::byte> buffer(bounce.get(), chunk + 2 * kDirectAlignment);
    for (uint64_t done = 0; done < out.size();) {
      uint64_t n = std::min<uint64_t>(chunk, out.size() - done);
      SL_ASSIGN_OR_RETURN(std::span<const std::byte> got, ReadWindowAt(offset + done, n, buffer));
      std::memcpy(out.data() + done, got.data(), n);
      done += n;
    }
    return OkStatus();
  }

  Status ReadVAt(uint64_t offset, std::span<const iovec> iov) const override {
    if (options_.direct) return ReadableFile::ReadVAt(offset, iov);
    uint64_t total = 0;
    for (const iovec& v : iov) total += v.iov_len;
    SL_RETURN_IF_ERROR(CheckRange(f_.path_, offset, total, f_.size_));
    SL_RETURN_IF_ERROR(ReadBuffered(offset, iov));
    return f_.CurrentSizeCovers(offset + total);  // see CurrentSizeCovers
  }

  Result<std::span<const std::byte>> ReadWindowAt(uint64_t offset, uint64_t length,
                                                  std::span<std::byte> buffer) const override {
    if (!options_.direct) return ReadableFile::ReadWindowAt(offset, length, buffer);
    SL_RETURN_IF_ERROR(CheckRange(f_.path_, offset, length, f_.size_));
    if (length == 0) return std::span<const std::byte>();
    const uint64_t start = RoundDown(offset, kDirectAlignment);
    const uint64_t end = RoundUp(offset + length, kDirectAlignment);
    const uint64_t window = end - start;
    if (reinterpret_cast<uintptr_t>(buffer.data()) % kDirectAlignment != 0 ||
        buffer.size() < window) {
      return InvalidArgumentError(f_.path_ + ": O_DIRECT window of " + std::to_string(window) +
                                  " bytes needs a 4096-aligned buffer of at least that size (got " +
                                  std::to_string(buffer.size()) + ")");
    }
    // Chunks of the window; each must deliver its bytes up to the range's end (the
    // last block may stop early at the end of the file).
    const uint64_t needed_end = offset + length;
    std::vector<iovec> iovs;
    std::vector<Request> requests;
    for (uint64_t at = start; at < end; at += options_.chunk_bytes) {
      const uint64_t n = std::min<uint64_t>(options_.chunk_bytes, end - at);
      const uint64_t required = std::min<uint64_t>(n, needed_end - at);
      iovs.push_back({buffer.data() + (at - start), n});
      requests.push_back({iovs.size() - 1, iovs.size(), at, n, required, 0});
    }
    SL_RETURN_IF_ERROR(Run(iovs, requests, /*probe=*/false));
    return std::span<const std::byte>(buffer.data() + (offset - start), length);
  }

 private:
  // Request: one queued read: iovs[iov_first, iov_end) at `offset`; `left` bytes still
  // to read, of which the first `required` must arrive (an O_DIRECT window may pass the
  // end of the file by less than a block).
  struct Request {
    size_t iov_first;
    size_t iov_end;
    uint64_t offset;
    uint64_t left;
    uint64_t required;
    int retries;
  };

  // RingLease: a ring borrowed from IdleRings for one read, given back by the
  // destructor unless the read left it unusable.
  class RingLease {
   public:
    explicit RingLease(std::unique_ptr<UringRing> ring) : ring_(std::move(ring)) {}
    ~RingLease() {
      if (ring_ != nullptr && !broken_) IdleRings::Get().Give(std::move(ring_));
    }
    UringRing& ring() { return *ring_; }
    void MarkBroken() { broken_ = true; }

   private:
    std::unique_ptr<UringRing> ring_;
    bool broken_ = false;
  };

  Result<std::unique_ptr<UringRing>> Borrow() const {
    const unsigned depth = static_cast<unsigned>(options_.queue_depth);
    if (std::unique_ptr<UringRing> idle = IdleRings::Get().Take(depth)) return idle;
    Result<std::unique_ptr<UringRing>> ring =
        UringRing::Create(static_cast<unsigned>(options_.queue_depth));
    if (!ring.ok()) return ring.status().WithPrefix(f_.path_);
    return ring;
  }

  // ReadBuffered: `iov` at `offset` as chunks of at most chunk_bytes (and IOV_MAX
  // iovecs), an iovec longer than a chunk being cut.
  Status ReadBuffered(uint64_t offset, std::span<const iovec> iov) const {
    std::vector<iovec> iovs;
    std::vector<Request> requests;
    uint64_t pos = offset;
    Request open{0, 0, offset, 0, 0, 0};
    auto close_request = [&] {
      if (open.left > 0) {
        open.iov_end = iovs.size();
        open.required = open.left;
        requests.push_back(open);
      }
      open = Request{iovs.size(), iovs.size(), pos, 0, 0, 0};
    };
    for (const iovec& v : iov) {
      std::byte* base = static_cast<std::byte*>(v.iov_base);
      for (uint64_t at = 0; at < v.iov_len;) {
        if (open.left == options_.chunk_bytes || iovs.size() - open.iov_first == IOV_MAX) {
          close_request();
        }
        const uint64_t n = std::min<uint64_t>(v.iov_len - at, options_.chunk_bytes - open.left);
        iovs.push_back({base + at, n});
        open.left += n;
        pos += n;
        at += n;
      }
    }
    close_request();
    return Run(iovs, requests, /*probe=*/false);
  }

  // Run: every request through one borrowed ring, at most queue_depth in flight. On an
  // error no new request is queued, the ones in flight are waited for (the memory they
  // read into is the caller's), and the first error is returned.
  // `ring_to_use`, when given, is used (then given to IdleRings) instead of a borrowed one.
  Status Run(std::vector<iovec>& iovs, std::vector<Request>& requests, bool probe,
             std::unique_ptr<UringRing> ring_to_use = nullptr) const {
    if (requests.empty()) {
      if (ring_to_use != nullptr) IdleRings::Get().Give(std::move(ring_to_use));
      return OkStatus();
    }
    if (ring_to_use == nullptr) {
      SL_ASSIGN_OR_RETURN(ring_to_use, Borrow());
    }
    RingLease lease(std::move(ring_to_use));
    UringRing& ring = lease.ring();
    const unsigned depth = static_cast<unsigned>(options_.queue_depth);
    std::vector<size_t> again;  // requests to (re)queue before new ones
    size_t next = 0;
    unsigned in_flight = 0;
    Status error;
    while (true) {
      while (error.ok() && in_flight < depth) {
        size_t r;
        if (!again.empty()) {
          r = again.back();
          again.pop_back();
        } else if (next < requests.size()) {
          r = next++;
        } else {
          break;
        }
        const Request& q = requests[r];
        if (!ring.QueueReadV(f_.fd_.get(), &iovs[q.iov_first],
                             static_cast<unsigned>(q.iov_end - q.iov_first), q.offset, r)) {
          again.push_back(r);
          break;
        }
        ++in_flight;
      }
      if (in_flight == 0) break;
      if (Status s = ring.SubmitAndWait(1); !s.ok()) {
        // This ring is not used again. Requests the kernel accepted before the failure
        // may still be writing into the caller's memory after we return (see
        // UringRing::SubmitAndWait): only a kernel that stops accepting io_uring_enter,
        // or refuses submissions for ~5 s while reads are slow, gets here.
        lease.MarkBroken();
        if (s.code() == StatusCode::kFailedPrecondition) return s.WithPrefix(f_.path_);
        return InternalError(f_.path_ + ": " + s.message());
      }
      while (std::optional<UringCompletion> c = ring.PopCompletion()) {
        --in_flight;
        if (c->tag >= requests.size()) {
          if (error.ok()) {
            error = InternalError(f_.path_ + ": io_uring completion for an unknown request");
          }
          continue;
        }
        Request& q = requests[c->tag];
        int32_t res = c->result;
        if (options_.completion_hook) {
          res = options_.completion_hook(
              q.offset, static_cast<uint32_t>(std::min<uint64_t>(q.left, UINT32_MAX)), res);
        }
        if (!error.ok()) continue;  // draining after an error
        if (res == -EAGAIN || res == -EINTR) {
          if (++q.retries > kMaxUringRetries) {
            error = ReadError(-res, f_.path_, q.offset);
          } else {
            again.push_back(c->tag);
          }
          continue;
        }
        if (res < 0) {
          if (probe && (res == -ENOSYS || res == -EPERM || res == -EOPNOTSUPP)) {
            error = UringUnavailable("IORING_OP_READV", -res).WithPrefix(f_.path_);
          } else {
            error = ReadError(-res, f_.path_, q.offset);
          }
          continue;
        }
        const uint64_t got = static_cast<uint64_t>(res);
        if (got > q.left) {
          error = InternalError(f_.path_ + ": io_uring read at offset " + std::to_string(q.offset) +
                                " returned " + std::to_string(got) + " bytes, more than the " +
                                std::to_string(q.left) + " asked for");
          continue;
        }
        if (got >= q.required) continue;  // complete (the rest, if any, lies past the end)
        if (got == 0 || (options_.direct && got % kDirectAlignment != 0)) {
          // Nothing more, or a partial block before the range is complete: the file ended.
          error = ShortReadError(f_.fd_.get(), f_.path_, f_.size_, q.offset + got);
          continue;
        }
        Advance(iovs, q, got);
        again.push_back(c->tag);
      }
    }
    return error;
  }

  // Advance: drop the first `got` bytes (fewer than q.left) of request `q`.
  static void Advance(std::vector<iovec>& iovs, Request& q, uint64_t got) {
    q.offset += got;
    q.left -= got;
    q.required -= got;
    q.retries = 0;
    while (got > 0) {
      iovec& v = iovs[q.iov_first];
      const uint64_t take = std::min<uint64_t>(got, v.iov_len);
      v.iov_base = static_cast<std::byte*>(v.iov_base) + take;
      v.iov_len -= take;
      got -= take;
      if (v.iov_len == 0) ++q.iov_first;
    }
  }

  FdFile f_;
  UringOptions options_;
};

}  // namespace

// ---------------------------------------------------------------------------------
// ReadableFile defaults and factories

Status ReadableFile::ReadVAt(uint64_t offset, std::span<const iovec> iov) const {
  uint64_t pos = offset;
  for (const iovec& v : iov) {
    SL_RETURN_IF_ERROR(ReadAt(pos, {static_cast<std::byte*>(v.iov_base), v.iov_len}));
    pos += v.iov_len;
  }
  return OkStatus();
}

Result<std::span<const std::byte>> ReadableFile::ReadWindowAt(uint64_t offset, uint64_t length,
                                                              std::span<std::byte> buffer) const {
  if (buffer.size() < length) {
    return InvalidArgumentError(path() + ": read of " + std::to_string(length) +
                                " bytes into a buffer of " + std::to_string(buffer.size()));
  }
  // Land the bytes at the file's phase (address ≡ offset mod kCopyPhaseBytes) where the
  // buffer has room: the kernel's copy out of the page cache then runs with source and
  // destination aligned alike, 15-47% faster than mutually misaligned on the host
  // measured (bench/RESULTS.md, "File phase").
  const uint64_t shift =
      PhaseDistance(offset, reinterpret_cast<uintptr_t>(buffer.data()), kCopyPhaseBytes);
  std::span<std::byte> out = buffer.size() - length >= shift
                                 ? buffer.subspan(shift, length)
                                 : buffer.first(length);
  SL_RETURN_IF_ERROR(ReadAt(offset, out));
  return std::span<const std::byte>(out.data(), length);
}

std::string_view IoModeName(IoMode mode) {
  switch (mode) {
    case IoMode::kAuto: return "auto";
    case IoMode::kPread: return "pread";
    case IoMode::kMmap: return "mmap";
    case IoMode::kDirect: return "direct";
    case IoMode::kUring: return "uring";
  }
  return "auto";
}

Result<IoMode> ParseIoMode(std::string_view text) {
  if (text == "auto") return IoMode::kAuto;
  if (text == "pread") return IoMode::kPread;
  if (text == "mmap") return IoMode::kMmap;
  if (text == "direct") return IoMode::kDirect;
  if (text == "uring") return IoMode::kUring;
  return InvalidArgumentError("invalid io mode '" + std::string(text) +
                              "': expected auto, pread, mmap, direct or uring");
}

Status ValidateUringOptions(const UringOptions& options) {
  if (options.queue_depth < 1 || options.queue_depth > kMaxQueueDepth) {
    return InvalidArgumentError("io_uring queue depth " + std::to_string(options.queue_depth) +
                                ": expected 1.." + std::to_string(kMaxQueueDepth));
  }
  if (options.chunk_bytes < kDirectAlignment || options.chunk_bytes > kMaxChunkBytes ||
      options.chunk_bytes % kDirectAlignment != 0) {
    return InvalidArgumentError("io_uring chunk of " + std::to_string(options.chunk_bytes) +
                                " bytes: expected a multiple of 4096 from 4096 to " +
                                std::to_string(kMaxChunkBytes));
  }
  return OkStatus();
}

namespace {

Result<std::unique_ptr<MappedFile>> MapOpened(const std::string& path, Opened o) {
  auto f = std::make_unique<MappedFileImpl>(path, std::move(o));
  SL_RETURN_IF_ERROR(f->Map());
  return std::unique_ptr<MappedFile>(std::move(f));
}

}  // namespace

Result<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  SL_ASSIGN_OR_RETURN(Opened o, OpenForRead(path, 0));
  return MapOpened(path, std::move(o));
}

Result<std::unique_ptr<MappedFile>> MappedFile::FromDescriptor(int fd, const std::string& path) {
  if (fd < 0) {
    return InvalidArgumentError(path + ": invalid file descriptor " + std::to_string(fd));
  }
  SL_ASSIGN_OR_RETURN(Opened o, AdoptFd(fd, path));
  return MapOpened(path, std::move(o));
}

namespace {

// Detached: see DetachFromPath.
class Detached final : public ReadableFile {
 public:
  explicit Detached(std::unique_ptr<ReadableFile> f) : f_(std::move(f)) {}
  const std::string& path() const override { return f_->path(); }
  uint64_t size() const override { return f_->size(); }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    return f_->ReadAt(offset, out);
  }
  Status ReadVAt(uint64_t offset, std::span<const iovec> iov) const override {
    return f_->ReadVAt(offset, iov);
  }
  // The path no longer matters; CheckShardFile (Stat) and every read's size check
  // still watch the file itself.
  Status CheckUnchanged() const override { return OkStatus(); }
  Result<std::span<const std::byte>> ReadWindowAt(uint64_t offset, uint64_t length,
                                                  std::span<std::byte> buffer) const override {
    return f_->ReadWindowAt(offset, length, buffer);
  }
  std::optional<FileIdentity> identity() const override { return f_->identity(); }
  Status Stat(uint64_t* size, std::optional<FileIdentity>* identity) const override {
    return f_->Stat(size, identity);
  }
  bool direct_io() const override { return f_->direct_io(); }

 private:
  std::unique_ptr<ReadableFile> f_;
};

}  // namespace

std::unique_ptr<ReadableFile> DetachFromPath(std::unique_ptr<ReadableFile> file) {
  return std::make_unique<Detached>(std::move(file));
}

Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path, IoMode mode,
                                               const UringOptions& uring) {
  switch (mode) {
    case IoMode::kAuto:
    case IoMode::kPread: {
      SL_ASSIGN_OR_RETURN(Opened o, OpenForRead(path, 0));
      return std::unique_ptr<ReadableFile>(std::make_unique<PreadFile>(path, std::move(o)));
    }
    case IoMode::kMmap: {
      SL_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> m, MappedFile::Open(path));
      return std::unique_ptr<ReadableFile>(std::move(m));
    }
    case IoMode::kDirect: {
      SL_ASSIGN_OR_RETURN(Opened o, OpenForRead(path, O_DIRECT));
      auto f = std::make_unique<DirectFile>(path, std::move(o));
      SL_RETURN_IF_ERROR(f->Probe());
      return std::unique_ptr<ReadableFile>(std::move(f));
    }
    case IoMode::kUring: {
      SL_RETURN_IF_ERROR(ValidateUringOptions(uring));
      SL_ASSIGN_OR_RETURN(Opened o, OpenForRead(path, uring.direct ? O_DIRECT : 0));
      Result<std::unique_ptr<UringRing>> ring =
          UringRing::Create(static_cast<unsigned>(uring.queue_depth));
      if (!ring.ok()) return ring.status().WithPrefix(path);
      auto f = std::make_unique<UringFile>(path, std::move(o), uring);
      SL_RETURN_IF_ERROR(f->Start(std::move(*ring)));
      return std::unique_ptr<ReadableFile>(std::move(f));
    }
  }
  return InvalidArgumentError("invalid io mode");
}

}  // namespace shardload
