"""python/bench_get_tensor.py — the per-call cost of ``safe_open(...).get_tensor`` loops
(host, page cache), shardload's against safetensors' in the same run.

    PYTHONPATH=python PY python/bench_get_tensor.py LIBRARY /tmp/sl_bench_gt [REPEATS]

Writes, once, under the folder given: one file of 20,000 F32 tensors of 1 KiB and one of
64 F32 tensors of 16 MiB (through safetensors.numpy). For each file and each framework
("np", and "pt" where torch imports) it opens the file and calls get_tensor for every
key in keys() order (name order, here also file order), best of REPEATS (default 7)
rounds, shardload's and safetensors' loops alternated within each round so that a noisy
machine weighs on both alike, and prints both times, the ratio, and the per-call
microseconds. Every result is read one byte per 4 KiB page (safetensors' torch tensors
may be views of its mapping).
"""
import os
import sys

import numpy as np
from safetensors import safe_open as st_safe_open
import safetensors.numpy as sn

import shardload
from bench_rounds import best_of

try:
    import torch
except ImportError:
    torch = None


def touch(x):
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.numpy()
    flat = x.reshape(-1).view(np.uint8)
    return int(flat[::4096].sum()) if flat.size else 0


def loop(opener, path, framework):
    with opener(path, framework=framework) as f:
        for k in f.keys():
            touch(f.get_tensor(k))


def main():
    shardload.set_library_path(sys.argv[1])
    root = sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    os.makedirs(root, exist_ok=True)
    files = [("20000 x 1 KiB", os.path.join(root, "small.safetensors"), 20000, 256),
             ("64 x 16 MiB", os.path.join(root, "large.safetensors"), 64, 4 << 20)]
    rng = np.random.default_rng(3)
    for _, path, count, elements in files:
        if not os.path.exists(path):
            sn.save_file({"t.%05d" % i: rng.standard_normal(elements, dtype=np.float32)
                          for i in range(count)}, path)
    print("python %s, numpy %s, torch %s, safetensors %s, %d cpus" % (
        sys.version.split()[0], np.__version__, torch.__version__ if torch else "(none)",
        __import__("safetensors").__version__, os.cpu_count()))
    frameworks = ["np"] + (["pt"] if torch is not None else [])
    for label, path, count, _ in files:
        for fw in frameworks:
            runs = {"shardload": lambda: loop(shardload.safe_open, path, fw),
                    "safetensors": lambda: loop(st_safe_open, path, fw)}
            best = best_of(runs, repeats)
            ours, theirs = best["shardload"], best["safetensors"]
            print("%-14s framework=%s: shardload %.4f s (%.1f us/call), safetensors "
                  "%.4f s (%.1f us/call): %.2fx safetensors' time" % (
                      label, fw, ours, ours / count * 1e6, theirs, theirs / count * 1e6,
                      ours / theirs))


if __name__ == "__main__":
    main()
