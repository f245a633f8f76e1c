"""ONNX export of folded task UNets, with the backbone stored once for all tasks of a package.

Each task graph is traced with PyTorch's TorchScript-based ONNX exporter (static shapes by
default, opset 17 or later). Its weights then go through a :class:`WeightPool`:

* every initializer of at least ``EXTERNAL_MIN_BYTES`` is stored outside the graph
  (ONNX external data), so no graph file ever approaches protobuf's 2 GB limit;
* tensors are addressed by content (dtype, dims, bytes), so a tensor that several task
  graphs hold — the frozen backbone — is written once, to ``shared.weights``; a tensor only
  one task holds (its folded FFNs, task norms, ``conv_in``) goes to ``<task>.weights``;
* each graph references those files by relative path and byte range, so it still loads on
  its own in ONNX Runtime (``InferenceSession("onnx/edit.onnx")``).

Large tensors start on 64 KiB boundaries so that ONNX Runtime can memory-map them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from taskfold._io import write_json_atomic
from taskfold.errors import ExportError

from .graph import GraphSpec

MIN_OPSET = 17
EXTERNAL_MIN_BYTES = 1024
ALIGN_LARGE = 1 << 16  # mmap-friendly start for tensors of at least 1 MiB
ALIGN_SMALL = 64
SHARED_FILE = "shared.weights"
#: Beside each graph: where each of its external initializers lives (name, file, byte range,
#: dtype, shape), so a runtime can map ``shared.weights`` once and hand the same arrays to
#: every task's session without parsing the protobuf (see taskfold.runtime.package).
INDEX_SUFFIX = ".index.json"
INDEX_FORMAT = "taskfold-weight-index"


def trace(module: torch.nn.Module, spec: GraphSpec, example: dict[str, torch.Tensor], path: Path,
          opset: int = MIN_OPSET):
    """Trace ``module`` to ``path`` (weights may land in files beside it) and return its ModelProto, external
    weights not loaded."""
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is below the supported minimum {MIN_OPSET}")
    args = tuple(example[n] for n in spec.input_names)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape checks in diffusers
        torch.onnx.export(module.eval(), args, str(path), input_names=spec.input_names,
                          output_names=spec.output_names, opset_version=opset,
                          dynamic_axes=spec.dynamic_axes() or None, do_constant_folding=True, dynamo=False)
    return onnx.load(str(path), load_external_data=False)  # the weights stay in their files


def optimize(path: Path, out: Path, spec: GraphSpec) -> None:
    """ONNX Runtime's transformer optimiser with its UNet fusions, limited to CPU-runnable ones.

    The UNet preset of the optimiser also emits NhwcConv, GroupNorm, SkipGroupNorm,
    BiasSplitGelu, BiasAdd and packed-QKV attention, which exist only in the CUDA execution
    provider; those are switched off so the graph runs (and is parity-checked) anywhere.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("unet")
    for flag in ("enable_nhwc_conv", "enable_group_norm", "enable_skip_group_norm", "enable_bias_splitgelu",
                 "enable_packed_qkv", "enable_packed_kv", "enable_bias_add"):
        setattr(options, flag, False)
    try:
        opt = optimize_model(str(path), model_type="unet", opt_level=0, use_gpu=False, optimization_options=options)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as e:  # the optimiser's own pattern code
        raise ExportError(f"ONNX Runtime's transformer optimiser failed on the {Path(path).stem!r} graph "
                          f"({type(e).__name__}: {str(e)[:160]}); seen with DTR graphs, whose timestep masks its "
                          "Gelu fusion misreads", hint="export without --optimize") from None
    opt.save_model_to_file(str(out), use_external_data_format=True)


def _tensor_bytes(t, base_dir: Path | None = None) -> bytes:
    """An initializer's bytes: inline, or read from its external-data file under ``base_dir`` (so a graph
    need not be loaded with every weight in memory)."""
    from onnx import TensorProto, numpy_helper

    if t.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        with open(Path(base_dir) / info["location"], "rb") as f:
            f.seek(int(info.get("offset", 0)))
            return f.read(int(info["length"])) if "length" in info else f.read()
    if t.HasField("raw_data") and t.raw_data:
        return t.raw_data
    return np.ascontiguousarray(numpy_helper.to_array(t)).tobytes()


@dataclass
class _Ref:
    graph: int
    initializer: int
    key: str


@dataclass
class WeightPool:
    """Content-addressed staging file for the initializers of several graphs.

    ``add_graph`` moves a graph's large initializers into the pool (the graph proto keeps
    names and dims only); ``finalize`` writes ``shared.weights`` (tensors used by two or
    more graphs) and ``<name>.weights`` (tensors used by one), and points every graph's
    initializers at their byte ranges.
    """

    scratch: Path
    graphs: list = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    index: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (offset, length) in the pool
    users: dict[str, set[int]] = field(default_factory=dict)
    refs: list[_Ref] = field(default_factory=list)

    def __post_init__(self):
        self.pool_path = Path(self.scratch) / "pool.bin"
        self._pool = open(self.pool_path, "wb")

    def add_graph(self, name: str, model, base_dir: Path | None = None) -> None:
        from onnx import TensorProto

        gi = len(self.graphs)
        for ii, t in enumerate(model.graph.initializer):
            data = _tensor_bytes(t, base_dir)  # weights stream from the exporter's files to the pool
            if len(data) < EXTERNAL_MIN_BYTES:
                if t.data_location == TensorProto.EXTERNAL:  # small: back into the graph
                    del t.external_data[:]
                    t.data_location = TensorProto.DEFAULT
                    t.raw_data = data
                continue
            h = hashlib.sha256(data)
            h.update(f"|{t.data_type}|{list(t.dims)}".encode())
            key = h.hexdigest()
            if key not in self.index:
                self.index[key] = (self._pool.tell(), len(data))
                self._pool.write(data)
            self.users.setdefault(key, set()).add(gi)
            self.refs.append(_Ref(gi, ii, key))
            for fld in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(fld)
            t.data_location = TensorProto.EXTERNAL
        self.graphs.append(model)
        self.names.append(name)

    def finalize(self, out_dir: Path) -> dict[str, list[str]]:
        """Write the weight files, graphs and weight indexes into ``out_dir``; return each graph's weight files."""
        import onnx

        self._pool.close()
        out_dir.mkdir(parents=True, exist_ok=True)
        shared = len(self.graphs) > 1
        place: dict[str, tuple[str, int, int]] = {}
        files: dict[str, object] = {}
        with open(self.pool_path, "rb") as pool:
            for key, (off, length) in self.index.items():
                users = self.users[key]
                fname = SHARED_FILE if shared and len(users) > 1 else f"{self.names[min(users)]}.weights"
                if fname not in files:
                    files[fname] = open(out_dir / fname, "wb")
                f = files[fname]
                align = ALIGN_LARGE if length >= (1 << 20) else ALIGN_SMALL
                start = -(-f.tell() // align) * align
                f.write(b"\0" * (start - f.tell()))
                pool.seek(off)
                f.write(pool.read(length))
                place[key] = (fname, start, length)
        for f in files.values():
            f.close()
        os.unlink(self.pool_path)
        used: dict[int, set[str]] = {}
        index: dict[int, list[dict]] = {}
        for ref in self.refs:
            t = self.graphs[ref.graph].graph.initializer[ref.initializer]
            fname, start, length = place[ref.key]
            index.setdefault(ref.graph, []).append(
                {"name": t.name, "file": fname, "offset": start, "length": length, "shape": list(t.dims),
                 "dtype": np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).name})
            del t.external_data[:]
            for k, v in (("location", fname), ("offset", str(start)), ("length", str(length))):
                e = t.external_data.add()
                e.key, e.value = k, v
            used.setdefault(ref.graph, set()).add(fname)
        for gi, (name, model) in enumerate(zip(self.names, self.graphs)):
            write_json_atomic(out_dir / f"{name}{INDEX_SUFFIX}",
                              {"format": INDEX_FORMAT, "schema_version": 1, "initializers": index.get(gi, [])})
            onnx.save_model(model, str(out_dir / f"{name}.onnx"))
        return {name: sorted(used.get(gi, ())) for gi, name in enumerate(self.names)}


@dataclass
class OnnxExport:
    """Per task: the graph file and the weight files it references (relative to the package)."""

    graphs: dict[str, str]
    weights: dict[str, list[str]]
    index: dict[str, str] = field(default_factory=dict)


def export_graphs(modules: dict, spec_of: dict[str, GraphSpec], example_of: dict[str, dict], out_dir: Path,
                  opset: int = MIN_OPSET, optimize_graphs: bool = False, prefix: str = "onnx") -> OnnxExport:
    """Trace ``modules[name]`` for each name, pool their weights, write ``out_dir/<name>.onnx``.

    ``modules`` maps a graph name to a zero-argument callable returning the module, so only
    one folded UNet needs to be in memory at a time.
    """
    out_dir = Path(out_dir)
    scratch = Path(tempfile.mkdtemp(prefix="taskfold-onnx-", dir=out_dir.parent))
    try:
        pool = WeightPool(scratch)
        for name, make in modules.items():
            work = scratch / name
            work.mkdir()
            module = make()
            path = work / "graph.onnx"
            model = trace(module, spec_of[name], example_of[name], path, opset)
            del module
            if optimize_graphs:
                import onnx

                optimize(path, work / "opt.onnx", spec_of[name])
                model = onnx.load(str(work / "opt.onnx"), load_external_data=False)
            pool.add_graph(name, model, base_dir=work)
            shutil.rmtree(work)
        weights = pool.finalize(out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return OnnxExport({n: f"{prefix}/{n}.onnx" for n in modules},
                      {n: [f"{prefix}/{w}" for w in ws] for n, ws in weights.items()},
                      {n: f"{prefix}/{n}{INDEX_SUFFIX}" for n in modules})


def to_ort_format(onnx_path: Path, out_path: Path) -> None:
    """Save a graph in ONNX Runtime's ``.ort`` format (ORT Mobile), with basic optimisations.

    The ``.ort`` flatbuffer embeds its weights (no external data) and is limited to 2 GB,
    so an fp32 SD-sized UNet does not fit; export fp16 for mobile.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out_path)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    try:
        ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types; keep only the first line
        raise ExportError(f"cannot write {out_path.name} in .ort format: {str(e).splitlines()[0]}",
                          hint="the .ort format holds at most 2 GB of weights; try --precision fp16") from None


def ort_runner(path: str | Path, providers: list[str] | None = None):
    """A function ``inputs -> first output`` over an ONNX Runtime session for ``path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])

    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        return sess.run(None, inputs)[0]

    run.session = sess
    return run
