// tests/io_util.h — small helpers for the I/O tests (file, stream, truncation, loader).
//
// Provides `TempDir` (a fresh folder under $TEST_TMPDIR or /tmp), `RandomBytes`
// (deterministic bytes from a seed), `WriteBytes` and `AllIoModes`. Test-only.
//
//   std::string dir = TempDir("file");
//   std::vector<std::byte> data = RandomBytes(1 << 20, 7);
//   ASSERT_TRUE(WriteBytes(dir + "/f.bin", data));
#ifndef SHARDLOAD_TESTS_IO_UTIL_H_
#define SHARDLOAD_TESTS_IO_UTIL_H_

#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "loader/file.h"

namespace shardload::testing {

// TempDir: a new, empty folder whose name starts with `tag`; aborts when impossible.
inline std::string TempDir(const std::string& tag, const char* base_override = nullptr) {
  const char* base = base_override != nullptr ? base_override : std::getenv("TEST_TMPDIR");
  std::string templ = std::string(base != nullptr ? base : "/tmp") + "/" + tag + "-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  return templ;
}

// RandomBytes: `n` bytes from a seeded generator (the same seed gives the same bytes).
inline std::vector<std::byte> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<std::byte> out(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = gen();
    for (int k = 0; k < 8; ++k) out[i + k] = static_cast<std::byte>(v >> (8 * k));
  }
  for (; i < n; ++i) out[i] = static_cast<std::byte>(gen());
  return out;
}

// WriteBytes: write `bytes` to `path`, replacing it; false on error.
inline bool WriteBytes(const std::string& path, std::span<const std::byte> bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(f);
}

// AllIoModes: every concrete mode (kAuto resolves to kPread in OpenFile). Opening in
// kDirect may fail with unimplemented (filesystem) and in kUring with
// failed_precondition (no io_uring here): tests skip those cases.
inline std::vector<IoMode> AllIoModes() {
  return {IoMode::kPread, IoMode::kMmap, IoMode::kDirect, IoMode::kUring};
}

}  // namespace shardload::testing

#endif  // SHARDLOAD_TESTS_IO_UTIL_H_
