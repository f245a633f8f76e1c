"""No exported graph holds float64: WebGPU (onnxruntime-web) and Core ML have no double type.

Every format, layout and precision the tiny fixtures cover is exported, and each graph is scanned
— after ONNX shape inference, so intermediate tensors are typed too — for DOUBLE anywhere ONNX can
hold a type: initializers, graph inputs, outputs and value_info, ``Cast``'s ``to`` (and any other
dtype attribute), ``Constant`` values and every tensor attribute, in subgraphs and functions too.
The ``.ort`` files (ORT Mobile) are flatbuffers the ``onnx`` package cannot read; they are made
from the scanned ``.onnx`` graphs by ONNX Runtime's basic optimisations, and their inputs and
outputs are checked through a session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from taskfold.export import encoders as ex
from taskfold.export.package import ExportConfig, export_package
from taskfold.train.shapes import shapes_world_prompts
from taskfold.upcycle import UpcycleConfig, upcycle
from taskfold.upcycle.codecs import load_codec
from taskfold.upcycle.dtr import timestep_index
from taskfold.upcycle.text_encoders import TinyTextEncoder, build_vocabulary, load_text_encoder

from .._helpers import trained_like
from .._standins import save_random_clip, save_random_vae

DOUBLE = onnx.TensorProto.DOUBLE
TASKS = ("t2i", "edit", "sr", "inpaint-mask")
DTYPE_ATTRIBUTES = ("to", "dtype", "output_dtype")


def _quiet(*a, **k):
    pass


def _tensor_type_is_double(tp) -> bool:
    """Whether an ONNX TypeProto is, or holds (sequence, optional, map), a DOUBLE tensor."""
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        return getattr(tp, kind).elem_type == DOUBLE
    if kind == "sequence_type":
        return _tensor_type_is_double(tp.sequence_type.elem_type)
    if kind == "optional_type":
        return _tensor_type_is_double(tp.optional_type.elem_type)
    if kind == "map_type":
        return _tensor_type_is_double(tp.map_type.value_type)
    return False


def _graph_doubles(graph, where: str) -> list[str]:
    found = [f"{where}: initializer {t.name!r}" for t in graph.initializer if t.data_type == DOUBLE]
    found += [f"{where}: sparse initializer {t.values.name!r}" for t in graph.sparse_initializer
              if t.values.data_type == DOUBLE]
    for kind in ("input", "output", "value_info"):
        found += [f"{where}: {kind} {v.name!r}" for v in getattr(graph, kind) if _tensor_type_is_double(v.type)]
    for node in graph.node:
        found += _node_doubles(node, f"{where}: {node.op_type} {node.name!r}")
    return found


def _node_doubles(node, where: str) -> list[str]:
    found = []
    A = onnx.AttributeProto
    for a in node.attribute:
        if a.type == A.INT and a.name in DTYPE_ATTRIBUTES and a.i == DOUBLE:
            found.append(f"{where}: attribute {a.name} = DOUBLE")
        elif a.type == A.TENSOR and a.t.data_type == DOUBLE:
            found.append(f"{where}: attribute {a.name} holds a DOUBLE tensor")
        elif a.type == A.TENSORS:
            found += [f"{where}: attribute {a.name} holds a DOUBLE tensor" for t in a.tensors if t.data_type == DOUBLE]
        elif a.type == A.SPARSE_TENSOR and a.sparse_tensor.values.data_type == DOUBLE:
            found.append(f"{where}: attribute {a.name} holds a DOUBLE sparse tensor")
        elif a.type == A.TYPE_PROTO and _tensor_type_is_double(a.tp):
            found.append(f"{where}: attribute {a.name} is a DOUBLE type")
        elif a.type == A.GRAPH:
            found += _graph_doubles(a.g, f"{where}.{a.name}")
        elif a.type == A.GRAPHS:
            for i, g in enumerate(a.graphs):
                found += _graph_doubles(g, f"{where}.{a.name}[{i}]")
    return found


def doubles(path: Path) -> list[str]:
    """Every place the graph at ``path`` holds float64 (empty: none)."""
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)  # types every intermediate tensor
    found = _graph_doubles(inferred.graph, path.name)
    for f in inferred.functions:
        found += [f"{path.name}: function {f.name!r}: {d}" for n in f.node
                  for d in _node_doubles(n, f"{n.op_type} {n.name!r}")]
    return found


def test_the_scanner_finds_double_wherever_onnx_holds_it(tmp_path):
    """The scanner itself: a graph with a Cast to DOUBLE, a DOUBLE constant and a DOUBLE output."""
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=DOUBLE, name="up"),
             helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([0.5]), "c")),
             helper.make_node("Add", ["xd", "c"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", DOUBLE, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "d.onnx")
    found = doubles(tmp_path / "d.onnx")
    assert any("Cast 'up': attribute to = DOUBLE" in f for f in found)
    assert any("Constant" in f and "DOUBLE tensor" in f for f in found)
    assert any("output 'y'" in f for f in found) and any("value_info 'xd'" in f for f in found)


@pytest.fixture(scope="module")
def dtr_mtu(tiny_base):
    base, info = tiny_base
    return trained_like(upcycle(base, UpcycleConfig(tasks=TASKS, dtr=True), info)).eval()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_no_unet_graph_holds_float64(dtr_mtu, tmp_path, precision):
    """DTR UNet graphs (the mask row is the one place a timestep is rounded) in both layouts; ``.ort`` too."""
    pkg = tmp_path / "pkg"
    manifest = export_package(dtr_mtu, ExportConfig(layout=("graphs", "adapters"), precision=precision,
                                                    ort_mobile=precision == "fp16", parity_timesteps=1),
                              pkg, log=_quiet)
    graphs = sorted({g["path"] for g in manifest["graphs"] if g["path"].endswith(".onnx")})
    assert "onnx/unet.onnx" in graphs and len(graphs) == len(TASKS) + 1
    found = [d for g in graphs for d in doubles(pkg / g)]
    assert found == [], found[:10]
    import onnxruntime as ort

    for g in (g for g in manifest["graphs"] if g["format"] == "ort"):
        sess = ort.InferenceSession(str(pkg / g["path"]), providers=["CPUExecutionProvider"])
        types = {v.type for v in sess.get_inputs() + sess.get_outputs()}
        assert "tensor(double)" not in types, (g["path"], types)


def test_no_encoder_or_codec_graph_holds_float64(tmp_path):
    prompts = shapes_world_prompts()
    tiny = TinyTextEncoder(build_vocabulary(prompts), dim=32, max_length=16).eval()
    ex.export_text_encoder_onnx(tiny, tmp_path / "tiny" / "text_encoder.onnx", batch=1)
    pipe = tmp_path / "pipe"
    save_random_clip(pipe, prompts, num_merges=80, max_length=16)
    save_random_vae(pipe, block_out_channels=(8, 16))
    ex.export_text_encoder_onnx(load_text_encoder(pipe), tmp_path / "clip" / "text_encoder.onnx", batch=1)
    ex.export_codec_onnx(load_codec(pipe), tmp_path / "vae", height=16, width=16, batch=1)
    graphs = sorted(tmp_path.glob("*/*.onnx"))
    assert [g.name for g in graphs] == ["text_encoder.onnx", "text_encoder.onnx", "vae_decoder.onnx",
                                        "vae_encoder.onnx"]
    found = [d for g in graphs for d in doubles(g)]
    assert found == [], found[:10]


def test_the_rounding_in_float32_is_the_rule_for_every_float32_timestep():
    """``clamp(floor(t + 0.5), 0, 999)`` computed exactly (float64 holds every float32 ``t + 0.5``) against
    the float32 graph-safe form, on every half-integer neighbourhood and on random values."""
    edges = []
    for k in range(-2, 1002):
        mid = np.float32(k + 0.5)
        edges += [mid, np.nextafter(mid, np.float32(-np.inf)), np.nextafter(mid, np.float32(np.inf)), np.float32(k)]
    edges += [np.float32(0.5 - 2**-26), np.float32(0.5 - 2**-25), np.float32(-0.0), np.float32(2**24),
              np.float32(3e38), np.float32(-3e38), np.float32(1e-30)]
    rng = np.random.default_rng(0)
    t = np.concatenate([np.array(edges, np.float32), rng.uniform(-10, 1010, 100_000).astype(np.float32)])
    want = np.clip(np.floor(t.astype(np.float64) + 0.5), 0, 999).astype(np.int64)
    got = timestep_index(torch.from_numpy(t)).numpy()
    bad = np.nonzero(got != want)[0]
    assert len(bad) == 0, [(float(t[i]), int(got[i]), int(want[i])) for i in bad[:5]]
    assert torch.equal(timestep_index(torch.arange(1000, dtype=torch.float32)), torch.arange(1000))
    assert torch.equal(timestep_index(torch.arange(1000)), torch.arange(1000))
    half = torch.tensor([10.5, 999.0, 700.3, 10.49], dtype=torch.float16)  # float16 holds 700.5, 10.4921875
    assert timestep_index(half).tolist() == [11, 999, 701, 10]
