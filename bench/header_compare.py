#!/usr/bin/env python3
"""bench/header_compare.py — the 100k-tensor header side by side, in one run.

Usage (from the repository root, after `bazel build -c opt //bench:header_bench
//bench:make_wide_header`; the -c opt outputs live in bazel-out/k8-opt/bin
even when bazel-bin points at another configuration):

    python3 bench/header_compare.py [--n 100000] [--rounds 5]

Writes /tmp/shardload_wide_<n>.safetensors with bench/make_wide_header, then for
--rounds rounds, interleaved so that machine load hits all three alike, measures
  ours      : bazel-out/k8-opt/bin/bench/header_bench BM_ReadHeaderFile/<n> and BM_ParseHeader/<n>
              (Google Benchmark, real time per iteration)
  reference : safetensors.safe_open(path, "np") (Hugging Face; open + header parse +
              validation in Rust), best of 7 calls
  json.loads: python3 json.loads of the same header bytes (no validation), best of 7
and prints the best time of each and the ratios. Exits 2 when safetensors is missing.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def best_of(fn, calls):
    fn()  # warm up (page cache, allocator)
    best = float("inf")
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bench", default="bazel-out/k8-opt/bin/bench/header_bench")
    ap.add_argument("--maker", default="bazel-out/k8-opt/bin/bench/make_wide_header")
    args = ap.parse_args()
    try:
        from safetensors import safe_open
    except ImportError:
        print("safetensors is not importable; comparison skipped", file=sys.stderr)
        return 2

    path = "/tmp/shardload_wide_%d.safetensors" % args.n
    subprocess.run([args.maker, path, str(args.n)], check=True, stdout=subprocess.DEVNULL)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = f.read(n)

    ours_file, ours_parse, ref, js = [], [], [], []
    for _ in range(args.rounds):
        out = subprocess.run(
            [args.bench, "--benchmark_filter=BM_(ReadHeaderFile|ParseHeader)/%d$" % args.n,
             "--benchmark_format=json", "--benchmark_min_time=0.5"],
            check=True, capture_output=True, text=True).stdout
        for b in json.loads(out)["benchmarks"]:
            ms = b["real_time"]  # in ms (the suite's unit)
            (ours_file if b["name"].startswith("BM_ReadHeaderFile") else ours_parse).append(ms / 1e3)
        ref.append(best_of(lambda: safe_open(path, "np"), 7))
        js.append(best_of(lambda: json.loads(header), 7))

    rows = [("shardload ReadHeaderFile (open+read+parse+validate)", min(ours_file)),
            ("shardload ParseHeader (in memory)", min(ours_parse)),
            ("safetensors.safe_open (reference)", min(ref)),
            ("python json.loads (no validation)", min(js))]
    print("file: %s, %d tensors, header %d bytes; best of %d rounds" % (path, args.n, n, args.rounds))
    for name, s in rows:
        print("  %-52s %8.2f ms" % (name, s * 1e3))
    print("  ratio reference / ours (ReadHeaderFile): %.1fx" % (min(ref) / min(ours_file)))
    print("  ratio json.loads / ours (ParseHeader):   %.1fx" % (min(js) / min(ours_parse)))
    os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
