"""Which files an ONNX graph makes ONNX Runtime read: its external-data references, from the protobuf.

A graph stores a large tensor outside the ``.onnx`` file as ``TensorProto.external_data``
(``location``, ``offset``, ``length``) with ``data_location = EXTERNAL``. ONNX Runtime opens
those locations relative to the graph's folder. The package reader must know them to confine
and verify them, and the runtime does not depend on the ``onnx`` package, so this module
walks the protobuf wire format itself — only the fields that can hold tensors:

=====================  ==================================================================
ModelProto             graph = 7, functions = 25
GraphProto             node = 1, initializer = 5, sparse_initializer = 15
NodeProto              attribute = 5
AttributeProto         t = 5, g = 6, tensors = 10, graphs = 11, sparse_tensor = 22, sparse_tensors = 23
SparseTensorProto      values = 1, indices = 2
FunctionProto          node = 7
TensorProto            name = 8, external_data = 13, data_location = 14
StringStringEntryProto key = 1, value = 2
=====================  ==================================================================

(field numbers from ``onnx/onnx.proto``). Anything malformed raises :class:`PackageError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskfold.errors import PackageError

_MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies) deeper than this are refused


@dataclass(frozen=True)
class ExternalRef:
    """One tensor stored outside the graph: ``length`` bytes (``None``: to the end) at ``offset`` of ``location``."""

    tensor: str
    location: str
    offset: int
    length: int | None


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """``(field number, wire type, value)`` for every field of the message ``buf[start:end]``.

    A length-delimited value is its ``(start, end)`` span; a varint its integer; others ``None``.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + n), pos + n
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > end:
            raise _Malformed("a field runs past its message")
        yield field, wire, value


def _text(buf: bytes, span) -> str:
    try:
        return buf[span[0]:span[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("a string field is not UTF-8") from None


def _may_hold_external(buf: bytes, span) -> bool:
    """An external tensor names its ``location``: a message without those bytes holds none (fast skip)."""
    return buf.find(b"location", span[0], span[1]) >= 0


def _tensor(buf, span, out: list[ExternalRef]) -> None:
    name, entries, external = "", {}, False
    for field, wire, v in _fields(buf, *span):
        if field == 8 and wire == 2:
            name = _text(buf, v)
        elif field == 14 and wire == 0:
            external = v == 1
        elif field == 13 and wire == 2:
            key = value = ""
            for f2, w2, v2 in _fields(buf, *v):
                if f2 == 1 and w2 == 2:
                    key = _text(buf, v2)
                elif f2 == 2 and w2 == 2:
                    value = _text(buf, v2)
            entries[key] = value
    if not external and not entries:
        return
    try:
        out.append(external_ref(name, entries))
    except ValueError as e:
        raise _Malformed(str(e)) from None


def external_ref(name: str, entries: dict[str, str]) -> ExternalRef:
    """The reference of tensor ``name`` from its ``external_data`` entries; ``ValueError`` naming what is wrong.
    (Shared with graph admission, which reads the same entries from parsed protobuf messages.)"""
    if "location" not in entries:
        raise ValueError(f"external tensor {name!r} has no location")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise ValueError(f"external tensor {name!r} has a non-integer offset or length") from None
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"external tensor {name!r} has a negative offset or length")
    return ExternalRef(name, entries["location"], offset, length)


def _sparse(buf, span, out, depth):
    for field, wire, v in _fields(buf, *span):
        if field in (1, 2) and wire == 2:
            _tensor(buf, v, out)


def _attribute(buf, span, out, depth):
    for field, wire, v in _fields(buf, *span):
        if wire != 2:
            continue
        if field in (5, 10):
            _tensor(buf, v, out)
        elif field in (6, 11):
            _graph(buf, v, out, depth + 1)
        elif field in (22, 23):
            _sparse(buf, v, out, depth)


def _node(buf, span, out, depth):
    if not _may_hold_external(buf, span):
        return
    for field, wire, v in _fields(buf, *span):
        if field == 5 and wire == 2:
            _attribute(buf, v, out, depth)


def _graph(buf, span, out, depth):
    if depth > _MAX_DEPTH:
        raise _Malformed(f"subgraphs nested deeper than {_MAX_DEPTH}")
    for field, wire, v in _fields(buf, *span):
        if wire != 2:
            continue
        if field == 1:
            _node(buf, v, out, depth)
        elif field == 5:
            _tensor(buf, v, out)
        elif field == 15:
            _sparse(buf, v, out, depth)


def external_refs(model: bytes, where: str) -> list[ExternalRef]:
    """Every external-data reference of the serialized ModelProto ``model`` (in graph order)."""
    out: list[ExternalRef] = []
    model = bytes(model)
    try:
        for field, wire, v in _fields(model, 0, len(model)):
            if wire != 2:
                continue
            if field == 7:
                _graph(model, v, out, 0)
            elif field == 25:
                for f2, w2, v2 in _fields(model, *v):
                    if f2 == 7 and w2 == 2:
                        _node(model, v2, out, 0)
    except _Malformed as e:
        raise PackageError(f"{where} is not a well-formed ONNX model ({e})",
                           hint="the package is damaged; re-copy or re-export it") from None
    return out
