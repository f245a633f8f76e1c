"""TensorRT: exported task graphs use only operators TensorRT's ONNX parser supports; the engine
builder and refitter drive the TensorRT 10 API as documented (a recording stand-in here, the real
library under ``@pytest.mark.tensorrt``)."""

import sys
import types
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from taskfold.errors import ConfigError, ExportError
from taskfold.export import tensorrt as trt_export
from taskfold.export.fold import fold
from taskfold.export.graph import UNetGraph, example_inputs, unet_graph_spec
from taskfold.upcycle import UpcycleConfig, upcycle
from tests._helpers import trained_like

SIZE, TEXT_LEN = 16, 77


def _export(unet, in_channels, path):
    """The brief's export: TorchScript-based ``torch.onnx.export``, opset 17, static shapes."""
    spec = unet_graph_spec(unet.config, in_channels, batch=1, height=SIZE, width=SIZE, text_len=TEXT_LEN)
    example = example_inputs(spec, 1, SIZE, SIZE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from diffusers' Python-side shape checks
        torch.onnx.export(UNetGraph(unet).eval(), tuple(example.values()), str(path), input_names=spec.input_names,
                          output_names=spec.output_names, opset_version=17, dynamo=False)
    return spec


@pytest.fixture(scope="module")
def graphs(tiny_base, tmp_path_factory):
    """``{name: (onnx path, spec)}`` for folded tasks of a plain and a DTR model."""
    base, info = tiny_base
    out = tmp_path_factory.mktemp("trt")
    plain = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "edit", "sr")), info)).eval()
    dtr = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "edit"), dtr=True), info)).eval()
    result = {}
    for name, mtu, task in (("t2i", plain, "t2i"), ("edit", plain, "edit"), ("sr", plain, "sr"),
                            ("dtr-edit", dtr, "edit")):
        path = out / f"{name}.onnx"
        result[name] = (path, _export(fold(mtu, task), mtu.task_in_channels(task), path))
    return result


# ---------------------------------------------------------------------------------------------
# The support check
# ---------------------------------------------------------------------------------------------

def test_plain_and_dtr_task_graphs_use_only_supported_operators(graphs):
    for name in ("t2i", "edit", "dtr-edit"):
        path, _ = graphs[name]
        assert trt_export.onnx_ops_unsupported_by_tensorrt(path) == [], name
        ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
        assert ops <= trt_export.TENSORRT_SUPPORTED_OPS
    dtr_ops = {n.op_type for n in onnx.load(str(graphs["dtr-edit"][0])).graph.node}
    plain_ops = {n.op_type for n in onnx.load(str(graphs["edit"][0])).graph.node}
    assert {"Floor", "Clip", "GreaterOrEqual", "Less", "And"} <= dtr_ops - plain_ops  # the DTR masks were checked


def test_an_unsupported_node_is_reported_by_name(graphs):
    model = onnx.load(str(graphs["edit"][0]))
    tensor = model.graph.node[-1].output[0]
    model.graph.node.extend([
        helper.make_node("Unique", [tensor], ["u"], name="deliberately_unsupported"),
        helper.make_node("FancyAttention", [tensor], ["f"], name="custom_op", domain="com.example"),
        helper.make_node("NotAnOnnxOp", [tensor], ["n"], name="unknown_op"),
    ])
    found = trt_export.onnx_ops_unsupported_by_tensorrt(model)
    assert [(n, op) for n, op, _ in found] == [("deliberately_unsupported", "Unique"), ("custom_op", "FancyAttention"),
                                               ("unknown_op", "NotAnOnnxOp")]
    assert "listed as unsupported by TensorRT 10.15" in found[0][2]
    assert "com.example" in found[1][2] and "not in TensorRT 10.15's ONNX operator list" in found[2][2]


def _model(nodes, inputs, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _x(dtype=TensorProto.FLOAT, shape=(1, 4, 8, 8), name="x"):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def test_stated_restrictions_and_float_types_are_checked():
    model = _model([
        helper.make_node("Resize", ["x", "", "scales"], ["r"], name="resize_cubic", mode="cubic"),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], name="reduce_runtime_axes"),
        helper.make_node("MaxPool", ["x"], ["p", "i"], name="pool_indices", kernel_shape=[2, 2]),
        helper.make_node("NonZero", ["xb"], ["nz"], name="nonzero_bf16"),
        helper.make_node("Floor", ["xd"], ["fl"], name="floor_double"),  # DOUBLE is cast down: fine
        helper.make_node("Clip", ["xi"], ["c"], name="clip_int64"),  # integer types are not checked
        helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize_ok", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    ], [_x(), _x(name="scales", shape=(4,)), _x(name="axes", dtype=TensorProto.INT64, shape=(1,)),
        _x(name="xb", dtype=TensorProto.BFLOAT16), _x(name="xd", dtype=TensorProto.DOUBLE),
        _x(name="xi", dtype=TensorProto.INT64)])
    found = trt_export.onnx_ops_unsupported_by_tensorrt(model)
    assert found == [
        ("resize_cubic", "Resize", "mode 'cubic' is not one of ['linear', 'nearest']"),
        ("reduce_runtime_axes", "ReduceSum", "`axes` must be an initializer"),
        ("pool_indices", "MaxPool", "the `Indices` output is not supported"),
        ("nonzero_bf16", "NonZero", "BF16 input is not supported (supported types: FP32, FP16)"),
    ]
    late = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_x()], opset=25)
    assert trt_export.onnx_ops_unsupported_by_tensorrt(late) == [
        ("<model>", "opset_import", "opset 25 is outside TensorRT 10.15's range 9..24")]


def test_the_support_list_is_consistent():
    assert not trt_export.TENSORRT_SUPPORTED_OPS & trt_export.TENSORRT_UNSUPPORTED_OPS
    # the 10.15 document has 200 rows: 158 marked Y, 42 marked N
    assert len(trt_export.TENSORRT_SUPPORTED_OPS) == 158 and len(trt_export.TENSORRT_UNSUPPORTED_OPS) == 42
    assert all(set(types_) <= {"FP32", "FP16", "BF16", "INT32", "INT64", "BOOL", "UINT8", "INT8", "FP8", "FP4", "INT4"}
               for types_ in trt_export.TENSORRT_ONNX_OPS.values())


def test_same_width_task_graphs_share_weight_names_and_shapes(graphs):
    """What refitting one engine with another task's ONNX weights relies on."""
    def weights(name):
        inits = onnx.load(str(graphs[name][0])).graph.initializer
        return {t.name: tuple(t.dims) for t in inits}, {t.name: onnx.numpy_helper.to_array(t) for t in inits}
    (edit, edit_v), (sr, sr_v), (t2i, _) = weights("edit"), weights("sr"), weights("t2i")
    assert edit == sr and len(edit) > 100
    differing = [n for n in edit if not np.array_equal(edit_v[n], sr_v[n])]
    assert differing and len(differing) < len(edit)  # task weights differ, the frozen backbone does not
    assert {n for n in edit if edit[n] != t2i.get(n)} == {"unet.conv_in.weight"}  # 8 vs 4 input channels


# ---------------------------------------------------------------------------------------------
# Engine building and refit, against a recording stand-in for the TensorRT 10 API
# ---------------------------------------------------------------------------------------------

def _fake_tensorrt(calls, parse_ok=True, shapes=None):
    """A minimal ``tensorrt`` module recording how it is driven (names as in TensorRT 10's bindings)."""
    flag = types.SimpleNamespace(**{n: n for n in ("FP16", "REFIT", "REFIT_IDENTICAL", "STRIP_PLAN")})

    class Error:
        def __init__(self, i):
            self.i = i

        def code(self):
            return "UNSUPPORTED_NODE"

        def desc(self):
            return f"problem {self.i}"

        def node(self):
            return self.i

        def node_name(self):
            return f"/unet/node_{self.i}"

        def node_operator(self):
            return "Fancy"

    class Parser:
        num_errors = 0 if parse_ok else 2

        def __init__(self, *a):
            pass

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return parse_ok

        def refit_from_file(self, path):
            calls.append(("refit_from_file", path))
            return True

        def get_error(self, i):
            return Error(i)

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+timings"

    class Config:
        def set_memory_pool_limit(self, pool, n):
            calls.append(("workspace", pool, n))

        def set_flag(self, f):
            calls.append(("flag", f))

        def add_optimization_profile(self, p):
            calls.append(("profile", p.shapes))

        def create_timing_cache(self, data):
            self.cache = Cache(data)
            return self.cache

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("timing_cache", cache.data, ignore_mismatch))
            return True

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"ENGINE"

    class Engine:
        refittable = True

        def get_tensor_shape(self, name):
            return shapes[name]

        def create_serialization_config(self):
            return types.SimpleNamespace(clear_flag=lambda f: calls.append(("clear", f)))

        def serialize_with_config(self, config):
            return b"REFITTED"

    class Refitter:
        def __init__(self, engine, logger):
            pass

        def get_missing_weights(self):
            return []

        def refit_cuda_engine(self):
            calls.append(("refit_cuda_engine",))
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine()

    return types.SimpleNamespace(
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder, OnnxParser=Parser, OnnxParserRefitter=Parser, Refitter=Refitter, Runtime=Runtime,
        BuilderFlag=flag, MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        SerializationFlag=types.SimpleNamespace(EXCLUDE_WEIGHTS="EXCLUDE_WEIGHTS"))


def test_build_engine_drives_the_documented_calls(graphs, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(calls))
    path, spec = graphs["edit"]
    (tmp_path / "timing.cache").write_bytes(b"old")
    out = trt_export.build_engine(path, tmp_path / "edit.engine", spec, timing_cache_path=tmp_path / "timing.cache",
                                  refit=True, workspace_bytes=1 << 30)
    assert out.read_bytes() == b"ENGINE" and (tmp_path / "timing.cache").read_bytes() == b"old+timings"
    assert ("create_network", 0) in calls and ("parse_from_file", str(path)) in calls
    assert [c[1] for c in calls if c[0] == "flag"] == ["FP16", "REFIT"]
    assert ("workspace", "WORKSPACE", 1 << 30) in calls and ("timing_cache", b"old", False) in calls
    profile = next(c[1] for c in calls if c[0] == "profile")
    assert profile["sample"] == ((1, 8, 16, 16),) * 3 and profile["encoder_hidden_states"] == ((1, 77, 32),) * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.engine", "timing.cache"]  # no temp files left


def test_build_engine_flags_for_stripped_plans(graphs, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(calls))
    path, spec = graphs["edit"]
    trt_export.build_engine(path, tmp_path / "a.engine", spec, fp16=False, strip_weights=True)
    assert [c[1] for c in calls if c[0] == "flag"] == ["STRIP_PLAN", "REFIT_IDENTICAL"]


def test_every_parser_error_is_in_one_export_error(graphs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt([], parse_ok=False))
    path, spec = graphs["edit"]
    with pytest.raises(ExportError) as e:
        trt_export.build_engine(path, tmp_path / "edit.engine", spec)
    msg = str(e.value)
    assert "(2 errors)" in msg and "node /unet/node_0 (Fancy): UNSUPPORTED_NODE: problem 0" in msg
    assert "node /unet/node_1 (Fancy)" in msg and not (tmp_path / "edit.engine").exists()


def test_profile_shapes_are_checked_before_tensorrt_is_needed(graphs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    path, spec = graphs["edit"]
    shapes = trt_export.profile_shapes(spec)
    shapes["sample"] = ((1, 8, 16, 16), (2, 8, 16, 16), (1, 8, 16, 16))
    del shapes["timestep"]
    with pytest.raises(ConfigError) as e:
        trt_export.build_engine(path, tmp_path / "x.engine", spec, shapes=shapes)
    assert "no (min, opt, max) shapes for input 'timestep'" in str(e.value)
    assert "input 'sample' axis 0: min 1 <= opt 2 <= max 1 does not hold" in str(e.value)
    dynamic = unet_graph_spec(types.SimpleNamespace(cross_attention_dim=32, out_channels=4), 8, 1, SIZE, SIZE,
                              dynamic=True)
    assert trt_export.profile_shapes(dynamic, batch=(1, 2, 4), height=(8, 16, 32), width=(8, 16, 32))["sample"] == \
        ((1, 8, 8, 8), (2, 8, 16, 16), (4, 8, 32, 32))
    with pytest.raises(ConfigError, match="dynamic axis 'height'"):
        trt_export.profile_shapes(dynamic)
    with pytest.raises(ExportError) as e:  # shapes fine, then the missing package
        trt_export.build_engine(path, tmp_path / "x.engine", spec)
    assert "tensorrt" in e.value.hint


def test_refit_checks_the_input_widths_then_refits_and_keeps_the_weights(graphs, tmp_path, monkeypatch):
    calls = []
    engine_shapes = {"sample": (1, 8, 16, 16), "timestep": (1,), "encoder_hidden_states": (1, 77, 32)}
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(calls, shapes=engine_shapes))
    (tmp_path / "edit.engine").write_bytes(b"ENGINE")
    out = trt_export.refit_engine(tmp_path / "edit.engine", graphs["sr"][0], tmp_path / "sr.engine")
    assert out.read_bytes() == b"REFITTED"
    assert ("refit_from_file", str(graphs["sr"][0])) in calls and ("refit_cuda_engine",) in calls
    assert ("clear", "EXCLUDE_WEIGHTS") in calls
    with pytest.raises(ExportError, match=r"sample: engine \[1, 8, 16, 16\], t2i.onnx \[1, 4, 16, 16\]"):
        trt_export.refit_engine(tmp_path / "edit.engine", graphs["t2i"][0], tmp_path / "t2i.engine")


# ---------------------------------------------------------------------------------------------
# The real TensorRT (skipped where `import tensorrt` fails)
# ---------------------------------------------------------------------------------------------

def _run_engine(engine_bytes, inputs):
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    tensors = {k: torch.from_numpy(v).cuda().contiguous() for k, v in inputs.items()}
    out = torch.empty(tuple(engine.get_tensor_shape("out_sample")), device="cuda", dtype=torch.float32)
    for name, t in tensors.items():
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address("out_sample", out.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.cpu().numpy()


@pytest.mark.tensorrt
def test_engine_builds_and_refits_to_another_task(graphs, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("running an engine needs a CUDA build of torch and a GPU")
    import onnxruntime as ort

    edit_path, spec = graphs["edit"]
    sr_path, _ = graphs["sr"]
    engine = trt_export.build_engine(edit_path, tmp_path / "edit.engine", spec, fp16=False, refit=True,
                                     timing_cache_path=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").stat().st_size > 0
    refitted = trt_export.refit_engine(engine, sr_path, tmp_path / "sr.engine")
    inputs = {k: v.numpy() for k, v in example_inputs(spec, 1, SIZE, SIZE, seed=3, timestep=500.0).items()}
    for onnx_path, engine_path in ((edit_path, engine), (sr_path, refitted)):
        ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
        got = _run_engine(engine_path.read_bytes(), inputs)
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3, onnx_path.name
