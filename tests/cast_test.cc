// tests/cast_test.cc — F32/F16/BF16 conversions: exact bit patterns, ties, NaN, inf,
// subnormals, and exhaustive round trips.
#include "loader/cast.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace shardload {
namespace {

float F(uint32_t bits) { return std::bit_cast<float>(bits); }
uint32_t Bits(float f) { return std::bit_cast<uint32_t>(f); }

TEST(CastTest, F32ToF16KnownPatterns) {
  EXPECT_EQ(F32ToF16Bits(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16Bits(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16Bits(0.0f), 0x0000);
  EXPECT_EQ(F32ToF16Bits(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16Bits(65504.0f), 0x7bff);            // largest finite
  EXPECT_EQ(F32ToF16Bits(65519.99f), 0x7bff);
  EXPECT_EQ(F32ToF16Bits(65520.0f), 0x7c00);            // tie with an odd mantissa: to inf
  EXPECT_EQ(F32ToF16Bits(1e10f), 0x7c00);
  EXPECT_EQ(F32ToF16Bits(-1e10f), 0xfc00);
  EXPECT_EQ(F32ToF16Bits(INFINITY), 0x7c00);
  EXPECT_EQ(F32ToF16Bits(-INFINITY), 0xfc00);
  EXPECT_EQ(F32ToF16Bits(F(0x7fc00000)), 0x7e00);       // quiet NaN
  EXPECT_EQ(F32ToF16Bits(F(0xffc00000)), 0xfe00);       // sign kept
  uint16_t snan = F32ToF16Bits(F(0x7f800001));          // signalling NaN, low payload
  EXPECT_EQ(snan & 0x7c00, 0x7c00);
  EXPECT_NE(snan & 0x03ff, 0);                          // still NaN, not inf
  // Ties to even in the normal range.
  EXPECT_EQ(F32ToF16Bits(F(0x3f801000)), 0x3c00);       // 1 + 2^-11: tie, even is down
  EXPECT_EQ(F32ToF16Bits(F(0x3f803000)), 0x3c02);       // 1 + 3·2^-11: tie, even is up
  EXPECT_EQ(F32ToF16Bits(F(0x3f801001)), 0x3c01);       // just above the tie
  EXPECT_EQ(F32ToF16Bits(F(0x3f800fff)), 0x3c00);       // just below the tie
  // Subnormal results.
  EXPECT_EQ(F32ToF16Bits(std::ldexp(1.0f, -24)), 0x0001);   // smallest subnormal
  EXPECT_EQ(F32ToF16Bits(std::ldexp(1.0f, -25)), 0x0000);   // tie: to even zero
  EXPECT_EQ(F32ToF16Bits(std::ldexp(1.5f, -25)), 0x0001);   // above the tie
  EXPECT_EQ(F32ToF16Bits(std::ldexp(3.0f, -25)), 0x0002);   // 1.5 ulp: tie, to even 2
  EXPECT_EQ(F32ToF16Bits(std::ldexp(5.0f, -25)), 0x0002);   // 2.5 ulp: tie, to even 2
  EXPECT_EQ(F32ToF16Bits(std::ldexp(1023.0f, -24)), 0x03ff);  // largest subnormal
  EXPECT_EQ(F32ToF16Bits(std::ldexp(1023.5f, -24)), 0x0400);  // tie rounds into the normals
  EXPECT_EQ(F32ToF16Bits(std::ldexp(1.0f, -14)), 0x0400);     // smallest normal
  EXPECT_EQ(F32ToF16Bits(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(F32ToF16Bits(F(0x00000001)), 0x0000);             // F32 subnormal → 0
  EXPECT_EQ(F32ToF16Bits(F(0x80000001)), 0x8000);
}

TEST(CastTest, F32ToBF16KnownPatterns) {
  EXPECT_EQ(F32ToBF16Bits(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBF16Bits(-0.0f), 0x8000);
  EXPECT_EQ(F32ToBF16Bits(F(0x3f808000)), 0x3f80);  // tie, even is down
  EXPECT_EQ(F32ToBF16Bits(F(0x3f818000)), 0x3f82);  // tie, even is up
  EXPECT_EQ(F32ToBF16Bits(F(0x3f808001)), 0x3f81);
  EXPECT_EQ(F32ToBF16Bits(F(0x7f7fffff)), 0x7f80);  // largest finite rounds to inf
  EXPECT_EQ(F32ToBF16Bits(INFINITY), 0x7f80);
  EXPECT_EQ(F32ToBF16Bits(-INFINITY), 0xff80);
  EXPECT_EQ(F32ToBF16Bits(F(0x7f800001)), 0x7fc0);  // signalling NaN → quiet NaN
  EXPECT_EQ(F32ToBF16Bits(F(0xffc00000)), 0xffc0);
  EXPECT_EQ(F32ToBF16Bits(F(0x00000001)), 0x0000);  // subnormals round like the rest
  EXPECT_EQ(F32ToBF16Bits(F(0x00008000)), 0x0000);
  EXPECT_EQ(F32ToBF16Bits(F(0x00018000)), 0x0002);
  EXPECT_EQ(F32ToBF16Bits(F(0x00010001)), 0x0001);
}

TEST(CastTest, WideningIsExact) {
  EXPECT_EQ(Bits(F16BitsToF32(0x3c00)), 0x3f800000u);
  EXPECT_EQ(Bits(F16BitsToF32(0x0001)), 0x33800000u);   // 2^-24
  EXPECT_EQ(Bits(F16BitsToF32(0x03ff)), 0x387fc000u);   // largest subnormal
  EXPECT_EQ(Bits(F16BitsToF32(0x0400)), 0x38800000u);   // 2^-14
  EXPECT_EQ(Bits(F16BitsToF32(0x7bff)), 0x477fe000u);   // 65504
  EXPECT_EQ(Bits(F16BitsToF32(0x7c00)), 0x7f800000u);
  EXPECT_EQ(Bits(F16BitsToF32(0xfc00)), 0xff800000u);
  EXPECT_EQ(Bits(F16BitsToF32(0x7e01)), 0x7fc02000u);   // NaN payload kept
  EXPECT_EQ(Bits(F16BitsToF32(0x8000)), 0x80000000u);
  EXPECT_EQ(Bits(BF16BitsToF32(0x3f80)), 0x3f800000u);
  EXPECT_EQ(Bits(BF16BitsToF32(0x0001)), 0x00010000u);
  EXPECT_EQ(Bits(BF16BitsToF32(0xff81)), 0xff810000u);
}

TEST(CastTest, EveryHalfAndBfloatRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    uint16_t back = F32ToF16Bits(F16BitsToF32(static_cast<uint16_t>(h)));
    if (nan) {
      ASSERT_TRUE((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0) << h;
      ASSERT_EQ(back, h | 0x0200) << h;  // quieted, payload and sign kept
    } else {
      ASSERT_EQ(back, h) << h;
    }
    bool bnan = (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0;
    uint16_t bback = F32ToBF16Bits(BF16BitsToF32(static_cast<uint16_t>(h)));
    ASSERT_EQ(bback, bnan ? (h | 0x40) : h) << h;
  }
}

#ifdef __FLT16_MAX__
TEST(CastTest, F32ToF16AgreesWithTheCompilerOnRandomValues) {
  std::mt19937 gen(42);
  for (int i = 0; i < 2000000; ++i) {
    uint32_t bits = gen();
    float f = F(bits);
    if (std::isnan(f)) continue;
    _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    ASSERT_EQ(F32ToF16Bits(f), want) << std::hex << bits;
  }
}
#endif

TEST(CastTest, CastElementsUnalignedAndBetweenHalfTypes) {
  std::vector<float> in = {1.0f, -3.5f, 65504.0f, 1e-7f, INFINITY, 0.1f};
  std::vector<std::byte> src(1 + in.size() * 4), mid(3 + in.size() * 2), out(1 + in.size() * 2);
  std::memcpy(src.data() + 1, in.data(), in.size() * 4);  // deliberately misaligned
  ASSERT_TRUE(CastElements(Dtype::kF32, Dtype::kF16, src.data() + 1, in.size(), mid.data() + 3).ok());
  for (size_t i = 0; i < in.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, mid.data() + 3 + 2 * i, 2);
    EXPECT_EQ(h, F32ToF16Bits(in[i])) << i;
  }
  // F16 → BF16 goes through F32 exactly: one rounding only.
  ASSERT_TRUE(CastElements(Dtype::kF16, Dtype::kBF16, mid.data() + 3, in.size(), out.data() + 1).ok());
  for (size_t i = 0; i < in.size(); ++i) {
    uint16_t h, b;
    std::memcpy(&h, mid.data() + 3 + 2 * i, 2);
    std::memcpy(&b, out.data() + 1 + 2 * i, 2);
    EXPECT_EQ(b, F32ToBF16Bits(F16BitsToF32(h))) << i;
  }
}

// CastElements over every 16-bit pattern and random F32 bits, for each of the six
// pairs, equals the element-wise conversion through F32 (the per-pair loops).
TEST(CastTest, CastElementsEqualsElementwiseForEveryPair) {
  std::vector<uint16_t> halves(0x10000);
  for (uint32_t h = 0; h < 0x10000; ++h) halves[h] = static_cast<uint16_t>(h);
  std::vector<uint32_t> singles(0x10000);
  std::mt19937 rng(7);
  for (uint32_t& x : singles) x = rng();
  singles[0] = 0x7fc00001u;  // a NaN with a payload
  auto as_f32 = [](Dtype d, const std::byte* p) {
    uint16_t h;
    uint32_t x;
    switch (d) {
      case Dtype::kF16: std::memcpy(&h, p, 2); return F16BitsToF32(h);
      case Dtype::kBF16: std::memcpy(&h, p, 2); return BF16BitsToF32(h);
      default: std::memcpy(&x, p, 4); return F(x);
    }
  };
  const Dtype kinds[] = {Dtype::kF32, Dtype::kF16, Dtype::kBF16};
  for (Dtype src : kinds) {
    for (Dtype dst : kinds) {
      if (src == dst) continue;
      const auto* in = src == Dtype::kF32 ? reinterpret_cast<const std::byte*>(singles.data())
                                          : reinterpret_cast<const std::byte*>(halves.data());
      const size_t in_size = src == Dtype::kF32 ? 4 : 2, out_size = dst == Dtype::kF32 ? 4 : 2;
      std::vector<std::byte> out(0x10000 * out_size);
      ASSERT_TRUE(CastElements(src, dst, in, 0x10000, out.data()).ok());
      for (size_t i = 0; i < 0x10000; ++i) {
        const float v = as_f32(src, in + i * in_size);
        uint32_t want = 0, got = 0;
        if (dst == Dtype::kF32) {
          want = Bits(v);
        } else {
          want = dst == Dtype::kF16 ? F32ToF16Bits(v) : F32ToBF16Bits(v);
        }
        std::memcpy(&got, out.data() + i * out_size, out_size);
        ASSERT_EQ(got, want) << DtypeName(src) << " -> " << DtypeName(dst) << " element " << i;
      }
    }
  }
}

TEST(CastTest, UnsupportedCasts) {
  EXPECT_TRUE(CastSupported(Dtype::kI32, Dtype::kI32));
  EXPECT_TRUE(CastSupported(Dtype::kBF16, Dtype::kF16));
  EXPECT_FALSE(CastSupported(Dtype::kF32, Dtype::kF64));
  EXPECT_FALSE(CastSupported(Dtype::kF8_E4M3, Dtype::kF16));
  std::byte b[8];
  Status s = CastElements(Dtype::kF32, Dtype::kI8, b, 1, b + 4);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "cannot cast F32 to I8");
}

}  // namespace
}  // namespace shardload
