"""The call options of diffusers' pipelines on ``Package.generate``: negative prompt, images per prompt, another
size (dynamic packages), a step callback and a progress bar — each defined so every runtime gives the same images.

The sampler's side is checked with a stand-in model that records what each UNet evaluation was given; the
package's side on the shared tiny package (static, 16x16) and the same model exported with ``--dynamic``,
against the PyTorch reference sampler at another size.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from taskfold.cli import main
from taskfold.errors import ConfigError
from taskfold.runtime import open_package
from taskfold.runtime.progress import ProgressBar
from taskfold.runtime.sampler import Model, sample
from taskfold.runtime.schedulers import SchedulerConfig, make_scheduler
from taskfold.tasks import BUILTIN_TASKS

from .test_package import IMAGE_TOLERANCE, _sample


# --- the sampler: what each evaluation reads ------------------------------------------------------

def _recording_model(calls):
    """Text states that name their prompt (its length + 1 in every element), a UNet that records the states."""
    def encode_text(prompts):
        return np.stack([np.full((2, 4), len(p) + 1, np.float32) for p in prompts])

    def unet(x, t, h):
        calls.append(h[:, 0, 0].copy())
        return x[:, :3] * np.float32(0.1)
    return Model(unet, encode_text, lambda im: im, lambda z: z, max_batch=None)


@pytest.mark.parametrize("task, evaluations", [("t2i", ["neg", "text"]), ("edit", ["neg", "neg", "text"])])
def test_a_negative_prompt_replaces_the_empty_prompt_in_every_unconditional_evaluation(task, evaluations):
    """Text guidance: (negative, prompt); dual guidance as StableDiffusionInstructPix2PixPipeline: (negative,
    negative, prompt) with images (zeros, image, image)."""
    spec = BUILTIN_TASKS[task]
    cond = np.zeros((2, 3, 4, 4), np.float32) if spec.needs_condition else None
    kw = dict(scheduler_config={}, latent_shape=(3, 4, 4), condition=cond, steps=2, strength=1.0, seed=1)
    calls = []
    sample(_recording_model(calls), spec, ["a", "bb"], negative_prompts=["cccc", "ddddd"], **kw)
    want = {"neg": [5, 6], "text": [2, 3]}  # len + 1 of each row's prompt
    assert len(calls) == 2  # one batched call per step
    for got in calls:
        np.testing.assert_array_equal(got, np.concatenate([want[e] for e in evaluations]))
    calls_empty, calls_none = [], []
    a = sample(_recording_model(calls_empty), spec, ["a", "bb"], negative_prompts=["", ""], **kw)
    b = sample(_recording_model(calls_none), spec, ["a", "bb"], **kw)
    np.testing.assert_array_equal(a, b)  # empty negative prompts are today's sampling
    assert [c.tolist() for c in calls_empty] == [c.tolist() for c in calls_none]
    assert calls_none[0][0] == 1  # the empty prompt's states


@pytest.mark.parametrize("task, scales, batch", [("t2i", {"guidance_scale": 1.0}, 2),
                                                 ("t2i", {"guidance_scale": 1.5}, 4),
                                                 ("edit", {"guidance_scale": 1.0, "image_guidance_scale": 1.0}, 2),
                                                 ("edit", {"guidance_scale": 1.0, "image_guidance_scale": 1.2}, 6),
                                                 ("edit", {"guidance_scale": 1.5, "image_guidance_scale": 1.0}, 6)])
def test_guidance_scales_of_one_skip_the_unconditional_evaluations(task, scales, batch):
    """At scale 1 the guided prediction is the conditioned one, so (as in diffusers) only that is evaluated;
    the images are those of the full guidance arithmetic."""
    spec = BUILTIN_TASKS[task]
    cond = np.full((2, 3, 4, 4), 0.25, np.float32) if spec.needs_condition else None
    kw = dict(scheduler_config={}, latent_shape=(3, 4, 4), condition=cond, steps=3, strength=1.0, seed=4)

    def unet(x, t, h):  # depends on the text states and the image channels, so a skipped branch would show
        calls.append(x.shape[0])
        return np.tanh(x[:, :3] * np.float32(0.3) + x[:, 3:].sum(axis=(1, 2, 3))[:, None, None, None] * np.float32(0.01)
                       + h[:, :1, :1, None])
    calls = []
    model = Model(unet, _recording_model([]).encode_text, lambda im: im, lambda z: z, max_batch=None)
    got = sample(model, spec, ["a", "bb"], **scales, **kw)
    assert calls == [batch] * 3, calls
    if batch == 2:  # the skipped arithmetic, written out: the three-branch combination equals the full branch
        calls.clear()
        model_split = Model(unet, model.encode_text, lambda im: im, lambda z: z, max_batch=1)
        forced = sample(model_split, spec, ["a", "bb"], **{k: v + 1e-9 for k, v in scales.items()}, **kw)
        assert calls == [2] * (3 * (3 if task == "edit" else 2)), calls
        np.testing.assert_allclose(got, forced, rtol=0, atol=1e-5)


def test_a_negative_prompt_is_refused_where_nothing_reads_it():
    kw = dict(scheduler_config={}, latent_shape=(3, 4, 4), steps=2, strength=1.0)
    with pytest.raises(ConfigError, match="task 'sr' uses no classifier-free guidance on text"):
        sample(_recording_model([]), BUILTIN_TASKS["sr"], [""], condition=np.zeros((1, 3, 4, 4), np.float32),
               negative_prompts=["blurry"], **kw)
    with pytest.raises(ConfigError, match="2 negative prompts for 3 prompts"):
        sample(_recording_model([]), BUILTIN_TASKS["t2i"], ["a", "b", "c"], negative_prompts=["x", "y"], **kw)


def test_the_step_callback_sees_every_step_that_runs_and_may_replace_the_latents():
    spec = BUILTIN_TASKS["edit"]
    cond = np.full((1, 3, 4, 4), 0.5, np.float32)
    kw = dict(scheduler_config={}, latent_shape=(3, 4, 4), condition=cond, steps=8, strength=0.5, seed=2,
              scheduler="euler-a")
    seen = []
    out = sample(_recording_model([]), spec, ["x"], callback=lambda i, t, x: seen.append((i, t, x.copy())), **kw)
    timesteps = make_scheduler("euler-a", SchedulerConfig(), 8).timesteps
    assert [s[0] for s in seen] == [0, 1, 2, 3]  # int(8 x 0.5) steps run, numbered from 0
    assert [s[1] for s in seen] == [float(t) for t in timesteps[4:]]
    np.testing.assert_array_equal(seen[-1][2], out)  # the identity codec decodes the last latents as they are
    np.testing.assert_array_equal(out, sample(_recording_model([]), spec, ["x"], **kw))  # watching changes nothing
    halved = sample(_recording_model([]), spec, ["x"], callback=lambda i, t, x: x * 0 if i == 3 else None, **kw)
    np.testing.assert_array_equal(halved, np.zeros_like(out))
    with pytest.raises(ConfigError, match=r"the step callback returned shape \[3\]; the latents are \[1, 3, 4, 4\]"):
        sample(_recording_model([]), spec, ["x"], callback=lambda i, t, x: np.zeros(3), **kw)


def test_the_progress_bar_counts_the_steps_that_run_and_draws_only_on_a_terminal():
    spec = BUILTIN_TASKS["t2i"]
    kw = dict(scheduler_config={}, latent_shape=(3, 4, 4), steps=5, seed=0)
    drawn = io.StringIO()
    sample(_recording_model([]), spec, ["x"], progress=ProgressBar("t2i", file=drawn, enabled=True, interval=0), **kw)
    frames = drawn.getvalue().split("\r")[1:]
    assert [re.search(r"\| (\d+/\d+) \[", f).group(1) for f in frames] == [f"{i}/5" for i in range(6)]
    assert frames[-1].startswith("t2i 100%|" + "█" * 20 + "| 5/5 [") and frames[-1].endswith("it/s]\n")
    piped = io.StringIO()  # not a terminal: nothing at all
    sample(_recording_model([]), spec, ["x"], progress=ProgressBar("t2i", file=piped), **kw)
    assert piped.getvalue() == ""


# --- the package -------------------------------------------------------------------------------------

def test_images_per_prompt_are_the_repeated_prompts_in_one_noise_draw(tiny_package):
    """n images per prompt = each prompt repeated n times in place, one draw for all rows (diffusers' order)."""
    _, pkg_dir, _, data = tiny_package
    pkg = open_package(pkg_dir)
    kw = dict(steps=3, seed=9, scheduler="euler-a", guidance_scale=3.0)
    got = pkg.generate("t2i", ["a red circle", "a blue square"], num_images_per_prompt=2, **kw)
    want = pkg.generate("t2i", ["a red circle", "a red circle", "a blue square", "a blue square"], **kw)
    assert got.shape == (4, 3, 16, 16)
    np.testing.assert_array_equal(got, want)
    assert float(np.abs(got[0] - got[1]).max()) > 0.05  # two images of one prompt differ
    first = pkg.generate("t2i", "a red circle", **kw | {"scheduler": "ddim"})
    rows = pkg.generate("t2i", "a red circle", num_images_per_prompt=3, **kw | {"scheduler": "ddim"})
    np.testing.assert_array_equal(rows[0], first[0])  # the first row's noise is the first draws
    item = _sample(data, "edit")  # one condition image for every row
    one = pkg.generate("edit", "make it blue", image=item["condition"], num_images_per_prompt=2, steps=2, seed=1,
                       strength=1.0)
    two = pkg.generate("edit", ["make it blue"] * 2, image=item["condition"], steps=2, seed=1, strength=1.0)
    np.testing.assert_array_equal(one, two)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="images per prompt must be a positive integer"):
            pkg.generate("t2i", "x", num_images_per_prompt=bad, steps=1)


def test_negative_prompt_on_the_package(tiny_package):
    _, pkg_dir, _, data = tiny_package
    pkg = open_package(pkg_dir)
    kw = dict(steps=3, seed=4)
    base = pkg.generate("t2i", "a red circle", **kw)
    np.testing.assert_array_equal(base, pkg.generate("t2i", "a red circle", negative_prompt="", **kw))
    neg = pkg.generate("t2i", "a red circle", negative_prompt="a blue square", **kw)
    assert float(np.abs(neg - base).max()) > 0.01
    both = pkg.generate("t2i", ["a red circle"] * 2, negative_prompt=["a blue square", ""], **kw)
    np.testing.assert_array_equal(both[0], neg[0])
    np.testing.assert_array_equal(pkg.generate("t2i", ["a red circle", "a green circle"], num_images_per_prompt=2,
                                               negative_prompt=["a blue square", "red"], **kw),
                                  pkg.generate("t2i", ["a red circle", "a red circle", "a green circle",
                                                       "a green circle"],
                                               negative_prompt=["a blue square", "a blue square", "red", "red"], **kw))
    item = _sample(data, "sr")
    with pytest.raises(ConfigError, match="task 'sr' uses no classifier-free guidance on text"):
        pkg.generate("sr", "", image=item["condition"], negative_prompt="blurry", **kw)


def test_another_size_is_refused_by_name_for_a_static_package(tiny_package):
    _, pkg_dir, _, _ = tiny_package
    pkg = open_package(pkg_dir)
    np.testing.assert_array_equal(pkg.generate("t2i", "x", steps=1, height=16, width=16),
                                  pkg.generate("t2i", "x", steps=1))
    with pytest.raises(ConfigError, match=r"makes 16x16 images only \(asked for 16x24\): t2i's graph has a static "
                                          r"height and width") as e:
        pkg.generate("t2i", "x", steps=1, height=24)
    assert "--dynamic" in e.value.hint
    with pytest.raises(ConfigError, match="height must be a positive number of pixels, got 0"):
        pkg.generate("t2i", "x", steps=1, height=0)


@pytest.fixture(scope="module")
def dynamic_package(tiny_package):
    """The shared tiny package's model exported again with dynamic batch, height and width (16x16 recorded)."""
    root, _, mtu_dir, _ = tiny_package
    out = root / "pkg-dynamic"
    if not (out / "manifest.json").is_file():
        assert main(["export", str(mtu_dir), "--out", str(out), "--height", "16", "--dynamic", "--tasks",
                     "t2i,edit", "--parity-timesteps", "1"]) == 0
    return out


def test_a_dynamic_package_runs_another_size_as_the_pytorch_reference_does(tiny_package, reference_at, dynamic_package):
    from taskfold.train.pipeline import generate, mtu_fn

    _, _, _, data = tiny_package
    mtu, te, codec, sched = reference_at
    pkg = open_package(dynamic_package)
    assert pkg.image_size == (16, 16)
    rng = np.random.RandomState(0)
    cond = np.clip(rng.standard_normal((3, 24, 20)) * 0.5, -1, 1).astype(np.float32)
    for task, image in (("t2i", None), ("edit", cond)):
        got = pkg.generate(task, "a red circle", image=image, steps=3, seed=6, height=24, width=20, strength=1.0)
        spec = next(t for t in mtu.tasks if t.name == task)
        want = generate(mtu_fn(mtu, task), spec, ["a red circle"], text_encoder=te, codec=codec,
                        scheduler_config=sched, condition=None if image is None else image[None], height=24,
                        width=20, steps=3, seed=6)
        assert got.shape == want.shape == (1, 3, 24, 20)
        assert float(np.abs(got - want).max()) < IMAGE_TOLERANCE, task
        assert float(np.abs(want).max()) > 0.05
    # each graph admitted at the package's size, and again at the size it ran
    assert {"onnx/t2i.onnx", "onnx/edit.onnx"} <= set(pkg._reader._admitted)
    assert {k[0]: k[2:] for k in pkg._reader._admitted_at} == {"onnx/t2i.onnx": (24, 20, 24, 20),
                                                               "onnx/edit.onnx": (24, 20, 24, 20)}
    g = pkg.graph("t2i")
    with pytest.raises(ConfigError, match="cannot admit onnx/t2i.onnx at height 513: an integer from 1 to 512"):
        pkg._reader.admit(g["path"], "t2i", g["inputs"], g["outputs"], dims={"height": 513})
    item = _sample(data, "edit")  # a condition image of the package's size is not the asked size
    with pytest.raises(ConfigError, match=r"expected \[B, 3, 24, 20\]"):
        pkg.generate("edit", "x", image=item["condition"], steps=1, height=24, width=20)
    with pytest.raises(ConfigError, match=r"height 18 is not a multiple of 4 \(codec scale 1 x UNet downsampling "
                                          r"4\)"):
        pkg.generate("t2i", "x", steps=1, height=18)
    with pytest.raises(ConfigError, match="width 4100 is past the largest image side a package may run, 512 pixels"):
        pkg.generate("t2i", "x", steps=1, width=4100)


@pytest.fixture(scope="module")
def reference_at(tiny_package):
    from taskfold.upcycle.bundle import find_encoders
    from taskfold.upcycle.checkpoint import load_mtu

    _, _, mtu_dir, _ = tiny_package
    mtu = load_mtu(mtu_dir).eval()
    te, codec = find_encoders(mtu_dir, mtu)
    return mtu, te, codec, json.loads((mtu_dir / "scheduler_config.json").read_text())
