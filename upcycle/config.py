"""``UpcycleConfig``: every choice that shapes an MTU model, saved beside its weights.

Torch-free (the CLI builds its options from it without importing the toolchain), as are the
constants the model code shares with it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from taskfold.config import Config, is_finite_number
from taskfold.errors import ConfigError
from taskfold.tasks import TaskSpec, resolve_tasks

#: DTR defaults (paper 004): window shift exponent, active channel ratio, training timesteps.
DEFAULT_ALPHA = 4.0
DEFAULT_BETA = 0.8
DEFAULT_TIMESTEPS = 1000
#: Task norms: one per task, or one per (task, expert).
NORM_MODES = ("task", "task_expert")
#: The noise schedules taskfold trains with (epsilon prediction), as diffusers config fields.
NOISE_SCHEDULES = {
    "sd": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "ddpm": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
}

#: Upper bounds of every size an upcycle config can set (a config file is someone else's input: a
#: ``router_hidden`` of 10**9 would ask for hundreds of GB before anything could refuse it).
LIMITS = {
    "tasks": 64,                # tasks of one model
    "custom_tasks": 64,         # declared tasks
    "num_experts": 64,          # experts per FFN layer (the paper uses 4 to 16)
    "expert_width": 65536,      # one expert's hidden width (it must also divide the FFN width)
    "router_hidden": 4096,      # router MLP hidden size (default 64)
    "task_embedding_dim": 4096,  # task embedding size (default 64)
    "blocks": 1024,             # fnmatch patterns
    "dtr_timesteps": 100_000,   # DTR's training timesteps (default 1000)
    "seed": 2**63 - 1,          # torch.manual_seed's largest
}


@dataclass(frozen=True)
class UpcycleConfig(Config):
    """How to upcycle a base UNet (DESIGN.md "MTU", "DTR").

    ``expert_width=None`` is the iso-parameter default ``H / num_experts``; ``top_k=None``
    routes to all experts; ``blocks`` are fnmatch patterns over transformer-block paths
    (e.g. ``"down_blocks.*"``, ``"mid_block.*"``), default all.
    """

    label = "upcycle config"

    tasks: tuple[str, ...] = ("t2i", "edit", "sr", "inpaint")
    custom_tasks: tuple[TaskSpec, ...] = ()
    num_experts: int = 4
    expert_width: int | None = None
    top_k: int | None = None
    router_hidden: int = 64
    task_embedding_dim: int = 64
    norm_mode: str = "task"
    blocks: tuple[str, ...] = ("*",)
    dtr: bool = False
    dtr_alpha: float = DEFAULT_ALPHA
    dtr_beta: float = DEFAULT_BETA
    dtr_timesteps: int = DEFAULT_TIMESTEPS
    seed: int = 0
    #: ``pipeline``: each task's image condition enters as its task definition says (the stock diffusers
    #: pipelines' conventions); ``scaled``: every image condition as scaled latents (models made before
    #: the conventions were recorded, whose stored configs lack this field).
    image_latents: str = "pipeline"

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "custom_tasks", tuple(self.custom_tasks))
        for name, most in LIMITS.items():  # before anything is built from them
            v = getattr(self, name)
            size = len(v) if isinstance(v, tuple) else v
            if isinstance(size, int) and size > most:
                raise ConfigError(f"{self.label} {name}: {'length ' if isinstance(v, tuple) else ''}{size:,} is more "
                                  f"than the most taskfold accepts, {most:,}")
        object.__setattr__(self, "custom_tasks", tuple(
            t if isinstance(t, TaskSpec) else TaskSpec.from_dict(t) for t in self.custom_tasks))
        resolve_tasks(self.tasks, self.custom_tasks)  # unknown names fail here
        if self.num_experts < 1:
            raise ConfigError(f"--experts must be >= 1, got {self.num_experts}")
        if self.expert_width is not None and self.expert_width < 1:
            raise ConfigError(f"expert_width must be >= 1, got {self.expert_width}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.top_k is not None and not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(f"--top-k {self.top_k} must be between 1 and --experts {self.num_experts}")
        if self.norm_mode not in NORM_MODES:
            raise ConfigError(f"--norms {self.norm_mode!r} is not one of {list(NORM_MODES)}")
        for name in ("router_hidden", "task_embedding_dim", "dtr_timesteps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (is_finite_number(self.dtr_beta) and 0.0 < self.dtr_beta <= 1.0):
            raise ConfigError(f"--dtr-beta must be in (0, 1], got {self.dtr_beta}")
        if not (is_finite_number(self.dtr_alpha) and self.dtr_alpha > 0):
            raise ConfigError(f"--dtr-alpha must be > 0, got {self.dtr_alpha}")
        if not self.blocks:
            raise ConfigError("--blocks selects no transformer blocks")
        if self.image_latents not in ("pipeline", "scaled"):
            raise ConfigError(f"image_latents {self.image_latents!r} is not one of pipeline, scaled")

    @property
    def task_specs(self) -> tuple[TaskSpec, ...]:
        specs = resolve_tasks(self.tasks, self.custom_tasks)
        if self.image_latents == "scaled":
            specs = tuple(dataclasses.replace(t, image_latents="scaled") for t in specs)
        return specs

    @classmethod
    def from_stored(cls, d, where: str = "upcycle config") -> "UpcycleConfig":
        """A config as a checkpoint or manifest stored it; one written before ``image_latents`` existed
        trained its image tasks on scaled latents."""
        if isinstance(d, dict) and "image_latents" not in d:
            d = d | {"image_latents": "scaled"}
        return cls.from_dict(d, where=where)

    @classmethod
    def from_json_file(cls, path: str | Path, **overrides) -> "UpcycleConfig":
        from taskfold._io import read_regular_file

        data = read_regular_file(path, ConfigError, "upcycle config")  # a FIFO or device would never end
        try:
            d = json.loads(data, parse_constant=lambda c: float("nan"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read upcycle config {str(path)!r}: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"upcycle config {str(path)!r} must be a JSON object, got {type(d).__name__}",
                              hint='e.g. {"tasks": ["t2i", "edit"], "num_experts": 4}')
        return cls.from_dict(d, where="upcycle config", **overrides)
