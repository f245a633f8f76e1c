"""Fixtures for the JavaScript runtime's tests (``js/``): Node and its packages, and two exported packages.

The tests compare the JavaScript runtime with the Python runtime on fixtures the Python side
produces in the test itself. They need ``node`` and ``js/node_modules`` (``make test`` installs
them with ``npm ci --ignore-scripts``); without them they skip, naming what is missing. The
browser test also needs Debian's ``chromium``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "js"
CHROMIUM = os.environ.get("TASKFOLD_CHROMIUM", "/usr/bin/chromium")


def node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS / "node_modules" / "onnxruntime-node").is_dir():
        return "js/node_modules is missing (run `npm ci --ignore-scripts` in js/, as `make test` does)"
    return None


@pytest.fixture(scope="session")
def node():
    """The ``node`` command, or a skip naming what is missing."""
    missing = node_missing()
    if missing:
        pytest.skip(missing)
    return shutil.which("node")


def run_node(args: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``node ARGS`` in js/ (one CPU thread for ONNX Runtime's pools is not forced: the test machines share cores);
    ``env``: variables to set on top of this process's."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(env or {})}
    return subprocess.run(["node", *args], cwd=JS, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def tiny_mtu_package(tmp_path_factory):
    """The bundled fine-tune ``models/tiny-mtu`` exported (ONNX graphs layout, 32x32, WordLevel tokenizer)."""
    from taskfold.cli import main

    out = tmp_path_factory.mktemp("js-tiny") / "pkg"
    assert main(["export", str(REPO / "models" / "tiny-mtu"), "--out", str(out), "--parity-timesteps", "1"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_mtu_adapters_package(tmp_path_factory):
    """``models/tiny-mtu`` exported in the adapters layout: one shared UNet graph, ``adapters/<task>.safetensors``."""
    from taskfold.cli import main

    out = tmp_path_factory.mktemp("js-tiny-adapters") / "pkg"
    assert main(["export", str(REPO / "models" / "tiny-mtu"), "--out", str(out), "--layout", "adapters",
                 "--parity-timesteps", "1"]) == 0
    return out


def sd_pipeline_package(root: Path, tasks: str, *export_args: str) -> Path:
    """An SD1.5-layout package with random weights (narrow UNet, CLIP BPE tokenizer and text encoder, a VAE),
    upcycled for ``tasks`` and exported at 64 px with ``export_args`` into ``root/pkg``."""
    from taskfold.cli import main
    from taskfold.train.shapes import shapes_world_prompts
    from taskfold.upcycle import build_unet, preset_config

    from .._standins import save_random_clip, save_random_vae

    pipe = root / "sd"
    build_unet(preset_config("sd15-narrow"), seed=0).save_pretrained(pipe / "unet")
    save_random_clip(pipe, shapes_world_prompts(), hidden=32)
    save_random_vae(pipe, block_out_channels=(8, 16, 16, 16), latent_channels=4)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert main(["upcycle", "--base", str(pipe), "--tasks", tasks, "--out", str(root / "mtu")]) == 0
    assert main(["export", str(root / "mtu"), "--out", str(root / "pkg"), "--height", "64", "--width", "64",
                 "--parity-timesteps", "1", *export_args]) == 0
    return root / "pkg"


@pytest.fixture(scope="session")
def sd_package(tmp_path_factory):
    """An SD1.5-layout package with random weights: narrow UNet, CLIP BPE tokenizer and text encoder, a VAE, 64 px."""
    return sd_pipeline_package(tmp_path_factory.mktemp("js-sd"), "t2i,edit,sr,inpaint-mask")


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """Seeded condition images and a mask as PNG files: ``{name: path}`` at 16, 32 and 64 px."""
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("js-images")
    rng = np.random.default_rng(7)
    out = {}
    for side in (16, 32, 64):
        yy, xx = np.mgrid[:side, :side] / side
        rgb = np.stack([np.sin(6 * xx) * 0.5 + 0.5, yy, (xx + yy) / 2], -1) * 200 + rng.random((side, side, 3)) * 55
        out[f"cond{side}"] = d / f"cond{side}.png"
        Image.fromarray(rgb.astype(np.uint8)).save(out[f"cond{side}"])
        mask = np.zeros((side, side), np.uint8)
        mask[side // 4: side * 3 // 4, side // 8: side // 2] = 255
        out[f"mask{side}"] = d / f"mask{side}.png"
        Image.fromarray(mask).save(out[f"mask{side}"])
    return out


@pytest.fixture(scope="session")
def parity_cases(tiny_mtu_package, sd_package, images):
    """Every task x scheduler of both packages, and the Python runtime's images for them."""
    from ._parity import cases_for, python_images

    cases = cases_for("tiny", tiny_mtu_package, images, steps=3) + cases_for("sd", sd_package, images, steps=3)
    return cases, python_images(cases)


@pytest.fixture(scope="session")
def chromium(node):
    """Debian's Chromium, or a skip (``make test`` installs it with apt when it is missing)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; never a downloaded browser build)")
    return CHROMIUM
