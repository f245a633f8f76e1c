"""Mixture of feed-forward experts upcycled from a dense GEGLU FFN (MTU, paper 001 section 5).

Diffusers' feed-forward is ``net = [GEGLU(d, H), Dropout, Linear(H, d)]`` with
``GEGLU: h, g = proj(x).chunk(2, -1); out = h * gelu(g)``: rows ``[0:H]`` of
``proj.weight`` are the value half, rows ``[H:2H]`` the gate half.

**Sharding.** With expert width ``m`` (default ``H / N``, the iso-parameter granularity
``G = 1/N``) there are ``S = H / m`` distinct shards; expert ``i`` takes shard
``s = i mod S``: value rows ``[s·m, (s+1)·m)`` *and* gate rows ``[H + s·m, H + (s+1)·m)``
of ``proj`` (with their biases), and columns ``[s·m, (s+1)·m)`` of ``net.2.weight``.
Then ``sum_s W2_s act_s(x) + b2`` is the dense FFN exactly (:func:`shard_ffn`).

**Router** (Eq. 1): per layer, a two-layer ReLU MLP ``g_l`` maps the task embedding
``e_tau`` to ``N`` logits; ``r = softmax(g_l(e_tau))`` (top-k: the k largest kept and
renormalised). The layer output is ``sum_i r_i E_i(x)``.

**Identity at initialisation** (DESIGN.md): the router's last layer starts at zero, so
``r_i = 1/N``; each W2 shard is scaled by ``S = H / m`` (``N`` for the iso-parameter
default: ``N / S`` copies of each shard, each weighted ``1/N``) and ``b2`` is one shared
output bias applied once (equal to ``sum_i r_i b2`` for tied per-expert biases). The
upcycled layer therefore equals the dense layer at initialisation.

**Task-specific layer norms**: ``norm3`` becomes a per-task LayerNorm (``norm_mode=
"task"``) or one per (task, expert) (``"task_expert"``), initialised from ``norm3``. Both
fold exactly into a dense FFN for a fixed task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from taskfold.errors import ConfigError

from .config import NORM_MODES  # noqa: E402


@dataclass
class ExpertShards:
    """The shards of one dense FFN, unscaled: ``sum over shards == dense`` exactly."""

    w1: torch.Tensor  # [S, 2m, d]: value rows then gate rows of each shard
    b1: torch.Tensor  # [S, 2m]
    w2: torch.Tensor  # [S, d, m]
    b2: torch.Tensor  # [d]

    @property
    def num_shards(self) -> int:
        return self.w1.shape[0]


def ffn_dims(ff: nn.Module) -> tuple[int, int]:
    """``(d, H)`` of a diffusers GEGLU FeedForward."""
    proj = ff.net[0].proj
    return proj.in_features, proj.out_features // 2


def resolve_expert_width(hidden: int, num_experts: int, expert_width: int | None, where: str = "") -> int:
    """Check ``N`` and ``m`` against the FFN width ``H``; returns ``m``.

    ``m`` must divide ``H`` and ``N`` must be a multiple of ``H / m`` (every shard is used
    equally often), else the upcycled model cannot equal the base at initialisation.
    """
    at = f" at {where}" if where else ""
    if num_experts < 1:
        raise ConfigError(f"number of experts must be >= 1, got {num_experts}")
    if expert_width is None:
        if hidden % num_experts:
            raise ConfigError(f"{num_experts} experts do not divide the FFN width {hidden}{at}",
                              hint="choose N dividing the width, or give --expert-width explicitly")
        return hidden // num_experts
    if expert_width < 1 or hidden % expert_width:
        raise ConfigError(f"expert width {expert_width} does not divide the FFN width {hidden}{at}")
    shards = hidden // expert_width
    if num_experts % shards:
        raise ConfigError(f"{num_experts} experts of width {expert_width} do not cover the FFN width {hidden}"
                          f"{at} a whole number of times (need a multiple of {shards} experts)")
    return expert_width


def shard_ffn(ff: nn.Module, expert_width: int) -> ExpertShards:
    """Split a dense GEGLU FFN into ``H / expert_width`` GEGLU-aware shards (unscaled)."""
    proj, out = ff.net[0].proj, ff.net[2]
    d, hidden = ffn_dims(ff)
    m = expert_width
    s = hidden // m
    w = proj.weight.detach()
    b = proj.bias.detach() if proj.bias is not None else torch.zeros(2 * hidden, dtype=w.dtype, device=w.device)
    value_w, gate_w = w[:hidden].reshape(s, m, d), w[hidden:].reshape(s, m, d)
    value_b, gate_b = b[:hidden].reshape(s, m), b[hidden:].reshape(s, m)
    w2 = out.weight.detach().reshape(d, s, m).permute(1, 0, 2)  # [S, d, m]
    b2 = out.bias.detach() if out.bias is not None else torch.zeros(d, dtype=w.dtype, device=w.device)
    return ExpertShards(w1=torch.cat([value_w, gate_w], dim=1).clone(), b1=torch.cat([value_b, gate_b], dim=1).clone(),
                        w2=w2.clone(), b2=b2.clone())


def shards_forward(shards: ExpertShards, x: torch.Tensor) -> torch.Tensor:
    """``sum_s W2_s act_s(x) + b2`` — the dense FFN, computed shard by shard."""
    m = shards.w2.shape[-1]
    out = shards.b2.expand(*x.shape[:-1], -1).clone()
    for s in range(shards.num_shards):
        h = x @ shards.w1[s].T + shards.b1[s]
        out = out + (h[..., :m] * F.gelu(h[..., m:])) @ shards.w2[s].T
    return out


class Router(nn.Module):
    """``g_l``: task embedding -> N logits, a two-layer MLP with ReLU (paper Eq. 1)."""

    def __init__(self, task_dim: int, hidden: int, num_experts: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(task_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_experts))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, task_embedding: torch.Tensor) -> torch.Tensor:
        return self.net(task_embedding)


def routing_weights(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """``softmax`` over experts; with top-k the k largest are kept and renormalised to sum 1.

    Ties (e.g. the uniform router at initialisation) keep the lowest expert indices.
    """
    r = torch.softmax(logits.float(), dim=-1)
    n = r.shape[-1]
    if top_k is None or top_k >= n:
        return r.to(logits.dtype)
    # stable tie-break: sort by (-r, index)
    order = torch.argsort(-r, dim=-1, stable=True)[..., :top_k]
    keep = torch.zeros_like(r).scatter(-1, order, 1.0)
    r = r * keep
    return (r / r.sum(-1, keepdim=True)).to(logits.dtype)


class MTUFeedForward(nn.Module):
    """``norm3`` + FFN of one transformer block, upcycled: task norms, N experts, a router.

    Replaces ``block.ff`` (and ``block.norm3`` becomes ``Identity``), reading the batch's
    task ids and task embeddings from the shared routing context set by ``MTUNet``.
    """

    def __init__(self, dim: int, hidden: int, num_experts: int, expert_width: int, num_tasks: int,
                 task_dim: int, router_hidden: int, norm_mode: str = "task", top_k: int | None = None,
                 eps: float = 1e-5, context=None):
        super().__init__()
        if norm_mode not in NORM_MODES:
            raise ConfigError(f"norm mode {norm_mode!r} is not one of {list(NORM_MODES)}")
        if top_k is not None and not 1 <= top_k <= num_experts:
            raise ConfigError(f"top-k {top_k} must be between 1 and the number of experts {num_experts}")
        self.dim, self.hidden, self.num_experts, self.expert_width = dim, hidden, num_experts, expert_width
        self.num_tasks, self.norm_mode, self.top_k, self.eps = num_tasks, norm_mode, top_k, eps
        norm_shape = (num_tasks, dim) if norm_mode == "task" else (num_tasks, num_experts, dim)
        self.task_norm_weight = nn.Parameter(torch.ones(norm_shape))
        self.task_norm_bias = nn.Parameter(torch.zeros(norm_shape))
        self.w1 = nn.Parameter(torch.zeros(num_experts, 2 * expert_width, dim))
        self.b1 = nn.Parameter(torch.zeros(num_experts, 2 * expert_width))
        self.w2 = nn.Parameter(torch.zeros(num_experts, dim, expert_width))
        self.b2 = nn.Parameter(torch.zeros(dim))
        self.router = Router(task_dim, router_hidden, num_experts)
        self._context = context

    @torch.no_grad()
    def init_from_dense(self, norm3: nn.LayerNorm, shards: ExpertShards) -> None:
        """Copy ``norm3`` into every task norm and the shards into the experts (W2 scaled)."""
        s = shards.num_shards
        which = torch.arange(self.num_experts) % s
        if norm3.weight is not None:
            self.task_norm_weight.copy_(norm3.weight.expand_as(self.task_norm_weight))
            self.task_norm_bias.copy_(norm3.bias.expand_as(self.task_norm_bias))
        self.w1.copy_(shards.w1[which])
        self.b1.copy_(shards.b1[which])
        self.w2.copy_(shards.w2[which] * s)
        self.b2.copy_(shards.b2)

    def routing(self, task_embedding: torch.Tensor) -> torch.Tensor:
        """Expert weights ``r`` for each row of ``task_embedding``: ``[B, N]``."""
        return routing_weights(self.router(task_embedding), self.top_k)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        ctx = self._context
        ids, emb = ctx.task_ids, ctx.task_embedding
        r = self.routing(emb).to(x.dtype)  # [B, N]
        xhat = F.layer_norm(x, (self.dim,), eps=self.eps)
        gamma, beta = self.task_norm_weight[ids].to(x.dtype), self.task_norm_bias[ids].to(x.dtype)
        m = self.expert_width
        if self.norm_mode == "task":
            xn = xhat * gamma[:, None, :] + beta[:, None, :]
            h = torch.einsum("bld,nkd->blnk", xn, self.w1.to(x.dtype))
        else:
            xn = xhat[:, :, None, :] * gamma[:, None] + beta[:, None]  # [B, L, N, d]
            h = torch.einsum("blnd,nkd->blnk", xn, self.w1.to(x.dtype))
        h = h + self.b1.to(x.dtype)
        act = h[..., :m] * F.gelu(h[..., m:])  # [B, L, N, m]
        act = act * r[:, None, :, None]
        return torch.einsum("blnm,ndm->bld", act, self.w2.to(x.dtype)) + self.b2.to(x.dtype)
