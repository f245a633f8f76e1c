"""Shared fixtures: tiny base UNets and seeded inputs that run in seconds on a CPU."""

from __future__ import annotations

import pytest
import torch

from taskfold.upcycle import UpcycleConfig, load_base, upcycle



@pytest.fixture(scope="session")
def tiny_base():
    unet, info = load_base("preset:tiny", seed=0)
    return unet, info


@pytest.fixture(scope="session")
def tiny_mtu(tiny_base):
    unet, info = tiny_base
    return upcycle(unet, UpcycleConfig(tasks=("t2i", "edit", "sr", "inpaint", "inpaint-mask")), info)
