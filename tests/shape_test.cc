#include "format/shape.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include "format/dtype.h"

namespace shardload {
namespace {

std::vector<uint64_t> Iota(size_t n, uint64_t start) {
  std::vector<uint64_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

bool DataIsInside(const Shape& s) {
  const auto* p = reinterpret_cast<const char*>(s.data());
  const auto* self = reinterpret_cast<const char*>(&s);
  return p >= self && p < self + sizeof(Shape);
}

TEST(ShapeTest, SmallRanksStayInsideTheObject) {
  Shape scalar;
  EXPECT_TRUE(scalar.empty());
  EXPECT_EQ(scalar.size(), 0u);
  EXPECT_EQ(scalar.begin(), scalar.end());
  for (size_t rank = 0; rank <= Shape::kInlineDims; ++rank) {
    Shape s(Iota(rank, 7));
    EXPECT_EQ(s.size(), rank);
    EXPECT_EQ(s.capacity(), Shape::kInlineDims);
    EXPECT_TRUE(DataIsInside(s)) << rank;
    EXPECT_EQ(s.ToVector(), Iota(rank, 7));
  }
}

TEST(ShapeTest, LargeRanksMoveToTheHeapAndKeepTheirValues) {
  Shape s;
  for (uint64_t d = 0; d < 1000; ++d) {
    s.push_back(d * 3);
    ASSERT_EQ(s.size(), d + 1);
    ASSERT_EQ(s.back(), d * 3);
  }
  EXPECT_FALSE(DataIsInside(s));
  EXPECT_GE(s.capacity(), 1000u);
  for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(s[i], i * 3) << i;
  // Crossing the inline limit one push at a time keeps the earlier dimensions.
  Shape t = {1, 2, 3, 4};
  t.push_back(5);
  EXPECT_EQ(t, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_FALSE(DataIsInside(t));
}

TEST(ShapeTest, CopiesAreDeepInBothStorages) {
  for (size_t rank : {size_t{2}, size_t{9}}) {
    Shape a(Iota(rank, 1));
    Shape b = a;
    EXPECT_EQ(a, b);
    EXPECT_NE(a.data(), b.data());
    b[0] = 99;
    EXPECT_EQ(a[0], 1u) << rank;
    EXPECT_NE(a, b);
    Shape c = {5};
    c = a;  // heap or inline into inline
    EXPECT_EQ(c, a);
    Shape d(Iota(20, 0));
    d = a;  // into a heap shape
    EXPECT_EQ(d, a);
    d = d;  // self-assignment keeps the value
    EXPECT_EQ(d, a);
  }
}

TEST(ShapeTest, MovesStealTheHeapArrayAndLeaveTheSourceEmpty) {
  Shape big(Iota(10, 0));
  const uint64_t* heap = big.data();
  Shape moved = std::move(big);
  EXPECT_EQ(moved.data(), heap);  // no copy of a heap array
  EXPECT_EQ(moved, Shape(Iota(10, 0)));
  EXPECT_TRUE(big.empty());  // NOLINT(bugprone-use-after-move): the contract says empty
  big.push_back(4);          // and usable
  EXPECT_EQ(big, (Shape{4}));

  Shape small = {3, 4};
  Shape target(Iota(12, 0));  // its heap array is freed by the assignment (ASan checks)
  target = std::move(small);
  EXPECT_EQ(target, (Shape{3, 4}));
  EXPECT_TRUE(DataIsInside(target));
  EXPECT_TRUE(small.empty());  // NOLINT(bugprone-use-after-move)

  std::vector<Shape> many;
  for (size_t i = 0; i < 100; ++i) many.push_back(Shape(Iota(i % 7, i)));  // reallocations move
  for (size_t i = 0; i < 100; ++i) EXPECT_EQ(many[i], Shape(Iota(i % 7, i))) << i;
}

TEST(ShapeTest, ComparesWithVectorsAndConvertsToSpan) {
  Shape s = {2, 3};
  EXPECT_TRUE(s == (std::vector<uint64_t>{2, 3}));
  EXPECT_TRUE((std::vector<uint64_t>{2, 3}) == s);
  EXPECT_FALSE(s == (std::vector<uint64_t>{2, 3, 1}));
  EXPECT_FALSE(s == (std::vector<uint64_t>{3, 2}));
  EXPECT_NE(Shape{}, Shape{1});
  std::span<const uint64_t> dims = s;
  EXPECT_EQ(dims.size(), 2u);
  EXPECT_EQ(dims.data(), s.data());
  EXPECT_EQ(ShapeToString(s), "[2, 3]");
  EXPECT_EQ(*TensorByteSize(Dtype::kF32, s), 24u);
  s.clear();
  EXPECT_EQ(ShapeToString(s), "[]");
  s.assign({7, 8, 9, 10, 11, 12});
  EXPECT_EQ(ShapeToString(s), "[7, 8, 9, 10, 11, 12]");
  s = {1};
  EXPECT_EQ(s, (Shape{1}));
}

TEST(ShapeTest, AbsurdRanksThrowLengthErrorNotCorruption) {
  Shape s = {1, 2};
  EXPECT_THROW(s.reserve(Shape::max_size() + 1), std::length_error);
  EXPECT_EQ(s, (Shape{1, 2}));  // unchanged
}

}  // namespace
}  // namespace shardload
