"""examples/python_model.py — write a small sharded checkpoint from a torch module, load
it into a fresh module with strict matching, and print the report.

    PYTHONPATH=python python3 examples/python_model.py bazel-bin/capi/libshardload.so /tmp/ckpt
"""
import os
import sys

import torch

import shardload


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(32, 8)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 8))
        self.norm = torch.nn.LayerNorm(8)


def main():
    shardload.set_library_path(sys.argv[1])
    folder = sys.argv[2]
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    source = TinyLM()
    shardload.save_sharded(source.state_dict(), folder, max_shard_size="1KB")
    shards = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    print("wrote %d shards: %s" % (len(shards), ", ".join(shards)))

    target = TinyLM()
    report = shardload.load_state_dict_into(target, folder, strict=True)
    print("matched %d, missing %d, unexpected %d, mismatched %d" %
          (len(report["matched"]), len(report["missing"]), len(report["unexpected"]),
           len(report["mismatched"])))
    for name in report["matched"]:
        print("  " + name)
    same = all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
    print("weights equal: %s" % same)
    tokens = torch.tensor([1, 2, 3])
    with torch.no_grad():
        out = target.norm(target.mlp(target.embed(tokens)))
        ref = source.norm(source.mlp(source.embed(tokens)))
    print("outputs equal: %s" % torch.equal(out, ref))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
