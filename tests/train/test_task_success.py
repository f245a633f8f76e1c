"""The task-success metrics: the analyser holds on degraded targets, and each task's score tells
a target that did the job from the condition that did not."""

import math
from dataclasses import replace

import numpy as np
import pytest

from taskfold.train import shapes
from taskfold.train.analyser import analyse
from taskfold.train.metrics import (edit_check, edit_success, edit_success_asked_only, inpaint_mask_success,
                                    inpaint_success, mean_interval, move_displacement, t2i_success, task_scores,
                                    wilson_interval)
from taskfold.train.shapes import ALL_TASKS, make_row


def degrade(image: np.ndarray, rng: np.random.Generator, sigma: float, noise: float, shift: int) -> np.ndarray:
    """Blur by ``sigma``, roll by up to ``shift`` pixels, add Gaussian noise of std ``noise`` (0-255 scale)."""
    out = shapes.gaussian_blur(image.astype(np.float64), sigma) if sigma > 0 else image.astype(np.float64)
    if shift:
        out = np.roll(out, tuple(int(v) for v in rng.integers(-shift, shift + 1, size=2)), axis=(0, 1))
    out = out + rng.normal(0, noise, out.shape) if noise else out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def soft_corners(image: np.ndarray) -> np.ndarray:
    """Round corners the way samples show them: render at 1/2 resolution and upsample bilinearly."""
    from PIL import Image

    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((w // 2, h // 2), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def shape_colour_accuracy(size: int, n: int, seed: int, fn) -> float:
    hits = total = 0
    rng = np.random.default_rng(seed)
    for task in ALL_TASKS:
        for i in range(n):
            _, images, extra = make_row(task, seed, i, size)
            got = analyse(fn(images["target"], rng))
            hits += (got.shape, got.colour) == (extra["object"]["shape"], extra["object"]["colour"])
            total += 1
    return hits / total


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5])
def test_analyser_holds_on_blurred_noisy_shifted_targets(size, sigma):
    """Measured on 300 targets per setting (seed 3): 100 % shape and colour at sigma 0.5, 1.0 and 1.5
    with noise std 6 and shifts up to 1 px, at 32 and 64 px. Here 150 targets per setting."""
    acc = shape_colour_accuracy(size, 30, 3, lambda im, rng: degrade(im, rng, sigma, noise=6.0, shift=1))
    assert acc >= 0.98, acc


@pytest.mark.parametrize("size", [32, 64])
def test_analyser_holds_on_soft_corners(size):
    acc = shape_colour_accuracy(size, 30, 4, lambda im, rng: degrade(soft_corners(im), rng, 0.5, 4.0, 0))
    assert acc >= 0.98, acc


def rows(task: str, n: int, seed: int = 21, size: int = 32):
    """Dataset-like items (``[3, H, W]`` in [-1, 1]) of the shapes world with their meta."""
    out = []
    for i in range(n):
        prompt, images, extra = make_row(task, seed, i, size)
        item = {"prompt": prompt, "meta": extra,
                "target": images["target"].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1}
        if "condition" in images:
            cond = images["condition"]
            if cond.shape != images["target"].shape:  # sr: upsampled back as the dataset loader does
                from PIL import Image

                cond = np.asarray(Image.fromarray(cond).resize((size, size), Image.Resampling.BICUBIC))
            item["condition"] = cond.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
        out.append(item)
    return out


@pytest.mark.parametrize("task,fn", [("t2i", t2i_success), ("edit", edit_success),
                                     ("inpaint", inpaint_success), ("inpaint-mask", inpaint_mask_success)])
def test_success_separates_target_from_condition(task, fn):
    """Blurred targets did the job (>= 95 %); the unchanged condition image (or a wrong scene) did not.

    Measured (60 rows, seed 21): targets 100 % for every task; conditions: edit 0 %, inpaint 0 %,
    inpaint-mask 0 % (the masked box hides the object)."""
    items = rows(task, 60)
    rng = np.random.default_rng(0)

    def unit(a):
        return np.clip((a.transpose(1, 2, 0) + 1) / 2, 0, 1)

    def blurred(a):
        return degrade(np.rint(unit(a) * 255).astype(np.uint8), rng, 1.0, 4.0, 0).astype(np.float64) / 255

    on_target = np.mean([fn(blurred(it["target"]), it) for it in items])
    assert on_target >= 0.95, on_target
    if task == "t2i":  # a scene of another row's object: passes only where the prompt happens to fit it
        wrong = np.mean([fn(blurred(items[(i + 1) % 60]["target"]), it) for i, it in enumerate(items)])
        assert wrong <= 0.15, wrong
    else:
        on_condition = np.mean([fn(blurred(it["condition"]), it) for it in items])
        assert on_condition <= 0.05, on_condition


def test_t2i_success_wants_the_one_asked_object():
    bg = np.broadcast_to(np.array(shapes.BACKGROUNDS["light grey"], dtype=np.float64), (32, 32, 3))
    square = shapes.ShapeObject("square", "green", "small", 9.0, 9.0)
    item = {"prompt": "a small green square"}
    assert t2i_success(shapes.render(bg, [square]) / 255, item)
    twice = shapes.render(bg, [square, shapes.ShapeObject("circle", "green", "small", 23.0, 23.0)])
    assert not t2i_success(twice / 255, item)  # the largest object is right, but the scene has two
    assert not t2i_success(shapes.render(bg, [square]) / 255, {"prompt": "a small green circle"})


def test_edit_success_checks_each_kind_of_edit():
    bg = np.broadcast_to(np.array(shapes.BACKGROUNDS["white"], dtype=np.float64), (32, 32, 3))
    src = shapes.ShapeObject("square", "red", "large", 12.0, 16.0)
    condition = shapes.render(bg, [src]).transpose(2, 0, 1) / 127.5 - 1

    def score(obj, prompt, kind, dst):
        item = {"prompt": prompt, "meta": {"source": src.to_dict(), "object": dst.to_dict(), "edit": kind},
                "condition": condition}
        ok = edit_success(shapes.render(bg, [obj]) / 255, item)
        assert ok <= edit_success_asked_only(shapes.render(bg, [obj]) / 255, item)  # strict passes less
        return ok

    moved = shapes.ShapeObject("square", "red", "large", 19.0, 16.0)
    assert score(moved, "move the square right", "move", moved)
    assert not score(src, "move the square right", "move", moved)  # unchanged
    assert not score(shapes.ShapeObject("square", "red", "large", 5.0, 16.0), "move the square right", "move", moved)
    assert not score(shapes.ShapeObject("square", "red", "large", 19.0, 23.0), "move the square right", "move", moved)
    assert not score(shapes.ShapeObject("circle", "red", "large", 19.0, 16.0), "move the square right", "move", moved)
    blue = shapes.ShapeObject("square", "blue", "large", 12.0, 16.0)
    assert score(blue, "make the square blue", "colour", blue)
    assert not score(src, "make the square blue", "colour", blue)
    small = shapes.ShapeObject("square", "red", "small", 12.0, 16.0)
    assert score(small, "make the square smaller", "size", small)
    assert not score(src, "make the square smaller", "size", small)
    assert not score(shapes.ShapeObject("square", "blue", "small", 12.0, 16.0), "make the square smaller", "size",
                     small)  # resized, but recoloured too
    # the strict metric: the asked change is made, but something else changed too
    assert not score(shapes.ShapeObject("square", "blue", "large", 20.0, 16.0), "make the square blue", "colour",
                     blue)  # recoloured and moved
    assert not score(shapes.ShapeObject("square", "red", "large", 26.0, 16.0), "move the square right", "move",
                     moved)  # moved twice as far
    assert not score(shapes.ShapeObject("square", "red", "small", 19.0, 16.0), "move the square right", "move",
                     moved)  # moved and shrunk
    assert not score(shapes.ShapeObject("square", "red", "small", 12.0, 21.0), "make the square smaller", "size",
                     small)  # shrunk and moved down


def items_with_outputs(n: int, seed: int):
    """Edit rows (as the dataset loader gives them) and their targets as uint8 images."""
    items = rows("edit", n, seed=seed)
    return items, [np.rint((it["target"].transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8) for it in items]


@pytest.mark.parametrize("sigma, noise, shift", [(0.5, 6.0, 1), (1.0, 6.0, 1), (1.5, 6.0, 0), (1.0, 10.0, 0)])
def test_strict_edit_metric_passes_degraded_targets(sigma, noise, shift):
    """The strict metric on blurred, noisy, shifted and soft-cornered targets: >= 98 %.

    Measured (200 rows each, seed 31): 100 % at sigma 0.5 (noise std 6, 1 px shifts), 99.0 % at sigma 1.0,
    100 % at sigma 1.5 without a shift and at sigma 1 with noise std 10; soft corners 100 %. At sigma 1.5
    with 1 px shifts 97.5 %: the five misses are all "objects", where ``np.roll`` wraps a blurred edge
    across the border into a second blob (an artefact of this degradation, so not tested). Here 100 rows
    per setting."""
    items, targets = items_with_outputs(100, 31)
    rng = np.random.default_rng(1)
    ok = [edit_success(degrade(t, rng, sigma, noise, shift) / 255, it) for t, it in zip(targets, items)]
    assert np.mean(ok) >= 0.98, [edit_check(degrade(t, rng, sigma, noise, shift) / 255, it)
                                 for t, it, o in zip(targets, items, ok) if not o]
    soft = [edit_success(degrade(soft_corners(t), rng, 0.5, 4.0, 0) / 255, it) for t, it in zip(targets, items)]
    assert np.mean(soft) >= 0.98


def regenerated(item: dict, change: str, rng) -> np.ndarray:
    """The target re-drawn with one attribute the instruction did not ask for changed as well (what a model that
    re-generates the scene does): another background, another place, another size or colour, a second object."""
    meta = item["meta"]
    dst = shapes.ShapeObject(**{k: meta["object"][k] for k in ("shape", "colour", "size", "x", "y")})
    bg_name = min(shapes.BACKGROUNDS, key=lambda b: np.linalg.norm(
        np.array(shapes.BACKGROUNDS[b]) - (item["condition"][:, 0, 0] + 1) * 127.5))
    bg = np.broadcast_to(np.array(shapes.BACKGROUNDS[bg_name], dtype=np.float64), (32, 32, 3))
    objects = [dst]
    if change == "background":
        other = [b for b in shapes.BACKGROUNDS if b != bg_name][int(rng.integers(2))]
        bg = np.broadcast_to(np.array(shapes.BACKGROUNDS[other], dtype=np.float64), (32, 32, 3))
    elif change == "position":  # the object elsewhere: at least a move's shift from its place
        while True:
            moved = shapes.random_object(rng, 32, shape=dst.shape, colour=dst.colour, obj_size=dst.size)
            if np.hypot(moved.x - dst.x, moved.y - dst.y) >= shapes.MOVE_FRACTION * 32:
                break
        objects = [moved]
    elif change == "size" and meta["edit"] != "size":
        other = "small" if dst.size == "large" else "large"
        r = shapes.OBJECT_SIZES[other] * 32 + shapes.MARGIN
        objects = [replace(dst, size=other, x=float(np.clip(dst.x, r, 32 - r)), y=float(np.clip(dst.y, r, 32 - r)))]
    elif change == "colour" and meta["edit"] != "colour":
        objects = [replace(dst, colour=[c for c in shapes.PALETTE if c != dst.colour][int(rng.integers(5))])]
    elif change == "objects":  # a second, small object beside it, where one fits 3 px clear of it (closer, the
        # blur of a sample joins the two into one blob the analyser reads as one object)
        extras = (shapes.random_object(rng, 32, obj_size="small") for _ in range(1000))
        extra = next((e for e in extras if shapes._apart(dst, e, 32, gap=3.0)), None)
        if extra is None:
            return None
        objects = [dst, extra]
    else:
        return None
    return shapes.render(bg, objects)


@pytest.mark.parametrize("change", ["background", "position", "size", "colour", "objects"])
def test_strict_edit_metric_fails_re_generated_scenes(change):
    """The asked change made, but one attribute not asked for changed too: the strict metric fails >= 98 % of them
    and names that attribute; the earlier metric passes many.

    Measured (200 rows, seed 32; rows where the change applies): the strict metric fails 100 % of each kind —
    another background (200 rows; the earlier metric passes 100 %), another place (200; earlier 67 %), another
    size (129; earlier 98 %), another colour (138; earlier 0 %), a second object (74; earlier 54 %)."""
    items, _ = items_with_outputs(100, 32)
    rng = np.random.default_rng(2)
    scored = [(regenerated(it, change, rng), it) for it in items]
    scored = [(degrade(im, rng, 1.0, 4.0, 0) / 255, it) for im, it in scored if im is not None]
    assert len(scored) >= 25
    wrong = [edit_check(im, it) for im, it in scored]
    assert np.mean([bool(w) for w in wrong]) >= 0.98
    assert np.mean([change in w for w in wrong]) >= 0.95, wrong
    lenient = np.mean([edit_success_asked_only(im, it) for im, it in scored])
    if change == "background":
        assert lenient >= 0.9


def test_move_displacement_is_along_and_across_the_asked_direction():
    src = {"x": 10.0, "y": 20.0}
    assert move_displacement((3.0, 21.5), src, "left") == (7.0, 1.5)
    assert move_displacement((3.0, 21.5), src, "right") == (-7.0, 1.5)
    assert move_displacement((12.0, 13.0), src, "up") == (7.0, 2.0)
    assert move_displacement((12.0, 13.0), src, "down") == (-7.0, 2.0)


def test_intervals():
    # Wilson 95 % for 5 of 16, by hand: centre (0.3125 + 3.8416/32) / (1 + 3.8416/16) = 0.34881,
    # half 1.96 sqrt(0.3125 x 0.6875 / 16 + 3.8416 / 1024) / 1.2401 = 0.20716
    lo, hi = wilson_interval(5, 16)
    assert (lo, hi) == (pytest.approx(0.14165, abs=1e-4), pytest.approx(0.55597, abs=1e-4))
    assert wilson_interval(0, 64)[0] == 0.0 and wilson_interval(64, 64)[1] == 1.0
    assert wilson_interval(64, 64)[0] == pytest.approx(0.94340, abs=1e-4)
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0, 4.0, math.nan])
    half = 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert (mean, lo, hi) == (2.5, pytest.approx(2.5 - half), pytest.approx(2.5 + half))


def test_task_scores_reports_rates_intervals_and_gain():
    items = rows("inpaint", 20)
    outputs = np.stack([it["target"] * 0.97 for it in items[:15]] + [it["condition"] for it in items[15:]])
    got = task_scores("inpaint", outputs, items)
    assert (got["n"], got["successes"], got["success_rate"]) == (20, 15, 0.75)
    assert got["success_interval"] == list(wilson_interval(15, 20))
    assert [p["success"] for p in got["per_sample"]] == [True] * 15 + [False] * 5
    assert got["psnr_gain_db"] == pytest.approx(np.mean([p["psnr_gain_db"] for p in got["per_sample"]]))
    assert all(p["psnr_gain_db"] > 0 for p in got["per_sample"][:15])
    assert all(p["psnr_gain_db"] == 0 for p in got["per_sample"][15:])

    sr = rows("sr", 8)
    got = task_scores("sr", np.stack([it["condition"] for it in sr]), sr)
    assert "success_rate" not in got and got["psnr_gain_db"] == 0.0


def test_success_is_counted_per_kind_of_edit_and_removal():
    from taskfold.benchmarks.evaluate import format_kinds

    items = rows("edit", 30)
    kinds = [it["meta"]["edit"] for it in items]
    # the target for every recolour, the unchanged condition for every move and resize
    outputs = np.stack([it["target"] if k == "colour" else it["condition"] for it, k in zip(items, kinds)])
    got = task_scores("edit", outputs, items)
    names = {"colour": "recolour", "move": "move", "size": "resize"}
    want = {names[k]: [kinds.count(k) if k == "colour" else 0, kinds.count(k)] for k in sorted(set(kinds))}
    assert got["success_by_kind"] == dict(sorted(want.items())) and set(want) == {"recolour", "move", "resize"}
    assert got["successes"] == kinds.count("colour")
    assert format_kinds(got) == ", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(want.items()))
    # the earlier metric, scored on the same outputs beside it
    assert got["also"]["asked_only"]["success_by_kind"] == got["success_by_kind"]
    assert [p["wrong"] for p in got["per_sample"]][kinds.index("move")] == ["position"]

    items = rows("inpaint", 30)
    large = [it["meta"]["object"]["size"] == "large" for it in items]
    got = task_scores("inpaint", np.stack([it["target"] for it in items]), items)
    assert got["success_by_kind"] == {"both objects small": [30 - sum(large)] * 2, "kept object large": [sum(large)] * 2}
    assert 0 < sum(large) < 30
    assert "success_by_kind" not in task_scores("t2i", np.stack([it["target"] for it in rows("t2i", 4)]), rows("t2i", 4))
