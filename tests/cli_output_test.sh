#!/usr/bin/env bash
# What every `shardload` command does with its output channels: output that cannot be
# written (stdout on /dev/full) fails the command with exit 1 and
# "shardload CMD: cannot write output: <strerror>" (a small output failing at the final
# flush, a large one failing midway); catalog warnings go to stderr as
# "shardload CMD: warning: ..." before any output, from every command that opens a
# checkpoint; inspect's summary JSON-quotes metadata holding control characters; and a
# switch written with a value ("--cold=no") is a usage error.
# Usage: cli_output_test.sh PATH_TO_SHARDLOAD
set -uo pipefail
source "$(dirname "$0")/cli_check.sh"
cli_check_setup cli_output "$1"

cli_check_tiny_checkpoint "$tmp/m"
"$bin" write-sample "$tmp/big" --layout moe --size 16MiB --no-sync >/dev/null ||
  { echo "FAIL: write-sample big"; exit 1; }
echo '[]' >"$tmp/none.json"

# --- stdout that cannot be written.
if [ -w /dev/full ]; then
  # full_fails WANT_RC PREFIX ARGS...: `shardload ARGS >/dev/full` exits WANT_RC and
  # its stderr ends with "PREFIX: cannot write output: No space left on device".
  full_fails() {
    local want="$1" prefix="$2"; shift 2
    local err rc
    err="$("$bin" "$@" 2>&1 >/dev/full)"; rc=$?
    check "$* >/dev/full: exit $want" test $rc -eq "$want"
    check "$* >/dev/full: says so" test "$(tail -n 1 <<<"$err")" = \
      "$prefix: cannot write output: No space left on device"
  }
  for args in "hash $tmp/m" "hash $tmp/m --json" "load $tmp/m" "load $tmp/m --json" \
              "verify $tmp/m" "verify $tmp/m --json" "devices" "devices --json" \
              "inspect $tmp/m" "inspect $tmp/m --json" "bench $tmp/m --repeat 1" \
              "write-sample $tmp/w --layout tiny --no-sync" \
              "reshard $tmp/m $tmp/r --shards 2 --no-sync"; do
    cmd="${args%% *}"
    # shellcheck disable=SC2086
    full_fails 1 "shardload $cmd" $args
  done
  # Nothing else on stderr for a command that succeeded otherwise.
  err="$("$bin" hash "$tmp/m" 2>&1 >/dev/full)"
  check "hash >/dev/full: one line on stderr" test "$err" = \
    "shardload hash: cannot write output: No space left on device"
  for cmd in inspect load verify bench hash reshard write-sample devices; do
    full_fails 1 "shardload $cmd" "$cmd" --help
  done
  full_fails 1 "shardload" --help
  full_fails 1 "shardload" --version
  # A usage error keeps its exit status; the lost error object is reported too.
  full_fails 2 "shardload hash" hash "$tmp/m" --bogus --json
  # Output larger than stdio's buffer: the write that fails comes before the end.
  check "hash of the moe sample prints more than 64 KiB" \
    test "$("$bin" hash "$tmp/big" | wc -c)" -gt 65536
  full_fails 1 "shardload hash" hash "$tmp/big"
  # (every stored tensor listed as unexpected)
  full_fails 1 "shardload load" load "$tmp/big" --non-strict --expect "$tmp/none.json"
else
  echo "skip: /dev/full is not writable here"
fi

# --version (and `version`): one line on stdout, exit 0; arguments after it are bad usage.
out="$("$bin" --version 2>&1)"; rc=$?
check "--version exits 0" test $rc -eq 0
check "--version prints 'shardload X.Y.Z' (got '$out')" \
  grep -qxE 'shardload [0-9]+\.[0-9]+\.[0-9]+' <<<"$out"
check "version prints the same" test "$("$bin" version 2>&1)" = "$out"
err="$("$bin" --version extra 2>&1 >/dev/null)"; rc=$?
check "--version extra: exit 2" test $rc -eq 2
check "--version extra: says so" test "$(head -n 1 <<<"$err")" = \
  "shardload: --version takes no arguments"
check "--help lists --version" grep -q -- '--version' <<<"$("$bin" --help)"
out="$("$bin" version --help)"; rc=$?
check "version --help exits 0" test $rc -eq 0
check "version --help prints its usage" test "$(head -n 1 <<<"$out")" = \
  "usage: shardload --version   (also: shardload version)"

# An error naming a file whose name holds a newline is still one line on stderr.
nl_dir="$tmp/two
lines"
mkdir -p "$nl_dir"
for cmd in inspect hash load verify bench; do
  err="$("$bin" "$cmd" "$nl_dir" 2>&1 >/dev/null)"
  check "$cmd of a folder named with a newline: one line on stderr" \
    test "$(printf '%s\n' "$err" | wc -l)" -eq 1
  check "$cmd of a folder named with a newline: the name escaped" \
    grep -qF 'two\nlines' <<<"$err"
done

# A pipe whose reader went away: SIGPIPE ends the command, as usual (no message).
"$bin" hash "$tmp/big" 2>"$tmp/err" | head -c 1 >/dev/null
check "hash into a closed pipe: killed by SIGPIPE, nothing on stderr" test ! -s "$tmp/err"

# --- catalog warnings: an index whose total_size is wrong.
cli_check_tiny_checkpoint "$tmp/warn"
sed -i 's/"total_size": 12448/"total_size": 7/' "$tmp/warn/model.safetensors.index.json"
warning="warning: model.safetensors.index.json: metadata total_size is 7 but the shards hold 12448 tensor bytes"
out="$("$bin" hash "$tmp/warn" 2>&1)"; rc=$?
check "hash with a warning exits 0" test $rc -eq 0
check "hash: the warning first, prefixed like load's" test "$(head -n 1 <<<"$out")" = "shardload hash: $warning"
check "hash: the warning once" test "$(grep -c warning <<<"$out")" -eq 1
for args in "load $tmp/warn" "verify $tmp/warn" "bench $tmp/warn --repeat 1" \
            "reshard $tmp/warn $tmp/warn-out --shards 2 --no-sync"; do
  cmd="${args%% *}"
  # shellcheck disable=SC2086
  "$bin" $args >"$tmp/out" 2>"$tmp/err"; rc=$?
  check "$cmd with a warning exits 0" test $rc -eq 0
  check "$cmd prints the warning on stderr" test "$(cat "$tmp/err")" = "shardload $cmd: $warning"
done

# --- inspect's summary: metadata with control characters stays one line per entry.
python3 - "$tmp/warn/model.safetensors.index.json" <<'PY'
import json, sys
path = sys.argv[1]
index = json.load(open(path))
index["metadata"]["total_size"] = 12448
index["metadata"]["note"] = "line1\nline2\x1b[31m"
index["metadata"]["bad\tkey"] = "plain"
json.dump(index, open(path, "w"))
PY
out="$("$bin" inspect "$tmp/warn")"; rc=$?
check "inspect exits 0" test $rc -eq 0
check "inspect: a value with control characters JSON-quoted" \
  grep -qxF '  note = "line1\nline2\u001b[31m"' <<<"$out"
check "inspect: a key with a tab JSON-quoted" grep -qxF '  "bad\tkey" = plain' <<<"$out"
check "inspect: no raw escape character" test "$(tr -d -c '\033' <<<"$out" | wc -c)" -eq 0
check "inspect: plain metadata as it is" grep -qxF '  total_size = 12448' <<<"$out"

# --- a switch given a value is a usage error, never read as the switch (--cold=no
# used to run a cold benchmark, dropping the page cache).
for args in "bench $tmp/m --cold=no" "load $tmp/m --json=0" "verify $tmp/m --json=false" \
            "load $tmp/m --verify=1" "reshard $tmp/m $tmp/r2 --no-sync=yes"; do
  cmd="${args%% *}"
  flag="${args##* }"
  # shellcheck disable=SC2086
  err="$("$bin" $args 2>&1 >/dev/null)"; rc=$?
  check "$args: exit 2" test $rc -eq 2
  check "$args: says the switch takes no value" \
    grep -qF -- "${flag%%=*} takes no value (got '$flag')" <<<"$err"
done
check "reshard with a refused switch wrote nothing" test ! -e "$tmp/r2"

# --- a bare "--" ends the options: paths that start with "--" (run from $tmp).
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
(cd "$tmp" && "$bin" write-sample --no-sync --layout tiny -- --dash >/dev/null 2>&1)
check "write-sample -- --dash: writes the folder '--dash'" test -f "$tmp/--dash/model.safetensors"
for cmd in inspect hash verify load; do
  (cd "$tmp" && "$bin" $cmd -- --dash >/dev/null 2>&1); rc=$?
  check "$cmd -- --dash: exit 0" test $rc -eq 0
done
(cd "$tmp" && "$bin" reshard -- --dash --dash-out >/dev/null 2>&1); rc=$?
check "reshard -- --dash --dash-out (no --shards): exit 2" test $rc -eq 2
(cd "$tmp" && "$bin" reshard --shards 2 --no-sync -- --dash --dash-out >/dev/null 2>&1); rc=$?
check "reshard --shards 2 -- --dash --dash-out: exit 0" test $rc -eq 0
check "reshard wrote the folder '--dash-out'" test -f "$tmp/--dash-out/model.safetensors.index.json"
err="$("$bin" inspect --dash 2>&1)"; rc=$?
check "without --, '--dash' is an unknown option (exit 2)" test $rc -eq 2

cli_check_done
