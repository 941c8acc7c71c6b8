// bench/copy_phase_bench.cc — how the kernel's copy out of the page cache depends on the
// distance between a read's file offset and its destination address modulo 64, and
// what the library's pread file (which reads long ranges off that phase in shifted
// pieces, loader/file.cc PreadPhased) makes of it.
//
//   bazel build -c opt //bench:copy_phase_bench
//   bazel-out/k8-opt/bin/bench/copy_phase_bench FILE 9
//
// FILE (at least 1 MiB, in the page cache; the bench reads it once first) is read by
// every hardware thread in 16 MiB pieces (one piece of the file's size, rounded down to
// 4 KiB, for a smaller file) into a 2 MiB-aligned destination of its size,
// from file offset P, for P in {0, 8, 24, 32, 56}: once with plain pread(2) in place,
// once through ReadableFile::ReadAt of an IoMode::kPread file. All ten cases run once
// per round, so they see the same machine state; printed are the medians in GB/s and
// each case's ratio to the phase-0 plain read of the same rounds.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/ceilings.h"
#include "format/scoped_fd.h"
#include "loader/arena.h"
#include "loader/file.h"

namespace shardload::bench {
namespace {

constexpr uint64_t kMaxPiece = uint64_t{16} << 20;
constexpr uint64_t kPhases[] = {0, 8, 24, 32, 56};

int Run(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: copy_phase_bench FILE ROUNDS\n");
    return 2;
  }
  const std::string path = argv[1];
  const int rounds = std::atoi(argv[2]);
  if (rounds < 1 || rounds > 1000) {
    std::fprintf(stderr, "copy_phase_bench: ROUNDS must be in 1..1000, got '%s'\n", argv[2]);
    return 2;
  }
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    std::perror(path.c_str());
    return 1;
  }
  Result<std::unique_ptr<ReadableFile>> file = OpenFile(path, IoMode::kPread);
  if (!file.ok()) {
    std::fprintf(stderr, "copy_phase_bench: %s\n", file.status().ToString().c_str());
    return 1;
  }
  const uint64_t file_size = (*file)->size();
  if (file_size < (uint64_t{1} << 20) + 64) {
    std::fprintf(stderr, "copy_phase_bench: %s: needs at least 1 MiB\n", path.c_str());
    return 2;
  }
  // Whole pieces, with room after them for every phase.
  const uint64_t piece = std::min(kMaxPiece, (file_size - 64) / 4096 * 4096);
  const uint64_t bytes = (file_size - 64) / piece * piece;
  Result<std::unique_ptr<HostArena>> arena = HostArena::Allocate(bytes, HostArenaOptions{});
  if (!arena.ok()) {
    std::fprintf(stderr, "copy_phase_bench: %s\n", arena.status().ToString().c_str());
    return 1;
  }
  std::byte* dst = (*arena)->data();
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  // Read: every thread takes every threads-th piece; `library` picks ReadAt over pread.
  auto read_all = [&](uint64_t phase, bool library) {
    std::vector<std::thread> pool;
    std::vector<int> failed(threads, 0);
    const auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (uint64_t at = t * piece; at < bytes; at += threads * piece) {
          if (library) {
            failed[t] |= !(*file)->ReadAt(phase + at, {dst + at, piece}).ok();
          } else {
            failed[t] |= ::pread(fd.get(), dst + at, piece, static_cast<off_t>(phase + at)) !=
                         static_cast<ssize_t>(piece);
          }
        }
      });
    }
    for (std::thread& th : pool) th.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (std::count(failed.begin(), failed.end(), 1) > 0) return -1.0;
    return bytes / seconds / 1e9;
  };

  if (read_all(0, false) < 0) {  // brings the file into the page cache
    std::fprintf(stderr, "copy_phase_bench: %s: a read failed\n", path.c_str());
    return 1;
  }
  std::vector<std::vector<double>> gbps(2 * std::size(kPhases));
  for (int r = 0; r < rounds; ++r) {
    for (size_t c = 0; c < gbps.size(); ++c) {
      const double g = read_all(kPhases[c / 2], c % 2 == 1);
      if (g < 0) {
        std::fprintf(stderr, "copy_phase_bench: %s: a read failed\n", path.c_str());
        return 1;
      }
      gbps[c].push_back(g);
    }
  }
  std::printf("%s: %.2f GB per read, %d threads, %d rounds (medians)\n", path.c_str(), bytes / 1e9,
              threads, rounds);
  const double base = Median(gbps[0]);
  for (size_t c = 0; c < gbps.size(); ++c) {
    std::printf("phase %2llu  %-16s %7.2f GB/s  %.2fx phase-0 pread\n",
                static_cast<unsigned long long>(kPhases[c / 2]),
                c % 2 ? "ReadableFile" : "pread in place", Median(gbps[c]), Median(gbps[c]) / base);
  }
  return 0;
}

}  // namespace
}  // namespace shardload::bench

int main(int argc, char** argv) { return shardload::bench::Run(argc, argv); }
