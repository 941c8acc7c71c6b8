#!/usr/bin/env python3
"""bench/header_compare.py — the 100k-tensor header side by side, in one run.

Usage (from the repository root, after `bazel build -c opt //bench:header_bench
//bench:make_wide_header`; the -c opt outputs live in bazel-out/k8-opt/bin
even when bazel-bin points at another configuration):

    python3 bench/header_compare.py [--n 100000] [--rounds 5]

Writes /tmp/shardload_wide_<n>.safetensors with bench/make_wide_header, then for
--rounds rounds, interleaved so that machine load hits all three alike, measures
  ours      : bazel-out/k8-opt/bin/bench/header_bench BM_ReadHeaderFile/<n> and BM_ParseHeader/<n>
              (Google Benchmark, 7 repetitions of ~1 call, best repetition)
  reference : safetensors.safe_open(path, "np") (Hugging Face; open + header parse +
              validation in Rust), best of 7 calls
  json.loads: python3 json.loads of the same header bytes (no validation), best of 7
and prints the best wall and CPU time of each and the ratios (CPU time is the steadier
measure on a shared, loaded machine). Exits 2 when safetensors is missing.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def best_of(fn, calls):
    """(best wall seconds, best CPU seconds) over `calls` calls, after one warm-up."""
    fn()  # warm up (page cache, allocator)
    wall = cpu = float("inf")
    for _ in range(calls):
        t, c = time.perf_counter(), time.process_time()
        fn()  # the result is dropped (freed) inside the timed region
        cpu = min(cpu, time.process_time() - c)
        wall = min(wall, time.perf_counter() - t)
    return wall, cpu


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
             "--benchmark_format=json", "--benchmark_repetitions=7",
             "--benchmark_min_time=0.01"],  # ~1 call per repetition: best of 7, like python
            check=True, capture_output=True, text=True).stdout
        for b in json.loads(out)["benchmarks"]:
            if b.get("run_type") != "iteration":
                continue  # skip mean/median/stddev rows
            times = (b["real_time"] / 1e3, b["cpu_time"] / 1e3)  # the suite's unit is ms
            (ours_file if b["name"].startswith("BM_ReadHeaderFile") else ours_parse).append(times)
        ref.append(best_of(lambda: safe_open(path, "np"), 7))
        js.append(best_of(lambda: json.loads(header), 7))

    def best(samples):
        return min(s[0] for s in samples), min(s[1] for s in samples)

    rows = [("shardload ReadHeaderFile (open+read+parse+validate+free)", best(ours_file)),
            ("shardload ParseHeader (in memory, parse+validate)", best(ours_parse)),
            ("safetensors.safe_open (reference: open+parse+validate+free)", best(ref)),
            ("python json.loads (parse only, no validation)", best(js))]
    print("file: %s, %d tensors, header %d bytes; best of %d rounds; load average %.2f"
          % (path, args.n, n, args.rounds, os.getloadavg()[0]))
    print("  %-60s %10s %10s" % ("", "wall ms", "CPU ms"))
    for name, (wall, cpu) in rows:
        print("  %-60s %10.2f %10.2f" % (name, wall * 1e3, cpu * 1e3))
    for i, label in ((0, "wall"), (1, "CPU")):
        print("  %-4s ratio reference / ours (ReadHeaderFile): %5.1fx   json.loads / ours (ParseHeader): %5.1fx"
              % (label, best(ref)[i] / best(ours_file)[i], best(js)[i] / best(ours_parse)[i]))
    os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
