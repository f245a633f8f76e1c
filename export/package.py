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

import json
import platform
from pathlib import Path

from taskfold import __version__
from taskfold._io import atomic_output_dir, sha256_file, write_json_atomic
from taskfold.errors import ConfigError, ExportError
from taskfold.runtime.manifest import FORMAT, MANIFEST, SCHEMA_VERSION
from taskfold.runtime.reader import verify_package  # noqa: F401  (re-exported for callers of the export API)

from taskfold.runtime.backends import BACKENDS

from .parity import TOLERANCES, default_timesteps, raise_on_failures

from .config import FORMATS, LAYOUTS, MIN_OPSET, PRECISIONS, ExportConfig, max_opset  # noqa: F401

# latents = vae.encode(image) * scaling_factor, per base family (published VAE configs)
_VAE_SCALING = {"sd15": 0.18215, "sd21": 0.18215, "sdxl": 0.13025}


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

def export_package(mtu_or_dir, cfg: ExportConfig, out: str | Path, overwrite: bool = False, log=print,
                   sampling: str | Path | None = None) -> dict:
    """Fold every requested task of an MTU model and export it in every requested format.

    ``sampling``: a sampling file (:mod:`taskfold.sampling`) whose recommended strength, guidance and
    steps the manifest's tasks record; default: the model folder's ``sampling.json`` where it has one.
    Returns the manifest. Raises :class:`~taskfold.errors.ParityError` (and writes nothing)
    if any graph misses its tolerance.
    """
    from taskfold.upcycle.bundle import find_encoders
    from taskfold.upcycle.checkpoint import load_mtu

    from .formats import EXPORTERS

    _check_backends(cfg.formats)
    mtu = load_mtu(mtu_or_dir) if isinstance(mtu_or_dir, (str, Path)) else mtu_or_dir
    mtu = mtu.float().eval()
    mtu_dir = Path(mtu_or_dir) if isinstance(mtu_or_dir, (str, Path)) else None
    recommended = _sampling(sampling, mtu_dir, mtu)
    text_encoder, codec_module = find_encoders(mtu_dir, mtu) if mtu_dir else (None, None)
    codec = codec_module.to_dict() if codec_module is not None else codec_record(mtu)
    cfg = _with_text_len(cfg, text_encoder)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        job = _job(mtu, cfg, codec, tmp, log)
        job.text_encoder, job.codec = text_encoder, codec_module
        job.scheduler_config = _scheduler_record(mtu_dir, mtu)
        formats = [f for f in EXPORTERS if f in cfg.formats or (f == "onnx" and "tensorrt" in cfg.formats)]
        graphs = [g for f in formats for g in EXPORTERS[f](job)]  # TensorRT builds from the ONNX graphs
        raise_on_failures(job.results)
        components = _export_components(text_encoder, codec_module, mtu_dir, mtu, cfg, job.h, job.w, tmp, log)
        manifest = _manifest(mtu, cfg, job.tasks, _without_paths(components.get("codec") or codec), (job.h, job.w),
                             graphs, tmp, recommended)
        manifest["text_encoder"] = _without_paths(components.get("text_encoder"))
        manifest["scheduler"] = components["scheduler"]
        write_json_atomic(tmp / MANIFEST, manifest)
        admit_written(tmp)
    log(f"wrote {out}: {graph_count(graphs)}, {sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.1f} MB")
    return manifest


def graph_count(graphs: list[dict]) -> str:
    """``4 graphs``, or ``1 graph + 4 task files`` for the adapters layout: the files written, not the manifest's
    entries (the adapters layout has one entry per task, all naming the one shared graph)."""
    n = len({g["path"] for g in graphs})
    files = len({g["adapter"] for g in graphs if g.get("adapter")})
    return f"{n} graph{'s' if n != 1 else ''}" + (f" + {files} task file{'s' if files != 1 else ''}" if files else "")


def admit_written(folder: Path) -> None:
    """The package just written, read back as the runtime reads it: every graph the runtime runs admitted
    (``runtime/package_schema.json``'s operators and bounds), every reference confined and listed, the
    tokenizer admitted. A graph the exporter writes outside that schema fails the export, not a user's app."""
    from taskfold.errors import PackageError
    from taskfold.runtime.reader import PackageReader

    try:
        reader = PackageReader(folder, verify=False)
        reader.referenced_files()
        if reader.manifest.get("text_encoder"):
            reader.tokenizer()
    except PackageError as e:
        raise ExportError(f"the exported package would be refused by the runtime: {e}",
                          hint="the exporter wrote something runtime/package_schema.json does not admit; "
                               "extend the schema (and its tests) if the graph is right") from None


def _sampling(path, mtu_dir: Path | None, mtu) -> dict | None:
    """The recommended sampling to record: ``path``'s, else the model folder's ``sampling.json``, else none."""
    from taskfold.sampling import SAMPLING_FILE, read_sampling

    own = mtu_dir / SAMPLING_FILE if mtu_dir is not None else None
    if path is None and own is not None and own.is_symlink():  # a downloaded model folder points nowhere else
        raise ConfigError(f"{str(own)!r} is a symbolic link; a model folder's sampling file must be a file of its own",
                          hint="replace the link with the file, or pass --sampling FILE")
    if path is None and own is not None and own.is_file():
        path = own
    if path is None:
        return None
    out = read_sampling(path, {t.name: t for t in mtu.tasks})
    return out | {"file": Path(path).name}


def _with_text_len(cfg: ExportConfig, text_encoder) -> ExportConfig:
    """The text length: the model's text encoder's (a different --text-len is refused), else 77."""
    if text_encoder is not None:
        if cfg.text_len is not None and cfg.text_len != text_encoder.max_length:
            raise ConfigError(f"--text-len {cfg.text_len} differs from the model's text encoder, which gives "
                              f"{text_encoder.max_length} tokens", hint="leave --text-len unset")
        return cfg.replace(text_len=text_encoder.max_length)
    return cfg if cfg.text_len is not None else cfg.replace(text_len=77)


def _job(mtu, cfg: ExportConfig, codec: dict, tmp: Path, log):
    from .formats import ExportJob
    from .graph import example_inputs, unet_graph_spec

    tasks = resolve_export_tasks(mtu, cfg.tasks)
    h, w = sample_size(mtu, cfg, codec)
    dtype = "float16" if cfg.precision == "fp16" else "float32"
    specs = {t: unet_graph_spec(mtu.unet.config, mtu.task_in_channels(t), cfg.batch, h, w, cfg.text_len,
                                dtype, cfg.dynamic) for t in tasks}
    examples = {t: example_inputs(specs[t], cfg.batch, h, w, seed=0) for t in tasks}
    timesteps = default_timesteps(mtu.dtr.timesteps if mtu.dtr is not None else 1000, cfg.parity_timesteps)
    return ExportJob(mtu, cfg, tasks, tmp, h, w, specs, examples, timesteps, log)


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
    out["scheduler"] = _scheduler_record(mtu_dir, mtu)
    return out


def _scheduler_record(mtu_dir, mtu) -> dict:
    """The model's training noise schedule (its or its base's ``scheduler_config.json``), else SD's."""
    from taskfold.upcycle.bundle import find_scheduler_config

    found = find_scheduler_config(mtu_dir, mtu) if mtu is not None else None
    if found is not None:
        return found[0] | {"source": f"the model's training noise schedule ({found[1].name} of "
                                     f"{found[1].parent.name})"}
    return {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
            "beta_end": 0.012, "prediction_type": "epsilon",
            "source": "Stable Diffusion's schedule (the model has no scheduler_config.json)"}


def _manifest(mtu, cfg: ExportConfig, tasks, codec, sample_hw, graphs, root: Path, sampling: dict | None = None) -> dict:
    from taskfold.sampling import apply_sampling
    from taskfold.upcycle.checkpoint import model_config

    mcfg = model_config(mtu)
    specs = {t.name: t for t in apply_sampling(mtu.tasks, sampling)}
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
        "sampling": {"source": sampling["source"], "file": sampling["file"],
                     "tasks": sorted(set(sampling["tasks"]) & set(tasks))} if sampling else None,
        "tolerances": {f"{b}/{p}": tol for (b, p), tol in TOLERANCES.items()},
        "graphs": graphs,
        "files": file_table(root),
    }
