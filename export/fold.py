"""``fold(mtu, task)``: one task of an MTU model baked into a stock diffusers UNet (DESIGN.md "Folding").

For task ``tau`` the router output ``r`` is a constant, so each upcycled layer collapses to
one dense GEGLU feed-forward layer of the original shape:

* ``W1_fold``: the kept experts' value rows, then their gate rows (GEGLU order);
* per-(task, expert) norms ``gamma_i, beta_i`` move into ``W1_i``: ``W1_i <- W1_i diag(gamma_i)``,
  ``b1_i <- W1_i beta_i + b1_i``, and ``norm3`` keeps no affine (gamma = 1, beta = 0); per-task
  norms are simply ``norm3``'s affine;
* ``W2_fold = [r_1 W2_1 | ... | r_N W2_N]`` over the kept experts, ``b2_fold = b2 * sum_i r_i``;
* experts with ``r_i = 0`` (top-k) are dropped; the task's ``conv_in`` replaces the base's.

Without DTR the result is a plain ``UNet2DConditionModel`` (``in_channels`` = the task's),
which ``save_pretrained`` writes and every standard exporter accepts. With DTR it is a
:class:`DTRFoldedUNet`: the same stock UNet with each block's entry norm followed by a mask
gathered from constant start tables by the timestep (DESIGN.md "DTR", export rule).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from taskfold.errors import CheckpointError, ConfigError
from taskfold.upcycle.base import build_unet
from taskfold.upcycle.dtr import DTRMaskedNorm, DTRMasks, wrap_dtr
from taskfold.upcycle.experts import MTUFeedForward
from taskfold.upcycle.model import MTUNet, RoutingContext

DTR_FILE = "taskfold_dtr.json"


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


class DTRFoldedUNet(nn.Module):
    """A folded task UNet with DTR masks: ``forward`` has the diffusers UNet signature.

    ``unet`` is a stock ``UNet2DConditionModel`` whose ``ResnetBlock2D.norm1`` and
    ``Transformer2DModel.norm`` are wrapped by :class:`~taskfold.upcycle.dtr.DTRMaskedNorm`;
    ``dtr`` holds one constant start table per distinct width. Each call gathers the mask
    rows for its timesteps (round half up, clamp; the training rule) before running the UNet.
    """

    def __init__(self, unet: nn.Module, dtr: DTRMasks, context: RoutingContext):
        super().__init__()
        self.unet, self.dtr, self._context = unet, dtr, context

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    def dtr_config(self) -> dict:
        return {"timesteps": self.dtr.timesteps, "alpha": self.dtr.alpha, "beta": self.dtr.beta,
                "widths": list(self.dtr.widths)}

    def forward(self, sample, timestep, encoder_hidden_states, added_cond_kwargs=None, return_dict=True, **kw):
        if not isinstance(timestep, torch.Tensor):
            timestep = torch.as_tensor(timestep, device=sample.device)
        self._context.dtr_masks = self.dtr.masks(timestep, sample.shape[0], sample.dtype)
        try:
            return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added_cond_kwargs,
                             return_dict=return_dict, **kw)
        finally:
            self._context.clear()

    def stock_unet(self) -> nn.Module:
        """A copy of the UNet without the masks (what ``save_pretrained`` writes)."""
        unet = copy.deepcopy(self.unet)
        for _, m in list(unet.named_modules()):
            for attr in ("norm1", "norm"):
                if isinstance(getattr(m, attr, None), DTRMaskedNorm):
                    setattr(m, attr, getattr(m, attr).norm)
        return unet

    def save_pretrained(self, path: str | Path, **kw) -> None:
        """The stock diffusers folder plus ``taskfold_dtr.json`` (what :func:`load_folded` needs).

        Stock pipelines can load the folder, but only :func:`load_folded` applies the masks."""
        self.stock_unet().save_pretrained(path, **kw)
        cfg = self.dtr_config() | {"rule": "index = clamp(floor(t + 0.5), 0, timesteps - 1)",
                                   "placement": "after ResnetBlock2D.norm1 and Transformer2DModel.norm"}
        Path(path, DTR_FILE).write_text(json.dumps(cfg, indent=2) + "\n")


def with_dtr(unet: nn.Module, timesteps: int, alpha: float, beta: float) -> DTRFoldedUNet:
    """Wrap a stock UNet (in place) in DTR masks."""
    ctx = RoutingContext()
    dtr = wrap_dtr(unet, ctx, timesteps, alpha, beta).to(next(unet.parameters()).device)
    return DTRFoldedUNet(unet, dtr, ctx).eval()


def load_folded(path: str | Path):
    """Load a folded task UNet written by ``save_pretrained`` (with its DTR masks if it has them)."""
    from diffusers import UNet2DConditionModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{str(path)!r} is not a folded UNet folder (no config.json)")
    unet = UNet2DConditionModel.from_pretrained(path).eval()
    if (path / DTR_FILE).is_file():
        d = json.loads((path / DTR_FILE).read_text())
        return with_dtr(unet, d["timesteps"], d["alpha"], d["beta"])
    return unet


@torch.no_grad()
def base_twin(folded, in_channels: int):
    """``folded`` (changed in place and returned) with ``conv_in`` narrowed to ``in_channels``: the base
    UNet's architecture carrying a task's folded weights.

    What the CoreML structural check converts as its reference. Converters fold constants by
    value — coremltools drops a norm's affine when it is exactly (1, 0) and fuses a per-channel
    scale and shift into ``batch_norm`` otherwise — so the reference must carry the same weight
    values as the task graphs for their operation counts to differ only where the architecture
    does.
    """
    from taskfold.upcycle.model import widen_conv

    stock = folded.unet if isinstance(folded, DTRFoldedUNet) else folded
    stock.conv_in = widen_conv(stock.conv_in, in_channels)
    stock.register_to_config(in_channels=in_channels)
    return folded


@torch.no_grad()
def fold(mtu: MTUNet, task: str | int):
    """The UNet computing ``mtu`` for ``task``; ``mtu`` is not changed.

    A stock ``UNet2DConditionModel`` without DTR, a :class:`DTRFoldedUNet` with it.
    """
    idx = mtu.task_index(task)
    cfg = dict(mtu.unet.config) | {"in_channels": mtu.task_in_channels(idx)}
    ref = next(mtu.parameters())
    unet = build_unet(cfg, seed=None, device="meta")
    src = mtu.unet.state_dict()
    if mtu.dtr is not None:  # the stock key of a wrapped norm drops the wrapper's ".norm"
        src = {k.replace(".norm1.norm.", ".norm1.").replace(".norm.norm.", ".norm."): v for k, v in src.items()}
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
    unet.eval()
    if mtu.dtr is not None:
        return with_dtr(unet, mtu.dtr.timesteps, mtu.dtr.alpha, mtu.dtr.beta)
    return unet
