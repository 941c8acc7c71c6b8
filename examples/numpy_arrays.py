"""examples/numpy_arrays.py — safetensors checkpoints as numpy arrays, without torch (a
JAX or numpy pipeline): write the weights of a small two-layer network, load them
back, run the network on both, read a few rows of one tensor without the rest, and
check what was recorded.

    PYTHONPATH=python python3 examples/numpy_arrays.py bazel-bin/capi/libshardload.so /tmp/np_example
"""
import os
import sys

import numpy as np

import shardload
import shardload.numpy as snp


def forward(w, x):
    h = np.maximum(x @ w["layers.0.weight"].T + w["layers.0.bias"], 0)
    return h @ w["layers.1.weight"].T + w["layers.1.bias"]


def main():
    shardload.set_library_path(sys.argv[1])
    folder = sys.argv[2]
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    weights = {
        "layers.0.weight": rng.standard_normal((16, 8), dtype=np.float32),
        "layers.0.bias": np.zeros(16, dtype=np.float32),
        "layers.1.weight": rng.standard_normal((4, 16), dtype=np.float32),
        "layers.1.bias": np.full(4, 0.5, dtype=np.float32),
        "embed.weight": rng.standard_normal((1000, 8)).astype(np.float16),
    }
    path = os.path.join(folder, "model.safetensors")
    # checksums=True records each tensor's XXH3, which verify=True checks on loading.
    snp.save_file(weights, path, metadata={"framework": "numpy", "step": "100"},
                  checksums=True)
    print("wrote %s (%d bytes)" % (os.path.basename(path), os.path.getsize(path)))

    loaded = snp.load_file(path, verify=True)  # parallel reads into one host arena
    for name, a in loaded.items():
        print("  %-16s %-8s %s" % (name, a.dtype, a.shape))
    x = rng.standard_normal((3, 8), dtype=np.float32)
    print("outputs equal: %s" % np.array_equal(forward(weights, x), forward(loaded, x)))

    with shardload.safe_open(path, framework="np") as f:
        print("metadata step: %s" % f.metadata()["step"])
        rows = f.get_slice("embed.weight")[10:13]  # reads those 3 rows only
        print("rows 10:13 equal: %s" % np.array_equal(rows, weights["embed.weight"][10:13]))


if __name__ == "__main__":
    main()
