#!/usr/bin/env bash
# examples/examples_test.sh C_LOAD CPP_LOAD — run the C example (writes a sharded
# checkpoint), then the C++ example on what it wrote, and check their output.
set -euo pipefail
c_load="$1"; cpp_load="$2"
dir="${TEST_TMPDIR:-/tmp}/examples_ckpt"
rm -rf "$dir"; mkdir -p "$dir"
out=$("$c_load" "$dir")
echo "$out"
expect() { grep -qxF -- "$1" <<<"$2" || { echo "missing line: $1"; exit 1; }; }
expect "3 tensors in 3 shards" "$out"
expect "  layers.1.weight F32 [8, 8] in model-00002-of-00003.safetensors" "$out"
expect "3 recorded hashes, verify on" "$out"
expect "matched 3, missing 0, unexpected 0" "$out"
expect "  layers.2.weight on cpu: first 200 last 263" "$out"
expect "dlpack: ndim 2 shape [8, 8] code 2 bits 32 device 1; element 9 = 109" "$out"
out=$("$cpp_load" "$dir")
echo "$out"
expect "3 shard(s), 3 tensor(s)" "$out"
expect "layers.0.weight F32 [8, 8] on cpu first=0" "$out"
expect "layers.2.weight F32 [8, 8] on cpu first=200" "$out"
expect "loaded 768 bytes" "$out"
# Errors go to stderr with the code and the path, and exit 1.
if err=$("$cpp_load" "$dir/none" 2>&1); then echo "expected failure"; exit 1; fi
expect "error: not_found: $dir/none: no such file or directory" "$err"
echo "examples ok"
