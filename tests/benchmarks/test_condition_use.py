"""``benchmarks/condition_use.py``: the clean-image error with the condition image given and zeroed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from taskfold.benchmarks.condition_use import condition_use, format_table, main
from taskfold.errors import ConfigError
from tests._helpers import small_shapes

MTU = Path(__file__).resolve().parents[2] / "models" / "tiny-mtu"


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return small_shapes(tmp_path_factory, ("edit", "sr", "inpaint"), "cu")


def test_the_bundled_model_reads_its_condition_at_mid_noise(rows):
    r = condition_use(MTU, rows, n=10, timesteps=(600, 200))
    assert r["n"] == {"edit": 10, "sr": 10, "inpaint": 10}
    for task in ("sr", "inpaint"):  # measured on 64 rows: 0.038 vs 0.078 and 0.043 vs 0.078 at t = 600
        assert r[task][600]["given"] < 0.8 * r[task][600]["zeroed"], r[task]
    assert r["sr"][600]["copy"] < 0.02  # the upsampled input is close to the target
    assert all(r[t][200]["given"] < r[t][600]["given"] for t in ("edit", "sr", "inpaint"))  # less noise, less error
    assert "| `inpaint` (10 rows) | 600 |" in format_table(r)


def test_a_model_without_condition_weights_scores_the_same_given_or_zeroed(rows, tmp_path):
    from safetensors.torch import load_file, save_file

    from taskfold._io import sha256_file

    blind = tmp_path / "blind"
    shutil.copytree(MTU, blind)
    sd = load_file(blind / "model.safetensors")
    for i in range(4):
        sd[f"unet.conv_in.convs.{i}.weight"][:, 3:] = 0  # the sample's 3 channels kept, the condition's cut
    save_file(sd, blind / "model.safetensors")
    cfg = json.loads((blind / "config.json").read_text())  # the checkpoint records its weights' size and hash
    cfg["weights"] |= {"bytes": (blind / "model.safetensors").stat().st_size,
                       "sha256": sha256_file(blind / "model.safetensors")}
    (blind / "config.json").write_text(json.dumps(cfg))
    r = condition_use(blind, rows, tasks=["edit", "inpaint"], n=6, timesteps=(800,))
    for task in ("edit", "inpaint"):
        assert r[task][800]["given"] == pytest.approx(r[task][800]["zeroed"], abs=1e-7), r[task]
        assert r[task][800]["copy"] > 0.01


def test_refusals_name_the_bad_value(rows, capsys):
    with pytest.raises(ConfigError, match="t2i are not image-conditioned"):
        condition_use(MTU, rows, tasks=["t2i"], n=2)
    with pytest.raises(ConfigError, match=r"timesteps \[1000\] are outside the schedule's \[0, 999\]"):
        condition_use(MTU, rows, tasks=["sr"], n=2, timesteps=(1000,))
    with pytest.raises(SystemExit):
        main([str(MTU), "--data", str(rows), "--timesteps", "5,x"])
    assert "--timesteps must be comma-separated whole numbers, got '5,x'" in capsys.readouterr().err
    assert main([str(MTU), "--data", str(rows), "--tasks", "t2i", "--n", "2"]) == 2
    assert capsys.readouterr().err.startswith("error: task(s) t2i are not image-conditioned tasks")
