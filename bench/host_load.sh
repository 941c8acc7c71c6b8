#!/usr/bin/env bash
# bench/host_load.sh — the host-load benchmark behind bench/RESULTS.md (## Host load).
#
# Usage: bench/host_load.sh [CKPT_DIR] [SHARDLOAD_BIN]
#   CKPT_DIR       checkpoint to load (default /tmp/shardload_host_ckpt; written with
#                  `shardload write-sample --layout llama --size 2300MiB --shards 4 --dtype f16`
#                  when absent: F16, because the numpy reference cannot read BF16)
#   SHARDLOAD_BIN  default bazel-bin/cli/shardload (build it with `bazel build -c opt //cli:shardload`)
# Runs, hot (page cache warm) and cold (page cache dropped before each load; needs root):
#   shardload bench CKPT --io pread|mmap|direct|uring --json   (same-run ceilings included)
#   bench/hf_reference_load.py CKPT                       (the Hugging Face reference peer)
# and prints one markdown table of GB/s and ratios. Large files stay under /tmp; delete
# the checkpoint afterwards (rm -rf CKPT_DIR).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ckpt="${1:-/tmp/shardload_host_ckpt}"
bin="${2:-$here/../bazel-bin/cli/shardload}"
repeat="${REPEAT:-5}"
out="$(mktemp -d)"

if [ ! -e "$ckpt/model.safetensors.index.json" ]; then
  "$bin" write-sample "$ckpt" --layout llama --size 2300MiB --shards 4 --seed 1 --dtype f16 >/dev/null
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for io in pread mmap direct uring; do
  if ! "$bin" bench "$ckpt" --io "$io" --repeat "$repeat" --json >"$out/hot_$io.json"; then
    # Only io_uring may be missing (kernel or sandbox); any other failure is fatal.
    if [ "$io" = uring ]; then echo "skip: --io uring failed (io_uring unavailable?)"; rm -f "$out/hot_uring.json"; continue; fi
    exit 1
  fi
  "$bin" bench "$ckpt" --io "$io" --repeat 3 --cold --json >"$out/cold_$io.json"
done
python3 "$here/hf_reference_load.py" "$ckpt" --repeat "$repeat" >"$out/hf_hot.json"
for i in 1 2 3; do
  sync; echo 3 >/proc/sys/vm/drop_caches
  python3 "$here/hf_reference_load.py" "$ckpt" --repeat 1 >"$out/hf_cold_$i.json"
done

python3 - "$out" <<'PY'
import json, statistics, sys, glob, os
d = sys.argv[1]
load = lambda n: json.load(open(os.path.join(d, n)))
hf_hot = load("hf_hot.json")["median_gbps"]
hf_cold = statistics.median(json.load(open(f))["median_gbps"] for f in glob.glob(os.path.join(d, "hf_cold_*.json")))
print(f"HF reference (safetensors.numpy.load_file, every shard): hot median {hf_hot:.3f} GB/s, cold median {hf_cold:.3f} GB/s")
print()
print("| run | io | LoadAll median GB/s | LoadInto median GB/s | memcpy ceiling | dd bs=16M read | O_DIRECT ceiling | LoadAll / binding | LoadAll / dd | LoadInto / dd | LoadAll / HF ref |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for temp in ("hot", "cold"):
    for io in ("pread", "mmap", "direct", "uring"):
        if not os.path.exists(os.path.join(d, f"{temp}_{io}.json")):
            continue
        r = load(f"{temp}_{io}.json")
        c = r["ceilings"]
        ref = hf_hot if temp == "hot" else hf_cold
        print(f"| {temp} | {io} | {r['median_gbps']:.3f} | {r['load_into_median_gbps']:.3f} | {c['memcpy_gbps']:.3f} | "
              f"{c['buffered_read_gbps']:.3f} | {c['direct_read_gbps']} | {r['median_fraction_of_binding']:.2f} ({r['binding']}) | "
              f"{r['median_vs_buffered_read']:.2f} | {r['load_into_median_gbps'] / c['buffered_read_gbps']:.2f} | {r['median_gbps'] / ref:.2f} |")
PY
rm -rf "$out"
