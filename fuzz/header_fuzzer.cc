// fuzz/header_fuzzer.cc — libFuzzer target over the header parser (format/header.h).
//
// Beyond "no crash, no sanitizer report", it checks the parser's promises on every
// accepted input and traps when one is broken:
//  - ParseBuffer and ParseHeaderLength + ParseHeader agree (same result or same error);
//  - data_start == 8 + header_length and data_start + data_size == input size;
//  - tensors are in offset order and tile [0, data_size) with no hole or overlap;
//  - every tensor's size equals TensorByteSize(dtype, shape);
//  - by_name / Find map every name to its entry, and nothing else.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>

#include "format/dtype.h"
#include "format/header.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shardload;
  std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data), size);
  Result<Header> whole = ParseBuffer(file, "fuzz.safetensors");

  // The two-step path a file reader takes must agree with the in-memory one.
  Result<uint64_t> n = ParseHeaderLength(file.first(size < 8 ? size : 8), size,
                                         "fuzz.safetensors");
  if (!n.ok()) {
    Check(!whole.ok() && whole.status() == n.status());
    return 0;
  }
  Check(*n <= size - 8);
  std::string_view json(reinterpret_cast<const char*>(data) + 8, static_cast<size_t>(*n));
  Result<Header> stepwise = ParseHeader(json, size, "fuzz.safetensors");
  Check(whole.ok() == stepwise.ok());
  if (!whole.ok()) {
    Check(whole.status() == stepwise.status());
    Check(!whole.status().message().empty());
    return 0;
  }
  const Header& h = *whole;
  Check(h.tensors == stepwise->tensors && h.metadata == stepwise->metadata);
  Check(h.header_length == *n && h.data_start == 8 + *n);
  Check(h.data_start + h.data_size == size);
  uint64_t pos = 0;
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const TensorInfo& t = h.tensors[i];
    Check(t.begin == pos && t.end >= t.begin);
    pos = t.end;
    Result<uint64_t> bytes = TensorByteSize(t.dtype, t.shape);
    Check(bytes.ok() && *bytes == t.size());
    Check(h.by_name.Lookup(t.name, h.tensors) == i);
    Check(h.Find(t.name) == &t);
  }
  Check(pos == h.data_size);
  Check(h.by_name.size() == h.tensors.size());
  return 0;
}
