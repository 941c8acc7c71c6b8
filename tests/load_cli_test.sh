#!/usr/bin/env bash
# `shardload load` and `shardload verify` end to end on a tiny sharded checkpoint:
# JSON reports, strict / non-strict outcomes with their exit codes, --expect from
# `inspect --json` and from a hand-written spec, --rename, every --io mode, and
# verify on an intact and a truncated checkpoint.
# Usage: load_cli_test.sh PATH_TO_SHARDLOAD
set -uo pipefail
source "$(dirname "$0")/cli_check.sh"
cli_check_setup load_cli "$1"

cli_check_tiny_checkpoint "$tmp/m"

out="$("$bin" load "$tmp/m" --json 2>"$tmp/err")"; rc=$?
check "load exits 0" test $rc -eq 0
check "load --json: 21 matched, nothing else, all on cpu" grep -q '^{"matched":21,"missing":\[\],"unexpected":\[\],"mismatched":\[\],"renamed":\[\],"auto_prefix":"","devices":{"cpu":{"tensors":21,"bytes":12448}},"bytes":12448,"seconds":[0-9.]*,"gbps":[0-9.]*,"io":"pread","threads":[0-9]*,"verified":null,"warnings":\[\],"error":null}$' <<<"$out"
check "quiet stderr when not a terminal" test ! -s "$tmp/err"

for io in pread mmap direct uring auto; do
  out="$("$bin" load "$tmp/m" --json --io $io --threads 3 2>&1)"; rc=$?
  if grep -q "refuses O_DIRECT\|io_uring is unavailable" <<<"$out"; then echo "skip: --io $io refused here"; continue; fi
  check "--io $io loads" test $rc -eq 0
done

for placement in aligned file-phase; do
  out="$("$bin" load "$tmp/m" --json --placement $placement 2>&1)"; rc=$?
  check "--placement $placement loads" test $rc -eq 0
  check "--placement $placement: 21 matched on cpu" grep -q '^{"matched":21,.*"devices":{"cpu":{"tensors":21,"bytes":12448}}' <<<"$out"
done
"$bin" load "$tmp/m" --placement packed >/dev/null 2>"$tmp/err"; rc=$?
check "bad --placement exits 2" test $rc -eq 2
check "bad --placement names the choices" grep -q "^shardload load: invalid arena placement 'packed': expected aligned or file-phase$" "$tmp/err"

# --expect from inspect --json: everything matches.
"$bin" inspect --json "$tmp/m" >"$tmp/spec.json"
out="$("$bin" load "$tmp/m" --expect "$tmp/spec.json" --json 2>/dev/null)"; rc=$?
check "--expect inspect output exits 0" test $rc -eq 0
check "--expect inspect output: 21 matched" grep -q '^{"matched":21,' <<<"$out"

# A model without lm_head, with an extra key and a wrong shape.
cat >"$tmp/model.json" <<'JSON'
[{"name": "model.norm.weight", "dtype": "BF16", "shape": [16]},
 {"name": "model.embed_tokens.weight", "dtype": "BF16", "shape": [32, 15]},
 {"name": "extra.bias", "dtype": "F32", "shape": [4]}]
JSON
out="$("$bin" load "$tmp/m" --expect "$tmp/model.json" --json 2>"$tmp/err")"; rc=$?
check "strict mismatch exits 1" test $rc -eq 1
check "missing listed" grep -q '"missing":\["extra.bias"\]' <<<"$out"
check "unexpected listed, sorted" grep -q '"unexpected":\["lm_head.weight","model.layers.0.input_layernorm.weight",' <<<"$out"
check "size mismatch listed" grep -q '"mismatched":\[{"name":"model.embed_tokens.weight","stored_name":"model.embed_tokens.weight","checkpoint":"BF16\[32, 16\]","target":"BF16\[32, 15\]","error":true}\]' <<<"$out"
check "error object" grep -q '"error":{"code":"invalid_argument","message":"Error(s) in loading state_dict: ' <<<"$out"
check "one-line reason on stderr" grep -q '^shardload load: Error(s) in loading state_dict' "$tmp/err"

out="$("$bin" load "$tmp/m" --expect "$tmp/model.json" --non-strict --json 2>/dev/null)"; rc=$?
check "non-strict still fails on a size mismatch" test $rc -eq 1

cat >"$tmp/ok.json" <<'JSON'
[{"name": "module.model.norm.weight", "dtype": "BF16", "shape": [16]}]
JSON
out="$("$bin" load "$tmp/m" --expect "$tmp/ok.json" --non-strict --rename 'add:module.' --json 2>/dev/null)"; rc=$?
check "non-strict with a rename exits 0" test $rc -eq 0
check "one matched, 20 unexpected" grep -q '^{"matched":1,"missing":\[\],"unexpected":\["module.lm_head.weight",' <<<"$out"
check "renames reported" grep -q '"renamed":\[{"from":"lm_head.weight","to":"module.lm_head.weight"}' <<<"$out"
check "bytes of the one tensor" grep -q '"bytes":32,' <<<"$out"

# Usage errors exit 2.
"$bin" load "$tmp/m" --io fast >/dev/null 2>"$tmp/err"; rc=$?
check "bad --io exits 2" test $rc -eq 2
check "bad --io names the value" grep -q "^shardload load: invalid io mode 'fast': expected auto, pread, mmap, direct or uring$" "$tmp/err"
"$bin" load "$tmp/m" --threads 999 >/dev/null 2>"$tmp/err"; rc=$?
check "bad --threads exits 2" test $rc -eq 2
"$bin" load "$tmp/none" --json >"$tmp/out" 2>/dev/null; rc=$?
check "missing checkpoint exits 1" test $rc -eq 1
check "missing checkpoint: error object" grep -q '"error":{"code":"not_found",' "$tmp/out"

# verify: OK, then a truncated shard is data_loss.
out="$("$bin" verify "$tmp/m" 2>&1)"; rc=$?
check "verify exits 0" test $rc -eq 0
check "verify says OK" grep -q "^OK: 3 files, 14608 bytes read in " <<<"$out"
truncate -s 4000 "$tmp/m/model-00002-of-00003.safetensors"
out="$("$bin" verify "$tmp/m" --json 2>/dev/null)"; rc=$?
check "verify of a truncated shard exits 1" test $rc -eq 1
check "verify names the file" grep -q '"code":"data_loss"\|"code":"invalid_argument"' <<<"$out"
check "verify error mentions the shard" grep -q 'model-00002-of-00003.safetensors' <<<"$out"

# --auto-prefix: a DDP-style model ("module." on every name) matches without a rule.
# (A fresh checkpoint: the verify checks above truncated a shard of the first one.)
"$bin" write-sample "$tmp/m2" --layout tiny --shards 3 --seed 5 >/dev/null || { echo "FAIL: write-sample m2"; exit 1; }
python3 - "$tmp/spec.json" "$tmp/ddp.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["tensors"]
json.dump([{"name": "module." + x["name"], "dtype": x["dtype"], "shape": x["shape"]} for x in t],
          open(sys.argv[2], "w"))
PY
out="$("$bin" load "$tmp/m2" --expect "$tmp/ddp.json" --json 2>/dev/null)"; rc=$?
check "module.-prefixed model fails strict without --auto-prefix" test $rc -eq 1
out="$("$bin" load "$tmp/m2" --expect "$tmp/ddp.json" --auto-prefix --json 2>/dev/null)"; rc=$?
check "--auto-prefix exits 0" test $rc -eq 0
check "--auto-prefix: 21 matched, nothing missing" grep -q '^{"matched":21,"missing":\[\],"unexpected":\[\]' <<<"$out"

# --alias: a tied head filled from the embedding; --allow-cast: an F32 target of a BF16 tensor.
cat >"$tmp/tied.json" <<'JSON'
[{"name": "model.norm.weight", "dtype": "F32", "shape": [16]},
 {"name": "tied.head", "dtype": "BF16", "shape": [32, 16]},
 {"name": "model.embed_tokens.weight", "dtype": "BF16", "shape": [32, 16]}]
JSON
out="$("$bin" load "$tmp/m2" --expect "$tmp/tied.json" --non-strict --json 2>/dev/null)"; rc=$?
check "F32 target of a BF16 tensor fails without --allow-cast" test $rc -eq 1
check "dtype mismatch named" grep -q '"mismatched":\[{"name":"model.norm.weight","stored_name":"model.norm.weight","checkpoint":"BF16\[16\]","target":"F32\[16\]","error":true}' <<<"$out"
out="$("$bin" load "$tmp/m2" --expect "$tmp/tied.json" --non-strict --allow-cast --alias tied.head=model.embed_tokens.weight --json 2>/dev/null)"; rc=$?
check "--allow-cast --alias exits 0" test $rc -eq 0
check "--alias fills the tied head: 3 matched, none missing" grep -q '^{"matched":3,"missing":\[\],' <<<"$out"
out="$("$bin" load "$tmp/m2" --alias nonsense 2>&1)"; rc=$?
check "--alias without = is a usage error" test $rc -eq 2
check "--alias error names the value" grep -q "invalid --alias 'nonsense': expected TARGET=STORED" <<<"$out"

# devices: cpu first, then each CUDA device the library sees, or the probe's reason.
text="$("$bin" devices)"; rc=$?
check "devices exits 0" test $rc -eq 0
check "devices lists cpu first" test "$(head -1 <<<"$text")" = "cpu"
json="$("$bin" devices --json)"
check "devices --json agrees with the text" python3 - "$text" "$json" <<'PY'
import json, sys
lines, report = sys.argv[1].splitlines(), json.loads(sys.argv[2])
names = [d["device"] for d in report["devices"]]
assert names[0] == "cpu", names
cuda = names[1:]
assert cuda == ["cuda:%d" % i for i in range(len(cuda))], cuda
if cuda:
    assert report["cuda_probe"] is None, report
    assert [l.split("  ")[0] for l in lines[1:]] == cuda, lines
else:  # this machine: the reason is printed
    assert lines[1:] == ["no CUDA device" + (": %s: %s" % (report["cuda_probe"]["code"],
                         report["cuda_probe"]["message"]) if report["cuda_probe"] else "")], lines
PY
out="$("$bin" devices --all 2>&1)"; rc=$?
check "devices rejects an unknown argument" test $rc -eq 2
check "devices names the argument" grep -q "shardload devices: unexpected argument '--all'" <<<"$out"

# --expect errors name the file: missing (not_found), a name given twice.
cli_check_tiny_checkpoint "$tmp/m3"
out="$("$bin" load "$tmp/m3" --expect "$tmp/no-such.json" --json 2>/dev/null)"; rc=$?
check "--expect of a missing file is not_found" python3 - "$rc" "$out" "$tmp/no-such.json" <<'PY'
import json, sys
assert sys.argv[1] == "1", sys.argv[1]
assert json.loads(sys.argv[2])["error"] == {"code": "not_found",
    "message": sys.argv[3] + ": No such file or directory"}, sys.argv[2]
PY
echo '[{"name":"a","dtype":"F32","shape":[1]},{"name":"a","dtype":"F32","shape":[1]}]' >"$tmp/twice.json"
err="$("$bin" load "$tmp/m3" --expect "$tmp/twice.json" 2>&1 >/dev/null)"
check "--expect with a name twice names the file and entry" test "$err" = \
  "shardload load: $tmp/twice.json: tensors[1]: name 'a' is given twice"

# --expect with an empty list: a model without tensors (PyTorch's load_state_dict of an
# empty module), not "no --expect". Strict: every stored tensor is unexpected.
echo '[]' >"$tmp/none.json"
echo '{"tensors":[]}' >"$tmp/none-object.json"
for spec in none none-object; do
  out="$("$bin" load "$tmp/m3" --expect "$tmp/$spec.json" --json 2>"$tmp/err")"; rc=$?
  check "--expect $spec.json: strict fails (exit 1)" test $rc -eq 1
  check "--expect $spec.json: every stored tensor unexpected, nothing loaded" python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["matched"] == 0 and r["missing"] == [] and len(r["unexpected"]) == 21, r
assert r["unexpected"][0] == "lm_head.weight" and r["devices"] == {} and r["bytes"] == 0, r
e = r["error"]
assert e["code"] == "invalid_argument", e
assert e["message"].startswith('Error(s) in loading state_dict: Unexpected key(s) in state_dict: "lm_head.weight", "model.embed_tokens.weight", '), e
PY
  check "--expect $spec.json: the strict error on stderr" grep -q '^shardload load: Error(s) in loading state_dict: Unexpected key(s) in state_dict: "lm_head.weight", ' "$tmp/err"
done
out="$("$bin" load "$tmp/m3" --expect "$tmp/none.json" --non-strict --json 2>"$tmp/err")"; rc=$?
check "--expect [] --non-strict exits 0" test $rc -eq 0
check "--expect [] --non-strict loads nothing, reports 21 unexpected" python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["matched"] == 0 and len(r["unexpected"]) == 21 and r["error"] is None, r
assert r["devices"] == {} and r["bytes"] == 0, r
PY
out="$("$bin" load "$tmp/m3" --expect "$tmp/none.json" --non-strict 2>/dev/null)"; rc=$?
check "--expect [] --non-strict (text) exits 0" test $rc -eq 0
check "--expect [] --non-strict (text): 21 unexpected" grep -qx 'unexpected: 21' <<<"$out"
check "--expect [] --non-strict (text): loaded 0, placed nothing" test "$(tail -n 2 <<<"$out" | sed 's/ in .*//')" = "loaded 0 tensors, 0.000 GB
placed: nothing"

# --expect read to its end: a pipe, a FIFO; a directory is refused by name.
out="$("$bin" load "$tmp/m3" --expect <("$bin" inspect "$tmp/m3" --json) --json 2>"$tmp/err")"; rc=$?
check "--expect from a pipe exits 0" test $rc -eq 0
check "--expect from a pipe: 21 matched" grep -q '^{"matched":21,"missing":\[\],"unexpected":\[\]' <<<"$out"
mkfifo "$tmp/fifo"
("$bin" inspect "$tmp/m3" --json >"$tmp/fifo" &)
out="$(timeout 60 "$bin" load "$tmp/m3" --expect "$tmp/fifo" --json 2>"$tmp/err")"; rc=$?
check "--expect from a FIFO exits 0" test $rc -eq 0
check "--expect from a FIFO: 21 matched" grep -q '^{"matched":21,' <<<"$out"
out="$("$bin" load "$tmp/m3" --expect "$tmp/m3" --json 2>"$tmp/err")"; rc=$?
check "--expect of a directory exits 1" test $rc -eq 1
check "--expect of a directory: named" test "$(cat "$tmp/err")" = "shardload load: $tmp/m3: is a directory"
check "--expect of a directory: error object" grep -qF '"error":{"code":"invalid_argument","message":"'"$tmp/m3"': is a directory"}}' <<<"$out"
printf '[{"name":' >"$tmp/cut.json"
err="$("$bin" load "$tmp/m3" --expect "$tmp/cut.json" 2>&1 >/dev/null)"; rc=$?
check "--expect of broken JSON exits 1 naming the file" test $rc -eq 1 -a "${err%%: *}" = "shardload load"
check "--expect of broken JSON: the path in the message" grep -qF "$tmp/cut.json: " <<<"$err"

# An alias given twice is bad usage (exit 2), found before the checkpoint is opened.
err="$("$bin" load "$tmp/none" --alias T=A --alias T=B 2>&1 >/dev/null)"; rc=$?
check "--alias T=A --alias T=B exits 2" test $rc -eq 2
check "--alias given twice: named" test "$(head -n 1 <<<"$err")" = "shardload load: alias for 'T' is given twice"

# --strict and --non-strict together are bad usage, in either order; one of them twice
# is not.
for order in "--strict --non-strict" "--non-strict --strict"; do
  # shellcheck disable=SC2086
  err="$("$bin" load "$tmp/m2" $order 2>&1 >/dev/null)"; rc=$?
  check "load $order: exit 2" test $rc -eq 2
  check "load $order: named" test "$(head -n 1 <<<"$err")" = \
    "shardload load: --strict and --non-strict are exclusive"
done
check "load --strict --strict loads" "$bin" load "$tmp/m2" --strict --strict

# --verify says what it checked: nothing on write-sample's files (no records: a warning
# and "verified": 0), every tensor once reshard has recorded their XXH3.
out="$("$bin" load "$tmp/m2" --verify 2>"$tmp/err")"; rc=$?
check "load --verify without records exits 0" test $rc -eq 0
check "load --verify without records: 0 of 21" grep -qx 'verified: 0 of 21 tensors against their recorded XXH3' <<<"$out"
check "load --verify without records: a warning" test "$(cat "$tmp/err")" = \
  "shardload load: warning: --verify: the checkpoint records no XXH3 hash for the tensors loaded, so none was checked (reshard writes them)"
out="$("$bin" load "$tmp/m2" --verify --json 2>/dev/null)"
check "load --verify --json without records: verified 0" grep -q '"threads":[0-9]*,"verified":0,"warnings":\[\],"error":null}$' <<<"$out"
"$bin" reshard "$tmp/m2" "$tmp/hashed" --shards 2 --no-sync >/dev/null
out="$("$bin" load "$tmp/hashed" --verify 2>"$tmp/err")"; rc=$?
check "load --verify with records exits 0" test $rc -eq 0
check "load --verify with records: 21 of 21" grep -qx 'verified: 21 of 21 tensors against their recorded XXH3' <<<"$out"
check "load --verify with records: no warning" test ! -s "$tmp/err"
out="$("$bin" load "$tmp/hashed" --verify --json 2>/dev/null)"
check "load --verify --json with records: verified 21" grep -q '"verified":21,"warnings":\[\],"error":null}$' <<<"$out"

# Arguments that would do nothing are named: an --alias for a name that is not a
# target, an --alias whose stored tensor does not exist, a --device-map rule no tensor
# reaches (a typo, or a GPU that is never checked).
err="$("$bin" load "$tmp/m2" --alias foo.weight=model.embed_tokens.weight 2>&1 >/dev/null)"; rc=$?
check "--alias for no target: exit 0" test $rc -eq 0
check "--alias for no target: warned" test "$err" = \
  "shardload load: warning: --alias 'foo.weight=model.embed_tokens.weight': no target is called 'foo.weight' (without --expect the targets are the checkpoint's own tensors); ignored"
"$bin" inspect "$tmp/m2" --json | python3 -c '
import json, sys
t = json.load(sys.stdin)["tensors"]
t.append({"name": "tied.weight", "dtype": t[0]["dtype"], "shape": t[0]["shape"]})
json.dump(t, open(sys.argv[1], "w"))' "$tmp/alias_spec.json"
err="$("$bin" load "$tmp/m2" --expect "$tmp/alias_spec.json" --alias tied.weight=nonexist 2>&1 >/dev/null)"; rc=$?
check "--alias to no stored tensor: exit 1 (missing)" test $rc -eq 1
check "--alias to no stored tensor: warned first" test "$(head -n 1 <<<"$err")" = \
  "shardload load: warning: --alias 'tied.weight=nonexist': the checkpoint has no tensor 'nonexist' (after renames), so 'tied.weight' stays missing"
err="$("$bin" load "$tmp/m2" --device-map 'nomatch*=cuda:7,model.norm.*=cpu,lm_head.weight=cpu,cpu' 2>&1 >/dev/null)"; rc=$?
check "--device-map with an unused rule: exit 0" test $rc -eq 0
check "--device-map with an unused rule: that rule named" test "$err" = \
  "shardload load: warning: --device-map rule 'nomatch*=cuda:7' places no tensor (no matched name reaches it)"

# verify --json: a usage error is verify's own error object ("ok":false).
out="$("$bin" verify "$tmp/m3" --bogus --json 2>/dev/null)"; rc=$?
check "verify --json usage error: exit 2 and ok:false" test $rc -eq 2 -a "$out" = \
  '{"ok":false,"error":{"code":"invalid_argument","message":"unknown option '"'--bogus'"'"}}'

# More shards than the soft open-file limit: the command raises it to the hard limit
# (a load keeps every shard open). Only where the hard limit leaves room.
if [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -gt 1200 ]; then
  "$bin" write-sample "$tmp/many" --layout moe --size 32MiB --shards 700 --no-sync >/dev/null
  out="$(ulimit -Sn 256; "$bin" load "$tmp/many" 2>&1)"; rc=$?
  check "700 shards load under a soft limit of 256 open files" test $rc -eq 0
  check "every tensor of the 700 shards" grep -q "^placed: cpu [0-9]* tensors" <<<"$out"
  rm -rf "$tmp/many"
fi

# A shard holding a tensor its index does not list (transformers and huggingface_hub
# load whole shards, so they take it): an error naming it by default; with
# --lenient-index load, inspect and reshard take it, with a warning, and reshard's new
# index lists it.
cli_check_tiny_checkpoint "$tmp/unlisted"
shard="$(python3 - "$tmp/unlisted" <<'PY'
import json, os, sys
p = os.path.join(sys.argv[1], "model.safetensors.index.json")
index = json.load(open(p))
print(index["weight_map"].pop("model.norm.weight"))
json.dump(index, open(p, "w"))
PY
)"
want="model.safetensors.index.json: shard '$shard' holds tensor 'model.norm.weight', which the index does not list"
out="$("$bin" load "$tmp/unlisted" 2>&1)"; rc=$?
check "an unlisted tensor: load exits 1" test $rc -eq 1
check "... naming the tensor and its shard, and the flag" \
  grep -qxF "shardload load: $want (--lenient-index loads it, with a warning)" <<<"$out"
out="$("$bin" load "$tmp/unlisted" --lenient-index --json 2>"$tmp/err")"; rc=$?
check "--lenient-index: load exits 0 with all 21 tensors" bash -c "test $rc -eq 0 && grep -q '^{\"matched\":21,' <<<'$out'"
check "... and a warning naming it" grep -qF "shardload load: warning: $want" "$tmp/err"
out="$("$bin" inspect "$tmp/unlisted" --json 2>&1)"; rc=$?
check "inspect of it exits 1" test $rc -eq 1
n="$("$bin" inspect "$tmp/unlisted" --json --lenient-index 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["tensors"]))')"
check "inspect --lenient-index lists 21 tensors" test "$n" = 21
check "inspect --lenient-index=x is a usage error" bash -c "'$bin' inspect '$tmp/unlisted' --lenient-index=x >/dev/null 2>&1; test \$? -eq 2"
"$bin" reshard "$tmp/unlisted" "$tmp/fixed" --shards 2 --no-sync >/dev/null 2>&1; rc=$?
check "reshard of it exits 1" test $rc -eq 1
"$bin" reshard "$tmp/unlisted" "$tmp/fixed" --shards 2 --no-sync --lenient-index >/dev/null 2>"$tmp/err"; rc=$?
check "reshard --lenient-index exits 0" test $rc -eq 0
check "reshard --lenient-index warns" grep -qF "warning: $want" "$tmp/err"
out="$("$bin" load "$tmp/fixed" --json 2>/dev/null)"; rc=$?
check "the resharded checkpoint loads strictly, all 21 tensors" bash -c "test $rc -eq 0 && grep -q '^{\"matched\":21,' <<<'$out'"
# hash, verify and bench: refused the same way (naming the flag), taken with it.
for cmd in hash verify "bench --repeat 1"; do
  # shellcheck disable=SC2086
  err="$("$bin" $cmd "$tmp/unlisted" 2>&1 >/dev/null)"; rc=$?
  check "$cmd of it exits 1, naming the flag" test $rc -eq 1 -a \
    "$(tail -n 1 <<<"$err")" = "shardload ${cmd%% *}: $want (--lenient-index loads it, with a warning)"
  # shellcheck disable=SC2086
  "$bin" $cmd "$tmp/unlisted" --lenient-index >"$tmp/out" 2>"$tmp/err"; rc=$?
  check "$cmd --lenient-index exits 0" test $rc -eq 0
  check "$cmd --lenient-index warns" grep -qxF "shardload ${cmd%% *}: warning: $want" "$tmp/err"
done
check "hash --lenient-index: the same digest as the resharded copy" test \
  "$("$bin" hash "$tmp/unlisted" --lenient-index --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')" = \
  "$("$bin" hash "$tmp/fixed" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')"

# Usage errors under --json: the error object on stdout too, for every command.
for cmd in "load $tmp/m --threads abc" "verify $tmp/m --bogus" "hash $tmp/m --bogus" "devices --bogus"; do
  out="$("$bin" $cmd --json 2>/dev/null)"; rc=$?
  check "$cmd --json: exit 2 and an invalid_argument error object" python3 - "$rc" "$out" <<'PY'
import json, sys
assert sys.argv[1] == "2", sys.argv[1]
e = json.loads(sys.argv[2])["error"]
assert e["code"] == "invalid_argument" and e["message"], e
PY
done

cli_check_done
