#!/usr/bin/env bash
# fuzz/build.sh — build shardload's libFuzzer targets with clang, straight from the
# sources (Bazel 4's gcc toolchain cannot link libFuzzer binaries).
#
#   fuzz/build.sh [OUT_DIR] [TARGET...]     (default OUT_DIR: /tmp/shardload-fuzz)
#   OUT_DIR/header_fuzzer -max_total_time=60 CORPUS_DIR
#
# Sanitizers: address, undefined and unsigned-integer-overflow, all fatal
# (-fno-sanitize-recover=all), plus libstdc++'s container assertions. Unsigned wraps are
# bugs in shardload's code: size arithmetic is checked, and the one place that wraps on
# purpose (xxHash) is compiled into libxxhash, outside the instrumented code. Wraps in
# system headers (simdjson's inline code, libstdc++'s hashing) are intended and are
# ignored through fuzz/ubsan_ignorelist.txt.
#
# Environment: CXX (default clang++), JOBS (parallel compiles, default 2),
# FUZZ_EXTRA_FLAGS (appended to the compile flags).
# Exit status: 0 built; 77 when clang or its libFuzzer runtime is missing (callers treat
# it as "skip"); 1 on a compile or link error.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-/tmp/shardload-fuzz}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(header_fuzzer index_fuzzer checkpoint_fuzzer)
cxx="${CXX:-clang++}"
jobs="${JOBS:-2}"

# The library sources each target links (keep in step with the Bazel deps).
format_srcs="format/status.cc format/dtype.cc format/text.cc format/json_syntax.cc format/header.cc"
declare -A target_srcs=(
  [header_fuzzer]="$format_srcs"
  [index_fuzzer]="$format_srcs format/index.cc"
  [checkpoint_fuzzer]="$format_srcs format/index.cc format/checksum.cc format/folder_lock.cc loader/bus_guard.cc loader/file.cc loader/uring.cc
                       loader/checkpoint.cc loader/checkpoint_hash.cc"
)

if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "fuzz/build.sh: $cxx not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 77
fi
mkdir -p "$out/obj"
probe="$out/obj/probe.cc"
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"$probe"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe" -o "$out/obj/probe" 2>"$out/obj/probe.log"; then
  echo "fuzz/build.sh: $cxx cannot link libFuzzer binaries (libclang-rt-14-dev missing?):" >&2
  head -3 "$out/obj/probe.log" >&2
  exit 77
fi

flags=(-std=c++20 -gline-tables-only -O1 -fno-omit-frame-pointer -I"$root"
       -fsanitize=address,undefined,unsigned-integer-overflow -fno-sanitize-recover=all
       -fsanitize-ignorelist="$root/fuzz/ubsan_ignorelist.txt"
       -D_GLIBCXX_ASSERTIONS -Wall -Wno-sign-compare ${FUZZ_EXTRA_FLAGS:-})
libs=(-lsimdjson -lxxhash -lpthread -lrt)

# Every source any requested target needs, compiled once (in parallel, JOBS at a time).
declare -A needed=()
for t in "${targets[@]}"; do
  [ -n "${target_srcs[$t]+x}" ] || { echo "fuzz/build.sh: unknown target $t" >&2; exit 1; }
  for s in ${target_srcs[$t]} fuzz/$t.cc; do needed[$s]=1; done
done
compile() {  # compile SRC: into $out/obj/<path with / as _>.o, only when out of date
  local src="$1" obj="$out/obj/${1//\//_}.o"
  local stamp="$obj.flags"
  if [ -f "$obj" ] && [ "$obj" -nt "$root/$src" ] && [ -f "$stamp" ] &&
     [ "$(cat "$stamp")" = "${flags[*]}" ] &&
     ! find "$root/format" "$root/loader" -name '*.h' -newer "$obj" | grep -q .; then
    return 0
  fi
  local fuzz_flag=-fsanitize=fuzzer-no-link
  "$cxx" "${flags[@]}" $fuzz_flag -c "$root/$src" -o "$obj" && echo "${flags[*]}" >"$stamp"
}
failed=0
running=0
pids=()
for s in "${!needed[@]}"; do
  compile "$s" &
  pids+=($!)
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ $running -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
[ $failed -eq 0 ] || { echo "fuzz/build.sh: compile failed" >&2; exit 1; }

for t in "${targets[@]}"; do
  objs=()
  for s in ${target_srcs[$t]} fuzz/$t.cc; do objs+=("$out/obj/${s//\//_}.o"); done
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "${objs[@]}" "${libs[@]}" -o "$out/$t"
  echo "built $out/$t"
done
