"""``taskfold pretrain``: a small pixel-space text-to-image base, trained from scratch (the paper-004 setting).

The base is trained with the same loop as fine-tuning: a preset UNet (``tiny-pixel`` by
default) is wrapped as a one-task (``t2i``), one-expert model, optionally with Denoising
Task Routing masks, and everything — UNet and the project's tiny text encoder — is trained
on the ``t2i`` rows of a dataset. The result is written as a base folder that
``taskfold upcycle --base`` reads like a diffusers pipeline folder::

    OUT/base/unet/                 the folded UNet (stock diffusers folder; + taskfold_dtr.json with DTR)
    OUT/base/text_encoder/         tiny text encoder (config.json, tokenizer.json, model.safetensors, and
                                   token_counts.json: the words of the captions it was trained on)
    OUT/base/scheduler/scheduler_config.json
    OUT/base/codec.json            identity codec (the UNet works on RGB pixels)
    OUT/base/taskfold_base.json    how it was made: preset, DTR, train config, final loss

An upcycled model inherits the base's DTR masks (the function depends on them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from taskfold._io import atomic_output_dir, check_output_dir, write_json_atomic
from taskfold.errors import ConfigError, TaskfoldError

from .trainer import TrainConfig, train


def pretrain_config(steps: int, batch_size: int = 32, lr: float = 1e-3, noise_schedule: str = "ddpm",
                    checkpoint_every: int = 500, log_every: int = 50, seed: int = 0) -> TrainConfig:
    """The training recipe of a base trained from scratch: everything trainable, the text encoder too,
    prompts dropped 10 % of the time (for classifier-free guidance), no image conditions."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, trainable="all", noise_schedule=noise_schedule,
                       train_text_encoder=True, prompt_dropout=0.1, image_dropout=0.0,
                       checkpoint_every=checkpoint_every, log_every=log_every, seed=seed)


def pretrain(data_dir: str | Path, cfg: TrainConfig, out: str | Path, preset: str = "tiny-pixel", dtr: bool = True,
             dtr_alpha: float = 4.0, dtr_beta: float = 0.8, seed: int = 0, resume: bool = False,
             overwrite: bool = False, log=print, progress: bool = True) -> Path:
    """Train a base from scratch on the ``t2i`` rows of ``data_dir``; returns ``OUT/base``.

    A refused run (no ``t2i`` rows, a bad config) leaves no ``OUT``; an interrupted one keeps its
    checkpoints for ``resume``.
    """
    out = Path(out)
    if cfg.trainable != "all" or not cfg.train_text_encoder:
        raise ConfigError("pretraining trains everything: trainable 'all' and the text encoder")
    if not resume:
        check_output_dir(out, overwrite)
        if out.exists():
            shutil.rmtree(out)
    try:
        return _pretrain(data_dir, cfg, out, preset, dtr, dtr_alpha, dtr_beta, seed, resume, log, progress)
    except TaskfoldError:
        if not resume:  # a refused run leaves nothing (not even the initial model it wrote)
            shutil.rmtree(out, ignore_errors=True)
        raise


def _pretrain(data_dir, cfg, out: Path, preset, dtr, dtr_alpha, dtr_beta, seed, resume, log, progress) -> Path:
    from taskfold.export.fold import fold
    from taskfold.upcycle import UpcycleConfig, load_base, upcycle
    from taskfold.upcycle.checkpoint import load_mtu, save_mtu

    init = out / "init"
    if not (init / "config.json").is_file():
        unet, info = load_base(f"preset:{preset}", seed=seed)
        if int(unet.config.in_channels) != 3:
            raise ConfigError(f"preset {preset!r} takes {unet.config.in_channels} channels; pretraining makes a "
                              "pixel-space RGB base (3 channels)", hint="use --preset tiny-pixel")
        model = upcycle(unet, UpcycleConfig(tasks=("t2i",), num_experts=1, dtr=dtr, dtr_alpha=dtr_alpha,
                                            dtr_beta=dtr_beta, seed=seed), info, copy_base=False)
        save_mtu(model, init, overwrite=True)
    trained = train(init, data_dir, cfg, out / "run", resume=resume, log=log, progress=progress)
    mtu = load_mtu(trained).eval()
    base = out / "base"
    records = [json.loads(line) for line in open(out / "run" / "log.jsonl")]
    with atomic_output_dir(base, overwrite=True) as tmp:
        fold(mtu, "t2i").save_pretrained(tmp / "unet")
        shutil.copytree(trained / "text_encoder", tmp / "text_encoder")
        (tmp / "scheduler").mkdir()
        shutil.copy(trained / "scheduler_config.json", tmp / "scheduler" / "scheduler_config.json")
        shutil.copy(trained / "codec.json", tmp / "codec.json")
        write_json_atomic(tmp / "taskfold_base.json", {
            "preset": preset, "seed": seed,
            "dtr": {"alpha": dtr_alpha, "beta": dtr_beta, "timesteps": cfg.num_train_timesteps} if dtr else None,
            "train": cfg.to_dict(), "final_loss": records[-1]["loss"] if records else None,
            "data": str(data_dir)})
    log(f"wrote base {base}")
    return base
