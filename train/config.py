"""``TrainConfig``: everything a training run was asked for (torch-free: the CLI reads it without the toolchain)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from taskfold.config import Config, is_finite_number
from taskfold.errors import ConfigError
from taskfold.upcycle.config import NOISE_SCHEDULES

OPTIMIZER_PRESETS = {
    "sd15": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0},     # paper A.2, SDv1.5
    "sdxl": {"optimizer": "adamw", "lr": 5e-5, "weight_decay": 0.01},   # paper A.2, SDXL
}

LR_SCHEDULES = ("constant", "cosine")
#: What ``lr_scale`` can name: the MTU components (``taskfold.upcycle.model.component_of``), the
#: backbone (with ``trainable="all"``) and the text encoder.
LR_COMPONENTS = ("experts", "routers", "task_embedding", "task_norms", "task_conv_in", "backbone", "text_encoder")
#: Upper bounds of every count a training run can be asked for (a batch of 10**9 would allocate before
#: anything could refuse it); the lower bound of each is 1.
LIMITS = {
    "steps": 10_000_000,
    "batch_size": 4096,            # samples per process and micro-step
    "grad_accum": 4096,
    "checkpoint_every": 10_000_000,
    "log_every": 10_000_000,
    "num_train_timesteps": 100_000,
}


@dataclass(frozen=True)
class TrainConfig(Config):
    """Everything a training run was asked for; saved as ``OUT/train_config.json``.

    ``batch_size`` is per process and micro-step; one optimiser step sees
    ``batch_size x processes x grad_accum`` samples.
    """

    label = "train config"

    steps: int = 1000
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine": from lr down to 0 at ``steps`` (after the warm-up)
    lr_warmup: int = 0  # steps of linear warm-up from 0 to lr
    lr_scale: dict = field(default_factory=dict)  # component -> factor on lr (LR_COMPONENTS); missing: 1
    weight_decay: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    task_weights: dict = field(default_factory=dict)  # task -> weight; missing tasks weigh 1
    prompt_dropout: float = 0.05
    image_dropout: float = 0.05
    trainable: str = "mtu"
    train_text_encoder: bool = False
    noise_schedule: str | None = None  # None: the model's (or its base's) schedule, else "sd"
    num_train_timesteps: int = 1000
    snr_gamma: float | None = None  # Min-SNR-gamma loss weighting (Hang et al. 2023); None: plain MSE
    x0_weight_cap: float | None = None  # high noise: the clean-image error weighs >= the noise error's, up to this
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "task_weights", dict(self.task_weights))
        object.__setattr__(self, "lr_scale", dict(self.lr_scale))
        for name, most in LIMITS.items():
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
            if getattr(self, name) > most:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name):,} is more than the most taskfold "
                                  f"accepts, {most:,}")
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError(f"optimizer {self.optimizer!r} is not one of adam, adamw")
        for name in ("lr", "weight_decay", "max_grad_norm", "snr_gamma", "x0_weight_cap"):
            v = getattr(self, name)
            if v is not None and not is_finite_number(v):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {v!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        w = self.lr_warmup
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < self.steps:
            raise ConfigError(f"--lr-warmup must be a whole number of steps in [0, --steps = {self.steps}), "
                              f"got {self.lr_warmup!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"--mixed-precision {self.mixed_precision!r} is not one of no, fp16, bf16")
        for name in ("prompt_dropout", "image_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.trainable not in ("mtu", "all"):
            raise ConfigError(f"--trainable {self.trainable!r} is not one of mtu, all")
        if self.noise_schedule is not None and self.noise_schedule not in NOISE_SCHEDULES:
            raise ConfigError(f"--noise-schedule {self.noise_schedule!r} is not one of {', '.join(NOISE_SCHEDULES)}")
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            raise ConfigError(f"--snr-gamma must be positive, got {self.snr_gamma}")
        if self.x0_weight_cap is not None and not self.x0_weight_cap >= 1:
            raise ConfigError(f"--x0-weight-cap must be at least 1 (1 changes nothing), got {self.x0_weight_cap}")
        unknown = sorted(set(self.lr_scale) - set(LR_COMPONENTS))
        if unknown:
            raise ConfigError(f"--lr-scale names {', '.join(map(repr, unknown))}; expected components among "
                              f"{', '.join(LR_COMPONENTS)}")
        bad = {k: v for k, v in self.lr_scale.items() if not (is_finite_number(v) and v > 0)}
        if bad:
            raise ConfigError(f"--lr-scale factors must be positive numbers, got {bad}")
        bad = {k: v for k, v in self.task_weights.items() if not (is_finite_number(v) and v >= 0)}
        if bad:
            raise ConfigError(f"task weights must be non-negative numbers, got {bad}")

    @classmethod
    def with_preset(cls, preset: str | None, **kw) -> "TrainConfig":
        if preset is not None and preset not in OPTIMIZER_PRESETS:
            raise ConfigError(f"optimiser preset {preset!r} is not one of {', '.join(OPTIMIZER_PRESETS)}")
        base = dict(OPTIMIZER_PRESETS[preset]) if preset else {}
        return cls(**(base | {k: v for k, v in kw.items() if v is not None}))

    def check_tasks(self, tasks: list[str]) -> None:
        """Refuse task weights for tasks the model does not have, or weights that sample nothing."""
        unknown = sorted(set(self.task_weights) - set(tasks))
        if unknown:
            raise ConfigError(f"--task-weights names task(s) {', '.join(unknown)} that the model does not have; its "
                              f"tasks are {', '.join(tasks)}")
        if not any(float(self.task_weights.get(t, 1.0)) > 0 for t in tasks):
            raise ConfigError(f"every task weight is zero ({self.task_weights}): no task would be trained",
                              hint="give at least one task a positive weight")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based): a linear warm-up over ``lr_warmup``
        steps, then ``lr`` (``constant``) or a half cosine from ``lr`` to 0 at ``steps`` (``cosine``)."""
        if step < self.lr_warmup:
            return self.lr * (step + 1) / (self.lr_warmup + 1)
        if self.lr_schedule == "constant":
            return self.lr
        t = min(1.0, (step - self.lr_warmup) / max(1, self.steps - self.lr_warmup))
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))

    def scheduler_config(self) -> dict:
        """The noise schedule as a diffusers ``scheduler_config.json`` (also what the runtime reads).

        ``ddpm`` is the pixel-space schedule, sampled as DDPM samples it: DDIM's predicted ``x0`` is
        clipped to the image range [-1, 1] (``clip_sample``, diffusers' ``DDPMScheduler`` default).
        Unclipped, the first steps from pure noise divide the noise estimate's error by
        ``sqrt(abar_T) = 0.0064`` and a small model's samples saturate. Latents (``sd``) are not
        bounded, so they are never clipped.
        """
        return {"_class_name": "DDPMScheduler", "num_train_timesteps": self.num_train_timesteps,
                **NOISE_SCHEDULES[self.noise_schedule or "sd"], "prediction_type": "epsilon",
                "clip_sample": self.noise_schedule == "ddpm", "set_alpha_to_one": False, "steps_offset": 1}
