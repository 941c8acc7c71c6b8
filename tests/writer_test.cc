// Tests of format/writer.h: exact bytes (checked against what the Hugging Face
// reference writes for the same input), validation errors, atomic replacement,
// generators, byte-size parsing, sharding and the index file.
#include "format/writer.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "format/folder_lock.h"
#include "format/header.h"
#include "format/index.h"

namespace shardload {
namespace {

using namespace std::string_literals;
using V = std::vector<TensorToWrite>;

std::span<const std::byte> Bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string FromHex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  }
  return out;
}

// ExpectedFile: 8-byte length + `header` (already padded, as the reference writes
// it) + data. Fails the test when the literal is not padded to a multiple of 8.
std::string ExpectedFile(const std::string& header, const std::string& data) {
  EXPECT_EQ(header.size() % 8, 0u) << "test literal not padded";
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) return names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string MakeScratchDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/writer_" + name + "_XXXXXX";
  char* made = mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr);
  return tmpl;
}

// The reference (safetensors 0.8.0, numpy.save) output for {"w": F32 [1.0, 2.0]}.
TEST(WriterTest, SingleTensorMatchesReferenceBytes) {
  std::string data = FromHex("0000803f00000040");
  std::vector<TensorToWrite> t = {TensorToWrite::FromBytes("w", Dtype::kF32, {2}, Bytes(data))};
  Result<std::string> out = SerializeToString(t, std::nullopt);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, ExpectedFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  )", data));
}

// Alignment order: dtype descending (I64 > F64 > F32 > F16 > U8 > BOOL), then name;
// every tensor starts at a multiple of its element size; metadata first.
TEST(WriterTest, OrdersByDtypeAlignmentThenNameLikeReference) {
  std::string a = FromHex("01"), ab = FromHex("0203"), b = FromHex("0700000000000000"),
              c = FromHex("01"), m = FromHex("003c"), y = FromHex("00004040"),
              z = FromHex("000000000000e03f");
  std::vector<TensorToWrite> t = {
      TensorToWrite::FromBytes("a", Dtype::kU8, {1}, Bytes(a)),
      TensorToWrite::FromBytes("z", Dtype::kF64, {1}, Bytes(z)),
      TensorToWrite::FromBytes("m", Dtype::kF16, {1}, Bytes(m)),
      TensorToWrite::FromBytes("b", Dtype::kI64, {1}, Bytes(b)),
      TensorToWrite::FromBytes("c", Dtype::kBOOL, {1}, Bytes(c)),
      TensorToWrite::FromBytes("y", Dtype::kF32, {1}, Bytes(y)),
      TensorToWrite::FromBytes("ab", Dtype::kU8, {2}, Bytes(ab)),
  };
  Result<std::string> out = SerializeToString(t, Metadata{{"format", "pt"}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("z":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},"y":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
      R"("m":{"dtype":"F16","shape":[1],"data_offsets":[20,22]},"a":{"dtype":"U8","shape":[1],"data_offsets":[22,23]},)"
      R"("ab":{"dtype":"U8","shape":[2],"data_offsets":[23,25]},"c":{"dtype":"BOOL","shape":[1],"data_offsets":[25,26]}}  )";
  EXPECT_EQ(*out, ExpectedFile(header, FromHex("0700000000000000000000000000e03f00004040003c01020301")));

  Result<FileLayout> layout = SerializeHeader(t, Metadata{{"format", "pt"}}, "x");
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->order, (std::vector<size_t>{3, 1, 5, 2, 0, 6, 4}));
  for (size_t k = 0; k < t.size(); ++k) {
    EXPECT_EQ((layout->prefix.size() + layout->begin[k]) % DtypeAlignment(t[k].dtype), 0u) << k;
  }
}

TEST(WriterTest, EmptyMetadataScalarAndZeroSizedTensors) {
  std::string s = FromHex("0000000000000040");
  std::vector<TensorToWrite> t = {
      TensorToWrite::FromBytes("s", Dtype::kF64, {}, Bytes(s)),
      TensorToWrite::FromBytes("e", Dtype::kF32, {2, 0}, {}),
  };
  Result<std::string> out = SerializeToString(t, Metadata{});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, ExpectedFile(R"({"__metadata__":{},"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]},)"
                               R"("e":{"dtype":"F32","shape":[2,0],"data_offsets":[8,8]}}  )",
                               s));
  // No tensors, no metadata: the reference writes "{}" padded to 8.
  Result<std::string> empty = SerializeToString({}, std::nullopt);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, ExpectedFile("{}      ", ""));
}

// Names with control characters, NUL, quotes, backslashes, DEL and non-ASCII: serde_json
// escaping (short forms, \u00xx lowercase, everything else raw), byte-order sorting.
TEST(WriterTest, EscapesNamesLikeSerdeJson) {
  const std::vector<std::string> names = {"\0"s,       "\x01\x1f"s,         "\"q\""s,
                                          "back\\slash/"s, "\x7f"s,       "caf\xc3\xa9"s,
                                          "\xf0\x9f\x98\x80"s, "\b\f\n\r\t"s};
  std::vector<std::string> data;
  for (size_t i = 0; i < names.size(); ++i) data.push_back(std::string(1, static_cast<char>(i)));
  std::vector<TensorToWrite> t;
  for (size_t i = 0; i < names.size(); ++i) {
    t.push_back(TensorToWrite::FromBytes(names[i], Dtype::kU8, {1}, Bytes(data[i])));
  }
  Result<std::string> out = SerializeToString(t, std::nullopt);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const std::string header =
      R"({"\u0000":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"\u0001\u001f":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
      R"("\b\f\n\r\t":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},"\"q\"":{"dtype":"U8","shape":[1],"data_offsets":[3,4]},)"
      R"("back\\slash/":{"dtype":"U8","shape":[1],"data_offsets":[4,5]},"caf)" "\xc3\xa9" R"(":{"dtype":"U8","shape":[1],"data_offsets":[5,6]},)"
      "\"\x7f\"" R"(:{"dtype":"U8","shape":[1],"data_offsets":[6,7]},")" "\xf0\x9f\x98\x80" R"(":{"dtype":"U8","shape":[1],"data_offsets":[7,8]}})";
  EXPECT_EQ(*out, ExpectedFile(header, FromHex("0001070203050406")));
}

TEST(WriterTest, MetadataIsEscapedAndSortedByKey) {
  Result<std::string> out =
      SerializeToString({}, Metadata{{"z", "1"}, {"a\"", "x\ny"}, {"m", ""}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, ExpectedFile(R"({"__metadata__":{"a\"":"x\ny","m":"","z":"1"}}  )", ""));
}

void ExpectError(const Result<std::string>& r, StatusCode code, const std::string& message) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_EQ(r.status().message(), message);
}

TEST(WriterTest, RejectsInvalidInputWithNamedErrors) {
  std::string four(4, 'x'), eight(8, 'x');
  ExpectError(SerializeToString(V{TensorToWrite::FromBytes("w", Dtype::kF32, {3}, Bytes(eight))},
                                std::nullopt, "m.safetensors"),
              StatusCode::kInvalidArgument,
              "m.safetensors: tensor 'w': data is 8 bytes, but F32[3] needs 12 bytes");
  ExpectError(SerializeToString(V{TensorToWrite::FromBytes("w", Dtype::kF32, {1}, Bytes(four)),
                                 TensorToWrite::FromBytes("w", Dtype::kU8, {4}, Bytes(four))},
                                std::nullopt, "m.safetensors"),
              StatusCode::kInvalidArgument, "m.safetensors: duplicate tensor name 'w'");
  ExpectError(SerializeToString(V{TensorToWrite::FromBytes("__metadata__", Dtype::kU8, {4}, Bytes(four))},
                                std::nullopt, "m.safetensors"),
              StatusCode::kInvalidArgument, "m.safetensors: tensor name '__metadata__' is reserved");
  ExpectError(SerializeToString(V{TensorToWrite::FromBytes("ab\xc3(", Dtype::kU8, {4}, Bytes(four))},
                                std::nullopt, "m.safetensors"),
              StatusCode::kInvalidArgument,
              "m.safetensors: tensor name 'ab\xc3(' is not valid UTF-8 (byte 2)");
  // Encoded surrogate and overlong NUL are not UTF-8 either.
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc0\x80"));
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));
  ExpectError(SerializeToString({}, Metadata{{"k", "\xff"}}, "m.safetensors"),
              StatusCode::kInvalidArgument,
              "m.safetensors: metadata value of 'k' is not valid UTF-8 (byte 0)");
  ExpectError(SerializeToString(V{TensorToWrite::FromBytes("f", Dtype::kF4, {3}, {})}, std::nullopt,
                                "m.safetensors"),
              StatusCode::kInvalidArgument,
              "m.safetensors: tensor 'f': F4[3] is 12 bits, which does not end on a byte boundary");
  ExpectError(SerializeToString(V{TensorToWrite::FromBytes("o", Dtype::kI32, {4294967296, 4294967296}, {})},
                                std::nullopt, "m.safetensors"),
              StatusCode::kOutOfRange,
              "m.safetensors: tensor 'o': overflow computing element count of shape "
              "[4294967296, 4294967296]");
  TensorToWrite both = TensorToWrite::FromBytes("w", Dtype::kU8, {4}, Bytes(four));
  both.fill = [](uint64_t, std::span<std::byte>) { return OkStatus(); };
  ExpectError(SerializeToString(V{both}, std::nullopt, "m.safetensors"), StatusCode::kInvalidArgument,
              "m.safetensors: tensor 'w': both data and a generator are set");
}

// The header limit (100,000,000 bytes after padding) is the reference's: exactly the
// limit is accepted, one byte more (which pads to limit + 8) is refused.
TEST(WriterTest, HeaderSizeLimitIsInclusive) {
  const std::string overhead = R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})";
  std::string name(100'000'000 - overhead.size(), 'n');
  std::vector<TensorToWrite> t = {TensorToWrite::FromBytes(name, Dtype::kU8, {0}, {})};
  Result<FileLayout> ok = SerializeHeader(t, std::nullopt, "big");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->prefix.size(), 100'000'008u);
  t[0].name += "n";
  Result<FileLayout> bad = SerializeHeader(t, std::nullopt, "big");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(bad.status().message(), "big: header is 100000008 bytes, over the limit of 100000000 bytes");
}

TEST(WriterTest, WriteFileWritesReferenceBytesAndLeavesNoTempFiles) {
  std::string dir = MakeScratchDir("basic");
  std::string data = FromHex("0000803f00000040");
  std::vector<TensorToWrite> t = {TensorToWrite::FromBytes("w", Dtype::kF32, {2}, Bytes(data))};
  ASSERT_TRUE(WriteFile(dir + "/m.safetensors", t, std::nullopt).ok());
  EXPECT_EQ(ReadAll(dir + "/m.safetensors"),
            ExpectedFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  )", data));
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"m.safetensors"});
}

// Generators: called once per byte range, in order, in chunks no larger than the
// buffer; data from memory larger than the buffer goes straight through.
TEST(WriterTest, GeneratorsFillInContiguousChunksAndMatchInMemoryBytes) {
  std::string dir = MakeScratchDir("gen");
  const uint64_t size = 3 * 4096 + 100;  // U8 bytes
  std::vector<std::pair<uint64_t, size_t>> calls;
  auto fill = [&](uint64_t offset, std::span<std::byte> out) {
    calls.emplace_back(offset, out.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = std::byte((offset + i) * 7 % 251);
    return OkStatus();
  };
  std::string big(20000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i % 253);
  std::vector<TensorToWrite> t = {
      TensorToWrite::FromGenerator("g", Dtype::kU8, {size}, fill),
      TensorToWrite::FromBytes("big", Dtype::kF32, {5000}, Bytes(big)),
  };
  WriteOptions options;
  options.buffer_bytes = 4096;
  ASSERT_TRUE(WriteFile(dir + "/g.safetensors", t, std::nullopt, options).ok());
  uint64_t expect_offset = 0;
  for (auto [offset, n] : calls) {
    EXPECT_EQ(offset, expect_offset);
    EXPECT_LE(n, 4096u);
    EXPECT_GT(n, 0u);
    expect_offset += n;
  }
  EXPECT_EQ(expect_offset, size);
  std::string gen(size, '\0');
  for (uint64_t i = 0; i < size; ++i) gen[i] = static_cast<char>(i * 7 % 251);
  std::vector<TensorToWrite> mem = {TensorToWrite::FromBytes("g", Dtype::kU8, {size}, Bytes(gen)),
                                    TensorToWrite::FromBytes("big", Dtype::kF32, {5000}, Bytes(big))};
  Result<std::string> expected = SerializeToString(mem, std::nullopt);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(ReadAll(dir + "/g.safetensors"), *expected);
}

// Atomic replacement: a reader that mapped the old file keeps its bytes; a failed
// write leaves the old file (same inode, same bytes) and no temporary file.
TEST(WriterTest, ReplacesAtomicallyAndFailuresLeaveOldFileUntouched) {
  std::string dir = MakeScratchDir("atomic");
  std::string path = dir + "/model.safetensors";
  std::string v1(4096, 'a'), v2(4096, 'b');
  ASSERT_TRUE(WriteFile(path, V{TensorToWrite::FromBytes("w", Dtype::kU8, {4096}, Bytes(v1))},
                        std::nullopt).ok());
  const std::string old_bytes = ReadAll(path);
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* map = mmap(nullptr, old_bytes.size(), PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  close(fd);
  struct stat before;
  ASSERT_EQ(stat(path.c_str(), &before), 0);

  // Failing generator, half-way through: error names file and tensor.
  TensorToWrite failing = TensorToWrite::FromGenerator(
      "w", Dtype::kU8, {100000}, [](uint64_t offset, std::span<std::byte> out) {
        if (offset >= 8192) return DataLossError("source went away");
        std::memset(out.data(), 1, out.size());
        return OkStatus();
      });
  WriteOptions small;
  small.buffer_bytes = 4096;
  Status s = WriteFile(path, V{failing}, std::nullopt, small);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), path + ": tensor 'w': source went away");
  struct stat after_fail;
  ASSERT_EQ(stat(path.c_str(), &after_fail), 0);
  EXPECT_EQ(after_fail.st_ino, before.st_ino);
  EXPECT_EQ(ReadAll(path), old_bytes);
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"model.safetensors"});

  // Invalid input: nothing is created at all.
  Status invalid = WriteFile(path, V{TensorToWrite::FromBytes("w", Dtype::kF32, {3}, Bytes(v1))},
                             std::nullopt);
  EXPECT_EQ(invalid.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadAll(path), old_bytes);
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"model.safetensors"});
  // Paths that name no file: each refused with its own reason, nothing written.
  const V one{TensorToWrite::FromBytes("w", Dtype::kU8, {4096}, Bytes(v2))};
  EXPECT_EQ(WriteFile("", one, std::nullopt),
            InvalidArgumentError("invalid output path '': empty"));
  EXPECT_EQ(WriteFile(dir + "/", one, std::nullopt),
            InvalidArgumentError("invalid output path '" + dir + "/': names a directory"));
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"model.safetensors"});

  // Successful rewrite: new inode, new bytes; the old mapping still reads the old bytes.
  ASSERT_TRUE(WriteFile(path, V{TensorToWrite::FromBytes("w", Dtype::kU8, {4096}, Bytes(v2))},
                        std::nullopt).ok());
  struct stat after;
  ASSERT_EQ(stat(path.c_str(), &after), 0);
  EXPECT_NE(after.st_ino, before.st_ino);
  EXPECT_EQ(ReadAll(path).substr(ReadAll(path).size() - 4096), v2);
  EXPECT_EQ(std::string(static_cast<const char*>(map), old_bytes.size()), old_bytes);
  munmap(map, old_bytes.size());
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"model.safetensors"});
}

TEST(WriterTest, WriteFileSystemAndOptionErrors) {
  std::string dir = MakeScratchDir("errors");
  Status missing = WriteFile(dir + "/nope/m.safetensors", {}, std::nullopt);
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), dir + "/nope/m.safetensors: create temporary file in " + dir +
                                   "/nope: No such file or directory");
  WriteOptions tiny;
  tiny.buffer_bytes = 100;
  Status bad = WriteFile(dir + "/m.safetensors", {}, std::nullopt, tiny);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(), dir + "/m.safetensors: write buffer_bytes 100 is outside [4096, 1073741824]");
  // The target is a directory: the rename fails and the temporary file is removed.
  ASSERT_EQ(mkdir((dir + "/d").c_str(), 0755), 0);
  Status isdir = WriteFile(dir + "/d", {}, std::nullopt);
  EXPECT_FALSE(isdir.ok());
  EXPECT_EQ(isdir.message().rfind(dir + "/d: rename: ", 0), 0u) << isdir.message();
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"d"});
}

// data_alignment: the header is padded with spaces so the data section starts on the
// boundary; the default 8 is the reference's layout (checked byte for byte above).
TEST(WriterTest, DataAlignmentPadsTheHeaderToTheBoundary) {
  std::string dir = MakeScratchDir("align");
  std::string data = FromHex("0000803f00000040");
  std::vector<TensorToWrite> t = {TensorToWrite::FromBytes("w", Dtype::kF32, {2}, Bytes(data))};
  const std::string json = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  for (uint64_t a : {8u, 64u, 4096u, 65536u}) {
    Result<FileLayout> layout = SerializeHeader(t, std::nullopt, "x", a);
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    EXPECT_EQ(layout->prefix.size() % a, 0u) << a;  // 8 + N
    EXPECT_LT(layout->prefix.size() - 8 - json.size(), a) << a;  // the least padding
    EXPECT_EQ(layout->prefix.substr(8, json.size()), json);
    EXPECT_EQ(layout->prefix.find_first_not_of(' ', 8 + json.size()), std::string::npos);
    WriteOptions options;
    options.data_alignment = a;
    const std::string path = dir + "/m" + std::to_string(a) + ".safetensors";
    ASSERT_TRUE(WriteFile(path, t, std::nullopt, options).ok());
    Result<Header> h = ReadHeaderFile(path);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->data_start % a, 0u);
    EXPECT_EQ(ReadAll(path).substr(h->data_start), data);
  }
  EXPECT_EQ(SerializeHeader(t, std::nullopt, "x", 8)->prefix,
            ExpectedFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  )", ""));
  for (uint64_t bad : {0u, 4u, 100u, 131072u}) {
    Result<FileLayout> layout = SerializeHeader(t, std::nullopt, "x", bad);
    EXPECT_EQ(layout.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(layout.status().message(),
              "x: data_alignment " + std::to_string(bad) + " is not a power of two from 8 to 65536");
    WriteOptions options;
    options.data_alignment = bad;
    Status s = WriteFile(dir + "/bad.safetensors", t, std::nullopt, options);
    EXPECT_EQ(s.message(), dir + "/bad.safetensors: data_alignment " + std::to_string(bad) +
                               " is not a power of two from 8 to 65536");
  }
  // Sharded: every shard's data section on the boundary.
  ShardOptions sharded;
  sharded.num_shards = 2;
  sharded.write.data_alignment = 4096;
  std::vector<TensorToWrite> two = {TensorToWrite::FromBytes("a", Dtype::kF32, {2}, Bytes(data)),
                                    TensorToWrite::FromBytes("b", Dtype::kF32, {2}, Bytes(data))};
  ASSERT_EQ(mkdir((dir + "/sharded").c_str(), 0755), 0);
  Result<ShardedWriteResult> r = WriteSharded(dir + "/sharded", two, sharded);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (const std::string& f : {"model-00001-of-00002.safetensors",
                               "model-00002-of-00002.safetensors"}) {
    Result<Header> h = ReadHeaderFile(dir + "/sharded/" + f);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->data_start, 4096u) << f;
  }
}

TEST(ByteSizeTest, ParsesDecimalAndBinaryUnits) {
  const std::pair<const char*, uint64_t> good[] = {
      {"123", 123},
      {"0", 0},
      {"5GB", 5'000'000'000},
      {"5 GB", 5'000'000'000},
      {"2GiB", uint64_t{2} << 30},
      {"100MB", 100'000'000},
      {"512KiB", 512 * 1024},
      {"1.5GB", 1'500'000'000},
      {"0.5KiB", 512},
      {"1.0000000001KB", 1000},
      {"7B", 7},
      {"3kB", 3000},
      {"1tiB", uint64_t{1} << 40},
      {"18446744073709551615", 18446744073709551615ull},
  };
  for (const auto& [text, value] : good) {
    Result<uint64_t> r = ParseByteSize(text);
    ASSERT_TRUE(r.ok()) << text << ": " << r.status().ToString();
    EXPECT_EQ(*r, value) << text;
  }
  const std::pair<const char*, const char*> bad[] = {
      {"", "invalid byte size '': expected a number such as 5GB, 2GiB or 1048576"},
      {"GB", "invalid byte size 'GB': expected a number such as 5GB, 2GiB or 1048576"},
      {"-1GB", "invalid byte size '-1GB': expected a number such as 5GB, 2GiB or 1048576"},
      {"12XB", "invalid byte size '12XB': unknown unit 'XB' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"},
      {"5Gb", "invalid byte size '5Gb': a lowercase 'b' means bits; use 'B' for bytes"},
      {"1.5", "invalid byte size '1.5': a fraction needs a unit (e.g. 1.5GB)"},
      {"1.GB", "invalid byte size '1.GB': expected digits after '.'"},
      {"5  GB", "invalid byte size '5  GB': unknown unit ' GB' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"},
  };
  for (const auto& [text, message] : bad) {
    Result<uint64_t> r = ParseByteSize(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_EQ(r.status().message(), message);
  }
  for (const char* text : {"18446744073709551616", "20000000000GB", "16777216TiB"}) {
    Result<uint64_t> r = ParseByteSize(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
    EXPECT_EQ(r.status().message(), "byte size '" + std::string(text) + "' does not fit in 64 bits");
  }
}

std::vector<TensorToWrite> SizedTensors(const std::vector<uint64_t>& sizes) {
  std::vector<TensorToWrite> t;
  for (size_t i = 0; i < sizes.size(); ++i) {
    t.push_back(TensorToWrite::FromGenerator(
        "t" + std::to_string(i), Dtype::kU8, {sizes[i]}, [i](uint64_t, std::span<std::byte> out) {
          std::memset(out.data(), static_cast<int>(i + 1), out.size());
          return OkStatus();
        }));
  }
  return t;
}

std::vector<std::vector<size_t>> Shards(const Result<ShardPlan>& plan) {
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  return plan.ok() ? plan->shards : std::vector<std::vector<size_t>>{};
}

// huggingface_hub's documented example: [6, 6, 2, 6, 2, 2] with a 10 limit → [6], [6+2], [6+2+2].
TEST(ShardTest, GreedyMatchesHuggingFaceHub) {
  ShardOptions o;
  o.max_shard_size = 10;
  Result<ShardPlan> plan = PlanShards(SizedTensors({6, 6, 2, 6, 2, 2}), o);
  EXPECT_EQ(Shards(plan), (std::vector<std::vector<size_t>>{{0}, {1, 2}, {3, 4, 5}}));
  EXPECT_EQ(plan->files, (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                   "model-00002-of-00003.safetensors",
                                                   "model-00003-of-00003.safetensors"}));
  EXPECT_EQ(plan->index_file, "model.safetensors.index.json");
  EXPECT_EQ(plan->total_size, 24u);
  EXPECT_EQ(plan->shard_bytes, (std::vector<uint64_t>{6, 8, 10}));
  // Exactly at the limit stays in the shard.
  EXPECT_EQ(Shards(PlanShards(SizedTensors({5, 5, 1}), o)),
            (std::vector<std::vector<size_t>>{{0, 1}, {2}}));
}

// A tensor over the limit gets its own shard at once; the open shard keeps filling
// (the hub's order, so the oversize shard can come before smaller earlier tensors).
TEST(ShardTest, OversizeTensorGetsItsOwnShard) {
  ShardOptions o;
  o.max_shard_size = 10;
  EXPECT_EQ(Shards(PlanShards(SizedTensors({3, 20, 4, 4}), o)),
            (std::vector<std::vector<size_t>>{{1}, {0, 2}, {3}}));
}

// Zero-byte tensors after the first go where the first went: huggingface_hub groups
// tensors by storage and every empty torch tensor has the same (null) one. Found by
// comparing with save_torch_state_dict (fuzz/reference_diff.py --shard-cases).
TEST(ShardTest, EmptyTensorsJoinTheFirstEmptyOnesShard) {
  ShardOptions o;
  o.max_shard_size = 8;
  // 8 | 0 (first empty, joins the open shard) | 8 → new shard | 0 → shard 0 | 8 | 0 → shard 0
  EXPECT_EQ(Shards(PlanShards(SizedTensors({8, 0, 8, 0, 8, 0}), o)),
            (std::vector<std::vector<size_t>>{{0, 1, 3, 5}, {2}, {4}}));
  // The first empty one may land after an oversize shard; the others follow it there.
  EXPECT_EQ(Shards(PlanShards(SizedTensors({20, 4, 0, 8, 0}), o)),
            (std::vector<std::vector<size_t>>{{0}, {1, 2, 4}, {3}}));
  // Only empty tensors: one shard.
  EXPECT_EQ(Shards(PlanShards(SizedTensors({0, 0, 0}), o)),
            (std::vector<std::vector<size_t>>{{0, 1, 2}}));
  // Balanced splits (shardload's own, no hub counterpart) cut the ordered list as before.
  o.num_shards = 2;
  EXPECT_EQ(Shards(PlanShards(SizedTensors({8, 0, 8, 0}), o)),
            (std::vector<std::vector<size_t>>{{0}, {1, 2, 3}}));
}

TEST(ShardTest, SingleShardHasNoIndexAndPrefixIsConfigurable) {
  ShardOptions o;
  o.prefix = "diffusion_pytorch_model";
  Result<ShardPlan> plan = PlanShards(SizedTensors({1, 2, 3}), o);
  EXPECT_EQ(Shards(plan), (std::vector<std::vector<size_t>>{{0, 1, 2}}));
  EXPECT_EQ(plan->files, std::vector<std::string>{"diffusion_pytorch_model.safetensors"});
  EXPECT_EQ(plan->index_file, "");
  o.max_shard_size = 3;
  plan = PlanShards(SizedTensors({1, 2, 3}), o);
  EXPECT_EQ(plan->files[1], "diffusion_pytorch_model-00002-of-00002.safetensors");
  EXPECT_EQ(plan->index_file, "diffusion_pytorch_model.safetensors.index.json");
}

TEST(ShardTest, BalancedSplitIntoExactlyNShards) {
  ShardOptions o;
  o.num_shards = 3;
  EXPECT_EQ(Shards(PlanShards(SizedTensors({4, 4, 4, 4, 4, 4}), o)),
            (std::vector<std::vector<size_t>>{{0, 1}, {2, 3}, {4, 5}}));
  o.num_shards = 2;
  EXPECT_EQ(Shards(PlanShards(SizedTensors({10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}), o)),
            (std::vector<std::vector<size_t>>{{0}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}));
  // One huge tensor first: every shard still gets at least one tensor.
  o.num_shards = 3;
  Result<ShardPlan> plan = PlanShards(SizedTensors({100, 1, 1, 1}), o);
  EXPECT_EQ(Shards(plan), (std::vector<std::vector<size_t>>{{0}, {1}, {2, 3}}));
  EXPECT_EQ(plan->shard_bytes, (std::vector<uint64_t>{100, 1, 2}));
  // One huge tensor last: the cut sits as late as the last shard's one tensor allows
  // (3 + 100 bytes, not 2 + 101: a clamped cut is already the closest one).
  o.num_shards = 2;
  plan = PlanShards(SizedTensors({1, 1, 1, 100}), o);
  EXPECT_EQ(Shards(plan), (std::vector<std::vector<size_t>>{{0, 1, 2}, {3}}));
  EXPECT_EQ(plan->shard_bytes, (std::vector<uint64_t>{3, 100}));
  // Many equal tensors: per-shard bytes within one tensor of total / N.
  o.num_shards = 7;
  std::vector<uint64_t> sizes(1000, 3);
  plan = PlanShards(SizedTensors(sizes), o);
  ASSERT_EQ(plan->shards.size(), 7u);
  for (uint64_t b : plan->shard_bytes) EXPECT_LE(b > 3000 / 7 ? b - 3000 / 7 : 3000 / 7 - b, 3u);
  o.num_shards = 1;
  EXPECT_EQ(PlanShards(SizedTensors({1, 2}), o)->files,
            std::vector<std::string>{"model.safetensors"});
}

TEST(ShardTest, InvalidShardOptions) {
  ShardOptions o;
  o.num_shards = 4;
  Result<ShardPlan> r = PlanShards(SizedTensors({1, 2, 3}), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "num_shards 4 exceeds the number of tensors (3)");
  o = ShardOptions();
  o.max_shard_size = 0;
  r = PlanShards(SizedTensors({1}), o);
  EXPECT_EQ(r.status().message(), "max_shard_size must be > 0");
  o = ShardOptions();
  o.prefix = "a/b";
  r = PlanShards(SizedTensors({1}), o);
  EXPECT_EQ(r.status().message(),
            "invalid shard prefix 'a/b': must be a non-empty file name without '/' that does not "
            "start with '.'");
  o.prefix = "..";
  EXPECT_FALSE(PlanShards(SizedTensors({1}), o).ok());
  o.prefix = ".hidden";  // would look like the writers' own temporary files
  EXPECT_EQ(PlanShards(SizedTensors({1}), o).status().message(),
            "invalid shard prefix '.hidden': must be a non-empty file name without '/' that "
            "does not start with '.'");
}

// Same text as Python's json.dumps(index, indent=2, sort_keys=True) + "\n" (generated
// with CPython 3.11 for this input).
TEST(ShardTest, IndexTextMatchesPythonJsonDumps) {
  std::vector<TensorToWrite> t = SizedTensors({4, 4, 4});
  t[0].name = "z";
  t[1].name = "caf\xc3\xa9";
  t[2].name = "a\n";
  ShardPlan plan;
  plan.shards = {{1, 2}, {0}};
  plan.files = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
  plan.total_size = 12;
  Result<std::string> text =
      SerializeIndex(t, plan, {{"b", "x\xc3\xa9\xf0\x9f\x98\x80\x7f\""}, {"a", "1"}});
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, R"({
  "metadata": {
    "a": "1",
    "b": "x\u00e9\ud83d\ude00\u007f\"",
    "total_size": 12
  },
  "weight_map": {
    "a\n": "model-00001-of-00002.safetensors",
    "caf\u00e9": "model-00001-of-00002.safetensors",
    "z": "model-00002-of-00002.safetensors"
  }
}
)");
  Result<std::string> reserved = SerializeIndex(t, plan, {{"total_size", "1"}});
  ASSERT_FALSE(reserved.ok());
  EXPECT_EQ(reserved.status().message(), "index metadata key 'total_size' is reserved");
}

// Values named in json_keys are written as the JSON they are, after a check.
TEST(ShardTest, IndexMetadataJsonValuesAreWrittenAsTheyAre) {
  std::vector<TensorToWrite> t = SizedTensors({4});
  ShardPlan plan;
  plan.shards = {{0}};
  plan.files = {"model-00001-of-00001.safetensors"};
  plan.total_size = 4;
  Result<std::string> text = SerializeIndex(
      t, plan, {{"n", "8030261248"}, {"o", R"({"a":[1,true,null]})"}, {"s", "7"}}, {"n", "o"});
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_NE(text->find("\"n\": 8030261248,\n    \"o\": {\"a\":[1,true,null]},\n    \"s\": \"7\",\n"),
            std::string::npos)
      << *text;
  // What the writer accepts, the reader accepts, at every depth (a value sits 2 levels
  // below the index's root).
  bool some_refused = false;
  for (int depth = 1; depth <= 70; ++depth) {
    const std::string nested = std::string(depth, '[') + "1" + std::string(depth, ']');
    Result<std::string> written = SerializeIndex(t, plan, {{"n", nested}}, {"n"});
    if (!written.ok()) {
      some_refused = true;
      EXPECT_GE(depth, 60);
      continue;
    }
    Result<ShardIndex> read = ParseIndex(*written, "index");
    EXPECT_TRUE(read.ok()) << depth << ": " << read.status().ToString();
  }
  EXPECT_TRUE(some_refused);
  for (const char* bad : {"", "1 2", "{\"a\":", "nul", "[1,]"}) {
    Result<std::string> r = SerializeIndex(t, plan, {{"n", bad}}, {"n"});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(),
              std::string("index metadata value of 'n' is not one JSON value: '") + bad + "'");
  }
}

TEST(ShardTest, WriteShardedFilesIndexAndStaleCleanup) {
  std::string dir = MakeScratchDir("sharded");
  std::vector<TensorToWrite> t = SizedTensors({8, 8, 8, 8, 8, 8});
  ShardOptions o;
  o.num_shards = 3;
  o.metadata = {{"note", "hi"}};
  Result<ShardedWriteResult> r = WriteSharded(dir, t, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(ListDir(dir), (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                    "model-00002-of-00003.safetensors",
                                                    "model-00003-of-00003.safetensors",
                                                    "model.safetensors.index.json"}));
  // Each shard: exactly the single-file bytes of its tensors with {"format": "pt"}.
  for (size_t s = 0; s < 3; ++s) {
    std::vector<TensorToWrite> shard = {t[2 * s], t[2 * s + 1]};
    Result<std::string> expected = SerializeToString(shard, Metadata{{"format", "pt"}});
    ASSERT_TRUE(expected.ok());
    EXPECT_EQ(ReadAll(dir + "/" + r->plan.files[s]), *expected);
    EXPECT_EQ(r->file_sizes[s], expected->size());
  }
  std::string index = ReadAll(dir + "/model.safetensors.index.json");
  EXPECT_NE(index.find("\"note\": \"hi\",\n    \"total_size\": 48\n"), std::string::npos) << index;
  EXPECT_NE(index.find("\"t5\": \"model-00003-of-00003.safetensors\"\n"), std::string::npos);

  // Rewrite as 2 shards: the 3-shard files go; unrelated files stay.
  std::ofstream(dir + "/config.json") << "{}";
  std::ofstream(dir + "/other-00001-of-00002.safetensors") << "x";
  o.num_shards = 2;
  r = WriteSharded(dir, t, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->removed, (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                  "model-00002-of-00003.safetensors",
                                                  "model-00003-of-00003.safetensors"}));
  EXPECT_EQ(ListDir(dir), (std::vector<std::string>{"config.json", "model-00001-of-00002.safetensors",
                                                    "model-00002-of-00002.safetensors",
                                                    "model.safetensors.index.json",
                                                    "other-00001-of-00002.safetensors"}));
  // One shard: model.safetensors with user metadata in its header, and no index. The
  // old index (the other layout's entry point) was set aside before model.safetensors
  // went in, so no moment had both naming different checkpoints; it is reported removed.
  o.num_shards = 0;
  r = WriteSharded(dir, t, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->removed, (std::vector<std::string>{"model-00001-of-00002.safetensors",
                                                  "model-00002-of-00002.safetensors",
                                                  "model.safetensors.index.json"}));
  EXPECT_EQ(ListDir(dir), (std::vector<std::string>{"config.json", "model.safetensors",
                                                    "other-00001-of-00002.safetensors"}));
  Result<std::string> single = SerializeToString(t, Metadata{{"format", "pt"}, {"note", "hi"}});
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(ReadAll(dir + "/model.safetensors"), *single);

  Result<ShardedWriteResult> nodir = WriteSharded(dir + "/missing", t, o);
  ASSERT_FALSE(nodir.ok());
  EXPECT_EQ(nodir.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(nodir.status().message(), dir + "/missing: No such file or directory");
}

TEST(ShardTest, FailedShardedWriteLeavesTheFolderAsItWas) {
  // An earlier 2-shard checkpoint; the new one fails while writing its second shard
  // (a generator error stands for a full disk): no file of the old one changes and
  // no temporary file stays.
  std::string dir = MakeScratchDir("sharded_fail");
  std::vector<TensorToWrite> old_tensors = SizedTensors({8, 8, 8, 8});
  ShardOptions o;
  o.num_shards = 2;
  ASSERT_TRUE(WriteSharded(dir, old_tensors, o).ok());
  std::vector<std::string> before = ListDir(dir);
  std::map<std::string, std::string> old_bytes;
  for (const std::string& f : before) old_bytes[f] = ReadAll(dir + "/" + f);

  std::vector<TensorToWrite> t = SizedTensors({16, 16, 16, 16});
  t[3] = TensorToWrite::FromGenerator("t3", Dtype::kU8, {16},
                                      [](uint64_t, std::span<std::byte>) {
                                        return DataLossError("device full");
                                      });
  Result<ShardedWriteResult> r = WriteSharded(dir, t, o);
  EXPECT_EQ(r.status(), DataLossError(dir + "/model-00002-of-00002.safetensors: tensor 't3': "
                                      "device full"));
  EXPECT_EQ(ListDir(dir), before);
  for (const std::string& f : before) EXPECT_EQ(ReadAll(dir + "/" + f), old_bytes[f]) << f;
}

// Changing layout retires the other layout's entry point (the old index before a
// single file goes in, the old single file before an index goes in); a failed rename
// puts it back as it was.
TEST(ShardTest, FailedLayoutChangeRestoresTheOtherEntryPoint) {
  for (bool to_single : {true, false}) {
    std::string dir = MakeScratchDir(to_single ? "layout_to_single" : "layout_to_sharded");
    ShardOptions o;
    o.num_shards = to_single ? 2 : 0;
    ASSERT_TRUE(WriteSharded(dir, SizedTensors({8, 8}), o).ok());
    const std::string entry = dir + (to_single ? "/model.safetensors.index.json"
                                               : "/model.safetensors");
    struct stat st;
    ASSERT_EQ(stat(entry.c_str(), &st), 0);
    const ino_t inode = st.st_ino;
    const std::string bytes = ReadAll(entry);
    // A folder where the new layout's last file goes makes its rename fail.
    const std::string blocked = dir + (to_single ? "/model.safetensors"
                                                 : "/model-00002-of-00002.safetensors");
    ASSERT_EQ(mkdir(blocked.c_str(), 0755), 0);
    o.num_shards = to_single ? 0 : 2;
    Result<ShardedWriteResult> r = WriteSharded(dir, SizedTensors({16, 16}), o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message(), blocked + ": rename: Is a directory (nothing was replaced)");
    ASSERT_EQ(stat(entry.c_str(), &st), 0) << to_single;
    EXPECT_EQ(st.st_ino, inode);
    EXPECT_EQ(ReadAll(entry), bytes);
    ASSERT_EQ(rmdir(blocked.c_str()), 0);
    r = WriteSharded(dir, SizedTensors({16, 16}), o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_NE(stat(entry.c_str(), &st), 0) << "the other layout's entry point is gone";
    EXPECT_NE(std::find(r->removed.begin(), r->removed.end(),
                        entry.substr(dir.size() + 1)), r->removed.end());
  }
}

// The other layout's entry point goes before anything new is published, not in the
// sweep of old files afterwards: a sweep that stops early (here a folder it cannot
// unlink; in life a killed writer) must not leave the old index next to the new single
// file, which shardload and transformers would load differently.
TEST(ShardTest, TheOldIndexIsGoneBeforeTheSweep) {
  std::string dir = MakeScratchDir("retire_first");
  ShardOptions o;
  o.num_shards = 2;
  ASSERT_TRUE(WriteSharded(dir, SizedTensors({8, 8}), o).ok());
  // A folder named like an old shard sorts before the index in the sweep.
  ASSERT_EQ(mkdir((dir + "/model-00001-of-00009.safetensors").c_str(), 0755), 0);
  o.num_shards = 0;
  Result<ShardedWriteResult> r = WriteSharded(dir, SizedTensors({8, 8}), o);
  // A folder is not a file of the old checkpoint: kept, with a warning; the write
  // succeeds, the old shards go.
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->warnings, std::vector<std::string>{
                             dir + "/model-00001-of-00009.safetensors: kept: not a file"});
  struct stat st;
  EXPECT_EQ(stat((dir + "/model.safetensors").c_str(), &st), 0);
  EXPECT_NE(stat((dir + "/model.safetensors.index.json").c_str(), &st), 0)
      << "the old index is still next to the new single file";
  EXPECT_EQ(ListDir(dir), (std::vector<std::string>{"model-00001-of-00009.safetensors",
                                                    "model.safetensors"}));
}

// The sweep removes only what no other checkpoint claims: a file another index in the
// folder names is kept, with a warning, also when its name is one of the prefix's; an
// index that cannot be read keeps every candidate. Unclaimed old shards still go.
TEST(ShardTest, TheSweepKeepsFilesAnotherIndexNames) {
  std::string dir = MakeScratchDir("sweep_claims");
  ShardOptions o;
  o.num_shards = 3;
  ASSERT_TRUE(WriteSharded(dir, SizedTensors({8, 8, 8}), o).ok());
  // Another checkpoint whose index names the old shards 1 and 2 (not 3).
  ASSERT_EQ(rename((dir + "/model.safetensors.index.json").c_str(),
                   (dir + "/base.safetensors.index.json").c_str()), 0);
  std::string index = ReadAll(dir + "/base.safetensors.index.json");
  ASSERT_NE(index.find("model-00003-of-00003.safetensors"), std::string::npos);
  const std::string one = ReadAll(dir + "/model-00001-of-00003.safetensors");
  o.num_shards = 2;
  Result<ShardedWriteResult> r = WriteSharded(dir, SizedTensors({8, 8}), o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // base names all three old shards: all kept.
  EXPECT_EQ(r->warnings,
            (std::vector<std::string>{
                dir + "/model-00001-of-00003.safetensors: kept: base.safetensors.index.json names it",
                dir + "/model-00002-of-00003.safetensors: kept: base.safetensors.index.json names it",
                dir + "/model-00003-of-00003.safetensors: kept: base.safetensors.index.json names it"}));
  EXPECT_EQ(ReadAll(dir + "/model-00001-of-00003.safetensors"), one);
  // An unclaimed file of the prefix goes; with an unreadable other index, nothing does.
  ASSERT_TRUE(std::ofstream(dir + "/model-00001-of-00009.safetensors") << "junk");
  r = WriteSharded(dir, SizedTensors({8, 8}), o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->removed, std::vector<std::string>{"model-00001-of-00009.safetensors"});
  ASSERT_TRUE(std::ofstream(dir + "/model-00001-of-00009.safetensors") << "junk");
  ASSERT_TRUE(std::ofstream(dir + "/broken.safetensors.index.json") << "{");
  r = WriteSharded(dir, SizedTensors({8, 8}), o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->removed.empty());
  const auto broken = std::find_if(r->warnings.begin(), r->warnings.end(), [&](const std::string& w) {
    return w.starts_with(dir + "/broken.safetensors.index.json: cannot be read (");
  });
  ASSERT_NE(broken, r->warnings.end()) << ::testing::PrintToString(r->warnings);
  EXPECT_TRUE(broken->ends_with("), so the old files of prefix 'model' it may name are kept"))
      << *broken;
  EXPECT_EQ(ReadAll(dir + "/model-00001-of-00009.safetensors"), "junk");
}

// RivalWarning: ShardedWriteResult::warnings when `rival` in `dir` keeps a load of the
// folder from loading the new `entry`.
std::vector<std::string> RivalWarning(const std::string& dir, const std::string& rival,
                                      const std::string& entry) {
  return {dir + ": also holds " + rival + " of another checkpoint, so a load of the folder "
          "will not load the new " + entry + "; load it by its path, " + dir + "/" + entry};
}

// A write whose result a load of the folder would not choose (another checkpoint's
// entry point wins under the folder rule) succeeds and says so; writes the folder rule
// does choose say nothing.
TEST(ShardTest, AnotherCheckpointThatALoadWouldChooseIsWarnedAbout) {
  std::string dir = MakeScratchDir("rival");
  ShardOptions foo;
  foo.prefix = "foo";
  foo.num_shards = 2;
  ASSERT_TRUE(WriteSharded(dir, SizedTensors({8, 8}), foo).ok());  // foo's index
  ShardOptions single;  // model.safetensors: the folder rule takes foo's index first
  Result<ShardedWriteResult> r = WriteSharded(dir, SizedTensors({8}), single);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->warnings, RivalWarning(dir, "foo.safetensors.index.json", "model.safetensors"));
  ShardOptions sharded;  // model.safetensors.index.json wins over any other index
  sharded.num_shards = 2;
  r = WriteSharded(dir, SizedTensors({8, 8}), sharded);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->warnings.empty());
  foo.num_shards = 3;  // foo again: now model's index wins over it
  r = WriteSharded(dir, SizedTensors({8, 8, 8}), foo);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->warnings,
            RivalWarning(dir, "model.safetensors.index.json", "foo.safetensors.index.json"));
  // Two indexes of other names: a load of the folder fails, and the warning still holds.
  std::string two = MakeScratchDir("rival_two");
  ASSERT_TRUE(WriteSharded(two, SizedTensors({8, 8, 8}), foo).ok());
  ShardOptions bar = foo;
  bar.prefix = "bar";
  r = WriteSharded(two, SizedTensors({8, 8, 8}), bar);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->warnings,
            RivalWarning(two, "foo.safetensors.index.json", "bar.safetensors.index.json"));
  // Without the sweep, this checkpoint's own old index stays and wins over a new single
  // file: said too.
  ShardOptions keep;
  keep.remove_stale = false;
  r = WriteSharded(dir, SizedTensors({8}), keep);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->warnings.size(), 1u);
  EXPECT_TRUE(r->warnings[0].starts_with(dir + ": also holds foo.safetensors.index.json (and "
                                               "more) of another checkpoint"))
      << r->warnings[0];
}

// A write that must wait for the folder's lock (a reader holding it) can be called off
// while it waits: nothing is replaced, nothing is left behind. (A CLI writer sent
// SIGTERM there used to wait on, then publish, then say the signal came too late.)
TEST(ShardTest, AWriteWaitingForTheFolderLockCanBeCancelled) {
  std::string dir = MakeScratchDir("lock_cancel");
  ShardOptions o;
  o.num_shards = 2;
  ASSERT_TRUE(WriteSharded(dir, SizedTensors({8, 8}), o).ok());
  const std::vector<std::string> before = ListDir(dir);
  Result<FolderLock> reader = LockFolder(dir, FolderLock::kShared, 0);
  ASSERT_TRUE(reader.ok() && reader->held());
  int polls = 0;
  o.cancelled = [&] { return ++polls == 3; };
  o.num_shards = 1;
  Result<ShardedWriteResult> r = WriteSharded(dir, SizedTensors({8, 8}), o);
  EXPECT_EQ(r.status(), CancelledError(dir + ": stopped while waiting for the folder's lock "
                                             "(nothing was replaced)"));
  EXPECT_EQ(polls, 3);
  EXPECT_EQ(ListDir(dir), before);
}

// A file name near the 255-byte limit still gets a temporary (and a backup) name: the
// hidden names cut the base short instead of failing with ENAMETOOLONG.
TEST(ShardTest, NamesNearTheLengthLimitCanBeWrittenAndReplaced) {
  std::string dir = MakeScratchDir("long_names");
  const std::string name = std::string(240, 'x') + ".safetensors";  // 252 bytes
  ASSERT_EQ(name.size(), 252u);
  std::vector<TensorToWrite> t = SizedTensors({8});
  for (int round = 0; round < 2; ++round) {  // the second replaces the first
    Status s = WriteFile(dir + "/" + name, t, Metadata{{"format", "pt"}});
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  ShardOptions o;
  o.prefix = std::string(228, 'p');  // "<prefix>.safetensors": 240 bytes (one tensor: one file)
  for (int round = 0; round < 2; ++round) {
    o.num_shards = round == 0 ? 0 : 1;
    Result<ShardedWriteResult> r = WriteSharded(dir, t, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  EXPECT_EQ(ListDir(dir), (std::vector<std::string>{o.prefix + ".safetensors", name}));

  // A single file's name may be 255 bytes even where the other layout's index name
  // (11 bytes longer) could not exist: written and replaced. A prefix whose names do
  // not fit is refused before anything is written.
  std::string dir2 = MakeScratchDir("long_prefix");
  o.prefix = std::string(243, 'q');  // "<prefix>.safetensors": 255 bytes
  o.num_shards = 1;
  for (int round = 0; round < 2; ++round) {
    Result<ShardedWriteResult> r = WriteSharded(dir2, t, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  EXPECT_EQ(ListDir(dir2), (std::vector<std::string>{o.prefix + ".safetensors"}));
  o.prefix = std::string(244, 'q');
  EXPECT_EQ(WriteSharded(dir2, t, o).status(),
            InvalidArgumentError("shard prefix is too long: file name '" + o.prefix +
                                 ".safetensors' would be 256 bytes, more than the 255 a "
                                 "file name may have"));
  o.prefix = std::string(229, 'q');  // shard names "<prefix>-00001-of-00002...": 256 bytes
  o.num_shards = 2;
  std::vector<TensorToWrite> two = SizedTensors({8, 8});
  EXPECT_EQ(WriteSharded(dir2, two, o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ListDir(dir2), (std::vector<std::string>{std::string(243, 'q') + ".safetensors"}));
}

// Two writers into one folder at once, the same tensor names and shard names, other
// bytes: each publishes whole (the folder lock), so every shard holds one writer's
// bytes and no round ends with shards of both under one index. (Unlocked, about one
// round in fifteen mixed them.)
TEST(ShardTest, ConcurrentWritersLeaveOneCheckpointWhole) {
  std::string dir = MakeScratchDir("concurrent_writers");
  auto tensors_of = [](char fill) {
    std::vector<TensorToWrite> t;
    for (int i = 0; i < 8; ++i) {
      t.push_back(TensorToWrite::FromGenerator(
          "t" + std::to_string(i), Dtype::kU8, {64 << 10},
          [fill](uint64_t, std::span<std::byte> out) {
            std::memset(out.data(), fill, out.size());
            return OkStatus();
          }));
    }
    return t;
  };
  ShardOptions o;
  o.num_shards = 4;
  o.write.sync = false;
  for (int round = 0; round < 20; ++round) {
    Status a, b;
    std::thread writer_a([&] { a = WriteSharded(dir, tensors_of('a'), o).status(); });
    std::thread writer_b([&] { b = WriteSharded(dir, tensors_of('b'), o).status(); });
    writer_a.join();
    writer_b.join();
    ASSERT_TRUE(a.ok()) << a.ToString();
    ASSERT_TRUE(b.ok()) << b.ToString();
    std::set<char> fills;
    for (size_t s = 0; s < 4; ++s) {
      const std::string file =
          ReadAll(dir + "/model-0000" + std::to_string(s + 1) + "-of-00004.safetensors");
      ASSERT_GT(file.size(), 8u);
      uint64_t n = 0;
      std::memcpy(&n, file.data(), 8);
      fills.insert(file.substr(8 + n).find_first_not_of(file[8 + n]) == std::string::npos
                       ? file[8 + n]
                       : '?');
    }
    EXPECT_EQ(fills.size(), 1u) << "round " << round << ": shards of both writers";
    EXPECT_EQ(fills.count('?'), 0u) << "round " << round;
  }
}

TEST(ShardTest, FailedRenameRestoresTheFolder) {
  // The third shard's name is taken by a folder, so its rename fails after the old
  // index was set aside and two shards were replaced: both shards and the index come
  // back (the same inodes), and no backup or temporary file stays.
  std::string dir = MakeScratchDir("sharded_restore");
  ShardOptions o;
  o.num_shards = 3;
  ASSERT_TRUE(WriteSharded(dir, SizedTensors({8, 8, 8}), o).ok());
  const std::string third = dir + "/model-00003-of-00003.safetensors";
  ASSERT_EQ(unlink(third.c_str()), 0);
  ASSERT_EQ(mkdir(third.c_str(), 0755), 0);
  std::vector<std::string> before = ListDir(dir);
  std::map<std::string, std::string> old_bytes;
  std::map<std::string, ino_t> old_inodes;
  for (const std::string& f : before) {
    struct stat st;
    ASSERT_EQ(stat((dir + "/" + f).c_str(), &st), 0);
    old_inodes[f] = st.st_ino;
    if (S_ISREG(st.st_mode)) old_bytes[f] = ReadAll(dir + "/" + f);
  }
  Result<ShardedWriteResult> r = WriteSharded(dir, SizedTensors({16, 16, 16}), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_EQ(r.status().message(), third + ": rename: Is a directory (nothing was replaced)");
  EXPECT_EQ(ListDir(dir), before);
  for (const std::string& f : before) {
    struct stat st;
    ASSERT_EQ(stat((dir + "/" + f).c_str(), &st), 0);
    EXPECT_EQ(st.st_ino, old_inodes[f]) << f;
    if (old_bytes.count(f)) {
      EXPECT_EQ(ReadAll(dir + "/" + f), old_bytes[f]) << f;
    }
  }
  // Once the folder is gone, the write goes through and leaves no backups.
  ASSERT_EQ(rmdir(third.c_str()), 0);
  ASSERT_TRUE(WriteSharded(dir, SizedTensors({16, 16, 16}), o).ok());
  EXPECT_EQ(ListDir(dir), (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                                    "model-00002-of-00003.safetensors",
                                                    "model-00003-of-00003.safetensors",
                                                    "model.safetensors.index.json"}));
}

// Age: set `path`'s modification time `seconds` into the past.
void Age(const std::string& path, int seconds) {
  struct timespec times[2];
  ASSERT_EQ(clock_gettime(CLOCK_REALTIME, &times[0]), 0);
  times[0].tv_sec -= seconds;
  times[1] = times[0];
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

TEST(ShardTest, LeftoversOfKilledWritersAreRemoved) {
  // A killed writer's hidden temporary and backup files (its pid no longer exists:
  // 999999999 is above any pid_max; unchanged for an hour) go with the next successful
  // write; those of this process, files that are not ours, and a dead-looking writer's
  // file written 5 minutes ago (a writer in another PID namespace looks dead) stay.
  std::string dir = MakeScratchDir("leftovers");
  const std::string self = std::to_string(getpid());
  const std::string hex = "0123456789abcdef";
  const std::vector<std::string> dead = {
      ".model-00001-of-00002.safetensors.tmp.999999999.0." + hex,
      ".model.safetensors.index.json.old.999999999.3." + hex,
      ".model.safetensors.tmp.999999999.12." + hex};
  const std::vector<std::string> kept = {
      ".model.safetensors.tmp." + self + ".7." + hex,        // this process: alive
      ".other.safetensors.tmp.999999999.0." + hex,           // another prefix
      ".model.safetensors.tmp.x.0." + hex,                   // no pid
      ".model.safetensors.old.20240105.bak",                 // a user's backup
      ".model.safetensors.tmp.999999999.0.0123456789abcde",  // 15 hex digits
      "config.json"};
  const std::string recent = ".model-00002-of-00002.safetensors.tmp.999999999.1." + hex;
  for (const std::string& f : dead) std::ofstream(dir + "/" + f) << "x";
  for (const std::string& f : kept) std::ofstream(dir + "/" + f) << "x";
  std::ofstream(dir + "/" + recent) << "x";
  for (const std::string& f : dead) Age(dir + "/" + f, 3600);
  for (const std::string& f : kept) Age(dir + "/" + f, 3600);
  Age(dir + "/" + recent, 300);
  ShardOptions o;
  o.num_shards = 2;
  Result<ShardedWriteResult> r = WriteSharded(dir, SizedTensors({8, 8}), o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<std::string> removed = dead;
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(r->removed, removed);
  std::vector<std::string> left = kept;
  left.insert(left.end(), {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json", recent});
  std::sort(left.begin(), left.end());
  EXPECT_EQ(ListDir(dir), left);
}

// A sharded write touches its finished temporaries after each shard, so that they do
// not look like a dead writer's leftovers (unchanged for 10 minutes) to a writer in
// another PID namespace while later shards are written: shard 1's temporary, aged an
// hour while shard 2 is written, is fresh again while shard 3 is.
TEST(ShardTest, FinishedTemporariesStayFreshWhileLaterShardsAreWritten) {
  std::string dir = MakeScratchDir("touch");
  auto first_temp = [&] {
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().filename().string().starts_with(".model-00001-of-00003.safetensors.tmp.")) {
        return e.path().string();
      }
    }
    return std::string();
  };
  time_t seen_mtime = 0;
  auto tensor = [&](const char* name, std::function<void()> on_fill) {
    return TensorToWrite::FromGenerator(name, Dtype::kU8, {8},
                                        [on_fill](uint64_t, std::span<std::byte> out) {
                                          on_fill();
                                          std::fill(out.begin(), out.end(), std::byte{7});
                                          return OkStatus();
                                        });
  };
  const std::vector<TensorToWrite> tensors = {
      tensor("a", [] {}),
      tensor("b", [&] { Age(first_temp(), 3600); }),
      tensor("c", [&] {
        struct stat st;
        if (::stat(first_temp().c_str(), &st) == 0) seen_mtime = st.st_mtime;
      })};
  ShardOptions o;
  o.num_shards = 3;
  o.write.sync = false;
  ASSERT_TRUE(WriteSharded(dir, tensors, o).ok());
  EXPECT_GT(seen_mtime, ::time(nullptr) - 60);  // touched after shard 2, not an hour old
}

TEST(WriterTest, ReplacedFilesKeepTheirPermissions) {
  std::string dir = MakeScratchDir("mode");
  std::string path = dir + "/model.safetensors";
  std::string v(16, 'a');
  auto tensors = V{TensorToWrite::FromBytes("w", Dtype::kU8, {16}, Bytes(v))};
  ASSERT_TRUE(WriteFile(path, tensors, std::nullopt).ok());
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  ASSERT_TRUE(WriteFile(path, tensors, std::nullopt).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ShardOptions o;
  o.num_shards = 1;
  ASSERT_TRUE(WriteSharded(dir, tensors, o).ok());
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

// Only a regular file passes its mode and owner on, never a symlink's target, and in
// a sticky folder (/tmp) only the writing user's file: another user's file planted
// there must not make the new checkpoint theirs or world-writable. Owners other than
// the writer's need root to set up (the test skips otherwise).
TEST(WriterTest, AttributesComeOnlyFromTheWritersOwnRegularFiles) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give files another owner";
  const uid_t other = 12345;
  std::string v(16, 'a');
  auto tensors = V{TensorToWrite::FromBytes("w", Dtype::kU8, {16}, Bytes(v))};
  auto plant = [&](const std::string& path, mode_t mode) {
    ASSERT_TRUE(WriteFile(path, tensors, std::nullopt).ok());
    ASSERT_EQ(::chown(path.c_str(), other, other), 0);
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  };
  const mode_t umask_now = ::umask(022);
  // An ordinary folder: the replaced file's owner and mode stay (plus u+rw).
  std::string plain = MakeScratchDir("owner_plain");
  plant(plain + "/model.safetensors", 0640);
  ASSERT_TRUE(WriteFile(plain + "/model.safetensors", tensors, std::nullopt).ok());
  struct stat st;
  ASSERT_EQ(::lstat((plain + "/model.safetensors").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, other);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  // A sticky folder: another user's file passes nothing on.
  std::string sticky = MakeScratchDir("owner_sticky");
  ASSERT_EQ(::chmod(sticky.c_str(), 01777), 0);
  plant(sticky + "/model.safetensors", 0666);
  ASSERT_TRUE(WriteFile(sticky + "/model.safetensors", tensors, std::nullopt).ok());
  ASSERT_EQ(::lstat((sticky + "/model.safetensors").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  // A symlink to another user's world-writable file: replaced by a regular file of the
  // writer's, the target untouched.
  std::string linked = MakeScratchDir("owner_link");
  plant(linked + "/target.bin", 0666);
  ASSERT_EQ(::symlink("target.bin", (linked + "/model.safetensors").c_str()), 0);
  ASSERT_TRUE(WriteFile(linked + "/model.safetensors", tensors, std::nullopt).ok());
  ASSERT_EQ(::lstat((linked + "/model.safetensors").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  ASSERT_EQ(::lstat((linked + "/target.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, other);
  ::umask(umask_now);
}

// A writer that may not keep the replaced file's group (not root, not a member) drops
// the group bits: they were meant for the old group, not for the writer's own.
TEST(WriterTest, AGroupThatCannotBeKeptLosesItsBits) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to set up another user's files";
  const uid_t nobody = 65534;
  const gid_t other_group = 54321;  // nobody is not a member
  // Under /tmp: the test's scratch folders may sit under a root-only path.
  char templ[] = "/tmp/shardload_group.XXXXXX";
  ASSERT_NE(::mkdtemp(templ), nullptr);
  const std::string dir = templ;
  ASSERT_EQ(::chown(dir.c_str(), nobody, nobody), 0);
  const std::string path = dir + "/model.safetensors";
  std::string v(16, 'a');
  auto tensors = V{TensorToWrite::FromBytes("w", Dtype::kU8, {16}, Bytes(v))};
  ASSERT_TRUE(WriteFile(path, tensors, std::nullopt).ok());
  ASSERT_EQ(::chown(path.c_str(), nobody, other_group), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  // The write runs in a child that drops to nobody.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0 ||
        ::setresuid(nobody, nobody, nobody) != 0) {
      ::_exit(2);
    }
    ::_exit(WriteFile(path, tensors, std::nullopt).ok() ? 0 : 3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, nobody);
  EXPECT_NE(st.st_gid, other_group);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  std::filesystem::remove_all(dir);
}

// A single-file write removes what killed writes of the same file left (temporaries
// of a dead pid), and nothing else: a live writer's, another file's, a backup.
TEST(WriterTest, WriteFileSweepsTemporariesOfDeadWritesOfItself) {
  std::string dir = MakeScratchDir("single_sweep");
  const pid_t gone = ::fork();
  ASSERT_GE(gone, 0);
  if (gone == 0) ::_exit(0);
  int status = 0;
  ASSERT_EQ(::waitpid(gone, &status, 0), gone);  // reaped: its pid names no process
  const std::string dead = std::to_string(gone), live = std::to_string(::getppid());
  const std::vector<std::string> names = {
      ".m.safetensors.tmp." + dead + ".3.0123456789abcdef",   // removed
      ".m.safetensors.tmp." + live + ".3.0123456789abcdef",   // a live process's
      ".n.safetensors.tmp." + dead + ".3.0123456789abcdef",   // another file's
      ".m.safetensors.tmp." + dead + ".3.0123456789abcdeg",   // not the format
  };
  for (const std::string& n : names) {
    ASSERT_TRUE(std::ofstream(dir + "/" + n) << "x");
    Age(dir + "/" + n, 3600);
  }
  // A dead-looking writer's temporary written a minute ago stays (another PID
  // namespace's writer may still be at it).
  const std::string recent = ".m.safetensors.tmp." + dead + ".4.0123456789abcdef";
  ASSERT_TRUE(std::ofstream(dir + "/" + recent) << "x");
  Age(dir + "/" + recent, 60);
  std::string v(16, 'a');
  ASSERT_TRUE(WriteFile(dir + "/m.safetensors",
                        V{TensorToWrite::FromBytes("w", Dtype::kU8, {16}, Bytes(v))},
                        std::nullopt).ok());
  std::vector<std::string> want(names.begin() + 1, names.end());
  want.push_back("m.safetensors");
  want.push_back(recent);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ListDir(dir), want);
}

// A layout change writes files under new names (model.safetensors -> shards and an
// index, 2 shards -> 3): they take the replaced checkpoint's permissions, not the
// umask's, so a private checkpoint stays private.
TEST(WriterTest, ALayoutChangeKeepsTheCheckpointsPermissions) {
  std::string dir = MakeScratchDir("mode_layout");
  const std::vector<TensorToWrite> tensors = SizedTensors({64, 64, 64});
  ShardOptions o;
  o.num_shards = 0;
  ASSERT_TRUE(WriteSharded(dir, tensors, o).ok());
  ASSERT_EQ(chmod((dir + "/model.safetensors").c_str(), 0600), 0);
  for (int shards : {2, 3, 0}) {
    o.num_shards = shards;
    Result<ShardedWriteResult> r = WriteSharded(dir, tensors, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (const std::string& name : ListDir(dir)) {
      struct stat st;
      ASSERT_EQ(stat((dir + "/" + name).c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0600u) << name << " after writing " << shards << " shards";
    }
  }
}

// Round trip through the project's header parser: every dtype, names that need
// escaping, metadata, scalar and empty tensors.
TEST(WriterRoundTripTest, ParseBufferReadsBackWhatWasWritten) {
  std::vector<std::string> storage;
  std::vector<TensorToWrite> t;
  storage.reserve(kDtypeCount + 2);
  for (int i = 0; i < kDtypeCount; ++i) {
    Dtype d = static_cast<Dtype>(i);
    std::vector<uint64_t> shape = {2, 4};
    uint64_t n = *TensorByteSize(d, shape);
    storage.push_back(std::string(n, static_cast<char>('A' + i)));
    t.push_back(TensorToWrite::FromBytes("layer." + std::to_string(i) + "\n\"\xc3\xa9",
                                         d, shape, Bytes(storage.back())));
  }
  storage.push_back(std::string(8, 'S'));
  t.push_back(TensorToWrite::FromBytes("\0scalar"s, Dtype::kI64, {}, Bytes(storage.back())));
  t.push_back(TensorToWrite::FromBytes("empty", Dtype::kBF16, {3, 0, 2}, {}));
  Metadata md = {{"format", "pt"}, {"k\tey", "v\x01"}};
  Result<std::string> file = SerializeToString(t, md, "rt.safetensors");
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  Result<Header> h = ParseBuffer(Bytes(*file), "rt.safetensors");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->metadata, md);
  EXPECT_EQ(h->data_start % 8, 0u);
  ASSERT_EQ(h->tensors.size(), t.size());
  for (size_t k = 0; k < t.size(); ++k) {
    const TensorInfo* info = h->Find(t[k].name);
    ASSERT_NE(info, nullptr) << k;
    EXPECT_EQ(info->dtype, t[k].dtype);
    EXPECT_EQ(info->shape, t[k].shape);
    EXPECT_EQ((h->data_start + info->begin) % DtypeAlignment(t[k].dtype), 0u) << k;
    std::string stored = file->substr(h->data_start + info->begin, info->size());
    EXPECT_EQ(stored, std::string(reinterpret_cast<const char*>(t[k].data.data()), t[k].data.size()));
  }
}

TEST(WriterRoundTripTest, ReadHeaderFileReadsShards) {
  std::string dir = MakeScratchDir("rt_shards");
  std::vector<TensorToWrite> t = SizedTensors({100, 7, 64, 1, 300});
  ShardOptions o;
  o.max_shard_size = 128;
  Result<ShardedWriteResult> r = WriteSharded(dir, t, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  size_t found = 0;
  for (size_t s = 0; s < r->plan.files.size(); ++s) {
    Result<Header> h = ReadHeaderFile(dir + "/" + r->plan.files[s]);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
    ASSERT_EQ(h->tensors.size(), r->plan.shards[s].size());
    for (size_t i : r->plan.shards[s]) {
      const TensorInfo* info = h->Find(t[i].name);
      ASSERT_NE(info, nullptr);
      EXPECT_EQ(info->shape, t[i].shape);
      ++found;
    }
  }
  EXPECT_EQ(found, t.size());
}

}  // namespace
}  // namespace shardload
