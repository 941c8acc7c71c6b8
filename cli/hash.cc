// `shardload hash PATH [--json] [--no-check]`: the XXH3-64 of every tensor, sorted by
// name, plus one layout-free digest of the whole checkpoint, so two checkpoints can be
// compared whatever their sharding. Hashes recorded in the shards' `__metadata__` are
// checked as the bytes are read (a mismatch exits 1) unless --no-check is given.
//
// Text output, one line per tensor, then the digest:
//   2d06800538d394c2  F32[2, 3]  model.embed.weight
//   digest 9a1c...  2 tensors, 48 bytes
//   records 2 of 2 tensors carry an XXH3 record; all match     (only when some do)
// JSON output (--json):
//   {"tensors":[{"name":"a","dtype":"F32","shape":[2,3],"xxh3":"2d06800538d394c2"}],
//    "digest":"9a1c...","total_bytes":48,"recorded":2,"matched":2}
// A name with a control character is printed JSON-quoted (OneLineText). Warnings of
// the catalog go to stderr first, as "shardload hash: warning: ...".
// Errors: one line on stderr, exit 1 (and {"error":{"code","message"}} on stdout under
// --json); usage errors exit 2.
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

#include "cli/commands.h"
#include "cli/load_common.h"
#include "format/checksum.h"
#include "format/dtype.h"
#include "format/text.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"

namespace shardload::cli {
namespace {

constexpr char kHashUsage[] =
    "usage: shardload hash PATH [--json] [--no-check] [--lenient-index]\n"
    "\n"
    "Print the XXH3-64 of every tensor's bytes, sorted by name, and a digest of the\n"
    "whole checkpoint that does not depend on its sharding.\n"
    "  PATH        a .safetensors file, an index .json, or a checkpoint folder\n"
    "  --json      {\"tensors\":[{\"name\",\"dtype\",\"shape\",\"xxh3\"}],\"digest\",\"total_bytes\",\n"
    "              \"recorded\",\"matched\"}\n"
    "  --no-check  do not fail when a hash recorded in the file differs or is malformed\n"
    "  --lenient-index  also hash tensors a shard holds but the index does not list (a\n"
    "              warning each; default: an error)\n";

int Fail(const Status& status, bool json) {
  std::cerr << "shardload hash: " << OneLineMessage(status.message()) << "\n";
  if (json) {
    std::cout << "{\"error\":" << StatusJson(status) << "}\n";
  }
  return 1;
}

}  // namespace

int RunHash(const Args& args) {
  bool json = false;
  bool check = true;
  CatalogOptions catalog;  // --lenient-index: strict_index false
  std::string path;
  FlagReader f(args);
  while (f.Next()) {
    if (f.Is("--help") || f.Is("-h")) {
      std::cout << kHashUsage;
      return 0;
    } else if (f.Is("--json") || f.Is("--no-check") || f.Is("--lenient-index")) {
      if (Status s = f.NoValue(); !s.ok()) return UsageError("hash", s, kHashUsage, args);
      if (f.Is("--json")) {
        json = true;
      } else if (f.Is("--no-check")) {
        check = false;
      } else {
        catalog.strict_index = false;
      }
    } else if (!f.IsPositional() || f.arg() == "-") {
      return UsageError("hash", InvalidArgumentError("unknown option '" + f.arg() + "'"),
                        kHashUsage, args);
    } else if (path.empty()) {
      path = f.arg();
    } else {
      return UsageError("hash",
                        InvalidArgumentError("more than one PATH ('" + path + "', '" + f.arg() +
                                             "')"),
                        kHashUsage, args);
    }
  }
  if (path.empty()) {
    return UsageError("hash", InvalidArgumentError("missing PATH"), kHashUsage, args);
  }

  Result<Checkpoint> ckpt = OpenCheckpoint(path, catalog);
  if (!ckpt.ok()) return Fail(ckpt.status(), json);
  PrintWarnings("hash", ckpt->warnings());
  HashOptions options;
  options.check_recorded = check;
  Result<CheckpointDigest> digest = HashCheckpoint(*ckpt, options);
  if (!digest.ok()) return Fail(digest.status(), json);
  if (digest->malformed > 0) {
    std::cerr << "shardload hash: warning: " << digest->malformed
              << (digest->malformed == 1 ? " XXH3 record is" : " XXH3 records are")
              << " not 16 hex digits and " << (digest->malformed == 1 ? "was" : "were")
              << " skipped\n";
  }

  const uint64_t all = LayoutFreeDigest(digest->tensors);
  if (json) {
    std::string out = "{\"tensors\":[";
    bool first = true;
    for (const TensorDigest& t : digest->tensors) {
      if (!first) out += ",";
      first = false;
      out += "{\"name\":" + JsonQuoted(t.name) + ",\"dtype\":\"" +
             std::string(DtypeName(t.dtype)) + "\",\"shape\":[";
      for (size_t i = 0; i < t.shape.size(); ++i) {
        if (i) out += ",";
        out += std::to_string(t.shape[i]);
      }
      out += "],\"xxh3\":\"" + FormatXxh3(t.xxh3) + "\"}";
    }
    out += "],\"digest\":\"" + FormatXxh3(all) + "\",\"total_bytes\":" +
           std::to_string(ckpt->total_bytes()) + ",\"recorded\":" +
           std::to_string(digest->recorded) + ",\"matched\":" + std::to_string(digest->matched) +
           "}\n";
    std::cout << out;
  } else {
    for (const TensorDigest& t : digest->tensors) {
      std::cout << FormatXxh3(t.xxh3) << "  " << DtypeName(t.dtype) << ShapeToString(t.shape)
                << "  " << OneLineText(t.name) << "\n";
    }
    std::cout << "digest " << FormatXxh3(all) << "  " << digest->tensors.size()
              << " tensors, " << ckpt->total_bytes() << " bytes\n";
    if (digest->recorded > 0) {
      std::cout << "records " << digest->recorded << " of " << digest->tensors.size()
                << " tensors carry an XXH3 record; ";
      if (digest->matched == digest->recorded) {
        std::cout << "all match\n";
      } else {
        std::cout << digest->recorded - digest->matched << " differ\n";
      }
    }
  }
  return 0;
}

}  // namespace shardload::cli
