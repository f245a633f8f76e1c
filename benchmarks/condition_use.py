"""How much a fine-tuned model reads its condition image, per task and noise level.

::

    python -m taskfold.benchmarks.condition_use MTU_DIR --data DATA [--tasks edit,inpaint] [--n 64]
                                                [--timesteps 800,600,400] [--split test] [--json OUT]

For the first ``n`` rows of each image-conditioned task, the model's clean-image estimate
``x0^ = (x_t - sqrt(1 - a_t) eps^) / sqrt(a_t)`` (clipped to [-1, 1] where the model is sampled
with a clipped estimate, i.e. pixel space) is compared with the target, mean squared error, twice:
with the condition image given and with it zeroed (what training's image dropout shows the
model). ``copy`` is the error of returning the condition image itself. A model that reads its
condition has ``given`` well below ``zeroed`` at high noise, where ``x_t`` says almost nothing and
only the condition and the words say where things go; the fine-tuned model's README reports these
numbers. Same rows, same noise (seeded per row) and the same timesteps for every model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from taskfold.errors import ConfigError


def condition_use(mtu_dir: str | Path, data: str | Path, tasks: list[str] | None = None, n: int = 64,
                  timesteps: tuple[int, ...] = (800, 600, 400), split: str = "test") -> dict:
    """``{task: {t: {"given": mse, "zeroed": mse, "copy": mse}}, "n": {task: rows}}`` (see the module docstring)."""
    import torch

    from taskfold.train.config import TrainConfig
    from taskfold.train.data import load_dataset
    from taskfold.train.trainer import Plan, alphas_cumprod, build_inputs
    from taskfold.upcycle.bundle import find_encoders, find_noise_schedule
    from taskfold.upcycle.checkpoint import load_mtu

    mtu = load_mtu(mtu_dir)
    te, codec = find_encoders(mtu_dir, mtu)
    mtu.eval()
    te.eval()
    cfg = TrainConfig(noise_schedule=find_noise_schedule(mtu_dir, mtu) or "sd")
    acp = alphas_cumprod(cfg)
    bad = [t for t in timesteps if not 0 <= t < len(acp)]
    if bad:
        raise ConfigError(f"timesteps {bad} are outside the schedule's [0, {len(acp) - 1}]")
    conditioned = [s.name for s in mtu.tasks if s.needs_condition]
    tasks = conditioned if tasks is None else tasks
    unknown = [t for t in tasks if t not in conditioned]
    if unknown:
        raise ConfigError(f"task(s) {', '.join(unknown)} are not image-conditioned tasks of the model; "
                          f"expected some of {', '.join(conditioned)}")
    ds = load_dataset(data, split=split)
    clip = cfg.scheduler_config()["clip_sample"]  # as the model is sampled (pixel space: x0 clipped to [-1, 1])
    out: dict = {"n": {}}
    for task in tasks:
        rows = [i for i in range(len(ds)) if ds.rows[i].task == task][:n]
        if not rows:
            raise ConfigError(f"the {split} split of {str(data)!r} has no {task!r} rows")
        k = len(rows)
        per_t, c = {}, mtu.latent_channels
        for t in timesteps:
            res = {}
            for mode in ("given", "zeroed"):
                plan = Plan([task] * k, rows, torch.full((k,), t), torch.zeros(k, dtype=torch.bool),
                            torch.full((k,), mode == "zeroed"), torch.arange(k))
                inp = build_inputs(plan, range(k), ds, mtu, codec, te.tokenize, acp, "cpu")
                with torch.no_grad():
                    eps = mtu(inp["sample"], inp["timesteps"], te(inp["input_ids"]), inp["task_ids"])
                a = acp[t]
                x0 = (inp["sample"][:, :c] - (1 - a).sqrt() * eps) / a.sqrt()
                truth = (inp["sample"][:, :c] - (1 - a).sqrt() * inp["noise"]) / a.sqrt()
                res[mode] = float(((x0.clamp(-1, 1) if clip else x0) - truth).pow(2).mean())
                if mode == "given":  # the condition image as the model sees it (sr: upsampled), returned as is
                    res["copy"] = float((inp["sample"][:, c:2 * c] - truth).pow(2).mean())
            per_t[t] = res
        out[task] = per_t
        out["n"][task] = k
    return out


def format_table(result: dict) -> str:
    lines = ["| task | t | x0 MSE, condition given | condition zeroed | returning the condition |", "|---|---|---|---|---|"]
    for task, per_t in result.items():
        if task == "n":
            continue
        for t, r in per_t.items():
            lines.append(f"| `{task}` ({result['n'][task]} rows) | {t} | {r['given']:.4f} | {r['zeroed']:.4f} | "
                         f"{r['copy']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m taskfold.benchmarks.condition_use", description=__doc__.split("\n")[0])
    p.add_argument("mtu_dir")
    p.add_argument("--data", required=True, help="a dataset folder (taskfold data make-shapes)")
    p.add_argument("--tasks", help="comma-separated image-conditioned tasks (default: all of the model's)")
    p.add_argument("--n", type=int, default=64, help="rows per task (default 64)")
    p.add_argument("--timesteps", default="800,600,400", help="comma-separated training timesteps")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    try:
        ts = tuple(int(x) for x in args.timesteps.split(","))
    except ValueError:
        p.error(f"--timesteps must be comma-separated whole numbers, got {args.timesteps!r}")
    if not 1 <= args.n <= 100_000:
        p.error(f"--n must be in [1, 100000], got {args.n}")
    from taskfold.errors import TaskfoldError

    try:
        result = condition_use(args.mtu_dir, args.data, args.tasks.split(",") if args.tasks else None, args.n, ts,
                               args.split)
    except TaskfoldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        from taskfold._io import write_json_atomic

        write_json_atomic(Path(args.json), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
