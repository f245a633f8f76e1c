"""A tiny exported package for the runtime tests: trained a few steps, DTR on, five tasks."""

from __future__ import annotations

import pytest

from taskfold.cli import main
from taskfold.train.shapes import make_shapes

TASKS = ("t2i", "edit", "sr", "inpaint", "inpaint-mask")


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory):
    """``(root, package dir, MTU dir, data dir)``: tiny-pixel + DTR, 6 training steps, ONNX at 16x16."""
    root = tmp_path_factory.mktemp("runtime")
    make_shapes(root / "data", n=8, size=16, seed=0, tasks=TASKS)
    assert main(["upcycle", "--base", "preset:tiny-pixel", "--tasks", ",".join(TASKS), "--dtr",
                 "--out", str(root / "mtu")]) == 0
    assert main(["train", str(root / "mtu"), "--data", str(root / "data"), "--out", str(root / "run"),
                 "--no-progress", "--steps", "6", "--batch-size", "4"]) == 0
    assert main(["export", str(root / "run" / "mtu"), "--out", str(root / "pkg"), "--height", "16",
                 "--width", "16", "--parity-timesteps", "2"]) == 0
    return root, root / "pkg", root / "run" / "mtu", root / "data"
