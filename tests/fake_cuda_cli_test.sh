#!/usr/bin/env bash
# The CLI's GPU paths end to end, on the fake CUDA runtime (shardload_fake_cuda: the
# same command linked with cuda/fake, two fake devices): `load --device cuda:N` and
# `--device-map` place every tensor where the map says (counted against the index),
# `--verify` checks hashes on device loads and names a corrupted tensor, a missing
# device is a clear error, and `bench --device cuda:0 --json` reports the pinned H2D
# ceiling with ratios that are the quotients of the numbers they name, and holds one
# staging ring after its loads; where memory cannot be pinned, loads and bench stage
# through pageable memory and warn.
# Usage: fake_cuda_cli_test.sh PATH_TO_SHARDLOAD_FAKE_CUDA
set -uo pipefail
source "$(dirname "$0")/cli_check.sh"
cli_check_setup fake_cuda_cli "$1"

cli_check_tiny_checkpoint "$tmp/m"

out="$("$bin" load "$tmp/m" --device cuda:1 --json 2>"$tmp/err")"; rc=$?
check "load --device cuda:1 exits 0" test $rc -eq 0
check "load --device cuda:1: every tensor on cuda:1" grep -q '"devices":{"cuda:1":{"tensors":21,"bytes":12448}},"bytes":12448,.*"error":null}$' <<<"$out"

map='model.layers.0.*=cuda:0,*norm*=cpu,cuda:1'
out="$("$bin" load "$tmp/m" --device-map "$map" --json 2>"$tmp/err")"; rc=$?
check "load --device-map exits 0" test $rc -eq 0
check "load --device-map: placement as the map says" python3 - "$out" "$tmp/m" "$map" <<'PY'
import fnmatch, json, os, struct, sys
report, folder, spec = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
*rules, default = spec.split(",")
rules = [r.split("=") for r in rules]
want = {}
for name in sorted(os.listdir(folder)):
    if not name.endswith(".safetensors"):
        continue
    with open(os.path.join(folder, name), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    for tensor, info in header.items():
        if tensor == "__metadata__":
            continue
        device = next((d for p, d in rules if fnmatch.fnmatchcase(tensor, p)), default)
        begin, end = info["data_offsets"]
        entry = want.setdefault(device, {"tensors": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["bytes"] += end - begin
assert len(want) == 3, want
assert report["devices"] == want, (report["devices"], want)
assert report["error"] is None, report
PY

out="$("$bin" load "$tmp/m" --device-map "$map" 2>"$tmp/err")"; rc=$?
check "load report names the placement" grep -q '^placed: cpu [0-9]* tensors [0-9]* bytes; cuda:0 [0-9]* tensors [0-9]* bytes; cuda:1 [0-9]* tensors [0-9]* bytes$' <<<"$out"

"$bin" load "$tmp/m" --device cuda:2 >"$tmp/out" 2>"$tmp/err"; rc=$?
check "load --device cuda:2 exits 1" test $rc -eq 1
check "load --device cuda:2 names the device" grep -qx 'shardload load: cuda:2: no such CUDA device (2 devices)' "$tmp/err"
"$bin" bench "$tmp/m" --device cuda:2 --json >"$tmp/out" 2>"$tmp/err"; rc=$?
check "bench --device cuda:2 exits 1" test $rc -eq 1
check "bench --device cuda:2: the load's error, before any ceiling is measured" test \
  "$(cat "$tmp/err")" = 'shardload bench: cuda:2: no such CUDA device (2 devices)'

# Checksums recorded by reshard, checked while streaming onto a device.
"$bin" reshard "$tmp/m" "$tmp/r" --shards 2 --no-sync >/dev/null 2>"$tmp/err" ||
  { echo "FAIL: reshard"; cat "$tmp/err"; exit 1; }
"$bin" load "$tmp/r" --device cuda:0 --verify >/dev/null 2>"$tmp/err"; rc=$?
check "load --verify onto cuda:0 exits 0" test $rc -eq 0
check "one tensor's byte flipped" python3 - "$tmp/r/model-00001-of-00002.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    name = sorted(k for k in header if k != "__metadata__")[0]
    begin = header[name]["data_offsets"][0]
    f.seek(8 + n + begin)
    b = f.read(1)
    f.seek(8 + n + begin)
    f.write(bytes([b[0] ^ 0xFF]))
print(name)
PY
first="$(python3 -c "import json,struct,sys; f=open(sys.argv[1],'rb'); n=struct.unpack('<Q',f.read(8))[0]; print(sorted(k for k in json.loads(f.read(n)) if k!='__metadata__')[0])" "$tmp/r/model-00001-of-00002.safetensors")"
"$bin" load "$tmp/r" --device cuda:0 --verify >/dev/null 2>"$tmp/err"; rc=$?
check "load --verify of a corrupted tensor exits 1" test $rc -eq 1
check "the corrupted tensor is named" grep -q "^shardload load: model-00001-of-00002.safetensors: tensor '$first' at bytes \[[0-9]*, [0-9]*): XXH3 of its [0-9]* bytes is [0-9a-f]*, recorded [0-9a-f]*$" "$tmp/err"
cat "$tmp/err"

out="$("$bin" bench "$tmp/m" --device cuda:0 --repeat 2 --io pread --threads 2 --json 2>"$tmp/err")"; rc=$?
check "bench --device cuda:0 --json exits 0" test $rc -eq 0
echo "$out"
check "bench --device cuda:0: the H2D ceiling and ratios" python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["device"] == "cuda:0" and r["files"] == 3 and r["bytes"] == 12448, r
c = r["ceilings"]
assert isinstance(c["h2d_gbps"], float) and c["h2d_gbps"] > 0, c
assert r["pooled_median_gbps"] is None and r["pooled_fraction_of_binding"] is None, r
# The pinned staging the backend holds after all those loads is one ring, no more.
assert r["ring_bytes"] == 16 * (16 << 20) and r["staging_bytes"] == r["ring_bytes"], r
assert r["staging_pinned"] is True and r["warnings"] == [], r
assert (r["slots"], r["slot_bytes"]) == (16, (16 << 20) - 8192), r
reuse = min(c["memcpy_gbps"], c["h2d_gbps"])
assert r["reuse_binding"] == ("h2d" if c["h2d_gbps"] < c["memcpy_gbps"] else "memcpy"), r
e = 0.0005
def quotient_of(ratio, n, d):
    return max(n - e, 0) / (d + e) - e <= ratio <= (n + e) / max(d - e, 1e-9) + e
assert quotient_of(r["load_into_fraction_of_binding"], r["load_into_median_gbps"], reuse), r
PY

# Memory that cannot be pinned (the fake's SHARDLOAD_FAKE_CUDA_CANNOT_PIN): the loads
# stage through pageable memory, succeed, and say so on stderr and in --json.
refusal='pinned staging memory was refused (cudaHostRegister: cudaErrorNotSupported: operation not supported (allocating 268435456 bytes of pinned memory)): the copies to the GPU ran from 268435456 bytes of pageable memory instead, which is slower (the CUDA driver stages them)'
out="$(SHARDLOAD_FAKE_CUDA_CANNOT_PIN=1 "$bin" load "$tmp/m" --device cuda:0 --json 2>"$tmp/err")"; rc=$?
check "load onto cuda:0 without pinned memory exits 0" test $rc -eq 0
check "load without pinned memory: the warning on stderr" test "$(cat "$tmp/err")" = "shardload load: warning: $refusal"
check "load --json without pinned memory: the warning in \"warnings\"" python3 - "$out" "$refusal" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["warnings"] == [sys.argv[2]] and r["error"] is None, r
assert r["devices"] == {"cuda:0": {"tensors": 21, "bytes": 12448}}, r
PY
out="$(SHARDLOAD_FAKE_CUDA_CANNOT_PIN=1 "$bin" bench "$tmp/m" --device cuda:0 --repeat 1 --threads 2 --json 2>"$tmp/err")"; rc=$?
check "bench without pinned memory exits 0" test $rc -eq 0
check "bench without pinned memory: the warning on stderr" grep -qxF "shardload bench: warning: $refusal" "$tmp/err"
check "bench --json without pinned memory: pageable staging, the warning" python3 - "$out" "$refusal" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["staging_pinned"] is False and r["staging_bytes"] == r["ring_bytes"], r
assert r["warnings"] == [sys.argv[2]], r
assert r["ceilings"]["h2d_gbps"] is None, r  # the pinned ceiling cannot be measured either
PY
out="$("$bin" load "$tmp/m" --device cuda:0 --json 2>"$tmp/err")"; rc=$?
check "load onto cuda:0 with pinned memory: no warning" test $rc -eq 0 -a ! -s "$tmp/err"
check "load --json with pinned memory: no warnings" grep -q '"warnings":\[\],"error":null}$' <<<"$out"

out="$("$bin" devices)"; rc=$?
check "devices lists cpu and the two fake devices" test "$out" = "cpu
cuda:0  shardload fake CUDA device 0 (cuda:0, 4.0 GiB)
cuda:1  shardload fake CUDA device 1 (cuda:1, 4.0 GiB)"
check "devices --json has no probe error" grep -q '"cuda_probe":null}$' <<<"$("$bin" devices --json)"

cli_check_done
