"""``benchmarks/oversample.py``: repeat the hard kinds of train rows, refuse bad input, lose nothing."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from taskfold.benchmarks.oversample import main, oversample, parse_repeats
from taskfold.errors import DataError
from taskfold.train.data import check_dataset
from tests._helpers import small_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return small_shapes(tmp_path_factory, ("t2i", "edit", "inpaint"), "os")


def _kinds(path):
    c = Counter()
    for line in (path / "metadata.jsonl").read_text().splitlines():
        r = json.loads(line)
        kind = r.get("edit") or (("both-small" if r["object"]["size"] == r["removed"]["size"] == "small"
                                  else "kept-large") if r["task"] == "inpaint" else "")
        c[(r["task"], kind, r["split"])] += 1
    return c


def test_train_rows_of_named_kinds_are_repeated_and_test_rows_are_not(shapes, tmp_path):
    out = tmp_path / "hard"
    result = oversample(shapes, out, {"edit:move": 3, "inpaint:both-small": 2})
    was, now = _kinds(shapes), _kinds(out)
    assert was[("edit", "move", "train")] > 0 and was[("inpaint", "both-small", "train")] > 0
    for (task, kind, split), n in was.items():
        factor = {("edit", "move"): 3, ("inpaint", "both-small"): 2}.get((task, kind), 1) if split == "train" else 1
        assert now[(task, kind, split)] == factor * n, (task, kind, split)
    assert result["rows"] == sum(now.values())
    report = check_dataset(out)  # every image the rows name is there
    assert report.ok and len(report.rows) == result["rows"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hard.")]  # no leftover temporary folder


@pytest.mark.parametrize("text, word", [("edit:move=0", "from 1"), ("edit:move=3.5", "whole number"),
                                        ("edit:spin=2", "KIND=N"), ("edit:move", "KIND=N"),
                                        ("edit:move=2,edit:move=3", "twice"), ("edit:move=99", "to 20")])
def test_bad_repeats_are_refused_by_name(text, word):
    with pytest.raises(DataError, match=word):
        parse_repeats(text)


def test_a_dataset_with_a_bad_row_or_an_existing_output_is_refused_and_nothing_is_written(shapes, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.jsonl").write_text(json.dumps({"task": "edit", "prompt": "move it", "split": "train",
                                                    "target": "../escape.png", "condition": "c.png"}) + "\n")
    with pytest.raises(DataError, match="1 bad rows"):
        oversample(bad, tmp_path / "o1", {"edit:move": 2})
    assert not (tmp_path / "o1").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    assert main([str(shapes), "--out", str(mine), "--repeat", "edit:move=2"]) == 2
    assert (mine / "keep.txt").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["keep.txt"]


def test_a_shapes_json_linked_outside_the_dataset_is_refused(shapes, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(shapes, src)
    (tmp_path / "secret.txt").write_text("not the dataset's")
    (src / "shapes.json").unlink()
    (src / "shapes.json").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(DataError, match="leads outside the dataset folder"):
        oversample(src, tmp_path / "o2", {"edit:move": 2})
    assert not (tmp_path / "o2").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".o2.")]
