"""Shared fixtures: tiny base UNets, seeded inputs and a tiny exported package, all fast on a CPU.

``@pytest.mark.gpu`` tests skip (with the reason) where PyTorch sees no CUDA GPU.
"""

from __future__ import annotations

import pytest

from taskfold.upcycle import UpcycleConfig, load_base, upcycle

PACKAGE_TASKS = ("t2i", "edit", "sr", "inpaint", "inpaint-mask")


@pytest.fixture(scope="session")
def tiny_base():
    unet, info = load_base("preset:tiny", seed=0)
    return unet, info


@pytest.fixture(scope="session")
def tiny_mtu(tiny_base):
    unet, info = tiny_base
    return upcycle(unet, UpcycleConfig(tasks=("t2i", "edit", "sr", "inpaint", "inpaint-mask")), info)


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory):
    """``(root, package dir, MTU dir, data dir)``: tiny-pixel + DTR, 6 training steps, ONNX at 16x16."""
    from taskfold.cli import main
    from taskfold.train.shapes import make_shapes

    root = tmp_path_factory.mktemp("package")
    make_shapes(root / "data", n=8, size=16, seed=0, tasks=PACKAGE_TASKS)
    assert main(["upcycle", "--base", "preset:tiny-pixel", "--tasks", ",".join(PACKAGE_TASKS), "--dtr",
                 "--out", str(root / "mtu")]) == 0
    assert main(["train", str(root / "mtu"), "--data", str(root / "data"), "--out", str(root / "run"),
                 "--no-progress", "--steps", "6", "--batch-size", "4"]) == 0
    assert main(["export", str(root / "run" / "mtu"), "--out", str(root / "pkg"), "--height", "16",
                 "--width", "16", "--parity-timesteps", "2"]) == 0
    return root, root / "pkg", root / "run" / "mtu", root / "data"


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU that PyTorch can see; this machine has none")
        for item in gpu:
            item.add_marker(skip)
