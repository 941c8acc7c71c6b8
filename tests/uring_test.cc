// tests/uring_test.cc — IoMode::kUring: the raw ring, UringFile reads (buffered and
// O_DIRECT, several queue depths and chunk sizes), resubmission of short / -EAGAIN /
// -EINTR completions and exact errors through the completion hook, the unavailable
// case (a seccomp filter on one thread), and LoadAll / LoadInto / VerifyCheckpoint
// byte-exact on sharded checkpoints with tiny slots, verify, cancel and truncation.
// Every test skips (with the reason) where io_uring is unavailable.
#include "loader/uring.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "format/checksum_writer.h"
#include "format/scoped_fd.h"
#include "format/writer.h"
#include "gtest/gtest.h"
#include "loader/checkpoint.h"
#include "loader/file.h"
#include "loader/host_sink.h"
#include "loader/loader.h"
#include "loader/stream.h"
#include "tests/io_util.h"

namespace shardload {
namespace {

using testing::RandomBytes;
using testing::TempDir;
using testing::WriteBytes;

// UringUnavailableHere: why io_uring cannot be used in this process, or "".
std::string UringUnavailableHere() {
  Result<std::unique_ptr<UringRing>> ring = UringRing::Create(1);
  if (ring.ok()) return "";
  return ring.status().ToString();
}

#define SKIP_WITHOUT_URING()                                           \
  do {                                                                 \
    std::string why = UringUnavailableHere();                          \
    if (!why.empty()) GTEST_SKIP() << "io_uring unavailable: " << why; \
  } while (0)

// DirectDir: a folder on a filesystem that takes O_DIRECT (/var/tmp; tmpfs may not).
std::string DirectDir(const std::string& tag) { return TempDir(tag, "/var/tmp"); }

// OpenUring: OpenFile in kUring; sets *skip when O_DIRECT is refused here.
std::unique_ptr<ReadableFile> OpenUring(const std::string& path, const UringOptions& options,
                                        std::string* skip) {
  Result<std::unique_ptr<ReadableFile>> f = OpenFile(path, IoMode::kUring, options);
  if (!f.ok() && f.status().code() == StatusCode::kUnimplemented) {
    *skip = f.status().message();
    return nullptr;
  }
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return f.ok() ? std::move(*f) : nullptr;
}

// ---------------------------------------------------------------------------------
// The ring itself.

TEST(UringRingTest, EntriesOutOfRange) {
  for (unsigned n : {0u, 4097u}) {
    Result<std::unique_ptr<UringRing>> r = UringRing::Create(n);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(),
              "io_uring queue depth " + std::to_string(n) + ": expected 1..4096");
  }
}

TEST(UringRingTest, ReadsAndTagsCompletions) {
  SKIP_WITHOUT_URING();
  std::string dir = TempDir("uring");
  std::vector<std::byte> data = RandomBytes(3 * 4096 + 17, 3);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  ScopedFd fd(::open((dir + "/f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  Result<std::unique_ptr<UringRing>> ring = UringRing::Create(3);
  ASSERT_TRUE(ring.ok()) << ring.status().ToString();
  EXPECT_GE((*ring)->entries(), 3u);
  std::vector<std::byte> a(100), b(4096), c(50);
  iovec va{a.data(), a.size()}, vb{b.data(), b.size()}, vc{c.data(), c.size()};
  ASSERT_TRUE((*ring)->QueueReadV(fd.get(), &va, 1, 5, 11));
  ASSERT_TRUE((*ring)->QueueReadV(fd.get(), &vb, 1, 4096, 22));
  ASSERT_TRUE((*ring)->QueueReadV(fd.get(), &vc, 1, data.size() - 10, 33));  // 10 bytes left
  ASSERT_TRUE((*ring)->SubmitAndWait(3).ok());
  std::map<uint64_t, int32_t> got;
  while (std::optional<UringCompletion> c = (*ring)->PopCompletion()) got[c->tag] = c->result;
  EXPECT_EQ(got, (std::map<uint64_t, int32_t>{{11, 100}, {22, 4096}, {33, 10}}));
  EXPECT_EQ(0, std::memcmp(a.data(), data.data() + 5, a.size()));
  EXPECT_EQ(0, std::memcmp(b.data(), data.data() + 4096, b.size()));
  EXPECT_EQ(0, std::memcmp(c.data(), data.data() + data.size() - 10, 10));
  EXPECT_FALSE((*ring)->PopCompletion().has_value());
}

TEST(UringRingTest, FullSubmissionRingRefusesMore) {
  SKIP_WITHOUT_URING();
  std::string dir = TempDir("uring");
  ASSERT_TRUE(WriteBytes(dir + "/f", RandomBytes(4096, 4)));
  ScopedFd fd(::open((dir + "/f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  Result<std::unique_ptr<UringRing>> ring = UringRing::Create(2);
  ASSERT_TRUE(ring.ok());
  const unsigned n = (*ring)->entries();
  std::vector<std::vector<std::byte>> bufs(n, std::vector<std::byte>(8));
  std::vector<iovec> v(n);
  for (unsigned i = 0; i < n; ++i) {
    v[i] = {bufs[i].data(), 8};
    ASSERT_TRUE((*ring)->QueueReadV(fd.get(), &v[i], 1, 8 * i, i));
  }
  iovec extra{bufs[0].data(), 8};
  EXPECT_FALSE((*ring)->QueueReadV(fd.get(), &extra, 1, 0, 99));
  ASSERT_TRUE((*ring)->SubmitAndWait(n).ok());
  unsigned reaped = 0;
  while ((*ring)->PopCompletion().has_value()) ++reaped;
  EXPECT_EQ(reaped, n);
}

// ---------------------------------------------------------------------------------
// Unavailable: a seccomp filter on one thread makes io_uring_setup fail with `err`.

// DenyUringSetupOnThisThread: install a filter (this thread only) that fails
// io_uring_setup with `err`. False when seccomp is not available.
bool DenyUringSetupOnThisThread(int err) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K,
               SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  return ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0;
}

std::string DisabledSuffix() {
  std::ifstream in("/proc/sys/kernel/io_uring_disabled");
  int v = -1;
  if (!(in >> v) || v <= 0) return "";
  return "; /proc/sys/kernel/io_uring_disabled is " + std::to_string(v);
}

TEST(UringUnavailableTest, ExplicitUringFailsAutoDoesNot) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "seccomp filters are not installed under sanitizers";
#endif
  std::string dir = TempDir("uring");
  std::vector<std::byte> data = RandomBytes(10000, 5);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  struct Case {
    int err;
    std::string text;
  };
  for (const Case& c : {Case{ENOSYS, "Function not implemented (ENOSYS)"},
                        Case{EPERM, "Operation not permitted (EPERM)"}}) {
    bool installed = false;
    Status uring, pread, auto_mode;
    std::vector<std::byte> out(data.size());
    std::thread t([&] {
      installed = DenyUringSetupOnThisThread(c.err);
      if (!installed) return;
      Result<std::unique_ptr<ReadableFile>> f = OpenFile(dir + "/f", IoMode::kUring);
      uring = f.status();
      Result<std::unique_ptr<ReadableFile>> p = OpenFile(dir + "/f", IoMode::kAuto);
      pread = p.ok() ? (*p)->ReadAt(0, out) : p.status();
    });
    t.join();
    if (!installed) GTEST_SKIP() << "seccomp unavailable here";
    EXPECT_EQ(uring.code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(uring.message(),
              dir + "/f: io_uring is unavailable: io_uring_setup: " + c.text + DisabledSuffix());
    EXPECT_TRUE(pread.ok()) << pread.ToString();
    EXPECT_EQ(0, std::memcmp(out.data(), data.data(), data.size()));
  }
}

// ---------------------------------------------------------------------------------
// UringFile, over buffered and O_DIRECT files and several geometries.

struct Geometry {
  bool direct;
  int depth;
  uint64_t chunk;
};

class UringFileTest : public ::testing::TestWithParam<Geometry> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_URING();
    dir_ = DirectDir("uring");
    path_ = dir_ + "/f";
    data_ = RandomBytes(5 * 65536 + 4093, 21);
    ASSERT_TRUE(WriteBytes(path_, data_));
    options_.direct = GetParam().direct;
    options_.queue_depth = GetParam().depth;
    options_.chunk_bytes = GetParam().chunk;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  std::unique_ptr<ReadableFile> Open(const UringOptions& options) {
    std::string skip;
    std::unique_ptr<ReadableFile> f = OpenUring(path_, options, &skip);
    if (!skip.empty()) skip_ = skip;
    return f;
  }

  std::string dir_, path_, skip_;
  std::vector<std::byte> data_;
  UringOptions options_;
};

#define OPEN_URING_OR_SKIP(var, options)                                  \
  std::unique_ptr<ReadableFile> var = Open(options);                      \
  if (!skip_.empty()) GTEST_SKIP() << "O_DIRECT refused here: " << skip_; \
  ASSERT_NE(var, nullptr)

TEST_P(UringFileTest, ReadAtIsByteExact) {
  OPEN_URING_OR_SKIP(f, options_);
  EXPECT_EQ(f->size(), data_.size());
  EXPECT_EQ(f->direct_io(), options_.direct);
  const std::pair<uint64_t, uint64_t> cases[] = {{0, data_.size()},
                                                 {1, 4095},
                                                 {4095, 2},
                                                 {4096, 65536},
                                                 {5000, 200000},
                                                 {data_.size() - 1, 1},
                                                 {data_.size() - 5000, 5000},
                                                 {data_.size(), 0}};
  for (auto [off, len] : cases) {
    std::vector<std::byte> out(len, std::byte{0xee});
    Status s = f->ReadAt(off, out);
    ASSERT_TRUE(s.ok()) << off << "+" << len << ": " << s.ToString();
    if (len > 0) {
      EXPECT_EQ(0, std::memcmp(out.data(), data_.data() + off, len)) << off << "+" << len;
    }
  }
}

TEST_P(UringFileTest, ReadVAtScattersManyPiecesInOrder) {
  OPEN_URING_OR_SKIP(f, options_);
  std::mt19937 gen(7);
  for (int round = 0; round < 5; ++round) {
    uint64_t off = gen() % 10000;
    std::vector<std::vector<std::byte>> pieces;
    std::vector<iovec> iov;
    uint64_t total = 0;
    while (total < 150000) {
      uint64_t n = gen() % 3 == 0 ? gen() % 40000 : gen() % 300;  // empty pieces too
      pieces.emplace_back(n, std::byte{0xaa});
      total += n;
    }
    for (auto& p : pieces) iov.push_back({p.data(), p.size()});
    Status s = f->ReadVAt(off, iov);
    ASSERT_TRUE(s.ok()) << s.ToString();
    uint64_t at = off;
    for (const auto& p : pieces) {
      if (!p.empty()) {
        ASSERT_EQ(0, std::memcmp(p.data(), data_.data() + at, p.size())) << at;
      }
      at += p.size();
    }
  }
}

TEST_P(UringFileTest, ReadWindowAtReturnsExactlyTheRange) {
  OPEN_URING_OR_SKIP(f, options_);
  std::vector<std::byte> storage(400000 + 3 * 4096);
  std::byte* aligned = reinterpret_cast<std::byte*>(
      (reinterpret_cast<uintptr_t>(storage.data()) + 4095) / 4096 * 4096);
  std::span<std::byte> buffer(aligned, 400000 + 2 * 4096);
  for (auto [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 1}, {3, 100000}, {4096, 8192}, {data_.size() - 77, 77}, {123457, 200001}}) {
    Result<std::span<const std::byte>> w = f->ReadWindowAt(off, len, buffer);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_EQ(w->size(), len);
    EXPECT_EQ(0, std::memcmp(w->data(), data_.data() + off, len)) << off << "+" << len;
  }
}

TEST_P(UringFileTest, ConcurrentReadersEachUseTheirOwnRing) {
  OPEN_URING_OR_SKIP(f, options_);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 gen(100 + t);
      std::vector<std::byte> out(70000);
      for (int i = 0; i < 20; ++i) {
        uint64_t off = gen() % (data_.size() - out.size());
        if (!f->ReadAt(off, out).ok() ||
            std::memcmp(out.data(), data_.data() + off, out.size()) != 0) {
          ++bad;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

// The hook halves every completion, and answers -EAGAIN / -EINTR to every third: the
// remainder is resubmitted until every byte has arrived.
TEST_P(UringFileTest, ShortAndRetriedCompletionsAreResubmitted) {
  std::atomic<int> calls{0};
  options_.completion_hook = [&](uint64_t, uint32_t, int32_t res) -> int32_t {
    int n = ++calls;
    if (res <= 0) return res;
    if (n % 3 == 0) return n % 2 == 0 ? -EAGAIN : -EINTR;
    if (options_.direct) return res >= 8192 ? res / 8192 * 4096 : res;  // whole blocks
    return res > 1 ? res / 2 : res;
  };
  OPEN_URING_OR_SKIP(f, options_);
  const int after_open = calls.load();
  std::vector<std::byte> out(data_.size());
  Status s = f->ReadAt(0, out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(0, std::memcmp(out.data(), data_.data(), out.size()));
  // Every third completion was refused and most were cut short: each chunk took
  // several submissions.
  const uint64_t chunks = (data_.size() + options_.chunk_bytes - 1) / options_.chunk_bytes;
  EXPECT_GT(static_cast<uint64_t>(calls.load() - after_open), chunks + chunks / 4);
}

TEST_P(UringFileTest, ErrorCompletionNamesTheFileAndOffset) {
  // The chunk holding byte 200000 fails with EIO; others are fine.
  options_.completion_hook = [](uint64_t offset, uint32_t length, int32_t res) -> int32_t {
    return (offset <= 200000 && 200000 < offset + length) ? -EIO : res;
  };
  OPEN_URING_OR_SKIP(f, options_);
  std::vector<std::byte> out(data_.size() - 100);
  Status s = f->ReadAt(100, out);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  // The failing request starts at a chunk boundary (or at the read's start).
  uint64_t first = options_.direct ? 0 : 100;
  uint64_t start = 200000 < first + options_.chunk_bytes
                       ? first
                       : first + (200000 - first) / options_.chunk_bytes * options_.chunk_bytes;
  EXPECT_EQ(s.message(),
            path_ + ": read at offset " + std::to_string(start) + ": Input/output error");
}

TEST_P(UringFileTest, ZeroCompletionIsAShortRead) {
  // Reads stop at byte 65536 as if the file ended there (a block boundary).
  options_.completion_hook = [](uint64_t offset, uint32_t, int32_t res) -> int32_t {
    if (offset >= 65536) return 0;
    return res < 0 ? res : static_cast<int32_t>(std::min<uint64_t>(res, 65536 - offset));
  };
  OPEN_URING_OR_SKIP(f, options_);
  std::vector<std::byte> out(65536 + 10);
  Status s = f->ReadAt(0, out);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), path_ + ": short read at offset 65536");
}

TEST_P(UringFileTest, CompletionLargerThanAskedIsInternal) {
  options_.completion_hook = [](uint64_t, uint32_t length, int32_t res) -> int32_t {
    return res < 0 ? res : static_cast<int32_t>(length) + 1;
  };
  std::string skip;
  Result<std::unique_ptr<ReadableFile>> f = OpenFile(path_, IoMode::kUring, options_);
  if (!f.ok() && f.status().code() == StatusCode::kUnimplemented) {
    GTEST_SKIP() << f.status().message();
  }
  // The first read at open already goes through the hook.
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kInternal);
  EXPECT_EQ(
      f.status().message(),
      path_ + ": io_uring read at offset 0 returned 4097 bytes, more than the 4096 asked for");
}

TEST_P(UringFileTest, TruncatedFileIsDataLoss) {
  OPEN_URING_OR_SKIP(f, options_);
  ASSERT_EQ(::truncate(path_.c_str(), 100000), 0);
  std::vector<std::byte> out(50000);
  Status s = f->ReadAt(90000, out);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), path_ + ": file shrank to 100000 bytes while reading (expected " +
                             std::to_string(data_.size()) + ")");
  // The bytes before the cut still read exactly; the size check names the shrink.
  std::vector<std::byte> head(1000);
  ASSERT_TRUE(f->ReadAt(5000, head).ok());
  EXPECT_EQ(0, std::memcmp(head.data(), data_.data() + 5000, head.size()));
  Status c = f->CheckUnchanged();
  EXPECT_EQ(c.code(), StatusCode::kDataLoss);
  EXPECT_EQ(c.message(), path_ + ": file shrank to 100000 bytes while reading (expected " +
                             std::to_string(data_.size()) + ")");
}

TEST_P(UringFileTest, ReadPastEndIsOutOfRange) {
  OPEN_URING_OR_SKIP(f, options_);
  std::vector<std::byte> out(10);
  Status s = f->ReadAt(data_.size() - 5, out);
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s.message(), path_ + ": read of 10 bytes at offset " +
                             std::to_string(data_.size() - 5) + " passes the end of the file (" +
                             std::to_string(data_.size()) + " bytes)");
}

INSTANTIATE_TEST_SUITE_P(Geometries, UringFileTest,
                         ::testing::Values(Geometry{false, 1, 4096}, Geometry{false, 4, 65536},
                                           Geometry{false, 8, uint64_t{1} << 20},
                                           Geometry{true, 1, 4096}, Geometry{true, 4, 65536},
                                           Geometry{true, 8, uint64_t{1} << 20}),
                         [](const ::testing::TestParamInfo<Geometry>& i) {
                           return std::string(i.param.direct ? "direct" : "buffered") + "_depth" +
                                  std::to_string(i.param.depth) + "_chunk" +
                                  std::to_string(i.param.chunk);
                         });

// OpenDescriptors: the number of descriptors this process has open now.
size_t OpenDescriptors() {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)e;
    ++n;
  }
  return n;
}

// Rings are shared by the files of the process: 100 open files read by 8 threads hold
// 100 file descriptors plus about one ring per reading thread (and a bounded number of
// idle ones), not a ring per file and thread (a checkpoint of hundreds of shards read by
// 16 threads then ran out of descriptors with EMFILE).
TEST(UringScaleTest, RingsDoNotMultiplyWithFilesTimesThreads) {
  SKIP_WITHOUT_URING();
  std::string dir = TempDir("uring_scale");
  std::vector<std::byte> data = RandomBytes(3 * 4096 + 5, 17);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  const size_t before = OpenDescriptors();
  constexpr int kFiles = 100;
  constexpr int kThreads = 8;
  std::vector<std::unique_ptr<ReadableFile>> files;
  for (int i = 0; i < kFiles; ++i) {
    Result<std::unique_ptr<ReadableFile>> f = OpenFile(dir + "/f", IoMode::kUring);
    ASSERT_TRUE(f.ok()) << i << ": " << f.status().ToString();
    files.push_back(std::move(*f));
  }
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> out(data.size());
      for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < kFiles; ++i) {
          const ReadableFile& f = *files[(i * 7 + t * 13 + round) % kFiles];
          if (!f.ReadAt(0, out).ok() || std::memcmp(out.data(), data.data(), out.size()) != 0) {
            ++bad;
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  const size_t opened = OpenDescriptors() - before;
  // 100 files, at most 32 idle rings and one in use per thread; per file and thread it
  // was 100 + 100 (the rings made at open) + up to 8 per file.
  EXPECT_LE(opened, static_cast<size_t>(kFiles + 32 + kThreads)) << opened;
  files.clear();
  EXPECT_LE(OpenDescriptors() - before, static_cast<size_t>(32 + kThreads));
  std::system(("rm -rf '" + dir + "'").c_str());
}

// A child made by fork() (a data-loader worker, say) does not read through the rings the
// parent keeps idle: their rings are shared memory with the parent's kernel instance,
// and a child submitting through one leaves the parent's ring state behind the kernel's.
TEST(UringScaleTest, ForkedChildDoesNotShareTheParentsRings) {
  SKIP_WITHOUT_URING();
  std::string dir = TempDir("uring_fork");
  std::vector<std::byte> data = RandomBytes(200000, 23);
  ASSERT_TRUE(WriteBytes(dir + "/f", data));
  UringOptions options;
  options.chunk_bytes = 4096;  // many submissions per read
  Result<std::unique_ptr<ReadableFile>> f = OpenFile(dir + "/f", IoMode::kUring, options);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  std::vector<std::byte> out(data.size());
  ASSERT_TRUE((*f)->ReadAt(0, out).ok());  // the parent's rings are idle now
  fflush(nullptr);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // In the child: open and read the file a few times through io_uring.
    Result<std::unique_ptr<ReadableFile>> g = OpenFile(dir + "/f", IoMode::kUring, options);
    if (!g.ok()) ::_exit(2);
    std::vector<std::byte> buf(data.size());
    for (int i = 0; i < 3; ++i) {
      if (!(*g)->ReadAt(0, buf).ok() || std::memcmp(buf.data(), data.data(), buf.size()) != 0) {
        ::_exit(3);
      }
    }
    ::_exit(0);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  // The parent reads exactly as before.
  for (int i = 0; i < 3; ++i) {
    std::fill(out.begin(), out.end(), std::byte{0});
    Status s = (*f)->ReadAt(0, out);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(0, std::memcmp(out.data(), data.data(), out.size())) << i;
  }
  std::system(("rm -rf '" + dir + "'").c_str());
}

TEST(UringOptionsTest, InvalidOptionsAreRejected) {
  std::string dir = TempDir("uring");
  ASSERT_TRUE(WriteBytes(dir + "/f", RandomBytes(100, 1)));
  struct Case {
    int depth;
    uint64_t chunk;
    std::string message;
  };
  for (const Case& c :
       {Case{0, 4096, "io_uring queue depth 0: expected 1..1024"},
        Case{1025, 4096, "io_uring queue depth 1025: expected 1..1024"},
        Case{4, 4095,
             "io_uring chunk of 4095 bytes: expected a multiple of 4096 from 4096 to 1073741824"},
        Case{4, 0,
             "io_uring chunk of 0 bytes: expected a multiple of 4096 from 4096 to 1073741824"},
        Case{4, (uint64_t{1} << 30) + 4096,
             "io_uring chunk of 1073745920 bytes: expected a multiple of 4096 from 4096 to "
             "1073741824"}}) {
    UringOptions o;
    o.queue_depth = c.depth;
    o.chunk_bytes = c.chunk;
    Status v = ValidateUringOptions(o);
    EXPECT_EQ(v.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(v.message(), c.message);
    Result<std::unique_ptr<ReadableFile>> f = OpenFile(dir + "/f", IoMode::kUring, o);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status(), v);
  }
  EXPECT_TRUE(ValidateUringOptions(UringOptions{}).ok());
  EXPECT_EQ(UringOptions{}.queue_depth, 4);
  EXPECT_EQ(UringOptions{}.chunk_bytes, uint64_t{1} << 20);
  EXPECT_FALSE(UringOptions{}.direct);
}

TEST(UringOptionsTest, ModeNameRoundTrips) {
  EXPECT_EQ(IoModeName(IoMode::kUring), "uring");
  Result<IoMode> m = ParseIoMode("uring");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, IoMode::kUring);
  Result<IoMode> bad = ParseIoMode("io_uring");
  EXPECT_EQ(bad.status().message(),
            "invalid io mode 'io_uring': expected auto, pread, mmap, direct or uring");
}

TEST(UringOptionsTest, EmptyFileAndMissingFile) {
  SKIP_WITHOUT_URING();
  std::string dir = TempDir("uring");
  ASSERT_TRUE(WriteBytes(dir + "/empty", {}));
  Result<std::unique_ptr<ReadableFile>> e = OpenFile(dir + "/empty", IoMode::kUring);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->size(), 0u);
  EXPECT_TRUE((*e)->ReadAt(0, {}).ok());
  Result<std::unique_ptr<ReadableFile>> m = OpenFile(dir + "/nope", IoMode::kUring);
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(m.status().message(), dir + "/nope: No such file or directory");
}

// ---------------------------------------------------------------------------------
// Through the loader: sharded checkpoints, tiny slots, verify, cancel, truncation.

struct Sharded {
  std::string dir;
  std::vector<std::string> names;
  std::vector<std::string> bytes;  // per tensor
};

// WriteSharded: `count` U8 tensors of random sizes (a few larger than the 4 KiB
// slots used below) over 3 shards, with XXH3 records.
Sharded WriteShardedCheckpoint(const std::string& dir, int count, uint32_t seed) {
  Sharded m;
  m.dir = dir;
  std::mt19937 gen(seed);
  for (int i = 0; i < count; ++i) {
    uint64_t n = gen() % 4 == 0 ? 5000 + gen() % 60000 : gen() % 3000;
    m.names.push_back("layers." + std::to_string(i) + ".w");
    std::vector<std::byte> b = RandomBytes(n, seed * 1000 + i);
    m.bytes.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
  }
  std::vector<TensorToWrite> tensors;
  for (int i = 0; i < count; ++i) {
    tensors.push_back(
        TensorToWrite::FromBytes(m.names[i], Dtype::kU8, {m.bytes[i].size()},
                                 std::as_bytes(std::span(m.bytes[i].data(), m.bytes[i].size()))));
  }
  ShardOptions so;
  so.num_shards = 3;
  so.write.sync = false;
  Result<ShardedWriteResult> r = WriteShardedWithChecksums(dir, tensors, so);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return m;
}

LoadOptions UringLoad(uint64_t slot_bytes, int threads) {
  LoadOptions o;
  o.io = IoMode::kUring;
  o.threads = threads;
  o.sink.slot_bytes = slot_bytes;
  o.sink.slot_count = 2;
  return o;
}

// A whole load on a thread whose io_uring_setup fails (the readers it starts inherit the
// filter): `uring` is failed_precondition naming the shard, `auto` loads every byte.
TEST(UringUnavailableTest, LoadAllAutoStillWorks) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "seccomp filters are not installed under sanitizers";
#endif
  Sharded m = WriteShardedCheckpoint(TempDir("uring_ckpt"), 12, 3);
  Result<Checkpoint> ckpt = Checkpoint::Open(m.dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  bool installed = false;
  Status uring;
  Result<LoadedCheckpoint> automatic = InternalError("not run");
  std::thread t([&] {
    installed = DenyUringSetupOnThisThread(ENOSYS);
    if (!installed) return;
    uring = LoadAll(*ckpt, UringLoad(4096, 2)).status();
    LoadOptions o = UringLoad(4096, 2);
    o.io = IoMode::kAuto;
    automatic = LoadAll(*ckpt, o);
  });
  t.join();
  if (!installed) GTEST_SKIP() << "seccomp unavailable here";
  EXPECT_EQ(uring.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(uring.message(), ckpt->shards()[0].path +
                                 ": io_uring is unavailable: io_uring_setup: Function not "
                                 "implemented (ENOSYS)" +
                                 DisabledSuffix());
  ASSERT_TRUE(automatic.ok()) << automatic.status().ToString();
  EXPECT_EQ(automatic->io, IoMode::kPread);
  for (size_t i = 0; i < m.names.size(); ++i) {
    const LoadedTensor* tensor = automatic->Find(m.names[i]);
    ASSERT_NE(tensor, nullptr);
    EXPECT_EQ(std::string(static_cast<const char*>(tensor->data), tensor->bytes), m.bytes[i]);
  }
}

class UringLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_URING();
    m_ = WriteShardedCheckpoint(TempDir("uring_ckpt"), 40, 9);
    Result<Checkpoint> c = Checkpoint::Open(m_.dir);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ckpt_ = std::make_unique<Checkpoint>(std::move(*c));
    ASSERT_EQ(ckpt_->shards().size(), 3u);
  }
  Sharded m_;
  std::unique_ptr<Checkpoint> ckpt_;
};

TEST_F(UringLoadTest, LoadAllIsByteExactWithTinySlotsAndVerify) {
  for (uint64_t slot : {uint64_t{4096}, uint64_t{1} << 20}) {
    for (int threads : {1, 3}) {
      for (bool verify : {false, true}) {
        LoadOptions o = UringLoad(slot, threads);
        o.verify = verify;
        Result<LoadedCheckpoint> r = LoadAll(*ckpt_, o);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        EXPECT_EQ(r->io, IoMode::kUring);
        ASSERT_EQ(r->tensors.size(), m_.names.size());
        for (size_t i = 0; i < m_.names.size(); ++i) {
          const LoadedTensor* t = r->Find(m_.names[i]);
          ASSERT_NE(t, nullptr);
          ASSERT_EQ(t->bytes, m_.bytes[i].size());
          ASSERT_EQ(std::string(static_cast<const char*>(t->data), t->bytes), m_.bytes[i])
              << m_.names[i] << " slot " << slot << " threads " << threads;
        }
      }
    }
  }
}

TEST_F(UringLoadTest, LoadOptionsCarryTheRingGeometry) {
  for (bool direct : {false, true}) {
    LoadOptions o = UringLoad(4096, 2);
    o.uring.queue_depth = 2;
    o.uring.chunk_bytes = 4096;
    o.uring.direct = direct;
    std::atomic<int> completions{0};
    o.uring.completion_hook = [&](uint64_t, uint32_t length, int32_t res) {
      ++completions;
      EXPECT_LE(length, 4096u);  // chunks of at most chunk_bytes
      return res;
    };
    Result<LoadedCheckpoint> r = LoadAll(*ckpt_, o);
    if (!r.ok() && r.status().code() == StatusCode::kUnimplemented) {
      GTEST_SKIP() << r.status().message();  // O_DIRECT refused where the test runs
    }
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (size_t i = 0; i < m_.names.size(); ++i) {
      const LoadedTensor* t = r->Find(m_.names[i]);
      ASSERT_NE(t, nullptr);
      ASSERT_EQ(std::string(static_cast<const char*>(t->data), t->bytes), m_.bytes[i])
          << m_.names[i];
    }
    uint64_t data_bytes = 0;
    for (const std::string& b : m_.bytes) data_bytes += b.size();
    EXPECT_GE(static_cast<uint64_t>(completions.load()), data_bytes / 4096);
  }
}

TEST_F(UringLoadTest, InvalidRingGeometryIsRejected) {
  LoadOptions o = UringLoad(4096, 2);
  o.uring.queue_depth = 0;
  EXPECT_EQ(ValidateLoadOptions(o),
            InvalidArgumentError("io_uring queue depth 0: expected 1..1024"));
  Result<LoadedCheckpoint> r = LoadAll(*ckpt_, o);
  EXPECT_EQ(r.status(), InvalidArgumentError("io_uring queue depth 0: expected 1..1024"));
  o.uring.queue_depth = 4;
  o.uring.chunk_bytes = 5000;
  EXPECT_EQ(
      VerifyCheckpoint(*ckpt_, o).status(),
      InvalidArgumentError("io_uring chunk of 5000 bytes: expected a multiple of 4096 from 4096 "
                           "to 1073741824"));
}

TEST_F(UringLoadTest, LoadIntoIsByteExactOnASubset) {
  std::vector<std::vector<char>> buffers;
  std::vector<Target> targets;
  std::vector<size_t> which;
  for (size_t i = 0; i < m_.names.size(); i += 3) which.push_back(i);
  buffers.reserve(which.size());
  for (size_t i : which) {
    buffers.emplace_back(m_.bytes[i].size(), '\x5a');
    targets.push_back(
        {m_.names[i], Dtype::kU8, {m_.bytes[i].size()}, std::nullopt, buffers.back().data()});
  }
  LoadOptions o = UringLoad(4096, 2);
  o.match.strict = false;
  Result<LoadResult> r = LoadInto(*ckpt_, targets, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t k = 0; k < which.size(); ++k) {
    EXPECT_EQ(std::string(buffers[k].begin(), buffers[k].end()), m_.bytes[which[k]])
        << m_.names[which[k]];
  }
}

TEST_F(UringLoadTest, VerifyCheckpointReadsEveryByte) {
  Result<VerifyReport> r = VerifyCheckpoint(*ckpt_, UringLoad(4096, 2));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->files, 3u);
  uint64_t total = 0;
  for (const ShardInfo& s : ckpt_->shards()) total += s.size;
  EXPECT_EQ(r->bytes, total);
}

TEST_F(UringLoadTest, VerifyFindsAFlippedByte) {
  // Flip one byte of the largest tensor in its shard; a verifying load names it.
  size_t big = 0;
  for (size_t i = 0; i < m_.bytes.size(); ++i) {
    if (m_.bytes[i].size() > m_.bytes[big].size()) big = i;
  }
  const StoredTensor* t = nullptr;
  for (const StoredTensor& s : ckpt_->tensors()) {
    if (s.name == m_.names[big]) t = &s;
  }
  ASSERT_NE(t, nullptr);
  const ShardInfo& shard = ckpt_->shards()[t->shard];
  {
    std::fstream f(shard.path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(t->file_offset + 1000));
    char flipped = static_cast<char>(~m_.bytes[big][1000]);
    f.write(&flipped, 1);
  }
  // Opened again: a change after Open is refused before any byte is read (loader_test's
  // ShardChangedSinceOpenIsDataLoss); this is corruption already on disk.
  Result<Checkpoint> reopened = Checkpoint::Open(m_.dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  LoadOptions o = UringLoad(4096, 2);
  o.verify = true;
  Result<LoadedCheckpoint> r = LoadAll(*reopened, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("tensor '" + m_.names[big] + "' at bytes ["),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("): XXH3 of its " + std::to_string(m_.bytes[big].size()) +
                                      " bytes is "),
            std::string::npos)
      << r.status().message();
}

TEST_F(UringLoadTest, ProgressCallbackCancelsAtItsFirstCall) {
  LoadOptions o = UringLoad(4096, 2);
  o.progress = [&](uint64_t, uint64_t) { return false; };
  Result<LoadedCheckpoint> r = LoadAll(*ckpt_, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(r.status().message(), "load cancelled by the progress callback");
}

// ---------------------------------------------------------------------------------
// The streaming engine over kUring files, with the completion hook driving cancel and
// truncation at a chosen point of the load (no timing involved).

constexpr uint64_t kSpanBytes = 4096;
constexpr uint64_t kStreamFileBytes = 64 * kSpanBytes;

struct StreamCase {
  bool direct_file;     // UringOptions::direct
  bool direct_targets;  // StreamOptions::allow_direct_targets
};

class UringStreamTest : public ::testing::TestWithParam<StreamCase> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_URING();
    dir_ = DirectDir("uring_stream");
    path_ = dir_ + "/model.safetensors";
    data_ = RandomBytes(kStreamFileBytes, 31);
    ASSERT_TRUE(WriteBytes(path_, data_));
    out_.assign(kStreamFileBytes, std::byte{0x5a});
    // One tensor per span, whole spans (every span qualifies for direct targets).
    for (uint64_t at = 0; at < kStreamFileBytes; at += kSpanBytes) {
      uint32_t dest = static_cast<uint32_t>(dests_.size());
      dests_.push_back({out_.data() + at, kSpanBytes, Device{}, Dtype::kU8, Dtype::kU8,
                        "t" + std::to_string(dest)});
      spans_.push_back({0, at, kSpanBytes, {{0, kSpanBytes, dest, 0}}});
    }
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  // Run: open the file with `hook`, stream every span on 2 threads through a 2-slot
  // host sink.
  Status Run(std::function<int32_t(uint64_t, uint32_t, int32_t)> hook, StreamOptions options) {
    UringOptions uo;
    uo.direct = GetParam().direct_file;
    uo.completion_hook = std::move(hook);
    std::string skip;
    std::unique_ptr<ReadableFile> f = OpenUring(path_, uo, &skip);
    if (!skip.empty()) {
      skipped_ = skip;
      return OkStatus();
    }
    if (f == nullptr) return InternalError("open failed");
    Result<std::unique_ptr<HostSink>> sink = HostSink::Create(SinkOptions{2, kSpanBytes});
    EXPECT_TRUE(sink.ok());
    EXPECT_TRUE((*sink)->Begin(dests_, kSpanBytes).ok());
    options.threads = 2;
    options.allow_direct_targets = GetParam().direct_targets;
    const ReadableFile* files[] = {f.get()};
    Status s = Stream(files, spans_, **sink, options);
    slots_left_ = (*sink)->slots_in_use();
    return s;
  }

  std::string dir_, path_, skipped_;
  std::vector<std::byte> data_, out_;
  std::vector<Destination> dests_;
  std::vector<ReadSpan> spans_;
  int slots_left_ = -1;
};

#define SKIP_IF_REFUSED() \
  if (!skipped_.empty()) GTEST_SKIP() << "O_DIRECT refused here: " << skipped_

TEST_P(UringStreamTest, ByteExactAndObservedOnce) {
  std::mutex mu;
  std::vector<int> observed(dests_.size(), 0);
  bool bytes_ok = true;
  StreamOptions o;
  o.observe_region = [&](const ReadSpan& span, const CopyRegion& r,
                         std::span<const std::byte> src) {
    std::lock_guard<std::mutex> lock(mu);
    observed[r.dest] += static_cast<int>(src.size());
    bytes_ok =
        bytes_ok && src.size() == r.length &&
        std::memcmp(src.data(), data_.data() + span.file_offset + r.src_offset, r.length) == 0;
    return OkStatus();
  };
  Status s = Run(nullptr, o);
  SKIP_IF_REFUSED();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(0, std::memcmp(out_.data(), data_.data(), kStreamFileBytes));
  EXPECT_TRUE(bytes_ok);
  for (int n : observed) EXPECT_EQ(n, static_cast<int>(kSpanBytes));
  EXPECT_EQ(slots_left_, 0);
}

TEST_P(UringStreamTest, ObserverErrorFailsTheLoad) {
  StreamOptions o;
  o.observe_region = [](const ReadSpan& span, const CopyRegion&, std::span<const std::byte>) {
    return span.file_offset == 10 * kSpanBytes ? DataLossError("observer says no") : OkStatus();
  };
  Status s = Run(nullptr, o);
  SKIP_IF_REFUSED();
  EXPECT_EQ(s, DataLossError("observer says no"));
  EXPECT_EQ(slots_left_, 0);
}

TEST_P(UringStreamTest, CancelFlagSetMidLoad) {
  std::atomic<bool> cancel{false};
  std::atomic<int> completions{0};
  StreamOptions o;
  o.cancel = &cancel;
  // The open's first read is completion 1; cancel once a few spans have arrived.
  Status s = Run(
      [&](uint64_t, uint32_t, int32_t res) {
        if (++completions == 6) cancel.store(true);
        return res;
      },
      o);
  SKIP_IF_REFUSED();
  EXPECT_EQ(s, CancelledError("load cancelled"));
  EXPECT_LT(completions.load(), 6 + 4);  // readers stop at their next span
  EXPECT_EQ(slots_left_, 0);
}

TEST_P(UringStreamTest, ProgressCallbackCancelsMidLoad) {
  StreamOptions o;
  std::vector<uint64_t> seen;
  o.progress = [&](uint64_t done, uint64_t) {
    seen.push_back(done);
    return done == 0;  // go on at the first call, stop at the first progress
  };
  // Slow completions (1 ms each) so that progress is seen before the end.
  Status s = Run(
      [](uint64_t, uint32_t, int32_t res) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return res;
      },
      o);
  SKIP_IF_REFUSED();
  EXPECT_EQ(s, CancelledError("load cancelled by the progress callback"));
  ASSERT_GE(seen.size(), 2u);
  EXPECT_GT(seen[1], 0u);
  EXPECT_LT(seen[1], kStreamFileBytes);
  EXPECT_EQ(slots_left_, 0);
}

TEST_P(UringStreamTest, TruncatedMidLoadIsDataLoss) {
  std::atomic<int> completions{0};
  Status s = Run(
      [&](uint64_t, uint32_t, int32_t res) {
        if (++completions == 6) {
          EXPECT_EQ(::truncate(path_.c_str(), 0), 0);
        }
        return res;
      },
      StreamOptions{});
  SKIP_IF_REFUSED();
  EXPECT_EQ(s, DataLossError(path_ + ": file shrank to 0 bytes while reading (expected " +
                             std::to_string(kStreamFileBytes) + ")"));
  EXPECT_EQ(slots_left_, 0);
}

TEST_P(UringStreamTest, ReplacedMidLoadIsAborted) {
  std::atomic<int> completions{0};
  Status s = Run(
      [&](uint64_t, uint32_t, int32_t res) {
        if (++completions == 6) {
          std::string other = dir_ + "/new";
          EXPECT_TRUE(WriteBytes(other, RandomBytes(kStreamFileBytes, 32)));
          EXPECT_EQ(std::rename(other.c_str(), path_.c_str()), 0);
        }
        return res;
      },
      StreamOptions{});
  SKIP_IF_REFUSED();
  EXPECT_EQ(s, AbortedError(path_ + ": file was replaced while loading (inode changed)"));
}

INSTANTIATE_TEST_SUITE_P(Paths, UringStreamTest,
                         ::testing::Values(StreamCase{false, true}, StreamCase{false, false},
                                           StreamCase{true, false}),
                         [](const ::testing::TestParamInfo<StreamCase>& i) {
                           return std::string(i.param.direct_file ? "odirect" : "buffered") +
                                  (i.param.direct_targets ? "_direct_targets" : "_staged");
                         });

}  // namespace
}  // namespace shardload
