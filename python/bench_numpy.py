"""python/bench_numpy.py — host (page cache) load time of shardload.numpy.load_file
against safetensors.numpy.load_file and a same-run memory-copy ceiling; no torch.

    PYTHONPATH=python python3 python/bench_numpy.py bazel-bin/capi/libshardload.so \
        /tmp/sl_bench_np [GIB] [REPEATS] [SMALL_TENSORS]

Writes, once, a sharded F32 checkpoint of GIB GiB (default 1; 16 MiB tensors in 256 MiB
shards, through shardload.numpy.save_file plus an index) and one file of SMALL_TENSORS
(default 20000) tensors of 4 KiB each, reads both once to warm the page cache, then
reports, for each, the best of REPEATS (default 5) wall times, the loaders alternated
within each round so that a noisy machine weighs on all alike:
  - shardload.numpy.load_file(path): fresh arena, parallel reads;
  - the same with a HostMemoryPool (a reload whose arena is reused);
  - safetensors.numpy.load_file per shard (it copies each tensor out of its mapping
    into new memory: a like-for-like comparison, unlike its torch cpu tensors);
  - the ceiling: one numpy copy of the same bytes between two arrays (memory bandwidth).
Every loaded array is summed once per 4 KiB page (a byte per page), as a user would read
it. Prints one line per measurement and the ratios against safetensors.
"""
import json
import os
import sys

import numpy as np

import shardload
import shardload.numpy as snp
from bench_rounds import best_of

try:
    import safetensors.numpy as sn
except ImportError:
    sn = None


def touch(arrays):
    s = 0
    for a in arrays.values():
        if a.size:
            s += int(a.reshape(-1).view(np.uint8)[::4096].sum())
    return s


def write_sharded(folder, gib):
    per = 16 << 20
    n = max(1, int(gib * (1 << 30)) // per)
    per_shard = (256 << 20) // per
    rng = np.random.default_rng(1)
    weight_map = {}
    shards = (n + per_shard - 1) // per_shard
    for s in range(shards):
        name = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        arrays = {"layers.%03d.w" % i: rng.standard_normal(per // 4, dtype=np.float32)
                  for i in range(s * per_shard, min(n, (s + 1) * per_shard))}
        snp.save_file(arrays, os.path.join(folder, name))
        weight_map.update({k: name for k in arrays})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": n * per}, "weight_map": weight_map}, f)


def main():
    shardload.set_library_path(sys.argv[1])
    root = sys.argv[2]
    gib = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    small = int(sys.argv[5]) if len(sys.argv) > 5 else 20000
    big_dir = os.path.join(root, "big")
    small_file = os.path.join(root, "small.safetensors")
    os.makedirs(big_dir, exist_ok=True)
    if not os.path.exists(os.path.join(big_dir, "model.safetensors.index.json")):
        write_sharded(big_dir, gib)
    if not os.path.exists(small_file):
        rng = np.random.default_rng(2)
        snp.save_file({"blocks.%05d.w" % i: rng.standard_normal(1024, dtype=np.float32)
                       for i in range(small)}, small_file)
    shards = sorted(os.path.join(big_dir, f) for f in os.listdir(big_dir)
                    if f.endswith(".safetensors"))
    print("python %s, numpy %s, safetensors %s, %d cpus" % (
        sys.version.split()[0], np.__version__,
        __import__("safetensors").__version__ if sn else "(none)", os.cpu_count()))
    pool = shardload.HostMemoryPool()
    for label, path, files in [("%.3g GiB in %d shards" % (gib, len(shards)), big_dir, shards),
                               ("%d tensors of 4 KiB" % small, small_file, [small_file])]:
        nbytes = sum(os.path.getsize(f) for f in files)
        src = np.ones(nbytes, dtype=np.uint8)
        dst = np.empty_like(src)
        runs = {
            "ceiling: np.copyto of the same bytes": lambda: np.copyto(dst, src),
            "shardload.numpy.load_file": lambda: touch(snp.load_file(path)),
            "shardload.numpy.load_file(pool=) reload": lambda: touch(snp.load_file(path,
                                                                                  pool=pool)),
        }
        if sn is not None:
            runs["safetensors.numpy.load_file per file"] = \
                lambda: [touch(sn.load_file(f)) for f in files]
        best = best_of(runs, repeats)  # after one warming call each (page cache, pool)
        print("%s (%.0f MB):" % (label, nbytes / 1e6))
        ref = best.get("safetensors.numpy.load_file per file")
        for k, t in best.items():
            vs = " (%.2fx safetensors' time)" % (t / ref) if ref else ""
            print("  %-44s best %.4f s  %.2f GB/s%s" % (k, t, nbytes / t / 1e9, vs))
        del src, dst


if __name__ == "__main__":
    main()
