"""The backends, one object each: what it needs installed, where it runs, its parity tolerance and its runner.

=========  ===================  ==========================================  ==================
backend    graphs               runs (and is parity-gated) on               install
=========  ===================  ==========================================  ==================
onnx       ``onnx/<task>.onnx``  anywhere (ONNX Runtime CPU; CUDA provider)  ``onnxruntime``
coreml     ``.mlpackage``        macOS (Core ML); converted + checked        ``taskfold[coreml]``
                                 structurally on Linux
tensorrt   ``.plan`` engines     an NVIDIA GPU                               ``taskfold[tensorrt]``
=========  ===================  ==========================================  ==================

:data:`BACKENDS` is the registry: the export side (:mod:`taskfold.export.package`), the runtime
(:class:`~taskfold.runtime.package.Package`) and ``taskfold bench`` look a backend up here
instead of testing its name. A backend's toolkit is imported only by its own checks and runner,
so the ONNX path never imports coremltools, tensorrt or torch.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from taskfold.errors import ConfigError, TaskfoldError

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


@dataclass(frozen=True)
class Backend:
    """One backend. ``tolerances``: precision -> the parity gate's maximum relative error."""

    name: str
    module: str                 # the Python module its toolkit is imported as
    toolkit: str                # how messages name it
    hint: str                   # how to install it
    platform: str | None        # ``sys.platform`` it runs on, or None for any
    needs_gpu: bool
    tolerances: dict[str, float] = field(default_factory=dict)
    parity_where: str = "anywhere"
    #: what its toolkit logs on import that taskfold knows to be harmless (regular expressions matched
    #: against the start of a message of the toolkit's loggers); those lines are dropped, nothing else
    import_notes: tuple[str, ...] = ()

    def check_installed(self, what: str = "backend", error: type[TaskfoldError] = ConfigError):
        """For running graphs here: the right platform and the imported toolkit, or one ``error``."""
        if self.platform is not None and sys.platform != self.platform:
            raise error(f"{what} {self.name!r} runs only on {self.parity_where}; this machine is {sys.platform}",
                        hint=f"use the onnx backend here, or run on {self.parity_where}")
        return self.require(what, error)

    def require(self, what: str = "backend", error: type[TaskfoldError] = ConfigError):
        """The imported toolkit (on any platform: CoreML graphs convert on Linux), or one ``error``
        naming what is missing and how to get it."""
        try:
            with _dropping(self.module, self.import_notes):
                return importlib.import_module(self.module)
        except ImportError:
            raise error(f"{what} {self.name!r} needs {self.toolkit}, which is not installed",
                        hint=self.hint) from None
        except Exception as e:  # a toolkit whose native libraries fail to load
            raise error(f"{what} {self.name!r}: {self.toolkit} is installed but cannot be imported ({e})",
                        hint=self.hint) from None

    def can_run_here(self) -> bool:
        """Whether graphs of this backend can be run (and parity-gated) on this machine."""
        try:
            self.check_installed()
        except TaskfoldError:
            return False
        if self.needs_gpu:
            from .tensorrt_runner import cuda_available

            return cuda_available()
        return True

    def tolerance(self, precision: str) -> float:
        return self.tolerances[precision]


ONNX = Backend("onnx", "onnxruntime", "onnxruntime", "pip install onnxruntime (or onnxruntime-gpu for --provider cuda)",
               None, False, {"fp32": 1e-4, "fp16": 2e-2}, "anywhere")
#: coremltools' import notes that do not concern taskfold: it disables its scikit-learn *converter* (taskfold
#: converts no scikit-learn model; palettisation calls scikit-learn itself); it has not tested this torch (every
#: graph taskfold converts passes its own gate, or the export fails); and, off macOS only, it cannot load the
#: Core ML framework's bindings (taskfold predicts with Core ML on macOS only).
COREML_NOTES = (r"scikit-learn version \S+ is not supported\. ",
                r"Torch version \S+ has not been tested with coremltools\. ",
                *([] if sys.platform == "darwin" else
                  [r"Failed to load _ML\w+Proxy: No module named 'coremltools\.libcoremlpython'$"]))
COREML = Backend("coreml", "coremltools", "coremltools", "pip install 'taskfold[coreml]'", "darwin", False,
                 {"fp32": 1e-3, "fp16": 3e-2}, "macOS", COREML_NOTES)
TENSORRT = Backend("tensorrt", "tensorrt", "TensorRT",
                   "pip install 'taskfold[tensorrt]' on a machine with an NVIDIA GPU", None, True,
                   {"fp32": 1e-3, "fp16": 3e-2}, "an NVIDIA GPU")
BACKENDS: dict[str, Backend] = {b.name: b for b in (ONNX, COREML, TENSORRT)}


class _Notes(logging.Filter):
    """Drops the records of ``module``'s loggers whose message matches one of ``patterns``."""

    def __init__(self, module: str, patterns: tuple[str, ...]):
        super().__init__()
        self.module, self.patterns = module, [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        mine = record.name == self.module or record.name.startswith(self.module + ".")
        return not (mine and any(p.match(record.getMessage()) for p in self.patterns))


@contextlib.contextmanager
def _dropping(module: str, patterns: tuple[str, ...]):
    """While importing ``module``: every handler its log records can reach (its loggers', the root's, and
    logging's last resort) drops the ones ``patterns`` match; the handlers are as they were afterwards."""
    if not patterns:
        yield
        return
    notes = _Notes(module, patterns)
    handlers = {*logging.getLogger(module).handlers, *logging.getLogger().handlers, logging.lastResort} - {None}
    for h in handlers:
        h.addFilter(notes)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(notes)


def backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def check_provider(provider: str) -> list[str]:
    """ONNX Runtime's execution providers for ``provider`` (cpu, cuda), checked against this install."""
    if provider not in PROVIDERS:
        raise ConfigError(f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    if provider == "cuda":
        ort = ONNX.check_installed()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("provider 'cuda' is not available in this onnxruntime "
                              f"(it has {', '.join(ort.get_available_providers())})",
                              hint="pip install onnxruntime-gpu on a machine with an NVIDIA GPU, or --provider cpu")
    return PROVIDERS[provider]


# --- runners: (graph path, graph entry) -> feed dict -> first output ---------------------------

def coreml_runner(path: Path, function: str | None) -> Callable[[dict], np.ndarray]:
    """A loaded (compiled) Core ML graph as ``feed -> first output`` (macOS)."""
    from .coreml_runner import load, predict

    model = load(path, "all", function)
    return lambda feed: predict(model, feed, function)


def tensorrt_runner(path: Path) -> Callable[[dict], np.ndarray]:
    """A TensorRT engine on the GPU as ``feed -> first output``."""
    from .tensorrt_runner import engine_runner

    return engine_runner(path)
