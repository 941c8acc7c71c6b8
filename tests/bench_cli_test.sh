#!/usr/bin/env bash
# `shardload bench` end to end on a tiny sharded checkpoint: the --json report's
# fields (ceilings of the same run incl. the fresh-memory fill, LoadAll runs, the
# pooled reload, LoadInto), that each ratio is the quotient of the numbers it names,
# the human report, and usage errors.
# Usage: bench_cli_test.sh PATH_TO_SHARDLOAD
set -uo pipefail
source "$(dirname "$0")/cli_check.sh"
cli_check_setup bench_cli "$1"

cli_check_tiny_checkpoint "$tmp/m"

out="$("$bin" bench "$tmp/m" --repeat 2 --io pread --threads 2 --json 2>"$tmp/err")"; rc=$?
check "bench --json exits 0" test $rc -eq 0
echo "$out"
check "bench --json fields and ratios" python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["files"] == 3 and r["bytes"] == 12448, r
assert r["device"] == "cpu" and r["io"] == "pread" and r["threads"] == 2 and r["cold"] is False, r
assert r["placement"] == "aligned", r
c = r["ceilings"]
for k in ("memcpy_gbps", "buffered_read_gbps", "fresh_memory_gbps"):
    assert isinstance(c[k], float) and c[k] > 0, (k, c)
assert c["h2d_gbps"] is None, c
assert r["staging_bytes"] is None and r["ring_bytes"] == 16 * (16 << 20), r
assert (r["slots"], r["slot_bytes"]) == (16, (16 << 20) - 8192), r  # the default ring
assert len(r["runs_gbps"]) == 2 and all(x > 0 for x in r["runs_gbps"]), r
assert r["best_gbps"] == max(r["runs_gbps"]), r
assert 0 <= r["last_arena_seconds"] <= r["last_seconds"] and r["last_seconds"] > 0, r
for k in ("median_gbps", "pooled_median_gbps", "load_into_median_gbps"):
    assert r[k] > 0, (k, r)
binding = {"memcpy": c["memcpy_gbps"], "fresh_memory": c["fresh_memory_gbps"]}
assert r["binding"] == min(binding, key=binding.get), r
assert r["reuse_binding"] == "memcpy", r
def quotient_of(ratio, n, d):
    # Every number is printed with 3 decimals: the ratio was computed from values within
    # 0.0005 of n and d, and is itself rounded to within 0.0005.
    e = 0.0005
    lo = max(n - e, 0) / (d + e)
    hi = (n + e) / max(d - e, 1e-9)
    return lo - e <= ratio <= hi + e
assert quotient_of(r["median_fraction_of_binding"], r["median_gbps"], binding[r["binding"]]), r
assert quotient_of(r["median_vs_buffered_read"], r["median_gbps"], c["buffered_read_gbps"]), r
assert quotient_of(r["pooled_fraction_of_binding"], r["pooled_median_gbps"], c["memcpy_gbps"]), r
assert quotient_of(r["load_into_fraction_of_binding"], r["load_into_median_gbps"], c["memcpy_gbps"]), r
# And a wrong ratio is caught: twice the quotient is not one.
assert not quotient_of(2 * r["median_gbps"] / binding[r["binding"]] + 0.01, r["median_gbps"], binding[r["binding"]]), r
PY
# Under --json, stderr carries each number as soon as it is measured (what a run killed
# at a time limit leaves), and the same numbers as the report.
check "progress lines on stderr" python3 - "$out" "$tmp/err" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
lines = open(sys.argv[2]).read().splitlines()
c = r["ceilings"]
assert all(l.startswith("bench: ") and l.endswith(" GB/s") for l in lines), lines
what = [l[len("bench: "):].rsplit(" ", 2)[0] for l in lines]
assert what == ["ceiling memcpy", "ceiling buffered_read", "ceiling direct_read",
                "ceiling fresh_memory", "LoadAll run 1", "LoadAll run 2",
                "pooled LoadAll run 1", "pooled LoadAll run 2", "LoadInto run 1",
                "LoadInto run 2"], what
values = {w: l.rsplit(" ", 2)[1] for w, l in zip(what, lines)}
assert float(values["LoadAll run 1"]) == r["runs_gbps"][0], (values, r)
assert float(values["ceiling memcpy"]) == c["memcpy_gbps"], (values, c)
PY

out="$("$bin" bench "$tmp/m" --repeat 1 2>&1)"; rc=$?
check "human report exits 0" test $rc -eq 0
check "human report lists the fresh-memory ceiling" grep -q '^  fresh memory fill, [0-9]* threads *[0-9.]* GB/s$' <<<"$out"
check "human report has the pooled reload" grep -q '^LoadAll reloading through a pool, median [0-9.]* GB/s = [0-9.]* x memcpy, ' <<<"$out"
check "human report names the binding ceiling" grep -Eq '^median = [0-9.]+ x the binding ceiling \((memcpy|fresh_memory)\)' <<<"$out"

# The ring geometry is an option (what a GPU session tries against the default).
out="$("$bin" bench "$tmp/m" --repeat 1 --slots 8 --slot-size 32MiB --json 2>/dev/null)"; rc=$?
check "bench --slots --slot-size exits 0" test $rc -eq 0
check "bench --slots --slot-size sets the ring" python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert (r["slots"], r["slot_bytes"], r["ring_bytes"]) == (8, 32 << 20, 8 * ((32 << 20) + 8192)), r
' "$out"
out="$("$bin" bench "$tmp/m" --slot-size 5000 2>&1)"; rc=$?
check "--slot-size 5000 is a usage error" test $rc -eq 2
check "... naming the rule" grep -q "^shardload bench: invalid --slot-size '5000': expected a multiple of 4096 bytes in 4KiB..1GiB$" <<<"$out"
out="$("$bin" bench "$tmp/m" --slots 65 2>&1)"; rc=$?
check "--slots 65 is a usage error" test $rc -eq 2
out="$("$bin" load "$tmp/m" --slots 2 --slot-size 8KiB --json)"; rc=$?
check "load takes --slots and --slot-size" test $rc -eq 0
check "... and loads" grep -q '"error":null' <<<"$out"
# They take effect: an 8 KiB slot is shorter than the 12448-byte checkpoint's largest
# read would be, so the load reads in more, smaller spans and starts more readers.
big="$("$bin" load "$tmp/m" --threads 8 | grep -o '[0-9]* threads\?)' | cut -d' ' -f1)"
small="$("$bin" load "$tmp/m" --threads 8 --slot-size 4KiB | grep -o '[0-9]* threads\?)' | cut -d' ' -f1)"
check "a smaller --slot-size makes more spans (more readers: ${big:-?} vs ${small:-?})" test "${big:-0}" -gt 0 -a "${big:-0}" -lt "${small:-0}"
out="$("$bin" bench "$tmp/m" --repeat 0 2>&1)"; rc=$?
check "--repeat 0 is a usage error" test $rc -eq 2
check "--repeat 0 names the range" grep -q '^shardload bench: ' <<<"$out"
out="$("$bin" bench "$tmp/m" --uring-depth 8 2>&1)"; rc=$?
check "--uring-* without --io uring is a usage error" test $rc -eq 2
check "--uring-* without --io uring says so" grep -q '^shardload bench: --uring-depth, --uring-chunk and --uring-direct need --io uring$' <<<"$out"
out="$("$bin" bench "$tmp/m" --io uring --uring-chunk 1KiB 2>&1)"; rc=$?
check "--uring-chunk below 4KiB is a usage error" test $rc -eq 2
check "... that names the range" grep -q "^shardload bench: invalid --uring-chunk '1KiB': expected a size in 4KiB..1GiB$" <<<"$out"
out="$("$bin" bench "$tmp/m" --io uring --uring-chunk 64KiB --repeat 1 --json 2>/dev/null)"; rc=$?
if grep -q "io_uring is unavailable" <<<"$out"; then
  echo "skip: io_uring refused here"
else
  check "--uring-chunk takes a size with a unit, as --slot-size does" python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["io"] == "uring", r' "$out"
fi
out="$("$bin" bench "$tmp/m" --placement file-phase --repeat 1 --json 2>/dev/null)"; rc=$?
check "bench --placement file-phase exits 0" test $rc -eq 0
check "bench --placement file-phase says so" python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["placement"] == "file-phase" and r["median_gbps"] > 0, r' "$out"
out="$("$bin" bench "$tmp/m" --placement phase 2>&1)"; rc=$?
check "bench --placement phase is a usage error" test $rc -eq 2
check "... that names the choices" grep -q "^shardload bench: invalid arena placement 'phase': expected aligned or file-phase$" <<<"$out"
out="$("$bin" bench 2>&1)"; rc=$?
check "no PATH is a usage error" test $rc -eq 2
check "no PATH says so" grep -q 'missing PATH' <<<"$out"
out="$("$bin" bench "$tmp/nope" --json 2>/dev/null)"; rc=$?
check "a missing checkpoint exits 1" test $rc -eq 1
check "a missing checkpoint under --json prints the error object" test "$out" = \
  "{\"error\":{\"code\":\"not_found\",\"message\":\"$tmp/nope: no such file or directory\"}}"
out="$("$bin" bench "$tmp/m" --repeat x --json 2>/dev/null)"; rc=$?
check "a usage error under --json exits 2 with the error object" test $rc -eq 2 -a "$out" = \
  '{"error":{"code":"invalid_argument","message":"invalid --repeat '"'x'"': expected an integer in 1..1000"}}'

# A cuda device that does not exist fails at once, before any ceiling is measured
# (under --json each measured number would be on stderr).
out="$("$bin" bench "$tmp/m" --device cuda:99 --json 2>"$tmp/err")"; rc=$?
check "bench --device cuda:99 exits 1" test $rc -eq 1
check "bench --device cuda:99: only the error on stderr, nothing measured" grep -qx 'shardload bench: cuda:99: no such CUDA device ([0-9]* devices\?\(: .*\)\?)' "$tmp/err"
check "bench --device cuda:99: one line on stderr" test "$(wc -l <"$tmp/err")" -eq 1
check "bench --device cuda:99: the error object" grep -q '^{"error":{"code":"invalid_argument","message":"cuda:99: no such CUDA device (' <<<"$out"

cli_check_done
