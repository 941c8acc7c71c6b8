#!/usr/bin/env bash
# examples/python_example_test.sh LIBSHARDLOAD [--python PY] — run
# examples/python_model.py (through python/run_with_torch.sh, which skips without torch;
# with PY only, when given) and check its report.
set -euo pipefail
lib="$1"; shift
out=$(python/run_with_torch.sh "$@" examples/python_model.py "$lib" "${TEST_TMPDIR:-/tmp}/py_example")
echo "$out"
if grep -q '^SKIP' <<<"$out"; then exit 0; fi
for line in "matched 7, missing 0, unexpected 0, mismatched 0" "weights equal: True" \
            "outputs equal: True" "  mlp.0.weight"; do
  grep -qxF -- "$line" <<<"$out" || { echo "missing line: $line"; exit 1; }
done
grep -qE '^wrote [2-9] shards: model-00001-of-0000[2-9].safetensors' <<<"$out" ||
  { echo "expected several shards"; exit 1; }
