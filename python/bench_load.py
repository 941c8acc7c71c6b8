"""python/bench_load.py — host (page cache) load time of shardload.load_file against
safetensors.torch.load_file and a same-run memory-copy ceiling.

    PYTHONPATH=python /usr/bin/python3 python/bench_load.py bazel-bin/capi/libshardload.so \
        /tmp/sl_bench [GIB] [REPEATS]

Writes a sharded BF16 checkpoint of GIB GiB (default 1) once, reads it once to warm the
page cache, then reports the best of REPEATS (default 3) wall times of
  - shardload.load_file(folder) + touching every tensor (one sum per tensor),
  - the same through a HostMemoryPool (pool=): a reload whose arena is reused, as a
    server that reloads or swaps weights does (no page faults, no zeroing), with the
    default aligned placement and with placement="file-phase",
  - safetensors.torch.load_file per shard (it may map lazily, so the same touch — one
    byte per 4 KiB page — is what makes it read),
  - the ceiling: one torch copy of GIB GiB between two host tensors (memory bandwidth).
"""
import os
import sys
import time

import torch

import shardload


def touch(tensors):
    """Read one byte of every 4 KiB page of every tensor (forces lazily mapped data in)."""
    s = 0
    for t in tensors.values():
        if t.numel():
            s += int(t.view(torch.uint8)[::4096].sum())
    return s


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    shardload.set_library_path(sys.argv[1])
    folder = sys.argv[2]
    gib = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    total = int(gib * (1 << 30))
    per = 16 << 20  # 16 MiB tensors
    n = max(1, total // per)
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(os.path.join(folder, "model.safetensors.index.json")):
        g = torch.Generator().manual_seed(1)
        tensors = {"layers.%03d.w" % i: torch.randn(per // 2, generator=g).bfloat16()
                   for i in range(n)}
        shardload.save_sharded(tensors, folder, max_shard_size="256MiB")
        del tensors
    shards = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                    if f.endswith(".safetensors"))
    nbytes = n * per
    touch(shardload.load_file(folder))  # warm the page cache

    t_sl = best(lambda: touch(shardload.load_file(folder)), repeats)
    with shardload.HostMemoryPool() as pool:
        touch(shardload.load_file(folder, pool=pool))  # the first load fills the pool
        t_pool = best(lambda: touch(shardload.load_file(folder, pool=pool)), repeats)
    with shardload.HostMemoryPool() as pool:
        def phased():
            return shardload.load_file(folder, pool=pool, placement="file-phase")
        touch(phased())
        t_phase = best(lambda: touch(phased()), repeats)
    src = torch.empty(nbytes, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    t_copy = best(lambda: dst.copy_(src), repeats)
    t_touch = best(lambda: touch({"x": dst.view(torch.bfloat16)}), repeats)
    line = ["bytes %d in %d shards, %d tensors, torch %s, %d threads" %
            (nbytes, len(shards), n, torch.__version__, torch.get_num_threads())]
    line.append("ceiling copy: %.3f s (%.2f GB/s); touch alone: %.3f s" %
                (t_copy, nbytes / t_copy / 1e9, t_touch))
    line.append("shardload.load_file + touch: %.3f s (%.2f GB/s) = %.2fx copy+touch time" %
                (t_sl, nbytes / t_sl / 1e9, t_sl / (t_copy + t_touch)))
    line.append("shardload.load_file(pool=) reload + touch: %.3f s (%.2f GB/s) = %.2fx "
                "copy+touch time, %.2fx faster than without the pool" %
                (t_pool, nbytes / t_pool / 1e9, t_pool / (t_copy + t_touch), t_sl / t_pool))
    line.append("shardload.load_file(pool=, placement=\"file-phase\") reload + touch: %.3f s "
                "(%.2f GB/s) = %.2fx copy+touch time, %.2fx faster than the aligned reload" %
                (t_phase, nbytes / t_phase / 1e9, t_phase / (t_copy + t_touch), t_pool / t_phase))
    try:
        import safetensors.torch as st

        def ref():
            for s in shards:
                touch(st.load_file(s))
        t_ref = best(ref, repeats)
        line.append("safetensors.torch.load_file + touch: %.3f s (%.2f GB/s); "
                    "shardload is %.2fx faster" % (t_ref, nbytes / t_ref / 1e9, t_ref / t_sl))
    except ImportError:
        line.append("safetensors not importable: no reference timing")
    print("\n".join(line))


if __name__ == "__main__":
    main()
