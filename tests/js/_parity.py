"""Shared parity cases: every task of a package x every scheduler, run by the Python runtime here and by the
JavaScript runtime (Node or Chromium) from one cases file, compared image for image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from taskfold.runtime import open_package
from taskfold.runtime.schedulers import SCHEDULERS

#: the largest difference allowed between two runtimes' images, in [0, 1] pixel units
TOLERANCE = 1 / 255
PROMPTS = {"t2i": "a red circle", "edit": "make the circle blue", "inpaint": "remove the square",
           "inpaint-mask": "a green triangle", "sr": ""}


def cases_for(name: str, pkg: Path, images: dict, steps: int) -> list[dict]:
    """Every task x every scheduler of ``pkg`` at ``steps`` steps (image tasks from a noised condition on
    alternate schedulers), plus the package's own recommended sampling for one task and a batch of two."""
    manifest = json.loads((pkg / "manifest.json").read_text())
    side = manifest["sample"]["image_height"]
    out = []
    for t, (task, rec) in enumerate(manifest["tasks"].items()):
        for k, sched in enumerate(SCHEDULERS):
            opts = {"prompt": PROMPTS.get(task, "a blue square"), "scheduler": sched, "steps": steps, "seed": 11 * t + k}
            if "image" in rec["inputs"] or "masked_image" in rec["inputs"]:
                scale = rec.get("condition_scale", 1)
                opts["image"] = str(images[f"cond{side // scale}"])
                opts["strength"] = 1.0 if k % 2 == 0 else 0.75
            if "mask" in rec["inputs"]:
                opts["mask"] = str(images[f"mask{side}"])
            out.append({"id": f"{name}-{task}-{sched}", "package": str(pkg), "task": task, "options": opts})
    image_task = next((n for n, r in manifest["tasks"].items() if "image" in r["inputs"]), None)
    if image_task:  # the package's recommended steps, strength and guidance
        rec = manifest["tasks"][image_task]
        opts = {"prompt": PROMPTS.get(image_task, ""), "seed": 5,
                "image": str(images[f"cond{side // rec.get('condition_scale', 1)}"])}
        out.append({"id": f"{name}-{image_task}-defaults", "package": str(pkg), "task": image_task, "options": opts})
    out.append({"id": f"{name}-t2i-batch2", "package": str(pkg), "task": "t2i",
                "options": {"prompt": "a small square", "scheduler": "euler-a", "steps": steps, "seed": 4294967295,
                            "numImages": 2, "guidance": 2.5}})
    # two prompts x two images each (rows p, p, q, q; one noise draw), one negative prompt per prompt
    out.append({"id": f"{name}-t2i-negative", "package": str(pkg), "task": "t2i",
                "options": {"prompt": ["a red circle", "a blue square"], "negativePrompt": ["a green triangle", "red"],
                            "numImages": 2, "scheduler": "dpmpp-2m", "steps": steps, "seed": 77}})
    return out


def python_images(cases: list[dict]) -> dict[str, np.ndarray]:
    """The Python runtime's images ``[B, 3, H, W]`` in [-1, 1] for each case."""
    out, pkgs = {}, {}
    for c in cases:
        pkg = pkgs.setdefault(c["package"], open_package(c["package"]))
        o = c["options"]
        out[c["id"]] = pkg.generate(c["task"], o.get("prompt", ""), image=o.get("image"), mask=o.get("mask"),
                                    steps=o.get("steps"), scheduler=o.get("scheduler", "ddim"), seed=o.get("seed", 0),
                                    strength=o.get("strength"), guidance_scale=o.get("guidance"),
                                    image_guidance_scale=o.get("imageGuidance"), negative_prompt=o.get("negativePrompt"),
                                    num_images_per_prompt=o.get("numImages", 1))
    return out


def to_uint8(a: np.ndarray) -> np.ndarray:
    """``[B, 3, H, W]`` in [-1, 1] -> uint8 ``[B, H, W, 3]``, as the Python runtime saves images."""
    return np.round((np.clip(a, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def compare(cases: list[dict], py: dict[str, np.ndarray], out_dir: Path) -> list[dict]:
    """Per case: the max abs difference of the float images (in [0, 1] units) and of the uint8 RGB images."""
    results = json.loads((out_dir / "results.json").read_text())
    rows = []
    for c in cases:
        r = results.get(c["id"], {"error": "no result"})
        want = py[c["id"]]
        if "error" in r:
            rows.append({"id": c["id"], "error": r["error"]})
            continue
        got = np.fromfile(out_dir / f"{c['id']}.f32", dtype="<f4").reshape(r["shape"])
        rgba = np.fromfile(out_dir / f"{c['id']}.rgba", dtype=np.uint8).reshape(want.shape[0], want.shape[2],
                                                                              want.shape[3], 4)
        rows.append({"id": c["id"], "float": float(np.abs(got - want).max() / 2) if got.shape == want.shape else None,
                     "uint8": int(np.abs(rgba[..., :3].astype(int) - to_uint8(want)).max()),
                     "alpha": int(rgba[..., 3].min()), "seconds": r.get("seconds")})
    return rows


def report(title: str, rows: list[dict]) -> str:
    lines = [f"{title}: {len(rows)} cases"]
    for r in rows:
        lines.append(f"  {r['id']:<34} " + (f"ERROR {r['error']}" if "error" in r else
                                            f"max abs {r['float']:.2e} ([0,1] units), uint8 {r['uint8']}"))
    return "\n".join(lines)


def failures(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows if "error" in r or r["float"] is None or r["float"] > TOLERANCE or r["uint8"] > 1
            or r["alpha"] != 255]
