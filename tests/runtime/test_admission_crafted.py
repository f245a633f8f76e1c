"""Graph admission never crashes on a crafted graph: a shape rule fed what no export holds (a Gather on a scalar,
arithmetic on booleans, axes of infinity, a shape past int64) is one PackageError naming the node, like every
other refusal — never a traceback from inside the rule (``taskfold verify`` printed one)."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from taskfold.errors import PackageError
from taskfold.runtime.admission import admit_graph

SAMPLE = {"name": "sample", "shape": [1, 3, 16, 16], "dtype": "float32"}


def _graph(*nodes, output="out", out_shape=(1, 3, 16, 16), out_type=TensorProto.FLOAT) -> bytes:
    g = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("sample", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info(output, out_type, list(out_shape))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _const(name, elem, dims, values):
    return helper.make_node("Constant", [], [name], name=f"c_{name}", value=helper.make_tensor(name, elem, dims, values))


def _admit(data: bytes):
    return admit_graph(data, where="onnx/t2i.onnx", kind="unet", inputs=[SAMPLE],
                       outputs=[{"name": "out", "shape": [1, 3, 16, 16], "dtype": "float32"}], dims={}, cap=1 << 24)


CRAFTED = {
    "Gather on a scalar constant": [
        _const("k", TensorProto.INT64, [], [3]), _const("i", TensorProto.INT64, [], [0]),
        helper.make_node("Gather", ["k", "i"], ["g"], name="evil_gather")],
    "Neg of a boolean constant": [
        _const("b", TensorProto.BOOL, [2], [1, 0]), helper.make_node("Neg", ["b"], ["n"], name="evil_neg")],
    "ConstantOfShape past int64": [
        _const("s", TensorProto.INT64, [3], [0, 2**62, 2**62]),
        helper.make_node("ConstantOfShape", ["s"], ["z"], name="evil_cos")],
    "Concat of scalars": [
        _const("a", TensorProto.INT64, [], [1]), _const("b", TensorProto.INT64, [], [2]),
        helper.make_node("Concat", ["a", "b"], ["c"], name="evil_concat", axis=0)],
    "Slice of a scalar": [
        _const("x", TensorProto.INT64, [], [5]), _const("st", TensorProto.INT64, [1], [0]),
        _const("en", TensorProto.INT64, [1], [1]), helper.make_node("Slice", ["x", "st", "en"], ["y"], name="evil_slice")],
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_rule_input_is_one_package_error_naming_the_node(case):
    nodes = CRAFTED[case] + [helper.make_node("Identity", ["sample"], ["out"], name="tail")]
    with pytest.raises(PackageError) as err:
        _admit(_graph(*nodes))
    msg = str(err.value)
    assert msg.startswith("onnx/t2i.onnx is not a graph taskfold writes: "), msg
    assert "evil_" in msg, msg  # the node is named


def test_the_plain_graph_the_crafted_ones_extend_is_admitted():
    got = _admit(_graph(helper.make_node("Identity", ["sample"], ["out"], name="tail")))
    assert (got.nodes, got.largest_value) == (1, 768)
