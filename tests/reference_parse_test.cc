// tests/reference_parse_test.cc — cross-check of the header parser against the
// Hugging Face reference. python3 writes files with `safetensors.numpy.save_file` (every
// numpy dtype the reference maps, metadata, scalars, zero-size, an empty file, many
// tensors) into TEST_TMPDIR and prints, from `safe_open`, each tensor's name, dtype and
// shape plus its bytes (numpy's tobytes) and the metadata. ReadHeaderFile must report
// the same names, dtypes, shapes and metadata, and each tensor's data_offsets must
// select exactly those bytes of the file.
// Skips (GTEST_SKIP) when python3 cannot import safetensors and numpy.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "format/header.h"

namespace shardload {
namespace {

constexpr char kScript[] = R"PY(
import sys, numpy as np
from safetensors.numpy import save_file
from safetensors import safe_open

out = sys.argv[1]
rng = np.random.default_rng(7)
dtypes = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, np.int32,
          np.uint32, np.float32, np.float64, np.int64, np.uint64, np.complex64]
files = {}
files["all_dtypes"] = ({"t_" + np.dtype(d).name: (rng.integers(0, 100, size=(2, 3)) > 50).astype(d)
                        if d is np.bool_ else rng.integers(0, 100, size=(2, 3)).astype(d)
                        for d in dtypes},
                       {"format": "pt", "note": "caf\u00e9 \u4e2d"})
files["scalars_and_empty"] = ({"scalar": np.array(1.5, np.float32),
                               "zero_rows": np.zeros((0, 4), np.int16),
                               "zero_last": np.zeros((3, 0), np.float64),
                               "vec": np.arange(5, dtype=np.int64)}, None)
files["no_tensors"] = ({}, {"only": "metadata"})
files["many"] = ({"model.layers.%d.mlp.experts.%d.w" % (i // 8, i % 8):
                  np.full((i % 5 + 1,), i, np.float16) for i in range(300)}, None)
files["odd_names"] = ({"": np.ones(2, np.uint8), "a b/c\\d\"e": np.ones(3, np.int8),
                       "\u00e9\u4e2d\U0001F600": np.ones(1, np.float32)}, {"": ""})
for stem, (tensors, metadata) in files.items():
    path = "%s/%s.safetensors" % (out, stem)
    save_file(tensors, path, metadata=metadata)
    f = safe_open(path, "np")
    print("F", stem, len(f.keys()))
    for k, v in sorted((f.metadata() or {}).items()):
        print("M", stem, k.encode().hex() or "-", v.encode().hex() or "-")
    for name in f.keys():
        s = f.get_slice(name)
        shape = ",".join(str(d) for d in s.get_shape()) or "-"
        data = f.get_tensor(name).tobytes().hex() or "-"
        print("T", stem, name.encode().hex() or "-", s.get_dtype(), shape, data)
)PY";

std::string Unhex(const std::string& hex) {
  if (hex == "-") return "";
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Expected {
  size_t count = 0;
  std::map<std::string, std::string> metadata;
  struct Tensor {
    std::string dtype;
    std::vector<uint64_t> shape;
    std::string data;
  };
  std::map<std::string, Tensor> tensors;
};

TEST(ReferenceParseTest, MatchesSafeOpen) {
  if (std::system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 cannot import safetensors and numpy; reference cross-check skipped";
  }
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp ? tmp : "/tmp") + "/reference_parse";
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
  std::string script = dir + "/write.py";
  std::ofstream(script) << kScript;
  std::string listing = dir + "/listing.txt";
  ASSERT_EQ(std::system(("python3 '" + script + "' '" + dir + "' >'" + listing + "' 2>&1").c_str()), 0)
      << ReadAll(listing);

  std::map<std::string, Expected> files;
  std::istringstream lines(ReadAll(listing));
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream in(line);
    std::string kind, stem;
    in >> kind >> stem;
    Expected& e = files[stem];
    if (kind == "F") {
      in >> e.count;
    } else if (kind == "M") {
      std::string k, v;
      in >> k >> v;
      e.metadata[Unhex(k)] = Unhex(v);
    } else if (kind == "T") {
      std::string name, dtype, shape, data;
      in >> name >> dtype >> shape >> data;
      Expected::Tensor t{dtype, {}, Unhex(data)};
      if (shape != "-") {
        std::istringstream dims(shape);
        std::string d;
        while (std::getline(dims, d, ',')) t.shape.push_back(std::stoull(d));
      }
      e.tensors[Unhex(name)] = t;
    } else {
      FAIL() << "unexpected line from python: " << line;
    }
  }
  ASSERT_EQ(files.size(), 5u) << ReadAll(listing);

  for (const auto& [stem, want] : files) {
    std::string path = dir + "/" + stem + ".safetensors";
    Result<Header> h = ReadHeaderFile(path);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->tensors.size(), want.count) << stem;
    EXPECT_EQ(h->tensors.size(), want.tensors.size()) << stem;
    EXPECT_EQ(h->metadata, want.metadata) << stem;
    std::string bytes = ReadAll(path);
    for (const auto& [name, t] : want.tensors) {
      const TensorInfo* got = h->Find(name);
      ASSERT_NE(got, nullptr) << stem << ": " << name;
      EXPECT_EQ(DtypeName(got->dtype), t.dtype) << stem << ": " << name;
      EXPECT_EQ(got->shape, t.shape) << stem << ": " << name;
      ASSERT_LE(h->data_start + got->end, bytes.size());
      EXPECT_EQ(bytes.substr(h->data_start + got->begin, got->size()), t.data) << stem << ": " << name;
    }
  }
}

}  // namespace
}  // namespace shardload
