"""The bundled tiny base (``models/tiny-base``) draws what it is asked for.

Its README states the analyser's pass rate on held-out prompts; this checks, on prompts of a
freshly generated dataset, that the committed weights draw the named shape and colour far
above chance: a prompt names one of 3 shapes and one of 6 colours (sometimes a size too), so
an image that ignores the prompt passes for well under 10 % of them.
"""

from __future__ import annotations

import json

import torch

from taskfold.cli import main
from taskfold.demo import bundled_base
from taskfold.train.data import load_dataset
from taskfold.train.metrics import task_scores
from taskfold.train.pipeline import generate, mtu_fn
from taskfold.train.shapes import make_shapes
from taskfold.upcycle.bundle import find_encoders, find_scheduler_config
from taskfold.upcycle.checkpoint import load_mtu


def test_bundled_base_draws_the_named_shape_and_colour(tmp_path):
    base = bundled_base()
    meta = json.loads((base / "taskfold_base.json").read_text())
    assert meta["dtr"] is not None, "the bundled base is the DTR-trained one"
    sched = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    assert sched["beta_schedule"] == "linear", "a pixel base trains on the linear DDPM schedule (no signal at t=T)"
    assert sched["clip_sample"] is True

    make_shapes(tmp_path / "data", n=320, size=32, seed=7, tasks=("t2i",))
    assert main(["upcycle", "--base", str(base), "--tasks", "t2i", "--experts", "1",
                 "--out", str(tmp_path / "mtu")]) == 0
    mtu = load_mtu(tmp_path / "mtu").eval()
    te, codec = find_encoders(tmp_path / "mtu", mtu)
    data = load_dataset(tmp_path / "data", tasks=("t2i",), split="test")
    items = [data[i] for i in data.indices("t2i")[:32]]
    torch.manual_seed(0)
    images = generate(mtu_fn(mtu, "t2i"), mtu.tasks[0], [it["prompt"] for it in items], text_encoder=te,
                      codec=codec, scheduler_config=find_scheduler_config(tmp_path / "mtu", mtu)[0], steps=20,
                      guidance_scale=3.0, seed=0)
    scores = task_scores("t2i", images, items)
    assert scores["n"] == 32
    assert scores["success_rate"] >= 0.6, scores  # README: 54 of 64 held-out prompts (0.84) at guidance 3
