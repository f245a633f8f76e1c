"""Training data on disk: an image folder with ``metadata.jsonl``, checked row by row.

The format follows the Hugging Face ``imagefolder`` convention: a folder holding
``metadata.jsonl``, one JSON object per line, with image paths relative to the folder.
Every row names its ``task``; the columns a task needs follow from its definition
(:attr:`taskfold.tasks.TaskSpec.data_columns`: a prompt for tasks that read text, a condition
image for image inputs — at ``1 / condition_scale`` of the target's size — and a mask for
masked inputs), so a task declared in an upcycle config is checked like a built-in one::

    {"task": "t2i",  "prompt": "a red circle", "target": "t2i/00000_target.png"}
    {"task": "edit", "prompt": "make the circle blue", "target": "...", "condition": "..."}
    {"task": "sr",   "prompt": "", "target": "...", "condition": "<half-size image>"}
    {"task": "inpaint-mask", "prompt": "...", "target": "...", "condition": "...", "mask": "..."}

An optional ``split`` is ``"train"`` or ``"test"``; a row without one is a training row.
Other keys (for example the shapes world's ``object``) are kept but not checked.

:func:`check_dataset` reads every row and every image and collects all problems with
their 1-based line numbers; :func:`load_dataset` refuses a dataset with problems (or
skips the bad rows when asked) and returns a :class:`TaskDataset` of float arrays.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from PIL import Image

from taskfold.errors import DataError
from taskfold.runtime.images import mask_to_array, read_image, to_chw
from taskfold.tasks import BUILTIN_TASKS, TaskSpec, resolve_tasks

METADATA = "metadata.jsonl"
SPLITS = ("train", "test")

#: Image modes accepted for ``target`` / ``condition`` (loaded as RGB) and for ``mask``.
IMAGE_MODES = ("RGB", "L", "P")
MASK_MODES = ("L", "1")


# --- rows and the report ---------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One valid row; image paths are resolved against the dataset folder."""

    line: int
    task: str
    prompt: str
    split: str
    target: Path
    condition: Path | None = None
    mask: Path | None = None
    #: the row's other keys (the shapes world's ``object``, ``source``, ``edit``, ``removed``), unchecked
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RowProblem:
    """One problem with a row of ``metadata.jsonl``; ``line`` is 1-based."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class DatasetReport:
    """The result of :func:`check_dataset`.

    ``counts[task][split]`` counts the valid rows of the checked tasks; ``ignored`` counts
    rows of known tasks that were not asked for (they are parsed, not opened);
    ``problems`` lists every problem in line order (a row can have several);
    ``bad_lines`` is the number of lines with at least one problem.
    """

    path: Path
    tasks: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)
    target_sizes: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_lines(self) -> int:
        return len({p.line for p in self.problems})

    def summary_lines(self) -> list[str]:
        """Human-readable counts: one line per task with its splits, then sizes and ignored rows."""
        lines = []
        for task in self.tasks:
            splits = self.counts.get(task, {})
            total = sum(splits.values())
            detail = ", ".join(f"{s} {splits.get(s, 0)}" for s in SPLITS)
            lines.append(f"{task}: {total} rows ({detail})")
        if self.target_sizes:
            sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(self.target_sizes.items()))
            lines.append(f"target sizes: {sizes}")
        if self.ignored:
            lines.append("ignored (task not selected): "
                         + ", ".join(f"{t} {n}" for t, n in sorted(self.ignored.items())))
        lines.append(f"{len(self.rows)} good rows, {self.bad_lines} bad rows")
        return lines


def resolve_data_tasks(tasks, custom: Iterable[TaskSpec] = ()) -> tuple[TaskSpec, ...]:
    """The tasks to check or load: every built-in and declared task for ``None``; names (built-in or
    in ``custom``) or :class:`TaskSpec` objects otherwise. Unknown or repeated names fail."""
    custom = tuple(custom)
    if tasks is None:
        return tuple(BUILTIN_TASKS.values()) + custom
    tasks = (tasks,) if isinstance(tasks, (str, TaskSpec)) else tuple(tasks)
    declared = custom + tuple(t for t in tasks if isinstance(t, TaskSpec) and t.name not in BUILTIN_TASKS)
    return resolve_tasks([t.name if isinstance(t, TaskSpec) else t for t in tasks], declared)


# --- checking ------------------------------------------------------------------------------

def _open_image(root: Path, rel: str, column: str, modes: tuple[str, ...],
                problems: list[str]) -> Image.Image | None:
    """Open and fully decode ``root/rel`` (refused above the runtime's size bound before decoding); on failure
    append a message and return ``None``."""
    path = root / rel
    if not path.is_file():
        problems.append(f"{column} file {rel!r} does not exist")
        return None
    try:
        image = read_image(path, column, name=rel, error=DataError)
    except DataError as e:
        problems.append(str(e))
        return None
    if image.mode not in modes:
        problems.append(f"{column} {rel!r} has mode {image.mode!r}; expected {' or '.join(modes)}")
        return None
    return image


def _check_path(root: Path, rel, column: str, problems: list[str]) -> bool:
    """A row's image path must stay inside the dataset folder (no absolute path, no '..', no symlink out)."""
    if not isinstance(rel, str) or not rel:
        problems.append(f"field {column!r} must be a relative path, got {rel!r}")
    elif Path(rel).is_absolute():
        problems.append(f"field {column!r} is the absolute path {rel!r}; expected a path relative to the "
                        "dataset folder")
    elif ".." in Path(rel).parts:
        problems.append(f"field {column!r} is {rel!r}; expected a path inside the dataset folder (no '..')")
    elif not (root / rel).resolve().is_relative_to(root.resolve()):
        problems.append(f"field {column!r} {rel!r} is a symlink that leads outside the dataset folder")
    else:
        return True
    return False


def _check_row(obj, line: int, root: Path, tasks: dict[str, TaskSpec], known: set[str],
               report: DatasetReport) -> Row | None:
    """Check one parsed line; append its problems to ``report`` and return the row if valid."""
    problems: list[str] = []

    def reject() -> None:  # record the problems found so far; the row is not used
        report.problems.extend(RowProblem(line, m) for m in problems)

    if not isinstance(obj, dict):
        problems.append(f"expected a JSON object, got {type(obj).__name__}")
        return reject()
    task = obj.get("task")
    if task is None:
        problems.append("missing field 'task'")
        return reject()
    if not isinstance(task, str) or task not in known:
        problems.append(f"unknown task {task!r}; known tasks: {', '.join(sorted(known, key=_task_order))}")
        return reject()
    if task not in tasks:
        report.ignored[task] = report.ignored.get(task, 0) + 1
        return None
    spec = tasks[task]
    columns = spec.data_columns
    for name in columns:
        if name not in obj:
            problems.append(f"missing field {name!r} (task {task!r} needs {', '.join(columns)})")
    prompt = obj.get("prompt", "")
    if not isinstance(prompt, str):
        problems.append(f"field 'prompt' must be a string, got {prompt!r}")
    elif spec.uses_text and "prompt" in obj and not prompt.strip():
        problems.append(f"field 'prompt' is empty; task {task!r} needs a prompt")
    split = obj.get("split", "train")
    if split not in SPLITS:
        problems.append(f"split {split!r} is not one of {', '.join(SPLITS)}")

    images: dict[str, Image.Image | None] = {}
    for name in ("target", "condition", "mask"):
        if name not in columns or name not in obj:
            continue
        rel = obj[name]
        if _check_path(root, rel, name, problems):
            images[name] = _open_image(root, rel, name, MASK_MODES if name == "mask" else IMAGE_MODES, problems)

    target = images.get("target")
    if target is not None:
        w, h = target.size
        cond, k = images.get("condition"), spec.condition_scale
        if spec.needs_condition and k > 1:
            if w % k or h % k:
                even = "an even width and height" if k == 2 else f"a width and height divisible by {k}"
                problems.append(f"target is {w}x{h}; task {task!r} needs {even}")
            elif cond is not None and cond.size != (w // k, h // k):
                part = "half" if k == 2 else f"1/{k} of"
                problems.append(f"condition is {cond.size[0]}x{cond.size[1]}; task {task!r} needs exactly "
                                f"{part} the target's {w}x{h}, i.e. {w // k}x{h // k}")
        elif spec.needs_condition and cond is not None and cond.size != (w, h):
            problems.append(f"condition is {cond.size[0]}x{cond.size[1]}; task {task!r} needs the "
                            f"target's size {w}x{h}")
        mask = images.get("mask")
        if mask is not None and mask.size != (w, h):
            problems.append(f"mask is {mask.size[0]}x{mask.size[1]}; expected the target's size {w}x{h}")

    if problems:
        return reject()
    report.counts.setdefault(task, {})
    report.counts[task][split] = report.counts[task].get(split, 0) + 1
    report.target_sizes[target.size] += 1
    return Row(line=line, task=task, prompt=prompt, split=split, target=root / obj["target"],
               condition=root / obj["condition"] if spec.needs_condition else None,
               mask=root / obj["mask"] if spec.needs_mask else None,
               meta={k: v for k, v in obj.items() if k not in ("task", "prompt", "split", *spec.data_columns)})


def _task_order(name: str):
    builtin = list(BUILTIN_TASKS)
    return (builtin.index(name), "") if name in builtin else (len(builtin), name)


def check_dataset(path: str | Path, tasks=None, custom: Iterable[TaskSpec] = ()) -> DatasetReport:
    """Check every row of ``path/metadata.jsonl`` and every image it names.

    Collects all problems (bad JSON, missing fields, unknown tasks, missing or unreadable
    files, wrong image modes, size mismatches) instead of stopping at the first. Rows
    of known tasks outside ``tasks`` are counted in ``ignored`` and their files are not
    opened. Blank lines are skipped. Raises :class:`DataError` only when the folder or
    its ``metadata.jsonl`` is missing. ``tasks``: names or :class:`TaskSpec` objects (declared
    tasks also by ``custom``); ``None`` checks every built-in and declared task.
    """
    root = Path(path)
    specs = resolve_data_tasks(tasks, custom)
    selected = {t.name: t for t in specs}
    known = set(BUILTIN_TASKS) | set(selected) | {t.name for t in custom}
    meta = root / METADATA
    if not root.is_dir():
        raise DataError(f"dataset {str(root)!r} is not a directory")
    if not meta.is_file():
        raise DataError(f"dataset {str(root)!r} has no {METADATA}",
                        hint="a dataset is a folder with metadata.jsonl; `taskfold data make-shapes` writes one")
    report = DatasetReport(path=root, tasks=tuple(selected))
    with open(meta, encoding="utf-8", errors="replace") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                report.problems.append(RowProblem(line_no, f"invalid JSON: {e.msg} at column {e.colno}"))
                continue
            row = _check_row(obj, line_no, root, selected, known, report)
            if row is not None:
                report.rows.append(row)
    return report


# --- loading -------------------------------------------------------------------------------

class TaskDataset:
    """Rows of a checked dataset, decoded on access.

    ``dataset[i]`` is a dict with ``task`` (str), ``prompt`` (str), ``target`` (float32
    ``(3, H, W)`` in [-1, 1]) and, where the task has them, ``condition`` (float32
    ``(3, H, W)`` in [-1, 1]) and ``mask`` (float32 ``(1, H, W)``, 1 where the region is
    to be filled, 0 elsewhere).

    The ``sr`` condition is stored at half size; it is upsampled back to the target's size
    with bicubic interpolation (Pillow ``BICUBIC``), so that every condition can be
    concatenated with the target-sized input on the channel axis. The pixel-space tiny
    base takes it as it is; a latent-space model encodes it like any other image.
    """

    def __init__(self, rows: list[Row], root: Path):
        self.rows = list(rows)
        self.root = root

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        counts = Counter(r.task for r in self.rows)
        return f"TaskDataset({str(self.root)!r}, {len(self)} rows: " \
               + ", ".join(f"{t} {n}" for t, n in counts.items()) + ")"

    def indices(self, task: str) -> list[int]:
        """Positions of the rows of ``task`` (for per-task batching)."""
        return [i for i, r in enumerate(self.rows) if r.task == task]

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        with Image.open(row.target) as im:
            target = im.convert("RGB")
        item = {"task": row.task, "prompt": row.prompt, "target": to_chw(target), "meta": row.meta}
        if row.condition is not None:
            with Image.open(row.condition) as im:
                cond = im.convert("RGB")
            if cond.size != target.size:  # sr: half size -> target size
                cond = cond.resize(target.size, Image.Resampling.BICUBIC)
            item["condition"] = to_chw(cond)
        if row.mask is not None:
            with Image.open(row.mask) as im:
                item["mask"] = mask_to_array(im)
        return item


def _problem_error(report: DatasetReport, show: int = 3) -> DataError:
    first = "; ".join(str(p) for p in report.problems[:show])
    more = len(report.problems) - show
    tail = f"; and {more} more problem(s)" if more > 0 else ""
    return DataError(f"dataset {str(report.path)!r} has {report.bad_lines} bad row(s): {first}{tail}",
                     hint=f"--skip-bad-rows to use the {len(report.rows)} good rows, or "
                          f"`taskfold data check {report.path}` to list every problem")


def load_dataset(path: str | Path, tasks=None, skip_bad_rows: bool = False,
                 log: Callable[[str], None] | None = None, split: str | None = None) -> TaskDataset:
    """Check the dataset at ``path`` and return its rows of ``tasks`` as a :class:`TaskDataset`.

    A dataset with any problem raises :class:`DataError` naming the first few bad rows and
    the count; with ``skip_bad_rows=True`` each problem is passed to ``log`` (default: the
    ``taskfold.train.data`` logger at warning level) as ``"skipping line N: message"`` and
    the good rows are kept. ``split`` keeps only ``"train"`` or ``"test"`` rows.
    """
    if split is not None and split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    report = check_dataset(path, tasks)
    if report.problems:
        if not skip_bad_rows:
            raise _problem_error(report)
        log = log or logging.getLogger(__name__).warning
        for p in report.problems:
            log(f"skipping {p}")
    rows = [r for r in report.rows if split is None or r.split == split]
    if not rows:
        which = f"{split} rows" if split else "rows"
        raise DataError(f"dataset {str(report.path)!r} has no usable {which} for task(s) "
                        f"{', '.join(report.tasks)}")
    return TaskDataset(rows, report.path)


def dataset_prompts(data_dir: str | Path) -> list[str]:
    """Every ``prompt`` of ``data_dir/metadata.jsonl`` (all splits and tasks; rows without one give "")."""
    path = Path(data_dir) / METADATA
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {str(path)!r}: {e.strerror or e}") from None
    prompts = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{str(path)!r} line {i} is not JSON: {e.msg}") from None
        prompt = row.get("prompt", "") if isinstance(row, dict) else None
        if not isinstance(prompt, str):
            raise DataError(f"{str(path)!r} line {i}: prompt must be a string, got {prompt!r}")
        prompts.append(prompt)
    return prompts
