"""``taskfold inspect``: what an MTU model holds — tasks, experts, parameters, router weights."""

from __future__ import annotations

from collections import Counter

from .model import TRAINABLE_COMPONENTS, MTUNet, parameter_components


def summarize(model: MTUNet) -> dict:
    """A JSON-able description of ``model`` (used by ``inspect`` and the reports)."""
    comps = parameter_components(model)
    params = dict(model.named_parameters())
    per_component = Counter()
    for name, comp in comps.items():
        per_component[comp] += params[name].numel()
    trainable = sum(per_component[c] for c in TRAINABLE_COMPONENTS)
    layers = model.mtu_layers()
    cfg = model.config
    return {
        "base": model.base_info.source,
        "tasks": [t.to_dict() | {"in_channels": t.in_channels(model.latent_channels)} for t in model.tasks],
        "upcycled_layers": len(layers),
        "experts_per_layer": {name.removeprefix("unet."): layer.num_experts for name, layer in layers},
        "expert_width_per_layer": {name.removeprefix("unet."): layer.expert_width for name, layer in layers},
        "norm_mode": cfg.norm_mode,
        "top_k": cfg.top_k,
        "dtr": {"enabled": cfg.dtr, "alpha": cfg.dtr_alpha, "beta": cfg.dtr_beta, "timesteps": cfg.dtr_timesteps,
                "widths": list(model.dtr.widths) if model.dtr is not None else []},
        "parameters": {
            "total": sum(per_component.values()),
            "trainable": trainable,
            "frozen": per_component["backbone"],
            "per_component": {c: per_component[c] for c in (*TRAINABLE_COMPONENTS, "backbone")},
        },
        "router_weights": {t: [[round(float(v), 6) for v in row] for row in model.router_weights(t).tolist()]
                           for t in model.task_names},
    }


def format_summary(s: dict) -> str:
    p = s["parameters"]
    lines = [f"base: {s['base']}", "tasks:"]
    for t in s["tasks"]:
        guide = t["guidance"] + (f" (text {t['guidance_scale']}, image {t['image_guidance_scale']})"
                                 if t["guidance"] == "image_text" else
                                 f" ({t['guidance_scale']})" if t["guidance"] == "text" else "")
        lines.append(f"  {t['name']:<13} in_channels={t['in_channels']:<3} inputs={'+'.join(t['inputs'])} "
                     f"text={'yes' if t['uses_text'] else 'no'} guidance={guide}")
    experts = sorted(set(s["experts_per_layer"].values()))
    widths = sorted(set(s["expert_width_per_layer"].values()))
    lines.append(f"upcycled FFN layers: {s['upcycled_layers']}  experts per layer: {experts}  expert widths: {widths}"
                 f"  norms: per {s['norm_mode'].replace('_', '-')}  top-k: {s['top_k'] or 'all'}")
    d = s["dtr"]
    lines.append(f"DTR: alpha={d['alpha']} beta={d['beta']} T={d['timesteps']} widths={d['widths']}"
                 if d["enabled"] else "DTR: off")
    lines.append(f"parameters: total {p['total']:,}  trainable {p['trainable']:,}  frozen {p['frozen']:,}")
    for comp, n in p["per_component"].items():
        lines.append(f"  {comp:<15} {n:>15,}")
    lines.append("router weights (per layer, experts left to right):")
    layer_names = list(s["experts_per_layer"])
    for task, rows in s["router_weights"].items():
        lines.append(f"  {task}:")
        for name, row in zip(layer_names, rows):
            lines.append(f"    {name:<60} " + " ".join(f"{v:.3f}" for v in row))
    return "\n".join(lines)


def router_heatmap(s: dict, path) -> None:
    """The paper's Figure 5: each task's expert weights per upcycled layer, one panel per task (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from taskfold._io import write_bytes_atomic

    tasks = list(s["router_weights"])
    layers = [n.replace("attentions.", "a").replace("transformer_blocks.", "tb").replace("_blocks.", ".")
              for n in s["experts_per_layer"]]
    n_exp = max(s["experts_per_layer"].values())
    fig, axes = plt.subplots(1, len(tasks), figsize=(1.2 + 0.45 * n_exp * len(tasks) + 2.2, 0.28 * len(layers) + 1.4),
                             dpi=110, sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        w = np.array([row + [np.nan] * (n_exp - len(row)) for row in s["router_weights"][task]])
        im = ax.imshow(w, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(task, fontsize=9)
        ax.set_xticks(range(n_exp), [str(i) for i in range(n_exp)], fontsize=7)
        ax.set_xlabel("expert", fontsize=8)
    axes[0][0].set_yticks(range(len(layers)), layers, fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="router weight")
    fig.suptitle("Router weights per layer and task (MTU paper, Figure 5)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
