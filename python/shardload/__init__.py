"""shardload for Python: fast safetensors loading into torch tensors.

API compatible with the ``safetensors.torch`` functions of the same names:

    import shardload
    tensors = shardload.load_file("model.safetensors")            # dict name -> tensor
    tensors = shardload.load_file("/models/llama", device="cuda:0")  # sharded folder
    with shardload.safe_open("model.safetensors", framework="pt") as f:
        w = f.get_tensor("lm_head.weight")
        rows = f.get_slice("embed.weight")[0:16]                 # reads only those rows
    missing, unexpected = shardload.load_model(model, "/models/llama", strict=True)
    shardload.save_file({"w": torch.zeros(3)}, "out.safetensors", metadata={"k": "v"})
    shardload.save_sharded(model.state_dict(), "/ckpt", max_shard_size="5GB")
    shardload.save_file(tensors, "c.safetensors", checksums=True)  # records XXH3s
    tensors = shardload.load_file("c.safetensors", verify=True)     # checks them

Tensors from ``load_file`` are zero-copy views of the loader's arenas, handed over
through DLPack; the arena is freed when the last tensor that uses it is freed, or,
with ``pool=HostMemoryPool()``, kept for the next load to reuse (a server that
reloads or swaps weights skips the kernel's page faults and zeroing):

    pool = shardload.HostMemoryPool(max_cached_bytes=16 << 30)
    sd = shardload.load_file("model.safetensors", pool=pool)
    del sd                                                       # arena -> pool
    sd = shardload.load_file("model.safetensors", pool=pool)     # reuses it

A load can be stopped from another thread with a ``CancelToken`` (``cancel=token``).

numpy arrays without torch (safetensors.numpy's functions; BF16 and F8 through
ml_dtypes where it is installed): ``import shardload.numpy`` (``load_file``, ``load``,
``save_file``, ``save``) and ``safe_open(path, framework="np")``.

The native library is found as described in ``shardload._lib``
(``set_library_path``, ``SHARDLOAD_LIBRARY``, or next to this package).
"""
import contextlib
import ctypes
import os
import re
import sys

import warnings

from ._lib import (CancelToken, HostMemoryPool, ShardloadError,  # noqa: F401
                   ShardloadFileNotFoundError, ShardloadWarning, set_library_path)
from . import _lib

__all__ = ["load_file", "load", "safe_open", "load_model", "load_state_dict_into",
           "save_file", "save", "save_sharded", "save_model", "HostMemoryPool", "CancelToken",
           "ShardloadError", "ShardloadFileNotFoundError", "ShardloadWarning",
           "set_library_path", "version", "cuda_device_count", "cuda_staging_bytes",
           "release_cuda_staging"]


def cuda_device_count():
    """How many CUDA devices shardload can load onto (its own CUDA 13 runtime's view: 0
    without a device, or with a driver older than r580, even where torch sees some)."""
    return _lib.lib().sl_cuda_device_count()


def cuda_staging_bytes():
    """Host memory shardload keeps between GPU loads to stage them through (one ring for
    the process: 256 MiB, pinned unless pinning was refused; 0 before the first GPU
    load and after release_cuda_staging())."""
    return _lib.lib().sl_cuda_staging_bytes()


def release_cuda_staging():
    """Free that memory now (e.g. once a server has loaded its weights and wants its
    pinned memory back); the next GPU load allocates it again. Returns the bytes freed."""
    return _lib.lib().sl_cuda_release_staging()


__version__ = _lib.PACKAGE_VERSION


def version():
    """The native library's version string (``__version__`` is this package's; the
    library is at least as new)."""
    return _lib.lib().sl_version().decode()


# ----------------------------------------------------------------------------- dtypes

# (safetensors name, torch attribute) — the same mapping as safetensors.torch.
_DTYPE_NAMES = [
    ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16"),
    ("I64", "int64"), ("I32", "int32"), ("I16", "int16"), ("I8", "int8"), ("U8", "uint8"),
    ("BOOL", "bool"), ("C64", "complex64"), ("U64", "uint64"), ("U32", "uint32"),
    ("U16", "uint16"), ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"),
    ("F8_E8M0", "float8_e8m0fnu"), ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz"), ("F4", "float4_e2m1fn_x2"),
]
# Stored dtypes whose torch dtype packs several values in one element: F4 loads as
# torch.float4_e2m1fn_x2 (two values a byte), its last dimension halved, as safetensors.
_PACKED = {"F4": 2}
# _PACKED_ATTRS: the torch attribute names of the packed dtypes; _packed_torch_dtypes:
# those the installed torch has (set by _packed_dtypes on first use).
_PACKED_ATTRS = [attr for st, attr in _DTYPE_NAMES if st in _PACKED]
_packed_torch_dtypes = None
# Dtypes torch takes natively through DLPack in every version we support; the others
# are exported as bytes and reinterpreted with Tensor.view(dtype).
_DLPACK_NATIVE = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "C64"}


def _torch():
    import torch  # imported lazily: the C API part of this package needs no torch
    return torch


def _packed_dtypes():
    """The packed torch dtypes (F4's float4_e2m1fn_x2) the installed torch has."""
    global _packed_torch_dtypes
    if _packed_torch_dtypes is None:
        torch = _torch()
        _packed_torch_dtypes = frozenset(getattr(torch, attr) for attr in _PACKED_ATTRS
                                         if hasattr(torch, attr))
    return _packed_torch_dtypes


def _torch_empty(shape, dtype, device="cpu"):
    """torch.empty(shape, dtype=dtype, device=device), also for the packed dtypes
    (F4's float4_e2m1fn_x2) under torch.use_deterministic_algorithms(True), where torch
    fills new memory and has no fill for them (NotImplementedError): those are made as
    bytes (one element a byte) and viewed."""
    torch = _torch()
    if dtype in _packed_dtypes():
        return torch.empty(shape, dtype=torch.uint8, device=device).view(dtype)
    return torch.empty(shape, dtype=dtype, device=device)


# _TORCH_DTYPES: stored dtype -> torch dtype, as _torch_dtype found them.
_TORCH_DTYPES = {}


def _torch_dtype(name):
    dt = _TORCH_DTYPES.get(name)
    if dt is not None:
        return dt
    torch = _torch()
    for st, attr in _DTYPE_NAMES:
        if st == name:
            dt = getattr(torch, attr, None)
            if dt is not None:
                _TORCH_DTYPES[name] = dt
                return dt
            break
    raise ShardloadError("unimplemented", "dtype %s is not supported by torch %s" %
                         (name, torch.__version__))


_MAX_DIM = (1 << 63) - 1  # torch sizes are int64


def _torch_shape(name, dtype_name, shape):
    """The torch shape of a stored tensor: its stored shape, but for a packed dtype
    (F4) the last dimension divided by the values per element. ShardloadError
    ("invalid_argument") when that does not divide, as safetensors refuses it;
    ShardloadError("out_of_range") for a dimension past torch's int64 sizes (a
    zero-element tensor may declare any 64-bit dimension)."""
    per = _PACKED.get(dtype_name)
    if per is None:
        return _checked_dims(name, list(shape))
    if not shape or shape[-1] % per:
        raise ShardloadError("invalid_argument",
                             "tensor %s: dtype %s loads as %s, which needs a last dimension "
                             "divisible by %d; got %s" % (_quote_name(name), dtype_name,
                                                          _torch_dtype(dtype_name), per,
                                                          list(shape)))
    return _checked_dims(name, list(shape[:-1]) + [shape[-1] // per])


def _checked_dims(name, shape):
    """``shape`` when torch can make a tensor of it, else ShardloadError("out_of_range").
    A zero-element tensor may declare any 64-bit dimensions (others have their bytes in
    the file, so their sizes are small enough): torch refuses a dimension past int64,
    and shapes whose strides or running size product overflow, by rules that differ
    between torch versions, so such a shape is tried on the meta device (no memory)."""
    for k, d in enumerate(shape):
        if d > _MAX_DIM:
            raise ShardloadError("out_of_range", "tensor %s: dimension %d (%d) does not fit "
                                 "torch's int64 sizes" % (_quote_name(name), k, d))
    bound = 1  # bounds every stride and running product torch computes
    for d in shape:
        bound *= max(d, 1)
    if 0 in shape and bound > 1 << 62:
        try:
            _torch().empty(shape, dtype=_torch().uint8, device="meta")
        except RuntimeError as e:
            raise ShardloadError("out_of_range", "tensor %s: shape %s does not fit torch's "
                                 "int64 sizes (%s)" % (_quote_name(name), shape,
                                                       str(e).splitlines()[0])) from None
    return shape


def _stored_shape(t):
    """The shape to store for torch tensor ``t``: for torch.float4_e2m1fn_x2 (F4) the
    last dimension counts values, twice the elements, as safetensors writes it."""
    shape = list(t.shape)
    if shape and t.dtype in _packed_dtypes():
        shape[-1] *= _PACKED["F4"]
    return shape


# _ST_NAMES: torch dtype -> safetensors dtype, as _dtype_name found them.
_ST_NAMES = {}


def _dtype_name(torch_dtype):
    st = _ST_NAMES.get(torch_dtype)
    if st is not None:
        return st
    torch = _torch()
    for st, attr in _DTYPE_NAMES:
        if getattr(torch, attr, None) == torch_dtype:
            _ST_NAMES[torch_dtype] = st
            return st
    raise ShardloadError("invalid_argument", "torch dtype %s has no safetensors dtype" %
                         torch_dtype)


# ----------------------------------------------------------------------------- DLPack

_CAPSULE_NAME = b"dltensor"
# Our own handle on the interpreter's C API (what ctypes.pythonapi is), so that setting
# these functions' argtypes changes nothing for other users of ctypes.pythonapi.
_pythonapi = ctypes.PyDLL(None)
_pythonapi.PyCapsule_New.restype = ctypes.py_object
_pythonapi.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_pythonapi.PyCapsule_IsValid.restype = ctypes.c_int
_pythonapi.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _call_deleter(managed):
    # DLManagedTensor: DLTensor (48 bytes on LP64), manager_ctx, deleter.
    fn_ptr = ctypes.c_void_p.from_address(managed + 48 + 8).value
    if fn_ptr:
        _DELETER(fn_ptr)(managed)


def _from_loaded(loaded, index, info):
    """A torch tensor viewing tensor `index` of an sl_loaded (zero-copy)."""
    torch = _torch()
    l = _lib.lib()
    dtype_name = info.dtype.decode()
    target_dtype = _torch_dtype(dtype_name)
    native = dtype_name in _DLPACK_NATIVE
    # The torch shape where it is needed: to view bytes as a non-native dtype, and for
    # a tensor of no bytes, whose dimensions only there can pass int64 or torch's
    # limits (out_of_range, worded as get_tensor words it). Not otherwise: it costs
    # per tensor, and a checkpoint may hold tens of thousands.
    shape = None
    if not native or info.bytes == 0:
        shape = _torch_shape(_decode(info.name, info.name_len), dtype_name,
                             [info.shape[i] for i in range(info.ndim)])
    if not native and 0 in shape:
        # No bytes to view: torch's empty byte tensor has strides view() refuses for a
        # wider dtype, and as bytes the last dimension may overflow int64.
        return _torch_empty(shape, target_dtype, info.device.decode())
    managed = ctypes.c_void_p()
    _lib.check(l.sl_loaded_export_dlpack(loaded, index, 0 if native else _lib.SL_DLPACK_AS_BYTES,
                                         ctypes.byref(managed)))
    tensor = _adopt_export(managed.value, torch)
    if not native:
        tensor = tensor.view(target_dtype).reshape(shape)
    return tensor


def _adopt_export(managed, torch):
    """The torch tensor of DLManagedTensor ``managed`` (an address), which torch then
    owns (its deleter runs when the tensor goes); freed here when torch did not take it
    (an exception, a KeyboardInterrupt too, before or inside torch.from_dlpack)."""
    capsule = None
    try:
        capsule = _pythonapi.PyCapsule_New(managed, _CAPSULE_NAME, None)
        return torch.from_dlpack(capsule)  # torch.utils.dlpack's, imported by torch
    except BaseException:
        # Once torch took the tensor it renamed the capsule ("used_dltensor") and calls
        # the deleter itself when its tensor goes: only an untaken one is ours to free.
        if capsule is None or _pythonapi.PyCapsule_IsValid(capsule, _CAPSULE_NAME):
            _call_deleter(managed)
        raise


def _tensor_maker():
    """A convert(loaded, index, info) for _load_all_as: _from_loaded, with what it
    would look up for every tensor looked up once per load on its common path (a tensor
    of some bytes whose dtype torch takes through DLPack); other tensors go through
    _from_loaded itself."""
    torch = _torch()
    export = _lib.lib().sl_loaded_export_dlpack
    native = {name.encode() for name in _DLPACK_NATIVE}
    managed = ctypes.c_void_p()
    managed_ref = ctypes.byref(managed)

    def convert(loaded, index, info):
        if info.bytes == 0 or info.dtype not in native:
            return _from_loaded(loaded, index, info)
        status = export(loaded, index, 0, managed_ref)
        if status:
            _lib.check(status)
        return _adopt_export(managed.value, torch)

    return convert


def _decode(ptr, length):
    return ctypes.string_at(ptr, length).decode("utf-8", "surrogateescape")


# ----------------------------------------------------------------------------- checkpoints

def _path_bytes(path):
    """A path argument as bytes for the C API: str, bytes or os.PathLike, as open()
    takes them; TypeError (safetensors' words) for anything else, such as None;
    ValueError("embedded null byte"), as open() says, for a path holding a NUL (the C
    API would read it cut short there)."""
    try:
        raw = os.fsencode(path)
    except TypeError:
        raise TypeError("argument 'filename': expected str, bytes or os.PathLike object, "
                        "not %s" % type(path).__name__) from None
    if b"\0" in raw:
        raise ValueError("embedded null byte")
    return raw


def _names_no_file(status, raw):
    """Whether a failed sl_checkpoint_open says that path ``raw`` (bytes) itself does
    not exist: not_found "<path>: no such file or directory" (ENOENT, or ENOTDIR for a
    path through a file), or the empty path, which the library refuses as
    invalid_argument and open() and safetensors as a missing file. A path that exists
    but fails otherwise (a folder without a checkpoint, an index naming a missing
    shard, permissions) is left to ShardloadError."""
    if not raw:
        return True
    l = _lib.lib()
    return l.sl_status_name(status) == b"not_found" and \
        l.sl_last_error() == raw + b": no such file or directory"


def _raise_open_file_limit(shards):
    """A load keeps every shard open at once: when a checkpoint has more shards than the
    soft RLIMIT_NOFILE leaves room for (usually 1024), raise it, up to the hard limit,
    as the shardload command does (best effort; a process's limits are its own)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 256
    want = shards + open_now + 64  # the shards next to what is open already
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            pass


class _Checkpoint(_lib.Closing):
    """An owned sl_checkpoint handle. ``infos`` point into the handle (valid until
    close()); ``names``, ``shapes`` and ``dtypes`` are Python copies that stay valid.
    ``cancel`` (a CancelToken) stops a wait for the folder's lock (a writer publishing
    there) with ShardloadError("cancelled"). ``strict_index``: as in load_file.
    ``verify``: the load will verify; a ShardloadWarning says so when the checkpoint
    records no XXH3 for any of its tensors (nothing would be checked)."""

    def __init__(self, path, cancel=None, strict_index=True, verify=False):
        self.handle = None  # set first: __del__ runs also when the open below fails
        l = _lib.lib()
        h = ctypes.c_void_p()
        raw = _path_bytes(path)
        if cancel is None and strict_index:
            status = l.sl_checkpoint_open(raw, ctypes.byref(h))
        else:
            with _lib.Options(cancel=cancel, strict_index=strict_index) as opening:
                status = l.sl_checkpoint_open_with(raw, opening.handle, ctypes.byref(h))
        if status != 0 and _names_no_file(status, raw):
            # As open(), torch.load and safetensors: FileNotFoundError (ENOENT, the
            # path as given), which is a ShardloadError("not_found") too.
            raise ShardloadFileNotFoundError(os.fspath(path))
        _lib.check(status)
        self.handle = h
        _raise_open_file_limit(l.sl_checkpoint_shard_count(h))
        for i in range(l.sl_checkpoint_warning_count(h)):
            text = ctypes.c_char_p()
            _lib.check(l.sl_checkpoint_warning(h, i, ctypes.byref(text)))
            warnings.warn(text.value.decode("utf-8", "replace"), ShardloadWarning, stacklevel=3)
        count = l.sl_checkpoint_tensor_count(h)
        listing = (_lib.TensorInfo * count)()  # one call for all (elements view it)
        _lib.check(l.sl_checkpoint_tensors(h, 0, count, listing))
        self.infos = list(listing)
        self.names = [_decode(i.name, i.name_len) for i in self.infos]
        self.shapes = [i.shape[:i.ndim] for i in self.infos]  # lists of ints
        self.dtypes = [i.dtype.decode() for i in self.infos]
        self.files = [i.file.decode("utf-8", "surrogateescape") for i in self.infos]
        self.index = {n: k for k, n in enumerate(self.names)}
        recorded = ctypes.c_size_t()
        # A malformed record is left for the verifying load to report (data_loss).
        if verify and self.infos and \
                l.sl_checkpoint_recorded_hash_count(h, ctypes.byref(recorded)) == 0 and \
                recorded.value == 0:
            warnings.warn("verify=True: %s records no XXH3 hash for its tensors, so none is "
                          "checked (save_file/save_sharded(..., checksums=True) or shardload "
                          "reshard record them)" % os.fsdecode(_path_bytes(path)),
                          ShardloadWarning, stacklevel=3)

    def torch_dtype(self, name):
        """The torch dtype of stored tensor ``name``. ShardloadError("unimplemented",
        "<file>: tensor 'x': dtype U16 is not supported by torch 1.13.0") when the
        installed torch lacks it (<file>: its shard, as the checkpoint names it, as in
        the library's messages)."""
        k = self.index[name]
        try:
            return _torch_dtype(self.dtypes[k])
        except ShardloadError as e:
            raise ShardloadError(e.code, "%s: tensor %s: %s" % (
                self.files[k], _quote_name(name), e.message)) from None

    def torch_shape(self, name):
        """The torch shape of stored tensor ``name`` (_torch_shape of its stored one);
        torch_dtype's error first for a dtype the installed torch lacks."""
        k = self.index[name]
        self.torch_dtype(name)
        return _torch_shape(name, self.dtypes[k], self.shapes[k])

    def offset_order(self):
        """Stored names in file order: by shard (index order), then start and end offset
        (safetensors' order; a zero-size tensor comes before the one starting where it
        sits)."""
        shard_rank = {}
        l = _lib.lib()
        for i in range(l.sl_checkpoint_shard_count(self.handle)):
            f = ctypes.c_char_p()
            _lib.check(l.sl_checkpoint_shard(self.handle, i, ctypes.byref(f)))
            shard_rank[f.value.decode("utf-8", "surrogateescape")] = i  # as self.files
        files, names = self.files, self.names
        # Each info's fields read once (ctypes field reads cost per read); the index
        # last keeps ties in name order, as a stable sort would.
        keys = sorted((shard_rank.get(files[k], 0), info.file_offset, info.bytes, k)
                      for k, info in enumerate(self.infos))
        return [names[key[3]] for key in keys]

    def metadata(self):
        l = _lib.lib()
        out = {}
        for i in range(l.sl_checkpoint_metadata_count(self.handle)):
            # With lengths: keys and values may hold NUL characters.
            k, v = ctypes.c_void_p(), ctypes.c_void_p()
            kn, vn = ctypes.c_size_t(), ctypes.c_size_t()
            _lib.check(l.sl_checkpoint_metadata_n(self.handle, i, ctypes.byref(k),
                                                  ctypes.byref(kn), ctypes.byref(v),
                                                  ctypes.byref(vn)))
            out[_decode(k, kn.value)] = _decode(v, vn.value)
        return out

    def close(self):
        if self.handle:
            _lib.lib().sl_checkpoint_free(self.handle)
            self.handle = None


def _warn_load(lines):
    """A ShardloadWarning for each line a successful load reported about how it ran
    (_lib.report_warnings: a CUDA load staged through pageable memory because pinning
    was refused), attributed to the first caller outside this package (load_file,
    get_tensor, load_model, ... reach here through different depths). Called once the
    load's result is complete."""
    if not lines:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(0), 1
    while frame is not None and \
            os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    for text in lines:
        warnings.warn(text, ShardloadWarning, stacklevel=level)


def _load_all(ckpt, options):
    """Every tensor of an open checkpoint as a dict of zero-copy torch tensors.
    A dtype the installed torch lacks raises ShardloadError ("unimplemented", naming
    the first such tensor in file order and its file) before anything is read."""
    order = ckpt.offset_order()
    for name in order:
        ckpt.torch_dtype(name)
    return _load_all_as(ckpt, options, _tensor_maker(), order)


def _load_all_as(ckpt, options, convert, order):
    """Every tensor of an open checkpoint, loaded in one sl_load_all with ``options``,
    as a dict name -> convert(loaded, index, info) (a zero-copy tensor or array that
    holds its own reference on the arenas; ``info`` is reused for the next tensor once
    convert returns), in ``order`` (ckpt.offset_order(): file
    order, shard then offset, as safetensors orders them), the renamed names after
    them, sorted. The caller checks first that every tensor converts."""
    l = _lib.lib()
    loaded = ctypes.c_void_p()
    report = ctypes.c_void_p()
    try:
        # In the try: a progress callable that raised at its last call (total, total)
        # leaves a complete load behind (the library ignores that call's answer), which
        # must be freed when check() raises what the callable raised.
        with _cuda_device_guard(options.device):
            options.check(l.sl_load_all(ckpt.handle, options.handle, None, 0,
                                        ctypes.byref(loaded), ctypes.byref(report)))
        load_warnings = _lib.report_warnings(report)
        by_name = {}
        info = _lib.LoadedTensor()  # one for all: convert reads it before it returns
        info_ref = ctypes.byref(info)
        get, string_at = l.sl_loaded_get, ctypes.string_at  # per tensor: looked up once
        for i in range(l.sl_loaded_count(loaded)):
            status = get(loaded, i, info_ref)
            if status:
                _lib.check(status)
            name = string_at(info.name, info.name_len).decode("utf-8", "surrogateescape")
            by_name[name] = convert(loaded, i, info)
        out = {}
        for name in order:
            if name in by_name:
                out[name] = by_name.pop(name)
        for name in sorted(by_name):
            out[name] = by_name[name]
        _warn_load(load_warnings)
        return out
    finally:
        l.sl_report_free(report)  # NULL: no-op
        l.sl_loaded_free(loaded)  # NULL (a failed load): no-op


class _Unset:
    """The default of ``backend=``: not given (``io`` decides)."""

    def __repr__(self):
        return "<unset>"


_NO_BACKEND = _Unset()
_BACKENDS = ("mmap", "pread")


def _backend_io(backend, io="auto"):
    """The io mode for safetensors 0.8's ``backend=`` keyword ("mmap" memory-maps the
    file, "pread" reads it with pread(2)), validated as safetensors validates it:
    TypeError for a non-str, ShardloadError("invalid_argument") with safetensors' words
    for another string. Not given (_NO_BACKEND): ``io`` as it is. Given together with an
    ``io`` other than "auto" and itself: ValueError."""
    if backend is _NO_BACKEND:
        return io
    if not isinstance(backend, str):
        raise TypeError("argument 'backend': %s is not an instance of 'str'" %
                        _type_phrase(backend))
    if backend not in _BACKENDS:
        raise ShardloadError("invalid_argument",
                             'backend "%s" is invalid (expected one of: "mmap", "pread")' %
                             backend.replace("\\", "\\\\").replace('"', '\\"'))
    if io not in ("auto", backend):
        raise ValueError("backend=%r and io=%r disagree: give one of them" % (backend, io))
    return backend


def load_file(filename, device="cpu", *, renames=(), threads=0, io="auto", verify=False,
              progress=None, pool=None, cancel=None, backend=_NO_BACKEND, strict_index=True,
              placement="aligned"):
    """Load every tensor of a checkpoint (file, index .json or folder) as torch tensors.

    ``device``: "cpu" (or None, as safetensors takes it), "cuda" (the current CUDA
    device, as in torch), "cuda:N", an int (CUDA ordinal), a torch.device or a device
    map "PATTERN=DEVICE,...,DEFAULT". ``renames``: sed-style rules applied to names.
    ``verify``: check each tensor against the XXH3 the checkpoint records
    (``shardload.xxh3.<name>`` metadata, see ``save_file(checksums=True)``); a mismatch
    raises ShardloadError("data_loss", "<file>: tensor 'w' at bytes [a, b): XXH3 of its N
    bytes is X, recorded Y"). ``progress``: called as progress(bytes_done, bytes_total) on this
    thread, first (0, total), last (total, total), once every byte is in place.
    Returning False from any call but the last cancels the load (ShardloadError
    "cancelled"); the last call's answer is ignored, as the C API ignores it (the load
    has succeeded). An exception it raises, at any call, propagates, and the load's
    memory is freed (raised at the last call, it discards a complete load).
    ``pool``: a HostMemoryPool to take the host arena from; the arena returns to it
    once every returned cpu tensor has been garbage-collected (None: fresh memory).
    ``cancel``: a CancelToken that another thread may cancel (ShardloadError
    "cancelled", "load cancelled"; while the open waits for a writer publishing in the
    folder: "<folder>: stopped while waiting for the folder's lock").
    ``strict_index`` (not in safetensors): a shard holding a tensor its index does not
    list fails the open (True, the default: ShardloadError("invalid_argument",
    "model.safetensors.index.json: shard 'f' holds tensor 'y', which the index does not
    list")); False loads such tensors too, with a ShardloadWarning each, as
    huggingface_hub's and transformers' sharded loads, which read whole shards, do.
    A checkpoint of more shards than the process's soft open-file limit leaves room for
    raises that limit (RLIMIT_NOFILE, up to the hard limit): a load keeps every shard
    open at once.
    ``placement`` (not in safetensors): "aligned" (default) puts every cpu tensor's data
    on a 256-byte boundary; "file-phase" puts each at its file offset modulo 256 (as
    aligned as in the file, like safetensors' own cpu tensors, which are views of the
    mapped file; never off its element size: a tensor a file leaves off that is
    placed aligned), which makes the copy out of the page cache faster for
    files whose data section does not start on a 64-byte boundary (most of them; see
    bench/RESULTS.md "File phase"). cuda tensors are 256-byte aligned either way. Any
    other value raises ShardloadError("invalid_argument", "invalid arena placement 'x':
    expected aligned or file-phase"); a non-str raises TypeError.
    ``threads``: reader threads, an int from 0 (as many as hardware threads) to 256
    (TypeError / ValueError otherwise). ``io``: "auto", "pread", "mmap", "direct" or
    "uring". ``backend``: safetensors 0.8's keyword, "mmap" or "pread", the io mode of
    that name (an invalid one raises as safetensors does: TypeError for a non-str,
    ShardloadError "invalid_argument" 'backend "x" is invalid (expected one of: "mmap",
    "pread")'); not given, ``io`` decides; given with another ``io`` than "auto",
    ValueError.
    Raises ShardloadFileNotFoundError, both a FileNotFoundError (as open() and
    safetensors raise it) and a ShardloadError("not_found"), when ``filename`` does not
    exist; ShardloadError (code and message from the library) on any other failure,
    ValueError for a closed pool or token."""
    io = _backend_io(backend, io)
    device = _device_string(device)  # a bad device is refused first, as safetensors does
    with _Checkpoint(filename, cancel, strict_index, verify) as ckpt, \
            _lib.Options(device=device, strict=False, renames=renames,
                         threads=threads, io=io, verify=verify, progress=progress,
                         pool=pool, cancel=cancel, placement=placement) as options:
        return _load_all(ckpt, options)


def load(data, *, pool=None):
    """Like safetensors.torch.load: tensors from the bytes of a .safetensors file.
    ``pool``: as in load_file."""
    return _load_bytes(data, lambda path: load_file(path, pool=pool))


def _load_bytes(data, load_path):
    """load_path(path) of a temporary file holding ``data``, removed after; errors name
    ``<bytes>``, not the temporary file."""
    import tempfile
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return load_path(path)
        except ShardloadError as e:  # name the bytes, not the temporary file
            message = e.message.replace(path, "<bytes>").replace(os.path.basename(path),
                                                                 "<bytes>")
            raise ShardloadError(e.code, message) from None
    finally:
        os.unlink(path)


def _device_string(device):
    """The device (map) string for the C API. A bare "cuda" (or torch.device("cuda")) is
    the current CUDA device, as torch and safetensors read it, when torch sees one;
    "cpu:N" is "cpu" (torch's cpu tensors all report device "cpu"); None is "cpu", as
    safetensors' load_file, safe_open and load_model take it."""
    if device is None:
        return "cpu"
    if isinstance(device, int):
        return "cuda:%d" % device
    text = str(device)
    if text.startswith("cpu:") and text[4:].isascii() and text[4:].isdigit() and \
            (text[4:] == "0" or not text[4:].startswith("0")):
        return "cpu"
    if text == "cuda":
        try:
            torch = _torch()
        except ImportError:
            return text
        if torch.cuda.is_available():
            return "cuda:%d" % torch.cuda.current_device()
    if "=" not in text and "," not in text and not _PLAIN_DEVICE.fullmatch(text):
        # One device, not a map: say so, and what to do for torch's other devices.
        raise ShardloadError(
            "invalid_argument", "invalid device %s: expected cpu, cuda or cuda:N (shardload "
            "loads into host memory and onto CUDA GPUs; for another torch device, load onto "
            "cpu and move the tensors with .to())" % _quote_name(text))
    return text


@contextlib.contextmanager
def _cuda_device_guard(device):
    """Runs a load with the lowest CUDA device ``device`` (a device or device-map string)
    names made current through torch's own device guard, as safetensors' torch calls
    run. The library makes a load's device current for its calls and, on a thread whose
    previous device has no CUDA context yet, leaves it so rather than make a context
    there; torch's guard then gives torch back its current device the same way, without
    making one either, so torch.cuda.current_device() is what it was after the load. A
    map that names a device it gives no tensor still has that device made current (and
    its context made) when it is the lowest named. Nothing when no CUDA device is
    named, torch has no CUDA, or the index is past torch's devices (the library's own
    error follows). The library reads the map (sl_device_map_first_cuda); one it refuses
    gets no guard (the load reports it)."""
    first = ctypes.c_int(-1)
    if _lib.lib().sl_device_map_first_cuda(str(device).encode(), ctypes.byref(first)) != 0 \
            or first.value < 0:
        yield
        return
    torch = _torch()
    if not torch.cuda.is_available() or first.value >= torch.cuda.device_count():
        yield
        return
    with torch.cuda.device(first.value):
        yield


# _PLAIN_DEVICE: the one-device strings the library takes (loader/device.h ParseDevice).
_PLAIN_DEVICE = re.compile(r"cpu|cuda|(cpu|cuda):(0|[1-9][0-9]{0,9})")


# ----------------------------------------------------------------------------- safe_open

_pythonapi.PySequence_Check.restype = ctypes.c_int
_pythonapi.PySequence_Check.argtypes = [ctypes.py_object]


def _list_is_tuple(key):
    """Whether torch reads list ``key`` as a tuple of indices, one per dimension (x[[0,
    slice(None)]] as x[0, :]) rather than as one index (x[[0, 1]], rows 0 and 1): its
    rule (treatSequenceAsTuple, numpy's old heuristic; deprecated with a warning in
    torch 2.x) for a list of fewer than 32 items, one of which is a tensor, a sequence,
    a slice, Ellipsis or None. safetensors' slices read lists as torch does."""
    torch = _torch()
    if len(key) >= 32:
        return False
    return any(isinstance(e, (torch.Tensor, slice)) or e is Ellipsis or e is None or
               _pythonapi.PySequence_Check(e) for e in key)


def _bool_lists_as_masks(key):
    """`key` with each list of Python bools as a bool tensor: torch reads such a list
    as a mask, but cannot size one on the meta device."""
    def fix(k):
        if isinstance(k, list) and k and all(isinstance(e, bool) for e in k):
            return _torch().tensor(k, dtype=_torch().bool)
        return k
    return tuple(fix(k) for k in key) if isinstance(key, tuple) else fix(key)


def _has_index_arrays(items):
    """Whether an index's items hold index arrays: lists, tuples, tensors, arrays."""
    return any(isinstance(k, (list, tuple)) or hasattr(k, "__array__") for k in items)


class _Slice:
    """A lazy view of one stored tensor; indexing reads only the rows it needs. It
    keeps the checkpoint open: it works after its safe_open is closed, as in
    safetensors."""

    def __init__(self, owner, ckpt, name):
        self._owner = owner
        self._ckpt = ckpt
        self._name = name
        k = ckpt.index[name]
        self._shape = ckpt.shapes[k]
        self._dtype = ckpt.dtypes[k]

    def get_shape(self):
        return list(self._shape)

    def get_dtype(self):
        return self._dtype

    def _read_rows(self, lo, hi):
        return self._owner._read_rows(self._ckpt, self._name, lo, hi)

    def __getitem__(self, key):
        torch = _torch()
        shape = self._ckpt.torch_shape(self._name)  # keys index torch's shape
        if len(shape) == 0:  # a scalar: read it, torch indexes it (and words errors)
            return self._read_rows(0, 0)[key]
        as_tuple = isinstance(key, list) and _list_is_tuple(key)
        if as_tuple:  # its items index the dimensions, as in a tuple
            key = list(_bool_lists_as_masks(tuple(key)))
        else:
            key = _bool_lists_as_masks(key)
        # safetensors fails on invalid keys exactly as torch indexing does: index a
        # storage-less tensor of the same shape first to raise the same errors (too many
        # indices, zero or negative steps, out-of-range ints) before reading anything
        # (and the warning torch 2.x gives for a list read as a tuple). A key the meta
        # device refuses is tried again on a one-byte CPU tensor expanded to the shape,
        # whose answer is the one that counts: torch 2.11 refuses several Ellipses on
        # meta tensors and takes them on CPU ones. A key holding index arrays (lists,
        # tensors) goes to that CPU tensor in any case: the meta device checks none of
        # their values, and an out-of-range one reaching a CUDA tensor would be a
        # device-side assert, fatal to the process's CUDA context, where this raises
        # IndexError (it makes a byte per element of the result; the meta device none).
        on_cpu = _has_index_arrays(key if as_tuple or isinstance(key, tuple) else (key,))
        if not on_cpu:
            try:
                torch.empty(shape, dtype=torch.uint8, device="meta")[key]
            except Exception:
                on_cpu = True
        if on_cpu:
            torch.zeros((), dtype=torch.uint8, device="cpu").expand(shape)[key]
        if as_tuple:
            key = tuple(key)
        elif not isinstance(key, tuple):
            if not isinstance(key, (int, slice)) or isinstance(key, bool):
                # One index that is neither an int nor a slice (a list, a mask, a
                # tensor, Ellipsis, None, ...): read everything, let torch index.
                return self._read_rows(0, shape[0])[key]
            key = (key,)
        first = key[0] if key else slice(None)
        if isinstance(first, int) and not isinstance(first, bool):  # torch: bool = mask
            i = first + shape[0] if first < 0 else first
            if not 0 <= i < shape[0]:
                raise IndexError("index %d is out of bounds for dimension 0 with size %d" %
                                 (first, shape[0]))
            lo, hi = i, i + 1
            local = i - lo
        elif isinstance(first, slice):
            start, stop, step = first.indices(shape[0])
            if step <= 0:
                raise ValueError("step must be greater than zero")
            count = len(range(start, stop, step))
            if count == 0:
                lo = hi = start if start < shape[0] else shape[0]
            else:
                lo, hi = start, start + (count - 1) * step + 1
            local = slice(start - lo, (start - lo) + count * step if count else 0, step)
        else:  # Ellipsis, tensors, ...: read everything, let torch index
            return self._read_rows(0, shape[0])[key]
        rows = self._read_rows(lo, hi)
        return rows[(local,) + tuple(key[1:])]


def _row_span(info, shape, lo, hi):
    """(byte offset in the tensor, byte count, shape as a list) of rows [lo, hi) of
    dimension 0 of a stored tensor (``info``, its shape ``shape``); the whole tensor, of
    shape [], for a scalar."""
    if not shape:
        return 0, info.bytes, []
    row_bytes = info.bytes // shape[0] if shape[0] else 0
    return lo * row_bytes, (hi - lo) * row_bytes, [hi - lo] + list(shape[1:])


# _HOLD_MAX_SHARDS: safe_open holds every shard open from the start up to this many.
_HOLD_MAX_SHARDS = 64


class safe_open(_lib.Closing):
    """Context manager compatible with ``safetensors.safe_open(..., framework="pt")``
    and ``framework="np"``.

    ``framework``: "pt" (also "torch", "pytorch", as safetensors takes them) for torch
    tensors, "np" (or "numpy") for numpy arrays, which need no torch (the dtypes numpy
    has; device "cpu" only, any other raising ShardloadError("invalid_argument"); see
    shardload.numpy for how get_slice indexes them); other strings raise
    ShardloadError("unimplemented"), a non-str TypeError.

    ``verify=True`` (not in safetensors) checks every tensor read against its recorded
    XXH3: get_tensor/get_tensors then load through the verifying loader, and get_slice
    reads (and checks) the whole tensor before indexing it; a mismatch raises
    ShardloadError with code "data_loss". ``pool`` (not in safetensors): a
    HostMemoryPool for the arenas of get_tensors and of the loads get_tensor makes with
    ``verify`` (as in load_file); a plain cpu get_tensor reads into a torch-allocated
    tensor and does not use it. TypeError / ValueError here for a bad or closed pool.
    After close(), every method raises ShardloadError("failed_precondition", "File is
    closed"); slices taken before keep working (they hold the checkpoint handle).
    Every shard is opened here and held until the handle goes (one descriptor each),
    as safetensors maps its file at open: saving the checkpoint again over the same
    names, deleting it or os.chdir do not change what is read; a held file truncated
    in place fails reads past its end with ShardloadError("data_loss") (safetensors'
    mapping faults: SIGBUS), and one written over in place with another header fails
    them with ShardloadError("aborted", "... file was replaced since the checkpoint was
    opened and its header differs (open the checkpoint again)"). A folder of more than
    64 shards is not held whole: after a rewrite there, get_tensors raises
    ShardloadError("aborted", "... would be of two saves ...") rather than mix them. ``device``: as in load_file (None is cpu). ``backend``:
    safetensors 0.8's keyword ("mmap" or "pread"), validated as there and used as the
    io mode of the loads through the loader (get_tensors, ``verify``); plain
    get_tensor and get_slice read the rows they need with positional reads either
    way. ``strict_index``: as in load_file."""

    def __init__(self, filename, framework="pt", device="cpu", *, verify=False, pool=None,
                 backend=_NO_BACKEND, strict_index=True):
        if not isinstance(framework, str):
            raise TypeError("framework must be a str such as \"pt\", not %s"
                            % type(framework).__name__)
        if framework not in ("pt", "torch", "pytorch", "np", "numpy"):
            raise ShardloadError("unimplemented",
                                 "framework '%s' is not supported (only \"pt\", \"torch\", "
                                 "\"pytorch\", \"np\" or \"numpy\")" % framework)
        self._numpy = None  # the shardload.numpy module for numpy arrays
        if framework in ("np", "numpy"):
            from . import numpy as numpy_arrays
            self._numpy = numpy_arrays
        self._device = _device_string(device)
        if self._numpy is not None and self._device != "cpu":
            raise ShardloadError("invalid_argument", "device %s is not supported for "
                                 "framework numpy (numpy arrays are in host memory: use "
                                 "\"cpu\")" % _quote_name(self._device))
        self._io = _backend_io(backend)
        self._verify = bool(verify)
        HostMemoryPool.check_argument(pool, "pool")
        self._pool = pool
        ckpt = _Checkpoint(filename, strict_index=strict_index, verify=self._verify)
        # Open every shard now and read those files until the handle goes, as
        # safetensors maps its file at open: saving the checkpoint again over the same
        # names, deleting it or os.chdir do not change what this object reads. A folder
        # of more than _HOLD_MAX_SHARDS shards is not held at once (one descriptor per
        # shard could exhaust the process's limit): the library keeps the first 64 it
        # reads and opens the others for each read.
        try:
            if _lib.lib().sl_checkpoint_shard_count(ckpt.handle) <= _HOLD_MAX_SHARDS:
                _lib.check(_lib.lib().sl_checkpoint_hold_files(ckpt.handle))
        except BaseException:
            ckpt.close()
            raise
        self._ckpt = ckpt

    def close(self):
        # Dropping the reference closes the handle at once unless a slice still uses it.
        self._ckpt = None

    def _open(self):
        if self._ckpt is None:
            raise ShardloadError("failed_precondition", "File is closed")
        return self._ckpt

    def keys(self):
        return list(self._open().names)

    def offset_keys(self):
        return self._open().offset_order()

    def metadata(self):
        """The metadata dict; None when the file has no ``__metadata__`` ({} when it has
        an empty one, as safetensors tells them apart)."""
        ckpt = self._open()
        if not _lib.lib().sl_checkpoint_has_metadata(ckpt.handle):
            return None
        return ckpt.metadata()

    def _options(self):
        """Non-strict load options for this handle's device, verify and pool."""
        return _lib.Options(device=self._device, strict=False, io=self._io,
                            verify=self._verify, pool=self._pool)

    def get_tensors(self):
        """Every tensor as a dict in file order (like safetensors' get_tensors), loaded
        in one pass with zero-copy tensors as load_file returns."""
        ckpt = self._open()
        with self._options() as options:
            if self._numpy is not None:
                return self._numpy._load_all(ckpt, options)
            return _load_all(ckpt, options)

    @staticmethod
    def _check_name(name):
        """TypeError, in safetensors' words, for a name that is not a str (before any
        other check, a closed file's too, as safetensors' argument parsing comes first)."""
        if not isinstance(name, str):
            raise TypeError("argument 'name': %s is not an instance of 'str'" %
                            _type_phrase(name))

    @staticmethod
    def _info(ckpt, name):
        safe_open._check_name(name)
        try:
            return ckpt.infos[ckpt.index[name]]
        except KeyError:
            raise ShardloadError("not_found", "tensor '%s' is not in the checkpoint" % name)

    def get_slice(self, name):
        self._check_name(name)
        ckpt = self._open()
        self._info(ckpt, name)
        if self._numpy is not None:
            return self._numpy._Slice(self, ckpt, name)
        return _Slice(self, ckpt, name)

    def _loaded_tensor(self, ckpt, name):
        """Tensor `name` through the loader (on the device, verified when asked)."""
        info = self._info(ckpt, name)
        l = _lib.lib()
        raw = name.encode("utf-8", "surrogateescape")
        target = _lib.Target(raw, len(raw), info.dtype, info.shape, info.ndim, None, None)
        loaded = ctypes.c_void_p()
        report = ctypes.c_void_p()
        try:
            with self._options() as options, _cuda_device_guard(self._device):
                _lib.check(l.sl_load_all(ckpt.handle, options.handle, ctypes.byref(target), 1,
                                         ctypes.byref(loaded), ctypes.byref(report)))
            load_warnings = _lib.report_warnings(report)
            li = _lib.LoadedTensor()
            _lib.check(l.sl_loaded_get(loaded, 0, ctypes.byref(li)))
            if self._numpy is not None:
                tensor = self._numpy._array_maker()(loaded, 0, li)
            else:
                tensor = _from_loaded(loaded, 0, li)
            _warn_load(load_warnings)
            return tensor
        finally:
            l.sl_report_free(report)
            l.sl_loaded_free(loaded)

    def _verified_rows(self, ckpt, name, shape, lo, hi):
        """Rows [lo, hi) of dimension 0 of ``name`` (of ``shape``; the whole tensor for
        a scalar) when this handle verifies: a hash covers the whole tensor, so all of it
        is loaded and checked (_loaded_tensor), and a part of it is copied out, so as not
        to keep the whole tensor alive for a slice."""
        whole = self._loaded_tensor(ckpt, name)
        if not shape or (lo, hi) == (0, shape[0]):
            return whole
        part = whole[lo:hi]
        return part.copy() if self._numpy is not None else part.clone()

    def _read_rows(self, ckpt, name, lo, hi):
        """Rows [lo, hi) of dimension 0 (the whole tensor for a scalar), on the device."""
        torch = _torch()
        info = self._info(ckpt, name)
        dtype = ckpt.torch_dtype(name)
        shape = ckpt.torch_shape(name)
        if self._verify:
            return self._verified_rows(ckpt, name, shape, lo, hi)
        offset, nbytes, out_shape = _row_span(info, shape, lo, hi)
        if nbytes == 0:
            # Nothing to read or view (torch 1.13's reshape of an empty byte tensor fails
            # on dimensions near 2^62, "Expected !is_symbolic()"): make it.
            return _torch_empty(out_shape, dtype, self._device)
        buf = torch.empty(nbytes, dtype=torch.uint8, device="cpu")  # whatever the default
        _lib.check(_lib.lib().sl_checkpoint_read(ckpt.handle, ckpt.index[name], offset,
                                                 nbytes, buf.data_ptr()))
        t = buf.view(dtype).reshape(out_shape)
        if self._device != "cpu":
            t = t.to(self._device)
        return t

    def _read_whole(self, ckpt, name):
        """Tensor ``name`` read whole into new cpu memory (a numpy array, or a torch
        tensor allocated by torch) with one positional read; None where get_tensor takes
        the general path: ``verify``, a device other than cpu, a tensor of no bytes.
        Raises get_tensor's errors: TypeError, not_found, then a dtype or shape the
        framework lacks; ShardloadError from the read."""
        info = self._info(ckpt, name)  # TypeError / not_found
        if self._numpy is not None:
            shape, dtype = self._numpy._np_shape_dtype(ckpt, name)
        else:
            shape, dtype = ckpt.torch_shape(name), ckpt.torch_dtype(name)
        if self._verify or self._device != "cpu" or info.bytes == 0:
            return None
        if self._numpy is not None:
            np = self._numpy.np
            # Bytes, then viewed: ml_dtypes' types have no buffer-protocol format, and
            # from_buffer is cheaper than .ctypes.data.
            buf = np.empty(info.bytes, np.uint8)
            address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
            out = buf.view(dtype).reshape(shape)  # raises if the sizes disagree (never)
        else:
            out = _torch_empty(shape, dtype)  # on cpu whatever torch's default device
            if out.numel() * out.element_size() != info.bytes:
                return None
            address = out.data_ptr()
        _lib.check(_lib.lib().sl_checkpoint_read(ckpt.handle, ckpt.index[name], 0,
                                                 info.bytes, address))
        return out

    def get_tensor(self, name):
        self._check_name(name)
        ckpt = self._open()
        out = self._read_whole(ckpt, name)
        if out is not None:
            return out
        if self._numpy is not None:
            shape = self._numpy._np_shape(ckpt, name)
            return self._numpy._read_rows(self, ckpt, name, 0, shape[0] if shape else 1)
        if self._device == "cpu" and not self._verify:  # a tensor of no bytes
            shape = ckpt.torch_shape(name)
            return self._read_rows(ckpt, name, 0, shape[0] if shape else 1)
        return self._loaded_tensor(ckpt, name)


# ----------------------------------------------------------------------------- load_model

def _covers_storage(t):
    ptr, nbytes = _storage_of(t)
    return t.data_ptr() == ptr and t.numel() * t.element_size() == nbytes


def _remove_duplicate_names(state_dict, preferred_names=(), module=None, singles=False):
    """keep name -> names to drop, for tied tensors (as safetensors.torch does: groups of
    tensors that overlap in memory keep the alphabetically first name among those
    covering the whole storage, preferring `preferred_names`). RuntimeError in
    safetensors' words when no tensor of a group covers its storage, for the first such
    group in _overlapping_groups' order. ``singles`` (save_model and load_model, as
    safetensors 0.8's): a tensor overlapping no other is a group of its own, so one
    that does not cover its storage either (a slice of a fused tensor, an expanded
    buffer) raises that RuntimeError too. With ``module``, meta-device entries (no
    memory to compare) are grouped by the module's own ties: one Parameter or buffer
    object under several names."""
    preferred = set(preferred_names)
    out = {}
    groups = _overlapping_groups(state_dict, singles=singles)
    if module is not None:
        groups += [set(names) for names in _tied_names(module)
                   if all(n in state_dict and state_dict[n].device.type == "meta"
                          for n in names)]
    for group in groups:
        complete = {n for n in group
                    if state_dict[n].device.type == "meta" or _covers_storage(state_dict[n])}
        if not complete:
            raise RuntimeError(
                "Error while trying to find names to remove to save state dict, but found no "
                "suitable name to keep for saving amongst: %s. None is covering the entire "
                "storage.Refusing to save/load the model since you could be storing much more "
                "memory than needed. Please refer to "
                "https://huggingface.co/docs/safetensors/torch_shared_tensors for more "
                "information. Or open an issue." % group)
        if len(group) < 2:
            continue
        keep = sorted(complete)[0]
        pref = complete & preferred
        if pref:
            keep = sorted(pref)[0]
        out[keep] = sorted(n for n in group if n != keep)
    return out


_EMPTY = ctypes.create_string_buffer(1)
_EMPTY_ADDRESS = ctypes.addressof(_EMPTY)


def load_state_dict_into(module, filename, strict=True, device="cpu", *, renames=(),
                         allow_cast=False, threads=0, verify=False, progress=None, pool=None,
                         assign=False, cancel=None, strict_index=True):
    """load_state_dict straight into ``module``'s parameter and buffer storage.

    Every state_dict entry that is contiguous, of a supported dtype and on the target
    device becomes a target whose memory the loader writes directly (no intermediate
    copy; modules' load_state_dict hooks and _load_from_state_dict overrides do not run:
    load_model runs them); modules with other entries, or with extra state (which only
    set_extra_state can take), fall back to load_file + load_state_dict. So do modules
    whose state_dict is not their storage: any tensor entry that is not the very
    Parameter or buffer its module registered under that name, or a persistent one left
    out (a state_dict or _save_to_state_dict override, a state-dict hook or a
    state_dict replaced on the instance that returns copies or other names; hooks that
    only add metadata, as spectral_norm's, keep the direct path). Every tensor the
    direct path writes (an empty one too) has its autograd version bumped, as torch's
    copy_ does: a backward through a graph that saved the old values raises "modified
    by an inplace operation" instead of using the new ones (after a failure past
    matching, every entry's is bumped; a failed match writes and bumps nothing).
    A save_model tie note fills an entry the file lacks only when that entry is an
    exact tie of the kept one in ``module`` or shares memory with no other entry: an
    entry that views the kept tensor otherwise (a transpose, a conjugate) is left
    missing, as writing the kept values through it would change the kept tensor.
    ``threads``: as in load_file.
    Returns the report: a dict with lists "matched", "missing", "unexpected",
    "mismatched", "renamed"; "missing" and "unexpected" in the order torch's
    load_state_dict lists them (missing in the module's state_dict order, unexpected
    module by module as torch visits them), the others sorted (so are the names in the
    direct path's strict-failure message, the library's). Stored bools are written as
    torch's copy_ writes them, 0 or 1 (a stored byte 2 becomes 1). A module holding
    inference tensors (made under torch.inference_mode()) is refused outside inference
    mode, unless ``assign``, before any tensor is read or written:
    ShardloadError("failed_precondition", "Error(s) in loading state_dict: inference
    tensors cannot be written outside inference mode: 'weight', 'bias' (...)"), where
    torch's load_state_dict writes them and then raises. On the direct path, raises
    ShardloadError with the PyTorch-style message when ``strict`` and keys are missing
    or unexpected, on size mismatches, and on dtype mismatches (in both modes, unlike
    torch, which converts: ``allow_cast=True`` converts between F32, F16 and BF16 on
    load; load_model converts every pair); with ``verify``, ShardloadError("data_loss",
    ...) for a tensor whose bytes differ from its recorded XXH3 (the module may then be
    partly written). With ``strict`` and keys missing or unexpected, the direct path
    writes nothing (the names are matched before anything is read), where torch's
    load_state_dict first writes the keys that match and then raises; the fallback is
    torch's load_state_dict, so there the matching keys are written and the error is
    torch's RuntimeError ("Error(s) in loading state_dict for Module: ..."). ``device``:
    as in load_file (None is cpu; a bare "cuda" where torch sees no CUDA device is
    cuda:0, whose load fails as in load_file: ShardloadError "cuda:0: no such CUDA
    device (...)").
    ``progress``: as in load_file (after an exception it raises, even at its last
    call, the module may be written in part or in whole). ``pool``: a HostMemoryPool
    for the fallback's temporary arena (the direct path allocates nothing but scratch
    copies of tied entries that several checkpoint tensors could feed, copied in
    state_dict order afterwards as torch does); checked for being open either way.
    ``assign``: as torch's ``load_state_dict(assign=True)`` (torch 2.1 and later): the
    module's entries become the loaded tensors, zero-copy views of the loader's arena
    on ``device``, instead of being written into; what a model built on the meta device
    needs. Tied entries stay one object, the last loaded name's in module order.
    ShardloadError ("unimplemented") on an older torch. ``cancel``: as in load_file
    (the module may then be partly written). ``strict_index``: as in load_file."""
    _device_string(device)  # a bad device is refused before the file is opened
    with _Checkpoint(filename, cancel, strict_index, verify) as ckpt:
        if not assign:
            refused = _inference_entries(module.state_dict(keep_vars=True))
            if refused:
                raise ShardloadError(
                    "failed_precondition",
                    "Error(s) in loading state_dict: inference tensors cannot be written "
                    "outside inference mode: %s (made under torch.inference_mode(); load "
                    "under it too)" % ", ".join(_quote_name(k) for k in refused))
        return _load_state_dict(module, ckpt, strict, device, renames=renames,
                                allow_cast=allow_cast, threads=threads, verify=verify,
                                progress=progress, pool=pool, assign=assign, cancel=cancel)


def _needs_torch_load(module, state):
    """Whether only torch's own load_state_dict loads ``module`` as torch would: a
    module that overrides load_state_dict / _load_from_state_dict (BatchNorm fills in a
    missing num_batches_tracked there) or has load_state_dict hooks. Writing into
    parameter storage directly would skip that code (load_model's concern). Extra state
    (_has_extra_state) is not checked here: _load_state_dict, which load_model calls,
    takes torch's path for it itself."""
    torch = _torch()
    base = torch.nn.Module
    if type(module).load_state_dict is not base.load_state_dict:
        return True
    for m in module.modules():
        if type(m)._load_from_state_dict is not base._load_from_state_dict:
            return True
        if getattr(m, "_load_state_dict_pre_hooks", None) or \
                getattr(m, "_load_state_dict_post_hooks", None):
            return True
    return False


def _state_is_module_storage(module, state):
    """Whether ``state`` (``module.state_dict(keep_vars=True)``) holds exactly the
    module's own storage: every tensor entry is the very object its module registered
    under that name in ``_parameters`` / ``_buffers`` (found by walking the named modules
    with the key's prefix; tied parameters are found under each of their names), and no
    persistent parameter or buffer is left out. Non-persistent buffers are not state
    entries; entries that are not tensors (extra state) are left to the caller. One dict
    lookup per entry: the direct path writes into ``state``'s tensors, which must be the
    module's, not copies a state_dict override or hook made."""
    torch = _torch()
    expected = {}
    for prefix, m in module.named_modules(remove_duplicate=False):
        dot = prefix + "." if prefix else ""
        for name, t in m._parameters.items():
            if t is not None:
                expected[dot + name] = t
        non_persistent = getattr(m, "_non_persistent_buffers_set", ())
        for name, t in m._buffers.items():
            if t is not None and name not in non_persistent:
                expected[dot + name] = t
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and expected.get(key) is not value:
            return False
    return all(key in state for key in expected)


def _inference_entries(state):
    """Names of ``state``'s entries that are inference tensors (made under
    torch.inference_mode()) when inference mode is off: torch refuses to write them
    then ("Inplace update to inference tensor outside InferenceMode is not allowed").
    Empty inside inference mode, where writing them is allowed."""
    torch = _torch()
    if torch.is_inference_mode_enabled():
        return []
    return [k for k, t in state.items() if isinstance(t, torch.Tensor) and
            not _is_uninitialized(t) and t.is_inference()]


def _has_extra_state(module):
    """Whether a submodule of ``module`` keeps extra state (overrides get_extra_state
    or set_extra_state): its ``_extra_state`` entry is a value get_extra_state made,
    not storage of the module, so writing into it would change nothing; only torch's
    load_state_dict hands the loaded value to set_extra_state."""
    base = _torch().nn.Module
    for m in module.modules():
        for attr in ("get_extra_state", "set_extra_state"):
            if getattr(type(m), attr, None) is not getattr(base, attr, None):
                return True
    return False


def _load_state_dict(module, ckpt, strict, device, *, renames, allow_cast, threads, verify,
                     progress, pool, torch_path=False, assign=False, cancel=None,
                     metadata_aliases=True, io="auto"):
    """load_state_dict_into on an open checkpoint (``io``: the loader's io mode);
    ``torch_path`` (implied by ``assign``) forces the fallback through torch's
    load_state_dict. The report's "missing" and "unexpected" come in the order torch's
    load_state_dict gives them, on either path: missing in the module's state_dict
    order, unexpected as _torch_unexpected_order puts the file's keys.
    ``metadata_aliases``: fill entries the file lacks from save_model's tie notes in
    __metadata__ (load_model does not: safetensors ties through the model only)."""
    torch = _torch()
    if assign:
        import inspect
        if "assign" not in inspect.signature(torch.nn.Module.load_state_dict).parameters:
            raise ShardloadError("unimplemented", "assign=True needs torch 2.1 or later, not %s"
                                 % torch.__version__)
        torch_path = True
    dev = torch.device(_device_string(device))
    if dev.type == "cuda" and dev.index is None:
        # A bare "cuda" that torch, seeing no device, left unresolved (_device_string):
        # cuda:0, as the library reads it, whose load then fails as load_file's does
        # (ShardloadError "cuda:0: no such CUDA device (...)").
        dev = torch.device("cuda", 0)
    state = module.state_dict(keep_vars=True)
    # The direct path writes into the tensors of ``state``: only when they are the
    # module's own parameters and buffers (not copies that a state_dict override or
    # hook returns, and with no name left out), each a contiguous tensor on ``dev``.
    direct = not torch_path and not _has_extra_state(module) and \
        all(isinstance(t, torch.Tensor) and not _is_uninitialized(t) and
            t.is_contiguous() and t.device == dev for t in state.values()) and \
        _state_is_module_storage(module, state)
    if direct:
        lists = _load_into_state(ckpt, state, dev, strict=strict, renames=renames,
                                 allow_cast=allow_cast, threads=threads, verify=verify,
                                 progress=progress, pool=pool, cancel=cancel,
                                 metadata_aliases=metadata_aliases, io=io)
        if lists is not None:  # the library sorts them; torch's order instead
            position = {k: i for i, k in enumerate(state)}
            lists["missing"] = sorted(lists["missing"],
                                      key=lambda k: position.get(k, len(position)))
            lists["unexpected"] = _torch_unexpected_order(module, ckpt.offset_order(),
                                                          lists["unexpected"])
        return lists
    with _lib.Options(device=str(dev), strict=False, renames=renames, threads=threads,
                      io=io, verify=verify, progress=progress, pool=pool,
                      cancel=cancel) as options:
        loaded = _load_all(ckpt, options)
    if not renames and metadata_aliases:
        # save_model's tie notes (dropped name -> kept name), as the direct path reads
        # them: only for a model entry of the same shape that the file lacks, and not
        # for one sharing memory inexactly with the kept entry (_unsafe_note).
        grouped = set().union(*_overlapping_groups(state))
        for key, value in ckpt.metadata().items():
            if key in state and key not in loaded and value in loaded and \
                    isinstance(state[key], torch.Tensor) and \
                    loaded[value].shape == state[key].shape and \
                    not _unsafe_note(state, grouped, key, value):
                loaded[key] = loaded[value]
    if assign:
        tied = _tied_names(module)
        result = module.load_state_dict(loaded, strict=strict, assign=True)
        _retie(module, tied, loaded)
    else:
        result = module.load_state_dict(loaded, strict=strict)
    # Matched: the module's entries torch did not report missing, and the file's keys
    # it took (a state_dict hook may leave a name out of ``state`` that torch loads).
    taken = set(loaded) - set(result.unexpected_keys)
    return {"matched": sorted((set(state) | taken) - set(result.missing_keys)),
            "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys), "mismatched": [], "renamed": []}


def _torch_unexpected_order(module, keys, unexpected):
    """``unexpected`` (names among ``keys``) in the order torch's load_state_dict lists
    them for a state_dict whose keys come in ``keys`` order. Torch visits the modules
    depth first (a module, then its non-None children in registration order) and each
    lists the keys it does not know: first ``<prefix>_extra_state`` (when it has no
    extra state), then the others in state_dict order. A key is listed by the deepest
    module its dotted prefix names. Names torch never visits (under a child that is
    None) come last, in ``keys`` order. (torch 1.x also leaves out a key that extends
    a parameter name, "w.x", or names a child module; both are listed here, where
    torch 2.x puts them.)"""
    visit_order = {}

    def visit(m, prefix):
        visit_order[prefix] = len(visit_order)
        for name, child in m._modules.items():
            if child is not None:
                visit(child, prefix + name + ".")

    visit(module, "")
    position = {k: i for i, k in enumerate(keys)}
    rank = {}
    for key in unexpected:
        m, prefix = module, ""
        while True:
            head, dot, _ = key[len(prefix):].partition(".")
            if not dot or head not in m._modules:
                break
            m, prefix = m._modules[head], prefix + head + "."
            if m is None:
                break
        where = visit_order.get(prefix, len(visit_order)) if m is not None else \
            len(visit_order)
        rank[key] = (where, 0 if key == prefix + "_extra_state" else 1,
                     position.get(key, len(position)), key)
    return sorted(unexpected, key=rank.__getitem__)


def _is_uninitialized(t):
    """Whether ``t`` is a lazy module's parameter or buffer not yet given a shape (torch
    shapes it in load_state_dict; most tensor methods raise on it)."""
    mixin = getattr(_torch().nn.parameter, "UninitializedTensorMixin", None)
    return mixin is not None and isinstance(t, mixin)


def _tied_names(module):
    """Groups of parameter or buffer names that are one object in ``module`` (tied
    weights: ``head.weight = embed.weight``), each group as a list of names."""
    groups = {}
    # named_modules(remove_duplicate=False) is in torch 1.13; named_parameters' is not.
    for prefix, m in module.named_modules(remove_duplicate=False):
        dot = prefix + "." if prefix else ""
        for kind, members in (("p", m._parameters), ("b", m._buffers)):
            for name, t in members.items():
                if t is not None:
                    groups.setdefault((kind, id(t)), []).append(dot + name)
    return [names for names in groups.values() if len(names) > 1]


def _retie(module, groups, loaded):
    """Make each group of names one object again (after load_state_dict(assign=True),
    which gives every name its own Parameter): the object of the group's last name
    (in module order) that ``loaded`` holds, as torch's copying load leaves the last
    entry's values in shared storage; the first name's when none was loaded."""
    for names in groups:
        fed = [n for n in names if n in loaded]
        keep = fed[-1] if fed else names[0]
        owner, _, attr = keep.rpartition(".")
        kept = getattr(module.get_submodule(owner) if owner else module, attr)
        for name in names:
            if name == keep:
                continue
            owner, _, attr = name.rpartition(".")
            setattr(module.get_submodule(owner) if owner else module, attr, kept)


def _bump_version(t):
    """Tell autograd that ``t``'s memory was written (as an in-place op would): bump its
    version counter, so that a backward through a graph that saved the old values
    raises "modified by an inplace operation" instead of using the new ones, as after
    torch's load_state_dict (whose copy_ bumps it). torch 2.x has
    torch.autograd.graph.increment_version; on 1.13 an in-place op on an empty view,
    which shares the counter and touches no memory, does the same. Inference tensors
    keep no counter (and refuse in-place ops outside inference mode): left alone."""
    torch = _torch()
    if getattr(t, "is_inference", None) is not None and t.is_inference():
        return
    increment = getattr(getattr(torch.autograd, "graph", None), "increment_version", None)
    if increment is not None:
        increment(t)
        return
    with torch.no_grad():
        t.as_strided([0], [1]).zero_()


def _tie_notes(ckpt):
    """save_model's tie notes in ``ckpt``: dropped name -> kept name, for each metadata
    entry whose value names a stored tensor and whose key does not (the entries the
    loader reads as notes)."""
    return {k: v for k, v in ckpt.metadata().items() if v in ckpt.index and k not in ckpt.index}


def _unsafe_note(state, grouped, key, value):
    """Whether filling entry ``key`` of ``state`` with stored tensor ``value`` (a tie
    note) could write wrong values into the module: ``key`` shares memory with other
    entries (it is in ``grouped``, the names of _overlapping_groups) but is not an exact
    tie of the entry ``value`` names. A transposed view of ``value`` filled with its
    values would transpose it through the view; an entry sharing memory with nothing
    (an untied model) or an exact tie is safe."""
    if key not in grouped:
        return False
    return value not in state or not _is_exact_tie(state[key], state[value])


def _load_into_state(ckpt, state, dev, *, strict, renames, allow_cast, threads, verify,
                     progress, pool, cancel, metadata_aliases=True, io="auto"):
    """load_state_dict_into's direct path: the loader writes each entry of ``state``
    (contiguous, on ``dev``) in place. Returns the report lists. Every entry matched
    gets its autograd version bumped (_bump_version), an empty one too, as torch's
    copy_ bumps it; after a failure that may have written part of the module, every
    entry does."""
    torch = _torch()
    # Entries sharing memory (tied weights) that several checkpoint tensors may feed:
    # the loader writes its targets in no set order, torch in state_dict order (the
    # last entry wins). Such entries load into scratch tensors that are copied in
    # state_dict order afterwards.
    groups = _overlapping_groups(state)
    grouped = set().union(*groups) if groups else set()
    # Tie notes the loader may fill entries from. The loader reads them itself
    # (sl_options_set_metadata_aliases) unless some entries share memory inexactly;
    # then its reading is turned off and the safe notes (_unsafe_note) are passed as
    # aliases instead.
    aliases = []
    notes = _tie_notes(ckpt) if metadata_aliases and groups else {}
    if notes and any(not _is_exact_tie(state[a], state[b])
                     for group in groups for a in group for b in group if a < b):
        metadata_aliases = False
        if not renames:  # with renames, which entry a note feeds is the loader's call
            aliases = [(k, v) for k, v in notes.items()
                       if k in state and "\0" not in k + v and
                       not _unsafe_note(state, grouped, k, v) and
                       list(ckpt.shapes[ckpt.index[v]]) == _stored_shape(state[k])]
        notes = dict(aliases)
    options = _lib.Options(device=str(dev), strict=strict, renames=renames,
                           aliases=aliases, allow_cast=allow_cast, threads=threads, io=io,
                           verify=verify, progress=progress, pool=pool, cancel=cancel,
                           metadata_aliases=metadata_aliases)
    l = _lib.lib()
    try:
        keep = []
        scratch = {}
        # Names a checkpoint tensor can feed: its own, and tie notes (needed only when
        # some entries share memory).
        fed = set(ckpt.names) | set(notes) if groups else set()
        for group in groups:
            if renames or len(group & fed) > 1:
                for name in group:
                    t = state[name]  # contiguous, as every entry the loader writes
                    scratch[name] = _torch_empty(t.shape, t.dtype, t.device)
        targets = (_lib.Target * max(len(state), 1))()
        dtype_names = {}  # torch dtype -> its safetensors name, encoded once per load
        for i, (name, t) in enumerate(state.items()):
            raw = name.encode("utf-8", "surrogateescape")
            shape = _lib.shape_array(_stored_shape(t))
            keep.append((raw, shape))
            dname = dtype_names.get(t.dtype)
            if dname is None:
                dname = dtype_names[t.dtype] = _dtype_name(t.dtype).encode()
            dst = scratch.get(name, t)
            # Zero-element entries get a valid dummy address: nothing is written.
            targets[i] = _lib.Target(raw, len(raw), dname, shape, t.dim(), None,
                                     dst.data_ptr() if t.numel() else _EMPTY_ADDRESS)
        if dev.type == "cuda" and state:  # no entries: no work of torch's to wait for
            # The loader's copies run on its own streams, which do not wait for work
            # torch queued on its streams: kernels still writing these parameters (a
            # model initialized on the GPU) or still reading a block the caching
            # allocator just handed to a scratch tensor. Let that work finish first.
            torch.cuda.synchronize(dev)
        report = ctypes.c_void_p()
        try:
            with torch.no_grad(), _cuda_device_guard(dev):
                status = l.sl_load_into(ckpt.handle, targets, len(state), options.handle,
                                        ctypes.byref(report))
            lists = _lib.report_lists(report) if report.value else None
            load_warnings = _lib.report_warnings(report) if status == 0 else []
        finally:
            l.sl_report_free(report)  # NULL: no-op
        if status != 0 or options.error is not None:
            # A failed match (invalid_argument: missing, unexpected or mismatched keys)
            # writes nothing; any other failure (I/O, verify, cancel, an exception from
            # progress) may have written part of the module.
            if options.error is not None or l.sl_status_name(status) != b"invalid_argument":
                for t in state.values():
                    _bump_version(t)
        options.check(status)
        matched = set(lists["matched"])
        if scratch:
            with torch.no_grad():
                for name in state:
                    if name in scratch and name in matched:
                        state[name].copy_(scratch[name])  # bumps the version itself
        for name in matched:
            if name not in scratch:
                _bump_version(state[name])  # also an empty one, as copy_ bumps it
        with torch.no_grad():
            for name in matched:
                t = state[name]
                if t.dtype == torch.bool and t.numel():
                    # Stored bools are bytes; any nonzero one is True. torch's copy_
                    # writes 0/1, and so must a load (a 2 would compare unequal to True).
                    t.data.view(torch.uint8).clamp_(max=1)
        _warn_load(load_warnings)
        return lists
    finally:
        options.close()


_CASTABLE = {"F32", "F16", "BF16"}


def load_model(model, filename, strict=True, device="cpu", *, verify=False, progress=None,
               pool=None, assign=False, cancel=None, backend=_NO_BACKEND, strict_index=True):
    """Like safetensors.torch.load_model: load into ``model``, returning
    ``(missing, unexpected)``; tied weights (entries sharing storage in the model) are
    not reported missing. As in safetensors, the tie notes save_model writes to
    __metadata__ fill nothing: an untied model whose file lacks an entry reports it
    missing. A size mismatch raises torch's own RuntimeError ("size mismatch for ...",
    after the other keys were loaded, as safetensors does), in either ``strict``.
    Modules with extra state (get_extra_state / set_extra_state) get it through
    set_extra_state. ``unexpected`` comes in
    the reference's order: as torch's load_state_dict lists the file's keys (module by
    module, each module's in file order), then tied names the file also holds. A
    tensor stored in another dtype than its model entry is converted, as torch's
    load_state_dict does (F32/F16/BF16 by the loader, others through torch). With
    ``strict``, missing or unexpected keys raise RuntimeError in safetensors' wording (after the
    matching keys were loaded, as safetensors does). ``device``, ``verify``,
    ``progress``: as in load_file; ``pool``, ``assign`` (not in safetensors: a model
    built on the meta device takes the loaded tensors themselves, zero-copy),
    ``cancel``: as in load_state_dict_into. ``backend``: as in load_file (safetensors
    0.8's "mmap" or "pread": the loader's io mode of that name). ``strict_index``: as
    in load_file.
    Writing straight into the model's storage, the version counter of every tensor
    written is bumped as torch's copy_ bumps it (a backward through a graph that saved
    the old values raises instead of using the new ones; an empty tensor's too).
    Refused as safetensors refuses them, with its RuntimeErrors, before any tensor is
    loaded: an entry that overlaps no other and does not cover its storage (a slice of
    a fused tensor, an expanded buffer: "... None is covering the entire storage ..."),
    a group of overlapping entries none of which covers it, and an entry sharing its
    storage that cannot be flattened (torch's "view size is not compatible ...").
    Inference tensors (made under torch.inference_mode()) outside inference mode load
    through torch's load_state_dict, whose RuntimeError ("... Inplace update to
    inference tensor outside InferenceMode is not allowed ...") comes after it wrote
    them, as in safetensors."""
    io = _backend_io(backend)
    _device_string(device)  # a bad device is refused before the file is opened
    model_state = model.state_dict()
    with _Checkpoint(filename, cancel, strict_index, verify) as ckpt:
        file_keys = set(ckpt.names)
        _check_shared_flatten(model_state)  # safetensors' view error, as in save_model
        to_removes = _remove_duplicate_names(model_state, preferred_names=file_keys,
                                             module=model, singles=True)
        # Through torch's own load_state_dict when the model has load hooks (torch runs
        # them, safetensors' load_model too), or for an entry fed from another dtype the
        # loader does not convert (F32/F16/BF16 it does; an F32 value for an int64
        # buffer goes through torch's copy_).
        torch_path = _needs_torch_load(model, model_state)
        # Inference tensors outside inference mode: torch's load_state_dict writes what
        # it can and raises its RuntimeError for them, as safetensors' load_model does.
        torch_path = torch_path or bool(_inference_entries(model_state))
        for name, t in model_state.items():
            k = ckpt.index.get(name)
            if k is None or not hasattr(t, "dtype"):
                continue
            if _is_uninitialized(t):
                torch_path = True  # a lazy module: torch gives it its shape
                continue
            try:
                wanted = _dtype_name(t.dtype)
            except ShardloadError:  # no safetensors dtype: torch words the error
                wanted = None
            stored = ckpt.dtypes[k]
            if stored != wanted and not (stored in _CASTABLE and wanted in _CASTABLE):
                torch_path = True
            if list(ckpt.shapes[k]) != list(_stored_shape(t)):
                # A size mismatch: torch's load_state_dict loads the other keys and
                # raises its own error ("size mismatch for ..."), as safetensors does.
                # This also covers a 1-dim value for a 0-dim entry ([N] != []), which
                # torch loads (its 0.3 compatibility rule: a [1] value in 2.x, element 0
                # of any [N] in 1.x).
                torch_path = True
        report = _load_state_dict(model, ckpt, False, device, renames=(), allow_cast=True,
                                  threads=0, verify=verify, progress=progress, pool=pool,
                                  torch_path=torch_path, assign=assign, cancel=cancel,
                                  metadata_aliases=False, io=io)
    missing = set(report["missing"])
    unexpected = list(report["unexpected"])
    for group in to_removes.values():
        for name in group:
            if name not in missing:
                if name in file_keys:
                    unexpected.append(name)
            else:
                missing.remove(name)
    if strict and (missing or unexpected):
        missing_keys = ", ".join('"%s"' % k for k in sorted(missing))
        unexpected_keys = ", ".join('"%s"' % k for k in sorted(unexpected))
        error = "Error(s) in loading state_dict for %s:" % model.__class__.__name__
        if missing:
            error += "\n    Missing key(s) in state_dict: %s" % missing_keys
        if unexpected:
            error += "\n    Unexpected key(s) in state_dict: %s" % unexpected_keys
        raise RuntimeError(error)
    return missing, unexpected


# ----------------------------------------------------------------------------- saving

def _check_tensor_dict(tensors):
    """safetensors' checks of the tensors to save, with its exception types and words:
    a dict of dense torch tensors."""
    torch = _torch()
    if not isinstance(tensors, dict):
        raise ValueError("Expected a dict of [str, torch.Tensor] but received %s" %
                         type(tensors))
    sparse = []
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError("Key `%s` is invalid, expected torch.Tensor but received %s" %
                             (k, type(v)))
        if v.layout != torch.strided:
            sparse.append(k)
    if sparse:
        raise ValueError(
            "You are trying to save a sparse tensors: `%s` which this library does not support."
            " You can make it a dense tensor before saving with `.to_dense()` but be aware this"
            " might make a much larger file than needed." % sparse)


def _storage_of(t):
    """(data_ptr, nbytes) of a tensor's storage; (0, 0) when it has none (meta)."""
    try:
        storage = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
        nbytes = storage.nbytes() if hasattr(storage, "nbytes") else \
            storage.size() * t.element_size()
        return storage.data_ptr(), nbytes
    except (NotImplementedError, RuntimeError):
        return 0, 0


def _overlapping_groups(tensors, singles=False):
    """Sets of names whose tensors overlap in memory (safetensors' _find_shared_tensors
    followed by its filter: same storage and intersecting byte ranges), in its order:
    storages by their first name in ``tensors``' order, then by address within one.
    ``singles``: also a set of one name for each tensor (with memory) that overlaps no
    other, as safetensors 0.8 lists them."""
    by_storage = {}
    torch = _torch()
    for k, v in tensors.items():
        if not torch.is_tensor(v):
            continue  # extra state that is not a tensor (get_extra_state's dict)
        if _is_uninitialized(v):
            continue  # a lazy module's entry: no memory yet
        ptr, nbytes = _storage_of(v)
        if v.device.type != "meta" and ptr != 0 and nbytes != 0:
            by_storage.setdefault((v.device, ptr, nbytes), []).append(k)
    groups = []
    for names in by_storage.values():
        if len(names) < 2:
            if singles:
                groups.append(set(names))
            continue
        areas = []
        for name in names:
            t = tensors[name]
            stop = t.data_ptr() + _span_bytes(t) if t.nelement() else t.data_ptr()
            areas.append((t.data_ptr(), stop, name))
        areas.sort()
        current = {areas[0][2]}
        last_stop = areas[0][1]
        for start, stop, name in areas[1:]:
            if start >= last_stop:
                if len(current) > 1 or singles:
                    groups.append(current)
                current = {name}
            else:
                current.add(name)
            last_stop = stop
        if len(current) > 1 or singles:
            groups.append(current)
    return groups


def _check_shared_flatten(tensors):
    """save_model's refusal of a model where an entry sharing its storage with another
    is a view that cannot be flattened (a transpose, every other row): safetensors
    flattens each member of a shared storage with ``view(-1)`` to find its end, and
    torch's RuntimeError ("view size is not compatible with input tensor's size and
    stride ...") ends the save. Raised here the same way, torch's own error, before
    anything is written: dropping such an entry with a tie note would have
    load_state_dict_into fill it with the kept tensor's values through the view."""
    by_storage = {}
    torch = _torch()
    for k, v in tensors.items():
        if not torch.is_tensor(v) or _is_uninitialized(v):
            continue
        ptr, nbytes = _storage_of(v)
        if v.device.type != "meta" and ptr != 0 and nbytes != 0:
            by_storage.setdefault((v.device, ptr, nbytes), []).append(v)
    for members in by_storage.values():
        if len(members) > 1:
            for v in members:
                if v.nelement():
                    v.view(-1)


def _span_bytes(t):
    """Bytes from a strided tensor's first element to the end of its last one."""
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return (last + 1) * t.element_size()


def _check_save_file_tensors(tensors):
    """save_file's refusals, as safetensors words them: shared memory (RuntimeError) and
    non-contiguous tensors (ValueError)."""
    failing = _overlapping_groups(tensors)
    if failing:
        raise RuntimeError(
            "\n            Some tensors share memory, this will lead to duplicate memory on disk and "
            "potential differences when loading them again: %s.\n            A potential way "
            "to correctly save your model is to use `save_model`.\n            More information "
            "at https://huggingface.co/docs/safetensors/torch_shared_tensors\n            "
            % failing)
    for k, v in tensors.items():
        if not v.is_contiguous():
            raise ValueError(
                "You are trying to save a non contiguous tensor: `%s` which is not allowed. It "
                "either means you are trying to save tensors which are reference of each other "
                "in which case it's recommended to save only the full tensors, and reslice at "
                "load time, or simply call `.contiguous()` on your tensor to pack it before "
                "saving." % k)


def _views(tensors):
    """TensorView array for a dict of tensors (checked by _check_tensor_dict), plus the
    objects that keep it valid. Tensors are copied to host memory and made contiguous
    where they are not; lazy conjugate and negative views (``x.conj()`` of a complex
    tensor, ``x._neg_view()``), whose memory holds x's values, are materialized (the
    reference writes x's bytes for them)."""
    keep = []
    views = (_lib.TensorView * max(len(tensors), 1))()
    for i, (name, t) in enumerate(tensors.items()):
        c = t.detach().to("cpu")
        if getattr(c, "is_conj", None) is not None and c.is_conj():
            c = c.resolve_conj()
        if getattr(c, "is_neg", None) is not None and c.is_neg():
            c = c.resolve_neg()
        c = c.contiguous()
        raw = name.encode("utf-8", "surrogateescape")
        shape = _lib.shape_array(_stored_shape(c))
        dname = _dtype_name(c.dtype).encode()
        keep.append((c, raw, shape, dname))
        views[i] = _lib.TensorView(raw, len(raw), dname, shape, c.dim(),
                                   c.data_ptr() if c.numel() else None)
    return views, keep


def _check_names(tensors):
    """TypeError, in safetensors' words, for a tensor name that is not a str."""
    for k in tensors:
        if not isinstance(k, str):
            raise TypeError("argument 'tensor_dict': %s is not an instance of 'str'" %
                            _type_phrase(k))


def _type_phrase(value):
    # pyo3's wording in safetensors' TypeErrors: "'None'" or "'int' object".
    return "'None'" if value is None else "'%s' object" % type(value).__name__


def _quote_name(name):
    """'name' for a message: quote and backslash escaped, control characters and DEL as
    \\xHH, as the library quotes names."""
    out = []
    for c in name:
        if c in "'\\":
            out.append("\\" + c)
        elif ord(c) < 32 or ord(c) == 127:
            out.append("\\x%02x" % ord(c))
        else:
            out.append(c)
    return "'" + "".join(out) + "'"


def _metadata_arrays(metadata):
    """C arrays for a str -> str dict; TypeError worded like safetensors otherwise."""
    _check_metadata_type(metadata)
    items = list(metadata.items()) if metadata is not None else []
    for k, v in items:
        for x in (k, v):
            if not isinstance(x, str):
                raise TypeError("argument 'metadata': %s is not an instance of 'str'" %
                                _type_phrase(x))
    # The C API takes NUL-terminated strings: refuse what it would silently cut short.
    for k, v in items:
        if "\0" in k:
            raise ValueError("metadata key %s holds a NUL character, which shardload cannot "
                             "write" % _quote_name(k))
        if "\0" in v:
            raise ValueError("metadata value of %s holds a NUL character, which shardload "
                             "cannot write" % _quote_name(k))
    keys = (ctypes.c_char_p * max(len(items), 1))(*[k.encode() for k, _ in items])
    values = (ctypes.c_char_p * max(len(items), 1))(*[v.encode() for _, v in items])
    return keys, values, len(items)


def _is_exact_tie(t, kept):
    """Whether ``t`` is the very tensor ``kept`` is under another name (tied weights):
    the same storage, storage offset, dtype, shape and stride, and the same lazy
    conjugate / negative bits (whose values _views writes). A transposed, sliced or
    reinterpreted view of ``kept``'s memory is not: it holds other values."""
    def lazy_bits(x):
        return [getattr(x, attr)() if hasattr(x, attr) else False
                for attr in ("is_conj", "is_neg")]

    return (t.device == kept.device and _storage_of(t) == _storage_of(kept) and
            t.storage_offset() == kept.storage_offset() and t.dtype == kept.dtype and
            t.shape == kept.shape and t.stride() == kept.stride() and
            lazy_bits(t) == lazy_bits(kept))


def _check_metadata_type(metadata):
    """save_file's TypeError, in safetensors' words, for ``metadata`` neither None nor a
    dict."""
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError("argument 'metadata': %s is not an instance of 'dict'" %
                        _type_phrase(metadata))


def _drop_tied_names(tensors, to_removes, metadata, exact_ties_only=False):
    """(tensors, metadata) without the names ``to_removes`` (_remove_duplicate_names:
    kept name -> names) drops, each recorded in the metadata as a "dropped -> kept" note
    (a user entry of that name wins), as safetensors' save_model does. Both are new
    dicts when a name is dropped; the caller's are left alone. ``exact_ties_only``:
    drop only the names whose tensor is an exact tie of the kept one (_is_exact_tie);
    the other members of a group stay, to be written as their own contiguous copies.
    A metadata that is neither None nor a dict raises save_file's TypeError first."""
    _check_metadata_type(metadata)
    dropped = [(keep, name) for keep, names in to_removes.items() for name in names
               if not exact_ties_only or _is_exact_tie(tensors[name], tensors[keep])]
    if not dropped:
        return tensors, metadata
    tensors = dict(tensors)
    metadata = dict(metadata) if metadata is not None else {}
    for keep, name in dropped:
        metadata.setdefault(name, keep)
        del tensors[name]
    return tensors, metadata


def _align_flags(align):
    """The SL_SAVE_ALIGN_ flag for a save's ``align``: 8 (the reference's layout, no
    flag), 64 or 4096. TypeError for a non-int (bool included), ValueError otherwise."""
    if not isinstance(align, int) or isinstance(align, bool):
        raise TypeError("align must be an int, not %s" % type(align).__name__)
    flags = {8: 0, 64: _lib.SL_SAVE_ALIGN_64, 4096: _lib.SL_SAVE_ALIGN_4096}.get(align)
    if flags is None:
        raise ValueError("align must be 8, 64 or 4096, got %d" % align)
    return flags


def save_file(tensors, filename, metadata=None, *, checksums=False, align=8):
    """Write ``tensors`` (dict name -> torch tensor) to one .safetensors file atomically,
    as safetensors.torch.save_file does: the same bytes when ``metadata`` has at most
    one key (the reference writes several keys in hash order, this writer sorts them;
    the parsed metadata is the same). ``metadata``: a str -> str dict, written as
    ``__metadata__`` (an empty dict writes ``{}``, None writes none); other types raise
    TypeError as safetensors does. ``checksums`` (not in safetensors): also record each
    tensor's XXH3 as ``shardload.xxh3.<name>`` metadata, for ``verify=True`` loads.
    ``align`` (not in safetensors): 8 (default) writes safetensors' layout; 64 or 4096
    pads the header with spaces so the data section starts on that boundary, which
    every reader accepts and which makes loads into aligned memory faster
    (docs/ARCHITECTURE.md "File phase"); other values raise ValueError.
    Refused like safetensors does: a non-dict or non-tensor values (ValueError), sparse
    or non-contiguous tensors (ValueError), tensors sharing memory (RuntimeError; use
    save_model). Tensors on a GPU are copied to host memory first."""
    _check_tensor_dict(tensors)
    _check_save_file_tensors(tensors)
    _check_names(tensors)  # safetensors checks the names before the metadata
    align_flags = _align_flags(align)
    keys, values, count = _metadata_arrays(metadata)
    views, keep = _views(tensors)
    flags = (0 if metadata is None else _lib.SL_SAVE_EMPTY_METADATA) | \
        (_lib.SL_SAVE_CHECKSUMS if checksums else 0) | align_flags
    _lib.check(_lib.lib().sl_save_file_ex(_path_bytes(filename), views, len(tensors), keys,
                                          values, count, flags))
    del keep


def save(tensors, metadata=None, *, checksums=False, align=8):
    """Like safetensors.torch.save: the bytes of the .safetensors file that
    ``save_file(tensors, path, metadata, checksums=checksums, align=align)`` writes. Unlike
    safetensors, which builds them in memory, they are written to a temporary file
    under ``tempfile.gettempdir()`` (which needs room for them: ShardloadError
    "resource_exhausted"/"data_loss" from the writer otherwise), read back and removed.
    Refuses what save_file refuses; errors name ``<bytes>``, not the temporary file."""
    return _save_bytes(lambda path: save_file(tensors, path, metadata=metadata,
                                              checksums=checksums, align=align))


def _save_bytes(save_path):
    """The bytes save_path(path) writes to a file in a temporary folder (removed after);
    errors name ``<bytes>``, not the temporary file."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "tensors.safetensors")
        try:
            save_path(path)
        except ShardloadError as e:  # name the bytes, not the temporary file
            raise ShardloadError(e.code, e.message.replace(path, "<bytes>")) from None
        with open(path, "rb") as f:
            return f.read()


def save_sharded(tensors, folder, max_shard_size="5GB", metadata=None, prefix="model", *,
                 checksums=False, align=8):
    """Write a huggingface_hub-style sharded checkpoint into ``folder`` (made, parents
    too, when missing, as huggingface_hub's save_torch_state_dict makes it):
    ``<prefix>-0000k-of-0000n.safetensors`` plus ``<prefix>.safetensors.index.json``,
    or ``<prefix>.safetensors`` alone when one shard suffices. ``max_shard_size``: an
    int (bytes) or text such as "5GB", "500MB", "2GiB". ``metadata`` (str -> str) goes
    to the index's "metadata" next to total_size, each shard's ``__metadata__`` being
    {"format": "pt"}; with one shard it is merged into the file's ``__metadata__`` over
    {"format": "pt"}. A "total_size" key, which huggingface_hub lets replace the
    index's, is refused when an index is written (ShardloadError "invalid_argument",
    "index metadata key 'total_size' is reserved"): the index's total_size is the
    writer's count of the shards' tensor bytes, which shardload's loader checks (and
    warns about when it disagrees); with one shard it is written like any other key.
    ``max_shard_size`` strings ending in TB/GB/MB/KB (any case) are
    read as huggingface_hub reads them (powers of ten, a float before the unit, its
    ValueErrors); others ("2GiB", "1000", "600B") as the library reads them. Every
    invalid size raises ValueError naming it, before anything is written (0 or less,
    text neither reads: "invalid byte size '1K': unknown unit 'K' ..."); float, None
    and other types raise TypeError (_shard_size_text). ``checksums``: record
    each tensor's XXH3 in the index and, per
    shard, in that shard's ``__metadata__``. ``align``: as in save_file, for every
    shard. Tensors sharing memory are grouped as
    save_model groups them: each group keeps its alphabetically first name among those
    covering the whole storage, and a group where no tensor covers the storage raises
    save_model's RuntimeError. Tied weights (names of the very tensor the kept one is:
    same storage, offset, dtype, shape and stride) are written once, as
    huggingface_hub's save_torch_state_dict and save_model do: the dropped names go to
    the metadata as "dropped -> kept" notes (a user entry of that name wins), which
    load_state_dict_into and the C API read back. Other members of a group (a
    transposed or partial view of the kept tensor) hold other values: each is written
    as its own contiguous copy, as non-contiguous tensors are. When the folder holds
    another checkpoint that a load of the folder would take (or fail on) instead of
    this one, the save succeeds and warns (ShardloadWarning "<folder>: also holds
    <file> of another checkpoint, so a load of the folder will not load the new
    <entry>; load it by its path, ...")."""
    _check_tensor_dict(tensors)
    _check_names(tensors)
    if not isinstance(prefix, str):
        raise TypeError("prefix must be a str, not %s" % type(prefix).__name__)
    if "\0" in prefix:
        raise ValueError("embedded null byte")
    size = _shard_size_text(max_shard_size)
    align_flags = _align_flags(align)
    tensors, metadata = _drop_tied_names(tensors, _remove_duplicate_names(tensors), metadata,
                                         exact_ties_only=True)
    keys, values, count = _metadata_arrays(metadata)
    views, keep = _views(tensors)
    os.makedirs(os.fsdecode(_path_bytes(folder)), exist_ok=True)
    status = _lib.lib().sl_save_sharded_ex(_path_bytes(folder), views, len(tensors),
                                           size.encode(), prefix.encode(), keys, values, count,
                                           (_lib.SL_SAVE_CHECKSUMS if checksums else 0) |
                                           align_flags)
    del keep
    _check_shard_size_status(status, max_shard_size)
    _lib.check(status)
    for text in _lib.lib().sl_last_save_warning().decode("utf-8", "replace").splitlines():
        warnings.warn(text, ShardloadWarning, stacklevel=2)


_HUB_SIZE_UNITS = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3}


def _check_shard_size_status(status, size):
    """ValueError when sl_save_sharded failed (``status``) because it refused
    max_shard_size ``size`` (its documented errors: invalid_argument "invalid byte size
    '...': ..." and "max_shard_size must be > 0", out_of_range "byte size '...' does not
    fit in 64 bits"), with the library's message, or for a size of 0 one that names
    ``size``. Nothing for other failures or success."""
    if status == 0:
        return
    message = _lib.lib().sl_last_error().decode("utf-8", "replace")
    if message == "max_shard_size must be > 0":
        raise ValueError("max_shard_size must be > 0, got %r" % (size,))
    if message.startswith(("invalid byte size '", "byte size '")):
        raise ValueError(message)


def _shard_size_text(size):
    """save_sharded's ``max_shard_size`` as the byte-size text the C API parses. An int
    (not a bool) as it is. A str ending (after strip(), upper-cased) in TB, GB, MB or KB
    as huggingface_hub's parse_size_to_int reads it: powers of ten, the number before
    the unit read by float() ("1.5KB", " 2kb ", "1e3KB"), int(value * multiplier) bytes,
    and its ValueErrors ("Unit ... not supported" does not arise here: other strings go
    on to the library; "Could not parse the size value from '...': ..."); ValueError too
    for a size that is not a finite count above zero, an int included ("max_shard_size
    must be > 0, got -5"). Other strings ("2GiB", "1000", "600B") go to the library,
    whose parser takes binary units, bytes and plain numbers; what it refuses
    save_sharded raises as ValueError (_check_shard_size_status). TypeError for other
    types."""
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError("max_shard_size must be an int or a str such as \"5GB\", not %s" %
                        type(size).__name__)
    if isinstance(size, int):
        if size <= 0:
            raise ValueError("max_shard_size must be > 0, got %d" % size)
        return str(size)
    text = size.strip()
    multiplier = _HUB_SIZE_UNITS.get(text[-2:].upper())
    if multiplier is None:
        if "\0" in size:  # the C API would read it cut short there
            raise ValueError("embedded null byte")
        return size
    try:
        value = float(text[:-2].strip())
    except ValueError as e:
        raise ValueError("Could not parse the size value from '%s': %s" % (text, e)) from e
    try:
        count = int(value * multiplier)
    except (OverflowError, ValueError) as e:  # inf, nan
        raise ValueError("Could not parse the size value from '%s': %s" % (text, e)) from e
    if count <= 0:
        raise ValueError("max_shard_size must be > 0, got '%s' (%d bytes)" % (size, count))
    return str(count)


def save_model(model, filename, metadata=None, force_contiguous=True):
    """Like safetensors.torch.save_model (same bytes): tied tensors are written once and
    the dropped names recorded in __metadata__ (dropped -> kept; a user entry of that
    name wins). load_model, as safetensors', ties through the model and does not read
    them; load_state_dict_into and the C API fill a missing entry from them. Without
    ties and metadata, no __metadata__
    is written. A model where an entry sharing storage with another cannot be flattened
    (a buffer that is a transpose of a parameter) raises torch's RuntimeError ("view
    size is not compatible with input tensor's size and stride ..."), as safetensors'
    save_model does, and writes nothing (a tie note for such a view would not give its
    values back). So does, with safetensors' RuntimeError ("... None is covering the
    entire storage ..."), a model with an entry or group of overlapping entries none of
    which covers its storage (a slice of a fused tensor, an expanded buffer), whatever
    ``force_contiguous`` says. ``force_contiguous=False`` leaves non-contiguous tensors
    to save_file's ValueError, extended with safetensors' hint."""
    state = model.state_dict()
    _check_tensor_dict(state)  # extra state that is not a tensor: save_file's ValueError
    _check_shared_flatten(state)
    state, metadata = _drop_tied_names(state, _remove_duplicate_names(state, singles=True),
                                       metadata)
    if force_contiguous:
        state = {k: v.contiguous() for k, v in state.items()}
    try:
        save_file(state, filename, metadata=metadata)
    except ValueError as e:
        raise ValueError(str(e) + " Or use save_model(..., force_contiguous=True), read the "
                         "docs for potential caveats.")
