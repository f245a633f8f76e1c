"""Never delete what the user gave: an ``--out`` that is, contains or lies inside an input of the command is
refused before any work, with or without ``--overwrite``, and every input is left byte for byte as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from taskfold.cli import main


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under (and beside) ``root``: relative path -> sha256 (folders: "dir")."""
    snap = {}
    for p in sorted(root.parent.rglob("*")):
        rel = str(p.relative_to(root.parent))
        snap[rel] = "dir" if p.is_dir() and not p.is_symlink() else hashlib.sha256(
            os.readlink(p).encode() if p.is_symlink() else p.read_bytes()).hexdigest()
    return snap


@pytest.fixture
def given(tiny_package, tmp_path, monkeypatch):
    """A folder of inputs (copies of the tiny package, its MTU model and dataset, an upcycle config, an image)
    inside a working folder; loading any model is an error (the refusal must come first)."""
    _, pkg, mtu, data = tiny_package
    inputs = tmp_path / "work" / "inputs"
    inputs.mkdir(parents=True)
    shutil.copytree(pkg, inputs / "pkg")
    shutil.copytree(mtu, inputs / "mtu")
    shutil.copytree(data, inputs / "data")
    (inputs / "up.json").write_text('{"tasks": ["t2i", "edit"]}')
    first = next((data / "edit").glob("*.png"))
    shutil.copy(first, inputs / "cond.png")
    (inputs / "album.png").mkdir()  # a folder with a .png name, holding an input image
    shutil.copy(first, inputs / "album.png" / "cond.png")
    import taskfold.upcycle.base as base
    import taskfold.upcycle.checkpoint as checkpoint

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded before --out was checked against the inputs")
    monkeypatch.setattr(base, "load_base", no_loading)
    monkeypatch.setattr(checkpoint, "load_mtu", no_loading)
    monkeypatch.chdir(inputs.parent)
    return inputs


def _cases(i: Path) -> dict[str, list]:
    """``name -> argv`` of each writing command with an ``--out`` that overlaps one of its inputs."""
    run = ["run", i / "pkg", "--task", "edit", "--prompt", "make it blue", "--steps", "2", "--overwrite"]
    return {
        "export --out MODEL": ["export", i / "mtu", "--out", i / "mtu", "--overwrite"],
        "export --out PARENT": ["export", i / "mtu", "--out", i, "--overwrite"],
        "export --out a link to MODEL": ["export", i / "mtu", "--out", i.parent / "link", "--overwrite"],
        "upcycle --out CONFIG": ["upcycle", "--base", "preset:tiny", "--config", i / "up.json", "--out", i / "up.json",
                                 "--overwrite"],
        "upcycle --out PARENT": ["upcycle", "--base", i / "mtu", "--out", i, "--overwrite"],
        "upcycle --out BASE": ["upcycle", "--base", i / "mtu", "--out", i / "mtu", "--overwrite"],
        "train --out MODEL": ["train", i / "mtu", "--data", i / "data", "--steps", "1", "--out", i / "mtu", "--resume"],
        "train --out PARENT": ["train", i / "mtu", "--data", i / "data", "--steps", "1", "--out", i, "--resume"],
        "train --out DATA": ["train", i / "mtu", "--data", i / "data", "--steps", "1", "--out", i / "data"],
        "train --out inside DATA": ["train", i / "mtu", "--data", i / "data", "--steps", "1", "--out", i / "data" / "r"],
        "pretrain --out DATA": ["pretrain", "--data", i / "data", "--steps", "1", "--out", i / "data", "--overwrite"],
        "pretrain --out PARENT": ["pretrain", "--data", i / "data", "--steps", "1", "--out", i, "--overwrite"],
        "data make-shapes --out .": ["data", "make-shapes", "--n", "2", "--out", ".", "--overwrite"],
        "data make-shapes --out ..": ["data", "make-shapes", "--n", "2", "--out", "..", "--overwrite"],
        "run --out IMAGE": [*run, "--image", i / "cond.png", "--out", i / "cond.png"],
        "run --out PARENT of IMAGE": [*run, "--image", i / "album.png" / "cond.png", "--out", i / "album.png"],
        "run --out inside PACKAGE": [*run, "--image", i / "cond.png", "--out", i / "pkg" / "o.png"],
        "bench --out PACKAGE": ["bench", i / "pkg", "--out", i / "pkg", "--overwrite"],
        "bench --out PARENT": ["bench", i / "pkg", "--model", i / "mtu", "--out", i, "--overwrite"],
        "bench --out MODEL": ["bench", i / "pkg", "--model", i / "mtu", "--out", i / "mtu", "--overwrite"],
        "evaluate --out DATA": ["evaluate", i / "pkg", "--data", i / "data", "--out", i / "data", "--overwrite"],
        "analyze-deviation --out FINETUNED": ["analyze-deviation", "preset:tiny", i / "mtu", "--out", i / "mtu",
                                              "--overwrite"],
    }


def test_an_out_that_overlaps_an_input_is_refused_and_every_input_is_kept(given, capsys):
    (given.parent / "link").symlink_to(given / "mtu")
    before = _snapshot(given)
    assert sum(v != "dir" for v in before.values()) > 20  # the package, the model, the dataset, the images
    for name, argv in _cases(given).items():
        code, out, err = _cli(capsys, *argv)
        assert code == 2, (name, out, err)
        assert err.startswith("error: --out ") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert "writing there would change or delete it" in err and "outside every input" in err, (name, err)
        relation = "contains" if "PARENT" in name or ".." in name else "is inside" if "inside" in name else "is"
        assert f"' {relation} the " in err, (name, err)
        assert _snapshot(given) == before, f"{name} changed the inputs"


def test_the_refusal_names_the_input_and_follows_links(given, capsys):
    (given.parent / "link").symlink_to(given / "mtu")
    code, _, err = _cli(capsys, "export", given / "mtu", "--out", given.parent / "link", "--overwrite")
    assert code == 2 and f"--out '{given.parent / 'link'}' is the model given ('{given / 'mtu'}')" in err
    code, _, err = _cli(capsys, "data", "make-shapes", "--n", "2", "--out", "..", "--overwrite")
    assert code == 2 and f"--out '..' contains the current folder ('{given.parent}')" in err
    code, _, err = _cli(capsys, "pretrain", "--data", given / "data", "--steps", "1", "--out", given, "--overwrite")
    assert code == 2 and f"contains the data given ('{given / 'data'}')" in err


def test_a_hard_link_to_an_input_is_the_input(tmp_path):
    from taskfold._io import check_apart_from_inputs
    from taskfold.errors import OutputError

    a = tmp_path / "a.png"
    a.write_bytes(b"image")
    os.link(a, tmp_path / "b.png")
    with pytest.raises(OutputError, match="is the image given"):
        check_apart_from_inputs(tmp_path / "b.png", [("image", str(a))])
    check_apart_from_inputs(tmp_path / "c.png", [("image", str(a)), (".", str(tmp_path))])  # inside cwd: fine
    check_apart_from_inputs(tmp_path / "c.png", [("base", "preset:tiny"), ("model", None)])  # not paths: skipped


def test_an_out_beside_the_inputs_is_still_written(given, capsys, monkeypatch):
    code, out, err = _cli(capsys, "data", "make-shapes", "--n", "2", "--size", "16", "--out", "shapes")
    assert code == 0, err  # inside the current folder, beside the inputs
    assert (given.parent / "shapes" / "metadata.jsonl").is_file()
