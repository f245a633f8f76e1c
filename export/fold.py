"""``fold(mtu, task)``: one task of an MTU model baked into a stock diffusers UNet (DESIGN.md "Folding").

For task ``tau`` the router output ``r`` is a constant, so each upcycled layer collapses to
one dense GEGLU feed-forward layer of the original shape:

* ``W1_fold``: the kept experts' value rows, then their gate rows (GEGLU order);
* per-(task, expert) norms ``gamma_i, beta_i`` move into ``W1_i``: ``W1_i <- W1_i diag(gamma_i)``,
  ``b1_i <- W1_i beta_i + b1_i``, and ``norm3`` keeps no affine (gamma = 1, beta = 0); per-task
  norms are simply ``norm3``'s affine;
* ``W2_fold = [r_1 W2_1 | ... | r_N W2_N]`` over the kept experts, ``b2_fold = b2 * sum_i r_i``;
* experts with ``r_i = 0`` (top-k) are dropped; the task's ``conv_in`` replaces the base's.

The result is a plain ``UNet2DConditionModel`` (``in_channels`` = the task's), which
``save_pretrained`` writes and every standard exporter accepts.
"""

from __future__ import annotations

import torch

from taskfold.errors import ConfigError
from taskfold.upcycle.base import build_unet
from taskfold.upcycle.experts import MTUFeedForward
from taskfold.upcycle.model import MTUNet


@torch.no_grad()
def fold_layer(layer: MTUFeedForward, task_index: int, task_embedding: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dense ``norm3`` + ``ff`` tensors for one task: keys relative to the transformer block."""
    r = layer.routing(task_embedding[None].to(layer.w1))[0].double()
    keep = (r > 0).nonzero().squeeze(1)
    m, d = layer.expert_width, layer.dim
    w1, b1 = layer.w1.double()[keep], layer.b1.double()[keep]  # [k, 2m, d], [k, 2m]
    gamma = layer.task_norm_weight[task_index].double()
    beta = layer.task_norm_bias[task_index].double()
    if layer.norm_mode == "task_expert":
        g, bt = gamma[keep], beta[keep]  # [k, d]
        b1 = b1 + torch.einsum("nkd,nd->nk", w1, bt)
        w1 = w1 * g[:, None, :]
        norm_w, norm_b = torch.ones(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    else:
        norm_w, norm_b = gamma, beta
    hidden = len(keep) * m
    if hidden != layer.hidden:
        raise ConfigError(f"the folded FFN would be {hidden} wide, the base FFN is {layer.hidden}: "
                          f"{len(keep)} routed experts of width {m} do not tile it once",
                          hint="iso-FLOP folding needs (routed experts) x (expert width) == FFN width")
    proj_w = torch.cat([w1[:, :m].reshape(hidden, d), w1[:, m:].reshape(hidden, d)], 0)
    proj_b = torch.cat([b1[:, :m].reshape(hidden), b1[:, m:].reshape(hidden)], 0)
    w2 = (layer.w2.double()[keep] * r[keep][:, None, None]).permute(1, 0, 2).reshape(d, hidden)
    b2 = layer.b2.double() * r[keep].sum()
    dtype = layer.w1.dtype
    return {k: v.to(dtype) for k, v in {
        "norm3.weight": norm_w, "norm3.bias": norm_b,
        "ff.net.0.proj.weight": proj_w, "ff.net.0.proj.bias": proj_b,
        "ff.net.2.weight": w2, "ff.net.2.bias": b2}.items()}


@torch.no_grad()
def fold(mtu: MTUNet, task: str | int):
    """A stock ``UNet2DConditionModel`` computing ``mtu`` for ``task``; ``mtu`` is not changed."""
    if mtu.dtr is not None:
        raise ConfigError("this model uses DTR: its folded UNet needs the timestep mask buffers, "
                          "which plain UNet2DConditionModel has no place for",
                          hint="fold models without --dtr here")
    idx = mtu.task_index(task)
    cfg = dict(mtu.unet.config) | {"in_channels": mtu.task_in_channels(idx)}
    ref = next(mtu.parameters())
    unet = build_unet(cfg, seed=None, device="meta")
    src = mtu.unet.state_dict()
    state = {}
    for name, layer in mtu.mtu_layers():
        block = name.removeprefix("unet.").removesuffix(".ff")
        for k, v in fold_layer(layer, idx, mtu.task_embedding.weight[idx]).items():
            state[f"{block}.{k}"] = v
    conv = mtu.unet.conv_in.convs[idx]
    state["conv_in.weight"], state["conv_in.bias"] = conv.weight, conv.bias
    for key in unet.state_dict():
        if key not in state:
            state[key] = src[key]
    unet.load_state_dict({k: v.detach().clone().to(ref.device) for k, v in state.items()}, strict=True, assign=True)
    return unet.eval()
