# tests/cli_check.sh — what the CLI shell tests share; sourced, not run.
#
#   source "$(dirname "$0")/cli_check.sh"
#   cli_check_setup load_cli "$1"     # bin=$1, tmp=a fresh scratch folder, fails=0
#   cli_check_tiny_checkpoint "$tmp/m"
#   check "load exits 0" test $rc -eq 0
#   cli_check_done                    # prints "N failed"; the test's exit status

# cli_check_setup NAME BIN: set `bin`, a fresh `tmp` folder under $TEST_TMPDIR (or a
# new temporary folder outside Bazel) called NAME, and `fails`.
cli_check_setup() {
  bin="$2"
  tmp="${TEST_TMPDIR:-$(mktemp -d)}/$1"
  rm -rf "$tmp" && mkdir -p "$tmp"
  fails=0
}

# cli_check_tiny_checkpoint DIR: `write-sample DIR --layout tiny --shards 3 --seed 5`
# (21 BF16 tensors, 12448 bytes, 3 shards); exits the test when that fails.
cli_check_tiny_checkpoint() {
  "$bin" write-sample "$1" --layout tiny --shards 3 --seed 5 >/dev/null ||
    { echo "FAIL: write-sample $1"; exit 1; }
}

# check DESCRIPTION COMMAND...: run COMMAND; print "ok: DESCRIPTION" or
# "FAIL: DESCRIPTION" and count the failure.
check() {
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}

# cli_check_done: print the number of failures; returns non-zero when there was one.
cli_check_done() {
  echo "$fails failed"
  [ "$fails" -eq 0 ]
}
