"""Same seed, same images: ``Package.generate`` without the call options added later (negative prompt,
images per prompt, size, callback) gives the images the runtime gave before they existed.

``data/generate_baseline.npz`` holds :data:`CASES` (as JSON) and the images the runtime of commit
fc3f463 made for them from the bundled ``models/tiny-mtu`` exported with that commit's exporter: every
task with DDIM and Euler ancestral (whose steps draw noise), a batch of two prompts, img2img strength and
explicit guidance scales. Written by ``python -m tests.runtime.test_generate_baseline OUT.npz`` run with
that commit on the path (``cd /tmp; PYTHONPATH=<fc3f463's tree>:<repo> python -m ...``); it is not rewritten by
later code, which is the point. When a new model is bundled it is rewritten by fc3f463's code again (for the
base-v3 model, its stage-11 successor (2026-12-05) and stage 12 (2026-12-06), today's code gave
the same images bit for bit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BASELINE = Path(__file__).parent / "data" / "generate_baseline.npz"
#: max |now - then| on images in [-1, 1]: the same graphs and arithmetic give the same numbers; this allows
#: another machine's ONNX Runtime kernels (a changed noise order moves pixels by ~1).
TOLERANCE = 1e-4
PROMPTS = {"t2i": "a red circle", "edit": "make the circle blue", "sr": "", "inpaint": "remove the square"}
CASES = [
    *({"id": f"{task}-{sched}", "task": task, "prompt": PROMPTS[task], "scheduler": sched, "steps": 4,
       "seed": 3 + k, **({} if task == "t2i" else {"strength": 1.0})}
      for k, task in enumerate(PROMPTS) for sched in ("ddim", "euler-a")),
    {"id": "t2i-batch2", "task": "t2i", "prompt": ["a red circle", "a blue square"], "scheduler": "euler-a",
     "steps": 3, "seed": 2**32 - 1, "guidance_scale": 2.5},
    {"id": "edit-strength", "task": "edit", "prompt": "make the circle blue", "scheduler": "ddim", "steps": 6,
     "seed": 11, "strength": 0.75, "guidance_scale": 5.0, "image_guidance_scale": 1.2},
    {"id": "t2i-defaults", "task": "t2i", "prompt": "a green triangle", "seed": 0},
]


def inputs(side: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded condition image ``[3, side, side]`` in [-1, 1] and a mask ``[1, side, side]`` of 0/1."""
    rng = np.random.RandomState(1234)
    cond = np.clip(rng.standard_normal((3, side, side)) * 0.5, -1, 1).astype(np.float32)
    mask = np.zeros((1, side, side), np.float32)
    mask[:, side // 4: side // 2, side // 4: 3 * side // 4] = 1
    return cond, mask


def images(pkg) -> dict[str, np.ndarray]:
    """:data:`CASES` run through ``pkg.generate`` with only the options every version takes."""
    spec_inputs = {t: pkg.manifest["tasks"][t]["inputs"] for t in pkg.tasks}
    cond, mask = inputs(pkg.image_size[0])
    out = {}
    for c in CASES:
        layout = spec_inputs[c["task"]]
        kw = {k: c[k] for k in ("steps", "scheduler", "seed", "strength", "guidance_scale", "image_guidance_scale")
              if k in c}
        if c["task"] == "edit":  # the package's edit guidance when the baseline was made (its default has changed)
            kw = {"guidance_scale": 3.0, "image_guidance_scale": 1.2} | kw
        out[c["id"]] = pkg.generate(c["task"], c["prompt"], image=cond if len(layout) > 1 else None,
                                    mask=mask if "mask" in layout else None, **kw)
    return out


def export_tiny_mtu(out: Path) -> Path:
    from taskfold.cli import main

    assert main(["export", str(REPO / "models" / "tiny-mtu"), "--out", str(out), "--parity-timesteps", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_mtu_package(tmp_path_factory):
    return export_tiny_mtu(tmp_path_factory.mktemp("baseline") / "pkg")


def test_generate_gives_the_images_it_gave_before_the_new_options(tiny_mtu_package):
    from taskfold.runtime import open_package

    saved = np.load(BASELINE)
    assert json.loads(str(saved["cases"])) == CASES
    got = images(open_package(tiny_mtu_package))
    for c in CASES:
        want = saved[c["id"]]
        assert got[c["id"]].shape == want.shape, c["id"]
        err = float(np.abs(got[c["id"]] - want).max())
        assert err < TOLERANCE, (c["id"], err)
        assert float(want.std()) > 0.02, c["id"]  # an image, not a constant (the least: sr-euler-a, 0.030)
    assert float(np.abs(saved["t2i-ddim"] - saved["t2i-euler-a"]).max()) > 0.1  # the cases differ


if __name__ == "__main__":  # python -m tests.runtime.test_generate_baseline OUT.npz (with the old code on the path)
    import tempfile

    from taskfold.runtime import open_package

    with tempfile.TemporaryDirectory() as tmp:
        made = images(open_package(export_tiny_mtu(Path(tmp) / "pkg")))
    np.savez_compressed(sys.argv[1], cases=np.array(json.dumps(CASES)), **made)
