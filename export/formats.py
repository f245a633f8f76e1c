"""One exporter per format, each a function of an :class:`ExportJob` returning the manifest's graph entries.

:data:`EXPORTERS` is the export side of the backend registry (:mod:`taskfold.runtime.backends`):
``taskfold export --formats`` runs the exporters it names, in this order (TensorRT builds its
engines from the ONNX graphs, so ``onnx`` runs first whenever ``tensorrt`` is asked for). Every
graph an exporter writes goes through :meth:`ExportJob.gate` (the parity gate, DESIGN.md
invariant 8) or, where its backend cannot run here, a stated structural check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from taskfold.runtime.backends import COREML

from .parity import ParityResult, check_graph


@dataclass
class ExportJob:
    """What every exporter of one package works from: the model, config, tasks, shapes and the output folder."""

    mtu: object
    cfg: object            # ExportConfig
    tasks: list[str]
    tmp: Path              # the package being written
    h: int                 # UNet sample height and width
    w: int
    specs: dict            # task -> GraphSpec
    examples: dict         # task -> example inputs
    timesteps: list[float]
    log: Callable[[str], None] = print
    results: list[ParityResult] = field(default_factory=list)
    #: the adapters layout's ONNX entries (TensorRT's shared engine takes the same task files)
    onnx_adapters: list[dict] = field(default_factory=list)
    #: what sits beside the model (:mod:`taskfold.upcycle.bundle`): text encoder, codec, noise schedule
    text_encoder: object = None
    codec: object = None
    scheduler_config: dict = field(default_factory=dict)

    def gate(self, run, task: str, backend: str, precision: str, spec=None, tolerance=None) -> ParityResult:
        """The parity gate for one graph (``run(inputs) -> output``) against the MTU model; recorded."""
        res = check_graph(run, self.mtu, task, spec or self.specs[task], self.cfg.batch, self.h, self.w, backend,
                          precision, self.timesteps, self.cfg.parity_seed, tolerance=tolerance)
        self.results.append(res)
        return res

    def folded_module(self, task: str):
        """A maker of the task's folded UNet as a graph module at the export precision."""
        import torch

        from .fold import fold
        from .graph import UNetGraph

        def make():
            unet = fold(self.mtu, task)
            return UNetGraph(unet if self.cfg.precision == "fp32" else unet.to(torch.float16)).eval()
        return make


def export_diffusers(job: ExportJob) -> list[dict]:
    """Per task a stock diffusers pipeline folder (:mod:`.pipelines`), or where none fits the folded UNet's
    folder (``save_pretrained``) with the reason in the manifest."""
    from .fold import fold
    from .pipelines import why_no_pipeline, write_pipeline

    out = []
    base = job.mtu.base_info.source if job.mtu.base_info.kind == "diffusers" else None
    for t in job.tasks:
        unet, rel = fold(job.mtu, t), f"diffusers/{t}"
        why = why_no_pipeline(job.mtu, t, job.text_encoder, job.codec)
        entry = {"task": t, "format": "diffusers", "path": rel, "precision": "fp32"}
        if why is None:
            entry["pipeline"] = write_pipeline(job.tmp / rel, t, unet, job.text_encoder, job.codec,
                                               job.scheduler_config, base)
        else:
            unet.save_pretrained(job.tmp / rel / "unet", safe_serialization=True)
            entry |= {"pipeline": None, "note": f"UNet folder only: {why}"}
        out.append(entry)
        job.log(f"diffusers {t}: " + (f"{entry['pipeline']} folder" if why is None else entry["note"]))
    return out


def export_onnx(job: ExportJob) -> list[dict]:
    """One ONNX graph per task, the backbone stored once (:mod:`.onnx`); FLOPs counted; ``.ort`` too if asked."""
    from .flops import onnx_flops
    from .onnx import export_graphs, ort_runner, to_ort_format

    cfg = job.cfg
    exported = export_graphs({t: job.folded_module(t) for t in job.tasks}, job.specs, job.examples, job.tmp / "onnx",
                             cfg.opset, optimize_graphs=cfg.optimize)
    sizes = {"batch": cfg.batch, "height": job.h, "width": job.w}
    out = []
    for t in job.tasks:
        path = job.tmp / exported.graphs[t]
        res = job.gate(ort_runner(path), t, "onnx", cfg.precision)
        flops = onnx_flops(path, {s.name: [sizes.get(d, d) for d in s.shape] for s in job.specs[t].inputs})
        job.log(f"onnx {t}: parity {res.relative_error:.1e} (tolerance {res.tolerance:.0e}), "
                f"{flops.total / 1e9:.3f} GFLOPs")
        common = {"task": t, "precision": cfg.precision, **job.specs[t].to_dict(), "flops": flops.to_dict()}
        out.append(common | {"format": "onnx", "path": exported.graphs[t], "opset": cfg.opset,
                             "external_data": exported.weights[t], "weight_index": exported.index[t],
                             "parity": res.to_dict() | {"provider": "CPUExecutionProvider"}})
        if cfg.ort_mobile:
            rel = f"ort/{t}.ort"
            (job.tmp / "ort").mkdir(exist_ok=True)
            to_ort_format(path, job.tmp / rel)
            res = job.gate(ort_runner(job.tmp / rel), t, "onnx", cfg.precision)
            out.append(common | {"format": "ort", "path": rel,
                                 "parity": res.to_dict() | {"provider": "CPUExecutionProvider"}})
            job.log(f"ort {t}: parity {res.relative_error:.1e}")
    return out


def export_onnx_adapters(job: ExportJob) -> list[dict]:
    """The adapters layout (:mod:`.adapters`): one shared UNet graph whose task tensors are required inputs,
    and one ``adapters/<task>.safetensors`` per task.

    Every task is gated as the runtime runs it: its file read back by the runtime's parser and fed as
    inputs, exactly as the graphs layout's task graphs are gated.
    """
    import numpy as np
    import torch

    from taskfold._io import sha256_file

    from .adapters import (GRAPH_NAME, TASK_FILE_SUFFIX, AdapterUNetGraph, adapter_graph_spec, backbone_id,
                           task_tensor_names, task_tensors, widest, write_task_file)
    from .flops import onnx_flops
    from .graph import example_inputs
    from .onnx import export_graphs

    cfg, mtu = job.cfg, job.mtu
    dtype = "float16" if cfg.precision == "fp16" else "float32"
    np_dtype = np.float16 if dtype == "float16" else np.float32
    spec = adapter_graph_spec(mtu, cfg.batch, job.h, job.w, cfg.text_len, dtype, cfg.dynamic)
    values = {t: {k: v.numpy().astype(np_dtype) for k, v in task_tensors(mtu, t).items()} for t in job.tasks}
    example = example_inputs(spec, cfg.batch, job.h, job.w, seed=0)
    example.update({k: torch.from_numpy(v) for k, v in values[job.tasks[0]].items()})

    def make():  # fp16: a half copy (the graph shares its tensors with the model, which the gate still needs)
        import copy

        return AdapterUNetGraph(mtu) if dtype == "float32" else AdapterUNetGraph(copy.deepcopy(mtu)).half()
    exported = export_graphs({GRAPH_NAME: make}, {GRAPH_NAME: spec}, {GRAPH_NAME: example}, job.tmp / "onnx",
                             cfg.opset, optimize_graphs=cfg.optimize)
    rel = exported.graphs[GRAPH_NAME]
    backbone = backbone_id(sha256_file(job.tmp / rel))
    (job.tmp / "adapters").mkdir()
    names = task_tensor_names(mtu)
    listed = [{"name": n, "shape": list(values[job.tasks[0]][n].shape), "dtype": dtype} for n in names]
    sizes = {"batch": cfg.batch, "height": job.h, "width": job.w}
    flops = onnx_flops(job.tmp / rel, {s.name: [sizes.get(d, d) for d in s.shape] for s in spec.inputs[:3]},
                       elementwise_inputs=frozenset(n for n in names if n.endswith(".scale")))
    unet_io = _unet_io(spec)
    run = _task_tensor_runner(job.tmp / rel, widest(mtu))
    out = []
    for t in job.tasks:
        task_file = f"adapters/{t}{TASK_FILE_SUFFIX}"
        write_task_file(values[t], job.tmp / task_file, t, backbone)
        fed = read_task_file(job.tmp / task_file, t, backbone, listed)
        res = job.gate(lambda x, fed=fed: run(x, fed), t, "onnx", cfg.precision)
        job.log(f"onnx (adapters) {t}: parity {res.relative_error:.1e} (tolerance {res.tolerance:.0e}), "
                f"task tensors {(job.tmp / task_file).stat().st_size / 1024:.0f} KiB")
        out.append({"task": t, "format": "onnx", "layout": "adapters", "path": rel, "adapter": task_file,
                    "backbone_id": backbone, "precision": cfg.precision, "opset": cfg.opset,
                    "external_data": exported.weights[GRAPH_NAME], "weight_index": exported.index[GRAPH_NAME],
                    **unet_io, "task_channels": mtu.task_in_channels(t), "task_tensors": listed,
                    "flops": flops.to_dict(), "parity": res.to_dict() | {"provider": "CPUExecutionProvider",
                                                                         "task_tensors": "inputs"}})
    job.onnx_adapters = out
    return out


def read_task_file(path: Path, task: str, backbone: int, listed: list[dict]) -> dict:
    """A task file as the runtime reads it (:func:`taskfold.runtime.safetensors_io.read_tensors`)."""
    from taskfold.runtime.package import task_file_metadata
    from taskfold.runtime.safetensors_io import read_tensors

    return read_tensors(Path(path).read_bytes(), Path(path).name, listed, task_file_metadata(task, backbone))


def _unet_io(spec) -> dict:
    """The manifest's ``inputs``/``outputs`` of the shared graph: the UNet's (the task tensors are listed apart)."""
    d = spec.to_dict()
    return {"inputs": d["inputs"][:3], "outputs": d["outputs"]}


def _task_tensor_runner(graph, channels: int):
    """``(inputs, task tensors) -> output`` of the shared graph in one session, the sample zero-padded to
    ``channels``, the task tensors fed as inputs."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])

    def run(inputs, tensors):
        x = inputs["sample"]
        pad = np.zeros((x.shape[0], channels - x.shape[1], *x.shape[2:]), x.dtype)
        return sess.run(None, dict(inputs, sample=np.concatenate([x, pad], 1), **tensors))[0]
    run.session = sess
    return run


def export_coreml_layouts(job: ExportJob) -> list[dict]:
    """CoreML in each asked-for layout: per-task ML programs (``graphs``), and/or one multifunction package of
    the shared-graph form (``adapters``: one function per task, the experts stored once)."""
    out = export_coreml(job) if "graphs" in job.cfg.layout else []
    return out + (export_coreml_adapters(job) if "adapters" in job.cfg.layout else [])


def export_coreml_adapters(job: ExportJob) -> list[dict]:
    """The adapters layout for Core ML: each task's shared-graph form (its task tensors constant) converted and
    saved as one function of ``coreml/shared.mlpackage``; constants equal across functions — every expert,
    the whole backbone — are stored once. Each function passes the structural check against the first one;
    parity where Core ML runs (macOS)."""
    import shutil
    import sys
    import tempfile

    from . import coreml
    from .adapters import AdapterUNetGraph, widest

    cfg, mtu = job.cfg, job.mtu
    spec = _coreml_spec(job, widest(mtu))
    scratch = Path(tempfile.mkdtemp(prefix=".coreml-adapters-", dir=job.tmp))
    paths, out, reference_ops = {}, [], None
    on_mac = COREML.can_run_here()
    try:
        for t in job.tasks:
            _, model = _coreml_convert(job, None, module=None, graph=AdapterUNetGraph(mtu, fixed=t), spec=spec)
            ops = coreml.op_histogram(model)
            reference_ops = reference_ops or ops
            problems = coreml.structural_problems(model, spec, reference_ops)
            if problems:
                from taskfold.errors import ParityError

                raise ParityError(f"CoreML shared-graph function of task {t!r} differs from the first task's: "
                                  + "; ".join(problems))
            if cfg.palettize:
                model = coreml.palettize(model, cfg.palettize)
            paths[t] = scratch / f"{t}.mlpackage"
            coreml.save(model, paths[t])
        rel = "coreml/shared.mlpackage"
        coreml.save_multifunction(paths, job.tmp / rel, default_function=job.tasks[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for t in job.tasks:
        entry = {"task": t, "format": "coreml", "layout": "adapters", "path": rel, "function": t,
                 "task_channels": mtu.task_in_channels(t), "precision": cfg.coreml_precision,
                 "palettize_bits": cfg.palettize, **spec.to_dict()}
        if on_mac:
            res = job.gate(_padded_runner(lambda x, p=job.tmp / rel, f=t: coreml.predict(p, x, f), widest(mtu)), t,
                           "coreml", cfg.coreml_precision, spec=_coreml_spec(job, mtu.task_in_channels(t)),
                           tolerance=0.1 if cfg.palettize else None)
            entry["parity"] = res.to_dict() | {"compute_units": "cpu_only"}
        else:
            entry["parity"] = {"status": "structural", "checked_on": sys.platform,
                               "checks": "inputs/outputs as declared; op histogram == the first task's function",
                               "reference_ops": sum(reference_ops.values()), "problems": []}
        out.append(entry)
    job.log(f"coreml (adapters): one package, {len(job.tasks)} functions, "
            f"{coreml.package_bytes(job.tmp / rel) / 1e6:.1f} MB")
    return out


def _padded_runner(run, channels: int):
    """``run`` fed the sample zero-padded to ``channels`` (a task narrower than the shared graph)."""
    import numpy as np

    def call(inputs):
        x = inputs["sample"]
        pad = np.zeros((x.shape[0], channels - x.shape[1], *x.shape[2:]), x.dtype)
        return run(dict(inputs, sample=np.concatenate([x, pad], 1)))
    return call


def export_coreml(job: ExportJob) -> list[dict]:
    """ML Programs through torch.export; parity where Core ML runs (macOS), structure everywhere."""
    import shutil
    import sys

    from . import coreml

    cfg = job.cfg
    reference_ops = _coreml_reference_ops(job)
    out, paths = [], {}
    on_mac = COREML.can_run_here()  # Core ML predicts on macOS only; elsewhere the structural check
    for t in job.tasks:
        spec, model = _coreml_convert(job, t)
        problems = coreml.structural_problems(model, spec, reference_ops)
        if problems:
            from taskfold.errors import ParityError

            raise ParityError(f"CoreML graph of task {t!r} fails the structural check: " + "; ".join(problems))
        if cfg.palettize:
            model = coreml.palettize(model, cfg.palettize)
        rel = f"coreml/{t}.mlpackage"
        coreml.save(model, job.tmp / rel)
        paths[t] = job.tmp / rel
        entry = {"task": t, "format": "coreml", "path": rel, "precision": cfg.coreml_precision,
                 "palettize_bits": cfg.palettize, **spec.to_dict()}
        if on_mac:
            res = job.gate(lambda x, p=job.tmp / rel: coreml.predict(p, x), t, "coreml", cfg.coreml_precision,
                           spec=spec, tolerance=0.1 if cfg.palettize else None)
            entry["parity"] = res.to_dict() | {"compute_units": "cpu_only"}
        else:
            entry["parity"] = {"status": "structural", "checked_on": sys.platform,
                               "checks": "inputs/outputs as declared; op histogram == converted base UNet",
                               "reference_ops": sum(reference_ops.values()), "problems": []}
        out.append(entry)
        job.log(f"coreml {t}: " + (f"parity {job.results[-1].relative_error:.1e}" if on_mac else "structure ok"))
    if cfg.coreml_multifunction:
        coreml.save_multifunction(paths, job.tmp / "coreml" / "tasks.mlpackage", default_function=job.tasks[0])
        for p in paths.values():
            shutil.rmtree(p)
        for e in out:
            e["path"], e["function"] = "coreml/tasks.mlpackage", e["task"]
        job.log(f"coreml: one multifunction package with {len(paths)} functions")
    return out


def _coreml_spec(job: ExportJob, channels: int):
    """Core ML graphs are static and keep float32 inputs/outputs."""
    from .graph import unet_graph_spec

    return unet_graph_spec(job.mtu.unet.config, channels, job.cfg.batch, job.h, job.w, job.cfg.text_len, "float32",
                           False)


def _coreml_convert(job: ExportJob, task: str | None, module=None, graph=None, spec=None):
    """``(spec, ML program)`` of a task's folded UNet (or of ``module`` with the base's channels, or of a
    ready ``graph`` module with its ``spec``)."""
    import torch

    from . import coreml
    from .fold import fold
    from .graph import UNetGraph, example_inputs

    if spec is None:
        spec = _coreml_spec(job, job.mtu.latent_channels if task is None else job.mtu.task_in_channels(task))
    if graph is None:
        graph = UNetGraph(module if module is not None else fold(job.mtu, task))
    graph = graph.eval()
    with torch.no_grad():
        model = coreml.convert(graph, spec, example_inputs(spec, job.cfg.batch, job.h, job.w), None,
                               precision=job.cfg.coreml_precision)
    return spec, model


def _coreml_reference_ops(job: ExportJob):
    """The op histogram of the structural check's reference: the base architecture, converted the same
    way, carrying the first task's folded weights (so coremltools' constant folding treats both alike)."""
    from . import coreml
    from .fold import base_twin, fold

    base = base_twin(fold(job.mtu, job.tasks[0]), job.mtu.latent_channels)
    return coreml.op_histogram(_coreml_convert(job, None, module=base)[1])


def export_tensorrt_layouts(job: ExportJob) -> list[dict]:
    """TensorRT in each asked-for layout: an engine per task (``graphs``), and/or one engine of the shared graph
    whose task tensors are engine inputs (``adapters``)."""
    out = export_tensorrt(job) if "graphs" in job.cfg.layout else []
    return out + (export_tensorrt_adapters(job) if "adapters" in job.cfg.layout else [])


def export_tensorrt_adapters(job: ExportJob) -> list[dict]:
    """One engine built from the shared ONNX graph, its task tensors network inputs as in ONNX, fed per call from
    the task's ``adapters/<task>.safetensors`` (written by the ONNX export, read back as the runtime reads it)."""
    from . import tensorrt as trt_export
    from .adapters import GRAPH_NAME, adapter_graph_spec, widest

    cfg, mtu = job.cfg, job.mtu
    shared = job.tmp / "onnx" / f"{GRAPH_NAME}.onnx"
    onnx_entries = {g["task"]: g for g in job.onnx_adapters}
    rel = "tensorrt/shared.plan"
    (job.tmp / "tensorrt").mkdir(exist_ok=True)
    spec = adapter_graph_spec(mtu, cfg.batch, job.h, job.w, cfg.text_len, "float32", False)
    trt_export.build_engine(shared, job.tmp / rel, spec, fp16=True,
                            timing_cache_path=job.tmp / "tensorrt" / "timing.cache")
    precision = "fp16" if cfg.precision == "fp16" else "fp32"
    out = []
    for t in job.tasks:
        g = onnx_entries[t]
        values = read_task_file(job.tmp / g["adapter"], t, g["backbone_id"], g["task_tensors"])
        run = trt_export.engine_runner(job.tmp / rel)
        res = job.gate(_padded_runner(lambda x, v=values, r=run: r(dict(x, **v)), widest(mtu)), t, "tensorrt", "fp16")
        out.append({"task": t, "format": "tensorrt", "layout": "adapters", "path": rel, "adapter": g["adapter"],
                    "backbone_id": g["backbone_id"], "task_tensors": g["task_tensors"],
                    "task_channels": mtu.task_in_channels(t), "precision": precision, **_unet_io(spec),
                    "parity": res.to_dict()})
        job.log(f"tensorrt (adapters) {t}: parity {res.relative_error:.1e}")
    return out


def export_tensorrt(job: ExportJob) -> list[dict]:
    """Engines built from the package's ONNX graphs (fp16 unless fp32 was asked for); with ``trt_refit``
    one refittable engine per input width, refit with each task's weights."""
    from . import tensorrt as trt_export

    out = []
    (job.tmp / "tensorrt").mkdir(exist_ok=True)
    cache = job.tmp / "tensorrt" / "timing.cache"
    engines: dict[int, str] = {}
    precision = "fp16" if job.cfg.precision == "fp16" else "fp32"
    for t in job.tasks:
        onnx_path = job.tmp / "onnx" / f"{t}.onnx"
        channels = job.mtu.task_in_channels(t)
        rel = f"tensorrt/{t}.plan"
        if job.cfg.trt_refit:
            engine = f"tensorrt/refit-{channels}ch.plan"
            if channels not in engines:
                trt_export.build_engine(onnx_path, job.tmp / engine, job.specs[t], fp16=True, timing_cache_path=cache,
                                        refit=True)
                engines[channels] = engine
            trt_export.refit_engine(job.tmp / engine, onnx_path, job.tmp / rel)
            entry = {"task": t, "format": "tensorrt", "path": rel, "refittable_engine": engine,
                     "refit_from": f"onnx/{t}.onnx"}
        else:
            trt_export.build_engine(onnx_path, job.tmp / rel, job.specs[t], fp16=True, timing_cache_path=cache)
            entry = {"task": t, "format": "tensorrt", "path": rel}
        res = job.gate(trt_export.engine_runner(job.tmp / rel), t, "tensorrt", "fp16")
        out.append(entry | {"precision": precision, **job.specs[t].to_dict(), "parity": res.to_dict()})
        job.log(f"tensorrt {t}: parity {res.relative_error:.1e}")
    return out


def export_onnx_layouts(job: ExportJob) -> list[dict]:
    """ONNX in each asked-for layout: one folded graph per task (``graphs``), or one shared graph and a
    task-tensors file per task (``adapters``)."""
    out = export_onnx(job) if "graphs" in job.cfg.layout else []  # TensorRT builds from these graphs too
    return out + (export_onnx_adapters(job) if "adapters" in job.cfg.layout else [])


#: format -> exporter, in the order they run.
EXPORTERS: dict[str, Callable[[ExportJob], list[dict]]] = {
    "diffusers": export_diffusers, "onnx": export_onnx_layouts, "coreml": export_coreml_layouts,
    "tensorrt": export_tensorrt_layouts}
