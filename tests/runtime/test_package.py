"""The runtime on a tiny exported package: every task, parity with PyTorch, sessions, no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskfold.cli import main
from taskfold.runtime import open_package
from taskfold.train.data import load_dataset

from ..conftest import PACKAGE_TASKS as TASKS

#: Max |runtime - PyTorch| on images in [-1, 1]. The graphs match the model to ~1e-6 per
#: call (the export gate); guidance (scale up to 7.5) and the steps amplify that to ~2e-5
#: here. 1e-3 is an eighth of one 8-bit grey level: the PNGs are identical or one level apart.
IMAGE_TOLERANCE = 1e-3


def _sample(data, task):
    ds = load_dataset(data, tasks=[task])
    return ds[ds.indices(task)[0]]


@pytest.fixture(scope="module")
def reference(tiny_package):
    from taskfold.upcycle.bundle import find_encoders
    from taskfold.upcycle.checkpoint import load_mtu

    _, _, mtu_dir, _ = tiny_package
    mtu = load_mtu(mtu_dir).eval()
    te, codec = find_encoders(mtu_dir, mtu)
    return mtu, te, codec, json.loads((mtu_dir / "scheduler_config.json").read_text())


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_every_task_equals_the_pytorch_pipeline(tiny_package, reference, scheduler):
    from taskfold.train.pipeline import generate, mtu_fn

    _, pkg_dir, _, data = tiny_package
    mtu, te, codec, sched = reference
    pkg = open_package(pkg_dir)
    assert pkg.tasks == list(TASKS) and pkg.manifest["dtr"] is not None
    for task in TASKS:
        item = _sample(data, task)
        cond, mask = item.get("condition"), item.get("mask")
        got = pkg.generate(task, item["prompt"], image=cond, mask=mask, steps=4, scheduler=scheduler, seed=7)
        spec = next(t for t in mtu.tasks if t.name == task)
        want = generate(mtu_fn(mtu, task), spec, [item["prompt"]], text_encoder=te, codec=codec,
                        scheduler_config=sched, condition=None if cond is None else cond[None],
                        mask=None if mask is None else mask[None], height=16, width=16, steps=4,
                        scheduler=scheduler, seed=7)
        assert got.shape == (1, 3, 16, 16) and got.dtype == np.float32
        err = float(np.abs(got - want).max())
        assert err < IMAGE_TOLERANCE, (task, scheduler, err)
        assert float(np.abs(want).max()) > 0.05  # a real image, not zeros on both sides


def test_img2img_strength_equals_the_pytorch_pipeline_and_keeps_the_condition(tiny_package, reference):
    """``strength`` < 1: both sides start from the encoded condition noised to the same step."""
    from taskfold.errors import ConfigError
    from taskfold.train.pipeline import generate, mtu_fn

    _, pkg_dir, _, data = tiny_package
    mtu, te, codec, sched = reference
    pkg = open_package(pkg_dir)
    image_tasks = [t for t in TASKS if "condition" in _sample(data, t)]
    assert image_tasks
    for task in image_tasks:
        item = _sample(data, task)
        cond, mask = item["condition"], item.get("mask")
        spec = next(t for t in mtu.tasks if t.name == task)
        dist = {}
        for strength in (0.25, 1.0):
            got = pkg.generate(task, item["prompt"], image=cond, mask=mask, steps=8, seed=3, strength=strength)
            want = generate(mtu_fn(mtu, task), spec, [item["prompt"]], text_encoder=te, codec=codec,
                            scheduler_config=sched, condition=cond[None], mask=None if mask is None else mask[None],
                            height=16, width=16, steps=8, seed=3, strength=strength)
            err = float(np.abs(got - want).max())
            assert err < IMAGE_TOLERANCE, (task, strength, err)
            dist[strength] = float(np.abs(got[0] - np.clip(cond, -1, 1)).mean())
        # two steps from the lightly noised condition stay near it; from pure noise they do not
        assert dist[0.25] < dist[1.0], (task, dist)
    with pytest.raises(ConfigError, match="task 't2i' takes none"):
        pkg.generate("t2i", "a red circle", steps=4, strength=0.5)
    with pytest.raises(ConfigError, match="strength 0.1 with 4 steps runs no denoising step"):
        pkg.generate(image_tasks[0], "", image=_sample(data, image_tasks[0])["condition"],
                     mask=_sample(data, image_tasks[0]).get("mask"), steps=4, strength=0.1)


def test_batch_of_prompts_runs_in_chunks_of_the_graph_batch(tiny_package):
    """The graphs have a static batch of 1: three prompts run as three chunks. The noise of
    row 0 is the first draw of the seeded generator, so row 0 equals a one-prompt call."""
    _, pkg_dir, _, _ = tiny_package
    pkg = open_package(pkg_dir)
    assert pkg.manifest["sample"]["batch"] == 1
    prompts = ["a red circle", "a blue square", "a green triangle"]
    batch = pkg.generate("t2i", prompts, steps=3, seed=1)
    one = pkg.generate("t2i", prompts[0], steps=3, seed=1)
    assert batch.shape == (3, 3, 16, 16)
    assert float(np.abs(batch[0] - one[0]).max()) < 1e-6
    assert float(np.abs(batch[0] - batch[1]).max()) > 1e-2


def test_sessions_are_reused_and_share_the_backbone(tiny_package):
    _, pkg_dir, _, _ = tiny_package
    pkg = open_package(pkg_dir)
    first = pkg.unet("edit")
    assert pkg.unet("edit") is first
    for t in TASKS:
        pkg.unet(t)
    indexes = [json.loads((pkg_dir / g["weight_index"]).read_text())["initializers"]
               for g in pkg.manifest["graphs"] if g["format"] == "onnx"]
    total = sum(len(i) for i in indexes)
    shared = {(r["offset"], r["length"]) for i in indexes for r in i if r["file"] == "shared.weights"}
    own = sum(1 for i in indexes for r in i if r["file"] != "shared.weights")
    # one ONNX Runtime value per distinct tensor: the backbone's are made once for five tasks
    assert len(pkg._weights.values) == len(shared) + own < total
    root = pkg_dir.resolve()
    assert sorted(Path(m).relative_to(root).as_posix() for m in pkg._weights.maps) == \
        sorted({f"onnx/{r['file']}" for i in indexes for r in i})
    # unshared sessions compute the same thing
    a = open_package(pkg_dir, share_weights=False).generate("t2i", "a red circle", steps=2, seed=0)
    b = pkg.generate("t2i", "a red circle", steps=2, seed=0)
    assert float(np.abs(a - b).max()) < IMAGE_TOLERANCE  # packed and unpacked kernels sum in another order


def test_cli_run_writes_an_image_for_every_task(tiny_package, tmp_path, capsys):
    _, pkg_dir, _, data = tiny_package
    for task in TASKS:
        item_rows = [json.loads(line) for line in open(data / "metadata.jsonl")]
        row = next(r for r in item_rows if r["task"] == task)
        args = ["run", str(pkg_dir), "--task", task, "--prompt", row["prompt"], "--steps", "3",
                "--out", str(tmp_path / f"{task}.png")]
        if "condition" in row:
            args += ["--strength", "0.7"]
        if "condition" in row:
            args += ["--image", str(data / row["condition"])]
        if "mask" in row:
            args += ["--mask", str(data / row["mask"])]
        assert main(args) == 0, capsys.readouterr().err
        with Image.open(tmp_path / f"{task}.png") as im:
            assert im.size == (16, 16) and im.mode == "RGB"
            assert np.asarray(im).std() > 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t}.png" for t in TASKS)


def test_onnx_path_imports_neither_torch_nor_diffusers(tiny_package, tmp_path):
    _, pkg_dir, _, data = tiny_package
    row = next(json.loads(line) for line in open(data / "metadata.jsonl") if '"edit"' in line)
    code = (
        "import sys\n"
        "from taskfold.cli import main\n"
        "from taskfold.runtime import open_package\n"
        f"pkg = open_package({str(pkg_dir)!r})\n"
        "for t in pkg.tasks:\n"
        "    pkg.unet(t)\n"
        "pkg.generate('t2i', 'a red circle', steps=2)\n"
        f"assert main(['run', {str(pkg_dir)!r}, '--task', 'edit', '--prompt', 'x', '--image', "
        f"{str(data / row['condition'])!r}, '--steps', '2', '--out', {str(tmp_path / 'o.png')!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "o.png").is_file()
