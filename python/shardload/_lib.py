"""ctypes bindings to libshardload.so (capi/shardload.h).

The library is found, in order: the path given to ``set_library_path``; the
``SHARDLOAD_LIBRARY`` environment variable (read here, on the Python side only); a
``libshardload.so`` next to this package. Nothing is compiled for a Python version, so
the same files work on any CPython 3 with ctypes.
"""
import ctypes
import errno
import operator
import os
import re
import threading

_lock = threading.Lock()
_lib = None
_explicit_path = None


class ShardloadError(RuntimeError):
    """An error from the C library: ``code`` is the status name ("not_found", ...)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # pickle / copy (a multiprocessing worker's error): both args
        return type(self), (self.code, self.message), self.__dict__


class ShardloadFileNotFoundError(ShardloadError, FileNotFoundError):
    """A checkpoint path that does not exist: a FileNotFoundError as open(), torch.load
    and safetensors raise it (``errno`` ENOENT, ``filename`` the path as given, str()
    "[Errno 2] No such file or directory: 'PATH'"), and still a ShardloadError with
    code "not_found" (Python allows the two bases: OSError's instance layout extends
    BaseException's, which RuntimeError keeps)."""

    def __init__(self, filename):
        FileNotFoundError.__init__(self, errno.ENOENT, os.strerror(errno.ENOENT), filename)
        self.code = "not_found"
        self.message = str(self)

    def __reduce__(self):  # OSError's would call __init__ with (errno, strerror, filename)
        return type(self), (self.filename,)


class ShardloadWarning(UserWarning):
    """What opening a checkpoint found questionable but loadable (an empty weight_map,
    a total_size that disagrees, ...), or what a load that succeeded says about how it
    ran (a GPU load staged through pageable memory because pinning was refused),
    issued through the warnings module."""


class TensorInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("name_len", ctypes.c_size_t),
        ("dtype", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_uint64)),
        ("ndim", ctypes.c_size_t),
        ("file", ctypes.c_char_p),
        ("file_offset", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


class Target(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("name_len", ctypes.c_size_t),
        ("dtype", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_uint64)),
        ("ndim", ctypes.c_size_t),
        ("device", ctypes.c_char_p),
        ("data", ctypes.c_void_p),
    ]


class LoadedTensor(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("name_len", ctypes.c_size_t),
        ("dtype", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_uint64)),
        ("ndim", ctypes.c_size_t),
        ("device", ctypes.c_char_p),
        ("data", ctypes.c_void_p),
        ("bytes", ctypes.c_uint64),
    ]


class TensorView(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("name_len", ctypes.c_size_t),
        ("dtype", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_uint64)),
        ("ndim", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
    ]


PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p)

SL_DLPACK_AS_BYTES = 1
SL_SAVE_EMPTY_METADATA = 1
SL_SAVE_CHECKSUMS = 2
SL_SAVE_ALIGN_64 = 4
SL_SAVE_ALIGN_4096 = 8
(REPORT_MATCHED, REPORT_MISSING, REPORT_UNEXPECTED, REPORT_MISMATCHED, REPORT_RENAMED,
 REPORT_WARNINGS) = range(6)

_P = ctypes.c_void_p
_SIGNATURES = {
    "sl_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "sl_last_error": (ctypes.c_char_p, []),
    "sl_last_save_warning": (ctypes.c_char_p, []),
    "sl_version": (ctypes.c_char_p, []),
    "sl_cuda_device_count": (ctypes.c_int, []),
    "sl_cuda_staging_bytes": (ctypes.c_uint64, []),
    "sl_cuda_release_staging": (ctypes.c_uint64, []),
    "sl_checkpoint_open": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_P)]),
    "sl_checkpoint_open_with": (ctypes.c_int, [ctypes.c_char_p, _P, ctypes.POINTER(_P)]),
    "sl_checkpoint_free": (None, [_P]),
    "sl_checkpoint_tensor_count": (ctypes.c_size_t, [_P]),
    "sl_checkpoint_tensor": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.POINTER(TensorInfo)]),
    "sl_checkpoint_tensors": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_size_t,
                                             ctypes.POINTER(TensorInfo)]),
    "sl_checkpoint_find": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t,
                                          ctypes.POINTER(ctypes.c_size_t)]),
    "sl_checkpoint_metadata_count": (ctypes.c_size_t, [_P]),
    "sl_checkpoint_has_metadata": (ctypes.c_int, [_P]),
    "sl_checkpoint_warning_count": (ctypes.c_size_t, [_P]),
    "sl_checkpoint_warning": (ctypes.c_int, [_P, ctypes.c_size_t,
                                             ctypes.POINTER(ctypes.c_char_p)]),
    "sl_checkpoint_metadata": (ctypes.c_int, [_P, ctypes.c_size_t,
                                              ctypes.POINTER(ctypes.c_char_p),
                                              ctypes.POINTER(ctypes.c_char_p)]),
    "sl_checkpoint_metadata_n": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.POINTER(_P),
                                                ctypes.POINTER(ctypes.c_size_t),
                                                ctypes.POINTER(_P),
                                                ctypes.POINTER(ctypes.c_size_t)]),
    "sl_checkpoint_shard_count": (ctypes.c_size_t, [_P]),
    "sl_checkpoint_recorded_hash_count": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "sl_device_map_first_cuda": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
    "sl_checkpoint_shard": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p)]),
    "sl_checkpoint_read": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_uint64,
                                          ctypes.c_uint64, _P]),
    "sl_checkpoint_hold_files": (ctypes.c_int, [_P]),
    "sl_options_new": (ctypes.c_int, [ctypes.POINTER(_P)]),
    "sl_options_free": (None, [_P]),
    "sl_options_set_device": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "sl_options_set_strict": (ctypes.c_int, [_P, ctypes.c_int]),
    "sl_options_set_strict_index": (ctypes.c_int, [_P, ctypes.c_int]),
    "sl_options_add_rename": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "sl_options_add_alias": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_char_p]),
    "sl_options_set_allow_cast": (ctypes.c_int, [_P, ctypes.c_int]),
    "sl_options_set_metadata_aliases": (ctypes.c_int, [_P, ctypes.c_int]),
    "sl_options_set_threads": (ctypes.c_int, [_P, ctypes.c_int]),
    "sl_options_set_io": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "sl_options_set_host_placement": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "sl_options_set_progress": (ctypes.c_int, [_P, PROGRESS_FN, _P]),
    "sl_options_set_verify": (ctypes.c_int, [_P, ctypes.c_int]),
    "sl_options_set_host_pool": (ctypes.c_int, [_P, _P]),
    "sl_options_set_cancel_token": (ctypes.c_int, [_P, _P]),
    "sl_cancel_token_new": (ctypes.c_int, [ctypes.POINTER(_P)]),
    "sl_cancel_token_free": (None, [_P]),
    "sl_cancel_token_cancel": (ctypes.c_int, [_P]),
    "sl_cancel_token_is_cancelled": (ctypes.c_int, [_P]),
    "sl_host_pool_new": (ctypes.c_int, [ctypes.c_uint64, ctypes.POINTER(_P)]),
    "sl_host_pool_free": (None, [_P]),
    "sl_host_pool_cached_bytes": (ctypes.c_uint64, [_P]),
    "sl_host_pool_trim": (ctypes.c_int, [_P]),
    "sl_report_status": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_char_p)]),
    "sl_report_count": (ctypes.c_size_t, [_P, ctypes.c_int]),
    "sl_report_item": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_size_t,
                                      ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_size_t)]),
    "sl_report_json": (ctypes.c_char_p, [_P]),
    "sl_report_free": (None, [_P]),
    "sl_load_into": (ctypes.c_int, [_P, ctypes.POINTER(Target), ctypes.c_size_t, _P,
                                    ctypes.POINTER(_P)]),
    "sl_load_all": (ctypes.c_int, [_P, _P, ctypes.POINTER(Target), ctypes.c_size_t,
                                   ctypes.POINTER(_P), ctypes.POINTER(_P)]),
    "sl_loaded_count": (ctypes.c_size_t, [_P]),
    "sl_loaded_get": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.POINTER(LoadedTensor)]),
    "sl_loaded_export_dlpack": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_int,
                                               ctypes.POINTER(_P)]),
    "sl_loaded_free": (None, [_P]),
    "sl_live_arena_sets": (ctypes.c_size_t, []),
    "sl_save_file": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(TensorView), ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.c_char_p),
                                    ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t]),
    "sl_save_sharded": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(TensorView),
                                       ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p,
                                       ctypes.POINTER(ctypes.c_char_p),
                                       ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t]),
    "sl_save_file_ex": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(TensorView),
                                       ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p),
                                       ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t,
                                       ctypes.c_int]),
    "sl_save_sharded_ex": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(TensorView),
                                          ctypes.c_size_t, ctypes.c_char_p, ctypes.c_char_p,
                                          ctypes.POINTER(ctypes.c_char_p),
                                          ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t,
                                          ctypes.c_int]),
}


# PACKAGE_VERSION: this package's version; the library it loads must be at least as
# new (its C API only grows: a newer one has every function this package binds).
PACKAGE_VERSION = "0.1.12"


def _version_tuple(text):
    """(major, minor, patch) of "X.Y.Z" (digits only), else None."""
    m = re.fullmatch(r"([0-9]+)\.([0-9]+)\.([0-9]+)", text)
    return tuple(int(g) for g in m.groups()) if m else None


def check_library_version(found, path):
    """Raise ShardloadError("failed_precondition") unless the library version ``found``
    (sl_version's text) is PACKAGE_VERSION or newer."""
    have, need = _version_tuple(found), _version_tuple(PACKAGE_VERSION)
    if have is None or have < need:
        raise ShardloadError(
            "failed_precondition",
            "%s is shardload %s; this Python package (%s) needs %s or newer "
            "(use the libshardload.so that came with it)" % (path, found, PACKAGE_VERSION,
                                                             PACKAGE_VERSION))


def set_library_path(path):
    """Use the libshardload.so at ``path`` (before the first call into the library). A
    relative path is taken from the current folder now."""
    global _explicit_path
    path = os.path.abspath(path)
    with _lock:
        if _lib is not None and _explicit_path != path:
            raise RuntimeError("libshardload.so is already loaded from another path")
        _explicit_path = path


def _candidates():
    if _explicit_path:
        return [_explicit_path]
    env = os.environ.get("SHARDLOAD_LIBRARY")
    if env:
        # Absolute, so that ctypes opens the file checked here instead of searching
        # LD_LIBRARY_PATH and the loader's cache for a bare name.
        return [os.path.abspath(env)]
    return [os.path.join(os.path.dirname(os.path.abspath(__file__)), "libshardload.so")]


def lib():
    """The loaded library (loaded and typed on first use)."""
    global _lib
    with _lock:
        if _lib is None:
            paths = _candidates()
            path = next((p for p in paths if os.path.exists(p)), None)
            if path is None:
                raise ShardloadError(
                    "not_found",
                    "libshardload.so not found (looked at %s); call "
                    "shardload.set_library_path(PATH) or set SHARDLOAD_LIBRARY" % ", ".join(paths))
            try:
                handle = ctypes.CDLL(path)
            except OSError as e:  # e.g. a library it needs is missing or broken
                raise ShardloadError("failed_precondition",
                                     "cannot load %s: %s" % (path, e)) from e
            try:
                handle.sl_version.restype = ctypes.c_char_p
                handle.sl_version.argtypes = []
                check_library_version(handle.sl_version().decode(errors="replace"), path)
                for name, (restype, argtypes) in _SIGNATURES.items():
                    fn = getattr(handle, name)
                    fn.restype = restype
                    fn.argtypes = argtypes
            except AttributeError as e:  # a function missing: not (this) libshardload.so
                raise ShardloadError("failed_precondition",
                                     "%s is not a usable libshardload.so: %s" % (path, e)) from e
            _lib = handle
        return _lib


def check(status):
    """Raise ShardloadError for a non-zero sl_status."""
    if status != 0:
        l = lib()
        raise ShardloadError(l.sl_status_name(status).decode(),
                             l.sl_last_error().decode("utf-8", "replace"))


def shape_array(shape):
    arr = (ctypes.c_uint64 * max(len(shape), 1))(*shape)
    return arr


DEFAULT_MAX_CACHED_BYTES = 64 << 30


class Closing:
    """Context-manager and finalizer plumbing for objects with an idempotent close()."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        self.close()


class _SharedHandle(Closing):
    """A reference-counted C handle (sl_host_pool, sl_cancel_token) behind a lock:
    ``_FREE`` names the C function that drops this object's reference; a closed object
    raises ValueError ("<Class> is closed") from every use."""

    _FREE = None

    def __init__(self, new, *args):
        self._handle = None  # set first: __del__ runs also when the call below fails
        self._lock = threading.Lock()
        h = ctypes.c_void_p()
        check(new(*args, ctypes.byref(h)))
        self._handle = h

    def _live_handle(self):
        # Called with self._lock held.
        if not self._handle:
            raise ValueError("%s is closed" % type(self).__name__)
        return self._handle

    def _call(self, fn):
        """fn(handle) under the lock, for a live handle."""
        with self._lock:
            return fn(self._live_handle())

    @property
    def closed(self):
        return not self._handle

    @classmethod
    def check_argument(cls, value, argument):
        """TypeError unless ``value`` (the keyword ``argument``) is a ``cls`` or None;
        ValueError if it is closed."""
        if value is None:
            return
        if not isinstance(value, cls):
            raise TypeError("%s must be a shardload.%s or None, got %s" %
                            (argument, cls.__name__, type(value).__name__))
        if value.closed:
            raise ValueError("%s is closed" % cls.__name__)

    def close(self):
        """Drop this object's reference (idempotent)."""
        if getattr(self, "_lock", None) is None:
            return  # __init__ did not get that far
        with self._lock:
            if self._handle:
                getattr(lib(), self._FREE)(self._handle)
                self._handle = None


class HostMemoryPool(_SharedHandle):
    """Host memory reused across loads (an ``sl_host_pool``).

    Pass it as ``pool=`` to ``load_file`` (and the other loading functions). When every
    tensor of a pooled load has been garbage-collected, its arena's memory goes back to
    the pool instead of to the kernel, and the next pooled load of a checkpoint that
    fits (needing at least half of it) reuses it: no page faults, no zeroing of fresh
    memory, which on small machines costs more than reading a checkpoint from the page
    cache. The tensors hold the same
    bytes either way. Memory kept in the pool stays resident until reused, ``trim()``-ed
    or the pool is closed::

        with shardload.HostMemoryPool(max_cached_bytes=8 << 30) as pool:
            sd = shardload.load_file("model.safetensors", pool=pool)
            del sd                          # the arena returns to the pool ...
            sd = shardload.load_file("model.safetensors", pool=pool)  # ... and is reused

    ``max_cached_bytes``: the most memory kept for reuse (default 64 GiB; arenas are
    rounded to 2 MiB); returning more evicts the oldest cached arenas; 0 keeps nothing.
    Thread-safe: one pool may serve concurrent loads from several threads. Tensors from
    a pooled load stay valid after the pool is closed (their memory is then freed when
    they go). Using a closed pool raises ValueError."""

    _FREE = "sl_host_pool_free"  # frees the pool and the memory it caches

    def __init__(self, max_cached_bytes=DEFAULT_MAX_CACHED_BYTES):
        if isinstance(max_cached_bytes, bool) or not isinstance(max_cached_bytes, int):
            raise TypeError("max_cached_bytes must be an int, got %s" %
                            type(max_cached_bytes).__name__)
        if not 0 <= max_cached_bytes < 1 << 64:
            raise ValueError("max_cached_bytes must be between 0 and 2**64 - 1, got %d" %
                             max_cached_bytes)
        super().__init__(lib().sl_host_pool_new, max_cached_bytes)
        self.max_cached_bytes = max_cached_bytes

    @property
    def cached_bytes(self):
        """Bytes of arena memory waiting for reuse now."""
        return self._call(lib().sl_host_pool_cached_bytes)

    def trim(self):
        """Free every cached arena now (tensors in use are not affected)."""
        self._call(lambda h: check(lib().sl_host_pool_trim(h)))

    def attach(self, options_handle):
        """Set this pool on an sl_options handle (which then holds its own reference)."""
        self._call(lambda h: check(lib().sl_options_set_host_pool(options_handle, h)))

    def __repr__(self):
        if not self._handle:
            return "HostMemoryPool(closed)"
        return "HostMemoryPool(max_cached_bytes=%d, cached_bytes=%d)" % (
            self.max_cached_bytes, self.cached_bytes)


class CancelToken(_SharedHandle):
    """Stops loads from any thread (an ``sl_cancel_token``).

    Pass it as ``cancel=`` to ``load_file``, ``load_state_dict_into`` or ``load_model``;
    ``cancel()`` from another thread (a request handler whose client went away, a
    shutdown hook) makes every load holding the token raise
    ShardloadError("cancelled", "load cancelled") at its next check: before its memory is
    allocated, every 64 MiB while host memory is faulted in, before the shards are
    opened and before each read of at most 16 MiB. The load's memory is freed; a
    ``load_state_dict_into`` may have written part of the module. The loading thread
    releases the GIL while it loads, so the cancelling thread runs::

        token = shardload.CancelToken()
        threading.Timer(5.0, token.cancel).start()    # give up after 5 s
        sd = shardload.load_file("model", device="cuda:0", cancel=token)

    A cancelled token stays cancelled: later loads with it fail at once (make a new
    token per request). Unlike ``progress`` returning False, cancelling needs no
    progress to be made. Thread-safe; ``cancel()`` may be called any number of times
    (after ``close()`` it raises ValueError). A load running with the token holds its
    own reference, so closing the token object does not disturb it."""

    _FREE = "sl_cancel_token_free"  # loads holding the token keep their reference

    def __init__(self):
        super().__init__(lib().sl_cancel_token_new)

    def cancel(self):
        """Cancel every load using this token, running or later (idempotent)."""
        self._call(lambda h: check(lib().sl_cancel_token_cancel(h)))

    @property
    def cancelled(self):
        """Whether ``cancel()`` was called."""
        return bool(self._call(lib().sl_cancel_token_is_cancelled))

    def attach(self, options_handle):
        """Set this token on an sl_options handle (which then holds its own reference)."""
        self._call(lambda h: check(lib().sl_options_set_cancel_token(options_handle, h)))

    def __repr__(self):
        if not self._handle:
            return "CancelToken(closed)"
        return "CancelToken(cancelled=%s)" % self.cancelled


MAX_THREADS = 256  # sl_options_set_threads' limit


def check_threads(threads):
    """The ``threads`` argument of every loading function: an int from 0 (hardware
    threads) to MAX_THREADS. TypeError for anything else than an int (bool too, as
    HostMemoryPool's max_cached_bytes), ValueError out of range, both before the C call
    (its C int would wrap 2**32 + 3 to 3). Integers of other types (numpy's) count as
    ints (operator.index); returns the value as an int."""
    if isinstance(threads, bool):
        raise TypeError("threads must be an int, got %s" % type(threads).__name__)
    try:
        threads = operator.index(threads)
    except TypeError:
        raise TypeError("threads must be an int, got %s" % type(threads).__name__) from None
    if not 0 <= threads <= MAX_THREADS:
        raise ValueError("threads must be between 0 and %d, got %d" % (MAX_THREADS, threads))
    return threads


class Options(Closing):
    """An owned sl_options handle."""

    def __init__(self, device="cpu", strict=True, renames=(), aliases=(), allow_cast=False,
                 threads=0, io="auto", verify=False, progress=None, pool=None, cancel=None,
                 metadata_aliases=True, strict_index=True, placement="aligned"):
        self.handle = None  # set first: __del__ runs also when a setter below fails
        self.error = None  # an exception the progress callable raised
        threads = check_threads(threads)  # before the C call, whose int would wrap
        if not isinstance(io, str):
            raise TypeError("io must be a str, got %s" % type(io).__name__)
        if not isinstance(placement, str):
            raise TypeError("placement must be a str, got %s" % type(placement).__name__)
        l = lib()
        h = ctypes.c_void_p()
        check(l.sl_options_new(ctypes.byref(h)))
        self.handle = h
        self.device = str(device)
        check(l.sl_options_set_device(h, self.device.encode()))
        check(l.sl_options_set_strict(h, 1 if strict else 0))
        if not strict_index:
            check(l.sl_options_set_strict_index(h, 0))
        for r in renames:
            check(l.sl_options_add_rename(h, r.encode()))
        for target, stored in aliases:
            check(l.sl_options_add_alias(h, target.encode("utf-8", "surrogateescape"),
                                         stored.encode("utf-8", "surrogateescape")))
        check(l.sl_options_set_allow_cast(h, 1 if allow_cast else 0))
        if not metadata_aliases:
            check(l.sl_options_set_metadata_aliases(h, 0))
        check(l.sl_options_set_threads(h, threads))
        check(l.sl_options_set_io(h, io.encode()))
        if placement != "aligned":
            check(l.sl_options_set_host_placement(h, placement.encode()))
        check(l.sl_options_set_verify(h, 1 if verify else 0))
        if pool is not None:
            HostMemoryPool.check_argument(pool, "pool")
            pool.attach(h)  # raises ValueError too if it was closed since
        if cancel is not None:
            CancelToken.check_argument(cancel, "cancel")
            cancel.attach(h)  # raises ValueError too if it was closed since
        if progress is not None:
            if not callable(progress):
                raise TypeError("progress must be callable(done, total), got %s" %
                                type(progress).__name__)

            def trampoline(done, total, _user):
                # Runs on the loading thread (the caller's). False cancels, but for the
                # last call (total, total), whose answer the library ignores: the load
                # has succeeded then. An exception cancels likewise and is raised again by
                # check() once the load returns (the caller frees what a load that went
                # on to succeed holds).
                if self.error is not None:
                    return 0
                try:
                    return 0 if progress(done, total) is False else 1
                except BaseException as e:  # noqa: B902 -- handed back to the caller
                    self.error = e
                    return 0

            self._progress = PROGRESS_FN(trampoline)  # kept alive as long as the options
            check(l.sl_options_set_progress(h, self._progress, None))

    def check(self, status):
        """check(status), raising first what the progress callable raised."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        check(status)

    def close(self):
        if self.handle:
            lib().sl_options_free(self.handle)
            self.handle = None


def _report_items(report, which, errors):
    """The entries of list `which` of a report handle (none for NULL), decoded as UTF-8
    with `errors`."""
    l = lib()
    items = []
    if not report.value:
        return items
    for i in range(l.sl_report_count(report, which)):
        p = ctypes.c_void_p()
        n = ctypes.c_size_t()
        check(l.sl_report_item(report, which, i, ctypes.byref(p), ctypes.byref(n)))
        items.append(ctypes.string_at(p, n.value).decode("utf-8", errors))
    return items


def report_warnings(report):
    """The SL_REPORT_WARNINGS lines of a report handle (none for NULL), decoded."""
    return _report_items(report, REPORT_WARNINGS, "replace")


def report_lists(report):
    """A report handle as a dict of lists (names decoded as UTF-8 with surrogateescape)."""
    return {key: _report_items(report, which, "surrogateescape")
            for key, which in (("matched", REPORT_MATCHED), ("missing", REPORT_MISSING),
                               ("unexpected", REPORT_UNEXPECTED),
                               ("mismatched", REPORT_MISMATCHED), ("renamed", REPORT_RENAMED))}
