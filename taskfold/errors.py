"""Typed errors. The library raises these; the CLI turns them into one line and an exit code."""

from __future__ import annotations


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
