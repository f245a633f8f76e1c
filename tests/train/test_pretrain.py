"""`taskfold pretrain` writes a base folder that upcycle reads; the upcycled model keeps its DTR masks."""

import json

import torch

from taskfold.cli import main
from taskfold.export.fold import DTRFoldedUNet, load_folded
from taskfold.upcycle.text_encoders import load_text_encoder
from taskfold.train.shapes import make_shapes
from taskfold.upcycle import load_base
from taskfold.upcycle.checkpoint import load_mtu


def test_pretrained_base_upcycles_with_its_dtr_and_equals_it_at_init(tmp_path, capsys):
    make_shapes(tmp_path / "data", n=24, size=16, seed=0, tasks=("t2i",))
    assert main(["pretrain", "--data", str(tmp_path / "data"), "--steps", "6", "--batch-size", "4",
                 "--out", str(tmp_path / "pre"), "--no-progress", "--dtr-beta", "0.75"]) == 0
    base = tmp_path / "pre" / "base"
    assert sorted(p.name for p in base.iterdir()) == ["codec.json", "scheduler", "taskfold_base.json",
                                                      "text_encoder", "unet"]
    meta = json.loads((base / "taskfold_base.json").read_text())
    assert meta["dtr"] == {"alpha": 4.0, "beta": 0.75, "timesteps": 1000} and meta["train"]["trainable"] == "all"
    folded = load_folded(base / "unet")
    assert isinstance(folded, DTRFoldedUNet) and folded.dtr.beta == 0.75
    unet, info = load_base(str(base))
    assert info.dtr == {"timesteps": 1000, "alpha": 4.0, "beta": 0.75}

    capsys.readouterr()
    assert main(["upcycle", "--base", str(base), "--tasks", "t2i,edit", "--out", str(tmp_path / "mtu")]) == 0
    assert "keeps its masks" in capsys.readouterr().out
    mtu = load_mtu(tmp_path / "mtu").eval()
    assert mtu.dtr is not None and mtu.dtr.beta == 0.75
    te = load_text_encoder(base / "text_encoder")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g)
    text = te.encode(["a red circle", "a blue square"])
    with torch.no_grad():
        for t in (0, 400, 999):
            ts = torch.tensor([t, t])
            ref = folded(x, ts, text).sample
            assert (mtu(x, ts, text, "t2i") - ref).abs().max().item() < 1e-5 * max(1.0, ref.abs().max().item())

    assert main(["upcycle", "--base", str(base), "--dtr-beta", "0.8", "--out", str(tmp_path / "bad")]) == 2
    assert "would change its function" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_noise_schedule_is_inherited_from_the_base_and_reaches_the_package(tmp_path, capsys):
    """Pretraining a pixel base uses the linear DDPM schedule (near-zero terminal SNR); fine-tuning
    and export take the schedule from the base unless told otherwise."""
    make_shapes(tmp_path / "data", n=12, size=16, seed=1, tasks=("t2i", "sr"))
    assert main(["pretrain", "--data", str(tmp_path / "data"), "--steps", "2", "--batch-size", "4",
                 "--out", str(tmp_path / "pre"), "--no-progress"]) == 0
    base = tmp_path / "pre" / "base"
    sched = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"]) == ("linear", 0.0001, 0.02)
    assert sched["clip_sample"] is True  # pixel space: DDIM's x0 estimate is clipped to [-1, 1]
    assert main(["upcycle", "--base", str(base), "--tasks", "t2i,sr", "--out", str(tmp_path / "mtu")]) == 0
    # An upcycled, untrained model exports with its base's schedule.
    assert main(["export", str(tmp_path / "mtu"), "--out", str(tmp_path / "pkg0"), "--parity-timesteps", "2"]) == 0
    assert json.loads((tmp_path / "pkg0" / "manifest.json").read_text())["scheduler"]["beta_schedule"] == "linear"
    capsys.readouterr()
    assert main(["train", str(tmp_path / "mtu"), "--data", str(tmp_path / "data"), "--steps", "2", "--batch-size", "2",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "noise schedule 'ddpm': the one the model was trained with" in capsys.readouterr().out
    run_sched = json.loads((tmp_path / "run" / "mtu" / "scheduler_config.json").read_text())
    assert (run_sched["beta_end"], run_sched["clip_sample"]) == (0.02, True)
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["noise_schedule"] == "ddpm"
    assert main(["train", str(tmp_path / "mtu"), "--data", str(tmp_path / "data"), "--steps", "1", "--batch-size", "2",
                 "--noise-schedule", "sd", "--out", str(tmp_path / "run-sd"), "--no-progress"]) == 0
    assert "warning: training with the 'sd' noise schedule; the model was trained with 'ddpm'" in \
        capsys.readouterr().out
    assert json.loads((tmp_path / "run-sd" / "mtu" / "scheduler_config.json").read_text())["clip_sample"] is False
    # A schedule the trainer does not implement is refused before any step.
    sched["prediction_type"] = "v_prediction"
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    assert main(["train", str(tmp_path / "mtu"), "--data", str(tmp_path / "data"), "--steps", "1",
                 "--out", str(tmp_path / "run-v"), "--no-progress"]) == 2
    assert "v_prediction prediction" in capsys.readouterr().err and not (tmp_path / "run-v").exists()


def test_min_snr_weights():
    from taskfold.train.trainer import TrainConfig, alphas_cumprod, loss_weights

    cfg = TrainConfig(snr_gamma=5.0, noise_schedule="ddpm")
    acp = alphas_cumprod(cfg)
    w = loss_weights(cfg, acp)
    snr = acp / (1 - acp)
    assert loss_weights(TrainConfig(), acp) is None
    low, high = int((snr > 5).nonzero().max()), int((snr < 5).nonzero().min())
    assert torch.allclose(w[: low + 1], 5.0 / snr[: low + 1]) and bool((w[high:] == 1).all())
    assert w[0].item() < 1e-3 and w[999].item() == 1.0


def test_x0_weight_cap_weighs_high_noise_in_clean_image_terms():
    import pytest

    from taskfold.errors import ConfigError
    from taskfold.train.trainer import TrainConfig, alphas_cumprod, loss_weights

    cfg = TrainConfig(snr_gamma=5.0, x0_weight_cap=100.0, noise_schedule="ddpm")
    acp = alphas_cumprod(cfg)
    w, snr = loss_weights(cfg, acp), acp / (1 - acp)
    mid = (snr < 1) & (1 / snr < 100)  # the clean-image MSE, uncapped
    assert int(mid.sum()) > 100 and torch.allclose(w[mid], 1 / snr[mid])
    assert float(w[999]) == 100.0 and float(w.max()) == 100.0
    assert torch.allclose(w[snr >= 1], loss_weights(TrainConfig(snr_gamma=5.0, noise_schedule="ddpm"), acp)[snr >= 1])
    assert torch.equal(loss_weights(TrainConfig(x0_weight_cap=1.0), acp), torch.ones_like(acp))
    with pytest.raises(ConfigError, match="x0-weight-cap must be at least 1"):
        TrainConfig(x0_weight_cap=0.5)
