"""``benchmarks/word_contrast.py``: whether a text encoder's output tells apart the words an instruction turns on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskfold.benchmarks.word_contrast import contrast_pairs, encoder_for, main, pair_contrast, word_contrast
from taskfold.errors import ConfigError
from taskfold.train.shapes import MOVES, PALETTE, SHAPES


def test_pairs_differ_in_one_word_of_their_group():
    pairs = contrast_pairs()
    n_colours = len(PALETTE)
    assert {g: len(p) for g, p in pairs.items()} == {
        "move": len(SHAPES) * len(MOVES) * (len(MOVES) - 1) // 2, "resize": len(SHAPES),
        "recolour": len(SHAPES) * n_colours * (n_colours - 1) // 2, "shape": n_colours * len(SHAPES) * (len(SHAPES) - 1) // 2}
    for group, items in pairs.items():
        for a, b in items:
            wa, wb = a.split(), b.split()
            assert len(wa) == len(wb) and sum(x != y for x, y in zip(wa, wb)) == 1, (group, a, b)


def test_pair_contrast_is_relative_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 8))
    assert pair_contrast(a, a.copy()) == 0.0
    b = a.copy()
    b[3] += 3.0  # one token moved by 3 * sqrt(8) in L2
    scale = np.concatenate([np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)]).mean()
    assert pair_contrast(a, b) == pytest.approx(3.0 * np.sqrt(8) / scale, rel=1e-12)
    with pytest.raises(ConfigError, match=r"\(16, 8\) and \(16, 7\)"):
        pair_contrast(a, a[:, :7])


def test_an_encoder_blind_to_one_word_scores_zero_there():
    """A fake encoder that maps 'left'/'right'/'up'/'down' to one vector: move contrast 0, the others not."""
    vocab = sorted({w for pairs in contrast_pairs().values() for p in pairs for w in p[0].split() + p[1].split()})
    rng = np.random.default_rng(1)
    table = {w: rng.normal(size=4) for w in vocab}
    for d in MOVES:
        table[d] = table["left"]

    def encode(prompts):
        return np.stack([np.stack([table[w] for w in p.split()] + [np.zeros(4)] * (5 - len(p.split())))
                         for p in prompts])

    result = word_contrast(encode)
    assert result["move"] == {"median": 0.0, "min": 0.0, "pairs": 18}
    assert min(result[g]["min"] for g in ("resize", "recolour", "shape")) > 0.1


def test_cli_on_a_text_encoder_folder(tmp_path, capsys):
    from taskfold.demo import bundled_base

    out = tmp_path / "wc.json"
    assert main([str(bundled_base() / "text_encoder"), "--json", str(out)]) == 0
    saved = json.loads(out.read_text())["groups"]
    assert set(saved) == {"move", "resize", "recolour", "shape"}
    assert all(0 <= g["min"] <= g["median"] for g in saved.values())
    assert "| move | 18 |" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["truncated weights", "config not an object"])
def test_a_crafted_text_encoder_folder_is_one_clear_refusal(tmp_path, capsys, damage):
    import shutil

    from taskfold.demo import bundled_base
    from tests._helpers import one_line_error

    te = tmp_path / "te"
    shutil.copytree(bundled_base() / "text_encoder", te)
    if damage == "truncated weights":
        weights = te / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (te / "config.json").write_text("[1, 2]")
    code = main([str(te)])
    err = capsys.readouterr().err
    one_line_error(code, err)
    assert ("model.safetensors" if damage == "truncated weights" else "config.json") in err


def test_refuses_a_folder_that_is_neither(tmp_path, capsys):
    with pytest.raises(ConfigError, match="neither a package"):
        encoder_for(tmp_path)
    assert main([str(tmp_path)]) == 2
    assert "neither a package" in capsys.readouterr().err


def test_the_bundled_finetune_tells_apart_what_the_base_blurred():
    """Issue 25: the base's encoder gives left / right / up / down nearly one output (move contrast 0.16, colours
    1.08), so no fine-tune with it frozen could follow a move; the bundled fine-tune trained it (stages 9-12 of
    models/tiny-mtu/README.md). Both read from the committed weights."""
    from taskfold.demo import bundled_base, bundled_mtu

    base = word_contrast(encoder_for(bundled_base() / "text_encoder"))
    tuned = word_contrast(encoder_for(bundled_mtu() / "text_encoder"))
    assert base["move"]["median"] < 0.25 * base["recolour"]["median"], base
    assert tuned["move"]["median"] > 2 * base["move"]["median"], (base["move"], tuned["move"])
    assert tuned["resize"]["median"] > 1.5 * base["resize"]["median"], (base["resize"], tuned["resize"])
    # every group is now told apart at least three times as far as the base told the directions apart
    assert {g: round(r["median"], 3) for g, r in tuned.items() if r["median"] < 3 * base["move"]["median"]} == {}
