"""The adapters layout: one shared graph, an ONNX Runtime adapter per task; exact, small, one session."""

import json
import shutil

import numpy as np
import pytest
import torch

from taskfold.errors import ConfigError, PackageError
from taskfold.export.adapters import AdapterUNetGraph, task_tensor_names, task_tensors
from taskfold.export.fold import fold
from taskfold.export.graph import MTUTaskGraph, UNetGraph, example_inputs, unet_graph_spec
from taskfold.export.package import ExportConfig, export_package
from taskfold.runtime import open_package
from taskfold.runtime.reader import verify_package
from taskfold.upcycle import UpcycleConfig, upcycle
from tests._helpers import trained_like

TASKS = ("t2i", "edit", "sr", "inpaint", "inpaint-mask")


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def both(tiny_base, tmp_path_factory):
    """A trained-like tiny model exported in both layouts (routers, norms and conv_in differ per task)."""
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=TASKS), info)).eval()
    out = tmp_path_factory.mktemp("adapters") / "pkg"
    manifest = export_package(mtu, ExportConfig(layout=("graphs", "adapters")), out, log=_quiet)
    return mtu, out, manifest


def test_the_shared_graph_computes_every_task_exactly(tiny_base):
    base, info = tiny_base
    for cfg in (UpcycleConfig(tasks=TASKS), UpcycleConfig(tasks=TASKS, top_k=2)):  # top-k: zeros in s
        mtu = trained_like(upcycle(base, cfg, info)).eval()
        graph = AdapterUNetGraph(mtu).eval()
        for task in TASKS:
            spec = unet_graph_spec(mtu.unet.config, mtu.task_in_channels(task), 1, 16, 16)
            x = example_inputs(spec, 1, 16, 16, seed=3, timestep=421.0)
            pad = torch.zeros(1, 9 - x["sample"].shape[1], 16, 16)
            with torch.no_grad():
                want = MTUTaskGraph(mtu, task)(*x.values())
                got = graph(torch.cat([x["sample"], pad], 1), x["timestep"], x["encoder_hidden_states"],
                            *task_tensors(mtu, task).values())
                folded = UNetGraph(fold(mtu, task))(*x.values()) if cfg.top_k is None else want
            scale = float(want.abs().max())
            assert float((got - want).abs().max()) < 2e-6 * scale, (cfg.top_k, task)
            assert float((folded - want).abs().max()) < 2e-6 * scale


def test_per_task_expert_norms_are_refused(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(tasks=("t2i", "edit"), norm_mode="task_expert"), info).eval()
    with pytest.raises(ConfigError, match="cannot hold per-\\(task, expert\\) norms"):
        export_package(mtu, ExportConfig(layout=("adapters",)), tmp_path / "pkg", log=_quiet)
    assert not (tmp_path / "pkg").exists()


def test_package_holds_one_graph_and_small_adapters(both):
    mtu, pkg, manifest = both
    shared = [g for g in manifest["graphs"] if g.get("layout") == "adapters"]
    assert [g["task"] for g in shared] == list(TASKS)
    assert {g["path"] for g in shared} == {"onnx/unet.onnx"} and len({g["backbone_id"] for g in shared}) == 1
    for g in shared:
        assert g["parity"]["status"] == "passed" and g["parity"]["adapter_active"]
        assert g["parity"]["relative_error"] < 1e-5
    numbers = sum(int(np.prod(t.shape)) for t in task_tensors(mtu, "t2i").values())
    sizes = [manifest["files"][g["adapter"]]["bytes"] for g in shared]
    assert all(numbers * 4 <= s <= numbers * 4 + 4096 for s in sizes), (numbers, sizes)  # 4 bytes a number + header
    graph_bytes = sum(f["bytes"] for k, f in manifest["files"].items() if k.startswith("onnx/unet."))
    per_task_graphs = sum(f["bytes"] for k, f in manifest["files"].items()
                          if k.startswith("onnx/") and not k.startswith("onnx/unet."))
    assert graph_bytes + sum(sizes) < 0.6 * per_task_graphs  # the tiny model's FFNs are a small share
    assert verify_package(pkg) == []


def test_flops_equal_the_base_but_for_the_scales_and_the_padded_conv_in(both):
    mtu, _, manifest = both
    base = next(g for g in manifest["graphs"] if g["task"] == "t2i" and g.get("layout", "graphs") == "graphs")
    shared = next(g for g in manifest["graphs"] if g["task"] == "t2i" and g.get("layout") == "adapters")
    conv = mtu.unet.conv_in.convs[0]
    h, w = manifest["sample"]["height"], manifest["sample"]["width"]
    padded = 2 * conv.out_channels * (9 - 4) * 9 * h * w  # conv_in at 9 channels instead of t2i's 4
    assert shared["flops"]["total"] - base["flops"]["total"] == padded
    # one multiply per hidden unit and token of every FFN: counted from a forward pass of the torch graph
    from taskfold.export.adapters import ScaledFeedForward

    graph, seen = AdapterUNetGraph(mtu).eval(), []
    for m in graph.modules():
        if isinstance(m, ScaledFeedForward):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[:-1].numel() * mod.out.in_features))
    text = torch.zeros(1, manifest["sample"]["text_len"], 32)
    with torch.no_grad():
        graph(torch.zeros(1, 9, h, w), torch.tensor([1.0]), text, *task_tensors(mtu, "t2i").values())
    assert shared["flops"]["by_op"]["Mul (elementwise)"] == sum(seen) > 0


@pytest.fixture(scope="module")
def trained_both(tiny_package, tmp_path_factory):
    """The suite's trained tiny package (text encoder, DTR) re-exported in both layouts."""
    _, _, mtu_dir, _ = tiny_package
    out = tmp_path_factory.mktemp("adapters-trained") / "pkg"
    export_package(mtu_dir, ExportConfig(layout=("graphs", "adapters"), height=16, width=16, parity_timesteps=2),
                   out, log=_quiet)
    return out


def test_every_task_samples_the_same_images_in_both_layouts(trained_both):
    pkg = trained_both
    a, b = open_package(pkg, layout="graphs"), open_package(pkg, layout="adapters")
    assert b.layout == "adapters" and open_package(pkg).layout == "adapters"
    rng = np.random.default_rng(0)
    for task in TASKS:
        spec = a.spec(task)
        image = rng.uniform(-1, 1, (3, 16, 16)).astype(np.float32) if spec.needs_condition else None
        mask = (rng.uniform(size=(1, 16, 16)) > 0.5).astype(np.float32) if spec.needs_mask else None
        x = a.generate(task, "a red circle", image=image, mask=mask, steps=4, seed=2)
        y = b.generate(task, "a red circle", image=image, mask=mask, steps=4, seed=2)
        assert float(np.abs(x - y).max()) < 1 / 255, task
        assert float(np.abs(x).max()) > 0.05


def test_one_session_serves_every_task(both, monkeypatch):
    import onnxruntime as ort

    _, pkg, _ = both
    made = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: made.append(a[0]) or real(*a, **k))
    p = open_package(pkg, layout="adapters")
    x = np.zeros((1, 4, 16, 16), np.float32)
    h = np.zeros((1, 16, 32), np.float32)  # tiny preset: text length from the export, width 32
    h = np.zeros((1, p.manifest["sample"]["text_len"], 32), np.float32)
    outs = {t: p.unet(t)(np.zeros((1, p.spec(t).in_channels(4), 16, 16), np.float32), np.array([500.0]), h)
            for t in TASKS}
    assert [m.endswith("unet.onnx") for m in made] == [True]  # one session for five tasks
    assert len({float(np.abs(o).sum()) for o in outs.values()}) == len(TASKS)  # each task its own output
    assert x.shape == (1, 4, 16, 16)


def _replace_adapter(pkg, task, data: bytes):
    manifest = json.loads((pkg / "manifest.json").read_text())
    rel = f"adapters/{task}.onnx_adapter"
    (pkg / rel).write_bytes(data)
    import hashlib

    manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (pkg / "manifest.json").write_text(json.dumps(manifest))


def test_an_adapter_from_another_package_or_of_other_tensors_is_refused(both, tiny_base, tmp_path):
    mtu, pkg, _ = both
    base, info = tiny_base
    other = trained_like(upcycle(base, UpcycleConfig(tasks=TASKS), info), seed=9).eval()
    export_package(other, ExportConfig(layout=("adapters",), tasks=("t2i", "edit")), tmp_path / "other", log=_quiet)
    copy = tmp_path / "copy"
    shutil.copytree(pkg, copy)
    _replace_adapter(copy, "edit", (tmp_path / "other/adapters/edit.onnx_adapter").read_bytes())
    p = open_package(copy, layout="adapters")
    with pytest.raises(PackageError, match="belongs to another backbone .* an adapter from another package"):
        p.unet("edit")
    p.unet("t2i")  # the others still run
    from taskfold.export.adapters import backbone_id, write_adapter

    values = {k: v.numpy() for k, v in task_tensors(mtu, "sr").items()}
    values.pop(task_tensor_names(mtu)[0])
    manifest = json.loads((copy / "manifest.json").read_text())
    write_adapter(values, tmp_path / "short.onnx_adapter",
                  next(g["backbone_id"] for g in manifest["graphs"] if g.get("layout") == "adapters"))
    _replace_adapter(copy, "sr", (tmp_path / "short.onnx_adapter").read_bytes())
    with pytest.raises(PackageError, match="does not hold the graph's task tensors .*task.ffn.0.scale"):
        open_package(copy, layout="adapters").unet("sr")
    _replace_adapter(copy, "inpaint", b"not an adapter at all")
    with pytest.raises(PackageError, match="is not an ONNX Runtime adapter"):
        open_package(copy, layout="adapters").unet("inpaint")
    assert backbone_id("f" * 64) == 0x7FFFFFFF


def test_the_shared_graph_uses_only_operators_tensorrt_parses(both):
    import onnx

    from taskfold.export.tensorrt import onnx_ops_unsupported_by_tensorrt

    _, pkg, _ = both
    model = onnx.load(str(pkg / "onnx" / "unet.onnx"), load_external_data=False)
    assert onnx_ops_unsupported_by_tensorrt(model) == []


@pytest.mark.tensorrt
def test_tensorrt_shared_engine_passes_the_gate_for_every_task(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "edit", "sr")), info)).eval()
    manifest = export_package(mtu, ExportConfig(formats=("tensorrt",), layout=("adapters",)), tmp_path / "pkg",
                              log=_quiet)
    trt = [g for g in manifest["graphs"] if g["format"] == "tensorrt"]
    assert [g["path"] for g in trt] == ["tensorrt/shared.plan"] * 3
    assert all(g["parity"]["status"] == "passed" for g in trt)
    p = open_package(tmp_path / "pkg", backend="tensorrt")
    assert p.layout == "adapters"
