"""Skips for export tests that need a backend this machine cannot have.

* ``@pytest.mark.macos``: CoreML prediction runs only inside Apple's Core ML framework.
* ``@pytest.mark.tensorrt``: building and refitting engines need the ``tensorrt`` package
  (and a CUDA GPU), which the project's CPU machines cannot install.
"""

from __future__ import annotations

import sys

import pytest


def _tensorrt_import_error() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # ImportError, or a CUDA library failing to load
        return f"{type(e).__name__}: {e}"
    return None


def pytest_collection_modifyitems(config, items):
    macos = None if sys.platform == "darwin" else \
        pytest.mark.skip(reason=f"CoreML prediction needs macOS (Core ML framework); this is {sys.platform}")
    trt_error = None
    for item in items:
        if macos is not None and item.get_closest_marker("macos"):
            item.add_marker(macos)
        if item.get_closest_marker("tensorrt"):
            trt_error = trt_error or _tensorrt_import_error() or "ok"
            if trt_error != "ok":
                item.add_marker(pytest.mark.skip(reason=f"`import tensorrt` failed ({trt_error})"))
