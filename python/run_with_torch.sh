#!/usr/bin/env bash
# python/run_with_torch.sh SCRIPT LIBSHARDLOAD [ARGS...] — run a Python test or example with
# the shardload package (python/) and libshardload.so. The interpreter is the first of
# /usr/bin/python3 (Debian's python3-torch, installed by tools/setup) and `python3` on
# PATH that can import torch; without one the test is skipped (exit 0, "SKIP" printed).
set -euo pipefail
script="$1"; shift
lib="$1"; shift
py=""
for cand in /usr/bin/python3 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch' >/dev/null 2>&1; then
    py="$cand"; break
  fi
done
if [ -z "$py" ]; then
  echo "SKIP: no Python interpreter here can import torch (tools/setup installs python3-torch)"
  exit 0
fi
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$script" "$PWD/$lib" "$@"
