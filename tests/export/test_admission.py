"""The exporter writes only graphs the runtime admits: every package is read back through admission before it lands.

``export_package`` admits what it wrote (:func:`taskfold.export.package.admit_written`) with the
same operator sets and bounds the runtime applies (``runtime/package_schema.json``), so every
export test in the suite — ONNX fp32/fp16, both layouts, ``--optimize``, ORT mobile, text encoders,
codecs — is also an admission test. These tests add the SD-config presets not exported elsewhere
and show the check is live: a schema without an operator the exporter uses fails the export.
"""

from __future__ import annotations

import json

import pytest

from taskfold.cli import main
from taskfold.errors import ExportError
from taskfold.export.package import ExportConfig, export_package
from taskfold.runtime import limits
from taskfold.runtime.reader import PackageReader
from taskfold.upcycle import UpcycleConfig, load_base, upcycle


@pytest.mark.parametrize("preset", ["sdxl-narrow", "sd21-narrow"])
def test_sd_config_presets_export_graphs_the_runtime_admits(preset, tmp_path):
    assert main(["upcycle", "--base", f"preset:{preset}", "--tasks", "t2i,edit", "--experts", "2",
                 "--out", str(tmp_path / "mtu")]) == 0
    assert main(["export", str(tmp_path / "mtu"), "--out", str(tmp_path / "pkg"), "--height", "64", "--width", "64",
                 "--parity-timesteps", "1"]) == 0
    reader = PackageReader(tmp_path / "pkg")
    assert reader.verify_all() == []
    admitted = {rel: a for rel, a in reader._admitted.items()}
    assert sorted(admitted) == ["onnx/edit.onnx", "onnx/t2i.onnx"]
    for a in admitted.values():
        assert a.nodes > 500 and a.largest_value > 0 and len(a.external) > 50


def test_an_operator_missing_from_the_schema_fails_the_export_and_writes_nothing(tmp_path, monkeypatch):
    unet, info = load_base("preset:tiny", seed=0)
    mtu = upcycle(unet, UpcycleConfig(tasks=("t2i",)), info)
    real = limits.operators

    def without_conv(kind):
        ops = dict(real(kind))
        ops[""] = ops[""] - {"Conv"}
        return ops
    monkeypatch.setattr("taskfold.runtime.admission.operators", without_conv)
    with pytest.raises(ExportError, match=r"would be refused by the runtime: .*uses operator Conv"):
        export_package(mtu, ExportConfig(tasks=("t2i",), parity_timesteps=1, height=16, width=16), tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_the_schema_file_is_the_one_list_and_every_listed_operator_has_a_shape_rule():
    from taskfold.runtime import admission

    doc = json.loads(limits.SCHEMA_FILE.read_text())
    assert doc["format"] == "taskfold-package-limits" and set(doc["operators"]) == {"unet", "text_encoder", "codec"}
    listed = set().union(*(set(ops) for kind in doc["operators"].values() for ops in kind.values()))
    ruled = admission._UNARY | admission._BINARY | {
        "Constant", "Conv", "MatMul", "Gemm", "Shape", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Concat",
        "Gather", "Slice", "ConstantOfShape", "Expand", "Resize", "Pad", "SkipLayerNormalization", "ReduceMean",
        "ArgMax", "Flatten", "Split"}
    assert listed - ruled == set()
    assert {"Loop", "Scan", "If"} & listed == set()


@pytest.mark.parametrize("field,value,words", [("height", 10 ** 5, "--height 100000 is more than 4096"),
                                               ("batch", 99, "--batch 99 is more than 16"),
                                               ("text_len", 10 ** 4, "--text-len 10000 is more than 512")])
def test_export_sizes_are_bounded_as_the_runtime_bounds_them(field, value, words):
    from taskfold.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        ExportConfig(**{field: value})


def test_optimize_on_a_dtr_graph_is_one_clear_error(tmp_path):
    """ONNX Runtime's transformer optimiser misreads DTR's timestep masks (a traceback before): one error, nothing
    written."""
    rc = main(["upcycle", "--base", "preset:tiny-pixel", "--tasks", "t2i", "--dtr", "--out", str(tmp_path / "m")])
    assert rc == 0
    assert main(["export", str(tmp_path / "m"), "--out", str(tmp_path / "pkg"), "--optimize", "--height", "16",
                 "--width", "16", "--parity-timesteps", "1"]) == 2
    assert not (tmp_path / "pkg").exists()
