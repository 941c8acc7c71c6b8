// cli/sample_model.h — synthetic checkpoints for `shardload write-sample`, demos,
// benchmarks and tests.
//
// Provides `SampleOptions` and `BuildSampleModel`, which choose a realistic model
// shape for a target size and return the tensors (real Hugging Face naming, bytes from
// a deterministic generator, so nothing is held in memory) ready for WriteSharded.
// Float tensors hold finite values (F64/F32/C64/F16/BF16/F8 below 2 in magnitude: the
// random bits with each element's top exponent bit cleared; F4/F6 have no NaN or Inf),
// BOOL tensors 0 and 1.
//
//   SampleOptions o;
//   o.layout = SampleLayout::kLlama;
//   o.target_bytes = uint64_t{2} << 30;   // about 2 GiB of tensor data
//   Result<SampleModel> m = BuildSampleModel(o);
//   ShardOptions shards;
//   shards.num_shards = 3;
//   Result<ShardedWriteResult> r = WriteSharded("/tmp/sample", m->tensors, shards);
#ifndef SHARDLOAD_CLI_SAMPLE_MODEL_H_
#define SHARDLOAD_CLI_SAMPLE_MODEL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"
#include "format/status.h"
#include "format/writer.h"

namespace shardload::cli {

// SampleLayout: which kind of model to imitate.
enum class SampleLayout {
  kLlama,  // dense decoder: embed, per-layer attention + MLP + norms, final norm, lm_head
  kMoe,    // mixture of experts: thousands of small expert tensors (~19k at a few GiB)
  kTiny,   // a fixed llama-shaped model of a few KB, for tests (target_bytes ignored)
};

// ParseSampleLayout: "llama" | "moe" | "tiny"; anything else is invalid_argument
// "unknown layout 'x' (use llama, moe or tiny)".
Result<SampleLayout> ParseSampleLayout(std::string_view name);

// SampleOptions: what to build. Defaults: llama, BF16, 1 GiB, seed 0.
struct SampleOptions {
  SampleLayout layout = SampleLayout::kLlama;
  Dtype dtype = Dtype::kBF16;
  // target_bytes: approximate total tensor bytes (llama/moe). Must be at least
  // 64 KiB for llama and moe; the result is the nearest size the shapes allow.
  uint64_t target_bytes = uint64_t{1} << 30;
  // seed: the generator seed; the same options always give the same bytes.
  uint64_t seed = 0;
};

// SampleModel: the tensors (generators over a counter-based PRNG) and the shape chosen.
struct SampleModel {
  std::vector<TensorToWrite> tensors;
  uint64_t total_bytes = 0;
  int hidden = 0;
  int layers = 0;
  int vocab = 0;
  int intermediate = 0;
  int experts = 0;  // 0 for dense layouts
  // Describe: "hidden 1664, layers 13, vocab 32000, intermediate 5824" (+ experts).
  std::string Describe() const;
};

// BuildSampleModel: choose shapes for `options` and return the tensors in model
// order (embed, layer 0, layer 1, ..., norm, lm_head). Errors: invalid_argument
// "target size 1000 bytes is too small for layout llama (minimum 65536)" and the
// dtype errors of TensorByteSize (e.g. a sub-byte dtype whose shape does not end on
// a byte boundary).
// Thread safety: the returned generators are pure functions of (seed, tensor, offset)
// and may be called from any thread.
Result<SampleModel> BuildSampleModel(const SampleOptions& options);

// FillSampleBytes: the generator behind every sample tensor: bytes [offset,
// offset + out.size()) of the stream for (seed, stream). Independent of how the range
// is split into calls.
void FillSampleBytes(uint64_t seed, uint64_t stream, uint64_t offset, std::span<std::byte> out);

}  // namespace shardload::cli

#endif  // SHARDLOAD_CLI_SAMPLE_MODEL_H_
