"""tests/python_shardload_test.py — the Python package (python/shardload) with real torch.

Run by python/run_with_torch.sh: argv[1] is libshardload.so. Compares against
safetensors.torch where that package is importable (those cases skip otherwise).
Writes a JUnit XML file to $XML_OUTPUT_FILE when set, one <testcase> per test.
"""
import ctypes
import functools
import gc
import json
import os
import re
import struct
import sys
import tempfile
import threading
import unittest

import torch

import py_junit
import shardload
from shardload import _lib

try:
    import safetensors.torch as st
    from safetensors import safe_open as st_safe_open
except ImportError:  # the reference is optional
    st = None


def warnings_caught():
    import warnings
    cm = warnings.catch_warnings(record=True)
    class _Ctx:
        def __enter__(self):
            self.log = cm.__enter__()
            warnings.simplefilter("always")
            return self.log
        def __exit__(self, *exc):
            return cm.__exit__(*exc)
    return _Ctx()


def needs_reference(fn):
    return unittest.skipIf(st is None, "safetensors is not importable")(fn)


def needs_cuda(fn):
    # Both must see a device: torch (its own CUDA runtime) and shardload (its static CUDA
    # 13 runtime, which needs a newer driver); test_cuda_views_agree says when they differ.
    # Asked when the test runs: the library's path is set only after this module loads.
    @functools.wraps(fn)
    def run_if_cuda(self, *args, **kwargs):
        if not (torch.cuda.is_available() and shardload.cuda_device_count() > 0):
            self.skipTest("no CUDA device")
        return fn(self, *args, **kwargs)
    return run_if_cuda


def sample_tensors():
    g = torch.Generator().manual_seed(7)
    return {
        "f32": torch.randn(4, 5, generator=g),
        "f16": torch.randn(3, 2, generator=g).half(),
        "bf16": torch.randn(6, generator=g).bfloat16(),
        "f64": torch.randn(2, 2, generator=g).double(),
        "i64": torch.arange(-5, 5, dtype=torch.int64),
        "i32": torch.arange(12, dtype=torch.int32).reshape(3, 4),
        "i16": torch.tensor([-3, 7], dtype=torch.int16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.randn(3, generator=g, dtype=torch.complex64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def same(a, b):
    return (a.dtype == b.dtype and list(a.shape) == list(b.shape) and
            a.contiguous().view(torch.uint8).tolist() == b.contiguous().view(torch.uint8).tolist()
            if a.numel() and a.dim() else
            a.dtype == b.dtype and list(a.shape) == list(b.shape) and torch.equal(a, b))


class Tiny(torch.nn.Module):
    def __init__(self, tie=False):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.proj = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        if tie:
            self.head.weight = self.embed.weight


class PythonTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR"))
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    # -------------------------------------------------------------- load_file

    def test_round_trip_every_dtype(self):
        tensors = sample_tensors()
        shardload.save_file(tensors, self.path("a.safetensors"), metadata={"format": "pt"})
        loaded = shardload.load_file(self.path("a.safetensors"))
        self.assertEqual(sorted(loaded), sorted(tensors))
        for name, t in tensors.items():
            self.assertTrue(same(loaded[name], t), name)

    @needs_reference
    def test_matches_reference_load_file(self):
        tensors = sample_tensors()
        st.save_file(tensors, self.path("ref.safetensors"), metadata={"k": "v"})
        ours = shardload.load_file(self.path("ref.safetensors"))
        ref = st.load_file(self.path("ref.safetensors"))
        self.assertEqual(list(ours), list(ref))
        for name in ref:
            self.assertTrue(same(ours[name], ref[name]), name)

    def test_load_file_placement(self):
        # "file-phase": each cpu tensor at its file offset modulo 256, same values as the
        # default "aligned" load, whose tensors all start on a 256-byte boundary.
        tensors = sample_tensors()
        path = self.path("p.safetensors")
        shardload.save_file(tensors, path)
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        aligned = shardload.load_file(path)
        phase = shardload.load_file(path, placement="file-phase")
        off_boundary = 0
        for name, t in tensors.items():
            self.assertTrue(same(phase[name], t), name)
            self.assertTrue(same(aligned[name], t), name)
            if t.numel() == 0:
                continue
            offset = 8 + n + header[name]["data_offsets"][0]
            self.assertEqual(phase[name].data_ptr() % 256, offset % 256, name)
            self.assertEqual(aligned[name].data_ptr() % 256, 0, name)
            off_boundary += offset % 256 != 0
        self.assertGreater(off_boundary, 0)
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(path, placement="packed")
        self.assertEqual((cm.exception.code, cm.exception.message),
                         ("invalid_argument",
                          "invalid arena placement 'packed': expected aligned or file-phase"))
        with self.assertRaises(TypeError):
            shardload.load_file(path, placement=1)

    def test_save_align(self):
        # align=64/4096: every data section on the boundary, the same tensors back (also
        # through the reference where installed); align=8 is the default layout.
        tensors = sample_tensors()
        def data_start(path):
            with open(path, "rb") as f:
                return 8 + struct.unpack("<Q", f.read(8))[0]
        shardload.save_file(tensors, self.path("d.safetensors"))
        shardload.save_file(tensors, self.path("a8.safetensors"), align=8)
        with open(self.path("d.safetensors"), "rb") as f, \
                open(self.path("a8.safetensors"), "rb") as g:
            self.assertEqual(f.read(), g.read())
        for align in (64, 4096):
            path = self.path("a%d.safetensors" % align)
            shardload.save_file(tensors, path, align=align)
            self.assertEqual(data_start(path) % align, 0)
            loaded = shardload.load_file(path)
            for name, t in tensors.items():
                self.assertTrue(same(loaded[name], t), name)
            if st is not None:
                ref = st.load_file(path)
                for name, t in tensors.items():
                    if name in ref:
                        self.assertTrue(same(ref[name], t), name)
            self.assertEqual(shardload.save(tensors, align=align), open(path, "rb").read())
        folder = tempfile.mkdtemp(dir=self.dir)
        big = {"a": torch.arange(64.0), "b": torch.arange(64.0) + 1}
        shardload.save_sharded(big, folder, max_shard_size=256, align=4096)
        shards = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
        self.assertEqual(len(shards), 2)
        for f in shards:
            self.assertEqual(data_start(os.path.join(folder, f)), 4096)
        for name, t in shardload.load_file(folder).items():
            self.assertTrue(torch.equal(t, big[name]), name)
        with self.assertRaises(ValueError) as cm:
            shardload.save_file(tensors, self.path("bad.safetensors"), align=128)
        self.assertEqual(str(cm.exception), "align must be 8, 64 or 4096, got 128")
        with self.assertRaises(TypeError):
            shardload.save_sharded(big, folder, align="64")
        with self.assertRaises(TypeError):
            shardload.save_file(tensors, self.path("bad.safetensors"), align=True)
        self.assertFalse(os.path.exists(self.path("bad.safetensors")))

    @needs_reference
    def test_save_file_bytes_match_reference(self):
        tensors = sample_tensors()
        shardload.save_file(tensors, self.path("ours.safetensors"), metadata={"format": "pt"})
        st.save_file(tensors, self.path("ref.safetensors"), metadata={"format": "pt"})
        with open(self.path("ours.safetensors"), "rb") as a, \
                open(self.path("ref.safetensors"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_zero_copy_lifetime(self):
        lib = _lib.lib()
        gc.collect()
        before = lib.sl_live_arena_sets()
        t = torch.arange(1000, dtype=torch.float32)
        shardload.save_file({"x": t, "y": t * 2}, self.path("z.safetensors"))
        loaded = shardload.load_file(self.path("z.safetensors"))
        self.assertEqual(lib.sl_live_arena_sets(), before + 1)
        x = loaded["x"]
        self.assertEqual(x.data_ptr() % 256, 0)
        del loaded
        gc.collect()
        self.assertEqual(lib.sl_live_arena_sets(), before + 1)  # x still holds the arena
        self.assertTrue(torch.equal(x, t))
        del x
        gc.collect()
        self.assertEqual(lib.sl_live_arena_sets(), before)

    def test_an_exception_around_from_dlpack_frees_each_export_once(self):
        # Torch owns an export once from_dlpack took it (the capsule renamed
        # "used_dltensor"): an exception after that (a KeyboardInterrupt on return)
        # must not free it a second time (a double free); one before it must free it.
        lib = _lib.lib()
        shardload.save_file({"x": torch.ones(3)}, self.path("i.safetensors"))
        gc.collect()
        before = lib.sl_live_arena_sets()
        original = torch.from_dlpack  # what the package calls

        def taken_then_interrupted(capsule):
            t = original(capsule)
            del t
            raise KeyboardInterrupt

        def interrupted_before(capsule):
            raise KeyboardInterrupt

        for replacement in (taken_then_interrupted, interrupted_before):
            torch.from_dlpack = replacement
            try:
                with self.assertRaises(KeyboardInterrupt):
                    shardload.load_file(self.path("i.safetensors"))
            finally:
                torch.from_dlpack = original
            gc.collect()
            self.assertEqual(lib.sl_live_arena_sets(), before, replacement.__name__)
        self.assertTrue(torch.equal(shardload.load_file(self.path("i.safetensors"))["x"],
                                    torch.ones(3)))

    def test_load_bytes(self):
        shardload.save_file({"w": torch.ones(3)}, self.path("b.safetensors"))
        with open(self.path("b.safetensors"), "rb") as f:
            data = f.read()
        self.assertTrue(torch.equal(shardload.load(data)["w"], torch.ones(3)))
        with self.assertRaises(shardload.ShardloadError) as cm:  # names the bytes
            shardload.load(data[:-4])
        self.assertEqual((cm.exception.code, str(cm.exception)), (
            "data_loss", "<bytes>: data section ends at byte 76 but the file is truncated "
            "at 72 bytes; tensor 'w' at file bytes [64, 76) is the first cut off"))

    def test_save_bytes(self):
        tensors = {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3),
                   "b": torch.tensor([True, False])}
        data = shardload.save(tensors, metadata={"epoch": "3"})
        self.assertIsInstance(data, bytes)
        shardload.save_file(tensors, self.path("s.safetensors"), metadata={"epoch": "3"})
        with open(self.path("s.safetensors"), "rb") as f:
            self.assertEqual(data, f.read())
        if st is not None:
            self.assertEqual(data, st.save(tensors, metadata={"epoch": "3"}))
            self.assertEqual(shardload.save({}), st.save({}))
        back = shardload.load(data)
        self.assertEqual(list(back), ["w", "b"])
        self.assertTrue(torch.equal(back["w"], tensors["w"]))
        with_sums = shardload.save(tensors, checksums=True)
        self.assertTrue(torch.equal(shardload.load(with_sums)["b"], tensors["b"]))
        self.assertIn(b'"shardload.xxh3.w"', with_sums)
        with self.assertRaises(ValueError):  # refused as save_file refuses it
            shardload.save({"t": torch.zeros(4, 4).t()})

    def test_error_pickles(self):
        # A multiprocessing worker's error crosses to the parent by pickle: every
        # ShardloadError must come back whole (code, message, type), and copy too.
        import copy
        import pickle
        bad = self.path("bad.safetensors")
        with open(bad, "wb") as f:
            f.write(b"\x05\0\0\0\0\0\0\0{abc}")
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(bad)
        for err in (cm.exception, shardload.ShardloadError("data_loss", "m"),
                    _lib.ShardloadFileNotFoundError(self.path("none"))):
            for back in (pickle.loads(pickle.dumps(err)), copy.copy(err)):
                self.assertIs(type(back), type(err))
                self.assertEqual((back.code, back.message, str(back)),
                                 (err.code, err.message, str(err)))

    def test_safe_open_whatever_the_default_device(self):
        # safe_open reads into a host buffer of its own: torch's default device (meta
        # here, cuda on a serving host) must not decide where that buffer lives.
        if not hasattr(torch, "set_default_device"):
            self.skipTest("torch %s has no default device" % torch.__version__)
        t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        shardload.save_file({"w": t}, self.path("d.safetensors"))
        torch.set_default_device("meta")
        try:
            with shardload.safe_open(self.path("d.safetensors"), "pt") as f:
                whole, row, part = f.get_tensor("w"), f.get_slice("w")[1], f.get_slice("w")[:, 1:]
        finally:
            torch.set_default_device(None)
        for got, want in ((whole, t), (row, t[1]), (part, t[:, 1:])):
            self.assertEqual(got.device.type, "cpu")
            self.assertTrue(torch.equal(got, want))

    def test_errors(self):
        shardload.save_file({"w": torch.ones(3)}, self.path("w.safetensors"))
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(self.path("w.safetensors"), device="gpu")
        self.assertEqual(cm.exception.code, "invalid_argument")
        self.assertEqual(str(cm.exception), "invalid device 'gpu': expected cpu, cuda or cuda:N "
                         "(shardload loads into host memory and onto CUDA GPUs; for another "
                         "torch device, load onto cpu and move the tensors with .to())")
        # A torch device the loader does not drive: the same words, from every entry point.
        for call in (lambda: shardload.load_file(self.path("w.safetensors"), device="mps"),
                     lambda: shardload.safe_open(self.path("w.safetensors"), "pt", device="xpu:0"),
                     lambda: shardload.load_model(torch.nn.Linear(1, 1), self.path("w.safetensors"),
                                                  device=torch.device("meta"))):
            with self.assertRaises(shardload.ShardloadError) as cm:
                call()
            self.assertEqual(cm.exception.code, "invalid_argument")
            self.assertRegex(str(cm.exception), r"^invalid device '(mps|xpu:0|meta)': expected cpu, "
                             r"cuda or cuda:N \(shardload loads")
        # The device is checked before the file is opened (safetensors' order): a
        # missing file with a bad device names the device.
        for call in (lambda: shardload.load_file(self.path("none.safetensors"), device="mps"),
                     lambda: shardload.safe_open(self.path("none.safetensors"), "pt", device="mps"),
                     lambda: shardload.load_model(torch.nn.Linear(1, 1), self.path("none.safetensors"),
                                                  device="mps"),
                     lambda: shardload.load_state_dict_into(torch.nn.Linear(1, 1),
                                                            self.path("none.safetensors"),
                                                            device="mps")):
            with self.assertRaises(shardload.ShardloadError) as cm:
                call()
            self.assertTrue(str(cm.exception).startswith("invalid device 'mps'"), str(cm.exception))
        # A device map keeps the map's own error, naming the entry.
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(self.path("w.safetensors"), device="w=mps,cpu")
        self.assertEqual(str(cm.exception), "invalid device-map entry 'w=mps': invalid device "
                         "'mps': expected cpu, cuda or cuda:N")
        with self.assertRaises(ValueError) as cm:  # safetensors' type and words
            shardload.save_file({"w": [1, 2]}, self.path("x.safetensors"))
        self.assertEqual(str(cm.exception), "Key `w` is invalid, expected torch.Tensor but "
                         "received <class 'list'>")

    def test_a_missing_path_is_file_not_found(self):
        # As open(), torch.load and safetensors: FileNotFoundError (ENOENT, the path as
        # given), which stays a ShardloadError("not_found") for callers catching that.
        import errno
        import pathlib
        import pickle
        shardload.save_file({"w": torch.ones(3)}, self.path("w.safetensors"))
        missing = self.path("nope.safetensors")
        through_file = self.path("w.safetensors/x.safetensors")  # ENOTDIR
        loaders = {
            "load_file": shardload.load_file,
            "safe_open": lambda p: shardload.safe_open(p, framework="pt"),
            "load_model": lambda p: shardload.load_model(Tiny(), p),
            "load_state_dict_into": lambda p: shardload.load_state_dict_into(Tiny(), p),
        }
        for path, filename in ((missing, missing), (through_file, through_file), ("", ""),
                               (pathlib.Path(missing), missing),
                               (os.fsencode(missing), os.fsencode(missing))):
            for what, load in loaders.items():
                with self.assertRaises(FileNotFoundError) as cm:
                    load(path)
                e = cm.exception
                self.assertIsInstance(e, shardload.ShardloadError, what)
                self.assertIsInstance(e, shardload.ShardloadFileNotFoundError, what)
                self.assertEqual((e.errno, e.filename, e.code), (errno.ENOENT, filename,
                                                                  "not_found"), what)
                self.assertEqual(str(e), "[Errno 2] No such file or directory: %r" % filename)
                self.assertEqual(e.message, str(e))
        back = pickle.loads(pickle.dumps(e))
        self.assertEqual((type(back), back.errno, back.filename, str(back)),
                         (type(e), e.errno, e.filename, str(e)))
        if st is not None:  # the reference raises that type too (with its own words)
            with self.assertRaises(FileNotFoundError):
                st.load_file(missing)
            with self.assertRaises(FileNotFoundError):
                st_safe_open(missing, framework="pt")
        # A path that exists but holds no checkpoint, or an index naming a missing
        # shard: ShardloadError, not FileNotFoundError.
        os.mkdir(self.path("sharded"))
        shardload.save_sharded({"a": torch.ones(1000), "b": torch.ones(1000)},
                               self.path("sharded"), max_shard_size=4000)
        os.unlink(self.path("sharded/model-00002-of-00002.safetensors"))
        os.mkdir(self.path("none"))
        for path, message in (
                (self.path("none"), self.path("none") + ": folder holds no .safetensors file "
                 "or index"),
                (self.path("sharded"), "model.safetensors.index.json: shard "
                 "'model-00002-of-00002.safetensors' does not exist")):
            with self.assertRaises(shardload.ShardloadError) as cm:
                shardload.load_file(path)
            self.assertNotIsInstance(cm.exception, OSError)
            self.assertEqual((cm.exception.code, str(cm.exception)), ("not_found", message))

    def test_device_none_is_cpu(self):
        # safetensors' load_file, safe_open and load_model take device=None as cpu.
        src = Tiny()
        path = self.path("n.safetensors")
        shardload.save_file(src.state_dict(), path)
        loaded = shardload.load_file(path, device=None)
        self.assertEqual(loaded["head.weight"].device, torch.device("cpu"))
        self.assertTrue(torch.equal(loaded["head.weight"], src.head.weight))
        with shardload.safe_open(path, framework="pt", device=None) as f:
            self.assertTrue(torch.equal(f.get_tensor("proj.bias"), src.proj.bias))
            self.assertTrue(torch.equal(f.get_slice("embed.weight")[2:4],
                                        src.embed.weight[2:4]))
        dst = Tiny()
        self.assertEqual(shardload.load_model(dst, path, device=None), (set(), []))
        self.assertTrue(torch.equal(dst.proj.weight, src.proj.weight))
        dst = Tiny()
        report = shardload.load_state_dict_into(dst, path, device=None)
        self.assertEqual(report["missing"], [])
        self.assertTrue(torch.equal(dst.embed.weight, src.embed.weight))
        if st is not None:
            ref = st.load_file(path, device=None)
            self.assertEqual(list(loaded), list(ref))
            for name in ref:
                self.assertTrue(same(loaded[name], ref[name]), name)

    def test_bare_cuda_means_the_current_device(self):
        # torch and safetensors read device="cuda" as torch.cuda.current_device(); so does
        # the package when torch sees a device (simulated: this check needs no GPU).
        from unittest import mock
        self.assertEqual(shardload._device_string("cpu"), "cpu")
        self.assertEqual(shardload._device_string(2), "cuda:2")
        with mock.patch.object(torch.cuda, "is_available", return_value=True), \
                mock.patch.object(torch.cuda, "current_device", return_value=1):
            self.assertEqual(shardload._device_string("cuda"), "cuda:1")
            self.assertEqual(shardload._device_string(torch.device("cuda")), "cuda:1")
            self.assertEqual(shardload._device_string("cuda:0"), "cuda:0")
            self.assertEqual(shardload._device_string("w*=cuda,cpu"), "w*=cuda,cpu")
        with mock.patch.object(torch.cuda, "is_available", return_value=False):
            self.assertEqual(shardload._device_string("cuda"), "cuda")

    def test_loads_onto_cuda_run_under_torchs_device_guard(self):
        # Which device torch's guard makes current around a CUDA load (simulated: torch
        # with three CUDA devices, its guard recorded): the lowest one the device or map
        # names, none for host loads or past torch's devices; tensor-name patterns that
        # spell "cuda", also regex ones holding commas, are not devices.
        from unittest import mock
        entered = []

        class Guard:
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                entered.append(self.index)

            def __exit__(self, *exc):
                entered.append(-1)

        cases = [("cpu", []), ("cuda:1", [1, -1]), ("cuda", [0, -1]),
                 ("lm_head.*=cuda:2,cuda:1", [1, -1]), ("a.cuda=cpu,cpu", []),
                 ("re:x\\.[0-9]{1,2}=cuda:2,cpu", [2, -1]), ("cuda:3", []),
                 ("w*=cuda,cuda:2", [0, -1]),
                 # Commas inside a regex pattern, as the library reads them: no device.
                 ("re:(a,cuda,b)=cpu,cpu", []), ("re:(x=cuda:1,y)=cpu,cpu", []),
                 ("re:a\\,cuda:1=cpu,cuda:2", [2, -1]), ("re:[,cuda:1]=cpu,cpu", [])]
        with mock.patch.object(torch.cuda, "is_available", return_value=True), \
                mock.patch.object(torch.cuda, "device_count", return_value=3), \
                mock.patch.object(torch.cuda, "device", Guard):
            for device, want in cases:
                del entered[:]
                with shardload._cuda_device_guard(device):
                    pass
                self.assertEqual(entered, want, device)
        with mock.patch.object(torch.cuda, "is_available", return_value=False):
            with shardload._cuda_device_guard("cuda:0"):
                pass  # no torch CUDA: no guard (the library reports the missing device)

    def test_cuda_views_agree(self):
        # One clear failure, instead of every test_cuda_* case failing or skipping, when
        # torch and shardload disagree (e.g. a driver too old for CUDA 13).
        ours, theirs = shardload.cuda_device_count(), torch.cuda.device_count()
        self.assertGreaterEqual(ours, 0)
        self.assertEqual(ours > 0, theirs > 0,
                         "torch sees %d CUDA devices, shardload %d (its CUDA 13 runtime needs "
                         "driver >= 580)" % (theirs, ours))

    def test_cuda_staging_is_held_until_released(self):
        # No GPU load, no staging ring; after one (where there is a device), the ring is
        # held for the next load until release_cuda_staging() frees it.
        shardload.release_cuda_staging()
        self.assertEqual(shardload.cuda_staging_bytes(), 0)
        self.assertEqual(shardload.release_cuda_staging(), 0)
        if not (torch.cuda.is_available() and shardload.cuda_device_count() > 0):
            return
        shardload.save_file({"w": torch.ones(3)}, self.path("w.safetensors"))
        with warnings_caught() as caught:
            loaded = shardload.load_file(self.path("w.safetensors"), device="cuda:0")
        self.assertEqual([w for w in caught if w.category is shardload.ShardloadWarning], [])
        self.assertTrue(torch.equal(loaded["w"].cpu(), torch.ones(3)))
        self.assertEqual(shardload.cuda_staging_bytes(), 256 << 20)
        self.assertEqual(shardload.release_cuda_staging(), 256 << 20)
        self.assertEqual(shardload.cuda_staging_bytes(), 0)

    def test_cuda_without_device(self):
        if torch.cuda.is_available() or shardload.cuda_device_count() > 0:
            self.skipTest("a CUDA device is present")
        shardload.save_file({"w": torch.ones(3)}, self.path("w.safetensors"))
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(self.path("w.safetensors"), device="cuda:0")
        self.assertEqual(cm.exception.code, "invalid_argument")
        self.assertTrue(str(cm.exception).startswith("cuda:0: no such CUDA device (0 devices"),
                        str(cm.exception))

    def test_float8(self):
        if not hasattr(torch, "float8_e4m3fn"):
            # Write F8 bytes through the C API and expect a clear error from load_file.
            import ctypes
            data = (ctypes.c_uint8 * 4)(0x38, 0x40, 0xB8, 0)
            shape = _lib.shape_array([2, 2])
            view = _lib.TensorView(b"f8", 2, b"F8_E4M3", shape, 2, ctypes.addressof(data))
            _lib.check(_lib.lib().sl_save_file(self.path("f8.safetensors").encode(),
                                               ctypes.byref(view), 1, None, None, 0))
            with self.assertRaises(shardload.ShardloadError) as cm:
                shardload.load_file(self.path("f8.safetensors"))
            self.assertEqual(cm.exception.code, "unimplemented")
            self.assertEqual(str(cm.exception), "f8.safetensors: tensor 'f8': dtype F8_E4M3 "
                             "is not supported by torch %s" % torch.__version__)
            return
        t = torch.tensor([1.0, 2.0, -1.0, 0.0]).to(torch.float8_e4m3fn).reshape(2, 2)
        shardload.save_file({"f8": t}, self.path("f8.safetensors"))
        got = shardload.load_file(self.path("f8.safetensors"))["f8"]
        self.assertEqual(got.dtype, torch.float8_e4m3fn)
        self.assertTrue(same(got, t))

    def test_float4_packs_two_values_per_element_like_reference(self):
        # F4 loads as torch.float4_e2m1fn_x2 (torch 2.8+): the stored shape counts values,
        # torch's counts bytes (the last dimension halved), as safetensors does.
        if not hasattr(torch, "float4_e2m1fn_x2"):
            self.skipTest("torch %s has no float4_e2m1fn_x2" % torch.__version__)
        g = torch.Generator().manual_seed(3)
        x = torch.randint(0, 256, (3, 4), dtype=torch.uint8, generator=g)
        t = {"x": x.view(torch.float4_e2m1fn_x2), "r": x[0].clone().view(torch.float4_e2m1fn_x2)}
        ours, ref = self.path("o.safetensors"), self.path("r.safetensors")
        shardload.save_file(t, ours)
        _, h = self.header(ours)
        self.assertEqual((h["x"]["dtype"], h["x"]["shape"], h["r"]["shape"]), ("F4", [3, 8], [8]))
        bits = lambda v: v.view(torch.uint8).tolist()
        if st is not None:
            st.save_file(t, ref)
            with open(ours, "rb") as a, open(ref, "rb") as b:
                self.assertEqual(a.read(), b.read())
            for name, v in st.load_file(ref).items():
                self.assertEqual(bits(shardload.load_file(ref)[name]), bits(v), name)
        got = shardload.load_file(ours)
        self.assertEqual((got["x"].dtype, list(got["x"].shape)), (torch.float4_e2m1fn_x2, [3, 4]))
        self.assertEqual(bits(got["x"]), x.tolist())
        with shardload.safe_open(ours) as f:
            self.assertEqual(bits(f.get_tensor("x")), x.tolist())
            s = f.get_slice("x")
            self.assertEqual((s.get_shape(), s.get_dtype()), ([3, 8], "F4"))
            self.assertEqual(bits(s[1:3]), x[1:3].tolist())  # keys index torch's shape
            self.assertEqual(bits(f.get_slice("r")[1:3]), x[0, 1:3].tolist())
        # Loaded in place into a module buffer of that dtype.
        m = torch.nn.Module()
        m.register_buffer("x", torch.zeros(3, 4, dtype=torch.uint8).view(torch.float4_e2m1fn_x2))
        m.register_buffer("r", torch.zeros(4, dtype=torch.uint8).view(torch.float4_e2m1fn_x2))
        self.assertEqual(shardload.load_model(m, ours), (set(), []))
        self.assertEqual(bits(m.x), x.tolist())
        # An odd last dimension cannot be two values a byte.
        raw = (ctypes.c_uint8 * 3)(1, 2, 3)
        view = _lib.TensorView(b"y", 1, b"F4", _lib.shape_array([2, 3]), 2, ctypes.addressof(raw))
        _lib.check(_lib.lib().sl_save_file(self.path("odd.safetensors").encode(),
                                           ctypes.byref(view), 1, None, None, 0))
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(self.path("odd.safetensors"))
        self.assertEqual((cm.exception.code, str(cm.exception)), (
            "invalid_argument", "tensor 'y': dtype F4 loads as torch.float4_e2m1fn_x2, which "
            "needs a last dimension divisible by 2; got [2, 3]"))


    def write_raw(self, name, entries, metadata=None):
        """A .safetensors file written by hand (entries: name -> (dtype, shape, bytes),
        laid out in that order); its path."""
        header, data = {}, b""
        if metadata is not None:
            header["__metadata__"] = metadata
        for key, (dtype, shape, raw) in entries.items():
            header[key] = {"dtype": dtype, "shape": shape,
                           "data_offsets": [len(data), len(data) + len(raw)]}
            data += raw
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        path = self.path(name)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + data)
        return path

    def test_float4_under_deterministic_algorithms(self):
        # torch.use_deterministic_algorithms(True) makes torch fill new memory, and torch
        # 2.11 has no fill for float4_e2m1fn_x2 (NotImplementedError from torch.empty):
        # every F4 result is made as bytes and viewed, as safetensors' loads work there.
        if not hasattr(torch, "float4_e2m1fn_x2"):
            self.skipTest("torch %s has no float4_e2m1fn_x2" % torch.__version__)
        f4 = torch.float4_e2m1fn_x2
        x = torch.tensor([[0x21], [0x43]], dtype=torch.uint8)
        path = self.write_raw("f4.safetensors", {"x": ("F4", [2, 2], bytes([0x21, 0x43])),
                                                 "e": ("F4", [0, 2], b"")})
        module = torch.nn.Module()  # two names for one buffer, both in the file
        module.register_buffer("x", torch.zeros(2, 1, dtype=torch.uint8).view(f4))
        module.register_buffer("e", torch.zeros(0, 1, dtype=torch.uint8).view(f4))
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            with self.assertRaises(NotImplementedError):  # what the byte view avoids
                torch.empty(1, dtype=f4)
            with shardload.safe_open(path) as f:
                got = {"x": f.get_tensor("x"), "e": f.get_tensor("e"),
                       "slice": f.get_slice("e")[0:0]}
            loaded = shardload.load_file(path)
            tied = torch.nn.Module()
            tied.register_buffer("a", torch.zeros(2, 1, dtype=torch.uint8).view(f4))
            tied.register_buffer("b", tied.a)
            tied_path = self.write_raw("tied.safetensors", {
                "a": ("F4", [2, 2], bytes([1, 2])), "b": ("F4", [2, 2], bytes([3, 4]))})
            report = shardload.load_state_dict_into(tied, tied_path)  # through scratch
            self.assertEqual(shardload.load_model(module, path), (set(), []))
        finally:
            torch.use_deterministic_algorithms(before)
        self.assertEqual((got["x"].dtype, got["x"].view(torch.uint8).tolist()),
                         (f4, x.tolist()))
        for t in (got["e"], got["slice"], loaded["e"]):
            self.assertEqual((t.dtype, list(t.shape)), (f4, [0, 1]))
        self.assertEqual(loaded["x"].view(torch.uint8).tolist(), x.tolist())
        self.assertEqual(module.x.view(torch.uint8).tolist(), x.tolist())
        self.assertEqual((report["missing"], report["unexpected"]), ([], []))
        # Entries sharing memory are written in state_dict order: the last one wins.
        self.assertEqual(tied.a.view(torch.uint8).tolist(), [[3], [4]])

    def test_get_tensor_on_a_missing_cuda_device_is_not_read_to_cpu(self):
        shardload.save_file({"x": torch.arange(4.0)}, self.path("d.safetensors"))
        with shardload.safe_open(self.path("d.safetensors"), "pt", device="cuda:99") as f:
            with self.assertRaises(shardload.ShardloadError) as cm:
                f.get_tensor("x")
        self.assertEqual(cm.exception.code, "invalid_argument")
        self.assertIn("cuda:99: no such CUDA device", str(cm.exception))

    def test_verify_get_tensor_checks_the_torch_shape_before_loading(self):
        if not hasattr(torch, "float4_e2m1fn_x2"):
            self.skipTest("torch %s has no float4_e2m1fn_x2" % torch.__version__)
        path = self.write_raw("f4odd.safetensors", {"g": ("F4", [2, 1], b"\x21")},
                              metadata={"shardload.xxh3.g": "0000000000000000"})
        with shardload.safe_open(path, "pt", verify=True) as f:
            with self.assertRaises(shardload.ShardloadError) as cm:
                f.get_tensor("g")
        self.assertEqual((cm.exception.code, str(cm.exception)), (
            "invalid_argument", "tensor 'g': dtype F4 loads as torch.float4_e2m1fn_x2, which "
            "needs a last dimension divisible by 2; got [2, 1]"))

    def test_plain_cpu_get_tensor_never_loads_through_the_loader(self):
        # Without verify, a cpu get_tensor is positional reads (one, or none for a tensor
        # of no bytes), never a load through the loader, for both frameworks.
        shardload.save_file({"w": torch.arange(6.0).reshape(2, 3), "e": torch.zeros(0, 4),
                             "s": torch.tensor(1.5), "b": torch.zeros(0, 3, dtype=torch.bool)},
                            self.path("n.safetensors"))
        original = shardload.safe_open._loaded_tensor

        def refuse(*args):
            raise AssertionError("get_tensor went through the loader")

        shardload.safe_open._loaded_tensor = refuse
        try:
            for framework in ("pt", "np"):
                with shardload.safe_open(self.path("n.safetensors"), framework) as f:
                    self.assertEqual(list(f.get_tensor("e").shape), [0, 4])
                    self.assertEqual(list(f.get_tensor("b").shape), [0, 3])
                    self.assertEqual(f.get_tensor("w").tolist(), [[0, 1, 2], [3, 4, 5]])
                    self.assertEqual(float(f.get_tensor("s")), 1.5)
        finally:
            shardload.safe_open._loaded_tensor = original


    def test_progress_and_cancel(self):
        tensors = {"w%d" % i: torch.full((256,), float(i)) for i in range(4)}
        path = self.path("p.safetensors")
        shardload.save_file(tensors, path)
        calls = []
        loaded = shardload.load_file(path, progress=lambda d, t: calls.append((d, t)))
        self.assertTrue(torch.equal(loaded["w3"], tensors["w3"]))
        self.assertGreaterEqual(len(calls), 2)
        self.assertEqual(calls[0], (0, 4096))
        self.assertEqual(calls[-1], (4096, 4096))
        self.assertEqual([d for d, _ in calls], sorted(d for d, _ in calls))
        # False cancels.
        calls.clear()
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(path, progress=lambda d, t: calls.append(d) or False)
        self.assertEqual((cm.exception.code, str(cm.exception)),
                         ("cancelled", "load cancelled by the progress callback"))
        self.assertEqual(calls, [0])
        # An exception in the callable cancels the load and reaches the caller.

        class Stop(Exception):
            pass

        def boom(done, total):
            raise Stop("stop at %d/%d" % (done, total))

        with self.assertRaises(Stop) as cm:
            shardload.load_file(path, progress=boom)
        self.assertEqual(str(cm.exception), "stop at 0/4096")
        with self.assertRaises(TypeError) as cm:
            shardload.load_file(path, progress=3)
        self.assertEqual(str(cm.exception), "progress must be callable(done, total), got int")
        # load_model: in place (sl_load_into) and through the fallback path.
        src = Tiny()
        shardload.save_file(src.state_dict(), self.path("m.safetensors"))
        seen = []
        dst = Tiny()
        shardload.load_model(dst, self.path("m.safetensors"), progress=lambda d, t: seen.append(t))
        total = sum(v.numel() * v.element_size() for v in src.state_dict().values())
        self.assertEqual(set(seen), {total})
        self.assertTrue(torch.equal(dst.head.weight, src.head.weight))
        odd = Tiny()
        odd.proj.weight = torch.nn.Parameter(torch.zeros(4, 4).t())
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_state_dict_into(odd, self.path("m.safetensors"),
                                           progress=lambda d, t: False)
        self.assertEqual(cm.exception.code, "cancelled")
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_model(Tiny(), self.path("m.safetensors"), progress=lambda d, t: False)
        self.assertEqual(cm.exception.code, "cancelled")

    def test_progress_raising_at_the_last_call_frees_the_load(self):
        # The library ignores the answer to the last call (total, total): the load has
        # succeeded. An exception raised there still reaches the caller, and the load's
        # arena must be freed (it was kept alive by nothing, for good).
        lib = _lib.lib()
        tensors = {"w%d" % i: torch.full((256,), float(i)) for i in range(4)}
        path = self.path("p.safetensors")
        shardload.save_file(tensors, path)

        class Stop(Exception):
            pass

        def at_end(kind):
            def progress(done, total):
                if done == total:
                    raise kind("stop at %d/%d" % (done, total))
            return progress

        odd = Tiny()  # a non-contiguous entry: load_state_dict_into's fallback (load_file)
        odd.proj.weight = torch.nn.Parameter(torch.zeros(4, 4).t())
        model_path, bn_path = self.path("m.safetensors"), self.path("b.safetensors")
        shardload.save_file(Tiny().state_dict(), model_path)
        shardload.save_file(torch.nn.BatchNorm1d(3).state_dict(), bn_path)  # torch's path
        nbytes = lambda m: sum(v.numel() * v.element_size() for v in m.state_dict().values())
        loads = [
            ("load_file", lambda p: shardload.load_file(path, progress=p), 4096),
            ("fallback", lambda p: shardload.load_state_dict_into(odd, model_path, progress=p),
             nbytes(Tiny())),
            ("load_model", lambda p: shardload.load_model(torch.nn.BatchNorm1d(3), bn_path,
                                                          progress=p),
             nbytes(torch.nn.BatchNorm1d(3))),
        ]
        for kind in (Stop, KeyboardInterrupt):
            for what, load, total in loads:
                gc.collect()
                before = lib.sl_live_arena_sets()
                with self.assertRaises(kind) as cm:
                    load(at_end(kind))
                self.assertEqual(str(cm.exception), "stop at %d/%d" % (total, total), what)
                del cm
                gc.collect()
                self.assertEqual(lib.sl_live_arena_sets(), before, (what, kind))
        # False at the last call is too late to cancel: the load succeeds.
        loaded = shardload.load_file(path, progress=lambda d, t: d != t)
        self.assertTrue(torch.equal(loaded["w2"], tensors["w2"]))

    def test_cpu_with_an_index_is_cpu(self):
        # torch's "cpu:N" devices are the one host memory: loads take them as "cpu".
        src = Tiny()
        shardload.save_file(src.state_dict(), self.path("cpuN.safetensors"))
        for device in ("cpu:0", torch.device("cpu", 1), "cpu:1"):
            loaded = shardload.load_file(self.path("cpuN.safetensors"), device=device)
            self.assertEqual(loaded["head.weight"].device, torch.device("cpu"))
            self.assertTrue(torch.equal(loaded["head.weight"], src.head.weight))
            dst = Tiny()
            shardload.load_model(dst, self.path("cpuN.safetensors"), device=device)
            self.assertTrue(torch.equal(dst.head.weight, src.head.weight))
        self.assertEqual(shardload._device_string("cpu:3"), "cpu")
        with self.assertRaises(shardload.ShardloadError) as cm:  # torch's, not ours
            shardload._device_string("cpu:03")
        self.assertTrue(str(cm.exception).startswith("invalid device 'cpu:03': expected cpu, "
                                                     "cuda or cuda:N"), str(cm.exception))

    def test_more_shards_than_the_soft_open_file_limit(self):
        # A load keeps every shard open: the package raises the soft RLIMIT_NOFILE (up to
        # the hard one) for a checkpoint that needs more, as the shardload command does.
        import resource
        folder = self.path("many")
        os.mkdir(folder)
        tensors = {"t%03d" % i: torch.full((1,), float(i)) for i in range(300)}
        shardload.save_sharded(tensors, folder, max_shard_size=4)
        self.assertEqual(len([f for f in os.listdir(folder) if f.endswith(".safetensors")]), 300)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 600:
            self.skipTest("hard open-file limit %d" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        try:
            loaded = shardload.load_file(folder)
            self.assertEqual(len(loaded), 300)
            self.assertTrue(torch.equal(loaded["t299"], tensors["t299"]))
            self.assertGreaterEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 300)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def test_cancel_token_stops_a_wait_for_the_folder_lock(self):
        # A writer publishing a rewrite holds the folder's lock (flock, exclusive): a
        # load_file with a token waits for it, and stops once the token is cancelled.
        import fcntl
        folder = self.path("lockwait")
        os.mkdir(folder)
        shardload.save_sharded({"a": torch.ones(4), "b": torch.zeros(4)}, folder,
                               max_shard_size=16)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            token = shardload.CancelToken()
            timer = threading.Timer(0.2, token.cancel)
            timer.start()
            with self.assertRaises(shardload.ShardloadError) as cm:
                shardload.load_file(folder, cancel=token)
            timer.join()
            self.assertEqual((cm.exception.code, str(cm.exception)),
                             ("cancelled", folder + ": stopped while waiting for the folder's lock"))
        finally:
            os.close(fd)
        loaded = shardload.load_file(folder, cancel=shardload.CancelToken())
        self.assertTrue(torch.equal(loaded["a"], torch.ones(4)))

    def test_cancel_token(self):
        tensors = {"w%d" % i: torch.full((256,), float(i)) for i in range(4)}
        path = self.path("c.safetensors")
        shardload.save_file(tensors, path)
        lib = _lib.lib()
        token = shardload.CancelToken()
        self.assertFalse(token.cancelled)
        self.assertEqual(repr(token), "CancelToken(cancelled=False)")
        loaded = shardload.load_file(path, cancel=token)  # not cancelled: loads
        self.assertTrue(torch.equal(loaded["w2"], tensors["w2"]))
        del loaded
        gc.collect()
        before = lib.sl_live_arena_sets()

        # A load running on a worker thread, cancelled from this one while it runs: it
        # stops at its next check, raises there, and keeps no arena. (Its progress
        # callback only holds the load at its first call until the cancel was sent, so
        # that the load cannot finish first; ctypes releases the GIL during the C call.)
        started = threading.Event()
        sent = threading.Event()
        outcome = []

        def hold_until_sent(done, total):
            if done == 0:
                started.set()
                sent.wait(10)
            return True

        def worker():
            try:
                shardload.load_file(path, progress=hold_until_sent, cancel=token)
                outcome.append(None)
            except shardload.ShardloadError as e:
                outcome.append(e)

        t = threading.Thread(target=worker)
        t.start()
        self.assertTrue(started.wait(10))
        token.cancel()
        sent.set()
        t.join(10)
        self.assertFalse(t.is_alive())
        self.assertEqual(len(outcome), 1)
        self.assertIsNotNone(outcome[0], "the load was not cancelled")
        self.assertEqual((outcome[0].code, str(outcome[0])), ("cancelled", "load cancelled"))
        self.assertTrue(token.cancelled)
        self.assertEqual(repr(token), "CancelToken(cancelled=True)")
        self.assertEqual(lib.sl_live_arena_sets(), before)
        # A cancelled token stays cancelled: later loads fail before any progress.
        calls = []
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(path, progress=lambda d, t: calls.append(d), cancel=token)
        self.assertEqual((cm.exception.code, str(cm.exception)), ("cancelled", "load cancelled"))
        self.assertEqual(calls, [])
        token.cancel()  # idempotent
        # load_state_dict_into (in place) and load_model: nothing is written.
        src = Tiny()
        shardload.save_file(src.state_dict(), self.path("m.safetensors"))
        dst = Tiny()
        with torch.no_grad():
            for p in dst.parameters():
                p.fill_(7.0)
        for load in (shardload.load_state_dict_into, shardload.load_model):
            with self.assertRaises(shardload.ShardloadError) as cm:
                load(dst, self.path("m.safetensors"), cancel=token)
            self.assertEqual((cm.exception.code, str(cm.exception)),
                             ("cancelled", "load cancelled"))
            self.assertTrue(all(bool((p == 7.0).all()) for p in dst.parameters()))
        # A fresh token loads again; closing one makes it unusable (ValueError).
        with shardload.CancelToken() as fresh:
            shardload.load_model(dst, self.path("m.safetensors"), cancel=fresh)
            self.assertTrue(torch.equal(dst.head.weight, src.head.weight))
        self.assertTrue(fresh.closed)
        self.assertEqual(repr(fresh), "CancelToken(closed)")
        for call in (lambda: shardload.load_file(path, cancel=fresh), fresh.cancel,
                     lambda: fresh.cancelled):
            with self.assertRaises(ValueError) as cm:
                call()
            self.assertEqual(str(cm.exception), "CancelToken is closed")
        with self.assertRaises(TypeError) as cm:
            shardload.load_file(path, cancel=True)
        self.assertEqual(str(cm.exception),
                         "cancel must be a shardload.CancelToken or None, got bool")
        token.close()

    # -------------------------------------------------------------- sharded

    def test_sharded_save_and_load(self):
        tensors = {"layer.%d.w" % i: torch.full((64,), float(i)) for i in range(5)}
        shardload.save_sharded(tensors, self.dir, max_shard_size="600B",
                               metadata={"note": "x"})
        with open(self.path("model.safetensors.index.json")) as f:
            index = json.load(f)
        self.assertEqual(index["metadata"]["total_size"], 5 * 256)
        self.assertEqual(len(set(index["weight_map"].values())), 5 // 2 + 1)
        loaded = shardload.load_file(self.dir)
        for name, t in tensors.items():
            self.assertTrue(torch.equal(loaded[name], t), name)
        with shardload.safe_open(self.dir, framework="pt") as f:
            self.assertEqual(f.metadata()["note"], "x")
            self.assertEqual(f.keys(), sorted(tensors))
        with self.assertRaises(ValueError) as cm:
            shardload.save_sharded(tensors, self.dir, max_shard_size="12XB")
        self.assertEqual(str(cm.exception), "invalid byte size '12XB': unknown unit 'XB' "
                         "(use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")


    # -------------------------------------------------------------- metadata on save

    def test_save_file_refusals_like_reference(self):
        w = torch.arange(12.0).reshape(3, 4)
        out = self.path("o.safetensors")
        shared = ("\n            Some tensors share memory, this will lead to duplicate memory on "
                  "disk and potential differences when loading them again: [%s].\n            A "
                  "potential way to correctly save your model is to use `save_model`.\n       "
                  "     More information at https://huggingface.co/docs/safetensors/torch_shared"
                  "_tensors\n            ")
        noncontig = ("You are trying to save a non contiguous tensor: `a` which is not allowed. "
                     "It either means you are trying to save tensors which are reference of each "
                     "other in which case it's recommended to save only the full tensors, and "
                     "reslice at load time, or simply call `.contiguous()` on your tensor to "
                     "pack it before saving.")
        cases = [
            ([1], ValueError, "Expected a dict of [str, torch.Tensor] but received "
                              "<class 'list'>"),
            ({"s": torch.eye(2).to_sparse()}, ValueError,
             "You are trying to save a sparse tensors: `['s']` which this library does not "
             "support. You can make it a dense tensor before saving with `.to_dense()` but be "
             "aware this might make a much larger file than needed."),
            ({"a": w, "b": w}, RuntimeError, shared % repr({"a", "b"})),
            ({"a": w, "b": w[1]}, RuntimeError, shared % repr({"a", "b"})),
            ({"a": torch.zeros(3, 4).t()}, ValueError, noncontig),
        ]
        for tensors, kind, message in cases:
            with self.assertRaises(kind) as cm:
                shardload.save_file(tensors, out)
            self.assertEqual(str(cm.exception), message)
            self.assertFalse(os.path.exists(out))
            if st is not None:
                with self.assertRaises(kind) as ref:
                    st.save_file(tensors, self.path("r.safetensors"))
                self.assertEqual(str(ref.exception), message)
        # Disjoint views of one storage are not shared memory.
        shardload.save_file({"a": w[0], "b": w[1]}, out)
        loaded = shardload.load_file(out)
        self.assertTrue(torch.equal(loaded["a"], w[0]) and torch.equal(loaded["b"], w[1]))
        # save_sharded copies instead of refusing (huggingface_hub-style writer).
        shardload.save_sharded({"a": w.t()}, self.dir)
        self.assertTrue(torch.equal(shardload.load_file(self.dir)["a"], w.t().contiguous()))
        # A NUL in a path or prefix is refused as open() refuses it (the C API would
        # cut the name short there: 'x\0y' would write 'x').
        for call in (lambda: shardload.save_file({"a": w}, self.path("x\0y.safetensors")),
                     lambda: shardload.save_sharded({"a": w}, self.dir + "\0zzz"),
                     lambda: shardload.save_sharded({"a": w}, self.dir, prefix="model\0v2"),
                     lambda: shardload.load_file(self.path("x\0y.safetensors"))):
            with self.assertRaises(ValueError) as cm:
                call()
            self.assertEqual(str(cm.exception), "embedded null byte")
        self.assertFalse(os.path.exists(self.path("x")))
        # Tied tensors are written once with a tie note, as huggingface_hub does.
        tied_dir = os.path.join(self.dir, "tied")
        os.mkdir(tied_dir)
        shardload.save_sharded({"head": w, "embed": w, "bias": torch.ones(2)}, tied_dir,
                               metadata={"note": "x"})
        with shardload.safe_open(tied_dir) as f:
            self.assertEqual(sorted(f.keys()), ["bias", "embed"])
            self.assertEqual(f.metadata(), {"format": "pt", "head": "embed", "note": "x"})

        class Tied(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Parameter(torch.zeros(w.shape))
                self.head = torch.nn.Parameter(torch.zeros(w.shape))
                self.bias = torch.nn.Parameter(torch.zeros(2))

        into = Tied()
        report = shardload.load_state_dict_into(into, tied_dir)
        self.assertEqual(report["missing"], [])
        self.assertTrue(torch.equal(into.head, w) and torch.equal(into.embed, w))
        # A group where no tensor covers the storage is refused, as save_model does.
        with self.assertRaises(RuntimeError):
            shardload.save_sharded({"a": w[:2], "b": w[1:]}, tied_dir)

    def test_save_sharded_makes_a_missing_folder(self):
        # As huggingface_hub's save_torch_state_dict: the folder and its parents are made.
        t = {"a": torch.arange(8.0), "b": torch.ones(3, dtype=torch.int64)}
        folder = self.path("new/deeper/ckpt")
        shardload.save_sharded(t, folder, max_shard_size="40B")
        got = shardload.load_file(folder)
        self.assertEqual(sorted(got), ["a", "b"])
        self.assertTrue(torch.equal(got["a"], t["a"]) and torch.equal(got["b"], t["b"]))
        # A file where the folder should be is refused, the file left as it was.
        with open(self.path("afile"), "w") as f:
            f.write("x")
        with self.assertRaises(FileExistsError):
            shardload.save_sharded(t, self.path("afile"))
        with open(self.path("afile")) as f:
            self.assertEqual(f.read(), "x")

    def test_save_sharded_writes_views_sharing_memory_as_copies(self):
        # Only exact ties (one storage, offset, dtype, shape and stride under several
        # names) are written once with a tie note; any other view of the kept tensor's
        # memory holds other values and is written as its own copy. w is square, so a
        # dropped transpose would load back with w's values under its name.
        w = torch.arange(16.0).reshape(4, 4)
        z = torch.tensor([1 + 2j, 3 - 1j, -0.5 + 0j])
        cases = {
            "transposed": {"a": w, "b": w.t()},
            "partial": {"a": w, "b": w[:1]},
            "reinterpreted": {"a": w, "b": w.view(torch.int32)},
            "conjugate": {"a": z, "b": z.conj()},
            # Both cover the storage: "a", the transpose, is kept and "b" is copied.
            "kept_transposed": {"a": w.t(), "b": w},
            # "b" and "c" are ties of each other but not of the kept "a".
            "two_partial": {"a": w, "b": w[:1], "c": w[:1]},
        }
        for label, tensors in cases.items():
            folder = os.path.join(self.dir, label)
            os.mkdir(folder)
            shardload.save_sharded(tensors, folder, metadata={"note": "x"})
            loaded = shardload.load_file(folder)
            self.assertEqual(sorted(loaded), sorted(tensors), label)
            for name, t in tensors.items():
                self.assertTrue(torch.equal(loaded[name], t.resolve_conj()), (label, name))
            with shardload.safe_open(folder) as f:
                self.assertEqual(f.metadata(), {"format": "pt", "note": "x"}, label)
        # An exact tie is still dropped with its note, next to a view that is copied.
        folder = os.path.join(self.dir, "tie_and_view")
        os.mkdir(folder)
        metadata = {"note": "x"}
        shardload.save_sharded({"a": w, "b": w, "c": w.t()}, folder, metadata=metadata)
        self.assertEqual(metadata, {"note": "x"})  # the caller's dict is left alone
        with shardload.safe_open(folder) as f:
            self.assertEqual(sorted(f.keys()), ["a", "c"])
            self.assertEqual(f.metadata(), {"format": "pt", "b": "a", "note": "x"})
        loaded = shardload.load_file(folder)
        self.assertTrue(torch.equal(loaded["a"], w) and torch.equal(loaded["c"], w.t()))

        class Three(torch.nn.Module):
            def __init__(self):
                super().__init__()
                for name in "abc":
                    self.register_parameter(name, torch.nn.Parameter(torch.zeros(4, 4)))

        into = Three()
        report = shardload.load_state_dict_into(into, folder)
        self.assertEqual(report["missing"], [])
        self.assertTrue(torch.equal(into.a, w) and torch.equal(into.b, w) and
                        torch.equal(into.c, w.t()))

    def test_save_with_ties_checks_the_metadata_type_first(self):
        # With tied tensors the metadata gets tie notes; a non-dict is refused with
        # save_file's TypeError before that, as it is without ties.
        w = torch.ones(2, 2)
        message = "argument 'metadata': 'list' object is not an instance of 'dict'"
        with self.assertRaises(TypeError) as cm:
            shardload.save_sharded({"a": w, "b": w}, self.dir, metadata=[("x", "y")])
        self.assertEqual(str(cm.exception), message)
        out = self.path("m.safetensors")
        for tie in (True, False):
            with self.assertRaises(TypeError) as cm:
                shardload.save_model(Tiny(tie=tie), out, metadata=[("x", "y")])
            self.assertEqual(str(cm.exception), message)
            self.assertFalse(os.path.exists(out))
        if st is not None:  # the reference's save_file wording, without ties
            with self.assertRaises(TypeError) as ref:
                st.save_model(Tiny(), self.path("r.safetensors"), metadata=[("x", "y")])
            self.assertEqual(str(ref.exception), message)

    @needs_reference
    def test_save_model_bytes_match_reference(self):
        for tie in (False, True):
            for md in (None, {"x": "y"}):
                if tie and md:
                    continue  # two keys: sorted here, hash order there
                m = Tiny(tie=tie)
                shardload.save_model(m, self.path("o.safetensors"), metadata=md)
                st.save_model(m, self.path("r.safetensors"), metadata=md)
                with open(self.path("o.safetensors"), "rb") as a, \
                        open(self.path("r.safetensors"), "rb") as b:
                    self.assertEqual(a.read(), b.read(), (tie, md))
        m = Tiny()
        m.proj.weight = torch.nn.Parameter(torch.zeros(4, 4).t())
        with self.assertRaises(ValueError) as cm:
            shardload.save_model(m, self.path("o.safetensors"), force_contiguous=False)
        with self.assertRaises(ValueError) as ref:
            st.save_model(m, self.path("r.safetensors"), force_contiguous=False)
        self.assertEqual(str(cm.exception), str(ref.exception))
        self.assertTrue(str(cm.exception).endswith(
            " Or use save_model(..., force_contiguous=True), read the docs for potential "
            "caveats."))

    def header(self, path):
        """(header length, parsed JSON header) of a .safetensors file."""
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            return n, json.loads(f.read(n))

    def data_bytes(self, path):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            f.seek(8 + n)
            return f.read()

    @needs_reference
    def test_save_file_metadata_matches_reference(self):
        tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                   "b": torch.tensor([1, 2], dtype=torch.int16)}
        # None, {} and one key: the same bytes as the reference.
        for md in (None, {}, {"format": "pt"}, {"k\u00e9y": "v\u00e0lue \"q\""}):
            ours, ref = self.path("o.safetensors"), self.path("r.safetensors")
            shardload.save_file(tensors, ours, metadata=md)
            st.save_file(tensors, ref, metadata=md)
            with open(ours, "rb") as a, open(ref, "rb") as b:
                self.assertEqual(a.read(), b.read(), md)
            with shardload.safe_open(ours) as f, st_safe_open(ref, framework="pt") as g:
                self.assertEqual(f.metadata(), g.metadata(), md)
        # Several keys: this writer sorts them, the reference writes hash order, so the
        # bytes may differ in the order of the __metadata__ entries only: compare the
        # header length, the parsed headers and the data bytes.
        md = {"zeta": "1", "alpha": "2", "format": "pt", "mid": "x" * 40}
        ours, ref = self.path("o.safetensors"), self.path("r.safetensors")
        shardload.save_file(tensors, ours, metadata=md)
        st.save_file(tensors, ref, metadata=md)
        (n_ours, h_ours), (n_ref, h_ref) = self.header(ours), self.header(ref)
        self.assertEqual(n_ours, n_ref)
        self.assertEqual(h_ours, h_ref)
        self.assertEqual(h_ours["__metadata__"], md)
        self.assertEqual(list(h_ours["__metadata__"]), sorted(md))
        self.assertEqual(self.data_bytes(ours), self.data_bytes(ref))
        self.assertEqual(os.path.getsize(ours), os.path.getsize(ref))
        with st_safe_open(ours, framework="pt") as g:  # the reference reads ours
            self.assertEqual(g.metadata(), md)
        with shardload.safe_open(ref) as f:
            self.assertEqual(f.metadata(), md)

    def test_save_file_metadata_errors(self):
        t = {"w": torch.ones(2)}
        out = self.path("bad.safetensors")
        cases = [({1: "a"}, "argument 'metadata': 'int' object is not an instance of 'str'"),
                 ({"a": 1}, "argument 'metadata': 'int' object is not an instance of 'str'"),
                 ({"a": None}, "argument 'metadata': 'None' is not an instance of 'str'"),
                 ({"a": b"x"}, "argument 'metadata': 'bytes' object is not an instance of 'str'"),
                 ([("a", "b")], "argument 'metadata': 'list' object is not an instance of 'dict'"),
                 ("ab", "argument 'metadata': 'str' object is not an instance of 'dict'")]
        for md, message in cases:
            with self.assertRaises(TypeError) as cm:
                shardload.save_file(t, out, metadata=md)
            self.assertEqual(str(cm.exception), message)
            if st is not None:  # the reference raises the same error
                with self.assertRaises(TypeError) as ref:
                    st.save_file(t, out, metadata=md)
                self.assertEqual(str(ref.exception), message)
            self.assertFalse(os.path.exists(out))
            with self.assertRaises(TypeError) as cm:
                shardload.save_sharded(t, self.dir, metadata=md)
            self.assertEqual(str(cm.exception), message)
        with self.assertRaises(UnicodeEncodeError):
            shardload.save_file(t, out, metadata={"\ud800": "x"})
        self.assertFalse(os.path.exists(out))

    def test_save_metadata_with_nul_is_refused(self):
        # C strings end at a NUL: a key or value holding one would be cut short and
        # written wrong, so it is refused before anything is written.
        t = {"w": torch.ones(2)}
        out = self.path("nul.safetensors")
        for md, message in [
                ({"a\0b": "x"}, "metadata key 'a\\x00b' holds a NUL character, which "
                                 "shardload cannot write"),
                ({"k": "x\0y"}, "metadata value of 'k' holds a NUL character, which "
                                 "shardload cannot write")]:
            with self.assertRaises(ValueError) as cm:
                shardload.save_file(t, out, metadata=md)
            self.assertEqual(str(cm.exception), message)
            self.assertFalse(os.path.exists(out))
            with self.assertRaises(ValueError) as cm:
                shardload.save_sharded(t, self.dir, metadata=md)
            self.assertEqual(str(cm.exception), message)
            self.assertFalse(os.path.exists(os.path.join(self.dir, "model.safetensors")))

    def test_tied_parameters_get_the_last_entry_like_torch(self):
        # A checkpoint holding both names of a tied parameter with different data: torch
        # copies the entries in state_dict order, so the last one wins. The file stores
        # b.weight first, so writing in file order would leave a.weight's data.
        class TiedPair(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Linear(2, 2, bias=False)
                self.b = torch.nn.Linear(2, 2, bias=False)
                self.b.weight = self.a.weight

        header = json.dumps({
            "a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 32]},
            "b.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
        header += b" " * (-len(header) % 8)
        path = self.path("untied.safetensors")
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header +
                    torch.full((4,), 2.0).numpy().tobytes() + torch.ones(4).numpy().tobytes())
        expect = TiedPair()
        expect.load_state_dict({"a.weight": torch.ones(2, 2), "b.weight": torch.full((2, 2), 2.0)})
        self.assertTrue(torch.equal(expect.a.weight, torch.full((2, 2), 2.0)))
        for threads in (1, 2):
            m = TiedPair()
            report = shardload.load_state_dict_into(m, path, threads=threads)
            self.assertEqual(report["matched"], ["a.weight", "b.weight"])
            self.assertTrue(torch.equal(m.a.weight, expect.a.weight), m.a.weight)
            self.assertEqual(m.a.weight.data_ptr(), m.b.weight.data_ptr())
        m = TiedPair()
        self.assertEqual(shardload.load_model(m, path, strict=False), (set(), ["b.weight"]))
        self.assertTrue(torch.equal(m.a.weight, expect.a.weight), m.a.weight)
        if st is not None:
            r = TiedPair()
            self.assertEqual(st.load_model(r, path, strict=False), (set(), ["b.weight"]))
            self.assertTrue(torch.equal(r.a.weight, expect.a.weight))

    def test_save_resolves_conjugate_and_negative_views(self):
        # x.conj() of a complex tensor and x._neg_view() are lazy: their memory holds
        # x's values. What is written is the values they show (safetensors writes x's).
        x = torch.tensor([1 + 2j, -3 + 0.5j, 0 - 4j], dtype=torch.complex64)
        y = torch.tensor([1.5, -2.0, 0.25])
        tensors = {"conj": x.conj(), "neg": y._neg_view(),
                   "both": x.clone()._neg_view().conj()}
        self.assertTrue(tensors["conj"].is_conj() and tensors["neg"].is_neg())
        self.assertTrue(tensors["both"].is_conj() and tensors["both"].is_neg())
        expected = {"conj": [1 - 2j, -3 - 0.5j, 0 + 4j], "neg": [-1.5, 2.0, -0.25],
                    "both": [-1 + 2j, 3 + 0.5j, 0 - 4j]}

        def check(loaded, names):
            for name in names:
                self.assertEqual(loaded[name].tolist(), expected[name], name)

        shardload.save_file(tensors, self.path("c.safetensors"))
        check(shardload.load_file(self.path("c.safetensors")), tensors)
        check(shardload.load(shardload.save(tensors)), tensors)
        os.mkdir(self.path("sharded"))
        shardload.save_sharded(tensors, self.path("sharded"))
        check(shardload.load_file(self.path("sharded")), tensors)
        m = torch.nn.Module()
        m.register_buffer("conj", x.conj())
        shardload.save_model(m, self.path("m.safetensors"))
        check(shardload.load_file(self.path("m.safetensors")), ["conj"])
        self.assertEqual((x.tolist(), y.tolist()),
                         ([1 + 2j, -3 + 0.5j, 0 - 4j], [1.5, -2.0, 0.25]))  # untouched

    def test_save_non_str_names_are_type_errors(self):
        out = self.path("names.safetensors")
        for tensors, message in [
                ({1: torch.ones(2)}, "argument 'tensor_dict': 'int' object is not an instance "
                                     "of 'str'"),
                ({b"w": torch.ones(2)}, "argument 'tensor_dict': 'bytes' object is not an "
                                        "instance of 'str'")]:
            with self.assertRaises(TypeError) as cm:
                shardload.save_file(tensors, out, metadata={"k": 1})  # names come first
            self.assertEqual(str(cm.exception), message)
            if st is not None:
                with self.assertRaises(TypeError) as ref:
                    st.save_file(tensors, out, metadata={"k": 1})
                self.assertEqual(str(ref.exception), message)
            with self.assertRaises(TypeError) as cm:
                shardload.save_sharded(tensors, self.dir)
            self.assertEqual(str(cm.exception), message)
            self.assertFalse(os.path.exists(out))

    def test_metadata_with_nul_reads_whole(self):
        # safetensors writes NUL characters in metadata as \u0000; they must come back
        # whole (a NUL-terminated read would cut "a\0b" to "a" and merge the keys).
        path = self.path("nul_meta.safetensors")
        header = json.dumps({"__metadata__": {"a\0b": "x\0y", "a\0c": "2"},
                             "t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header.encode() + b"\x07")
        expect = {"a\0b": "x\0y", "a\0c": "2"}
        with shardload.safe_open(path) as f:
            self.assertEqual(f.metadata(), expect)
        if st is not None:
            with st_safe_open(path, framework="pt") as g:
                self.assertEqual(g.metadata(), expect)

    def test_get_slice_bool_keys_index_like_torch(self):
        # A bool is an int to isinstance, but torch indexes with it as a mask (a new
        # dimension of size 1 or 0), not as row 1 or 0.
        w = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
        shardload.save_file({"w": w}, self.path("b.safetensors"))
        with shardload.safe_open(self.path("b.safetensors")) as f:
            for key in (True, False, (True, 0), (0, True), (slice(None), True)):
                got = f.get_slice("w")[key]
                self.assertEqual(list(got.shape), list(w[key].shape), key)
                self.assertTrue(torch.equal(got, w[key]), key)

    def test_get_slice_several_ellipses_index_like_torch(self):
        # torch 2.11 takes several Ellipses in one key on a CPU tensor ((..., 2:2, ...,
        # 0:) of a [3, 3, 2] tensor is [3, 0, 2]) but refuses them on the meta device
        # ("Dimension out of range"), which get_slice used to check keys with; torch
        # 1.13 refuses both. Found by fuzz/reference_diff.py --slice-cases.
        w = torch.arange(18, dtype=torch.float32).reshape(3, 3, 2)
        shardload.save_file({"w": w}, self.path("e.safetensors"))
        keys = [(Ellipsis, slice(2, 2), Ellipsis, slice(0, None)),
                (Ellipsis, Ellipsis), (Ellipsis, 1, Ellipsis), [slice(1, 3), Ellipsis, Ellipsis],
                (slice(None), Ellipsis, Ellipsis, 0)]
        with shardload.safe_open(self.path("e.safetensors")) as f:
            for key in keys:
                try:
                    want = w[key]
                except IndexError as e:
                    with self.assertRaises(IndexError) as cm:
                        f.get_slice("w")[key]
                    self.assertEqual(str(cm.exception), str(e), key)
                    continue
                got = f.get_slice("w")[key]
                self.assertEqual(list(got.shape), list(want.shape), key)
                self.assertTrue(torch.equal(got, want), key)

    def test_get_slice_checks_index_arrays_before_reading(self):
        # The meta device checks no index values: an out-of-range list or tensor index
        # would reach the read tensor, which on a GPU means a device-side assert that
        # ruins the process's CUDA context. They are checked on the CPU first, with
        # torch's words, before any byte is read.
        w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        shardload.save_file({"w": w}, self.path("i.safetensors"))
        keys = [[0, 5], torch.tensor([7]), (slice(None), [1, 9]), [[0], [4]],
                (0, torch.tensor([-5]))]
        with shardload.safe_open(self.path("i.safetensors")) as f:
            s = f.get_slice("w")
            original = shardload._Slice._read_rows
            shardload._Slice._read_rows = lambda *a: self.fail("read before the key was checked")
            try:
                for key in keys:
                    with self.assertRaises(IndexError) as want:
                        w[key]
                    with self.assertRaises(IndexError) as got:
                        s[key]
                    self.assertEqual(str(got.exception), str(want.exception), key)
            finally:
                shardload._Slice._read_rows = original
            self.assertTrue(torch.equal(s[[0, 2]], w[[0, 2]]))

    def test_get_slice_bool_list_masks(self):
        w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        shardload.save_file({"w": w}, self.path("m.safetensors"))
        with shardload.safe_open(self.path("m.safetensors")) as f:
            for key in ([True, False, True], (slice(None), [False, True, True, False]),
                        ([True, True, False], 1)):
                self.assertTrue(torch.equal(f.get_slice("w")[key], w[key]), key)
            with self.assertRaises(IndexError):  # a mask of the wrong length, as torch
                f.get_slice("w")[[True, False]]

    def test_safe_open_after_close(self):
        w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        shardload.save_file({"w": w}, self.path("c.safetensors"), metadata={"k": "v"})
        with shardload.safe_open(self.path("c.safetensors")) as f:
            s = f.get_slice("w")
        gc.collect()
        # The slice holds the file: its shape and rows are still right after the close.
        self.assertEqual((s.get_shape(), s.get_dtype()), ([3, 4], "F32"))
        self.assertTrue(torch.equal(s[1:3], w[1:3]))
        for call in (lambda: f.get_tensor("w"), lambda: f.metadata(), lambda: f.keys(),
                     lambda: f.get_slice("w"), lambda: f.get_tensors(),
                     lambda: f.offset_keys()):
            with self.assertRaises(shardload.ShardloadError) as cm:
                call()
            self.assertEqual((cm.exception.code, str(cm.exception)),
                             ("failed_precondition", "File is closed"))
        # A name that is not a str is a TypeError first, closed or not, as safetensors'
        # argument parsing comes before its closed-file check.
        for call in (lambda: f.get_tensor(1), lambda: f.get_slice(1)):
            with self.assertRaises(TypeError) as cm:
                call()
            self.assertEqual(str(cm.exception),
                             "argument 'name': 'int' object is not an instance of 'str'")

    def test_names_and_paths_of_the_wrong_type(self):
        w = torch.ones(2)
        with self.assertRaises(TypeError) as cm:
            shardload.save_file({"w": w}, None)
        self.assertEqual(str(cm.exception), "argument 'filename': expected str, bytes or "
                         "os.PathLike object, not NoneType")
        self.assertFalse(os.path.exists("None"))
        import pathlib
        shardload.save_file({"w": w}, os.fsencode(self.path("b.safetensors")))
        shardload.save_file({"w": w}, pathlib.Path(self.path("p.safetensors")))
        for path in (os.fsencode(self.path("b.safetensors")), pathlib.Path(self.path("p.safetensors"))):
            self.assertTrue(torch.equal(shardload.load_file(path)["w"], w))
        with shardload.safe_open(self.path("p.safetensors")) as f:
            with self.assertRaises(TypeError) as cm:
                f.get_tensor(1)
            self.assertEqual(str(cm.exception),
                             "argument 'name': 'int' object is not an instance of 'str'")

    @needs_reference
    def test_file_order_puts_an_empty_tensor_first_like_reference(self):
        # "z0" is [172, 172] and "i32" [172, 192]: the reference orders by start, then end.
        path = self.path("z.safetensors")
        st.save_file({"i32": torch.arange(5, dtype=torch.int32), "z0": torch.zeros(0)}, path)
        with shardload.safe_open(path) as ours, st_safe_open(path, framework="pt") as ref:
            self.assertEqual(ours.offset_keys(), ref.offset_keys())
            self.assertEqual(ours.offset_keys(), ["z0", "i32"])
            self.assertEqual(list(ours.get_tensors()), list(ref.get_tensors()))
        self.assertEqual(list(shardload.load_file(path)), list(st.load_file(path)))

    def test_checkpoint_warnings_are_python_warnings(self):
        # An index listing nothing beside a shard: an empty result, but not a silent one.
        shardload.save_file({"w": torch.ones(2)}, self.path("model-00001-of-00001.safetensors"))
        with open(self.path("model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {}}, f)
        with warnings_caught() as caught:
            self.assertEqual(shardload.load_file(self.dir), {})
        self.assertEqual([(w.category, str(w.message)) for w in caught], [
            (shardload.ShardloadWarning,
             "model.safetensors.index.json: weight_map is empty; the checkpoint has no tensors")])

    def test_safe_open_reads_the_files_it_opened(self):
        # As safetensors maps its file at open, safe_open holds every shard open from
        # the start (sl_checkpoint_hold_files): a file of the same size with another
        # header renamed over the path, a deleted file, or a relative path after
        # os.chdir do not change what it reads (each read used to open the path again:
        # the replaced file was refused, a deleted one or a chdir failed not_found).
        os.mkdir(self.path("d"))
        path = self.path("d/r.safetensors")
        shardload.save_file({"a": torch.zeros(4), "b": torch.ones(4)}, path)
        with open(path, "rb") as f:
            data = f.read()
        swapped = data.replace(b'"a":', b'"c":', 1).replace(b'"b":', b'"a":', 1)
        self.assertEqual(len(swapped), len(data))
        reads = {"get_tensor": lambda h: h.get_tensor("a").tolist(),
                 "get_slice": lambda h: h.get_slice("a")[1:3].tolist(),
                 "get_tensors": lambda h: h.get_tensors()["a"].tolist()}
        expected = {"get_tensor": [0.0] * 4, "get_slice": [0.0] * 2, "get_tensors": [0.0] * 4}
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            with shardload.safe_open("d/r.safetensors", framework="pt") as f:
                handles = [f]
                if st is not None:
                    handles.append(st_safe_open("d/r.safetensors", framework="pt"))
                with open(path + ".new", "wb") as g:
                    g.write(swapped)
                os.replace(path + ".new", path)
                self.assertTrue(torch.equal(shardload.load_file(path)["a"], torch.ones(4)))
                for h in handles:
                    self.assertEqual({k: read(h) for k, read in reads.items()}, expected)
                rows = f.get_slice("b")
                os.unlink(path)
                os.chdir(self.path("d"))
                for h in handles:
                    self.assertEqual({k: read(h) for k, read in reads.items()}, expected)
            self.assertEqual(rows[0:2].tolist(), [1.0, 1.0])  # a slice keeps the files too
        finally:
            os.chdir(cwd)
        # The files are checked when they are opened: one replaced between the catalog
        # read (sl_checkpoint_open) and the hold is refused.
        shardload.save_file({"a": torch.zeros(4), "b": torch.ones(4)}, path)
        with shardload._Checkpoint(path) as ckpt:
            with open(path + ".new", "wb") as g:
                g.write(swapped)
            os.replace(path + ".new", path)
            with self.assertRaises(shardload.ShardloadError) as cm:
                _lib.check(_lib.lib().sl_checkpoint_hold_files(ckpt.handle))
        self.assertEqual((cm.exception.code, str(cm.exception)), (
            "aborted", "r.safetensors: file was replaced since the checkpoint was opened and "
            "its header differs (open the checkpoint again)"))

    def test_safe_open_fails_reads_of_a_file_truncated_in_place(self):
        # A held file cut short under safe_open: reads fail with data_loss (safetensors'
        # mapping faults there: SIGBUS ends the process). Written over in place with
        # another header (same inode): aborted (reopen and retry), never the old offsets.
        path = self.path("t.safetensors")
        shardload.save_file({"a": torch.zeros(1000), "b": torch.ones(1000)}, path)
        reads = (lambda f: f.get_tensor("b"), lambda f: f.get_slice("b")[0:2],
                 lambda f: f.get_tensors())
        with shardload.safe_open(path, framework="pt") as f:
            os.truncate(path, 200)
            for read in reads:
                with self.assertRaises(shardload.ShardloadError) as cm:
                    read(f)
                self.assertEqual((cm.exception.code, str(cm.exception)), (
                    "data_loss", "t.safetensors: file is now 200 bytes, but its header was "
                    "read from 8136 bytes"))
        shardload.save_file({"a": torch.zeros(1000), "b": torch.ones(1000)}, path)
        with open(path, "rb") as g:
            data = g.read()
        swapped = data.replace(b'"a":', b'"c":', 1).replace(b'"b":', b'"a":', 1)
        with shardload.safe_open(path, framework="pt") as f:
            with open(path, "r+b") as g:  # in place: the inode stays
                g.write(swapped)
            os.utime(path, (12345, 12345))  # a later write's time (same tick otherwise)
            for read in reads:
                with self.assertRaises(shardload.ShardloadError) as cm:
                    read(f)
                self.assertEqual((cm.exception.code, str(cm.exception)), (
                    "aborted", "t.safetensors: file was replaced since the checkpoint was "
                    "opened and its header differs (open the checkpoint again)"))

    def test_safe_open_metadata_empty_and_absent(self):
        t = {"w": torch.ones(2)}
        shardload.save_file(t, self.path("none.safetensors"))
        shardload.save_file(t, self.path("empty.safetensors"), metadata={})
        self.assertNotIn("__metadata__", self.header(self.path("none.safetensors"))[1])
        self.assertEqual(self.header(self.path("empty.safetensors"))[1]["__metadata__"], {})
        with shardload.safe_open(self.path("none.safetensors")) as f:
            self.assertIsNone(f.metadata())
        with shardload.safe_open(self.path("empty.safetensors")) as f:
            self.assertEqual(f.metadata(), {})
        os.mkdir(self.path("folder"))
        shardload.save_file(t, self.path("folder/model.safetensors"), metadata={})
        with shardload.safe_open(self.path("folder")) as f:
            self.assertEqual(f.metadata(), {})

    def test_sharded_metadata_as_the_writer_puts_it(self):
        tensors = {"layer.%d.w" % i: torch.full((64,), float(i)) for i in range(3)}
        shardload.save_sharded(tensors, self.dir, max_shard_size="256B",
                               metadata={"note": "n", "format": "mine"})
        with open(self.path("model.safetensors.index.json")) as f:
            index = json.load(f)
        self.assertEqual(index["metadata"], {"total_size": 768, "note": "n", "format": "mine"})
        for k in range(1, 4):
            _, h = self.header(self.path("model-%05d-of-00003.safetensors" % k))
            self.assertEqual(h["__metadata__"], {"format": "pt"})
        one = self.path("one")
        os.mkdir(one)
        shardload.save_sharded(tensors, one, metadata={"note": "n", "format": "mine"})
        self.assertEqual(os.listdir(one), ["model.safetensors"])
        _, h = self.header(os.path.join(one, "model.safetensors"))
        self.assertEqual(h["__metadata__"], {"format": "mine", "note": "n"})
        # A user "total_size" is refused where an index holds the writer's own (which
        # the loader checks); with one shard it is a key like any other.
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.save_sharded(tensors, self.dir, max_shard_size="256B",
                                   metadata={"total_size": "7"})
        self.assertEqual((cm.exception.code, str(cm.exception)),
                         ("invalid_argument", "index metadata key 'total_size' is reserved"))
        shardload.save_sharded(tensors, one, metadata={"total_size": "7"})
        _, h = self.header(os.path.join(one, "model.safetensors"))
        self.assertEqual(h["__metadata__"], {"format": "pt", "total_size": "7"})

    # -------------------------------------------------------------- verify

    def recorded(self, path, name):
        with shardload.safe_open(path) as f:
            return f.metadata()["shardload.xxh3." + name]

    def flip_byte(self, path, name, byte=0):
        """xor the low bit of byte `byte` of stored tensor `name` in a single file."""
        n, h = self.header(path)
        offset = 8 + n + h[name]["data_offsets"][0] + byte
        with open(path, "r+b") as f:
            f.seek(offset)
            b = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([b ^ 1]))

    def at(self, path, name):
        """" at bytes [a, b)": where stored tensor `name` lies in the file at `path`."""
        n, h = self.header(path)
        begin, end = h[name]["data_offsets"]
        return " at bytes [%d, %d)" % (8 + n + begin, 8 + n + end)

    def xxh3_of(self, name, tensor):
        """The XXH3 a checksummed save records for `tensor` (hex)."""
        p = self.path("hash-%s.safetensors" % name)
        shardload.save_file({name: tensor}, p, checksums=True)
        return self.recorded(p, name)

    def test_verify_single_file(self):
        w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        v = torch.arange(5, dtype=torch.int64)
        path = self.path("c.safetensors")
        shardload.save_file({"w": w, "v": v}, path, metadata={"format": "pt"}, checksums=True)
        with shardload.safe_open(path) as f:
            md = f.metadata()
        self.assertEqual(sorted(md), ["format", "shardload.xxh3.v", "shardload.xxh3.w"])
        self.assertRegex(md["shardload.xxh3.w"], "^[0-9a-f]{16}$")
        self.assertTrue(torch.equal(shardload.load_file(path, verify=True)["w"], w))

        self.flip_byte(path, "w")
        bad = w.clone()
        bad.view(torch.uint8)[0, 0] ^= 1
        message = "c.safetensors: tensor 'w'%s: XXH3 of its 48 bytes is %s, recorded %s" % (
            self.at(path, "w"), self.xxh3_of("w", bad), md["shardload.xxh3.w"])
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(path, verify=True)
        self.assertEqual((cm.exception.code, str(cm.exception)), ("data_loss", message))
        # Without verify the changed bytes load: verify is what catches them.
        self.assertTrue(torch.equal(shardload.load_file(path)["w"], bad))
        for io in ("pread", "mmap"):
            with self.assertRaises(shardload.ShardloadError) as cm:
                shardload.load_file(path, verify=True, io=io, threads=1)
            self.assertEqual(str(cm.exception), message)

        with shardload.safe_open(path, verify=True) as f:
            self.assertTrue(torch.equal(f.get_tensor("v"), v))
            self.assertTrue(torch.equal(f.get_slice("v")[1:3], v[1:3]))
            for read in (lambda: f.get_tensor("w"), lambda: f.get_slice("w")[2:3],
                         f.get_tensors):
                with self.assertRaises(shardload.ShardloadError) as cm:
                    read()
                self.assertEqual((cm.exception.code, str(cm.exception)), ("data_loss", message))
        with shardload.safe_open(path) as f:  # no verify: positional reads, no check
            self.assertTrue(torch.equal(f.get_tensor("w"), bad))

    def test_verify_warns_when_nothing_is_recorded(self):
        # verify=True on a checkpoint without XXH3 records (a Hugging Face download)
        # checks nothing: each entry point says so once, and still loads.
        import warnings as w
        plain, summed = self.path("plain.safetensors"), self.path("summed.safetensors")
        src = Tiny()
        shardload.save_file(src.state_dict(), plain)
        shardload.save_file(src.state_dict(), summed, checksums=True)
        want = ("verify=True: %s records no XXH3 hash for its tensors, so none is checked "
                "(save_file/save_sharded(..., checksums=True) or shardload reshard record "
                "them)" % plain)
        calls = (lambda p: shardload.load_file(p, verify=True),
                 lambda p: shardload.safe_open(p, "pt", verify=True).close(),
                 lambda p: shardload.load_model(Tiny(), p, verify=True),
                 lambda p: shardload.load_state_dict_into(Tiny(), p, verify=True))
        for call in calls:
            with w.catch_warnings(record=True) as caught:
                w.simplefilter("always")
                call(plain)
            said = [str(x.message) for x in caught if issubclass(x.category, shardload.ShardloadWarning)]
            self.assertEqual(said, [want])
            with w.catch_warnings(record=True) as caught:
                w.simplefilter("always")
                call(summed)
                shardload.load_file(plain)  # no verify: nothing to say
            self.assertEqual([x for x in caught if issubclass(x.category, shardload.ShardloadWarning)], [])

    def test_verify_load_model(self):
        src = Tiny()
        path = self.path("m.safetensors")
        shardload.save_file(src.state_dict(), path, checksums=True)
        dst = Tiny()
        self.assertEqual(shardload.load_model(dst, path, verify=True), (set(), []))
        self.assertTrue(torch.equal(dst.proj.bias, src.proj.bias))
        recorded = self.recorded(path, "proj.bias")
        self.flip_byte(path, "proj.bias", byte=5)
        bad = src.proj.bias.detach().clone()
        bad.view(torch.uint8)[5] ^= 1
        message = ("m.safetensors: tensor 'proj.bias'%s: XXH3 of its 16 bytes is %s, recorded %s"
                   % (self.at(path, "proj.bias"), self.xxh3_of("proj.bias", bad), recorded))
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_model(Tiny(), path, verify=True)
        self.assertEqual((cm.exception.code, str(cm.exception)), ("data_loss", message))
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_state_dict_into(Tiny(), path, verify=True)
        self.assertEqual(str(cm.exception), message)
        # The fallback path (a non-contiguous parameter) verifies as well.
        odd = Tiny()
        odd.proj.weight = torch.nn.Parameter(torch.zeros(4, 4).t())
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_state_dict_into(odd, path, verify=True)
        self.assertEqual(str(cm.exception), message)
        dst = Tiny()
        shardload.load_model(dst, path)  # no verify: loads the changed bytes
        self.assertTrue(torch.equal(dst.proj.bias, bad))

    def test_verify_sharded(self):
        tensors = {"layer.%d.w" % i: torch.full((64,), float(i)) for i in range(3)}
        shardload.save_sharded(tensors, self.dir, max_shard_size="256B", checksums=True)
        with open(self.path("model.safetensors.index.json")) as f:
            index = json.load(f)["metadata"]
        self.assertEqual(sorted(index), ["shardload.xxh3.layer.0.w", "shardload.xxh3.layer.1.w",
                                         "shardload.xxh3.layer.2.w", "total_size"])
        shard2 = self.path("model-00002-of-00003.safetensors")
        _, h = self.header(shard2)
        self.assertEqual(h["__metadata__"], {"format": "pt", "shardload.xxh3.layer.1.w":
                                             index["shardload.xxh3.layer.1.w"]})
        loaded = shardload.load_file(self.dir, verify=True)
        self.assertTrue(torch.equal(loaded["layer.2.w"], tensors["layer.2.w"]))
        self.flip_byte(shard2, "layer.1.w", byte=7)
        bad = tensors["layer.1.w"].clone()
        bad.view(torch.uint8)[7] ^= 1
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(self.dir, verify=True)
        self.assertEqual((cm.exception.code, str(cm.exception)), (
            "data_loss", "model-00002-of-00003.safetensors: tensor 'layer.1.w'%s: XXH3 of its 256 "
            "bytes is %s, recorded %s" % (self.at(shard2, "layer.1.w"),
                                          self.xxh3_of("layer.1.w", bad),
                                          index["shardload.xxh3.layer.1.w"])))

    # -------------------------------------------------------------- safe_open edge cases

    @needs_reference
    def test_safe_open_edge_cases_match_reference(self):
        tensors = {"s": torch.tensor(3.5), "i": torch.tensor(7, dtype=torch.int64),
                   "e": torch.zeros(0, 4), "e2": torch.zeros(3, 0),
                   "w": torch.arange(12.0).reshape(3, 4), "v": torch.arange(5)}
        path = self.path("edge.safetensors")
        st.save_file(tensors, path)

        def outcome(fn):
            try:
                r = fn()
            except Exception as e:  # the reference's and ours must fail alike
                return ("error", type(e).__name__, str(e))
            return ("ok", r.dtype, list(r.shape), r.tolist())

        keys = [(), Ellipsis, slice(None), 0, -1, 2, 7, slice(1, 3), slice(5, 10), slice(0, 0),
                slice(None, None, 2), slice(None, None, -1), slice(1, 2, 0), (slice(None), 1),
                (slice(None), slice(1, 3)), (0, 0), (-1, slice(1, 3)), (Ellipsis, 1),
                (slice(None), slice(None), slice(None)), (slice(None, None, -1), 0),
                (slice(None), slice(0, 2, 0)), (0, slice(None, None, -1)), slice(3, 1), -6,
                [0, 1], torch.tensor([0]), (slice(None), torch.tensor([1])), None, (None, 0),
                1.5, True, False, (True, 0), (0, True)]
        with shardload.safe_open(path) as ours, st_safe_open(path, framework="pt") as ref:
            self.assertEqual(ours.keys(), ref.keys())
            # File order; the reference orders tensors that share data_offsets (the
            # empty ones, [0, 0]) by hash, differently per process: compare the
            # offsets sequence and the sets.
            _, h = self.header(path)
            offsets = lambda names: [h[n]["data_offsets"] for n in names]
            self.assertEqual(offsets(ours.offset_keys()), offsets(ref.offset_keys()))
            self.assertEqual(sorted(ours.offset_keys()), sorted(ref.offset_keys()))
            self.assertEqual(ours.metadata(), ref.metadata())
            ours_all, ref_all = ours.get_tensors(), ref.get_tensors()
            self.assertEqual(list(ours_all), ours.offset_keys())
            self.assertEqual(sorted(ours_all), sorted(ref_all))
            for name in tensors:
                self.assertTrue(same(ours_all[name], ref_all[name]), name)
                self.assertEqual(outcome(lambda: ours.get_tensor(name)),
                                 outcome(lambda: ref.get_tensor(name)), name)
                self.assertEqual(ours.get_slice(name).get_shape(),
                                 ref.get_slice(name).get_shape(), name)
                self.assertEqual(ours.get_slice(name).get_dtype(),
                                 ref.get_slice(name).get_dtype(), name)
                for key in keys:
                    self.assertEqual(outcome(lambda: ours.get_slice(name)[key]),
                                     outcome(lambda: ref.get_slice(name)[key]), (name, key))

    # -------------------------------------------------------------- safe_open

    def test_safe_open_and_slices(self):
        w = torch.arange(60, dtype=torch.float32).reshape(6, 10)
        v = torch.arange(5, dtype=torch.int64)
        shardload.save_file({"w": w, "v": v}, self.path("s.safetensors"),
                            metadata={"format": "pt"})
        with shardload.safe_open(self.path("s.safetensors"), framework="pt") as f:
            self.assertEqual(f.keys(), ["v", "w"])
            self.assertEqual(f.metadata(), {"format": "pt"})
            self.assertTrue(torch.equal(f.get_tensor("w"), w))
            s = f.get_slice("w")
            self.assertEqual(s.get_shape(), [6, 10])
            self.assertEqual(s.get_dtype(), "F32")
            cases = [(slice(1, 3),), (slice(None), slice(2, 5)), (2,), (slice(0, 6, 2),),
                     (slice(4, 100),), (slice(3, 3),), (-1, slice(1, 4)), (Ellipsis, 1)]
            for key in cases:
                self.assertTrue(torch.equal(s[key if len(key) > 1 else key[0]],
                                            w[key if len(key) > 1 else key[0]]), key)
            self.assertTrue(torch.equal(f.get_slice("v")[1:4], v[1:4]))
            with self.assertRaises(shardload.ShardloadError) as cm:
                f.get_tensor("nope")
            self.assertEqual(str(cm.exception), "tensor 'nope' is not in the checkpoint")
        # framework: safetensors' names for torch are taken; a non-str is a TypeError.
        for framework in ("torch", "pytorch"):
            with shardload.safe_open(self.path("s.safetensors"), framework=framework) as f:
                self.assertTrue(torch.equal(f.get_tensor("v"), v))
        with self.assertRaises(TypeError) as cm:
            shardload.safe_open(self.path("s.safetensors"), framework=None)
        self.assertEqual(str(cm.exception), "framework must be a str such as \"pt\", not NoneType")
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.safe_open(self.path("s.safetensors"), framework="flax")
        self.assertEqual((cm.exception.code, str(cm.exception)),
                         ("unimplemented", "framework 'flax' is not supported (only \"pt\", "
                          "\"torch\", \"pytorch\", \"np\" or \"numpy\")"))

    @needs_reference
    def test_safe_open_matches_reference(self):
        tensors = sample_tensors()
        st.save_file(tensors, self.path("r.safetensors"), metadata={"a": "b"})
        with shardload.safe_open(self.path("r.safetensors"), framework="pt") as ours, \
                st_safe_open(self.path("r.safetensors"), framework="pt") as ref:
            self.assertEqual(sorted(ours.keys()), sorted(ref.keys()))
            self.assertEqual(ours.metadata(), ref.metadata())
            for k in ref.keys():
                self.assertTrue(same(ours.get_tensor(k), ref.get_tensor(k)), k)
            self.assertTrue(torch.equal(ours.get_slice("f32")[1:3],
                                        ref.get_slice("f32")[1:3]))
            self.assertTrue(torch.equal(ours.get_slice("i32")[:, 1:3],
                                        ref.get_slice("i32")[:, 1:3]))

    # -------------------------------------------------------------- CUDA tensors
    # (torch with a CUDA device: the GPU machine's torch 2.11; skipped elsewhere)

    @needs_cuda
    @needs_reference
    def test_cuda_load_file_matches_reference(self):
        tensors = sample_tensors()
        st.save_file(tensors, self.path("g.safetensors"), metadata={"k": "v"})
        ref = st.load_file(self.path("g.safetensors"), device="cuda:0")
        for device in ("cuda:0", "cuda", 0, torch.device("cuda", 0)):
            ours = shardload.load_file(self.path("g.safetensors"), device=device)
            self.assertEqual(sorted(ours), sorted(ref))
            for name, t in ref.items():
                self.assertEqual(ours[name].device, torch.device("cuda", 0), (device, name))
                self.assertTrue(same(ours[name].cpu(), t.cpu()), (device, name))
                if ours[name].numel():
                    self.assertEqual(ours[name].data_ptr() % 256, 0, name)

    @needs_cuda
    @needs_reference
    def test_cuda_sharded_matches_reference(self):
        g = torch.Generator().manual_seed(3)
        tensors = {"layer.%d.w" % i: torch.randn(64, 33, generator=g).bfloat16()
                   for i in range(12)}
        tensors["head"] = torch.randn(100, generator=g)
        os.makedirs(self.path("sh"))
        shardload.save_sharded(tensors, self.path("sh"), max_shard_size=20000)
        ours = shardload.load_file(self.path("sh"), device="cuda:0")
        for shard in sorted(os.listdir(self.path("sh"))):
            if not shard.endswith(".safetensors"):
                continue
            for name, t in st.load_file(os.path.join(self.path("sh"), shard),
                                        device="cuda:0").items():
                self.assertTrue(torch.equal(ours[name], t), name)
        self.assertEqual(sorted(ours), sorted(tensors))

    @needs_cuda
    def test_cuda_zero_copy_lifetime(self):
        lib = _lib.lib()
        gc.collect()
        before = lib.sl_live_arena_sets()
        t = torch.arange(1 << 20, dtype=torch.float32)
        shardload.save_file({"x": t, "y": t * 2}, self.path("z.safetensors"))
        loaded = shardload.load_file(self.path("z.safetensors"), device="cuda:0")
        self.assertEqual(lib.sl_live_arena_sets(), before + 1)
        x = loaded["x"]
        del loaded
        gc.collect()
        self.assertEqual(lib.sl_live_arena_sets(), before + 1)  # x still holds the arena
        self.assertTrue(torch.equal(x.cpu(), t))
        self.assertTrue(torch.equal(x * 2, (t * 2).cuda()))  # usable by kernels
        del x
        gc.collect()
        torch.cuda.synchronize()
        self.assertEqual(lib.sl_live_arena_sets(), before)
        # Many loads and frees: the device arenas do not pile up.
        free_before = torch.cuda.mem_get_info()[0]
        for _ in range(20):
            d = shardload.load_file(self.path("z.safetensors"), device="cuda:0")
            del d
            gc.collect()
        torch.cuda.synchronize()
        self.assertEqual(lib.sl_live_arena_sets(), before)
        self.assertGreater(torch.cuda.mem_get_info()[0], free_before - (64 << 20))

    @needs_cuda
    @needs_reference
    def test_cuda_safe_open_matches_reference(self):
        tensors = sample_tensors()
        st.save_file(tensors, self.path("r.safetensors"))
        with shardload.safe_open(self.path("r.safetensors"), framework="pt",
                                 device="cuda:0") as ours, \
                st_safe_open(self.path("r.safetensors"), framework="pt",
                             device="cuda:0") as ref:
            for k in ref.keys():
                a, b = ours.get_tensor(k), ref.get_tensor(k)
                self.assertEqual(a.device, b.device, k)
                self.assertTrue(same(a.cpu(), b.cpu()), k)
            for key in (slice(1, 3), (slice(None), slice(1, 4))):
                a, b = ours.get_slice("f32")[key], ref.get_slice("f32")[key]
                self.assertEqual(a.device, b.device)
                self.assertTrue(torch.equal(a, b))

    @needs_cuda
    def test_cuda_load_model_in_place_and_tied(self):
        src = Tiny()
        shardload.save_file(src.state_dict(), self.path("m.safetensors"))
        dst = Tiny().cuda()
        ptrs = {k: v.data_ptr() for k, v in dst.state_dict().items()}
        self.assertEqual(shardload.load_model(dst, self.path("m.safetensors"), device="cuda:0"),
                         (set(), []))
        for k, v in dst.state_dict().items():
            self.assertEqual(v.device, torch.device("cuda", 0), k)
            self.assertTrue(torch.equal(v.cpu(), src.state_dict()[k]), k)
            self.assertEqual(v.data_ptr(), ptrs[k], k)  # written into the module's storage
        tied_src = Tiny(tie=True)
        shardload.save_model(tied_src, self.path("t.safetensors"))
        tied = Tiny(tie=True).cuda()
        self.assertEqual(shardload.load_model(tied, self.path("t.safetensors"), device="cuda"),
                         (set(), []))
        self.assertEqual(tied.head.weight.data_ptr(), tied.embed.weight.data_ptr())
        self.assertTrue(torch.equal(tied.head.weight.cpu(), tied_src.embed.weight))

    @needs_cuda
    @needs_reference
    def test_cuda_load_model_matches_reference(self):
        src = Tiny(tie=True)
        st.save_model(src, self.path("ref.safetensors"))
        ours, ref = Tiny(tie=True).cuda(), Tiny(tie=True).cuda()
        self.assertEqual(shardload.load_model(ours, self.path("ref.safetensors"), device="cuda:0"),
                         tuple(st.load_model(ref, self.path("ref.safetensors"), device="cuda:0")))
        for k, v in ref.state_dict().items():
            self.assertTrue(torch.equal(ours.state_dict()[k], v), k)

    @needs_cuda
    def test_cuda_tied_scratch_is_made_on_the_device(self):
        # Entries sharing memory load through scratch tensors (_load_into_state), which
        # must be on the entries' device.
        path = self.write_raw("t.safetensors", {"a": ("F32", [2], struct.pack("<2f", 1, 2)),
                                                "b": ("F32", [2], struct.pack("<2f", 3, 4))})
        tied = torch.nn.Module()
        tied.register_buffer("a", torch.zeros(2, device="cuda:0"))
        tied.register_buffer("b", tied.a)
        original, devices = shardload._torch_empty, []

        def recording(shape, dtype, device="cpu"):
            devices.append(torch.device(device))
            return original(shape, dtype, device)

        shardload._torch_empty = recording
        try:
            shardload.load_state_dict_into(tied, path, device="cuda:0")
        finally:
            shardload._torch_empty = original
        self.assertEqual(devices, [torch.device("cuda", 0)] * 2)
        self.assertEqual(tied.a.cpu().tolist(), [3.0, 4.0])

    @needs_cuda
    def test_cuda_cast_on_device(self):
        g = torch.Generator().manual_seed(11)
        w = torch.randn(257, 129, generator=g)
        w[0, :4] = torch.tensor([0.0, -0.0, float("inf"), 1e-40])  # zero signs, inf, subnormal
        shardload.save_file({"lin.weight": w, "lin.bias": torch.randn(257, generator=g)},
                            self.path("c.safetensors"))

        class Lin(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(129, 257)

        for dtype in (torch.bfloat16, torch.float16):
            dst = Lin().to(device="cuda:0", dtype=dtype)
            report = shardload.load_state_dict_into(dst, self.path("c.safetensors"),
                                                    device="cuda:0", allow_cast=True)
            self.assertEqual(sorted(report["matched"]), ["lin.bias", "lin.weight"])
            want = w.to(dtype)  # torch's own rounding (nearest even)
            got = dst.lin.weight.detach().cpu()
            self.assertEqual(got.view(torch.int16).tolist(), want.view(torch.int16).tolist(),
                             dtype)

    @needs_cuda
    def test_cuda_verify_detects_a_flipped_byte(self):
        w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        path = self.path("c.safetensors")
        shardload.save_file({"w": w}, path, checksums=True)
        self.assertTrue(torch.equal(shardload.load_file(path, device="cuda:0",
                                                        verify=True)["w"].cpu(), w))
        recorded = self.recorded(path, "w")
        self.flip_byte(path, "w")
        bad = w.clone()
        bad.view(torch.uint8)[0, 0] ^= 1
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_file(path, device="cuda:0", verify=True)
        self.assertEqual((cm.exception.code, str(cm.exception)), (
            "data_loss", "c.safetensors: tensor 'w'%s: XXH3 of its 48 bytes is %s, recorded %s"
            % (self.at(path, "w"), self.xxh3_of("w", bad), recorded)))

    # -------------------------------------------------------------- load_model

    def test_load_model_strict_in_place(self):
        src = Tiny()
        shardload.save_file(src.state_dict(), self.path("m.safetensors"))
        dst = Tiny()
        ptrs = {k: v.data_ptr() for k, v in dst.state_dict().items()}
        missing, unexpected = shardload.load_model(dst, self.path("m.safetensors"))
        self.assertEqual((missing, unexpected), (set(), []))
        for k, v in dst.state_dict().items():
            self.assertTrue(torch.equal(v, src.state_dict()[k]), k)
            self.assertEqual(v.data_ptr(), ptrs[k], k)  # written in place

    def test_load_model_zero_size_and_buffers(self):
        class WithEmpty(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(3, 2)
                self.empty = torch.nn.Parameter(torch.zeros(0, 3))
                self.register_buffer("steps", torch.tensor(0, dtype=torch.int64))

        src = WithEmpty()
        src.steps.fill_(41)
        shardload.save_file(src.state_dict(), self.path("e.safetensors"))
        dst = WithEmpty()
        self.assertEqual(shardload.load_model(dst, self.path("e.safetensors")), (set(), []))
        self.assertEqual(int(dst.steps), 41)
        self.assertTrue(torch.equal(dst.lin.weight, src.lin.weight))

    def test_load_model_missing_and_unexpected(self):
        src = Tiny()
        state = src.state_dict()
        state["extra.weight"] = torch.ones(2)
        del state["proj.bias"]
        shardload.save_file(state, self.path("m.safetensors"))
        dst = Tiny()
        with self.assertRaises(RuntimeError) as cm:
            shardload.load_model(dst, self.path("m.safetensors"))
        self.assertEqual(str(cm.exception),
                         "Error(s) in loading state_dict for Tiny:\n"
                         "    Missing key(s) in state_dict: \"proj.bias\"\n"
                         "    Unexpected key(s) in state_dict: \"extra.weight\"")
        dst = Tiny()
        missing, unexpected = shardload.load_model(dst, self.path("m.safetensors"), strict=False)
        self.assertEqual((missing, unexpected), ({"proj.bias"}, ["extra.weight"]))
        self.assertTrue(torch.equal(dst.proj.weight, src.proj.weight))

    def test_load_model_unexpected_keys_in_reference_order(self):
        # safetensors' load_model lists what torch's load_state_dict reports for
        # load_file's dict: module by module (root first, then children depth first),
        # each module's _extra_state key first, then its keys in file order; tied
        # names the file holds come after. Dtypes spread the keys over the file:
        # F64 first, then F32 by name, I8 last.
        state = Tiny().state_dict()
        state.update({"zz.w": torch.ones(2, dtype=torch.float64),
                      "embed.a": torch.ones(2, dtype=torch.float64),
                      "embed._extra_state": torch.ones(1), "embed.x.y": torch.ones(1),
                      "proj.extra": torch.ones(3), "aa.w": torch.ones(2, dtype=torch.int8)})
        path = self.path("u.safetensors")
        shardload.save_file(state, path)
        with shardload.safe_open(path) as f:
            self.assertEqual([k for k in f.offset_keys() if k not in Tiny().state_dict()],
                             ["embed.a", "zz.w", "embed._extra_state", "embed.x.y",
                              "proj.extra", "aa.w"])
        expected = ["zz.w", "aa.w", "embed._extra_state", "embed.a", "embed.x.y", "proj.extra"]
        for tie, tail in ((False, []), (True, ["head.weight"])):
            got = shardload.load_model(Tiny(tie), path, strict=False)
            self.assertEqual(got, (set(), expected + tail), tie)
            if st is not None:
                self.assertEqual(got, tuple(st.load_model(Tiny(tie), path, strict=False)), tie)

    def test_load_state_dict_into_strict_writes_nothing_in_place(self):
        # The direct path matches every name before reading: a strict load with a
        # missing key leaves the module as it was. The fallback is torch's
        # load_state_dict, which writes the keys that match and then raises.
        src = Tiny()
        state = src.state_dict()
        del state["proj.bias"]
        path = self.path("s.safetensors")
        shardload.save_file(state, path)
        dst = Tiny()
        before = {k: v.clone() for k, v in dst.state_dict().items()}
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_state_dict_into(dst, path)
        self.assertEqual((cm.exception.code, str(cm.exception)), (
            "invalid_argument",
            "Error(s) in loading state_dict: Missing key(s) in state_dict: \"proj.bias\"."))
        for k, v in dst.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)
        odd = Tiny()
        odd.proj.weight = torch.nn.Parameter(torch.zeros(4, 4).t())  # not contiguous
        with self.assertRaises(RuntimeError) as cm:
            shardload.load_state_dict_into(odd, path)
        self.assertNotIsInstance(cm.exception, shardload.ShardloadError)
        self.assertTrue(str(cm.exception).startswith(
            "Error(s) in loading state_dict for Tiny:\n\tMissing key(s) in state_dict: "
            "\"proj.bias\"."), str(cm.exception))
        self.assertTrue(torch.equal(odd.embed.weight, src.embed.weight))

    def test_load_model_size_mismatch(self):
        # As safetensors' load_model: torch's own error (in either strict), raised after
        # the keys that fit were loaded.
        src = Tiny()
        state = src.state_dict()
        state["proj.bias"] = torch.zeros(5)
        path = self.path("m.safetensors")
        shardload.save_file(state, path)
        want = ("Error(s) in loading state_dict for Tiny:\n\tsize mismatch for proj.bias: "
                "copying a param with shape torch.Size([5]) from checkpoint, the shape in "
                "current model is torch.Size([4]).")
        for strict in (True, False):
            dst = Tiny()
            with self.assertRaises(RuntimeError) as cm:
                shardload.load_model(dst, path, strict=strict)
            self.assertEqual(str(cm.exception), want)
            self.assertTrue(torch.equal(dst.proj.weight, src.proj.weight))
            if st is not None:
                with self.assertRaises(RuntimeError) as ref:
                    st.load_model(Tiny(), path, strict=strict)
                self.assertEqual(str(ref.exception), want)

    def test_load_model_extra_state_goes_to_set_extra_state(self):
        # An _extra_state entry is a value get_extra_state made, not module storage:
        # only torch's load_state_dict hands it to set_extra_state (both paths).
        class WithExtra(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(2, 2)
                self.v = 0

            def get_extra_state(self):
                return torch.tensor(self.v)

            def set_extra_state(self, state):
                self.v = int(state)

        src = WithExtra()
        src.v = 5
        path = self.path("x.safetensors")
        shardload.save_file(src.state_dict(), path)
        dst = WithExtra()
        self.assertEqual(shardload.load_model(dst, path), (set(), []))
        self.assertEqual(dst.v, 5)
        self.assertTrue(torch.equal(dst.lin.weight, src.lin.weight))
        into = WithExtra()
        report = shardload.load_state_dict_into(into, path)
        self.assertEqual((into.v, report["missing"], report["unexpected"]), (5, [], []))
        if st is not None:
            ref = WithExtra()
            st.load_model(ref, path)
            self.assertEqual(ref.v, 5)

    def test_extra_state_that_is_not_a_tensor(self):
        # get_extra_state may return any object (a dict here), which no .safetensors
        # file holds: load_model reports the entry missing as torch's load_state_dict
        # does (safetensors' load_model fails on it with an AttributeError), and
        # save_model refuses it with save_file's ValueError.
        class WithDict(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(2, 2)
                self.cfg = {"a": 1}

            def get_extra_state(self):
                return self.cfg

            def set_extra_state(self, state):
                self.cfg = state

        src = WithDict()
        path = self.path("d.safetensors")
        shardload.save_file({k: v for k, v in src.state_dict().items()
                             if isinstance(v, torch.Tensor)}, path)
        with self.assertRaises(RuntimeError) as cm:
            shardload.load_model(WithDict(), path)
        with self.assertRaises(RuntimeError) as torch_cm:
            WithDict().load_state_dict({k: v for k, v in src.state_dict().items()
                                        if isinstance(v, torch.Tensor)})
        self.assertIn('Missing key(s) in state_dict: "_extra_state"', str(cm.exception))
        self.assertIn('Missing key(s) in state_dict: "_extra_state"', str(torch_cm.exception))
        dst = WithDict()
        self.assertEqual(shardload.load_model(dst, path, strict=False), ({"_extra_state"}, []))
        self.assertTrue(torch.equal(dst.lin.weight, src.lin.weight))
        with self.assertRaises(ValueError) as cm:
            shardload.save_model(src, self.path("e.safetensors"))
        self.assertEqual(str(cm.exception), "Key `_extra_state` is invalid, expected "
                         "torch.Tensor but received <class 'dict'>")
        self.assertFalse(os.path.exists(self.path("e.safetensors")))

    def test_tied_weights(self):
        src = Tiny(tie=True)
        shardload.save_model(src, self.path("t.safetensors"))
        with shardload.safe_open(self.path("t.safetensors")) as f:
            self.assertNotIn("head.weight", f.keys())
            self.assertEqual(f.metadata()["head.weight"], "embed.weight")
        dst = Tiny(tie=True)
        self.assertEqual(shardload.load_model(dst, self.path("t.safetensors")), (set(), []))
        self.assertTrue(torch.equal(dst.head.weight, src.embed.weight))
        self.assertEqual(dst.head.weight.data_ptr(), dst.embed.weight.data_ptr())
        # An untied model is not filled through the file's tie note (safetensors ties
        # through the model only): strict reports the entry missing.
        with self.assertRaises(RuntimeError) as cm:
            shardload.load_model(Tiny(), self.path("t.safetensors"))
        self.assertEqual(str(cm.exception), "Error(s) in loading state_dict for Tiny:\n"
                         "    Missing key(s) in state_dict: \"head.weight\"")
        untied = Tiny()
        before = untied.head.weight.detach().clone()
        self.assertEqual(shardload.load_model(untied, self.path("t.safetensors"), strict=False),
                         ({"head.weight"}, []))
        self.assertTrue(torch.equal(untied.head.weight, before))
        self.assertTrue(torch.equal(untied.embed.weight, src.embed.weight))
        if st is not None:
            self.assertEqual(tuple(st.load_model(Tiny(), self.path("t.safetensors"),
                                                 strict=False)), ({"head.weight"}, []))
        # load_state_dict_into (the library's own API) still fills it from the note.
        into = Tiny()
        report = shardload.load_state_dict_into(into, self.path("t.safetensors"))
        self.assertEqual(report["missing"], [])
        self.assertTrue(torch.equal(into.head.weight, src.embed.weight))

    @needs_reference
    def test_tied_weights_match_reference(self):
        src = Tiny(tie=True)
        st.save_model(src, self.path("ref.safetensors"))
        ours, ref = Tiny(tie=True), Tiny(tie=True)
        self.assertEqual(shardload.load_model(ours, self.path("ref.safetensors")),
                         tuple(st.load_model(ref, self.path("ref.safetensors"))))
        for k, v in ref.state_dict().items():
            self.assertTrue(torch.equal(ours.state_dict()[k], v), k)

    def test_load_model_converts_dtypes_like_torch(self):
        # An fp16 checkpoint into a default fp32 model (the loader converts), and an F32
        # value for an int64 buffer (torch's copy_ converts): as model.load_state_dict.
        class WithSteps(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(3, 2)
                self.register_buffer("steps", torch.tensor(0, dtype=torch.int64))

        src = WithSteps().half()
        src.steps = torch.tensor(7, dtype=torch.int64)
        path = self.path("h.safetensors")
        shardload.save_file(src.state_dict(), path)
        ours, ref = WithSteps(), WithSteps()
        self.assertEqual(shardload.load_model(ours, path), (set(), []))
        ref.load_state_dict(shardload.load_file(path))
        for k, v in ref.state_dict().items():
            self.assertTrue(same(ours.state_dict()[k], v), k)
        self.assertEqual(ours.lin.weight.dtype, torch.float32)
        state = {k: v.float() for k, v in src.state_dict().items()}
        shardload.save_file(state, self.path("f.safetensors"))
        ours = WithSteps().bfloat16()
        self.assertEqual(shardload.load_model(ours, self.path("f.safetensors")), (set(), []))
        self.assertEqual((int(ours.steps), ours.steps.dtype), (7, torch.int64))
        self.assertTrue(torch.equal(ours.lin.weight, state["lin.weight"].bfloat16()))

    def test_load_model_runs_module_load_hooks(self):
        # BatchNorm's _load_from_state_dict fills in a missing num_batches_tracked; a
        # post hook runs once: both are skipped by writing into storage directly.
        src = torch.nn.BatchNorm1d(2)
        src.running_mean.fill_(3)
        state = {k: v for k, v in src.state_dict().items() if "num_batches" not in k}
        shardload.save_file(state, self.path("bn.safetensors"))
        dst = torch.nn.BatchNorm1d(2)
        self.assertEqual(shardload.load_model(dst, self.path("bn.safetensors")), (set(), []))
        self.assertTrue(torch.equal(dst.running_mean, src.running_mean))
        if hasattr(torch.nn.Module, "register_load_state_dict_post_hook"):
            calls = []
            m = Tiny()
            m.register_load_state_dict_post_hook(lambda module, keys: calls.append(module))
            shardload.save_file(Tiny().state_dict(), self.path("t.safetensors"))
            self.assertEqual(shardload.load_model(m, self.path("t.safetensors")), (set(), []))
            self.assertEqual(len(calls), 1)
        # load_state_dict_into keeps writing in place (its own report, renames, errors):
        # hooks are load_model's concern.
        ddp = {"module." + k: v for k, v in src.state_dict().items()}
        shardload.save_file(ddp, self.path("ddp_bn.safetensors"))
        dst = torch.nn.BatchNorm1d(2)
        ptr = dst.running_mean.data_ptr()
        report = shardload.load_state_dict_into(dst, self.path("ddp_bn.safetensors"),
                                                renames=["s/^module\\.//"])
        self.assertEqual(len(report["renamed"]), len(ddp))
        self.assertEqual(dst.running_mean.data_ptr(), ptr)
        self.assertTrue(torch.equal(dst.running_mean, src.running_mean))

    def test_load_model_assign_fills_a_meta_model(self):
        # A model built on the meta device takes the loaded tensors themselves (torch's
        # load_state_dict(assign=True)); tied weights stay tied through the tie note.
        src = Tiny(tie=True)
        path = self.path("a.safetensors")
        shardload.save_model(src, path)
        if not hasattr(torch.nn.Module, "register_load_state_dict_post_hook") or \
                "assign" not in __import__("inspect").signature(
                    torch.nn.Module.load_state_dict).parameters:
            with self.assertRaises(shardload.ShardloadError) as cm:
                shardload.load_model(Tiny(tie=True), path, assign=True)
            self.assertEqual(cm.exception.code, "unimplemented")
            return
        with torch.device("meta"):
            dst = Tiny(tie=True)
        self.assertEqual(shardload.load_model(dst, path, assign=True), (set(), []))
        for k, v in src.state_dict().items():
            got = dst.state_dict()[k]
            self.assertEqual(got.device.type, "cpu", k)
            self.assertTrue(torch.equal(got, v), k)
        self.assertEqual(dst.head.weight.data_ptr(), dst.embed.weight.data_ptr())
        self.assertIsInstance(dst.embed.weight, torch.nn.Parameter)
        # One Parameter, as before the load (an optimizer must not see it twice).
        self.assertIs(dst.head.weight, dst.embed.weight)
        self.assertEqual(len(list(dst.parameters())), len(list(src.parameters())))

    def test_load_model_assign_keeps_the_loaded_member_of_a_tie(self):
        # A checkpoint holding only the second name of a tie (no save_model note): the
        # tie ends up on the loaded tensor, not on the first name's old one; with both
        # names stored the last in module order wins, as torch's copying load does. A
        # meta model finds its ties by object (it has no memory to compare).
        if "assign" not in __import__("inspect").signature(
                torch.nn.Module.load_state_dict).parameters:
            self.skipTest("load_state_dict(assign=True) needs torch 2.1")
        src = Tiny()
        rest = {k: v for k, v in src.state_dict().items() if not k.startswith(("embed", "head"))}
        only_head = self.path("head.safetensors")
        shardload.save_file(dict(rest, **{"head.weight": src.head.weight.detach()}), only_head)
        only_embed = self.path("embed.safetensors")
        shardload.save_file(dict(rest, **{"embed.weight": src.embed.weight.detach()}),
                            only_embed)
        cases = [(only_head, src.head.weight), (only_embed, src.embed.weight)]
        for path, want in cases:
            for device in ("cpu", "meta"):
                with torch.device(device):
                    dst = Tiny(tie=True)
                self.assertEqual(shardload.load_model(dst, path, assign=True), (set(), []),
                                 (path, device))
                self.assertIs(dst.head.weight, dst.embed.weight)
                self.assertEqual(dst.embed.weight.device.type, "cpu")
                self.assertTrue(torch.equal(dst.embed.weight, want), (path, device))
        both = self.path("both.safetensors")
        shardload.save_file(src.state_dict(), both)
        dst = Tiny(tie=True)
        report = shardload.load_state_dict_into(dst, both, assign=True)
        self.assertEqual(report["missing"], [])
        self.assertIs(dst.head.weight, dst.embed.weight)
        self.assertTrue(torch.equal(dst.embed.weight, src.head.weight))
        ref = Tiny(tie=True)
        ref.load_state_dict(src.state_dict())
        self.assertTrue(torch.equal(ref.embed.weight, dst.embed.weight))

    def test_load_model_one_element_into_a_scalar_like_torch(self):
        # torch loads a [1] value into a 0-dim parameter (its 0.3 compatibility rule).
        class Scalar(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.p = torch.nn.Parameter(torch.tensor(0.0))

        path = self.path("s.safetensors")
        shardload.save_file({"p": torch.tensor([5.0])}, path)
        ours, ref = Scalar(), Scalar()
        self.assertEqual(shardload.load_model(ours, path), (set(), []))
        ref.load_state_dict(shardload.load_file(path))
        self.assertEqual(ours.p.shape, torch.Size([]))
        self.assertEqual(float(ours.p), float(ref.p))
        self.assertEqual(float(ours.p), 5.0)

    def test_lazy_modules_load_through_torch(self):
        # A lazy module's uninitialized parameters take their shapes in torch's
        # load_state_dict; the direct path must not touch them.
        class Lazy(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.LazyLinear(2)

        path = self.path("l.safetensors")
        weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        shardload.save_file({"lin.weight": weight, "lin.bias": torch.ones(2)}, path)
        m = Lazy()
        report = shardload.load_state_dict_into(m, path)
        self.assertEqual(sorted(report["matched"]), ["lin.bias", "lin.weight"])
        self.assertTrue(torch.equal(m.lin.weight, weight))
        m = Lazy()
        self.assertEqual(shardload.load_model(m, path), (set(), []))
        self.assertTrue(torch.equal(m.lin.weight, weight))

    def test_load_model_tie_to_part_of_a_tensor(self):
        # The model ties "head" to the first rows of "embed": save_model writes embed
        # and the note head -> embed; loading it back reports nothing missing.
        class Part(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Parameter(torch.randn(8, 4))
                self.register_buffer("head", self.embed.data[:6])

        src = Part()
        shardload.save_model(src, self.path("p.safetensors"))
        dst = Part()
        self.assertEqual(shardload.load_model(dst, self.path("p.safetensors")), (set(), []))
        self.assertTrue(torch.equal(dst.embed, src.embed))
        self.assertTrue(torch.equal(dst.head, src.embed[:6]))
        if st is not None:
            ref = Part()
            self.assertEqual(tuple(st.load_model(ref, self.path("p.safetensors"))),
                             (set(), []))

    def test_load_state_dict_into_renames(self):
        src = Tiny()
        shardload.save_file({"module." + k: v for k, v in src.state_dict().items()},
                            self.path("ddp.safetensors"))
        dst = Tiny()
        report = shardload.load_state_dict_into(dst, self.path("ddp.safetensors"),
                                                renames=["s/^module\\.//"])
        self.assertEqual(len(report["renamed"]), 4)
        self.assertEqual(report["missing"], [])
        self.assertTrue(torch.equal(dst.embed.weight, src.embed.weight))


    # -------------------------------------------------------------- host memory pool

    def test_constants_match_the_c_header(self):
        # The ctypes layer repeats values shardload.h defines; they must agree.
        with open(os.path.join("capi", "shardload.h")) as f:
            header = f.read()
        m = re.search(r"#define SL_HOST_POOL_DEFAULT_MAX_CACHED_BYTES \((\d+)ull << (\d+)\)",
                      header)
        self.assertIsNotNone(m)
        self.assertEqual(_lib.DEFAULT_MAX_CACHED_BYTES, int(m.group(1)) << int(m.group(2)))
        with shardload.HostMemoryPool() as pool:
            self.assertEqual(pool.max_cached_bytes, _lib.DEFAULT_MAX_CACHED_BYTES)
        m = re.search(r'sl_version: the library version, "([0-9.]+)"', header)
        self.assertIsNotNone(m)
        self.assertEqual(shardload.version(), m.group(1))
        lists = dict(re.findall(r"SL_REPORT_([A-Z]+) = (\d+)", header))
        self.assertEqual(lists, {"MATCHED": "0", "MISSING": "1", "UNEXPECTED": "2",
                                 "MISMATCHED": "3", "RENAMED": "4", "WARNINGS": "5"})
        for name, value in lists.items():
            self.assertEqual(getattr(_lib, "REPORT_" + name), int(value), name)

    def test_a_loads_warnings_reach_python_as_shardload_warnings(self):
        # What a load reports about how it ran (SL_REPORT_WARNINGS: a CUDA load staging
        # through pageable memory because pinning was refused, which needs a GPU or the
        # fake runtime to happen) is raised as a ShardloadWarning by every load path,
        # once the load succeeded. The library's lists are read for real (empty for a
        # host load); one line is added to them here.
        path = self.path("w.safetensors")
        shardload.save_file({"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.ones(2)},
                            path, checksums=True)
        real = _lib.report_warnings
        seen = []

        def with_a_line(report):
            self.assertTrue(report.value)  # the load asked for its report
            lines = real(report)
            seen.append(list(lines))
            return lines + ["pinned staging memory was refused (test)"]

        loads = {
            "load_file": lambda: shardload.load_file(path),
            # (on cpu only a verified read goes through the loader)
            "get_tensor": lambda: shardload.safe_open(path, "pt", verify=True).get_tensor("weight"),
            "load_model": lambda: shardload.load_model(torch.nn.Linear(3, 2), path),
        }
        for what, load in loads.items():
            with self.subTest(what):
                seen.clear()
                _lib.report_warnings = with_a_line
                try:
                    with warnings_caught() as caught:
                        load()
                finally:
                    _lib.report_warnings = real
                self.assertEqual(seen, [[]])
                said = [w for w in caught if w.category is shardload.ShardloadWarning]
                self.assertEqual([str(w.message) for w in said],
                                 ["pinned staging memory was refused (test)"])
                # Attributed to the caller (here, the lambda in this file), not to a
                # frame inside the package, whatever the load path's depth.
                self.assertEqual(os.path.abspath(said[0].filename), os.path.abspath(__file__))

    def test_package_version_and_library_version_check(self):
        self.assertEqual(shardload.__version__, shardload.version())
        for ok in ["0.1.12", "0.1.13", "0.2.0", "1.0.0"]:
            _lib.check_library_version(ok, "/x/libshardload.so")  # no error
        for old in ["0.1.11", "0.1.9", "0.0.12", "0.1", "garbage", "", " 0.1.12", "1_0.0.0",
                    "0.1.12rc1"]:
            with self.assertRaises(shardload.ShardloadError) as cm:
                _lib.check_library_version(old, "/x/libshardload.so")
            self.assertEqual(cm.exception.code, "failed_precondition")
            self.assertEqual(str(cm.exception),
                             "/x/libshardload.so is shardload %s; this Python package (0.1.12) "
                             "needs 0.1.12 or newer (use the libshardload.so that came with "
                             "it)" % old)

    def _run_python(self, code, cwd, env_library):
        import subprocess
        env = {k: v for k, v in os.environ.items() if k not in ("SHARDLOAD_LIBRARY",
                                                                "LD_LIBRARY_PATH")}
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(shardload.__file__)))
        env["SHARDLOAD_LIBRARY"] = env_library
        return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                              capture_output=True, text=True)

    def test_relative_library_path_is_the_file_checked(self):
        # SHARDLOAD_LIBRARY=libshardload.so from the library's folder: that file, not a
        # search of LD_LIBRARY_PATH and the loader cache for the bare name.
        real = os.path.realpath(_lib._explicit_path)
        r = self._run_python("import shardload; from shardload import _lib; "
                             "print(shardload.version(), _lib._lib._name)",
                             os.path.dirname(real), os.path.basename(real))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), [shardload.version(), real])

    def test_library_that_cannot_load_is_a_shardload_error(self):
        bad = self.path("libshardload.so")
        with open(bad, "w") as f:
            f.write("not a shared library\n")
        r = self._run_python(
            "import shardload\n"
            "try:\n    shardload.version()\n"
            "except shardload.ShardloadError as e:\n    print(e.code, '|', e)\n",
            self.dir, bad)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("failed_precondition | cannot load %s: " % bad),
                        r.stdout)

    def _stub_library(self, name, c_source):
        import subprocess
        src, lib = self.path(name + ".c"), self.path(name + ".so")
        with open(src, "w") as f:
            f.write(c_source)
        r = subprocess.run(["cc", "-shared", "-fPIC", "-o", lib, src], capture_output=True,
                           text=True)
        if r.returncode != 0:
            self.skipTest("no C compiler to build a stub library: %s" % r.stderr)
        return lib

    def test_older_or_foreign_library_is_refused_on_first_use(self):
        # Through lib() itself, in a fresh interpreter: an older library is named with
        # its version; one without the functions the package binds is not usable.
        probe = ("import shardload\n"
                 "try:\n    shardload.cuda_device_count()\n"
                 "except shardload.ShardloadError as e:\n    print(e.code, '|', e)\n")
        old = self._stub_library("old", 'const char* sl_version(void) { return "0.1.4"; }\n')
        r = self._run_python(probe, self.dir, old)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(),
                         "failed_precondition | %s is shardload 0.1.4; this Python package "
                         "(0.1.12) needs 0.1.12 or newer (use the libshardload.so that came "
                         "with it)" % old)
        foreign = self._stub_library("foreign", "int unrelated(void) { return 1; }\n")
        r = self._run_python(probe, self.dir, foreign)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(
            "failed_precondition | %s is not a usable libshardload.so: " % foreign), r.stdout)
        self.assertIn("sl_version", r.stdout)

    def test_host_pool_reuses_memory_with_reference_bytes(self):
        tensors = sample_tensors()
        path = self.path("p.safetensors")
        (st.save_file if st is not None else shardload.save_file)(tensors, path)
        expected = st.load_file(path) if st is not None else tensors
        with shardload.HostMemoryPool() as pool:
            self.assertEqual(pool.cached_bytes, 0)
            first = shardload.load_file(path, pool=pool)
            ptrs = {k: v.data_ptr() for k, v in first.items() if v.numel()}
            self.assertEqual(pool.cached_bytes, 0)  # lent out
            for v in first.values():  # scribble: the next load must not show it
                if v.numel():
                    v.reshape(-1).view(torch.uint8).fill_(0xAB)
            del first, v
            gc.collect()
            self.assertEqual(pool.cached_bytes, 2 << 20)  # one 2 MiB-rounded arena
            second = shardload.load_file(path, pool=pool)
            self.assertEqual(pool.cached_bytes, 0)
            self.assertEqual({k: v.data_ptr() for k, v in second.items() if v.numel()}, ptrs)
            self.assertEqual(list(second), list(expected))
            for name in expected:
                self.assertTrue(same(second[name], expected[name]), name)
            del second
            gc.collect()
            self.assertEqual(pool.cached_bytes, 2 << 20)
            pool.trim()
            self.assertEqual(pool.cached_bytes, 0)
            third = shardload.load_file(path, pool=pool)  # nothing cached: fresh memory
            for name in expected:
                self.assertTrue(same(third[name], expected[name]), name)

    def test_host_pool_other_loaders(self):
        t = torch.arange(64, dtype=torch.float32)
        path = self.path("o.safetensors")
        shardload.save_file({"t": t}, path)
        with open(path, "rb") as f:
            data = f.read()
        with shardload.HostMemoryPool() as pool:
            ptr = shardload.load_file(path, pool=pool)["t"].data_ptr()
            gc.collect()
            self.assertEqual(pool.cached_bytes, 2 << 20)
            x = shardload.load(data, pool=pool)["t"]
            self.assertEqual(x.data_ptr(), ptr)
            self.assertTrue(torch.equal(x, t))
            del x
            gc.collect()
            with shardload.safe_open(path, verify=True, pool=pool) as f:  # loader reads
                y = f.get_tensor("t")
                self.assertEqual(y.data_ptr(), ptr)
                self.assertTrue(torch.equal(y, t))
                del y
                gc.collect()
                self.assertEqual(f.get_tensors()["t"].data_ptr(), ptr)
            gc.collect()
            # load_state_dict_into's fallback (a non-contiguous parameter) loads into a
            # temporary pooled arena and gives it back.
            src = Tiny()
            mpath = self.path("m.safetensors")
            shardload.save_file(src.state_dict(), mpath)
            pool.trim()
            odd = Tiny()
            odd.proj.weight = torch.nn.Parameter(torch.zeros(4, 4).t())
            shardload.load_state_dict_into(odd, mpath, pool=pool)
            gc.collect()
            self.assertTrue(torch.equal(odd.proj.weight, src.proj.weight))
            self.assertEqual(pool.cached_bytes, 2 << 20)
            dst = Tiny()
            self.assertEqual(shardload.load_model(dst, mpath, pool=pool), (set(), []))
            self.assertTrue(torch.equal(dst.head.weight, src.head.weight))

    def test_host_pool_tensors_outlive_the_pool(self):
        lib = _lib.lib()
        t = torch.arange(100, dtype=torch.int64)
        path = self.path("l.safetensors")
        shardload.save_file({"t": t}, path)
        gc.collect()
        before = lib.sl_live_arena_sets()
        with shardload.HostMemoryPool(max_cached_bytes=64 << 20) as pool:
            x = shardload.load_file(path, pool=pool)["t"]
        gc.collect()
        self.assertTrue(pool.closed)
        self.assertEqual(lib.sl_live_arena_sets(), before + 1)
        self.assertTrue(torch.equal(x, t))
        del x
        gc.collect()
        self.assertEqual(lib.sl_live_arena_sets(), before)

    def test_host_pool_errors(self):
        path = self.path("e.safetensors")
        shardload.save_file({"t": torch.ones(2)}, path)
        pool = shardload.HostMemoryPool(max_cached_bytes=0)
        shardload.load_file(path, pool=pool)  # dropped at once
        gc.collect()
        self.assertEqual(pool.cached_bytes, 0)  # a limit of 0 keeps nothing
        self.assertEqual(repr(pool), "HostMemoryPool(max_cached_bytes=0, cached_bytes=0)")
        pool.close()
        pool.close()  # idempotent
        self.assertEqual(repr(pool), "HostMemoryPool(closed)")
        for use in (lambda: pool.cached_bytes, pool.trim,
                    lambda: shardload.load_file(path, pool=pool),
                    lambda: shardload.safe_open(path, pool=pool),
                    lambda: shardload.load_state_dict_into(Tiny(), path, pool=pool)):
            with self.assertRaises(ValueError) as cm:
                use()
            self.assertEqual(str(cm.exception), "HostMemoryPool is closed")
        for use, got in ((lambda: shardload.load_file(path, pool="big"), "str"),
                         (lambda: shardload.safe_open(path, pool=1), "int")):
            with self.assertRaises(TypeError) as cm:
                use()
            self.assertEqual(str(cm.exception),
                             "pool must be a shardload.HostMemoryPool or None, got " + got)
        for bad, kind, message in (
                (-1, ValueError, "max_cached_bytes must be between 0 and 2**64 - 1, got -1"),
                (1 << 64, ValueError,
                 "max_cached_bytes must be between 0 and 2**64 - 1, got %d" % (1 << 64)),
                (1.5, TypeError, "max_cached_bytes must be an int, got float"),
                (True, TypeError, "max_cached_bytes must be an int, got bool")):
            with self.assertRaises(kind) as cm:
                shardload.HostMemoryPool(max_cached_bytes=bad)
            self.assertEqual(str(cm.exception), message)

    # -------------------------------------------------------------- black-box findings

    def test_modules_whose_state_dict_is_not_their_storage_load_through_torch(self):
        # A state_dict that returns copies (an overridden state_dict, state-dict hooks)
        # or leaves a name out: writing into its tensors would load nothing. Such
        # modules go through torch's load_state_dict, which reads no state_dict.
        path = self.path("hook.safetensors")
        shardload.save_file({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, path)

        def zeroed_linear():
            m = torch.nn.Linear(2, 2)
            with torch.no_grad():
                m.weight.zero_()
                m.bias.zero_()
            return m

        def copy_hook(module, sd, prefix, local_metadata):
            for k in list(sd):
                sd[k] = sd[k].detach().clone()
            return sd

        def drop_hook(module, sd, prefix, local_metadata):
            sd.pop(prefix + "bias", None)
            return sd

        def with_hook(hook):
            def make():
                m = zeroed_linear()
                m._register_state_dict_hook(hook)
                return m
            return make

        def with_instance_state_dict():
            # No hook and no override on the class: only the check that each entry
            # is the module's own tensor finds these copies.
            m = zeroed_linear()
            plain = m.state_dict
            m.state_dict = lambda *a, **k: type(plain())(
                (n, v.detach().clone()) for n, v in plain(*a, **k).items())
            return m

        makers = {"copy hook": with_hook(copy_hook), "drop hook": with_hook(drop_hook),
                  "instance state_dict": with_instance_state_dict}
        if hasattr(torch.nn.Module, "register_state_dict_post_hook"):
            def with_post_hook():
                m = zeroed_linear()
                m.register_state_dict_post_hook(
                    lambda mod, sd, prefix, lm: sd.update({k: v.clone()
                                                           for k, v in sd.items()}))
                return m
            makers["post hook"] = with_post_hook
        if hasattr(torch.nn.Module, "register_state_dict_pre_hook"):
            def with_pre_hook():
                m = zeroed_linear()
                m.register_state_dict_pre_hook(lambda mod, prefix, keep_vars: None)
                return m
            makers["pre hook"] = with_pre_hook
        for label, make in makers.items():
            for strict in (True, False):
                m = make()
                self.assertEqual(shardload.load_model(m, path, strict=strict), (set(), []),
                                 label)
                self.assertTrue(torch.equal(m.weight.detach(), torch.ones(2, 2)), label)
                self.assertTrue(torch.equal(m.bias.detach(), torch.ones(2)), label)
                m = make()
                report = shardload.load_state_dict_into(m, path, strict=strict)
                self.assertEqual((report["matched"], report["missing"], report["unexpected"]),
                                 (["bias", "weight"], [], []), label)
                self.assertTrue(torch.equal(m.weight.detach(), torch.ones(2, 2)), label)
                self.assertTrue(torch.equal(m.bias.detach(), torch.ones(2)), label)
                if st is not None:
                    ref = make()
                    self.assertEqual(tuple(st.load_model(ref, path, strict=strict)),
                                     (set(), []), label)
                    self.assertTrue(torch.equal(ref.weight.detach(), m.weight.detach()))

        class SaveFP32(torch.nn.Module):
            """bf16 weights, checkpointed in fp32 by an overridden state_dict."""

            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(2, 2).bfloat16()
                with torch.no_grad():
                    self.lin.weight.zero_()
                    self.lin.bias.zero_()

            def state_dict(self, *a, **k):
                sd = super().state_dict(*a, **k)
                return type(sd)((n, v.float()) for n, v in sd.items())

        fp32 = self.path("fp32.safetensors")
        shardload.save_file({"lin.weight": torch.ones(2, 2), "lin.bias": torch.ones(2)}, fp32)
        m = SaveFP32()
        self.assertEqual(shardload.load_model(m, fp32), (set(), []))
        self.assertTrue(torch.equal(m.lin.weight.float(), torch.ones(2, 2)))
        m = SaveFP32()
        shardload.load_state_dict_into(m, fp32, allow_cast=True)
        self.assertTrue(torch.equal(m.lin.weight.float(), torch.ones(2, 2)))
        self.assertEqual(m.lin.weight.dtype, torch.bfloat16)
        # Modules whose state_dict is their storage (tied weights, BatchNorm's buffers,
        # a non-persistent buffer) still take the direct path: a strict load with an
        # unexpected key raises the library's error, before writing anything.
        class NonPersistent(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(2, 2)
                self.register_buffer("scratch", torch.zeros(3), persistent=False)

        # spectral_norm's state-dict hook only adds a version to the metadata.
        for module in (Tiny(tie=True), torch.nn.BatchNorm1d(2), NonPersistent(),
                       torch.nn.utils.spectral_norm(torch.nn.Linear(2, 2))):
            state = module.state_dict(keep_vars=True)
            self.assertTrue(shardload._state_is_module_storage(module, state))
            extra = self.path("extra.safetensors")
            shardload.save_file(dict({k: v.detach().clone() for k, v in state.items()},
                                     extra_key=torch.zeros(1)), extra)
            with self.assertRaises(shardload.ShardloadError) as cm:
                shardload.load_state_dict_into(module, extra)
            self.assertEqual(cm.exception.code, "invalid_argument")

    def test_direct_loads_bump_the_autograd_version(self):
        # Writing a parameter in place is an in-place change to autograd: a backward
        # through a graph that saved the old weight must raise, as after torch's
        # load_state_dict, instead of computing gradients with the new weight.
        torch.manual_seed(0)
        path = self.path("v.safetensors")
        shardload.save_file(torch.nn.Linear(3, 3).state_dict(), path)

        def loads():
            yield "torch", lambda m: m.load_state_dict(shardload.load_file(path))
            yield "load_model", lambda m: shardload.load_model(m, path)
            yield "load_state_dict_into", lambda m: shardload.load_state_dict_into(m, path)

        for label, load in loads():
            m = torch.nn.Linear(3, 3)
            loss = (m(torch.randn(2, 3, requires_grad=True)) ** 2).sum()
            before = m.weight._version
            load(m)
            self.assertGreater(m.weight._version, before, label)
            with self.assertRaises(RuntimeError) as cm:
                loss.backward()
            self.assertIn("modified by an inplace operation", str(cm.exception), label)
        # Tied weights, and a load in inference mode: bumped too.
        tiny = self.path("tiny.safetensors")
        shardload.save_model(Tiny(tie=True), tiny)
        m = Tiny(tie=True)
        versions = {k: v._version for k, v in m.state_dict(keep_vars=True).items()}
        with torch.inference_mode():
            shardload.load_model(m, tiny)
        for k, v in m.state_dict(keep_vars=True).items():
            self.assertGreater(v._version, versions[k], k)
        # Tensors made in inference mode keep no version: loaded all the same (in
        # inference mode: outside it they are refused, as torch refuses them).
        with torch.inference_mode():
            m = torch.nn.Linear(3, 3)
            shardload.load_state_dict_into(m, path)
        self.assertTrue(torch.equal(m.weight, shardload.load_file(path)["weight"]))
        # A strict load that fails matching writes nothing and bumps nothing.
        m = torch.nn.Linear(3, 4)
        before = m.weight._version
        with self.assertRaises(shardload.ShardloadError):
            shardload.load_state_dict_into(m, path)
        self.assertEqual(m.weight._version, before)

    def test_tie_notes_never_fill_an_inexact_view(self):
        # A buffer that is a transposed view of a parameter: safetensors' save_model
        # fails with torch's view error (it flattens each member of a shared storage),
        # and so does save_model here, instead of dropping the view with a tie note.
        class Transposed(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.randn(3, 3))
                self.register_buffer("wt", self.w.data.t())

        src = Transposed()
        out = self.path("t.safetensors")
        with self.assertRaises(RuntimeError) as cm:
            shardload.save_model(src, out)
        self.assertIn("view size is not compatible with input tensor's size and stride",
                      str(cm.exception))
        self.assertFalse(os.path.exists(out))
        if st is not None:
            with self.assertRaises(RuntimeError) as ref:
                st.save_model(src, self.path("r.safetensors"))
            self.assertEqual(str(ref.exception), str(cm.exception))
        # A file with such a note (as shardload wrote them before): filling "wt" from
        # "w" would write w's values through the transposed view, transposing w.
        # The entry is left missing instead, as torch leaves it for that file.
        shardload.save_file({"w": src.w.detach()}, out, metadata={"wt": "w"})
        dst = Transposed()
        report = shardload.load_state_dict_into(dst, out, strict=False)
        self.assertEqual((report["matched"], report["missing"]), (["w"], ["wt"]))
        self.assertTrue(torch.equal(dst.w.detach(), src.w.detach()))
        self.assertTrue(torch.equal(dst.wt, src.w.detach().t()))
        with self.assertRaises(RuntimeError):
            shardload.load_state_dict_into(Transposed(), out)
        # load_model refuses such a model as safetensors' does: its view error.
        with self.assertRaises(RuntimeError) as cm:
            shardload.load_model(dst, out)
        self.assertIn("view size is not compatible with input tensor's size and stride",
                      str(cm.exception))
        if st is not None:
            with self.assertRaises(RuntimeError) as ref:
                st.load_model(dst, out)
            self.assertEqual(str(ref.exception), str(cm.exception))
        # The same on the direct path: a conjugate view (contiguous, so written in
        # place) filled from the note would conjugate the parameter under it.
        class Conjugate(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.p = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
                self.register_buffer("pc", self.p.data.conj())

        z = torch.tensor([1 + 2j, 3 - 1j, -0.5 + 1j], dtype=torch.complex64)
        shardload.save_file({"p": z}, out, metadata={"pc": "p"})
        dst = Conjugate()
        report = shardload.load_state_dict_into(dst, out, strict=False)
        self.assertEqual((report["matched"], report["missing"]), (["p"], ["pc"]))
        self.assertTrue(torch.equal(dst.p.detach(), z))
        # Exact ties and untied models are still filled from the notes.
        shardload.save_file({"p": z}, out, metadata={"pc": "p", "q": "p"})

        class Pair(torch.nn.Module):
            def __init__(self, tie):
                super().__init__()
                self.p = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
                self.q = self.p if tie else torch.nn.Parameter(torch.zeros(3, dtype=z.dtype))
                self.register_buffer("pc", self.p.data.conj())

        for tie in (True, False):
            dst = Pair(tie)
            report = shardload.load_state_dict_into(dst, out, strict=False)
            self.assertEqual(report["missing"], ["pc"], tie)
            self.assertTrue(torch.equal(dst.p.detach(), z) and torch.equal(dst.q.detach(), z))

    def test_get_slice_list_keys_index_like_torch(self):
        # A list holding a slice, Ellipsis, None, a tensor or a sequence indexes one
        # dimension per item, as a tuple (torch's rule for short lists, which
        # safetensors follows); other lists are one index.
        import warnings
        full = torch.arange(24.0).reshape(4, 3, 2)
        path = self.path("l.safetensors")
        shardload.save_file({"a": full}, path)
        keys = [[0, 1], [1, 2], [slice(0, 2), 1], [0, slice(None)], [[0, 1]],
                [Ellipsis, 1], [None, 0], [True, False, True, False], [0], [-1],
                [torch.tensor(1), 0], [[0, 1], [1, 2]], [(0, 1)], [slice(1, 3), [0, 2]],
                [0, [0, 2]], [[True, False, True, False]], [[]], [], [0] * 33,
                [slice(1, None, 2)]]
        with shardload.safe_open(path) as f:
            for key in keys:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    want = full[key]
                    got = f.get_slice("a")[key]
                self.assertEqual(got.shape, want.shape, key)
                self.assertTrue(torch.equal(got, want), key)
            for key in ([slice(None)] * 4, [5], [slice(None)] * 32):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with self.assertRaises(Exception) as want:
                        full[key]
                    with self.assertRaises(Exception) as got:
                        f.get_slice("a")[key]
                self.assertEqual((type(got.exception), str(got.exception)),
                                 (type(want.exception), str(want.exception)), key)
        if st is not None:
            with st_safe_open(path, "pt") as ref, shardload.safe_open(path) as f:
                for key in keys:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self.assertTrue(torch.equal(f.get_slice("a")[key],
                                                    ref.get_slice("a")[key]), key)

    def test_backend_keyword_like_reference(self):
        # safetensors 0.8's backend= ("mmap" | "pread") on load_file, safe_open and
        # load_model: the io mode of that name, validated with the reference's errors.
        path = self.path("b.safetensors")
        tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(5)}
        shardload.save_file(tensors, path)
        for backend in ("mmap", "pread"):
            loaded = shardload.load_file(path, backend=backend)
            self.assertTrue(all(torch.equal(loaded[k], v) for k, v in tensors.items()))
            with shardload.safe_open(path, "pt", backend=backend) as f:
                self.assertEqual(sorted(f.get_tensors()), ["a", "b"])
                self.assertTrue(torch.equal(f.get_tensor("a"), tensors["a"]))
            missing, unexpected = shardload.load_model(torch.nn.Module(), path, strict=False,
                                                       backend=backend)
            self.assertEqual((missing, sorted(unexpected)), (set(), ["a", "b"]))
            self.assertEqual(shardload._backend_io(backend), backend)
        self.assertEqual(shardload._backend_io(shardload._NO_BACKEND, "direct"), "direct")
        cases = [("bad", shardload.ShardloadError,
                  'backend "bad" is invalid (expected one of: "mmap", "pread")'),
                 ("auto", shardload.ShardloadError,
                  'backend "auto" is invalid (expected one of: "mmap", "pread")'),
                 (None, TypeError, "argument 'backend': 'None' is not an instance of 'str'"),
                 (1, TypeError, "argument 'backend': 'int' object is not an instance of 'str'")]
        for backend, kind, message in cases:
            calls = [lambda: shardload.load_file(path, backend=backend),
                     lambda: shardload.safe_open(path, "pt", backend=backend),
                     lambda: shardload.load_model(torch.nn.Module(), path, backend=backend)]
            refs = [] if st is None else [
                lambda: st.load_file(path, backend=backend),
                lambda: st_safe_open(path, "pt", backend=backend),
                lambda: st.load_model(torch.nn.Module(), path, backend=backend)]
            for call in calls:
                with self.assertRaises(kind) as cm:
                    call()
                self.assertEqual(str(cm.exception), message)
            for call in refs:
                with self.assertRaises(Exception) as cm:
                    call()
                self.assertEqual(str(cm.exception), message)
        with self.assertRaises(ValueError) as cm:
            shardload.load_file(path, io="direct", backend="pread")
        self.assertEqual(str(cm.exception),
                         "backend='pread' and io='direct' disagree: give one of them")
        self.assertEqual(sorted(shardload.load_file(path, io="pread", backend="pread")),
                         ["a", "b"])

    def test_threads_are_checked_before_the_c_call(self):
        # The C API takes an int: 2**32 + 3 would wrap to 3. Checked in Python for
        # every function that takes threads.
        path = self.path("t.safetensors")
        shardload.save_file({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, path)
        calls = [lambda t: shardload.load_file(path, threads=t),
                 lambda t: shardload.load_state_dict_into(torch.nn.Linear(2, 2), path,
                                                          threads=t),
                 lambda t: shardload.load_state_dict_into(torch.nn.Linear(2, 2), path,
                                                          threads=t, renames=["s/^x//"])]
        for bad, kind, message in (
                (2 ** 32, ValueError, "threads must be between 0 and 256, got 4294967296"),
                (2 ** 32 + 3, ValueError, "threads must be between 0 and 256, got 4294967299"),
                (-2 ** 32 + 2, ValueError,
                 "threads must be between 0 and 256, got -4294967294"),
                (257, ValueError, "threads must be between 0 and 256, got 257"),
                (-1, ValueError, "threads must be between 0 and 256, got -1"),
                (True, TypeError, "threads must be an int, got bool"),
                (2.9, TypeError, "threads must be an int, got float"),
                ("4", TypeError, "threads must be an int, got str")):
            for call in calls:
                with self.assertRaises(kind) as cm:
                    call(bad)
                self.assertEqual(str(cm.exception), message)
        goods = [0, 1, 256]
        try:
            import numpy
            goods.append(numpy.int64(8))  # an integer of another type, as int() took it
        except ImportError:
            pass
        for good in goods:
            for call in calls:
                call(good)

    def test_max_shard_size_parses_like_huggingface_hub(self):
        # Strings with a TB/GB/MB/KB unit (any case) as huggingface_hub's
        # parse_size_to_int reads them; binary units and plain numbers as before.
        tensors = {"a%d" % i: torch.zeros(250) for i in range(8)}  # 1000 bytes each

        def shards(size):
            folder = tempfile.mkdtemp(dir=self.dir)
            shardload.save_sharded(tensors, folder, max_shard_size=size)
            return len([n for n in os.listdir(folder) if n.endswith(".safetensors")])

        for size, count in (("1kb", 8), ("1Kb", 8), (" 2KB ", 4), ("2kB", 4), ("3kb", 3),
                            ("2.5KB", 4), ("0.003MB", 3), ("1e0KB", 8), ("4 KB", 2),
                            ("2KiB", 4), ("3000", 3), ("3000B", 3), (3000, 3)):
            self.assertEqual(shards(size), count, size)
        for size, kind, message in (
                ("xKB", ValueError, "Could not parse the size value from 'xKB': could not "
                                    "convert string to float: 'x'"),
                (" KB", ValueError, "Could not parse the size value from 'KB': could not "
                                    "convert string to float: ''"),
                ("-1KB", ValueError, "max_shard_size must be > 0, got '-1KB' (-1000 bytes)"),
                (1500.0, TypeError,
                 "max_shard_size must be an int or a str such as \"5GB\", not float"),
                (None, TypeError,
                 "max_shard_size must be an int or a str such as \"5GB\", not NoneType"),
                (True, TypeError,
                 "max_shard_size must be an int or a str such as \"5GB\", not bool")):
            with self.assertRaises(kind) as cm:
                shards(size)
            self.assertEqual(str(cm.exception), message, size)
        with self.assertRaises(ValueError) as cm:
            shards("1K")
        self.assertEqual(str(cm.exception), "invalid byte size '1K': unknown unit 'K' "
                         "(use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")

    def test_every_invalid_max_shard_size_is_a_value_error(self):
        # One class for every size save_sharded cannot use, whichever parser read it,
        # with a message naming the value; nothing is written.
        tensors = {"a": torch.zeros(4)}
        for size, message in (
                (0, "max_shard_size must be > 0, got 0"),
                (-5, "max_shard_size must be > 0, got -5"),
                ("0", "max_shard_size must be > 0, got '0'"),
                ("0KB", "max_shard_size must be > 0, got '0KB' (0 bytes)"),
                ("abc", "invalid byte size 'abc': expected a number such as 5GB, 2GiB or "
                        "1048576"),
                ("1K", "invalid byte size '1K': unknown unit 'K' (use B, KB, MB, GB, TB, KiB, "
                       "MiB, GiB, TiB)"),
                ("99999999999999999999", "byte size '99999999999999999999' does not fit in "
                                         "64 bits"),
                (2 ** 64, "byte size '18446744073709551616' does not fit in 64 bits")):
            with self.assertRaises(ValueError) as cm:
                shardload.save_sharded(tensors, self.dir, max_shard_size=size)
            self.assertIs(type(cm.exception), ValueError, size)
            self.assertEqual(str(cm.exception), message, size)
        self.assertEqual(os.listdir(self.dir), [])

    def test_inference_tensors_outside_inference_mode(self):
        # torch's load_state_dict writes a module made under torch.inference_mode() and
        # then raises; load_model goes through it, as safetensors' does.
        # load_state_dict_into refuses before writing anything.
        path = self.path("inf.safetensors")
        shardload.save_file({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, path)

        def fresh():
            with torch.inference_mode():
                return torch.nn.Linear(2, 2)

        ref = fresh()
        with self.assertRaises(RuntimeError) as torch_error:
            ref.load_state_dict(shardload.load_file(path))
        self.assertIn("Inplace update to inference tensor outside InferenceMode is not "
                      "allowed", str(torch_error.exception))
        m = fresh()
        with self.assertRaises(RuntimeError) as cm:
            shardload.load_model(m, path)
        self.assertIs(type(cm.exception), RuntimeError)
        self.assertEqual(str(cm.exception), str(torch_error.exception))
        self.assertTrue(torch.equal(m.weight, ref.weight) and torch.equal(m.bias, ref.bias))
        if st is not None:
            with self.assertRaises(RuntimeError) as st_error:
                st.load_model(fresh(), path)
            self.assertEqual(str(st_error.exception), str(cm.exception))
        m = fresh()
        before = m.weight.clone()
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.load_state_dict_into(m, path)
        self.assertEqual((cm.exception.code, str(cm.exception)), (
            "failed_precondition", "Error(s) in loading state_dict: inference tensors cannot "
            "be written outside inference mode: 'weight', 'bias' (made under "
            "torch.inference_mode(); load under it too)"))
        self.assertTrue(torch.equal(m.weight, before))
        # Under inference mode both write them, as torch does.
        with torch.inference_mode():
            for load in (shardload.load_model, shardload.load_state_dict_into):
                m = fresh()
                load(m, path)
                self.assertTrue(torch.equal(m.weight, torch.ones(2, 2)), load.__name__)

    def test_models_with_tensors_not_covering_their_storage_are_refused(self):
        # safetensors' save_model and load_model refuse any entry, or group of entries
        # overlapping in memory, none of which covers its whole storage (parameters
        # slicing one fused tensor, an expanded buffer), with one RuntimeError.
        template = (
            "Error while trying to find names to remove to save state dict, but found no "
            "suitable name to keep for saving amongst: %s. None is covering the entire "
            "storage.Refusing to save/load the model since you could be storing much more "
            "memory than needed. Please refer to "
            "https://huggingface.co/docs/safetensors/torch_shared_tensors for more "
            "information. Or open an issue.")

        class Fused(torch.nn.Module):
            def __init__(self, overlap):
                super().__init__()
                big = torch.zeros(10)
                self.a = torch.nn.Parameter(big[:6] if overlap else big[:5])
                self.b = torch.nn.Parameter(big[4:] if overlap else big[5:])

        class Expanded(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("e", torch.ones(3, 1).expand(3, 4))

        fused = self.path("fused.safetensors")
        shardload.save_file({"a": torch.ones(5), "b": torch.ones(5)}, fused)
        expanded = self.path("expanded.safetensors")
        shardload.save_file({"e": torch.ones(3, 4)}, expanded)
        out = self.path("out.safetensors")
        cases = [
            ("fused", lambda: Fused(False), fused, ["{'a'}"], {}),
            ("fused, overlapping", lambda: Fused(True), fused, ["{'a', 'b'}", "{'b', 'a'}"],
             {}),
            ("expanded", Expanded, expanded, ["{'e'}"], {}),
            ("expanded, not contiguous", Expanded, expanded, ["{'e'}"],
             {"force_contiguous": False})]
        for label, make, path, groups, save_args in cases:
            calls = [("save_model", lambda m, lib: lib.save_model(m, out, **save_args))]
            if not save_args:
                calls.append(("load_model", lambda m, lib: lib.load_model(m, path)))
            for name, call in calls:
                m = make()
                before = {k: v.clone() for k, v in m.state_dict().items()}
                with self.assertRaises(RuntimeError) as cm:
                    call(m, shardload)
                self.assertIs(type(cm.exception), RuntimeError, (label, name))
                self.assertIn(str(cm.exception), [template % g for g in groups], (label, name))
                self.assertFalse(os.path.exists(out), (label, name))
                for k, v in m.state_dict().items():
                    self.assertTrue(torch.equal(v, before[k]), (label, name, k))
                if st is not None:
                    with self.assertRaises(RuntimeError) as ref:
                        call(make(), st)
                    self.assertEqual(str(ref.exception), str(cm.exception), (label, name))

    def test_empty_entries_bump_the_version_like_torch(self):
        # torch's copy_ bumps the version of a tensor with no elements too.
        path = self.path("z.safetensors")
        shardload.save_file({"weight": torch.zeros(3, 0), "bias": torch.ones(3)}, path)

        def loaded_versions(load):
            with warnings_caught():  # "Initializing zero-element tensors is a no-op"
                m = torch.nn.Linear(0, 3)
            before = (m.weight._version, m.bias._version)
            load(m)
            return (m.weight._version - before[0], m.bias._version - before[1])

        expected = loaded_versions(lambda m: m.load_state_dict(shardload.load_file(path)))
        self.assertEqual(expected, (1, 1))
        self.assertEqual(loaded_versions(lambda m: shardload.load_model(m, path)), expected)
        self.assertEqual(loaded_versions(lambda m: shardload.load_state_dict_into(m, path)),
                         expected)

    def test_save_sharded_warns_when_another_checkpoint_would_be_loaded(self):
        folder = self.path("two")
        os.makedirs(folder)
        shardload.save_sharded({"a": torch.ones(4), "b": torch.ones(4)}, folder,
                               max_shard_size=16)
        with warnings_caught() as caught:
            shardload.save_sharded({"c": torch.ones(4)}, folder, prefix="other")
        self.assertEqual([str(w.message) for w in caught if w.category is shardload.ShardloadWarning],
                         [folder + ": also holds model.safetensors.index.json (and more) of "
                          "another checkpoint, so a load of the folder will not load the new "
                          "other.safetensors; load it by its path, " + folder +
                          "/other.safetensors"])
        with warnings_caught() as caught:  # the model checkpoint again: no warning
            shardload.save_sharded({"a": torch.ones(4), "b": torch.ones(4)}, folder,
                                   max_shard_size=16)
        self.assertEqual([w for w in caught if w.category is shardload.ShardloadWarning], [])

    def test_stored_bool_bytes_load_as_zero_or_one_like_torch(self):
        # A bool stored as byte 2 or 255 is True; copying it into a module, torch's
        # copy_ writes 1 (and safetensors' load_model goes through copy_). load_file
        # hands the stored bytes back as they are, as safetensors' load_file does.
        path = self.path("b.safetensors")
        raw = torch.tensor([0, 1, 2, 255], dtype=torch.uint8)
        shardload.save_file({"flags": raw.view(torch.bool)}, path)
        self.assertEqual(shardload.load_file(path)["flags"].view(torch.uint8).tolist(),
                         [0, 1, 2, 255])

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("flags", torch.zeros(4, dtype=torch.bool))

        expected = M()
        expected.load_state_dict(shardload.load_file(path))
        self.assertEqual(expected.flags.view(torch.uint8).tolist(), [0, 1, 1, 1])
        for load in (shardload.load_model, shardload.load_state_dict_into):
            m = M()
            load(m, path)
            self.assertEqual(m.flags.view(torch.uint8).tolist(), [0, 1, 1, 1], load.__name__)
            self.assertEqual(m.flags._version, expected.flags._version, load.__name__)

    def test_bare_cuda_without_a_device_fails_like_load_file(self):
        # A bare "cuda" where torch sees no device: cuda:0, as load_file reads it, and
        # the same ShardloadError, not torch's error from torch.cuda.current_device().
        if torch.cuda.is_available() or shardload.cuda_device_count() > 0:
            self.skipTest("a CUDA device is present")
        path = self.path("w.safetensors")
        shardload.save_file(torch.nn.Linear(2, 2).state_dict(), path)
        with self.assertRaises(shardload.ShardloadError) as ref:
            shardload.load_file(path, device="cuda")
        self.assertTrue(str(ref.exception).startswith("cuda:0: no such CUDA device (0 devices"),
                        str(ref.exception))
        for device in ("cuda", torch.device("cuda")):
            for load in (shardload.load_model, shardload.load_state_dict_into):
                with self.assertRaises(shardload.ShardloadError) as cm:
                    load(torch.nn.Linear(2, 2), path, device=device)
                self.assertEqual((cm.exception.code, str(cm.exception)),
                                 (ref.exception.code, str(ref.exception)), (device, load))

    def test_load_state_dict_into_lists_keys_in_torch_order(self):
        # "missing" in the module's state_dict order, "unexpected" as torch lists them
        # (module by module), not sorted.
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = torch.nn.Linear(2, 2)
                self.head = torch.nn.Linear(2, 2)

        path = self.path("k.safetensors")
        shardload.save_file({"zz": torch.zeros(1), "head.weight": torch.ones(2, 2),
                             "head.extra": torch.zeros(1), "aa": torch.zeros(1)}, path)
        ref = Net().load_state_dict(shardload.load_file(path), strict=False)
        report = shardload.load_state_dict_into(Net(), path, strict=False)
        self.assertEqual((report["missing"], report["unexpected"]),
                         (list(ref.missing_keys), list(ref.unexpected_keys)))
        self.assertEqual((report["missing"], report["unexpected"]),
                         (["proj.weight", "proj.bias", "head.bias"],
                          ["aa", "zz", "head.extra"]))

    def test_empty_tensors_of_dtypes_dlpack_lacks(self):
        # Dtypes exported as bytes and viewed back (U16/U32/U64, BOOL, F8): an empty one
        # with several dimensions came back as torch's (5, 0) byte tensor, strides (1, 1),
        # which view(uint32) refused (RuntimeError "stride(0) must be divisible by 4").
        # Found by the reference differential fuzzer (docs/HARDENING.md).
        names = [("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"), ("BOOL", "bool"),
                 ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")]
        dtypes = [(st_name, getattr(torch, attr)) for st_name, attr in names
                  if hasattr(torch, attr)]
        self.assertIn("BOOL", [d for d, _ in dtypes])
        tensors = {}
        for st_name, dtype in dtypes:
            for shape in [(5, 0), (0, 3), (2, 0, 4), (0,)]:
                tensors["%s_%s" % (st_name, "x".join(map(str, shape)))] = torch.zeros(
                    shape, dtype=dtype)
            tensors[st_name + "_full"] = torch.ones(2, 3, dtype=dtype)
        path = self.path("empty.safetensors")
        shardload.save_file(tensors, path)
        loaded = shardload.load_file(path)
        with shardload.safe_open(path, framework="pt") as f:
            opened = {name: f.get_tensor(name) for name in f.keys()}
            sliced = {name: f.get_slice(name)[0:1] for name in f.keys()}
        for name, t in tensors.items():
            for got in (loaded[name], opened[name]):
                self.assertEqual((got.dtype, tuple(got.shape)), (t.dtype, tuple(t.shape)), name)
                self.assertTrue(same(got, t), name)
            self.assertEqual((sliced[name].dtype, tuple(sliced[name].shape)),
                             (t.dtype, tuple(t[0:1].shape)), name)
        if st is not None:
            ref = st.load_file(path)
            for name in tensors:
                self.assertEqual((loaded[name].dtype, loaded[name].shape),
                                 (ref[name].dtype, ref[name].shape), name)

    def test_strict_index(self):
        # A shard holding a tensor its index does not list: refused by default, naming
        # it; strict_index=False takes it, with a ShardloadWarning, in every reader
        # (huggingface_hub's and transformers' sharded loads read whole shards).
        folder = tempfile.mkdtemp(dir=self.dir)
        tensors = {"a": torch.arange(4.0), "b": torch.arange(4.0) + 10, "c": torch.ones(4)}
        shardload.save_sharded(tensors, folder, max_shard_size=32)  # a+b, c
        index_path = os.path.join(folder, "model.safetensors.index.json")
        with open(index_path) as f:
            index = json.load(f)
        shard = index["weight_map"].pop("b")
        self.assertEqual(shard, index["weight_map"]["a"])
        with open(index_path, "w") as f:
            json.dump(index, f)
        want = ("model.safetensors.index.json: shard '%s' holds tensor 'b', which the index "
                "does not list" % shard)

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                for name in "abc":
                    self.register_buffer(name, torch.zeros(4))

        strict_calls = [lambda **k: shardload.load_file(folder, **k),
                        lambda **k: shardload.safe_open(folder, **k).keys(),
                        lambda **k: shardload.load_model(Net(), folder, **k),
                        lambda **k: shardload.load_state_dict_into(Net(), folder, **k)]
        for call in strict_calls:
            with self.assertRaises(shardload.ShardloadError) as cm:
                call()
            self.assertEqual((cm.exception.code, cm.exception.message),
                             ("invalid_argument", want))
        with warnings_caught() as log:
            loaded = shardload.load_file(folder, strict_index=False)
        self.assertEqual([str(w.message) for w in log], [want])
        self.assertTrue(all(issubclass(w.category, shardload.ShardloadWarning) for w in log))
        for name, t in tensors.items():
            self.assertTrue(torch.equal(loaded[name], t), name)
        with warnings_caught():
            with shardload.safe_open(folder, strict_index=False) as f:
                self.assertEqual(sorted(f.keys()), ["a", "b", "c"])
                self.assertTrue(torch.equal(f.get_tensor("b"), tensors["b"]))
            net = Net()
            self.assertEqual(shardload.load_model(net, folder, strict_index=False),
                             (set(), []))
            self.assertTrue(torch.equal(net.b, tensors["b"]))
            report = shardload.load_state_dict_into(Net(), folder, strict_index=False)
            self.assertEqual((report["missing"], report["unexpected"]), ([], []))

    def test_dimensions_past_int64(self):
        # A zero-element tensor may declare any 64-bit dimension. Past torch's int64 the
        # tensor cannot exist in torch: a ShardloadError naming it (the reference raises
        # torch's TypeError "Overflow when unpacking long long"), from every reader.
        # Up to 2^63 - 1 it loads, also as a dtype exported as bytes, whose byte count
        # (2 * (2^63 - 1)) would not fit (found by fuzz/reference_diff.py).
        def write(dtype, shape):
            h = json.dumps({"x": {"dtype": dtype, "shape": shape,
                                  "data_offsets": [0, 0]}}).encode()
            path = self.path("big.safetensors")
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", len(h)) + h)
            return path

        readers = [lambda p: shardload.load_file(p)["x"],
                   lambda p: shardload.safe_open(p).get_tensor("x"),
                   lambda p: shardload.safe_open(p).get_slice("x")[:]]
        dtypes = ["F32", "I8", "BOOL"] + (["U16"] if hasattr(torch, "uint16") else [])
        for dtype in dtypes:
            for shape, k in [([0, 1 << 63], 1), ([1 << 63, 0], 0), ([0, (1 << 64) - 1], 1)]:
                path = write(dtype, shape)
                for read in readers:
                    with self.assertRaises(shardload.ShardloadError) as cm:
                        read(path)
                    self.assertEqual((cm.exception.code, cm.exception.message),
                                     ("out_of_range",
                                      "tensor 'x': dimension %d (%d) does not fit torch's "
                                      "int64 sizes" % (k, shape[k])), (dtype, shape))
                with shardload.safe_open(path) as f:  # the stored shape, as safetensors
                    self.assertEqual(f.get_slice("x").get_shape(), shape)
            path = write(dtype, [0, (1 << 63) - 1])
            for read in readers:
                t = read(path)
                self.assertEqual((str(t.dtype), tuple(t.shape)),
                                 (str(shardload._torch_dtype(dtype)), (0, (1 << 63) - 1)), dtype)
        if hasattr(torch, "float4_e2m1fn_x2"):  # F4's torch shape halves the last one
            t = shardload.load_file(write("F4", [0, 1 << 63]))["x"]
            self.assertEqual(tuple(t.shape), (0, 1 << 62))
        # Each dimension fits but torch's strides overflow: torch 2.11 refuses
        # [0, 2^40, 2^40] ("Stride calculation overflowed"), and shardload says so with
        # out_of_range, where the reference raises torch's RuntimeError. (Shapes whose
        # running product overflows before the zero, [2^40, 2^40, 0], which torch also
        # refuses, are refused by the format's own size check, as by the reference.)
        shape = [0, 1 << 40, 1 << 40]
        try:
            torch.empty(shape, device="meta")
        except RuntimeError as e:  # torch 2.11
            path = write("F32", shape)
            for read in readers:
                with self.assertRaises(shardload.ShardloadError) as cm:
                    read(path)
                self.assertEqual((cm.exception.code, cm.exception.message),
                                 ("out_of_range", "tensor 'x': shape %s does not fit torch's "
                                  "int64 sizes (%s)" % (shape, str(e).splitlines()[0])))
        else:  # torch 1.13 makes it
            self.assertEqual(tuple(shardload.load_file(write("F32", shape))["x"].shape),
                             tuple(shape))
        # Near 2^62: torch 1.13 makes [0, 3, 2^62 - 10^7] with torch.empty but its
        # reshape fails ("Expected !is_symbolic()"); every reader gives the shape there
        # (torch 2.11: out_of_range, its strides overflow). Found by reference_diff.py.
        shape = [0, 3, (1 << 62) - 10**7]
        path = write("I32", shape)
        try:
            torch.empty(shape, dtype=torch.int32, device="meta")
            want = tuple(shape)
        except RuntimeError:
            want = "out_of_range"
        for read in readers:
            try:
                got = tuple(read(path).shape)
            except shardload.ShardloadError as e:
                got = e.code
            self.assertEqual(got, want)

    def test_unsupported_dtype_errors_name_the_tensor_and_file(self):
        # A dtype the installed torch lacks (F6 in every torch; U16 before 2.3) names
        # the tensor and its shard, as the library's messages do.
        missing = ["F6_E2M3"] + ([] if hasattr(torch, "uint16") else ["U16"])
        for dtype in missing:
            folder = tempfile.mkdtemp(dir=self.dir)
            data = (ctypes.c_uint8 * 8)()
            shape = _lib.shape_array([4])
            views = (_lib.TensorView * 2)(
                _lib.TensorView(b"ok", 2, b"I8", shape, 1, ctypes.addressof(data)),
                _lib.TensorView(b"odd", 3, dtype.encode(), shape, 1, ctypes.addressof(data)))
            _lib.check(_lib.lib().sl_save_sharded(folder.encode(), views, 2, b"4", None,
                                                  None, None, 0))
            with open(os.path.join(folder, "model.safetensors.index.json")) as f:
                shard = json.load(f)["weight_map"]["odd"]
            self.assertRegex(shard, r"^model-0000[12]-of-00002\.safetensors$")
            message = ("%s: tensor 'odd': dtype %s is not supported by torch %s" %
                       (shard, dtype, torch.__version__))
            with shardload.safe_open(folder) as f:
                self.assertEqual(f.get_tensor("ok").tolist(), [0, 0, 0, 0])
                calls = [lambda: f.get_tensor("odd"), lambda: f.get_slice("odd")[0:2],
                         lambda: shardload.load_file(folder)]
                for call in calls:
                    with self.assertRaises(shardload.ShardloadError) as cm:
                        call()
                    self.assertEqual((cm.exception.code, str(cm.exception)),
                                     ("unimplemented", message), dtype)

    def test_load_model_gives_each_dtype_its_own_name(self):
        # load_state_dict_into encodes each dtype's name once per load: entries of
        # different dtypes (smaller ones first, so a wrong name would cast short, not
        # overrun) each keep their own.
        m = torch.nn.Module()
        m.register_buffer("h", torch.zeros(3, dtype=torch.float16))
        m.register_buffer("b", torch.zeros(3, dtype=torch.bool))
        m.register_buffer("bf", torch.zeros(3, dtype=torch.bfloat16))
        m.register_buffer("i8", torch.zeros(3, dtype=torch.int8))
        m.register_buffer("f", torch.zeros(3, dtype=torch.float32))
        m.register_buffer("i64", torch.zeros(3, dtype=torch.int64))
        m.register_buffer("d", torch.zeros(3, dtype=torch.float64))
        src = {"h": torch.tensor([0.5, 1.5, -2.0], dtype=torch.float16),
               "b": torch.tensor([True, False, True]),
               "bf": torch.tensor([3.0, -1.0, 0.25], dtype=torch.bfloat16),
               "i8": torch.tensor([-7, 0, 9], dtype=torch.int8),
               "f": torch.tensor([1.25, -3.5, 7.0]),
               "i64": torch.tensor([1 << 40, -5, 6]),
               "d": torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)}
        shardload.save_file(src, self.path("mixed.safetensors"))
        for load in (lambda: shardload.load_model(m, self.path("mixed.safetensors")),
                     lambda: shardload.load_state_dict_into(m, self.path("mixed.safetensors"))):
            for v in m.state_dict().values():
                v.zero_()
            load()
            for k, v in m.state_dict().items():
                self.assertTrue(same(v, src[k]), k)

    def test_the_package_has_its_own_handle_on_the_python_c_api(self):
        # Another package setting ctypes.pythonapi.PyCapsule_New's types (as some do)
        # changes nothing for load_file, which sets its own on its own handle.
        path = self.path("c.safetensors")
        shardload.save_file({"x": torch.arange(3.0)}, path)
        fn = ctypes.pythonapi.PyCapsule_New
        saved = (fn.restype, fn.argtypes)
        fn.restype, fn.argtypes = ctypes.c_void_p, None
        try:
            got = shardload.load_file(path)
        finally:
            fn.restype, fn.argtypes = saved
        self.assertEqual(got["x"].tolist(), [0.0, 1.0, 2.0])

    def test_a_zero_dimensional_float4_is_refused_in_safetensors_words(self):
        # A 0-dim float4_e2m1fn_x2 has no last dimension to double: stored as F4[] (4 bits)
        # save_file refuses it; a load into such an entry goes through torch.
        if not hasattr(torch, "float4_e2m1fn_x2"):
            self.skipTest("torch %s has no float4_e2m1fn_x2" % torch.__version__)
        s = torch.zeros((), dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
        with self.assertRaises(shardload.ShardloadError) as cm:
            shardload.save_file({"s": s}, self.path("s.safetensors"))
        self.assertEqual(cm.exception.code, "invalid_argument")
        self.assertIn("F4[] is 4 bits", str(cm.exception))
        path = self.write_raw("f4.safetensors", {"s": ("F4", [2], b"\x21")})
        m = torch.nn.Module()
        m.register_buffer("s", s.clone())
        # Its torch shape [1] for a 0-dim entry: torch's load_state_dict takes it.
        self.assertEqual(shardload.load_model(m, path), (set(), []))
        self.assertEqual(m.s.view(torch.uint8).item(), 0x21)

    def test_a_failing_export_raises_and_adopts_nothing(self):
        # load_file's converter checks sl_loaded_export_dlpack's status before it adopts
        # the export (a failed one leaves no tensor to adopt).
        path = self.path("e.safetensors")
        shardload.save_file({"a": torch.arange(3.0), "b": torch.ones(2)}, path)
        real = _lib.lib()

        class Failing:  # the export of the first tensor fails (an index past the end)
            def __getattr__(self, name):
                return getattr(real, name)

            def sl_loaded_export_dlpack(self, loaded, index, flags, out):
                return real.sl_loaded_export_dlpack(loaded, index + 100 * (index == 0),
                                                    flags, out)

        original = _lib.lib
        _lib.lib = lambda: Failing()
        try:
            with self.assertRaises(shardload.ShardloadError) as cm:
                shardload.load_file(path)
        finally:
            _lib.lib = original
        self.assertEqual(cm.exception.code, "out_of_range")

    def test_load_file_adopts_native_dtypes_without_the_general_converter(self):
        # The per-load converter takes a DLPack-native tensor of some bytes straight
        # from the export; _from_loaded handles the rest (no bytes, viewed dtypes).
        shardload.save_file({"f": torch.arange(4.0), "e": torch.zeros(0, 2),
                             "b": torch.tensor([True, False])}, self.path("n.safetensors"))
        original, seen = shardload._from_loaded, []

        def counting(loaded, index, info):
            seen.append(ctypes.string_at(info.name, info.name_len).decode())
            return original(loaded, index, info)

        shardload._from_loaded = counting
        try:
            got = shardload.load_file(self.path("n.safetensors"))
        finally:
            shardload._from_loaded = original
        self.assertEqual(sorted(seen), ["b", "e"])
        self.assertEqual((got["f"].tolist(), got["b"].tolist(), list(got["e"].shape)),
                         ([0.0, 1.0, 2.0, 3.0], [True, False], [0, 2]))

    def test_packed_results_are_made_on_the_device_asked(self):
        # _torch_empty makes float4 results as bytes viewed, on the device asked (meta
        # here: no memory; cuda for a zero-element F4 load or tied scratch).
        if not hasattr(torch, "float4_e2m1fn_x2"):
            self.skipTest("torch %s has no float4_e2m1fn_x2" % torch.__version__)
        for dtype in (torch.float4_e2m1fn_x2, torch.float32):
            t = shardload._torch_empty([2, 3], dtype, "meta")
            self.assertEqual((t.device.type, t.dtype, list(t.shape)), ("meta", dtype, [2, 3]))


if __name__ == "__main__":
    py_junit.main(PythonTest, "python_shardload_test", "torch")
