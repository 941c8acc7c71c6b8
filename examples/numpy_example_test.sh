#!/usr/bin/env bash
# examples/numpy_example_test.sh LIBSHARDLOAD [--python PY] — run examples/numpy_arrays.py
# (through python/run_with_torch.sh --needs numpy: an interpreter with numpy, torch or
# not; skipped without one) and check what it prints.
set -euo pipefail
lib="$1"; shift
out=$(python/run_with_torch.sh "$@" --needs numpy examples/numpy_arrays.py "$lib" \
      "${TEST_TMPDIR:-/tmp}/np_example")
echo "$out"
if grep -q '^SKIP' <<<"$out"; then exit 0; fi
for line in "outputs equal: True" "metadata step: 100" "rows 10:13 equal: True" \
            "  embed.weight     float16  (1000, 8)"; do
  grep -qxF -- "$line" <<<"$out" || { echo "missing line: $line"; exit 1; }
done
grep -qE '^wrote model.safetensors \([0-9]+ bytes\)$' <<<"$out" ||
  { echo "expected the written file's size"; exit 1; }
