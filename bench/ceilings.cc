// bench/ceilings.cc — memcpy, buffered read, O_DIRECT read ceilings; page-cache drop.
#include "bench/ceilings.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "loader/arena.h"

namespace shardload::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Mapping {
  void* p = MAP_FAILED;
  uint64_t n = 0;
  ~Mapping() {
    if (p != MAP_FAILED) ::munmap(p, n);
  }
};

Status MapPrefaulted(Mapping* m, uint64_t bytes) {
  m->n = bytes;
  m->p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (m->p == MAP_FAILED) return ErrnoToStatus(errno, "mapping " + std::to_string(bytes) + " bytes");
  std::memset(m->p, 1, bytes);
  return OkStatus();
}

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

// FillFresh: seconds to map `bytes` of fresh memory, optionally pre-fault it, and memset
// it on `threads` threads (the unmap afterwards is not timed).
Result<double> FillFresh(int threads, uint64_t bytes, bool prefault) {
  Clock::time_point start = Clock::now();
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return ResourceExhaustedError("fresh-memory ceiling: cannot map " + std::to_string(bytes) +
                                  " bytes: " + std::strerror(errno));
  }
  const uint64_t page = 4096;
  uint64_t per = (bytes / threads + page - 1) / page * page;
  auto run = [&](auto fn) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      uint64_t off = per * t;
      if (off >= bytes) break;
      uint64_t n = std::min(per, bytes - off);
      pool.emplace_back([&fn, p, off, n] { fn(static_cast<char*>(p) + off, n); });
    }
    for (std::thread& t : pool) t.join();
  };
  if (prefault) run([](char* q, uint64_t n) { (void)PrefaultPages(reinterpret_cast<std::byte*>(q), n); });
  run([](char* q, uint64_t n) { std::memset(q, 1, n); });
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ::munmap(p, bytes);
  return seconds;
}

}  // namespace

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Result<double> MeasureFreshMemoryGBps(int threads, uint64_t bytes) {
  if (threads < 1) return InvalidArgumentError("fresh-memory ceiling needs threads >= 1");
  if (bytes == 0) bytes = 1;
  double best = 0;
  for (int round = 0; round < 2; ++round) {
    for (bool prefault : {false, true}) {
      SL_ASSIGN_OR_RETURN(double seconds, FillFresh(threads, bytes, prefault));
      if (seconds > 0) best = std::max(best, bytes / seconds / 1e9);
    }
  }
  return best;
}

Result<double> MeasureMemcpyGBps(int threads, uint64_t bytes, int repeats) {
  if (threads < 1 || repeats < 1) {
    return InvalidArgumentError("memcpy ceiling needs threads >= 1 and repeats >= 1");
  }
  Mapping src, dst;
  SL_RETURN_IF_ERROR(MapPrefaulted(&src, bytes));
  SL_RETURN_IF_ERROR(MapPrefaulted(&dst, bytes));
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    uint64_t per = bytes / threads;
    Clock::time_point start = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      uint64_t off = per * t;
      uint64_t n = t == threads - 1 ? bytes - off : per;
      pool.emplace_back([&, off, n] {
        std::memcpy(static_cast<char*>(dst.p) + off, static_cast<const char*>(src.p) + off, n);
      });
    }
    for (std::thread& t : pool) t.join();
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, bytes / s / 1e9);
  }
  return best;
}

Result<double> MeasureBufferedReadGBps(const std::vector<std::string>& paths, uint64_t block_bytes) {
  std::unique_ptr<char[]> buf(new char[block_bytes]);
  uint64_t total = 0;
  Clock::time_point start = Clock::now();
  for (const std::string& p : paths) {
    FdCloser fd{::open(p.c_str(), O_RDONLY | O_CLOEXEC)};
    if (fd.fd < 0) return ErrnoToStatus(errno, p);
    while (true) {
      ssize_t r = ::read(fd.fd, buf.get(), block_bytes);
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoToStatus(errno, p + ": read");
      }
      if (r == 0) break;
      total += static_cast<uint64_t>(r);
    }
  }
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  return total / s / 1e9;
}

Result<double> MeasureDirectReadGBps(const std::vector<std::string>& paths, uint64_t block_bytes,
                                     int in_flight, uint64_t max_bytes) {
  if (in_flight < 1 || block_bytes % 4096 != 0 || block_bytes == 0) {
    return InvalidArgumentError("O_DIRECT ceiling needs in_flight >= 1 and 4096-multiple blocks");
  }
  struct Job {
    int fd;
    uint64_t offset;
  };
  std::vector<std::unique_ptr<FdCloser>> fds;
  std::vector<uint64_t> sizes;
  for (const std::string& p : paths) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd < 0) {
      if (errno == EINVAL) return UnimplementedError(p + ": the filesystem refuses O_DIRECT");
      return ErrnoToStatus(errno, p);
    }
    fds.push_back(std::unique_ptr<FdCloser>(new FdCloser{fd}));
    off_t size = ::lseek(fd, 0, SEEK_END);
    if (size < 0) return ErrnoToStatus(errno, p + ": lseek");
    sizes.push_back(static_cast<uint64_t>(size));
  }
  // Blocks round-robin over the files (block k of every file before block k + 1 of
  // any), up to max_bytes in all when it is set.
  std::vector<Job> jobs;
  uint64_t queued = 0;
  for (uint64_t at = 0; max_bytes == 0 || queued < max_bytes; at += block_bytes) {
    bool any = false;
    for (size_t f = 0; f < fds.size() && (max_bytes == 0 || queued < max_bytes); ++f) {
      if (at >= sizes[f]) continue;
      jobs.push_back({fds[f]->fd, at});
      queued += std::min(block_bytes, sizes[f] - at);
      any = true;
    }
    if (!any) break;
  }
  // Threads pull jobs in that order, so requests to several files are in flight at once.
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> total{0};
  std::mutex mu;
  Status first;
  Clock::time_point start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < in_flight; ++t) {
    pool.emplace_back([&] {
      void* raw = nullptr;
      if (posix_memalign(&raw, 4096, block_bytes) != 0) return;
      std::unique_ptr<void, decltype(&std::free)> buf(raw, &std::free);
      while (true) {
        size_t k = next.fetch_add(1);
        if (k >= jobs.size()) break;
        ssize_t r = ::pread(jobs[k].fd, buf.get(), block_bytes, static_cast<off_t>(jobs[k].offset));
        if (r < 0) {
          std::lock_guard<std::mutex> lock(mu);
          if (first.ok()) first = ErrnoToStatus(errno, "O_DIRECT read");
          break;
        }
        total.fetch_add(static_cast<uint64_t>(r));
      }
    });
  }
  for (std::thread& t : pool) t.join();
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  SL_RETURN_IF_ERROR(first);
  return total.load() / s / 1e9;
}

Status DropPageCache() {
  ::sync();
  auto failed = [](int err) {
    // EACCES/EPERM: not root. ENOENT: a kernel (or sandbox, such as gVisor) without it.
    return ErrnoToStatus(err, std::string("cannot drop the page cache") +
                                  (err == EACCES || err == EPERM ? " (needs root)" : "") +
                                  ": /proc/sys/vm/drop_caches");
  };
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return failed(errno);
  FdCloser closer{fd};
  if (::write(fd, "3\n", 2) != 2) return failed(errno);
  return OkStatus();
}

}  // namespace shardload::bench
