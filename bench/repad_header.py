#!/usr/bin/env python3
"""repad_header.py SRC DST PHASE — copy a safetensors checkpoint (a file or a folder of
shards with its index) so that every shard's data section starts at PHASE modulo 64.

Pads each header with spaces after its JSON (the format allows trailing whitespace, and
the tensors' data_offsets are relative to the data section, so nothing else changes);
other files of a folder are copied as they are. Used to compare checkpoints that differ
only in tensor count at the same phase (bench/RESULTS.md, "File phase"). Writes DST
(which must not exist) and fsyncs nothing: a benchmark helper, not a tool for users.
"""
import os
import shutil
import struct
import sys


def repad(src, dst, phase):
    with open(src, "rb") as f, open(dst, "xb") as g:
        n = struct.unpack("<Q", f.read(8))[0]
        header = f.read(n).rstrip(b" ")
        size = len(header)
        size += (phase - (8 + size)) % 64
        g.write(struct.pack("<Q", size))
        g.write(header + b" " * (size - len(header)))
        shutil.copyfileobj(f, g, 16 << 20)
    return (8 + size) % 64


def main(argv):
    if len(argv) != 4 or not argv[3].isdigit() or int(argv[3]) >= 64:
        sys.exit("usage: repad_header.py SRC DST PHASE (PHASE in 0..63)")
    src, dst, phase = argv[1], argv[2], int(argv[3])
    if os.path.isfile(src):
        print(dst, repad(src, dst, phase))
        return
    os.mkdir(dst)
    for name in sorted(os.listdir(src)):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if name.endswith(".safetensors"):
            print(name, repad(s, d, phase))
        else:
            shutil.copyfile(s, d)


if __name__ == "__main__":
    main(sys.argv)
