// format/shape.h — a tensor shape that keeps small ranks inline.
//
// Provides `Shape`, the list of dimension sizes used by every tensor record in
// shardload (headers, stored tensors, load targets, loaded tensors). It behaves like
// `std::vector<uint64_t>` for the operations shapes need, but ranks up to
// Shape::kInlineDims live inside the object, so parsing a header of 100k tensors does
// not allocate (and later free) 100k tiny heap blocks.
//
//   Shape s = {4096, 11008};                 // inline, no allocation
//   s.push_back(2);                          // still inline (rank 3)
//   uint64_t rows = s[0];
//   std::span<const uint64_t> dims = s;      // for TensorByteSize, ShapeToString
//   Shape from_vector = std::vector<uint64_t>{2, 3};
#ifndef SHARDLOAD_FORMAT_SHAPE_H_
#define SHARDLOAD_FORMAT_SHAPE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <span>
#include <stdexcept>
#include <vector>

namespace shardload {

// Shape: dimension sizes, outermost first; empty for a scalar. Value type (copies are
// deep). Ranks up to kInlineDims are stored in the object; larger ranks use one heap
// array that grows by doubling. Element pointers (data(), begin(), iterators) are
// invalidated by any change of size beyond the capacity and — unlike std::vector — by
// moving or swapping the Shape itself while the dimensions are inline, so never keep
// data() of a Shape whose owner may move (e.g. an element of a growing vector).
// Allocation failures throw std::bad_alloc, ranks past max_size() std::length_error.
// Thread safety: like std::vector (const methods may run concurrently).
class Shape {
 public:
  using value_type = uint64_t;
  using size_type = size_t;
  using reference = uint64_t&;
  using const_reference = const uint64_t&;
  using iterator = uint64_t*;
  using const_iterator = const uint64_t*;

  // kInlineDims: the largest rank stored without a heap allocation (covers 4-d
  // convolution weights, the largest common rank).
  static constexpr size_t kInlineDims = 4;

  Shape() noexcept : inline_{} {}
  Shape(std::initializer_list<uint64_t> dims) : Shape() { assign(dims.begin(), dims.end()); }
  // Shape(vector): implicit, so code and tests that build shapes as vectors keep working.
  Shape(const std::vector<uint64_t>& dims) : Shape() {  // NOLINT(google-explicit-constructor)
    assign(dims.data(), dims.data() + dims.size());
  }
  explicit Shape(std::span<const uint64_t> dims) : Shape() {
    assign(dims.data(), dims.data() + dims.size());
  }
  Shape(const Shape& other) : Shape() { assign(other.begin(), other.end()); }
  Shape(Shape&& other) noexcept : Shape() { StealFrom(other); }
  Shape& operator=(const Shape& other) {
    if (this != &other) assign(other.begin(), other.end());
    return *this;
  }
  Shape& operator=(Shape&& other) noexcept {
    if (this != &other) {
      Release();
      StealFrom(other);
    }
    return *this;
  }
  Shape& operator=(std::initializer_list<uint64_t> dims) {
    assign(dims.begin(), dims.end());
    return *this;
  }
  ~Shape() { Release(); }

  size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  size_t capacity() const noexcept { return capacity_; }
  static constexpr size_t max_size() noexcept { return SIZE_MAX / sizeof(uint64_t) / 2; }

  uint64_t* data() noexcept { return on_heap() ? heap_ : inline_; }
  const uint64_t* data() const noexcept { return on_heap() ? heap_ : inline_; }
  iterator begin() noexcept { return data(); }
  iterator end() noexcept { return data() + size_; }
  const_iterator begin() const noexcept { return data(); }
  const_iterator end() const noexcept { return data() + size_; }
  // operator[], back: unchecked, like std::vector (the index must be < size()).
  uint64_t& operator[](size_t i) noexcept { return data()[i]; }
  const uint64_t& operator[](size_t i) const noexcept { return data()[i]; }
  uint64_t& back() noexcept { return data()[size_ - 1]; }
  const uint64_t& back() const noexcept { return data()[size_ - 1]; }

  operator std::span<const uint64_t>() const noexcept {  // NOLINT(google-explicit-constructor)
    return {data(), size_};
  }
  std::vector<uint64_t> ToVector() const { return {begin(), end()}; }

  void clear() noexcept { size_ = 0; }
  void reserve(size_t n) {
    if (n > capacity_) Grow(n);
  }
  void push_back(uint64_t d) {
    if (size_ == capacity_) Grow(size_ + 1);
    data()[size_++] = d;
  }
  // assign: replace the dimensions with [first, last), which may not point into *this.
  void assign(const uint64_t* first, const uint64_t* last) {
    const size_t n = static_cast<size_t>(last - first);
    size_ = 0;
    reserve(n);
    std::copy(first, last, data());
    size_ = n;
  }
  void assign(std::initializer_list<uint64_t> dims) { assign(dims.begin(), dims.end()); }

  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  bool on_heap() const noexcept { return capacity_ > kInlineDims; }
  // Grow: capacity at least `n` (doubling), keeping the first size_ dimensions.
  void Grow(size_t n) {
    if (n > max_size()) throw std::length_error("shardload::Shape: rank too large");
    const size_t cap = std::max(n, std::min(max_size(), 2 * capacity_));
    uint64_t* fresh = new uint64_t[cap];
    std::copy(begin(), end(), fresh);
    Release();
    heap_ = fresh;
    capacity_ = cap;
  }
  // Release: free the heap array (if any) and return to inline storage; keeps size_.
  void Release() noexcept {
    if (on_heap()) delete[] heap_;
    capacity_ = kInlineDims;
  }
  // StealFrom: take `other`'s dimensions (this must hold no heap array); leaves
  // `other` empty and inline.
  void StealFrom(Shape& other) noexcept {
    if (other.on_heap()) {
      heap_ = other.heap_;
      capacity_ = other.capacity_;
      other.capacity_ = kInlineDims;
    } else {
      std::copy(other.inline_, other.inline_ + other.size_, inline_);
    }
    size_ = other.size_;
    other.size_ = 0;
  }

  size_t size_ = 0;
  size_t capacity_ = kInlineDims;
  union {
    uint64_t inline_[kInlineDims];
    uint64_t* heap_;
  };
};

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_SHAPE_H_
