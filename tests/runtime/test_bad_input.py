"""Every bad input to `taskfold run` is one line naming the value and the fix, and writes nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from taskfold.cli import main
from taskfold.errors import ConfigError
from taskfold.runtime import open_package


@pytest.fixture(scope="module")
def rows(tiny_package):
    _, _, _, data = tiny_package
    out = {}
    for line in open(data / "metadata.jsonl"):
        r = json.loads(line)
        out.setdefault(r["task"], r)
    return out


def _run(capsys, pkg, out_dir, *args):
    """Run the CLI; return (exit code, stderr). Asserts the output folder holds nothing new."""
    before = sorted(p.name for p in out_dir.iterdir())
    rc = main(["run", str(pkg), *args])
    err = capsys.readouterr().err
    if rc != 0:
        assert sorted(p.name for p in out_dir.iterdir()) == before, "a failed run left files behind"
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
    return rc, err


def test_unknown_task(tiny_package, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    rc, err = _run(capsys, pkg, tmp_path, "--task", "colorize", "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "unknown task 'colorize'" in err and "t2i, edit, sr, inpaint, inpaint-mask" in err


def test_image_of_wrong_size_is_refused_unless_resize(tiny_package, rows, tmp_path, capsys):
    _, pkg, _, data = tiny_package
    big = tmp_path / "inputs"
    big.mkdir()
    with Image.open(data / rows["edit"]["condition"]) as im:
        im.resize((20, 12)).save(big / "in.png")
    out = tmp_path / "o.png"
    rc, err = _run(capsys, pkg, tmp_path, "--task", "edit", "--prompt", "make it blue", "--image",
                   str(big / "in.png"), "--out", str(out))
    assert rc == 2 and "condition image is 20x12 pixels; the package expects 16x16" in err and "--resize" in err
    rc, err = _run(capsys, pkg, tmp_path, "--task", "edit", "--prompt", "make it blue", "--image",
                   str(big / "in.png"), "--resize", "--steps", "2", "--out", str(out))
    assert rc == 0 and Image.open(out).size == (16, 16)


def test_sr_takes_its_half_size_input_and_other_modes_become_rgb(tiny_package, rows, tmp_path):
    _, pkg_dir, _, data = tiny_package
    pkg = open_package(pkg_dir)
    with Image.open(data / rows["sr"]["condition"]) as im:
        low = im.convert("RGB")
    assert low.size == (8, 8)  # the shapes world stores sr inputs at half size
    cond = pkg.load_condition("sr", low)
    assert cond.shape == (1, 3, 16, 16)
    with pytest.raises(ConfigError, match="8x8 pixels; the package expects 16x16"):
        pkg.load_condition("edit", low)  # only sr upsamples without being asked
    rgb = Image.open(data / rows["edit"]["condition"]).convert("RGB")
    for mode in ("RGBA", "L", "P"):
        got = pkg.load_condition("edit", rgb.convert(mode))
        assert np.array_equal(got, pkg.load_condition("edit", rgb.convert(mode).convert("RGB")))
    with pytest.raises(ConfigError, match="image mode 'F'"):
        pkg.load_condition("edit", Image.new("F", (16, 16)))


def test_unreadable_and_missing_images(tiny_package, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    (tmp_path / "notes.png").write_text("not an image")
    rc, err = _run(capsys, pkg, tmp_path, "--task", "edit", "--image", str(tmp_path / "notes.png"),
                   "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "notes.png' is not a readable image" in err
    rc, err = _run(capsys, pkg, tmp_path, "--task", "edit", "--image", str(tmp_path / "nope.png"),
                   "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "nope.png' does not exist" in err


def test_missing_mask_and_missing_or_extra_image(tiny_package, rows, tmp_path, capsys):
    _, pkg, _, data = tiny_package
    cond = str(data / rows["inpaint-mask"]["condition"])
    rc, err = _run(capsys, pkg, tmp_path, "--task", "inpaint-mask", "--image", cond, "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "task 'inpaint-mask' needs a mask" in err and "--mask" in err
    rc, err = _run(capsys, pkg, tmp_path, "--task", "edit", "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "task 'edit' needs a condition image" in err
    rc, err = _run(capsys, pkg, tmp_path, "--task", "t2i", "--image", cond, "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "task 't2i' takes no condition image" in err


def test_damaged_package_is_refused(tiny_package, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    bad = tmp_path / "pkg"
    shutil.copytree(pkg, bad)
    raw = bytearray((bad / "onnx" / "edit.weights").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bad / "onnx" / "edit.weights").write_bytes(bytes(raw))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # t2i does not read edit.weights: it still runs
    rc, _ = _run(capsys, bad, out_dir, "--task", "t2i", "--steps", "1", "--out", str(out_dir / "t2i.png"))
    assert rc == 0
    rc, err = _run(capsys, bad, out_dir, "--task", "edit", "--image", str(out_dir / "t2i.png"),
                   "--out", str(out_dir / "edit.png"))
    assert rc == 2 and "is damaged: onnx/edit.weights: sha256 differs" in err and "taskfold verify" in err


def test_backend_or_provider_not_installed(tiny_package, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    rc, err = _run(capsys, pkg, tmp_path, "--task", "t2i", "--backend", "coreml", "--out", str(tmp_path / "o.png"))
    assert rc == 2 and ("runs only on macOS" in err or "has no coreml graphs" in err)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        rc, err = _run(capsys, pkg, tmp_path, "--task", "t2i", "--backend", "tensorrt", "--out", str(tmp_path / "o.png"))
        assert rc == 2 and "needs TensorRT, which is not installed" in err
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        rc, err = _run(capsys, pkg, tmp_path, "--task", "t2i", "--provider", "cuda", "--out", str(tmp_path / "o.png"))
        assert rc == 2 and "provider 'cuda' is not available" in err and "onnxruntime-gpu" in err


def test_existing_output_is_kept_and_bad_paths_refused(tiny_package, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    out = tmp_path / "o.png"
    out.write_bytes(b"the user's file")
    rc, err = _run(capsys, pkg, tmp_path, "--task", "t2i", "--out", str(out))
    assert rc == 2 and "already exists" in err and out.read_bytes() == b"the user's file"
    rc, err = _run(capsys, pkg, tmp_path, "--task", "t2i", "--out", str(tmp_path / "o.gif"))
    assert rc == 2 and "must end in .png, .jpg, .jpeg, .webp" in err and not (tmp_path / "o.gif").exists()
    (tmp_path / "empty").mkdir()  # not a package (and --out lies outside it: never inside an input)
    rc, err = _run(capsys, tmp_path / "empty", tmp_path, "--task", "t2i", "--out", str(tmp_path / "x.png"))
    assert rc == 2 and "has no manifest.json" in err
    rc, err = _run(capsys, pkg, tmp_path, "--task", "t2i", "--steps", "0", "--out", str(tmp_path / "x.png"))
    assert rc == 2 and "steps must be a positive integer, got 0" in err
