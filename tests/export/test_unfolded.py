"""The unfolded multi-task graph: the MTU model exported as it is, the task id a graph input.

This is what a user would ship without folding, and what ``taskfold bench`` times against
the folded graphs; it must compute the MTU model for every task (and for mixed batches).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taskfold.export.flops import onnx_flops
from taskfold.export.graph import (MTUTaskGraph, UnfoldedMTUGraph, example_inputs, unet_graph_spec,
                                   unfolded_example, unfolded_graph_spec)
from taskfold.export.onnx import export_graphs, ort_runner
from taskfold.upcycle import UpcycleConfig, upcycle

from .._helpers import trained_like

TASKS = ("t2i", "edit", "sr", "inpaint", "inpaint-mask")


@pytest.fixture(scope="module")
def dtr_mtu(tiny_base):
    unet, info = tiny_base
    return trained_like(upcycle(unet, UpcycleConfig(tasks=TASKS, dtr=True), info).eval(), seed=3)


@pytest.fixture(scope="module")
def unfolded_graph(dtr_mtu, tmp_path_factory):
    out = tmp_path_factory.mktemp("unfolded")
    spec = unfolded_graph_spec(dtr_mtu, 2, 16, 16, 7)
    exported = export_graphs({"unfolded": lambda: UnfoldedMTUGraph(dtr_mtu).eval()}, {"unfolded": spec},
                             {"unfolded": unfolded_example(dtr_mtu, spec, 2, 16, 16)}, out / "onnx")
    return out / exported.graphs["unfolded"], spec


def test_spec_takes_the_widest_sample_and_a_task_id(dtr_mtu, unfolded_graph):
    _, spec = unfolded_graph
    assert spec.input_names == ["sample", "timestep", "encoder_hidden_states", "task_id"]
    assert spec.inputs[0].shape == (2, 9, 16, 16)  # inpaint-mask: noisy + mask + masked image
    assert spec.inputs[3].dtype == "int64"


@pytest.mark.parametrize("timestep", [0.0, 417.0, 500.5, 999.0])
def test_graph_equals_mtu_for_every_task(dtr_mtu, unfolded_graph, timestep):
    path, spec = unfolded_graph
    run = ort_runner(path)
    for i, task in enumerate(TASKS):
        c = dtr_mtu.task_in_channels(task)
        inputs = example_inputs(unet_graph_spec(dtr_mtu.unet.config, c, 2, 16, 16, 7), 2, 16, 16, seed=i,
                                timestep=timestep)
        with torch.no_grad():
            ref = MTUTaskGraph(dtr_mtu, task)(*inputs.values()).numpy()
        x = np.zeros((2, 9, 16, 16), np.float32)
        x[:, :c] = inputs["sample"].numpy()
        got = run({"sample": x, "timestep": inputs["timestep"].numpy(),
                   "encoder_hidden_states": inputs["encoder_hidden_states"].numpy(),
                   "task_id": np.full(2, i, np.int64)})
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        assert rel < 1e-5, (task, timestep, rel)


def test_mixed_batch_routes_each_sample_by_its_task_id(dtr_mtu, unfolded_graph):
    path, _ = unfolded_graph
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 9, 16, 16, generator=g)
    x[0, 4:] = 0  # sample 0 is t2i: only the noisy channels
    text = torch.randn(2, 7, dtr_mtu.unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([20.0, 800.0])
    ids = torch.tensor([0, 4])
    with torch.no_grad():
        ref = dtr_mtu(x, t, text, ids).numpy()
        alone = [dtr_mtu(x[i:i + 1, :dtr_mtu.task_in_channels(int(k))], t[i:i + 1], text[i:i + 1], TASKS[int(k)])
                 for i, k in enumerate(ids)]
    got = ort_runner(path)({"sample": x.numpy(), "timestep": t.numpy(), "encoder_hidden_states": text.numpy(),
                            "task_id": ids.numpy()})
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5
    for i in range(2):
        assert np.abs(got[i] - alone[i][0].numpy()).max() / np.abs(ref).max() < 1e-5


def test_gathered_conv_in_equals_the_per_task_convolutions(dtr_mtu):
    conv_in = dtr_mtu.unet.conv_in
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 9, 8, 8, generator=g)
    ids = torch.tensor([4, 0, 2, 0, 1])
    for i, k in enumerate(ids.tolist()):  # a sample's channels beyond its task's are zero padding
        x[i, conv_in.convs[k].in_channels:] = 0
    with torch.no_grad():
        got = conv_in.gathered(x, ids)
        want = torch.stack([conv_in.convs[k](x[i:i + 1, :conv_in.convs[k].in_channels])[0]
                            for i, k in enumerate(ids.tolist())])
    assert got.shape == want.shape == (5, 16, 8, 8)
    assert (got - want).abs().max().item() < 1e-6


def test_flop_count_includes_the_experts(dtr_mtu, unfolded_graph, tmp_path):
    """Einsum nodes (the experts) are counted: N experts of width H/N cost the dense FFN's FLOPs."""
    from taskfold.export.fold import fold
    from taskfold.export.graph import UNetGraph

    path, spec = unfolded_graph
    unfolded = onnx_flops(path)
    assert unfolded.by_op.get("Einsum", 0) > 0
    fspec = unet_graph_spec(dtr_mtu.unet.config, 4, 2, 16, 16, 7)
    exported = export_graphs({"t2i": lambda: UNetGraph(fold(dtr_mtu, "t2i")).eval()}, {"t2i": fspec},
                             {"t2i": example_inputs(fspec, 2, 16, 16)}, tmp_path / "onnx")
    folded = onnx_flops(tmp_path / exported.graphs["t2i"])
    tokens = []  # batch x sequence length seen by each FFN layer in one call
    hooks = [layer.register_forward_hook(lambda m, args, out: tokens.append((m, args[0].shape[0] * args[0].shape[1])))
             for _, layer in dtr_mtu.mtu_layers()]
    with torch.no_grad():
        dtr_mtu(*[v for k, v in example_inputs(fspec, 2, 16, 16).items()], "t2i")
    for h in hooks:
        h.remove()
    dense_ffn = sum(2 * n * 3 * m.dim * m.hidden for m, n in tokens)  # d x 2H (GEGLU) + H x d per token
    assert len(tokens) == len(dtr_mtu.mtu_layers())
    assert unfolded.by_op["Einsum"] == dense_ffn
    assert unfolded.total > folded.total


def test_einsum_flops_of_one_node():
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Einsum", ["A", "B"], ["Y"], equation="bld,nkd->blnk")
    graph = helper.make_graph([node], "e", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, 3, 5]),
                                            helper.make_tensor_value_info("B", TensorProto.FLOAT, [4, 7, 5])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3, 4, 7])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    count = onnx_flops(model)
    assert count.total == 2 * 2 * 3 * 5 * 4 * 7 and count.nodes == 1
