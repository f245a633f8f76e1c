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
    # README: 42 of 64 held-out prompts (0.66) at guidance 3, 18 of these 32; a prompt-blind image passes < 0.1
    assert scores["success_rate"] >= 0.4, scores


def task_word_norms(text_encoder_dir) -> dict[str, float]:
    """L2 norm of the token embedding of every word the built-in tasks' prompts can hold."""
    from taskfold.train.shapes import shapes_world_prompts
    from taskfold.upcycle.text_encoders import count_words, load_text_encoder

    te = load_text_encoder(text_encoder_dir)
    ids = te.tokenizer.get_vocab(with_added_tokens=True)
    weight = te.token_embedding.weight.detach()
    return {w: float(weight[ids[w]].norm()) for w in count_words(shapes_world_prompts())}


def test_bundled_base_text_encoder_trained_every_task_word():
    """Issue 25: every word of the built-in tasks' prompts was in the bundled base's training captions, and its
    embedding left the random initialisation (norm 0.02 x sqrt(dim), 0.16 at dim 64) for the trained range."""
    import math

    import pytest

    from taskfold.upcycle.text_encoders import read_token_counts

    te_dir = bundled_base() / "text_encoder"
    counts = read_token_counts(te_dir)
    if counts is None:
        pytest.skip("the bundled base predates the token record (pretrained on plain captions only); its "
                    "rich-caption successor is being trained: models/tiny-base/README.md, 'In progress'")
    norms = task_word_norms(te_dir)
    assert {w: counts.get(w, 0) for w in norms if counts.get(w, 0) < 100} == {}
    dim = json.loads((te_dir / "config.json").read_text())["dim"]
    init = 0.02 * math.sqrt(dim)
    assert {w: round(n, 3) for w, n in norms.items() if n < 2 * init} == {}
