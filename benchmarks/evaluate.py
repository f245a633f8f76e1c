"""``taskfold evaluate``: run every task of a package on held-out dataset rows and score the results.

::

    taskfold evaluate PKG --data DATA --out DIR [--tasks all] [--n 8] [--split test]
                      [--steps N] [--scheduler ddim] [--seed 0] [--strength S | TASK=S,...]
                      [--guidance G | TASK=G,...] [--image-guidance G | TASK=G,...] [--no-progress] [--overwrite]

For each task, the first ``n`` rows of the split go through the runtime exactly as
``taskfold run`` would take them (:meth:`Package.generate`, the task's guidance and default
scales, seeded noise), and the images are scored without learned weights
(:func:`taskfold.train.metrics.task_scores`): PSNR and SSIM to the target for the
image-conditioned tasks, beside the trivial baseline of returning the condition image, and
for ``t2i`` the share of samples in which the pixel analyser finds the prompt's shape and
colour. ``--strength`` below 1 starts the image-conditioned tasks from their condition image
noised part-way (img2img, :meth:`Package.generate`); ``t2i`` always starts from noise.
``--strength``, ``--guidance`` and ``--image-guidance`` take one value for every task they
apply to, or ``task=value`` pairs; what is not given (and ``--steps``) takes the package's
recommended sampling per task, as ``taskfold run`` does; what each task was sampled with is
recorded in ``metrics.json``.

Writes, atomically, ``DIR/metrics.json`` (per task: the scores, and per sample: prompt,
image files and its own numbers) and ``DIR/<task>/<row>-{condition,mask,output,target}.png``.
It runs packages through the runtime (numpy, onnxruntime, Pillow) and scores with :mod:`taskfold.train.metrics`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from taskfold.errors import ConfigError

METRICS_FILE = "metrics.json"


def parse_task_values(text, option: str):
    """``"0.3"`` -> 0.3 (every task); ``"sr=0.15,edit=0.35"`` -> ``{"sr": 0.15, "edit": 0.35}``;
    ``None`` and numbers pass through. Errors name the option and the bad piece."""
    if text is None or isinstance(text, (int, float, dict)):
        return text
    pairs = [p.strip() for p in str(text).split(",") if p.strip()]
    if not pairs:
        raise ConfigError(f"{option} {text!r} is empty; give a number or task=number pairs")
    if len(pairs) == 1 and "=" not in pairs[0]:
        try:
            return float(pairs[0])
        except ValueError:
            raise ConfigError(f"{option} {text!r} is not a number or task=number pairs (e.g. sr=0.15,edit=0.35)") from None
    out = {}
    for piece in pairs:
        task, eq, value = (x.strip() for x in piece.partition("="))
        try:
            number = float(value)
        except ValueError:
            number = None
        if not (eq and task) or number is None:
            raise ConfigError(f"{option}: {piece!r} is not task=number (in {text!r})")
        out[task] = number
    return out


def sampling_options(strength, guidance, image_guidance, tasks=None) -> dict:
    """The three per-task sampling options parsed and checked (strength in (0, 1], scales
    positive; with ``tasks``, every named task among them). Keys are the CLI flags."""
    from taskfold.runtime.schedulers import check_strength

    options = {"--strength": parse_task_values(strength, "--strength"),
               "--guidance": parse_task_values(guidance, "--guidance"),
               "--image-guidance": parse_task_values(image_guidance, "--image-guidance")}
    for option, value in options.items():
        for v in (value.values() if isinstance(value, dict) else [value]):
            if option == "--strength" and v is not None:
                check_strength(v)
            elif v is not None and not v > 0:
                raise ConfigError(f"{option} {v!r} must be a positive scale")
        unknown = sorted(set(value) - set(tasks)) if isinstance(value, dict) and tasks is not None else []
        if unknown:
            raise ConfigError(f"{option} names task(s) {', '.join(map(repr, unknown))}; the tasks here are "
                              f"{', '.join(tasks)}")
    return options


def _for_task(value, task: str, default):
    if isinstance(value, dict):
        return value.get(task, default)
    return default if value is None else value


def evaluate_package(package: str | Path, data: str | Path, out: str | Path, tasks=("all",), n: int = 8,
                     split: str = "test", steps: int | None = None, scheduler: str = "ddim", seed: int = 0,
                     overwrite: bool = False, backend: str = "onnx", provider: str = "cpu", strength=None,
                     guidance=None, image_guidance=None, log=print, progress: bool = True) -> dict:
    """Generate and score ``n`` rows per task; returns what ``metrics.json`` holds.

    ``strength``, ``guidance``, ``image_guidance``: a number for every task it applies to, a
    ``{task: number}`` dict, or their CLI text (:func:`parse_task_values`). ``steps`` and what a
    task is not given default to the package's recommended sampling (:meth:`Package.sampling`),
    exactly what ``taskfold run`` uses without flags. With ``progress``, each task's sampling steps are a
    progress bar on stderr when it is a terminal (:class:`~taskfold.runtime.progress.ProgressBar`)."""
    from taskfold._io import atomic_output_dir, check_output_dir, write_json_atomic
    from taskfold.config import check_seed
    from taskfold.train.data import load_dataset
    from taskfold.train.metrics import task_scores

    from taskfold.runtime.images import save_png
    from taskfold.runtime.package import open_package
    from taskfold.runtime.progress import ProgressBar

    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive number of rows per task, got {n!r}")
    options = sampling_options(strength, guidance, image_guidance)
    check_seed(seed)
    check_output_dir(out, overwrite)
    pkg = open_package(package, backend=backend, provider=provider)
    names = pkg.tasks if tuple(tasks) in (("all",), ()) else list(tasks)
    for t in names:
        pkg.task(t)  # ConfigError naming the package's tasks
    sampling_options(strength, guidance, image_guidance, tasks=names)
    no_image = [t for t in names if not {"image", "masked_image"} & set(pkg.task(t)["inputs"][1:])]
    if isinstance(options["--strength"], dict) and set(options["--strength"]) & set(no_image):
        raise ConfigError(f"--strength for {', '.join(sorted(set(options['--strength']) & set(no_image)))}: "
                          f"that task takes no condition image and always starts from noise")
    dataset = load_dataset(data, tasks=names, split=split)
    missing = [t for t in names if not dataset.indices(t)]
    if missing:
        raise ConfigError(f"dataset {str(data)!r} has no {split} rows for task(s) {', '.join(missing)}",
                          hint="generate them with `taskfold data make-shapes --tasks ...`, or pick --tasks")
    h, w = pkg.image_size
    result = {"package": str(package), "data": str(data), "split": split, "steps": steps or "package defaults",
              "scheduler": scheduler,
              "seed": seed, "backend": backend, "provider": provider, "tasks": {}}
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for task in names:
            items = [dataset[i] for i in dataset.indices(task)[:n]]
            if items[0]["target"].shape[1:] != (h, w):
                raise ConfigError(f"dataset images are {items[0]['target'].shape[2]}x{items[0]['target'].shape[1]}; "
                                  f"the package makes {w}x{h}", hint="export the package at the dataset's size")
            start = time.perf_counter()
            cond = np.stack([it["condition"] for it in items]) if "condition" in items[0] else None
            mask = np.stack([it["mask"] for it in items]) if "mask" in items[0] else None
            used = pkg.sampling(task, steps=steps, strength=_for_task(options["--strength"], task, None),
                                guidance_scale=_for_task(options["--guidance"], task, None),
                                image_guidance_scale=_for_task(options["--image-guidance"], task, None))
            sampling = {"strength": used["strength"] if used["strength"] is not None else 1.0,
                        "guidance_scale": used["guidance_scale"], "image_guidance_scale": used["image_guidance_scale"],
                        "steps": used["steps"]}
            images = pkg.generate(task, [it["prompt"] for it in items], image=cond, mask=mask,
                                  scheduler=scheduler, seed=seed, **sampling,
                                  progress=ProgressBar(f"evaluate {task}", enabled=None if progress else False))
            scores = task_scores(task, images, items)
            samples = []
            for i, (img, it, own) in enumerate(zip(images, items, scores.pop("per_sample"))):
                files = {"output": save_png(img, tmp / task / f"{i:03d}-output.png"),
                         "target": save_png(it["target"], tmp / task / f"{i:03d}-target.png")}
                if "condition" in it:
                    files["condition"] = save_png(it["condition"], tmp / task / f"{i:03d}-condition.png")
                if "mask" in it:
                    files["mask"] = save_png(it["mask"] * 2 - 1, tmp / task / f"{i:03d}-mask.png")
                samples.append({"prompt": it["prompt"], **own,
                                "files": {k: f"{task}/{Path(v).name}" for k, v in files.items()}})
            seconds = time.perf_counter() - start
            result["tasks"][task] = scores | {"sampling": sampling, "seconds": round(seconds, 2), "samples": samples}
            log(f"evaluate {task}: {describe_scores(task, scores)} ({len(items)} rows, {seconds:.1f} s)")
        write_json_atomic(tmp / METRICS_FILE, result)
    return result


def format_rate(scores: dict, digits: int = 2) -> str:
    """``0.81 [0.70, 0.89] (52/64)``: a task-success rate with its 95 % interval and counts."""
    lo, hi = scores["success_interval"]
    return f"{scores['success_rate']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] ({scores['successes']}/{scores['n']})"


def format_gain(scores: dict, unit: str = "") -> str:
    """``+2.31 [+1.10, +3.52]``: the mean PSNR gain over the condition image with its 95 % interval."""
    lo, hi = scores["psnr_gain_interval"]
    return f"{scores['psnr_gain_db']:+.2f}{unit} [{lo:+.2f}, {hi:+.2f}]"


def format_kinds(scores: dict) -> str:
    """``colour 24/26, move 0/18, size 3/20``: task success per kind of row (empty when not counted)."""
    return ", ".join(f"{kind} {k}/{n}" for kind, (k, n) in scores.get("success_by_kind", {}).items())


def describe_scores(task: str, scores: dict) -> str:
    """``task success 0.81 [0.70, 0.89] (52/64); PSNR 19.10 dB (+2.31 dB over the condition image)``."""
    parts = []
    if "success_rate" in scores:
        kinds = format_kinds(scores)
        parts.append(f"task success {format_rate(scores)}" + (f" ({kinds})" if kinds else ""))
        for name, also in scores.get("also", {}).items():  # an earlier metric on the same outputs
            parts.append(f"earlier {name.replace('_', '-')} metric {also['successes']}/{scores['n']}"
                         + (f" ({format_kinds(also)})" if format_kinds(also) else ""))
    if "psnr" in scores:
        parts.append(f"PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f} ({scores['psnr_gain_db']:+.2f} dB over "
                     f"the condition image: {scores['condition_baseline_psnr']:.2f} dB, "
                     f"{scores['condition_baseline_ssim']:.3f})")
    return "; ".join(parts)


def add_evaluate_parser(subparsers):
    from taskfold.runtime.backends import BACKENDS
    from taskfold.runtime.schedulers import SCHEDULERS

    p = subparsers.add_parser("evaluate", help="run every task of a package on held-out rows and score the images",
                              description="Generate the first N rows of a dataset split per task with the runtime, "
                                          "sampled as `taskfold run` samples by default, and score whether each did "
                                          "its task (the pixel analyser) and PSNR/SSIM against the condition-image "
                                          "baseline.")
    p.add_argument("package", help="package directory written by `taskfold export`")
    p.add_argument("--data", required=True, help="dataset folder with metadata.jsonl (e.g. `taskfold data make-shapes`)")
    p.add_argument("--out", required=True, help="output directory: metrics.json and the images per task")
    p.add_argument("--tasks", default="all", help="comma-separated tasks, or all (default)")
    p.add_argument("--n", type=int, default=8, help="rows per task (default 8)")
    p.add_argument("--split", choices=["train", "test"], default="test", help="dataset split (default test)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the package's recommendation per task)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="ddim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strength",
                   help="image-conditioned tasks: start from the condition image noised to this fraction of the "
                        "schedule (img2img); 1 = from pure noise; t2i always starts from noise. One number, or "
                        "task=number pairs: sr=0.15,edit=0.35 (default: the package's recommendation per task)")
    p.add_argument("--guidance", help="text guidance scale: one number, or task=number pairs (default: the "
                                      "package's recommendation per task)")
    p.add_argument("--image-guidance", help="image guidance scale of dual-guidance tasks: one number, or "
                                            "task=number pairs (default: the package's recommendation per task)")
    p.add_argument("--backend", choices=BACKENDS, default="onnx")
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (drawn only on a terminal anyway)")
    p.set_defaults(func=_cmd_evaluate)
    return p


def _cmd_evaluate(args) -> int:
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    evaluate_package(args.package, args.data, args.out, tasks=tasks, n=args.n, split=args.split, steps=args.steps,
                     scheduler=args.scheduler, seed=args.seed, overwrite=args.overwrite, backend=args.backend,
                     provider=args.provider, strength=args.strength, guidance=args.guidance,
                     image_guidance=args.image_guidance, progress=not args.no_progress)
    print(f"wrote {args.out}/{METRICS_FILE}")
    return 0
