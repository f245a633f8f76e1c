"""Draw the hard kinds of shapes-world rows more often: a copy of a dataset with some train rows repeated.

``python -m taskfold.benchmarks.oversample SRC --out DST --repeat edit:move=3,edit:size=2,inpaint:both-small=2``
checks ``SRC`` with ``taskfold data check``'s checker (every row and image; a dataset with a bad
row is refused), then writes ``DST``: the same images (hard links where the file system allows,
copies otherwise), and a ``metadata.jsonl`` in which every *train* row of a named kind appears
``N`` times. Test rows are written once. The trainer draws rows uniformly within a task, so this
is how a fine-tune spends more of a task's draws on its hard rows (the bundled `tiny-mtu`'s stage 8).

Kinds are the shapes world's: ``edit:colour``, ``edit:move``, ``edit:size`` (the row's ``edit``
key), and ``inpaint:both-small`` / ``inpaint:kept-large`` (the sizes of the kept and the removed
object). ``DST`` must not exist; its ``metadata.jsonl`` appears last, whole, or not at all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from taskfold._io import read_regular_file
from taskfold.errors import DataError

KINDS = ("edit:colour", "edit:move", "edit:size", "inpaint:both-small", "inpaint:kept-large")
#: the largest repeat a kind may get (a typo such as 30 for 3 would swamp the task)
MAX_REPEAT = 20
#: the largest ``shapes.json`` copied beside the rows (a larger one is refused)
MAX_MANIFEST_BYTES = 1 << 20


def parse_repeats(text: str) -> dict[str, int]:
    """``"edit:move=3,edit:size=2"`` -> ``{"edit:move": 3, "edit:size": 2}``, every kind known and 1..MAX_REPEAT."""
    out = {}
    for item in text.split(","):
        kind, sep, n = item.strip().partition("=")
        if not sep or kind not in KINDS:
            raise DataError(f"--repeat entry {item.strip()!r} is not KIND=N with KIND one of {', '.join(KINDS)}")
        try:
            value = int(n)
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_REPEAT or str(value) != n.strip():
            raise DataError(f"--repeat {kind}: {n.strip()!r} is not a whole number from 1 to {MAX_REPEAT}")
        if kind in out:
            raise DataError(f"--repeat names {kind} twice")
        out[kind] = value
    return out


def row_kind(task: str, meta: dict) -> str | None:
    """The shapes-world kind of a row, or ``None`` for rows without one (t2i, sr, rows of other datasets)."""
    if task == "edit" and isinstance(meta.get("edit"), str):
        return f"edit:{meta['edit']}"
    if task == "inpaint" and isinstance(meta.get("object"), dict) and isinstance(meta.get("removed"), dict):
        both_small = meta["object"].get("size") == "small" and meta["removed"].get("size") == "small"
        return "inpaint:both-small" if both_small else "inpaint:kept-large"
    return None


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def oversample(src: str | Path, out: str | Path, repeats: dict[str, int]) -> dict:
    """Write the oversampled copy of ``src`` to ``out``; returns the row counts per kind before and after."""
    from taskfold.train.data import METADATA, check_dataset

    src, out = Path(src), Path(out)
    if out.exists():
        raise DataError(f"output {str(out)!r} already exists; choose a new folder")
    report = check_dataset(src)
    if not report.ok:
        raise DataError(f"dataset {str(src)!r} has {report.bad_lines} bad rows (first: {report.problems[0]}); "
                        "run `taskfold data check` on it")
    with open(src / METADATA, encoding="utf-8", errors="replace") as f:  # read as check_dataset numbered it
        lines = [t.rstrip("\r\n") for t in f]
    before, after = Counter(), Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written, placed = [], set()
        for row in report.rows:
            for path in (row.target, row.condition, row.mask):
                if path is not None and path not in placed:  # rows may share an image
                    _place(path, tmp / path.relative_to(src))
                    placed.add(path)
            kind = row_kind(row.task, row.meta) or row.task
            n = repeats.get(kind, 1) if row.split == "train" else 1
            before[f"{kind} {row.split}"] += 1
            after[f"{kind} {row.split}"] += n
            written.extend([lines[row.line - 1]] * n)
        manifest = src / "shapes.json"
        if manifest.exists() or manifest.is_symlink():  # the generator's record, kept beside the rows
            if not manifest.resolve().is_relative_to(src.resolve()):
                raise DataError(f"{str(manifest)!r} is a symlink that leads outside the dataset folder")
            (tmp / "shapes.json").write_bytes(read_regular_file(manifest, DataError, "shapes.json",
                                                                MAX_MANIFEST_BYTES))
        (tmp / METADATA).write_text("\n".join(written) + "\n", encoding="utf-8")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"before": dict(sorted(before.items())), "after": dict(sorted(after.items())), "rows": len(written)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m taskfold.benchmarks.oversample", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="dataset folder (metadata.jsonl and its images)")
    p.add_argument("--out", required=True, help="new dataset folder")
    p.add_argument("--repeat", required=True, help=f"KIND=N pairs, comma-separated; kinds: {', '.join(KINDS)}")
    args = p.parse_args(argv)
    try:
        result = oversample(args.src, args.out, parse_repeats(args.repeat))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, n in result["after"].items():
        print(f"{key}: {result['before'][key]} -> {n}")
    print(f"wrote {args.out}: {result['rows']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
