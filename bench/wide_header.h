// bench/wide_header.h — synthetic wide safetensors files for header benchmarks.
//
// Provides `WideTensorName` (realistic MoE-style names) and `WideHeaderJson` /
// `WideSafetensorsFile`: a valid file with N tiny F16[4] tensors (8 bytes each) in
// offset order, __metadata__ {"format": "pt"}, the header space-padded to a multiple
// of 8 like the reference writer. 100,000 tensors give a ~10.8 MB header.
//
//   std::string file = WideSafetensorsFile(100000);  // whole file, ready to parse
#ifndef SHARDLOAD_BENCH_WIDE_HEADER_H_
#define SHARDLOAD_BENCH_WIDE_HEADER_H_

#include <cstdint>
#include <string>

namespace shardload::bench {

// WideTensorName: the i-th name, "model.layers.L.mlp.experts.E.<proj>" with 64 experts
// and 6 projections per layer.
std::string WideTensorName(uint64_t i);

// WideHeaderJson: the padded header JSON for `n` tensors.
std::string WideHeaderJson(uint64_t n);

// WideSafetensorsFile: the whole file (length prefix, header, n × 8 zero bytes).
std::string WideSafetensorsFile(uint64_t n);

// WideIndexJson: a model.safetensors.index.json mapping the `n` wide names over
// `shards` files "model-0000i-of-0000S.safetensors".
std::string WideIndexJson(uint64_t n, uint64_t shards);

}  // namespace shardload::bench

#endif  // SHARDLOAD_BENCH_WIDE_HEADER_H_
