"""python/bench_phases.py — where the time of a Python ``load_file`` goes, phase by
phase, next to the C load inside it (page cache).

    PYTHONPATH=python PY python/bench_phases.py LIBRARY CHECKPOINT [REPEATS] [DEVICE]

CHECKPOINT: a file or sharded folder, e.g. one written by
`shardload write-sample /tmp/moe --layout moe --size 1GiB --shards 2` (18,771 tensors).
DEVICE: "cpu" (default: loads into a HostMemoryPool, so each is a reload, one copy) or
"cuda:N" (each load makes its own device arena; bench/gpu_run.sh runs it so). Runs what
``shardload.load_file(CHECKPOINT, device=DEVICE)`` runs, with a clock between the
phases, best of REPEATS (default 5) for each phase:
  open     the checkpoint handle and its Python listing (names, shapes, dtypes, files);
  order    the file order the result dict follows (safetensors' order);
  load     sl_load_all, the C load;
  convert  one zero-copy torch tensor per loaded tensor (DLPack export, capsule,
           torch.from_dlpack) and the result dict;
and the whole load_file the same way. Prints milliseconds and microseconds per tensor,
and the C load's GB/s.
"""
import ctypes
import sys
import time

import shardload
from shardload import _lib


def main():
    shardload.set_library_path(sys.argv[1])
    path = sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    pool = shardload.HostMemoryPool() if device == "cpu" else None
    shardload.load_file(path, device=device, pool=pool)  # page cache (and pool) warm
    l = _lib.lib()
    best = {}
    count = nbytes = 0
    for _ in range(repeats):
        times = {}
        t0 = time.perf_counter()
        ckpt = shardload._Checkpoint(path)
        times["open"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        order = ckpt.offset_order()
        times["order"] = time.perf_counter() - t0
        loaded, report = ctypes.c_void_p(), ctypes.c_void_p()
        with _lib.Options(device=device, pool=pool) as options:
            t0 = time.perf_counter()
            with shardload._cuda_device_guard(device):
                _lib.check(l.sl_load_all(ckpt.handle, options.handle, None, 0,
                                         ctypes.byref(loaded), ctypes.byref(report)))
            times["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = _lib.LoadedTensor()
        convert = shardload._tensor_maker()  # what load_file converts with
        out = {}
        count = l.sl_loaded_count(loaded)
        for i in range(count):
            _lib.check(l.sl_loaded_get(loaded, i, ctypes.byref(info)))
            name = ctypes.string_at(info.name, info.name_len).decode("utf-8",
                                                                      "surrogateescape")
            out[name] = convert(loaded, i, info)
        result = {name: out[name] for name in order}
        times["convert"] = time.perf_counter() - t0
        nbytes = sum(t.numel() * t.element_size() for t in result.values())
        l.sl_report_free(report)
        l.sl_loaded_free(loaded)
        del out, result
        ckpt.close()
        t0 = time.perf_counter()
        whole = shardload.load_file(path, device=device, pool=pool)
        times["load_file, whole"] = time.perf_counter() - t0
        del whole
        for k, v in times.items():
            best[k] = min(best.get(k, v), v)
    print("python %s, shardload %s, %s, %d tensors, %.2f GB, best of %d" % (
        sys.version.split()[0], shardload.version(), device, count, nbytes / 1e9, repeats))
    for k, v in best.items():
        rate = " %6.2f GB/s" % (nbytes / v / 1e9) if k in ("load", "load_file, whole") else ""
        print("  %-18s %8.1f ms  %6.2f us/tensor%s" % (k, v * 1e3, v / count * 1e6, rate))


if __name__ == "__main__":
    main()
