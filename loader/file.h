// loader/file.h — reading checkpoint files without ever taking a SIGBUS.
//
// Provides `ReadableFile`, one small interface over four ways to read bytes:
//   - `PreadFile`   positional reads (pread, EINTR and short reads handled);
//   - `MappedFile`  a read-only mapping (Boost.Interprocess) for zero-copy host views,
//                   copies out of it re-check the file size first;
//   - `DirectFile`  O_DIRECT reads through aligned windows (cold loads that bypass the
//                   page cache); falls back to an error the caller can handle where the
//                   filesystem refuses O_DIRECT (tmpfs);
//   - `UringFile`   (IoMode::kUring) reads through io_uring (loader/uring.h), several
//                   chunks of each read in flight per calling thread, buffered or
//                   O_DIRECT (UringOptions).
// The size is taken at open; every read checks it again when the file may have been
// truncated, so a file truncated mid-load gives data_loss and one replaced or removed
// gives aborted, never SIGBUS and never stale or zero bytes reported as success.
//
//   SL_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f, OpenFile(path, IoMode::kPread));
//   std::vector<std::byte> buf(4096);
//   SL_RETURN_IF_ERROR(f->ReadAt(0, buf));   // exactly buf.size() bytes or an error
#ifndef SHARDLOAD_LOADER_FILE_H_
#define SHARDLOAD_LOADER_FILE_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "format/scoped_fd.h"
#include "format/status.h"

namespace shardload {

// IoMode: how the streaming path reads files. kAuto picks from measurements
// (see docs/ARCHITECTURE.md and bench/RESULTS.md for the current choice).
enum class IoMode { kAuto, kPread, kMmap, kDirect, kUring };

// IoModeName / ParseIoMode: "auto", "pread", "mmap", "direct", "uring".
std::string_view IoModeName(IoMode mode);
Result<IoMode> ParseIoMode(std::string_view text);

// kCopyPhaseBytes: the alignment unit of a copy out of the page cache. A buffered read
// whose destination address is congruent to its file offset modulo this runs at full
// speed; on the AMD EPYC host measured, one whose two addresses differ by other than
// a multiple of 32 ran at 0.68-0.87x the aligned rate (bench/RESULTS.md, "File
// phase"). Staged reads (ReadWindowAt) and LoadAll's `ArenaPlacement::kFilePhase` keep
// the two congruent; pread reads of more than 512 KiB into memory off that phase
// (LoadInto's caller buffers) are read in 256 KiB pieces at the phase and moved into
// place.
inline constexpr uint64_t kCopyPhaseBytes = 64;

// PhaseDistance: (to - from) modulo `modulus` (a power of two), computed without an
// unsigned wrap: how many bytes past `from` the next position congruent to `to` is.
inline constexpr uint64_t PhaseDistance(uint64_t to, uint64_t from, uint64_t modulus) {
  return ((to & (modulus - 1)) + modulus - (from & (modulus - 1))) & (modulus - 1);
}

// ReadableFile: an open, read-only file of a fixed expected size.
// Thread safety: ReadAt / ReadVAt may be called concurrently from several threads.
class ReadableFile {
 public:
  virtual ~ReadableFile() = default;

  // path: the path the file was opened with (used in every error message).
  virtual const std::string& path() const = 0;
  // size: the size at open.
  virtual uint64_t size() const = 0;

  // ReadAt: fill `out` with the bytes at [offset, offset + out.size()).
  // Errors: out_of_range when the range passes size(); data_loss
  // "<path>: file shrank to N bytes while reading (expected M)" / "<path>: short read at
  // offset X" when the file was truncated; ErrnoToStatus for I/O errors (EIO → data_loss).
  virtual Status ReadAt(uint64_t offset, std::span<std::byte> out) const = 0;

  // ReadVAt: scatter the bytes at [offset, offset + total iov length) into `iov`, in
  // order (preadv where the mode allows, else a loop). Same errors as ReadAt.
  virtual Status ReadVAt(uint64_t offset, std::span<const iovec> iov) const;

  // CheckUnchanged: data_loss if the file on disk is now shorter than size(); aborted
  // ("<path>: file was replaced while loading (inode changed)", "<path>: file was
  // removed while loading") when its path no longer names the same inode (a rewrite
  // renamed over it: what was read is of one save, but no longer the current one).
  virtual Status CheckUnchanged() const = 0;

  // ReadWindowAt: read [offset, offset + length) into `buffer` and return the part of
  // `buffer` that holds exactly those bytes. Buffered modes read to `buffer` plus the
  // 0..63 bytes that put the first byte at an address ≡ offset (mod kCopyPhaseBytes)
  // when the buffer has room for that, else to its start (needs `length` bytes);
  // DirectFile reads the 4096-aligned window around the range (buffer 4096-aligned and
  // at least length + 8192 bytes) and returns the trimmed middle. Errors: those of ReadAt; invalid_argument for a buffer that is too
  // small or misaligned. Thread safety: as ReadAt.
  virtual Result<std::span<const std::byte>> ReadWindowAt(uint64_t offset, uint64_t length,
                                                          std::span<std::byte> buffer) const;

  // identity: the file's FileIdentity when it was opened (none for files that are not
  // opened from a path, such as test doubles).
  virtual std::optional<FileIdentity> identity() const { return std::nullopt; }

  // Stat: the open file's size and identity now (fstat on its descriptor), which differ
  // from size() and identity() once the file was written to in place since it was
  // opened. Files without a descriptor (test doubles) give size() and identity().
  // Errors: fstat's, as ErrnoToStatus(errno, "<path>: fstat").
  virtual Status Stat(uint64_t* size, std::optional<FileIdentity>* identity) const {
    *size = this->size();
    *identity = this->identity();
    return OkStatus();
  }

  // direct_io: true when reads bypass the page cache (O_DIRECT). The streaming engine
  // then reads aligned windows into staging slots rather than into destination memory.
  virtual bool direct_io() const { return false; }
};

// UringOptions: how an IoMode::kUring file reads. Each ReadAt / ReadVAt /
// ReadWindowAt borrows an idle io_uring for its duration from a cache shared by every
// kUring file of the process (created when none is idle; at most 32 idle rings are
// kept), splits the read into chunks and keeps up to `queue_depth` of them in flight.
// So the rings alive are about one per concurrently reading thread, not one per file
// and thread: descriptors stay within limits for checkpoints of hundreds of shards. Short completions and -EAGAIN / -EINTR are
// resubmitted for the remainder; errors are those of the pread path (same messages).
struct UringOptions {
  // queue_depth: chunks in flight per reading thread. Default 4. Valid 1..1024.
  int queue_depth = 4;
  // chunk_bytes: the most one queued read asks for. Default 1 MiB. Valid: a multiple
  // of 4096 from 4096 to 1 GiB.
  uint64_t chunk_bytes = uint64_t{1} << 20;
  // direct: open with O_DIRECT and read 4096-aligned windows through staging slots
  // (direct_io() is true, as for kDirect) instead of buffered reads straight into
  // destination memory. Default false (see bench/RESULTS.md "### io_uring").
  bool direct = false;
  // completion_hook: testing hook. When set, every completion's result (bytes read or
  // -errno) passes through it before it is handled: (file offset of the request, bytes
  // asked for, result) → result to use. Lets tests inject short reads, -EAGAIN, -EINTR
  // or errors. Called concurrently from the reading threads. Default: none.
  std::function<int32_t(uint64_t offset, uint32_t length, int32_t result)> completion_hook;
};

// ValidateUringOptions: invalid_argument "io_uring queue depth N: expected 1..1024" or
// "io_uring chunk of N bytes: expected a multiple of 4096 from 4096 to 1073741824".
Status ValidateUringOptions(const UringOptions& options);

// OpenFile: open `path` for reading in `mode` (kAuto means kPread here; the streaming
// engine resolves kAuto before calling); `uring` applies to kUring only.
// Errors: not_found, permission_denied, invalid_argument "<path>: is a directory",
// "<path>: not a regular file" (a FIFO, which is never waited on, or a device) or a
// bad `uring`; unimplemented when kDirect (or kUring with uring.direct) is refused by the
// filesystem; for kUring, failed_precondition "<path>: io_uring is unavailable:
// io_uring_setup: <strerror> (<ERRNO>)" when the kernel or a sandbox refuses io_uring
// (a first read of the file through the ring is made here to be sure).
Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path, IoMode mode,
                                               const UringOptions& uring = {});

// DetachFromPath: `file` with a CheckUnchanged that no longer looks at its path, for a
// file held open on purpose so that readers keep seeing it after its path is renamed
// over or removed (the C API's sl_checkpoint_hold_files). Every read still checks the
// open file's size (data_loss when it shrank); everything else is `file`'s. Not for
// files opened per load, where a replaced path must fail the load.
std::unique_ptr<ReadableFile> DetachFromPath(std::unique_ptr<ReadableFile> file);

// MappedFile: a whole file mapped read-only, for zero-copy views.
// The mapping is made from the descriptor that was opened and fstat'ed, never by
// re-opening the path, so a file renamed over the path in the meantime is not mapped
// in place of the one whose size was checked (CheckUnchanged then reports the
// replacement; the view keeps the original bytes).
// Lifetime: views returned by Bytes() stay valid while the MappedFile lives. Reading a
// view after the file was truncated by another process is the caller's hazard (SIGBUS);
// the loader itself only copies through ReadAt, which checks first.
class MappedFile : public ReadableFile {
 public:
  // Open: map `path` (an empty file gives an empty mapping, never an mmap of length 0).
  // Errors: those of OpenFile; data_loss "<path>: file shrank to N bytes while reading
  // (expected M)" when it was truncated between the fstat and the mapping; internal
  // when mmap fails.
  static Result<std::unique_ptr<MappedFile>> Open(const std::string& path);
  // FromDescriptor: map the file open as `fd` (readable; ownership is taken and the
  // descriptor is closed when the MappedFile goes, or at once on error). `path` names
  // it in messages and is what CheckUnchanged compares the descriptor's inode with.
  // Errors: invalid_argument "<path>: invalid file descriptor -1" (nothing closed),
  // "<path>: is a directory", "<path>: not a regular file"; otherwise as Open.
  static Result<std::unique_ptr<MappedFile>> FromDescriptor(int fd, const std::string& path);
  // Bytes: the whole mapping. The data section of a safetensors file need not be
  // aligned for its dtype: copy (memcpy) rather than reinterpret_cast unaligned data.
  virtual std::span<const std::byte> Bytes() const = 0;
};

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_FILE_H_
