#!/usr/bin/env python3
"""tools/make_wheel.py — write the Python package and its native libraries as a wheel.

Usage: make_wheel.py OUT_DIR VERSION FILE... [--licenses LICENCE_FILE...]

FILEs (the package's .py files, libshardload.so and the libraries it needs from
next to itself) all go into the wheel's `shardload/` folder, where the package looks
for libshardload.so and whose RUNPATH ($ORIGIN) finds the others. The tag is
`py3-none-linux_<machine>`: one wheel for every CPython 3 (ctypes, nothing compiled
per interpreter). The platform is the oldest manylinux (PEP 600) whose rules the
native files meet, read from their ELF dynamic sections: every library they need from
outside the wheel is one manylinux allows (glibc's, libstdc++, libgcc_s, ...), and
the newest symbol version they need of each (GLIBC_, GLIBCXX_, CXXABI_, GCC_) is
within what that manylinux allows (the table below, auditwheel's policy for x86_64).
Built on Debian 12 that is `manylinux_2_34_<machine>` (glibc 2.34's pthread symbols;
libstdc++ up to GLIBCXX_3.4.29), so pip refuses it on an older host instead of
installing a package that cannot load.
Files that meet no manylinux give `linux_<machine>`, with a warning on stderr.
Written with the standard library only (no setuptools or wheel package); `pip install
FILE.whl --no-deps` installs it offline. Prints the wheel's path. An existing wheel of the same
name is replaced atomically. LICENCE_FILEs go into the wheel's
`shardload-VERSION.dist-info/licenses/`.
"""
import base64
import hashlib
import os
import platform
import re
import struct
import sys
import tempfile
import time
import zipfile

# MANYLINUX: (tag, newest allowed version per symbol namespace), oldest first; from
# auditwheel's manylinux policy (x86_64). A namespace a policy does not name is not
# allowed by it.
MANYLINUX = [
    ("manylinux_2_17", {"GLIBC": "2.17", "GLIBCXX": "3.4.19", "CXXABI": "1.3.7", "GCC": "4.8.0"}),
    ("manylinux_2_24", {"GLIBC": "2.24", "GLIBCXX": "3.4.22", "CXXABI": "1.3.10", "GCC": "4.8.0"}),
    ("manylinux_2_27", {"GLIBC": "2.27", "GLIBCXX": "3.4.24", "CXXABI": "1.3.11", "GCC": "7.0.0"}),
    ("manylinux_2_28", {"GLIBC": "2.28", "GLIBCXX": "3.4.24", "CXXABI": "1.3.11", "GCC": "7.0.0"}),
    ("manylinux_2_31", {"GLIBC": "2.31", "GLIBCXX": "3.4.28", "CXXABI": "1.3.12", "GCC": "7.0.0"}),
    ("manylinux_2_34", {"GLIBC": "2.34", "GLIBCXX": "3.4.29", "CXXABI": "1.3.13", "GCC": "7.0.0"}),
    ("manylinux_2_35", {"GLIBC": "2.35", "GLIBCXX": "3.4.30", "CXXABI": "1.3.13", "GCC": "12.0.0"}),
    ("manylinux_2_36", {"GLIBC": "2.36", "GLIBCXX": "3.4.30", "CXXABI": "1.3.13", "GCC": "12.0.0"}),
    ("manylinux_2_38", {"GLIBC": "2.38", "GLIBCXX": "3.4.30", "CXXABI": "1.3.13", "GCC": "12.0.0"}),
    ("manylinux_2_39", {"GLIBC": "2.39", "GLIBCXX": "3.4.33", "CXXABI": "1.3.15", "GCC": "14.0.0"}),
    ("manylinux_2_41", {"GLIBC": "2.41", "GLIBCXX": "3.4.33", "CXXABI": "1.3.15", "GCC": "14.0.0"}),
]
# ALLOWED_EXTERNAL: the libraries a manylinux wheel may need from the host (the ones
# without a GUI or compression; this package needs none of those).
ALLOWED_EXTERNAL = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libmvec.so.1",
    "libanl.so.1", "libresolv.so.2", "libutil.so.1", "libnsl.so.1", "libstdc++.so.6",
    "libgcc_s.so.1", "libatomic.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}


class ElfError(Exception):
    pass


def elf_needs(data, label):
    """(needed libraries, {library: [version names]}) of a 64-bit little-endian ELF
    file's dynamic section (DT_NEEDED) and version needs (.gnu.version_r); None for a
    file that is not ELF. Raises ElfError for a truncated or malformed one."""
    if data[:4] != b"\x7fELF":
        return None
    if data[4] != 2 or data[5] != 1:
        raise ElfError("%s: not a 64-bit little-endian ELF file" % label)

    def unpack(fmt, offset):
        size = struct.calcsize(fmt)
        if offset < 0 or offset + size > len(data):
            raise ElfError("%s: ELF structure at byte %d runs past the end (%d bytes)"
                           % (label, offset, len(data)))
        return struct.unpack_from(fmt, data, offset)

    def cstr(offset):
        end = data.find(b"\0", offset)
        if offset < 0 or offset >= len(data) or end < 0:
            raise ElfError("%s: ELF string at byte %d runs past the end" % (label, offset))
        return data[offset:end].decode("ascii", "replace")

    shoff, = unpack("<Q", 0x28)
    shentsize, shnum = unpack("<HH", 0x3A)
    sections = [unpack("<IIQQQQIIQQ", shoff + i * shentsize) for i in range(shnum)]
    needed, versions = [], {}
    for _, kind, _, _, offset, size, link, info, _, _ in sections:
        if link >= len(sections):
            continue
        strings = sections[link][4]  # the linked string table's file offset
        if kind == 6:  # SHT_DYNAMIC
            for at in range(offset, offset + size, 16):
                tag, value = unpack("<qQ", at)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(cstr(strings + value))
        elif kind == 0x6FFFFFFE:  # SHT_GNU_verneed: `info` entries
            at = offset
            for _ in range(info):
                _, count, file_name, aux, next_entry = unpack("<HHIII", at)
                library = cstr(strings + file_name)
                names = versions.setdefault(library, [])
                aux_at = at + aux
                for _ in range(count):
                    _, _, _, name, next_aux = unpack("<IHHII", aux_at)
                    names.append(cstr(strings + name))
                    aux_at += next_aux
                at += next_entry
    if not any(kind == 6 for _, kind, *_ in sections):
        raise ElfError("%s: no dynamic section (section headers stripped?): cannot read "
                       "the libraries it needs" % label)
    return needed, versions


def version_key(text):
    return tuple(int(part) for part in text.split("."))


def platform_tag(files, machine):
    """The wheel's platform tag for native `files` (paths): the oldest manylinux in
    MANYLINUX they meet, else linux_<machine> with the reason on stderr."""
    inside = {os.path.basename(f) for f in files}
    newest = {}  # namespace -> newest version needed
    for path in files:
        with open(path, "rb") as f:
            needs = elf_needs(f.read(), path)
        if needs is None:
            continue
        needed, versions = needs
        for library in needed:
            if library not in inside and library not in ALLOWED_EXTERNAL:
                return fallback_tag(machine, "%s needs %s, which manylinux does not allow"
                                    % (os.path.basename(path), library))
        for library, names in versions.items():
            for name in names:
                m = re.fullmatch(r"([A-Z]+)_([0-9]+(?:\.[0-9]+)*)", name)
                if library in inside or m is None:
                    continue  # a bundled library's own versions; GLIBC_PRIVATE-style names
                space, version = m.group(1), m.group(2)
                if space not in newest or version_key(version) > version_key(newest[space]):
                    newest[space] = version
    for tag, allowed in MANYLINUX:
        if all(space in allowed and version_key(v) <= version_key(allowed[space])
               for space, v in newest.items()):
            return "%s_%s" % (tag, machine)
    return fallback_tag(machine, "needs %s, newer than any manylinux this script knows" %
                        ", ".join("%s_%s" % kv for kv in sorted(newest.items())))


def fallback_tag(machine, why):
    print("make_wheel: tagging linux_%s, not manylinux: %s" % (machine, why), file=sys.stderr)
    return "linux_" + machine


def record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def main(argv):
    if len(argv) < 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out_dir, version, files = argv[1], argv[2], argv[3:]
    licences = []
    if "--licenses" in files:
        at = files.index("--licenses")
        files, licences = files[:at], files[at + 1:]
    if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version):
        print("make_wheel: version must be X.Y.Z, got %r" % version, file=sys.stderr)
        return 2
    try:
        tag = "py3-none-" + platform_tag(
            [f for f in files if f.endswith(".so") or ".so." in os.path.basename(f)],
            platform.machine())
    except (OSError, ElfError) as e:
        print("make_wheel: %s" % e, file=sys.stderr)
        return 1
    dist_info = "shardload-%s.dist-info" % version
    entries = []  # (archive name, bytes, unix mode)
    for path in sorted(files, key=os.path.basename):
        with open(path, "rb") as f:
            data = f.read()
        mode = 0o755 if path.endswith(".so") or ".so." in os.path.basename(path) else 0o644
        entries.append(("shardload/" + os.path.basename(path), data, mode))
    metadata = (
        "Metadata-Version: 2.1\n"
        "Name: shardload\n"
        "Version: %s\n"
        "Summary: Load safetensors checkpoints (one file or a sharded folder) into host or "
        "GPU memory; torch tensors through DLPack, or numpy arrays\n"
        "Requires-Python: >=3.8\n"
        "Provides-Extra: torch\n"
        "Requires-Dist: torch; extra == \"torch\"\n"
        "Provides-Extra: numpy\n"
        "Requires-Dist: numpy; extra == \"numpy\"\n" % version).encode()
    wheel = ("Wheel-Version: 1.0\n"
             "Generator: shardload tools/make_wheel.py\n"
             "Root-Is-Purelib: false\n"
             "Tag: %s\n" % tag).encode()
    for path in sorted(licences, key=os.path.basename):
        with open(path, "rb") as f:
            entries.append((dist_info + "/licenses/" + os.path.basename(path), f.read(), 0o644))
    entries.append((dist_info + "/METADATA", metadata, 0o644))
    entries.append((dist_info + "/WHEEL", wheel, 0o644))
    record_lines = ["%s,%s,%d" % (name, record_hash(data), len(data)) for name, data, _ in entries]
    record_lines.append(dist_info + "/RECORD,,")
    entries.append((dist_info + "/RECORD", ("\n".join(record_lines) + "\n").encode(), 0o644))

    # Entry dates: SOURCE_DATE_EPOCH (tools/package sets the commit's time), else 1980-01-01
    # (zip's earliest), so that the same inputs give the same bytes.
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
    date_time = time.gmtime(max(epoch, 315532800))[:6]
    os.makedirs(out_dir, exist_ok=True)
    name = "shardload-%s-%s.whl" % (version, tag)
    fd, tmp = tempfile.mkstemp(prefix="." + name, dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
                for arcname, data, mode in entries:
                    info = zipfile.ZipInfo(arcname, date_time=date_time)
                    info.external_attr = (0o100000 | mode) << 16  # a regular file, its mode
                    info.compress_type = zipfile.ZIP_DEFLATED
                    z.writestr(info, data)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(out_dir, name))
    except BaseException:
        os.unlink(tmp)
        raise
    print(os.path.join(out_dir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
