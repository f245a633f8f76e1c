"""The MTU-table script's bookkeeping: resume decisions, training times from the logs, the table text."""

from __future__ import annotations

import json

import pytest

from taskfold.benchmarks import mtu_table


def test_train_resumes_only_a_run_that_exists(tmp_path, monkeypatch):
    import taskfold.train.trainer as trainer

    calls = []
    monkeypatch.setattr(trainer, "train", lambda init, data, cfg, out, resume, progress: calls.append(
        (init, data, cfg, out, resume)))
    run = tmp_path / "run"
    cfg = trainer.TrainConfig(steps=3)
    mtu_table._train(tmp_path / "init", run, tmp_path / "data", cfg, resume=True)
    run.mkdir()
    mtu_table._train(tmp_path / "init", run, tmp_path / "data", cfg, resume=True)  # empty folder: a fresh start
    (run / "log.jsonl").write_text("")
    mtu_table._train(tmp_path / "init", run, tmp_path / "data", cfg, resume=True)
    mtu_table._train(tmp_path / "init", run, tmp_path / "data", cfg, resume=False)
    assert [c[4] for c in calls] == [False, False, True, False]
    assert all(c[0] == tmp_path / "init" and c[3] == run and c[2] is cfg for c in calls)


def test_training_seconds_come_from_the_last_log_line(tmp_path):
    lines = [{"step": 50, "seconds": 80.5}, {"step": 100, "seconds": 161.25}]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert mtu_table._train_seconds(tmp_path) == 161.25


def test_markdown_table_holds_every_number():
    def rate(k, n=64):
        return {"n": n, "success_rate": k / n, "success_interval": [max(0, k / n - 0.1), min(1, k / n + 0.1)],
                "successes": k}

    def scores(t2i, psnr):
        row = {"t2i": rate(t2i)}
        for task, base in (("edit", 15.82), ("sr", 29.07), ("inpaint", 18.9)):
            row[task] = {"psnr": psnr, "ssim": 0.4, "condition_baseline_psnr": base, "condition_baseline_ssim": 0.8,
                         "psnr_gain_db": psnr - base, "psnr_gain_interval": [psnr - base - 1, psnr - base + 1]}
            if task != "sr":
                row[task] |= rate(10)
        return row

    result = {"machine": "test box", "command": "python -m taskfold.benchmarks.mtu_table --eval 64",
              "table2": {"rows": {"MTU (N=4, all tasks)": scores(25, 10.77),
                                  "single-task fine-tunes": scores(16, 10.37)},
                         "seconds": 99.0, "train_seconds": {"mtu-run": 1478.0, "single-t2i-run": 262.4}},
              "dtr": {"with DTR": rate(7)}}
    result["table2"]["rows"]["MTU (N=4, all tasks)"]["edit"]["success_by_kind"] = {"recolour": [9, 20],
                                                                                   "move": [1, 22]}
    result["table2"]["rows"]["MTU (N=4, all tasks)"]["edit"]["also"] = {"asked_only": {
        "successes": 30, "success_rate": 30 / 64, "success_by_kind": {"recolour": [19, 20], "move": [11, 22]}}}
    result["sampling"] = {"file": "models/tiny-mtu/sampling.json", "tasks": {
        "edit": {"strength": 0.75, "guidance_scale": 3.0, "image_guidance_scale": 1.2, "steps": 20},
        "t2i": {"guidance_scale": 3.0, "steps": 20}}}
    md = mtu_table.markdown(result)
    assert "`edit` success by kind: MTU (N=4, all tasks) recolour 9/20, move 1/22." in md
    assert ("`edit` by the earlier metric (the asked attribute and the shape only; size, place and background "
            "unchecked), on the same outputs: MTU (N=4, all tasks) 30/64 (recolour 19/20, move 11/22).") in md
    assert "| model | t2i success | edit success (strict) |" in md
    assert "`inpaint` success by kind" not in md
    assert ("sampled with models/tiny-mtu/sampling.json (edit img2img 0.75, guidance 3/1.2, 20 steps; "
            "t2i from noise, guidance 3, 20 steps)") in md
    assert ("| MTU (N=4, all tasks) | 0.39 [0.29, 0.49] (25/64) | 0.16 [0.06, 0.26] (10/64) | "
            "0.16 [0.06, 0.26] (10/64) | -18.30 [-19.30, -17.30] | 10.77 / 10.77 / 10.77 |") in md
    assert "| single-task fine-tunes | 0.25 [0.15, 0.35] (16/64) |" in md
    assert "| return the condition image | – | – | – | 0 | 15.82 / 29.07 / 18.90 |" in md
    assert "64 test samples per task" in md and "mtu-run 1478 s, single-t2i-run 262 s" in md
    assert "| with DTR | 0.11 [0.01, 0.21] (7/64) |" in md and "Machine: test box" in md


def test_dtr_bases_are_named_dirs():
    import argparse

    assert mtu_table._named_dirs("with DTR=models/tiny-base,without DTR=plain/base") == {
        "with DTR": "models/tiny-base", "without DTR": "plain/base"}
    with pytest.raises(argparse.ArgumentTypeError, match="'models/tiny-base' is not NAME=DIR"):
        mtu_table._named_dirs("models/tiny-base")
