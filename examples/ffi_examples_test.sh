#!/usr/bin/env bash
# examples/ffi_examples_test.sh C_LOAD LIBSHARDLOAD SHARDLOAD_H RUST_SRC GO_MAIN GO_MOD —
# build the Rust and Go examples against libshardload.so with the toolchains
# tools/setup installs (Debian's rustc and golang-go; no crates or Go modules from the
# network), run each on the checkpoint examples/c_load writes, and check their output.
set -euo pipefail
c_load="$1"; lib="$(realpath "$2")"; header="$(realpath "$3")"
rust_src="$4"; go_main="$5"; go_mod="$6"
libdir="$(dirname "$lib")"; incdir="$(dirname "$header")"  # dlpack.h is next to shardload.h
if [ -n "${TEST_TMPDIR:-}" ]; then
  tmp="$TEST_TMPDIR"
else
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
fi

# A sanitizer build of the library needs its runtime loaded first, which the Rust and
# Go runtimes here are not built for (tools/test leaves this test out of its ASan pass).
if grep -qE ' U __(asan_init|ubsan_)' <<<"$(nm -D "$lib")"; then
  why="libshardload.so is a sanitizer build; foreign runtimes cannot load it"
  echo "SKIP: $why"
  if [ -n "${XML_OUTPUT_FILE:-}" ]; then  # a skipped case for Bazel and tools/count_tests.py
    printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="ffi_examples_test" tests="1" skipped="1"><testcase name="ffi_examples_test" classname="examples"><skipped message="%s"/></testcase></testsuite></testsuites>\n' \
      "$why" >"$XML_OUTPUT_FILE"
  fi
  exit 0
fi
# find_tool NAME: Debian's (what tools/setup installs), else the first on PATH.
find_tool() {
  if [ -x "/usr/bin/$1" ]; then echo "/usr/bin/$1"; return; fi
  command -v "$1" 2>/dev/null ||
    { echo "$1 not found: run tools/setup (it installs Debian's rustc and golang-go)" >&2; exit 1; }
}
rustc="$(find_tool rustc)"; go="$(find_tool go)"
echo "using $("$rustc" --version) and $("$go" version)"

ckpt="$tmp/ffi_ckpt"
rm -rf "$ckpt"; mkdir -p "$ckpt"
"$c_load" "$ckpt" >/dev/null

expect() { grep -qxF -- "$1" <<<"$2" || { echo "missing line: $1"; exit 1; }; }

# Rust: rustc alone, warnings as errors.
"$rustc" --edition 2021 -D warnings -L "native=$libdir" -l dylib=shardload \
  -C "link-arg=-Wl,-rpath,$libdir" "$rust_src" -o "$tmp/rust_load"
out=$("$tmp/rust_load" "$ckpt" 2>&1) || { echo "$out"; echo "rust_load failed"; exit 1; }
echo "$out"
expect "  layers.1.weight F32 [8, 8] in model-00002-of-00003.safetensors" "$out"
expect 'non-strict: matched ["layers.0.weight", "layers.1.weight", "layers.2.weight"], missing ["head.weight"], unexpected []' "$out"
expect "layers.1.weight[9] = 109, head.weight untouched = true" "$out"
expect 'strict: invalid_argument: Error(s) in loading state_dict: Missing key(s) in state_dict: "head.weight".' "$out"
expect 'strict report missing Some(["head.weight"])' "$out"
expect "device: invalid_argument: invalid device-map entry 'gpu:0': invalid device 'gpu:0': expected cpu, cuda or cuda:N" "$out"
expect "loaded 3 tensors; layers.2.weight on cpu: first 200 last 263" "$out"
expect "dlpack: shape [8, 8] code 2 bits 32 device 1; element 9 = 9; live arenas 1" "$out"
expect "after the deleter: live arenas 0" "$out"
if err=$("$tmp/rust_load" "$ckpt/none" 2>&1); then echo "expected failure"; exit 1; fi
expect "error: not_found: $ckpt/none: no such file or directory" "$err"

# Go: cgo with the installed-header layout (shardload.h next to dlpack.h), offline
# (GOPROXY=off, GOFLAGS=-mod=mod: the module has no dependencies), with cgo's pointer
# checks at their strictest: GODEBUG=cgocheck=2 at run time up to Go 1.20, the
# cgocheck2 experiment at build time from Go 1.21 on (which refuses the GODEBUG form).
go_minor="$("$go" env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')"
strict_build=(); strict_run=(GODEBUG=cgocheck=2)
if [ -n "$go_minor" ] && [ "$go_minor" -ge 21 ]; then
  strict_build=(GOEXPERIMENT=cgocheck2); strict_run=()
fi
mkdir -p "$tmp/go_load"
cp "$go_main" "$tmp/go_load/main.go"; cp "$go_mod" "$tmp/go_load/go.mod"
(cd "$tmp/go_load" &&
  HOME="$tmp" GOCACHE="$tmp/gocache" GOPATH="$tmp/gopath" GOPROXY=off GOFLAGS=-mod=mod \
  CGO_ENABLED=1 CGO_CFLAGS="-I$incdir" CGO_LDFLAGS="-L$libdir -Wl,-rpath,$libdir" \
  env "${strict_build[@]}" "$go" build -o "$tmp/go_load_bin" .)
out=$(env "${strict_run[@]}" "$tmp/go_load_bin" "$ckpt" 2>&1) ||
  { echo "$out"; echo "go_load failed"; exit 1; }
echo "$out"
expect "3 tensors in 3 shards" "$out"
expect "loaded with verify: matched 3, missing 0, unexpected 0" "$out"
expect "  layers.2.weight F32 [8 8] on cpu: first 200 last 263" "$out"
expect "goroutine sums: [2016 8416 14816], equal to the serial sums: true" "$out"
expect "4 concurrent loads: errors [<nil> <nil> <nil> <nil>], layers.1.weight[0] [100 100 100 100], live arenas 0" "$out"
expect "load_state_dict into C buffers: matched 3, layers.2.weight[9] = 209" "$out"
expect "subset: matched [layers.2.weight], missing [lm_head.weight], unexpected [layers.0.weight layers.1.weight], loaded 1" "$out"
expect 'subset, strict: invalid_argument: Error(s) in loading state_dict: Missing key(s) in state_dict: "lm_head.weight". Unexpected key(s) in state_dict: "layers.0.weight", "layers.1.weight". (report missing [lm_head.weight])' "$out"
expect "cancelled: cancelled: load cancelled" "$out"
expect "open missing: not_found: $ckpt/missing: no such file or directory" "$out"
expect "live arenas at the end: 0" "$out"
echo "ffi examples ok"
