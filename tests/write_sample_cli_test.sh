#!/usr/bin/env bash
# `shardload write-sample` end to end: output, files, determinism, and one-line errors
# with a non-zero exit. Usage: write_sample_cli_test.sh PATH_TO_SHARDLOAD
set -uo pipefail
source "$(dirname "$0")/cli_check.sh"
cli_check_setup write_sample_cli "$1"

out="$("$bin" write-sample "$tmp/a" --layout tiny --shards 3 --seed 5 2>&1)"; rc=$?
check "tiny write exits 0" test $rc -eq 0
check "summary line" grep -q "^wrote $tmp/a: layout tiny, BF16, 21 tensors, 12448 tensor bytes (12.16 KiB) in 3 files$" <<<"$out"
check "three shards and an index" test "$(ls "$tmp/a" | tr '\n' ' ')" = \
  "model-00001-of-00003.safetensors model-00002-of-00003.safetensors model-00003-of-00003.safetensors model.safetensors.index.json "

"$bin" write-sample "$tmp/b" --layout tiny --shards=3 --seed 5 >/dev/null 2>&1
check "same seed, same bytes" cmp -s "$tmp/a/model-00002-of-00003.safetensors" "$tmp/b/model-00002-of-00003.safetensors"
"$bin" write-sample "$tmp/c" --layout tiny --shards 3 --seed 6 >/dev/null 2>&1
check "other seed, other bytes" bash -c "! cmp -s '$tmp/a/model-00002-of-00003.safetensors' '$tmp/c/model-00002-of-00003.safetensors'"

# Rewriting as one file removes the old shards and the index.
out="$("$bin" write-sample "$tmp/a" --layout tiny --dtype f32 2>&1)"; rc=$?
check "rewrite exits 0" test $rc -eq 0
check "single model.safetensors" test "$(ls "$tmp/a")" = "model.safetensors"
check "stale shards reported" grep -q "removed stale model-00001-of-00003.safetensors" <<<"$out"

# --align-data: the data sections start on the boundary; their tensors are those of the
# default layout (same seed), and the reference's parser (safetensors.deserialize, where
# the package is importable) reads the same from them.
"$bin" write-sample "$tmp/al" --layout tiny --shards 3 --seed 5 --align-data 4096 >/dev/null 2>&1
check "--align-data 4096: every data section at a multiple of 4096" python3 - "$tmp/al" <<'PY'
import glob, struct, sys
files = sorted(glob.glob(sys.argv[1] + "/*.safetensors"))
assert len(files) == 3, files
for f in files:
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        assert (8 + n) % 4096 == 0, (f, n)
PY
check "--align-data 4096: the same tensors as the default layout" python3 - "$tmp/al" "$tmp/b" <<'PY'
import glob, json, struct, sys
def tensors(folder):
    out = {}
    for f in sorted(glob.glob(folder + "/*.safetensors")):
        data = open(f, "rb").read()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        header.pop("__metadata__", None)
        for name, e in header.items():
            b, end = e["data_offsets"]
            out[name] = (e["dtype"], e["shape"], data[8 + n + b:8 + n + end])
    return out
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a == b and len(a) == 21, (len(a), len(b))
try:
    import safetensors
except ImportError:
    print("safetensors not importable: reference parse skipped")
    sys.exit(0)
ref = {}
for f in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    for name, e in safetensors.deserialize(open(f, "rb").read()):
        ref[name] = (e["dtype"], list(e["shape"]), bytes(e["data"]))
assert ref == a, sorted(set(ref) ^ set(a))
PY

expect_error() {  # expect_error EXIT_CODE MESSAGE ARGS... (2: bad usage, 1: the rest)
  local want="$1" msg="$2"; shift 2
  local err rc
  err="$("$bin" write-sample "$@" 2>&1 >/dev/null)"; rc=$?
  check "error '$msg' (exit $want)" test $rc -eq "$want" -a "$err" = "shardload write-sample: $msg"
}
expect_error 2 "target size 1000 bytes is too small for layout llama (minimum 65536) (see --help)" "$tmp/x" --size 1KB
expect_error 2 "target size 0 bytes is too small for layout llama (minimum 65536) (see --help)" "$tmp/x" --size 0
expect_error 2 "target size 10 bytes is too small for layout moe (minimum 65536) (see --help)" "$tmp/x" --size 10 --layout moe
expect_error 2 "target size 18446744073709551615 bytes is larger than the 1 PiB this generator supports (see --help)" "$tmp/x" --size 18446744073709551615
expect_error 2 "invalid byte size '5Gb': a lowercase 'b' means bits; use 'B' for bytes (see --help)" "$tmp/x" --size 5Gb
expect_error 2 "unknown dtype 'f5': expected one of bool, f4, f6_e2m3, f6_e3m2, u8, i8, f8_e5m2, f8_e4m3, f8_e8m0, f8_e4m3fnuz, f8_e5m2fnuz, i16, u16, f16, bf16, i32, u32, f32, c64, f64, i64, u64 (safetensors names, any case) or a torch name such as bfloat16 (see --help)" "$tmp/x" --dtype f5
expect_error 2 "unknown dtype 'torch.f16': expected one of bool, f4, f6_e2m3, f6_e3m2, u8, i8, f8_e5m2, f8_e4m3, f8_e8m0, f8_e4m3fnuz, f8_e5m2fnuz, i16, u16, f16, bf16, i32, u32, f32, c64, f64, i64, u64 (safetensors names, any case) or a torch name such as bfloat16 (see --help)" "$tmp/x" --dtype torch.f16
# torch's dtype names (with or without "torch.") and safetensors' in any case.
for pair in bfloat16:BF16 torch.float16:F16 half:F16 float8_e4m3fn:F8_E4M3 torch.int64:I64 \
            F8_E5M2:F8_E5M2 bool:BOOL; do
  "$bin" write-sample "$tmp/dt" --layout tiny --dtype "${pair%%:*}" --no-sync >/dev/null 2>&1
  got="$("$bin" inspect "$tmp/dt" --json | python3 -c 'import json, sys
print(sorted({t["dtype"] for t in json.load(sys.stdin)["tensors"]}))')"
  check "--dtype ${pair%%:*} writes ${pair#*:}" test "$got" = "['${pair#*:}']"
done
expect_error 2 "invalid --align-data '4': expected a power of two from 8 to 65536 (see --help)" "$tmp/x" --align-data 4
expect_error 2 "unknown layout 'gpt' (use llama, moe or tiny) (see --help)" "$tmp/x" --layout gpt
expect_error 2 "num_shards 50 exceeds the number of tensors (21) (see --help)" "$tmp/x" --layout tiny --shards 50
expect_error 2 "invalid --shards '0': expected an integer in 1..10000 (the most shard files a reader accepts) (see --help)" "$tmp/x" --shards 0
expect_error 2 "invalid --shards '10001': expected an integer in 1..10000 (the most shard files a reader accepts) (see --help)" "$tmp/x" --shards=10001
expect_error 2 "invalid --shards '99999': expected an integer in 1..10000 (the most shard files a reader accepts) (see --help)" "$tmp/x" --shards 99999
# A --max-shard-size that splits ~19k tensors one per file: refused before writing.
expect_error 2 "--max-shard-size 1 needs 18771 shard files, more than the 10000 a reader accepts (see --help)" "$tmp/x" --layout moe --size 256MiB --max-shard-size 1
expect_error 2 "--shards and --max-shard-size are exclusive (see --help)" "$tmp/x" --shards 2 --max-shard-size 1MB
expect_error 2 "missing DIR (usage: shardload write-sample DIR --size 2GiB --shards 3)" --size 1GB
expect_error 2 "unknown option '--sise' (see --help)" "$tmp/x" --sise 1GB
expect_error 2 "unknown option '--json' (see --help)" "$tmp/x" --json
expect_error 2 "unknown option '--bogus' (see --help)" "$tmp/x" --bogus=1
expect_error 2 "option --seed needs a value (see --help)" "$tmp/x" --seed
check "no DIR is made for a usage error" test ! -e "$tmp/x"
touch "$tmp/file"
expect_error 1 "$tmp/file/d: cannot create directory: Not a directory" "$tmp/file/d" --layout tiny

# --help: the usage line names every option.
out="$("$bin" write-sample --help)"; rc=$?
check "--help exits 0" test $rc -eq 0
check "--help's usage line has [--align-data N] [--no-sync]" test "$(head -n 3 <<<"$out")" = \
"usage: shardload write-sample DIR [--size S] [--shards N | --max-shard-size S]
                              [--layout llama|moe|tiny] [--dtype D] [--seed N]
                              [--align-data N] [--no-sync]"

# A signal while writing: the temporary file goes, the checkpoint already there stays.
# SIGTERM: a background job of a script starts with SIGINT ignored, and an ignored
# SIGINT stays ignored (Ctrl-C for the foreground must not stop it); python resets it
# to the default for the SIGINT case.
cli_check_tiny_checkpoint "$tmp/sig"
before="$(cd "$tmp/sig" && ls -A && md5sum ./*)"
interrupt_write() {  # interrupt_write SIGNAL [LAUNCHER...]: exit status and stderr
  local sig="$1"; shift
  "$@" "$bin" write-sample "$tmp/sig" --size 8GiB --no-sync >/dev/null 2>"$tmp/sig.err" &
  local pid=$!
  for _ in $(seq 600); do  # until the temporary file exists (at most 30 s)
    compgen -G "$tmp/sig/.model*.tmp.*" >/dev/null && break
    sleep 0.05
  done
  if [ "$sig" = INT-IGNORED ]; then  # SIGINT as this script's background job has it
    kill -INT $pid
    sleep 0.5
    kill -0 $pid 2>/dev/null; echo "alive after SIGINT: $?" >"$tmp/sig.alive"
    sig=TERM
  fi
  kill -"$sig" $pid
  wait $pid
}
interrupt_write INT-IGNORED; rc=$?
check "an ignored SIGINT stays ignored (the write goes on)" test "$(cat "$tmp/sig.alive")" = "alive after SIGINT: 0"
check "and SIGTERM then stops it" test $rc -eq 143
interrupt_write TERM; rc=$?
check "SIGTERM exits 143" test $rc -eq 143
check "SIGTERM says so" test "$(cat "$tmp/sig.err")" = \
  "shardload write-sample: interrupted by signal 15; $tmp/sig is as it was"
check "SIGTERM leaves the folder as it was" test "$(cd "$tmp/sig" && ls -A && md5sum ./*)" = "$before"
interrupt_write INT python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])'; rc=$?
check "SIGINT exits 130" test $rc -eq 130
check "SIGINT says so" test "$(cat "$tmp/sig.err")" = \
  "shardload write-sample: interrupted by signal 2; $tmp/sig is as it was"
check "SIGINT leaves the folder as it was" test "$(cd "$tmp/sig" && ls -A && md5sum ./*)" = "$before"
interrupt_write HUP; rc=$?
check "SIGHUP (the terminal closed) exits 129" test $rc -eq 129
check "SIGHUP says so" test "$(cat "$tmp/sig.err")" = \
  "shardload write-sample: interrupted by signal 1; $tmp/sig is as it was"
check "SIGHUP leaves the folder as it was" test "$(cd "$tmp/sig" && ls -A && md5sum ./*)" = "$before"

# A file-size limit (ulimit -f): the write fails with EFBIG instead of SIGXFSZ killing
# the command, and the checkpoint already there stays, without a temporary file.
# A ThreadSanitizer build dies of SIGBUS in its runtime under such a limit; the plain
# and ASan passes run these checks.
if grep -qa "__tsan_init" "$bin"; then
  echo "skip: a ThreadSanitizer build cannot run under ulimit -f: ulimit checks left out"
else
  err="$( (ulimit -f 64; "$bin" write-sample "$tmp/sig" --size 8MiB --no-sync) 2>&1 >/dev/null)"; rc=$?
  check "ulimit -f: exit 1, not a signal" test $rc -eq 1
  check "ulimit -f: says the file is too large" grep -q "File too large" <<<"$err"
  check "ulimit -f: the folder is as it was" test "$(cd "$tmp/sig" && ls -A && md5sum ./*)" = "$before"

  # reshard failing the same way into a new OUT leaves none of the folders it made.
  err="$( (ulimit -f 2; "$bin" reshard "$tmp/a" "$tmp/made/out" --shards 2 --no-sync) 2>&1 >/dev/null)"; rc=$?
  check "reshard under ulimit -f: exit 1" test $rc -eq 1
  check "reshard under ulimit -f: says the file is too large" grep -q "File too large" <<<"$err"
  check "reshard under ulimit -f: the folders it made are gone" test ! -e "$tmp/made"
  (ulimit -f 2; "$bin" reshard "$tmp/a" "$tmp/made2/out/" --shards 2 --no-sync) >/dev/null 2>&1
  check "reshard into OUT/ (a trailing slash): the folders it made are gone" test ! -e "$tmp/made2"
  mkdir -p "$tmp/kept"
  (ulimit -f 2; "$bin" reshard "$tmp/a" "$tmp/kept/new/./" --shards 2 --no-sync) >/dev/null 2>&1
  check "reshard into an existing folder's new child: the child is gone, the folder stays" \
    test -d "$tmp/kept" -a ! -e "$tmp/kept/new"
fi

# reshard reads every new shard back before publishing it: a shard whose bytes change
# on disk before the read-back reaches them, or a signal during the read-back, leaves
# OUT as it was. The command is stopped (SIGSTOP) once its staged index exists (the
# shards are then complete and the read-back starting) and nothing new is in place yet;
# a try that finds the new files already published (the read-back of 1 GiB outran
# this poll) is run again.
"$bin" write-sample "$tmp/rb-src" --size 1GiB --no-sync >/dev/null 2>&1
stopped_in_read_back() {  # stopped_in_read_back: start reshard into $tmp/rb, stop it there
  rm -rf "$tmp/rb" && "$bin" write-sample "$tmp/rb" --layout tiny --shards 3 --no-sync >/dev/null
  rb_before="$(cd "$tmp/rb" && ls -A && md5sum ./*)"
  "$bin" reshard "$tmp/rb-src" "$tmp/rb" --shards 2 --no-sync >"$tmp/rb.out" 2>"$tmp/rb.err" &
  rb_pid=$!
  for _ in $(seq 3000); do  # at most ~30 s
    compgen -G "$tmp/rb/.model.safetensors.index.json.tmp.*" >/dev/null && break
    kill -0 $rb_pid 2>/dev/null || break
    sleep 0.01
  done
  kill -STOP $rb_pid 2>/dev/null
  if compgen -G "$tmp/rb/.model.safetensors.index.json.tmp.*" >/dev/null &&
     ! compgen -G "$tmp/rb/model-*-of-00002.safetensors" >/dev/null; then
    return 0
  fi
  kill -CONT $rb_pid 2>/dev/null; wait $rb_pid
  return 1
}
for try in 1 2 3; do stopped_in_read_back && break; done
check "reshard stopped in its read-back (try $try)" test -n "$(compgen -G "$tmp/rb/.model-00002-of-00002.safetensors.tmp.*")"
python3 - "$(compgen -G "$tmp/rb/.model-00002-of-00002.safetensors.tmp.*")" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:  # the last byte: the shard's last tensor
    f.seek(-1, 2)
    b = f.read(1)[0]
    f.seek(-1, 2)
    f.write(bytes([b ^ 0x40]))
PY
kill -CONT $rb_pid; wait $rb_pid; rc=$?
check "a byte changed before the read-back: exit 1" test $rc -eq 1
check "... the error names the new shard and the read-back" grep -Eq "^shardload reshard: $tmp/rb: read-back before publishing failed: new model-00002-of-00002.safetensors: tensor '[^']+' at bytes \[[0-9]+, [0-9]+\): XXH3 of its [0-9]+ bytes is [0-9a-f]{16}, recorded [0-9a-f]{16} \(nothing was replaced\)$" "$tmp/rb.err"
check "... OUT is as it was, without temporary files" test "$(cd "$tmp/rb" && ls -A && md5sum ./*)" = "$rb_before"
for try in 1 2 3; do stopped_in_read_back && break; done
# SIGTERM: a script's background job starts with SIGINT ignored (see above).
kill -TERM $rb_pid; kill -CONT $rb_pid; wait $rb_pid; rc=$?
check "SIGTERM during the read-back: exit 143" test $rc -eq 143
check "... says OUT is as it was" test "$(cat "$tmp/rb.err")" = \
  "shardload reshard: interrupted by signal 15; $tmp/rb is as it was"
check "... and it is, without temporary files" test "$(cd "$tmp/rb" && ls -A && md5sum ./*)" = "$rb_before"
rm -rf "$tmp/rb-src" "$tmp/rb"

# Permissions, as an unprivileged user (root runs the suite; skipped otherwise). The
# binary is copied where that user can reach it.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  pdir="$(mktemp -d /tmp/shardload_perm.XXXXXX)"  # removed at the end of this block
  chmod 755 "$pdir"
  cp "$bin" "$pdir/shardload" && chmod 755 "$pdir/shardload"
  as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
  # A folder one may write into but not read: refused before anything is replaced.
  "$pdir/shardload" write-sample "$pdir/wx" --layout tiny --shards 3 --no-sync >/dev/null
  chown -R 65534:65534 "$pdir/wx" && chmod 0333 "$pdir/wx"
  before_wx="$(cd "$pdir/wx" && ls -A && md5sum ./*)"
  for sync in "" --no-sync; do
    err="$(as_nobody "$pdir/shardload" write-sample "$pdir/wx" --layout tiny --shards 2 --seed 4 $sync 2>&1 >/dev/null)"; rc=$?
    check "write-only folder ($sync): exit 1" test $rc -eq 1
    check "write-only folder ($sync): says nothing was replaced" test "$err" = \
      "shardload write-sample: $pdir/wx: open directory: Permission denied (nothing was replaced)"
    check "write-only folder ($sync): the checkpoint is as it was" \
      test "$(cd "$pdir/wx" && ls -A && md5sum ./*)" = "$before_wx"
  done
  # A folder one may list but not search: permission_denied naming the entry.
  "$pdir/shardload" write-sample "$pdir/rx" --layout tiny --no-sync >/dev/null
  chmod 0744 "$pdir/rx"
  err="$(as_nobody "$pdir/shardload" inspect "$pdir/rx" 2>&1 >/dev/null)"; rc=$?
  check "unsearchable folder: exit 1" test $rc -eq 1
  check "unsearchable folder: permission denied, naming the file" test "$err" = \
    "shardload inspect: $pdir/rx/model.safetensors: Permission denied"
  rm -rf "$pdir"
else
  echo "skip: permission cases need root and setpriv"
fi

# The Hugging Face reference reads what we wrote (skipped without it).
if python3 -c 'import safetensors, numpy' >/dev/null 2>&1; then
  "$bin" write-sample "$tmp/g" --layout tiny --max-shard-size 4KB --dtype f16 >/dev/null 2>&1
  check "reference loads every greedy shard" python3 - "$tmp/g" <<'EOF'
import json, sys
from safetensors.numpy import load_file
d = sys.argv[1]
index = json.load(open(d + "/model.safetensors.index.json"))
loaded = {}
for f in sorted(set(index["weight_map"].values())):
    loaded.update(load_file(d + "/" + f))
assert set(loaded) == set(index["weight_map"]), "names differ"
assert loaded["model.embed_tokens.weight"].shape == (32, 16)
assert index["metadata"]["total_size"] == sum(a.nbytes for a in loaded.values())
EOF
else
  echo "skip: python3 cannot import safetensors and numpy"
fi

cli_check_done
