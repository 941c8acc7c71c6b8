#!/usr/bin/env bash
# bench/host_goal.sh — the hot host-load goal check of bench/RESULTS.md: alternates the
# Hugging Face reference and `shardload bench` ROUNDS times on one checkpoint, so each
# ratio compares numbers taken a few seconds apart on the same machine.
#
# Usage: bench/host_goal.sh [CKPT_DIR] [SHARDLOAD_BIN] [ROUNDS]
#   CKPT_DIR       default /tmp/shardload_host_ckpt (written like bench/host_load.sh
#                  does when absent: llama layout, 2300 MiB, 4 shards, F16)
#   SHARDLOAD_BIN  default bazel-bin/cli/shardload (`bazel build -c opt //cli:shardload`)
#   ROUNDS         default 5
# Per round: bench/hf_reference_load.py CKPT --repeat 3 (median), then
# `shardload bench CKPT --io pread --repeat 3 --json` (its ceilings, fresh LoadAll,
# LoadAll reloading through a HostArenaPool, LoadInto existing buffers). Prints one
# markdown table and the median of every ratio over the rounds. Hot page cache only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ckpt="${1:-/tmp/shardload_host_ckpt}"
bin="${2:-$here/../bazel-bin/cli/shardload}"
rounds="${3:-5}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

if [ ! -e "$ckpt/model.safetensors.index.json" ]; then
  "$bin" write-sample "$ckpt" --layout llama --size 2300MiB --shards 4 --seed 1 --dtype f16 >/dev/null
fi
cat "$ckpt"/*.safetensors >/dev/null  # warm the page cache

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$rounds"); do
  python3 "$here/hf_reference_load.py" "$ckpt" --repeat 3 >"$out/ref_$i.json"
  "$bin" bench "$ckpt" --io pread --repeat 3 --json >"$out/sl_$i.json"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$rounds" <<'PY'
import json, os, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
rows = []
print("| round | HF ref | dd read | memcpy | fresh-memory fill | LoadAll fresh | LoadAll pooled reload | LoadInto | fresh / ref | fresh / fill ceiling | pooled / ref | pooled / dd | into / ref | into / dd |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for i in range(1, rounds + 1):
    ref = json.load(open(os.path.join(d, f"ref_{i}.json")))["median_gbps"]
    r = json.load(open(os.path.join(d, f"sl_{i}.json")))
    c = r["ceilings"]
    dd, fill = c["buffered_read_gbps"], c["fresh_memory_gbps"]
    fresh, pooled, into = r["median_gbps"], r["pooled_median_gbps"], r["load_into_median_gbps"]
    ratios = [fresh / ref, fresh / fill, pooled / ref, pooled / dd, into / ref, into / dd]
    rows.append(ratios)
    print(f"| {i} | {ref:.2f} | {dd:.2f} | {c['memcpy_gbps']:.2f} | {fill:.2f} | {fresh:.2f} | {pooled:.2f} | {into:.2f} | "
          + " | ".join(f"{x:.2f}x" for x in ratios) + " |")
med = [statistics.median(col) for col in zip(*rows)]
print("| median | | | | | | | | " + " | ".join(f"**{x:.2f}x**" for x in med) + " |")
print("(GB/s = 10^9 B/s; every shardload number is the median of 3 loads, the reference's of 3)")
PY
