// loader/stored_tensor.h — one tensor as stored in a checkpoint's shards.
//
// Provides `StoredTensor`, the catalog entry that matching and planning work on. The
// catalog (loader/checkpoint.h) produces them; the matcher and planner are pure
// functions over them, so tests can build catalogs in memory.
//
//   StoredTensor t{.name = "w", .dtype = Dtype::kF32, .shape = {2, 2},
//                  .shard = 0, .file_offset = 88, .bytes = 16};
#ifndef SHARDLOAD_LOADER_STORED_TENSOR_H_
#define SHARDLOAD_LOADER_STORED_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "format/shape.h"

namespace shardload {

// StoredTensor: name, dtype and shape from the shard's header; `shard` indexes the
// checkpoint's shard list; `file_offset` is absolute (data_start + begin) and `bytes`
// is end - begin (already validated against dtype × shape).
struct StoredTensor {
  std::string name;
  Dtype dtype = Dtype::kU8;
  Shape shape;
  uint32_t shard = 0;
  uint64_t file_offset = 0;
  uint64_t bytes = 0;
  friend bool operator==(const StoredTensor&, const StoredTensor&) = default;
};

}  // namespace shardload

#endif  // SHARDLOAD_LOADER_STORED_TENSOR_H_
