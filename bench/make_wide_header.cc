// bench/make_wide_header.cc — write a valid safetensors file with many tiny tensors.
//
// Usage: make_wide_header OUT.safetensors [N=100000]
// Writes bench/wide_header.h's file: N tensors with realistic MoE-style names
// ("model.layers.12.mlp.experts.45.down_proj.weight", ...), dtype F16, shape [4]
// (8 bytes each), in offset order, __metadata__ {"format": "pt"}, header padded with
// spaces to a multiple of 8 as the reference writer does; data bytes are zeros.
// Used by the header benchmarks and the whole-process `shardload inspect` comparison.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench/wide_header.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s OUT.safetensors [N=100000]\n", argv[0]);
    return 2;
  }
  char* endp = nullptr;
  uint64_t n = argc == 3 ? std::strtoull(argv[2], &endp, 10) : 100000;
  if (argc == 3 && (*argv[2] == '\0' || *endp != '\0' || n > 800'000)) {
    std::fprintf(stderr, "N must be an integer in [0, 800000] (the header must stay under 100 MB)\n");
    return 2;
  }
  std::string file = shardload::bench::WideSafetensorsFile(n);
  std::FILE* f = std::fopen(argv[1], "wb");
  if (f == nullptr) {
    std::perror(argv[1]);
    return 1;
  }
  bool ok = std::fwrite(file.data(), 1, file.size(), f) == file.size();
  if (std::fclose(f) != 0) ok = false;
  if (!ok) {
    std::perror(argv[1]);
    return 1;
  }
  std::printf("%s: %llu tensors, %zu bytes\n", argv[1], static_cast<unsigned long long>(n), file.size());
  return 0;
}
