"""`taskfold pretrain` writes a base folder that upcycle reads; the upcycled model keeps its DTR masks."""

import json

import torch

from taskfold.cli import main
from taskfold.export.fold import DTRFoldedUNet, load_folded
from taskfold.train.encoders import load_text_encoder
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
