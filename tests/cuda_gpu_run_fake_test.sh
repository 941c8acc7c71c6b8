#!/usr/bin/env bash
# A rehearsal of `bench/gpu_run.sh run` (what a GPU session runs) on this machine: the
# carried binaries are the fake-CUDA builds (cuda/fake: two fake devices), linked under
# the names the script expects, and the samples are small. Every step the script takes
# on the GPU machine must run and report rc=0 in summary.txt: the CUDA tests (which run
# their GPU cases on the fake devices), cuda_bench, write-sample, `shardload bench
# --device cuda:0` hot, cold (as root) and on MoE/llama samples of the same size,
# `--device cpu`, `shardload load --device cuda:0`, and the ratio lines. The reference needs torch with CUDA, so it reports SKIP here. No number this
# produces means anything about a GPU.
# Usage: cuda_gpu_run_fake_test.sh GPU_RUN_SH NAME=PATH...
set -uo pipefail
# The gtest binaries this runs would write their results (even a --gtest_list_tests
# listing) into Bazel's XML_OUTPUT_FILE, which is this test's own result file: they
# would be counted as this test's cases.
unset XML_OUTPUT_FILE
script="$1"
shift
work="${TEST_TMPDIR:-$(mktemp -d)}/gpu_run_fake"
rm -rf "$work" && mkdir -p "$work/carry/bin" "$work/carry/lib" "$work/out"
for pair in "$@"; do
  # Symlinks keep each binary's $ORIGIN-relative libraries (Bazel's _solib) resolvable.
  ln -s "$(readlink -f "${pair#*=}")" "$work/carry/bin/${pair%%=*}" || exit 1
done
# SOURCES.sha256 as prepare writes it (here for the script alone, the one source the
# runfiles surely hold): matching, so no stale warning.
root="$(cd "$(dirname "$script")/.." && pwd)"
(cd "$root" && sha256sum bench/gpu_run.sh) > "$work/carry/SOURCES.sha256"
# The cold bench drops the page cache, which needs root; elsewhere it is left out.
skip_cold=0
[ "$(id -u)" -eq 0 ] || skip_cold=1
CARRY_DIR="$work/carry" SKIP_PYTHON=1 SAMPLE_DIR="$work/sample" SAMPLE_SIZE=48MiB \
  SAMPLE_SHARDS=3 REPEAT=2 MOE_SIZE=24MiB SKIP_COLD=$skip_cold RUN_BUDGET_S=100000 \
  BENCH_ARGS="--quick --max-mib 64 --source-mib 64" \
  "$script" run "$work/out" >"$work/run.log" 2>&1
rc=$?
cat "$work/run.log"
fails=0
check() {
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
summary="$work/out/summary.txt"
check "run exits 0" test $rc -eq 0
check "no bench step failed" bash -c "! grep -q '^ERROR: ' '$work/out/summary.txt'"
# What comes back from a device call is at most 8 files: the summary and one archive.
check "OUTDIR holds summary.txt and the two archives only" test "$(ls "$work/out" | tr '\n' ' ')" = "gpu-run-logs.tar.gz summary.txt test-logs.tar.gz "
check "the test archive holds the test logs" bash -c "tar -tzf '$work/out/test-logs.tar.gz' | grep -qx './cuda_gpu_test.log'"
check "the archive holds every log" bash -c "tar -tzf '$work/out/gpu-run-logs.tar.gz' | grep -qx './cuda_gpu_test.log' && tar -tzf '$work/out/gpu-run-logs.tar.gz' | grep -qx './bench_cuda_cold.json\|./bench_cuda_moe_2.json'"
for t in cuda_probe_test cuda_cast_math_test cuda_sink_host_test cuda_gpu_test cuda_loader_test; do
  check "$t ran and passed" grep -q "^test $t: rc=0 \[  PASSED  \] [0-9]* test" "$summary"
done
check "cuda_gpu_test ran its GPU cases (none skipped)" bash -c "! grep -q '^test cuda_gpu_test: .*SKIPPED' '$summary'"
check "cuda_bench ran" grep -q "^cuda_bench: rc=0 gpu \"shardload fake CUDA device 0 (cuda:0, 4.0 GiB)\"" "$summary"
check "copy_phase_bench ran on a sample shard" grep -q "^copy_phase_bench: rc=0 .*phase 8 ReadableFile [0-9.]* GB/s" "$summary"
check "the sample was written" grep -q "^sample: $work/sample-48MiB (48MiB, 3 shards, llama) written in [0-9]* s$" "$summary"
check "the MoE sample was written" grep -q "^sample: $work/sample-48MiB-moe-24MiB (24MiB, 4 shards, moe) written" "$summary"
check "the machine line names the kernel" grep -q "^machine: nproc=[0-9]* kernel=$(uname -r) " "$summary"
check "the ratios are printed after the cold step and at the end" \
  bash -c "grep -qx 'ratios so far:' '$summary' && grep -qx 'ratios at the end:' '$summary'"
check "the carried sources match: no stale warning" bash -c "! grep -q '^WARNING: the carried binaries are stale' '$summary'"
check "the disk line says where the samples go" grep -q "^disk: samples under $work (.*): .* free of " "$summary"
check "the ratios are also printed right after the hot goal steps" grep -qx 'ratios after the hot goal steps:' "$summary"
# Binaries built from other sources: said at the top, the run goes on.
mkdir -p "$work/stale" && cp -r "$work/carry/." "$work/stale/"
echo "0000000000000000000000000000000000000000000000000000000000000000  bench/gpu_run.sh" >"$work/stale/SOURCES.sha256"
CARRY_DIR="$work/stale" SKIP_TESTS=1 SKIP_SAMPLE=1 SKIP_CUDA_BENCH=1 \
  "$script" run "$work/out-stale" >"$work/stale.log" 2>&1
check "stale binaries are named" grep -qx "WARNING: the carried binaries are stale: built from other versions of bench/gpu_run.sh (run prepare again)" "$work/out-stale/summary.txt"
# Less than 60 s of the budget left: a bench is not started (it would be cut short and
# read as a failure).
CARRY_DIR="$work/carry" SKIP_TESTS=1 SAMPLE_DIR="$work/sample" SAMPLE_SIZE=48MiB SAMPLE_SHARDS=3 \
  SKIP_MOE=1 SKIP_COLD=1 SKIP_IO_MODES=1 SKIP_CUDA_BENCH=1 RUN_BUDGET_S=50 \
  "$script" run "$work/out-late" >"$work/late.log" 2>&1
check "a run near its budget does not start a bench (exit 0)" test $? -eq 0
check "... and says so" grep -q "^shardload bench --device cuda:0: skipped (less than 60 s of the RUN_BUDGET_S=50 left)$" "$work/out-late/summary.txt"
# A fractional STEP_LIMIT_SCALE used to abort the whole run at its first step (bash
# arithmetic) and still exit 0; it is refused before anything runs.
CARRY_DIR="$work/carry" STEP_LIMIT_SCALE=0.5 "$script" run "$work/out-bad-scale" >"$work/bad_scale.log" 2>&1
check "a fractional STEP_LIMIT_SCALE is refused (exit 2)" test $? -eq 2
check "... saying why" grep -q "^gpu_run run: STEP_LIMIT_SCALE must be a positive integer, not '0.5'$" "$work/bad_scale.log"
# A second run reuses the samples and says so.
CARRY_DIR="$work/carry" SKIP_TESTS=1 SAMPLE_DIR="$work/sample" SAMPLE_SIZE=48MiB SAMPLE_SHARDS=3 \
  REPEAT=1 SKIP_MOE=1 SKIP_COLD=1 SKIP_IO_MODES=1 SKIP_CUDA_BENCH=1 \
  "$script" run "$work/out2" >"$work/run2.log" 2>&1
check "a second run reuses the sample" grep -q "^sample: reusing $work/sample-48MiB (" "$work/out2/summary.txt"
# Out of budget: the steps are skipped, saying so, and the run still ends with its archive.
CARRY_DIR="$work/carry" SKIP_TESTS=1 SAMPLE_DIR="$work/sample" SAMPLE_SIZE=48MiB SAMPLE_SHARDS=3 \
  SKIP_MOE=1 SKIP_COLD=1 RUN_BUDGET_S=0 "$script" run "$work/out3" >"$work/run3.log" 2>&1
check "a run out of budget skips its steps and says so" \
  grep -q "^shardload bench --device cuda:0: skipped (the run has used [0-9]* s of its RUN_BUDGET_S=0)$" "$work/out3/summary.txt"
check "... the reference too" grep -q "^reference: skipped (the run has used" "$work/out3/summary.txt"
check "... and still writes its archive" test -s "$work/out3/gpu-run-logs.tar.gz"
CARRY_DIR="$work/carry" RUN_BUDGET_S=soon "$script" run "$work/out-bad-budget" >"$work/bad_budget.log" 2>&1
check "a RUN_BUDGET_S that is no number is refused (exit 2)" test $? -eq 2
check "bench --device cuda:0 ran" grep -q '^shardload bench --device cuda:0: rc=0 {"files":3,.*"device":"cuda:0"' "$summary"
check "bench --device cpu ran" grep -q '^shardload bench --device cpu: rc=0 {"files":3,' "$summary"
for ring in "4 64" "8 32"; do
  set -- $ring
  check "bench with a $1 x $2 MiB ring ran" grep -q "^shardload bench --device cuda:0 --slots $1 --slot-size $2MiB: rc=0 \"median_gbps\":[0-9.]*$" "$summary"
  check "the $1 x $2 MiB ring ratio line is printed" grep -q "^ratio: ring $1 x $2 MiB [0-9.]* GB/s / default ring 16 x 16 MiB [0-9.]* GB/s = [0-9.]*; / pinned H2D ceiling [0-9.]*$" "$summary"
done
if [ $skip_cold -eq 0 ]; then
  check "bench --device cuda:0 --cold ran" grep -q '^shardload bench --device cuda:0 --cold: rc=0 {"files":3,.*"cold":true' "$summary"
  check "the cold ratio line is printed" grep -q "^ratio: cold load [0-9.]* GB/s / O_DIRECT read [0-9.]* GB/s = [0-9.]* (binding " "$summary"
fi
for mode in mmap direct uring; do
  check "bench --io $mode ran" grep -q "^shardload bench --device cuda:0 --io $mode: rc=0 \"median_gbps\":[0-9.]* *$" "$summary"
done
if [ $skip_cold -eq 0 ]; then
  for mode in direct uring; do
    check "bench --io $mode --cold ran" grep -q "^shardload bench --device cuda:0 --io $mode --cold: rc=0 \"median_gbps\":[0-9.]* *$" "$summary"
  done
fi
check "the io-mode line is printed" grep -q "^io modes, median GB/s onto cuda:0: hot auto (pread) [0-9.]*; hot mmap (mmap) [0-9.]*; hot direct (direct) [0-9.]*; hot uring (uring) [0-9.]*" "$summary"
for layout in moe llama; do
  for round in 1 2; do
    check "bench $layout round $round ran" grep -q "^shardload bench --device cuda:0 $layout round $round: rc=0 \"median_gbps\":[0-9.]*$" "$summary"
  done
done
check "the moe/llama ratio line is printed" grep -q "^ratio: moe (~19k tensors) / llama, same bytes, per round = [0-9.]*, [0-9.]*$" "$summary"
check "the time line is printed" grep -q "^time: the last LoadAll onto cuda:0 took [0-9.]* s, of which [0-9.]* s allocating its arena (cudaMalloc); LoadInto (no allocation) median [0-9.]* GB/s$" "$summary"
check "the pinned line is printed" grep -q "^pinned: staging held after the loads 268435456 bytes; the ring 268435456 bytes$" "$summary"
check "load --device cuda:0 ran" grep -q '^shardload load --device cuda:0: rc=0 "gbps":' "$summary"
check "the reference skips without torch CUDA" grep -q "^SKIP: " "$summary"
check "the ratio lines are printed" grep -q "^ratio: shardload bench's own pinned H2D ceiling [0-9.]* GB/s; load / that = [0-9.]*$" "$summary"
# Memory that cannot be pinned (the fake's SHARDLOAD_FAKE_CUDA_CANNOT_PIN, as in a
# sandbox that refuses to pin): the GPU steps still run, and the summary says that they
# staged through pageable memory, so their rates are not taken for the pinned path's.
SHARDLOAD_FAKE_CUDA_CANNOT_PIN=1 CARRY_DIR="$work/carry" SKIP_TESTS=1 SAMPLE_DIR="$work/sample" \
  SAMPLE_SIZE=48MiB SAMPLE_SHARDS=3 SKIP_MOE=1 SKIP_COLD=1 SKIP_IO_MODES=1 SKIP_CUDA_BENCH=1 \
  "$script" run "$work/out-pageable" >"$work/pageable.log" 2>&1
check "a run that cannot pin exits 0" test $? -eq 0
pageable="$work/out-pageable/summary.txt"
check "... its bench onto cuda:0 ran" grep -q '^shardload bench --device cuda:0: rc=0 ' "$pageable"
check "... and is flagged as pageable" grep -q "^WARNING: shardload bench --device cuda:0 staged through pageable memory (pinning refused): pinned staging memory was refused (cudaHostRegister: cudaErrorNotSupported: operation not supported (allocating 268435456 bytes of pinned memory))" "$pageable"
check "... the staging line says PAGEABLE" grep -q "^WARNING: pinned: none; staging held after the loads 268435456 bytes of PAGEABLE memory (pinning refused: pinned staging memory was refused" "$pageable"
check "... load --device cuda:0 ran" grep -q '^shardload load --device cuda:0: rc=0 "gbps":' "$pageable"
echo "$fails failed"
[ "$fails" -eq 0 ]
