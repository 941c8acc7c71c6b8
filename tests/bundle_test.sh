#!/usr/bin/env bash
# tests/bundle_test.sh MAKE_BUNDLE SHARDLOAD LIBSHARDLOAD SHARDLOAD_H DLPACK_H PY_FILE... —
# build a bundle with tools/make_bundle.sh (what tools/package ships), unpack its
# tarball somewhere else, and use it from there with nothing else pointing at it: the
# command, a C program built with its pkg-config file, and the Python package; each
# must find the bundled libraries through the RUNPATHs, not the build tree. Then the
# wheel, installed by pip into a folder of its own and loaded from there.
set -uo pipefail
source "$(dirname "$0")/cli_check.sh"
make_bundle="$1"; shift
cli_check_setup bundle "$1"
lib="$2"

# skip WHY: a skipped case for Bazel and tools/count_tests.py.
skip() {
  echo "SKIP: $1"
  if [ -n "${XML_OUTPUT_FILE:-}" ]; then
    printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="bundle_test" tests="1" skipped="1"><testcase name="bundle_test" classname="bundle"><skipped message="%s"/></testcase></testsuite></testsuites>\n' \
      "$1" >"$XML_OUTPUT_FILE"
  fi
  exit 0
}
# A sanitizer build needs its runtime loaded first, which a plain C program or Python
# does not do (tools/test leaves this test out of its ASan pass).
grep -qE ' U __(asan_init|ubsan_)' <<<"$(nm -D "$lib")" && skip "libshardload.so is a sanitizer build"

export SOURCE_DATE_EPOCH=1767225600  # what tools/package sets from the commit
out="$("$make_bundle" "$tmp/dist" "$@")"; rc=$?
check "make_bundle exits 0" test $rc -eq 0
tarball="$(sed -n 1p <<<"$out")"
check "make_bundle names a tarball ($tarball)" test -f "$tarball"
version="$("$1" --version)"; version="${version#shardload }"
name="shardload-$version-linux-$(uname -m)"
check "the bundle is named $name" test "$(basename "$tarball")" = "$name.tar.gz"
wheel="$(sed -n 2p <<<"$out")"
# The wheel's platform is the oldest manylinux its libraries meet (tools/make_wheel.py):
# on Debian 12, manylinux_2_34 (glibc 2.34, GLIBCXX up to 3.4.29), never older than the glibc
# the bundle's README names.
wheel_re="^shardload-$version-py3-none-manylinux_2_([0-9]+)_$(uname -m)\\.whl\$"
check "make_bundle names a manylinux wheel ($wheel)" grep -qE "$wheel_re" <<<"$(basename "$wheel")"
check "the wheel exists" test -f "$wheel"
tag_minor="$(basename "$wheel" | sed -nE "s/$wheel_re/\\1/p")"
readme_glibc="$(tar -xzOf "$tarball" "$name/README.txt" |
  sed -nE 's/^The host provides glibc 2\.([0-9]+) or newer.*/\1/p')"
check "the wheel's manylinux_2_$tag_minor is no older than the README's glibc 2.$readme_glibc" \
  test "${tag_minor:-0}" -ge "${readme_glibc:-999}"
# RHEL 9 (glibc 2.34, GCC 11's libstdc++) must stay a supported host: a library that
# needs a newer symbol (condition_variable::wait of GCC 12's libstdc++, say; use
# WaitNotified in loader/sink.h) raises the tag past 2_34.
check "the wheel installs on glibc 2.34 hosts (manylinux_2_$tag_minor <= 2_34)" \
  test "${tag_minor:-99}" -le 34
# auditwheel (the PyPA's checker, where tools/setup could install it) reads the same tag.
if python3 -m auditwheel --version >/dev/null 2>&1; then
  aw="$(python3 -m auditwheel show "$wheel" 2>&1)"
  check "auditwheel agrees: manylinux_2_${tag_minor}_$(uname -m)" \
    grep -q "consistent with the following platform tag: \"manylinux_2_${tag_minor}_$(uname -m)\"" \
    <<<"$(tr -s ' \n' ' ' <<<"$aw")"
else
  echo "note: no auditwheel for python3; the wheel's tag is not cross-checked"
fi
# A library that needs one manylinux does not allow gives a linux_ wheel, with the
# reason; a truncated ELF file is refused with its name.
mkdir -p "$tmp/mw" && cc -shared -fPIC -Wl,-soname,libodd.so.1 -x c /dev/null -o "$tmp/mw/libodd.so.1"
cc -shared -fPIC -x c /dev/null -o "$tmp/mw/libuser.so" -L"$tmp/mw" -Wl,--no-as-needed -l:libodd.so.1
mw="$(dirname "$make_bundle")/make_wheel.py"
out_mw="$(python3 "$mw" "$tmp/mw/out" 1.2.3 "$tmp/mw/libuser.so" 2>"$tmp/mw/err")"; rc=$?
check "make_wheel: outside library -> exit 0" test $rc -eq 0
check "make_wheel: outside library -> linux_ tag ($out_mw)" \
  test "$(basename "$out_mw")" = "shardload-1.2.3-py3-none-linux_$(uname -m).whl"
check "make_wheel: outside library -> says why" test "$(cat "$tmp/mw/err")" = \
  "make_wheel: tagging linux_$(uname -m), not manylinux: libuser.so needs libodd.so.1, which manylinux does not allow"
head -c 100 "$tmp/mw/libuser.so" >"$tmp/mw/libcut.so"
python3 "$mw" "$tmp/mw/out2" 1.2.3 "$tmp/mw/libcut.so" >/dev/null 2>"$tmp/mw/err"; rc=$?
check "make_wheel: truncated ELF -> exit 1" test $rc -eq 1
check "make_wheel: truncated ELF -> names the file and offset" grep -qE \
  "^make_wheel: $tmp/mw/libcut.so: ELF structure at byte [0-9]+ runs past the end \(100 bytes\)\$" "$tmp/mw/err"
check "make_wheel: truncated ELF -> no wheel" test ! -e "$tmp/mw/out2"
cp "$wheel" "$tmp/" && wheel="$tmp/$(basename "$wheel")"
# The same inputs and SOURCE_DATE_EPOCH give the same tarball and wheel, byte for byte,
# whatever the caller's umask.
out2="$(umask 002 && "$make_bundle" "$tmp/dist2" "$@")"
check "the tarball is reproducible" cmp -s "$tarball" "$(sed -n 1p <<<"$out2")"
check "the wheel is reproducible" cmp -s "$wheel" "$(sed -n 2p <<<"$out2")"
check "tar entries are root's, sorted, dated SOURCE_DATE_EPOCH" test \
  "$(TZ=UTC tar -tvzf "$tarball" | awk '{ print $2, $4, $5 }' | sort -u)" = "0/0 2026-01-01 00:00"
check "no group- or world-writable entry in the tarball" \
  test -z "$(tar -tvzf "$tarball" | awk 'substr($1, 6, 1) == "w" || substr($1, 9, 1) == "w"')"
rm -rf "$tmp/dist2"

# Unpack elsewhere and remove what it was made from: nothing may refer back to it.
mkdir -p "$tmp/elsewhere" && tar -C "$tmp/elsewhere" -xzf "$tarball"
rm -rf "$tmp/dist"
b="$tmp/elsewhere/$name"
for f in bin/shardload lib/libshardload.so lib/pkgconfig/shardload.pc \
         include/shardload/shardload.h include/shardload/dlpack.h README.txt \
         python/shardload/__init__.py python/shardload/_lib.py python/shardload/numpy.py \
         python/shardload/libshardload.so; do
  check "bundle holds $f" test -f "$b/$f"
done
for dep in libsimdjson.so.14 libxxhash.so.0; do
  check "lib/$dep bundled" test -f "$b/lib/$dep"
  for user in bin/shardload lib/libshardload.so python/shardload/libshardload.so; do
    want="$b/$(dirname "$user" | sed 's|^bin$|lib|')/$dep"
    got="$(ldd "$b/$user" | awk -v d="$dep" '$1 == d { print $3 }')"
    check "$user finds the bundled $dep (ldd: $got)" \
      test "$(realpath -m "$got")" = "$(realpath -m "$want")"
  done
done
check "libstdc++ is the host's, not bundled" test ! -e "$b/lib/libstdc++.so.6"
for pkg in libsimdjson14 libxxhash0; do
  check "licenses/$pkg.copyright shipped" test -s "$b/licenses/$pkg.copyright"
  check "THIRD_PARTY_NOTICES names $pkg" grep -q "Debian package $pkg " "$b/licenses/THIRD_PARTY_NOTICES.txt"
done
check "THIRD_PARTY_NOTICES names the CUDA runtime" grep -q 'NVIDIA CUDA runtime' "$b/licenses/THIRD_PARTY_NOTICES.txt"
# Other libraries of the same names on LD_LIBRARY_PATH (stubs that would fail at the
# first simdjson call) do not replace the bundled ones: DT_RPATH is searched first.
mkdir -p "$tmp/stubs"
for dep in libsimdjson.so.14 libxxhash.so.0; do
  cc -shared -fPIC -Wl,-soname,"$dep" -x c /dev/null -o "$tmp/stubs/$dep"
done

check "README names the glibc it needs" grep -qE '^The host provides glibc [0-9]+\.[0-9]+ or newer' "$b/README.txt"

# The command, with a bare environment.
run() { env -i PATH=/usr/bin:/bin HOME="$tmp" "$@"; }
check "bin/shardload --version" test "$(run "$b/bin/shardload" --version)" = "shardload $version"
run "$b/bin/shardload" write-sample "$tmp/ck" --layout tiny --shards 2 --seed 3 --no-sync >/dev/null
check "bin/shardload write-sample + verify" run "$b/bin/shardload" verify "$tmp/ck"
check "bin/shardload ignores stubs on LD_LIBRARY_PATH" \
  run env LD_LIBRARY_PATH="$tmp/stubs" "$b/bin/shardload" hash "$tmp/ck"

# A C program built with the pkg-config file only.
cat >"$tmp/app.c" <<'C'
#include <stdio.h>
#include <shardload.h>
int main(int argc, char** argv) {
  sl_checkpoint* ckpt = NULL;
  if (sl_checkpoint_open(argv[1], &ckpt) != SL_OK) {
    fprintf(stderr, "%s\n", sl_last_error());
    return 1;
  }
  printf("%s %zu tensors\n", sl_version(), sl_checkpoint_tensor_count(ckpt));
  sl_checkpoint_free(ckpt);
  return 0;
}
C
export PKG_CONFIG_PATH="$b/lib/pkgconfig"
check "pkg-config --modversion" test "$(pkg-config --modversion shardload)" = "$version"
libdir="$(pkg-config --variable=libdir shardload)"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror "$tmp/app.c" -o "$tmp/app" $(pkg-config --cflags --libs shardload) \
  -Wl,-rpath,"$libdir"
check "C program built with pkg-config" test -x "$tmp/app"
check "C program loads from the bundle" test "$(run "$tmp/app" "$tmp/ck")" = "$version 21 tensors"
check "C program ignores stubs on LD_LIBRARY_PATH" \
  test "$(run env LD_LIBRARY_PATH="$tmp/stubs" "$tmp/app" "$tmp/ck")" = "$version 21 tensors"
got="$(ldd "$tmp/app" | awk '$1 == "libshardload.so" { print $3 }')"
check "C program uses the bundled library (ldd: $got)" \
  test "$(realpath -m "$got")" = "$(realpath -m "$b/lib/libshardload.so")"

# The Python package from the bundle's python/ and from the wheel, installed offline
# by pip into a folder of its own (no SHARDLOAD_LIBRARY): the library version from
# any interpreter with pip, a load_file where one also has torch, and a
# shardload.numpy save_file + load_file where it has numpy (in a file of its own: the
# sample's BF16 has no numpy type).
# py_probe DIR: "<version> <library path>[ <tensors loaded>][ np <arrays loaded>]"
# with PYTHONPATH=DIR.
py_probe() {
  env -u SHARDLOAD_LIBRARY PYTHONPATH="$1" "$py" - "$tmp/ck" "$tmp" <<'PY'
import sys, shardload
from shardload import _lib
out = [shardload.version(), _lib._lib._name]
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    out.append(str(len(shardload.load_file(sys.argv[1]))))
try:
    import numpy  # noqa: F401
except ImportError:
    pass
else:
    import os, shardload.numpy
    path = os.path.join(sys.argv[2], "np.safetensors")
    shardload.numpy.save_file({"a": numpy.arange(3), "b": numpy.ones(2, numpy.float16)}, path)
    out.append("np %d" % len(shardload.numpy.load_file(path)))
print(" ".join(out))
PY
}
py=""
for cand in /usr/bin/python3 python3; do
  command -v "$cand" >/dev/null 2>&1 && "$cand" -m pip --version >/dev/null 2>&1 && { py="$cand"; break; }
done
check "an interpreter with pip is here (tools/setup's /usr/bin/python3)" test -n "$py"
if [ -n "$py" ]; then
  torch_part=""
  "$py" -c 'import torch' >/dev/null 2>&1 && torch_part=" 21"
  [ -z "$torch_part" ] && echo "note: $py has no torch; load_file is not tried"
  "$py" -c 'import numpy' >/dev/null 2>&1 && torch_part="$torch_part np 2"
  out="$(py_probe "$b/python")"
  check "Python uses the bundled package ($out)" \
    test "$out" = "$version $b/python/shardload/libshardload.so$torch_part"
  "$py" -m pip install --quiet --root-user-action=ignore --no-deps --no-index --target "$tmp/site" "$wheel"
  check "pip installs the wheel" test -f "$tmp/site/shardload/libshardload.so"
  check "pip recorded it" test -f "$tmp/site/shardload-$version.dist-info/RECORD"
  check "the wheel carries the licences" \
    test -s "$tmp/site/shardload-$version.dist-info/licenses/THIRD_PARTY_NOTICES.txt"
  out="$(py_probe "$tmp/site")"
  check "Python uses the installed wheel ($out)" \
    test "$out" = "$version $tmp/site/shardload/libshardload.so$torch_part"
  got="$(ldd "$tmp/site/shardload/libshardload.so" | awk '$1 == "libsimdjson.so.14" { print $3 }')"
  check "the wheel's library finds its own libsimdjson (ldd: $got)" \
    test "$(realpath -m "$got")" = "$(realpath -m "$tmp/site/shardload/libsimdjson.so.14")"
fi
# The wheel on the GPU machine's interpreter (Python 3.12 with torch 2.11), installed
# with that interpreter's own pip, where tools/setup could make it.
py312=/opt/shardload/torch-2.11-py312/bin/python
if [ -x "$py312" ] && "$py312" -c 'import torch' >/dev/null 2>&1; then
  py="$py312"
  "$py" -m pip install --quiet --no-deps --no-index --target "$tmp/site312" "$wheel"
  out="$(py_probe "$tmp/site312")"
  check "Python 3.12 uses the installed wheel ($out)" \
    test "$out" = "$version $tmp/site312/shardload/libshardload.so 21 np 2"
else
  echo "note: no $py312 with torch (tools/setup makes it where pyenv has a 3.12)"
fi
cli_check_done
