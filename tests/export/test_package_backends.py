"""CoreML and TensorRT inside `taskfold export`: structure on Linux, support list, missing backends."""

import sys

import onnx
import pytest
import torch

from taskfold.cli import main
from taskfold.errors import ExportError
from taskfold.export.package import ExportConfig, export_package, verify_package
from taskfold.export.tensorrt import onnx_ops_unsupported_by_tensorrt
from taskfold.upcycle import UpcycleConfig, upcycle
from tests._helpers import trained_like


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def dtr_package(tiny_base, tmp_path_factory):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "edit"), dtr=True), info)).eval()
    with torch.no_grad():  # a trained backbone: norm affines away from (1, 0), as in the bundled base
        for m in mtu.unet.modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.mul_(1.5)
                m.bias.add_(0.1)
    out = tmp_path_factory.mktemp("pkg") / "pkg"
    return mtu, out, export_package(mtu, ExportConfig(formats=("onnx", "coreml")), out, log=_quiet)


def test_coreml_graphs_are_listed_with_their_check_and_hashes(dtr_package):
    mtu, pkg, manifest = dtr_package
    coreml = [g for g in manifest["graphs"] if g["format"] == "coreml"]
    assert [g["task"] for g in coreml] == ["t2i", "edit"]
    for g in coreml:
        assert g["precision"] == "fp16" and g["inputs"][0]["dtype"] == "float32"
        if sys.platform != "darwin":
            assert g["parity"]["status"] == "structural" and g["parity"]["problems"] == []
            assert g["parity"]["reference_ops"] > 100
        assert any(f.startswith(g["path"] + "/") for f in manifest["files"])
    assert manifest["tasks"]["edit"]["graphs"] == {"onnx": "onnx/edit.onnx", "coreml": "coreml/edit.mlpackage"}
    assert verify_package(pkg) == []


def test_package_onnx_graphs_use_only_operators_tensorrt_parses(dtr_package):
    _, pkg, manifest = dtr_package
    for g in manifest["graphs"]:
        if g["format"] == "onnx":
            model = onnx.load(pkg / g["path"], load_external_data=False)
            assert len(model.graph.node) > 300
            assert onnx_ops_unsupported_by_tensorrt(model) == []


def test_coreml_multifunction_package(tiny_base, tmp_path):
    from taskfold.export.coreml import functions, package_bytes

    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "edit", "sr")), info)).eval()
    manifest = export_package(mtu, ExportConfig(formats=("coreml",), coreml_multifunction=True), tmp_path / "pkg",
                              log=_quiet)
    paths = {g["path"] for g in manifest["graphs"]}
    assert paths == {"coreml/tasks.mlpackage"} and [g["function"] for g in manifest["graphs"]] == ["t2i", "edit", "sr"]
    assert sorted(functions(tmp_path / "pkg/coreml/tasks.mlpackage")) == ["edit", "sr", "t2i"]
    weights = package_bytes(tmp_path / "pkg/coreml/tasks.mlpackage", weights_only=True)
    params = sum(p.numel() for p in base.parameters())
    assert weights < 1.6 * params * 2  # fp16 backbone once + three tasks' FFN W2 and conv_in, not 3 copies


def test_missing_tensorrt_is_one_clear_error(tiny_base, tmp_path, capsys):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from taskfold.upcycle.checkpoint import save_mtu

    base, info = tiny_base
    save_mtu(upcycle(base, UpcycleConfig(tasks=("t2i",)), info), tmp_path / "mtu")
    assert main(["export", str(tmp_path / "mtu"), "--formats", "onnx,tensorrt", "--out", str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err
    assert "format 'tensorrt' needs TensorRT, which is not installed" in err and "taskfold[tensorrt]" in err
    assert not (tmp_path / "pkg").exists()
    with pytest.raises(ExportError):
        export_package(tmp_path / "mtu", ExportConfig(formats=("tensorrt",)), tmp_path / "pkg2")


@pytest.mark.tensorrt
def test_tensorrt_engines_pass_the_gate(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "edit", "sr")), info)).eval()
    for refit in (False, True):
        manifest = export_package(mtu, ExportConfig(formats=("tensorrt",), trt_refit=refit), tmp_path / f"pkg{refit}",
                                  log=_quiet)
        trt = [g for g in manifest["graphs"] if g["format"] == "tensorrt"]
        assert len(trt) == 3 and all(g["parity"]["status"] == "passed" for g in trt)
