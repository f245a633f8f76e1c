"""analyze-deviation: Frobenius distances and ranks per block and component (paper Fig. 2)."""

import json

import torch

from taskfold.cli import main
from taskfold.upcycle import load_base
from taskfold.upcycle.deviation import deviation_table


def test_distances_and_ranks(tmp_path, capsys):
    base, _ = load_base("preset:tiny", seed=0)
    ft, _ = load_base("preset:tiny", seed=0)
    with torch.no_grad():
        blk = ft.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0")
        blk.ff.net[2].weight.add_(0.5)  # big FFN change
        blk.attn2.to_q.weight.add_(0.01)  # small cross-attention change
    table = deviation_table(base, [ft], ["ft"])
    rows = {(r["block"], r["component"]): r for r in table["rows"]}
    key = "down_blocks.0.attentions.0.transformer_blocks.0"
    n = blk.ff.net[2].weight.numel()
    assert abs(rows[key, "ffn"]["distance"]["ft"] - 0.5 * n ** 0.5) < 1e-6  # float32 weights
    q = blk.attn2.to_q.weight.numel()
    assert abs(rows[key, "cross_attention"]["distance"]["ft"] - 0.01 * q ** 0.5) < 1e-7
    assert rows[key, "cross_attention"]["matrices"]["attn2.to_q"]["ft"] > 0
    assert rows[key, "cross_attention"]["matrices"]["attn2.to_k"]["ft"] == 0
    assert rows[key, "ffn"]["rank"]["ft"] == len(table["rows"])  # largest deviation, highest rank
    assert rows[key, "cross_attention"]["rank"]["ft"] == len(table["rows"]) - 1


def test_cli_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "dev"
    assert main(["analyze-deviation", "preset:tiny", "preset:tiny", "--out", str(out)]) == 0
    data = json.loads((out / "deviation.json").read_text())
    assert len(data["rows"]) == 3 * len(data["blocks"]) == 12
    assert all(r["distance"]["preset:tiny"] == 0.0 for r in data["rows"])  # same seed: identical
    png = (out / "deviation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
