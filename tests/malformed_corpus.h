// tests/malformed_corpus.h — named malformed and tricky-but-valid safetensors files.
//
// Provides `CorpusCase` (whole-file bytes plus the exact expected outcome of
// ParseBuffer with label kCorpusLabel), `MalformedCorpus()` covering every
// validation rule of format/header.h (framing, UTF-8/JSON syntax, schema and dtype,
// shape, offsets, whole-file coverage, metadata, duplicates, scale), and
// `WriteMalformedCorpus()` to drop the cases into a folder (fuzzing seeds).
//
//   for (const CorpusCase& c : MalformedCorpus()) {
//     Result<Header> h = ParseBuffer(AsBytes(c.bytes), kCorpusLabel);
//     EXPECT_EQ(h.status(), c.expected) << c.name;
//   }
//   Status s = WriteMalformedCorpus("/tmp/seeds", {.include_large = false});
#ifndef SHARDLOAD_TESTS_MALFORMED_CORPUS_H_
#define SHARDLOAD_TESTS_MALFORMED_CORPUS_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/status.h"

namespace shardload::testing {

// kCorpusLabel: the label every expected message starts with.
inline constexpr std::string_view kCorpusLabel = "m.safetensors";

// CorpusCase: one input. `expected` is OK for a valid file (then `tensors` is the
// tensor count ParseBuffer must report), else the exact code and message.
struct CorpusCase {
  std::string name;   // "group/what", unique
  std::string bytes;  // the whole file
  Status expected;
  size_t tensors = 0;
  bool large = false;  // megabytes of input (scale cases)
};

// MalformedCorpus: every case, in a stable order. Building it takes well under a
// second (the large cases are ~10 MB in total).
std::vector<CorpusCase> MalformedCorpus();

// AsBytes: a view of `s` as bytes, for ParseBuffer.
inline std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// WriteCorpusOptions: what WriteMalformedCorpus writes.
struct WriteCorpusOptions {
  // include_large: also write the scale cases (about 10 MB). Default true.
  bool include_large = true;
};

// WriteMalformedCorpus: write each case to `dir`/<name>.safetensors, with every byte
// of the name other than [A-Za-z0-9_-] written as '_'
// (the folder must exist). Errors: the first failed create/write, with its path.
Status WriteMalformedCorpus(const std::string& dir, const WriteCorpusOptions& options = {});

}  // namespace shardload::testing

#endif  // SHARDLOAD_TESTS_MALFORMED_CORPUS_H_
