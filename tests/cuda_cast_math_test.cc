// The GPU kernels' conversion arithmetic (cuda/cast_math.h), checked on the host: known
// bit patterns, an independent double-precision round-to-nearest-even reference, and
// bit-for-bit agreement with the host sink's casts (loader/cast.h), exhaustively for
// 16-bit inputs and over tens of millions of F32 inputs.
#include "cuda/cast_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>

#include "loader/cast.h"

namespace shardload::cuda {
namespace {

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t ToBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

bool IsNanF32(uint32_t b) { return (b & 0x7FFFFFFFu) > 0x7F800000u; }
bool IsNanF16(uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0; }
bool IsNanBf16(uint16_t h) { return (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu) != 0; }

// Value of a binary16 pattern, computed independently with ldexp.
double F16Value(uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  if (e == 0x1F) return m ? NAN : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  return sign * std::ldexp(static_cast<double>(m + 1024), e - 25);
}

// Reference narrowing by exhaustive neighbourhood: the finite pattern of the same sign
// nearest to x (ties to the even pattern), or infinity beyond the midpoint above max.
uint16_t ReferenceF16(float x) {
  const uint32_t b = ToBits(x);
  const uint16_t sign = (b >> 16) & 0x8000;
  const double a = std::fabs(static_cast<double>(x));
  if (std::isinf(x)) return sign | 0x7C00;
  if (a >= 65520.0) return sign | 0x7C00;  // halfway between 65504 and 2^16 rounds to even (inf)
  // Binary search the largest finite pattern ≤ a.
  uint16_t lo = 0;
  uint16_t hi = 0x7BFF;
  while (lo < hi) {
    const uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
    if (F16Value(mid) <= a) {
      lo = mid;
    } else {
      hi = static_cast<uint16_t>(mid - 1);
    }
  }
  if (F16Value(lo) == a || lo == 0x7BFF) return sign | lo;
  const double below = a - F16Value(lo);
  const double above = F16Value(static_cast<uint16_t>(lo + 1)) - a;
  if (below < above) return sign | lo;
  if (above < below) return sign | static_cast<uint16_t>(lo + 1);
  return sign | ((lo & 1) ? static_cast<uint16_t>(lo + 1) : lo);
}

// Reference bf16 narrowing: compare the two candidates around x in double.
uint16_t ReferenceBf16(float x) {
  const uint32_t b = ToBits(x);
  const uint16_t truncated = static_cast<uint16_t>(b >> 16);
  if (std::isinf(x)) return truncated;
  const double a = static_cast<double>(x);
  const double down = FromBits(static_cast<uint32_t>(truncated) << 16);
  const uint16_t next = static_cast<uint16_t>(truncated + 1);
  const double up = ((next & 0x7F80) == 0x7F80) ? std::copysign(INFINITY, a)
                                                 : static_cast<double>(FromBits(static_cast<uint32_t>(next) << 16));
  // Above the largest finite bf16, "up" is infinity: round to it past the midpoint
  // (the midpoint is 0x7F7F8000 in F32 bits; exactly there, ties to even = inf).
  if (std::isinf(up)) {
    return (b & 0x7FFFFFFFu) >= 0x7F7F8000u ? next : truncated;
  }
  const double dd = std::fabs(a - down);
  const double du = std::fabs(up - a);
  if (dd < du) return truncated;
  if (du < dd) return next;
  return (truncated & 1) ? next : truncated;
}

TEST(CudaCastMathTest, KnownPatterns) {
  EXPECT_EQ(F32BitsToF16Bits(0x3F800000u), 0x3C00);  // 1.0
  EXPECT_EQ(F32BitsToF16Bits(0xC0000000u), 0xC000);  // -2.0
  EXPECT_EQ(F32BitsToF16Bits(0x477FE000u), 0x7BFF);  // 65504, the largest half
  EXPECT_EQ(F32BitsToF16Bits(0x477FF000u), 0x7C00);  // 65520: tie to even → inf
  EXPECT_EQ(F32BitsToF16Bits(0x477FEFFFu), 0x7BFF);  // just below the tie
  EXPECT_EQ(F32BitsToF16Bits(0x33800000u), 0x0001);  // 2^-24, smallest subnormal
  EXPECT_EQ(F32BitsToF16Bits(0x33000000u), 0x0000);  // 2^-25: tie → even (0)
  EXPECT_EQ(F32BitsToF16Bits(0x33000001u), 0x0001);  // just above the tie
  EXPECT_EQ(F32BitsToF16Bits(0x33C00000u), 0x0002);  // 1.5 × 2^-24: tie → even (2)
  EXPECT_EQ(F32BitsToF16Bits(0x387FC000u), 0x03FF);  // the largest subnormal, exactly
  EXPECT_EQ(F32BitsToF16Bits(0x387FE000u), 0x0400);  // 1023.5 units: tie → even, the smallest normal
  EXPECT_EQ(F32BitsToF16Bits(0x387FDFFFu), 0x03FF);  // just below the tie
  EXPECT_EQ(F32BitsToF16Bits(0x387FF000u), 0x0400);  // above the tie
  EXPECT_EQ(F32BitsToF16Bits(0x3F801000u), 0x3C00);  // 1 + 2^-11: tie → even (1.0)
  EXPECT_EQ(F32BitsToF16Bits(0x3F803000u), 0x3C02);  // 1 + 3·2^-11: tie → even (up)
  EXPECT_EQ(F32BitsToF16Bits(0x7F800000u), 0x7C00);
  EXPECT_EQ(F32BitsToF16Bits(0xFF800000u), 0xFC00);
  EXPECT_EQ(F32BitsToF16Bits(0x80000000u), 0x8000);
  EXPECT_EQ(F32BitsToF16Bits(0x7FC00000u), 0x7E00);  // quiet NaN
  EXPECT_EQ(F32BitsToF16Bits(0xFF800001u), 0xFE00);  // signalling NaN: quieted, sign kept
  EXPECT_EQ(F32BitsToF16Bits(0x7FA00000u), 0x7F00);  // payload top bits kept

  EXPECT_EQ(F32BitsToBf16Bits(0x3F808000u), 0x3F80);  // tie → even (down)
  EXPECT_EQ(F32BitsToBf16Bits(0x3F818000u), 0x3F82);  // tie → even (up)
  EXPECT_EQ(F32BitsToBf16Bits(0x3F808001u), 0x3F81);
  EXPECT_EQ(F32BitsToBf16Bits(0x7F7FFFFFu), 0x7F80);  // max float rounds to inf
  EXPECT_EQ(F32BitsToBf16Bits(0x00000001u), 0x0000);  // f32 subnormal → 0
  EXPECT_EQ(F32BitsToBf16Bits(0x80010000u), 0x8001);  // bf16 subnormal kept
  EXPECT_EQ(F32BitsToBf16Bits(0x7F800001u), 0x7FC0);  // sNaN quieted (would round to inf)
  EXPECT_EQ(F32BitsToBf16Bits(0xFFFFFFFFu), 0xFFFF);

  EXPECT_EQ(F16BitsToF32Bits(0x3C00), 0x3F800000u);
  EXPECT_EQ(F16BitsToF32Bits(0x0001), 0x33800000u);  // 2^-24
  EXPECT_EQ(F16BitsToF32Bits(0x03FF), 0x387FC000u);  // largest subnormal
  EXPECT_EQ(F16BitsToF32Bits(0x8000), 0x80000000u);
  EXPECT_EQ(F16BitsToF32Bits(0xFC00), 0xFF800000u);
  EXPECT_EQ(F16BitsToF32Bits(0x7E01), 0x7FC02000u);  // NaN payload kept bit for bit
  EXPECT_EQ(Bf16BitsToF32Bits(0x4049), 0x40490000u);
  EXPECT_EQ(F16BitsToBf16Bits(0x3C00), 0x3F80);
  EXPECT_EQ(Bf16BitsToF16Bits(0x3F80), 0x3C00);
  EXPECT_EQ(Bf16BitsToF16Bits(0x4780), 0x7C00);  // 65536 → inf in half
}

TEST(CudaCastMathTest, SixteenBitInputsExhaustivelyMatchHostCastAndRoundTrip) {
  for (uint32_t i = 0; i < 0x10000; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    // Widening agrees with the host cast and with the ldexp value.
    const uint32_t f = F16BitsToF32Bits(h);
    ASSERT_EQ(f, ToBits(F16BitsToF32(h))) << std::hex << "f16 0x" << i;
    if (!IsNanF16(h)) {
      ASSERT_EQ(static_cast<double>(FromBits(f)), F16Value(h)) << std::hex << "f16 0x" << i;
    }
    ASSERT_EQ(Bf16BitsToF32Bits(h), ToBits(BF16BitsToF32(h))) << std::hex << "bf16 0x" << i;
    // Narrowing back is the identity (NaNs stay NaN of the same sign).
    if (IsNanF16(h)) {
      ASSERT_TRUE(IsNanF16(F32BitsToF16Bits(f)));
      ASSERT_EQ(F32BitsToF16Bits(f) & 0x8000, h & 0x8000);
    } else {
      ASSERT_EQ(F32BitsToF16Bits(f), h) << std::hex << "f16 0x" << i;
    }
    if (IsNanBf16(h)) {
      ASSERT_TRUE(IsNanBf16(F32BitsToBf16Bits(Bf16BitsToF32Bits(h))));
    } else {
      ASSERT_EQ(F32BitsToBf16Bits(Bf16BitsToF32Bits(h)), h) << std::hex << "bf16 0x" << i;
    }
    // Cross conversions equal the two-step host path (one rounding, exact widening).
    ASSERT_EQ(F16BitsToBf16Bits(h), F32ToBF16Bits(F16BitsToF32(h))) << std::hex << "f16 0x" << i;
    ASSERT_EQ(Bf16BitsToF16Bits(h), F32ToF16Bits(BF16BitsToF32(h))) << std::hex << "bf16 0x" << i;
  }
}

// Every F32 value near a binary16 or bfloat16 rounding boundary: for each 16-bit
// pattern, the F32 values at the midpoint to its neighbour and one ulp either side.
TEST(CudaCastMathTest, BoundaryNeighbourhoodsMatchReferences) {
  for (uint32_t i = 0; i < 0x10000; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    if (IsNanF16(h) || (h & 0x7FFF) >= 0x7C00) continue;
    const double mid = (F16Value(h) + F16Value(static_cast<uint16_t>(h + 1))) / 2;
    if ((h & 0x7FFF) == 0x7BFF) continue;  // neighbour is inf: covered by KnownPatterns
    const uint32_t m = ToBits(static_cast<float>(mid));
    for (int d = -2; d <= 2; ++d) {
      const uint32_t x = m + d;
      ASSERT_EQ(F32BitsToF16Bits(x), ReferenceF16(FromBits(x))) << std::hex << "f32 0x" << x;
      ASSERT_EQ(F32BitsToF16Bits(x), F32ToF16Bits(FromBits(x))) << std::hex << "f32 0x" << x;
    }
    const uint32_t b = (static_cast<uint32_t>(h) << 16) | 0x8000u;  // bf16 midpoints
    for (int d = -2; d <= 2; ++d) {
      const uint32_t x = b + d;
      if (IsNanF32(x) || (x & 0x7FFFFFFFu) >= 0x7F800000u) continue;
      ASSERT_EQ(F32BitsToBf16Bits(x), ReferenceBf16(FromBits(x))) << std::hex << "f32 0x" << x;
      ASSERT_EQ(F32BitsToBf16Bits(x), F32ToBF16Bits(FromBits(x))) << std::hex << "f32 0x" << x;
    }
  }
}

TEST(CudaCastMathTest, StridedF32SweepMatchesHostCast) {
  // ~33 million inputs spread over every exponent, plus random ones.
  for (uint64_t x = 0; x <= 0xFFFFFFFFull; x += 127) {
    const uint32_t v = static_cast<uint32_t>(x);
    const uint16_t h = F32BitsToF16Bits(v);
    const uint16_t b = F32BitsToBf16Bits(v);
    if (IsNanF32(v)) {
      ASSERT_TRUE(IsNanF16(h)) << std::hex << v;
      ASSERT_TRUE(IsNanBf16(b)) << std::hex << v;
      ASSERT_EQ(h & 0x8000, (v >> 16) & 0x8000);
      ASSERT_EQ(b & 0x8000, (v >> 16) & 0x8000);
    }
    ASSERT_EQ(h, F32ToF16Bits(FromBits(v))) << std::hex << "f32 0x" << v;
    ASSERT_EQ(b, F32ToBF16Bits(FromBits(v))) << std::hex << "f32 0x" << v;
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t v = rng();
    if (IsNanF32(v)) continue;
    ASSERT_EQ(F32BitsToF16Bits(v), ReferenceF16(FromBits(v))) << std::hex << "f32 0x" << v;
    ASSERT_EQ(F32BitsToBf16Bits(v), ReferenceBf16(FromBits(v))) << std::hex << "f32 0x" << v;
  }
}

}  // namespace
}  // namespace shardload::cuda
