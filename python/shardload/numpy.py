"""shardload.numpy: safetensors checkpoints as numpy arrays, without torch.

API compatible with the ``safetensors.numpy`` functions of the same names, plus what
shardload adds (sharded folders and indexes, parallel reads, ``verify``):

    import numpy as np
    import shardload.numpy as snp
    arrays = snp.load_file("model.safetensors")          # dict name -> np.ndarray
    arrays = snp.load_file("/models/llama")               # a sharded folder too
    snp.save_file({"w": np.zeros((2, 3), np.float32)}, "out.safetensors", metadata={"k": "v"})
    data = snp.save({"w": np.arange(4)})                  # the file's bytes
    arrays = snp.load(data)
    with shardload.safe_open("model.safetensors", framework="np") as f:
        rows = f.get_slice("embed.weight")[0:16]          # reads only those rows

numpy has a type for F64, F32, F16, I64..I8, U64..U8, BOOL and C64 (the dtypes
``safetensors.numpy`` maps). BF16 and the F8 family (F8_E4M3, F8_E5M2, F8_E8M0,
F8_E4M3FNUZ, F8_E5M2FNUZ) load and save as the types of the ml_dtypes package
(``ml_dtypes.bfloat16``, ``float8_e4m3fn``, ...; JAX depends on it) where it can be
imported. A tensor of any other dtype (F4, F6, or those without ml_dtypes) is refused
with ShardloadError("unimplemented") naming it and its file, before anything is read
(load it with the torch functions instead). Arrays are little-endian as stored,
C-contiguous and writable; those of ``load_file`` are zero-copy views of the loader's
host arena, freed when the last array that uses it is.

Where this module and safetensors.numpy differ on purpose:
- ``save_file`` / ``save`` write a non-contiguous array (a transposed or strided view)
  as its values in C order, as ``arr.tobytes()`` gives them; safetensors 0.8 writes the
  bytes of the memory under it, which are other values.
- ``get_slice`` indexes as numpy indexes the whole array (negative steps, ``None``,
  index lists, boolean masks, slices past the end, zero-element tensors; an int per
  dimension gives a numpy scalar, not a 0-d array), reading only the rows of dimension
  0 that a leading int or slice selects; safetensors 0.8 refuses lists, ``None`` and
  negative steps, fails on slices past the end and on every key of a zero-element
  tensor, and reads ``True`` as 1.
- A dtype numpy lacks is ShardloadError("unimplemented"), not numpy's TypeError or
  AttributeError; the F8 types load (safetensors 0.8 saves them with ml_dtypes but
  fails to load them), and ml_dtypes is imported when needed (safetensors needs the
  caller to have imported it).
- ``load(data)`` returns file order (safetensors.numpy.load its own order), and takes
  any bytes-like object.
"""
import ctypes
import operator

import numpy as np

from . import _lib
from . import (_NO_BACKEND, _Checkpoint, _align_flags, _backend_io, _call_deleter,
               _check_names, _load_all_as, _load_bytes, _metadata_arrays, _path_bytes,
               _quote_name, _row_span, _save_bytes)
from . import _Slice as _TorchSlice
from ._lib import ShardloadError

__all__ = ["load_file", "load", "save_file", "save"]

# _NP_DTYPES: safetensors dtype -> numpy dtype, little-endian as stored (the dtypes
# safetensors.numpy maps).
_NP_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U64": np.dtype("<u8"), "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
    "C64": np.dtype("<c8"),
}
# _ML_DTYPES: safetensors dtype -> the type of the ml_dtypes package (JAX's; it adds
# them to numpy) it loads as, where that package can be imported. F4 and F6 have none
# (safetensors packs F4 two to a byte; ml_dtypes' float4_e2m1fn takes a byte each).
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
              "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz",
              "F8_E5M2FNUZ": "float8_e5m2fnuz"}
# _ST_DTYPES: numpy dtype name (byte order aside) -> safetensors dtype.
_ST_DTYPES = {dt.name: st for st, dt in _NP_DTYPES.items()}
_ST_DTYPES.update({name: st for st, name in _ML_DTYPES.items()})

_ml_dtypes = None  # the ml_dtypes module once looked for; False where it cannot be imported


def _numpy_dtype(st):
    """The numpy dtype safetensors dtype ``st`` loads as, or None: numpy's own, or, for
    BF16 and the F8 family, ml_dtypes' where that package can be imported (imported on
    first need; safetensors.numpy needs the caller to have imported it)."""
    global _ml_dtypes
    dt = _NP_DTYPES.get(st)
    if dt is not None or st not in _ML_DTYPES:
        return dt
    if _ml_dtypes is None:
        try:
            import ml_dtypes
            _ml_dtypes = ml_dtypes
        except Exception:  # not installed, or broken (its own error): not importable
            _ml_dtypes = False
    found = getattr(_ml_dtypes, _ML_DTYPES[st], None) if _ml_dtypes else None
    return np.dtype(found) if found is not None else None


_MAX_DIM = (1 << 63) - 1  # numpy sizes are intp


def _np_dtype(ckpt, name):
    """The numpy dtype of stored tensor ``name``; ShardloadError("unimplemented",
    "<file>: tensor 'x': dtype BF16 has no numpy type (...)") when numpy has none."""
    k = ckpt.index[name]
    dt = _numpy_dtype(ckpt.dtypes[k])
    if dt is None:
        older = ""  # an ml_dtypes too old to have the type
        if _ml_dtypes and ckpt.dtypes[k] in _ML_DTYPES:
            older = " (the installed ml_dtypes %s has no %s)" % (
                getattr(_ml_dtypes, "__version__", "?"), _ML_DTYPES[ckpt.dtypes[k]])
        raise ShardloadError("unimplemented", "%s: tensor %s: dtype %s has no numpy type "
                             "(numpy takes %s, and with the ml_dtypes package %s%s; load it "
                             "as a torch tensor instead)" % (
                                 ckpt.files[k], _quote_name(name), ckpt.dtypes[k],
                                 ", ".join(_NP_DTYPES), ", ".join(_ML_DTYPES), older))
    return dt


def _np_shape(ckpt, name):
    """The stored shape of ``name`` as a numpy shape; _np_dtype's error first, then
    ShardloadError("out_of_range") for a shape numpy cannot have (a zero-element tensor
    may declare any 64-bit dimensions)."""
    return _np_shape_dtype(ckpt, name)[0]


def _np_shape_dtype(ckpt, name):
    """(shape, dtype) of ``name``: _np_shape's and _np_dtype's answers, with
    _np_dtype's error first, then the shape's."""
    dtype = _np_dtype(ckpt, name)
    shape = ckpt.shapes[ckpt.index[name]]
    for k, d in enumerate(shape):
        if d > _MAX_DIM:
            raise ShardloadError("out_of_range", "tensor %s: dimension %d (%d) does not fit "
                                 "numpy's int64 sizes" % (_quote_name(name), k, d))
    if 0 in shape or len(shape) > 32:  # numpy 1.x takes 32 dimensions, 2.x 64
        try:  # no memory: a zero-element array of as many dimensions
            np.empty(shape if 0 in shape else (0,) * len(shape), dtype=dtype)
        except (ValueError, OverflowError, MemoryError) as e:
            raise ShardloadError("out_of_range", "tensor %s: shape %s does not fit numpy's "
                                 "sizes (%s)" % (_quote_name(name), list(shape), e)) from None
    return tuple(shape), dtype


class _Export:
    """Owns one DLPack export of a loaded tensor, which holds a reference on all of
    that load's arenas, and drops it (the export's deleter) when collected."""

    __slots__ = ("_managed",)

    def __init__(self, managed):
        self._managed = managed

    def __del__(self):
        managed, self._managed = self._managed, None
        if managed:
            _call_deleter(managed)


def _array_maker():
    """A convert(loaded, index, info) for _load_all_as: a writable numpy array viewing
    loaded tensor ``index`` (zero-copy; its dtype and shape, checked by _np_shape under
    its stored name). Every array of one load keeps that load's arenas alive through
    one shared DLPack export, made for its first tensor of any bytes: each array's base
    is a ctypes array over its bytes that holds the export (np.from_dlpack would make
    the arrays read-only, where safetensors' are writable)."""
    owner = None
    dtypes = {}  # dtype name as the library gives it (bytes) -> numpy dtype

    def convert(loaded, index, info):
        nonlocal owner
        shape = tuple(info.shape[:info.ndim])
        name = info.dtype
        dtype = dtypes.get(name)
        if dtype is None:
            dtype = dtypes[name] = _numpy_dtype(name.decode())
        nbytes = info.bytes
        if nbytes == 0:
            return np.empty(shape, dtype=dtype)
        if owner is None:
            managed = ctypes.c_void_p()
            _lib.check(_lib.lib().sl_loaded_export_dlpack(
                loaded, index, _lib.SL_DLPACK_AS_BYTES, ctypes.byref(managed)))
            owner = _Export(managed.value)
        memory = (ctypes.c_uint8 * nbytes).from_address(info.data)
        memory.owner = owner  # the array's base is `memory`, which keeps the export
        return np.ndarray(shape, dtype, memory)

    return convert


def _load_all(ckpt, options):
    """Every tensor of an open checkpoint as a dict of zero-copy numpy arrays, in file
    order (renamed names after, sorted), as shardload._load_all gives torch tensors.
    A dtype numpy lacks raises before anything is read."""
    order = ckpt.offset_order()
    held = {st for st in set(ckpt.dtypes) if _numpy_dtype(st) is not None}
    index, dtypes, shapes = ckpt.index, ckpt.dtypes, ckpt.shapes
    for name in order:  # _np_shape's checks, for the tensors that may fail them
        k = index[name]
        if dtypes[k] not in held or 0 in shapes[k] or len(shapes[k]) > 32:
            _np_shape(ckpt, name)
    return _load_all_as(ckpt, options, _array_maker(), order)


def _read_rows(owner, ckpt, name, lo, hi):
    """Rows [lo, hi) of dimension 0 of ``name`` (the whole tensor for a scalar) as a
    new numpy array, read with positional reads (through the verifying loader, whole,
    when ``owner`` verifies)."""
    shape, dtype = _np_shape_dtype(ckpt, name)
    k = ckpt.index[name]
    info = ckpt.infos[k]
    if owner._verify:
        return owner._verified_rows(ckpt, name, shape, lo, hi)
    offset, nbytes, out_shape = _row_span(info, shape, lo, hi)
    if nbytes == 0:
        return np.empty(out_shape, dtype=dtype)
    buf = np.empty(nbytes, dtype=np.uint8)
    _lib.check(_lib.lib().sl_checkpoint_read(ckpt.handle, k, offset, nbytes, buf.ctypes.data))
    return buf.view(dtype).reshape(out_shape)


def _is_int_index(k):
    """Whether numpy reads ``k`` as one integer index (not a bool, which it reads as a
    mask)."""
    return isinstance(k, (int, np.integer)) and not isinstance(k, bool)  # np.bool_: no int


class _Slice(_TorchSlice):
    """safe_open(framework="np").get_slice(name): a lazy view of one stored tensor that
    indexes as numpy indexes the whole array, reading only the rows of dimension 0 a
    leading int or slice selects. It keeps the checkpoint open (works after its
    safe_open is closed, as in safetensors). get_shape and get_dtype: the torch one's."""

    def _read_rows(self, lo, hi):
        return _read_rows(self._owner, self._ckpt, self._name, lo, hi)

    def __getitem__(self, key):
        shape = _np_shape(self._ckpt, self._name)
        # numpy's own errors (too many indices, out of range, bad types), before reading:
        # index a zero-stride array of the same shape, which holds one byte.
        np.broadcast_to(np.zeros((), dtype=np.uint8), shape)[key]
        items = key if isinstance(key, tuple) else (key,)
        first = items[0] if items else slice(None)
        if not shape:
            return self._read_rows(0, 0)[key]
        if _is_int_index(first):
            i = operator.index(first)
            i = i + shape[0] if i < 0 else i
            return self._read_rows(i, i + 1)[(0,) + tuple(items[1:])]
        if not isinstance(first, slice):
            # Ellipsis, None, masks, index arrays (a list key is one): read everything.
            return self._read_rows(0, shape[0])[key]
        start, stop, step = first.indices(shape[0])
        rows = range(start, stop, step)
        if not rows:
            return self._read_rows(0, 0)[(slice(0, 0),) + tuple(items[1:])]
        lo, hi = min(rows[0], rows[-1]), max(rows[0], rows[-1]) + 1
        end = rows[-1] - lo + step  # one past the last row, in the rows read
        local = slice(rows[0] - lo, end if end >= 0 else None, step)
        return self._read_rows(lo, hi)[(local,) + tuple(items[1:])]


# ----------------------------------------------------------------------------- loading

def load_file(filename, *, backend=_NO_BACKEND, threads=0, io="auto", verify=False,
              progress=None, pool=None, cancel=None, strict_index=True, renames=(),
              placement="aligned"):
    """Load every tensor of a checkpoint (file, index .json or folder) as numpy arrays,
    as safetensors.numpy.load_file does (dict name -> np.ndarray, in file order), with
    parallel reads into one host arena. ``backend``: safetensors 0.8's keyword
    ("mmap" or "pread"), the io mode of that name, validated as there (a non-str, None
    too, is TypeError); ``io``, ``threads``, ``verify``, ``progress``, ``pool``,
    ``cancel``, ``strict_index``, ``renames`` and ``placement``: as in
    shardload.load_file. Raises ShardloadFileNotFoundError for a
    path that does not exist, ShardloadError("unimplemented") for a tensor whose dtype
    numpy lacks (naming it and its file; nothing is read), ShardloadError otherwise."""
    io = _backend_io(backend, io)
    with _Checkpoint(filename, cancel, strict_index, verify) as ckpt, \
            _lib.Options(device="cpu", strict=False, renames=renames, threads=threads,
                         io=io, verify=verify, progress=progress, pool=pool, cancel=cancel,
                         placement=placement) as options:
        return _load_all(ckpt, options)


def load(data):
    """Like safetensors.numpy.load: arrays from the bytes of a .safetensors file."""
    return _load_bytes(data, load_file)


# ----------------------------------------------------------------------------- saving

def _check_arrays(tensor_dict):
    """The save functions' refusals, in safetensors.numpy's order (each entry in dict
    order, then the names): ValueError for a non-dict or a value that is not a numpy
    array, ShardloadError("invalid_argument") for a dtype safetensors has no name for,
    TypeError, in safetensors' words, for a name that is not a str."""
    if not isinstance(tensor_dict, dict):
        raise ValueError("Expected a dict of [str, numpy.ndarray] but received %s" %
                         type(tensor_dict))
    for k, v in tensor_dict.items():
        if not isinstance(v, np.ndarray):
            raise ValueError("Key `%s` is invalid, expected numpy.ndarray but received %s" %
                             (k, type(v)))
        if v.dtype.name not in _ST_DTYPES:  # the name says nothing of byte order
            raise ShardloadError("invalid_argument", "tensor %s: numpy dtype %s has no "
                                 "safetensors dtype (numpy dtypes that have one: %s)" % (
                                     _quote_name(k) if isinstance(k, str) else repr(k),
                                     v.dtype, ", ".join(sorted(_ST_DTYPES))))
    _check_names(tensor_dict)


def _views(tensor_dict):
    """TensorView array for a dict of numpy arrays checked by _check_arrays, plus the
    objects that keep it valid: each array as its values in C order, little-endian (a
    copy where it is not so already)."""
    keep = []
    views = (_lib.TensorView * max(len(tensor_dict), 1))()
    for i, (name, a) in enumerate(tensor_dict.items()):
        st = _ST_DTYPES[a.dtype.name]
        # C order, little-endian (ml_dtypes' types too: numpy byte-swaps them, and
        # keeps a big-endian one's name), 0-d kept.
        dtype = _NP_DTYPES.get(st)
        c = np.asarray(a, dtype=a.dtype.newbyteorder("<") if dtype is None else dtype,
                       order="C")
        raw = name.encode("utf-8", "surrogateescape")
        shape = _lib.shape_array(c.shape)
        dname = st.encode()
        keep.append((c, raw, shape, dname))
        views[i] = _lib.TensorView(raw, len(raw), dname, shape, c.ndim,
                                   c.ctypes.data if c.size else None)
    return views, keep


def save_file(tensor_dict, filename, metadata=None, *, checksums=False, align=8):
    """Write ``tensor_dict`` (dict name -> np.ndarray) to one .safetensors file
    atomically (temporary file, fsync, rename), as safetensors.numpy.save_file does.
    ``metadata`` (str -> str), ``checksums`` and ``align``: as in shardload.save_file.
    A non-contiguous or big-endian array is written as its values (C order,
    little-endian). Raises ValueError for a non-dict or a value that is not an array,
    TypeError for a name or metadata entry that is not a str, ShardloadError
    ("invalid_argument") for a dtype safetensors has no name for (float128, str,
    object, complex128, ...)."""
    _check_arrays(tensor_dict)
    align_flags = _align_flags(align)
    keys, values, count = _metadata_arrays(metadata)
    views, keep = _views(tensor_dict)
    flags = (0 if metadata is None else _lib.SL_SAVE_EMPTY_METADATA) | \
        (_lib.SL_SAVE_CHECKSUMS if checksums else 0) | align_flags
    _lib.check(_lib.lib().sl_save_file_ex(_path_bytes(filename), views,
                                          len(tensor_dict), keys, values, count, flags))
    del keep


def save(tensor_dict, metadata=None, *, checksums=False, align=8):
    """Like safetensors.numpy.save: the bytes of the .safetensors file that
    ``save_file(tensor_dict, path, metadata, ...)`` writes (built in a temporary file,
    as shardload.save builds them)."""
    return _save_bytes(
        lambda path: save_file(tensor_dict, path, metadata=metadata, checksums=checksums,
                               align=align))
