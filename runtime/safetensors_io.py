"""A small, bounded reader of safetensors files, in numpy: the adapters layout's per-task tensors.

The format (huggingface/safetensors, ``docs/source/index.mdx``)::

    8 bytes     N, an unsigned 64-bit little-endian integer
    N bytes     a UTF-8 JSON object: {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
                                      "__metadata__": {str: str} (optional)}
    the rest    the data buffer; each tensor's bytes are [begin, end) of it, little-endian, C order

A package's file is untrusted input (DESIGN.md, "Packages are untrusted input"), so :func:`parse`
refuses, each with one :class:`~taskfold.errors.PackageError` naming the file and the key: a header
longer than :data:`MAX_HEADER_BYTES` or than the file, a header that is not a JSON object (or that
repeats a key, or holds NaN), an entry that is not exactly ``dtype``/``shape``/``data_offsets``, an
unknown dtype, a shape that is not a list of integers >= 0, offsets outside the buffer, overlapping,
leaving holes or not ``prod(shape) x itemsize`` long. :func:`read_tensors` then holds the tensors to
what the graph takes: exactly the expected names, each with the graph input's shape and dtype, and
the expected ``__metadata__`` values. Nothing is mapped: the bytes come from the package reader,
already size- and hash-checked, and each tensor is copied out (aligned, native byte order).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from taskfold.errors import PackageError

from .limits import bound

#: The longest JSON header read (bytes): ``bytes.adapter_header`` of the package limits
#: (``runtime/package_schema.json``, which the JavaScript runtime reads too). taskfold writes ~5 KB for SD1.5.
MAX_HEADER_BYTES = bound("bytes.adapter_header")
#: safetensors dtype -> numpy dtype (little-endian). Others (BF16, F8_*) are refused as unknown.
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "BOOL": "?"}
METADATA = "__metadata__"
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}
_HINT = "the package is damaged or was crafted; re-copy or re-export it (`taskfold verify PKG`)"


def _fail(where: str, problem: str) -> PackageError:
    return PackageError(f"{where}: {problem}", hint=_HINT)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _header(data: bytes, where: str) -> tuple[dict, int]:
    """The JSON header and the data buffer's start."""
    if len(data) < 8:
        raise _fail(where, f"{len(data)} bytes, shorter than the 8-byte header length of a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise _fail(where, f"header length {n} is more than the {MAX_HEADER_BYTES} bytes allowed")
    if 8 + n > len(data):
        raise _fail(where, f"header length {n} runs past the end of the file ({len(data)} bytes)")

    def no_constants(name):
        raise ValueError(f"{name} is not allowed")

    def unique(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"key {next(k for k in keys if keys.count(k) > 1)!r} appears twice")
        return dict(pairs)

    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), parse_constant=no_constants, object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _fail(where, f"the header is not valid JSON ({str(e)[:200]})") from None
    if not isinstance(header, dict):
        raise _fail(where, f"the header is not a JSON object (got {type(header).__name__})")
    return header, 8 + n


def parse(data: bytes, where: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` of the safetensors file ``data`` (``where`` names it in errors)."""
    header, start = _header(data, where)
    size = len(data) - start
    meta = header.pop(METADATA, {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _fail(where, f"key {METADATA!r}: expected an object of strings")
    spans, tensors = [], {}
    for name, entry in header.items():
        what = f"key {name!r}"
        if not name:
            raise _fail(where, "a tensor has an empty name")
        if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise _fail(where, f"{what}: expected exactly dtype, shape and data_offsets, got {got}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise _fail(where, f"{what}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _fail(where, f"{what}: shape {shape!r} is not a list of integers >= 0")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= size):
            raise _fail(where, f"{what}: data_offsets {offsets!r} are not [begin, end] inside the {size}-byte "
                               "data buffer")
        itemsize = np.dtype(DTYPES[dtype]).itemsize
        want = math.prod(shape) * itemsize
        if offsets[1] - offsets[0] != want:
            raise _fail(where, f"{what}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes, but shape "
                               f"{shape} of {dtype} is {want} bytes")
        spans.append((offsets[0], offsets[1], name))
        tensors[name] = (DTYPES[dtype], shape, offsets[0])
    end = 0
    for begin, stop, name in sorted(spans):
        if begin < end:
            raise _fail(where, f"key {name!r}: data_offsets [{begin}, {stop}] overlap another tensor's bytes")
        if begin > end:
            raise _fail(where, f"key {name!r}: bytes {end}..{begin} of the data buffer belong to no tensor")
        end = stop
    if end != size:
        raise _fail(where, f"bytes {end}..{size} of the data buffer belong to no tensor")
    out = {}
    for name, (dtype, shape, begin) in tensors.items():
        arr = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start + begin)
        out[name] = arr.astype(np.dtype(dtype).newbyteorder("="), copy=True).reshape(shape)
    return out, dict(meta)


def read_tensors(data: bytes, where: str, expected: Sequence[Mapping], metadata: Mapping[str, str] | None = None,
                 ) -> dict[str, np.ndarray]:
    """The tensors of ``data``, exactly ``expected`` (``{name, shape, dtype}`` each, numpy dtype names), in
    that order; ``metadata``: ``__metadata__`` values the file must hold."""
    tensors, meta = parse(data, where)
    names = [t["name"] for t in expected]
    extra = [n for n in tensors if n not in names]
    if extra:
        raise _fail(where, f"key {extra[0]!r} is not one of the graph's task tensors "
                           f"({len(extra)} such key{'s' if len(extra) > 1 else ''})")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise _fail(where, f"key {missing[0]!r} is missing ({len(missing)} of the graph's "
                           f"{len(names)} task tensors are)")
    for t in expected:
        a = tensors[t["name"]]
        if list(a.shape) != list(t["shape"]) or a.dtype.name != t["dtype"]:
            raise _fail(where, f"key {t['name']!r}: {a.dtype.name} {list(a.shape)}, the graph takes "
                               f"{t['dtype']} {list(t['shape'])}")
    for key, want in (metadata or {}).items():
        if meta.get(key) != want:
            raise _fail(where, f"{METADATA} key {key!r} is {meta.get(key)!r}, expected {want!r}")
    return {n: tensors[n] for n in names}
