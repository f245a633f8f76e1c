"""``MTUNet`` and ``upcycle()``: a diffusers UNet turned into one multi-task model.

``upcycle(unet, cfg)`` is pure: it deep-copies the base and, in the copy,

* replaces ``norm3`` + ``ff`` of every selected ``BasicTransformerBlock`` with an
  :class:`~taskfold.upcycle.experts.MTUFeedForward` (task norms, N experts, a router);
* replaces ``conv_in`` with :class:`TaskConvIn`, one convolution per task, widened from the
  base with zeros for the new input channels and the bias copied;
* with DTR, wraps every ``ResnetBlock2D.norm1`` and ``Transformer2DModel.norm`` in a
  :class:`~taskfold.upcycle.dtr.DTRMaskedNorm`.

The diffusers forward is left untouched: the task-aware modules read the batch's task ids,
task embeddings and DTR masks from a :class:`RoutingContext` that ``MTUNet.forward`` fills
for the duration of one call.
"""

from __future__ import annotations

import copy
import fnmatch
import math

import torch
import torch.nn.functional as F
from torch import nn

from taskfold.errors import ConfigError, TaskError

from .base import BaseInfo
from .config import UpcycleConfig
from .dtr import DTRMasks, wrap_dtr
from .experts import MTUFeedForward, ffn_dims, resolve_expert_width, shard_ffn
from taskfold.tasks import TaskSpec

TRAINABLE_COMPONENTS = ("experts", "routers", "task_embedding", "task_norms", "task_conv_in")


class RoutingContext:
    """Per-call state shared by reference between ``MTUNet`` and its task-aware modules."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.task_ids: torch.Tensor | None = None
        self.single_task: int | None = None
        self.task_embedding: torch.Tensor | None = None
        self.dtr_masks: dict[int, torch.Tensor] | None = None


# --- Task-specific input convolutions ----------------------------------------------------

def widen_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels``: old input channels kept, new ones zero, bias copied.

    (Narrower than the base keeps the first ``in_channels`` input channels.)
    """
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    keep = min(in_channels, conv.in_channels)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :keep] = conv.weight[:, :keep]
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class TaskConvIn(nn.Module):
    """``conv_in`` per task (MTU's task-specific input layers), indexed by task id."""

    def __init__(self, convs: list[nn.Conv2d], context: RoutingContext):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self._context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self._context
        if ctx.single_task is not None:
            return self.convs[ctx.single_task](x)
        ids = ctx.task_ids
        if torch.jit.is_tracing():  # exporting the unfolded graph: the task id stays a graph input
            return self.gathered(x, ids)
        out = None
        for t in ids.unique().tolist():
            sel = (ids == t).nonzero().squeeze(1)
            conv = self.convs[t]
            y = conv(x[sel, :conv.in_channels])  # mixed batches are zero-padded to the widest task
            if out is None:
                out = y.new_zeros((x.shape[0],) + y.shape[1:])
            out[sel] = y
        return out

    def gathered(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The same convolution without Python branching on ``ids``: every task's ``conv_in`` runs on
        its channels of ``x`` and a one-hot of ``ids`` keeps each sample's own result (exact: the
        others are multiplied by zero). Used when tracing, so ``ids`` can be a graph input; it costs
        one ``conv_in`` per task, a small share of a UNet call.
        """
        onehot = F.one_hot(ids, len(self.convs)).to(x.dtype)  # [B, T]
        out = 0
        for t, conv in enumerate(self.convs):
            out = out + conv(x[:, :conv.in_channels]) * onehot[:, t, None, None, None]
        return out


# --- The multi-task model ------------------------------------------------------------------

class MTUNet(nn.Module):
    """A multi-task UNet: ``forward(sample, timestep, encoder_hidden_states, task)``.

    ``task`` is a task name, a task index, or a ``[B]`` tensor of task indices (one per
    sample). A batch mixing tasks with different input channel counts carries each sample's
    channels first, zero-padded to the widest task in the batch.
    """

    def __init__(self, unet: nn.Module, config: UpcycleConfig, base_info: BaseInfo,
                 context: RoutingContext, dtr: DTRMasks | None):
        super().__init__()
        self.unet = unet
        self.config = config
        self.base_info = base_info
        self.tasks: tuple[TaskSpec, ...] = config.task_specs
        self.task_names = tuple(t.name for t in self.tasks)
        self.task_embedding = nn.Embedding(len(self.tasks), config.task_embedding_dim)
        self.dtr = dtr
        self._context = context

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.out_channels)

    def task_in_channels(self, task: str | int) -> int:
        return self.tasks[self.task_index(task)].in_channels(self.latent_channels)

    def task_index(self, task: str | int) -> int:
        if isinstance(task, str):
            if task not in self.task_names:
                raise TaskError(f"unknown task {task!r}; this model's tasks: {', '.join(self.task_names)}")
            return self.task_names.index(task)
        if not 0 <= int(task) < len(self.tasks):
            raise TaskError(f"task index {task} out of range for {len(self.tasks)} tasks")
        return int(task)

    def mtu_layers(self) -> list[tuple[str, MTUFeedForward]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, MTUFeedForward)]

    @torch.no_grad()
    def router_weights(self, task: str | int) -> torch.Tensor:
        """``[L, N]``: each upcycled layer's expert weights for ``task`` (paper Figure 5)."""
        e = self.task_embedding.weight[self.task_index(task)][None]
        return torch.cat([layer.routing(e) for _, layer in self.mtu_layers()], dim=0)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                task, added_cond_kwargs: dict | None = None, mask_timestep=None) -> torch.Tensor:
        """Predict noise for ``task``. ``mask_timestep`` overrides the timestep that picks the
        DTR mask row (for analysis; by default it is ``timestep``)."""
        batch = sample.shape[0]
        ctx = self._context
        if not isinstance(timestep, torch.Tensor):
            timestep = torch.as_tensor(timestep, device=sample.device)
        if isinstance(task, torch.Tensor):
            ids = task.to(device=sample.device, dtype=torch.long).reshape(-1)
            if ids.numel() == 1:
                ids = ids.expand(batch)
            single = None
            channels = {max(self.task_in_channels(int(i)) for i in ids.unique().tolist())}
        else:
            single = self.task_index(task)
            ids = torch.full((batch,), single, dtype=torch.long, device=sample.device)
            channels = {self.task_in_channels(single)}
        if channels != {int(sample.shape[1])}:
            raise ValueError(f"sample has {sample.shape[1]} channels; the batch's task(s) take "
                             f"{sorted(channels)}")
        ctx.task_ids, ctx.single_task = ids, single
        ctx.task_embedding = self.task_embedding(ids)
        if self.dtr is not None:
            t = timestep if mask_timestep is None else mask_timestep
            ctx.dtr_masks = self.dtr.masks(torch.as_tensor(t, device=sample.device), batch, sample.dtype)
        try:
            return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added_cond_kwargs,
                             return_dict=False)[0]
        finally:
            ctx.clear()


# --- Upcycling -----------------------------------------------------------------------------

def transformer_blocks(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    from diffusers.models.attention import BasicTransformerBlock

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)]


def upcycle(unet: nn.Module, cfg: UpcycleConfig, base_info: BaseInfo | None = None, copy_base: bool = True) -> MTUNet:
    """MTU (and optionally DTR) conversion of a diffusers ``UNet2DConditionModel``.

    Pure by default: ``unet`` is deep-copied and left as it was. ``copy_base=False`` hands
    ``unet`` over to the result instead (it must not be used afterwards), which halves the
    peak memory for SDXL-sized models.
    """
    base_info = base_info or BaseInfo(source="<in-memory>", kind="module")
    if base_info.dtr is not None:
        want = {"timesteps": cfg.dtr_timesteps, "alpha": cfg.dtr_alpha, "beta": cfg.dtr_beta}
        if not cfg.dtr or any(float(want[k]) != float(base_info.dtr[k]) for k in want):
            raise ConfigError(f"the base {base_info.source!r} was trained with DTR {base_info.dtr}; the upcycled "
                              f"model must keep those masks, got dtr={cfg.dtr} {want}",
                              hint="leave --dtr/--dtr-alpha/--dtr-beta unset to inherit the base's DTR")
    tasks = cfg.task_specs
    ref = next(unet.parameters())
    if copy_base:
        unet = copy.deepcopy(unet)
    ctx = RoutingContext()
    c = int(unet.config.out_channels)

    blocks = [(n, b) for n, b in transformer_blocks(unet) if any(fnmatch.fnmatch(n, p) for p in cfg.blocks)]
    if not blocks:
        example = transformer_blocks(unet)[0][0] if transformer_blocks(unet) else "(none)"
        raise ConfigError(f"--blocks {','.join(cfg.blocks)} matches no transformer block "
                          f"(blocks are named like {example})")
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.device(ref.device):
        for name, block in blocks:
            d, hidden = ffn_dims(block.ff)
            width = resolve_expert_width(hidden, cfg.num_experts, cfg.expert_width, where=name)
            layer = MTUFeedForward(d, hidden, cfg.num_experts, width, len(tasks), cfg.task_embedding_dim,
                                   cfg.router_hidden, cfg.norm_mode, cfg.top_k, eps=block.norm3.eps, context=ctx)
            layer.to(ref.dtype)
            layer.init_from_dense(block.norm3, shard_ffn(block.ff, width))
            _init_linear(layer.router.net[0], gen)
            block.norm3, block.ff = nn.Identity(), layer

        unet.conv_in = TaskConvIn([widen_conv(unet.conv_in, t.in_channels(c)) for t in tasks], ctx)

        dtr = wrap_dtr(unet, ctx, cfg.dtr_timesteps, cfg.dtr_alpha, cfg.dtr_beta) if cfg.dtr else None

        model = MTUNet(unet, cfg, base_info, ctx, dtr).to(ref.dtype)
    if not model.task_embedding.weight.is_meta:
        with torch.no_grad():
            model.task_embedding.weight.copy_(torch.randn(model.task_embedding.weight.shape, generator=gen,
                                                          device="cpu"))
    return model.train(unet.training)


def _init_linear(linear: nn.Linear, gen: torch.Generator) -> None:
    """PyTorch's default Linear init, drawn from ``gen`` so upcycling is reproducible."""
    if linear.weight.is_meta:
        return
    bound = 1.0 / math.sqrt(linear.in_features)
    with torch.no_grad():
        linear.weight.copy_(torch.empty(linear.weight.shape, device="cpu").uniform_(-bound, bound, generator=gen))
        linear.bias.copy_(torch.empty(linear.bias.shape, device="cpu").uniform_(-bound, bound, generator=gen))


# --- Trainable set -------------------------------------------------------------------------

def component_of(model: MTUNet, name: str) -> str:
    """Which MTU component a parameter belongs to, or ``"backbone"`` (frozen)."""
    if name.startswith("task_embedding."):
        return "task_embedding"
    if name.startswith("unet.conv_in.convs."):
        return "task_conv_in"
    if ".router." in name:
        return "routers"
    leaf = name.rsplit(".", 1)[-1]
    parent = name.rsplit(".", 1)[0]
    if leaf in ("task_norm_weight", "task_norm_bias"):
        return "task_norms"
    if leaf in ("w1", "b1", "w2", "b2") and isinstance(model.get_submodule(parent), MTUFeedForward):
        return "experts"
    return "backbone"


def parameter_components(model: MTUNet) -> dict[str, str]:
    return {n: component_of(model, n) for n, _ in model.named_parameters()}


def set_trainable(model: MTUNet, which: str = "mtu") -> list[str]:
    """Freeze the backbone and unfreeze the MTU components (``"mtu"``) or everything (``"all"``)."""
    if which not in ("mtu", "all"):
        raise ConfigError(f"trainable set {which!r} is not one of ['mtu', 'all']")
    names = []
    for n, p in model.named_parameters():
        p.requires_grad_(which == "all" or component_of(model, n) != "backbone")
        if p.requires_grad:
            names.append(n)
    return names


# --- Identity check (invariant 2) ------------------------------------------------------------

@torch.no_grad()
def identity_inputs(base: nn.Module, seed: int = 0, size: int = 16, batch: int = 1) -> dict:
    """Seeded random UNet inputs (base input channels) for the identity check."""
    g = torch.Generator().manual_seed(seed)
    p = next(base.parameters())
    cfg = base.config
    inputs = {"sample": torch.randn(batch, cfg.in_channels, size, size, generator=g).to(p),
              "timestep": torch.tensor([417] * batch),
              "encoder_hidden_states": torch.randn(batch, 7, cfg.cross_attention_dim, generator=g).to(p),
              "added_cond_kwargs": None}
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled, generator=g).to(p),
            "time_ids": torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]] * batch).to(p)}
    return inputs


@torch.no_grad()
def identity_error(base_output: torch.Tensor, model: MTUNet, inputs: dict, task: str = "t2i") -> tuple[float, float]:
    """``(max |MTU(task) - base|, max |base|)`` for ``inputs`` from :func:`identity_inputs`.

    This is the number ``taskfold upcycle`` prints; it is ~1e-6 relative when the model is
    the base at initialisation (no DTR, all experts routed, ``task`` taking the base's input).
    """
    out = model(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"], task,
                added_cond_kwargs=inputs["added_cond_kwargs"])
    return float((out - base_output).abs().max()), float(base_output.abs().max())
