"""``taskfold-js run`` mirrors ``taskfold run``: the same PNG for the same options, the same one-line
refusals (exit status 2) before any work, the same warnings."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from taskfold.cli import main

from .conftest import REPO, run_node


def test_js_cli_writes_the_python_clis_image(node, tiny_mtu_package, images, tmp_path, capsys):
    args = ["--task", "edit", "--prompt", "make the circle blue zebra", "--image", str(images["cond32"]),
            "--steps", "5", "--scheduler", "euler-a", "--seed", "9"]
    assert main(["run", str(tiny_mtu_package), *args, "--out", str(tmp_path / "py.png")]) == 0
    py_out = capsys.readouterr()
    done = run_node(["bin/taskfold-js.js", "run", str(tiny_mtu_package), *args, "--out", str(tmp_path / "js.png")])
    assert done.returncode == 0, done.stderr
    a = np.asarray(Image.open(tmp_path / "py.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "js.png")).astype(int)
    assert a.shape == b.shape == (32, 32, 3) and np.abs(a - b).max() <= 1
    settings = lambda line: re.sub(r"^wrote \S+ |, [0-9.]+ s\)$", "", line.strip())  # noqa: E731
    assert settings(done.stdout) == settings(py_out.out.splitlines()[-1])
    rec = json.loads((REPO / "models" / "tiny-mtu" / "sampling.json").read_text())["tasks"]["edit"]
    assert (f"task edit, steps 5, strength {rec['strength']:g}*, guidance {rec['guidance_scale']:g}*, "
            f"image guidance {rec['image_guidance_scale']:g}*") in done.stdout  # the package's defaults, starred
    assert done.stderr.strip() == py_out.err.strip()  # the unknown-word warning, word for word


def test_js_cli_refuses_as_the_python_cli_does(node, tiny_mtu_package, tmp_path, capsys):
    (tmp_path / "taken.png").write_bytes(b"x")
    for args in (["--task", "edit", "--out", str(tmp_path / "a.png")],
                 ["--task", "t2i", "--out", str(tmp_path / "taken.png")],
                 ["--task", "t2i", "--seed", "-1", "--out", str(tmp_path / "b.png")],
                 ["--task", "nope", "--out", str(tmp_path / "c.png")],
                 ["--task", "t2i", "--out", str(tmp_path / "missing" / "d.png")]):
        code = main(["run", str(tiny_mtu_package), *args])
        py_err = capsys.readouterr().err.strip()
        done = run_node(["bin/taskfold-js.js", "run", str(tiny_mtu_package), *args])
        assert code == done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and py_err.startswith("error: ")
        first = lambda s: s.split(" (hint")[0].split(":", 1)[1].strip()[:40]  # noqa: E731
        assert first(done.stderr) == first(py_err), (done.stderr, py_err)
    assert not (tmp_path / "a.png").exists() and (tmp_path / "taken.png").read_bytes() == b"x"
