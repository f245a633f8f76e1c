"""Choose each task's recommended sampling on a validation split and write it as ``sampling.json``.

::

    python -m taskfold.benchmarks.tune_sampling MTU_DIR --data VAL_DATA --out DIR [--n 64] [--split test]
                                                [--write]

Exports the model (ONNX, the dataset's image size) to ``DIR/package``, then for every task
evaluates each setting of a small grid (:data:`GRID`: img2img strength for the tasks with a
condition image, text and image guidance where the task has them; 20 DDIM steps) on the first
``n`` rows of the split through the runtime, exactly as ``taskfold evaluate`` does, and keeps
the setting with the highest task success (``sr``: the largest mean PSNR gain over the
upsampled input). Writes ``DIR/grid.json`` and ``DIR/grid.md`` (every setting's score with its
95 % interval) and ``DIR/sampling.json``; ``--write`` also copies that file into ``MTU_DIR``,
where ``taskfold export`` picks it up. Give it a dataset the reported numbers do not come from
(another ``make-shapes`` seed): the choice is fitted to these rows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

from taskfold.benchmarks.evaluate import format_gain, format_rate

def _product(strengths, scales):
    return [({"strength": s} if s is not None else {}) | sc for s, sc in itertools.product(strengths, scales)]


#: Per task: the settings tried (strength x a few guidance pairs: the paper's defaults, a milder one and none).
GRID = {
    "t2i": _product([None], [{"guidance_scale": g} for g in (1.5, 3.0, 5.0, 7.5)]),
    "edit": _product([0.3, 0.4, 0.5, 0.75, 1.0], [{"guidance_scale": 1.0, "image_guidance_scale": 1.0},
                                        {"guidance_scale": 1.5, "image_guidance_scale": 1.2},
                                        {"guidance_scale": 3.0, "image_guidance_scale": 1.2},
                                        {"guidance_scale": 7.5, "image_guidance_scale": 1.6}]),
    "inpaint": _product([0.3, 0.4, 0.5, 0.75, 1.0], [{"guidance_scale": 1.0, "image_guidance_scale": 1.0},
                                           {"guidance_scale": 1.5, "image_guidance_scale": 1.2},
                                           {"guidance_scale": 4.0, "image_guidance_scale": 1.5}]),
    "sr": _product([0.15, 0.3, 0.5, 1.0], [{}]),
}
STEPS = 20


def _score(task: str, m: dict) -> tuple[float, str]:
    if "success_rate" in m:
        return m["success_rate"], format_rate(m, digits=3)
    return m["psnr_gain_db"], format_gain(m, unit=" dB")


def tune(mtu_dir: str | Path, data: str | Path, out: str | Path, n: int = 64, split: str = "test",
         tasks=None, log=print) -> dict:
    from taskfold._io import write_json_atomic
    from taskfold.benchmarks.evaluate import evaluate_package
    from taskfold.export.package import ExportConfig, export_package
    from taskfold.runtime import open_package
    from taskfold.sampling import write_sampling
    from taskfold.train.data import load_dataset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(data, split=split)
    size = dataset[0]["target"].shape[1]
    pkg_dir = out / "package"
    if not (pkg_dir / "manifest.json").is_file():
        export_package(mtu_dir, ExportConfig(height=size, width=size, parity_timesteps=2), pkg_dir, overwrite=True,
                       log=lambda m: None)
    pkg = open_package(pkg_dir)
    names = [t for t in (tasks or pkg.tasks) if t in GRID]
    start = time.perf_counter()
    grid, chosen = {}, {}
    for task in names:
        spec = pkg.spec(task)
        rows = []
        for setting in GRID[task]:
            setting = {k: v for k, v in setting.items()
                       if not (k == "image_guidance_scale" and spec.guidance != "image_text")
                       and not (k == "guidance_scale" and spec.guidance == "none")}
            with tempfile.TemporaryDirectory() as tmp:
                m = evaluate_package(pkg_dir, data, Path(tmp) / "e", tasks=(task,), n=n, split=split, steps=STEPS,
                                     strength=setting.get("strength"), guidance=setting.get("guidance_scale"),
                                     image_guidance=setting.get("image_guidance_scale"),
                                     log=lambda m: None)["tasks"][task]
            value, text = _score(task, m)
            rows.append({"setting": setting, "score": value, "text": text})
            log(f"{task} {setting}: {text}")
        best = max(rows, key=lambda r: r["score"])  # the first of equal scores: the grid's order
        grid[task] = rows
        chosen[task] = best["setting"] | {"steps": STEPS}
    source = (f"chosen by benchmarks/tune_sampling.py: best task success (sr: PSNR gain) over its grid on the first "
              f"{n} {split} rows per task of {Path(data).name}, {STEPS} DDIM steps, seed 0")
    write_sampling(out / "sampling.json", chosen, source)
    write_json_atomic(out / "grid.json", {"data": str(data), "split": split, "n": n, "steps": STEPS,
                                          "seconds": round(time.perf_counter() - start, 1), "grid": grid,
                                          "chosen": chosen})
    lines = [f"# Sampling grid: {Path(mtu_dir).name} on {Path(data).name} ({split}, {n} rows per setting)", ""]
    for task, rows in grid.items():
        lines += [f"## {task}", "", "| setting | task success (sr: PSNR gain), 95 % interval | chosen |", "|---|---|---|"]
        lines += [f"| {', '.join(f'{k} {v:g}' for k, v in r['setting'].items())} | {r['text']} | "
                  f"{'**yes**' if r['setting'] | {'steps': STEPS} == chosen[task] else ''} |" for r in rows]
        lines.append("")
    (out / "grid.md").write_text("\n".join(lines))
    return {"chosen": chosen, "source": source, "grid": grid}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m taskfold.benchmarks.tune_sampling", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="MTU model directory")
    p.add_argument("--data", required=True, help="validation dataset (not the one reported numbers come from)")
    p.add_argument("--out", required=True, help="output directory (package, grid.json, grid.md, sampling.json)")
    p.add_argument("--n", type=int, default=64, help="rows per task and setting (default 64)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--tasks", help="comma-separated tasks (default: every task of the grid the model has)")
    p.add_argument("--write", action="store_true", help="also copy sampling.json into the model directory")
    args = p.parse_args(argv)
    result = tune(args.model, args.data, args.out, n=args.n, split=args.split,
                  tasks=args.tasks.split(",") if args.tasks else None)
    print(json.dumps(result["chosen"]))
    if args.write:
        shutil.copyfile(Path(args.out) / "sampling.json", Path(args.model) / "sampling.json")
        print(f"wrote {Path(args.model) / 'sampling.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
