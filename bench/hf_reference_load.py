#!/usr/bin/env python3
"""Time the Hugging Face reference loading every tensor of a checkpoint into host memory.

Usage: hf_reference_load.py CKPT_DIR [--repeat N] [--mode load_file|safe_open]
Prints one JSON line: {"mode", "bytes", "runs_gbps", "best_gbps", "median_gbps"}.
load_file = safetensors.numpy.load_file per shard; safe_open = safe_open + get_tensor
for every key. Both mmap the file and copy every tensor out (the peer for
`shardload load`).
"""
import argparse
import glob
import json
import os
import statistics
import time

from safetensors import safe_open
from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mode", default="load_file", choices=["load_file", "safe_open"])
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.ckpt, "*.safetensors")))
    runs = []
    nbytes = 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        out = {}
        for f in files:
            if args.mode == "load_file":
                out.update(load_file(f))
            else:
                with safe_open(f, framework="np") as st:
                    for k in st.keys():
                        out[k] = st.get_tensor(k)
        secs = time.perf_counter() - start
        nbytes = sum(v.nbytes for v in out.values())
        runs.append(nbytes / secs / 1e9)
        del out
    print(json.dumps({"mode": args.mode, "bytes": nbytes, "runs_gbps": [round(r, 3) for r in runs],
                      "best_gbps": round(max(runs), 3), "median_gbps": round(statistics.median(runs), 3)}))


if __name__ == "__main__":
    main()
