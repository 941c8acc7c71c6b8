#include "format/dtype.h"

#include <gtest/gtest.h>

namespace shardload {
namespace {

TEST(DtypeTest, AllNamesRoundTripWithBitWidths) {
  const std::pair<const char*, int> expected[] = {
      {"BOOL", 8},        {"U8", 8},           {"I8", 8},          {"I16", 16},
      {"U16", 16},        {"F16", 16},         {"BF16", 16},       {"I32", 32},
      {"U32", 32},        {"F32", 32},         {"F64", 64},        {"I64", 64},
      {"U64", 64},        {"C64", 64},         {"F8_E5M2", 8},     {"F8_E4M3", 8},
      {"F8_E8M0", 8},     {"F8_E4M3FNUZ", 8},  {"F8_E5M2FNUZ", 8}, {"F4", 4},
      {"F6_E2M3", 6},     {"F6_E3M2", 6},
  };
  ASSERT_EQ(std::size(expected), static_cast<size_t>(kDtypeCount));
  for (const auto& [name, bits] : expected) {
    Result<Dtype> d = DtypeFromName(name);
    ASSERT_TRUE(d.ok()) << name;
    EXPECT_EQ(DtypeName(*d), name);
    EXPECT_EQ(DtypeBits(*d), bits) << name;
  }
}

TEST(DtypeTest, NamesAreCaseSensitiveAndExact) {
  for (const char* bad : {"f32", "float32", "F128", "E8M0", "FP4", "", "F32 "}) {
    Result<Dtype> d = DtypeFromName(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(d.status().message(), std::string("unknown dtype '") + bad + "'");
  }
}

TEST(DtypeTest, ByteSizes) {
  EXPECT_EQ(*TensorByteSize(Dtype::kF32, std::vector<uint64_t>{}), 4u);
  EXPECT_EQ(*TensorByteSize(Dtype::kC64, std::vector<uint64_t>{2}), 16u);
  EXPECT_EQ(*TensorByteSize(Dtype::kF4, std::vector<uint64_t>{2}), 1u);
  EXPECT_EQ(*TensorByteSize(Dtype::kF6_E2M3, std::vector<uint64_t>{4}), 3u);
  EXPECT_EQ(*TensorByteSize(Dtype::kBF16, std::vector<uint64_t>{2, 0}), 0u);
}

TEST(DtypeTest, SubByteMustEndOnByteBoundary) {
  Result<uint64_t> r = TensorByteSize(Dtype::kF4, std::vector<uint64_t>{3});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "F4[3] is 12 bits, which does not end on a byte boundary");
}

TEST(DtypeTest, OverflowIsAnErrorNotAWrap) {
  // The safetensors-cpp PoCs: both wrap to small values with unchecked arithmetic.
  Result<uint64_t> a = TensorByteSize(Dtype::kF32, std::vector<uint64_t>{4194305, 4194305, 211106198978564});
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kOutOfRange);
  Result<uint64_t> b = TensorByteSize(Dtype::kI32, std::vector<uint64_t>{4294967296, 4294967296});
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(), "overflow computing element count of shape [4294967296, 4294967296]");
  Result<uint64_t> c = TensorByteSize(Dtype::kI32, std::vector<uint64_t>{2, 9223372036854775807});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "overflow computing byte size of I32[2, 9223372036854775807]");
}

}  // namespace
}  // namespace shardload
