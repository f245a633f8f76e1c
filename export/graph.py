"""What one exported task graph looks like: its inputs, outputs and the module that is traced.

Every backend (ONNX, CoreML, TensorRT) exports the same :class:`UNetGraph` and names its
tensors from the same :class:`GraphSpec`:

=========================  ==========================  ======================================
name                       shape                       meaning
=========================  ==========================  ======================================
``sample``                 ``[B, C_task, h, w]``       noisy latents (+ condition channels)
``timestep``               ``[B]`` float32             training timestep; fractional allowed
``encoder_hidden_states``  ``[B, L, D]``               text encoder output
``text_embeds``            ``[B, P]``                  SDXL only: pooled text embedding
``time_ids``               ``[B, 6]``                  SDXL only: size / crop conditioning
``out_sample``             ``[B, C, h, w]``            predicted noise
=========================  ==========================  ======================================

``timestep`` is float32 so that Euler-type schedulers can pass fractional timesteps; with
DTR the graph picks mask rows by the rule of :func:`taskfold.upcycle.dtr.timestep_index`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

#: numpy / ONNX dtype names used in specs and manifests -> torch dtypes.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints, or strings for dynamic axes ("batch", "height", "width")
    dtype: str  # "float32" | "float16" | "int64"

    def to_dict(self) -> dict:
        return asdict(self) | {"shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    """Names, shapes and dtypes of one task graph; ``dynamic`` axes are named strings."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: {i: s for i, s in enumerate(t.shape) if isinstance(s, str)}
                for t in self.inputs + self.outputs if any(isinstance(s, str) for s in t.shape)}

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


def is_sdxl(config) -> bool:
    return getattr(config, "addition_embed_type", None) == "text_time"


def pooled_dim(config) -> int:
    return int(config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim)


def unet_graph_spec(config, in_channels: int, batch: int, height: int, width: int, text_len: int = 77,
                    dtype: str = "float32", dynamic: bool = False) -> GraphSpec:
    """The graph spec of a task UNet with diffusers ``config``, sample size ``height x width``.

    ``dynamic`` makes batch, height and width named axes (the traced example uses the
    given sizes).
    """
    b, h, w = ("batch", "height", "width") if dynamic else (batch, height, width)
    inputs = [TensorSpec("sample", (b, in_channels, h, w), dtype),
              TensorSpec("timestep", (b,), "float32"),
              TensorSpec("encoder_hidden_states", (b, text_len, int(config.cross_attention_dim)), dtype)]
    if is_sdxl(config):
        inputs += [TensorSpec("text_embeds", (b, pooled_dim(config)), dtype),
                   TensorSpec("time_ids", (b, 6), dtype)]
    outputs = [TensorSpec("out_sample", (b, int(config.out_channels), h, w), dtype)]
    return GraphSpec(tuple(inputs), tuple(outputs))


def example_inputs(spec: GraphSpec, batch: int, height: int, width: int, seed: int = 0,
                   timestep: float | None = None) -> dict[str, torch.Tensor]:
    """Seeded random inputs for ``spec`` (dynamic axes take ``batch/height/width``)."""
    sizes = {"batch": batch, "height": height, "width": width}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in spec.inputs:
        shape = [sizes[s] if isinstance(s, str) else s for s in t.shape]
        if t.name == "timestep":
            v = torch.full(shape, float(timestep)) if timestep is not None else \
                torch.randint(0, 1000, shape, generator=g).float()
        elif t.name == "time_ids":  # original size, crop top-left, target size (pixels)
            v = torch.tensor([height * 8, width * 8, 0, 0, height * 8, width * 8], dtype=torch.float32).expand(shape)
        else:
            v = torch.randn(shape, generator=g)
        out[t.name] = v.to(DTYPES[t.dtype]).contiguous()
    return out


class UNetGraph(nn.Module):
    """The traced module: a folded task UNet (stock or DTR) with positional graph inputs."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.sdxl = is_sdxl(unet.config)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if self.sdxl else None
        return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]


class MTUTaskGraph(nn.Module):
    """The unfolded reference for one task, with the graph's signature (what parity compares to)."""

    def __init__(self, mtu: nn.Module, task: str):
        super().__init__()
        self.mtu, self.task = mtu, task
        self.sdxl = is_sdxl(mtu.unet.config)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if self.sdxl else None
        return self.mtu(sample, timestep, encoder_hidden_states, self.task, added_cond_kwargs=added)


# --- The unfolded multi-task graph (what a user gets without folding) -----------------------

def unfolded_graph_spec(mtu, batch: int, height: int, width: int, text_len: int = 77,
                        dtype: str = "float32") -> GraphSpec:
    """The spec of the MTU model exported as it is: one graph for every task, with a ``task_id`` input.

    ``sample`` carries the widest task's channel count; a narrower task's condition channels
    are zeros. ``task_id`` ``[B]`` (int64) picks each sample's router output, task norms and
    ``conv_in`` inside the graph.
    """
    widest = max(mtu.task_in_channels(t) for t in mtu.task_names)
    spec = unet_graph_spec(mtu.unet.config, widest, batch, height, width, text_len, dtype, False)
    inputs = list(spec.inputs)
    inputs.insert(3, TensorSpec("task_id", (batch,), "int64"))
    return GraphSpec(tuple(inputs), spec.outputs)


class UnfoldedMTUGraph(nn.Module):
    """The MTU model with the graph signature plus ``task_id``: experts and routers stay in the graph."""

    def __init__(self, mtu: nn.Module):
        super().__init__()
        self.mtu = mtu
        self.sdxl = is_sdxl(mtu.unet.config)

    def forward(self, sample, timestep, encoder_hidden_states, task_id, text_embeds=None, time_ids=None):
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if self.sdxl else None
        return self.mtu(sample, timestep, encoder_hidden_states, task_id, added_cond_kwargs=added)


def unfolded_example(mtu, spec: GraphSpec, batch: int, height: int, width: int, seed: int = 0) -> dict:
    """Example inputs for tracing :class:`UnfoldedMTUGraph`: the widest task's id, so the sample's
    channel count is the one the model expects for it."""
    sizes = {"batch": batch, "height": height, "width": width}
    plain = GraphSpec(tuple(t for t in spec.inputs if t.name != "task_id"), spec.outputs)
    out = example_inputs(plain, batch, height, width, seed)
    widest = max(range(len(mtu.task_names)), key=mtu.task_in_channels)
    ids = torch.full([sizes.get(d, d) for d in next(t for t in spec.inputs if t.name == "task_id").shape], widest,
                     dtype=torch.long)
    return {t.name: (ids if t.name == "task_id" else out[t.name]) for t in spec.inputs}
