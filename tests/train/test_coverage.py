"""Token coverage: a pretrained base records the words its text encoder trained on; `data check` and `train`
warn, naming the words and tasks, when rows use words it never saw while the encoder is frozen."""

import json
import shutil

import pytest
from taskfold.train.coverage import coverage_warning, untrained_words
from taskfold.train.shapes import make_shapes
from taskfold.upcycle.text_encoders import (
    TOKEN_COUNTS_FILE,
    count_words,
    load_text_encoder,
    read_token_counts,
)

from taskfold.cli import main
from taskfold.errors import CheckpointError


def rows(root):
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]


def write_rows(root, rows_):
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_))


def test_untrained_words_names_each_word_once_with_its_tasks():
    counts = {"a": 5, "red": 3, "circle": 3, "make": 0}
    pairs = [("t2i", "a red circle"), ("edit", "make the circle red"), ("inpaint", "remove the red circle"),
             ("edit", "Make THE circle, red")]
    assert untrained_words(counts, pairs) == {"make": ["edit"], "the": ["edit", "inpaint"], ",": ["edit"],
                                              "remove": ["inpaint"]}
    assert untrained_words(None, pairs) == {} and coverage_warning(None, pairs) is None
    assert coverage_warning(counts, pairs[:1]) is None
    msg = coverage_warning(counts, pairs)
    assert msg.startswith("warning: the text encoder never trained on 4 word(s) the rows use: 'make' (edit), "
                          "'the' (edit, inpaint), 'remove' (inpaint), ',' (edit); ")
    assert "--captions rich" in msg and "--train-text-encoder" in msg
    assert coverage_warning({}, [("t2i", f"w{i}") for i in range(15)], show=12).count("'w") == 12
    assert "and 3 more" in coverage_warning({}, [("t2i", f"w{i}") for i in range(15)], show=12)


def test_a_bad_record_is_refused(tmp_path):
    (tmp_path / TOKEN_COUNTS_FILE).write_text(json.dumps({"red": -1}))
    with pytest.raises(CheckpointError, match="must map words to non-negative counts; 'red' maps to -1"):
        read_token_counts(tmp_path)
    assert read_token_counts(tmp_path / "missing") is None


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A base pretrained 2 steps on plain t2i captions, and a model upcycled from it for t2i and edit."""
    root = tmp_path_factory.mktemp("coverage")
    make_shapes(root / "data", n=12, size=16, seed=0, tasks=("t2i", "edit"), test_fraction=0.25)
    assert main(["pretrain", "--data", str(root / "data"), "--steps", "2", "--batch-size", "4",
                 "--out", str(root / "pre"), "--no-progress"]) == 0
    base = root / "pre" / "base"
    assert main(["upcycle", "--base", str(base), "--tasks", "t2i,edit", "--out", str(root / "mtu")]) == 0
    return root, base


def test_pretrain_records_the_words_of_its_training_captions(pretrained):
    root, base = pretrained
    t2i_train = [r["prompt"] for r in rows(root / "data") if r["task"] == "t2i" and r["split"] == "train"]
    counts = read_token_counts(base / "text_encoder")
    assert counts == count_words(t2i_train) and counts["a"] == len(t2i_train) == 9
    assert load_text_encoder(base / "text_encoder").token_counts == counts


def test_check_and_train_warn_about_words_the_frozen_encoder_never_trained(pretrained, tmp_path, capsys):
    root, base = pretrained
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    rs = rows(data)
    t2i = next(i for i, r in enumerate(rs) if r["task"] == "t2i")
    rs[t2i]["prompt"] = "a zebra circle"  # a crafted row: a word the base never saw
    write_rows(data, rs)
    capsys.readouterr()

    assert main(["data", "check", str(data), "--model", str(root / "mtu")]) == 0
    err = capsys.readouterr().err
    # plain t2i captions never show the instruction words: every edit word but the colours and shapes is named
    assert err.startswith("warning: the text encoder never trained on ")
    for word, tasks in (("zebra", "t2i"), ("make", "edit"), ("the", "edit")):
        assert f"'{word}' ({tasks})" in err
    assert main(["data", "check", str(data), "--base", str(base)]) == 0
    assert "'zebra' (t2i)" in capsys.readouterr().err
    assert main(["data", "check", str(data)]) == 0  # no model or base: nothing to compare with
    assert capsys.readouterr().err == ""

    assert main(["train", str(root / "mtu"), "--data", str(data), "--steps", "1", "--batch-size", "2",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: the text encoder never trained on" in err and "'zebra' (t2i)" in err
    # the fine-tune kept the encoder frozen: its record travels unchanged with the model
    assert read_token_counts(tmp_path / "run" / "mtu" / "text_encoder") == read_token_counts(base / "text_encoder")

    # trained with the encoder: no warning, and the record gains the rows' words
    assert main(["train", str(root / "mtu"), "--data", str(data), "--steps", "1", "--batch-size", "2",
                 "--train-text-encoder", "--out", str(tmp_path / "run-te"), "--no-progress"]) == 0
    assert "never trained" not in capsys.readouterr().err
    after = read_token_counts(tmp_path / "run-te" / "mtu" / "text_encoder")
    assert after["zebra"] == 1 and after["make"] > 0


def test_silent_for_an_encoder_without_a_record(pretrained, tmp_path, capsys):
    """A base made before the record existed (or a CLIP encoder) records nothing: no warning."""
    root, base = pretrained
    old = tmp_path / "old-base"
    shutil.copytree(base, old)
    (old / "text_encoder" / TOKEN_COUNTS_FILE).unlink()
    assert main(["upcycle", "--base", str(old), "--tasks", "t2i,edit", "--out", str(tmp_path / "mtu")]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(root / "data"), "--model", str(tmp_path / "mtu")]) == 0
    assert main(["data", "check", str(root / "data"), "--base", str(old)]) == 0
    assert main(["train", str(tmp_path / "mtu"), "--data", str(root / "data"), "--steps", "1", "--batch-size", "2",
                 "--train-text-encoder", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "never trained" not in capsys.readouterr().err
    # trained further without a record, it still has none (what trained it before is unknown)
    assert read_token_counts(tmp_path / "run" / "mtu" / "text_encoder") is None


def test_the_bundled_tiny_mtu_carries_its_bases_counts_plus_its_own_and_knows_every_task_word(tmp_path, capsys):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    mtu, base = repo / "models" / "tiny-mtu", repo / "models" / "tiny-base"
    # its text encoder is the base's, trained further in stages 9-12: the record holds the base's counts plus the
    # fine-tune rows' words (one count per row and stage), so every word at least as often, the instructions' more
    counts, base_counts = read_token_counts(mtu / "text_encoder"), read_token_counts(base / "text_encoder")
    assert set(counts) == set(base_counts) and {w: n for w, n in counts.items() if n < base_counts[w]} == {}
    assert all(counts[w] > base_counts[w] for w in ("left", "larger", "remove", "make", "the")), counts
    make_shapes(tmp_path / "data", n=40, size=32, seed=0, tasks=("t2i", "edit", "sr", "inpaint"))
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "data"), "--model", str(mtu)]) == 0
    assert capsys.readouterr().err == ""
    row = rows(tmp_path / "data")[0] | {"prompt": "rotate the circle clockwise"}
    write_rows(tmp_path / "data", [row, *rows(tmp_path / "data")[1:]])
    assert main(["data", "check", str(tmp_path / "data"), "--model", str(mtu)]) == 0
    assert "rotate" in capsys.readouterr().err
