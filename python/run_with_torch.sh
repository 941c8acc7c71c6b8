#!/usr/bin/env bash
# python/run_with_torch.sh [--python PY] [--needs MODULE] SCRIPT LIBSHARDLOAD [ARGS...] — run
# a Python test or example with the shardload package (python/) and libshardload.so. The
# interpreter is the first of /usr/bin/python3 (Debian's python3-torch, installed by
# tools/setup) and `python3` on PATH that can import torch (with --needs, MODULE
# instead, e.g. numpy for what must run without torch); without one the test is skipped
# (exit 0, "SKIP" printed, and a JUnit file with one skipped case written to
# $XML_OUTPUT_FILE under Bazel). With --python PY, only PY is tried (skipped when it is
# missing or lacks the module).
set -euo pipefail
candidates=(/usr/bin/python3 python3)
needs=torch
while [ "${1:-}" = "--python" ] || [ "${1:-}" = "--needs" ]; do
  if [ "$1" = "--python" ]; then candidates=("$2"); else needs="$2"; fi
  shift 2
done
script="$1"; shift
lib="$1"; shift
py=""
for cand in "${candidates[@]}"; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import $needs" >/dev/null 2>&1; then
    py="$cand"; break
  fi
done
if [ -z "$py" ]; then
  why="no Python interpreter here can import $needs (${candidates[*]}; tools/setup installs them)"
  echo "SKIP: $why"
  if [ -n "${XML_OUTPUT_FILE:-}" ]; then  # tell Bazel (and tools/count_tests.py) it skipped
    printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="%s" tests="1" skipped="1"><testcase name="%s" classname="run_with_torch"><skipped message="%s"/></testcase></testsuite></testsuites>\n' \
      "$(basename "$script")" "$(basename "$script")" "$why" >"$XML_OUTPUT_FILE"
  fi
  exit 0
fi
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
echo "run_with_torch: $py ($("$py" -c "import sys, $needs; print('python', sys.version.split()[0], '$needs', $needs.__version__)"))" >&2
exec "$py" "$script" "$PWD/$lib" "$@"
