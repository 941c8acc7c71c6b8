#!/usr/bin/env python3
"""fuzz/reference_diff.py — differential fuzzing of shardload's Python package against
the Hugging Face reference (the ``safetensors`` package, frameworks "pt" and "np").

    reference_diff.py [LIBSHARDLOAD] [--seed N] [--cases N] [--write-cases N]
                      [--model-cases N] [--slice-cases N] [--shard-cases N]
                      [--numpy-cases N] [--numpy-write-cases N] [--numpy-slice-cases N]
                      [--cli SHARDLOAD] [--device DEV] [--keep DIR] [--verbose]

Reads (--cases, default 2000). Each case is a generated .safetensors file: a valid one
(random names, dtypes, shapes, bytes and metadata), the same after structural mutations
of its header (dtypes, shapes, offsets, key sets, metadata shapes, duplicate keys,
overflowing shapes, serde's enum and sequence forms, deep nesting, short or long data)
or after byte-level mutations of its JSON text (escapes, numbers written as 0.0 / -0 /
00 / 0e0, trailing commas, NULs, invalid UTF-8), sometimes with a wrong length prefix.
Both readers open it and report keys, metadata, offset order, each tensor's dtype,
shape and bytes. The reference's answer is its Rust parser's (``safetensors.deserialize``:
raw bytes for every dtype) plus ``safe_open``'s ``metadata()`` and ``offset_keys()``
(tensors with equal offsets, empty ones, compared as a set: the reference puts them in
hash order); shardload's goes through torch (bytes
only where the installed torch has the dtype), twice: ``safe_open`` / ``get_tensor`` and
``load_file``, the latter also with ``placement="file-phase"`` (the same bytes, and no
tensor off its element size), and ``get_tensors`` must follow ``offset_keys``. Both must
accept with identical results, or both reject. Intended
differences, where shardload is stricter (INTENDED below; docs/ARCHITECTURE.md), are
counted by name: a key given twice, a dtype in serde's enum form ({"F32": null}), an
entry in serde's sequence form, an unknown field nested past 32 levels.

numpy reads (--numpy-cases, default --cases: the same generated files). The reference
reads each with ``safe_open(framework="np")`` (metadata, offset_keys, get_tensor) and
``safetensors.numpy.load_file``, which must agree with each other; shardload with
``safe_open(path, framework="np")`` and ``shardload.numpy.load_file`` (also with
``placement="file-phase"``), each array of numpy's type for its dtype, its shape,
C-contiguous and writable. The same verdicts as the torch reads (INTENDED_NUMPY), and
a tensor numpy cannot hold, a dtype numpy lacks (BF16, F8, F4, F6) or a shape it cannot
have, must be refused by both: counted as numpy-lacks-dtype / numpy-lacks-shape
(shardload raises ShardloadError "unimplemented" / "out_of_range", the reference numpy's
TypeError, AttributeError or ValueError).
Writes (--write-cases). Random tensor dicts and metadata, sometimes with what both must
refuse, go to ``safetensors.torch.save_file`` and ``shardload.save_file``: the same bytes
(for metadata of two or more keys, which the reference writes in hash order, the same
parsed header and data) and a file the reference reads back, or the same exception type
and message. Intended: INTENDED_WRITES.

numpy writes (--numpy-write-cases). Random array dicts (the 13 dtypes safetensors.numpy
writes, scalars, empty shapes, odd names, an array under two names), metadata None, {}
or some keys, sometimes a non-contiguous or big-endian array, or what both must refuse
(a non-array value, a non-dict, a name that is not a str, a dtype safetensors lacks:
complex128, longdouble, object, str, datetime, structured), go to
``safetensors.numpy.save_file`` and ``shardload.numpy.save_file``, compared as the
torch writes are; shardload's file must hold each array's values (C order,
little-endian). Intended (INTENDED_NUMPY_WRITES, docs/EMBEDDING.md): for a
non-contiguous array safetensors 0.8 writes the memory under the view (then its file
for the arrays' contiguous copies must be shardload's; an array with negative strides,
whose memory it would read past, reaches it as that copy only); a non-array value or
non-dict is ValueError (safetensors: an AttributeError), a dtype it lacks
ShardloadError "invalid_argument" (safetensors: SafetensorError "Unknown dtype").
load_model (--model-cases). Small random models (embeddings, linears, norms with
buffers, nested blocks, tied heads, other dtypes) and checkpoints saved from them by
``save_model`` or from a mutated state dict (keys dropped or added, shapes or dtypes
changed) go to ``safetensors.torch.load_model`` and ``shardload.load_model`` on equal
copies, strict or not: the same (missing, unexpected) lists in the same order, or the
same exception type and message, and the same model contents afterwards. Where the
checkpoint comes from ``save_model``, shardload's ``save_model`` of the same model must
write the same parsed header and data; and, where huggingface_hub is installed, its
``save_torch_model`` writes the model as a sharded folder that its ``load_torch_model``
and shardload's ``load_model`` load alike (sorted lists; intended differences in tied
names and BatchNorm counters: compare_hub_sharded).

--cli SHARDLOAD: every read case also goes to ``SHARDLOAD inspect --json``, which must
refuse what the Python readers refuse with the same code and message, list what the
reference reads, and never crash.

--device DEV (default cpu; cuda:0 in bench/gpu_run.sh): shardload's reads and both
readers' get_slice put their tensors there, and they must arrive there; the bytes are
compared on the host.

get_slice (--slice-cases). Random keys (ints, slices with any bounds and steps, int
lists, bools, Ellipsis, None, tuples and lists of them) index ``get_slice(name)`` of
random tensors through both ``safe_open``: the same tensor, or the same exception type
and message (for keys with several Ellipses, the same type: torch's words there depend
on the tensor's strides).

numpy get_slice (--numpy-slice-cases). The same random keys index ``get_slice`` of
random arrays through ``safe_open(framework="np")``: shardload's must be numpy's
``full[key]`` (the same dtype, shape and bytes, or numpy's exception type and message);
the reference's must be the same array for the keys it takes as numpy does
(simple_key: ints in range, slices with positive steps selecting within bounds,
Ellipsis, tuples of those, on arrays without a zero-size dimension). It is not asked
for other keys: it refuses lists, None and negative steps, reads a bool as an int, and
fails or panics on empty selections (docs/EMBEDDING.md).

save_sharded (--shard-cases; needs huggingface_hub, skipped without it). Random state
dicts (empty tensors, tied names, a non-contiguous tensor, odd names), max_shard_size
values (ints, hub-style "1KB" / "0.1KB" strings, invalid ones) and metadata go to
huggingface_hub's ``save_torch_state_dict`` and ``shardload.save_sharded``: the same
file names, each shard's parsed header and data, and the index as JSON; or the same
exception type. ``shardload.load_file`` of the hub's folder must return what the
reference's ``load_file`` of each of its shards returns, merged; and with one tensor
dropped from its index (its shard still listed), a default load must refuse it and
``strict_index=False`` load every tensor of the listed shards, as the hub's loader does. Intended: shardload refuses a max_shard_size of 0 or less, for which
the hub writes a shard per tensor.

Everything else is a failure, and so is any exception from shardload other than
ShardloadError where the reference raises none (a crash in the Python layer). A crash of
the native library ends the process, which fails the same way. Prints each distinct
failure once (--verbose: every one) and a summary per mode; exits 1 on any failure.
Deterministic for a seed. LIBSHARDLOAD: the library to use (else the package's own
lookup, e.g. SHARDLOAD_LIBRARY). When torch or safetensors cannot be imported it exits
2, or, under Bazel (XML_OUTPUT_FILE set; //tests:reference_diff_test through
python/run_with_torch.sh), prints SKIP and writes a skipped JUnit case.
"""
import argparse
import collections
import json
import os
import random
import re
import struct
import sys
import tempfile

# DTYPE_BITS: every safetensors dtype the generator draws from, with its element size
# in bits; NEAR_MISSES: strings that are not dtypes.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16,
    "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
NEAR_MISSES = ["f32", "F128", "I4", "E8M0", "FP4", "", "F32 ", "B0OL", "C128"]
NAMES = ["a", "b", "w.0", "x", "layer.1.weight", "\u00e9", "", "\u0000z", " a", "a b",
         "\u4e2d", "__metadata", "__metadata__x", "\U0001f600"]
# INTENDED_WRITES: where the writers differ on purpose. The reference writes a header
# that is not JSON ({},"__metadata__":{}}) for no tensors and empty metadata, and
# cannot read the file back (safetensors issues #466 / #601, still so in 0.8.0).
INTENDED_WRITES = {"reference-writes-invalid"}
# INTENDED: where shardload rejects on purpose what the reference reads (docs/
# ARCHITECTURE.md, "Where the project is stricter than the reference"), by the words of
# shardload's error.
INTENDED = {
    "duplicate-key": "duplicate",                          # the reference keeps the last
    "dtype-as-map": "dtype must be a string, got an object",   # serde's {"F32": null}
    "entry-as-array": "entry must be an object, got an array",  # serde's field sequence
    "deep-nesting": "header nests deeper than",            # past ParseOptions::max_depth
}
UNKNOWN = object()  # metadata the reference could not be asked for
# NP_DTYPES: the dtypes numpy has a type for (those safetensors.numpy maps), with that
# type's dtype.str, little-endian as stored.
NP_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "|i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "|u1", "BOOL": "|b1",
    "C64": "<c8",
}
# INTENDED_NUMPY: where the numpy readers differ on purpose (docs/EMBEDDING.md, "numpy
# arrays"): INTENDED, and a tensor numpy cannot hold, which both refuse with other
# exceptions (shardload's ShardloadError "unimplemented" for a dtype numpy lacks,
# "out_of_range" for a shape it cannot have; numpy's TypeError, AttributeError or
# ValueError through the reference).
# Where the ml_dtypes package is importable, BF16 and the F8 family load as its types
# (ML_DTYPES): the reference's too once it is imported (main imports it), but its loads
# of the F8 types fail (AttributeError "module 'numpy' has no attribute
# 'float8_e4m3fn'"), where shardload's read the stored bytes: "reference-cannot-load-f8".
INTENDED_NUMPY = dict(INTENDED, **{"numpy-lacks-dtype": None, "numpy-lacks-shape": None,
                                   "reference-cannot-load-f8": None})
ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
             "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz",
             "F8_E5M2FNUZ": "float8_e5m2fnuz"}
try:
    import ml_dtypes  # noqa: F401  (also lets the reference's numpy readers name them)
except ImportError:
    ml_dtypes = None


def numpy_dtype(dtype):
    """The np.dtype shardload.numpy gives stored ``dtype`` (numpy's, or ml_dtypes' where
    importable), or None where it refuses it."""
    import numpy as np
    if dtype in NP_DTYPES:
        return np.dtype(NP_DTYPES[dtype])
    if ml_dtypes is not None and hasattr(ml_dtypes, ML_DTYPES.get(dtype, "-")):
        return np.dtype(getattr(ml_dtypes, ML_DTYPES[dtype]))
    return None


def new_tally(*agreeing):
    """(counts, failures) of one mode: Counters, `counts` starting with the `agreeing`
    keys at 0 so that the summary names them even when none occurred."""
    return collections.Counter(dict.fromkeys(agreeing, 0)), collections.Counter()


def fail(failures, verdict, case, details=None, shown=1, verbose=False):
    """Counts `verdict` in `failures` under its kind (its text before the first ':') and
    prints "case N: <verdict><details()>" for the first `shown` of that kind, or for
    every one with `verbose`; `details` is only called to print."""
    kind = verdict.split(":")[0]
    failures[kind] += 1
    if failures[kind] <= shown or verbose:
        print("case %d: %s%s" % (case, verdict, details() if details else ""))


def tally(counts, failures, verdict, agreed, intended, case, details, verbose):
    """Counts one case: under `agreed` when `verdict` is None, under its own name when it
    is one of the `intended` differences, else as a failure (see fail). True for a
    failure."""
    if verdict is None:
        counts[agreed] += 1
    elif verdict in intended:
        counts[verdict] += 1
    else:
        fail(failures, verdict, case, details, verbose=verbose)
        return True
    return False


def nbytes(dtype, shape):
    count = 1
    for d in shape:
        count *= d
    bits = count * DTYPE_BITS[dtype]
    return bits // 8 if bits % 8 == 0 else None


def valid_case(r):
    """A well-formed header (as a dict) and its data."""
    hdr, data = {}, bytearray()
    for i in range(r.choice([0, 1, 2, 3, 4, 5, 8])):
        name = r.choice(NAMES) + str(i)
        for _ in range(10):
            dtype = r.choice(list(DTYPE_BITS))
            shape = [r.choice([0, 1, 1, 2, 3, 4, 5, 8]) for _ in range(r.choice([0, 1, 1, 2, 2, 3, 4]))]
            size = nbytes(dtype, shape)
            if size is not None:
                break
        else:
            dtype, shape, size = "U8", [1], 1
        if dtype == "BOOL":
            blob = bytes(r.choice([0, 1]) for _ in range(size))
        else:
            blob = bytes(r.getrandbits(8) for _ in range(size))
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += blob
    if r.random() < 0.5:
        hdr["__metadata__"] = {"format": "pt", "k": r.choice(["v", "", "\u00fc", "1"])}
    return hdr, bytes(data)


def two_ints(v):
    return isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)


def mutate_structure(hdr, data, r):
    """One structural change to a header dict and/or the data. May return a list of
    (key, value) pairs instead of a dict, to write a key twice."""
    keys = [k for k in hdr if k != "__metadata__" and isinstance(hdr[k], dict)]
    k = r.choice(keys) if keys else None
    t = hdr[k] if k is not None else None
    m = r.randrange(23)
    if m == 0 and t is not None:
        t["dtype"] = r.choice(list(DTYPE_BITS) + NEAR_MISSES)
    elif m == 1 and t is not None:
        t["shape"] = r.choice([[-1], [1.0], ["2"], [2**63], [2**64], [2**64 - 1], None, "x",
                               [1, [2]], [True], [0] * r.randint(0, 9), [1] * 70,
                               [2**32, 2**32], [0, 2**63], [2**40, 2**40, 0], [2**62, 4, 0],
                               [0, 2**64], [3, 2**61], [0, 2**40, 2**40], [0, 3, 2**62],
                               [2**62, 0, 2**62]])
    elif m == 2 and t is not None:
        t["data_offsets"] = r.choice([[0], [1, 0], [0, 2**64], [-1, 0], [0.0, 0.0], None,
                                      [0, 0, 0], ["0", "0"], [2**63, 2**63],
                                      [0, len(data) + 1], [2**64 - 1, 2**64 - 1]])
    elif m == 3 and t is not None and two_ints(t.get("data_offsets")):
        t["data_offsets"][0] += r.choice([-1, 1])
    elif m == 4 and t is not None and two_ints(t.get("data_offsets")):
        t["data_offsets"][1] += r.choice([-1, 1])
    elif m == 5 and t:
        del t[r.choice(list(t))]
    elif m == 6 and t is not None:
        t[r.choice(["extra", "dtype2", "Dtype", "DATA_OFFSETS"])] = r.choice([1, "x", None, [], {}])
    elif m == 7:
        hdr["__metadata__"] = r.choice([None, [], {"a": 1}, {"a": None}, {"a": ["x"]},
                                        {"a": {"b": "c"}}, {}, "x", {"": ""}, {"a": True}])
    elif m == 8 and k is not None:
        hdr[k] = r.choice([None, [], "x", 1, {}])
    elif m == 9:
        data += b"\0" * r.randint(1, 9)
    elif m == 10 and data:
        data = data[:-r.randint(1, min(9, len(data)))]
    elif m == 11 and t is not None:  # the same key twice
        pairs = list(hdr.items())
        pairs.insert(r.randrange(len(pairs) + 1), (k, dict(t) if r.random() < 0.5 else
                                                   dict(t, shape=[7])))
        return pairs, data
    elif m == 12 and "__metadata__" in hdr and isinstance(hdr["__metadata__"], dict):
        return list(hdr.items()) + [("__metadata__", {"format": "np"})], data
    elif m == 13 and t is not None and len(keys) > 1:
        t["data_offsets"] = hdr[r.choice(keys)].get("data_offsets")
    elif m == 14 and len(keys) > 1:  # two tensors' ranges swapped
        a, b = r.sample(keys, 2)
        hdr[a]["data_offsets"], hdr[b]["data_offsets"] = (hdr[b].get("data_offsets"),
                                                          hdr[a].get("data_offsets"))
    elif m == 15 and t is not None:
        t["dtype"] = "BOOL"
    elif m == 16 and t is not None and isinstance(t.get("dtype"), str):
        t["dtype"] = t["dtype"].lower()
    elif m == 17 and k is not None:  # renamed to something odd
        hdr[r.choice(["__metadata__", "", "\ud800", "a\u0000", "x" * 300])] = hdr.pop(k)
    elif m == 18 and t is not None:
        t["shape"] = list(reversed(t.get("shape") or [])) + [1]
    elif m == 19:
        hdr = {"__metadata__": hdr.pop("__metadata__", {"a": "b"}), **hdr}
    elif m == 20 and t is not None and isinstance(t.get("dtype"), str):  # serde's enum form
        t["dtype"] = {t["dtype"]: None}
    elif m == 21 and t is not None and {"dtype", "shape", "data_offsets"} <= set(t):
        hdr[k] = [t["dtype"], t["shape"], t["data_offsets"]]  # serde's sequence form
    elif m == 22 and t is not None:  # an unknown field nested deep
        depth = r.choice([20, 30, 31, 32, 40, 100, 126, 127, 128, 129, 200])
        t["deep"] = json.loads("[" * depth + "]" * depth)
    return hdr, data


def dump(hdr, r):
    pairs = hdr if isinstance(hdr, list) else list(hdr.items())
    sep = r.choice([(",", ":"), (", ", ": ")])
    ascii_only = r.random() < 0.5
    inner = sep[0].join(json.dumps(k, ensure_ascii=ascii_only) + sep[1] +
                        json.dumps(v, ensure_ascii=ascii_only, separators=sep) for k, v in pairs)
    return ("{" + inner + "}").encode("utf-8", "surrogatepass")


def mutate_text(b, r):
    """One byte-level change to the JSON text."""
    m = r.randrange(16)
    b = bytearray(b)
    if m == 0 and b:
        b[r.randrange(len(b))] = r.getrandbits(8)
    elif m == 1 and b:
        del b[r.randrange(len(b))]
    elif m == 2:
        b.insert(r.randrange(len(b) + 1), r.choice(b' \t\n\r,:{}[]"\\0e.-+\x00\x7f\xc3\xff'))
    elif m == 3:
        b[0:0] = b" " * r.randint(1, 3)
    elif m == 4:
        b += r.choice([b" ", b"\n", b"\x00", b"  ", b"\t", b"}", b" x", b"\r\n"])
    replacements = {5: (b'"', b"'"), 6: (b":", b" : "), 7: (b"0", b"0.0"), 8: (b"0", b"-0"),
                    9: (b"0", b"00"), 10: (b"0", b"0e0"), 11: (b'"a', b'"\\u0061'),
                    12: (b'"', b'"\\ud800'), 13: (b"}", b",}"), 14: (b'"F', b'"\\u0046'),
                    15: (b"]", b",]")}
    if m in replacements:
        old, new = replacements[m]
        return bytes(b).replace(old, new, 1)
    return bytes(b)


def make_case(r):
    hdr, data = valid_case(r)
    for _ in range(r.choice([0, 0, 1, 1, 2])):
        hdr, data = mutate_structure(hdr, data, r)
        if isinstance(hdr, list):
            break
    text = dump(hdr, r)
    if r.random() < 0.35:
        text = mutate_text(text, r)
    if r.random() < 0.7:
        text += b" " * (-len(text) % 8)
    prefix = len(text)
    if r.random() < 0.04:
        prefix = max(0, prefix + r.choice([-1, 1, 7, -8, 2**40, 2**63]))
    return struct.pack("<Q", prefix) + text + data


def tensor_bytes(torch, t):
    t = t.detach().cpu()
    return t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


def read_reference(path, safetensors, numpy_arrays=False):
    """('ok', result) or ('err', message). The tensors come from the reference's Rust
    parser (safetensors.deserialize: names, dtype strings, shapes, raw bytes, whatever
    torch has), the metadata from safe_open, which refuses the dtypes its torch mapping
    lacks ("Dtype not understood: F6_E2M3"): then the metadata is not compared. With
    ``numpy_arrays``, safe_open(framework="np") gives the metadata and each tensor's
    bytes (reference_arrays)."""
    with open(path, "rb") as f:
        buf = f.read()
    try:
        tensors = {name: [info["dtype"], list(info["shape"]), bytes(info["data"])]
                   for name, info in safetensors.deserialize(buf)}
    except Exception as e:  # safetensors_rust.SafetensorError and friends
        return "err", "%s: %s" % (type(e).__name__, e)
    try:
        with safetensors.safe_open(path, framework="np" if numpy_arrays else "pt") as f:
            metadata, order = f.metadata(), f.offset_keys()
            f8_refused = reference_arrays(f, path, tensors) if numpy_arrays else set()
    except Exception as e:
        if "Dtype not understood" not in str(e):
            return "err", "safe_open: %s: %s" % (type(e).__name__, e)
        metadata = order = UNKNOWN
        f8_refused = set()
        for entry in tensors.values():  # the reference's numpy readers refuse the file
            if numpy_arrays:
                entry[2] = view_as_numpy(entry, "safe_open: %s" % e)
    header = parse_file(buf)[0]  # the reference took it, so it is JSON
    offsets = {k: tuple(v[2] if isinstance(v, list) else v["data_offsets"])  # serde's forms
               for k, v in header.items() if k != "__metadata__"}
    return "ok", {"metadata": metadata, "tensors": tensors, "order": order, "offsets": offsets,
                  "f8_refused": f8_refused}


def view_as_numpy(entry, why):
    """The bytes of the parser's [dtype, shape, raw bytes] ``entry`` as the reference's
    numpy code views them (safetensors.numpy.load: frombuffer, reshape), or "cannot
    hold: ..." (``why`` for a dtype numpy lacks, numpy's ValueError for a shape)."""
    import numpy as np
    if numpy_dtype(entry[0]) is None:
        return "cannot hold: " + why
    try:
        return np.frombuffer(entry[2], dtype=numpy_dtype(entry[0])).reshape(entry[1]).tobytes()
    except ValueError as e:
        return "cannot hold: ValueError: %s" % e


def reference_arrays(f, path, tensors):
    """Replaces the parser's bytes in ``tensors`` by those of the reference's numpy
    arrays (``f``: its safe_open(framework="np")): numpy_bytes of get_tensor, or "cannot
    hold: ..." where numpy has no such dtype (numpy's TypeError or AttributeError) or
    shape (its ValueError). safetensors.numpy.load_file must agree: the same arrays, or
    an error where get_tensor raised one. An F8 tensor the reference cannot load where
    shardload loads it as ml_dtypes' type keeps the parser's bytes, viewed as that type
    (view_as_numpy), and its name goes to the returned set."""
    import safetensors.numpy as sn
    arrays = {}  # tensors stays the parser's until every get_tensor has answered
    f8_refused = set()
    for name, entry in tensors.items():
        try:
            arrays[name] = numpy_bytes(f.get_tensor(name), *entry[:2])
        except (TypeError, AttributeError, ValueError) as e:
            arrays[name] = "cannot hold: %s: %s" % (type(e).__name__, e)
            if entry[0].startswith("F8_") and numpy_dtype(entry[0]) is not None:
                f8_refused.add(name)
    try:
        whole = sn.load_file(path)
    except (TypeError, AttributeError, ValueError):
        whole = None
    if whole is None and all(isinstance(v, bytes) for v in arrays.values()) or \
            whole is not None and {k: numpy_bytes(v, *tensors[k][:2])
                                   for k, v in whole.items()} != arrays:
        raise RuntimeError("the reference's numpy load_file and get_tensor disagree")
    for name, data in arrays.items():
        tensors[name][2] = view_as_numpy(tensors[name], "") if name in f8_refused else data
    return f8_refused


def torch_lacks(e):
    """Whether shardload's error says the installed torch cannot hold the tensor (no
    such dtype, F4 with an odd last dimension, a dimension past int64), not that the
    file is bad."""
    return (e.code == "unimplemented" or
            (e.code == "invalid_argument" and " loads as torch." in e.message) or
            (e.code == "out_of_range" and "does not fit torch's int64 sizes" in e.message))


def numpy_lacks(e):
    """Whether shardload's error says numpy cannot hold the tensor: a dtype numpy lacks
    (BF16, the F8 family, F4/F6), or a shape numpy cannot have (more dimensions than it
    takes, a zero-element shape whose size overflows)."""
    return ((e.code == "unimplemented" and "has no numpy type" in e.message) or
            (e.code == "out_of_range" and "numpy's" in e.message))


def numpy_bytes(a, dtype, shape):
    """The bytes of an array read as stored tensor ``dtype``/``shape``, which must be
    an np.ndarray of numpy's type for that dtype (little-endian), of that shape,
    C-contiguous and writable (as safetensors.numpy gives them); RuntimeError if not."""
    import numpy as np
    if not isinstance(a, np.ndarray):
        raise RuntimeError("got a %s, not an np.ndarray" % type(a).__name__)
    if (a.dtype, a.shape) != (numpy_dtype(dtype), tuple(shape)):
        raise RuntimeError("a %s%s array for %s%s" % (a.dtype.str, a.shape, dtype, shape))
    if not (a.flags.c_contiguous and a.flags.writeable):
        raise RuntimeError("an array that is not C-contiguous and writable: %s" % a.flags)
    return a.tobytes()


class TorchReads:
    """How read_shardload drives shardload's torch readers: tensors on ``device``,
    compared as bytes where the installed torch has their dtype."""
    framework = "pt"

    def __init__(self, torch, shardload, device):
        self.torch, self.shardload, self.device = torch, shardload, device
        self.want = torch.device(device)

    def open(self, path):
        return self.shardload.safe_open(path, framework="pt", device=self.device)

    def load_file(self, path, **kwargs):
        return self.shardload.load_file(path, device=self.device, **kwargs)

    def data(self, t, dtype, shape):
        if t.device != self.want:
            raise RuntimeError("a tensor came back on %s, not %s" % (t.device, self.want))
        return tensor_bytes(self.torch, t)

    lacks = staticmethod(torch_lacks)

    @staticmethod
    def misaligned(t):
        return t.numel() and t.data_ptr() % t.element_size()


class NumpyReads:
    """How read_shardload drives shardload's numpy readers (safe_open(framework="np"),
    shardload.numpy.load_file): arrays checked and compared by numpy_bytes."""
    framework = "np"

    def __init__(self, shardload):
        import shardload.numpy as snp
        self.shardload, self.load_file = shardload, snp.load_file

    def open(self, path):
        return self.shardload.safe_open(path, framework="np")

    data = staticmethod(numpy_bytes)
    lacks = staticmethod(numpy_lacks)

    @staticmethod
    def misaligned(a):
        return a.size and a.ctypes.data % a.itemsize


def read_shardload(path, shardload, reads):
    """('ok', result), ('err', message) or ('crash', message), read the way ``reads``
    (TorchReads, NumpyReads) says: through ``safe_open`` and ``load_file``, twice."""
    try:
        with reads.open(path) as f:
            result = {"metadata": f.metadata(), "tensors": {}, "order": f.offset_keys()}
            try:  # get_tensors: every tensor, in offset order
                if list(f.get_tensors()) != result["order"]:
                    return "crash", "get_tensors' order %r is not offset_keys'" % list(f.get_tensors())
            except shardload.ShardloadError as e:
                if not reads.lacks(e):
                    raise
            for name in f.keys():
                s = f.get_slice(name)
                entry = [s.get_dtype(), list(s.get_shape()), None]
                try:
                    entry[2] = reads.data(f.get_tensor(name), *entry[:2])
                except shardload.ShardloadError as e:
                    if not reads.lacks(e):
                        raise
                    entry[2] = "cannot hold: %s: %s" % (e.code, e.message)
                result["tensors"][name] = entry
        try:
            whole = reads.load_file(path)
        except shardload.ShardloadError as e:
            if not reads.lacks(e):
                raise
            whole = None
        if whole is not None:
            if list(whole) != list(result["tensors"]) and sorted(whole) != sorted(result["tensors"]):
                return "crash", "load_file keys %r != safe_open keys %r" % (list(whole), list(result["tensors"]))
            for name, t in whole.items():
                if reads.data(t, *result["tensors"][name][:2]) != result["tensors"][name][2]:
                    return "crash", "load_file and get_tensor disagree on %r" % name
            # File-phase placement: the same bytes, and never off a tensor's element size.
            phased = reads.load_file(path, placement="file-phase")
            for name, t in phased.items():
                if reads.data(t, *result["tensors"][name][:2]) != result["tensors"][name][2]:
                    return "crash", "file-phase load_file and get_tensor disagree on %r" % name
                if reads.misaligned(t):
                    return "crash", "file-phase %r off its element size" % name
        elif all(isinstance(v[2], bytes) for v in result["tensors"].values()):
            return "crash", "load_file refuses a file whose every tensor get_tensor reads"
        return "ok", result
    except shardload.ShardloadError as e:
        return "err", "%s: %s" % (e.code, e.message)
    except Exception as e:  # a bug in the Python layer (torch's messages run on for pages)
        return "crash", "%s: %s" % (type(e).__name__, (str(e).splitlines() or [""])[0])


def grouped(order, offsets):
    """offset_keys as runs of names with the same data_offsets, each run a set: the
    reference orders tensors with equal offsets (empty ones) in hash order, which
    changes from process to process."""
    runs = []
    for name in order:
        if runs and offsets.get(name) == runs[-1][0]:
            runs[-1][1].add(name)
        else:
            runs.append((offsets.get(name), {name}))
    return runs


def compare(ref, ours):
    """None when they agree, the name of an intended difference, or a description."""
    if ours[0] == "crash":
        return "shardload raised " + ours[1]
    if ref[0] == "err" and ours[0] == "err":
        return None
    if ref[0] == "ok" and ours[0] == "err":
        for name, words in INTENDED.items():
            if words in ours[1]:
                return name
        return "reference accepts, shardload rejects"
    if ref[0] == "err":
        return "reference rejects, shardload accepts"
    a, b = ref[1], ours[1]
    if a["order"] is not UNKNOWN and grouped(a["order"], a["offsets"]) != \
            grouped(b["order"], a["offsets"]):
        return "offset_keys differ: %r vs %r" % (a["order"], b["order"])
    if a["metadata"] is not UNKNOWN and a["metadata"] != b["metadata"]:
        return "metadata differs: %r vs %r" % (a["metadata"], b["metadata"])
    if sorted(a["tensors"]) != sorted(b["tensors"]):
        return "tensor names differ"
    for name, (dtype, shape, data) in a["tensors"].items():
        odtype, oshape, odata = b["tensors"][name]
        if (dtype, shape) != (odtype, oshape):
            return "tensor %r: %s %s vs %s %s" % (name, dtype, shape, odtype, oshape)
        if isinstance(odata, bytes) and data != odata:  # else torch lacks the dtype
            return "tensor %r: bytes differ" % name
    return None


def compare_numpy(ref, ours):
    """compare() for the numpy readers, where a tensor numpy cannot hold is refused by
    both (get_tensor and load_file) rather than compared: "numpy-lacks-dtype" or
    "numpy-lacks-shape" when one is, shardload's refusal the one for its kind."""
    verdict = compare(ref, ours)
    if verdict is not None or ref[0] != "ok":
        return verdict
    verdict = None
    for name, (dtype, shape, data) in ours[1]["tensors"].items():
        theirs = ref[1]["tensors"][name][2]
        if isinstance(data, bytes) and isinstance(theirs, bytes):
            continue
        if isinstance(data, bytes) or isinstance(theirs, bytes):
            return "one reader refuses a tensor: %r (%s %s): reference %s / shardload %s" % (
                name, dtype, shape, theirs if isinstance(theirs, str) else "reads it",
                data if isinstance(data, str) else "reads it")
        lacks_dtype = numpy_dtype(dtype) is None
        if ("has no numpy type" in data) != lacks_dtype:
            return "shardload's refusal names another cause: %r (%s %s): %s" % (
                name, dtype, shape, data)
        verdict = "numpy-lacks-dtype" if lacks_dtype else verdict or "numpy-lacks-shape"
    if verdict is None and ref[1]["f8_refused"]:
        return "reference-cannot-load-f8"
    return verdict


# ----------------------------------------------------------------------------- writers

TORCH_DTYPES = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16",
                "int8", "uint8", "bool", "complex64", "uint16", "uint32", "uint64",
                "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu"]


def random_shape(r):
    return [r.choice([0, 1, 2, 3, 5]) for _ in range(r.choice([0, 1, 1, 2, 2, 3]))]


def random_tensor(torch, r, dtype):
    shape = random_shape(r)
    count = 1
    for d in shape:
        count *= d
    if dtype == torch.bool:
        return torch.tensor([r.choice([0, 1]) for _ in range(count)], dtype=torch.uint8
                            ).bool().reshape(shape)
    size = torch.empty(0, dtype=dtype).element_size()
    raw = torch.tensor([r.getrandbits(8) for _ in range(count * size)], dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


def make_write_case(torch, r):
    """(tensors, metadata) for both writers: random tensors and metadata, sometimes
    with what both must refuse (shared memory, non-contiguous, non-tensor values,
    non-str metadata)."""
    dtypes = [getattr(torch, d) for d in TORCH_DTYPES if hasattr(torch, d)]
    tensors = {}
    for i in range(r.choice([0, 1, 2, 3, 4, 6])):
        tensors[r.choice(NAMES) + r.choice(["", str(i), "x"])] = random_tensor(
            torch, r, r.choice(dtypes))
    m = r.randrange(12)
    names = list(tensors)
    if m == 0 and names:  # the same tensor twice
        tensors[names[0] + "_tied"] = tensors[names[0]]
    elif m == 1 and names and tensors[names[0]].numel() > 1:  # a view into another
        tensors[names[0] + "_view"] = tensors[names[0]].reshape(-1)[1:]
    elif m == 2:  # non-contiguous
        tensors["t"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()
    elif m == 3:
        tensors["n"] = r.choice([1, None, [1.0], "x"])
    return tensors, random_metadata(r, "pt")


def random_metadata(r, fmt):
    """Metadata for a write case: None, {}, {"format": fmt}, a few str keys and values,
    or (3%) what the writers must refuse (non-str keys or values, a non-dict)."""
    metadata = r.choice([None, None, {}, {"format": fmt}])
    if r.random() < 0.3:
        metadata = {r.choice(["format", "k", "\u00e9", "z", "a", ""]) + str(k):
                    r.choice([fmt, "", "v", "\u00fc"]) for k in range(r.randint(0, 4))}
    if r.random() < 0.03:
        metadata = r.choice([{"a": 1}, {1: "a"}, ["a"], "x", {"a": None}])
    return metadata


def parse_file(data):
    """(header dict, data bytes) of a file, or None when its header is not JSON."""
    if len(data) < 8:
        return None
    n = struct.unpack("<Q", data[:8])[0]
    try:
        return json.loads(data[8:8 + n]), data[8 + n:]
    except ValueError:
        return None


def write_both(shardload, metadata, tmp, *writes):
    """The outcomes of ``writes`` ((save_file, tensors) pairs, the reference's first),
    each ('ok', bytes) or ('err', 'Type: message')."""
    out = []
    for i, (save, tensors) in enumerate(writes):
        path = os.path.join(tmp, "w%d.safetensors" % i)
        try:
            save(tensors, path, metadata=metadata)
            with open(path, "rb") as f:
                out.append(("ok", f.read()))
        except shardload.ShardloadError as e:
            out.append(("err", "ShardloadError: %s: %s" % (e.code, e.message)))
        except Exception as e:
            out.append(("err", "%s: %s" % (type(e).__name__, e)))
    return out


def compare_writes(safetensors, ref, ours, tensors, metadata):
    """None when the writers agree (the same bytes, or with metadata of several keys,
    which the reference writes in hash order, the same parsed header and data; or the
    same exception type and message), the name of an intended difference, or a
    description."""
    if ref[0] == "err" or ours[0] == "err":
        if ref == ours:
            return None
        return "writers differ: reference %s / shardload %s" % (
            ref[1] if ref[0] == "err" else "writes", ours[1] if ours[0] == "err" else "writes")
    try:
        safetensors.deserialize(ours[1])
    except Exception as e:
        return "the reference cannot read shardload's file: %s" % e
    if ref[1] == ours[1]:
        return None
    if parse_file(ref[1]) is None and parse_file(ours[1]) is not None and \
            not tensors and metadata == {}:
        return "reference-writes-invalid"
    if isinstance(metadata, dict) and len(metadata) > 1 and \
            parse_file(ref[1]) == parse_file(ours[1]):
        return None
    return "files differ"


def run_writes(args, cases, torch, safetensors, st, shardload, r, tmp):
    counts, failures = new_tally("same-write", "same-refusal")
    for i in range(cases):
        tensors, metadata = make_write_case(torch, r)
        ref, ours = write_both(shardload, metadata, tmp, (st.save_file, tensors),
                               (shardload.save_file, tensors))
        verdict = compare_writes(safetensors, ref, ours, tensors, metadata)
        tally(counts, failures, verdict, "same-write" if ref[0] == "ok" else "same-refusal",
              INTENDED_WRITES, i, lambda: "\n  tensors: %s\n  metadata: %r" % (
                  {k: (str(v.dtype), tuple(v.shape)) if hasattr(v, "dtype") else v
                   for k, v in tensors.items()}, metadata), args.verbose)
    return counts, failures


# NUMPY_WRITE_DTYPES: the numpy dtypes safetensors.numpy writes (F64 ... BOOL, C64);
# NUMPY_UNWRITABLE: numpy dtypes both writers must refuse.
NUMPY_WRITE_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8",
                      "uint64", "uint32", "uint16", "uint8", "bool", "complex64"]
NUMPY_UNWRITABLE = ["complex128", "longdouble", "object", "<U2", "datetime64[s]", "i4,f4",
                    "V3"]
# NUMPY_ML_WRITE_DTYPES: ml_dtypes' types both write (as BF16 and F8_*) where it is
# importable, drawn for the plain arrays of a case.
NUMPY_ML_WRITE_DTYPES = list(ML_DTYPES.values()) if ml_dtypes is not None else []
# INTENDED_NUMPY_WRITES: where the numpy writers differ on purpose (docs/EMBEDDING.md,
# "numpy arrays"): INTENDED_WRITES; safetensors 0.8 writes the memory under a
# non-contiguous array, not its values; a non-dict or a non-array value is ValueError
# (safetensors: an AttributeError from its code), a dtype safetensors has no name for
# ShardloadError "invalid_argument" (safetensors: its SafetensorError).
INTENDED_NUMPY_WRITES = INTENDED_WRITES | {"reference-writes-view-memory",
                                           "non-array-refused", "no-safetensors-dtype"}


def random_array(np, r, dtype, shape=None):
    shape = random_shape(r) if shape is None else shape
    count = 1
    for d in shape:
        count *= d
    if dtype == "bool":
        return np.array([r.choice([False, True]) for _ in range(count)], dtype=bool).reshape(shape)
    raw = bytes(r.getrandbits(8) for _ in range(count * np.dtype(dtype).itemsize))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def make_numpy_write_case(np, r):
    """(arrays, metadata) for both numpy writers: random arrays of every dtype
    safetensors.numpy writes, scalars, empty shapes, odd names, and sometimes a
    non-contiguous or big-endian array, or what both must refuse (a non-array value,
    a dtype safetensors lacks, a name that is not a str, a non-dict)."""
    arrays = {}
    for i in range(r.choice([0, 1, 2, 3, 4, 6])):
        arrays[r.choice(NAMES) + r.choice(["", str(i), "x"])] = random_array(
            np, r, r.choice(NUMPY_WRITE_DTYPES + NUMPY_ML_WRITE_DTYPES))
    m = r.randrange(13)
    names = list(arrays)
    dtype = r.choice(NUMPY_WRITE_DTYPES)
    if m in (2, 3) and NUMPY_ML_WRITE_DTYPES and r.random() < 0.5:
        dtype = r.choice(NUMPY_ML_WRITE_DTYPES)  # big-endian ml_dtypes keep their name
    base = random_array(np, r, dtype, [r.randint(1, 4), r.randint(2, 4)])
    if m == 0:  # non-contiguous, its memory starting where it starts
        arrays["v"] = r.choice([base.T, base[::2], base[:, 1:], base[1:, ::2]])
    elif m == 1:  # negative strides
        arrays["v"] = r.choice([base[::-1], base[:, ::-1], base.T[::-1]])
    elif m == 2:  # big-endian (one-byte dtypes have no byte order)
        arrays["be"] = base.astype(base.dtype.newbyteorder(">"))
    elif m == 3:  # big-endian and non-contiguous
        arrays["be"] = base.astype(base.dtype.newbyteorder(">")).T
    elif m == 4:  # a scalar
        arrays["s"] = np.array(r.choice([0, 1, 7]), dtype=dtype)
    elif m == 5:
        arrays[r.choice(["n", "a"])] = r.choice([1, None, [1.0], "x", np.float32(1), b"ab"])
    elif m == 6:
        arrays["u"] = np.zeros(r.choice([(2,), (), (0, 3)]), dtype=r.choice(NUMPY_UNWRITABLE))
    elif m == 7:
        arrays[r.choice([1, None, b"x", ("a",)])] = base
    elif m == 8:
        arrays = r.choice([[base], None, "x", (("a", base),)])
    elif m == 9 and names:  # one array under two names; a view into another
        arrays[names[0] + "_tied"] = arrays[names[0]]
        arrays[names[0] + "_view"] = arrays[names[0]].reshape(-1)[1:]
    return arrays, random_metadata(r, "np")


def numpy_refusal(ref, ours):
    """The intended difference two refusals of the numpy writers are, or None."""
    if ref[0] != "err" or ours[0] != "err":
        return None
    if ref[1].startswith("AttributeError: ") and ours[1].startswith("ValueError: ") and \
            ("expected numpy.ndarray" in ours[1] or "Expected a dict" in ours[1]):
        return "non-array-refused"
    if ref[1].startswith("SafetensorError: Unknown dtype") and \
            ours[1].startswith("ShardloadError: invalid_argument: ") and \
            "has no safetensors dtype" in ours[1]:
        return "no-safetensors-dtype"
    return None


def holds_values(data, canonical):
    """None when the file ``data`` holds each array of ``canonical`` (C order,
    little-endian) under its name with its bytes, else a description."""
    header, blob = parse_file(data)
    for name, a in canonical.items():
        entry = header.get(name)
        if entry is None or entry["shape"] != list(a.shape) or \
                blob[entry["data_offsets"][0]:entry["data_offsets"][1]] != a.tobytes():
            return "shardload's file does not hold an array's values: %r" % name
    return None


def run_numpy_writes(args, cases, safetensors, shardload, r, tmp):
    """shardload.numpy.save_file against safetensors.numpy.save_file."""
    import numpy as np
    import safetensors.numpy as sn
    import shardload.numpy as snp
    counts, failures = new_tally("same-write", "same-refusal")
    for i in range(cases):
        arrays, metadata = make_numpy_write_case(np, r)
        writable = NUMPY_WRITE_DTYPES + NUMPY_ML_WRITE_DTYPES
        canonical = {k: v.astype(v.dtype.newbyteorder("<"), order="C")  # 0-d kept
                     for k, v in arrays.items() if isinstance(v, np.ndarray) and
                     v.dtype.name in writable} if isinstance(arrays, dict) else {}
        views = [k for k, v in canonical.items() if not arrays[k].flags.c_contiguous]
        # safetensors 0.8 reads a view's nbytes from its first element on: past the
        # memory of one with negative strides, so it gets the values instead.
        backwards = any(s < 0 for k in views for s in arrays[k].strides)
        ref, ours = write_both(shardload, metadata, tmp, (sn.save_file, {
            **arrays, **canonical} if backwards else arrays), (snp.save_file, arrays))
        verdict = numpy_refusal(ref, ours) or compare_writes(safetensors, ref, ours,
                                                             arrays, metadata)
        if ours[0] == "ok" and verdict in (None, "files differ"):
            if views and not backwards and verdict is not None:  # the values, written
                ref = write_both(shardload, metadata, tmp, (sn.save_file, canonical))[0]
                verdict = compare_writes(safetensors, ref, ours, arrays, metadata) or \
                    "reference-writes-view-memory"
            verdict = holds_values(ours[1], canonical) or verdict
        tally(counts, failures, verdict, "same-write" if ref[0] == "ok" else "same-refusal",
              INTENDED_NUMPY_WRITES, i, lambda: "\n  arrays: %s\n  metadata: %r" % (
                  {k: (v.dtype.str, v.shape, v.strides) if hasattr(v, "dtype") else v
                   for k, v in arrays.items()} if isinstance(arrays, dict) else arrays,
                  metadata), args.verbose)
    return counts, failures


# ----------------------------------------------------------------------------- load_model

def random_module(torch, r, tie):
    """A small model: Linear / Embedding / LayerNorm / BatchNorm1d layers (parameters,
    buffers, num_batches_tracked), sometimes a bias-free layer, a non-persistent buffer,
    a nested block, a tied head."""
    nn = torch.nn
    width = r.choice([2, 3, 4])
    root = nn.Module()
    root.embed = nn.Embedding(r.choice([0, 3, 5]), width)
    layers = []
    for _ in range(r.choice([0, 1, 2, 3])):
        kind = r.randrange(4)
        if kind == 0:
            layers.append(nn.Linear(width, width, bias=r.random() < 0.7))
        elif kind == 1:
            layers.append(nn.LayerNorm(width))
        elif kind == 2:
            layers.append(nn.BatchNorm1d(width))
        else:
            block = nn.Module()
            block.inner = nn.Linear(width, width)
            if r.random() < 0.5:
                block.register_buffer("scale", torch.ones(width), persistent=r.random() < 0.5)
            layers.append(block)
    root.layers = nn.ModuleList(layers)
    root.head = nn.Linear(width, root.embed.num_embeddings, bias=False)
    if tie:
        root.head.weight = root.embed.weight
    return root


def mutate_state(torch, r, state):
    """A checkpoint dict from a model's state_dict: sometimes a key dropped, an extra
    key, a shape changed, a dtype changed, or a tied entry left out."""
    state = {k: v.detach().clone() for k, v in state.items()}
    keys = list(state)
    for _ in range(r.choice([0, 0, 1, 2])):
        m = r.randrange(5)
        if m == 0 and keys:
            state.pop(r.choice(keys), None)
        elif m == 1:
            state[r.choice(["extra", "layers.9.weight", "head.bias", "embed.weight2"])] = \
                torch.zeros(2)
        elif m == 2 and keys:
            k = r.choice(keys)
            if k in state and state[k].dim() > 0:
                state[k] = torch.zeros([d + 1 for d in state[k].shape], dtype=state[k].dtype)
        elif m == 3 and keys:
            k = r.choice(keys)
            if k in state and state[k].is_floating_point():
                state[k] = state[k].to(r.choice([torch.float16, torch.bfloat16, torch.float64]))
        elif m == 4 and keys:
            k = r.choice(keys)
            if k in state and state[k].is_floating_point():
                state[k] = state[k].to(torch.int64)
    return state


def load_outcome(torch, fn, model):
    """('ok', (missing, unexpected), state bytes) or ('err', 'Type: message', state bytes):
    what load_model returned or raised, and the model's entries after it."""
    try:
        result = fn()
        out = ("ok", (list(result[0]), list(result[1])))
    except Exception as e:
        out = ("err", "%s: %s" % (type(e).__name__, e))
    state = {k: (str(v.dtype), tuple(v.shape), tensor_bytes(torch, v.detach()))
             for k, v in model.state_dict().items()}
    return out + (state,)


def explained_strict_error(message, hub_raised, tied, counts):
    """Whether a strict error one side raised (and the other did not) names only tied
    entries, or, the hub's, BatchNorm num_batches_tracked entries (compare_hub_sharded);
    counts it."""
    names = set(re.findall(r'"([^"]*)"', message))
    batchnorm = {k for k in names if hub_raised and k.endswith(".num_batches_tracked")}
    rest = names - batchnorm
    if not names or not rest <= tied:
        return False
    for kind, hit in (("tie-semantics", rest), ("hub-missing-num_batches_tracked", batchnorm)):
        if hit:
            counts[kind] += 1
    return True


def compare_hub_sharded(torch, shardload, hub, r, i, source, target, strict, tmp, counts,
                        failures):
    """huggingface_hub's save_torch_model writes ``source`` as a sharded folder; its
    load_torch_model and shardload's load_model load it into equal copies of
    ``target``: the same sorted (missing, unexpected) and contents, or the same
    exception type. Intended ("tie-semantics"): differences only in the names the
    target ties together. The hub runs torch's load_state_dict shard by shard, which
    wants every name of a tied group; shardload, as safetensors' load_model, wants one
    (a tied name the file lacks is not missing, a second one the file holds is
    unexpected); and the hub's missing list names a BatchNorm's num_batches_tracked
    that torch's load_state_dict fills in (counted as hub-missing-num_batches_tracked)."""
    import copy
    import shutil
    folder = os.path.join(tmp, "hub_model%d" % i)
    os.makedirs(folder)
    hub.save_torch_model(source, folder, max_shard_size=r.choice([64, 200, 1000, "5GB"]))
    a, b = copy.deepcopy(target), copy.deepcopy(target)
    theirs = load_outcome(torch, lambda: hub.load_torch_model(a, folder, strict=strict), a)
    ours = load_outcome(torch, lambda: shardload.load_model(b, folder, strict=strict), b)
    shutil.rmtree(folder)
    state = target.state_dict()
    tied = {k for k, v in state.items() for k2, v2 in state.items()
            if k != k2 and v.numel() and v.data_ptr() == v2.data_ptr()}

    def tie_only(names):  # a difference only in names the target ties together
        return bool(names) and set(names) <= tied

    def untied_contents(outcome):
        return {k: v for k, v in outcome[2].items() if k not in tied}
    verdict = None
    if theirs[0] == ours[0] == "ok":
        (hm, hu), (om, ou) = theirs[1], ours[1]
        # The hub computes "missing" itself (model keys less file keys), so a BatchNorm's
        # num_batches_tracked, which torch's load_state_dict fills in when the file lacks
        # it (and so does not report, nor do safetensors and shardload), is in its list.
        batchnorm = {k for k in set(hm) - set(om) if k.endswith(".num_batches_tracked")}
        if batchnorm:
            counts["hub-missing-num_batches_tracked"] += 1
            hm = [k for k in hm if k not in batchnorm]
        differ = (set(hm) ^ set(om)) | (set(hu) ^ set(ou))
        if not differ:
            if theirs[2] != ours[2]:
                verdict = "hub sharded load: contents differ"
        elif tie_only(differ) and untied_contents(theirs) == untied_contents(ours):
            counts["tie-semantics"] += 1
            return
        else:
            verdict = "hub sharded load differs: %s / %s" % (theirs[1], ours[1])
    elif theirs[0] == ours[0] == "err":
        if theirs[1].split(":")[0] != ours[1].split(":")[0]:
            verdict = "hub sharded load: errors differ: %s / %s" % (theirs[1], ours[1])
    elif strict and explained_strict_error(theirs[1] if theirs[0] == "err" else ours[1],
                                           theirs[0] == "err", tied, counts):
        return  # one side's strict error names only entries explained above
    else:
        verdict = "hub sharded load: hub %s / shardload %s" % (theirs[1], ours[1])
    if verdict is None:
        counts["same-hub-sharded"] += 1
        return
    fail(failures, verdict, i, lambda: "\n  strict %s, model %s" % (
        strict, {k: tuple(v.shape) for k, v in state.items()}), shown=3)


def run_models(args, cases, torch, st, shardload, r, tmp):
    import copy
    import warnings
    warnings.filterwarnings("ignore", "Initializing zero-element tensors")  # Embedding(0, n)
    counts, failures = new_tally("same-result", "same-error")
    path = os.path.join(tmp, "model.safetensors")
    try:
        import huggingface_hub as hub
    except ImportError:
        hub = None
    for i in range(cases):
        torch.manual_seed(r.getrandbits(32))
        tie = r.random() < 0.4
        source = random_module(torch, r, tie and r.random() < 0.8)
        target = random_module(torch, r, tie) if r.random() < 0.3 else copy.deepcopy(source)
        if target is not source and r.random() < 0.5:
            target = copy.deepcopy(source)
            if r.random() < 0.5:  # tie or untie the head in the target only
                if target.head.weight is target.embed.weight:
                    target.head.weight = torch.nn.Parameter(target.embed.weight.detach().clone())
                elif target.head.weight.shape == target.embed.weight.shape:
                    target.head.weight = target.embed.weight
        from_save_model = r.random() < 0.5
        if from_save_model:
            st.save_model(source, path)
            # shardload's save_model: the same parsed header (its metadata holds a note
            # per tied name dropped, several keys in the reference's hash order) and data
            ours_path = os.path.join(tmp, "model_ours.safetensors")
            shardload.save_model(source, ours_path)
            with open(path, "rb") as f, open(ours_path, "rb") as g:
                if parse_file(f.read()) != parse_file(g.read()):
                    fail(failures, "save_model differs", i, verbose=True)
                    continue
            counts["same-save_model"] += 1
        else:
            state = mutate_state(torch, r, source.state_dict())
            # a dict without shared storage, as save_file needs
            st.save_file({k: v.contiguous().clone() for k, v in state.items()}, path)
        if r.random() < 0.25:  # a model in another dtype than the file's float32
            target = target.to(r.choice([torch.float16, torch.bfloat16, torch.float64]))
        strict = r.random() < 0.5
        with torch.no_grad():
            for p in target.parameters():
                p.zero_()
        a, b = copy.deepcopy(target), copy.deepcopy(target)
        ref = load_outcome(torch, lambda: st.load_model(a, path, strict=strict), a)
        ours = load_outcome(torch, lambda: shardload.load_model(b, path, strict=strict), b)
        if hub is not None and from_save_model:
            compare_hub_sharded(torch, shardload, hub, r, i, source, target, strict, tmp,
                                counts, failures)
        if ref == ours:
            counts["same-result" if ref[0] == "ok" else "same-error"] += 1
            continue
        if ref[:2] != ours[:2]:
            verdict = "load_model differs: reference %s / shardload %s" % (ref[1], ours[1])
        else:
            verdict = "model contents differ after load_model: %s" % sorted(
                k for k in set(ref[2]) | set(ours[2]) if ref[2].get(k) != ours[2].get(k))
        fail(failures, verdict, i, lambda: "\n  strict %s, file %s\n  model %s" % (
            strict, {k: (str(v.dtype), tuple(v.shape)) for k, v in st.load_file(path).items()},
            {k: tuple(v.shape) for k, v in target.state_dict().items()}), verbose=args.verbose)
    return counts, failures


# ----------------------------------------------------------------------------- get_slice

def random_index(r, ndim):
    """One index item or a tuple / list of them: ints (negative, out of range), slices
    (open ends, negative bounds, steps including 0 and negative), int lists, bools,
    Ellipsis, None."""
    def item():
        m = r.randrange(12)
        if m < 3:
            return r.randint(-4, 4)
        if m < 8:
            return slice(r.choice([None, -5, -2, -1, 0, 1, 2, 3, 7]),
                         r.choice([None, -5, -2, -1, 0, 1, 2, 3, 7]),
                         r.choice([None, None, 1, 2, 3, -1, 0]))
        if m == 8:  # an int list (advanced indexing), maybe out of range
            return [r.randint(-3, 3) for _ in range(r.randint(0, 3))]
        if m == 9:
            return r.choice([True, False])
        return r.choice([Ellipsis, None])
    m = r.randrange(6)
    if m == 0:
        return item()
    items = [item() for _ in range(r.randint(0, ndim + 1))]
    return items if m == 5 else tuple(items)


def slice_outcome(torch, fn):
    try:
        t = fn()
        return ("ok", str(t.dtype), tuple(t.shape), str(t.device), tensor_bytes(torch, t))
    except Exception as e:
        return ("err", "%s: %s" % (type(e).__name__, e))


def run_slices(args, cases, torch, st, shardload, r, tmp):
    import warnings
    counts, failures = new_tally("same-tensor", "same-error")
    path = os.path.join(tmp, "slices.safetensors")
    dtypes = [torch.float32, torch.float16, torch.int64, torch.uint8, torch.bool]
    for i in range(cases):
        if i % 50 == 0:  # a new file every 50 keys
            tensors = {"t%d" % k: random_tensor(torch, r, r.choice(dtypes)) for k in range(4)}
            st.save_file(tensors, path)
        name = r.choice(list(tensors))
        key = random_index(r, tensors[name].dim())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with st.safe_open(path, framework="pt", device=args.device) as f:
                ref = slice_outcome(torch, lambda: f.get_slice(name)[key])
            with shardload.safe_open(path, framework="pt", device=args.device) as f:
                ours = slice_outcome(torch, lambda: f.get_slice(name)[key])
        if ref == ours:
            counts["same-tensor" if ref[0] == "ok" else "same-error"] += 1
            continue
        items = key if isinstance(key, (tuple, list)) else (key,)
        if ref[0] == ours[0] == "err" and ref[1].split(":")[0] == ours[1].split(":")[0] and \
                sum(1 for k in items if k is Ellipsis) > 1:
            # torch's own handling of several Ellipses names out-of-range dimensions
            # with sizes that depend on the tensor's strides (size 1 or 0 for a
            # dimension 3 of a 3-d tensor): the same error, other words.
            counts["several-ellipses-error-words"] += 1
            continue
        fail(failures, "get_slice differs", i, lambda: ": shape %s key %r\n  reference: %s\n"
             "  shardload: %s" % (tuple(tensors[name].shape), key,
                                  ref[:4] if ref[0] == "ok" else ref[1],
                                  ours[:4] if ours[0] == "ok" else ours[1]),
             shown=3, verbose=args.verbose)
    return counts, failures


def simple_key(key, shape):
    """Whether safetensors 0.8's numpy get_slice takes ``key`` as numpy does: ints in
    range, slices with a step of 1 or more and bounds in [0, size] that select at least
    one index, at most one Ellipsis, no more items than dimensions, a tuple of those; of
    an array without zero-size dimensions. (It refuses lists, None and negative steps,
    reads a bool as an int, and refuses an empty selection or panics on it.)"""
    items = list(key) if isinstance(key, tuple) else [key]
    if not all(k is Ellipsis or isinstance(k, slice) or type(k) is int for k in items):
        return False
    ellipses = [i for i, k in enumerate(items) if k is Ellipsis]
    if len(ellipses) > 1 or len(items) - len(ellipses) > len(shape) or 0 in shape:
        return False
    dims = list(range(len(items)))
    if ellipses:
        e = ellipses[0]
        dims = dims[:e] + [None] + list(range(len(shape) - (len(items) - e - 1), len(shape)))
    for k, d in zip(items, dims):
        if type(k) is int and not 0 <= k < shape[d]:
            return False
        if isinstance(k, slice):
            bounds = [b for b in (k.start, k.stop) if b is not None]
            if (k.step is not None and k.step < 1) or not all(0 <= b <= shape[d] for b in bounds) \
                    or not range(*k.indices(shape[d])):
                return False
    return True


def array_outcome(fn):
    try:
        a = fn()
        return ("ok", a.dtype.str, a.shape, a.tobytes())
    except BaseException as e:  # the reference's Rust panics are BaseExceptions
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return ("err", "%s: %s" % (type(e).__name__, e))


def run_numpy_slices(args, cases, shardload, r, tmp):
    """get_slice of safe_open(framework="np"): shardload's must index as numpy indexes
    the whole array (the same array, or numpy's exception type and message), and the
    reference's must give the same array for the keys it takes as numpy does
    (simple_key; for the others only numpy is asked)."""
    import warnings
    import numpy as np
    import safetensors
    import safetensors.numpy as sn
    counts, failures = new_tally("same-array", "numpy-only-array", "numpy-only-error")
    path = os.path.join(tmp, "np_slices.safetensors")
    for i in range(cases):
        if i % 50 == 0:  # a new file every 50 keys
            arrays = {"t%d" % k: random_array(np, r, r.choice(["float32", "float16", "int64",
                                                               "uint8", "bool"]))
                      for k in range(4)}
            sn.save_file(arrays, path)
        name = r.choice(list(arrays))
        full = arrays[name]
        key = random_index(r, full.ndim)
        ref = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = array_outcome(lambda: full[key])
            if simple_key(key, full.shape):
                with safetensors.safe_open(path, framework="np") as f:
                    ref = array_outcome(lambda: f.get_slice(name)[key])
            with shardload.safe_open(path, framework="np") as f:
                ours = array_outcome(lambda: f.get_slice(name)[key])
        verdict = None
        if ours != want:
            verdict = "get_slice is not numpy's"
        elif ref is not None and ref != ours:
            verdict = "get_slice differs from the reference's"
        tally(counts, failures, verdict, "same-array" if ref else "numpy-only-" + (
            "array" if want[0] == "ok" else "error"), (), i,
            lambda: ": shape %s key %r\n  numpy: %s\n  reference: %s\n  shardload: %s" % (
                full.shape, key, *(o[:3] if o and o[0] == "ok" else o and o[1]
                                   for o in (want, ref, ours))), args.verbose)
    return counts, failures


# ----------------------------------------------------------------------------- save_sharded

def unlisted_index(torch, st, shardload, folder, files, r, i, counts, failures, summary):
    """Drops from the hub folder's index one tensor whose shard stays listed through
    another: a default load must refuse it naming the tensor, and strict_index=False
    must load what the hub's sharded loader loads (every tensor of the listed shards),
    with a warning."""
    import warnings
    index = files.get("model.safetensors.index.json")
    if index is None:
        return
    weight_map = index["weight_map"]
    shards = [weight_map[k] for k in weight_map]
    candidates = [k for k in weight_map if shards.count(weight_map[k]) > 1]
    if not candidates:
        return
    dropped = r.choice(candidates)
    edited = dict(index, weight_map={k: v for k, v in weight_map.items() if k != dropped})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump(edited, f)
    want = ("model.safetensors.index.json: shard '%s' holds tensor %s, which the index does "
            "not list" % (weight_map[dropped], shardload._quote_name(dropped)))
    verdict = None
    try:
        shardload.load_file(folder)
        verdict = "an unlisted tensor loads by default"
    except shardload.ShardloadError as e:
        if (e.code, e.message) != ("invalid_argument", want):
            verdict = "an unlisted tensor: %s: %s" % (e.code, e.message)
    merged = {}
    for f in set(edited["weight_map"].values()):
        merged.update(st.load_file(os.path.join(folder, f)))
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        got = shardload.load_file(folder, strict_index=False)
    if verdict is None and summary(got) != summary(merged):
        verdict = "strict_index=False loads %s, the hub's way %s" % (sorted(got), sorted(merged))
    if verdict is None and [str(w.message) for w in log] != [want]:
        verdict = "strict_index=False warns %r" % [str(w.message) for w in log]
    if verdict is None:
        counts["same-unlisted"] += 1
        return
    fail(failures, verdict, i, verbose=True)


def run_shards(args, cases, torch, st, shardload, r, tmp):
    """shardload.save_sharded against huggingface_hub's save_torch_state_dict."""
    import shutil
    try:
        from huggingface_hub import save_torch_state_dict
    except ImportError:
        print("reference_diff save_sharded: huggingface_hub is not importable; skipped")
        return None, None
    counts, failures = new_tally("same-files", "same-error")
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool]
    for i in range(cases):
        sd = {}
        for j in range(r.randint(1, 12)):
            name = r.choice(["layers.%d.w" % j, "embed", "head.weight", "norm.%d" % j,
                             "a%d" % j, "z%d" % j, "\u00e9%d" % j])
            sd[name] = random_tensor(torch, r, r.choice(dtypes))
        names = list(sd)
        if r.random() < 0.3:  # a tied name: the very same tensor
            sd[r.choice(names) + "_tied"] = sd[r.choice(names)]
        if r.random() < 0.2:  # non-contiguous, sharing nothing
            sd["nc"] = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
        size = r.choice([1, 10, 64, 100, 200, 500, 1000, 5000, "1KB", "0.1KB", "1kb", "5GB",
                         0, -1, "0KB", "1K"])
        metadata = r.choice([None, None, {}, {"k": "v"}, {"a": "1", "b": "2"}])
        folders = [os.path.join(tmp, "hub%d" % i), os.path.join(tmp, "ours%d" % i)]
        outcomes = []
        for folder, save in zip(folders, (save_torch_state_dict, shardload.save_sharded)):
            os.makedirs(folder)
            try:  # both get their own dicts: the hub's writer edits them in place
                save(dict(sd), folder, max_shard_size=size,
                     metadata=None if metadata is None else dict(metadata))
                files = {}
                for f in sorted(os.listdir(folder)):
                    with open(os.path.join(folder, f), "rb") as fh:
                        data = fh.read()
                    files[f] = json.loads(data) if f.endswith(".json") else parse_file(data)
                if save is save_torch_state_dict:
                    # shardload reads the hub's folder as the reference reads its shards
                    merged = {}
                    for f in files:
                        if f.endswith(".safetensors"):
                            merged.update(st.load_file(os.path.join(folder, f)))
                    got = shardload.load_file(folder)
                    summary = lambda d: {k: (str(v.dtype), tuple(v.shape), tensor_bytes(torch, v))
                                         for k, v in d.items()}
                    if summary(got) != summary(merged):
                        fail(failures, "load_file of the hub's folder differs", i,
                             lambda: ": %s vs %s" % (sorted(got), sorted(merged)), verbose=True)
                    else:
                        counts["same-load"] += 1
                    unlisted_index(torch, st, shardload, folder, files, r, i, counts, failures,
                                   summary)
                outcomes.append(("ok", files))
            except Exception as e:
                outcomes.append(("err", type(e).__name__, str(e)))
            shutil.rmtree(folder)
        hub, ours = outcomes
        if hub[0] == ours[0] == "err" and hub[1] == ours[1]:
            counts["same-error"] += 1  # words differ where documented (EMBEDDING.md)
            continue
        if hub == ours:
            counts["same-files"] += 1
            continue
        if hub[0] == "ok" and ours[0] == "err" and ours[1] == "ValueError" and \
                ours[2].startswith("max_shard_size must be > 0"):
            # intended: the hub writes one shard per tensor for a size of 0 or less
            counts["nonpositive-size-refused"] += 1
            continue
        verdict = "save_sharded differs"
        if hub[0] == ours[0] == "ok":
            if sorted(hub[1]) != sorted(ours[1]):
                verdict += ": files %s vs %s" % (sorted(hub[1]), sorted(ours[1]))
            else:
                verdict += ": %s" % [f for f in hub[1] if hub[1][f] != ours[1][f]]
        else:
            verdict += ": hub %s / shardload %s" % (hub[1:] if hub[0] == "err" else "writes",
                                                   ours[1:] if ours[0] == "err" else "writes")
        fail(failures, verdict, i, lambda: "\n  tensors %s, max_shard_size %r, metadata %r" % (
            {k: (str(v.dtype), tuple(v.shape)) for k, v in sd.items()}, size, metadata),
            shown=3, verbose=args.verbose)
    return counts, failures


def read_cli(cli, path):
    """``shardload inspect --json PATH``: ('ok', {name: (dtype, shape)}, metadata),
    ('err', 'code: message') or ('crash', why) (a signal, another exit status, or
    output that is not the documented JSON)."""
    import subprocess
    run = subprocess.run([cli, "inspect", "--json", path], capture_output=True)
    try:
        out = json.loads(run.stdout)
        if run.returncode == 0:
            return ("ok", {t["name"]: (t["dtype"], t["shape"]) for t in out["tensors"]},
                    out.get("metadata"))
        if run.returncode == 1:
            return ("err", "%s: %s" % (out["error"]["code"], out["error"]["message"]))
    except (ValueError, KeyError, TypeError):
        pass
    return ("crash", "exit status %d, stdout %r, stderr %r" % (
        run.returncode, run.stdout[:200], run.stderr[:200]))


def compare_cli(ref, ours, cli):
    """None when ``shardload inspect --json`` agrees with the Python readers' verdict
    (the same error code and message, or the reference's names, dtypes, shapes and
    metadata), else a description."""
    if cli[0] == "crash":
        return "inspect crashed: " + cli[1]
    if ours[0] == "err":
        return None if cli == ours else "inspect says %r, safe_open %r" % (cli[1:], ours[1])
    if cli[0] != "ok":
        return "inspect refuses what safe_open reads: %s" % cli[1]
    want = {k: (v[0], v[1]) for k, v in ref[1]["tensors"].items()}
    if cli[1] != want:
        return "inspect lists other tensors"
    metadata = ref[1]["metadata"]
    if metadata is not UNKNOWN and (cli[2] or None) != (metadata or None):  # {} = none
        return "inspect's metadata %r, the reference's %r" % (cli[2], metadata)
    return None


def run_reads(args, cases, reads, safetensors, shardload, r, tmp):
    """Generated files read by the reference and by shardload the way ``reads`` says
    (TorchReads; NumpyReads: both packages' numpy readers, compare_numpy)."""
    counts, failures = new_tally("same-accept", "same-reject")
    path = os.path.join(tmp, "case.safetensors")
    numpy_arrays = reads.framework == "np"
    intended = INTENDED_NUMPY if numpy_arrays else INTENDED
    for i in range(cases):
        buf = make_case(r)
        with open(path, "wb") as f:
            f.write(buf)
        ref = read_reference(path, safetensors, numpy_arrays)
        ours = read_shardload(path, shardload, reads)
        verdict = (compare_numpy if numpy_arrays else compare)(ref, ours)
        if args.cli and not numpy_arrays and (verdict is None or verdict in INTENDED) and \
                ours[0] != "crash":
            cli_verdict = compare_cli(ref, ours, read_cli(args.cli, path))
            if cli_verdict is None:
                counts["inspect-agrees"] += 1
            verdict = cli_verdict or verdict
        failed = tally(
            counts, failures, verdict, "same-accept" if ref[0] == "ok" else "same-reject",
            intended, i, lambda: "\n  header: %r\n  reference: %s\n  shardload: %s" % (
                buf[8:8 + min(struct.unpack("<Q", buf[:8])[0], 400)],
                ref[1] if ref[0] == "err" else "accepts",
                ours[1] if ours[0] != "ok" else "accepts"), args.verbose)
        if failed:
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                with open(os.path.join(args.keep, "case-%d-%d.safetensors" % (args.seed, i)),
                          "wb") as f:
                    f.write(buf)
    return counts, failures


def skip(why):
    """Exit status 2, or under Bazel a skipped JUnit case and 0."""
    xml = os.environ.get("XML_OUTPUT_FILE")
    if not xml:
        print(why, file=sys.stderr)
        return 2
    print("SKIP: " + why)
    with open(xml, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite '
                'name="reference_diff" tests="1" skipped="1"><testcase name="reference_diff" '
                'classname="reference_diff"><skipped message="%s"/></testcase></testsuite>'
                '</testsuites>\n' % why)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", nargs="?", help="libshardload.so to load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=2000, help="read cases")
    parser.add_argument("--write-cases", type=int, default=0, help="write cases")
    parser.add_argument("--model-cases", type=int, default=0, help="load_model cases")
    parser.add_argument("--slice-cases", type=int, default=0, help="get_slice cases")
    parser.add_argument("--shard-cases", type=int, default=0,
                        help="save_sharded cases (needs huggingface_hub)")
    parser.add_argument("--numpy-cases", type=int, default=None,
                        help="read cases through the numpy readers (default: --cases; the "
                             "same files as the first ones of --cases)")
    parser.add_argument("--numpy-write-cases", type=int, default=0,
                        help="numpy write cases (safetensors.numpy.save_file)")
    parser.add_argument("--numpy-slice-cases", type=int, default=0,
                        help="get_slice cases through safe_open(framework=\"np\")")
    parser.add_argument("--cli", help="also run `SHARDLOAD inspect --json` on every read case")
    parser.add_argument("--device", default="cpu",
                        help="where shardload's reads and both get_slice put tensors (cuda:0 "
                             "on a GPU machine; the reference's parse stays on the host)")
    parser.add_argument("--keep", help="write each failing read case into this folder")
    parser.add_argument("--verbose", action="store_true", help="print every failing case")
    args = parser.parse_args()
    try:
        import torch
        import safetensors
        import safetensors.torch as st
        import shardload
    except ImportError as e:
        return skip("reference_diff: cannot import %s" % e.name)
    if args.library:
        shardload.set_library_path(os.path.abspath(args.library))
    if args.device != "cpu" and not (torch.cuda.is_available() and
                                     shardload.cuda_device_count() > 0):
        print("reference_diff: --device %s needs a CUDA device that torch and shardload both "
              "see (torch: %d, shardload: %d)" % (
                  args.device, torch.cuda.device_count() if torch.cuda.is_available() else 0,
                  shardload.cuda_device_count()), file=sys.stderr)
        return 2
    if args.numpy_cases is None:
        args.numpy_cases = args.cases
    status = 0
    with tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR")) as tmp:
        for what, n, run in [
                ("reads", args.cases,
                 lambda r: run_reads(args, n, TorchReads(torch, shardload, args.device),
                                     safetensors, shardload, r, tmp)),
                ("numpy reads", args.numpy_cases,
                 lambda r: run_reads(args, n, NumpyReads(shardload), safetensors, shardload, r,
                                     tmp)),
                ("writes", args.write_cases,
                 lambda r: run_writes(args, n, torch, safetensors, st, shardload, r, tmp)),
                ("numpy writes", args.numpy_write_cases,
                 lambda r: run_numpy_writes(args, n, safetensors, shardload, r, tmp)),
                ("load_model", args.model_cases,
                 lambda r: run_models(args, n, torch, st, shardload, r, tmp)),
                ("get_slice", args.slice_cases,
                 lambda r: run_slices(args, n, torch, st, shardload, r, tmp)),
                ("numpy get_slice", args.numpy_slice_cases,
                 lambda r: run_numpy_slices(args, n, shardload, r, tmp)),
                ("save_sharded", args.shard_cases,
                 lambda r: run_shards(args, n, torch, st, shardload, r, tmp))]:
            if n == 0:
                continue
            counts, failures = run(random.Random(args.seed))
            if counts is None:
                continue
            print("reference_diff %s: seed %d, %d cases: %s; %d failures%s" % (
                what, args.seed, n, ", ".join("%s %d" % kv for kv in sorted(counts.items())),
                sum(failures.values()), "" if not failures else " (" + ", ".join(
                    "%s: %d" % kv for kv in sorted(failures.items())) + ")"))
            status = 1 if failures else status
    return status


if __name__ == "__main__":
    sys.exit(main())
