// tests/fixtures.h — tiny builders for safetensors files and sharded indexes in tests.
//
// Provides `FixtureTensor`, `SafetensorsBytes` (a valid file, bytes written exactly as
// the format says, tensors laid out in the order given), `IndexJson`, `JsonQuote`,
// `PatternBytes`, `WriteFile` and `MakeTestDir`. Test-only: nothing here validates
// its input beyond what a test needs, and a file can be made invalid on purpose by
// editing the returned bytes.
//
//   std::string dir = MakeTestDir("sharded");
//   ASSERT_TRUE(WriteFile(dir + "/a.safetensors",
//                         SafetensorsBytes({{"w", "F32", {2}, PatternBytes(8, 1)}})));
//   ASSERT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
//                         IndexJson({{"w", "a.safetensors"}})));
#ifndef SHARDLOAD_TESTS_FIXTURES_H_
#define SHARDLOAD_TESTS_FIXTURES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shardload::testing {

// FixtureTensor: one tensor to write. `data` holds its bytes; when empty, the size is
// computed from dtype × shape and filled with PatternBytes(size, seed of the name).
struct FixtureTensor {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::string data;
};

// PatternBytes: `n` deterministic, seed-dependent bytes.
std::string PatternBytes(size_t n, uint32_t seed);

// JsonQuote: `s` as a JSON string literal ("..." with \" \\ and \u00XX escapes).
std::string JsonQuote(std::string_view s);

// TensorData: the bytes FixtureTensor `t` is written with (its data, or the pattern).
std::string TensorData(const FixtureTensor& t);

// HeaderJson: the JSON header for `tensors` laid out back to back in the given order,
// with `metadata` as __metadata__ (omitted when empty).
std::string HeaderJson(const std::vector<FixtureTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// SafetensorsBytes: a whole file: 8-byte little-endian length, the header (padded with
// spaces to a multiple of 8), then the tensors' bytes.
std::string SafetensorsBytes(const std::vector<FixtureTensor>& tensors,
                             const std::map<std::string, std::string>& metadata = {});

// IndexJson: a model.safetensors.index.json body with this weight_map (in order) and
// "metadata" holding `metadata` plus "total_size" (a number) when given.
std::string IndexJson(const std::vector<std::pair<std::string, std::string>>& weight_map,
                      const std::map<std::string, std::string>& metadata = {},
                      std::optional<uint64_t> total_size = std::nullopt);

// WriteFile: write `bytes` to `path` (replacing it); false on any error.
bool WriteFile(const std::string& path, std::string_view bytes);

// ReadFile: the whole file, or std::nullopt.
std::optional<std::string> ReadFile(const std::string& path);

// MakeTestDir: a new empty folder under $TEST_TMPDIR (or /tmp), unique per call,
// whose name starts with `tag`. Aborts the test program if it cannot be created.
std::string MakeTestDir(std::string_view tag);

// RunResult: what a command run by RunShardload did.
struct RunResult {
  int exit_code = -1;  // -1 when it did not exit normally
  std::string out;     // its stdout
  std::string err;     // its stderr
};

// RunShardload: run `cli/shardload ARGS` (runfiles-relative: the test target must have
// //cli:shardload in its data) through the shell, capturing stdout and stderr.
RunResult RunShardload(const std::string& args);

// ByteRangeText: " at bytes [a, b)", where stored tensor `name` of the checkpoint at
// `path` lies in its file (as checksum mismatch messages say it); a test failure and
// "" when the checkpoint does not open or lacks the tensor.
std::string ByteRangeText(const std::string& path, const std::string& name);

}  // namespace shardload::testing

#endif  // SHARDLOAD_TESTS_FIXTURES_H_
