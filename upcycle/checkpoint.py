"""Saving and loading MTU models: ``config.json`` + ``model.safetensors`` in one directory.

``config.json`` (schema below, versioned) is the only thing needed to rebuild the model
structure; the weights file is checked against it (size, sha256, every tensor's name and
shape) before anything is loaded, and every mismatch is reported at once. Directories are
written atomically (temp dir + rename).

Schema 1::

    {"format": "taskfold-mtu", "schema_version": 1, "taskfold_version": "...",
     "base": {"source": ..., "kind": ..., "seed": ..., "unet_config": {...}},
     "tasks": [TaskSpec...], "upcycle": UpcycleConfig,
     "weights": {"file": "model.safetensors", "bytes": N, "sha256": "..."}}
"""

from __future__ import annotations

from pathlib import Path

import torch

from taskfold import __version__
from taskfold._io import atomic_output_dir, read_versioned_json, sha256_file, write_json_atomic
from taskfold.errors import CheckpointError, ConfigError, TaskfoldError

from .base import BaseInfo, build_unet
from .config import UpcycleConfig
from .model import MTUNet, upcycle

FORMAT = "taskfold-mtu"
SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def model_config(model: MTUNet) -> dict:
    unet_cfg = {k: v for k, v in dict(model.unet.config).items() if not k.startswith("_")}
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "taskfold_version": __version__,
        "base": {"source": model.base_info.source, "kind": model.base_info.kind, "seed": model.base_info.seed,
                 "dtr": model.base_info.dtr, "unet_config": _jsonable(unet_cfg)},
        "tasks": [t.to_dict() | {"in_channels": t.in_channels(model.latent_channels)} for t in model.tasks],
        "upcycle": model.config.to_dict(),
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def save_mtu(model: MTUNet, out_dir: str | Path, overwrite: bool = False, extra=None) -> Path:
    """Write ``model`` to ``out_dir`` atomically; returns the directory.

    ``extra(tmp_dir)`` may write companion files (text encoder, noise schedule, codec
    record) into the directory before it is renamed into place."""
    from safetensors.torch import save_file

    cfg = model_config(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        weights = tmp / WEIGHTS_FILE
        save_file(state, str(weights), metadata={"format": "pt", "producer": f"taskfold {__version__}"})
        cfg["weights"] = {"file": WEIGHTS_FILE, "bytes": weights.stat().st_size, "sha256": sha256_file(weights)}
        write_json_atomic(tmp / CONFIG_FILE, cfg)
        if extra is not None:
            extra(tmp)
    return Path(out_dir)


def read_mtu_config(path: str | Path) -> dict:
    """Read and validate ``config.json`` of an MTU directory."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"MTU model {str(path)!r} is not a directory",
                              hint="give the directory written by `taskfold upcycle`")
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{str(path)!r} has no {CONFIG_FILE}: not an MTU model directory")
    cfg = read_versioned_json(cfg_path, FORMAT, SCHEMA_VERSION, CheckpointError, "MTU config")
    for key in ("base", "tasks", "upcycle", "weights"):
        if key not in cfg:
            raise CheckpointError(f"{str(cfg_path)!r} lacks the {key!r} section")
    return cfg


def read_upcycle_config(path: str | Path) -> UpcycleConfig:
    """The :class:`UpcycleConfig` of the MTU directory ``path`` (its tasks, declared ones included),
    without loading any weights."""
    cfg = read_mtu_config(Path(path))
    try:
        return UpcycleConfig.from_stored(cfg["upcycle"])
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"config.json of {str(path)!r} is invalid: {e}") from None


def load_mtu(path: str | Path, device: str = "cpu", verify_hash: bool = True) -> MTUNet:
    """Rebuild an MTU model from its directory alone, checking the weights against the config."""
    from safetensors import safe_open

    path = Path(path)
    cfg = read_mtu_config(path)
    weights = path / cfg["weights"]["file"]
    if not weights.is_file():
        raise CheckpointError(f"weights file {str(weights)!r} is missing")
    size = weights.stat().st_size
    if size != cfg["weights"]["bytes"]:
        raise CheckpointError(f"weights file {str(weights)!r} has {size} bytes, config.json records "
                              f"{cfg['weights']['bytes']}: truncated or replaced")
    if verify_hash and sha256_file(weights) != cfg["weights"]["sha256"]:
        raise CheckpointError(f"weights file {str(weights)!r} does not match the sha256 in config.json: corrupt")

    try:
        up_cfg = UpcycleConfig.from_stored(cfg["upcycle"])
        b = cfg["base"]
        info = BaseInfo(source=b["source"], kind=b["kind"], seed=b.get("seed"), dtr=b.get("dtr"))
        unet = build_unet(b["unet_config"], seed=None, device="meta")
        with torch.device("meta"):
            model = upcycle(unet, up_cfg, info)
    except (TaskfoldError, KeyError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise CheckpointError(f"config.json of {str(path)!r} is invalid: {e}") from None
        raise CheckpointError(f"config.json of {str(path)!r} cannot rebuild the model: {e}") from None

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            problems = [f"missing {k} {s}" for k, s in expected.items() if k not in found]
            problems += [f"unexpected {k}" for k in found if k not in expected]
            problems += [f"{k}: file {found[k]}, config {s}" for k, s in expected.items()
                         if k in found and found[k] != s]
            if problems:
                shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
                raise CheckpointError(f"weights in {str(weights)!r} do not match config.json "
                                      f"({len(problems)} problem(s)): {shown}")
            state = {k: f.get_tensor(k) for k in found}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors' own error types for corrupt files
        raise CheckpointError(f"cannot read weights {str(weights)!r}: {e}") from None
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"weights file lacks {len(leftover)} tensor(s), e.g. {leftover[0]}")
    return model.to(device).eval()
