"""Counting FLOPs two ways (DESIGN.md "Counting FLOPs"), so that every number says which count it is.

* :func:`torch_flops` — ``torch.utils.flop_counter.FlopCounterMode`` over one forward call of
  a PyTorch module. It counts matmuls and convolutions, but on the CPU it does not count
  ``scaled_dot_product_attention`` (the attention score and value products).
* :func:`onnx_flops` — from an ONNX graph: every ``Conv``, ``ConvTranspose``, ``MatMul``,
  ``Gemm`` and two-operand ``Einsum`` node (the unfolded MTU graph's experts), with the
  shapes that ONNX Runtime's symbolic shape inference derives for the graph's input shapes. Attention appears in the exported graph as MatMuls, so this
  count includes it. A multiply-add is 2 FLOPs; bias additions, normalisations and
  activations are not counted (they are a small, shape-determined share in both counts).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")


@dataclass
class FlopCount:
    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    nodes: int = 0
    method: str = ""

    def to_dict(self) -> dict:
        return {"total": self.total, "by_op": self.by_op, "nodes": self.nodes, "method": self.method}


@torch.no_grad()
def torch_flops(module: torch.nn.Module, *args, **kwargs) -> int:
    """FLOPs of ``module(*args, **kwargs)`` by ``torch.utils.flop_counter`` (SDPA not counted on CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    with mode:
        module(*args, **kwargs)
    return int(mode.get_total_flops())


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def onnx_flops(model, input_shapes: dict[str, list[int]] | None = None,
               elementwise_inputs: frozenset[str] = frozenset()) -> FlopCount:
    """FLOPs of one run of the ONNX graph ``model`` (a path or ``ModelProto``).

    ``input_shapes`` fixes dynamic axes (``{"sample": [1, 4, 64, 64], ...}``); a graph with
    static shapes needs none. Weights are not loaded: shape inference needs only the dims.
    ``elementwise_inputs``: also count, as ``by_op["Mul (elementwise)"]`` and *outside* ``total``,
    one FLOP per output element of every ``Mul`` reading one of these tensors (the adapters
    layout's per-task FFN scales), so that extra is reported on its own.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())  # never touch the caller's graph
    # Weights stored outside the graph become inputs of the same shape: shape inference
    # needs their dims, never their values (those it needs are small and stay inline).
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    inputs = {i.name for i in model.graph.input}
    for t in external:
        if t.name not in inputs:
            model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        model.graph.initializer.remove(t)
    for inp in model.graph.input:
        if input_shapes and inp.name in input_shapes:
            shape = input_shapes[inp.name]
            dims = inp.type.tensor_type.shape.dim
            if len(dims) != len(shape):
                raise ValueError(f"input {inp.name!r} has rank {len(dims)}, got shape {shape}")
            for d, v in zip(dims, shape):
                d.Clear()
                d.dim_value = int(v)
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=False)
    g = inferred.graph
    shapes = {v.name: _dims(v) for v in list(g.value_info) + list(g.input) + list(g.output)}
    shapes.update({t.name: list(t.dims) for t in g.initializer})
    by_op: Counter = Counter()
    nodes = 0
    extra = 0
    for node in g.node:
        if node.op_type == "Mul" and elementwise_inputs & set(node.input):
            extra += math.prod(shapes.get(node.output[0]) or [0])
        if node.op_type not in COUNTED_OPS:
            continue
        if node.op_type == "Einsum" and len(node.input) != 2:
            continue  # a one-operand einsum (transpose, trace) multiplies nothing
        nodes += 1
        a, b = (shapes.get(x) for x in node.input[:2])
        out = shapes.get(node.output[0])
        if not a or not b or not out or any(not isinstance(d, int) or d <= 0 for d in a + b + out):
            raise ValueError(f"shape of {node.op_type} node {node.name!r} is not known "
                             f"(inputs {a}, {b}, output {out}); pass input_shapes for dynamic axes")
        by_op[node.op_type] += _node_flops(node, a, b, out)
    total = int(sum(by_op.values()))
    if elementwise_inputs:
        by_op["Mul (elementwise)"] = int(extra)
    return FlopCount(total, dict(by_op), nodes, "onnx graph: Conv/ConvTranspose/MatMul/Gemm/Einsum"
                     + (" (+ the elementwise Muls listed apart)" if elementwise_inputs else ""))


def _node_flops(node, a, b, out) -> int:
    if node.op_type == "Conv":  # out [N, Co, *spatial]; weight [Co, Ci/groups, *kernel]
        return 2 * math.prod(out) * math.prod(b[1:])
    if node.op_type == "ConvTranspose":  # weight [Ci, Co/groups, *kernel]; each input element feeds a kernel
        return 2 * math.prod(a) * math.prod(b[1:])
    if node.op_type == "Einsum":  # one multiply-add per combination of every index in the equation
        lhs = next(x.s for x in node.attribute if x.name == "equation").decode().replace(" ", "").split("->")[0]
        sizes = {}
        for term, shape in zip(lhs.split(","), (a, b)):
            if "..." in term or len(term) != len(shape):
                raise ValueError(f"Einsum node {node.name!r}: equation term {term!r} with shape {shape} is not "
                                 "supported (no ellipsis)")
            for letter, d in zip(term, shape):
                sizes[letter] = max(sizes.get(letter, 1), d)
        return 2 * math.prod(sizes.values())
    if node.op_type == "Gemm":
        attrs = {x.name: x.i for x in node.attribute}
        k = a[0] if attrs.get("transA", 0) else a[1]
        return 2 * out[0] * out[1] * k
    # MatMul with numpy broadcasting: the output holds every (batch..., m, n); each sums over k.
    k = a[-1] if len(a) > 1 else a[0]
    return 2 * math.prod(out) * k
