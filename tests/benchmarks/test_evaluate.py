"""``taskfold evaluate`` shows one progress bar per task on a terminal, and none with ``--no-progress``."""

from __future__ import annotations

import io
import re
import sys

from taskfold.cli import main


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_evaluate_draws_a_progress_bar_per_task_on_a_terminal(tiny_package, tmp_path, monkeypatch, capsys):
    _, pkg_dir, _, data = tiny_package
    args = ["evaluate", str(pkg_dir), "--data", str(data), "--tasks", "t2i,sr", "--n", "1", "--steps", "3",
            "--strength", "1", "--split", "train"]
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([*args, "--out", str(tmp_path / "a")]) == 0, terminal.getvalue()
    finished = re.findall(r"\r(evaluate \S+) 100%\|█+\| (\d+/\d+) \[", terminal.getvalue())
    assert finished == [("evaluate t2i", "3/3"), ("evaluate sr", "3/3")]
    assert terminal.getvalue().count("\n") == 2  # each bar ends its line
    capsys.readouterr()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert main([*args, "--no-progress", "--out", str(tmp_path / "b")]) == 0
    assert quiet.getvalue() == ""
