"""The CLI: happy path, and every bad input ending in one line, non-zero, nothing left behind."""

import json
import subprocess
import sys

import pytest

from taskfold.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_upcycle_and_inspect(tmp_path, capsys):
    out = tmp_path / "mtu"
    code, stdout, _ = run_cli(capsys, "upcycle", "--base", "preset:tiny", "--tasks", "t2i,edit,sr,inpaint",
                              "--experts", "2", "--out", str(out))
    assert code == 0
    err = float(stdout.split("max abs error ")[1].split()[0])
    assert err < 1e-5
    code, stdout, _ = run_cli(capsys, "inspect", str(out), "--json")
    report = json.loads(stdout)
    assert [t["name"] for t in report["tasks"]] == ["t2i", "edit", "sr", "inpaint"]
    assert set(report["experts_per_layer"].values()) == {2}
    assert report["router_weights"]["sr"][0] == [0.5, 0.5]
    assert report["parameters"]["total"] == report["parameters"]["trainable"] + report["parameters"]["frozen"]
    code, stdout, _ = run_cli(capsys, "inspect", str(out))
    assert "trainable" in stdout and "sr:" in stdout


def test_custom_task_from_config_file(tmp_path, capsys):
    cfg = tmp_path / "up.json"
    cfg.write_text(json.dumps({"tasks": ["t2i", "depth"], "num_experts": 2, "custom_tasks": [
        {"name": "depth", "inputs": ["noisy", "image", "mask"], "uses_text": True, "guidance": "text"}]}))
    out = tmp_path / "mtu"
    code, _, err = run_cli(capsys, "upcycle", "--base", "preset:tiny", "--config", str(cfg), "--out", str(out))
    assert code == 0, err
    code, stdout, _ = run_cli(capsys, "inspect", str(out), "--json")
    assert {t["name"]: t["in_channels"] for t in json.loads(stdout)["tasks"]} == {"t2i": 4, "depth": 9}


BAD_UPCYCLES = [
    (["--base", "/does/not/exist"], "base '/does/not/exist' does not exist"),
    (["--base", "{tmp}"], "is not a diffusers pipeline or UNet folder"),
    (["--base", "preset:nope"], "unknown preset 'nope'"),
    (["--base", "preset:tiny", "--tasks", "t2i,colorize"], "unknown task(s) 'colorize'; known tasks: t2i, edit"),
    (["--base", "preset:tiny", "--experts", "3"], "3 experts do not divide the FFN width 64"),
    (["--base", "preset:tiny", "--top-k", "5"], "--top-k 5 must be between 1 and --experts 4"),
    (["--base", "preset:tiny", "--dtr", "--dtr-beta", "1.5"], "--dtr-beta must be in (0, 1]"),
    (["--base", "preset:tiny", "--blocks", "nothing.*"], "matches no transformer block"),
]


@pytest.mark.parametrize("args,message", BAD_UPCYCLES)
def test_bad_upcycle_input(tmp_path, capsys, args, message):
    (tmp_path / "notaunet").mkdir()
    (tmp_path / "notaunet" / "readme.txt").write_text("hi")
    args = [a.replace("{tmp}", str(tmp_path / "notaunet")) for a in args]
    before = leftovers(tmp_path)
    code, stdout, err = run_cli(capsys, "upcycle", *args, "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert leftovers(tmp_path) == before  # no output directory, no temp directory


def test_not_a_unet_folder_names_what_it_found(tmp_path, capsys):
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    code, _, err = run_cli(capsys, "upcycle", "--base", str(folder), "--out", str(tmp_path / "o"))
    assert code == 2 and "holds a AutoencoderKL config; expected a UNet2DConditionModel" in err


def test_unsupported_single_file(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    f = tmp_path / "model.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(f))
    code, _, err = run_cli(capsys, "upcycle", "--base", str(f), "--out", str(tmp_path / "o"))
    assert code == 2 and "is not a Stable Diffusion UNet checkpoint" in err
    f.write_bytes(b"garbage" * 10)
    code, _, err = run_cli(capsys, "upcycle", "--base", str(f), "--out", str(tmp_path / "o"))
    assert code == 2 and "cannot read" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_corrupt_checkpoint_and_existing_output(tmp_path, capsys):
    out = tmp_path / "mtu"
    assert run_cli(capsys, "upcycle", "--base", "preset:tiny", "--out", str(out))[0] == 0
    w = out / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "inspect", str(out))
    assert code == 2 and err.count("\n") == 1 and "truncated" in err
    # an existing output is never replaced without --overwrite, and is left as it was
    code, _, err = run_cli(capsys, "upcycle", "--base", "preset:tiny", "--out", str(out))
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert w.stat().st_size == 1000
    assert leftovers(tmp_path) == ["mtu"]


def test_console_script_runs_as_a_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "taskfold", "upcycle", "--base", "preset:tiny", "--experts", "7",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: 7 experts do not divide the FFN width")
    assert not (tmp_path / "o").exists()
