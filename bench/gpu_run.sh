#!/usr/bin/env bash
# bench/gpu_run.sh — what a GPU session runs (docs/GPU.md explains the whole procedure).
#
#   bench/gpu_run.sh prepare        # here, on the build machine (Bazel, no GPU needed):
#                                   #   bazel build -c opt the CUDA tests, the CLI and
#                                   #   cuda_bench; copy them and every shared library
#                                   #   ldd names (except glibc's own) into .carry/
#   bench/gpu_run.sh run [OUTDIR]   # on the GPU machine (no Bazel there), from the repo
#                                   #   root with .carry/ carried: the CUDA tests, the
#                                   #   Python tests with CUDA tensors, cuda_bench,
#                                   #   a >=16 GB sample, `shardload bench --device cuda:0`
#                                   #   hot, cold and MoE vs llama (and Python's
#                                   #   load_file phases on the MoE sample), `shardload load`,
#                                   #   copy_phase_bench on a sample shard, and
#                                   #   the Hugging Face reference
#                                   #   (safetensors.torch.load_file(..., device="cuda:0"))
#                                   #   timed in the same run; OUTDIR (default $OUT, else
#                                   #   ./gpu-out) gets summary.txt and gpu-run-logs.tar.gz.
#   bench/gpu_run.sh selftest       # host-side checks of this script (used by CI:
#                                   #   tests/cuda_gpu_run_test.sh)
#
# Environment knobs for `run` (read by this script only, never by the library):
#   SAMPLE_SIZE (default 16GiB; 8GiB, said so, when the disk lacks room for 16),
#   SAMPLE_SHARDS (8), SAMPLE_DIR (/tmp/shardload-gpu-sample, or /var/tmp/... when /tmp
#   is a tmpfs, whose pages a cache drop cannot evict),
#   REPEAT (3), SKIP_SAMPLE=1 (tests and cuda_bench only), SKIP_TESTS=1 (no test
#   binaries, no Python tests), SKIP_PYTHON=1 (no Python tests), SKIP_CUDA_BENCH=1, SKIP_COLD=1 (no cold bench; it drops the
#   page cache, root only), SKIP_MOE=1 (no many-tensor comparison), MOE_SIZE (4GiB: an
#   MoE-layout sample and a llama one of this size, benched in alternation),
#   SKIP_IO_MODES=1 (no per-io-mode benches: hot mmap/direct/uring, cold direct/uring,
#   the numbers `--io auto` is to be chosen from),
#   BENCH_ARGS (extra cuda_bench args), STEP_LIMIT_SCALE (a positive integer, default 1:
#   multiplies each step's time limit: 120 s for a test binary, 60 s for the probes,
#   reference_diff and copy_phase_bench, 180-300 s for the others),
#   RUN_BUDGET_S (540: steps after this many seconds are skipped, so a 600 s device
#   call ends by itself with its archive), CARRY_DIR (default <repo>/.carry; tests/cuda_gpu_run_fake_test.sh points it at the
#   fake-CUDA builds to rehearse `run` on a machine without a GPU).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CARRY="${CARRY_DIR:-$ROOT/.carry}"
BINARIES=(
  "tests/cuda_gpu_test"
  "tests/cuda_probe_test"
  "tests/cuda_sink_host_test"
  "tests/cuda_cast_math_test"
  "tests/cuda_loader_test"
  "bench/cuda_bench"
  "bench/copy_phase_bench"
  "cli/shardload"
  "capi/libshardload.so"
)

# SOURCE_PATHS: what the carried binaries and the Python tests are made of (not the
# docs or RESULTS.md, which a session edits after preparing).
SOURCE_PATHS="capi cli cuda format loader python tests fuzz third_party bench/*.cc bench/*.h bench/BUILD.bazel bench/gpu_run.sh WORKSPACE .bazelrc"

# system_lib: libraries every Linux has, never copied (the GPU machine's newer glibc
# must be used, and libcuda comes from its driver).
system_lib() {
  case "$(basename "$1")" in
    linux-vdso.so*|ld-linux*|libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libcuda.so*) return 0 ;;
    *) return 1 ;;
  esac
}

# copy_libs BINARY DEST: every non-system library BINARY needs, resolved by ldd.
copy_libs() {
  local bin="$1" dest="$2" lib
  ldd "$bin" | awk '/=>/ { print $3 } !/=>/ && /^\s*\// { print $1 }' | while read -r lib; do
    [ -n "$lib" ] && [ -f "$lib" ] || continue
    system_lib "$lib" && continue
    cp -L -n "$lib" "$dest/" || return 1
  done
}

prepare() {
  cd "$ROOT" || exit 1
  local targets=()
  for b in "${BINARIES[@]}"; do targets+=("//${b%/*}:${b##*/}"); done
  bazel build -c opt "${targets[@]}" || { echo "gpu_run prepare: bazel build failed" >&2; exit 1; }
  rm -rf "$CARRY"
  mkdir -p "$CARRY/bin" "$CARRY/lib" || exit 1
  local bin_dir
  bin_dir="$(bazel info -c opt bazel-bin 2>/dev/null)" || bin_dir="$ROOT/bazel-bin"
  for b in "${BINARIES[@]}"; do
    cp -L "$bin_dir/$b" "$CARRY/bin/" || { echo "gpu_run prepare: missing $b" >&2; exit 1; }
    chmod u+w "$CARRY/bin/$(basename "$b")"
    copy_libs "$bin_dir/$b" "$CARRY/lib" || { echo "gpu_run prepare: ldd copy failed for $b" >&2; exit 1; }
  done
  # libstdc++ / libgcc_s from this Debian build are kept apart: used on the GPU machine
  # only when its own are missing or older (run() decides with ldd).
  mkdir -p "$CARRY/lib-fallback"
  for l in "$CARRY"/lib/libstdc++.so* "$CARRY"/lib/libgcc_s.so*; do
    [ -e "$l" ] && mv "$l" "$CARRY/lib-fallback/"
  done
  cp "$ROOT/bench/gpu_run.sh" "$CARRY/"
  # SOURCES.sha256: the sources the binaries were built from; `run` checks them against
  # the tree it runs in and warns that the binaries are stale when they differ.
  (cd "$ROOT" && git ls-files -z $SOURCE_PATHS | xargs -0 sha256sum) > "$CARRY/SOURCES.sha256" ||
    { echo "gpu_run prepare: cannot hash the sources" >&2; exit 1; }
  # STAMP: which commit the binaries were built from (run prints it first).
  {
    git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo "unknown commit"
    if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
      echo "tracked files modified"
    fi
    date -u +%Y-%m-%dT%H:%M:%SZ
  } | tr '\n' ' ' > "$CARRY/STAMP"
  local size
  size="$(du -sm "$CARRY" | cut -f1)"
  echo "gpu_run prepare: .carry/ holds $(ls "$CARRY/bin" | wc -l) binaries and $(ls "$CARRY/lib" | wc -l) libraries, ${size} MiB"
  if [ "$size" -gt 60 ]; then
    echo "gpu_run prepare: .carry/ is ${size} MiB, over the 64 MiB a device call can carry" >&2
    exit 1
  fi
}

# limit SECONDS CMD...: CMD under `timeout` (exit 124 when it runs out), so that a hung
# step (a deadlock seen first on a real GPU, say) costs STEP_LIMIT_SCALE × SECONDS, not
# the whole device call.
# Never past the run's budget either (RUN_BUDGET_S, see out_of_time): a step started
# late gets what is left of it, at least 5 s.
# LIMIT_CLAMPED is 1 after a call whose limit the budget shortened (a stop there is
# the budget's, not a failure of the step).
limit() {
  local seconds="$(($1 * ${STEP_LIMIT_SCALE:-1}))"
  shift
  local left=$((${RUN_BUDGET_S:-540} - SECONDS))
  [ "$left" -lt 5 ] && left=5
  LIMIT_CLAMPED=0
  if [ "$left" -lt "$seconds" ]; then
    seconds="$left"
    LIMIT_CLAMPED=1
  fi
  timeout --kill-after=10 "$seconds" "$@"
}

# out_of_time WHAT: true (and says WHAT was skipped) once the run has used RUN_BUDGET_S
# seconds (default 540), so that a device call of 600 s still ends by itself and
# brings back the full log archive instead of being cut off mid-step.
out_of_time() {
  if [ "$SECONDS" -ge "${RUN_BUDGET_S:-540}" ]; then
    say "$1: skipped (the run has used $SECONDS s of its RUN_BUDGET_S=${RUN_BUDGET_S:-540})"
    return 0
  fi
  return 1
}

# bench_step SECONDS NAME SHOW LABEL PATH ARGS...: `shardload bench PATH ARGS... --json`
# under limit, into $out/NAME.json and $out/NAME.err, then one summary line
# "shardload bench LABEL: rc=N ..." with, for SHOW=json, the report's first 600
# characters, for SHOW=median its median only, and the last stderr line if any. Uses the
# caller's (run's) $bin, $out and say.
bench_step() {
  local seconds="$1" name="$2" show="$3" label="$4" path="$5"
  shift 5
  out_of_time "shardload bench $label" && return 0
  if [ $((${RUN_BUDGET_S:-540} - SECONDS)) -lt 60 ]; then
    say "shardload bench $label: skipped (less than 60 s of the RUN_BUDGET_S=${RUN_BUDGET_S:-540} left)"
    return 0
  fi
  limit "$seconds" "$bin/shardload" bench "$path" "$@" --json > "$out/$name.json" 2> "$out/$name.err"
  local rc=$? shown err
  if [ "$show" = json ]; then
    shown=$(head -c 1400 "$out/$name.json")
  else
    shown=$(grep -o '"median_gbps":[0-9.]*' "$out/$name.json")
  fi
  # A failed or stopped bench: its last stderr line (the error, or under --json the
  # last number it measured before a time limit stopped it).
  err=""
  if [ $rc -ne 0 ]; then
    err=$(tail -1 "$out/$name.err")
    if [ "${LIMIT_CLAMPED:-0}" = 1 ] && { [ $rc -eq 124 ] || [ $rc -eq 137 ]; }; then
      err="(stopped at RUN_BUDGET_S=${RUN_BUDGET_S:-540}, not a failure) $err"
    else
      BENCH_FAILURES=$((${BENCH_FAILURES:-0} + 1))
    fi
  fi
  say "shardload bench $label: rc=$rc $shown${err:+ $err}"
  # A load that could not pin its staging ring ran from pageable memory: its rates are
  # not the pinned path's (docs/GPU.md).
  if grep -q "pinned staging memory was refused" "$out/$name.err" 2>/dev/null; then
    say "WARNING: shardload bench $label staged through pageable memory (pinning refused): $(grep -m1 -o 'pinned staging memory was refused.*' "$out/$name.err" | head -c 400)"
  fi
}

# reference_step DIR REPEAT: the Hugging Face reference in the same run (uses run's
# $out and say).
reference_step() {
  out_of_time "reference" && return 0
  # The Hugging Face reference in the same run: safetensors.torch.load_file per shard
  # straight to cuda:0 (hot page cache: the files were just read), best of $repeat.
  PYTHONUNBUFFERED=1 LD_LIBRARY_PATH="$PY_LD" limit 300 "$PY" - "$1" "$2" > "$out/reference.txt" 2>&1 <<'EOF'
import glob, os, sys, time
try:
    import torch
    from safetensors.torch import load_file
except Exception as e:  # noqa: BLE001
    print(f"SKIP: reference needs torch and safetensors: {e}")
    sys.exit(0)
if not torch.cuda.is_available():
    print("SKIP: torch sees no CUDA device")
    sys.exit(0)
d, repeat = sys.argv[1], int(sys.argv[2])
files = sorted(glob.glob(os.path.join(d, "*.safetensors")))
total = sum(os.path.getsize(f) for f in files)
best = None
for _ in range(repeat):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    for f in files:
        sd = load_file(f, device="cuda:0")
        n += len(sd)
        del sd
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"reference pass: {dt:.3f} s, {total / dt / 1e9:.3f} GB/s")  # kept if stopped later
    best = dt if best is None else min(best, dt)
print(f"reference safetensors.torch.load_file device=cuda:0 files={len(files)} tensors={n} "
      f"bytes={total} seconds={best:.3f} gbps={total / best / 1e9:.3f}")
EOF
  say "$(tail -1 "$out/reference.txt")"
}

# cuda_bench_step: bench/cuda_bench.cc (pinned allocation per mode, H2D ceilings,
# pageable H2D, CudaSink against the ceiling); uses run's $bin, $out and say.
cuda_bench_step() {
  [ "${SKIP_CUDA_BENCH:-0}" = "1" ] && return 0
  out_of_time "cuda_bench" && return 0
  # shellcheck disable=SC2086
  limit 240 "$bin/cuda_bench" ${BENCH_ARGS:-} > "$out/cuda_bench.txt" 2>&1
  say "cuda_bench: rc=$? $(grep -E '^(gpu|ceiling)' "$out/cuda_bench.txt" | tr '\n' ' ')"
}

# libs_resolve BIN: true when ldd finds every library of BIN.
libs_resolve() { ! ldd "$1" 2>&1 | grep -q "not found"; }

# run OUTDIR: the steps below write their many logs into a scratch folder; OUTDIR gets
# only summary.txt, test-logs.tar.gz (the test logs, written as soon as the tests ran)
# and gpu-run-logs.tar.gz (everything, at the end), because the device tool brings back
# at most 8 files from $OUT.
run() {
  if ! [[ "${STEP_LIMIT_SCALE:-1}" =~ ^[1-9][0-9]*$ ]]; then
    echo "gpu_run run: STEP_LIMIT_SCALE must be a positive integer, not '${STEP_LIMIT_SCALE}'" >&2
    return 2
  fi
  if ! [[ "${RUN_BUDGET_S:-540}" =~ ^(0|[1-9][0-9]*)$ ]]; then
    echo "gpu_run run: RUN_BUDGET_S must be a whole number of seconds, not '${RUN_BUDGET_S}'" >&2
    return 2
  fi
  local dest="${1:-${OUT:-$ROOT/gpu-out}}"
  mkdir -p "$dest" || exit 1
  dest="$(cd "$dest" && pwd)"  # the steps cd elsewhere
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/gpu-run.XXXXXX")" || exit 1
  # The summary is written straight into OUTDIR, so a run stopped at the device call's
  # time limit still brings back the lines it had reached.
  rm -f "$dest/summary.txt" "$dest/gpu-run-logs.tar.gz" "$dest/test-logs.tar.gz"
  run_steps "$work" "$dest/summary.txt"
  local rc=$?
  if [ -f "$dest/summary.txt" ]; then
    cp "$dest/summary.txt" "$work/summary.txt"
    tar -czf "$dest/gpu-run-logs.tar.gz" -C "$work" . || rc=1
    echo "gpu_run: $dest/summary.txt and $dest/gpu-run-logs.tar.gz (rc=$rc)"
  fi
  rm -rf "$work"
  return $rc
}

# size_bytes SIZE: bytes of a write-sample size ("16GiB", "512MiB", "4GB", "1000"), or
# nothing when it cannot tell.
size_bytes() {
  local s="$1" n unit
  n="${s%%[!0-9]*}"
  unit="${s#"$n"}"
  [ -n "$n" ] || return 0
  case "$unit" in
    ""|B) echo "$n" ;;
    KiB) echo $((n << 10)) ;;
    MiB) echo $((n << 20)) ;;
    GiB) echo $((n << 30)) ;;
    TiB) echo $((n << 40)) ;;
    KB|kB) echo $((n * 1000)) ;;
    MB) echo $((n * 1000000)) ;;
    GB) echo $((n * 1000000000)) ;;
  esac
}

# free_bytes DIR: bytes available on DIR's filesystem (its nearest existing parent).
free_bytes() {
  local d="$1"
  while [ ! -d "$d" ]; do d="$(dirname "$d")"; done
  df -P -B1 "$d" 2>/dev/null | awk 'NR == 2 { print $4 }'
}

# write_sample DIR SIZE SHARDS LAYOUT LOG: `shardload write-sample` unless DIR already
# holds one (a second call on the same machine), after checking the disk has room
# (size + 5%); says what it did. Fails with rc 2 without room, 1 when the write fails.
write_sample() {
  local dir="$1" size="$2" shards="$3" layout="$4" log="$5" need avail t0
  if [ -f "$dir/model.safetensors.index.json" ]; then
    say "sample: reusing $dir ($(du -sh "$dir" 2>/dev/null | cut -f1))"
    return 0
  fi
  out_of_time "sample $dir" && return 1
  rm -rf "$dir"
  need="$(size_bytes "$size")"
  avail="$(free_bytes "$dir")"
  if [ -n "$need" ] && [ -n "$avail" ] && [ "$avail" -lt $((need + need / 20)) ]; then
    say "sample: $dir ($size): only $((avail >> 20)) MiB free on $(df -P "$(dirname "$dir")" | awk 'NR == 2 { print $6 }'), not written"
    return 2
  fi
  t0=$SECONDS
  limit 300 "$bin/shardload" write-sample "$dir" --size "$size" --shards "$shards" --layout "$layout" \
    --dtype bf16 > "$log" 2>&1 || { say "write-sample $layout failed: $(tail -1 "$log")"; return 1; }
  say "sample: $dir ($size, $shards shards, $layout) written in $((SECONDS - t0)) s"
}

# ratios: the ratio lines from what the steps so far wrote into $out (run's); printed
# after the cold step and again at the end, so a call stopped at its limit keeps them.
ratios() {
  LD_LIBRARY_PATH="$PY_LD" "$PY" - "$out" <<'EOF'
import json, re, sys
out = sys.argv[1]
def load_json(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return {}
bench = load_json(f"{out}/bench_cuda.json")
load = load_json(f"{out}/load_cuda.json")
ours = bench.get("median_gbps") or bench.get("best_gbps") or load.get("gbps")
def find(path, pattern):
    try:
        m = re.search(pattern, open(path).read())
    except OSError:
        return None
    return float(m.group(1)) if m else None
ref = find(f"{out}/reference.txt", r"gbps=([0-9.]+)")
ceiling = find(f"{out}/cuda_bench.txt", r"h2d_pinned_best_gbps=([0-9.]+)")
same_run_h2d = (bench.get("ceilings") or {}).get("h2d_gbps")
if bench.get("ring_bytes"):
    if bench.get("staging_pinned") is False:
        print(f"WARNING: pinned: none; staging held after the loads {bench.get('staging_bytes')} "
              f"bytes of PAGEABLE memory (pinning refused: {'; '.join(bench.get('warnings') or [])}); "
              f"the ring {bench.get('ring_bytes')} bytes")
    else:
        print(f"pinned: staging held after the loads {bench.get('staging_bytes')} bytes; "
              f"the ring {bench.get('ring_bytes')} bytes")
if bench.get("last_seconds"):
    print(f"time: the last LoadAll onto cuda:0 took {bench['last_seconds']} s, of which "
          f"{bench.get('last_arena_seconds')} s allocating its arena (cudaMalloc); "
          f"LoadInto (no allocation) median {bench.get('load_into_median_gbps')} GB/s")
if same_run_h2d and ours:
    print(f"ratio: shardload bench's own pinned H2D ceiling {same_run_h2d} GB/s; "
          f"load / that = {ours / same_run_h2d:.3f}")
print(f"ratio: shardload cuda:0 {ours} GB/s (median); reference {ref} GB/s (best of its runs); "
      f"pinned H2D ceiling {ceiling} GB/s (cuda_bench)")
if ours and ref:
    print(f"ratio: shardload / reference = {ours / ref:.2f}x")
if ours and ceiling:
    print(f"ratio: shardload / pinned H2D ceiling = {ours / ceiling:.3f}")
cold = load_json(f"{out}/bench_cuda_cold.json")
if not cold:
    # Stopped before its JSON (written at exit): its progress lines on stderr.
    try:
        err = open(f"{out}/bench_cuda_cold.err").read()
    except OSError:
        err = ""
    direct = re.search(r"^bench: ceiling direct_read ([0-9.]+) GB/s", err, re.M)
    run = re.search(r"^bench: LoadAll run 1 ([0-9.]+) GB/s", err, re.M)
    if run:
        cold = {"median_gbps": float(run.group(1)), "binding": "direct_read (from the progress lines)",
                "ceilings": {"direct_read_gbps": float(direct.group(1)) if direct else None}}
if cold:
    c = cold.get("ceilings") or {}
    direct = c.get("direct_read_gbps")
    med = cold.get("median_gbps")
    hot_read = (bench.get("ceilings") or {}).get("buffered_read_gbps")
    if med and direct:
        print(f"ratio: cold load {med} GB/s / O_DIRECT read {direct} GB/s = {med / direct:.3f} "
              f"(binding {cold.get('binding')}: {cold.get('median_fraction_of_binding')})")
    elif med:
        print(f"ratio: cold load {med} GB/s; no O_DIRECT ceiling this run (binding "
              f"{cold.get('binding')}), so no cold ratio")
    if hot_read and c.get("buffered_read_gbps") and c["buffered_read_gbps"] >= hot_read / 2:
        print(f"WARNING: the cold buffered read ({c['buffered_read_gbps']} GB/s) is at least half "
              f"the hot one ({hot_read} GB/s): the cache drop may not have reached the disk "
              "(tmpfs, or a host page cache under the VM); the cold numbers are suspect")
for slots, size in ((4, 64), (8, 32)):
    other = load_json(f"{out}/bench_cuda_ring{slots}.json").get("median_gbps")
    if other and ours:
        print(f"ratio: ring {slots} x {size} MiB {other} GB/s / default ring 16 x 16 MiB "
              f"{ours} GB/s = {other / ours:.3f}" +
              (f"; / pinned H2D ceiling {other / same_run_h2d:.3f}" if same_run_h2d else ""))
modes = []
for name, path in (("hot auto", "bench_cuda"), ("hot mmap", "bench_cuda_hot_mmap"),
                   ("hot direct", "bench_cuda_hot_direct"), ("hot uring", "bench_cuda_hot_uring"),
                   ("cold auto", "bench_cuda_cold"), ("cold direct", "bench_cuda_cold_direct"),
                   ("cold uring", "bench_cuda_cold_uring")):
    r = load_json(f"{out}/{path}.json")
    if r.get("median_gbps"):
        modes.append(f"{name} ({r.get('io')}) {r['median_gbps']}")
if len(modes) > 1:
    print("io modes, median GB/s onto cuda:0: " + "; ".join(modes))
pairs = []
for rnd in (1, 2):
    moe = load_json(f"{out}/bench_cuda_moe_{rnd}.json").get("median_gbps")
    llama = load_json(f"{out}/bench_cuda_llama_{rnd}.json").get("median_gbps")
    if moe and llama:
        pairs.append(moe / llama)
if pairs:
    print("ratio: moe (~19k tensors) / llama, same bytes, per round = " +
          ", ".join(f"{p:.3f}" for p in pairs))
EOF
}

# run_steps WORK SUMMARY: every step of `run`, each file into WORK, headlines into SUMMARY.
run_steps() {
  local out="$1"
  local bin="$CARRY/bin"
  local summary="$2"
  : > "$summary"
  say() { echo "$*" | tee -a "$summary"; }
  chmod u+x "$bin"/* 2>/dev/null  # in case the copy to this machine lost the bits
  [ -x "$bin/shardload" ] || { say "gpu_run run: $bin/shardload missing (run 'prepare' first and carry .carry/)"; return 1; }
  # PY: the first interpreter that has torch (the image's python3, its venv, the
  # system's), else python3.
  # PY_LD: the carried libraries (libshardload.so's simdjson and xxhash) for Python;
  # the C++ binaries get the Debian libstdc++ fallback too when the machine's own is
  # missing or older, which Python and torch must never see.
  PY=python3
  local candidate
  for candidate in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null && timeout 60 "$candidate" -c 'import torch' >/dev/null 2>&1; then
      PY="$candidate"
      break
    fi
  done
  PY_LD="$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$PY_LD"
  local libs="the machine's libstdc++"
  if ! libs_resolve "$bin/cuda_gpu_test" || ! timeout 30 "$bin/cuda_probe_test" --gtest_list_tests >/dev/null 2>&1; then
    export LD_LIBRARY_PATH="$PY_LD:$CARRY/lib-fallback"
    libs="the carried libstdc++ (lib-fallback: the machine's is missing or older)"
  fi
  say "machine: nproc=$(nproc) kernel=$(uname -r) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')\" mem=$(awk '/MemTotal/ { print int($2 / 1048576) "GiB" }' /proc/meminfo)"
  say "binaries: $(cat "$CARRY/STAMP" 2>/dev/null || echo "no STAMP (prepare writes one)"); C++ binaries use $libs"
  # Binaries built from other sources than this tree's (a .carry/ prepared before the
  # last commits) would make the tests report failures that are not real.
  if grep -q "modified" "$CARRY/STAMP" 2>/dev/null; then
    say "WARNING: .carry/ was prepared from a tree with uncommitted changes"
  fi
  if [ -f "$CARRY/SOURCES.sha256" ]; then
    local stale
    stale="$(cd "$ROOT" && sha256sum --quiet -c "$CARRY/SOURCES.sha256" 2>/dev/null | cut -d: -f1 | head -8 | tr '\n' ' ')"
    [ -n "$stale" ] && say "WARNING: the carried binaries are stale: built from other versions of $stale(run prepare again)"
  else
    say "WARNING: no .carry/SOURCES.sha256: cannot tell whether the binaries match these sources"
  fi
  # Where the samples go: /tmp unless it is a tmpfs (a cache drop cannot evict those
  # pages, so cold numbers would be false), and how much room there is.
  local sample_root="${SAMPLE_DIR:-}"
  if [ -z "$sample_root" ]; then
    sample_root=/tmp/shardload-gpu-sample
    [ "$(stat -f -c %T /tmp 2>/dev/null)" = tmpfs ] && [ -d /var/tmp ] && sample_root=/var/tmp/shardload-gpu-sample
  fi
  say "disk: samples under $(dirname "$sample_root") ($(stat -f -c %T "$(dirname "$sample_root")" 2>/dev/null)): $(df -h -P "$(dirname "$sample_root")" 2>/dev/null | awk 'NR == 2 { print $4 " free of " $2 }')"
  # gVisor (its kernel reports 4.4.0) has no drop_caches, ignores O_DIRECT (reads come
  # from a page cache) and has io_uring off: cold, direct and uring numbers would be
  # missing or false there, so those steps are left out and the summary says why.
  local gvisor=0 skip_cold="${SKIP_COLD:-0}"
  [ "$(uname -r)" = "4.4.0" ] && gvisor=1
  if [ "$gvisor" = 1 ]; then
    say "sandbox: gVisor (kernel 4.4.0): O_DIRECT is not honoured and io_uring is off there; the direct and uring steps are skipped"
  fi
  if [ "$skip_cold" != 1 ] && ! [ -w /proc/sys/vm/drop_caches ]; then
    say "cold: not measurable on this machine (/proc/sys/vm/drop_caches is missing or not writable); the cold steps are skipped"
    skip_cold=1
  fi
  local gpu_listed=0
  if command -v nvidia-smi >/dev/null; then
    timeout 30 nvidia-smi -L 2>&1 | tee -a "$summary"
    timeout 30 nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && gpu_listed=1
    # The static CUDA 13 runtime needs driver r580 or newer; with an older one it sees
    # no device and every GPU test skips itself (and passes).
    say "driver: $(timeout 30 nvidia-smi --query-gpu=driver_version,persistence_mode --format=csv,noheader 2>&1 | head -1) (CUDA 13 needs >= 580)"
  fi

  say "shardload devices: $(limit 60 "$bin/shardload" devices 2>&1 | tr '\n' ';')"

  local failed=0
  local tests=(cuda_probe_test cuda_cast_math_test cuda_sink_host_test cuda_gpu_test cuda_loader_test)
  [ "${SKIP_TESTS:-0}" = "1" ] && tests=()
  for t in "${tests[@]}"; do
    out_of_time "test $t" && { failed=1; continue; }
    limit 120 "$bin/$t" --gtest_output="xml:$out/$t.xml" > "$out/$t.log" 2>&1
    local rc=$?
    say "test $t: rc=$rc $(grep -E '^\[  (PASSED|FAILED)  \] [0-9]+ test|^\[  SKIPPED \] [0-9]+ test' "$out/$t.log" | tr '\n' ' ')"
    if [ $rc -ne 0 ]; then
      failed=1
      # A real GPU fault poisons the whole process: the first failure is the one to read.
      say "  failed in $t (the first one counts; a GPU fault fails every later case): $(grep -E '^\[  FAILED  \] [A-Za-z_]' "$out/$t.log" | sed 's/^\[  FAILED  \] //' | head -20 | tr '\n' ' ')$(tail -n 3 "$out/$t.log" | tr '\n' ' ')"
    fi
  done
  if [ "$gpu_listed" = 1 ] && [ "${#tests[@]}" -gt 0 ]; then
    local blind
    blind=$(cd "$out" && grep -l "no CUDA device" cuda_*.log 2>/dev/null | tr '\n' ' ')
    if [ -n "$blind" ]; then
      say "ERROR: nvidia-smi lists a GPU but the CUDA runtime saw none in: $blind($(grep -h -m1 -o 'no CUDA device.*' "$out"/cuda_probe_test.log 2>/dev/null | head -1)); the GPU cases did not run"
      failed=1
    fi
  fi

  if [ "${SKIP_TESTS:-0}" != "1" ] && [ "${SKIP_PYTHON:-0}" != "1" ] &&
    ! out_of_time "test python_shardload_test"; then
    # The Python package with CUDA tensors, on the machine's own torch and safetensors
    # (tests/python_shardload_test.py: its test_cuda_* cases run only where torch sees a
    # device).
    PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}" XML_OUTPUT_FILE="$out/python_test.xml" \
      LD_LIBRARY_PATH="$PY_LD" limit 180 "$PY" "$ROOT/tests/python_shardload_test.py" "$bin/libshardload.so" > "$out/python_test.log" 2>&1
    local prc=$?
    say "test python_shardload_test ($(LD_LIBRARY_PATH="$PY_LD" timeout 60 "$PY" -c 'import sys, torch, safetensors; print("python", sys.version.split()[0], "torch", torch.__version__, "safetensors", safetensors.__version__)' 2>&1 | tail -1)): rc=$prc $(tail -n 1 "$out/python_test.log")"
    if [ $prc -ne 0 ]; then
      failed=1
      say "  failed in python: $(grep -E '^(FAIL|ERROR): ' "$out/python_test.log" | head -20 | tr '\n' ' ')"
    fi
  fi
  local torch_cuda=0
  LD_LIBRARY_PATH="$PY_LD" timeout 60 "$PY" -c 'import sys, torch, safetensors; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1 &&
    torch_cuda=1
  if [ "${SKIP_TESTS:-0}" != "1" ] && [ "${SKIP_PYTHON:-0}" != "1" ] && [ "$torch_cuda" = 0 ]; then
    say "reference_diff --device cuda:0: skipped ($PY: no torch with CUDA, or no safetensors)"
  fi
  if [ "${SKIP_TESTS:-0}" != "1" ] && [ "${SKIP_PYTHON:-0}" != "1" ] && [ "$torch_cuda" = 1 ] &&
    ! out_of_time "reference_diff --device cuda:0"; then
    # fuzz/reference_diff.py with CUDA tensors: generated files read by shardload onto
    # cuda:0 against the reference's parse, and get_slice keys through both readers on
    # cuda:0 (docs/HARDENING.md).
    # Capped at 60 s: it runs before the goal benchmarks, whose time it takes.
    PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}" LD_LIBRARY_PATH="$PY_LD" limit 60 \
      "$PY" "$ROOT/fuzz/reference_diff.py" "$bin/libshardload.so" --device cuda:0 --seed 31 \
      --cases 1000 --slice-cases 1000 > "$out/reference_diff_cuda.log" 2>&1
    local drc=$?
    say "reference_diff --device cuda:0: rc=$drc $(grep -h '^reference_diff' "$out/reference_diff_cuda.log" | tr '\n' ' ')"
    if [ $drc -ne 0 ]; then
      failed=1
      say "  $(grep -v '^reference_diff' "$out/reference_diff_cuda.log" | head -8 | cut -c1-300 | tr '\n' ' ')"
    fi
  fi
  # The test logs now, in their own archive: a call stopped at its time limit later
  # still brings back why a test failed.
  if [ "${SKIP_TESTS:-0}" != "1" ]; then
    (cd "$out" && tar -czf "$(dirname "$summary")/test-logs.tar.gz" ./*.log ./*.xml 2>/dev/null)
  fi

  if [ "${SKIP_SAMPLE:-0}" = "1" ]; then
    say "sample: skipped (SKIP_SAMPLE=1)"
    cuda_bench_step
    return $failed
  fi
  local size="${SAMPLE_SIZE:-16GiB}" shards="${SAMPLE_SHARDS:-8}" repeat="${REPEAT:-3}"
  local dir="$sample_root-$size" wrc
  write_sample "$dir" "$size" "$shards" llama "$out/write_sample.txt"
  wrc=$?
  if [ $wrc -eq 2 ] && [ -z "${SAMPLE_SIZE:-}" ]; then
    # No room for 16 GiB: 8 GiB measures everything but the ">= 16 GB" in the goal.
    size=8GiB
    dir="$sample_root-$size"
    say "sample: trying $size instead (below the goal's 16 GB; the ratios still hold)"
    write_sample "$dir" "$size" "$shards" llama "$out/write_sample.txt"
    wrc=$?
  fi
  if [ $wrc -ne 0 ]; then
    cuda_bench_step  # the ceilings at least
    return 1
  fi
  # In the order the goals need them, so that a call stopped at its time limit has
  # brought back the most important numbers: hot onto the GPU and the reference (goals
  # >= 0.9 of pinned H2D, >= 5x safetensors), many tensors (within 10%), cold (>= 0.9
  # of O_DIRECT), then the ceilings' details, the host path, and the io modes.
  bench_step 180 bench_cuda json "--device cuda:0" "$dir" --device cuda:0 --repeat "$repeat"
  reference_step "$dir" "$repeat"
  # cuda_bench needs no sample and gives the best pinned H2D ceiling the goal ratio is
  # taken against: right after the two numbers it is compared with.
  cuda_bench_step
  say "ratios after the hot goal steps:"
  ratios | tee -a "$summary"
  if [ "${SKIP_MOE:-0}" != "1" ]; then
    # Many small tensors against the same bytes in few large ones, alternated so that
    # drift hits both: write-sample --layout moe (~19k tensors) and --layout llama.
    local moe_size="${MOE_SIZE:-4GiB}" moe_ok=1
    for layout in moe llama; do
      write_sample "$sample_root-$size-$layout-$moe_size" "$moe_size" 4 "$layout" "$out/write_sample_$layout.txt" ||
        { moe_ok=0; failed=1; break; }
    done
    for round in 1 2; do
      [ "$moe_ok" = 1 ] || break
      for layout in moe llama; do
        bench_step 180 "bench_cuda_${layout}_$round" median "--device cuda:0 $layout round $round" \
          "$sample_root-$size-$layout-$moe_size" --device cuda:0 --repeat "$repeat"
      done
    done
    # The same MoE sample through Python's load_file onto cuda:0, phase by phase: its
    # per-tensor cost (about 4 us a tensor on the host) next to the C load inside it
    # (bench/RESULTS.md "Where a 19k-tensor load_file's time goes").
    if [ "$moe_ok" = 1 ] && [ "$torch_cuda" = 1 ] && [ "${SKIP_PYTHON:-0}" != "1" ] &&
      ! out_of_time "python load_file phases"; then
      PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}" LD_LIBRARY_PATH="$PY_LD" limit 90 \
        "$PY" "$ROOT/python/bench_phases.py" "$bin/libshardload.so" \
        "$sample_root-$size-moe-$moe_size" 3 cuda:0 > "$out/python_phases_moe.txt" 2>&1
      say "python load_file phases (moe, cuda:0): rc=$? $(tail -n 6 "$out/python_phases_moe.txt" | tr -s ' ' | tr '\n' ';')"
    elif [ "$moe_ok" = 1 ] && [ "$torch_cuda" = 0 ]; then
      say "python load_file phases (moe, cuda:0): skipped ($PY: no torch with CUDA)"
    fi
  fi
  if [ "$skip_cold" != "1" ]; then
    # Cold: the page cache is dropped before every load and before the O_DIRECT ceiling.
    bench_step 240 bench_cuda_cold json "--device cuda:0 --cold" "$dir" --device cuda:0 --cold --repeat 1
  fi
  # Reads into the pinned ring run one per slot: the default 16 x 16 MiB allows sixteen
  # at a time, 4 x 64 MiB (the first default) four, 8 x 32 MiB eight, all about 256 MiB. The
  # default is to be chosen from these (after the goal steps; --repeat 2 to save time).
  local slots slot_size
  for slots in 4 8; do
    slot_size="$((256 / slots))MiB"
    bench_step 180 "bench_cuda_ring$slots" median "--device cuda:0 --slots $slots --slot-size $slot_size" \
      "$dir" --device cuda:0 --slots "$slots" --slot-size "$slot_size" --repeat 2
  done
  say "ratios so far:"
  ratios | tee -a "$summary"
  if ! out_of_time "shardload load --device cuda:0"; then
    limit 180 "$bin/shardload" load "$dir" --device cuda:0 --json > "$out/load_cuda.json" 2> "$out/load_cuda.err"
    say "shardload load --device cuda:0: rc=$? $(grep -o '"gbps":[0-9.e+-]*' "$out/load_cuda.json")"
  fi

  bench_step 180 bench_cpu json "--device cpu" "$dir" --device cpu --repeat "$repeat"
  if [ -x "$bin/copy_phase_bench" ] && ! out_of_time "copy_phase_bench"; then
    # The page-cache copy by file-offset/destination phase on this machine's CPU: the
    # 32-byte rule of loader/file.cc's PhaseShift was measured on an AMD host only
    # (bench/RESULTS.md "File phase").
    local first_shard
    first_shard="$(ls "$dir"/*.safetensors | head -n 1)"
    limit 60 "$bin/copy_phase_bench" "$first_shard" 5 > "$out/copy_phase.txt" 2>&1
    say "copy_phase_bench: rc=$? $(tail -n +2 "$out/copy_phase.txt" | tr -s ' ' | tr '\n' ';')"
  fi
  if [ "${SKIP_IO_MODES:-0}" != "1" ]; then
    local mode modes=(mmap direct uring) cold_modes=(direct uring)
    if [ "$gvisor" = 1 ]; then
      modes=(mmap)
      cold_modes=()
    fi
    for mode in "${modes[@]}"; do
      bench_step 180 "bench_cuda_hot_$mode" median "--device cuda:0 --io $mode" "$dir" \
        --device cuda:0 --io "$mode" --repeat 1
    done
    if [ "$skip_cold" != "1" ]; then
      for mode in "${cold_modes[@]}"; do
        bench_step 240 "bench_cuda_cold_$mode" median "--device cuda:0 --io $mode --cold" "$dir" \
          --device cuda:0 --io "$mode" --cold --repeat 1
      done
    fi
  fi
  say "ratios at the end:"
  ratios | tee -a "$summary"
  if [ "${BENCH_FAILURES:-0}" -gt 0 ]; then
    say "ERROR: $BENCH_FAILURES bench step(s) failed (rc != 0 above)"
    failed=1
  fi
  return $failed
}

selftest() {
  # The pieces of this script that do not need a GPU: argument handling, library
  # filtering and ldd resolution of a freshly built binary.
  system_lib /lib/x86_64-linux-gnu/libc.so.6 || { echo "selftest: libc not treated as system" >&2; return 1; }
  system_lib /usr/lib/x86_64-linux-gnu/libcuda.so.1 || { echo "selftest: libcuda must come from the driver" >&2; return 1; }
  if system_lib /usr/lib/x86_64-linux-gnu/libsimdjson.so.14; then
    echo "selftest: libsimdjson wrongly treated as system" >&2
    return 1
  fi
  local bin="${1:-}"
  if [ -n "$bin" ]; then
    local tmp
    tmp="$(mktemp -d)" || return 1
    copy_libs "$bin" "$tmp" || { rm -rf "$tmp"; echo "selftest: copy_libs failed" >&2; return 1; }
    if ls "$tmp" | grep -qE '^(libc|libm|ld-linux)'; then
      rm -rf "$tmp"
      echo "selftest: a glibc library was copied" >&2
      return 1
    fi
    if ldd "$bin" | grep -q "not found"; then
      rm -rf "$tmp"
      echo "selftest: $bin has unresolved libraries" >&2
      return 1
    fi
    echo "selftest: copy_libs $bin -> $(ls "$tmp" | tr '\n' ' ')"
    rm -rf "$tmp"
  fi
  echo "selftest: ok"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  selftest) shift; selftest "$@" ;;
  *) sed -n '2,/^set -uo pipefail/{/^set -uo/!p}' "$0" >&2; exit 2 ;;
esac
