"""The JS runtime's image conversions equal the Python runtime's (Pillow's): bicubic resampling byte for byte
(super-resolution's half-size input, ``--resize``), RGB/grey/palette/RGBA PNGs to RGB, ``x / 127.5 - 1``, and
masks thresholded on Pillow's grey."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from taskfold.runtime.images import mask_to_array, to_chw, to_rgb

from .conftest import run_node

SIZES = [((16, 16), (32, 32)), ((32, 32), (64, 64)), ((17, 9), (40, 23)), ((64, 48), (20, 31)), ((8, 8), (8, 30))]
MODES = ["RGB", "L", "RGBA", "P", "LA"]


def test_js_resampling_and_conversions_equal_pillows(node, tmp_path):
    rng = np.random.default_rng(3)
    cases, want = [], {}
    for k, (((w, h), (W, H)), mode) in enumerate(zip(SIZES * 2, MODES * 2)):
        rgb = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
        im = rgb.convert(mode) if mode != "P" else rgb.quantize(16)
        path = tmp_path / f"{k}.png"
        im.save(path)
        im = Image.open(path)
        cases.append({"id": str(k), "png": str(path), "width": W, "height": H})
        resized = to_rgb(im, "image").resize((W, H), Image.Resampling.BICUBIC)
        want[str(k)] = (np.asarray(resized).ravel(), to_chw(resized).ravel(), mask_to_array(im).ravel())
    (tmp_path / "in.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/images.mjs", str(tmp_path / "in.json"), str(tmp_path / "out.json")])
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads((tmp_path / "out.json").read_text())
    for c in cases:
        resized, chw, mask = want[c["id"]]
        g = got[c["id"]]
        np.testing.assert_array_equal(np.array(g["resized"], np.uint8), resized, err_msg=c["id"])
        np.testing.assert_array_equal(np.array(g["chw"], np.float32), chw, err_msg=c["id"])
        np.testing.assert_array_equal(np.array(g["mask"], np.float32), mask, err_msg=c["id"])
