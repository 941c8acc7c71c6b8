"""python/bench_model.py — torch ``load_model`` (load_state_dict-style, into an existing
module) and ``save_file``, shardload's against safetensors.torch's in the same run (host,
page cache).

    PYTHONPATH=python PY python/bench_model.py LIBRARY /tmp/sl_bench_model [REPEATS]

Builds two modules (16 Linear(2048, 2048) layers, 269 MB of F32; 2,000 Linear(64, 64)
layers, 34 MB in 4,000 tensors), writes each once with safetensors.torch.save_file under
the folder given, then reports the best of REPEATS (default 7) rounds, the two libraries
alternated within each round:
  - load_model(module, path): shardload.load_model against safetensors.torch.load_model
    (strict; both copy the file's values into the module's existing parameters);
  - save_file(state_dict, path): shardload.save_file (temporary file, fsync, rename)
    against safetensors.torch.save_file (builds the file's bytes in memory, then writes,
    no fsync), each into a file of its own in the folder given.
Also the ceiling: one torch copy of as many bytes between two host tensors.
"""
import os
import sys

import torch
import safetensors.torch as st

import shardload
from bench_rounds import best_of


class Stack(torch.nn.Module):
    def __init__(self, layers, width):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width)
                                          for _ in range(layers))


def main():
    shardload.set_library_path(sys.argv[1])
    root = sys.argv[2]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    os.makedirs(root, exist_ok=True)
    torch.manual_seed(0)
    print("python %s, torch %s, safetensors %s, %d cpus" % (
        sys.version.split()[0], torch.__version__, __import__("safetensors").__version__,
        os.cpu_count()))
    for label, layers, width in [("16 x Linear(2048)", 16, 2048),
                                 ("2000 x Linear(64)", 2000, 64)]:
        source = Stack(layers, width)
        path = os.path.join(root, "stack_%d_%d.safetensors" % (layers, width))
        if not os.path.exists(path):
            st.save_file(source.state_dict(), path)
        nbytes = os.path.getsize(path)
        target = Stack(layers, width)
        state = source.state_dict()
        src = torch.ones(nbytes, dtype=torch.uint8)
        dst = torch.empty_like(src)
        load = best_of({
            "shardload.load_model": lambda: shardload.load_model(target, path),
            "safetensors.torch.load_model": lambda: st.load_model(target, path),
            "ceiling: torch copy of the same bytes": lambda: dst.copy_(src),
        }, repeats)
        for p in target.parameters():  # shardload's own load gives the saved state
            with torch.no_grad():
                p.zero_()
        shardload.load_model(target, path)
        for k, v in state.items():
            assert torch.equal(target.state_dict()[k], v), k
        save = best_of({
            "shardload.save_file": lambda: shardload.save_file(
                state, os.path.join(root, "ours.safetensors")),
            "safetensors.torch.save_file": lambda: st.save_file(
                state, os.path.join(root, "theirs.safetensors")),
        }, repeats)
        print("%s, %d tensors, %.0f MB:" % (label, len(state), nbytes / 1e6))
        for results, ref in [(load, "safetensors.torch.load_model"),
                             (save, "safetensors.torch.save_file")]:
            for k, t in results.items():
                print("  %-40s best %.4f s  %6.2f GB/s  %.2fx safetensors' time" % (
                    k, t, nbytes / t / 1e9, t / results[ref]))
        del src, dst


if __name__ == "__main__":
    main()
