"""The shapes world: deterministic bytes, counts, sizes, what each task's images show, atomic output."""

import hashlib
import json
import time

import numpy as np
import pytest
from PIL import Image

from taskfold.errors import ConfigError, OutputExistsError, TaskError
from taskfold.train import shapes
from taskfold.train.data import check_dataset
from taskfold.train.metrics import gaussian_window, psnr
from taskfold.train.shapes import MASK_FILL, PALETTE, make_row, make_shapes


def digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def rows(root):
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]


def load(root, rel):
    return np.asarray(Image.open(root / rel))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, shapes32):
    again = tmp_path / "again"
    make_shapes(again, n=20, size=32, seed=0, test_fraction=0.2)
    first = digests(shapes32)
    assert digests(again) == first
    assert len(first) == 2 + 20 * (1 + 2 + 2 + 2 + 3)  # metadata, shapes.json, images per task

    other = tmp_path / "other"
    make_shapes(other, n=20, size=32, seed=1, test_fraction=0.2)
    second = digests(other)
    images = [k for k in first if k.endswith(".png")]
    assert sum(first[k] != second[k] for k in images) == len(images)


def test_rows_of_a_task_do_not_depend_on_the_other_tasks(tmp_path, shapes32):
    only = tmp_path / "sr-only"
    make_shapes(only, n=20, size=32, seed=0, tasks=["sr"], test_fraction=0.2)
    full = digests(shapes32)
    assert {k: v for k, v in digests(only).items() if k.startswith("sr/")} == \
           {k: v for k, v in full.items() if k.startswith("sr/")}


def test_counts_splits_and_sizes(shapes32):
    report = check_dataset(shapes32)
    assert report.ok, report.problems
    assert report.counts == {t: {"train": 16, "test": 4} for t in shapes.ALL_TASKS}
    assert dict(report.target_sizes) == {(32, 32): 100}
    for row in rows(shapes32):
        assert load(shapes32, row["target"]).shape == (32, 32, 3)
        if row["task"] == "sr":
            assert load(shapes32, row["condition"]).shape == (16, 16, 3)
            assert row["prompt"] == ""
        elif "condition" in row:
            assert load(shapes32, row["condition"]).shape == (32, 32, 3)
        if row["task"] == "inpaint-mask":
            mask = Image.open(shapes32 / row["mask"])
            assert (mask.mode, mask.size) == ("L", (32, 32))
    info = json.loads((shapes32 / "shapes.json").read_text())
    assert (info["seed"], info["n"], info["size"], info["rows"], info["test_rows_per_task"]) == (0, 20, 32, 100, 4)


def test_prompts_match_the_objects(shapes32):
    for row in rows(shapes32):
        obj, prompt = row["object"], row["prompt"]
        if row["task"] in ("t2i", "inpaint-mask"):
            assert prompt in (f"a {obj['colour']} {obj['shape']}", f"a {obj['size']} {obj['colour']} {obj['shape']}")
        elif row["task"] == "inpaint":
            removed = row["removed"]
            assert prompt == f"remove the {removed['colour']} {removed['shape']}"
            assert (removed["shape"], removed["colour"]) != (obj["shape"], obj["colour"])
        elif row["task"] == "edit":
            src = row["source"]
            changed = {k for k in obj if obj[k] != src[k]}
            assert src["shape"] == obj["shape"]
            if row["edit"] == "colour":
                assert changed == {"colour"} and prompt == f"make the {obj['shape']} {obj['colour']}"
            elif row["edit"] == "size":
                word = "larger" if obj["size"] == "large" else "smaller"
                assert changed == {"size"} and prompt == f"make the {obj['shape']} {word}"
            else:
                direction = prompt.split()[-1]
                dx, dy = shapes.MOVES[direction]
                shift = round(shapes.MOVE_FRACTION * 32)
                assert obj["x"] - src["x"] == pytest.approx(dx * shift, abs=2e-3)
                assert obj["y"] - src["y"] == pytest.approx(dy * shift, abs=2e-3)


def test_task_images_show_what_the_rows_say(shapes32):
    for row in rows(shapes32):
        target = load(shapes32, row["target"]).astype(np.float64)
        if row["task"] == "inpaint-mask":
            cond, mask = load(shapes32, row["condition"]), load(shapes32, row["mask"]) > 0
            assert set(np.unique(load(shapes32, row["mask"]))) == {0, 255}
            assert (cond[mask] == MASK_FILL).all()
            assert (cond[~mask] == target[~mask]).all()
            # the box covers the whole object: the object colour is not left outside it
            colour = np.array(PALETTE[row["object"]["colour"]])
            assert np.linalg.norm(target[~mask] - colour, axis=1).min() > 40
        elif row["task"] == "inpaint":
            cond = load(shapes32, row["condition"]).astype(np.float64)
            diff = np.abs(cond - target).sum(axis=2) > 0
            removed = row["removed"]
            r = shapes.OBJECT_SIZES["small"] * 32 + 1
            ys, xs = np.nonzero(diff)
            assert diff.sum() > 20
            assert (np.abs(xs + 0.5 - removed["x"]) <= r).all() and (np.abs(ys + 0.5 - removed["y"]) <= r).all()
        elif row["task"] == "sr":
            low = Image.open(shapes32 / row["condition"]).resize((32, 32), Image.Resampling.BICUBIC)
            value = psnr(np.asarray(low), target.astype(np.uint8))
            assert 18 < value < 40  # degraded, but the same picture


def test_sr_degradation_is_blur_plus_noise():
    rng = np.random.default_rng(0)
    flat = np.full((32, 32, 3), 128, dtype=np.uint8)
    low = shapes.degrade_for_sr(flat, rng).astype(np.float64)
    assert low.shape == (16, 16, 3)
    # Poisson noise at 500-5000 photons: std of 128/255 * 255 / sqrt(peak) is 2.3-7.2 levels
    assert 1.5 < low.std() < 8.0 and abs(low.mean() - 128) < 2
    step = np.zeros((32, 32, 3), dtype=np.uint8)
    step[:, 16:] = 255
    blurred = shapes.gaussian_blur(step.astype(np.float64), 1.0)
    centre = gaussian_window(1.0, 3)[3]  # radius ceil(3 sigma)
    assert blurred[0, 15, 0] == pytest.approx(255 * (1 - centre) / 2, abs=1e-9)  # half the off-centre weight
    assert blurred[0, 0, 0] == 0 and blurred[0, 31, 0] == pytest.approx(255)


def test_coverage_areas_match_the_geometry():
    for shape, area in (("circle", np.pi), ("square", 4.0), ("triangle", 2.0)):
        obj = shapes.ShapeObject(shape, "red", "large", 32.3, 31.7)
        r = obj.half_extent(64)
        # 4x4 samples per pixel place an edge to a quarter pixel: within 2 % at this size
        assert shapes.coverage(obj, 64).sum() == pytest.approx(area * r * r, rel=0.02)


def test_output_is_atomic_and_refuses_to_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "data"
    make_shapes(out, n=2, size=16, seed=0)
    with pytest.raises(OutputExistsError, match="already exists"):
        make_shapes(out, n=3, size=16, seed=0)
    before = digests(out)
    calls = []

    def failing_save(array, path):
        calls.append(path)
        if len(calls) == 5:
            raise OSError("disk full")
        Image.fromarray(array).save(path)

    monkeypatch.setattr(shapes, "_save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        make_shapes(out, n=3, size=16, seed=1, overwrite=True)
    assert digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 0}, ConfigError, "--n must be a positive number of rows per task, got 0"),
    ({"size": 33}, ConfigError, "--size must be an even number of pixels from 16 to 1024, got 33"),
    ({"size": 8}, ConfigError, "got 8"),
    ({"seed": -1}, ConfigError, "--seed must be a non-negative integer, got -1"),
    ({"test_fraction": 1.0}, ConfigError, r"--test-fraction must be in \[0, 1\), got 1.0"),
    ({"tasks": ["t2i", "colorize"]}, TaskError, "unknown task.*'colorize'; known tasks: t2i, edit, sr"),
])
def test_bad_arguments(tmp_path, kwargs, error, match):
    args = {"n": 2, "size": 16, "seed": 0} | kwargs
    with pytest.raises(error, match=match):
        make_shapes(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_make_row_is_a_pure_function_of_seed_task_index():
    a = make_row("edit", 3, 7, 32)
    b = make_row("edit", 3, 7, 32)
    assert a[0] == b[0] and a[2] == b[2]
    assert all((a[1][k] == b[1][k]).all() for k in a[1])


def test_generation_speed(tmp_path):
    """1000 rows (200 per task) of 32x32 measured 0.7 s on the development machine (2 cores)."""
    start = time.perf_counter()
    info = make_shapes(tmp_path / "speed", n=200, size=32, seed=0)
    elapsed = time.perf_counter() - start
    assert info["rows"] == 1000
    assert elapsed < 10.0, f"1000 rows took {elapsed:.1f} s"


# --- rich t2i captions (pretraining a base) ---------------------------------------------------------

def words(prompts):
    """The tiny tokenizer's words of ``prompts``, counted."""
    from collections import Counter

    from taskfold.upcycle.text_encoders import _normalizer, _pre_tokenizer

    norm, pre = _normalizer(), _pre_tokenizer()
    return Counter(w for p in prompts for w, _ in pre.pre_tokenize_str(norm.normalize_str(p)))


@pytest.fixture(scope="module")
def rich_rows():
    return [make_row("t2i", 1, i, 32, captions="rich") for i in range(1500)]


def test_rich_captions_use_every_word_of_every_built_in_tasks_prompts(rich_rows):
    """Every word a built-in task's rows can hold (all the shapes world's prompts, and the prompts its row
    makers actually drew) appears in the rich captions, at least 1 % of rows each."""
    needed = set(words(shapes.shapes_world_prompts()))
    needed |= set(words(make_row(task, 2, i, 32)[0] for task in shapes.ALL_TASKS for i in range(200)))
    got = words(p for p, _, _ in rich_rows)
    assert needed - set(got) == set()
    rare = {w: got[w] for w in needed if got[w] < 0.01 * len(rich_rows)}
    assert not rare, rare
    # every caption fits the tiny encoder's 16 tokens with [BOS] and [EOS]
    assert max(sum(words([p]).values()) for p, _, _ in rich_rows) <= 14


def test_rich_captions_keep_plain_captions_a_half(rich_rows):
    kinds = [extra["caption"] for _, _, extra in rich_rows]
    assert set(kinds) == set(shapes.RICH_CAPTIONS)
    assert 0.45 < kinds.count("plain") / len(kinds) < 0.55
    for prompt, _, extra in rich_rows:
        if extra["caption"] == "plain":
            obj = extra["object"]
            assert prompt in (f"a {obj['colour']} {obj['shape']}", f"a {obj['size']} {obj['colour']} {obj['shape']}")


def test_rich_captions_say_what_the_image_shows(rich_rows):
    """Read back from the pixels with the analyser: position words name the part of the image the centre is
    in, relations and comparisons hold between the two objects, an instruction's image is its result."""
    from taskfold.train.analyser import analyse_all

    side = 32
    low, high = shapes.REGION * side, (1 - shapes.REGION) * side
    checked = unread = 0
    for prompt, images, extra in rich_rows[:600]:
        kind, objs = extra["caption"], extra["objects"]
        found = analyse_all(images["target"])
        if sorted((a.shape, a.colour) for a in found) != sorted((o["shape"], o["colour"]) for o in objs):
            # two objects 1-2 px apart can touch through their anti-aliased edges: one component to the analyser
            assert len(objs) == 2 and len(found) == 1
            unread += 1
            continue
        by_name = {(a.shape, a.colour): a for a in found}
        for o in objs:
            a = by_name[o["shape"], o["colour"]]
            assert a.size == o["size"]
            low_by = shapes.OBJECT_SIZES[o["size"]] * side / 3 if o["shape"] == "triangle" else 0.0  # its centroid
            assert a.centre == pytest.approx((o["x"], o["y"] + low_by), abs=1.0)
        w = prompt.replace(",", "").split()
        if kind in ("position", "move"):
            (x, y), = [(o["x"], o["y"]) for o in objs]  # the shape's centre (checked against the pixels above)
            assert all({"left": x < low, "right": x > high, "up": y < low, "down": y > high}[d] for d in
                       set(w) & set(shapes.MOVES))
        elif kind == "relation":
            a, b = objs
            (ra, rb) = (shapes.OBJECT_SIZES[o["size"]] * side for o in objs)
            rel = " ".join(w[3:5]) if w[3] in ("left", "right", "up", "down") else " ".join(w[4:6])
            axis, sign = {v: k for k, v in shapes.RELATIONS.items()}[rel]
            assert -sign * (b[axis] - a[axis]) >= ra + rb  # boxes apart, a before b (sign -1)
        elif kind == "compare":
            a, b = (by_name[o["shape"], o["colour"]] for o in objs)
            assert prompt.startswith(f"the {a.colour} {a.shape} is ")
            assert prompt.endswith(f"than the {b.colour} {b.shape}")
            assert (a.size, b.size) == (("large", "small") if " larger " in prompt else ("small", "large"))
        elif kind == "recolour":
            assert prompt == f"make the {found[0].shape} {found[0].colour}"
        elif kind == "resize":
            assert w[-1] == ("larger" if found[0].size == "large" else "smaller") and found[0].shape in w
        elif kind == "remove":
            named = (w[-1], w[-2])
            assert named not in by_name and len(found) == 1
            if "and" in w:  # the scene is named first: the kept object is the other one
                assert {(w[2], w[1]), (w[6], w[5])} == {(found[0].shape, found[0].colour), named}
        checked += kind != "plain"
    assert checked > 200 and unread < 0.1 * checked


def test_rich_captions_at_the_smallest_image_size():
    """At 16 px a large and a small object do not fit apart: comparisons become pairs of small objects."""
    rows = [make_row("t2i", 0, i, 16, captions="rich") for i in range(300)]
    kinds = {extra["caption"] for _, _, extra in rows}
    assert "compare" not in kinds and {"relation", "pair", "remove"} <= kinds
    for _, _, extra in rows:
        if len(extra["objects"]) == 2:
            assert {o["size"] for o in extra["objects"]} == {"small"}


def test_rich_captions_change_only_t2i_rows(tmp_path):
    plain = make_shapes(tmp_path / "plain", n=6, size=16, seed=0, tasks=["t2i", "edit"])
    rich = make_shapes(tmp_path / "rich", n=6, size=16, seed=0, tasks=["t2i", "edit"], captions="rich")
    assert (plain["captions"], rich["captions"]) == ("plain", "rich")
    a, b = digests(tmp_path / "plain"), digests(tmp_path / "rich")
    edit_files = [k for k in a if k.startswith("edit/")]
    assert edit_files and all(a[k] == b[k] for k in edit_files)
    assert check_dataset(tmp_path / "rich").ok
    with pytest.raises(ConfigError, match="--captions must be one of plain, rich, got 'fancy'"):
        make_shapes(tmp_path / "bad", n=2, size=16, captions="fancy")
