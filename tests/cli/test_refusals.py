"""Refusals across the CLI: OS errors, stale partial outputs, bad values, refused runs leaving nothing,
the resumed log, and two `run`s racing for one output file."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from taskfold.cli import main
from tests._helpers import cli, one_line_error
from taskfold.train.shapes import make_shapes




@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("refusals")
    make_shapes(root / "data", n=8, size=16, seed=0, tasks=("t2i", "edit"))
    assert main(["upcycle", "--base", "preset:tiny-pixel", "--tasks", "t2i,edit", "--out", str(root / "mtu")]) == 0
    return root


def _unwritable() -> Path:
    """A folder even root cannot write to (sysfs), or skip where this machine lets root write there."""
    try:
        fd, p = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys/taskfold-test-out")
    os.close(fd)
    os.unlink(p)
    pytest.skip("/sys is writable here; no folder is unwritable for root")


# --- OS errors -----------------------------------------------------------------------------------

def test_unwritable_out_is_refused_before_any_work_by_every_writing_command(world, tmp_path, capsys, monkeypatch):
    bad = _unwritable()
    import taskfold.upcycle.base as base

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded before --out was checked")
    monkeypatch.setattr(base, "load_base", no_loading)
    pkg = tmp_path / "pkg"
    commands = {
        "upcycle": ["upcycle", "--base", "preset:tiny", "--out", bad / "mtu"],
        "train": ["train", world / "mtu", "--data", world / "data", "--steps", "1", "--out", bad / "run"],
        "pretrain": ["pretrain", "--data", world / "data", "--steps", "1", "--out", bad / "pre"],
        "export": ["export", world / "mtu", "--out", bad / "pkg"],
        "data make-shapes": ["data", "make-shapes", "--out", bad / "d", "--n", "2"],
        "bench": ["bench", "--preset", "tiny", "--out", bad / "b"],
        "evaluate": ["evaluate", pkg, "--data", world / "data", "--out", bad / "e"],
        "run": ["run", pkg, "--task", "t2i", "--out", bad / "o.png"],
        "demo": ["demo", "--out", bad / "demo"],
        "analyze-deviation": ["analyze-deviation", "preset:tiny", "preset:tiny", "--out", bad / "dev"],
    }
    assert main(["export", str(world / "mtu"), "--out", str(pkg), "--height", "16", "--width", "16",
                 "--parity-timesteps", "1"]) == 0
    capsys.readouterr()
    for name, argv in commands.items():
        code, _, err = cli(capsys, *argv)
        one_line_error(code, err)
        assert "not writable" in err and "/sys" in err, (name, err)


def test_an_os_error_in_the_middle_of_a_command_is_one_line(world, tmp_path, capsys, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "d" / "metadata.jsonl"))
    monkeypatch.setattr("taskfold.train.shapes.write_bytes_atomic", full, raising=False)
    monkeypatch.setattr("PIL.Image.Image.save", full)
    code, _, err = cli(capsys, "data", "make-shapes", "--out", tmp_path / "d", "--n", "2")
    one_line_error(code, err)
    assert "No space left on device" in err and "free space" in err
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.*"))
    code, _, err = cli(capsys, "--debug", "data", "make-shapes", "--out", tmp_path / "d", "--n", "2")
    assert code == 2 and "Traceback" in err  # --debug shows what the one line hides


# --- stale partial outputs -----------------------------------------------------------------------

def test_stale_partials_of_the_same_output_are_removed_and_a_live_one_is_kept(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".mtu.{dead_pid}.abc123.partial"
        legacy = tmp_path / ".mtu.k2j4h1.partial"   # written before partials carried their pid
        old = tmp_path / f".mtu.old-{dead_pid}"
        running = tmp_path / f".mtu.{live.pid}.zzz.partial"
        other = tmp_path / f".other.{dead_pid}.abc.partial"
        for d in (stale, legacy, old, running, other):
            d.mkdir()
            (d / "model.safetensors").write_bytes(b"\0" * 1000)
        code, out, err = cli(capsys, "upcycle", "--base", "preset:tiny", "--out", tmp_path / "mtu")
        assert code == 0, err
        assert not stale.exists() and not legacy.exists() and not old.exists()
        assert running.exists() and other.exists()  # a live run's, and another output's
        assert out.count("left by an interrupted run") == 3 and str(stale) in out
    finally:
        live.kill()
        live.wait()


# --- bad values, refused up front ---------------------------------------------------------------

def test_bad_values_are_refused_up_front_naming_the_value(world, tmp_path, capsys, monkeypatch):
    pkg = tmp_path / "pkg"
    assert main(["export", str(world / "mtu"), "--out", str(pkg), "--height", "16", "--width", "16",
                 "--parity-timesteps", "1"]) == 0
    capsys.readouterr()
    out = tmp_path / "o.png"
    cases = [
        (["run", pkg, "--task", "t2i", "--seed", "-1", "--out", out], "--seed -1"),
        (["run", pkg, "--task", "t2i", "--seed", str(2**32), "--out", out],
         "--seed 4294967296 is not an integer in [0, 4294967295]"),
        (["run", pkg, "--task", "t2i", "--guidance", "nan", "--out", out], "--guidance must be a finite number, got nan"),
        (["run", pkg, "--task", "t2i", "--guidance", "inf", "--out", out], "got inf"),
        (["run", pkg, "--task", "t2i", "--threads", "100000", "--out", out], "--threads 100000 is not between 1"),
        (["upcycle", "--base", "preset:tiny", "--dtr", "--dtr-alpha", "nan", "--out", tmp_path / "m"], "dtr_alpha"),
        (["bench", "--preset", "tiny", "--threads", "100000", "--out", tmp_path / "b"], "--threads 100000"),
    ]
    cfg_types = tmp_path / "types.json"
    cfg_types.write_text(json.dumps({"num_experts": "4"}))
    cfg_list = tmp_path / "list.json"
    cfg_list.write_text(json.dumps(["t2i"]))
    cfg_nested = tmp_path / "nested.json"
    cfg_nested.write_text(json.dumps({"custom_tasks": [{"name": "depth", "uses_text": "yes"}]}))
    cases += [
        (["upcycle", "--base", "preset:tiny", "--config", cfg_types, "--out", tmp_path / "m"],
         "num_experts: expected an integer, got str '4'"),
        (["upcycle", "--base", "preset:tiny", "--config", cfg_list, "--out", tmp_path / "m"],
         "must be a JSON object, got list"),
        (["upcycle", "--base", "preset:tiny", "--config", cfg_nested, "--out", tmp_path / "m"],
         "uses_text: expected true or false, got str 'yes'"),
        (["train", world / "mtu", "--data", world / "data", "--steps", "1", "--task-weights", "foo=1",
          "--out", tmp_path / "r"], "--task-weights names task(s) foo"),
    ]
    for argv, words in cases:
        code, _, err = cli(capsys, *argv)
        one_line_error(code, err)
        assert words in err, (argv, err)
    assert not out.exists() and not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_export_refuses_an_unsupported_opset_before_loading_the_model(world, tmp_path, capsys, monkeypatch):
    import taskfold.upcycle.checkpoint as ckpt

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before --opset was checked")
    monkeypatch.setattr(ckpt, "load_mtu", no_loading)
    code, _, err = cli(capsys, "export", world / "mtu", "--opset", "99", "--out", tmp_path / "pkg")
    one_line_error(code, err)
    assert "--opset 99 is outside 17..20" in err
    assert not (tmp_path / "pkg").exists()


# --- refused runs leave nothing -------------------------------------------------------------------

def test_refused_train_and_pretrain_leave_nothing(world, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", world / "mtu", "--data", world / "data", "--steps", "1",
                        "--task-weights", "t2i=0,edit=0", "--out", run)
    one_line_error(code, err)
    assert "every task weight is zero" in err and not run.exists()
    no_t2i = tmp_path / "edit-only"
    make_shapes(no_t2i, n=4, size=16, seed=0, tasks=("edit",))
    code, _, err = cli(capsys, "pretrain", "--data", no_t2i, "--steps", "1", "--out", tmp_path / "pre")
    one_line_error(code, err)
    assert not (tmp_path / "pre").exists(), sorted(p.name for p in tmp_path.iterdir())


# --- the log of a resumed run ---------------------------------------------------------------------

def test_resume_cuts_the_log_back_to_the_checkpoint(world, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    common = ["train", world / "mtu", "--data", world / "data", "--steps", "4", "--batch-size", "2",
              "--checkpoint-every", "2", "--log-every", "1", "--no-progress", "--out", run]
    assert cli(capsys, *common)[0] == 0
    # as if killed after logging steps 3 and 4 but before the checkpoint of step 4
    shutil.rmtree(run / "checkpoints" / "step-0000004")
    shutil.rmtree(run / "mtu")
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.1')  # and a line cut short by the kill
    assert cli(capsys, *common, "--resume")[0] == 0
    steps = [json.loads(line)["step"] for line in open(run / "log.jsonl")]
    assert steps == [1, 2, 3, 4]


# --- one output file, two runs ----------------------------------------------------------------------

def test_existing_output_is_never_replaced_without_overwrite(tmp_path):
    from taskfold.errors import OutputExistsError
    from taskfold.runtime.images import save_png
    import numpy as np

    p = tmp_path / "o.png"
    p.write_bytes(b"the other run's image")
    with pytest.raises(OutputExistsError, match="already exists"):
        save_png(np.zeros((3, 4, 4), np.float32), p, overwrite=False)
    assert p.read_bytes() == b"the other run's image" and sorted(x.name for x in tmp_path.iterdir()) == ["o.png"]
    save_png(np.zeros((3, 4, 4), np.float32), p, overwrite=True)
    assert p.read_bytes().startswith(b"\x89PNG")


def test_two_runs_with_the_same_out_one_writes_the_other_refuses(tiny_package, tmp_path):
    pkg = tiny_package[1]
    out = tmp_path / "o.png"
    cmd = [sys.executable, "-m", "taskfold", "run", str(pkg), "--task", "t2i", "--steps", "3", "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    assert sum("wrote" in r[0] for r in results) == 1
    loser = next(r for r in results if r[2] == 2)
    assert "already exists" in loser[1]
    assert out.read_bytes().startswith(b"\x89PNG")
