"""Helpers for reading model folders written by transformers / diffusers (and by taskfold)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from taskfold.errors import CheckpointError


def read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {what} {str(path)!r}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {str(path)!r} is not a JSON object")
    return obj


@contextlib.contextmanager
def quiet_hf():
    """Silence the transformers / diffusers progress bars for one load or save, then restore them."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    t_on, d_on = tlog.is_progress_bar_enabled(), dlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        if t_on:
            tlog.enable_progress_bar()
        if d_on:
            dlog.enable_progress_bar()
