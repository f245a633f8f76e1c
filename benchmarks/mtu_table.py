"""A measured miniature of the MTU paper's Table 2 on the shapes world, and the DTR pretraining comparison.

``python -m taskfold.benchmarks.mtu_table --base BASE --out DIR [--steps-per-task S]`` runs, on
one CPU, with the project's own commands (upcycle, train) and the PyTorch sampler:

* **MTU**: the base upcycled for ``t2i, edit, sr, inpaint`` with N = 4 experts, fine-tuned on
  all four tasks for ``4 x S`` steps (MTU components only, as in the paper; Adam, ``--lr``);
* **single-task**: for each task, the base with that task's ``conv_in`` (one dense expert),
  fully fine-tuned for ``S`` steps on that task alone (the same recipe) — four models, the same
  ``4 x S`` steps in total;

then samples the test split of every task (DDIM, the task's guidance) and scores it with
metrics that need no downloaded weights: PSNR and SSIM to the target for edit, sr and
inpaint, and for t2i the share of samples in which the deterministic pixel analyser finds
the prompt's shape and colour. The trivial baseline of returning the condition image is
scored beside them.

``--dtr-steps N`` adds the second table: the tiny base pretrained from scratch with and
without DTR for the same ``N`` steps, scored on t2i.

Writes ``DIR/mtu_table.json`` and ``DIR/mtu_table.md`` (with the machine and the command).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .evaluate import format_gain, format_kinds, format_rate

TASKS = ("t2i", "edit", "sr", "inpaint")


def evaluate(model_dir: Path, data_dir: Path, tasks, n: int, steps: int = 20, seed: int = 0, fold_task=None,
             strength: float = 1.0, sampling: dict | None = None) -> dict:
    """Sample ``n`` test rows per task with the model in ``model_dir`` and score them (the
    image-conditioned tasks img2img at ``strength`` when it is below 1). With ``sampling`` (a read
    sampling file, :func:`read_table_sampling`) each task it names samples with its recommendation."""
    import torch

    from taskfold.sampling import apply_sampling
    from taskfold.train.data import load_dataset
    from taskfold.train.metrics import task_scores
    from taskfold.train.pipeline import generate, mtu_fn
    from taskfold.upcycle.bundle import find_encoders, find_scheduler_config
    from taskfold.upcycle.checkpoint import load_mtu

    mtu = load_mtu(model_dir).eval()
    te, codec = find_encoders(model_dir, mtu)
    found = find_scheduler_config(model_dir, mtu)
    if found is None:
        raise SystemExit(f"{model_dir}: no scheduler config with the model or its base")
    sched = found[0]
    data = load_dataset(data_dir, tasks=tasks, split="test")
    specs = {s.name: s for s in apply_sampling(mtu.tasks, sampling)}
    out = {}
    for task in tasks:
        if task not in mtu.task_names:
            continue
        idx = data.indices(task)[:n]
        items = [data[i] for i in idx]
        spec = specs[task]
        cond = np.stack([it["condition"] for it in items]) if "condition" in items[0] else None
        h, w = items[0]["target"].shape[1:]
        recommended = sampling is not None and task in sampling["tasks"]
        task_steps, task_strength = (spec.steps, spec.strength) if recommended else (steps, strength)
        torch.manual_seed(seed)
        images = generate(mtu_fn(mtu, task), spec, [it["prompt"] for it in items], text_encoder=te, codec=codec,
                          scheduler_config=sched, condition=cond, height=h, width=w, steps=task_steps, seed=seed,
                          strength=task_strength if cond is not None else 1.0)
        out[task] = {k: v for k, v in task_scores(task, images, items).items() if k != "per_sample"}
    return out


def read_table_sampling(path: Path) -> dict:
    """A sampling file for the four built-in tasks (every arm takes the entries of its own tasks)."""
    from taskfold.sampling import read_sampling
    from taskfold.tasks import BUILTIN_TASKS

    return read_sampling(path, {t: BUILTIN_TASKS[t] for t in TASKS})


def _train_seconds(run: Path) -> float:
    """Training wall time of a finished run, from the last line of its log."""
    import json

    lines = (run / "log.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["seconds"]) if lines else 0.0


def _upcycle(base: str, tasks, experts: int, seed: int, out: Path) -> None:
    from taskfold.upcycle import UpcycleConfig
    from taskfold.upcycle.convert import upcycle_to_dir

    upcycle_to_dir(base, UpcycleConfig(tasks=tuple(tasks), num_experts=experts, seed=seed), out, seed=seed,
                   overwrite=True)


def _train(init: Path, run: Path, data: Path, cfg, resume: bool) -> None:
    """Train ``init`` into ``run``; with ``resume`` a run already there continues (or is reused when done)."""
    from taskfold.train.trainer import train

    again = resume and run.exists() and any(run.iterdir())
    train(init, data, cfg, run, resume=again, progress=False)


def mtu_vs_single(base: str, data: Path, out: Path, steps_per_task: int, batch: int, n_eval: int, seed: int,
                  lr: float = 5e-4, snr_gamma: float | None = None, resume: bool = False,
                  sampling: dict | None = None) -> dict:
    from taskfold.train.trainer import TrainConfig

    rows = {}
    runs = [out / "mtu-run"] + [out / f"single-{task}-run" for task in TASKS]
    recipe = dict(batch_size=batch, lr=lr, snr_gamma=snr_gamma, seed=seed, log_every=50)
    t0 = time.time()
    _upcycle(base, TASKS, 4, seed, out / "mtu-init")
    _train(out / "mtu-init", out / "mtu-run", data,
           TrainConfig(steps=4 * steps_per_task, checkpoint_every=4 * steps_per_task, **recipe), resume)
    rows["MTU (N=4, all tasks)"] = evaluate(out / "mtu-run" / "mtu", data, TASKS, n_eval, seed=seed,
                                              sampling=sampling)
    single = {}
    for task in TASKS:
        _upcycle(base, (task,), 1, seed, out / f"single-{task}-init")
        _train(out / f"single-{task}-init", out / f"single-{task}-run", data,
               TrainConfig(steps=steps_per_task, checkpoint_every=steps_per_task, trainable="all", **recipe), resume)
        single |= evaluate(out / f"single-{task}-run" / "mtu", data, (task,), n_eval, seed=seed, sampling=sampling)
    rows["single-task fine-tunes"] = single
    return {"rows": rows, "seconds": round(time.time() - t0, 1),
            "train_seconds": {run.name: _train_seconds(run) for run in runs}}


def dtr_vs_plain(data: Path, out: Path, steps: int, batch: int, n_eval: int, seed: int,
                 sampling: dict | None = None) -> dict:
    from taskfold.train.pretrain import pretrain, pretrain_config

    rows = {}
    for name, dtr in (("with DTR", True), ("without DTR", False)):
        run = out / ("pre-dtr" if dtr else "pre-plain")
        cfg = pretrain_config(steps, batch, seed=seed, checkpoint_every=steps, log_every=100)
        pretrain(data, cfg, run, dtr=dtr, seed=seed, overwrite=True, progress=False)
        rows[name] = evaluate(run / "run" / "mtu", data, ("t2i",), n_eval, seed=seed, sampling=sampling)["t2i"]
    return rows


#: How the table samples without ``--sampling``.
DEFAULT_SAMPLING = "20 DDIM steps from pure noise, the tasks' guidance"


def _sampling_text(sampling) -> str:
    if not isinstance(sampling, dict):
        return sampling or DEFAULT_SAMPLING
    parts = []
    for task, v in sampling["tasks"].items():
        how = f"img2img {v['strength']:g}" if v.get("strength", 1) < 1 else "from noise"
        g = "/".join(f"{v[k]:g}" for k in ("guidance_scale", "image_guidance_scale") if k in v)
        parts.append(f"{task} {how}" + (f", guidance {g}" if g else "") + f", {v.get('steps', 20)} steps")
    return f"{sampling['file']} ({'; '.join(parts)})"


def compare_bases(bases: dict[str, str], data: Path, out: Path, n_eval: int, seed: int,
                  sampling: dict | None = None) -> dict:
    """``t2i`` task success of bases already trained (e.g. the bundled base, pretrained with DTR, and
    one trained by the same command with ``--no-dtr``), each as a one-expert ``t2i`` model."""
    rows = {}
    for i, (name, base) in enumerate(bases.items()):
        model = out / f"base-{i}-t2i"
        _upcycle(base, ("t2i",), 1, seed, model)
        rows[name] = evaluate(model, data, ("t2i",), n_eval, seed=seed, sampling=sampling)["t2i"] | {"base": str(base)}
    return rows


def _named_dirs(value: str) -> dict[str, str]:
    out = {}
    for item in value.split(","):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=DIR")
        out[name.strip()] = path.strip()
    return out


def markdown(result: dict) -> str:
    lines = ["# MTU on the shapes world (miniature of the MTU paper's Table 2)", "",
             f"Machine: {result['machine']}" + (f", {result['date']}" if result.get("date") else "")
             + f". Command: `{result['command']}`", ""]
    if "table2" in result:
        t = result["table2"]
        lines += ["| model | t2i success | edit success (strict) | inpaint success | sr PSNR gain (dB) | "
                  "edit / sr / inpaint PSNR |", "|---|---:|---:|---:|---:|---:|"]
        for name, r in t["rows"].items():
            rates = " | ".join(format_rate(r[k]) for k in ("t2i", "edit", "inpaint"))
            psnrs = " / ".join(f"{r[k]['psnr']:.2f}" for k in ("edit", "sr", "inpaint"))
            lines.append(f"| {name} | {rates} | {format_gain(r['sr'])} | {psnrs} |")
        r = next(iter(t["rows"].values()))
        lines.append("| return the condition image | – | – | – | 0 | " + " / ".join(
            f"{r[k]['condition_baseline_psnr']:.2f}" for k in ("edit", "sr", "inpaint")) + " |")
        for task in ("edit", "inpaint"):
            kinds = [f"{name} {format_kinds(r[task])}" for name, r in t["rows"].items() if format_kinds(r[task])]
            if kinds:
                lines += ["", f"`{task}` success by kind: " + "; ".join(kinds) + "."]
        earlier = [f"{name} {r['edit']['also']['asked_only']['successes']}/{r['edit']['n']} "
                   f"({format_kinds(r['edit']['also']['asked_only'])})"
                   for name, r in t["rows"].items() if "asked_only" in r["edit"].get("also", {})]
        if earlier:
            lines += ["", "`edit` by the earlier metric (the asked attribute and the shape only; size, place and "
                          "background unchecked), on the same outputs: " + "; ".join(earlier) + "."]
        lines += ["", f"{t['rows']['MTU (N=4, all tasks)']['t2i']['n']} test samples per task, DDIM, sampled with "
                      f"{_sampling_text(result.get('sampling'))}. Training time: " + ", ".join(
                          f"{k} {v:.0f} s" for k, v in t.get("train_seconds", {}).items()) + ".", ""]
    if "dtr" in result:
        lines += ["| tiny base pretrained | t2i success, 95 % interval |", "|---|---:|"]
        for name, r in result["dtr"].items():
            lines.append(f"| {name} | {format_rate(r)} |")
    return "\n".join(lines) + "\n"



def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m taskfold.benchmarks.mtu_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="base folder (the bundled tiny base); omit to skip the MTU table")
    p.add_argument("--data", required=True, help="shapes dataset with t2i, edit, sr, inpaint rows (32x32)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps-per-task", type=int, default=250)
    p.add_argument("--dtr-steps", type=int, default=0, help="also pretrain with/without DTR for this many steps")
    p.add_argument("--dtr-bases", type=_named_dirs,
                   help="instead of pretraining: score these trained bases on t2i, e.g. "
                        "'with DTR=models/tiny-base,without DTR=plain/base'")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tuning learning rate (both arms)")
    p.add_argument("--snr-gamma", type=float, help="Min-SNR-gamma loss weighting (both arms)")
    p.add_argument("--eval", type=int, default=64, help="test samples per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampling", type=Path,
                   help="a sampling.json (e.g. models/tiny-mtu's): every arm samples each task with its "
                        "recommendation there (default: " + DEFAULT_SAMPLING + ")")
    p.add_argument("--resume", action="store_true",
                   help="continue (or reuse, when finished) the training runs already in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from taskfold._io import write_bytes_atomic, write_json_atomic

    from .machine import describe, one_line

    from taskfold.errors import TaskfoldError

    try:
        sampling = read_table_sampling(args.sampling) if args.sampling else None
    except TaskfoldError as e:
        raise SystemExit(f"error: {e}") from None
    result = {"machine": one_line(describe()), "date": time.strftime("%Y-%m-%d"),
              "command": "python -m taskfold.benchmarks.mtu_table " + " ".join(sys.argv[1:] if argv is None else argv),
              "sampling": ({"file": str(args.sampling), "tasks": sampling["tasks"]} if sampling else
                           DEFAULT_SAMPLING)}
    if args.base:
        result["table2"] = mtu_vs_single(args.base, Path(args.data), out, args.steps_per_task, args.batch_size,
                                         args.eval, args.seed, args.lr, args.snr_gamma, args.resume,
                                         sampling)
    if args.dtr_bases:
        result["dtr"] = compare_bases(args.dtr_bases, Path(args.data), out, args.eval, args.seed, sampling)
    elif args.dtr_steps:
        result["dtr"] = dtr_vs_plain(Path(args.data), out, args.dtr_steps, args.batch_size, args.eval, args.seed,
                                     sampling)
    write_json_atomic(out / "mtu_table.json", result)
    write_bytes_atomic(out / "mtu_table.md", markdown(result).encode())
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
