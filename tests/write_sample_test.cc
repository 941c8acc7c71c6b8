// Tests of cli/sample_model.h (the models behind `shardload write-sample`): naming,
// scaling to the requested size, tensor counts, determinism of the generator, and a
// small end-to-end write read back through the header parser.
#include "cli/sample_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "format/header.h"
#include "format/writer.h"

namespace shardload::cli {
namespace {

std::set<std::string> Names(const SampleModel& m) {
  std::set<std::string> names;
  for (const TensorToWrite& t : m.tensors) names.insert(t.name);
  return names;
}

TEST(SampleModelTest, TinyHasLlamaNamesAndIsAFewKilobytes) {
  SampleOptions o;
  o.layout = SampleLayout::kTiny;
  Result<SampleModel> m = BuildSampleModel(o);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->tensors.size(), 21u);  // embed + 2 × 9 + norm + lm_head
  EXPECT_EQ(m->total_bytes, 12448u);
  std::set<std::string> names = Names(*m);
  for (const char* n :
       {"model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
        "model.layers.1.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight", "lm_head.weight"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
  EXPECT_EQ(m->tensors.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(m->tensors.front().shape, (std::vector<uint64_t>{32, 16}));
  EXPECT_EQ(m->tensors.back().name, "lm_head.weight");
}

TEST(SampleModelTest, LlamaScalesToTheRequestedSize) {
  for (uint64_t target : {uint64_t{1} << 20, uint64_t{100'000'000}, uint64_t{1} << 30,
                          uint64_t{16} << 30}) {
    SampleOptions o;
    o.target_bytes = target;
    Result<SampleModel> m = BuildSampleModel(o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    double ratio = static_cast<double>(m->total_bytes) / static_cast<double>(target);
    EXPECT_GT(ratio, 0.9) << target << ": " << m->Describe();
    EXPECT_LT(ratio, 1.1) << target << ": " << m->Describe();
    EXPECT_EQ(m->tensors.size(), 3u + 9u * m->layers);
    EXPECT_EQ(m->hidden % 16, 0);
  }
  // 16 GiB of BF16 looks like an 8B-class model.
  SampleOptions big;
  big.target_bytes = uint64_t{16} << 30;
  Result<SampleModel> m = BuildSampleModel(big);
  ASSERT_TRUE(m.ok());
  EXPECT_GE(m->hidden, 3000);
  EXPECT_LE(m->hidden, 5000);
  EXPECT_EQ(m->vocab, 32000);
}

TEST(SampleModelTest, MoeHasAboutNineteenThousandExpertTensorsAtAFewGiB) {
  SampleOptions o;
  o.layout = SampleLayout::kMoe;
  o.target_bytes = uint64_t{4} << 30;
  Result<SampleModel> m = BuildSampleModel(o);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->experts, 128);
  EXPECT_EQ(m->layers, 48);
  EXPECT_EQ(m->tensors.size(), 18771u);
  std::set<std::string> names = Names(*m);
  EXPECT_TRUE(names.count("model.layers.3.mlp.experts.57.down_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.47.mlp.experts.127.gate_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.0.mlp.gate.weight"));
  double ratio = static_cast<double>(m->total_bytes) / static_cast<double>(o.target_bytes);
  EXPECT_GT(ratio, 0.9);
  EXPECT_LT(ratio, 1.1);
  // Small targets fall back to fewer layers and experts but keep the naming.
  o.target_bytes = 1 << 20;
  m = BuildSampleModel(o);
  ASSERT_TRUE(m.ok());
  EXPECT_LT(m->experts, 128);
  EXPECT_TRUE(Names(*m).count("model.layers.0.mlp.experts.0.up_proj.weight"));
}

TEST(SampleModelTest, InvalidOptions) {
  SampleOptions o;
  o.target_bytes = 1000;
  Result<SampleModel> m = BuildSampleModel(o);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(m.status().message(), "target size 1000 bytes is too small for layout llama (minimum 65536)");
  Result<SampleLayout> l = ParseSampleLayout("gpt");
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().message(), "unknown layout 'gpt' (use llama, moe or tiny)");
}

std::string Fill(uint64_t seed, uint64_t stream, uint64_t offset, size_t n) {
  std::string out(n, '\0');
  FillSampleBytes(seed, stream, offset, std::as_writable_bytes(std::span(out.data(), n)));
  return out;
}

TEST(SampleModelTest, GeneratorIsDeterministicAndIndependentOfChunking) {
  std::string whole = Fill(7, 3, 0, 1000);
  EXPECT_EQ(whole, Fill(7, 3, 0, 1000));
  std::string pieces = Fill(7, 3, 0, 5) + Fill(7, 3, 5, 3) + Fill(7, 3, 8, 19) + Fill(7, 3, 27, 973);
  EXPECT_EQ(pieces, whole);
  EXPECT_NE(Fill(8, 3, 0, 1000), whole);
  EXPECT_NE(Fill(7, 4, 0, 1000), whole);
  // Not degenerate: most byte values appear.
  std::set<char> values(whole.begin(), whole.end());
  EXPECT_GT(values.size(), 200u);
}

// Float samples hold finite values below 2 in magnitude (no NaN or Inf from random
// exponent bits), whatever the chunking of the generator's calls; BOOL holds 0 and 1.
TEST(SampleModelTest, FloatValuesAreFiniteAndBoolsAreZeroOrOne) {
  for (Dtype dtype : {Dtype::kF32, Dtype::kF16, Dtype::kBF16, Dtype::kF64, Dtype::kBOOL}) {
    SampleOptions o;
    o.layout = SampleLayout::kTiny;
    o.dtype = dtype;
    Result<SampleModel> m = BuildSampleModel(o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const TensorToWrite& t = m->tensors[0];
    const size_t n = static_cast<size_t>(*TensorByteSize(t.dtype, t.shape));
    std::vector<std::byte> whole(n), pieces(n);
    ASSERT_TRUE(t.fill(0, whole).ok());
    for (size_t at = 0; at < n; at += 7) {  // odd-sized calls at odd offsets
      size_t k = std::min<size_t>(7, n - at);
      ASSERT_TRUE(t.fill(at, std::span(pieces).subspan(at, k)).ok());
    }
    EXPECT_EQ(whole, pieces) << DtypeName(dtype);
    const size_t size = DtypeBits(dtype) / 8;
    for (size_t i = 0; i < n; i += size) {
      double v = 0;
      if (dtype == Dtype::kF32) {
        float f;
        std::memcpy(&f, &whole[i], 4);
        v = f;
      } else if (dtype == Dtype::kF64) {
        std::memcpy(&v, &whole[i], 8);
      } else if (dtype == Dtype::kBOOL) {
        v = static_cast<double>(whole[i]);
        ASSERT_TRUE(v == 0 || v == 1) << i;
        continue;
      } else {  // F16 / BF16: the exponent field below all ones means finite
        uint16_t h;
        std::memcpy(&h, &whole[i], 2);
        uint16_t exp = dtype == Dtype::kF16 ? (h >> 10) & 0x1f : (h >> 7) & 0xff;
        uint16_t top = dtype == Dtype::kF16 ? 0x1f : 0xff;
        ASSERT_LT(exp, top / 2 + 1) << DtypeName(dtype) << " element " << i / 2;  // |x| < 2
        continue;
      }
      ASSERT_TRUE(std::isfinite(v) && std::fabs(v) < 2) << DtypeName(dtype) << " " << v;
    }
  }
}

// The 8-bit floats and C64: no NaN or Inf encoding appears (E4M3: S.1111.111; E5M2:
// exponent 11111; the FNUZ formats: 0x80; E8M0: 0xff), C64's two F32s below 2.
TEST(SampleModelTest, EightBitFloatsAndComplexAreFinite) {
  for (Dtype dtype : {Dtype::kF8_E4M3, Dtype::kF8_E5M2, Dtype::kF8_E4M3FNUZ,
                      Dtype::kF8_E5M2FNUZ, Dtype::kF8_E8M0, Dtype::kC64}) {
    SampleOptions o;
    o.layout = SampleLayout::kTiny;
    o.dtype = dtype;
    Result<SampleModel> m = BuildSampleModel(o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    size_t zeros = 0, n_total = 0;
    for (const TensorToWrite& t : m->tensors) {
      const size_t n = static_cast<size_t>(*TensorByteSize(t.dtype, t.shape));
      std::vector<std::byte> b(n);
      ASSERT_TRUE(t.fill(3, b).ok());  // an odd offset: the masking follows the element
      std::vector<std::byte> aligned(n + 3);
      ASSERT_TRUE(t.fill(0, aligned).ok());
      for (size_t i = 0; i + 3 < n; ++i) ASSERT_EQ(b[i], aligned[i + 3]) << i;
      for (size_t i = 0; i < n; ++i) {
        const uint8_t x = static_cast<uint8_t>(aligned[i]);
        n_total += 1;
        zeros += x == 0;
        switch (dtype) {
          case Dtype::kF8_E4M3: ASSERT_NE(x & 0x7f, 0x7f) << i; break;
          case Dtype::kF8_E5M2: ASSERT_NE((x >> 2) & 0x1f, 0x1f) << i; break;
          case Dtype::kF8_E4M3FNUZ: case Dtype::kF8_E5M2FNUZ: ASSERT_NE(x, 0x80) << i; break;
          case Dtype::kF8_E8M0: ASSERT_NE(x, 0xff) << i; break;
          default: break;
        }
      }
      if (dtype == Dtype::kC64) {
        for (size_t i = 0; i + 4 <= n; i += 4) {
          float f;
          std::memcpy(&f, &aligned[i], 4);
          ASSERT_TRUE(std::isfinite(f) && std::fabs(f) < 2) << f;
        }
      }
    }
    EXPECT_LT(zeros * 8, n_total) << DtypeName(dtype);  // still random, not zeroed out
  }
}

TEST(SampleModelTest, WritesAShardedTinyCheckpointThatParses) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/sample_XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  SampleOptions o;
  o.layout = SampleLayout::kTiny;
  o.dtype = Dtype::kF32;
  o.seed = 42;
  Result<SampleModel> m = BuildSampleModel(o);
  ASSERT_TRUE(m.ok());
  ShardOptions s;
  s.num_shards = 3;
  Result<ShardedWriteResult> r = WriteSharded(dir, m->tensors, s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->plan.files.size(), 3u);
  size_t tensors = 0;
  for (const std::string& f : r->plan.files) {
    Result<Header> h = ReadHeaderFile(dir + "/" + f);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    tensors += h->tensors.size();
    for (const TensorInfo& t : h->tensors) EXPECT_EQ(t.dtype, Dtype::kF32);
  }
  EXPECT_EQ(tensors, m->tensors.size());
  // Balanced: no shard holds more than half the bytes of the three.
  for (uint64_t b : r->plan.shard_bytes) EXPECT_LT(b, m->total_bytes / 2);
}

}  // namespace
}  // namespace shardload::cli
