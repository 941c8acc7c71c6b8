// `shardload write-sample DIR --size S [--shards N | --max-shard-size S]
//                          [--layout llama|moe|tiny] [--dtype bf16] [--seed N]`
// Writes a synthetic checkpoint with real Hugging Face tensor names (cli/sample_model.h).
// Errors: one line on stderr; exit 2 for usage errors (unknown or malformed options, a
// --size the layout cannot have, more shard files than a reader accepts), 1 for
// anything else, 128 + N after signal N (DIR is left as it was when the signal stopped
// the write; the message says when it came too late to stop it).
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "cli/interrupt.h"
#include "cli/load_common.h"
#include "cli/sample_model.h"
#include "format/dtype.h"
#include "format/writer.h"

namespace shardload::cli {
namespace {

constexpr char kHelp[] =
    "usage: shardload write-sample DIR [--size S] [--shards N | --max-shard-size S]\n"
    "                              [--layout llama|moe|tiny] [--dtype D] [--seed N]\n"
    "                              [--align-data N] [--no-sync]\n"
    "\n"
    "Writes a synthetic checkpoint into DIR (created when missing): real Hugging Face\n"
    "tensor names, shapes scaled to about --size bytes of tensor data, deterministic\n"
    "values from --seed (floats finite, most below 2 in magnitude; bools 0 or 1). An\n"
    "earlier checkpoint in DIR is replaced only once the new one is complete; on an\n"
    "error, SIGINT or SIGTERM before that, DIR is left as it was.\n"
    "\n"
    "  --size S            tensor bytes, e.g. 2GiB, 500MB (default 1GiB; ignored by tiny)\n"
    "  --shards N          split into exactly N shards of balanced size (default 1;\n"
    "                      at most 10000, the most a reader accepts)\n"
    "  --max-shard-size S  split greedily like huggingface_hub instead (e.g. 5GB; into\n"
    "                      at most 10000 shards)\n"
    "  --layout L          llama (dense), moe (~19k small expert tensors at a few GiB),\n"
    "                      tiny (a few KB, for tests); default llama\n"
    "  --dtype D           element type: a safetensors name (bf16, f16, f32, f8_e4m3, i64,\n"
    "                      bool, ...) or a torch one (bfloat16, float16, half, float32,\n"
    "                      float8_e4m3fn, int64, ...; torch. optional); default bf16\n"
    "  --seed N            generator seed (default 0)\n"
    "  --align-data N      pad each header so the data section starts at a multiple of N\n"
    "                      bytes (a power of two, 8..65536; default 8, as safetensors)\n"
    "  --no-sync           skip fsync (scratch data only)\n";
static_assert(kMaxShardFiles == 10'000, "kHelp names the limit");

int Fail(const std::string& message) {
  std::cerr << "shardload write-sample: " << OneLineMessage(message) << "\n";
  return 1;
}

// Usage: bad usage, exit 2; the reason ends with a pointer to --help (the help text is
// long) unless it shows the usage itself.
int Usage(const std::string& message) {
  std::cerr << "shardload write-sample: " << OneLineMessage(message)
            << (message.find("(usage: ") == std::string::npos ? " (see --help)" : "") << "\n";
  return 2;
}

bool ParseUint(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, uint64_t(c - '0'), &v)) {
      return false;
    }
  }
  *out = v;
  return true;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
  return s;
}

// ParseSampleDtype: a --dtype value: a safetensors dtype name in any case ("bf16",
// "F8_E4M3") or a torch dtype name, with or without "torch." ("bfloat16", "half",
// "torch.float8_e4m3fn"). Errors: invalid_argument "unknown dtype 'x': expected one of
// bool, f4, ... (safetensors names, any case) or a torch name such as bfloat16".
Result<Dtype> ParseSampleDtype(std::string_view value) {
  static constexpr std::pair<std::string_view, Dtype> kTorchNames[] = {
      {"bool", Dtype::kBOOL},          {"uint8", Dtype::kU8},
      {"int8", Dtype::kI8},            {"int16", Dtype::kI16},
      {"short", Dtype::kI16},          {"uint16", Dtype::kU16},
      {"float16", Dtype::kF16},        {"half", Dtype::kF16},
      {"bfloat16", Dtype::kBF16},      {"int32", Dtype::kI32},
      {"int", Dtype::kI32},            {"uint32", Dtype::kU32},
      {"float32", Dtype::kF32},        {"float", Dtype::kF32},
      {"complex64", Dtype::kC64},      {"cfloat", Dtype::kC64},
      {"float64", Dtype::kF64},        {"double", Dtype::kF64},
      {"int64", Dtype::kI64},          {"long", Dtype::kI64},
      {"uint64", Dtype::kU64},         {"float8_e5m2", Dtype::kF8_E5M2},
      {"float8_e4m3fn", Dtype::kF8_E4M3}, {"float8_e8m0fnu", Dtype::kF8_E8M0},
      {"float8_e4m3fnuz", Dtype::kF8_E4M3FNUZ}, {"float8_e5m2fnuz", Dtype::kF8_E5M2FNUZ},
  };
  std::string_view name = value;
  if (name.starts_with("torch.")) name.remove_prefix(6);
  for (const auto& [torch_name, dtype] : kTorchNames) {
    if (name == torch_name) return dtype;
  }
  if (Result<Dtype> d = DtypeFromName(Upper(std::string(value))); d.ok()) return d;
  std::string names;
  for (int i = 0; i < kDtypeCount; ++i) {
    std::string lower(DtypeName(static_cast<Dtype>(i)));
    for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    names += (i ? ", " : "") + lower;
  }
  return InvalidArgumentError("unknown dtype '" + std::string(value) + "': expected one of " +
                              names + " (safetensors names, any case) or a torch name such "
                              "as bfloat16");
}

std::string HumanBytes(uint64_t n) {
  char buf[64];
  if (n >= (uint64_t{1} << 30)) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", n / double(uint64_t{1} << 30));
  } else if (n >= (uint64_t{1} << 20)) {
    std::snprintf(buf, sizeof(buf), "%.2f MiB", n / double(uint64_t{1} << 20));
  } else {
    std::snprintf(buf, sizeof(buf), "%.2f KiB", n / 1024.0);
  }
  return buf;
}

}  // namespace

int RunWriteSample(const Args& args) {
  std::string dir;
  SampleOptions sample;
  ShardOptions shards;
  shards.num_shards = 1;
  bool have_shards = false, have_max = false;
  std::string max_shard_size_text;
  std::string layout_name = "llama";
  bool options_ended = false;  // after a bare "--": a DIR that starts with "--"
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!options_ended && a == "--") {
      options_ended = true;
      continue;
    }
    if (options_ended) {
      if (!dir.empty()) return Usage("unexpected argument '" + a + "' (one DIR only)");
      dir = a;
      continue;
    }
    if (a == "--help" || a == "-h") {
      std::cout << kHelp;
      return 0;
    }
    if (a == "--no-sync") {
      shards.write.sync = false;
      continue;
    }
    if (a.rfind("--", 0) == 0) {
      std::string key = a, value;
      size_t eq = a.find('=');
      if (eq != std::string::npos) key = a.substr(0, eq);
      if (key != "--size" && key != "--shards" && key != "--max-shard-size" &&
          key != "--layout" && key != "--dtype" && key != "--seed" && key != "--align-data") {
        return Usage("unknown option '" + key + "'");
      }
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
      } else {
        if (i + 1 >= args.size()) return Usage("option " + a + " needs a value");
        value = args[++i];
      }
      if (key == "--size") {
        Result<uint64_t> size = ParseByteSize(value);
        if (!size.ok()) return Usage(size.status().message());
        sample.target_bytes = *size;
      } else if (key == "--shards") {
        Result<int> n = ParseShardCount(value);
        if (!n.ok()) return Usage(n.status().message());
        shards.num_shards = *n;
        have_shards = true;
      } else if (key == "--max-shard-size") {
        Result<uint64_t> size = ParseByteSize(value);
        if (!size.ok()) return Usage(size.status().message());
        if (*size == 0) return Usage("--max-shard-size must be > 0");
        shards.max_shard_size = *size;
        shards.num_shards = 0;
        have_max = true;
        max_shard_size_text = value;
      } else if (key == "--layout") {
        Result<SampleLayout> layout = ParseSampleLayout(value);
        if (!layout.ok()) return Usage(layout.status().message());
        sample.layout = *layout;
        layout_name = value;
      } else if (key == "--dtype") {
        Result<Dtype> dtype = ParseSampleDtype(value);
        if (!dtype.ok()) return Usage(dtype.status().message());
        sample.dtype = *dtype;
      } else if (key == "--align-data") {
        Result<uint64_t> alignment = ParseDataAlignment(value);
        if (!alignment.ok()) return Usage(alignment.status().message());
        shards.write.data_alignment = *alignment;
      } else if (key == "--seed") {
        if (!ParseUint(value, &sample.seed)) {
          return Usage("--seed must be an unsigned integer, got '" + value + "'");
        }
      }
      continue;
    }
    if (!dir.empty()) return Usage("unexpected argument '" + a + "' (one DIR only)");
    dir = a;
  }
  if (dir.empty()) return Usage("missing DIR (usage: shardload write-sample DIR --size 2GiB --shards 3)");
  if (have_shards && have_max) return Usage("--shards and --max-shard-size are exclusive");

  Result<SampleModel> model = BuildSampleModel(sample);
  if (!model.ok()) {
    // invalid_argument: options the generator cannot honour (a --size out of range).
    if (model.status().code() == StatusCode::kInvalidArgument) {
      return Usage(model.status().message());
    }
    return Fail(model.status().message());
  }
  // Option errors (more shards than tensors or than a reader accepts) before DIR is
  // created.
  Result<ShardPlan> planned = PlanShards(model->tensors, shards);
  if (!planned.ok()) return Usage(planned.status().message());
  if (have_max) {
    if (Status count = CheckShardFileCount(*planned, max_shard_size_text); !count.ok()) {
      return Usage(count.message());
    }
  }
  for (TensorToWrite& t : model->tensors) t.fill = Interruptible(std::move(t.fill));

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Fail(dir + ": cannot create directory: " + ec.message());

  StopOnSignals();
  auto start = std::chrono::steady_clock::now();
  shards.cancelled = [] { return InterruptSignal() != 0; };  // while waiting to publish
  Result<ShardedWriteResult> written = WriteSharded(dir, model->tensors, shards);
  if (int sig = EndStopOnSignals(); sig != 0) return SignalExit("write-sample", sig, !written.ok(), dir);
  if (!written.ok()) return Fail(written.status().message());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  uint64_t file_bytes = 0;
  for (uint64_t s : written->file_sizes) file_bytes += s;
  const ShardPlan& plan = written->plan;
  std::printf("wrote %s: layout %s, %s, %zu tensors, %llu tensor bytes (%s) in %zu file%s\n",
              OneLineText(dir).c_str(), layout_name.c_str(), std::string(DtypeName(sample.dtype)).c_str(),
              model->tensors.size(), static_cast<unsigned long long>(model->total_bytes),
              HumanBytes(model->total_bytes).c_str(), plan.files.size(),
              plan.files.size() == 1 ? "" : "s");
  std::printf("  model: %s; seed %llu\n", model->Describe().c_str(),
              static_cast<unsigned long long>(sample.seed));
  for (size_t s = 0; s < plan.files.size(); ++s) {
    std::printf("  %s  %llu bytes  %zu tensors\n", OneLineText(plan.files[s]).c_str(),
                static_cast<unsigned long long>(written->file_sizes[s]), plan.shards[s].size());
  }
  if (!plan.index_file.empty()) std::printf("  %s\n", OneLineText(plan.index_file).c_str());
  for (const std::string& r : written->removed) std::printf("  removed stale %s\n", OneLineText(r).c_str());
  std::printf("  %.2f s, %.0f MB/s\n", seconds, seconds > 0 ? file_bytes / seconds / 1e6 : 0.0);
  std::fflush(stdout);
  PrintWarnings("write-sample", written->warnings);
  return 0;
}

}  // namespace shardload::cli
