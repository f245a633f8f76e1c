"""The dataset format: every kind of bad row reported with its line number; loading; skipping bad rows."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from taskfold.errors import DataError, TaskError
from taskfold.tasks import BUILTIN_TASKS
from taskfold.train.data import check_dataset, load_dataset
from taskfold.train.shapes import ALL_TASKS


def test_columns_follow_from_the_task_definitions():
    assert list(BUILTIN_TASKS) == list(ALL_TASKS)
    columns = {name: spec.data_columns for name, spec in BUILTIN_TASKS.items()}
    assert columns == {"t2i": ("task", "prompt", "target"), "edit": ("task", "prompt", "target", "condition"),
                       "sr": ("task", "target", "condition"), "inpaint": ("task", "prompt", "target", "condition"),
                       "inpaint-mask": ("task", "prompt", "target", "condition", "mask")}
    assert {n: s.condition_scale for n, s in BUILTIN_TASKS.items()} == {
        "t2i": 1, "edit": 1, "sr": 2, "inpaint": 1, "inpaint-mask": 1}


def save(root, rel, size, mode="RGB", value=100):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode in ("L", "1") else (value, 50, 200)).save(path)
    return rel


@pytest.fixture
def broken(tmp_path):
    """A dataset with one bad row of every kind, between good rows, and a blank line."""
    root = tmp_path / "broken"
    t, c16, c32 = save(root, "t.png", (32, 32)), save(root, "c16.png", (16, 16)), save(root, "c32.png", (32, 32))
    m32, m16 = save(root, "m32.png", (32, 32), "L", 255), save(root, "m16.png", (16, 16), "L", 255)
    mrgb = save(root, "mrgb.png", (32, 32))
    (root / "garbage.png").write_bytes(b"\x00not an image at all" * 10)
    (root / "truncated.png").write_bytes((root / t).read_bytes()[:60])
    odd = save(root, "odd.png", (33, 32))
    lines = [
        {"task": "t2i", "prompt": "a red circle", "target": t},                                 # 1 good
        '{"task": "t2i", "prompt": "a red circle", "target": ',                                 # 2
        {"prompt": "a red circle", "target": t},                                                # 3
        {"task": "colorize", "prompt": "x", "target": t},                                       # 4
        {"task": "edit", "prompt": "make it blue", "target": t},                                # 5
        {"task": "t2i", "prompt": "a red circle", "target": "nope.png"},                        # 6
        {"task": "t2i", "prompt": "a red circle", "target": "garbage.png"},                     # 7
        {"task": "edit", "prompt": "make it blue", "target": t, "condition": c16},              # 8
        {"task": "sr", "prompt": "", "target": t, "condition": c32},                            # 9
        {"task": "inpaint-mask", "prompt": "a cat", "target": t, "condition": c32, "mask": mrgb},  # 10
        {"task": "inpaint-mask", "prompt": "a cat", "target": t, "condition": c32, "mask": m16},   # 11
        "",                                                                                     # 12 blank
        [1, 2],                                                                                 # 13
        {"task": "t2i", "prompt": "a red circle", "target": t, "split": "val"},                 # 14
        {"task": "t2i", "prompt": "  ", "target": t},                                           # 15
        {"task": "t2i", "prompt": "a red circle", "target": str(root / t)},                     # 16
        {"task": "t2i", "prompt": "a red circle", "target": "truncated.png"},                   # 17
        {"task": "sr", "target": odd, "condition": c16},                                        # 18
        {"task": "sr", "target": t, "condition": c16, "split": "test"},                         # 19 good
        {"task": "inpaint-mask", "prompt": "a cat", "target": t, "condition": c32, "mask": m32},   # 20 good
        {"task": "edit", "prompt": 3, "target": t, "condition": c32},                           # 21
        {"task": "inpaint", "prompt": "remove the cat", "target": t, "condition": c32},         # 22 good
    ]
    (root / "metadata.jsonl").write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return root


EXPECTED = [
    (2, "invalid JSON: Expecting value at column 53"),
    (3, "missing field 'task'"),
    (4, "unknown task 'colorize'; known tasks: t2i, edit, sr, inpaint, inpaint-mask"),
    (5, "missing field 'condition' (task 'edit' needs task, prompt, target, condition)"),
    (6, "target file 'nope.png' does not exist"),
    (7, "target 'garbage.png' is not a readable image (cannot identify image file"),
    (8, "condition is 16x16; task 'edit' needs the target's size 32x32"),
    (9, "condition is 32x32; task 'sr' needs exactly half the target's 32x32, i.e. 16x16"),
    (10, "mask 'mrgb.png' has mode 'RGB'; expected L or 1"),
    (11, "mask is 16x16; expected the target's size 32x32"),
    (13, "expected a JSON object, got list"),
    (14, "split 'val' is not one of train, test"),
    (15, "field 'prompt' is empty; task 't2i' needs a prompt"),
    (16, "field 'target' is the absolute path"),
    (17, "target 'truncated.png' is not a readable image ("),
    (18, "target is 33x32; task 'sr' needs an even width and height"),
    (21, "field 'prompt' must be a string, got 3"),
]


def test_every_bad_row_is_reported_with_its_line(broken):
    report = check_dataset(broken)
    got = [(p.line, p.message) for p in report.problems]
    assert [line for line, _ in got] == [line for line, _ in EXPECTED]
    for (line, message), (_, expected) in zip(got, EXPECTED):
        assert message.startswith(expected), f"line {line}: {message!r} does not start with {expected!r}"
    assert str(report.problems[0]) == "line 2: invalid JSON: Expecting value at column 53"
    assert report.bad_lines == 17
    assert [r.line for r in report.rows] == [1, 19, 20, 22]
    assert report.counts == {"t2i": {"train": 1}, "sr": {"test": 1}, "inpaint-mask": {"train": 1},
                             "inpaint": {"train": 1}}


def test_a_row_with_several_problems_reports_each(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "metadata.jsonl").write_text(json.dumps({"task": "inpaint-mask", "prompt": "x", "target": "a.png",
                                                     "condition": "b.png", "mask": "c.png"}) + "\n")
    messages = [str(p) for p in check_dataset(root).problems]
    assert messages == ["line 1: target file 'a.png' does not exist", "line 1: condition file 'b.png' does not exist",
                        "line 1: mask file 'c.png' does not exist"]


def test_selected_tasks_ignore_the_other_rows(broken):
    report = check_dataset(broken, tasks=["sr"])
    assert [(p.line, p.message.split(";")[0]) for p in report.problems] == [
        (2, "invalid JSON: Expecting value at column 53"), (3, "missing field 'task'"),
        (4, "unknown task 'colorize'"), (9, "condition is 32x32"), (13, "expected a JSON object, got list"),
        (18, "target is 33x32")]
    assert report.ignored == {"t2i": 7, "edit": 3, "inpaint-mask": 3, "inpaint": 1}
    assert report.counts == {"sr": {"test": 1}}
    assert check_dataset(broken, tasks="sr").counts == report.counts  # one task as a string
    with pytest.raises(TaskError, match="unknown task.*'depth'; known tasks: t2i, edit"):
        check_dataset(broken, tasks=["sr", "depth"])


def test_load_refuses_bad_rows_naming_the_first_ones(broken):
    with pytest.raises(DataError) as e:
        load_dataset(broken)
    msg = str(e.value)
    assert msg.startswith(f"dataset '{broken}' has 17 bad row(s): line 2: invalid JSON")
    assert "line 3: missing field 'task'; line 4: unknown task 'colorize'" in msg
    assert msg.endswith("; and 14 more problem(s)")
    assert "--skip-bad-rows" in e.value.hint and "4 good rows" in e.value.hint


def test_skip_bad_rows_logs_each_and_keeps_the_good(broken):
    logged = []
    ds = load_dataset(broken, skip_bad_rows=True, log=logged.append)
    assert len(logged) == len(EXPECTED)
    assert logged[0] == "skipping line 2: invalid JSON: Expecting value at column 53"
    assert [line.split(":")[0] for line in logged] == [f"skipping line {n}" for n, _ in EXPECTED]
    assert len(ds) == 4 and [r.task for r in ds.rows] == ["t2i", "sr", "inpaint-mask", "inpaint"]
    assert ds.indices("sr") == [1]
    assert len(load_dataset(broken, skip_bad_rows=True, log=logged.append, split="test")) == 1


def test_skip_bad_rows_default_log_is_a_warning(broken, caplog):
    with caplog.at_level("WARNING", logger="taskfold.train.data"):
        load_dataset(broken, skip_bad_rows=True)
    assert len(caplog.records) == len(EXPECTED)
    assert caplog.records[-1].getMessage() == "skipping line 21: field 'prompt' must be a string, got 3"


def test_items_are_chw_float32_in_range(broken):
    ds = load_dataset(broken, skip_bad_rows=True, log=lambda m: None)
    t2i, sr, mask_row, inpaint = (ds[i] for i in range(4))
    assert set(t2i) == {"task", "prompt", "target", "meta"} and t2i["prompt"] == "a red circle"
    assert t2i["meta"] == {}  # the row has no columns beyond the task's
    assert t2i["target"].shape == (3, 32, 32) and t2i["target"].dtype == np.float32
    # the pixel (100, 50, 200) maps to x / 127.5 - 1
    np.testing.assert_allclose(t2i["target"][:, 0, 0], [100 / 127.5 - 1, 50 / 127.5 - 1, 200 / 127.5 - 1], rtol=1e-6)
    assert sr["prompt"] == "" and sr["condition"].shape == (3, 32, 32)  # 16x16 upsampled back (bicubic)
    np.testing.assert_allclose(sr["condition"], sr["target"], atol=1e-6)  # a flat image stays flat
    assert mask_row["mask"].shape == (1, 32, 32) and mask_row["mask"].dtype == np.float32
    assert np.unique(mask_row["mask"]).tolist() == [1.0]
    assert set(inpaint) == {"task", "prompt", "target", "condition", "meta"}


def test_sr_condition_is_bicubic_upsampled(shapes32):
    ds = load_dataset(shapes32, tasks=["sr"])
    item = ds[0]
    low = Image.open(ds.rows[0].condition)
    expected = np.asarray(low.resize((32, 32), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1
    np.testing.assert_allclose(item["condition"], expected.transpose(2, 0, 1), atol=1e-6)
    assert -1.0 <= item["condition"].min() and item["condition"].max() <= 1.0


def test_shapes_dataset_loads_whole(shapes32):
    ds = load_dataset(shapes32)
    assert len(ds) == 100
    assert len(load_dataset(shapes32, split="test")) == 20
    for i in ds.indices("inpaint-mask")[:3]:
        item = ds[i]
        assert set(item) == {"task", "prompt", "target", "condition", "mask", "meta"}
        assert set(item["meta"]) == {"object"}  # the shapes world's ground truth, for task scores
        masked = item["mask"][0] > 0
        # inside the mask the condition is the grey fill, 128 / 127.5 - 1
        np.testing.assert_allclose(item["condition"][:, masked], 128 / 127.5 - 1, atol=1e-6)


def test_missing_folder_or_metadata(tmp_path, shapes32):
    with pytest.raises(DataError, match="is not a directory"):
        check_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match="has no metadata.jsonl"):
        check_dataset(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(shapes32, copy)
    with pytest.raises(DataError, match="split 'val' is not one of train, test"):
        load_dataset(copy, split="val")
    (copy / "metadata.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="has no usable rows for task"):
        load_dataset(copy)
