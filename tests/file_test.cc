// tests/file_test.cc — PreadFile, MappedFile and DirectFile: exact bytes, every error.
#include "loader/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "format/scoped_fd.h"
#include "tests/io_util.h"

namespace shardload {
namespace {

using testing::RandomBytes;
using testing::TempDir;
using testing::WriteBytes;

class FileModeTest : public ::testing::TestWithParam<IoMode> {
 protected:
  // Open `path` in the test's mode; skips the test where O_DIRECT (or io_uring) is
  // refused.
  std::unique_ptr<ReadableFile> OpenOrSkip(const std::string& path) {
    Result<std::unique_ptr<ReadableFile>> f = OpenFile(path, GetParam());
    if (!f.ok() && (f.status().code() == StatusCode::kUnimplemented ||
                    (GetParam() == IoMode::kUring &&
                     f.status().code() == StatusCode::kFailedPrecondition))) {
      skipped_ = f.status().message();
      return nullptr;
    }
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? std::move(*f) : nullptr;
  }
  std::string skipped_;
};

#define OPEN_OR_SKIP(var, path)                                            \
  std::unique_ptr<ReadableFile> var = OpenOrSkip(path);                    \
  if (!skipped_.empty()) GTEST_SKIP() << "refused here: " << skipped_;     \
  ASSERT_NE(var, nullptr)

TEST_P(FileModeTest, ReadAtIsByteExactAtUnalignedOffsets) {
  std::string dir = TempDir("file");
  std::vector<std::byte> data = RandomBytes(3 * 4096 + 123, 1);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  OPEN_OR_SKIP(f, dir + "/f");
  EXPECT_EQ(f->size(), data.size());
  EXPECT_EQ(f->path(), dir + "/f");
  const std::pair<uint64_t, uint64_t> cases[] = {
      {0, data.size()}, {1, 4095}, {4095, 2}, {4096, 4096}, {5000, 7000}, {data.size() - 1, 1},
      {data.size(), 0}, {123, 0}};
  for (auto [off, len] : cases) {
    std::vector<std::byte> out(len, std::byte{0xee});
    ASSERT_TRUE(f->ReadAt(off, out).ok()) << off << "+" << len;
    if (len > 0) {
      EXPECT_EQ(0, std::memcmp(out.data(), data.data() + off, len)) << off << "+" << len;
    }
  }
}

TEST_P(FileModeTest, ReadVAtScattersInOrder) {
  std::string dir = TempDir("file");
  std::vector<std::byte> data = RandomBytes(20000, 2);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  OPEN_OR_SKIP(f, dir + "/f");
  std::vector<std::byte> a(100), b(0), c(9000), d(1);
  std::vector<iovec> iov = {{a.data(), a.size()}, {b.data(), 0}, {c.data(), c.size()},
                            {d.data(), d.size()}};
  ASSERT_TRUE(f->ReadVAt(777, iov).ok());
  EXPECT_EQ(0, std::memcmp(a.data(), data.data() + 777, 100));
  EXPECT_EQ(0, std::memcmp(c.data(), data.data() + 877, 9000));
  EXPECT_EQ(d[0], data[9877]);
}

TEST_P(FileModeTest, ReadWindowAtReturnsExactlyTheRange) {
  std::string dir = TempDir("file");
  std::vector<std::byte> data = RandomBytes(50000, 3);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  OPEN_OR_SKIP(f, dir + "/f");
  alignas(4096) static std::byte buffer[16384 + 8192];
  for (auto [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 16384}, {1, 16384}, {4095, 10}, {49999, 1}, {40000, 10000}}) {
    Result<std::span<const std::byte>> got = f->ReadWindowAt(off, len, buffer);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->size(), len);
    EXPECT_EQ(0, std::memcmp(got->data(), data.data() + off, len)) << off;
    // The buffer has room, so the bytes sit at the file's phase (kCopyPhaseBytes).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got->data()) % kCopyPhaseBytes, off % kCopyPhaseBytes)
        << off;
  }
}

// Long reads into memory that is not at the file's phase (PreadFile reads those in
// shifted pieces): byte-exact for every phase pair, and nothing written outside the
// destination, through ReadAt and through ReadVAt with segments of every kind.
TEST_P(FileModeTest, LongReadsOffTheFilesPhaseAreExactAndStayInTheirMemory) {
  std::string dir = TempDir("file");
  constexpr size_t kFile = (3u << 20) + 8195;
  std::vector<std::byte> data = RandomBytes(kFile, 11);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  OPEN_OR_SKIP(f, dir + "/f");
  constexpr size_t kGuard = 4096;
  std::vector<std::byte> memory(kFile + 2 * kGuard + 4096);
  std::byte* base = reinterpret_cast<std::byte*>(
      (reinterpret_cast<uintptr_t>(memory.data()) + kGuard + 4095) / 4096 * 4096);
  auto fill = [&] { std::fill(memory.begin(), memory.end(), std::byte{0xEE}); };
  // Everything outside [dst, dst + n) still 0xEE, and [dst, dst + n) the file's bytes.
  auto check = [&](const std::byte* dst, uint64_t offset, size_t n, const std::string& what) {
    EXPECT_EQ(0, std::memcmp(dst, data.data() + offset, n)) << what;
    size_t outside = 0;
    for (const std::byte* p = memory.data(); p < memory.data() + memory.size(); ++p) {
      if ((p < dst || p >= dst + n) && *p != std::byte{0xEE}) ++outside;
    }
    EXPECT_EQ(outside, 0u) << what;
  };
  for (uint64_t offset : {0u, 3u, 24u, 4096u + 63u}) {
    for (size_t dst_phase : {0u, 8u, 40u, 63u}) {
      for (size_t n : {size_t{512} << 10, (size_t{512} << 10) + 1, (size_t{1} << 20) + 5,
                       size_t{3} << 20}) {
        const std::string what = "offset " + std::to_string(offset) + " dst +" +
                                 std::to_string(dst_phase) + " n " + std::to_string(n);
        fill();
        std::byte* dst = base + dst_phase;
        Status s = f->ReadAt(offset, {dst, n});
        ASSERT_TRUE(s.ok()) << what << ": " << s.ToString();
        check(dst, offset, n, "ReadAt " + what);
      }
    }
  }
  // ReadVAt: a small segment, a long one off the phase, a long one on it, an empty one,
  // another long one off it, a small tail; laid out with holes between them.
  const size_t sizes[] = {100, (1u << 20) + 5, 3u << 18, 0, (1u << 19) + 999, 33};
  fill();
  std::vector<iovec> iov;
  std::vector<std::pair<std::byte*, uint64_t>> where;  // (memory, file offset)
  uint64_t offset = 5, pos = 5;
  std::byte* at = base + 8;
  for (size_t n : sizes) {
    // The third segment is put at the file's phase; the others are not.
    std::byte* seg = at;
    if (iov.size() == 2) {
      seg = at + PhaseDistance(pos, reinterpret_cast<uintptr_t>(at), kCopyPhaseBytes);
    }
    iov.push_back({seg, n});
    where.emplace_back(seg, pos);
    pos += n;
    at = seg + n + 40;
  }
  ASSERT_LE(at, memory.data() + memory.size());
  ASSERT_TRUE(f->ReadVAt(offset, iov).ok());
  size_t outside = 0;
  for (size_t k = 0; k < iov.size(); ++k) {
    EXPECT_EQ(0, std::memcmp(where[k].first, data.data() + where[k].second, iov[k].iov_len)) << k;
  }
  for (const std::byte* p = memory.data(); p < memory.data() + memory.size(); ++p) {
    bool inside = false;
    for (const iovec& v : iov) {
      inside |= p >= static_cast<std::byte*>(v.iov_base) &&
                p < static_cast<std::byte*>(v.iov_base) + v.iov_len;
    }
    if (!inside && *p != std::byte{0xEE}) ++outside;
  }
  EXPECT_EQ(outside, 0u);
}

TEST_P(FileModeTest, ReadWindowAtWithoutRoomToShiftReadsToTheBufferStart) {
  std::string dir = TempDir("file");
  std::vector<std::byte> data = RandomBytes(5000, 7);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  OPEN_OR_SKIP(f, dir + "/f");
  if (f->direct_io()) GTEST_SKIP() << "O_DIRECT reads whole 4096-byte windows";
  alignas(4096) static std::byte buffer[4096 + 64];
  // Room for the 24-byte shift: phase kept. Exactly `length` bytes: read to the start.
  Result<std::span<const std::byte>> shifted = f->ReadWindowAt(88, 1000, {buffer, 1024});
  ASSERT_TRUE(shifted.ok()) << shifted.status().ToString();
  EXPECT_EQ(shifted->data(), buffer + 24);
  EXPECT_EQ(0, std::memcmp(shifted->data(), data.data() + 88, 1000));
  Result<std::span<const std::byte>> tight = f->ReadWindowAt(88, 1000, {buffer, 1000});
  ASSERT_TRUE(tight.ok()) << tight.status().ToString();
  EXPECT_EQ(tight->data(), buffer);
  EXPECT_EQ(0, std::memcmp(tight->data(), data.data() + 88, 1000));
  Result<std::span<const std::byte>> small = f->ReadWindowAt(88, 1000, {buffer, 999});
  EXPECT_EQ(small.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(small.status().message(), dir + "/f: read of 1000 bytes into a buffer of 999");
}

TEST_P(FileModeTest, ReadPastEndIsOutOfRange) {
  std::string dir = TempDir("file");
  ASSERT_TRUE(WriteBytes(dir + "/f", RandomBytes(100, 4)));
  OPEN_OR_SKIP(f, dir + "/f");
  std::vector<std::byte> out(10);
  Status s = f->ReadAt(95, out);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s.message(),
            dir + "/f: read of 10 bytes at offset 95 passes the end of the file (100 bytes)");
  s = f->ReadAt(~0ull - 3, out);  // offset + length overflows
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
}

TEST_P(FileModeTest, TruncatedFileIsDataLossNeverSigbus) {
  std::string dir = TempDir("file");
  std::vector<std::byte> data = RandomBytes(64 * 1024, 5);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  OPEN_OR_SKIP(f, dir + "/f");
  ASSERT_TRUE(f->CheckUnchanged().ok());
  ASSERT_EQ(::truncate((dir + "/f").c_str(), 10000), 0);
  std::string shrank = dir + "/f: file shrank to 10000 bytes while reading (expected 65536)";
  std::vector<std::byte> out(8192);
  Status s = f->ReadAt(40000, out);  // wholly past the new end
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), shrank);
  s = f->ReadAt(8192, out);  // straddles the new end
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), shrank);
  s = f->ReadAt(0, std::span<std::byte>(out).first(4096));  // still inside: fine
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(0, std::memcmp(out.data(), data.data(), 4096));
  s = f->CheckUnchanged();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), shrank);
}

TEST_P(FileModeTest, ReplacedFileIsAborted) {
  std::string dir = TempDir("file");
  ASSERT_TRUE(WriteBytes(dir + "/f", RandomBytes(5000, 6)));
  OPEN_OR_SKIP(f, dir + "/f");
  ASSERT_TRUE(WriteBytes(dir + "/g", RandomBytes(5000, 7)));
  ASSERT_EQ(std::rename((dir + "/g").c_str(), (dir + "/f").c_str()), 0);
  Status s = f->CheckUnchanged();
  EXPECT_EQ(s.code(), StatusCode::kAborted);
  EXPECT_EQ(s.message(), dir + "/f: file was replaced while loading (inode changed)");
  ASSERT_EQ(std::remove((dir + "/f").c_str()), 0);
  s = f->CheckUnchanged();
  EXPECT_EQ(s.code(), StatusCode::kAborted);
  EXPECT_EQ(s.message(), dir + "/f: file was removed while loading");
}

TEST_P(FileModeTest, EmptyFile) {
  std::string dir = TempDir("file");
  ASSERT_TRUE(WriteBytes(dir + "/e", {}));
  OPEN_OR_SKIP(f, dir + "/e");
  EXPECT_EQ(f->size(), 0u);
  EXPECT_TRUE(f->ReadAt(0, {}).ok());
  std::byte b;
  EXPECT_EQ(f->ReadAt(0, {&b, 1}).code(), StatusCode::kOutOfRange);
}

TEST_P(FileModeTest, MissingFileAndDirectory) {
  std::string dir = TempDir("file");
  Result<std::unique_ptr<ReadableFile>> f = OpenFile(dir + "/nope", GetParam());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(f.status().message(), dir + "/nope: No such file or directory");
  f = OpenFile(dir, GetParam());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(f.status().message(), dir + ": is a directory");
  // A FIFO (a shard path swapped for one after the catalog read it) is refused at
  // once, never waited on for a writer; so is a character device.
  ASSERT_EQ(::mkfifo((dir + "/fifo").c_str(), 0600), 0);
  f = OpenFile(dir + "/fifo", GetParam());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status(), InvalidArgumentError(dir + "/fifo: not a regular file"));
  f = OpenFile("/dev/zero", GetParam());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status(), InvalidArgumentError("/dev/zero: not a regular file"));
}

INSTANTIATE_TEST_SUITE_P(Modes, FileModeTest,
                         ::testing::Values(IoMode::kPread, IoMode::kMmap, IoMode::kDirect,
                                           IoMode::kUring),
                         [](const ::testing::TestParamInfo<IoMode>& p) {
                           return std::string(IoModeName(p.param));
                         });

TEST(FileTest, DirectIoOnRealFilesystem) {
  // /var/tmp is a disk-backed filesystem on the CI machines, where O_DIRECT works.
  std::string dir = TempDir("direct", "/var/tmp");
  std::vector<std::byte> data = RandomBytes(1 << 20, 8);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  Result<std::unique_ptr<ReadableFile>> f = OpenFile(dir + "/f", IoMode::kDirect);
  if (!f.ok() && f.status().code() == StatusCode::kUnimplemented) {
    std::remove((dir + "/f").c_str());
    ::rmdir(dir.c_str());
    GTEST_SKIP() << "O_DIRECT refused on /var/tmp: " << f.status().message();
  }
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE((*f)->direct_io());
  std::vector<std::byte> out(300000);
  ASSERT_TRUE((*f)->ReadAt(12345, out).ok());
  EXPECT_EQ(0, std::memcmp(out.data(), data.data() + 12345, out.size()));
  // A misaligned or too-small window buffer is refused, not read into. (Both are
  // carved from an aligned point: a heap vector may happen to be 4096-aligned.)
  std::vector<std::byte> space(4096 * 5);
  std::byte* aligned = space.data() + (4096 - reinterpret_cast<uintptr_t>(space.data()) % 4096) % 4096;
  Result<std::span<const std::byte>> w =
      (*f)->ReadWindowAt(1, 8192, std::span<std::byte>(aligned + 1, 4096 * 3));
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  w = (*f)->ReadWindowAt(1, 8192, std::span<std::byte>(aligned, 4096 * 2));
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w.status().message(), dir + "/f: O_DIRECT window of 12288 bytes needs a 4096-aligned "
                                        "buffer of at least that size (got 8192)");
  std::remove((dir + "/f").c_str());
  ::rmdir(dir.c_str());
}

TEST(FileTest, MappedBytesViewTheWholeFile) {
  std::string dir = TempDir("file");
  std::vector<std::byte> data = RandomBytes(10000, 9);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  Result<std::unique_ptr<MappedFile>> m = MappedFile::Open(dir + "/f");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)->Bytes().size(), data.size());
  EXPECT_EQ(0, std::memcmp((*m)->Bytes().data(), data.data(), data.size()));
  ASSERT_TRUE(WriteBytes(dir + "/e", {}));
  m = MappedFile::Open(dir + "/e");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE((*m)->Bytes().empty());
}

TEST(FileTest, MappingIsOfTheOpenedFileNotOfWhatThePathNamesNow) {
  // Open, then rename another file over the path before mapping: the mapping must be
  // of the descriptor's inode. A map by path would see the new file — different bytes
  // (same size) or, shorter, a mapping past its end where reading Bytes() is a SIGBUS.
  std::string dir = TempDir("file");
  std::vector<std::byte> original = RandomBytes(3 * 4096 + 17, 10);
  for (uint64_t replacement_size : {original.size(), uint64_t{10}}) {
    SCOPED_TRACE("replacement of " + std::to_string(replacement_size) + " bytes");
    ASSERT_TRUE(WriteBytes(dir + "/f", original));
    int fd = ::open((dir + "/f").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(WriteBytes(dir + "/g", RandomBytes(replacement_size, 11)));
    ASSERT_EQ(std::rename((dir + "/g").c_str(), (dir + "/f").c_str()), 0);

    Result<std::unique_ptr<MappedFile>> m = MappedFile::FromDescriptor(fd, dir + "/f");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ((*m)->path(), dir + "/f");
    ASSERT_EQ((*m)->size(), original.size());
    std::span<const std::byte> view = (*m)->Bytes();
    ASSERT_EQ(view.size(), original.size());
    EXPECT_EQ(0, std::memcmp(view.data(), original.data(), original.size()));
    std::vector<std::byte> out(100);
    ASSERT_TRUE((*m)->ReadAt(original.size() - 100, out).ok());
    EXPECT_EQ(0, std::memcmp(out.data(), original.data() + original.size() - 100, 100));
    Status s = (*m)->CheckUnchanged();
    EXPECT_EQ(s.code(), StatusCode::kAborted);
    EXPECT_EQ(s.message(), dir + "/f: file was replaced while loading (inode changed)");
    m->reset();
    EXPECT_EQ(::fcntl(fd, F_GETFD), -1);  // the MappedFile owned and closed it
  }
}

TEST(FileTest, MappingFromABadDescriptor) {
  Result<std::unique_ptr<MappedFile>> m = MappedFile::FromDescriptor(-1, "model.safetensors");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.status().message(), "model.safetensors: invalid file descriptor -1");
  std::string dir = TempDir("file");
  int fd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  m = MappedFile::FromDescriptor(fd, dir);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.status().message(), dir + ": is a directory");
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);  // closed on error too
}

TEST(FileTest, IoModeNames) {
  for (IoMode m : {IoMode::kAuto, IoMode::kPread, IoMode::kMmap, IoMode::kDirect, IoMode::kUring}) {
    Result<IoMode> back = ParseIoMode(IoModeName(m));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, m);
  }
  Result<IoMode> bad = ParseIoMode("Direct");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "invalid io mode 'Direct': expected auto, pread, mmap, direct or uring");
}

// A cache keyed on a file's identity may only hold identities whose last change is
// older than a timestamp tick could hide (IdentityIsSettled), judged on both times.
TEST(FileTest, IdentityIsSettledOnlyWellAfterTheLastChange) {
  const int64_t now = int64_t{1'700'000'000} * 1'000'000'000;
  FileIdentity id{1, 2, now - 5'000'000'000, now - 5'000'000'000};
  EXPECT_TRUE(IdentityIsSettled(id, now));
  id.ctime_ns = now - kIdentitySettleNs;
  EXPECT_TRUE(IdentityIsSettled(id, now));
  id.ctime_ns = now - kIdentitySettleNs + 1;  // a touch or write just now
  EXPECT_FALSE(IdentityIsSettled(id, now));
  id.ctime_ns = now - 5'000'000'000;
  id.mtime_ns = now - 1'000;  // a modification time just now
  EXPECT_FALSE(IdentityIsSettled(id, now));
  id.mtime_ns = now + 60'000'000'000;  // in the future (clock skew, NFS)
  EXPECT_FALSE(IdentityIsSettled(id, now));
  // A file just written here is not settled by the real clock.
  const std::string path = TempDir("file") + "/fresh";
  ASSERT_TRUE(WriteBytes(path, RandomBytes(8, 1)));
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_FALSE(IdentityIsSettled(IdentityOf(st), RealtimeNs()));
  EXPECT_TRUE(IdentityIsSettled(IdentityOf(st), RealtimeNs() + 3'000'000'000));
}

}  // namespace
}  // namespace shardload

