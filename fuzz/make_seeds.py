#!/usr/bin/env python3
"""fuzz/make_seeds.py OUT_DIR — write starting corpora for the fuzz targets.

OUT_DIR/header/      whole safetensors files (valid ones of every dtype and shape kind,
                     plus near misses) for header_fuzzer;
OUT_DIR/index/       model.safetensors.index.json bodies for index_fuzzer;
OUT_DIR/checkpoint/  checkpoint_fuzzer inputs: single files, and sharded sets encoded as
                     "SHARDS\\n" index ("\\n==SHARD==\\n" shard)* (see checkpoint_fuzzer.cc).

Standard library only (no safetensors or numpy needed). Deterministic.
"""
import hashlib
import json
import os
import struct
import sys

SEPARATOR = b"\n==SHARD==\n"

DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64,
    "I64": 64, "U64": 64,
}


def pattern(n, seed):
    out = bytearray()
    block = seed.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def nbytes(dtype, shape):
    count = 1
    for d in shape:
        count *= d
    return count * DTYPE_BITS[dtype] // 8


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape[, data]) laid out in order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for t in tensors:
        name, dtype, shape = t[0], t[1], t[2]
        blob = t[3] if len(t) > 3 else pattern(nbytes(dtype, shape), name)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def index(weight_map, metadata=None):
    body = {"weight_map": weight_map}
    if metadata is not None:
        body["metadata"] = metadata
    return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"


def sharded(index_bytes, shards):
    return b"SHARDS\n" + index_bytes + b"".join(SEPARATOR + s for s in shards)


def main():
    out = sys.argv[1]
    seeds = {"header": [], "index": [], "checkpoint": []}

    files = [
        safetensors([]),
        safetensors([], metadata={}),
        safetensors([("w", "F32", [2, 3])], metadata={"format": "pt"}),
        safetensors([(d, d, [4, 2]) for d in DTYPE_BITS]),
        safetensors([("scalar", "I32", []), ("empty", "F16", [0, 5]), ("v", "U8", [3])]),
        safetensors([("f4", "F4", [6]), ("f6", "F6_E2M3", [8])]),
        safetensors([("nul\u0000name", "U8", [1]), ("caf\u00e9", "BF16", [2]),
                     ("q\"b\\s", "I8", [1])]),
        safetensors([("w", "F32", [2])], metadata={"shardload.xxh3.w": "0123456789abcdef"}),
        safetensors([("w", "U8", [2], b"ab")],
                    metadata={"shardload.xxh3.w": "zz"}),
        safetensors([("w", "F32", [3])], pad=False),
        # Near misses: truncated data, trailing bytes, bad dtype, offsets off by one.
        safetensors([("w", "F32", [2, 3])])[:-1],
        safetensors([("w", "F32", [2, 3])]) + b"\0",
        safetensors([("w", "F33", [1], b"abcd")]),
        safetensors([("a", "U8", [2], b"xy"), ("b", "U8", [2], b"zw")]).replace(b"[2,4]", b"[3,4]"),
        struct.pack("<Q", 100_000_001) + b"{}",
        struct.pack("<Q", 2) + b"{}",
        b"\x02\x00\x00\x00\x00\x00\x00",
    ]
    seeds["header"] = files
    seeds["checkpoint"] = list(files)

    s1 = safetensors([("a.w", "F32", [2, 2]), ("b.w", "BF16", [3])], metadata={"format": "pt"})
    s2 = safetensors([("c.w", "U8", [5])], metadata={"format": "pt"})
    wm = {"a.w": "model-00001-of-00002.safetensors", "b.w": "model-00001-of-00002.safetensors",
          "c.w": "model-00002-of-00002.safetensors"}
    good_index = index(wm, {"total_size": 27})
    seeds["index"] += [
        good_index,
        index(wm),
        index(wm, {"total_size": "27", "producer": "x", "nested": {"a": [1, 2]}}),
        index({}),
        index({"w": "../escape.safetensors"}),
        index({"w": "/abs.safetensors"}),
        index({"w": "sub/dir.safetensors"}),
        index({"w": "model.bin"}),
        index({"w": 5}),
        b'{"weight_map": {"w": "a.safetensors", "w": "b.safetensors"}}',
        b'{"weight_map": {}, "weight_map": {}}',
        b"[]",
        b'{"metadata": {"total_size": 18446744073709551616}, "weight_map": {}}',
    ]
    seeds["checkpoint"] += [
        sharded(good_index, [s1, s2]),
        sharded(index(wm, {"shardload.xxh3.c.w": "0000000000000000"}), [s1, s2]),
        sharded(index({"a.w": "model-00001-of-00001.safetensors"}), [s1]),
        sharded(index(wm), [s1]),
        sharded(index(wm), [s2, s1]),
        sharded(index({"a.w": "model-00001-of-00002.safetensors",
                       "c.w": "model-00002-of-00002.safetensors"}), [s1, s2]),
    ]

    for kind, items in seeds.items():
        d = os.path.join(out, kind)
        os.makedirs(d, exist_ok=True)
        for i, blob in enumerate(items):
            with open(os.path.join(d, "seed-%03d" % i), "wb") as f:
                f.write(blob)


if __name__ == "__main__":
    main()
