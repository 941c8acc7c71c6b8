"""tests/python_numpy_test.py — shardload.numpy and safe_open(framework="np").

Run by python/run_with_torch.sh: argv[1] is libshardload.so. Compares against
safetensors.numpy where safetensors is importable (those cases skip otherwise). Needs
numpy, not torch (test_no_torch_is_imported runs the module with torch made
unimportable). Writes a JUnit XML file to $XML_OUTPUT_FILE when set.
"""
import gc
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import unittest
import unittest.mock

import numpy as np

import py_junit
import shardload
import shardload.numpy as snp
from shardload import _lib

try:
    import safetensors.numpy as sn
    from safetensors import safe_open as st_safe_open
except ImportError:  # the reference is optional
    sn = None

# The dtypes numpy has a type for, as safetensors.numpy maps them.
NP_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
             "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64,
             "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
             "C64": np.complex64}


try:
    import ml_dtypes
except ImportError:  # optional: BF16 and F8 arrays need it
    ml_dtypes = None

# The dtypes that load as ml_dtypes' types where it is importable.
ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
             "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz",
             "F8_E5M2FNUZ": "float8_e5m2fnuz"}
LACKS = ("%s: tensor 'w': dtype %s has no numpy type (numpy takes F64, F32, F16, I64, I32, "
         "I16, I8, U64, U32, U16, U8, BOOL, C64, and with the ml_dtypes package BF16, F8_E4M3, "
         "F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ; load it as a torch tensor instead)")


def needs_reference(fn):
    return unittest.skipIf(sn is None, "safetensors is not importable")(fn)


def sample_arrays():
    rng = np.random.default_rng(7)
    return {
        "f64": rng.standard_normal((2, 2)),
        "f32": rng.standard_normal((4, 5)).astype(np.float32),
        "f16": rng.standard_normal((3, 2)).astype(np.float16),
        "i64": np.arange(-5, 5, dtype=np.int64),
        "i32": np.arange(12, dtype=np.int32).reshape(3, 4),
        "i16": np.array([-3, 7], dtype=np.int16),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "u32": np.array([1, 2**32 - 1], dtype=np.uint32),
        "u16": np.array([9, 65535], dtype=np.uint16),
        "u8": np.array([0, 200, 255], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "c64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def raw_file(path, tensors, metadata=None):
    """Write a .safetensors file by hand: tensors is a list of (name, dtype, shape,
    bytes), laid out in that order."""
    header, offset, data = {}, 0, b""
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        data += blob
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


class NumpyTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def assertError(self, code, message, fn, *args, **kwargs):
        with self.assertRaises(shardload.ShardloadError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.code, code)
        self.assertEqual(cm.exception.message, message)

    # ------------------------------------------------------------------ round trips

    def test_save_and_load_round_trip_every_numpy_dtype(self):
        arrays = sample_arrays()
        p = self.path("a.safetensors")
        snp.save_file(arrays, p, metadata={"epoch": "3"})
        got = snp.load_file(p)
        self.assertEqual(sorted(got), sorted(arrays))
        for k, a in arrays.items():
            self.assertTrue(same(got[k], a), k)
            self.assertTrue(got[k].flags.c_contiguous, k)
        with shardload.safe_open(p, framework="np") as f:
            self.assertEqual(f.metadata(), {"epoch": "3"})
            self.assertEqual(sorted(f.keys()), sorted(arrays))
            for k, a in arrays.items():
                self.assertTrue(same(f.get_tensor(k), a), k)

    @needs_reference
    def test_same_bytes_and_arrays_as_safetensors_numpy(self):
        arrays = sample_arrays()
        ours, theirs = self.path("ours.safetensors"), self.path("theirs.safetensors")
        snp.save_file(arrays, ours, metadata={"k": "v"})
        sn.save_file(arrays, theirs, metadata={"k": "v"})
        with open(ours, "rb") as f, open(theirs, "rb") as g:
            self.assertEqual(f.read(), g.read())
        self.assertEqual(snp.save(arrays), sn.save(arrays))
        want = sn.load_file(theirs)
        got = snp.load_file(theirs)
        self.assertEqual(list(got), list(want))  # file order, as safetensors gives it
        for k in want:
            self.assertTrue(same(got[k], want[k]), k)
        with shardload.safe_open(theirs, "np") as f, st_safe_open(theirs, "np") as g:
            self.assertEqual(f.keys(), g.keys())
            self.assertEqual(f.offset_keys(), g.offset_keys())
            self.assertEqual(f.metadata(), g.metadata())
            mine, ref = f.get_tensors(), g.get_tensors()
            self.assertEqual(list(mine), list(ref))
            for k in ref:
                self.assertTrue(same(mine[k], ref[k]), k)
                self.assertTrue(same(f.get_tensor(k), g.get_tensor(k)), k)
        back = snp.load(sn.save(arrays))
        for k in arrays:
            self.assertTrue(same(back[k], arrays[k]), k)

    @needs_reference
    def test_random_dicts_write_and_read_like_the_reference(self):
        rng = random.Random(11)
        names = list(NP_DTYPES)
        for case in range(150):
            arrays = {}
            for i in range(rng.randint(0, 6)):
                dt = NP_DTYPES[rng.choice(names)]
                shape = tuple(rng.choice([0, 1, 2, 3, 5]) for _ in range(rng.randint(0, 4)))
                raw = np.frombuffer(bytes(rng.getrandbits(8) for _ in range(
                    int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize)), np.uint8)
                if dt is np.bool_:
                    raw = raw & 1
                arrays["t%d.%s" % (i, rng.choice(["w", "bias", "é"]))] = \
                    raw.view(dt).reshape(shape)
            data = snp.save(arrays)
            self.assertEqual(data, sn.save(arrays), case)
            want, got = sn.load(data), snp.load(data)  # sn.load's order is its own
            self.assertEqual(sorted(got), sorted(want), case)
            for k in want:
                self.assertTrue(same(got[k], want[k]), (case, k))

    def test_sharded_folder_loads_whole(self):
        folder = self.path("sharded")
        os.mkdir(folder)
        a = {"a.w": np.arange(6, dtype=np.float32).reshape(2, 3), "a.b": np.ones(3, np.int8)}
        b = {"b.w": np.full((4,), 7, dtype=np.uint16)}
        snp.save_file(a, os.path.join(folder, "model-00001-of-00002.safetensors"))
        snp.save_file(b, os.path.join(folder, "model-00002-of-00002.safetensors"))
        weight_map = {k: "model-00001-of-00002.safetensors" for k in a}
        weight_map.update({k: "model-00002-of-00002.safetensors" for k in b})
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 6 * 4 + 3 + 4 * 2},
                       "weight_map": weight_map}, f)
        got = snp.load_file(folder)
        self.assertEqual(list(got), ["a.w", "a.b", "b.w"])  # shard, then offset
        for k, v in list(a.items()) + list(b.items()):
            self.assertTrue(same(got[k], v), k)
        got = snp.load_file(folder, renames=["s/^a\\./x./"], threads=1, io="pread")
        self.assertEqual(list(got), ["b.w", "x.b", "x.w"])  # renamed names after, sorted
        self.assertTrue(same(got["x.w"], a["a.w"]))

    def test_loaded_arrays_are_writable_and_keep_the_arena_until_the_last_goes(self):
        p = self.path("a.safetensors")
        snp.save_file({"a": np.arange(4, dtype=np.int32), "b": np.ones(2, np.float64)}, p)
        l = _lib.lib()
        gc.collect()
        before = l.sl_live_arena_sets()
        got = snp.load_file(p)
        self.assertEqual(l.sl_live_arena_sets(), before + 1)
        a = got["a"]
        a[0] = 99  # writable, as safetensors' arrays are; the file is untouched
        self.assertTrue(a.flags.writeable)
        self.assertEqual(snp.load_file(p)["a"].tolist(), [0, 1, 2, 3])
        gc.collect()
        del got
        gc.collect()
        self.assertEqual(l.sl_live_arena_sets(), before + 1)  # `a` still holds it
        self.assertEqual(a.tolist(), [99, 1, 2, 3])
        del a
        gc.collect()
        self.assertEqual(l.sl_live_arena_sets(), before)

    def test_one_export_per_load_keeps_every_array_of_it(self):
        # The export is made for the first tensor (by name) with bytes: here "a", which
        # the file holds last, after a zero-byte tensor and "b".
        p = self.path("e.safetensors")
        raw_file(p, [("c", "F32", [0, 3], b""),
                     ("b", "F32", [3], np.arange(3, dtype="<f4").tobytes()),
                     ("a", "I16", [2], np.array([7, -8], "<i2").tobytes())])
        exports = []
        real = _lib.lib()

        class Recording:  # the library, with sl_loaded_export_dlpack's indexes noted
            def __getattr__(self, name):
                return getattr(real, name)

            def sl_loaded_export_dlpack(self, loaded, index, flags, out):
                exports.append(index)
                return real.sl_loaded_export_dlpack(loaded, index, flags, out)

        gc.collect()
        before = real.sl_live_arena_sets()
        with unittest.mock.patch.object(_lib, "lib", lambda: Recording()):
            got = snp.load_file(p)
        self.assertEqual(list(got), ["c", "b", "a"])
        self.assertEqual(len(exports), 1)
        b = got["b"][1:]
        del got
        gc.collect()
        self.assertEqual(real.sl_live_arena_sets(), before + 1)  # `b` holds "a"'s export
        self.assertEqual(b.tolist(), [1.0, 2.0])
        del b
        gc.collect()
        self.assertEqual(real.sl_live_arena_sets(), before)

    def test_a_failing_loaded_get_raises(self):
        p = self.path("g.safetensors")
        snp.save_file({"a": np.arange(2, dtype=np.int8), "b": np.ones(2, np.int8)}, p)
        real = _lib.lib()

        class Failing:  # sl_loaded_get fails for the second tensor (as past the end)
            def __getattr__(self, name):
                return getattr(real, name)

            def sl_loaded_get(self, loaded, index, out):
                return real.sl_loaded_get(loaded, index + 100 * (index == 1), out)

        with unittest.mock.patch.object(_lib, "lib", lambda: Failing()):
            with self.assertRaises(shardload.ShardloadError) as cm:
                snp.load_file(p)
        self.assertEqual(cm.exception.code, "out_of_range")

    def test_load_bytes_names_the_bytes_in_errors(self):
        arrays = {"w": np.arange(3, dtype=np.int16)}
        self.assertTrue(same(snp.load(snp.save(arrays))["w"], arrays["w"]))
        with self.assertRaises(shardload.ShardloadError) as cm:
            snp.load(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + b"x")
        self.assertEqual(cm.exception.code, "invalid_argument")
        self.assertTrue(cm.exception.message.startswith("<bytes>: "), cm.exception.message)

    def test_load_file_options_reach_the_loader(self):
        folder = self.path("unlisted")
        os.mkdir(folder)
        snp.save_file({"a": np.arange(3, dtype=np.int8), "extra": np.ones(2, np.int8)},
                      os.path.join(folder, "model-00001-of-00001.safetensors"))
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {"a": "model-00001-of-00001.safetensors"}},
                      f)
        self.assertError("invalid_argument", "model.safetensors.index.json: shard "
                         "'model-00001-of-00001.safetensors' holds tensor 'extra', which the "
                         "index does not list",
                         snp.load_file, folder)
        with self.assertWarns(shardload.ShardloadWarning):
            got = snp.load_file(folder, strict_index=False)
        self.assertEqual(sorted(got), ["a", "extra"])
        p = self.path("o.safetensors")
        # Odd data offsets: a 1-byte tensor first, so the others sit off 256-byte phase.
        raw_file(p, [("b", "U8", [1], b"\1"), ("c", "U8", [5], bytes(range(5))),
                     ("d", "U8", [3], b"xyz")])
        data_start = 8 + struct.unpack("<Q", open(p, "rb").read(8))[0]
        offsets = {"b": 0, "c": 1, "d": 6}
        aligned = snp.load_file(p)
        phased = snp.load_file(p, placement="file-phase")
        for k, off in offsets.items():
            self.assertEqual(aligned[k].ctypes.data % 256, 0, k)
            self.assertEqual(phased[k].ctypes.data % 256, (data_start + off) % 256, k)
            self.assertTrue(same(phased[k], aligned[k]), k)
        with self.assertRaises(TypeError) as cm:
            snp.load_file(p, threads=1.5)
        self.assertEqual(str(cm.exception), "threads must be an int, got float")
        token = shardload.CancelToken()
        token.cancel()
        self.assertError("cancelled", "load cancelled", snp.load_file, p, cancel=token)

    def test_options_backend_progress_and_pool(self):
        p = self.path("a.safetensors")
        arrays = sample_arrays()
        snp.save_file(arrays, p)
        calls = []
        pool = shardload.HostMemoryPool()
        for kwargs in [dict(backend="pread"), dict(backend="mmap"), dict(io="mmap", threads=1),
                       dict(progress=lambda d, t: calls.append((d, t))), dict(pool=pool),
                       dict(placement="file-phase")]:
            got = snp.load_file(p, **kwargs)
            for k in arrays:
                self.assertTrue(same(got[k], arrays[k]), (kwargs, k))
        total = sum(a.nbytes for a in arrays.values())
        self.assertEqual(calls[0], (0, total))
        self.assertEqual(calls[-1], (total, total))
        self.assertError("invalid_argument",
                         'backend "nope" is invalid (expected one of: "mmap", "pread")',
                         snp.load_file, p, backend="nope")
        # A non-str, None too, refused as safetensors.numpy refuses it.
        for bad, phrase in ((None, "'None'"), (1, "'int' object")):
            with self.assertRaises(TypeError) as cm:
                snp.load_file(p, backend=bad)
            self.assertEqual(str(cm.exception),
                             "argument 'backend': %s is not an instance of 'str'" % phrase)
            if sn is not None:
                with self.assertRaises(TypeError) as theirs:
                    sn.load_file(p, backend=bad)
                self.assertEqual(str(cm.exception), str(theirs.exception))
        with self.assertRaises(shardload.ShardloadFileNotFoundError):
            snp.load_file(self.path("missing.safetensors"))

    # ------------------------------------------------------------------ dtypes and shapes

    def test_a_dtype_numpy_lacks_is_refused_naming_tensor_and_file(self):
        p = self.path("f6.safetensors")
        raw_file(p, [("ok", "F32", [1], b"\0" * 4), ("w", "F6_E2M3", [4], b"\0" * 3)])
        # The file as the checkpoint names it (its shard name), as the library's errors do.
        message = LACKS % ("f6.safetensors", "F6_E2M3")
        self.assertError("unimplemented", message, snp.load_file, p)
        with shardload.safe_open(p, "np") as f:
            self.assertError("unimplemented", message, f.get_tensor, "w")
            self.assertError("unimplemented", message, f.get_tensors)
            s = f.get_slice("w")  # the slice's shape and dtype need no numpy type
            self.assertEqual((s.get_shape(), s.get_dtype()), ([4], "F6_E2M3"))
            self.assertError("unimplemented", message, s.__getitem__, 0)
            self.assertEqual(f.get_tensor("ok").tolist(), [0.0])
        # The dtype is checked before the shape: an F4 tensor of no bytes whose dimension
        # numpy could not hold is refused for its dtype, by every reader.
        p = self.path("f4.safetensors")
        raw_file(p, [("w", "F4", [0, 2 ** 64 - 2], b"")])
        message = LACKS % ("f4.safetensors", "F4")
        self.assertError("unimplemented", message, snp.load_file, p)
        with shardload.safe_open(p, "np") as f:
            self.assertError("unimplemented", message, f.get_tensor, "w")
            self.assertError("unimplemented", message, f.get_slice("w").__getitem__, 0)

    def test_bf16_and_f8_without_ml_dtypes_are_refused(self):
        p = self.path("bf.safetensors")
        raw_file(p, [("w", "BF16", [2], b"\0\x3f\0\xc0")])
        broken = self.path("broken")  # an ml_dtypes whose import fails with its own error
        os.makedirs(os.path.join(broken, "ml_dtypes"))
        with open(os.path.join(broken, "ml_dtypes", "__init__.py"), "w") as f:
            f.write("raise RuntimeError('built for another numpy')\n")
        for setup, note in [
                ("sys.modules['ml_dtypes'] = None  # any import of ml_dtypes now fails", ""),
                ("sys.path.insert(0, %r)" % broken, ""),
                ("import types; sys.modules['ml_dtypes'] = types.ModuleType('ml_dtypes'); "
                 "sys.modules['ml_dtypes'].__version__ = '0.0.1'  # one without the types",
                 " (the installed ml_dtypes 0.0.1 has no bfloat16)")]:
            script = (
                "import sys\n" + setup + "\n"
                "import shardload, shardload.numpy as snp\n"
                "shardload.set_library_path(sys.argv[1])\n"
                "for _ in range(2):  # the second time from what the first found\n"
                "    try:\n"
                "        snp.load_file(sys.argv[2])\n"
                "    except shardload.ShardloadError as e:\n"
                "        print(e.code, e.message)\n")
            out = subprocess.run([sys.executable, "-c", script, _lib.lib()._name, p],
                                 capture_output=True, text=True, cwd=self.dir,
                                 env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
            self.assertEqual(out.returncode, 0, out.stderr)
            message = (LACKS % ("bf.safetensors", "BF16")).replace(
                "F8_E5M2FNUZ;", "F8_E5M2FNUZ%s;" % note)
            self.assertEqual(out.stdout, "unimplemented %s\n" % message * 2, setup)

    @unittest.skipIf(ml_dtypes is None, "ml_dtypes is not importable")
    def test_bf16_and_f8_load_and_save_as_ml_dtypes(self):
        rng = np.random.default_rng(3)
        arrays = {}
        for st, name in ML_DTYPES.items():
            raw = rng.integers(0, 256, size=6, dtype=np.uint8)
            if st == "BF16":
                raw = raw[:6].copy()
            arrays[st.lower()] = raw.view(getattr(ml_dtypes, name)).reshape(
                (3,) if st == "BF16" else (2, 3))
        arrays["bf16_t"] = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3).T
        p = self.path("ml.safetensors")
        snp.save_file(arrays, p)
        got = snp.load_file(p)
        with shardload.safe_open(p, "np") as f:
            self.assertEqual({k: f.get_slice(k).get_dtype() for k in f.keys()},
                             dict({st.lower(): st for st in ML_DTYPES}, bf16_t="BF16"))
            for k, a in arrays.items():
                for mine in (got[k], f.get_tensor(k), f.get_slice(k)[:]):
                    self.assertEqual(mine.dtype, a.dtype, k)
                    self.assertEqual(mine.shape, a.shape, k)
                    self.assertEqual(mine.tobytes(), np.ascontiguousarray(a).tobytes(), k)
        if sn is not None:  # the reference writes the same bytes for contiguous arrays
            contiguous = {k: a for k, a in arrays.items() if k != "bf16_t"}
            self.assertEqual(snp.save(contiguous), sn.save(contiguous))
            # The reference loads BF16 alone (its F8 loads fail, its load() has no BF16).
            only = self.path("bf16.safetensors")
            snp.save_file({"bf16": arrays["bf16"]}, only)
            self.assertTrue(same(sn.load_file(only)["bf16"], arrays["bf16"]))

    @unittest.skipIf(ml_dtypes is None, "ml_dtypes is not importable")
    def test_big_endian_ml_dtypes_arrays_are_written_as_their_values(self):
        # numpy byte-swaps ml_dtypes' types, and a big-endian one keeps its name.
        bf = np.array([[1.5, -2.0, 3.0], [0.25, 8.0, -0.5]], dtype=ml_dtypes.bfloat16)
        be = bf.astype(bf.dtype.newbyteorder(">"))
        self.assertEqual(be.dtype.name, "bfloat16")
        f8 = np.array([1.0, -2.0], dtype=ml_dtypes.float8_e4m3fn)
        arrays = {"be": be, "be_t": be.T, "f8_be": f8.astype(f8.dtype.newbyteorder(">"))}
        got = snp.load(snp.save(arrays))
        for k, a in arrays.items():
            self.assertEqual(got[k].dtype, np.dtype(a.dtype.type), k)
            self.assertEqual(got[k].astype(np.float32).tolist(), a.astype(np.float32).tolist(),
                             k)
        if sn is not None:  # the reference byte-swaps a big-endian array of any dtype
            self.assertEqual(snp.save({"be": be}), sn.save({"be": be}))

    @unittest.skipIf(ml_dtypes is None, "ml_dtypes is not importable")
    def test_an_f8_tensor_first_by_name_loads(self):
        # The load's one export is made for the first tensor by name with bytes, F8 here
        # (no DLPack type: it is exported as bytes).
        p = self.path("f8first.safetensors")
        raw_file(p, [("a", "F8_E4M3", [2], b"\x38\x40"), ("b", "F32", [1], b"\0\0\x80\x3f")])
        got = snp.load_file(p)
        self.assertEqual(got["a"].dtype, np.dtype(ml_dtypes.float8_e4m3fn))
        self.assertEqual(got["a"].astype(np.float32).tolist(), [1.0, 2.0])
        self.assertEqual(got["b"].tolist(), [1.0])

    def test_shapes_numpy_cannot_have_are_out_of_range(self):
        p = self.path("big.safetensors")
        raw_file(p, [("huge", "F32", [0, 2**63], b""), ("wide", "F32", [0, 2**62], b""),
                     ("deep", "U8", [1] * 70, b"\1")])
        with shardload.safe_open(p, "np") as f:
            self.assertError("out_of_range", "tensor 'huge': dimension 1 (%d) does not fit "
                             "numpy's int64 sizes" % 2**63, f.get_tensor, "huge")
            with self.assertRaises(shardload.ShardloadError) as cm:
                f.get_tensor("wide")
            self.assertEqual(cm.exception.code, "out_of_range")
            self.assertTrue(cm.exception.message.startswith(
                "tensor 'wide': shape [0, %d] does not fit numpy's sizes (" % 2**62))
            with self.assertRaises(shardload.ShardloadError) as cm:
                f.get_tensor("deep")
            self.assertEqual(cm.exception.code, "out_of_range")
            self.assertIn("maximum supported dimension", cm.exception.message)
        # load_file's check runs in file order: the zero-element "huge" first.
        self.assertError("out_of_range", "tensor 'huge': dimension 1 (%d) does not fit "
                         "numpy's int64 sizes" % 2**63, snp.load_file, p)
        # A tensor with bytes past numpy's dimensions (32 in 1.x, 64 in 2.x) alone.
        deep = self.path("deep.safetensors")
        raw_file(deep, [("deep", "U8", [1] * 70, b"\1")])
        with self.assertRaises(shardload.ShardloadError) as cm:
            snp.load_file(deep)
        self.assertEqual(cm.exception.code, "out_of_range")
        self.assertIn("tensor 'deep': shape", cm.exception.message)

    # ------------------------------------------------------------------ saving

    def test_non_contiguous_and_big_endian_arrays_are_written_as_their_values(self):
        base = np.arange(24, dtype=np.float32).reshape(4, 6)
        arrays = {"t": base.T, "step": base[::2, ::-3], "be": np.arange(5, dtype=">i4"),
                  "be_c": np.array([1 + 2j], dtype=">c8"), "scalar_be": np.array(3, ">u2")}
        p = self.path("v.safetensors")
        snp.save_file(arrays, p)
        got = snp.load_file(p)
        for k, a in arrays.items():
            self.assertEqual(got[k].dtype, a.dtype.newbyteorder("="), k)
            self.assertEqual(got[k].shape, a.shape, k)
            self.assertTrue(np.array_equal(got[k], a), k)
        self.assertEqual(snp.load(snp.save({"t": base.T}))["t"].tolist(), base.T.tolist())

    def test_save_refusals(self):
        p = self.path("r.safetensors")
        with self.assertRaises(ValueError) as cm:
            snp.save_file([np.zeros(1)], p)
        self.assertEqual(str(cm.exception),
                         "Expected a dict of [str, numpy.ndarray] but received <class 'list'>")
        with self.assertRaises(ValueError) as cm:
            snp.save_file({"w": [1, 2]}, p)
        self.assertEqual(str(cm.exception),
                         "Key `w` is invalid, expected numpy.ndarray but received <class 'list'>")
        with self.assertRaises(TypeError) as cm:
            snp.save_file({1: np.zeros(1)}, p)
        self.assertEqual(str(cm.exception),
                         "argument 'tensor_dict': 'int' object is not an instance of 'str'")
        with self.assertRaises(TypeError) as cm:
            snp.save_file({"w": np.zeros(1)}, p, metadata={"k": 1})
        self.assertEqual(str(cm.exception),
                         "argument 'metadata': 'int' object is not an instance of 'str'")
        with self.assertRaises(ValueError) as cm:
            snp.save_file({"w": np.zeros(1)}, p, align=16)
        self.assertEqual(str(cm.exception), "align must be 8, 64 or 4096, got 16")
        names = ("bfloat16, bool, complex64, float16, float32, float64, float8_e4m3fn, "
                 "float8_e4m3fnuz, float8_e5m2, float8_e5m2fnuz, float8_e8m0fnu, int16, int32, "
                 "int64, int8, uint16, uint32, uint64, uint8")
        for bad, shown in [(np.zeros(1, np.complex128), "complex128"),
                           (np.array(["a"]), "<U1"), (np.array([None]), "object"),
                           (np.zeros(1, [("x", np.int8)]), "[('x', 'i1')]")]:
            self.assertError("invalid_argument", "tensor 'w': numpy dtype %s has no "
                             "safetensors dtype (numpy dtypes that have one: %s)" % (shown, names),
                             snp.save_file, {"w": bad}, p)
        # safetensors' order: each entry's value and dtype in dict order, then the names,
        # then the metadata.
        complex128 = "numpy dtype complex128 has no safetensors dtype (numpy dtypes that " \
                     "have one: %s)" % names
        self.assertError("invalid_argument", "tensor 1: " + complex128,
                         snp.save_file, {1: np.zeros(1, np.complex128)}, p)
        self.assertError("invalid_argument", "tensor 'b': " + complex128, snp.save_file,
                         {"a": np.zeros(1), "b": np.zeros(1, np.complex128)}, p,
                         metadata={"k": 1})
        with self.assertRaises(ValueError):  # a value before a later entry's dtype
            snp.save_file({"a": [1], "b": np.zeros(1, np.complex128)}, p)
        with self.assertRaises(TypeError) as cm:  # names before the metadata
            snp.save_file({1: np.zeros(1)}, p, metadata=["a"])
        self.assertIn("argument 'tensor_dict'", str(cm.exception))
        self.assertFalse(os.path.exists(p))  # nothing was written by any refusal
        self.assertError("invalid_argument", "<bytes>: tensor name '__metadata__' is reserved",
                         snp.save, {"__metadata__": np.zeros(1)})

    def test_save_replaces_atomically_and_records_checksums(self):
        p = self.path("c.safetensors")
        snp.save_file({"w": np.arange(8, dtype=np.int64)}, p, checksums=True, align=64)
        self.assertEqual(snp.load_file(p, verify=True)["w"].tolist(), list(range(8)))
        with open(p, "rb") as f:
            self.assertEqual((struct.unpack("<Q", f.read(8))[0] + 8) % 64, 0)
        with open(p, "r+b") as f:  # corrupt the last byte of the data
            f.seek(-1, os.SEEK_END)
            f.write(b"\x55")
        with self.assertRaises(shardload.ShardloadError) as cm:
            snp.load_file(p, verify=True)
        self.assertEqual(cm.exception.code, "data_loss")
        self.assertIn("tensor 'w' at bytes [", cm.exception.message)
        with shardload.safe_open(p, "np", verify=True) as f:
            for read in (lambda: f.get_tensor("w"), lambda: f.get_slice("w")[1:3],
                         f.get_tensors):
                with self.assertRaises(shardload.ShardloadError) as cm:
                    read()
                self.assertEqual(cm.exception.code, "data_loss")
        with shardload.safe_open(p, "np") as f:  # unverified, the corrupt byte is read
            self.assertEqual(f.get_tensor("w")[-1], 7 | (0x55 << 56))
        snp.save_file({"v": np.zeros(2, np.int8)}, p)  # replaces the file as a whole
        self.assertEqual(list(snp.load_file(p)), ["v"])

    # ------------------------------------------------------------------ safe_open

    def test_safe_open_numpy_framework_and_devices(self):
        p = self.path("a.safetensors")
        snp.save_file({"w": np.arange(3, dtype=np.int8)}, p)
        with shardload.safe_open(p, framework="numpy", device=None) as f:
            self.assertEqual(f.get_tensor("w").tolist(), [0, 1, 2])
            self.assertIsNone(f.metadata())
        for device, shown in [("cuda:0", "cuda:0"), (0, "cuda:0"), ("cuda:1", "cuda:1")]:
            self.assertError("invalid_argument", "device '%s' is not supported for framework "
                             "numpy (numpy arrays are in host memory: use \"cpu\")" % shown,
                             shardload.safe_open, p, "np", device=device)
        self.assertError("unimplemented", "framework 'tf' is not supported (only \"pt\", "
                         "\"torch\", \"pytorch\", \"np\" or \"numpy\")",
                         shardload.safe_open, p, "tf")
        f = shardload.safe_open(p, "np")
        s = f.get_slice("w")
        f.close()
        self.assertError("failed_precondition", "File is closed", f.get_tensor, "w")
        self.assertEqual(s[1:].tolist(), [1, 2])  # a slice keeps working after close

    def test_get_slice_indexes_as_numpy_does(self):
        p = self.path("s.safetensors")
        arrays = {"m": np.arange(7 * 5 * 3, dtype=np.int32).reshape(7, 5, 3),
                  "v": np.arange(6, dtype=np.float64), "s": np.array(4, np.uint8),
                  "e": np.zeros((0, 2), np.int16)}
        snp.save_file(arrays, p)
        keys = [0, -1, 6, np.int64(2), slice(None), slice(2, 5), slice(5, 2), slice(None, None, -1),
                slice(6, 0, -2), slice(-2, None, -3), slice(10, 20), slice(None, None, 4),
                (1, 2), (slice(1, 3), 4, 0), (slice(None, None, -1), slice(None, None, 2)),
                (Ellipsis, 1), (None, 0), (0, None), [3, 1, 3], [[0, 1], [2, 2]],
                np.array([True, False, True, False, False, False, True]), True, (),
                (slice(1, 6, 2), [0, 4]), (0, slice(None), [2, 0]), (Ellipsis,),
                (slice(0, 1), Ellipsis, None)]
        with shardload.safe_open(p, "np") as f:
            for name, full in arrays.items():
                s = f.get_slice(name)
                self.assertEqual(s.get_shape(), list(full.shape))
                for key in keys:
                    try:
                        want = full[key]
                    except Exception as e:
                        with self.assertRaises(type(e), msg=(name, key)) as cm:
                            s[key]
                        self.assertEqual(str(cm.exception), str(e), (name, key))
                        continue
                    got = s[key]
                    self.assertEqual(type(got), type(want), (name, key))
                    self.assertTrue(same(np.asarray(got), np.asarray(want)), (name, key))
            for bad in ["a", 1.5, (0, 0, 0, 0), 7, -8]:
                with self.assertRaises(IndexError):
                    f.get_slice("m")[bad]

    def test_get_slice_reads_only_the_rows_it_selects(self):
        p = self.path("rows.safetensors")
        full = np.arange(8 * 4, dtype=np.int64).reshape(8, 4)
        snp.save_file({"w": full}, p)
        reads = []
        real = _lib.lib()

        class Recording:  # the library, with sl_checkpoint_read's (offset, bytes) noted
            def __getattr__(self, name):
                return getattr(real, name)

            def sl_checkpoint_read(self, handle, index, offset, nbytes, out):
                reads.append((offset, nbytes))
                return real.sl_checkpoint_read(handle, index, offset, nbytes, out)

        row = 4 * 8
        with shardload.safe_open(p, "np") as f, \
                unittest.mock.patch.object(_lib, "lib", lambda: Recording()):
            s = f.get_slice("w")
            for key, rows in [(slice(0, 7), (0, 7)), (slice(6, 0, -3), (3, 7)), ((5, 1), (5, 6)),
                              (-1, (7, 8)), (slice(2, 8, 5), (2, 8)), (slice(3, 3), (0, 0)),
                              ([0, 7], (0, 8)), (Ellipsis, (0, 8)), (np.int64(-2), (6, 7)),
                              ((np.uint8(3), slice(1, 3)), (3, 4)),
                              (slice(np.int32(1), np.int64(4)), (1, 4))]:
                reads.clear()
                self.assertTrue(same(np.asarray(s[key]), np.asarray(full[key])), key)
                self.assertEqual(reads, [(rows[0] * row, (rows[1] - rows[0]) * row)]
                                 if rows[1] > rows[0] else [], key)
            reads.clear()
            self.assertEqual(f.get_tensor("w").tolist(), full.tolist())
            self.assertEqual(reads, [(0, 8 * row)])

    def test_verified_reads_give_the_values_they_select(self):
        p = self.path("v.safetensors")
        full = np.arange(6 * 3, dtype=np.int32).reshape(6, 3)
        snp.save_file({"w": full, "s": np.array(5, np.int8)}, p, checksums=True)
        l = _lib.lib()
        gc.collect()
        before = l.sl_live_arena_sets()
        with shardload.safe_open(p, "np", verify=True) as f:
            got = f.get_tensor("w")
            self.assertIs(type(got), np.ndarray)
            self.assertTrue(same(got, full))
            self.assertTrue(same(f.get_tensor("s"), np.array(5, np.int8)))
            for key in [slice(1, 4), slice(None, None, -2), 2, (slice(4, 1, -1), 0)]:
                self.assertTrue(same(np.asarray(f.get_slice("w")[key]), np.asarray(full[key])),
                                key)
            part = f.get_slice("w")[1:3]
        del got
        gc.collect()
        self.assertEqual(l.sl_live_arena_sets(), before)  # a slice keeps a copy, not the load
        self.assertEqual(part.tolist(), full[1:3].tolist())

    def test_verify_warns_when_the_file_records_no_hash(self):
        p = self.path("n.safetensors")
        snp.save_file({"w": np.arange(3, dtype=np.int8)}, p)
        with self.assertWarns(shardload.ShardloadWarning) as cm:
            snp.load_file(p, verify=True)
        self.assertIn("records no XXH3 hash", str(cm.warning))

    def test_save_keeps_its_copies_alive_while_writing(self):
        # Several non-contiguous arrays past malloc's mmap threshold: a copy freed
        # before the write is unmapped, and the write fails or writes other bytes.
        base = np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024)
        arrays = {"t": base.T, "r": base[::-1], "c": base[:, ::-1], "be": base.astype(">f4")}
        got = snp.load(snp.save(arrays))
        for k, a in arrays.items():
            self.assertTrue(np.array_equal(got[k], a), k)

    def test_dimensions_past_numpy_1s_32(self):
        p = self.path("d.safetensors")
        raw_file(p, [("deep", "U8", [1] * 40, b"\7")])
        if int(np.__version__.split(".")[0]) >= 2:  # numpy 2 takes 64 dimensions
            self.assertEqual(snp.load_file(p)["deep"].shape, (1,) * 40)
            with shardload.safe_open(p, "np") as f:
                self.assertEqual(f.get_tensor("deep").ravel().tolist(), [7])
                self.assertEqual(f.get_slice("deep")[0].shape, (1,) * 39)
            return
        for read in (lambda: snp.load_file(p),
                     lambda: shardload.safe_open(p, "np").get_tensor("deep")):
            with self.assertRaises(shardload.ShardloadError) as cm:
                read()
            self.assertEqual(cm.exception.code, "out_of_range")

    def test_no_torch_is_imported(self):
        p = self.path("t.safetensors")
        snp.save_file({"w": np.arange(3, dtype=np.uint8)}, p)
        script = (
            "import sys\n"
            "sys.modules['torch'] = None  # any import of torch now fails\n"
            "import shardload, shardload.numpy as snp\n"
            "shardload.set_library_path(sys.argv[1])\n"
            "a = snp.load_file(sys.argv[2])['w']\n"
            "snp.save_file({'v': a + 1}, sys.argv[2])\n"
            "with shardload.safe_open(sys.argv[2], 'np') as f:\n"
            "    print(f.get_tensor('v').tolist(), f.get_slice('v')[1:].tolist(),\n"
            "          sorted(f.get_tensors()), snp.load(snp.save({'x': a}))['x'].tolist())\n")
        out = subprocess.run([sys.executable, "-c", script, _lib.lib()._name, p],
                             capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, "[1, 2, 3] [2, 3] ['v'] [0, 1, 2]\n")


if __name__ == "__main__":
    py_junit.main(NumpyTest, "python_numpy_test", "numpy")
