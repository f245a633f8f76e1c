"""The adapters layout in JavaScript: one shared UNet graph whose task tensors are required inputs, each task's
tensors read from ``adapters/<task>.safetensors`` by the JS runtime's bounded parser and fed as ordinary inputs.
Node's images equal the Python runtime's for every task and scheduler; every crafted task file the Python
runtime refuses (tests/export/test_adapters.py) is refused with its words before any session."""

from __future__ import annotations

import json
import shutil

import pytest

from taskfold.runtime.safetensors_io import parse

from ..export.test_adapters import _replace_task_file, _task_file
from ._parity import cases_for, compare, failures, python_images, report
from .conftest import run_node


def test_node_adapters_layout_images_equal_the_python_runtimes(node, tiny_mtu_adapters_package, images, tmp_path):
    manifest = json.loads((tiny_mtu_adapters_package / "manifest.json").read_text())
    assert {g.get("layout") for g in manifest["graphs"]} == {"adapters"}
    cases = cases_for("adapters", tiny_mtu_adapters_package, images, steps=4)
    py = python_images(cases)
    (tmp_path / "cases.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/run_cases.mjs", str(tmp_path / "cases.json"), str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr[-2000:]
    rows = compare(cases, py, tmp_path / "out")
    print(report("Node, adapters layout (one shared graph + safetensors task files) vs Python runtime", rows))
    assert failures(rows) == []


def _crafts(pkg, names):
    """``(task, bytes, words, rel)`` for each crafted task file (the defects of tests/export/test_adapters.py)."""
    values, meta = {}, {}
    for t in ("t2i", "edit", "sr", "inpaint"):
        v, m = parse((pkg / "adapters" / f"{t}.safetensors").read_bytes(), t)
        values[t], meta[t] = {n: v[n] for n in names}, m  # in the graph's order, as the Python test writes them
    good = _task_file(values["inpaint"], meta["inpaint"])
    out = [
        ("sr", _task_file({(k + "x" if k == names[0] else k): v for k, v in values["sr"].items()}, meta["sr"]),
         f"sr.safetensors: key '{names[0]}x' is not one of the graph's", None),
        ("sr", _task_file({k: v for k, v in values["sr"].items() if k != names[1]}, meta["sr"]),
         f"key '{names[1]}' is missing", None),
        ("sr", _task_file({k: v.astype("float16") for k, v in values["sr"].items()}, meta["sr"]),
         f"key '{names[0]}': float16", None),
        ("edit", _task_file(values["t2i"], meta["t2i"]), "__metadata__ key 'task' is 't2i', expected 'edit'", None),
        ("edit", _task_file(values["edit"], dict(meta["edit"], backbone_id="7")),
         "__metadata__ key 'backbone_id' is '7', expected", None),
        ("edit", _task_file(values["edit"]), "__metadata__ key 'format' is None, expected 'taskfold-task-tensors'", None),
        ("inpaint", (2**40).to_bytes(8, "little") + good[8:], "header length 1099511627776 is more than", None),
        ("inpaint", len(good).to_bytes(8, "little") + good[8:], "runs past the end of the file", None),
        ("inpaint", b"\x05\0\0\0\0\0\0\0[1,2]", "the header is not a JSON object", None),
        ("inpaint", b"\x03\0\0\0\0\0\0\0{\"a", "the header is not valid JSON", None),
        ("t2i", b"an old .onnx_adapter", "is an ONNX Runtime adapter, which this taskfold no longer reads",
         "adapters/t2i.onnx_adapter"),
    ]

    def edited(edit):
        return _task_file(values["inpaint"], meta["inpaint"], edit)

    def past_end(h):
        h[names[-1]]["data_offsets"][1] += 4

    def overlap(h):
        h[names[1]]["data_offsets"] = list(h[names[0]]["data_offsets"])
        h[names[1]]["shape"] = list(h[names[0]]["shape"])

    def longer(h):
        h[names[0]]["shape"] = [h[names[0]]["shape"][0] - 1]

    def bf16(h):
        h[names[0]]["dtype"] = "BF16"

    out += [("inpaint", edited(past_end), "are not [begin, end] inside", None),
            ("inpaint", edited(overlap), "overlap another tensor's bytes", None),
            ("inpaint", edited(longer), "bytes, but shape", None),
            ("inpaint", edited(bf16), "unknown dtype 'BF16'", None)]
    return out


@pytest.fixture(scope="module")
def crafted_task_files(node, tiny_mtu_adapters_package, tmp_path_factory):
    pkg = tiny_mtu_adapters_package
    manifest = json.loads((pkg / "manifest.json").read_text())
    names = [t["name"] for t in manifest["graphs"][0]["task_tensors"]]
    root = tmp_path_factory.mktemp("js-task-files")
    cases, words = [], {}
    for i, (task, data, expect, rel) in enumerate(_crafts(pkg, names)):
        copy = root / f"c{i}"
        shutil.copytree(pkg, copy)
        _replace_task_file(copy, task, data, rel)
        words[str(i)] = expect
        cases.append({"id": str(i), "dir": str(copy), "url": False, "run": True, "task": task})
        cases.append({"id": f"{i} (URL)", "dir": str(copy), "url": True, "run": True, "task": task})
    cases.append({"id": "pristine", "dir": str(pkg), "url": True, "run": True, "task": "edit"})
    (root / "cases.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/try_open.mjs", str(root / "cases.json"), str(root / "out.json")])
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "out.json").read_text()), words


def test_crafted_task_files_are_refused_before_any_session(crafted_task_files):
    out, words = crafted_task_files
    assert out["pristine"]["errors"] == [None, None] and out["pristine"]["sessions"] > 0
    assert len(words) >= 15
    for i, expect in words.items():
        for key in (i, f"{i} (URL)"):
            first, second = out[key]["errors"]
            assert first is not None and first["name"] == "PackageError" and expect in first["message"], (key, first)
            assert second is not None and expect in second["message"], (key, second)  # t2i generated, then the task
            assert out[key]["sessions"] <= 4, out[key]  # t2i's shared graph + text encoder only, never for the task
