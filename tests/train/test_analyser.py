"""The pixel analyser: recovers shape, colour and size of generated scenes; rejects noise and wrong prompts."""

import json

import numpy as np
import pytest
from PIL import Image

from taskfold.errors import DataError
from taskfold.train import shapes
from taskfold.train.analyser import analyse, parse_prompt, t2i_pass
from taskfold.train.shapes import ALL_TASKS, ShapeObject, make_row, make_shapes


def accuracy(size, n, seed):
    """Fractions of targets (all five tasks) whose (shape, colour) and (shape, colour, size) are recovered."""
    hits = full = total = 0
    for task in ALL_TASKS:
        for i in range(n):
            _, images, extra = make_row(task, seed, i, size)
            obj, got = extra["object"], analyse(images["target"])
            hits += (got.shape, got.colour) == (obj["shape"], obj["colour"])
            full += (got.shape, got.colour, got.size) == (obj["shape"], obj["colour"], obj["size"])
            total += 1
    return hits / total, full / total


@pytest.mark.parametrize("size", [32, 64])
def test_recovers_shape_colour_and_size(size):
    """Measured on 2,000 targets per size (400 rows x 5 tasks, seed 123): shape + colour + size
    100.0 % at 32x32 and at 64x64 (and at 128x128 on 500); 97.4 % at 16x16, where a small
    triangle is 5 pixels wide and is sometimes read as a circle. Here: 400 targets per size."""
    shape_colour, with_size = accuracy(size, n=80, seed=7)
    assert shape_colour >= 0.95 and with_size >= 0.95, (shape_colour, with_size)


def test_recovers_ground_truth_from_written_files(tmp_path):
    root = tmp_path / "s64"
    make_shapes(root, n=30, size=64, seed=5, tasks=["t2i", "edit"])
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    correct = 0
    for row in rows:
        got = analyse(np.asarray(Image.open(root / row["target"])))
        correct += (got.shape, got.colour, got.size) == tuple(row["object"][k] for k in ("shape", "colour", "size"))
        if row["task"] == "edit":  # the condition shows the object before the edit
            src = analyse(np.asarray(Image.open(root / row["condition"])))
            correct += (src.shape, src.colour, src.size) == tuple(row["source"][k] for k in ("shape", "colour", "size"))
    assert correct / 90 >= 0.95


def test_measures_of_an_ideal_shape():
    bg = np.broadcast_to(np.array(shapes.BACKGROUNDS["white"], dtype=np.float64), (64, 64, 3))
    for shape, fill, skew in (("square", 1.0, 0.0), ("circle", np.pi / 4, 0.0), ("triangle", 0.5, -0.566)):
        image = shapes.render(bg, [ShapeObject(shape, "blue", "large", 31.3, 32.6)])
        got = analyse(image)
        assert (got.found, got.shape, got.colour, got.size) == (True, shape, "blue", "large")
        assert got.fill_ratio == pytest.approx(fill, abs=0.05)
        assert got.skewness == pytest.approx(skew, abs=0.05)
        assert got.centre[0] == pytest.approx(31.3, abs=0.3)
        assert got.confidence > 0.5
        assert got.extent == pytest.approx(2 * 0.28, abs=0.03)


def test_float_images_and_value_ranges():
    _, images, extra = make_row("t2i", 0, 3, 32)
    target = images["target"]
    want = (extra["object"]["shape"], extra["object"]["colour"])
    unit = analyse(target.astype(np.float32) / 255)
    signed = analyse(target.astype(np.float32) / 127.5 - 1, value_range=(-1, 1))
    assert (unit.shape, unit.colour) == want == (signed.shape, signed.colour)
    with pytest.raises(DataError, match=r"expected an RGB image of shape \(H, W, 3\), got shape \(3, 32, 32\)"):
        analyse(target.transpose(2, 0, 1))
    with pytest.raises(DataError, match="expected a uint8 or float image, got dtype int64"):
        analyse(target.astype(np.int64))


def test_rejects_noise_and_empty_images():
    """Uniform noise, Gaussian noise (std 3-60 around a random grey) and blurred, contrast-
    stretched noise: none of the 300 images yields an object (measured: 0 of 300)."""
    found = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        uniform = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        gauss = np.clip(rng.normal(rng.uniform(40, 220), rng.uniform(3, 60), (32, 32, 3)), 0, 255)
        blobs = np.clip((shapes.gaussian_blur(rng.uniform(0, 255, (32, 32, 3)), 2.0) - 128) * 4 + 128, 0, 255)
        for image in (uniform, gauss.astype(np.uint8), blobs.astype(np.uint8)):
            found += analyse(image).found
            assert not t2i_pass(image, "a red circle")
    assert found == 0
    blank = analyse(np.full((32, 32, 3), 200, dtype=np.uint8))
    assert not blank.found and blank.reason == "nothing stands out from the background"


def test_rejects_off_palette_and_non_flat_objects():
    bg = np.full((32, 32, 3), 236.0)
    brown = shapes.coverage(ShapeObject("circle", "red", "large", 16, 16), 32)[:, :, None]
    image = np.rint(bg * (1 - brown) + np.array([130, 90, 40]) * brown).astype(np.uint8)
    got = analyse(image)
    assert not got.found and "from the nearest palette colour" in got.reason
    assert got.colour_distance > 70

    rng = np.random.default_rng(0)
    speckled = bg.copy()
    speckled[8:24, 8:24] = rng.uniform(0, 120, (16, 16, 3))
    got = analyse(speckled.astype(np.uint8))
    assert not got.found and "colour varies" in got.reason


def test_t2i_pass_checks_every_named_attribute():
    bg = np.broadcast_to(np.array(shapes.BACKGROUNDS["dark grey"], dtype=np.float64), (32, 32, 3))
    image = shapes.render(bg, [ShapeObject("square", "yellow", "small", 12.0, 20.0)])
    assert t2i_pass(image, "a yellow square")
    assert t2i_pass(image, "A small Yellow square.")
    assert t2i_pass(image, "something yellow") and t2i_pass(image, "a square")
    assert not t2i_pass(image, "a blue square")
    assert not t2i_pass(image, "a yellow circle")
    assert not t2i_pass(image, "a large yellow square")
    assert not t2i_pass(image, "a yellow square", min_confidence=1.01)


def test_t2i_pass_on_generated_prompts():
    passed = wrong = 0
    for i in range(60):
        prompt, images, extra = make_row("t2i", 11, i, 32)
        passed += t2i_pass(images["target"], prompt)
        other = shapes._pick(np.random.default_rng(i), shapes.PALETTE, exclude=(extra["object"]["colour"],))
        wrong += t2i_pass(images["target"], f"a {other} {extra['object']['shape']}")
    assert (passed, wrong) == (60, 0)


def test_parse_prompt():
    assert parse_prompt("a large blue square") == parse_prompt("A LARGE, blue square!")
    got = parse_prompt("a large blue square")
    assert (got.shape, got.colour, got.size) == ("square", "blue", "large")
    assert parse_prompt("a circle").colour is None
    with pytest.raises(DataError, match="prompt 'a dog' names no shape .circle, square, triangle. and no colour"):
        parse_prompt("a dog")
    with pytest.raises(DataError, match="names more than one colour: blue, red"):
        parse_prompt("a red and blue circle")
