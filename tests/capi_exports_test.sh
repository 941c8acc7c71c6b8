#!/usr/bin/env bash
# tests/capi_exports_test.sh — libshardload.so exports the C API and nothing of the C++
# library. The only other defined dynamic symbols allowed are the two libstdc++
# std::string members that libsimdjson.so imports: gold keeps a shared library's
# references exported whatever the version script says (they are the same weak
# template instantiations libstdc++ itself exports, so nothing is interposed).
# Then the headers installed side by side in one folder (as a distribution ships them)
# compile as C99 with -pedantic, and a program linked against the .so runs.
# Usage: capi_exports_test.sh LIBSHARDLOAD_SO SHARDLOAD_H DLPACK_H
set -euo pipefail
lib="$1"
header="$2"
dlpack="$3"
if ! command -v nm >/dev/null; then echo "SKIP: nm not found"; exit 0; fi
syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
allowed='^(sl_.*|_ZNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEE10_M_disposeEv|_ZNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEE9_M_createERmm)$'
bad=$(echo "$syms" | grep -Ev "$allowed" || true)
if [ -n "$bad" ]; then echo "unexpected exported symbols:"; echo "$bad"; exit 1; fi
# Every function the header declares is exported.
for f in sl_checkpoint_open sl_load_into sl_load_all sl_loaded_export_dlpack sl_save_file \
         sl_save_sharded sl_last_error sl_report_json sl_options_set_progress \
         sl_host_pool_new sl_host_pool_free sl_host_pool_cached_bytes sl_host_pool_trim \
         sl_options_set_host_pool sl_cancel_token_new sl_cancel_token_cancel \
         sl_options_set_cancel_token sl_checkpoint_hold_files sl_options_set_metadata_aliases sl_last_save_warning sl_checkpoint_open_with \
         sl_cuda_staging_bytes sl_cuda_release_staging sl_checkpoint_tensors; do
  grep -qx "$f" <<<"$syms" || { echo "missing export $f"; exit 1; }  # no pipe: grep -q quits early (SIGPIPE under pipefail)
done
# The fake CUDA runtime (and the environment variable only it reads) stays out of the
# real library.
if grep -qa SHARDLOAD_FAKE_CUDA "$lib"; then echo "the fake CUDA runtime is linked into $lib"; exit 1; fi
# The SONAME, so that programs linked against the .so do not record its build path.
if command -v readelf >/dev/null; then
  soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ "$soname" = "$(basename "$lib")" ] || { echo "SONAME is '$soname', not $(basename "$lib")"; exit 1; }
fi
n=$(echo "$syms" | grep -c '^sl_')
echo "libshardload.so exports $n sl_* symbols and no C++ library symbol"

# Installed layout: include/shardload.h next to include/dlpack.h, lib/libshardload.so.
if ! command -v cc >/dev/null; then echo "SKIP: no C compiler for the installed-header check"; exit 0; fi
dir="$(mktemp -d "${TEST_TMPDIR:-/tmp}/capi_install.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/include" "$dir/lib"
cp "$header" "$dir/include/shardload.h"
cp "$dlpack" "$dir/include/dlpack.h"
cp "$lib" "$dir/lib/libshardload.so"
cat >"$dir/use.c" <<'EOF'
#include <shardload.h>
#include <stdio.h>
int main(void) {
  sl_checkpoint* ckpt = NULL;
  int s = sl_checkpoint_open("/nonexistent/shardload-install-check", &ckpt);
  DLManagedTensor* unused = NULL;
  (void)unused;
  printf("%s|%s\n", sl_status_name(s), sl_last_error());
  return s == SL_NOT_FOUND && ckpt == NULL ? 0 : 1;
}
EOF
# A sanitizer build of the library needs its runtime first in the program: build the
# program with the same sanitizers.
sanitize=()
all_syms="$(nm -D "$lib")"  # no pipe into grep -q (SIGPIPE under pipefail)
grep -q ' U __asan_init' <<<"$all_syms" && sanitize+=(-fsanitize=address)
grep -q ' U __ubsan_' <<<"$all_syms" && sanitize+=(-fsanitize=undefined)
cc -std=c99 -pedantic -Wall -Werror "${sanitize[@]}" -I"$dir/include" "$dir/use.c" \
  -o "$dir/use" -L"$dir/lib" -lshardload -Wl,-rpath,"$dir/lib"
out="$("$dir/use")" || { echo "installed-header program failed: $out"; exit 1; }
want="not_found|/nonexistent/shardload-install-check: no such file or directory"
[ "$out" = "$want" ] || { echo "installed-header program printed '$out', not '$want'"; exit 1; }
echo "the headers compile side by side in one folder and link against the .so"
