// bench/writer_bench.cc — throughput of format/writer.h against a same-run ceiling.
//
//   bazel build -c opt //bench:writer_bench
//   bazel-out/k8-opt/bin/bench/writer_bench [DIR=/dev/shm] [MiB=512] [ROUNDS=7]
//
// Each round, interleaved: (1) ceiling — write() of one in-memory buffer to a new file
// in DIR in 8 MiB calls; (2) WriteFile of the same buffer as one U8 tensor (temp file,
// write, rename; no fsync); (3) WriteFile of a generated tensor (the sample generator
// filling the 8 MiB buffer, as `write-sample` does); (4) 64 tensors of equal total
// size from memory. Prints the median GB/s of each and its ratio to the ceiling.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/ceilings.h"
#include "cli/sample_model.h"
#include "format/writer.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace shardload;
  using bench::Median;
  const std::string dir = argc > 1 ? argv[1] : "/dev/shm";
  const uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 512;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 7;
  const uint64_t bytes = mib << 20;
  std::vector<std::byte> buffer(bytes);
  cli::FillSampleBytes(1, 1, 0, buffer);
  const std::string path = dir + "/writer_bench.safetensors";

  std::vector<TensorToWrite> one = {TensorToWrite::FromBytes("w", Dtype::kU8, {bytes}, buffer)};
  std::vector<TensorToWrite> gen = {TensorToWrite::FromGenerator(
      "w", Dtype::kU8, {bytes}, [](uint64_t offset, std::span<std::byte> out) {
        cli::FillSampleBytes(1, 1, offset, out);
        return OkStatus();
      })};
  std::vector<TensorToWrite> many;
  const uint64_t part = bytes / 64;
  for (int i = 0; i < 64; ++i) {
    many.push_back(TensorToWrite::FromBytes("layers." + std::to_string(i) + ".w", Dtype::kU8,
                                            {part}, std::span(buffer).subspan(i * part, part)));
  }
  WriteOptions options;
  options.sync = false;

  std::vector<double> ceiling, mem, generated, tensors64;
  for (int r = 0; r < rounds; ++r) {
    ::unlink(path.c_str());
    auto t0 = Clock::now();
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
      std::perror(path.c_str());
      return 1;
    }
    for (uint64_t off = 0; off < bytes;) {
      size_t n = std::min<uint64_t>(uint64_t{8} << 20, bytes - off);
      ssize_t w = ::write(fd, buffer.data() + off, n);
      if (w <= 0) {
        std::perror("write");
        return 1;
      }
      off += static_cast<uint64_t>(w);
    }
    ::close(fd);
    auto t1 = Clock::now();
    ceiling.push_back(bytes / Seconds(t0, t1) / 1e9);
    ::unlink(path.c_str());

    struct Case {
      std::vector<TensorToWrite>* tensors;
      std::vector<double>* out;
    } cases[] = {{&one, &mem}, {&gen, &generated}, {&many, &tensors64}};
    for (const Case& c : cases) {
      auto s0 = Clock::now();
      Status s = WriteFile(path, *c.tensors, std::nullopt, options);
      auto s1 = Clock::now();
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
      c.out->push_back(bytes / Seconds(s0, s1) / 1e9);
      ::unlink(path.c_str());
    }
  }
  const double ceil = Median(ceiling);
  std::printf("writer_bench: %llu MiB to %s, %d rounds, medians\n",
              static_cast<unsigned long long>(mib), dir.c_str(), rounds);
  std::printf("  ceiling  write() 8 MiB calls     %6.2f GB/s\n", ceil);
  std::printf("  WriteFile 1 tensor from memory   %6.2f GB/s  %.2fx ceiling\n", Median(mem),
              Median(mem) / ceil);
  std::printf("  WriteFile 1 generated tensor     %6.2f GB/s  %.2fx ceiling\n", Median(generated),
              Median(generated) / ceil);
  std::printf("  WriteFile 64 tensors from memory %6.2f GB/s  %.2fx ceiling\n", Median(tensors64),
              Median(tensors64) / ceil);
  return 0;
}
