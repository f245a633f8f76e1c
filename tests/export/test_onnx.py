"""ONNX packages: parity with the MTU model (invariant 8), shared weights, DTR masks, FLOPs (invariant 5)."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from taskfold.cli import main
from taskfold.errors import ConfigError, ParityError
from taskfold.export.flops import onnx_flops, torch_flops
from taskfold.export.fold import fold
from taskfold.export.graph import UNetGraph, example_inputs, unet_graph_spec
from taskfold.export.onnx import trace
from taskfold.export.package import ExportConfig, export_package, verify_package
from taskfold.upcycle import UpcycleConfig, upcycle
from taskfold.upcycle.dtr import dtr_starts
from tests._helpers import trained_like

TASKS = ("t2i", "edit", "sr", "inpaint")


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def trained_pkg(tiny_base, tmp_path_factory):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=TASKS + ("inpaint-mask",)), info)).eval()
    out = tmp_path_factory.mktemp("pkg") / "pkg"
    manifest = export_package(mtu, ExportConfig(formats=("onnx", "diffusers")), out, log=_quiet)
    return mtu, out, manifest


def _ort(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_untrained_t2i_graph_is_the_base_unet(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(tasks=TASKS), info).eval()
    export_package(mtu, ExportConfig(tasks=("t2i",)), tmp_path / "pkg", log=_quiet)
    spec = unet_graph_spec(base.config, 4, 1, 16, 16)
    sess = _ort(tmp_path / "pkg/onnx/t2i.onnx")
    for t in (0.0, 480.0, 999.0):
        inputs = example_inputs(spec, 1, 16, 16, seed=7, timestep=t)
        with torch.no_grad():
            ref = base(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"]).sample.numpy()
        got = sess.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
        assert np.abs(got - ref).max() < 1e-5 * max(1.0, np.abs(ref).max())


def test_every_task_graph_passes_the_gate_and_the_manifest_says_so(trained_pkg):
    mtu, pkg, manifest = trained_pkg
    onnx_graphs = [g for g in manifest["graphs"] if g["format"] == "onnx"]
    assert [g["task"] for g in onnx_graphs] == list(mtu.task_names)
    for g in onnx_graphs:
        p = g["parity"]
        assert p["status"] == "passed" and p["tolerance"] == 1e-4
        assert p["relative_error"] < 1e-5 and p["relative_error"] == pytest.approx(p["max_abs_error"] / p["output_scale"])
        assert len(p["timesteps"]) == 5 and p["timesteps"][0] == 0 and p["timesteps"][-2] == 999
        model = onnx.load(pkg / g["path"], load_external_data=False)
        assert model.opset_import[0].version >= 17
        assert [i.name for i in model.graph.input] == ["sample", "timestep", "encoder_hidden_states"]
        assert [o.name for o in model.graph.output] == ["out_sample"]
        assert g["inputs"][0]["shape"] == [1, mtu.task_in_channels(g["task"]), 16, 16]
    assert manifest["tasks"]["edit"]["guidance"] == "image_text" and manifest["tasks"]["edit"]["image_guidance_scale"] == 1.6
    assert manifest["tasks"]["inpaint-mask"]["in_channels"] == 9
    assert manifest["codec"]["kind"] == "identity" and manifest["dtr"] is None
    assert set(manifest["created_by"]) >= {"taskfold", "torch", "onnx", "onnxruntime"}
    assert verify_package(pkg) == []


def test_graph_equals_mtu_on_fresh_inputs_and_loads_alone(trained_pkg, tmp_path):
    mtu, pkg, manifest = trained_pkg
    g = next(g for g in manifest["graphs"] if g["format"] == "onnx" and g["task"] == "inpaint-mask")
    alone = tmp_path / "alone"
    alone.mkdir()
    for rel in [g["path"]] + g["external_data"]:  # just this graph and the weight files it names
        shutil.copy(pkg / rel, alone)
    assert sorted(p.name for p in alone.iterdir()) == ["inpaint-mask.onnx", "inpaint-mask.weights", "shared.weights"]
    sess = _ort(alone / "inpaint-mask.onnx")
    spec = unet_graph_spec(mtu.unet.config, 9, 1, 16, 16)
    for t in (3.0, 640.0):
        x = example_inputs(spec, 1, 16, 16, seed=99, timestep=t)
        with torch.no_grad():
            ref = mtu(x["sample"], x["timestep"], x["encoder_hidden_states"], "inpaint-mask").numpy()
        got = sess.run(None, {k: v.numpy() for k, v in x.items()})[0]
        assert np.abs(got - ref).max() < 1e-5 * np.abs(ref).max()


def test_backbone_is_stored_once(trained_pkg):
    mtu, pkg, manifest = trained_pkg
    files = manifest["files"]
    shared = files["onnx/shared.weights"]["bytes"]
    task_bytes = {t: files[f"onnx/{t}.weights"]["bytes"] for t in mtu.task_names}
    # Task-specific: tensors of the folded edit UNet that no other task's fold holds. With per-task
    # norms that is W2 (scaled by the router output) and conv_in; the concatenated W1 of the experts
    # is the same for every task, so content addressing stores it once.
    folds = {t: dict(fold(mtu, t).named_parameters()) for t in mtu.task_names}
    big = {n: p for n, p in folds["edit"].items() if p.numel() * 4 >= 1024}
    specific = [n for n, p in big.items()
                if not any(o != "edit" and folds[o][n].shape == p.shape and torch.equal(folds[o][n], p) for o in folds)]
    assert any(".ff.net.2.weight" in n for n in specific) and "conv_in.weight" in specific
    assert not any(".ff.net.0.proj.weight" in n for n in specific)
    spec_bytes = sum(big[n].numel() * 4 for n in specific)
    assert spec_bytes <= task_bytes["edit"] < spec_bytes + 64 * len(specific)  # 64-byte alignment at most
    backbone = sum(p.numel() * 4 for n, p in big.items() if n not in specific)
    assert backbone <= shared < backbone * 1.1
    separate = sum(len(open(pkg / f"onnx/{t}.onnx", "rb").read()) for t in mtu.task_names) + 5 * (shared + task_bytes["edit"])
    onnx_total = sum(v["bytes"] for k, v in files.items() if k.startswith("onnx/"))
    assert onnx_total < 0.5 * separate


def test_dtr_graph_masks_at_every_integer_timestep(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "sr"), dtr=True), info)).eval()
    manifest = export_package(mtu, ExportConfig(tasks=("sr",), batch=16, dynamic=True), tmp_path / "pkg", log=_quiet)
    assert manifest["dtr"]["widths"] == [16, 32, 48, 64] and manifest["dtr"]["alpha"] == 4.0
    model = onnx.load(tmp_path / "pkg/onnx/sr.onnx")
    consts = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant"
                                              for a in n.attribute if a.name == "value"]
    tables = [onnx.numpy_helper.to_array(t, base_dir=str(tmp_path / "pkg/onnx")) for t in consts
              if list(t.dims) == [1000] and t.data_type == onnx.TensorProto.INT64]
    assert len(tables) == len(manifest["dtr"]["widths"])  # one constant start table per distinct width
    for w in manifest["dtr"]["widths"]:  # ... equal to the training formula
        assert any(np.array_equal(a, dtr_starts(w, 1000, 4.0, 0.8)) for a in tables), w
    sess = _ort(tmp_path / "pkg/onnx/sr.onnx")
    spec = unet_graph_spec(mtu.unet.config, 8, 100, 8, 8, dynamic=True)
    worst = 0.0
    for chunk in range(10):  # all 1000 integer timesteps, 100 per batch, one per sample
        x = example_inputs(spec, 100, 8, 8, seed=chunk)
        x["timestep"] = torch.arange(chunk * 100, chunk * 100 + 100, dtype=torch.float32)
        with torch.no_grad():
            ref = mtu(x["sample"], x["timestep"], x["encoder_hidden_states"], "sr").numpy()
        got = sess.run(None, {k: v.numpy() for k, v in x.items()})[0]
        err = np.abs(got - ref).reshape(100, -1).max(1) / np.abs(ref).reshape(100, -1).max(1)
        worst = max(worst, float(err.max()))
    assert worst < 1e-5


def test_failing_graph_fails_the_export_and_writes_nothing(tiny_base, tmp_path, monkeypatch):
    import taskfold.export.fold as fold_mod

    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(tasks=TASKS), info).eval()
    real = fold_mod.fold

    def broken(m, task):
        u = real(m, task)
        if task == "sr":
            with torch.no_grad():
                u.conv_in.bias.add_(0.5)
        return u

    monkeypatch.setattr(fold_mod, "fold", broken)
    with pytest.raises(ParityError) as e:
        export_package(mtu, ExportConfig(), tmp_path / "pkg", log=_quiet)
    msg = str(e.value)
    assert "task 'sr' (onnx fp32) output 'out_sample'" in msg and "tolerance 1e-04" in msg
    assert "'edit'" not in msg
    assert not (tmp_path / "pkg").exists() and list(tmp_path.iterdir()) == []


def test_verify_reports_the_flipped_file(trained_pkg, tmp_path, capsys):
    _, pkg, _ = trained_pkg
    copy = tmp_path / "copy"
    shutil.copytree(pkg, copy)
    assert main(["verify", str(copy)]) == 0
    target = copy / "onnx/edit.weights"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "onnx/edit.weights: sha256 differs" in err and "1 problem(s)" in err
    assert "shared.weights" not in err


def test_export_cli_errors_are_one_line(tmp_path, capsys, tiny_base):
    from taskfold.upcycle.checkpoint import save_mtu

    base, info = tiny_base
    save_mtu(upcycle(base, UpcycleConfig(tasks=("t2i", "edit")), info), tmp_path / "mtu")
    cases = [(["--formats", "onnx,tflite"], "unknown export format(s) ['tflite']"),
             (["--tasks", "sr"], "unknown task 'sr'; this model's tasks: t2i, edit"),
             (["--height", "15"], "--height 15 is not a multiple of 2"),
             (["--opset", "13"], "--opset 13 is below 17")]
    for extra, message in cases:
        assert main(["export", str(tmp_path / "mtu"), "--out", str(tmp_path / "pkg"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "pkg").exists()
    with pytest.raises(ConfigError):
        ExportConfig(batch=0)


def test_one_side_given_makes_a_square_package(tmp_path, tiny_base):
    """``--height H`` alone is H x H (as ``--help`` says), and the manifest records both sides; so is ``--width``."""
    from taskfold.upcycle.checkpoint import save_mtu

    base, info = tiny_base
    save_mtu(upcycle(base, UpcycleConfig(tasks=("t2i",)), info), tmp_path / "mtu")
    for flag, side in (("--height", 24), ("--width", 20)):
        out = tmp_path / f"pkg{side}"
        assert main(["export", str(tmp_path / "mtu"), "--out", str(out), flag, str(side), "--parity-timesteps",
                     "1"]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert (manifest["export"]["height"], manifest["export"]["width"]) == (side, side)
        s = manifest["sample"]
        assert (s["image_height"], s["image_width"], s["height"], s["width"]) == (side, side, side, side)
        assert manifest["graphs"][0]["inputs"][0]["shape"][2:] == [side, side]
    assert (ExportConfig(height=64).width, ExportConfig(width=48).height, ExportConfig(height=64, width=32).width) \
        == (64, 48, 32)


# --- Invariant 5: iso-FLOP ---------------------------------------------------------------------

@pytest.mark.parametrize("dtr", [False, True])
def test_folded_flops_equal_base_flops_up_to_conv_in(tiny_base, tmp_path, dtr):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=TASKS, dtr=dtr), info)).eval()
    spec0 = unet_graph_spec(base.config, 4, 1, 16, 16)
    x0 = example_inputs(spec0, 1, 16, 16)
    base_torch = torch_flops(UNetGraph(base), *x0.values())
    base_onnx = onnx_flops(trace(UNetGraph(base), spec0, x0, tmp_path / "base.onnx")).total
    conv = base.conv_in
    per_channel = 2 * conv.out_channels * 16 * 16 * conv.kernel_size[0] * conv.kernel_size[1]
    for task in ("t2i", "edit"):
        c = mtu.task_in_channels(task)
        spec = unet_graph_spec(base.config, c, 1, 16, 16)
        x = example_inputs(spec, 1, 16, 16)
        g = UNetGraph(fold(mtu, task))
        delta = per_channel * (c - 4)
        assert torch_flops(g, *x.values()) - base_torch == delta
        assert onnx_flops(trace(g, spec, x, tmp_path / f"{task}.onnx")).total - base_onnx == delta
    assert base_onnx > base_torch  # the graph count includes attention's two matmuls per layer


def test_sd15_flop_count_splits_into_the_published_figure_plus_attention():
    """SD1.5 at 512x512 on the meta device (shapes only): convolutions and linear layers are the
    paper's 0.677 TFLOPs; the attention score and value products (SDPA runs as its math
    decomposition on meta, so they show up as ``bmm``) add 0.126 TFLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from taskfold.upcycle import build_unet, preset_config

    unet = build_unet(preset_config("sd15"), seed=None, device="meta")
    spec = unet_graph_spec(unet.config, 4, 1, 64, 64)
    x = {k: v.to("meta") for k, v in example_inputs(spec, 1, 64, 64).items()}
    mode = FlopCounterMode(display=False)
    with mode, torch.no_grad():
        UNetGraph(unet)(*x.values())
    counts = {str(k): v for k, v in mode.get_flop_counts()["Global"].items()}
    attention = sum(v for k, v in counts.items() if "bmm" in k or "scaled_dot_product" in k)
    assert abs((mode.get_total_flops() - attention) / 1e12 - 0.677) < 0.001
    assert abs(attention / 1e12 - 0.126) < 0.001


def test_optimized_and_ort_mobile_graphs_pass_the_gate(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=TASKS), info)).eval()
    manifest = export_package(mtu, ExportConfig(tasks=("edit",), optimize=True, ort_mobile=True), tmp_path / "pkg",
                              log=_quiet)
    by_format = {g["format"]: g for g in manifest["graphs"]}
    assert set(by_format) == {"onnx", "ort"} and manifest["tasks"]["edit"]["graphs"]["ort"] == "ort/edit.ort"
    for g in by_format.values():
        assert g["parity"]["status"] == "passed" and g["parity"]["relative_error"] < 1e-5
    assert manifest["files"]["ort/edit.ort"]["bytes"] > manifest["files"]["onnx/edit.weights"]["bytes"]


def test_every_opset_the_schema_admits_exports(tiny_base, tmp_path):
    """The exporter admits what it writes: at opset 20 torch writes ai.onnx Gelu, which the schema once lacked
    (``export --opset 20`` failed its own admission)."""
    from taskfold.runtime.limits import opsets

    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(tasks=TASKS), info).eval()
    lo, hi = opsets()[""]
    for opset in (lo, hi):
        export_package(mtu, ExportConfig(tasks=("t2i",), opset=opset), tmp_path / f"pkg{opset}", log=_quiet)
        model = onnx.load(tmp_path / f"pkg{opset}/onnx/t2i.onnx", load_external_data=False)
        assert model.opset_import[0].version == opset
        assert verify_package(tmp_path / f"pkg{opset}") == []
