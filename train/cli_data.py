"""``taskfold data``: make the shapes-world dataset and check a dataset folder.

``add_data_parser(subparsers)`` registers the command on the ``taskfold`` parser; the
handlers parse, make one library call and print, and leave errors to ``taskfold.cli.main``
(one ``error: ...`` line with a hint, exit status 2).

    taskfold data make-shapes --out DIR [--n N] [--size S] [--seed K] [--tasks LIST]
                              [--captions plain|rich] [--test-fraction F] [--overwrite]
    taskfold data check DATA [--tasks LIST] [--model MTU_DIR | --config UPCYCLE.json | --base BASE_DIR]
"""

from __future__ import annotations

import argparse
import sys
import time


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` with its ``make-shapes`` and ``check`` subcommands to ``subparsers``."""
    from .shapes import ALL_TASKS, CAPTION_STYLES

    p = subparsers.add_parser("data", help="make the shapes-world dataset, check a dataset folder",
                              description="Training data is a folder with metadata.jsonl (one JSON row per "
                                          "line: task, prompt, target, and per task condition and mask).")
    sub = p.add_subparsers(dest="data_command", required=True)

    m = sub.add_parser("make-shapes", help="generate the shapes-world dataset (deterministic by seed)",
                       description="Write N rows per task of coloured circles, squares and triangles with "
                                   "captions, edit instructions, degraded low-res inputs and inpainting masks.")
    m.add_argument("--out", required=True, help="output directory")
    m.add_argument("--n", type=int, default=1000, help="rows per task (default 1000)")
    m.add_argument("--size", type=int, default=32, help="image side in pixels, even, 16-1024 (default 32)")
    m.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files (default 0)")
    m.add_argument("--tasks", type=_csv, default=list(ALL_TASKS),
                   help=f"comma-separated tasks (default {','.join(ALL_TASKS)})")
    m.add_argument("--captions", choices=CAPTION_STYLES, default="plain",
                   help="t2i captions: plain 'a (size) colour shape' (default), or rich, for pretraining a base: "
                        "half plain, half positions, two-object relations, size comparisons and instruction-shaped "
                        "captions with the instruction's result, so its text encoder learns every task word")
    m.add_argument("--test-fraction", type=float, default=0.1,
                   help="fraction of each task's rows in the test split (default 0.1)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    m.set_defaults(func=_cmd_make_shapes)

    c = sub.add_parser("check", help="check every row and image of a dataset; list each bad row",
                       description="Print row counts per task and split, and every problem as 'line N: message'. "
                                   "Exits with status 2 if any row is bad.")
    c.add_argument("data", help="dataset folder with metadata.jsonl")
    c.add_argument("--tasks", type=_csv, help="check only these tasks (rows of other tasks are ignored)")
    declared = c.add_mutually_exclusive_group()
    declared.add_argument("--model", help="an MTU directory: check its tasks, declared ones included")
    declared.add_argument("--config", help="an upcycle config file: its declared tasks (custom_tasks) are known too")
    declared.add_argument("--base", help="a base folder (text_encoder/ inside): warn about words its text encoder "
                                         "never trained on (as --model does)")
    c.set_defaults(func=_cmd_check)
    return p


def _cmd_make_shapes(args) -> int:
    from .shapes import make_shapes

    start = time.perf_counter()
    info = make_shapes(args.out, n=args.n, size=args.size, seed=args.seed, tasks=args.tasks,
                       test_fraction=args.test_fraction, overwrite=args.overwrite, captions=args.captions)
    print(f"wrote {args.out}: {info['rows']} rows ({len(info['tasks'])} tasks x {info['n']}, "
          f"{info['test_rows_per_task']} test rows each), {info['size']}x{info['size']}, seed {info['seed']}, "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_check(args) -> int:
    from taskfold.errors import DataError

    from .data import check_dataset

    custom, tasks = (), args.tasks
    if args.model or args.config:
        from taskfold.upcycle.checkpoint import read_upcycle_config
        from taskfold.upcycle.config import UpcycleConfig

        up = read_upcycle_config(args.model) if args.model else UpcycleConfig.from_json_file(args.config)
        custom = up.custom_tasks
        tasks = tasks or (list(up.tasks) if args.model else None)
    report = check_dataset(args.data, tasks, custom=custom)
    for line in report.summary_lines():
        print(line)
    warning = _coverage_warning(args, report, custom)
    if warning:
        print(warning, file=sys.stderr)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if report.problems:
        raise DataError(f"dataset {args.data!r} has {report.bad_lines} bad row(s) "
                        f"({len(report.problems)} problem(s), listed above)",
                        hint="fix or remove those rows, or train with --skip-bad-rows")
    return 0


def _coverage_warning(args, report, custom) -> str | None:
    """The words of the checked rows that the model's or base's text encoder never trained on (see
    :mod:`.coverage`); ``None`` without --model / --base, or when the encoder records nothing."""
    from .coverage import coverage_warning
    from .data import resolve_data_tasks

    if args.model:
        from taskfold.upcycle.bundle import find_token_counts

        counts = find_token_counts(args.model)
    elif args.base:
        from pathlib import Path

        from taskfold.upcycle.text_encoders import read_token_counts

        te = Path(args.base) / "text_encoder"
        counts = read_token_counts(te) if te.is_dir() else None
    else:
        return None
    reads = {t.name for t in resolve_data_tasks(report.tasks, custom) if t.uses_text}
    return coverage_warning(counts, [(r.task, r.prompt) for r in report.rows if r.task in reads])
