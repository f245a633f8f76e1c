"""A task declared in an upcycle config goes end to end: upcycle -> data check -> train -> export -> run.

The declaration is the only place the task is described: its rows are checked, trained on,
exported and sampled from what it says (inputs, text use, guidance and its scales).
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from taskfold.cli import main
from taskfold.runtime import open_package
from taskfold.train.shapes import make_shapes

DECLARED = {"name": "colorize", "inputs": ["noisy", "image"], "uses_text": True, "guidance": "image_text",
            "guidance_scale": 5.0, "image_guidance_scale": 1.25}


def _add_colorize_rows(data, n=6):
    """Rows of the declared task: the grey picture of a t2i target as the condition, its caption as the prompt."""
    rows = [json.loads(line) for line in open(data / "metadata.jsonl")]
    t2i = [r for r in rows if r["task"] == "t2i"][:n]
    (data / "colorize").mkdir()
    new = []
    for i, r in enumerate(t2i):
        grey = Image.open(data / r["target"]).convert("L").convert("RGB")
        grey.save(data / "colorize" / f"{i:05d}_condition.png")
        new.append({"task": "colorize", "prompt": r["prompt"], "target": r["target"],
                    "condition": f"colorize/{i:05d}_condition.png", "split": "train"})
    with open(data / "metadata.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in new)
    return new


def test_declared_task_goes_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    make_shapes(data, n=8, size=16, seed=0, tasks=("t2i",))
    rows = _add_colorize_rows(data)
    cfg = tmp_path / "up.json"
    cfg.write_text(json.dumps({"tasks": ["t2i", "colorize"], "num_experts": 2, "custom_tasks": [DECLARED]}))

    # data check knows the task from the declaration (and without it, refuses the rows)
    assert main(["data", "check", str(data)]) == 2
    assert "unknown task 'colorize'" in capsys.readouterr().err
    assert main(["data", "check", str(data), "--config", str(cfg)]) == 0
    assert "colorize: 6 rows" in capsys.readouterr().out

    assert main(["upcycle", "--base", "preset:tiny-pixel", "--config", str(cfg), "--out", str(tmp_path / "mtu")]) == 0
    assert main(["data", "check", str(data), "--model", str(tmp_path / "mtu")]) == 0
    assert main(["train", str(tmp_path / "mtu"), "--data", str(data), "--steps", "3", "--batch-size", "4",
                 "--task-weights", "t2i=1,colorize=3", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert "colorize" in log[-1]["loss_per_task"] and log[-1]["loss_per_task"]["colorize"] > 0
    assert main(["export", str(tmp_path / "run" / "mtu"), "--out", str(tmp_path / "pkg"), "--height", "16",
                 "--width", "16", "--parity-timesteps", "1"]) == 0
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    entry = manifest["tasks"]["colorize"]
    assert {k: entry[k] for k in DECLARED} == DECLARED and entry["in_channels"] == 6
    graph = next(g for g in manifest["graphs"] if g["task"] == "colorize")
    assert graph["parity"]["status"] == "passed" and graph["inputs"][0]["shape"] == [1, 6, 16, 16]

    pkg = open_package(tmp_path / "pkg")
    spec = pkg.spec("colorize")
    assert (spec.guidance, spec.guidance_scale, spec.image_guidance_scale) == ("image_text", 5.0, 1.25)
    calls = []
    unet = pkg.unet("colorize")
    pkg._sessions["colorize"] = lambda x, t, h: calls.append(x.shape) or unet(x, t, h)
    cond = data / rows[0]["condition"]
    a = pkg.generate("colorize", rows[0]["prompt"], image=str(cond), steps=2, seed=3)
    assert len(calls) == 2 * 3  # dual guidance: three UNet evaluations per step, as declared
    assert calls[0] == (1, 6, 16, 16) and a.shape == (1, 3, 16, 16)

    out = tmp_path / "o.png"
    assert main(["run", str(tmp_path / "pkg"), "--task", "colorize", "--prompt", rows[0]["prompt"], "--image",
                 str(cond), "--steps", "2", "--seed", "3", "--out", str(out)]) == 0
    png = np.asarray(Image.open(out).convert("RGB"), np.float32) / 127.5 - 1
    assert np.abs(png - a[0].transpose(1, 2, 0)).max() <= 1.5 / 127.5  # the CLI ran the same sampling
