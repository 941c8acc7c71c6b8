// Tests of `shardload inspect` (cli/inspect.cc): the binary is run as a subprocess on
// fixtures, and its stdout, stderr and exit status are checked exactly.
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fixtures.h"

namespace shardload {
namespace {

using ::shardload::testing::FixtureTensor;
using ::shardload::testing::IndexJson;
using ::shardload::testing::MakeTestDir;
using ::shardload::testing::RunResult;
using ::shardload::testing::RunShardload;
using ::shardload::testing::ReadFile;
using ::shardload::testing::SafetensorsBytes;
using ::shardload::testing::WriteFile;

constexpr char kShard1[] = "model-00001-of-00002.safetensors";
constexpr char kShard2[] = "model-00002-of-00002.safetensors";

// RunInspect: `cli/shardload inspect ARGS` (runfiles-relative), capturing stdout and stderr.
RunResult RunInspect(const std::string& args) { return RunShardload("inspect " + args); }

std::string WriteShardedFixture() {
  std::string dir = MakeTestDir("sharded");
  EXPECT_TRUE(WriteFile(dir + "/" + kShard1,
                        SafetensorsBytes({{"b.w", "F32", {2, 3}, ""}, {"a.w", "BF16", {5}, ""}},
                                         {{"format", "pt"}})));
  EXPECT_TRUE(WriteFile(dir + "/" + kShard2, SafetensorsBytes({{"c.w", "U8", {7}, ""}})));
  EXPECT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
                        IndexJson({{"a.w", kShard1}, {"b.w", kShard1}, {"c.w", kShard2}},
                                  {{"producer", "test \"q\""}}, 41)));
  return dir;
}

TEST(InspectJson, ShardedCheckpointExactly) {
  std::string dir = WriteShardedFixture();
  for (const std::string& target : {dir, dir + "/model.safetensors.index.json"}) {
    RunResult r = RunInspect("--json " + target);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out,
              "{\"files\":[\"model-00001-of-00002.safetensors\","
              "\"model-00002-of-00002.safetensors\"],"
              "\"metadata\":{\"producer\":\"test \\\"q\\\"\",\"total_size\":41},"
              "\"tensors\":["
              "{\"name\":\"a.w\",\"dtype\":\"BF16\",\"shape\":[5],\"data_offsets\":[24,34],"
              "\"file\":\"model-00001-of-00002.safetensors\"},"
              "{\"name\":\"b.w\",\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24],"
              "\"file\":\"model-00001-of-00002.safetensors\"},"
              "{\"name\":\"c.w\",\"dtype\":\"U8\",\"shape\":[7],\"data_offsets\":[0,7],"
              "\"file\":\"model-00002-of-00002.safetensors\"}],"
              "\"total_bytes\":41}\n");
  }
}

TEST(InspectJson, SingleFileEscapesNamesAndKeepsItsMetadata) {
  std::string dir = MakeTestDir("escape");
  std::string nul_name("nul\0x", 5);
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors",
                        SafetensorsBytes({{"q\"b\\s", "U8", {1}, ""},
                                          {"ctl\n\t\x01\x1f", "I16", {}, ""},
                                          {nul_name, "BOOL", {2}, ""},
                                          {"caf\xc3\xa9.\xe2\x82\xac.\xf0\x9f\x98\x80", "U8", {0}, ""},
                                          {"scalar", "F64", {}, ""}},
                                         {{"format", "pt"}, {"note", "tab\there"}})));
  RunResult r = RunInspect(dir + "/model.safetensors --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"files\":[\"model.safetensors\"],"
            "\"metadata\":{\"format\":\"pt\",\"note\":\"tab\\there\"},"
            "\"tensors\":["
            "{\"name\":\"caf\xc3\xa9.\xe2\x82\xac.\xf0\x9f\x98\x80\",\"dtype\":\"U8\",\"shape\":[0],"
            "\"data_offsets\":[5,5],\"file\":\"model.safetensors\"},"
            "{\"name\":\"ctl\\n\\t\\u0001\\u001f\",\"dtype\":\"I16\",\"shape\":[],"
            "\"data_offsets\":[1,3],\"file\":\"model.safetensors\"},"
            "{\"name\":\"nul\\u0000x\",\"dtype\":\"BOOL\",\"shape\":[2],"
            "\"data_offsets\":[3,5],\"file\":\"model.safetensors\"},"
            "{\"name\":\"q\\\"b\\\\s\",\"dtype\":\"U8\",\"shape\":[1],"
            "\"data_offsets\":[0,1],\"file\":\"model.safetensors\"},"
            "{\"name\":\"scalar\",\"dtype\":\"F64\",\"shape\":[],"
            "\"data_offsets\":[5,13],\"file\":\"model.safetensors\"}],"
            "\"total_bytes\":13}\n");
}

TEST(InspectJson, ListingLongerThanTheOutputBlockIsWrittenWhole) {
  // ~1 MB of JSON (several of the command's 256 KiB output blocks), names stored in
  // reverse name order, one escaped character in each name so escapes also straddle
  // block boundaries somewhere.
  constexpr int kCount = 6000;
  std::vector<FixtureTensor> ts;
  for (int i = kCount - 1; i >= 0; --i) {
    char name[32];
    std::snprintf(name, sizeof name, "layer.%05d.", i);
    ts.push_back({std::string(name) + std::string(100, 'w') + "\"q", "U8", {1}, ""});
  }
  std::string dir = MakeTestDir("long_listing");
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors", SafetensorsBytes(ts)));
  std::string want = "{\"files\":[\"model.safetensors\"],\"metadata\":{},\"tensors\":[";
  for (int i = 0; i < kCount; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "layer.%05d.", i);
    const int at = kCount - 1 - i;  // position in the file
    if (i) want += ',';
    want += "{\"name\":\"" + std::string(name) + std::string(100, 'w') +
            "\\\"q\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[" +
            std::to_string(at) + "," + std::to_string(at + 1) +
            "],\"file\":\"model.safetensors\"}";
  }
  want += "],\"total_bytes\":" + std::to_string(kCount) + "}\n";
  ASSERT_GT(want.size(), 3u * (256 << 10));
  RunResult r = RunInspect(dir + "/model.safetensors --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out.size(), want.size());
  EXPECT_TRUE(r.out == want);  // not EXPECT_EQ: a mismatch would print 1 MB twice
}

TEST(InspectJson, WarningsGoToStderrAndStdoutStaysJson) {
  std::string dir = WriteShardedFixture();
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
                        IndexJson({{"a.w", kShard1}, {"b.w", kShard1}, {"c.w", kShard2}}, {}, 7)));
  RunResult r = RunInspect("--json " + dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "shardload inspect: warning: model.safetensors.index.json: metadata "
                   "total_size is 7 but the shards hold 41 tensor bytes\n");
  EXPECT_EQ(r.out.rfind("{\"files\":[", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\"metadata\":{\"total_size\":7},"), std::string::npos) << r.out;
}

TEST(InspectJson, EmptyMetadataIsAnEmptyObject) {
  std::string dir = MakeTestDir("nometa");
  ASSERT_TRUE(WriteFile(dir + "/x.safetensors", SafetensorsBytes({{"w", "F16", {2}, ""}})));
  RunResult r = RunInspect("--json " + dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"files\":[\"x.safetensors\"],\"metadata\":{},\"tensors\":[{\"name\":\"w\","
            "\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4],\"file\":\"x.safetensors\"}],"
            "\"total_bytes\":4}\n");
}

TEST(InspectErrors, MissingPath) {
  std::string dir = MakeTestDir("missing");
  std::string path = dir + "/none.safetensors";
  RunResult r = RunInspect("--json " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "shardload inspect: " + path + ": no such file or directory\n");
  EXPECT_EQ(r.out, "{\"error\":{\"code\":\"not_found\",\"message\":\"" + path +
                       ": no such file or directory\"}}\n");
  RunResult plain = RunInspect(path);
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_EQ(plain.err, r.err);
  EXPECT_EQ(plain.out, "");
}

TEST(InspectErrors, InvalidUtf8InAMessageBecomesReplacementCharacter) {
  std::string dir = MakeTestDir("utf8");
  std::string path = dir + "/bad\xff\xc3.safetensors";  // invalid UTF-8 in the path
  RunResult r = RunInspect("--json '" + path + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "{\"error\":{\"code\":\"not_found\",\"message\":\"" + dir +
                       "/bad\\ufffd\\ufffd.safetensors: no such file or directory\"}}\n");
}

TEST(InspectErrors, ShardSetErrorAsJson) {
  std::string dir = WriteShardedFixture();
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
                        IndexJson({{"a.w", kShard1}, {"b.w", kShard1}, {"c.w", kShard1}})));
  RunResult r = RunInspect(dir + " --json");
  EXPECT_EQ(r.exit_code, 1);
  std::string msg = "model.safetensors.index.json: index maps 'c.w' to '" + std::string(kShard1) +
                    "' but that shard has no tensor 'c.w'";
  EXPECT_EQ(r.err, "shardload inspect: " + msg + "\n");
  EXPECT_EQ(r.out, "{\"error\":{\"code\":\"invalid_argument\",\"message\":\"" + msg + "\"}}\n");
}

TEST(InspectErrors, SeveralCandidates) {
  std::string dir = MakeTestDir("several");
  ASSERT_TRUE(WriteFile(dir + "/b.safetensors", SafetensorsBytes({{"w", "U8", {1}, ""}})));
  ASSERT_TRUE(WriteFile(dir + "/a.safetensors", SafetensorsBytes({{"w", "U8", {1}, ""}})));
  RunResult r = RunInspect(dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "shardload inspect: " + dir +
                       ": folder holds several .safetensors files and no index: a.safetensors, "
                       "b.safetensors\n");
}

TEST(InspectErrors, BadUsage) {
  RunResult none = RunInspect("--json");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_EQ(none.out, "{\"error\":{\"code\":\"invalid_argument\",\"message\":\"missing PATH\"}}\n");
  EXPECT_EQ(none.err.rfind("shardload inspect: missing PATH\nusage: shardload inspect", 0), 0u)
      << none.err;
  // An empty PATH is no PATH, as for the other commands.
  RunResult empty = RunInspect("''");
  EXPECT_EQ(empty.exit_code, 2);
  EXPECT_EQ(empty.err.rfind("shardload inspect: missing PATH\nusage: shardload inspect", 0), 0u)
      << empty.err;
  RunResult valued = RunInspect("--json=1 x");
  EXPECT_EQ(valued.exit_code, 2);
  EXPECT_EQ(valued.err.rfind("shardload inspect: --json takes no value (got '--json=1')\n", 0), 0u)
      << valued.err;
  RunResult flag = RunInspect("--frobnicate x");
  EXPECT_EQ(flag.exit_code, 2);
  EXPECT_EQ(flag.out, "");
  EXPECT_EQ(flag.err.rfind("shardload inspect: unknown option '--frobnicate'\n", 0), 0u)
      << flag.err;
  RunResult two = RunInspect("a b");
  EXPECT_EQ(two.exit_code, 2);
  EXPECT_EQ(two.err.rfind("shardload inspect: expected one PATH, got 2\n", 0), 0u) << two.err;
}

TEST(InspectHuman, SummaryWithHistogramMetadataAndWarnings) {
  std::string dir = WriteShardedFixture();
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
                        IndexJson({{"a.w", kShard1}, {"b.w", kShard1}, {"c.w", kShard2}},
                                  {{"producer", "test"}}, 4096)));
  RunResult r = RunInspect(dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string size1 = std::to_string(ReadFile(dir + "/" + kShard1)->size());
  std::string size2 = std::to_string(ReadFile(dir + "/" + kShard2)->size());
  EXPECT_EQ(r.out,
            "checkpoint: " + dir + " (index model.safetensors.index.json, 2 shards)\n"
            "files:\n"
            "  model-00001-of-00002.safetensors  " + size1 + " B (" + size1 + " bytes)\n"
            "  model-00002-of-00002.safetensors  " + size2 + " B (" + size2 + " bytes)\n"
            "tensors: 3\n"
            "total bytes: 41 B (41 bytes)\n"
            "dtypes:\n"
            "  U8                    1 tensors  7 B\n"
            "  BF16                  1 tensors  10 B\n"
            "  F32                   1 tensors  24 B\n"
            "metadata:\n"
            "  producer = test\n"
            "  total_size = 4096\n"
            "warnings:\n"
            "  model.safetensors.index.json: metadata total_size is 4096 but the shards hold 41 "
            "tensor bytes\n");
}

TEST(InspectHuman, HumanUnits) {
  std::string dir = MakeTestDir("units");
  ASSERT_TRUE(WriteFile(dir + "/m.safetensors", SafetensorsBytes({{"big", "F32", {768}, ""}})));
  RunResult r = RunInspect(dir);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("total bytes: 3.00 KiB (3072 bytes)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  F32                   1 tensors  3.00 KiB\n"), std::string::npos)
      << r.out;
}

// A single file is named itself, whether given as the file or as its folder; a sharded
// checkpoint by its folder.
TEST(InspectHuman, NamesTheSingleFileItself) {
  std::string dir = MakeTestDir("named");
  ASSERT_TRUE(WriteFile(dir + "/m.safetensors", SafetensorsBytes({{"w", "U8", {3}, ""}})));
  for (const std::string& path : {dir + "/m.safetensors", dir}) {
    RunResult r = RunInspect(path);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.substr(0, r.out.find('\n')),
              "checkpoint: " + dir + "/m.safetensors (single file)") << path;
  }
  RunResult w = RunShardload("write-sample '" + dir + "/sharded' --layout tiny --shards 2 --no-sync");
  ASSERT_EQ(w.exit_code, 0) << w.err;
  RunResult r = RunInspect(dir + "/sharded");
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')),
            "checkpoint: " + dir + "/sharded (index model.safetensors.index.json, 2 shards)");
}

// A folder whose name holds a newline stays on the summary's one line (JSON-quoted, as
// names are), and so do the write commands' reports of it.
TEST(InspectHuman, FolderNameWithANewlineStaysOnOneLine) {
  std::string dir = MakeTestDir("odd") + "/new\nline";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_TRUE(WriteFile(dir + "/m.safetensors", SafetensorsBytes({{"w", "U8", {3}, ""}})));
  std::string quoted = dir.substr(0, dir.size() - 9) + "/new\\nline";
  RunResult r = RunInspect("'" + dir + "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')),
            "checkpoint: \"" + quoted + "/m.safetensors\" (single file)");
  RunResult w = RunShardload("write-sample '" + dir + "/out' --layout tiny --no-sync");
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_TRUE(w.out.starts_with("wrote \"" + quoted + "/out\": layout tiny")) << w.out;
  RunResult re = RunShardload("reshard '" + dir + "/out' '" + dir + "/re' --shards 2 --no-sync");
  EXPECT_EQ(re.exit_code, 0) << re.err;
  EXPECT_TRUE(re.out.starts_with("wrote 3 files into \"" + quoted + "/re\": ")) << re.out;
}

// Every ASCII byte (NUL and controls included) and multi-byte UTF-8 in a name must come
// back unchanged through a strict JSON parser (Python's json module).
TEST(InspectJson, EveryAsciiByteRoundTripsThroughPythonJson) {
  if (std::system("python3 -c 'import json' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 is not available";
  }
  std::string dir = MakeTestDir("allbytes");
  std::string name;
  for (int c = 0; c < 128; ++c) name += static_cast<char>(c);
  name += "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf";
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors", SafetensorsBytes({{name, "U8", {1}, ""}})));
  ASSERT_TRUE(WriteFile(dir + "/name.bin", name));
  RunResult r = RunInspect("--json " + dir + "/model.safetensors");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WriteFile(dir + "/out.json", r.out));
  std::string cmd = "python3 -c 'import json,sys; d=json.load(open(sys.argv[1], encoding=\"utf-8\")); "
                    "want=open(sys.argv[2],\"rb\").read().decode(\"utf-8\"); "
                    "sys.exit(0 if d[\"tensors\"][0][\"name\"] == want else 1)' " +
                    dir + "/out.json " + dir + "/name.bin";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << r.out;
}

// Cross-check against the Hugging Face reference: a file written by Python safetensors
// must be described exactly as Python reads its header.
TEST(InspectJson, MatchesPythonSafetensors) {
  if (std::system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 with safetensors and numpy is not available";
  }
  std::string dir = MakeTestDir("python");
  std::string script = dir + "/check.py";
  ASSERT_TRUE(WriteFile(script, R"PY(
import json, struct, subprocess, sys
import numpy as np
from safetensors.numpy import save_file
d = sys.argv[1]
tensors = {
    "model.embed.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "model.layers.0.bias": np.ones(5, dtype=np.float16),
    "a\"quote": np.zeros((2, 0, 3), dtype=np.int64),
    "lm_head.weight": np.arange(6, dtype=np.uint8),
}
path = d + "/model.safetensors"
save_file(tensors, path, metadata={"format": "pt", "k": "v\n"})
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
meta = header.pop("__metadata__", {})
expected = {
    "files": ["model.safetensors"],
    "metadata": meta,
    "tensors": [dict(name=k, dtype=v["dtype"], shape=v["shape"], data_offsets=v["data_offsets"],
                     file="model.safetensors") for k, v in sorted(header.items())],
    "total_bytes": sum(v["data_offsets"][1] - v["data_offsets"][0] for v in header.values()),
}
out = subprocess.run(["cli/shardload", "inspect", "--json", d], capture_output=True, check=True)
got = json.loads(out.stdout)
if got != expected:
    print("got", got, "\nexpected", expected)
    sys.exit(1)
print("match")
)PY"));
  std::string cmd = "python3 " + script + " " + dir + " >" + dir + "/py.out 2>&1";
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << ReadFile(dir + "/py.out").value_or("");
  EXPECT_EQ(ReadFile(dir + "/py.out").value_or(""), "match\n");
}

}  // namespace
}  // namespace shardload
