// `shardload reshard PATH OUT (--max-shard-size S | --shards N) [--prefix P]
// [--no-checksums] [--no-sync] [--align-data N] [--lenient-index]`: rewrite a
// checkpoint into new shards.
//
// Every tensor is streamed from its source shard with positional reads (never the whole
// tensor in memory) into huggingface_hub-style shards written by format/writer.h. By
// default each tensor's XXH3 is computed first and checked against any hash the source
// records (a corrupt source fails before anything is written, instead of being copied
// under fresh records), then recorded (format/checksum_writer.h: in each shard's
// `__metadata__`, and in the new index when there is one), and each new shard is read
// back and checked against the source's hashes and its own records, and the new
// index's weight map against the plan and its records against the source's hashes,
// before anything is published.
// The source's metadata is carried over (without "total_size", which the writer
// recomputes, and without old "shardload.xxh3.*" records); an index's values that are
// not strings (a numeric "total_parameters") stay what they were in a new index, and
// become their JSON text in a single file's `__metadata__`. The new files replace
// OUT's earlier checkpoint of the same prefix only once all are written (its files the
// new one does not use are then removed, and listed); on an error, SIGINT or SIGTERM
// while writing or reading back, OUT is left as it was: the read-back hashes each new
// shard under its temporary name (ShardOptions::check_staged) and compares every tensor
// with the source's XXH3 and the shard's own record, and checks the new index's weight
// map and XXH3 records. Once published, the new index (or single file) is opened once
// more; should that fail, the new files stay (the error says so; PATH is untouched, so
// the command can be run again).
//
//   shardload reshard /models/llama /tmp/llama-2g --max-shard-size 2GB
//   wrote 5 files into /tmp/llama-2g: 291 tensors, 16060522496 bytes; XXH3 verified
//   digest 9e3c5a0d1b2f4e67
//
// Options take "--flag value" or "--flag=value". More shard files than a reader accepts
// (kMaxShardFiles), from --shards or --max-shard-size, is a usage error, found before
// any tensor is read or anything written. Warnings of the source's catalog go to stderr as
// "shardload reshard: warning: ...".
// Errors: one line on stderr and exit 1; usage errors exit 2; 128 + N after signal N
// (OUT is left as it was when the signal stopped the write; the message says when it
// came too late to stop it).
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cli/commands.h"
#include "cli/interrupt.h"
#include "cli/load_common.h"
#include "format/checksum.h"
#include "format/checksum_writer.h"
#include "format/text.h"
#include "format/writer.h"
#include "loader/checkpoint.h"
#include "loader/checkpoint_hash.h"
#include "loader/file.h"

namespace shardload::cli {
namespace {

constexpr char kReshardUsage[] =
    "usage: shardload reshard PATH OUT (--max-shard-size S | --shards N) [--prefix P]\n"
    "                         [--no-checksums] [--no-sync] [--align-data N] [--lenient-index]\n"
    "\n"
    "Rewrite the checkpoint at PATH into new shards in the folder OUT (created, with its\n"
    "parents, when missing; it must not be PATH's folder). Files of an earlier\n"
    "checkpoint with the same prefix in OUT are replaced, or removed when unused, once\n"
    "the new one is complete and (unless --no-checksums) read back and checked against\n"
    "the source's XXH3; on an error while writing or while reading back the unpublished\n"
    "files, OUT is left as it was (should the published checkpoint then fail to open,\n"
    "the new files stay and the error says so).\n"
    "  --max-shard-size S  split greedily like huggingface_hub (e.g. 5GB, 2GiB)\n"
    "  --shards N          split into exactly N shards of balanced size\n"
    "                      (either way, at most 10000: the most a reader accepts)\n"
    "  --prefix P          file names P-00001-of-0000N.safetensors (default model)\n"
    "  --no-checksums      do not hash: no check of the source's recorded XXH3, no\n"
    "                      new records, no read-back\n"
    "  --no-sync           skip fsync (scratch data only)\n"
    "  --align-data N      pad each header so the data section starts at a multiple of N\n"
    "                      bytes (a power of two, 8..65536; default 8, as safetensors\n"
    "                      writes; 64 or 4096 make loads into aligned memory faster)\n"
    "  --lenient-index     also take tensors a shard of PATH holds but its index does not\n"
    "                      list (a warning each; default: an error): the new index lists them\n";
static_assert(kMaxShardFiles == 10'000, "kReshardUsage names the limit");

int Fail(const std::string& message) {
  std::cerr << "shardload reshard: " << OneLineMessage(message) << "\n";
  return 1;
}

int Usage(const std::string& message) {
  std::cerr << "shardload reshard: " << OneLineMessage(message) << "\n" << kReshardUsage;
  return 2;
}

// ParsedValue: the current flag's value read by `parse` (text → Result<T>); the
// reader's error when the value is missing.
template <typename Parse>
auto ParsedValue(FlagReader& f, Parse parse) -> decltype(parse(std::string_view())) {
  Result<std::string> v = f.Value();
  if (!v.ok()) return v.status();
  return parse(*v);
}

// RealPath: the canonical path, or empty when it cannot be resolved.
std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) != nullptr ? std::string(buf) : std::string();
}

}  // namespace

int RunReshard(const Args& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << kReshardUsage;
      return 0;
    }
  }
  std::vector<std::string> positional;
  std::optional<uint64_t> max_shard_size;
  std::string max_shard_size_text;
  std::optional<int> shards;
  std::string prefix = "model";
  bool checksums = true, sync = true;
  uint64_t data_alignment = 8;
  CatalogOptions catalog;  // --lenient-index: strict_index false
  FlagReader f(args);  // "--flag value" and "--flag=value", as the other commands
  while (f.Next()) {
    if (f.IsPositional()) {
      positional.push_back(f.arg());
    } else if (f.Is("--max-shard-size")) {
      Result<std::string> v = f.Value();
      if (!v.ok()) return Usage(v.status().message());
      Result<uint64_t> size = ParseByteSize(*v);
      if (!size.ok()) return Usage(size.status().message());
      max_shard_size = *size;
      max_shard_size_text = *v;
    } else if (f.Is("--shards")) {
      Result<int> n = ParsedValue(f, ParseShardCount);
      if (!n.ok()) return Usage(n.status().message());
      shards = *n;
    } else if (f.Is("--prefix")) {
      Result<std::string> v = f.Value();
      if (!v.ok()) return Usage(v.status().message());
      prefix = *v;
    } else if (f.Is("--no-checksums")) {
      if (Status s = f.NoValue(); !s.ok()) return Usage(s.message());
      checksums = false;
    } else if (f.Is("--no-sync")) {
      if (Status s = f.NoValue(); !s.ok()) return Usage(s.message());
      sync = false;
    } else if (f.Is("--align-data")) {
      Result<uint64_t> a = ParsedValue(f, ParseDataAlignment);
      if (!a.ok()) return Usage(a.status().message());
      data_alignment = *a;
    } else if (f.Is("--lenient-index")) {
      if (Status s = f.NoValue(); !s.ok()) return Usage(s.message());
      catalog.strict_index = false;
    } else {
      return Usage("unknown option '" + f.arg() + "'");
    }
  }
  if (positional.size() != 2) return Usage("expected PATH and OUT");
  if (positional[0].empty()) return Usage("PATH is empty");
  if (positional[1].empty()) return Usage("OUT is empty");
  if (max_shard_size.has_value() == shards.has_value()) {
    return Usage("give exactly one of --max-shard-size and --shards");
  }
  const std::string& out = positional[1];

  Result<Checkpoint> ckpt = OpenCheckpoint(positional[0], catalog);
  if (!ckpt.ok()) return Fail(ckpt.status().message());
  PrintWarnings("reshard", ckpt->warnings());
  // OUT as it will be once created: its existing part resolved, the rest (which
  // create_directories makes real folders) normalized, so "dir/new/.." is dir.
  std::error_code out_ec;
  std::string out_real = std::filesystem::weakly_canonical(out, out_ec).string();
  while (out_real.size() > 1 && out_real.back() == '/') out_real.pop_back();  // "dir/new/.."
  // The same folder under another path (a bind mount) has the same device and inode.
  struct stat out_st, src_st;
  const bool same_inode = ::stat(out.c_str(), &out_st) == 0 &&
                          ::stat(ckpt->folder().c_str(), &src_st) == 0 &&
                          out_st.st_dev == src_st.st_dev && out_st.st_ino == src_st.st_ino;
  if (same_inode || (!out_ec && !out_real.empty() && out_real == RealPath(ckpt->folder()))) {
    // A usage error (the help says OUT must not be PATH's folder), found once PATH is open.
    return Usage(out + ": is the checkpoint's own folder; write the new shards elsewhere");
  }

  // One open file per source shard; generators read through them.
  std::vector<std::unique_ptr<ReadableFile>> files;
  if (Status opened = OpenShardFiles(*ckpt, std::vector<bool>(ckpt->shards().size(), true),
                                     IoMode::kPread, UringOptions(), &files);
      !opened.ok()) {
    return Fail(opened.message());
  }
  // Tensors in source order (shard, then offset), not by name: a hub checkpoint's
  // shards follow its layers, and a name sort puts layers.10 before layers.2.
  std::vector<TensorToWrite> tensors;
  tensors.reserve(ckpt->tensors().size());
  for (size_t k : ckpt->FileOrder()) {
    const StoredTensor& t = ckpt->tensors()[k];
    const ReadableFile* file = files[t.shard].get();
    const uint64_t base = t.file_offset;
    tensors.push_back(TensorToWrite::FromGenerator(
        t.name, t.dtype, t.shape,
        Interruptible([file, base](uint64_t offset, std::span<std::byte> piece) {
          return file->ReadAt(base + offset, piece);
        })));
  }

  ShardOptions options;
  if (max_shard_size) options.max_shard_size = *max_shard_size;
  if (shards) options.num_shards = *shards;
  options.prefix = prefix;
  options.write.sync = sync;
  options.write.data_alignment = data_alignment;
  for (const auto& [k, v] : ckpt->metadata()) {
    if (k == "total_size" || k.starts_with(kChecksumKeyPrefix)) continue;
    options.metadata.emplace(k, v);
    if (ckpt->metadata_json().contains(k)) options.metadata_json.emplace(k);  // 7 stays 7
  }
  // Option errors (more shards than tensors or than a reader accepts, a bad prefix)
  // before OUT is created.
  Result<ShardPlan> plan = PlanShards(tensors, options);
  if (!plan.ok()) return Usage(plan.status().message());
  if (Status count = CheckShardFileCount(*plan, max_shard_size_text); !count.ok()) {
    return Usage(count.message());
  }
  StopOnSignals();
  options.cancelled = [] { return InterruptSignal() != 0; };  // while waiting to publish
  std::optional<ChecksumMap> sums;
  if (checksums) {
    // Hash the source once and check what it records, before OUT is touched (a refusal
    // or an early signal leaves no trace); the write then records these hashes.
    Result<ChecksumMap> computed =
        ComputeChecksums(tensors, positional[0], options.write.buffer_bytes);
    if (int sig = InterruptSignal(); sig != 0) return SignalExit("reshard", sig, true, out);
    if (!computed.ok()) return Fail(computed.status().message());
    Result<RecordedChecksums> recorded = RecordedChecksums::FromCheckpoint(*ckpt);
    if (!recorded.ok()) return Fail(recorded.status().message());
    for (const StoredTensor& t : ckpt->tensors()) {
      Status s = recorded->CheckXxh3(t.name, t.bytes, computed->at(t.name));
      if (!s.ok()) return Fail(s.message() + "; nothing was written");
    }
    sums = std::move(*computed);
  }
  std::error_code ec;
  // made: the folders about to be made, deepest first: the missing trailing parts of
  // OUT, stopping at the first that exists (or cannot be looked at, or is "." / "..";
  // a path with ".." in it is left alone: its parts need not be what they spell).
  std::vector<std::filesystem::path> made;
  {
    bool dotdot = false;
    for (const auto& part : std::filesystem::path(out)) dotdot |= part == "..";
    std::filesystem::path p = std::filesystem::path(out).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();  // "a/b/" names "a/b"
    while (!dotdot && !p.empty() && p.filename() != "." && p.filename() != "..") {
      std::error_code look;
      if (std::filesystem::exists(p, look) || look) break;
      made.push_back(p);
      if (p == p.parent_path()) break;
      p = p.parent_path();
    }
  }
  std::filesystem::create_directories(out, ec);  // with its parents, as write-sample
  if (ec) return Fail(out + ": cannot create directory: " + ec.message());
  // remove_made_out: a write that failed leaves none of the empty folders it made
  // (rmdir removes only an empty folder, and never one that was there before).
  auto remove_made_out = [&] {
    for (const std::filesystem::path& p : made) {
      if (::rmdir(p.c_str()) != 0 && errno != ENOENT) break;  // not empty: keep the rest
    }
  };
  // The read-back: each new shard, complete under its temporary name, is opened and
  // hashed before anything is published; a tensor missing, or whose bytes or record
  // differ from what the source hashed to, fails the write with OUT as it was.
  std::vector<TensorDigest> read_back;  // every tensor's digest, read from the new files
  if (sums) {
    options.check_staged = [&](std::span<const StagedShardFile> files) -> Status {
      auto failed = [&](const Status& s) {
        return Status(s.code(), out + ": read-back before publishing failed: " + s.message());
      };
      for (const StagedShardFile& f : files) {
        const std::string label = "new " + f.name;  // not the old file of that name in OUT
        if (f.shard < 0) {
          std::vector<std::pair<std::string, std::string>> weight_map;
          for (size_t s = 0; s < plan->shards.size(); ++s) {
            for (size_t i : plan->shards[s]) {
              weight_map.emplace_back(tensors[i].name, plan->files[s]);
            }
          }
          Status s = CheckWrittenIndex(f.temp_path, label, weight_map, &*sums);
          if (!s.ok()) return failed(s);
          continue;
        }
        std::vector<std::string> names;
        for (size_t i : plan->shards[static_cast<size_t>(f.shard)]) {
          names.push_back(tensors[i].name);
        }
        HashOptions hash;
        hash.cancelled = [] { return InterruptSignal() != 0; };
        Result<std::vector<TensorDigest>> digests =
            CheckWrittenFile(f.temp_path, label, names, *sums, hash);
        if (!digests.ok()) {
          if (InterruptSignal() != 0) return digests.status();
          return failed(digests.status());
        }
        read_back.insert(read_back.end(), digests->begin(), digests->end());
      }
      return OkStatus();  // a signal during the last chunk: options.cancelled, asked next
    };
  }
  Result<ShardedWriteResult> written = sums ? WriteShardedWithChecksums(out, tensors, options, *sums)
                                            : WriteSharded(out, tensors, options);
  // The handlers stay installed through the final open of the published checkpoint
  // below (ended on every return): a signal there no longer stops anything, and is
  // reported once it is over instead of killing the process without a word.
  struct EndSignalsOnReturn {
    ~EndSignalsOnReturn() { EndStopOnSignals(); }
  } end_signals;
  if (int sig = InterruptSignal(); sig != 0) {
    if (!written.ok()) remove_made_out();
    return SignalExit("reshard", sig, !written.ok(), out,
                      sums ? " (read back before publishing)"
                           : " (--no-checksums: not read back)");
  }
  if (!written.ok()) {
    remove_made_out();
    return Fail(written.status().message());
  }
  files.clear();  // the source is read: its descriptors are not needed any more
  PrintWarnings("reshard", written->warnings);

  const size_t file_count =
      written->plan.files.size() + (written->plan.index_file.empty() ? 0 : 1);
  std::cout << "wrote " << file_count << (file_count == 1 ? " file" : " files") << " into "
            << OneLineText(out) << ": " << tensors.size() << " tensors, " << written->plan.total_size
            << " bytes";
  auto list_removed = [&] {
    for (const std::string& r : written->removed) std::cout << "  removed stale " << OneLineText(r) << "\n";
  };
  // read_back_failed: the "wrote ..." line ended (so the error on stderr does not run
  // into it) and the removed files listed before the error.
  auto read_back_failed = [&](const std::string& message) {
    std::cout << "; read-back failed\n";
    list_removed();
    std::cout.flush();
    return Fail("read-back of " + out + " failed: " + message +
                " (the new checkpoint is in place there, its shards verified before they "
                "were published; " + positional[0] + " is untouched: run reshard again)");
  };
  if (!checksums) {
    std::cout << "\n";
    list_removed();
    return 0;
  }
  // The shards and index were read back before they were published (check_staged
  // above); what is left is the published set itself: exactly the index (or single
  // file) just written opens, and lists the tensors read back (OUT may hold other
  // checkpoints, and a folder would resolve to its `model` one whatever --prefix said).
  const std::string written_path =
      out + "/" + (written->plan.index_file.empty() ? written->plan.files.at(0)
                                                    : written->plan.index_file);
  Result<Checkpoint> result = Checkpoint::Open(written_path);
  if (!result.ok()) return read_back_failed(result.status().message());
  if (result->tensors().size() != read_back.size()) {
    return read_back_failed(written_path + ": lists " + std::to_string(result->tensors().size()) +
                            " tensors, the shards read back hold " +
                            std::to_string(read_back.size()));
  }
  std::cout << "; XXH3 verified\ndigest " << FormatXxh3(LayoutFreeDigest(read_back))
            << "\n";
  list_removed();
  if (int sig = InterruptSignal(); sig != 0) {
    std::cout.flush();
    return SignalExit("reshard", sig, /*stopped=*/false, out, " (read back and verified first)");
  }
  return 0;
}

}  // namespace shardload::cli
