"""Multi-Task Upcycling (MTU) and Denoising Task Routing (DTR) of SD-family UNets."""

from .base import PRESETS, BaseInfo, build_unet, load_base, preset_config
from .config import UpcycleConfig
from .model import MTUNet, set_trainable, upcycle
from taskfold.tasks import BUILTIN_TASKS, TaskSpec

__all__ = ["PRESETS", "BaseInfo", "BUILTIN_TASKS", "MTUNet", "TaskSpec", "UpcycleConfig", "build_unet",
           "load_base", "preset_config", "set_trainable", "upcycle"]
