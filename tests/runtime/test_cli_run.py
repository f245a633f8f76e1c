"""``taskfold run`` with the new options, on the shared tiny package: several images, negative prompt, output
formats, a progress bar on a terminal (a pseudo-terminal here) and none when piped, and every option the run
cannot use refused before any image is made."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from taskfold.cli import main
from taskfold.runtime import open_package
from taskfold.runtime.images import to_uint8

from .test_package import _sample


def _run(capsys, *args):
    code = main(["run", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_several_images_and_a_negative_prompt_are_the_apis_in_every_format(tiny_package, tmp_path, capsys):
    _, pkg_dir, _, _ = tiny_package
    pkg = open_package(pkg_dir)
    want = pkg.generate("t2i", "a red circle", negative_prompt="a blue square", num_images_per_prompt=3, steps=3,
                        seed=2)
    code, out, err = _run(capsys, pkg_dir, "--task", "t2i", "--prompt", "a red circle", "--negative-prompt",
                          "a blue square", "--num-images", "3", "--steps", "3", "--seed", "2",
                          "--out", tmp_path / "x.webp")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_0.webp", "x_1.webp", "x_2.webp"]
    for i in range(3):  # WebP is written lossless: the very pixels of the array
        with Image.open(tmp_path / f"x_{i}.webp") as im:
            assert im.format == "WEBP"
        np.testing.assert_array_equal(_pixels(tmp_path / f"x_{i}.webp"), to_uint8(want[i]))
    assert out.startswith(f"wrote {tmp_path / 'x_0.webp'} .. x_2.webp (16x16, task t2i, steps 3, guidance 7.5*")
    for suffix, fmt in ((".jpg", "JPEG"), (".jpeg", "JPEG"), (".png", "PNG")):
        path = tmp_path / f"one{suffix}"
        assert _run(capsys, pkg_dir, "--task", "t2i", "--prompt", "a red circle", "--negative-prompt",
                    "a blue square", "--steps", "3", "--seed", "2", "--out", path)[0] == 0
        with Image.open(path) as im:
            assert im.format == fmt and im.size == (16, 16)
        err = np.abs(_pixels(path).astype(int) - to_uint8(want[0]).astype(int))
        assert (err.max() == 0) if fmt == "PNG" else (err.mean() < 3), (suffix, err.mean())  # JPEG q95, 4:4:4


def test_the_package_default_legend_only_when_something_is_starred(tiny_package, tmp_path, capsys):
    _, pkg_dir, _, _ = tiny_package
    code, out, _ = _run(capsys, pkg_dir, "--task", "t2i", "--steps", "2", "--guidance", "3", "--out", tmp_path / "a.png")
    assert code == 0 and "steps 2, guidance 3, ddim" in out and "*" not in out
    code, out, _ = _run(capsys, pkg_dir, "--task", "t2i", "--steps", "2", "--out", tmp_path / "b.png")
    assert code == 0 and "steps 2, guidance 7.5* (* = package default)" in out
    code, out, err = _run(capsys, pkg_dir, "--task", "t2i", "--steps", "2", "--quiet", "--out", tmp_path / "c.png")
    assert code == 0 and out == "" and err == "" and (tmp_path / "c.png").is_file()


def test_what_the_run_cannot_use_is_refused_before_any_image(tiny_package, tmp_path, capsys):
    _, pkg_dir, _, data = tiny_package
    sr = _sample(data, "sr")
    Image.fromarray(to_uint8(sr["condition"])).save(tmp_path / "cond.png")
    out = tmp_path / "o.png"
    cases = [
        (["--task", "t2i", "--strength", "0.5"], "task 't2i' does not use --strength (its input is ['noisy'], "
                                                   "guidance 'text') (hint: drop --strength)"),
        (["--task", "t2i", "--strength", "1"], "does not use --strength"),
        (["--task", "t2i", "--image-guidance", "1.5"], "task 't2i' does not use --image-guidance"),
        (["--task", "sr", "--image", tmp_path / "cond.png", "--guidance", "3"], "task 'sr' does not use --guidance"),
        (["--task", "sr", "--image", tmp_path / "cond.png", "--negative-prompt", "blur"],
         "task 'sr' uses no classifier-free guidance on text"),
        (["--task", "t2i", "--height", "32"], "makes 16x16 images only (asked for 16x32): t2i's graph has a static "
                                              "height and width (hint: re-export with `taskfold export --dynamic`"),
        (["--task", "t2i", "--num-images", "0"], "images per prompt must be a positive integer, got 0"),
        (["--task", "t2i", "--steps", "1000"], "the largest number of steps below 1000 that fits is 999"),
    ]
    for args, message in cases:
        code, _, err = _run(capsys, pkg_dir, *args, "--out", out)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
        assert not out.exists()
    code, _, err = _run(capsys, pkg_dir, "--task", "t2i", "--out", "/nonexistent/dir/z.png")
    assert code == 2 and "its folder '/nonexistent/dir' does not exist" in err
    assert not os.path.exists("/nonexistent")
    (tmp_path / "x_1.png").write_bytes(b"kept")  # one of the files --num-images would write exists
    code, _, err = _run(capsys, pkg_dir, "--task", "t2i", "--num-images", "2", "--out", tmp_path / "x.png")
    assert code == 2 and "x_1.png' already exists" in err and not (tmp_path / "x_0.png").exists()
    assert (tmp_path / "x_1.png").read_bytes() == b"kept"


@pytest.mark.parametrize("args, said", [
    (["--prompt", "a red circle", "--prompt", "a blue square"],
     "argument --prompt: given twice ('a red circle' and 'a blue square')"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_argument_errors_show_the_run_commands_usage(tiny_package, tmp_path, capsys, args, said):
    _, pkg_dir, _, _ = tiny_package
    with pytest.raises(SystemExit) as e:
        main(["run", str(pkg_dir), "--task", "t2i", *args, "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: taskfold run ") and f"taskfold run: error: {said}" in err
    assert not (tmp_path / "o.png").exists()


def test_a_nested_commands_unknown_option_shows_that_commands_usage(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "make-shapes", "--out", str(tmp_path / "d"), "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith("usage: taskfold data make-shapes ") and "unrecognized arguments: --bogus" in err


def _run_cli(pkg_dir, out, *extra, tty: bool):
    """``taskfold run`` in a fresh process, stderr on a pseudo-terminal (``tty``) or a pipe; ``(code, stderr)``."""
    cmd = [sys.executable, "-m", "taskfold", "run", str(pkg_dir), "--task", "t2i", "--prompt", "a red circle",
           "--steps", "50", "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not tty:
        done = subprocess.run(cmd, capture_output=True, timeout=300, env=env)
        return done.returncode, done.stderr.decode()
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode()


def test_a_progress_bar_on_a_terminal_and_none_when_piped(tiny_package, tmp_path):
    _, pkg_dir, _, _ = tiny_package
    code, err = _run_cli(pkg_dir, tmp_path / "tty.png", tty=True)
    assert code == 0, err
    frames = [f for f in err.replace("\r\n", "\n").split("\r") if f.strip()]
    assert frames[0].startswith("t2i   0%|") and " 0/50 [" in frames[0]
    assert frames[-1].startswith("t2i 100%|" + "█" * 20 + "| 50/50 [") and frames[-1].rstrip().endswith("]")
    assert len(frames) >= 2
    code, err = _run_cli(pkg_dir, tmp_path / "pipe.png", tty=False)
    assert code == 0 and err == ""  # no bar, no carriage return
    code, err = _run_cli(pkg_dir, tmp_path / "quiet.png", "--quiet", tty=True)
    assert code == 0 and err == ""
