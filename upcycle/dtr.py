"""Denoising Task Routing (paper 004): timestep-dependent channel masks.

For a block of width ``C`` with ``T`` training timesteps, ``K = int(C * beta)`` channels
are active at every timestep, in one contiguous window whose start slides from 0 to
``C - K`` as ``t`` goes from 0 to ``T - 1`` (Pseudo Code 1 of the paper, official code
``models/taskrouting.py``)::

    start[t] = round(linspace(0, 1, T)[t] ** alpha * (C - K))      # numpy rounding
    mask[t, start[t] : start[t] + K] = 1

Placement (the paper's ADM rule, Pseudo Code 2): right after a block's entry
normalisation — ``norm1`` of every ``ResnetBlock2D`` and the GroupNorm of every
``Transformer2DModel`` — so normalisation statistics are untouched and masked channels
are exact zeros at the next conv/linear (SiLU(0) = 0). ``beta = 1`` is the plain model.

**Timestep rule.** The mask row is chosen by the training timestep the UNet is called
with. Integer timesteps index the table directly. Float timesteps (Euler-type schedulers)
use *round half up, then clamp*: ``index = clamp(floor(t + 0.5), 0, T - 1)``; so 10.5 -> 11,
10.49 -> 10, -3 -> 0 and 1200 -> T - 1. The exported graphs apply the same rule.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_TIMESTEPS  # noqa: E402,F401


def dtr_active_channels(channels: int, beta: float) -> int:
    """K = int(C * beta), as in the reference code."""
    return int(channels * beta)


def dtr_starts(channels: int, timesteps: int = DEFAULT_TIMESTEPS, alpha: float = DEFAULT_ALPHA,
               beta: float = DEFAULT_BETA) -> np.ndarray:
    """Window start per timestep, shape ``[T]`` (int64): ``round(linspace(0,1,T)**alpha * (C-K))``."""
    k = dtr_active_channels(channels, beta)
    x = np.linspace(0, 1, timesteps) ** alpha
    return np.round((channels - k) * x).astype(np.int64)


def dtr_mask_table(channels: int, timesteps: int = DEFAULT_TIMESTEPS, alpha: float = DEFAULT_ALPHA,
                   beta: float = DEFAULT_BETA) -> np.ndarray:
    """The full ``[T, C]`` 0/1 mask table (float32)."""
    k = dtr_active_channels(channels, beta)
    starts = dtr_starts(channels, timesteps, alpha, beta)
    iota = np.arange(channels)[None, :]
    return ((iota >= starts[:, None]) & (iota < starts[:, None] + k)).astype(np.float32)


def timestep_index(timestep: torch.Tensor, timesteps: int = DEFAULT_TIMESTEPS) -> torch.Tensor:
    """Mask row for each timestep: integers as they are, floats rounded half up; clamped to [0, T-1].

    Floats are rounded without float64 (exported graphs must not hold it: WebGPU, Core ML have
    none) and without ``floor(t + 0.5)`` in float32, whose sum rounds ``0.5 - 2**-26`` up to 1:
    ``f = floor(t)``, ``index = f + (t - f >= 0.5)``. After the clamp to [0, T-1] (T < 2**24),
    ``floor`` and ``t - f`` are exact in float32, so this is the rule for every float32 ``t``.
    Half-precision timesteps are widened to float32 first (the value they hold, rounded by the rule).
    """
    t = torch.as_tensor(timestep)
    if not t.is_floating_point():
        return t.long().clamp(0, timesteps - 1)
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    t = t.clamp(0, timesteps - 1)  # the bounds are integers: clamping first, then rounding, is the same rule
    whole = torch.floor(t)
    return (whole + (t - whole >= 0.5).to(t.dtype)).long()


class DTRMasks(nn.Module):
    """One start table per distinct block width; builds the ``[B, C]`` masks for a batch.

    Tables are derived from ``(T, alpha, beta)`` and the widths, so they are
    non-persistent buffers: they are rebuilt from the config, never loaded.
    """

    def __init__(self, widths, timesteps: int = DEFAULT_TIMESTEPS, alpha: float = DEFAULT_ALPHA,
                 beta: float = DEFAULT_BETA):
        super().__init__()
        self.timesteps, self.alpha, self.beta = int(timesteps), float(alpha), float(beta)
        self.widths = tuple(sorted(set(int(w) for w in widths)))
        for w in self.widths:
            starts = torch.from_numpy(dtr_starts(w, self.timesteps, self.alpha, self.beta))
            self.register_buffer(f"starts_{w}", starts.to("cpu"), persistent=False)

    def masks(self, timestep: torch.Tensor, batch: int, dtype: torch.dtype) -> dict[int, torch.Tensor]:
        idx = timestep_index(timestep, self.timesteps).reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(batch)
        elif idx.numel() != batch:
            raise ValueError(f"got {idx.numel()} timesteps for a batch of {batch}")
        out = {}
        for w in self.widths:
            starts = getattr(self, f"starts_{w}")
            idx = idx.to(starts.device)
            start = starts[idx][:, None]
            iota = torch.arange(w, device=starts.device)[None, :]
            k = dtr_active_channels(w, self.beta)
            out[w] = ((iota >= start) & (iota < start + k)).to(dtype)
        return out


class DTRMaskedNorm(nn.Module):
    """A block's entry normalisation followed by the DTR mask of its width."""

    def __init__(self, norm: nn.Module, channels: int, context):
        super().__init__()
        self.norm = norm
        self.channels = int(channels)
        self._context = context  # shared RoutingContext, a plain attribute (not a submodule)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        h = self.norm(x, *args)
        masks = self._context.dtr_masks
        if masks is None:
            raise RuntimeError("DTR mask requested outside an MTUNet forward call")
        m = masks[self.channels].to(h.dtype)
        return h * m.reshape(m.shape[0], m.shape[1], *([1] * (h.dim() - 2)))


def wrap_dtr(unet: nn.Module, context, timesteps: int = DEFAULT_TIMESTEPS, alpha: float = DEFAULT_ALPHA,
             beta: float = DEFAULT_BETA) -> DTRMasks:
    """Wrap every ``ResnetBlock2D.norm1`` and ``Transformer2DModel.norm`` of ``unet`` (in place)
    in a :class:`DTRMaskedNorm` reading ``context.dtr_masks``; return the shared start tables."""
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    widths = []
    for _, m in list(unet.named_modules()):
        if isinstance(m, ResnetBlock2D):
            m.norm1 = DTRMaskedNorm(m.norm1, m.norm1.num_channels, context)
            widths.append(m.norm1.channels)
        elif isinstance(m, Transformer2DModel) and hasattr(m, "norm"):
            m.norm = DTRMaskedNorm(m.norm, m.norm.num_channels, context)
            widths.append(m.norm.channels)
    return DTRMasks(widths, timesteps, alpha, beta)
