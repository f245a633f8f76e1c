"""``taskfold bench``: the report's numbers are computed from what ran, and bad input writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskfold.benchmarks.bench import BenchConfig, run_bench
from taskfold.benchmarks.report import markdown
from taskfold.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def preset_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny"
    assert main(["bench", "--preset", "tiny", "--runs", "3", "--out", str(out), "--parity-timesteps", "1"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_preset_report_has_every_contender_and_files(preset_report):
    out, report = preset_report
    names = [r["name"] for r in report["rows"]]
    assert names == ["base", "base (plain ORT)", "t2i", "edit", "sr", "inpaint", "unfolded",
                     "base (plain ORT, adapters process)", "t2i (adapter)", "edit (adapter)", "sr (adapter)",
                     "inpaint (adapter)", "eager base", "eager unfolded"]
    assert (out / "latency.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "latency.png").stat().st_size > 5000
    assert (out / "report.md").read_text() == markdown(report)
    assert not (out / "graphs").exists()  # graphs are removed unless --keep-graphs
    assert report["command"].startswith("taskfold bench --preset tiny")
    assert report["machine"]["cores"] >= 1 and report["matmul_peak"]["best_gflops"] > 0


def test_folded_graphs_are_iso_flop_and_ratios_come_from_the_times(preset_report):
    _, report = preset_report
    rows = {r["name"]: r for r in report["rows"]}
    base = rows["base"]
    for task in ("t2i", "edit", "sr", "inpaint"):
        r = rows[task]
        assert r["flop_ratio_conv_in_aside"] == pytest.approx(1.0, abs=1e-12)
        assert (r["flops"] - base["flops"]) == r["conv_in_flops"] - base["conv_in_flops"]
        assert len(r["times_s"]) == 3
        paired = [t / b for t, b in zip(r["times_s"], base["times_s"])]
        assert r["ratio_to_reference"]["median"] == pytest.approx(float(np.median(paired)), rel=1e-12)
        assert r["latency_s"]["median"] == pytest.approx(float(np.median(r["times_s"])), rel=1e-12)
        assert r["parity"]["relative_error"] < 1e-4
    assert rows["t2i"]["flops"] == base["flops"]  # same input width: exactly the base's count
    unf = rows["unfolded"]
    assert unf["flops"] > base["flops"] and unf["parity"]["relative_error"] < 1e-4
    assert rows["eager unfolded"]["reference"] == "eager base"


def test_adapters_rows_are_set_against_the_plain_base_of_their_own_process(preset_report):
    _, report = preset_report
    rows = {r["name"]: r for r in report["rows"]}
    plain = rows["base (plain ORT, adapters process)"]
    assert plain["flops"] == rows["base"]["flops"]
    for task in ("t2i", "edit", "sr", "inpaint"):
        r = rows[f"{task} (adapter)"]
        assert r["reference"] == plain["name"]
        paired = [t / b for t, b in zip(r["times_s"], plain["times_s"])]
        assert r["ratio_to_reference"]["median"] == pytest.approx(float(np.median(paired)), rel=1e-12)
        assert r["flops"] - plain["flops"] == r["conv_in_flops"] - plain["conv_in_flops"] > 0  # padded conv_in
        assert r["elementwise_flops"] > 0 and r["parity"]["relative_error"] < 1e-4
    sw = report["task_switch"]
    assert sw["rounds"] >= 3 and sw["after_switch_s"] > 0 and sw["repeated_s"] > 0
    assert sw["ratio"] == pytest.approx(float(np.median(np.asarray(sw["after_switch_times_s"]) /
                                                        np.asarray(sw["repeated_times_s"]))))


def test_package_with_its_model(tiny_package, tmp_path):
    _, pkg, mtu_dir, _ = tiny_package
    report = run_bench(BenchConfig(package=str(pkg), model=str(mtu_dir), tasks=("edit", "inpaint-mask"), runs=2,
                                   eager=False, parity_timesteps=1), tmp_path / "b", log=None)
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["base", "base (plain ORT)", "edit", "inpaint-mask", "unfolded"]  # a graphs-layout package
    assert rows["inpaint-mask"]["flop_ratio_conv_in_aside"] == pytest.approx(1.0, abs=1e-12)
    assert "own" in report["source"]["reference_weights"]
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert report["package"]["bytes"] == sum(f["bytes"] for f in manifest["files"].values())


def _nothing_written(tmp_path, out):
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    ([], "give either a package directory or --preset"),
    (["PKG", "--preset", "tiny"], "not both and not neither"),
    (["--preset", "tiny", "--model", "m"], "goes with PKG"),
    (["--preset", "tiny", "--runs", "0"], "--runs must be an integer of at least 1, got 0"),
    (["--preset", "tiny", "--backend", "tensorrt"], "add --provider cuda"),
    (["--preset", "nope"], "unknown preset 'nope'"),
])
def test_bad_arguments(tmp_path, capsys, argv, message):
    out = tmp_path / "b"
    (tmp_path / "pkg").mkdir()  # a package folder beside --out (an --out inside an input is refused first)
    argv = [a.replace("PKG", str(tmp_path / "pkg")) for a in argv]
    assert main(["bench", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    _nothing_written(tmp_path, out)


def test_bad_package_inputs(tiny_package, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    out = tmp_path / "b"
    assert main(["bench", str(pkg), "--tasks", "t2i,paint", "--out", str(out)]) == 2
    assert "unknown task(s) paint; the package has t2i, edit, sr, inpaint, inpaint-mask" in capsys.readouterr().err
    assert main(["bench", str(pkg), "--height", "32", "--out", str(out)]) == 2
    assert "measured at the shapes and precision it was exported with" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    _nothing_written(tmp_path, out)


def test_cuda_provider_without_a_gpu_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--preset", "tiny", "--provider", "cuda", "--out", str(tmp_path / "b")]) == 2
    assert "--provider cuda needs an NVIDIA GPU" in capsys.readouterr().err
    _nothing_written(tmp_path, tmp_path / "b")


def test_existing_output_is_kept(tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["bench", "--preset", "tiny", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


@pytest.mark.gpu
def test_cuda_bench_of_the_tiny_preset(tmp_path):
    report = run_bench(BenchConfig(preset="tiny", provider="cuda", runs=3, parity_timesteps=1), tmp_path / "b",
                       log=None)
    rows = {r["name"]: r for r in report["rows"]}
    assert report["config"]["precision"] == "fp16" and "gpu" in report["machine"]
    assert rows["t2i"]["flop_ratio_conv_in_aside"] == pytest.approx(1.0, abs=1e-12)
    assert rows["eager base"]["engine"] == "pytorch eager + CUDA graphs"
