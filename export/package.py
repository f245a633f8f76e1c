"""``taskfold export``: an MTU model in, one self-describing package out.

Package layout::

    PKG/
      manifest.json            written last; schema below
      diffusers/<task>/        folded UNet per task (save_pretrained; + taskfold_dtr.json with DTR)
      onnx/<task>.onnx         one graph per task
      onnx/shared.weights      the backbone, once for all task graphs
      onnx/<task>.weights      the tensors only that task holds (folded FFNs, task norms, conv_in)
      coreml/<task>.mlpackage  per task (or coreml/tasks.mlpackage with one function per task)
      tensorrt/<task>.plan     per task (or one refittable engine + per-task refits)

The whole package is built in a temporary sibling directory and renamed into place when
every graph has passed the parity gate, so an interrupted or failed export leaves no
package that looks complete. ``manifest.json`` (schema 1) records the tasks (input layout,
text use, guidance kind and defaults), the graphs (inputs/outputs, weight files, FLOPs,
parity reached), every file's size and sha256, the codec and latent scaling, the DTR
parameters and rounding rule, the export config and the tool versions.
:func:`verify_package` re-hashes every file against it.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass
from pathlib import Path

from taskfold import __version__
from taskfold._io import atomic_output_dir, sha256_file, write_json_atomic
from taskfold.errors import ConfigError, ExportError
from taskfold.runtime.manifest import FORMAT, MANIFEST, SCHEMA_VERSION
from taskfold.runtime.reader import verify_package  # noqa: F401  (re-exported for callers of the export API)

from taskfold.runtime.backends import BACKENDS

from .parity import TOLERANCES, ParityResult, check_graph, default_timesteps, raise_on_failures

FORMATS = ("onnx", "coreml", "tensorrt", "diffusers")
MIN_OPSET = 17


def max_opset() -> int:
    """The newest opset this PyTorch's TorchScript-based ONNX exporter writes (20 in torch 2.x)."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return 20
PRECISIONS = ("fp32", "fp16")

# latents = vae.encode(image) * scaling_factor, per base family (published VAE configs)
_VAE_SCALING = {"sd15": 0.18215, "sd21": 0.18215, "sdxl": 0.13025}


@dataclass(frozen=True)
class ExportConfig:
    """Everything ``taskfold export`` was asked for; saved in the manifest."""

    formats: tuple[str, ...] = ("onnx",)
    tasks: tuple[str, ...] = ("all",)
    precision: str = "fp32"
    batch: int = 1
    height: int | None = None  # image pixels; default: the UNet's sample_size x codec scale
    width: int | None = None
    text_len: int | None = None  # default: the model's text encoder's max_length, else 77
    dynamic: bool = False
    opset: int = 17
    optimize: bool = False
    ort_mobile: bool = False
    coreml_precision: str = "fp16"
    coreml_multifunction: bool = False
    palettize: int | None = None
    trt_refit: bool = False
    parity_timesteps: int = 4
    parity_seed: int = 1234

    def __post_init__(self):
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"unknown export format(s) {bad or '(none)'}; choose from {', '.join(FORMATS)}")
        for name, value in (("precision", self.precision), ("coreml precision", self.coreml_precision)):
            if value not in PRECISIONS:
                raise ConfigError(f"{name} {value!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("batch", "text_len", "parity_timesteps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"--{name} must be a positive pixel count, got {v}")
        if self.opset < MIN_OPSET:
            raise ConfigError(f"--opset {self.opset} is below {MIN_OPSET}, the oldest opset taskfold exports")
        if self.opset > max_opset():
            raise ConfigError(f"--opset {self.opset} is outside {MIN_OPSET}..{max_opset()}, the opsets taskfold "
                              "exports with this PyTorch (its TorchScript ONNX exporter)",
                              hint=f"use --opset {MIN_OPSET} (the default)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"formats": list(self.formats), "tasks": list(self.tasks)}


# --- What the package describes ------------------------------------------------------------

def public_source(src: str | None) -> str | None:
    """Where something came from, without the exporting machine's paths: a preset name as it is,
    a local folder or file by its name only (``/home/me/models/sd15`` -> ``sd15``)."""
    if src is None or src.startswith("preset:"):
        return src
    return Path(src).name or "a local folder"


def _without_paths(record: dict | None) -> dict | None:
    """``record`` with its ``source`` (and a nested ``encoder.source``) made public."""
    if record is None:
        return None
    out = dict(record)
    if isinstance(out.get("source"), str):
        out["source"] = public_source(out["source"])
    if isinstance(out.get("encoder"), dict):
        out["encoder"] = _without_paths(out["encoder"])
    if isinstance(out.get("graph"), dict):
        out["graph"] = _without_paths(out["graph"])
    return out


def codec_record(mtu) -> dict:
    """The codec between images and the UNet's sample space, from where the base came from."""
    src, c = mtu.base_info.source, mtu.latent_channels
    if src.startswith("preset:"):
        name = src.split(":", 1)[1]
        family = name.split("-")[0]
        if family in _VAE_SCALING:
            return {"kind": "vae", "scale_factor": 8, "scaling_factor": _VAE_SCALING[family],
                    "latent_channels": c, "source": f"published {family} VAE config"}
        return {"kind": "identity", "scale_factor": 1, "scaling_factor": 1.0, "latent_channels": c,
                "source": f"{src}: the UNet works on images directly"}
    name = public_source(src)
    path = Path(src)
    for vae_cfg in (path / "vae" / "config.json", path.parent / "vae" / "config.json"):
        if vae_cfg.is_file():
            v = json.loads(vae_cfg.read_text())
            return {"kind": "vae", "scale_factor": 2 ** (len(v.get("block_out_channels", [0] * 4)) - 1),
                    "scaling_factor": float(v.get("scaling_factor", 0.18215)), "latent_channels": c,
                    "source": f"vae/config.json of {public_source(str(vae_cfg.parent.parent))}"}
    family = "sdxl" if mtu.unet.config.addition_embed_type == "text_time" else "sd15"
    return {"kind": "vae", "scale_factor": 8, "scaling_factor": _VAE_SCALING[family], "latent_channels": c,
            "source": f"assumed: the {family} VAE (no vae/config.json beside {name})"}


def sample_size(mtu, cfg: ExportConfig, codec: dict) -> tuple[int, int]:
    """The UNet sample ``(h, w)`` for the requested image size, checked against the UNet's strides."""
    scale = codec["scale_factor"]
    default = int(mtu.unet.config.sample_size) * scale
    levels = len(mtu.unet.config.block_out_channels)
    stride = scale * 2 ** (levels - 1)
    out = []
    for name, px in (("height", cfg.height or default), ("width", cfg.width or default)):
        if px % stride:
            raise ConfigError(f"--{name} {px} is not a multiple of {stride} (codec scale {scale} x UNet "
                              f"downsampling {2 ** (levels - 1)})", hint=f"try {max(stride, px // stride * stride)}")
        out.append(px // scale)
    return out[0], out[1]


def resolve_export_tasks(mtu, requested: tuple[str, ...]) -> list[str]:
    if requested in (("all",), ()):
        return list(mtu.task_names)
    for t in requested:
        mtu.task_index(t)  # TaskError naming the known tasks
    return list(dict.fromkeys(requested))


def tool_versions() -> dict:
    import importlib.metadata as md

    out = {"taskfold": __version__, "python": platform.python_version()}
    for dist in ("torch", "diffusers", "onnx", "onnxruntime", "coremltools", "tensorrt"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def file_table(root: Path) -> dict[str, dict]:
    """``relative path -> {bytes, sha256}`` for every file under ``root`` except the manifest."""
    return {p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _check_backends(formats) -> None:
    """Every asked-for format's toolkit importable, before any work (one ExportError naming the extra)."""
    for f in formats:
        if f in BACKENDS:
            BACKENDS[f].require("format", ExportError)
    if "coreml" in formats:
        from .coreml import _coremltools

        _coremltools()  # and its optimiser (palettisation)


# --- Export ----------------------------------------------------------------------------------

def export_package(mtu_or_dir, cfg: ExportConfig, out: str | Path, overwrite: bool = False, log=print) -> dict:
    """Fold every requested task of an MTU model and export it in every requested format.

    Returns the manifest. Raises :class:`~taskfold.errors.ParityError` (and writes nothing)
    if any graph misses its tolerance.
    """
    import torch

    from taskfold.upcycle.checkpoint import load_mtu

    from .fold import fold
    from .graph import UNetGraph, example_inputs, unet_graph_spec

    _check_backends(cfg.formats)
    from taskfold.upcycle.bundle import find_encoders

    mtu = load_mtu(mtu_or_dir) if isinstance(mtu_or_dir, (str, Path)) else mtu_or_dir
    mtu = mtu.float().eval()
    tasks = resolve_export_tasks(mtu, cfg.tasks)
    mtu_dir = Path(mtu_or_dir) if isinstance(mtu_or_dir, (str, Path)) else None
    text_encoder, codec_module = find_encoders(mtu_dir, mtu) if mtu_dir else (None, None)
    codec = codec_module.to_dict() if codec_module is not None else codec_record(mtu)
    if text_encoder is not None:
        if cfg.text_len is not None and cfg.text_len != text_encoder.max_length:
            raise ConfigError(f"--text-len {cfg.text_len} differs from the model's text encoder, which gives "
                              f"{text_encoder.max_length} tokens", hint="leave --text-len unset")
        cfg = dataclasses.replace(cfg, text_len=text_encoder.max_length)
    elif cfg.text_len is None:
        cfg = dataclasses.replace(cfg, text_len=77)
    h, w = sample_size(mtu, cfg, codec)
    dtype = "float16" if cfg.precision == "fp16" else "float32"
    specs = {t: unet_graph_spec(mtu.unet.config, mtu.task_in_channels(t), cfg.batch, h, w, cfg.text_len,
                                dtype, cfg.dynamic) for t in tasks}
    examples = {t: example_inputs(specs[t], cfg.batch, h, w, seed=0) for t in tasks}
    timesteps = default_timesteps(mtu.dtr.timesteps if mtu.dtr is not None else 1000, cfg.parity_timesteps)
    torch_dtype = torch.float16 if cfg.precision == "fp16" else torch.float32

    def folded(task):
        def make():
            unet = fold(mtu, task)
            return UNetGraph(unet if torch_dtype == torch.float32 else unet.to(torch_dtype)).eval()
        return make

    graphs: list[dict] = []
    results: list[ParityResult] = []
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if "diffusers" in cfg.formats:
            for t in tasks:
                fold(mtu, t).save_pretrained(tmp / "diffusers" / t, safe_serialization=True)
                graphs.append({"task": t, "format": "diffusers", "path": f"diffusers/{t}", "precision": "fp32"})
            log(f"diffusers: {len(tasks)} folded UNet folders")
        if "onnx" in cfg.formats or "tensorrt" in cfg.formats:  # TensorRT builds from the ONNX graphs
            graphs += _export_onnx(mtu, tasks, specs, examples, folded, cfg, tmp, h, w, timesteps, results, log)
        if "coreml" in cfg.formats:
            graphs += _export_coreml(mtu, tasks, cfg, tmp, h, w, timesteps, results, log)
        if "tensorrt" in cfg.formats:
            graphs += _export_tensorrt(mtu, tasks, specs, cfg, tmp, h, w, timesteps, results, log)
        raise_on_failures(results)
        components = _export_components(text_encoder, codec_module, mtu_dir, mtu, cfg, h, w, tmp, log)
        if components.get("codec"):
            codec = components["codec"]
        manifest = _manifest(mtu, cfg, tasks, _without_paths(codec), (h, w), graphs, tmp)
        manifest["text_encoder"] = _without_paths(components.get("text_encoder"))
        manifest["scheduler"] = components["scheduler"]
        write_json_atomic(tmp / MANIFEST, manifest)
    log(f"wrote {out}: {len(graphs)} graphs, {sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.1f} MB")
    return manifest


def _export_onnx(mtu, tasks, specs, examples, folded, cfg, tmp, h, w, timesteps, results, log) -> list[dict]:
    from .flops import onnx_flops
    from .onnx import export_graphs, ort_runner, to_ort_format

    exported = export_graphs({t: folded(t) for t in tasks}, specs, examples, tmp / "onnx", cfg.opset,
                             optimize_graphs=cfg.optimize)
    out = []
    for t in tasks:
        path = tmp / exported.graphs[t]
        run = ort_runner(path)
        res = check_graph(run, mtu, t, specs[t], cfg.batch, h, w, "onnx", cfg.precision, timesteps, cfg.parity_seed)
        del run
        results.append(res)
        sizes = {"batch": cfg.batch, "height": h, "width": w}
        shapes = {s.name: [sizes.get(d, d) for d in s.shape] for s in specs[t].inputs}
        flops = onnx_flops(path, shapes)
        log(f"onnx {t}: parity {res.relative_error:.1e} (tolerance {res.tolerance:.0e}), "
            f"{flops.total / 1e9:.3f} GFLOPs")
        out.append({"task": t, "format": "onnx", "path": exported.graphs[t], "precision": cfg.precision,
                    "opset": cfg.opset, "external_data": exported.weights[t], "weight_index": exported.index[t],
                    **specs[t].to_dict(),
                    "flops": flops.to_dict(), "parity": res.to_dict() | {"provider": "CPUExecutionProvider"}})
        if cfg.ort_mobile:
            rel = f"ort/{t}.ort"
            (tmp / "ort").mkdir(exist_ok=True)
            to_ort_format(path, tmp / rel)
            res = check_graph(ort_runner(tmp / rel), mtu, t, specs[t], cfg.batch, h, w, "onnx", cfg.precision,
                              timesteps, cfg.parity_seed)
            results.append(res)
            out.append({"task": t, "format": "ort", "path": rel, "precision": cfg.precision, **specs[t].to_dict(),
                        "flops": flops.to_dict(), "parity": res.to_dict() | {"provider": "CPUExecutionProvider"}})
            log(f"ort {t}: parity {res.relative_error:.1e}")
    return out


def _export_components(text_encoder, codec, mtu_dir, mtu, cfg, h, w, tmp, log) -> dict:
    """The text encoder (+ the runtime's tokenizer files), the codec and the noise schedule, once per package."""
    from .encoders import export_codec_onnx, export_text_encoder_onnx, export_tokenizer

    out = {}
    if text_encoder is not None:
        rec = export_text_encoder_onnx(text_encoder.eval(), tmp / "text_encoder" / "text_encoder.onnx", cfg.batch,
                                       opset=cfg.opset, dynamic=cfg.dynamic)
        rec["tokenizer"] = export_tokenizer(text_encoder, tmp / "text_encoder")
        out["text_encoder"] = text_encoder.to_dict() | {"graph": rec}
        log(f"text encoder ({text_encoder.kind}): parity {rec['parity']['relative_error']:.1e}")
    else:
        log("text encoder: none with the model or its base; the package takes encoder_hidden_states from the app")
    if codec is not None:
        scale = codec.scale_factor
        out["codec"] = export_codec_onnx(codec.eval(), tmp / "codec", h * scale, w * scale, cfg.batch,
                                         opset=cfg.opset, dynamic=cfg.dynamic)
    from taskfold.upcycle.bundle import find_scheduler_config

    found = find_scheduler_config(mtu_dir, mtu) if mtu is not None else None
    if found is not None:
        out["scheduler"] = found[0] | {"source": f"the model's training noise schedule ({found[1].name} of "
                                                 f"{found[1].parent.name})"}
    else:
        out["scheduler"] = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                            "beta_end": 0.012, "prediction_type": "epsilon",
                            "source": "Stable Diffusion's schedule (the model has no scheduler_config.json)"}
    return out


def _export_coreml(mtu, tasks, cfg, tmp, h, w, timesteps, results, log) -> list[dict]:
    """ML Programs through torch.export; parity where Core ML runs (macOS), structure everywhere."""
    import sys

    import torch

    from . import coreml
    from .fold import base_twin, fold
    from .graph import UNetGraph, example_inputs, unet_graph_spec

    def spec_of(channels):  # Core ML graphs are static and keep float32 inputs/outputs
        return unet_graph_spec(mtu.unet.config, channels, cfg.batch, h, w, cfg.text_len, "float32", False)

    # The reference for the structural check: the base architecture, converted the same way, carrying
    # the first task's folded weights (so coremltools' constant folding treats both graphs alike).
    base = base_twin(fold(mtu, tasks[0]), mtu.latent_channels)
    spec0 = spec_of(mtu.latent_channels)
    with torch.no_grad():
        ref_model = coreml.convert(UNetGraph(base).eval(), spec0, example_inputs(spec0, cfg.batch, h, w),
                                   None, precision=cfg.coreml_precision)
    reference_ops = coreml.op_histogram(ref_model)
    del base, ref_model
    out, paths = [], {}
    on_mac = sys.platform == "darwin"
    for t in tasks:
        spec = spec_of(mtu.task_in_channels(t))
        rel = f"coreml/{t}.mlpackage"
        model = coreml.convert(UNetGraph(fold(mtu, t)).eval(), spec, example_inputs(spec, cfg.batch, h, w),
                               None, precision=cfg.coreml_precision)
        problems = coreml.structural_problems(model, spec, reference_ops)
        if problems:
            from taskfold.errors import ParityError

            raise ParityError(f"CoreML graph of task {t!r} fails the structural check: " + "; ".join(problems))
        if cfg.palettize:
            model = coreml.palettize(model, cfg.palettize)
        coreml.save(model, tmp / rel)
        paths[t] = tmp / rel
        entry = {"task": t, "format": "coreml", "path": rel, "precision": cfg.coreml_precision,
                 "palettize_bits": cfg.palettize, **spec.to_dict()}
        if on_mac:
            res = check_graph(lambda x, p=tmp / rel: coreml.predict(p, x), mtu, t, spec, cfg.batch, h, w, "coreml",
                              cfg.coreml_precision, timesteps, cfg.parity_seed,
                              tolerance=0.1 if cfg.palettize else None)
            results.append(res)
            entry["parity"] = res.to_dict() | {"compute_units": "cpu_only"}
        else:
            entry["parity"] = {"status": "structural", "checked_on": sys.platform,
                               "checks": "inputs/outputs as declared; op histogram == converted base UNet",
                               "reference_ops": sum(reference_ops.values()), "problems": []}
        out.append(entry)
        log(f"coreml {t}: {'parity ' + format(results[-1].relative_error, '.1e') if on_mac else 'structure ok'}")
    if cfg.coreml_multifunction:
        coreml.save_multifunction(paths, tmp / "coreml" / "tasks.mlpackage", default_function=tasks[0])
        for t, p in paths.items():
            import shutil

            shutil.rmtree(p)
        for e in out:
            e["path"], e["function"] = "coreml/tasks.mlpackage", e["task"]
        log(f"coreml: one multifunction package with {len(paths)} functions")
    return out


def _export_tensorrt(mtu, tasks, specs, cfg, tmp, h, w, timesteps, results, log) -> list[dict]:
    """Engines built from the package's ONNX graphs (fp16 unless fp32 was asked for)."""
    from . import tensorrt as trt_export

    out = []
    (tmp / "tensorrt").mkdir(exist_ok=True)
    cache = tmp / "tensorrt" / "timing.cache"
    engines: dict[int, str] = {}
    precision = "fp16" if cfg.precision == "fp16" else "fp32"
    for t in tasks:
        onnx_path = tmp / "onnx" / f"{t}.onnx"
        channels = mtu.task_in_channels(t)
        if cfg.trt_refit:  # one refittable engine per input width; each task refits it at load time
            rel = f"tensorrt/refit-{channels}ch.plan"
            if channels not in engines:
                trt_export.build_engine(onnx_path, tmp / rel, specs[t], fp16=True, timing_cache_path=cache, refit=True)
                engines[channels] = rel
            refit_rel = f"tensorrt/{t}.plan"
            trt_export.refit_engine(tmp / rel, onnx_path, tmp / refit_rel)
            run_path = tmp / refit_rel
            entry = {"task": t, "format": "tensorrt", "path": refit_rel, "refittable_engine": rel,
                     "refit_from": f"onnx/{t}.onnx"}
        else:
            rel = f"tensorrt/{t}.plan"
            trt_export.build_engine(onnx_path, tmp / rel, specs[t], fp16=True, timing_cache_path=cache)
            run_path = tmp / rel
            entry = {"task": t, "format": "tensorrt", "path": rel}
        res = check_graph(trt_export.engine_runner(run_path), mtu, t, specs[t], cfg.batch, h, w, "tensorrt", "fp16",
                          timesteps, cfg.parity_seed)
        results.append(res)
        out.append(entry | {"precision": precision, **specs[t].to_dict(), "parity": res.to_dict()})
        log(f"tensorrt {t}: parity {res.relative_error:.1e}")
    return out


def _manifest(mtu, cfg: ExportConfig, tasks, codec, sample_hw, graphs, root: Path) -> dict:
    from taskfold.upcycle.checkpoint import model_config

    mcfg = model_config(mtu)
    specs = {t.name: t for t in mtu.tasks}
    dtr = None
    if mtu.dtr is not None:
        dtr = {"timesteps": mtu.dtr.timesteps, "alpha": mtu.dtr.alpha, "beta": mtu.dtr.beta,
               "widths": list(mtu.dtr.widths), "rule": "index = clamp(floor(t + 0.5), 0, timesteps - 1)",
               "placement": "after ResnetBlock2D.norm1 and Transformer2DModel.norm"}
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created_by": tool_versions(),
        "model": {"base": mcfg["base"] | {"unet_config": None, "source": public_source(mcfg["base"]["source"])},
                  "upcycle": mcfg["upcycle"],
                  "unet_config": mcfg["base"]["unet_config"]},
        "export": cfg.to_dict(),
        "sample": {"height": sample_hw[0], "width": sample_hw[1], "batch": cfg.batch, "text_len": cfg.text_len,
                   "image_height": sample_hw[0] * codec["scale_factor"],
                   "image_width": sample_hw[1] * codec["scale_factor"]},
        "codec": codec,
        "dtr": dtr,
        "tasks": {t: specs[t].to_dict() | {"in_channels": mtu.task_in_channels(t),
                                           "graphs": {g["format"]: g["path"] for g in graphs if g["task"] == t}}
                  for t in tasks},
        "tolerances": {f"{b}/{p}": tol for (b, p), tol in TOLERANCES.items()},
        "graphs": graphs,
        "files": file_table(root),
    }
