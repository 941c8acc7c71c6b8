#include "cli/sample_model.h"

#include <cmath>
#include <cstring>
#include <utility>

namespace shardload::cli {
namespace {

constexpr uint64_t kMinTarget = 64 * 1024;

// Mix: the splitmix64 finalizer (a bijection with good avalanche).
inline uint64_t Mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t RoundUp(uint64_t v, uint64_t m) { return (v + m - 1) / m * m; }

struct Shape {
  uint64_t h = 0, kv = 0, inter = 0, vocab = 0, layers = 0, experts = 0;
};

// Params: element count of a model of this shape (dense when experts == 0).
uint64_t Params(const Shape& s) {
  uint64_t attn = 2 * s.h * s.h + 2 * s.h * s.kv;
  uint64_t mlp = s.experts == 0 ? 3 * s.h * s.inter : s.experts * s.h + s.experts * 3 * s.h * s.inter;
  return 2 * s.vocab * s.h + s.h + s.layers * (attn + mlp + 2 * s.h);
}

uint64_t Vocab(uint64_t h, uint64_t params) {
  uint64_t v = 32000;
  if (2 * v * h > params / 4) v = std::max<uint64_t>(64, params / 4 / (2 * h) / 64 * 64);
  return v;
}

uint64_t Distance(uint64_t a, uint64_t b) { return a > b ? a - b : b - a; }

Shape ChooseDense(uint64_t params) {
  Shape best;
  uint64_t best_dist = UINT64_MAX;
  for (uint64_t h = 16; h <= 16384; h += 16) {
    Shape s;
    s.h = h;
    s.kv = std::max<uint64_t>(16, h / 4 / 16 * 16);
    s.inter = RoundUp(h * 7 / 2, 16);
    s.vocab = Vocab(h, params);
    s.layers = std::max<uint64_t>(2, static_cast<uint64_t>(std::llround(h / 128.0)));
    uint64_t d = Distance(Params(s), params);
    if (d < best_dist) best_dist = d, best = s;
  }
  // Refine the depth to land closer to the target.
  Shape one = best;
  one.layers = 0;
  uint64_t fixed = Params(one);
  one.layers = 1;
  uint64_t per_layer = Params(one) - fixed;
  if (params > fixed) {
    best.layers = std::max<uint64_t>(1, (params - fixed + per_layer / 2) / per_layer);
  }
  return best;
}

Shape ChooseMoe(uint64_t params) {
  static constexpr std::pair<uint64_t, uint64_t> kConfigs[] = {
      {48, 128}, {24, 64}, {12, 32}, {4, 8}, {2, 4}};
  for (size_t c = 0; c < std::size(kConfigs); ++c) {
    const bool last = c + 1 == std::size(kConfigs);
    Shape best;
    uint64_t best_dist = UINT64_MAX;
    for (uint64_t h = last ? 16 : 64; h <= 8192; h += 16) {
      Shape s;
      s.h = h;
      s.kv = std::max<uint64_t>(16, h / 4 / 16 * 16);
      s.inter = RoundUp(h * 3 / 8, 16);
      s.vocab = Vocab(h, params);
      s.layers = kConfigs[c].first;
      s.experts = kConfigs[c].second;
      if (!last && h == 64 && Params(s) > params) break;  // too big even at h = 64
      uint64_t d = Distance(Params(s), params);
      if (d < best_dist) best_dist = d, best = s;
    }
    if (best.h != 0) return best;
  }
  return Shape{};  // unreachable: the last config always yields a shape
}

// ValueShaping: how random bits become plausible weights: in every `size`-byte float
// (little-endian: its top byte last) the top byte is ANDed with `mask`, which clears
// the exponent's highest bit, so every value is finite and below 2 in magnitude (random
// bits would give NaN and Inf); `fnuz`: the FNUZ formats' one NaN, 0x80, becomes 0.
// BOOL keeps 0 or 1. Integer and sub-byte dtypes (F4/F6 have no NaN or Inf) keep their
// bits: size 0.
struct ValueShaping {
  uint64_t size = 0;
  uint8_t mask = 0xff;
  bool fnuz = false;
};

ValueShaping ShapingFor(Dtype dtype) {
  switch (dtype) {
    case Dtype::kF64: return {8, 0xbf};
    case Dtype::kF32: case Dtype::kC64: return {4, 0xbf};  // C64: two F32s
    case Dtype::kF16: case Dtype::kBF16: return {2, 0xbf};
    case Dtype::kF8_E4M3: case Dtype::kF8_E5M2: return {1, 0xbf};
    case Dtype::kF8_E4M3FNUZ: case Dtype::kF8_E5M2FNUZ: return {1, 0xbf, true};
    case Dtype::kF8_E8M0: return {1, 0x7f};  // a pure exponent: at most 2^0
    case Dtype::kBOOL: return {1, 0x01};
    default: return {};
  }
}

TensorToWrite Make(std::string name, Dtype dtype, std::vector<uint64_t> shape, uint64_t seed,
                   uint64_t stream) {
  const ValueShaping v = ShapingFor(dtype);
  return TensorToWrite::FromGenerator(
      std::move(name), dtype, std::move(shape),
      [seed, stream, v](uint64_t offset, std::span<std::byte> out) {
        FillSampleBytes(seed, stream, offset, out);
        if (v.size == 0) return OkStatus();
        // The first top byte at or after `offset`, then every `size` bytes.
        for (uint64_t i = (v.size - 1 - offset % v.size) % v.size; i < out.size(); i += v.size) {
          out[i] &= static_cast<std::byte>(v.mask);
          if (v.fnuz && out[i] == std::byte{0x80}) out[i] = std::byte{0};
        }
        return OkStatus();
      });
}

}  // namespace

void FillSampleBytes(uint64_t seed, uint64_t stream, uint64_t offset, std::span<std::byte> out) {
  const uint64_t base = Mix(seed ^ Mix(stream + 0x9e3779b97f4a7c15ULL));
  auto word = [base](uint64_t w) { return Mix(base + w * 0xd1b54a32d192ed03ULL); };
  size_t i = 0;
  const size_t n = out.size();
  // Head: up to the next 8-byte boundary of the stream.
  while (i < n && (offset + i) % 8 != 0) {
    uint64_t p = offset + i;
    out[i] = static_cast<std::byte>(word(p / 8) >> (8 * (p % 8)));
    ++i;
  }
  // Whole words (little-endian byte order, like the head and tail).
  for (uint64_t w = (offset + i) / 8; n - i >= 8; ++w, i += 8) {
    uint64_t x = word(w);
    std::memcpy(out.data() + i, &x, 8);
  }
  // Tail.
  for (; i < n; ++i) {
    uint64_t p = offset + i;
    out[i] = static_cast<std::byte>(word(p / 8) >> (8 * (p % 8)));
  }
}

Result<SampleLayout> ParseSampleLayout(std::string_view name) {
  if (name == "llama") return SampleLayout::kLlama;
  if (name == "moe") return SampleLayout::kMoe;
  if (name == "tiny") return SampleLayout::kTiny;
  return InvalidArgumentError("unknown layout '" + std::string(name) +
                              "' (use llama, moe or tiny)");
}

std::string SampleModel::Describe() const {
  std::string s = "hidden " + std::to_string(hidden) + ", layers " + std::to_string(layers) +
                  ", vocab " + std::to_string(vocab) + ", intermediate " +
                  std::to_string(intermediate);
  if (experts) s += ", experts " + std::to_string(experts);
  return s;
}

Result<SampleModel> BuildSampleModel(const SampleOptions& options) {
  Shape shape;
  const uint64_t bits = static_cast<uint64_t>(DtypeBits(options.dtype));
  if (options.layout == SampleLayout::kTiny) {
    shape = {.h = 16, .kv = 16, .inter = 32, .vocab = 32, .layers = 2, .experts = 0};
  } else {
    if (options.target_bytes < kMinTarget) {
      return InvalidArgumentError(
          "target size " + std::to_string(options.target_bytes) + " bytes is too small for layout " +
          (options.layout == SampleLayout::kMoe ? "moe" : "llama") + " (minimum " +
          std::to_string(kMinTarget) + ")");
    }
    if (options.target_bytes > (uint64_t{1} << 50)) {
      return InvalidArgumentError("target size " + std::to_string(options.target_bytes) +
                                  " bytes is larger than the 1 PiB this generator supports");
    }
    uint64_t params = options.target_bytes / bits * 8;
    shape = options.layout == SampleLayout::kMoe ? ChooseMoe(params) : ChooseDense(params);
  }

  SampleModel m;
  m.hidden = static_cast<int>(shape.h);
  m.layers = static_cast<int>(shape.layers);
  m.vocab = static_cast<int>(shape.vocab);
  m.intermediate = static_cast<int>(shape.inter);
  m.experts = static_cast<int>(shape.experts);
  const Dtype d = options.dtype;
  const uint64_t seed = options.seed;
  const uint64_t h = shape.h;
  auto add = [&](std::string name, std::vector<uint64_t> dims) {
    uint64_t stream = m.tensors.size();
    m.tensors.push_back(Make(std::move(name), d, std::move(dims), seed, stream));
  };
  add("model.embed_tokens.weight", {shape.vocab, h});
  for (uint64_t l = 0; l < shape.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "self_attn.q_proj.weight", {h, h});
    add(p + "self_attn.k_proj.weight", {shape.kv, h});
    add(p + "self_attn.v_proj.weight", {shape.kv, h});
    add(p + "self_attn.o_proj.weight", {h, h});
    if (shape.experts == 0) {
      add(p + "mlp.gate_proj.weight", {shape.inter, h});
      add(p + "mlp.up_proj.weight", {shape.inter, h});
      add(p + "mlp.down_proj.weight", {h, shape.inter});
    } else {
      add(p + "mlp.gate.weight", {shape.experts, h});
      for (uint64_t e = 0; e < shape.experts; ++e) {
        const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
        add(q + "gate_proj.weight", {shape.inter, h});
        add(q + "up_proj.weight", {shape.inter, h});
        add(q + "down_proj.weight", {h, shape.inter});
      }
    }
    add(p + "input_layernorm.weight", {h});
    add(p + "post_attention_layernorm.weight", {h});
  }
  add("model.norm.weight", {h});
  add("lm_head.weight", {shape.vocab, h});

  for (const TensorToWrite& t : m.tensors) {
    Result<uint64_t> size = TensorByteSize(t.dtype, t.shape);
    if (!size.ok()) {
      return Status(size.status().code(), "tensor '" + t.name + "': " + size.status().message());
    }
    m.total_bytes += *size;
  }
  return m;
}

}  // namespace shardload::cli
