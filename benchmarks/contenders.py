"""What ``taskfold bench`` times, per engine: each builder returns :class:`~.bench.Contender` objects
whose ``call(round)`` runs one UNet call to completion on inputs prepared in advance.

* :func:`onnx_contenders` — the base, folded and unfolded graphs in ONNX Runtime, opened the
  way the runtime opens a package (:func:`taskfold.runtime.package.ort_session`); on CUDA the
  inputs and output stay on the GPU (I/O binding).
* :func:`tensorrt_contenders` — engines built from the same ONNX graphs, buffers on the GPU.
* :func:`coreml_contenders` — the package's CoreML graphs and the base converted alike (macOS).
* :func:`eager_contenders` — the base UNet and the MTU model as PyTorch modules (CUDA graphs
  on a GPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bench import BenchConfig, Contender, Plan, _unfolded_feed, build_models, conv_in_flops


def _unet_config(plan: Plan):
    """The UNet config as attributes (what the graph-spec helpers read)."""
    from types import SimpleNamespace

    return SimpleNamespace(**plan.manifest["model"]["unet_config"])


def _spec(d: dict):
    from taskfold.export.graph import GraphSpec, TensorSpec

    return GraphSpec(tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in d["inputs"]),
                     tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in d["outputs"]))


def _numpy_inputs(spec, batch, h, w, seed=7) -> dict:
    from taskfold.export.graph import example_inputs

    return {k: v.numpy() for k, v in example_inputs(spec, batch, h, w, seed=seed, timestep=500.0).items()}


def _file_bytes(root: Path, rels: list[str]) -> int:
    return sum((root / r).stat().st_size for r in rels)


def _graph_items(plan: Plan) -> list[dict]:
    """Every ONNX graph to time: name, role, task, root folder, graph path, weight index, spec, feeds, FLOPs."""
    from taskfold.export.graph import unet_graph_spec

    s = plan.manifest["sample"]
    b, h, w = s["batch"], s["height"], s["width"]
    config = _unet_config(plan)
    latent = int(config.out_channels)
    work = Path(plan.reference).parent
    ref = plan.reference_graphs["base"]
    items = [{"name": "base", "role": "base", "task": None, "root": work, "path": ref["path"], "index": ref["index"],
              "weights": ref["weights"], "spec": _spec(ref["spec"]), "parity": plan.parity.get("base"),
              "conv_in": conv_in_flops(config, latent, b, h, w)}]
    items[0]["feeds"] = [_numpy_inputs(items[0]["spec"], b, h, w)]
    items.append(dict(items[0], name="base (plain ORT)", role="base-plain"))
    graphs = {g["task"]: g for g in plan.manifest["graphs"] if g["format"] == "onnx"
              and g.get("layout", "graphs") == "graphs"}
    for task in plan.tasks:
        g = graphs.get(task)
        if g is None:
            continue
        channels = plan.manifest["tasks"][task]["in_channels"]
        spec = unet_graph_spec(config, channels, b, h, w, s["text_len"], g["inputs"][0]["dtype"])
        items.append({"name": task, "role": "folded", "task": task, "root": Path(plan.package), "path": g["path"],
                      "index": g.get("weight_index"), "weights": g.get("external_data", []), "spec": spec,
                      "parity": g.get("parity"), "conv_in": conv_in_flops(config, channels, b, h, w),
                      "feeds": [_numpy_inputs(spec, b, h, w)]})
    shared = {g["task"]: g for g in plan.manifest["graphs"] if g.get("layout") == "adapters" and g["format"] == "onnx"}
    for task in plan.tasks:
        if task in shared:
            g = shared[task]
            spec = unet_graph_spec(config, g["task_channels"], b, h, w, s["text_len"], g["inputs"][0]["dtype"])
            items.append({"name": f"{task} (adapter)", "role": "adapters", "task": task, "root": Path(plan.package),
                          "path": g["path"], "index": g.get("weight_index"), "adapter": g["adapter"],
                          "weights": g.get("external_data", []) + [g["adapter"]], "spec": spec,
                          "parity": g.get("parity"), "feeds": [_numpy_inputs(spec, b, h, w)],
                          "conv_in": conv_in_flops(config, g["inputs"][0]["shape"][1], b, h, w),
                          "channels": g["inputs"][0]["shape"][1]})
    if "unfolded" in plan.reference_graphs:
        ref = plan.reference_graphs["unfolded"]
        spec = _spec(ref["spec"])
        widest = spec.inputs[0].shape[1]
        from taskfold.upcycle import UpcycleConfig

        every_task = [t.in_channels(latent) for t in UpcycleConfig.from_stored(plan.manifest["model"]["upcycle"]).task_specs]
        feeds = []
        for task in plan.tasks:  # each round drives the graph with the next task
            tspec = unet_graph_spec(config, plan.manifest["tasks"][task]["in_channels"], b, h, w, s["text_len"],
                                    spec.inputs[0].dtype)
            feeds.append(_unfolded_feed(_numpy_inputs(tspec, b, h, w), widest, plan.task_index[task]))
        items.append({"name": "unfolded", "role": "unfolded", "task": None, "root": work, "path": ref["path"],
                      "index": ref["index"], "weights": ref["weights"], "spec": spec,
                      "parity": plan.parity.get("unfolded"), "feeds": feeds,
                      "conv_in": sum(conv_in_flops(config, c, b, h, w) for c in every_task)})
    return items


def _onnx_caller(sess, feed: dict, provider: str):
    """``call()`` running ``sess`` once on ``feed``; on CUDA the inputs stay on the GPU (I/O binding)."""
    if provider != "cuda":
        out = [sess.get_outputs()[0].name]
        return lambda: sess.run(out, feed)
    import onnxruntime as ort

    binding = sess.io_binding()
    keep = []
    for name, value in feed.items():
        v = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), "cuda", 0)
        keep.append(v)
        binding.bind_ortvalue_input(name, v)
    binding.bind_output(sess.get_outputs()[0].name, "cuda")

    def call():
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
    call.keep = keep  # the device inputs live as long as the call
    return call


def _cycle(calls):
    return lambda r: calls[r % len(calls)]()


def onnx_contenders(cfg: BenchConfig, plan: Plan, roles=("base", "base-plain", "folded", "adapters", "unfolded"),
                    ) -> list[Contender]:
    """The base, folded, shared-graph (adapters) and unfolded graphs in ONNX Runtime, opened as the runtime opens
    them, and the base graph opened plainly (``ORT_ENABLE_ALL``, pre-packed: what a user exporting it alone gets)."""
    from taskfold.export.flops import onnx_flops
    from taskfold.runtime.package import WeightStore, load_task_tensors, ort_session
    from taskfold.runtime.reader import PackageReader, local_weight_records

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cfg.provider == "cuda" \
        else ["CPUExecutionProvider"]
    stores: dict[Path, object] = {}
    shared: dict[str, object] = {}
    package = PackageReader(plan.package, verify=False)  # verified when the plan was made
    out = []
    for it in [it for it in _graph_items(plan) if it["role"] in roles]:
        store = stores.setdefault(it["root"], WeightStore()) if cfg.share_weights and it["role"] in (
            "base", "folded", "unfolded") else None
        if it["role"] == "adapters":  # one session for every task, each call fed its task's tensors as inputs
            g = next(g for g in plan.manifest["graphs"] if g.get("adapter") == it["adapter"] and g["format"] == "onnx")
            if it["path"] not in shared:
                shared[it["path"]] = ort_session(package.path(it["path"]), providers=providers, threads=cfg.threads)
            sess = shared[it["path"]]
            values = load_task_tensors(package, g)
            feeds = [dict(_padded(f, it["channels"]), **values) for f in it["feeds"]]
        else:
            if it["role"] == "folded":  # the package's own graph: through the package reader
                path = package.path(it["path"])
                weights = package.weight_records(it["index"], it["path"]) if store is not None and it["index"] \
                    else None
            else:  # a reference graph this bench exported itself
                path = it["root"] / it["path"]
                weights = local_weight_records(it["root"], it["index"], it["path"]) if store is not None else None
            sess = ort_session(path, providers=providers, threads=cfg.threads, weights=weights, store=store)
            feeds = it["feeds"]
        name = "base (plain ORT, adapters process)" if it["role"] == "base-plain" and "folded" not in roles \
            else it["name"]
        c = Contender(name, it["role"], f"onnxruntime {cfg.provider}",
                      _cycle([_onnx_caller(sess, f, cfg.provider) for f in feeds]),
                      onnx_flops(it["root"] / it["path"]).total, "onnx graph", it["conv_in"], task=it["task"],
                      graph_bytes=_file_bytes(it["root"], [it["path"], *it["weights"]]), parity=it["parity"])
        # sessions read the mapped weights in place: the stores must outlive the call
        c.keep = (stores, sess)
        if it["role"] == "adapters":
            g = next(g for g in plan.manifest["graphs"] if g.get("adapter") == it["adapter"] and g["format"] == "onnx")
            c.elementwise_flops = g["flops"]["by_op"].get("Mul (elementwise)")
        out.append(c)
    return out


def _padded(feed: dict, channels: int) -> dict:
    x = feed["sample"]
    pad = np.zeros((x.shape[0], channels - x.shape[1], *x.shape[2:]), x.dtype)
    return dict(feed, sample=np.concatenate([x, pad], 1))


def switch_costs(contenders: list[Contender], rounds: int) -> dict | None:
    """The shared graph's call time right after a task switch against a repeated call of the same task.

    Per round: call task A once (untimed), time A again (repeated), then time B (after a switch),
    cycling A, B through the tasks. Medians in seconds.
    """
    adapters = [c for c in contenders if c.role == "adapters"]
    if len(adapters) < 2:
        return None
    import time

    repeated, switched = [], []
    for r in range(max(rounds, 3)):
        a, b = adapters[r % len(adapters)], adapters[(r + 1) % len(adapters)]
        a.call(0)
        t = time.perf_counter()
        a.call(0)
        repeated.append(time.perf_counter() - t)
        t = time.perf_counter()
        b.call(0)
        switched.append(time.perf_counter() - t)
    return {"repeated_s": float(np.median(repeated)), "after_switch_s": float(np.median(switched)),
            "ratio": float(np.median(np.asarray(switched) / np.asarray(repeated))), "rounds": len(repeated),
            "repeated_times_s": repeated, "after_switch_times_s": switched}


def tensorrt_contenders(cfg: BenchConfig, plan: Plan) -> list[Contender]:
    """Engines built here from the same ONNX graphs (fp16, one profile), run with inputs kept on the GPU."""
    from taskfold.export import tensorrt as trt_export
    from taskfold.export.flops import onnx_flops

    work = Path(plan.reference).parent
    cache = work / "tensorrt" / "timing.cache"
    out = []
    for it in _graph_items(plan):
        plan_path = work / "tensorrt" / f"{it['name']}.plan"
        trt_export.build_engine(it["root"] / it["path"], plan_path, it["spec"], fp16=True, timing_cache_path=cache)
        calls = [_device_engine(plan_path, f) for f in it["feeds"]]
        out.append(Contender(it["name"], it["role"], "tensorrt fp16", _cycle(calls),
                             onnx_flops(it["root"] / it["path"]).total, "onnx graph the engine was built from",
                             it["conv_in"], task=it["task"], graph_bytes=plan_path.stat().st_size,
                             parity=it["parity"]))
    return out


def _device_engine(plan: Path, feed: dict):
    """``call()`` executing a TensorRT engine on inputs already on the GPU (no host copies in the timing)."""
    import torch

    from taskfold.export.tensorrt import _tensorrt

    trt = _tensorrt()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT64: torch.int64,
              trt.DataType.INT32: torch.int32}
    buffers = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = dtypes[engine.get_tensor_dtype(name)]
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            t = torch.as_tensor(np.ascontiguousarray(feed[name])).to("cuda", dtype)
            context.set_input_shape(name, tuple(t.shape))
        else:
            t = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
        context.set_tensor_address(name, t.data_ptr())
        buffers.append(t)
    stream = torch.cuda.Stream()

    def call():
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
    call.keep = buffers
    return call


def coreml_contenders(cfg: BenchConfig, plan: Plan, work: Path) -> list[Contender]:
    """The package's CoreML task graphs and the base converted the same way (macOS only). The unfolded
    graph is measured through ONNX; FLOPs are PyTorch's count of the module each graph came from."""
    import torch

    from taskfold.export import coreml
    from taskfold.export.flops import torch_flops
    from taskfold.export.fold import fold
    from taskfold.export.graph import UNetGraph, example_inputs, unet_graph_spec

    base, mtu, _ = build_models(cfg, plan.manifest)
    s = plan.manifest["sample"]
    b, h, w = s["batch"], s["height"], s["width"]
    graphs = {g["task"]: g for g in plan.manifest["graphs"] if g["format"] == "coreml"}
    out = []
    for task in [None, *plan.tasks]:
        channels = mtu.latent_channels if task is None else plan.manifest["tasks"][task]["in_channels"]
        spec = unet_graph_spec(base.config, channels, b, h, w, s["text_len"], "float32")
        module = UNetGraph(base if task is None else fold(mtu, task)).eval()
        example = example_inputs(spec, b, h, w, seed=7, timestep=500.0)
        if task is None:
            path, fn = coreml.save(coreml.convert(module, spec, example, None, precision="fp16"),
                                   work / "coreml" / "base.mlpackage"), None
        else:
            path, fn = Path(plan.package) / graphs[task]["path"], graphs[task].get("function")
        model = coreml.load(path, "all", fn)
        feed = {k: v.numpy() for k, v in example.items()}
        with torch.inference_mode():
            flops = torch_flops(module, *example.values())
        out.append(Contender(task or "base", "folded" if task else "base", "coreml (all compute units)",
                             lambda r, m=model, f=feed: m.predict(f), flops, "torch counter (no SDPA)",
                             conv_in_flops(base.config, channels, b, h, w), task=task))
    return out


def eager_contenders(cfg: BenchConfig, plan: Plan, base, mtu) -> list[Contender]:
    """The base UNet and the unfolded MTU model (from :func:`build_models`, already on the device) as
    PyTorch modules, replayed as CUDA graphs on a GPU."""
    import torch

    from taskfold.export.flops import torch_flops
    from taskfold.export.graph import MTUTaskGraph, UNetGraph, example_inputs, unet_graph_spec

    s = plan.manifest["sample"]
    b, h, w = s["batch"], s["height"], s["width"]
    device = "cuda" if cfg.provider == "cuda" else "cpu"
    dtype = torch.float16 if cfg.resolved_precision == "fp16" else torch.float32
    engine = "pytorch eager + CUDA graphs" if device == "cuda" else "pytorch eager cpu"

    def inputs_for(channels):
        spec = unet_graph_spec(base.config, channels, b, h, w, s["text_len"], "float32")
        return [v.to(device, dtype if v.is_floating_point() and k != "timestep" else v.dtype)
                for k, v in example_inputs(spec, b, h, w, seed=7, timestep=500.0).items()]

    def weight_bytes(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    base_mod, base_in = UNetGraph(base).eval(), inputs_for(mtu.latent_channels)
    with torch.inference_mode():
        base_flops = torch_flops(base_mod, *base_in)
    out = [Contender("eager base", "eager-base", engine, _cycle([_torch_caller(base_mod, base_in, device)]),
                     base_flops, "torch counter (no SDPA on CPU)", conv_in_flops(base.config, mtu.latent_channels, b,
                                                                                  h, w), graph_bytes=weight_bytes(base))]
    calls, flops = [], []
    for task in plan.tasks:
        mod, ins = MTUTaskGraph(mtu, task).eval(), inputs_for(mtu.task_in_channels(task))
        calls.append(_torch_caller(mod, ins, device))
        with torch.inference_mode():
            flops.append(torch_flops(mod, *ins))
    out.append(Contender("eager unfolded", "eager-unfolded", engine, _cycle(calls), int(np.median(flops)),
                         "torch counter (no SDPA on CPU)",
                         conv_in_flops(base.config, mtu.task_in_channels(plan.tasks[0]), b, h, w),
                         graph_bytes=weight_bytes(mtu)))
    return out


def _torch_caller(module, inputs, device: str):
    import torch

    if device != "cuda":
        def call():
            with torch.inference_mode():
                module(*inputs)
        return call
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream before capture, as CUDA graphs require
            module(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        module(*inputs)

    def call():
        graph.replay()
        torch.cuda.synchronize()
    return call
