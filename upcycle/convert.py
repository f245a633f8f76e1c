"""Upcycle a base from disk into an MTU directory: what ``taskfold upcycle`` does, as one library call.

:func:`upcycle_to_dir` loads the base (folder, single file or preset), inherits a DTR-trained
base's masks (its function depends on them; asking for other DTR settings is refused), checks
identity at initialisation where it holds (no DTR, no top-k: the upcycled model for a task with
the base's input channels equals the base), hands the base over without a second copy, and saves
the model atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from taskfold._io import check_output_dir
from taskfold.errors import ConfigError

from .base import load_base
from .checkpoint import save_mtu
from .config import UpcycleConfig
from .model import identity_error, identity_inputs, upcycle


@dataclass(frozen=True)
class UpcycleReport:
    """What an upcycle did: the config used (DTR inherited), the identity check (``None``: not applicable)."""

    config: UpcycleConfig
    identity_task: str | None
    identity_error: float | None
    output_scale: float | None
    layers: int
    inherited_dtr: dict | None


def inherit_dtr(cfg: UpcycleConfig, base_dtr: dict | None, asked: dict) -> UpcycleConfig:
    """``cfg`` with a DTR-trained base's masks; ``asked`` holds the DTR settings the user gave explicitly."""
    if base_dtr is None:
        return cfg
    inherit = {"dtr": True, "dtr_timesteps": base_dtr["timesteps"], "dtr_alpha": base_dtr["alpha"],
               "dtr_beta": base_dtr["beta"]}
    conflict = {k: v for k, v in asked.items() if v is not None and v != inherit[k]}
    if conflict:
        raise ConfigError(f"the base was trained with DTR {base_dtr}; {conflict} would change its function",
                          hint="leave --dtr/--dtr-alpha/--dtr-beta unset to inherit the base's DTR")
    return UpcycleConfig.from_dict(cfg.to_dict() | inherit)


def upcycle_to_dir(base: str, cfg: UpcycleConfig, out: str | Path, *, seed: int = 0, overwrite: bool = False,
                   asked_dtr: dict | None = None) -> UpcycleReport:
    """Upcycle ``base`` with ``cfg`` and save the MTU model to ``out`` (see the module docstring)."""
    check_output_dir(out, overwrite)  # fail before minutes of work
    unet, info = load_base(base, seed=seed)
    cfg = inherit_dtr(cfg, info.dtr, asked_dtr or {})
    # The identity check needs the base's output; take it first, then hand the base over
    # (no second copy of an SDXL-sized model in memory).
    check_task = next((t.name for t in cfg.task_specs
                       if t.in_channels(unet.config.out_channels) == unet.config.in_channels), None)
    checkable = check_task is not None and not cfg.dtr and (cfg.top_k or cfg.num_experts) >= cfg.num_experts
    if checkable:
        inputs = identity_inputs(unet)
        with torch.no_grad():
            reference = unet(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"],
                             added_cond_kwargs=inputs["added_cond_kwargs"], return_dict=False)[0]
    model = upcycle(unet, cfg, info, copy_base=False)
    del unet
    err = scale = None
    if checkable:
        err, scale = identity_error(reference, model, inputs, check_task)
    save_mtu(model, out, overwrite=overwrite)
    return UpcycleReport(cfg, check_task if checkable else None, err, scale, len(model.mtu_layers()), info.dtr)
