"""``taskfold analyze-deviation``: which weights move when a UNet is fine-tuned (paper 001, Fig. 2).

For every transformer block and each of its components — self-attention (Q, K, V, out),
cross-attention (Q, K, V, out) and the feed-forward network — the distance
``Phi = ||theta_finetuned - theta_base||_F`` (Frobenius norm over the component's weight
matrices and biases together). For each fine-tuned model all (block, component) distances
are ranked, 1 = smallest; higher ranks mean larger deviation. With several fine-tuned
models (one per task) the ranks are averaged, as in the paper's figure.
"""

from __future__ import annotations

from pathlib import Path

import torch

from taskfold._io import atomic_output_dir, write_json_atomic
from taskfold.errors import BaseModelError

COMPONENTS = {
    "self_attention": ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"),
    "cross_attention": ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
    "ffn": ("ff.net.0.proj", "ff.net.2"),
}


def _block_names(unet) -> list[str]:
    from diffusers.models.attention import BasicTransformerBlock

    return [n for n, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)]


@torch.no_grad()
def deviation_table(base, finetuned: list, labels: list[str]) -> dict:
    """Distances and ranks per block and component; pure computation on loaded UNets."""
    blocks = _block_names(base)
    base_params = dict(base.named_parameters())
    rows = []
    for b_idx, block in enumerate(blocks):
        for comp, mods in COMPONENTS.items():
            rows.append({"block": block, "block_index": b_idx, "component": comp,
                         "matrices": {m: {} for m in mods}, "distance": {}, "rank": {}})
    for label, ft in zip(labels, finetuned):
        if _block_names(ft) != blocks:
            raise BaseModelError(f"{label!r} does not have the same transformer blocks as the base")
        ft_params = dict(ft.named_parameters())
        for row in rows:
            total = 0.0
            for mod in row["matrices"]:
                sq = 0.0
                for leaf in ("weight", "bias"):
                    key = f"{row['block']}.{mod}.{leaf}"
                    if key not in base_params:
                        continue
                    if ft_params[key].shape != base_params[key].shape:
                        raise BaseModelError(f"{label!r}: {key} has shape {tuple(ft_params[key].shape)}, "
                                             f"base has {tuple(base_params[key].shape)}")
                    sq += float((ft_params[key].double() - base_params[key].double()).pow(2).sum())
                row["matrices"][mod][label] = sq ** 0.5
                total += sq
            row["distance"][label] = total ** 0.5
        order = sorted(range(len(rows)), key=lambda i: rows[i]["distance"][label])
        for rank, i in enumerate(order, start=1):
            rows[i]["rank"][label] = rank
    for row in rows:
        row["mean_rank"] = sum(row["rank"].values()) / len(labels)
    per_component = {c: sum(r["mean_rank"] for r in rows if r["component"] == c) / len(blocks) for c in COMPONENTS}
    return {"models": labels, "blocks": blocks, "rows": rows, "mean_rank_per_component": per_component,
            "ranking": "1 = smallest distance; higher = larger deviation from the base"}


def plot_heatmap(table: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    comps = list(COMPONENTS)
    n = len(table["blocks"])
    grid = np.zeros((len(comps), n))
    for r in table["rows"]:
        grid[comps.index(r["component"]), r["block_index"]] = r["mean_rank"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * n + 2), 2.2), dpi=120)
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(comps)), ["SA", "CA", "FFN"])
    ax.set_xticks(range(n), [str(i) for i in range(n)], fontsize=7)
    ax.set_xlabel("transformer block (depth order)")
    ax.set_title("mean deviation rank (higher = moved more)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def analyze_deviation(base_spec: str, finetuned_specs: list[str], out_dir: str | Path, overwrite: bool = False) -> dict:
    """Load the UNets, compute the table, write ``deviation.json`` and ``deviation.png``."""
    from .base import load_base

    base, _ = load_base(base_spec)
    finetuned = [load_base(s)[0] for s in finetuned_specs]
    table = deviation_table(base, finetuned, list(finetuned_specs))
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        write_json_atomic(tmp / "deviation.json", table)
        plot_heatmap(table, tmp / "deviation.png")
    return table
