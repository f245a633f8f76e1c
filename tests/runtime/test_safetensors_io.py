"""The runtime's safetensors reader: what the reference library writes reads back exactly; every malformed
header is one PackageError naming the file and the key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskfold.errors import PackageError
from taskfold.runtime.safetensors_io import MAX_HEADER_BYTES, parse, read_tensors


def _file(header: dict, buffer: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + buffer


def _two() -> tuple[dict, bytes]:
    a, b = np.arange(6, dtype=np.float32), np.array([1.5, -2.0], np.float16)
    header = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "F16", "shape": [2], "data_offsets": [24, 28]}}
    return header, a.tobytes() + b.tobytes()


def test_what_the_reference_library_writes_reads_back_exactly(tmp_path):
    from safetensors.numpy import save_file

    values = {"w": np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32),
              "h": np.arange(7, dtype=np.float16), "empty": np.zeros((0, 4), np.float32),
              "i": np.array([[1, -2]], np.int64)}
    save_file(values, str(tmp_path / "f.safetensors"), metadata={"task": "t2i"})
    tensors, meta = parse((tmp_path / "f.safetensors").read_bytes(), "f.safetensors")
    assert meta == {"task": "t2i"} and set(tensors) == set(values)
    for k, v in values.items():
        assert tensors[k].dtype == v.dtype and tensors[k].flags.c_contiguous and tensors[k].flags.writeable
        np.testing.assert_array_equal(tensors[k], v)
    expected = [{"name": "h", "shape": [7], "dtype": "float16"}, {"name": "w", "shape": [3, 5], "dtype": "float32"},
                {"name": "empty", "shape": [0, 4], "dtype": "float32"}, {"name": "i", "shape": [1, 2], "dtype": "int64"}]
    assert list(read_tensors((tmp_path / "f.safetensors").read_bytes(), "f", expected, {"task": "t2i"})) == \
        ["h", "w", "empty", "i"]


def _broken(edit) -> bytes:
    header, buffer = _two()
    buffer = edit(header, buffer) or buffer
    return _file(header, buffer)


@pytest.mark.parametrize("data, match", [
    (b"\x01\x02", "f.st: 2 bytes, shorter than the 8-byte header length"),
    ((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{}", f"header length {MAX_HEADER_BYTES + 1} is more than"),
    (b"\x02\0\0\0\0\0\0\0{}" + b"", None),  # an empty file of tensors is well-formed
    (b"\x03\0\0\0\0\0\0\0\"x\"", "the header is not a JSON object"),
    (b"\x02\0\0\0\0\0\0\0\xff\xfe", "the header is not valid JSON"),
    (b"\x0f\0\0\0\0\0\0\0{\"a\":NaN,\"b\":1}", "the header is not valid JSON .*NaN is not allowed"),
    (_file({"__metadata__": {"k": 1}}, b""), "key '__metadata__': expected an object of strings"),
])
def test_malformed_headers_are_refused(data, match):
    if match is None:
        assert parse(data, "f.st") == ({}, {})
        return
    with pytest.raises(PackageError, match=match):
        parse(data, "f.st")


def test_a_repeated_key_is_refused():
    header, buffer = _two()
    text = json.dumps(header)[:-1] + ', "a": ' + json.dumps(header["a"]) + "}"
    data = len(text).to_bytes(8, "little") + text.encode() + buffer
    with pytest.raises(PackageError, match="key 'a' appears twice"):
        parse(data, "f.st")


def _set(key, field, value):
    def edit(h, buf):
        h[key][field] = value
    return edit


@pytest.mark.parametrize("edit, match", [
    (_set("a", "dtype", "BF16"), "key 'a': unknown dtype 'BF16'"),
    (_set("a", "shape", [2, -3]), "key 'a': shape \\[2, -3\\] is not a list of integers >= 0"),
    (_set("a", "shape", [True, 3]), "key 'a': shape"),
    (_set("a", "shape", [2, 2]), "key 'a': data_offsets \\[0, 24\\] span 24 bytes, but shape \\[2, 2\\] of F32 is 16"),
    (_set("b", "data_offsets", [24, 29]), "key 'b': data_offsets \\[24, 29\\] are not \\[begin, end\\] inside the "
                                          "28-byte data buffer"),
    (_set("b", "data_offsets", [-4, 0]), "key 'b': data_offsets \\[-4, 0\\] are not"),
    (_set("b", "data_offsets", [24]), "key 'b': data_offsets \\[24\\] are not"),
    (_set("b", "data_offsets", [20, 24]), "key '[ab]': data_offsets .* overlap another tensor's bytes"),
    (_set("a", "extra", 1), "key 'a': expected exactly dtype, shape and data_offsets"),
    (lambda h, buf: h.update(a=[1]), "key 'a': expected exactly dtype, shape and data_offsets, got list"),
    (lambda h, buf: h.update({"": h.pop("a")}), "a tensor has an empty name"),
    (lambda h, buf: buf + b"\0\0\0\0", "bytes 28..32 of the data buffer belong to no tensor"),
    (lambda h, buf: (h["b"].update(data_offsets=[28, 32]), buf + b"\0\0\0\0")[1],
     "key 'b': bytes 24..28 of the data buffer belong to no tensor"),
])
def test_bad_entries_are_refused_naming_the_key(edit, match):
    with pytest.raises(PackageError, match=match):
        parse(_broken(edit), "f.st")


def test_read_tensors_holds_the_file_to_the_graphs_inputs():
    data = _file(*_two())
    expected = [{"name": "a", "shape": [2, 3], "dtype": "float32"}, {"name": "b", "shape": [2], "dtype": "float16"}]
    got = read_tensors(data, "f.st", expected)
    np.testing.assert_array_equal(got["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    with pytest.raises(PackageError, match="f.st: key 'b' is not one of the graph's task tensors"):
        read_tensors(data, "f.st", expected[:1])
    with pytest.raises(PackageError, match="f.st: key 'c' is missing"):
        read_tensors(data, "f.st", expected + [{"name": "c", "shape": [1], "dtype": "float32"}])
    with pytest.raises(PackageError, match="key 'a': float32 \\[2, 3\\], the graph takes float32 \\[3, 2\\]"):
        read_tensors(data, "f.st", [dict(expected[0], shape=[3, 2]), expected[1]])
    with pytest.raises(PackageError, match="key 'b': float16 \\[2\\], the graph takes float32 \\[2\\]"):
        read_tensors(data, "f.st", [expected[0], dict(expected[1], dtype="float32")])
    with pytest.raises(PackageError, match="__metadata__ key 'task' is None, expected 'edit'"):
        read_tensors(data, "f.st", expected, {"task": "edit"})
