"""The adapters layout: one shared graph whose task tensors are required inputs, a safetensors file per task;
exact, small, one session, and every crafted task file refused before a session exists."""

import json
import re
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


def test_package_holds_one_graph_and_small_task_files(both):
    import onnx

    mtu, pkg, manifest = both
    shared = [g for g in manifest["graphs"] if g.get("layout") == "adapters"]
    assert [g["task"] for g in shared] == list(TASKS)
    assert {g["path"] for g in shared} == {"onnx/unet.onnx"} and len({g["backbone_id"] for g in shared}) == 1
    assert [g["adapter"] for g in shared] == [f"adapters/{t}.safetensors" for t in TASKS]
    for g in shared:
        assert g["parity"]["status"] == "passed" and g["parity"]["task_tensors"] == "inputs"
        assert g["parity"]["relative_error"] < 1e-5
    # the task tensors are required inputs: no initializer of the same name (ONNX Runtime's JS API drops
    # feeds named like initializers)
    model = onnx.load(str(pkg / "onnx" / "unet.onnx"), load_external_data=False)
    names = task_tensor_names(mtu)
    assert [i.name for i in model.graph.input] == ["sample", "timestep", "encoder_hidden_states", *names]
    assert not {t.name for t in model.graph.initializer} & set(names)
    assert [t["name"] for t in shared[0]["task_tensors"]] == names
    # each file is standard safetensors: the reference library reads it, with the task and backbone
    from safetensors import safe_open

    for g in shared:
        with safe_open(str(pkg / g["adapter"]), framework="numpy") as f:
            assert sorted(f.keys()) == sorted(names)
            assert f.metadata() == {"format": "taskfold-task-tensors", "task": g["task"],
                                    "backbone_id": str(g["backbone_id"])}
            np.testing.assert_array_equal(f.get_tensor("task.ffn.0.scale"),
                                          task_tensors(mtu, g["task"])["task.ffn.0.scale"].numpy())
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


def _replace_task_file(pkg, task, data: bytes, rel: str | None = None):
    """Put ``data`` in place of ``task``'s file and re-list it in the manifest (size and sha256 correct): only
    the runtime's own checks of the file's contents stand between it and a session."""
    import hashlib

    manifest = json.loads((pkg / "manifest.json").read_text())
    old = f"adapters/{task}.safetensors"
    rel = rel or old
    (pkg / old).unlink()
    (pkg / rel).write_bytes(data)
    del manifest["files"][old]
    manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    for g in manifest["graphs"]:
        if g["task"] == task and g.get("adapter"):
            g["adapter"] = rel
    (pkg / "manifest.json").write_text(json.dumps(manifest))


def _task_file(values: dict, metadata: dict | None = None, edit=None) -> bytes:
    """A safetensors file written by hand (``edit(header)`` may break its header)."""
    header, chunks, offset = {}, [], 0
    for name, a in values.items():
        a = np.ascontiguousarray(a)
        header[name] = {"dtype": {"float32": "F32", "float16": "F16"}[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        chunks.append(a.tobytes())
        offset += a.nbytes
    if metadata is not None:
        header["__metadata__"] = metadata
    if edit is not None:
        edit(header)
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


@pytest.fixture
def crafted(both, tmp_path, monkeypatch):
    """``refused(task, data, match)``: the package with ``task``'s file replaced by ``data`` refuses it with a
    PackageError matching ``match`` — before ONNX Runtime is asked for any session."""
    import onnxruntime as ort

    mtu, pkg, manifest = both
    shared = {g["task"]: g for g in manifest["graphs"] if g.get("layout") == "adapters"}
    sessions = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: sessions.append(a[0]) or real(*a, **k))

    def refused(task, data, match, rel=None):
        copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(pkg, copy)
        _replace_task_file(copy, task, data, rel)
        sessions.clear()
        p = open_package(copy, layout="adapters")
        with pytest.raises(PackageError, match=match):
            p.unet(task)
        assert sessions == [], "a session was created for a refused task file"
        problems = verify_package(copy)  # verify parses task files as the runtime does
        assert any(re.search(match, x) for x in problems), problems
        return copy
    values = {t: {k: v.numpy() for k, v in task_tensors(mtu, t).items()} for t in TASKS}
    meta = {t: {"format": "taskfold-task-tensors", "task": t, "backbone_id": str(shared[t]["backbone_id"])}
            for t in TASKS}
    return refused, values, meta, mtu


def test_a_hand_written_task_file_is_accepted_exactly(both, crafted, tmp_path):
    """The crafting helper itself writes a file the runtime accepts (so each refusal below is the one defect)."""
    _, pkg, _ = both
    _, values, meta, _ = crafted
    copy = tmp_path / "good"
    shutil.copytree(pkg, copy)
    _replace_task_file(copy, "edit", _task_file(values["edit"], meta["edit"]))
    x = np.zeros((1, 8, 16, 16), np.float32)
    h = np.zeros((1, json.loads((pkg / "manifest.json").read_text())["sample"]["text_len"], 32), np.float32)
    t = np.array([300.0], np.float32)
    np.testing.assert_array_equal(open_package(copy, layout="adapters").unet("edit")(x, t, h),
                                  open_package(pkg, layout="adapters").unet("edit")(x, t, h))


def test_task_files_with_other_tensors_are_refused(crafted):
    refused, values, meta, mtu = crafted
    names = task_tensor_names(mtu)
    renamed = {(k + "x" if k == names[0] else k): v for k, v in values["sr"].items()}
    refused("sr", _task_file(renamed, meta["sr"]), f"sr.safetensors: key '{names[0]}x' is not one of the graph's")
    short = {k: v for k, v in values["sr"].items() if k != names[1]}
    refused("sr", _task_file(short, meta["sr"]), f"key '{names[1]}' is missing")
    with_sample = dict(values["sr"], sample=np.zeros((1, 9, 16, 16), np.float32))
    refused("sr", _task_file(with_sample, meta["sr"]), "key 'sample' is not one of the graph's task tensors")
    half = {k: v.astype(np.float16) for k, v in values["sr"].items()}
    refused("sr", _task_file(half, meta["sr"]), f"key '{names[0]}': float16 .*, the graph takes float32")
    wide = dict(values["sr"], **{names[0]: np.zeros(values["sr"][names[0]].size + 1, np.float32)})
    refused("sr", _task_file(wide, meta["sr"]), f"key '{names[0]}': float32 \\[\\d+\\], the graph takes")


def test_a_task_file_of_another_task_or_package_is_refused(both, crafted, tiny_base, tmp_path):
    """Every task's file lists the same tensors; its metadata says whose task and backbone they are."""
    refused, values, meta, _ = crafted
    refused("edit", _task_file(values["t2i"], meta["t2i"]), "__metadata__ key 'task' is 't2i', expected 'edit'")
    _, pkg, _ = both
    refused("edit", (pkg / "adapters" / "t2i.safetensors").read_bytes(), "key 'task' is 't2i', expected 'edit'")
    base, info = tiny_base
    other = trained_like(upcycle(base, UpcycleConfig(tasks=TASKS), info), seed=9).eval()
    export_package(other, ExportConfig(layout=("adapters",), tasks=("t2i", "edit")), tmp_path / "other", log=_quiet)
    refused("edit", (tmp_path / "other/adapters/edit.safetensors").read_bytes(),
            "__metadata__ key 'backbone_id' is '\\d+', expected")
    refused("edit", _task_file(values["edit"]), "__metadata__ key 'format' is None, expected 'taskfold-task-tensors'")


def test_task_files_with_a_broken_layout_are_refused(crafted):
    refused, values, meta, mtu = crafted
    names = task_tensor_names(mtu)
    good = _task_file(values["inpaint"], meta["inpaint"])
    refused("inpaint", (2**40).to_bytes(8, "little") + good[8:], "header length 1099511627776 is more than")
    refused("inpaint", len(good).to_bytes(8, "little") + good[8:], "runs past the end of the file")
    refused("inpaint", b"\x05\0\0\0\0\0\0\0[1,2]", "the header is not a JSON object")
    refused("inpaint", b"\x03\0\0\0\0\0\0\0{\"a", "the header is not valid JSON")

    def past_end(h):  # the last tensor's end moved past the buffer
        h[names[-1]]["data_offsets"][1] += 4
    refused("inpaint", _task_file(values["inpaint"], meta["inpaint"], past_end), "data_offsets .* are not")

    def overlap(h):
        h[names[1]]["data_offsets"] = list(h[names[0]]["data_offsets"])
        h[names[1]]["shape"] = list(h[names[0]]["shape"])
    refused("inpaint", _task_file(values["inpaint"], meta["inpaint"], overlap), "overlap another tensor's bytes")

    def longer(h):
        h[names[0]]["shape"] = [h[names[0]]["shape"][0] - 1]
    refused("inpaint", _task_file(values["inpaint"], meta["inpaint"], longer), "span \\d+ bytes, but shape")

    def bf16(h):
        h[names[0]]["dtype"] = "BF16"
    refused("inpaint", _task_file(values["inpaint"], meta["inpaint"], bf16), "unknown dtype 'BF16'")


def test_a_package_with_onnx_runtime_adapters_says_to_re_export(crafted):
    refused, values, meta, _ = crafted
    refused("t2i", b"an old .onnx_adapter", "is an ONNX Runtime adapter, which this taskfold no longer reads",
            rel="adapters/t2i.onnx_adapter")


def test_a_manifest_naming_a_unet_input_as_a_task_tensor_is_refused(both, tmp_path):
    _, pkg, _ = both
    copy = tmp_path / "copy"
    shutil.copytree(pkg, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    g = next(g for g in manifest["graphs"] if g.get("layout") == "adapters")
    g["task_tensors"].append({"name": "sample", "shape": [1, 9, 16, 16], "dtype": "float32"})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="task_tensors: 'sample' is named twice or like one of the graph's inputs"):
        open_package(copy, layout="adapters")


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


def test_the_export_log_counts_files_not_manifest_entries(both, tiny_base, tmp_path):
    from taskfold.export.package import graph_count

    _, _, manifest = both
    adapters = [g for g in manifest["graphs"] if g.get("layout") == "adapters"]
    assert graph_count(adapters) == "1 graph + 5 task files"
    assert graph_count([g for g in manifest["graphs"] if g not in adapters]) == "5 graphs"
    assert graph_count(manifest["graphs"]) == "6 graphs + 5 task files"
    base, info = tiny_base
    lines = []
    export_package(upcycle(base, UpcycleConfig(tasks=("t2i", "edit")), info),
                   ExportConfig(layout=("adapters",), parity_timesteps=1), tmp_path / "pkg", log=lines.append)
    assert lines[-1].startswith(f"wrote {tmp_path / 'pkg'}: 1 graph + 2 task files, ")
