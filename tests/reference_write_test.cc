// Cross-check of format/writer.h against the Hugging Face reference (python3 with
// `safetensors` and `numpy`):
//   1. files we write load with safetensors.numpy.load_file, and every array's bytes
//      equal the bytes at its data_offsets in our file;
//   2. the reference re-saving those arrays with the same metadata (save_file)
//      produces a file byte-identical to ours;
//   3. the reference writing tensors it builds itself from a spec produces the same
//      bytes as our writer given the same spec.
// With two or more metadata keys the reference orders them by hash, so that case
// compares everything except the order of the metadata keys.
// Skips (GTEST_SKIP) when python3 cannot import safetensors and numpy.
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "format/header.h"
#include "format/writer.h"

namespace shardload {
namespace {

using namespace std::string_literals;

constexpr char kScript[] = R"PY(
import json, struct, sys
try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
except Exception as e:  # the caller skips on exit status 77
    print("cannot import safetensors/numpy:", e)
    sys.exit(77)

d = sys.argv[1]
errors = []
for case in json.load(open(d + "/cases.json")):
    ours = d + "/ours_" + case + ".safetensors"
    raw = open(ours, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    arrays = load_file(ours)
    for name, arr in arrays.items():
        b, e = header[name]["data_offsets"]
        if arr.tobytes() != raw[8 + n + b:8 + n + e]:
            errors.append(case + ": bytes differ for " + repr(name))
    if set(arrays) != set(k for k in header if k != "__metadata__"):
        errors.append(case + ": tensor names differ")
    with safe_open(ours, "np") as f:
        metadata = f.metadata()
    save_file(arrays, d + "/ref_" + case + ".safetensors", metadata=metadata)

spec = json.load(open(d + "/spec.json"))
arrays = {}
for t in spec["tensors"]:
    count = int(np.prod(t["shape"], dtype=np.int64))
    v = np.arange(count, dtype=np.int64) % 251
    if t["np"] == "bool":
        a = (v % 2).astype(np.bool_)
    elif t["np"] == "complex64":
        a = v.astype(np.complex64)
    else:
        a = v.astype(t["np"])
    arrays[t["name"]] = a.reshape(t["shape"])
save_file(arrays, d + "/ref_gen.safetensors", metadata=spec["metadata"])

if errors:
    print("\n".join(errors))
    sys.exit(1)
print("ok")
)PY";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::span<const std::byte> Bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

struct PyResult {
  int status = -1;
  std::string output;
};

PyResult RunPython(const std::string& script, const std::string& dir) {
  std::string cmd = "python3 '" + script + "' '" + dir + "' 2>&1";
  PyResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  int raw = pclose(p);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

// Value(i) of the spec tensors, encoded as `dtype`: i % 251 (bool: i % 2).
std::string SpecBytes(Dtype dtype, uint64_t count) {
  std::string out;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t v = i % 251;
    auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
    switch (dtype) {
      case Dtype::kBOOL: out += static_cast<char>(v % 2); break;
      case Dtype::kU8: case Dtype::kI8: out += static_cast<char>(v); break;
      case Dtype::kI16: case Dtype::kU16: { uint16_t x = v; put(&x, 2); break; }
      case Dtype::kI32: case Dtype::kU32: { uint32_t x = v; put(&x, 4); break; }
      case Dtype::kI64: case Dtype::kU64: { uint64_t x = v; put(&x, 8); break; }
      case Dtype::kF32: { float x = v; put(&x, 4); break; }
      case Dtype::kF64: { double x = v; put(&x, 8); break; }
      case Dtype::kC64: { float x[2] = {static_cast<float>(v), 0}; put(x, 8); break; }
      case Dtype::kF16: {  // small integers are exact in binary16
        uint16_t bits = 0;
        if (v) {
          int e = 63 - __builtin_clzll(v);
          bits = static_cast<uint16_t>(((e + 15) << 10) | ((v - (1ull << e)) << (10 - e)));
        }
        put(&bits, 2);
        break;
      }
      default: ADD_FAILURE() << "no numpy spec for " << DtypeName(dtype);
    }
  }
  return out;
}

class ReferenceWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TEST_TMPDIR");
    dir_ = std::string(base ? base : "/tmp") + "/reference_write_XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    if (std::system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "python3 cannot import safetensors and numpy; reference cross-check skipped";
    }
    std::ofstream(dir_ + "/check.py") << kScript;
  }
  std::string dir_;
};

TEST_F(ReferenceWriteTest, ReferenceReadsOursAndWritesIdenticalBytes) {
  struct Case {
    std::string name;
    std::vector<std::string> storage;
    std::vector<TensorToWrite> tensors;
    std::optional<Metadata> metadata;
  };
  std::vector<Case> cases(4);
  // "mixed": every numpy dtype, names needing escapes, a scalar and an empty tensor.
  {
    Case& c = cases[0];
    c.name = "mixed";
    c.metadata = Metadata{{"format", "pt"}};
    const std::pair<Dtype, std::string> dtypes[] = {
        {Dtype::kBOOL, "mask\n\t\"q\""}, {Dtype::kU8, "\0nul"s},   {Dtype::kI8, "caf\xc3\xa9"},
        {Dtype::kI16, "\x7f" "del"},     {Dtype::kU16, "u16\\x/"}, {Dtype::kF16, "\xf0\x9f\x98\x80"},
        {Dtype::kI32, "a.b.0"},          {Dtype::kU32, "a.b.10"},  {Dtype::kF32, "a.b.2"},
        {Dtype::kC64, "complex"},        {Dtype::kF64, "f64"},     {Dtype::kI64, "\x01\x1f"},
        {Dtype::kU64, "Z"},
    };
    c.storage.reserve(32);
    uint64_t seed = 1;
    for (const auto& [dtype, name] : dtypes) {
      std::vector<uint64_t> shape = {3, 5};
      std::string bytes(*TensorByteSize(dtype, shape), '\0');
      for (char& ch : bytes) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        ch = static_cast<char>(seed >> 56);
      }
      if (dtype == Dtype::kBOOL) for (char& ch : bytes) ch &= 1;
      c.storage.push_back(bytes);
      c.tensors.push_back(TensorToWrite::FromBytes(name, dtype, shape, Bytes(c.storage.back())));
    }
    c.storage.push_back(std::string(8, '\x11'));
    c.tensors.push_back(TensorToWrite::FromBytes("scalar", Dtype::kF64, {}, Bytes(c.storage.back())));
    c.tensors.push_back(TensorToWrite::FromBytes("empty", Dtype::kF32, {4, 0}, {}));
  }
  // "nometa": no __metadata__ at all; "emptymeta": an empty one.
  for (int i : {1, 2}) {
    Case& c = cases[i];
    c.name = i == 1 ? "nometa" : "emptymeta";
    if (i == 2) c.metadata = Metadata{};
    c.storage.push_back(std::string(40, '\x5a'));
    c.tensors.push_back(TensorToWrite::FromBytes("w", Dtype::kF32, {2, 5}, Bytes(c.storage.back())));
  }
  // "manymeta": several metadata keys (reference order is by hash).
  {
    Case& c = cases[3];
    c.name = "manymeta";
    c.metadata = Metadata{{"format", "pt"}, {"b\xc3\xa9ta", "2"}, {"alpha", "x\ny"}, {"lm_head.weight", "embed"}};
    c.storage.push_back(std::string(6, '\x07'));
    c.tensors.push_back(TensorToWrite::FromBytes("embed", Dtype::kI16, {3}, Bytes(c.storage.back())));
  }
  std::string case_list = "[";
  for (const Case& c : cases) {
    ASSERT_TRUE(WriteFile(dir_ + "/ours_" + c.name + ".safetensors", c.tensors, c.metadata).ok());
    case_list += (case_list.size() > 1 ? "," : "") + EscapeJsonString(c.name);
  }
  std::ofstream(dir_ + "/cases.json") << case_list << "]";

  // The independent spec: the reference builds these arrays itself.
  const std::pair<Dtype, const char*> spec_types[] = {
      {Dtype::kF32, "float32"}, {Dtype::kF16, "float16"}, {Dtype::kI64, "int64"},
      {Dtype::kU8, "uint8"},    {Dtype::kBOOL, "bool"},   {Dtype::kC64, "complex64"},
      {Dtype::kF64, "float64"}, {Dtype::kI32, "int32"},   {Dtype::kU16, "uint16"},
  };
  std::string spec = "{\"metadata\":{\"format\":\"pt\"},\"tensors\":[";
  std::vector<std::string> spec_storage;
  spec_storage.reserve(std::size(spec_types));
  std::vector<TensorToWrite> spec_tensors;
  for (size_t i = 0; i < std::size(spec_types); ++i) {
    auto [dtype, np] = spec_types[i];
    std::vector<uint64_t> shape = {i + 1, 300};
    std::string name = "model.layers." + std::to_string(i % 3) + ".w\xe2\x80\xa8" + np;
    spec_storage.push_back(SpecBytes(dtype, shape[0] * shape[1]));
    spec_tensors.push_back(TensorToWrite::FromBytes(name, dtype, shape, Bytes(spec_storage.back())));
    spec += (i ? "," : "") + std::string("{\"name\":") + EscapeJsonString(name) + ",\"np\":\"" + np +
            "\",\"shape\":[" + std::to_string(shape[0]) + ",300]}";
  }
  std::ofstream(dir_ + "/spec.json") << spec << "]}";

  PyResult py = RunPython(dir_ + "/check.py", dir_);
  if (py.status == 77) GTEST_SKIP() << py.output;
  ASSERT_EQ(py.status, 0) << py.output;

  for (const Case& c : cases) {
    std::string ours = ReadAll(dir_ + "/ours_" + c.name + ".safetensors");
    std::string ref = ReadAll(dir_ + "/ref_" + c.name + ".safetensors");
    ASSERT_FALSE(ours.empty()) << c.name;
    if (c.name != "manymeta") {
      EXPECT_EQ(ours, ref) << c.name;
      continue;
    }
    // Same length, same tensors and data, same metadata; only key order may differ.
    EXPECT_EQ(ours.size(), ref.size());
    Result<Header> ho = ParseBuffer(Bytes(ours), "ours");
    Result<Header> hr = ParseBuffer(Bytes(ref), "ref");
    ASSERT_TRUE(ho.ok()) << ho.status().ToString();
    ASSERT_TRUE(hr.ok()) << hr.status().ToString();
    EXPECT_EQ(ho->metadata, hr->metadata);
    EXPECT_EQ(ho->tensors, hr->tensors);
    EXPECT_EQ(ours.substr(ho->data_start), ref.substr(hr->data_start));
  }
  Result<std::string> ours_gen = SerializeToString(spec_tensors, Metadata{{"format", "pt"}});
  ASSERT_TRUE(ours_gen.ok()) << ours_gen.status().ToString();
  EXPECT_EQ(*ours_gen, ReadAll(dir_ + "/ref_gen.safetensors"));
}

}  // namespace
}  // namespace shardload
