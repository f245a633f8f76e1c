"""``taskfold data make-shapes`` and ``taskfold data check``: output, bad rows, exit status 2.

Runs through ``taskfold.cli.main`` once ``data`` is registered there; until then through a
parser built with ``add_data_parser`` and the same error handling as ``main``.
"""

import argparse
import json
import sys

import pytest

from taskfold.errors import TaskfoldError
from taskfold.train.cli_data import add_data_parser


def _data_registered() -> bool:
    from taskfold.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return "data" in sub.choices


def _local_main(argv):
    parser = argparse.ArgumentParser(prog="taskfold")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TaskfoldError as e:  # as taskfold.cli.main reports it
        hint = f" (hint: {e.hint})" if e.hint else ""
        print(f"error: {' '.join(str(e).split())}{hint}", file=sys.stderr)
        return e.exit_code


def run_cli(capsys, *argv):
    if _data_registered():
        from taskfold.cli import main

        code = main(list(argv))
    else:
        code = _local_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_make_shapes_then_check(tmp_path, capsys):
    out = tmp_path / "shapes"
    code, stdout, _ = run_cli(capsys, "data", "make-shapes", "--out", str(out), "--n", "10", "--size", "16",
                              "--seed", "3", "--tasks", "t2i,sr")
    assert code == 0
    assert stdout.startswith(f"wrote {out}: 20 rows (2 tasks x 10, 1 test rows each), 16x16, seed 3")
    assert json.loads((out / "shapes.json").read_text())["tasks"] == ["t2i", "sr"]

    code, stdout, stderr = run_cli(capsys, "data", "check", str(out))
    assert code == 0 and stderr == ""
    lines = stdout.splitlines()
    assert lines[:2] == ["t2i: 10 rows (train 9, test 1)", "edit: 0 rows (train 0, test 0)"]
    assert "sr: 10 rows (train 9, test 1)" in lines
    assert "target sizes: 16x16 (20)" in lines and lines[-1] == "20 good rows, 0 bad rows"

    code, stdout, _ = run_cli(capsys, "data", "check", str(out), "--tasks", "sr")
    assert stdout.splitlines() == ["sr: 10 rows (train 9, test 1)", "target sizes: 16x16 (10)",
                                   "ignored (task not selected): t2i 10", "10 good rows, 0 bad rows"]

    code, _, stderr = run_cli(capsys, "data", "make-shapes", "--out", str(out), "--n", "2")
    assert code == 2 and "already exists and is not empty" in stderr and "--overwrite" in stderr
    code, _, _ = run_cli(capsys, "data", "make-shapes", "--out", str(out), "--n", "2", "--overwrite")
    assert code == 0 and len((out / "metadata.jsonl").read_text().splitlines()) == 10


def test_check_lists_every_bad_row_and_exits_2(tmp_path, capsys):
    root = tmp_path / "bad"
    run_cli(capsys, "data", "make-shapes", "--out", str(root), "--n", "3", "--size", "16", "--tasks", "t2i,edit")
    meta = root / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    lines[1] = "{oops"
    row = json.loads(lines[4])
    (root / row["condition"]).write_bytes(b"garbage")
    meta.write_text("\n".join(lines) + "\n")

    code, stdout, stderr = run_cli(capsys, "data", "check", str(root))
    assert code == 2
    assert "t2i: 2 rows (train 2, test 0)" in stdout and "edit: 2 rows (train 2, test 0)" in stdout
    err = stderr.splitlines()
    assert err[0].startswith("line 2: invalid JSON: Expecting property name enclosed in double quotes")
    assert err[1].startswith(f"line 5: condition '{row['condition']}' is not a readable image")
    assert err[2] == (f"error: dataset '{root}' has 2 bad row(s) (2 problem(s), listed above) "
                      "(hint: fix or remove those rows, or train with --skip-bad-rows)")


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "error: --n must be a positive number of rows per task, got 0"),
    (["--size", "17"], "error: --size must be an even number of pixels from 16 to 1024, got 17"),
    (["--tasks", "t2i,colorize"],
     "error: unknown task(s) 'colorize'; known tasks: t2i, edit, sr, inpaint, inpaint-mask"),
])
def test_make_shapes_bad_arguments(tmp_path, capsys, argv, message):
    code, _, stderr = run_cli(capsys, "data", "make-shapes", "--out", str(tmp_path / "x"), *argv)
    assert code == 2 and stderr.startswith(message)
    assert not (tmp_path / "x").exists()


def test_check_missing_dataset(tmp_path, capsys):
    code, _, stderr = run_cli(capsys, "data", "check", str(tmp_path))
    assert code == 2 and stderr.startswith(f"error: dataset '{tmp_path}' has no metadata.jsonl")


def test_through_taskfold_main(tmp_path, capsys, monkeypatch):
    """``add_data_parser`` on the real ``taskfold`` parser: ``main`` prints the error line, exits 2."""
    import taskfold.cli as cli

    build = cli.build_parser

    def with_data():
        parser = build()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "data" not in sub.choices:
            add_data_parser(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", with_data)
    assert cli.main(["data", "make-shapes", "--out", str(tmp_path / "d"), "--n", "2", "--size", "16"]) == 0
    assert cli.main(["data", "check", str(tmp_path / "d")]) == 0
    assert cli.main(["data", "check", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: dataset '{tmp_path / 'none'}' is not a directory\n"
