"""Multi-Task Upcycling (MTU) and Denoising Task Routing (DTR) of SD-family UNets.

The names below are imported on first use, so that ``taskfold.upcycle.config`` (torch-free) can be
read without the toolchain.
"""

from taskfold.tasks import BUILTIN_TASKS, TaskSpec

_LAZY = {"PRESETS": "base", "BaseInfo": "base", "build_unet": "base", "load_base": "base", "preset_config": "base",
         "UpcycleConfig": "config", "MTUNet": "model", "set_trainable": "model", "upcycle": "model"}

__all__ = ["PRESETS", "BaseInfo", "BUILTIN_TASKS", "MTUNet", "TaskSpec", "UpcycleConfig", "build_unet",
           "load_base", "preset_config", "set_trainable", "upcycle"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
