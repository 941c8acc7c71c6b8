#!/usr/bin/env bash
# tools/make_bundle.sh DEST SHARDLOAD LIBSHARDLOAD SHARDLOAD_H DLPACK_H PY_FILE... —
# assemble a relocatable shardload bundle from built files (tools/package builds them
# with -c opt and calls this; tests/bundle_test.sh calls it on the test's own build):
#
#   DEST/shardload-VERSION-linux-ARCH/
#     bin/shardload                   the command (DT_RPATH $ORIGIN/../lib)
#     lib/libshardload.so             the C API (DT_RPATH $ORIGIN)
#     lib/libsimdjson.so.14 ...       every library they need that is not part of the
#                                     C/C++ runtime (glibc, libstdc++, libgcc_s) or the
#                                     CUDA driver, which the host must provide
#     lib/pkgconfig/shardload.pc      relocatable (${pcfiledir}): cflags and libs
#     include/shardload/              shardload.h and dlpack.h, side by side
#     python/shardload/               the Python package with its own copies of the
#                                     libraries (PYTHONPATH=.../python, or copy the
#                                     folder into site-packages)
#     licenses/                       the bundled libraries' licences and notices
#     README.txt                      what is inside and what the host needs
#   DEST/shardload-VERSION-linux-ARCH.tar.gz
#   DEST/shardload-VERSION-py3-none-manylinux_2_N_ARCH.whl   the Python package
#                                     and its libraries as a wheel
#                                     (tools/make_wheel.py picks N):
#                                     pip install it --no-deps
#
# It prints the tarball, the wheel and the bundle folder, one per line. Everything is
# assembled in a hidden folder of DEST and moved into place at the end; output of the
# same names is removed just before (nothing is left half-written on a failure).
# Needs ldd, objdump (binutils), dpkg, tar, gzip and python3.
set -euo pipefail
umask 022  # the bundle's modes (and so the tarball's bytes) do not depend on the caller's
for tool in ldd objdump dpkg dpkg-query tar gzip python3; do
  command -v "$tool" >/dev/null || { echo "make_bundle: $tool is needed" >&2; exit 1; }
done
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
# Every bundled library comes with its licence: the copyright file of the Debian
# package that installed it (dpkg -S), else the build fails rather than ship it bare.
mkdir -p "$root/licenses"
notices=()
bundled=()
# licence_package FILE: the Debian package that installed FILE (tried as linked, as
# resolved, and without a merged-/usr prefix, which dpkg may record either way).
licence_package() {
  local path pkg
  for path in "$1" "$(readlink -f "$1")" "$(readlink -f "$1" | sed 's|^/usr/|/|')"; do
    pkg="$(dpkg -S "$path" 2>/dev/null | grep -v '^diversion by' | head -n 1 | cut -d: -f1)" ||
      true
    [ -n "$pkg" ] && { echo "$pkg"; return 0; }
  done
  return 0
}
for file in "$bin" "$lib"; do
  # The libraries the build linked, not those a caller's LD_LIBRARY_PATH would pick.
  deps="$(env -u LD_LIBRARY_PATH ldd "$file")" ||
    { echo "make_bundle: ldd $file failed" >&2; exit 1; }
  if grep -q 'not found' <<<"$deps"; then
    echo "make_bundle: $file needs libraries this machine lacks:" >&2
    grep 'not found' <<<"$deps" >&2
    exit 1
  fi
  while read -r dep; do
    [ -n "$dep" ] || continue
    host_provided "$dep" && continue
    [ -e "$root/lib/$(basename "$dep")" ] && continue
    real="$(readlink -f "$dep")"
    install -m 0644 "$real" "$root/lib/$(basename "$dep")"
    bundled+=("$(basename "$dep")")
    pkg="$(licence_package "$dep")"
    if [ -z "$pkg" ] || [ ! -f "/usr/share/doc/$pkg/copyright" ]; then
      echo "make_bundle: no licence found for $real (not from a Debian package?)" >&2
      exit 1
    fi
    install -m 0644 "/usr/share/doc/$pkg/copyright" "$root/licenses/$pkg.copyright"
    notices+=("$(basename "$dep"): Debian package $pkg $(dpkg-query -W -f '${Version}' "$pkg"), licence in licenses/$pkg.copyright")
  done < <(awk '/=> \// { print $3 }' <<<"$deps")
done
for f in libshardload.so "${bundled[@]}"; do cp "$root/lib/$f" "$root/python/shardload/"; done
# The CUDA runtime is linked into both binaries (libcudart_static.a).
cudart_licence="$(ls /usr/local/cuda/dist-info/nvidia_cuda_runtime-*/licenses/License.txt 2>/dev/null |
                  head -n 1)" || cudart_licence=""
if [ -n "$cudart_licence" ]; then
  install -m 0644 "$cudart_licence" "$root/licenses/cuda_runtime.License.txt"
  cudart_where="licenses/cuda_runtime.License.txt"
else
  cudart_where="the CUDA Toolkit's EULA (docs.nvidia.com/cuda/eula)"
fi
{
  echo "Third-party software in this bundle"
  echo
  for n in "${notices[@]}"; do echo "- $n"; done
  echo "- The NVIDIA CUDA runtime, linked statically into bin/shardload and"
  echo "  lib/libshardload.so (python/shardload's copy too): NVIDIA's licence, $cudart_where."
  echo "- include/shardload/dlpack.h restates the memory layout of DLPack"
  echo "  (github.com/dmlc/dlpack, Apache-2.0), in shardload's own words."
} >"$root/licenses/THIRD_PARTY_NOTICES.txt"

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
  { objdump -T "$@" 2>/dev/null || true; } | { grep -o "(${prefix}_[0-9.]*)" || true; } |
    tr -d '()' | sed "s/^${prefix}_//" | sort -uV | tail -n 1
}
glibc="$(newest_version GLIBC "$root/bin/shardload" "$root"/lib/*.so*)"
glibcxx="$(newest_version GLIBCXX "$root/bin/shardload" "$root"/lib/*.so*)"
cat >"$root/README.txt" <<EOF
shardload $version for Linux $(uname -m)

bin/shardload            the command: bin/shardload --help
lib/libshardload.so      the C API (include/shardload/shardload.h); it exports the sl_*
                         functions and nothing else of its own
lib/pkgconfig            B=<this folder>; export PKG_CONFIG_PATH="\$B/lib/pkgconfig"
                         cc app.c \$(pkg-config --cflags --libs shardload) -Wl,-rpath,"\$B/lib"
                         (pkg-config escapes spaces and shell characters in the
                         folder's path: for such a folder, pass -I"\$B/include/shardload"
                         -L"\$B/lib" -lshardload yourself)
python/shardload         the Python package (ctypes; CPython 3.8 or newer, torch for
                         tensors): PYTHONPATH=<this folder>/python, or copy the folder
                         into site-packages; or pip install the .whl made with it
licenses/                the licences of the bundled third-party software

Bundled: ${bundled[*]:-nothing}, in lib/ (and python/shardload/), where bin/shardload
and libshardload.so look first (RPATH \$ORIGIN/../lib and \$ORIGIN, searched before
LD_LIBRARY_PATH). Link or copy the folders as a whole: a symbolic link to
libshardload.so alone makes \$ORIGIN its own folder.
The host provides glibc ${glibc:-?} or newer, libstdc++ with GLIBCXX_${glibcxx:-?} or
newer, and, for GPUs, an NVIDIA driver r580 or newer (the CUDA 13 runtime is linked in
statically; \`bin/shardload devices\` says what it finds). The folder can be moved: nothing in it refers to where it was made.
EOF

# Reproducible: names sorted, one timestamp (SOURCE_DATE_EPOCH, which tools/package
# sets to the commit's time; 0 without it), owner root, gzip without a timestamp.
find "$root" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
tar -C "$stage" --sort=name --mtime="@${SOURCE_DATE_EPOCH:-0}" --owner=0 --group=0 \
  --numeric-owner -cf - "$name" | gzip -n >"$stage/$name.tar.gz"
wheel="$(python3 "$(dirname "$0")/make_wheel.py" "$stage/wheel" "$version" "$root"/python/shardload/* \
         --licenses "$root"/licenses/*)"
rm -rf "$dest/$name" "$dest/$name.tar.gz"
mv "$root" "$dest/$name"
mv "$stage/$name.tar.gz" "$dest/$name.tar.gz"
mv "$wheel" "$dest/"
echo "$dest/$name.tar.gz"
echo "$dest/$(basename "$wheel")"
echo "$dest/$name"
