#!/usr/bin/env bash
# The host-side parts of bench/gpu_run.sh (the script a GPU session runs): library
# filtering and ldd-based copying, on a dynamically linked CUDA test binary, and the
# usage error for an unknown subcommand.
set -uo pipefail
# The gtest binaries this runs would write their results (even a --gtest_list_tests
# listing) into Bazel's XML_OUTPUT_FILE, which is this test's own result file: they
# would be counted as this test's cases.
unset XML_OUTPUT_FILE
script="$1"
binary="$2"
out="$("$script" selftest "$binary" 2>&1)"
rc=$?
echo "$out"
if [ $rc -ne 0 ]; then
  echo "FAIL: selftest exited $rc"
  exit 1
fi
case "$out" in
  *"selftest: copy_libs"*"selftest: ok"*) ;;
  *) echo "FAIL: selftest did not report its copy and ok"; exit 1 ;;
esac
"$script" bogus >/dev/null 2>&1
rc=$?
if [ $rc -ne 2 ]; then
  echo "FAIL: unknown subcommand exited $rc, want 2"
  exit 1
fi
# `run` without a prepared .carry/ must fail with a clear message, not run anything.
tmp="$(mktemp -d)"
cp "$script" "$tmp/gpu_run.sh"
mkdir -p "$tmp/bench" && mv "$tmp/gpu_run.sh" "$tmp/bench/gpu_run.sh"
msg="$("$tmp/bench/gpu_run.sh" run "$tmp/out" 2>&1)"
rc=$?
rm -rf "$tmp"
if [ $rc -eq 0 ] || [[ "$msg" != *"shardload missing (run 'prepare' first and carry .carry/)"* ]]; then
  echo "FAIL: run without .carry/ gave rc=$rc: $msg"
  exit 1
fi
echo "PASS"
