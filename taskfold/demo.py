"""``taskfold demo``: the whole story offline, every stage one ``taskfold`` command.

::

    taskfold demo --out demo-out [--model bundled|trained] [--steps 30] [--data-rows 2000] [--eval 64]
                  [--bench-runs 20] [--strength ...] [--guidance ...] [--image-guidance ...]
                  [--formats onnx,coreml] [--force]

1. ``upcycle`` the bundled tiny base (pixel-space, DTR-trained: ``models/tiny-base``) for
   ``t2i, edit, sr, inpaint`` with 4 experts;
2. ``data make-shapes``: a shapes-world dataset for the four tasks (another seed than the
   bundled fine-tune's data, so its test rows are held out from both models);
3. ``train``: a short multi-task fine-tuning of the MTU components, with a progress bar —
   the stage working, with its loss chart on the page. 30 steps by default: measured on this
   demo's data (batch 32), the loss falls from 0.010 over the first 10 steps to 0.003–0.009
   after, and is flat from there to step 100 — more steps in the demo show nothing more, and
   its model is not the one shown (unless ``--model trained``);
4. ``export``: every task of the shown model folded to ONNX (shared backbone) and CoreML
   where coremltools is installed, each graph through the parity gate. The shown model is
   the bundled fine-tuned one (``models/tiny-mtu``: 22,800 steps in twelve stages, the last ten with
   the backbone trainable too and the last four the text encoder, see its README; ``--model trained``
   shows the demo's own short fine-tune instead);
5. ``evaluate``: every task through the runtime on held-out rows, scored by task success,
   sampled the way ``taskfold run`` samples by default (the package's recommended sampling,
   which the bundled model's ``sampling.json`` chose on a validation split), with a progress bar
   per task;
6. ``inspect --heatmap``: each task's router weights per layer (the paper's Figure 5);
7. ``bench``: FLOPs and latency of the base, folded and unfolded graphs of the package;
8. ``report``: ``index.html`` and ``report.md`` from what the stages wrote.

The demo adds no logic of its own: it runs those commands with fixed output folders and
records each one's arguments in ``OUT/stages.json``. A second run skips a stage whose
output is complete and whose arguments are unchanged (and every stage before it is
skipped too), unless ``--force``; an interrupted training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, TaskfoldError, missing_toolchain

TASKS = ("t2i", "edit", "sr", "inpaint")
STAGES_FILE = "stages.json"
MODELS = ("bundled", "trained")
#: the commands whose progress bars the demo shows live (their stderr is the terminal)
PROGRESS_STAGES = ("train", "evaluate")


#: ``models/`` of the source tree this taskfold runs from (a clone, or an editable install of one)
SOURCE_MODELS = Path(__file__).resolve().parent.parent / "models"


def bundled_models() -> Path | None:
    """The ``models/`` folder holding the bundled tiny base and fine-tune: the source tree's, else the current
    folder's (a clone installed with ``pip install .``, run from its root); ``None`` where neither has them
    (an installed wheel ships no models)."""
    for folder in (SOURCE_MODELS, Path.cwd() / "models"):
        if (folder / "tiny-base").is_dir():
            return folder
    return None


def bundled_base() -> Path:
    """``models/tiny-base`` (:func:`bundled_models`)."""
    return (bundled_models() or SOURCE_MODELS) / "tiny-base"


def bundled_mtu() -> Path:
    """``models/tiny-mtu``: the bundled fine-tuned MTU model (with its ``sampling.json``; :func:`bundled_models`)."""
    return (bundled_models() or SOURCE_MODELS) / "tiny-mtu"


@dataclass(frozen=True)
class DemoConfig:
    out: str = "demo-out"
    base: str | None = None  # default: the bundled tiny base
    model: str = "bundled"  # the model exported, evaluated and shown: bundled fine-tune, or the demo's own
    steps: int = 30  # enough to show the loss falling (see the module docstring); the shown model trained 3,600
    batch_size: int = 32
    lr: float = 1e-3
    data_rows: int = 2000
    image_size: int = 32
    eval_rows: int = 64
    strength: str | None = None  # evaluation overrides; default: the package's recommended sampling
    guidance: str | None = None
    image_guidance: str | None = None
    bench_runs: int = 20
    formats: str | None = None  # default: onnx, and coreml where coremltools is installed
    seed: int = 0
    force: bool = False
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "data_rows", "eval_rows", "bench_runs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        from .benchmarks.evaluate import sampling_options

        sampling_options(self.strength, self.guidance, self.image_guidance, tasks=TASKS)
        if self.model not in MODELS:
            raise ConfigError(f"--model {self.model!r} is not one of {', '.join(MODELS)}")
        if self.formats is not None and "onnx" not in self.formats.split(","):
            raise ConfigError(f"--formats {self.formats!r} must include onnx (the demo evaluates and benchmarks the "
                              f"ONNX graphs)", hint="e.g. --formats onnx or --formats onnx,coreml")


def stages(cfg: DemoConfig) -> list[tuple[str, list[str], str]]:
    """``(name, taskfold argv, file whose presence marks the stage done)`` in order."""
    o = Path(cfg.out)
    base = cfg.base or str(bundled_base())
    formats = cfg.formats or ("onnx,coreml" if _has_coremltools() else "onnx")
    shown = str(bundled_mtu()) if cfg.model == "bundled" else str(o / "train" / "mtu")
    train = ["train", str(o / "mtu-init"), "--data", str(o / "data"), "--steps", str(cfg.steps), "--batch-size",
             str(cfg.batch_size), "--lr", str(cfg.lr), "--seed", str(cfg.seed), "--checkpoint-every",
             str(max(1, cfg.steps // 5)), "--log-every", str(max(1, cfg.steps // 50)), "--out", str(o / "train")]
    if not cfg.progress:
        train.append("--no-progress")
    no_progress = [] if cfg.progress else ["--no-progress"]
    return [
        ("upcycle", ["upcycle", "--base", base, "--tasks", ",".join(TASKS), "--experts", "4", "--seed",
                     str(cfg.seed), "--out", str(o / "mtu-init"), "--overwrite"], "mtu-init/config.json"),
        ("data", ["data", "make-shapes", "--out", str(o / "data"), "--n", str(cfg.data_rows), "--size",
                  str(cfg.image_size), "--seed", str(cfg.seed + 1), "--tasks", ",".join(TASKS), "--overwrite"],
         "data/metadata.jsonl"),
        ("train", train, "train/mtu/config.json"),
        ("export", ["export", shown, "--formats", formats, "--out", str(o / "package"),
                    "--overwrite"], "package/manifest.json"),
        ("evaluate", ["evaluate", str(o / "package"), "--data", str(o / "data"), "--n", str(cfg.eval_rows),
                      "--seed", str(cfg.seed), *_sampling_args(cfg), *no_progress, "--out", str(o / "eval"),
                      "--overwrite"],
         "eval/metrics.json"),
        ("routers", ["inspect", shown, "--heatmap", str(o / "routers.png"), "--quiet"],
         "routers.png"),
        ("bench", ["bench", str(o / "package"), "--model", shown, "--runs", str(cfg.bench_runs),
                   "--out", str(o / "bench"), "--overwrite"], "bench/report.json"),
        ("report", ["report", str(o)], "index.html"),
    ]


def _sampling_args(cfg: DemoConfig) -> list[str]:
    args = []
    for flag, value in (("--strength", cfg.strength), ("--guidance", cfg.guidance),
                        ("--image-guidance", cfg.image_guidance)):
        if value:
            args += [flag, str(value)]
    return args


def _has_coremltools() -> bool:
    import importlib.util

    return importlib.util.find_spec("coremltools") is not None


def run_stage(argv: list[str], log_path: Path, show_progress: bool) -> int:
    """``taskfold ARGV`` in its own process, its output to ``log_path``; the exit status.

    A stage is exactly the command a user would type. Its whole output goes to the log file; the
    demo prints only each stage's last line (with ``show_progress``, the progress bars of training
    and of evaluation, one per task, are shown live as well: those stages' stderr is the terminal).
    """
    import subprocess
    import sys

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "taskfold", *argv], stdout=f,
                              stderr=None if show_progress and argv[0] in PROGRESS_STAGES else subprocess.STDOUT)
    return proc.returncode


def _last_line(log_path: Path) -> str:
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def run_demo(cfg: DemoConfig, log=print) -> Path:
    """Run (or reuse) every stage; returns ``OUT/index.html``."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {cfg.out!r} exists and is not a directory")
    from ._io import check_writable

    missing = missing_toolchain()
    if missing:
        raise ConfigError(f"`taskfold demo` runs upcycle, train, export and bench, which need the toolchain; not "
                          f"installed: {', '.join(missing)}",
                          hint="pip install 'taskfold[toolchain]'; a runtime-only install runs `taskfold run` and "
                               "`verify`")
    if bundled_models() is None and (cfg.base is None or cfg.model == "bundled"):
        raise ConfigError("the bundled models (models/tiny-base, models/tiny-mtu) are not in this install: they ship "
                          f"with the source tree, and neither {str(SOURCE_MODELS)!r} nor ./models holds them",
                          hint="run `taskfold demo` from the root of a clone of the repository, or give --base BASE "
                               "and --model trained")
    check_writable(out)
    base = Path(cfg.base) if cfg.base else bundled_base()
    if not base.exists():
        raise ConfigError(f"the base {str(base)!r} does not exist",
                          hint="the bundled tiny base lives in models/tiny-base of the source tree; or give --base")
    if cfg.model == "bundled" and not (bundled_mtu() / "config.json").is_file():
        raise ConfigError(f"the bundled fine-tuned model {str(bundled_mtu())!r} is missing",
                          hint="it lives in models/tiny-mtu of the source tree; or pass --model trained")
    out.mkdir(parents=True, exist_ok=True)
    from ._io import write_json_atomic

    record_path = out / STAGES_FILE
    done = json.loads(record_path.read_text()) if record_path.is_file() and not cfg.force else {}
    redo = cfg.force
    for name, argv, marker in stages(cfg):
        recorded = done.get(name, {})
        same = recorded.get("argv") == argv
        if not redo and same and recorded.get("finished") and (out / marker).exists():
            log(f"[demo] {name}: done before, reused (taskfold {shlex.join(argv)})")
            continue
        redo = True  # every later stage depends on this one
        run_argv = argv
        train_dir = out / "train"
        if name == "train" and train_dir.is_dir() and any(train_dir.iterdir()):
            if same and not cfg.force:
                run_argv = argv + ["--resume"]  # an interrupted run of the same training continues
            else:
                import shutil

                shutil.rmtree(train_dir)
        log(f"[demo] {name}: taskfold {shlex.join(run_argv)}")
        done[name] = {"argv": argv, "finished": False}
        write_json_atomic(record_path, done)
        start = time.perf_counter()
        log_path = out / "logs" / f"{name}.log"
        code = run_stage(run_argv, log_path, cfg.progress)
        if code:
            raise DemoStageError(f"stage {name!r} failed (exit {code}): {_last_line(log_path)}",
                                 hint=f"its whole output is in {log_path}; fix it and run the demo again (finished "
                                      "stages are reused)")
        log(f"[demo] {name}: {_last_line(log_path)[:160]} ({time.perf_counter() - start:.0f} s; log {log_path})")
        done[name] = {"argv": argv, "finished": True, "seconds": round(time.perf_counter() - start, 1)}
        write_json_atomic(record_path, done)
    log(f"[demo] finished: open {out / 'index.html'}")
    return out / "index.html"


class DemoStageError(TaskfoldError):
    """A stage of the demo failed (its own error was printed first)."""


def add_demo_parser(subparsers):
    d = DemoConfig()
    p = subparsers.add_parser("demo", help="the whole pipeline on the bundled tiny base, offline, on a CPU",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--base", help="base to upcycle (default: the bundled models/tiny-base)")
    p.add_argument("--model", choices=MODELS, default=d.model,
                   help="model to export, evaluate and show: the bundled fine-tuned models/tiny-mtu (default) or the "
                        "demo's own short fine-tune")
    p.add_argument("--steps", type=int, default=d.steps, help=f"fine-tuning steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--data-rows", type=int, default=d.data_rows, help=f"shapes rows per task (default {d.data_rows})")
    p.add_argument("--eval", type=int, default=d.eval_rows, dest="eval_rows",
                   help=f"held-out rows per task to generate and score (default {d.eval_rows})")
    p.add_argument("--strength", help="evaluation: img2img strength, one number or task=number pairs (default: the "
                                      "package's recommended sampling)")
    p.add_argument("--guidance", help="evaluation: text guidance, one number or task=number pairs (default: the "
                                      "package's)")
    p.add_argument("--image-guidance", help="evaluation: image guidance, one number or task=number pairs (default: "
                                            "the package's)")
    p.add_argument("--bench-runs", type=int, default=d.bench_runs, help=f"bench rounds (default {d.bench_runs})")
    p.add_argument("--formats", help="export formats (default: onnx, plus coreml where coremltools is installed)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--force", action="store_true", help="rerun every stage")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    cfg = DemoConfig(out=args.out, base=args.base, model=args.model, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                     data_rows=args.data_rows, eval_rows=args.eval_rows, strength=args.strength,
                     guidance=args.guidance, image_guidance=args.image_guidance, bench_runs=args.bench_runs, formats=args.formats, seed=args.seed, force=args.force,
                     progress=not args.no_progress)
    run_demo(cfg)
    return 0

