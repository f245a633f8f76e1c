"""The adapters layout: one UNet graph for every task, each task a few hundred KB of tensors (DESIGN.md,
"The same fold as a per-task scale").

The experts are shared by every task; per task only the router output ``r``, the task norms and
``conv_in`` differ. With ``W2_cat = [W2_1 | ... | W2_N]`` (the upcycled, N-scaled output
matrices) and ``s_tau`` the vector repeating ``r_i`` over expert ``i``'s ``m`` hidden units::

    FFN_tau(x) = W2_cat (s_tau * GEGLU(W1_cat LN_tau(x))) + b2

so one graph holds ``W1_cat``, ``W2_cat`` and ``b2`` once, and a task is, per FFN, ``s`` (``N m``
numbers) and its norm affine (``2 d``), plus ``conv_in``'s weight and bias — the sample is
zero-padded to the widest task's channels and a narrower task's weight has zeros there, so the
padding changes nothing. Those task tensors are **required graph inputs** (no initializer of the
same name, so every ONNX Runtime API feeds them alike: Python, and the JavaScript API, which has
no adapter API and drops feeds named like initializers), and each task's values are one
safetensors file, ``adapters/<task>.safetensors``, whose ``__metadata__`` names its task and
backbone (:func:`taskfold.runtime.package.task_file_metadata`). The runtime feeds them as inputs
every call — one session, one pre-packed backbone, any task per call.

Per-(task, expert) norms do not fit this form: each expert sees a differently normalised input,
so ``W1`` would be per task (a full ``2 N m x d`` matrix per layer and task, the size of the
FFN itself) — :func:`check_adapters_layout` refuses them. Top-k models keep every expert here
(zeros in ``s``), so a top-k task costs the full ``N m`` width instead of ``k m``; the export
records the FLOP ratio to the base.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskfold.errors import ConfigError
from taskfold.upcycle.experts import MTUFeedForward
from taskfold.upcycle.model import MTUNet, TaskConvIn

from .graph import GraphSpec, TensorSpec, is_sdxl, unet_graph_spec

#: the graph of the adapters layout
GRAPH_NAME = "unet"
#: each task's tensors: ``adapters/<task>.safetensors``
TASK_FILE_SUFFIX = ".safetensors"


def check_adapters_layout(mtu: MTUNet) -> None:
    """Refuse models the adapters layout cannot hold exactly."""
    if mtu.config.norm_mode == "task_expert":
        raise ConfigError("--layout adapters cannot hold per-(task, expert) norms: each expert would need its own "
                          "W1 per task (as large as the FFN itself)",
                          hint="export with --layout graphs (one folded graph per task), or upcycle with --norms task")
    if is_sdxl(mtu.unet.config):
        raise ConfigError("--layout adapters is not built for SDXL's added conditioning yet",
                          hint="export SDXL with --layout graphs")


def widest(mtu: MTUNet) -> int:
    return max(mtu.task_in_channels(t) for t in mtu.task_names)


def task_tensor_names(mtu: MTUNet) -> list[str]:
    """Names of the task tensors, in graph-input order."""
    names = []
    for i, _ in enumerate(mtu.mtu_layers()):
        names += [f"task.ffn.{i}.scale", f"task.ffn.{i}.norm_weight", f"task.ffn.{i}.norm_bias"]
    return names + ["task.conv_in.weight", "task.conv_in.bias"]


@torch.no_grad()
def task_tensors(mtu: MTUNet, task: str | int) -> dict[str, torch.Tensor]:
    """The tensors that make the shared graph compute ``task`` (float32, in :func:`task_tensor_names` order)."""
    idx = mtu.task_index(task)
    emb = mtu.task_embedding.weight[idx][None]
    out = {}
    for i, (_, layer) in enumerate(mtu.mtu_layers()):
        r = layer.routing(emb.to(layer.w1))[0].float()  # [N]
        out[f"task.ffn.{i}.scale"] = r.repeat_interleave(layer.expert_width)
        out[f"task.ffn.{i}.norm_weight"] = layer.task_norm_weight[idx].float()
        out[f"task.ffn.{i}.norm_bias"] = layer.task_norm_bias[idx].float()
    conv = mtu.unet.conv_in.convs[idx]
    weight = torch.zeros(conv.out_channels, widest(mtu), *conv.kernel_size)
    weight[:, :conv.in_channels] = conv.weight.float()
    out["task.conv_in.weight"] = weight.detach()
    out["task.conv_in.bias"] = conv.bias.detach().float().clone() if conv.bias is not None else \
        torch.zeros(conv.out_channels)
    return {k: v.detach().contiguous() for k, v in out.items()}


class _TaskInputs:
    """The current call's task tensors, shared by reference between the graph and its layers."""

    def __init__(self):
        self.values: dict[str, torch.Tensor] = {}


class ScaledFeedForward(nn.Module):
    """``W2_cat (s * GEGLU(W1_cat LN(x))) + b2`` with ``s`` and the norm affine from the task inputs."""

    def __init__(self, layer: MTUFeedForward, index: int, inputs: _TaskInputs):
        super().__init__()
        n, m, d = layer.num_experts, layer.expert_width, layer.dim
        w1, b1 = layer.w1.detach(), layer.b1.detach()  # [N, 2m, d], [N, 2m]
        self.proj = nn.Linear(d, 2 * n * m)
        self.out = nn.Linear(n * m, d)
        with torch.no_grad():  # GEGLU order: every expert's value rows, then every expert's gate rows
            self.proj.weight.copy_(torch.cat([w1[:, :m].reshape(n * m, d), w1[:, m:].reshape(n * m, d)]))
            self.proj.bias.copy_(torch.cat([b1[:, :m].reshape(n * m), b1[:, m:].reshape(n * m)]))
            self.out.weight.copy_(layer.w2.detach().permute(1, 0, 2).reshape(d, n * m))
            self.out.bias.copy_(layer.b2.detach())
        self.dim, self.eps, self.key, self._inputs = d, layer.eps, f"task.ffn.{index}.", inputs

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        v = self._inputs.values
        xn = F.layer_norm(x, (self.dim,), _as(v[self.key + "norm_weight"], x), _as(v[self.key + "norm_bias"], x),
                          self.eps)
        h, g = self.proj(xn).chunk(2, dim=-1)
        return self.out(h * F.gelu(g) * _as(v[self.key + "scale"], x))


def _as(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` in ``like``'s dtype, without a (traced) cast when it already is."""
    return t if t.dtype == like.dtype else t.to(like.dtype)


class InputConv(nn.Module):
    """``conv_in`` with its weight and bias from the task inputs (the sample padded to the widest task)."""

    def __init__(self, like: nn.Conv2d, inputs: _TaskInputs):
        super().__init__()
        self.stride, self.padding, self._inputs = like.stride, like.padding, inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self._inputs.values
        return F.conv2d(x, _as(v["task.conv_in.weight"], x), _as(v["task.conv_in.bias"], x), self.stride,
                        self.padding)


class AdapterUNetGraph(nn.Module):
    """The traced module of the adapters layout: ``(sample, timestep, encoder_hidden_states, *task tensors)``.

    ``fixed``: a task whose tensors are baked in as constants instead (what CoreML converts, one
    function per task, and what parity compares).
    """

    def __init__(self, mtu: MTUNet, fixed: str | None = None):
        super().__init__()
        check_adapters_layout(mtu)
        self.names = task_tensor_names(mtu)
        self._inputs = _TaskInputs()
        # a copy of the module tree that shares every tensor with ``mtu`` (no second SD-sized backbone)
        memo = {id(t): t for t in list(mtu.parameters()) + list(mtu.buffers())}
        model = copy.deepcopy(mtu, memo)
        for i, (name, layer) in enumerate(model.mtu_layers()):
            parent, leaf = name.rsplit(".", 1)
            setattr(model.get_submodule(parent), leaf, ScaledFeedForward(layer, i, self._inputs))
        conv = model.unet.conv_in
        assert isinstance(conv, TaskConvIn)
        model.unet.conv_in = InputConv(conv.convs[0], self._inputs)
        self.model = model.eval()
        self.widest_task = max(mtu.task_names, key=mtu.task_in_channels)  # passes MTUNet's channel check
        self.fixed = None
        if fixed is not None:
            for k, t in task_tensors(mtu, fixed).items():
                self.register_buffer(k.replace(".", "_"), t, persistent=False)
            self.fixed = fixed

    def forward(self, sample, timestep, encoder_hidden_states, *tensors):
        if self.fixed is not None:
            tensors = tuple(getattr(self, k.replace(".", "_")) for k in self.names)
        self._inputs.values = dict(zip(self.names, tensors))
        try:
            return self.model(sample, timestep, encoder_hidden_states, self.widest_task)
        finally:
            self._inputs.values = {}


def adapter_graph_spec(mtu: MTUNet, batch: int, height: int, width: int, text_len: int, dtype: str = "float32",
                       dynamic: bool = False) -> GraphSpec:
    """The shared graph's spec: the UNet inputs (sample at the widest task's channels), then the task tensors."""
    spec = unet_graph_spec(mtu.unet.config, widest(mtu), batch, height, width, text_len, dtype, dynamic)
    example = task_tensors(mtu, 0)
    extra = tuple(TensorSpec(n, tuple(example[n].shape), dtype) for n in task_tensor_names(mtu))
    return GraphSpec(spec.inputs + extra, spec.outputs)


def backbone_id(graph_sha256: str) -> int:
    """The 31-bit id of the shared graph (from its sha256) a task file records: whose backbone it belongs to."""
    return int(graph_sha256[:8], 16) & 0x7FFFFFFF


def write_task_file(values: dict, path, task: str, backbone: int) -> None:
    """``values`` (name -> numpy array, :func:`task_tensor_names` order) as the task's safetensors file."""
    from safetensors.numpy import save_file

    from taskfold.runtime.package import task_file_metadata

    save_file({k: np.ascontiguousarray(v) for k, v in values.items()}, str(path),
              metadata=task_file_metadata(task, backbone))
