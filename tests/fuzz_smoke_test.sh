#!/usr/bin/env bash
# tests/fuzz_smoke_test.sh WRITE_SEEDS [SECONDS] — build the libFuzzer targets with
# clang (fuzz/build.sh, from the runfiles' copy of the sources) and run each for
# SECONDS (default 10) seeded with the malformed corpus (tests/malformed_corpus.h) and
# fuzz/make_seeds.py's inputs. Any crash, sanitizer report, leak, timeout or broken
# invariant fails the test, and the failing input is printed in base64 to reproduce it:
#   base64 -d > crash && /tmp/shardload-fuzz/header_fuzzer crash
# When clang or its libFuzzer runtime is missing, every case is reported as skipped.
# Writes its own JUnit XML (one case per stage) for tools/count_tests.py.
set -uo pipefail

write_seeds="$(readlink -f "$1")"
seconds="${2:-10}"
root="${TEST_SRCDIR:?}/${TEST_WORKSPACE:-shardload}"
scratch="${TEST_TMPDIR:-/tmp}/fuzz-smoke"
rm -rf "$scratch"
mkdir -p "$scratch/seeds/malformed" "$scratch/tmp"
xml="${XML_OUTPUT_FILE:-$scratch/test.xml}"
targets=(header_fuzzer index_fuzzer checkpoint_fuzzer)
cases=""
failures=0
skipped=0

xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'; }
add_case() {  # add_case NAME STATUS(pass|fail|skip) SECONDS [DETAIL]
  local body=""
  case "$2" in
    fail) body="<failure message=\"$1 failed\">$(printf '%s' "${4:-}" | xml_escape)</failure>"
          failures=$((failures + 1)) ;;
    skip) body="<skipped message=\"$(printf '%s' "${4:-}" | xml_escape)\"/>"
          skipped=$((skipped + 1)) ;;
  esac
  cases+="<testcase name=\"$1\" classname=\"FuzzSmoke\" time=\"$3\">$body</testcase>"
}
write_xml() {
  local n=$((${#targets[@]} + 1))
  printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="FuzzSmoke" tests="%d" failures="%d" skipped="%d">%s</testsuite></testsuites>\n' \
    "$n" "$failures" "$skipped" "$cases" >"$xml"
}

start=$SECONDS
JOBS=2 "$root/fuzz/build.sh" "$scratch/bin" "${targets[@]}" >"$scratch/build.log" 2>&1
rc=$?
if [ $rc -eq 77 ]; then
  reason="$(tail -2 "$scratch/build.log" | tr '\n' ' ')"
  echo "SKIPPED: $reason"
  add_case build skip 0 "$reason"
  for t in "${targets[@]}"; do add_case "$t" skip 0 "clang libFuzzer runtime missing"; done
  write_xml
  exit 0
elif [ $rc -ne 0 ]; then
  cat "$scratch/build.log"
  add_case build fail $((SECONDS - start)) "$(tail -40 "$scratch/build.log")"
  for t in "${targets[@]}"; do add_case "$t" skip 0 "build failed"; done
  write_xml
  exit 1
fi
add_case build pass $((SECONDS - start))
echo "built in $((SECONDS - start)) s"

"$write_seeds" "$scratch/seeds/malformed" || { echo "write_seeds failed"; exit 1; }
python3 "$root/fuzz/make_seeds.py" "$scratch/seeds" || { echo "make_seeds.py failed"; exit 1; }

for t in "${targets[@]}"; do
  kind="${t%_fuzzer}"
  corpus="$scratch/corpus-$kind"
  mkdir -p "$corpus" "$scratch/artifacts-$kind"
  seeds=("$scratch/seeds/$kind")
  [ "$kind" != index ] && seeds+=("$scratch/seeds/malformed")
  t0=$SECONDS
  TMPDIR="$scratch/tmp" "$scratch/bin/$t" -max_total_time="$seconds" -seed=1 -max_len=4096 \
    -timeout=10 -rss_limit_mb=2048 -dict="$root/fuzz/safetensors.dict" -print_final_stats=1 \
    -artifact_prefix="$scratch/artifacts-$kind/" "$corpus" "${seeds[@]}" >"$scratch/$t.log" 2>&1
  rc=$?
  runs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$scratch/$t.log" | grep -o '[0-9]*$')"
  if [ $rc -ne 0 ]; then
    detail="$(grep -v '^#' "$scratch/$t.log" | tail -60)"
    for a in "$scratch/artifacts-$kind"/*; do
      [ -f "$a" ] && detail+=$'\n'"input ($(basename "$a")), base64: $(base64 -w0 "$a")"
    done
    echo "FAIL $t (exit $rc)"
    echo "$detail"
    add_case "$t" fail $((SECONDS - t0)) "$detail"
  else
    echo "ok $t: ${runs:-?} runs in $((SECONDS - t0)) s, no crash"
    add_case "$t" pass $((SECONDS - t0))
  fi
done
write_xml
[ $failures -eq 0 ]
