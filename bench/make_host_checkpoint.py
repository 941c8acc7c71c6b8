#!/usr/bin/env python3
"""Write a llama-style sharded safetensors checkpoint for the host-load benchmark.

Usage: make_host_checkpoint.py OUT_DIR [--gib 2.0] [--shards 4]
Layers of attention and MLP weights (F16) plus small norms, split into shards with a
model.safetensors.index.json, written with the Hugging Face reference writer. A
stand-in until `shardload write-sample` is available.
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    hidden, inter = 2048, 5632
    per_layer = (4 * hidden * hidden + 3 * hidden * inter) * 2 + 2 * hidden * 2
    layers = max(1, int(args.gib * (1 << 30) / per_layer))
    rng = np.random.default_rng(0)
    tensors = []
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors.append((p + "self_attn." + n + ".weight", (hidden, hidden)))
        tensors.append((p + "mlp.gate_proj.weight", (inter, hidden)))
        tensors.append((p + "mlp.up_proj.weight", (inter, hidden)))
        tensors.append((p + "mlp.down_proj.weight", (hidden, inter)))
        tensors.append((p + "input_layernorm.weight", (hidden,)))
        tensors.append((p + "post_attention_layernorm.weight", (hidden,)))
    per_shard = (len(tensors) + args.shards - 1) // args.shards
    weight_map = {}
    total = 0
    block = rng.standard_normal(1 << 22).astype(np.float16)  # reused random data
    for s in range(args.shards):
        name = f"model-{s + 1:05d}-of-{args.shards:05d}.safetensors"
        chunk = {}
        for tname, shape in tensors[s * per_shard:(s + 1) * per_shard]:
            n = int(np.prod(shape))
            reps = -(-n // block.size)
            chunk[tname] = np.tile(block, reps)[:n].reshape(shape) * np.float16(1 + s)
            weight_map[tname] = name
            total += n * 2
        save_file(chunk, os.path.join(args.out, name))
        del chunk
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(f"{layers} layers, {len(tensors)} tensors, {total / 2**30:.2f} GiB in {args.shards} shards")


if __name__ == "__main__":
    main()
