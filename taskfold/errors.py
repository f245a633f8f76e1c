"""Typed errors. The library raises these; the CLI turns them into one line and an exit code."""

from __future__ import annotations

import re


class TaskfoldError(Exception):
    """Base class for every error a user can cause. ``hint`` says how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class BaseModelError(TaskfoldError):
    """The base UNet could not be loaded (bad path, not a UNet, unsupported architecture)."""


class TaskError(TaskfoldError):
    """An unknown task name or an invalid task declaration."""


class ConfigError(TaskfoldError):
    """A configuration value is out of range, inconsistent, or from an unknown schema."""


class CheckpointError(TaskfoldError):
    """A saved model directory is missing, truncated, corrupt or does not match its config."""


class OutputError(TaskfoldError):
    """The output path cannot be written (read-only, full, permission denied, not a folder)."""


class OutputExistsError(OutputError):
    """The output path already exists and overwriting was not asked for."""


class ExportError(TaskfoldError):
    """A graph could not be exported (a backend is missing, a converter failed)."""


class ParityError(ExportError):
    """An exported graph does not reproduce the PyTorch model within the tolerance."""


class PackageError(TaskfoldError):
    """An exported package is missing files, or a file does not match its manifest entry."""


class DataError(TaskfoldError):
    """A training dataset has bad rows (bad JSON, missing field or file, unreadable or mis-sized image)."""


class BenchError(TaskfoldError):
    """A benchmark could not be measured (a measuring process failed or ran out of memory)."""


def printable(text) -> str:
    """``text`` safe to print on a terminal: control characters (C0, DEL, C1), line separators, bidi
    overrides and lone surrogates (undecodable bytes of a file name) escaped as ``repr`` would, without
    its quotes, so a file name cannot move the cursor, clear a line, fake a message or fail to print.

    Everything else, backslashes included, is kept as it is.
    """
    text = str(text)
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


#: C0 controls, DEL, C1 controls, line/paragraph separators, bidi embeddings/overrides/isolates, surrogates
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


#: The import names ``pip install 'taskfold[toolchain]'`` adds to the runtime-only install.
TOOLCHAIN_MODULES = ("torch", "diffusers", "transformers", "accelerate", "onnx", "safetensors", "matplotlib", "tqdm")


def missing_toolchain() -> list[str]:
    """The :data:`TOOLCHAIN_MODULES` this Python cannot import (looked up, not imported)."""
    from importlib.util import find_spec

    missing = []
    for name in TOOLCHAIN_MODULES:
        try:
            found = find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: blocked (None in sys.modules)
            found = False
        if not found:
            missing.append(name)
    return missing
