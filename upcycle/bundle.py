"""What sits beside an MTU checkpoint: its text encoder, codec and noise schedule, found in one place.

An MTU directory (``taskfold upcycle`` / ``taskfold train``) holds ``config.json`` and
``model.safetensors`` (:mod:`.checkpoint`) and, once trained, ``text_encoder/``, ``codec.json``
and ``scheduler_config.json``. An upcycled but untrained one has none of those: they come from
its base (a pipeline folder with ``text_encoder/``, ``tokenizer/``, ``vae/``, ``scheduler/``).
Training, export and the benchmarks all find them through this module.
"""

from __future__ import annotations

import json
from pathlib import Path

from taskfold.errors import ConfigError

from .codecs import IdentityCodec, load_codec
from .text_encoders import load_text_encoder

from .config import NOISE_SCHEDULES  # noqa: E402


def find_encoders(mtu_dir: str | Path, mtu):
    """``(text_encoder or None, codec or None)`` saved with the model, else with its base folder.

    Text encoder: ``text_encoder/`` of the MTU directory or of the base (the project's tiny
    encoder, or a pipeline's CLIP with its ``tokenizer/``). Codec: ``codec.json`` of the MTU
    directory or the base, else the base pipeline's ``vae/``; a 3-channel UNet without either
    is a pixel-space model (identity codec).
    """

    dirs = _model_dirs(mtu_dir, mtu.base_info.kind, mtu.base_info.source)
    text_encoder = None
    te = _text_encoder_dir(dirs)
    if te is not None:
        cfg_path = te / "config.json"
        own = cfg_path.is_file() and json.loads(cfg_path.read_text()).get("kind") == "tiny"
        flat = any((te / f).is_file() for f in ("tokenizer.json", "vocab.json"))
        text_encoder = load_text_encoder(te if own or flat else te.parent)
    codec = None
    for d in dirs:
        if (d / "codec.json").is_file():
            codec = load_codec(d / "codec.json")
            break
        if (d / "vae").is_dir():
            codec = load_codec(d)
            break
    if codec is None and mtu.latent_channels == 3:
        codec = IdentityCodec(3)
    return text_encoder, codec


def _model_dirs(mtu_dir, base_kind: str, base_source) -> list[Path]:
    """Where a model's companions are looked for, in order: its own directory, then its base pipeline folder."""
    src = Path(base_source) if base_kind == "diffusers" and base_source else None
    return [d for d in (Path(mtu_dir), src) if d is not None and d.is_dir()]


def _text_encoder_dir(dirs: list[Path]) -> Path | None:
    return next((d / "text_encoder" for d in dirs if (d / "text_encoder").is_dir()), None)


def find_token_counts(mtu_dir: str | Path) -> dict[str, int] | None:
    """The word counts of the captions the model's text encoder (the one :func:`find_encoders` loads) was trained
    on, read without loading any weights; ``None`` when it records none (CLIP encoders, older tiny bases)."""
    from .checkpoint import read_mtu_config
    from .text_encoders import read_token_counts

    base = read_mtu_config(mtu_dir)["base"]
    te = _text_encoder_dir(_model_dirs(mtu_dir, base.get("kind"), base.get("source")))
    return read_token_counts(te) if te is not None else None


def find_scheduler_config(mtu_dir: str | Path | None, mtu) -> tuple[dict, Path] | None:
    """``(scheduler config, its path)`` saved with the model (``scheduler_config.json``) or its base
    pipeline (``scheduler/scheduler_config.json``); ``None`` when neither has one (presets)."""
    src = Path(mtu.base_info.source) if mtu.base_info.kind == "diffusers" else None
    candidates = [Path(mtu_dir) / "scheduler_config.json"] if mtu_dir is not None else []
    if src is not None:
        candidates += [src / "scheduler" / "scheduler_config.json", src / "scheduler_config.json",
                       src.parent / "scheduler" / "scheduler_config.json"]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text()), path
    return None


def find_noise_schedule(mtu_dir: str | Path, mtu) -> str | None:
    """The name in :data:`NOISE_SCHEDULES` of the schedule the model (or its base) was trained with.

    A schedule this trainer does not implement (other betas, another prediction type) is an error:
    fine-tuning with a different schedule than the model learned would change what it predicts.
    """
    found = find_scheduler_config(mtu_dir, mtu)
    if found is None:
        return None
    sc, path = found
    if sc.get("prediction_type", "epsilon") == "epsilon":
        for name, betas in NOISE_SCHEDULES.items():
            if all(sc.get(k) == v for k, v in betas.items()):
                return name
    raise ConfigError(f"{str(path)!r} describes a noise schedule this trainer does not implement "
                      f"({sc.get('beta_schedule')} {sc.get('beta_start')}..{sc.get('beta_end')}, "
                      f"{sc.get('prediction_type', 'epsilon')} prediction)",
                      hint=f"taskfold trains epsilon prediction with {', '.join(NOISE_SCHEDULES)}")
