// loader/cast.cc — F32 / F16 / BF16 conversion with round-to-nearest-even.
#include "loader/cast.h"

#include <bit>
#include <cstring>
#include <string>

namespace shardload {
namespace {

bool IsFloat16Family(Dtype d) { return d == Dtype::kF32 || d == Dtype::kF16 || d == Dtype::kBF16; }

template <typename T>
T Load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename T>
void Store(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

// CastLoop: out[i] = convert(in[i]) for one fixed pair of element types: the dtype is
// chosen once, outside the loop, so the body is a straight conversion the compiler can
// unroll and vectorize (a switch per element made the loop's speed depend on where the
// linker happened to place it: bench/RESULTS.md "Host cast loop").
template <typename In, typename Out, typename Convert>
void CastLoop(const std::byte* in, uint64_t count, std::byte* out, Convert convert) {
  for (uint64_t i = 0; i < count; ++i) {
    Store<Out>(out + i * sizeof(Out), convert(Load<In>(in + i * sizeof(In))));
  }
}

}  // namespace

uint16_t F32ToF16Bits(float value) {
  uint32_t x = std::bit_cast<uint32_t>(value);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {                        // infinity or NaN
    if (abs == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // quiet NaN
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (abs < 0x38800000u) {                          // below 2^-14: half subnormal or zero
    uint32_t exp = abs >> 23;
    if (exp == 0) return static_cast<uint16_t>(sign);  // F32 subnormals are far below 2^-25
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;                     // value / 2^-24 = mant >> shift
    if (shift >= 32) return static_cast<uint16_t>(sign);
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);         // q may carry into the smallest normal
  }
  uint32_t h = (abs - 0x38000000u) >> 13;          // rebias 127 -> 15, keep 10 mantissa bits
  uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

uint16_t F32ToBF16Bits(float value) {
  uint32_t x = std::bit_cast<uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  uint32_t bias = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + bias) >> 16);
}

float F16BitsToF32(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exp = (bits >> 10) & 0x1fu;
  uint32_t mant = bits & 0x3ffu;
  uint32_t out;
  if (exp == 0) {
    if (mant == 0) {
      out = sign;
    } else {  // subnormal: normalize
      uint32_t e = 113;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --e;
      }
      out = sign | (e << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    out = sign | 0x7f800000u | (mant << 13);
  } else {
    out = sign | ((exp + 112) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(out);
}

float BF16BitsToF32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

bool CastSupported(Dtype src, Dtype dst) {
  return src == dst || (IsFloat16Family(src) && IsFloat16Family(dst));
}

Status CastElements(Dtype src, Dtype dst, const std::byte* in, uint64_t count, std::byte* out) {
  if (!CastSupported(src, dst)) {
    return InvalidArgumentError("cannot cast " + std::string(DtypeName(src)) + " to " +
                                std::string(DtypeName(dst)));
  }
  if (src == dst) {
    // Callers copy equal dtypes themselves; support it anyway (whole bytes only).
    std::memcpy(out, in, count * static_cast<uint64_t>(DtypeBits(src)) / 8);
    return OkStatus();
  }
  // Every pair converts through F32, as one rounding from the exact value.
  if (src == Dtype::kF32) {
    if (dst == Dtype::kF16) {
      CastLoop<float, uint16_t>(in, count, out, [](float v) { return F32ToF16Bits(v); });
    } else {
      CastLoop<float, uint16_t>(in, count, out, [](float v) { return F32ToBF16Bits(v); });
    }
  } else if (dst == Dtype::kF32) {
    if (src == Dtype::kF16) {
      CastLoop<uint16_t, float>(in, count, out, [](uint16_t b) { return F16BitsToF32(b); });
    } else {
      CastLoop<uint16_t, float>(in, count, out, [](uint16_t b) { return BF16BitsToF32(b); });
    }
  } else if (src == Dtype::kF16) {  // F16 -> BF16
    CastLoop<uint16_t, uint16_t>(in, count, out,
                                 [](uint16_t b) { return F32ToBF16Bits(F16BitsToF32(b)); });
  } else {  // BF16 -> F16
    CastLoop<uint16_t, uint16_t>(in, count, out,
                                 [](uint16_t b) { return F32ToF16Bits(BF16BitsToF32(b)); });
  }
  return OkStatus();
}

}  // namespace shardload
