#!/usr/bin/env python3
"""tools/make_wheel.py — write the Python package and its native libraries as a wheel.

Usage: make_wheel.py OUT_DIR VERSION FILE... [--licenses LICENCE_FILE...]

FILEs (the package's .py files, libshardload.so and the libraries it needs from
next to itself) all go into the wheel's `shardload/` folder, where the package looks
for libshardload.so and whose RUNPATH ($ORIGIN) finds the others. The tag is
`py3-none-linux_<machine>`: one wheel for every CPython 3 (ctypes, nothing compiled
per interpreter), for Linux hosts with the glibc and libstdc++ the bundle's README.txt
names (not a manylinux wheel: it is not built against an old glibc). Written with the
standard library only (no setuptools or wheel package); `pip install FILE.whl
--no-deps` installs it offline. Prints the wheel's path. An existing wheel of the same
name is replaced atomically. LICENCE_FILEs go into the wheel's
`shardload-VERSION.dist-info/licenses/`.
"""
import base64
import hashlib
import os
import platform
import re
import sys
import tempfile
import time
import zipfile


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
    tag = "py3-none-linux_" + platform.machine()
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
        "GPU memory; torch tensors through DLPack\n"
        "Requires-Python: >=3.8\n"
        "Provides-Extra: torch\n"
        "Requires-Dist: torch; extra == \"torch\"\n" % version).encode()
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
