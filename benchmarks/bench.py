"""``taskfold bench``: measure that a folded task graph costs what the base UNet costs.

::

    taskfold bench --preset sd15 --tasks t2i,edit,sr,inpaint --experts 4 --out bench-sd15
    taskfold bench PKG --out bench-pkg [--model MTU_DIR]

What is timed, on the same input shapes:

* **base** — the base UNet as a graph (what the user had before upcycling);
* **one folded graph per task** — the package's graphs (router output, task norms and
  ``conv_in`` baked in);
* **unfolded** — the MTU model exported as it is, experts and routers in the graph and a
  ``task_id`` input (what a user would ship without folding), driven with each task in turn;
* **PyTorch eager** — the base UNet and the unfolded MTU model as ``nn.Module`` calls.

The graphs are prepared here; each engine group (the exported graphs, PyTorch eager) is then
opened and timed in a process of its own (:func:`measure_group`), so an SD-sized model's
sessions and modules need not fit in memory together. Timing is interleaved: every round
calls every contender of the group once, in alternating order (A B C … C B A …), so slow
drift of a shared machine touches all of them alike; a contender's *ratio to base* is the
median over rounds of its time divided by the base's time in the same round. FLOPs are counted from each exported graph
(:func:`taskfold.export.flops.onnx_flops`); eager rows use PyTorch's counter, which does not
see ``scaled_dot_product_attention`` on the CPU, and say so. Resident memory is what the
measuring process gained when a contender was opened and first run, in the order listed:
with shared weights the first task graph maps the backbone and the others add only their
own tensors.
The machine's matmul peak is measured in the same run (:mod:`.machine`), and each graph's
time is set against the floor ``FLOPs / peak``.

A preset (random weights — FLOPs and latency do not depend on them) is upcycled, its routers
spread so that every task folds to different feed-forward weights, and exported through
``taskfold export`` (parity gate included). For a package, the base and unfolded graphs are
rebuilt from the architecture in its manifest — with the MTU model's own weights when
``--model`` names it — and parity-checked like every exported graph.

Writes ``report.json``, ``report.md`` and ``latency.png`` into ``--out`` (atomically, with
the graphs under ``graphs/`` when ``--keep-graphs``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taskfold.config import Config, check_threads
from taskfold.errors import ConfigError
from taskfold.runtime.backends import BACKENDS, PROVIDERS

from . import machine

DEFAULT_TASKS = ("t2i", "edit", "sr", "inpaint")
REPORT_FORMAT = "taskfold-bench"
REPORT_SCHEMA = 1


@dataclass(frozen=True)
class BenchConfig(Config):
    """Everything ``taskfold bench`` was asked for; saved in the report."""

    label = "bench config"

    package: str | None = None
    preset: str | None = None
    model: str | None = None  # MTU directory: real weights for the package's base/unfolded references
    tasks: tuple[str, ...] = ("all",)
    experts: int = 4
    backend: str = "onnx"
    provider: str = "cpu"
    precision: str | None = None  # fp32 on the CPU, fp16 on CUDA
    runs: int = 10
    warmup: int = 1
    height: int | None = None
    width: int | None = None
    batch: int = 1
    eager: bool = True
    unfolded: bool = True
    threads: int | None = None
    share_weights: bool = True
    parity_timesteps: int = 2
    seed: int = 0
    keep_graphs: bool = False

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if (self.package is None) == (self.preset is None):
            raise ConfigError("give either a package directory or --preset NAME, not both and not neither",
                              hint="taskfold bench PKG --out DIR, or taskfold bench --preset sd15 --out DIR")
        if self.model is not None and self.package is None:
            raise ConfigError("--model names the MTU model behind a package; it goes with PKG, not --preset")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.provider not in PROVIDERS:
            raise ConfigError(f"provider {self.provider!r} is not one of {', '.join(PROVIDERS)}")
        if self.backend == "tensorrt" and self.provider != "cuda":
            raise ConfigError("backend 'tensorrt' runs on an NVIDIA GPU", hint="add --provider cuda")
        if self.precision not in (None, "fp32", "fp16"):
            raise ConfigError(f"precision {self.precision!r} is not one of fp32, fp16")
        for name, low in (("runs", 1), ("warmup", 0), ("batch", 1), ("experts", 1), ("parity_timesteps", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or v < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer of at least {low}, got {v!r}")
        check_threads(self.threads)

    @property
    def dtype(self) -> str:
        return {"fp16": "float16", "fp32": "float32"}[self.resolved_precision]

    @property
    def resolved_precision(self) -> str:
        return self.precision or ("fp16" if self.provider == "cuda" else "fp32")

    def to_dict(self) -> dict:
        return super().to_dict() | {"precision": self.resolved_precision}


# --- What is timed -----------------------------------------------------------------------------

@dataclass
class Contender:
    """One thing the benchmark times: a graph or an eager module with its prepared inputs."""

    name: str
    role: str  # "base" | "folded" | "unfolded" | "eager-base" | "eager-unfolded"
    engine: str
    call: object  # call(round_index) -> None; one UNet call, finished (synchronised) on return
    flops: int
    flops_method: str
    conv_in_flops: int
    task: str | None = None
    graph_bytes: int | None = None
    parity: dict | None = None
    memory_added: int | None = None
    elementwise_flops: int | None = None  # the adapters layout's per-task FFN scales (not in ``flops``)
    times: list[float] = field(default_factory=list)
    keep: object = None  # what the call needs alive (e.g. the mapped weights behind a session)


def conv_in_flops(config, in_channels: int, batch: int, h: int, w: int) -> int:
    """FLOPs of ``conv_in`` (2 per multiply-add), the one layer whose width differs per task."""
    get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
    k = int(get("conv_in_kernel", 3))
    return 2 * batch * h * w * int(get("block_out_channels")[0]) * in_channels * k * k


def spread_routers(mtu, seed: int) -> None:
    """Give every task its own expert mix (seeded), as training would; latency does not depend on it."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in mtu.mtu_layers():
            w = layer.router.net[2].weight
            w.copy_(torch.randn(w.shape, generator=g).to(w))


# --- The models behind the graphs ---------------------------------------------------------------

def build_models(cfg: BenchConfig, manifest: dict | None = None):
    """``(base, mtu, description)``: the modules the graphs come from, the same in every process.

    A preset is built from its seed (upcycled, routers spread); a package's architecture comes
    from its manifest, with the MTU model's own weights when ``cfg.model`` names it.
    """
    from taskfold.export.fold import with_dtr
    from taskfold.upcycle import UpcycleConfig, load_base, upcycle
    from taskfold.upcycle.base import BaseInfo, build_unet
    from taskfold.upcycle.checkpoint import load_mtu

    if cfg.preset is not None:
        base, info = load_base(f"preset:{cfg.preset}", seed=cfg.seed)
        mtu = upcycle(base, UpcycleConfig(tasks=tuple(preset_tasks(cfg)), num_experts=cfg.experts, seed=cfg.seed),
                      info).eval()
        spread_routers(mtu, cfg.seed)
        return base, mtu, "random (seeded); routers spread so every task folds to its own FFN weights"
    model_cfg = manifest["model"]
    base_dtr = model_cfg["base"].get("dtr")
    if cfg.model:
        mtu = load_mtu(cfg.model).eval()
        stored = UpcycleConfig.from_stored(model_cfg["upcycle"]).to_dict()
        if mtu.config.to_dict() != stored:
            differ = sorted(k for k, v in mtu.config.to_dict().items() if stored.get(k) != v)
            raise ConfigError(f"--model {cfg.model!r} is not the model this package was exported from: its upcycle "
                              f"config differs in {', '.join(differ)}", hint="give the MTU directory that was exported")
        weights = f"the MTU model's own ({cfg.model}); base graph: random weights of the same architecture"
    else:
        up = UpcycleConfig.from_stored(model_cfg["upcycle"])
        info = BaseInfo(source=model_cfg["base"]["source"], kind=model_cfg["base"]["kind"], dtr=base_dtr)
        mtu = upcycle(build_unet(model_cfg["unet_config"], seed=cfg.seed), up, info, copy_base=False).eval()
        spread_routers(mtu, cfg.seed)
        weights = ("random (seeded) with the package's architecture: FLOPs and latency do not depend on the "
                   "weights; give --model MTU_DIR for the real ones")
    unet_config = model_cfg["unet_config"]
    base = build_unet(dict(unet_config) | {"in_channels": int(unet_config["out_channels"])}, seed=cfg.seed)
    if base_dtr:  # a DTR-trained base carries its masks; so does its graph
        base = with_dtr(base, base_dtr["timesteps"], base_dtr["alpha"], base_dtr["beta"])
    return base, mtu, weights


def preset_tasks(cfg: BenchConfig) -> list[str]:
    return list(DEFAULT_TASKS if cfg.tasks in (("all",), ()) else cfg.tasks)


# --- Preparing the graphs (in the parent process) ------------------------------------------------

@dataclass
class Plan:
    """What the measuring processes need, written to ``work/plan.json``."""

    config: dict
    package: str
    manifest: dict
    tasks: list[str]
    task_index: dict[str, int]  # position of each task in the model (the unfolded graph's task_id)
    reference: str | None = None
    reference_graphs: dict = field(default_factory=dict)  # name -> {"path", "index", "weights", "spec"}
    parity: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    @property
    def bench_config(self) -> BenchConfig:
        return BenchConfig.from_dict(self.config)

    def save(self, path: Path) -> Path:
        from taskfold._io import write_json_atomic

        write_json_atomic(path, dataclasses.asdict(self))
        return path

    @classmethod
    def load(cls, path: Path) -> "Plan":
        return cls(**json.loads(Path(path).read_text()))


def _log_to(log):
    return (lambda msg: log(f"bench: {msg}")) if log else (lambda msg: None)


def prepare(cfg: BenchConfig, work: Path, log=print) -> Plan:
    """Build (preset) or open (package) what is measured and export the reference graphs into ``work``."""
    import torch

    from taskfold.runtime.reader import PackageReader

    say = _log_to(log)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if cfg.preset is not None:
        from taskfold.export.package import ExportConfig, export_package
        from taskfold.upcycle import load_base

        base, mtu, weights = build_models(cfg)
        tasks = preset_tasks(cfg)
        say(f"preset:{cfg.preset} upcycled for {', '.join(tasks)} with {cfg.experts} experts "
            f"({time.perf_counter() - start:.0f} s)")
        formats = {"onnx": ("onnx",), "tensorrt": ("onnx",), "coreml": ("coreml",)}[cfg.backend]
        layouts = ("graphs", "adapters") if cfg.backend == "onnx" and mtu.config.norm_mode == "task" else ("graphs",)
        export_cfg = ExportConfig(formats=formats, layout=layouts, precision=cfg.resolved_precision, batch=cfg.batch,
                                  height=cfg.height, width=cfg.width, parity_timesteps=cfg.parity_timesteps)
        pkg = work / "package"
        del base  # not held through the export (an SD-sized export peaks near 20 GB): rebuilt from its seed below
        export_package(mtu, export_cfg, pkg, log=say)
        base = load_base(f"preset:{cfg.preset}", seed=cfg.seed)[0]
        source = {"kind": "preset", "preset": cfg.preset, "seed": cfg.seed, "experts": cfg.experts,
                  "weights": weights}
    else:
        pkg = Path(cfg.package)
        reader = PackageReader(pkg)
        manifest = reader.manifest
        problems = reader.verify_all()
        if problems:
            raise ConfigError(f"package {str(pkg)!r} does not match its manifest: {problems[0]}"
                              + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                              hint=f"`taskfold verify {pkg}` lists every problem")
        if cfg.height or cfg.width or cfg.batch != 1 or cfg.precision:
            raise ConfigError("--height/--width/--batch/--precision re-export a model; a package is measured at "
                              "the shapes and precision it was exported with", hint="re-export the package, or "
                                                                                   "bench a --preset")
        known = list(manifest["tasks"])
        tasks = known if cfg.tasks in (("all",), ()) else list(cfg.tasks)
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise ConfigError(f"unknown task(s) {', '.join(unknown)}; the package has {', '.join(known)}")
        formats = {g["format"] for g in manifest["graphs"]}
        need = "coreml" if cfg.backend == "coreml" else "onnx"
        if need not in formats:
            raise ConfigError(f"package {str(pkg)!r} has no {need} graphs (it has {', '.join(sorted(formats))})",
                              hint=f"re-export with --formats {need}")
        base, mtu, weights = build_models(cfg, manifest)
        say(f"package {pkg}: tasks {', '.join(tasks)}; references: {weights}")
        source = {"kind": "package", "path": str(pkg), "reference_weights": weights}
    plan = Plan(cfg.to_dict(), str(pkg), PackageReader(pkg, verify=False).manifest, tasks,
                {t: mtu.task_index(t) for t in mtu.task_names}, source=source)
    if cfg.backend in ("onnx", "tensorrt"):
        with torch.no_grad():
            _export_references(cfg, plan, base, mtu, work, say)
    return plan


def _export_references(cfg: BenchConfig, plan: Plan, base, mtu, work: Path, say) -> None:
    """``base.onnx`` and ``unfolded.onnx`` beside each other (their common tensors stored once), gated."""
    from taskfold.export.graph import (UNetGraph, UnfoldedMTUGraph, example_inputs, unet_graph_spec,
                                       unfolded_example, unfolded_graph_spec)
    from taskfold.export.onnx import export_graphs, ort_runner
    from taskfold.export.parity import check_graph, default_timesteps, raise_on_failures

    s = plan.manifest["sample"]
    b, h, w, text_len = s["batch"], s["height"], s["width"], s["text_len"]
    dtype = next((g["inputs"][0]["dtype"] for g in plan.manifest["graphs"] if g["format"] == "onnx"), cfg.dtype)
    half = dtype == "float16"
    specs = {"base": unet_graph_spec(base.config, mtu.latent_channels, b, h, w, text_len, dtype)}
    modules = {"base": lambda: UNetGraph(_half(base) if half else base).eval()}
    examples = {"base": example_inputs(specs["base"], b, h, w, seed=0)}
    if cfg.unfolded:
        specs["unfolded"] = unfolded_graph_spec(mtu, b, h, w, text_len, dtype)
        modules["unfolded"] = lambda: UnfoldedMTUGraph(_half(mtu) if half else mtu).eval()
        examples["unfolded"] = unfolded_example(mtu, specs["unfolded"], b, h, w, seed=0)
    start = time.perf_counter()
    reference = work / "reference"
    exported = export_graphs(modules, specs, examples, reference, prefix="reference")
    say(f"reference graphs {', '.join(modules)} exported ({time.perf_counter() - start:.0f} s)")
    precision = "fp16" if half else "fp32"
    timesteps = default_timesteps(mtu.dtr.timesteps if mtu.dtr is not None else 1000, cfg.parity_timesteps)
    results = []
    for name in modules:
        run = ort_runner(work / exported.graphs[name])
        if name == "base":
            results.append(check_graph(run, mtu, "base", specs[name], b, h, w, "onnx", precision, timesteps,
                                       reference=UNetGraph(base).eval()))
        else:  # every task through the one graph: zero-padded sample, task_id
            widest = specs[name].inputs[0].shape[1]
            for task in plan.tasks:
                task_spec = unet_graph_spec(mtu.unet.config, mtu.task_in_channels(task), b, h, w, text_len, dtype)
                res = check_graph(_unfolded_runner(run, widest, mtu.task_index(task)), mtu, task, task_spec, b, h,
                                  w, "onnx", precision, timesteps)
                res.task = f"unfolded/{task}"
                results.append(res)
        del run
        plan.reference_graphs[name] = {"path": exported.graphs[name], "index": exported.index[name],
                                       "weights": exported.weights[name], "spec": specs[name].to_dict()}
    raise_on_failures(results)
    for res in results:
        key = "base" if res.task == "base" else "unfolded"
        if key not in plan.parity or res.relative_error > plan.parity[key]["relative_error"]:
            plan.parity[key] = res.to_dict()
    plan.reference = str(reference)
    say("reference graphs pass the parity gate (" + ", ".join(
        f"{k} {v['relative_error']:.1e}" for k, v in plan.parity.items()) + ")")


def _half(module):
    import copy

    return copy.deepcopy(module).half()


def _unfolded_runner(run, widest: int, task_index: int):
    def call(inputs: dict) -> np.ndarray:
        return run(_unfolded_feed(inputs, widest, task_index))
    return call


def _unfolded_feed(inputs: dict, widest: int, task_index: int) -> dict:
    """A task's graph inputs for the unfolded graph: sample zero-padded to ``widest`` channels, ``task_id``."""
    x = inputs["sample"]
    padded = np.zeros((x.shape[0], widest, *x.shape[2:]), dtype=x.dtype)
    padded[:, :x.shape[1]] = x
    feed = dict(inputs) | {"sample": padded, "task_id": np.full((x.shape[0],), task_index, dtype=np.int64)}
    order = ["sample", "timestep", "encoder_hidden_states", "task_id", "text_embeds", "time_ids"]
    return {k: feed[k] for k in order if k in feed}


# --- Measuring (one process per group) -----------------------------------------------------------

GROUPS = {"onnx": "the exported graphs", "onnx-adapters": "the adapters layout", "eager": "PyTorch eager"}
#: which graphs each ONNX group opens: the shared graph apart from the per-task graphs (an SD-sized set
#: of both does not fit a small machine), each group with the plain base session as a reference.
ONNX_GROUPS = {"onnx": ("base", "base-plain", "folded", "unfolded"), "onnx-adapters": ("base-plain", "adapters")}


def _memory_now(provider: str) -> int | None:
    if provider == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free
    return machine.rss_bytes()


def measure(contenders: list[Contender], runs: int, warmup: int, say) -> None:
    """Interleaved rounds: every contender once per round, the order reversed every other round."""
    ref = contenders[0]
    for _ in range(warmup):
        for c in contenders:
            c.call(0)
    for r in range(runs):
        for c in (contenders if r % 2 == 0 else contenders[::-1]):
            start = time.perf_counter()
            c.call(r)
            c.times.append(time.perf_counter() - start)
        say(f"{ref.engine} round {r + 1}/{runs}: {ref.name} {ref.times[-1] * 1e3:.1f} ms" + "".join(
            f", {c.name} {c.times[-1] / ref.times[-1]:.3f}x" for c in contenders if c is not ref))


def measure_group(plan_path: Path, group: str, out_path: Path, log=print) -> dict:
    """Open one group's contenders in this process, time them, write their records to ``out_path``.

    A fresh process per group keeps the groups' memory apart (an SD-sized UNet's sessions and
    PyTorch modules do not fit a small machine together) and makes *memory added* start from
    an empty process. ONNX Runtime's worker threads also spin for a while after a call, which
    would steal the cores from a PyTorch call made right after it.
    """
    import torch

    from taskfold._io import write_json_atomic

    from . import contenders as C

    say = _log_to(log)
    plan = Plan.load(plan_path)
    cfg = plan.bench_config
    torch.set_grad_enabled(False)
    if group == "eager":  # the modules' weights are counted in "on disk" (parameter bytes), not in memory added
        base, mtu, _ = build_models(cfg, plan.manifest)
        dtype = torch.float16 if cfg.resolved_precision == "fp16" else torch.float32
        device = "cuda" if cfg.provider == "cuda" else "cpu"
        base.to(device, dtype)
        mtu.to(device, dtype)
    before = _memory_now(cfg.provider)
    if group == "eager":
        makers = C.eager_contenders(cfg, plan, base, mtu)
        peaks = [machine.torch_matmul_peak(device="cuda" if cfg.provider == "cuda" else "cpu")]
    elif cfg.backend == "onnx":
        makers = C.onnx_contenders(cfg, plan, ONNX_GROUPS[group])
        peaks = [machine.ort_matmul_peak(threads=cfg.threads, provider=cfg.provider)]
    elif cfg.backend == "tensorrt":
        makers = C.tensorrt_contenders(cfg, plan)
        peaks = [machine.torch_matmul_peak(device="cuda")]
    else:
        makers = C.coreml_contenders(cfg, plan, plan_path.parent)
        peaks = [machine.torch_matmul_peak(device="cpu")]
    contenders = []
    for c in makers:  # memory: what opening it (done above) and its first call added, in this order
        c.call(0)
        now = _memory_now(cfg.provider)
        if before is not None and now is not None:
            c.memory_added = now - before
        before = now
        contenders.append(c)
    say(f"{GROUPS.get(group, group)}: {', '.join(c.name for c in contenders)} open")
    measure(contenders, cfg.runs, cfg.warmup, say)
    switch = C.switch_costs(contenders, cfg.runs) if group != "eager" else None
    fields = ("name", "role", "engine", "flops", "flops_method", "conv_in_flops", "task", "graph_bytes", "parity",
              "memory_added", "elementwise_flops", "times")
    result = {"contenders": [{k: getattr(c, k) for k in fields} | {"group": group} for c in contenders],
              "matmul_peaks": peaks,
              "switch": switch,
              "peak_rss_bytes": machine.peak_rss_bytes(), "threads": {"torch": torch.get_num_threads()}}
    write_json_atomic(out_path, result)
    return result


def _run_group(plan_path: Path, group: str, say) -> dict:
    """``measure_group`` in a child process; its progress lines pass through."""
    import subprocess

    from taskfold.errors import BenchError

    out_path = plan_path.with_name(f"measured-{group}.json")
    proc = subprocess.run([sys.executable, "-m", "taskfold.benchmarks.bench", "--measure", str(plan_path), group,
                           str(out_path)], stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc.returncode < 0 or proc.returncode == 137:
            why = f"killed by signal {-proc.returncode if proc.returncode < 0 else 9} (out of memory?)"
        raise BenchError(f"measuring {GROUPS.get(group, group)} failed: {why}",
                         hint="the graphs and models of one group must fit in memory together; try --no-eager, "
                              "--no-unfolded, or a smaller --height/--width")
    return json.loads(out_path.read_text())


def _stats(xs: list[float]) -> dict:
    a = np.asarray(xs, dtype=np.float64)
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean()), "n": int(a.size)}


def summarize(contenders: list[dict], peak_gflops: float | None) -> list[dict]:
    """One row per contender: FLOPs and their ratio to the reference, latency statistics and paired ratios.

    Graphs are set against the base graph, eager modules against the eager base (timed in the
    same process, in the same rounds).
    """
    base = next((c for c in contenders if c["role"] == "base"), None)
    plains = {c.get("group"): c for c in contenders if c["role"] == "base-plain"}
    eager_base = next((c for c in contenders if c["role"] == "eager-base"), None)
    rows = []
    for c in contenders:
        plain = plains.get(c.get("group"))  # paired ratios only within one measuring process
        # folded graphs against the base opened the same way; the shared graph against what a user would run
        ref = eager_base if c["role"].startswith("eager") else plain if c["role"] == "adapters" or base is None \
            else base
        lat = _stats(c["times"])
        paired = [t / tb for t, tb in zip(c["times"], ref["times"])]
        gflops = c["flops"] / lat["median"] / 1e9 if c["flops"] else None
        rows.append({
            "name": c["name"], "role": c["role"], "engine": c["engine"], "task": c["task"], "reference": ref["name"],
            "flops": c["flops"], "flops_method": c["flops_method"], "conv_in_flops": c["conv_in_flops"],
            "flop_ratio": c["flops"] / ref["flops"] if ref["flops"] else None,
            "flop_ratio_conv_in_aside": (c["flops"] - c["conv_in_flops"]) / (ref["flops"] - ref["conv_in_flops"])
            if ref["flops"] else None,
            "latency_s": lat, "times_s": c["times"],
            "ratio_to_reference": _stats(paired) | {"of_medians": lat["median"] / _stats(ref["times"])["median"]},
            "ratio_to_plain_base": _stats([t / tb for t, tb in zip(c["times"], plain["times"])])
            if plain and not c["role"].startswith("eager") else None,
            "achieved_gflops": gflops,
            "x_matmul_floor": (lat["median"] / (c["flops"] / (peak_gflops * 1e9))) if peak_gflops and c["flops"]
            else None,
            "memory_added_bytes": c["memory_added"], "graph_bytes": c["graph_bytes"], "parity": c["parity"],
            "elementwise_flops": c.get("elementwise_flops"),
        })
    return rows


# --- The whole run -------------------------------------------------------------------------------

def run_bench(cfg: BenchConfig, out: str | Path, overwrite: bool = False, log=print, command: str | None = None) -> dict:
    """Prepare (here), measure (one child process per group), report; returns the report (also in ``out``)."""
    import gc

    from taskfold._io import atomic_output_dir, check_output_dir, write_bytes_atomic, write_json_atomic
    from taskfold.export.package import tool_versions

    from .report import markdown, plot_latency

    say = _log_to(log)
    check_output_dir(out, overwrite)
    _check_backend(cfg)
    t0 = time.perf_counter()
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        work = tmp / "graphs"
        plan_path = prepare(cfg, work, log).save(work / "plan.json")
        gc.collect()
        t_prep = time.perf_counter() - t0
        plan = Plan.load(plan_path)
        groups = [cfg.backend]
        if cfg.backend == "onnx" and any(g.get("layout") == "adapters" for g in plan.manifest["graphs"]):
            has_graphs = any(g.get("layout", "graphs") == "graphs" and g["format"] == "onnx"
                             for g in plan.manifest["graphs"])
            groups = (["onnx"] if has_graphs else []) + ["onnx-adapters"]
        measured = [_run_group(plan_path, g, say) for g in groups]
        if cfg.eager:
            measured.append(_run_group(plan_path, "eager", say))
        t_measure = time.perf_counter() - t0 - t_prep
        peaks = [p for m in measured for p in m["matmul_peaks"]]
        peak = max(p["best_gflops"] for p in peaks)
        rows = summarize([c for m in measured for c in m["contenders"]], peak)
        files = plan.manifest["files"]
        report = {
            "format": REPORT_FORMAT, "schema_version": REPORT_SCHEMA,
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": command or "taskfold bench (library call)",
            "config": cfg.to_dict(), "source": plan.source,
            "machine": machine.describe(cfg.provider),
            "threads": {"onnxruntime_intra_op": cfg.threads or "onnxruntime default (one per core)",
                        "torch": measured[-1]["threads"]["torch"]},
            "versions": tool_versions(),
            "shapes": {k: plan.manifest["sample"][k] for k in ("batch", "height", "width", "text_len",
                                                                "image_height", "image_width")},
            "tasks": plan.tasks,
            "matmul_peak": {"engines": peaks, "best_gflops": peak},
            "package": {"bytes": sum(f["bytes"] for f in files.values()),
                        "onnx_bytes": sum(f["bytes"] for k, f in files.items() if k.startswith("onnx/")),
                        "files": len(files)},
            "process_peak_rss_bytes": max((m["peak_rss_bytes"] or 0) for m in measured) or None,
            "seconds": {"prepare": round(t_prep, 1), "measure": round(t_measure, 1),
                        "total": round(time.perf_counter() - t0, 1)},
            "rows": rows,
            "task_switch": next((m["switch"] for m in measured if m.get("switch")), None),
        }
        write_json_atomic(tmp / "report.json", report)
        write_bytes_atomic(tmp / "report.md", markdown(report).encode())
        plot_latency(report, tmp / "latency.png")
        if not cfg.keep_graphs:
            shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {out}/report.md, report.json, latency.png ({report['seconds']['total']:.0f} s)")
    return report


def _check_backend(cfg: BenchConfig) -> None:
    """Fail before minutes of work when the asked-for backend or device is not here."""
    from taskfold.runtime.backends import check_provider

    if cfg.provider == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--provider cuda needs an NVIDIA GPU that PyTorch can see; this machine has none",
                              hint="bench on the CPU (--provider cpu), or run the same command on a GPU machine")
    if cfg.backend == "onnx":
        check_provider(cfg.provider)
    BACKENDS[cfg.backend].check_installed()


if __name__ == "__main__":  # the measuring child: python -m taskfold.benchmarks.bench --measure PLAN GROUP OUT
    if len(sys.argv) != 5 or sys.argv[1] != "--measure":
        sys.exit("usage: python -m taskfold.benchmarks.bench --measure PLAN GROUP OUT (started by taskfold bench)")
    measure_group(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
