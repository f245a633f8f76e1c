"""Multi-task training: loss falls, frozen tensors stay, 1 vs 2 processes, SIGKILL + resume."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from taskfold.cli import main
from taskfold.train.shapes import make_shapes
from taskfold.upcycle.checkpoint import load_mtu
from taskfold.upcycle.model import component_of

TASKS = "t2i,edit,sr,inpaint"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_shapes(root / "data", n=60, size=16, seed=0, tasks=tuple(TASKS.split(",")))
    assert main(["upcycle", "--base", "preset:tiny-pixel", "--tasks", TASKS, "--out", str(root / "mtu")]) == 0
    return root


def _train_cmd(world, out, *extra):
    return ["train", str(world / "mtu"), "--data", str(world / "data"), "--out", str(out), "--no-progress", *extra]


def _records(run):
    return [json.loads(line) for line in open(run / "log.jsonl")]


def test_loss_falls_for_every_task_and_the_backbone_is_untouched(world, tmp_path):
    run = tmp_path / "run"
    assert main(_train_cmd(world, run, "--steps", "200", "--batch-size", "8", "--lr", "1e-3", "--log-every", "25",
                           "--checkpoint-every", "100")) == 0
    recs = _records(run)
    assert [r["step"] for r in recs] == list(range(25, 201, 25))
    first, last = recs[0]["loss_per_task"], recs[-1]["loss_per_task"]
    for task in TASKS.split(","):
        assert last[task] < 0.7 * first[task], (task, first[task], last[task])
    before, after = load_mtu(world / "mtu"), load_mtu(run / "mtu")
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    frozen = [n for n in b if component_of(before, n) == "backbone"]
    assert len(frozen) > 100
    assert all(torch.equal(b[n], a[n]) for n in frozen)  # bit-identical
    moved = [n for n in b if component_of(before, n) != "backbone" and not torch.equal(b[n], a[n])]
    assert any(".router." in n for n in moved) and any(n.endswith(".w1") for n in moved)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000100", "step-0000200"]
    assert sorted(p.name for p in (run / "mtu").iterdir()) == [
        "codec.json", "config.json", "model.safetensors", "scheduler_config.json", "text_encoder"]


def _trainable(path):
    model = load_mtu(path)
    return {n: p.detach().clone() for n, p in model.named_parameters() if component_of(model, n) != "backbone"}


def test_two_processes_match_one_with_the_same_global_batch(world, tmp_path):
    """Both runs draw the same global batch plan; DDP averages two half-batch gradients. The
    difference is float summation order, which Adam's normalisation (update <= lr) can amplify for
    near-zero gradient entries: allowed 1 % of one step's update per step (5 x 1e-3 x 1e-2)."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--steps", "5", "--lr", "1e-3", "--log-every", "5"]
    assert main(_train_cmd(world, one, "--batch-size", "8", *common)) == 0
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              "29517", "-m", "taskfold", *_train_cmd(world, two, "--batch-size", "4", *common)]
    done = subprocess.run(launch, capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = _trainable(one / "mtu"), _trainable(two / "mtu")
    start = _trainable(world / "mtu")
    diff = max((a[n] - b[n]).abs().max().item() for n in a)
    moved = max((a[n] - start[n]).abs().max().item() for n in a)
    assert diff <= 5e-5 and moved > 100 * diff, (diff, moved)
    ra, rb = _records(one)[-1], _records(two)[-1]
    assert rb["samples"] == ra["samples"] == 40
    assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6)


def test_sigkill_then_resume_ends_at_the_uninterrupted_weights(world, tmp_path):
    common = ["--steps", "40", "--batch-size", "8", "--lr", "1e-3", "--checkpoint-every", "5", "--log-every", "5"]
    ref = tmp_path / "ref"
    assert main(_train_cmd(world, ref, *common)) == 0
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "taskfold", *_train_cmd(world, run, *common)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step-0000015").is_dir():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    assert ckpts and not (run / "mtu").exists()  # killed before the end
    for c in ckpts:  # every visible checkpoint is whole
        assert {p.name for p in c.iterdir()} == {"model.safetensors", "optimizer.pt", "state.json"}
    assert main(_train_cmd(world, run, *common, "--resume")) == 0
    a, b = load_file(str(ref / "mtu/model.safetensors")), load_file(str(run / "mtu/model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0  # same plan, same ops: bit-identical on CPU
    assert not list((run / "checkpoints").glob(".step-*"))
    # the log has each step once, as the uninterrupted run's does
    assert [r["step"] for r in _records(run)] == [r["step"] for r in _records(ref)]


def test_a_kill_while_an_old_checkpoint_is_deleted_leaves_no_visible_partial_checkpoint(tmp_path, monkeypatch):
    """Rotation deletes the oldest checkpoint; a kill half-way through that delete must not leave a visible
    ``step-*`` folder with some of its files gone (it once did: only model.safetensors was left)."""
    import shutil

    from taskfold.train import trainer
    from taskfold.train.config import TrainConfig

    module = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(module.parameters())
    cfg = TrainConfig()
    for step in (5, 10):
        trainer.save_checkpoint(tmp_path, step, module, opt, cfg)
    real = shutil.rmtree

    def killed_half_way(path, ignore_errors=False):
        (Path(path) / "state.json").unlink()
        raise KeyboardInterrupt  # the process dies here, two of the three files still on disk

    monkeypatch.setattr(trainer.shutil, "rmtree", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(tmp_path, 15, module, opt, cfg)
    monkeypatch.setattr(trainer.shutil, "rmtree", real)
    visible = sorted((tmp_path / "checkpoints").glob("step-*"))
    assert [c.name for c in visible] == ["step-0000010", "step-0000015"]
    for c in visible:
        assert {p.name for p in c.iterdir()} == {"model.safetensors", "optimizer.pt", "state.json"}
    hidden = [p.name for p in (tmp_path / "checkpoints").glob(".step-*")]
    assert hidden == [".step-0000005.old"]
    # --resume removes the hidden remains and continues from the newest whole checkpoint
    assert trainer._resume(tmp_path, cfg, module, opt, main=True, say=lambda m: None) == 15
    assert not list((tmp_path / "checkpoints").glob(".step-*"))


def test_no_progress_bar_when_stderr_is_not_a_terminal(world, tmp_path):
    """A piped or logged run (the demo's stage logs, CI) gets no bar frames, as ``taskfold run``'s bar does."""
    cmd = ["train", str(world / "mtu"), "--data", str(world / "data"), "--out", str(tmp_path / "run"),
           "--steps", "2", "--batch-size", "2", "--checkpoint-every", "2", "--log-every", "1"]
    done = subprocess.run([sys.executable, "-m", "taskfold", *cmd], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "step/s" not in done.stderr, done.stderr[-500:]


def _sigint_default():
    """A child started from a background job inherits SIGINT ignored (a shell without job control does that), and
    Python then never raises KeyboardInterrupt: give the child the default action, as a terminal's Ctrl-C has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_which_checkpoints_stay_and_resume_continues(world, tmp_path):
    """SIGINT (Ctrl-C) mid-run: the complete checkpoints stay, for --resume, and the message says so."""
    run = tmp_path / "run"
    common = ["--steps", "100000", "--batch-size", "4", "--checkpoint-every", "2", "--log-every", "2"]  # never ends first
    proc = subprocess.Popen([sys.executable, "-m", "taskfold", *_train_cmd(world, run, *common)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    deadline = time.time() + 120
    # any whole checkpoint from step 4 on (rotation keeps two, so one step's folder is visible only briefly)
    while time.time() < deadline and not any(p.name >= "step-0000004" for p in (run / "checkpoints").glob("step-*/")
                                             if (p / "state.json").is_file()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    kept = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert kept and not (run / "mtu").exists()
    assert err.splitlines()[-1] == (f"error: interrupted; {run} keeps its newest complete checkpoint"
                                    f"{'s' if len(kept) > 1 else ''} ({', '.join(kept)}), log.jsonl and "
                                    f"train_config.json; run the same command with --resume to continue from "
                                    f"{kept[-1]}")
    assert "no output was left behind" not in err
    from taskfold.train.trainer import left_behind

    assert left_behind(tmp_path / "never") == "no output was left behind"
    (tmp_path / "fresh").mkdir()
    assert left_behind(tmp_path / "fresh").endswith("keeps train_config.json and no checkpoint yet; --resume "
                                                    "starts the run again from step 0")


def test_resume_refuses_other_flags_and_fresh_run_refuses_existing_out(world, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_cmd(world, run, "--steps", "2", "--checkpoint-every", "1")) == 0
    capsys.readouterr()
    assert main(_train_cmd(world, run, "--steps", "2")) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(_train_cmd(world, run, "--steps", "4", "--lr", "0.5", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--resume with a different config" in err and "lr 0.0001 -> 0.5" in err
    assert main(_train_cmd(world, run, "--steps", "4", "--checkpoint-every", "1", "--resume")) == 0  # more steps
    assert [r["step"] for r in _records(run)][-1] == 4


def test_cosine_schedule_with_warmup_is_what_the_optimiser_used(world, tmp_path, capsys):
    from taskfold.train.config import TrainConfig

    cfg = TrainConfig(steps=10, lr=1e-3, lr_schedule="cosine", lr_warmup=2)
    lrs = [cfg.lr_at(s) for s in range(10)]
    assert lrs[0] == pytest.approx(1e-3 / 3) and lrs[1] == pytest.approx(2e-3 / 3)  # warm-up
    assert lrs[2] == pytest.approx(1e-3)  # the peak right after it
    assert lrs[6] == pytest.approx(0.5e-3)  # half-way down the cosine (step 6 of 2..10)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] > 0
    assert TrainConfig(steps=10, lr=1e-3).lr_at(7) == 1e-3  # constant, no warm-up
    run = tmp_path / "run"
    assert main(_train_cmd(world, run, "--steps", "6", "--batch-size", "4", "--lr", "1e-3", "--lr-schedule", "cosine",
                           "--lr-warmup", "1", "--log-every", "1", "--checkpoint-every", "3")) == 0
    want = TrainConfig(steps=6, lr=1e-3, lr_schedule="cosine", lr_warmup=1)
    assert [r["lr"] for r in _records(run)] == pytest.approx([want.lr_at(s) for s in range(6)])
    # the schedule is part of the run: resuming with another one is refused by name
    assert main(_train_cmd(world, run, "--steps", "8", "--lr", "1e-3", "--batch-size", "4", "--resume")) == 2
    assert "lr_schedule 'cosine' -> 'constant'" in capsys.readouterr().err


@pytest.mark.parametrize("flags, words", [
    (["--lr-schedule", "linear"], "invalid choice: 'linear'"),
    (["--lr-warmup", "5"], "--lr-warmup must be a whole number of steps in [0, --steps = 5), got 5"),
    (["--lr-warmup", "-1"], "--lr-warmup must be a whole number of steps in [0, --steps = 5), got -1"),
])
def test_bad_schedule_flags_are_refused_by_name(world, tmp_path, capsys, flags, words):
    with pytest.raises(SystemExit) if "linear" in flags else contextlib.nullcontext():  # argparse's own refusal
        assert main(_train_cmd(world, tmp_path / "run", "--steps", "5", *flags)) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()



def test_lr_scale_puts_each_component_in_its_own_group(world):
    from taskfold.train.config import TrainConfig
    from taskfold.train.trainer import TrainModule, param_groups
    from taskfold.upcycle.model import set_trainable

    mtu = load_mtu(world / "mtu")
    set_trainable(mtu, "mtu")
    module = TrainModule(mtu, torch.nn.Linear(2, 2), torch.nn.Identity())
    module.text_encoder.requires_grad_(False)
    groups = param_groups(module, TrainConfig(lr_scale={"task_conv_in": 10.0, "routers": 0.5}))
    assert [g["scale"] for g in groups] == [0.5, 1.0, 10.0]
    ids = {id(p): n for n, p in mtu.named_parameters()}
    names = [{ids[id(p)] for p in g["params"]} for g in groups]
    assert names[2] == {n for n in ids.values() if n.startswith("unet.conv_in.convs.")} and len(names[2]) == 8
    assert all(".router." in n for n in names[0]) and names[0]
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in mtu.parameters())
    # each group steps at its factor of the scheduled rate
    opt = torch.optim.Adam(groups, lr=1e-3)
    for g in opt.param_groups:
        g["lr"] = 1e-3 * g["scale"]
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 1e-3, 1e-2]


@pytest.mark.parametrize("value, words", [
    ({"conv_in": 10.0}, "--lr-scale names 'conv_in'; expected components among experts, routers"),
    ({"experts": 0.0}, "--lr-scale factors must be positive numbers, got {'experts': 0.0}"),
])
def test_bad_lr_scale_is_refused_by_name(value, words):
    from taskfold.errors import ConfigError
    from taskfold.train.config import TrainConfig

    with pytest.raises(ConfigError, match=None) as e:
        TrainConfig(lr_scale=value)
    assert words in str(e.value)
