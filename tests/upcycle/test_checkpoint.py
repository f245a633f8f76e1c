"""Save/load round trip and every way a saved MTU directory can be broken."""

import json

import pytest
import torch

from taskfold.errors import CheckpointError, OutputExistsError
from taskfold.upcycle import UpcycleConfig, upcycle
from taskfold.upcycle.checkpoint import load_mtu, save_mtu
from tests._helpers import unet_inputs


@pytest.fixture()
def saved(tmp_path, tiny_base):
    base, info = tiny_base
    model = upcycle(base, UpcycleConfig(tasks=("t2i", "edit", "inpaint-mask"), dtr=True, norm_mode="task_expert",
                                        top_k=3), info)
    with torch.no_grad():  # make the weights differ from init, so a round trip proves something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    out = save_mtu(model, tmp_path / "mtu")
    return model, out


def test_round_trip_rebuilds_from_the_directory_alone(saved, tiny_base):
    model, out = saved
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_mtu(out)
    assert loaded.config == model.config
    assert loaded.task_names == ("t2i", "edit", "inpaint-mask")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x, text, _ = unet_inputs(tiny_base[0], channels=9)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, 640, text, "inpaint-mask"), loaded(x, 640, text, "inpaint-mask"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["schema_version"] == 1 and cfg["weights"]["bytes"] == (out / "model.safetensors").stat().st_size
    assert [t["in_channels"] for t in cfg["tasks"]] == [4, 8, 9]


def test_truncated_weights(saved):
    _, out = saved
    w = out / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"has \d+ bytes, config.json records \d+: truncated"):
        load_mtu(out)


def test_flipped_byte_fails_the_hash(saved):
    _, out = saved
    w = out / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_mtu(out)


def test_newer_schema_is_refused(saved):
    _, out = saved
    cfg = json.loads((out / "config.json").read_text())
    cfg["schema_version"] = 2
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="schema_version 2; this taskfold .* reads schema 1"):
        load_mtu(out)


def test_weights_that_do_not_match_the_config(saved):
    _, out = saved
    cfg = json.loads((out / "config.json").read_text())
    cfg["upcycle"]["num_experts"] = 2  # file holds 4 experts per layer
    cfg["upcycle"]["top_k"] = None
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"do not match config.json \(\d+ problem\(s\)\): .*w1: file \(4, "):
        load_mtu(out)


def test_unknown_config_key_and_missing_dir(saved, tmp_path):
    _, out = saved
    cfg = json.loads((out / "config.json").read_text())
    cfg["upcycle"]["experts_typo"] = 3
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unknown upcycle config key\(s\) \['experts_typo'\]"):
        load_mtu(out)
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_mtu(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_mtu(tmp_path / "empty")


def test_save_refuses_to_overwrite_and_keeps_the_old_directory(saved, tiny_base):
    model, out = saved
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        save_mtu(model, out)
    assert (out / "model.safetensors").read_bytes() == before
    save_mtu(model, out, overwrite=True)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
