"""Parameter counts of an upcycled SD1.5 (N=4) against numbers computed from the config alone."""

import json

import pytest
import torch

from taskfold.cli import main
from taskfold.upcycle import UpcycleConfig, load_base, preset_config, upcycle
from taskfold.upcycle.inspect import summarize


def ffn_widths_from_config(cfg):
    """Width d of every transformer block, walking the published config (down, mid, up)."""
    widths = []
    tlpb = cfg.get("transformer_layers_per_block", 1)
    levels = len(cfg["block_out_channels"])
    tlpb = [tlpb] * levels if isinstance(tlpb, int) else list(tlpb)
    for i, kind in enumerate(cfg["down_block_types"]):
        if kind.startswith("CrossAttn"):
            widths += [cfg["block_out_channels"][i]] * (cfg["layers_per_block"] * tlpb[i])
    widths += [cfg["block_out_channels"][-1]] * tlpb[-1]
    for j, kind in enumerate(cfg["up_block_types"]):
        i = levels - 1 - j
        if kind.startswith("CrossAttn"):
            widths += [cfg["block_out_channels"][i]] * ((cfg["layers_per_block"] + 1) * tlpb[i])
    return widths


def expected_counts(cfg, n_tasks=4, n_experts=4, task_dim=64, router_hidden=64, task_in=(4, 8, 8, 8)):
    widths = ffn_widths_from_config(cfg)
    ffn = sum(3 * (4 * d) * d + 2 * (4 * d) + d for d in widths)  # GEGLU proj (d->2H) + out (H->d), H = 4d
    routers = len(widths) * (task_dim * router_hidden + router_hidden + router_hidden * n_experts + n_experts)
    task_norms = sum(n_tasks * 2 * d for d in widths)
    norm3 = sum(2 * d for d in widths)
    c0 = cfg["block_out_channels"][0]
    conv_in_base = cfg["in_channels"] * c0 * 9 + c0
    task_conv_in = sum(c * c0 * 9 + c0 for c in task_in)
    return dict(ffn=ffn, routers=routers, task_norms=task_norms, norm3=norm3, task_embedding=n_tasks * task_dim,
                conv_in_base=conv_in_base, task_conv_in=task_conv_in,
                trainable=ffn + routers + task_norms + n_tasks * task_dim + task_conv_in)


def test_sd15_n4_counts_match_the_config():
    cfg = preset_config("sd15")
    e = expected_counts(cfg)
    assert len(ffn_widths_from_config(cfg)) == 16
    assert e["ffn"] == 148_797_120
    base, info = load_base("preset:sd15", seed=0)
    n_base = sum(p.numel() for p in base.parameters())
    mtu = upcycle(base, UpcycleConfig(tasks=("t2i", "edit", "sr", "inpaint"), num_experts=4), info)
    del base
    p = summarize(mtu)["parameters"]
    assert p["per_component"]["experts"] == e["ffn"]  # experts hold exactly the FFN's parameters
    assert p["trainable"] == e["trainable"] == 149_049_856
    assert p["per_component"]["routers"] == e["routers"]
    assert p["per_component"]["task_norms"] == e["task_norms"]
    assert p["per_component"]["task_conv_in"] == e["task_conv_in"]
    # total = base - replaced norm3 - replaced conv_in + routers + embeddings + task norms + task conv_ins
    assert p["total"] == (n_base - e["norm3"] - e["conv_in_base"] + e["routers"] + e["task_embedding"]
                          + e["task_norms"] + e["task_conv_in"])
    assert n_base == 859_520_964


@pytest.mark.slow
def test_sd15_inspect_cli_reports_the_trainable_count(tmp_path, capsys):
    out = tmp_path / "sd15-mtu"
    assert main(["upcycle", "--base", "preset:sd15", "--experts", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"]["trainable"] == expected_counts(preset_config("sd15"))["trainable"]
    assert report["parameters"]["per_component"]["experts"] == 148_797_120


def test_narrow_sdxl_counts_follow_the_same_formula():
    cfg = preset_config("sdxl-narrow")
    base, info = load_base("preset:sdxl-narrow")
    mtu = upcycle(base, UpcycleConfig(), info)
    e = expected_counts(cfg)
    p = summarize(mtu)["parameters"]
    assert p["per_component"]["experts"] == e["ffn"]
    assert p["trainable"] == e["trainable"]
    assert len(mtu.mtu_layers()) == len(ffn_widths_from_config(cfg))
    assert torch.equal(mtu.router_weights("sr"), torch.full((len(mtu.mtu_layers()), 4), 0.25))
