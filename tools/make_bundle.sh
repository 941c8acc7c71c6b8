#!/usr/bin/env bash
# tools/make_bundle.sh DEST SHARDLOAD LIBSHARDLOAD SHARDLOAD_H DLPACK_H PY_FILE... —
# assemble a relocatable shardload bundle from built files (tools/package builds them
# with -c opt and calls this; tests/bundle_test.sh calls it on the test's own build):
#
#   DEST/shardload-VERSION-linux-ARCH/
#     bin/shardload                   the command (RUNPATH $ORIGIN/../lib)
#     lib/libshardload.so             the C API (RUNPATH $ORIGIN)
#     lib/libsimdjson.so.14 ...       every library they need that is not part of the
#                                     C/C++ runtime (glibc, libstdc++, libgcc_s) or the
#                                     CUDA driver, which the host must provide
#     lib/pkgconfig/shardload.pc      relocatable (${pcfiledir}): cflags and libs
#     include/shardload/              shardload.h and dlpack.h, side by side
#     python/shardload/               the Python package with its own copies of the
#                                     libraries (PYTHONPATH=.../python, or copy the
#                                     folder into site-packages)
#     README.txt                      what is inside and what the host needs
#   DEST/shardload-VERSION-linux-ARCH.tar.gz
#   DEST/shardload-VERSION-py3-none-linux_ARCH.whl   the Python package and its
#                                     libraries as a wheel (tools/make_wheel.py):
#                                     pip install it --no-deps
#
# It prints the tarball, the wheel and the bundle folder, one per line. Existing output of the same name is
# replaced only once the new one is complete.
set -euo pipefail
if [ $# -lt 6 ]; then
  echo "usage: $0 DEST SHARDLOAD LIBSHARDLOAD SHARDLOAD_H DLPACK_H PY_FILE..." >&2
  exit 2
fi
dest="$1"; bin="$2"; lib="$3"; header="$4"; dlpack="$5"; shift 5
py_files=("$@")

version_line="$("$bin" --version)"
version="${version_line#shardload }"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  { echo "make_bundle: '$bin --version' printed '$version_line'" >&2; exit 1; }
name="shardload-$version-linux-$(uname -m)"
mkdir -p "$dest"
stage="$(mktemp -d "$dest/.$name.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/bin" "$root/lib/pkgconfig" "$root/include/shardload" "$root/python/shardload"

install -m 0755 "$bin" "$root/bin/shardload"
install -m 0755 "$lib" "$root/lib/libshardload.so"
install -m 0644 "$header" "$dlpack" "$root/include/shardload/"
for f in "${py_files[@]}"; do install -m 0644 "$f" "$root/python/shardload/"; done

# host_provided LIB: libraries the host must supply (the C/C++ runtime shared with the
# embedding process, and the CUDA driver), never copied.
host_provided() {
  case "$(basename "$1")" in
    linux-vdso.so*|ld-linux*|libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|\
    libstdc++.so*|libgcc_s.so*|libcuda.so*) return 0 ;;
    *) return 1 ;;
  esac
}
bundled=()
for file in "$bin" "$lib"; do
  while read -r dep; do
    [ -n "$dep" ] || continue
    host_provided "$dep" && continue
    [ -e "$root/lib/$(basename "$dep")" ] && continue
    install -m 0644 "$(readlink -f "$dep")" "$root/lib/$(basename "$dep")"
    bundled+=("$(basename "$dep")")
  done < <(ldd "$file" | awk '/=> \// { print $3 }')
done
for f in libshardload.so "${bundled[@]}"; do cp "$root/lib/$f" "$root/python/shardload/"; done

cat >"$root/lib/pkgconfig/shardload.pc" <<EOF
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: shardload
Description: Loads safetensors checkpoints into host or GPU memory (C API)
Version: $version
Libs: -L\${libdir} -lshardload
Cflags: -I\${includedir}/shardload
EOF

# newest_version PREFIX FILE...: the newest PREFIX_x.y symbol version the files need.
newest_version() {
  local prefix="$1"; shift
  objdump -T "$@" 2>/dev/null | grep -o "(${prefix}_[0-9.]*)" | tr -d '()' |
    sed "s/^${prefix}_//" | sort -uV | tail -n 1
}
glibc="$(newest_version GLIBC "$root/bin/shardload" "$root"/lib/*.so*)"
glibcxx="$(newest_version GLIBCXX "$root/bin/shardload" "$root"/lib/*.so*)"
cat >"$root/README.txt" <<EOF
shardload $version for Linux $(uname -m)

bin/shardload            the command: bin/shardload --help
lib/libshardload.so      the C API (include/shardload/shardload.h; only sl_* exported)
lib/pkgconfig            cc app.c \$(pkg-config --cflags --libs shardload) \\
                           -Wl,-rpath,\$(pkg-config --variable=libdir shardload)
                         with PKG_CONFIG_PATH=<this folder>/lib/pkgconfig
python/shardload         the Python package (ctypes; any CPython 3, torch for tensors):
                         PYTHONPATH=<this folder>/python, or copy the folder into
                         site-packages

Bundled: ${bundled[*]:-nothing} (found next to the binaries through their RUNPATH).
The host provides glibc ${glibc:-?} or newer, libstdc++ with GLIBCXX_${glibcxx:-?} or
newer, and, for GPUs, an NVIDIA driver r580 or newer (the CUDA 13 runtime is linked in
statically). The folder can be moved: nothing in it refers to where it was made.
EOF

tar -C "$stage" -czf "$stage/$name.tar.gz" "$name"
wheel="$(python3 "$(dirname "$0")/make_wheel.py" "$stage/wheel" "$version" "$root"/python/shardload/*)"
rm -rf "$dest/$name" "$dest/$name.tar.gz"
mv "$root" "$dest/$name"
mv "$stage/$name.tar.gz" "$dest/$name.tar.gz"
mv "$wheel" "$dest/"
echo "$dest/$name.tar.gz"
echo "$dest/$(basename "$wheel")"
echo "$dest/$name"
