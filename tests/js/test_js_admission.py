"""The JS runtime bounds every value's shape as the Python runtime does (``js/src/shapes.js`` mirrors
``runtime/admission.py``'s ``_Graph``): a graph whose values would be too large, or whose size cannot be
computed, is refused by both runtimes in the same words before any session exists; and on the exported
test packages both admissions measure the same graphs (nodes, largest value, all values together)."""

from __future__ import annotations

import base64
import json
import random

import numpy as np
import pytest
from onnx import helper, numpy_helper

from taskfold.errors import PackageError
from taskfold.runtime import admission, open_package
from taskfold.runtime.admission import value_cap
from taskfold.runtime.limits import operators
from taskfold.runtime.reader import PackageReader

from ..runtime.test_untrusted_package import Crafted, _rewrite_graph
from .conftest import run_node

CAP = 1 << 24  # value_cap of the 16x16 tiny package (batch 1): the 2**24 floor
REFUSED = "is not a graph taskfold writes: "


def _expand_by_arithmetic(model, onnx):
    """Shape(sample)[3] x 125_000_000 = 2e9, folded through Gather, Mul and Unsqueeze, then an Expand to it."""
    h = onnx.helper
    model.graph.node.extend([
        h.make_node("Shape", ["sample"], ["s"]),
        h.make_node("Constant", [], ["three"], value=h.make_tensor("three", 7, [], [3])),
        h.make_node("Gather", ["s", "three"], ["side"]),
        h.make_node("Constant", [], ["k"], value=h.make_tensor("k", 7, [], [125_000_000])),
        h.make_node("Mul", ["side", "k"], ["n"]),
        h.make_node("Constant", [], ["zero"], value=h.make_tensor("zero", 7, [1], [0])),
        h.make_node("Unsqueeze", ["n", "zero"], ["target"]),
        h.make_node("Expand", ["timestep", "target"], ["bomb"], name="evil_expand"),
    ])


def _graph_given_twice(c: Crafted):
    """A second ``graph`` field before the real one, holding only an Expand bomb: protobuf merges the two into one
    graph (as ONNX Runtime and Python read it), so a reader that took the last occurrence alone would miss the bomb."""
    import onnx

    h = onnx.helper
    rel = c.graph()["path"]
    bomb = onnx.ModelProto(graph=onnx.GraphProto(node=[
        h.make_node("Constant", [], ["shape"], value=h.make_tensor("s", 7, [1], [2_000_000_000])),
        h.make_node("Expand", ["timestep", "shape"], ["bomb"])]))
    (c.root / rel).write_bytes(bomb.SerializeToString() + (c.root / rel).read_bytes())
    c.relist(rel)


def _nodes(*nodes):
    """A change appending ``nodes``: each ``(op, inputs, outputs, attributes)``, a tensor ``(type, dims, values)``."""
    def change(model, onnx):
        h = onnx.helper
        for op, ins, outs, attrs in nodes:
            attrs = {k: h.make_tensor(k, *v) if isinstance(v, tuple) else v for k, v in attrs.items()}
            model.graph.node.append(h.make_node(op, ins, outs, name=f"evil_{op.lower()}_{outs[0]}", **attrs))
    return change


def _const(name, elem, dims, values):
    return ("Constant", [], [name], {"value": (elem, dims, values)})


SIZE_ATTACKS = {
    "ConstantOfShape to 2e9 elements": (
        _nodes(_const("shape", 7, [1], [2_000_000_000]), ("ConstantOfShape", ["shape"], ["bomb"], {})),
        "value 'bomb' would hold 2000000000 elements (shape [2000000000]), more than the 16777216"),
    "Expand to 2e9 elements by folded shape arithmetic": (
        _expand_by_arithmetic,
        "value 'bomb' would hold 2000000000 elements (shape [2000000000]), more than the 16777216"),
    "Resize by crafted scales": (
        _nodes(_const("scales", 1, [4], [1, 1, 1000, 1000]), ("Resize", ["sample", "", "scales"], ["big"], {})),
        "Resize scales [1.0, 1.0, 1000.0, 1000.0]"),
    "Resize within its scales to 1.3e10 elements": (
        _nodes(_const("scales", 1, [4], [64, 64, 64, 64]), ("Resize", ["sample", "", "scales"], ["big"], {})),
        "value 'big' would hold 12884901888 elements (shape [64, 192, 1024, 1024])"),
    "Reshape by a value the admission cannot fold": (
        _nodes(("Cast", ["timestep"], ["t64"], {"to": 7}), ("Reshape", ["sample", "t64"], ["r"], {})),
        "Reshape 'evil_reshape_r''s shape is not a constant the admission can read"),
    "Conv padded to 2.6e10 elements": (
        _nodes(_const("w", 1, [4, 3, 3, 3], [0.0] * 108),
               ("Conv", ["sample", "w"], ["wide"], {"pads": [40_000, 40_000, 40_000, 40_000]})),
        "value 'wide' would hold 25608960784 elements (shape [1, 4, 80014, 80014])"),
    "Gather index out of range in shape arithmetic": (
        _nodes(("Shape", ["sample"], ["s"], {}), _const("i", 7, [], [7]), ("Gather", ["s", "i"], ["g"], {})),
        "Gather index out of range"),
    "graph given twice (merged)": (
        _graph_given_twice, "value 'bomb' would hold 2000000000 elements (shape [2000000000]), more than the 16777216"),
    "values past 16 x the cap in all": (
        _nodes(_const("shape", 7, [1], [16_000_000]),
               *[("Expand", ["timestep", "shape"], [f"e{i}"], {}) for i in range(17)]),
        f"the graph's values would hold more than {16 * CAP} elements in all"),
}


@pytest.fixture(scope="module")
def refusals(node, tiny_package, tmp_path_factory):
    """``{attack: (Python's refusal, the JS runtime's result)}``: each crafted package opened by both runtimes."""
    root = tmp_path_factory.mktemp("js-size-attacks")
    python, cases = {}, []
    for i, (name, (change, _)) in enumerate(SIZE_ATTACKS.items()):
        c = Crafted(tiny_package[1], root / f"a{i}" / "pkg")
        if change is _graph_given_twice:
            change(c)
        else:
            _rewrite_graph(c, change)
        c.save()
        with pytest.raises(PackageError) as e:
            open_package(c.root).unet("t2i")
        python[name] = str(e.value)
        cases.append({"id": name, "dir": str(c.root), "url": False, "run": True})
    (root / "cases.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/try_open.mjs", str(root / "cases.json"), str(root / "out.json")])
    assert done.returncode == 0, done.stderr[-2000:]
    js = json.loads((root / "out.json").read_text())
    return {name: (python[name], js[name]) for name in SIZE_ATTACKS}


@pytest.mark.parametrize("attack", list(SIZE_ATTACKS))
def test_a_size_attack_is_refused_by_both_runtimes_in_the_same_words(refusals, attack):
    python, js = refusals[attack]
    words = SIZE_ATTACKS[attack][1]
    assert js["sessions"] == 0, f"{attack}: a session was created for a crafted package"
    for err in js["errors"]:
        assert err is not None and err["name"] == "PackageError", err
    message = js["errors"][0]["message"]
    assert words in python and words in message, (python, message)
    assert f"onnx/t2i.onnx {REFUSED}" in message
    assert message.split(REFUSED, 1)[1] == python.split(REFUSED, 1)[1]


@pytest.mark.parametrize("package", ["tiny_package", "tiny_mtu_package", "tiny_mtu_adapters_package", "sd_package"])
def test_js_admission_measures_every_graph_as_python_does(request, node, tmp_path, package):
    pkg = request.getfixturevalue(package)
    pkg = pkg[1] if isinstance(pkg, tuple) else pkg
    reader = PackageReader(pkg)
    reader.referenced_files()  # admits every graph the runtime runs
    python = {rel: {"nodes": a.nodes, "largestValue": a.largest_value, "totalElements": a.total_elements}
              for rel, a in reader._admitted.items()}
    done = run_node(["tools/admitted.mjs", str(pkg), str(tmp_path / "out.json")])
    assert done.returncode == 0, done.stderr[-2000:]
    js = json.loads((tmp_path / "out.json").read_text())
    assert js == python
    assert any(rel.startswith("onnx/") for rel in js)
    s = reader.manifest["sample"]
    cap = value_cap(s["batch"], s["height"], s["width"])
    for a in js.values():
        assert a["nodes"] > 100 and 0 < a["largestValue"] <= a["totalElements"] <= 16 * cap


# --- random shape arithmetic: both admissions judge every graph alike -------------------------------

_DTYPES = {7: np.int64, 6: np.int32, 5: np.int16, 3: np.int8, 2: np.uint8, 9: np.bool_, 1: np.float32, 11: np.float64}
_EDGES = [-3, -1, 0, 1, 2, 3, 4, 16, 100, 125_000_000, 2 ** 31 - 1, 2 ** 62, -(2 ** 62)]
_TWO_INPUTS = ("Gather", "Unsqueeze", "Reshape", "Add", "Sub", "Mul", "Div", "Mod", "Equal", "Less", "GreaterOrEqual",
               "And", "Expand", "Pad", "ReduceMean", "MatMul", "Pow")
_ARITY = {"Constant": 0, "Where": 3, "Clip": 3, **dict.fromkeys(_TWO_INPUTS, 2)}
#: the folding operators (Cast, Mod and Div, whose NumPy semantics have most corners, twice), then the others
_SHAPE_OPS = ["Shape", "Constant", "Constant", "Constant", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape",
              "Slice", "Cast", "Cast", "Add", "Sub", "Mul", "Div", "Div", "Mod", "Mod", "Equal", "Less",
              "GreaterOrEqual", "And", "Where", "Neg", "Floor", "Identity", "Clip", "Expand", "ConstantOfShape",
              "Transpose"]
_OTHER_OPS = ["Flatten", "ArgMax", "Softmax", "Pad", "ReduceMean", "Resize", "MatMul", "Pow", "Sqrt"]
_IO = [{"name": "x", "shape": [2, 3, 4], "dtype": "float32"}]


def _random_tensor(rng, name):
    """A small constant: mostly int64 dims/axes, else any folded dtype with edge values (wrapping, inf, -0.0)."""
    if rng.random() < 0.5:
        arr = np.array([rng.choice([-1, 0, 1, 2, 3, 4, 6, 12, 24]) for _ in range(rng.randint(1, 4))], np.int64)
    else:
        t = rng.choice(list(_DTYPES))
        dims = [rng.randint(1, 4) for _ in range(rng.choice([0, 1, 1, 2]))]
        n = int(np.prod(dims)) if dims else 1
        if t in (1, 11):
            vals = [rng.choice([0.5, -1.5, 2.0, 3.7, 64.0, 1e20, -0.0]) for _ in range(n)]
        else:
            info = np.iinfo(_DTYPES[t] if t != 9 else np.uint8)
            vals = [max(info.min, min(info.max, rng.choice(_EDGES))) for _ in range(n)]
        arr = np.array(vals).astype(_DTYPES[t]).reshape(dims)
    if rng.random() < 0.5:
        return numpy_helper.from_array(arr, name)  # raw_data
    elem = {v: k for k, v in _DTYPES.items()}[arr.dtype.type]
    return helper.make_tensor(name, elem, arr.shape, arr.reshape(-1).tolist())  # the typed field


def _random_graph(rng, kind: str, chain: bool) -> bytes:
    """3-9 nodes of shape arithmetic on ``x`` [2, 3, 4] (``chain``: only folding operators, fed by ``Shape(x)``)."""
    allowed = operators(kind)[""]
    ops = [o for o in _SHAPE_OPS + ([] if chain else _OTHER_OPS) if o in allowed]
    nodes, names = [], ["x"]
    for i in range(rng.randint(3, 9)):
        op, out = rng.choice(ops), f"v{i}"
        pool = names[1:] if chain and op != "Shape" and len(names) > 1 else names

        def pick(pool=pool):  # the recent values more often
            return rng.choice(pool[-3:] if rng.random() < 0.6 else pool)
        attrs = {}
        if op == "Constant":
            attrs["value"] = _random_tensor(rng, f"c{i}")
        elif op == "Cast":
            attrs["to"] = rng.choice(list(_DTYPES) + [10])
        elif op == "Mod" and rng.random() < 0.5:
            attrs["fmod"] = 1
        elif op in ("Concat", "Gather", "Flatten", "ArgMax") and rng.random() < 0.7:
            attrs["axis"] = rng.randint(-2, 2)
        elif op == "Transpose" and rng.random() < 0.5:
            attrs["perm"] = rng.sample(range(2), 2)
        elif op == "Shape" and rng.random() < 0.5:
            attrs["start"] = rng.randint(-3, 2)
        elif op == "ConstantOfShape" and rng.random() < 0.5:
            attrs["value"] = helper.make_tensor("fill", rng.choice([7, 1, 9]), [1], [1])
        arity = {"Slice": rng.randint(3, 5), "Concat": rng.randint(1, 3)}.get(op, _ARITY.get(op, 1))
        ins = ["" if op in ("Clip", "Slice") and k > 0 and rng.random() < 0.4 else pick() for k in range(arity)]
        if op == "Resize":
            ins = [pick(), "", pick()] if rng.random() < 0.5 else [pick(), "", "", pick()]
        nodes.append(helper.make_node(op, ins, [out], name=f"n{i}", **attrs))
        names.append(out)
    vi = helper.make_tensor_value_info("x", 1, [2, 3, 4])
    model = helper.make_model(helper.make_graph(nodes, "g", [vi], [vi]), opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def _trace(values: dict) -> dict:
    """``name -> (shape, (dtype, values) or None)`` of every value admission set, comparable across languages."""
    def num(x, dtype):
        if not dtype.startswith("float"):
            return int(x)
        return str(x) if str(x) in ("nan", "inf", "-inf") else float(x)
    return {k: (list(map(int, shape)), None if v is None else (v[0], [num(x, v[0]) for x in v[1]]))
            for k, (shape, v) in values.items()}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy casting nan and inf while folding
def _crash_refusal(message: str) -> bool:
    """A refusal Python's admission made of an exception a shape rule raised (NumPy's or Python's own words inside)."""
    return "cannot be computed from its inputs (" in message or "cannot be read (" in message


def test_random_shape_arithmetic_is_admitted_or_refused_alike(node, tmp_path, monkeypatch):
    """4,000 seeded random graphs of shape arithmetic (constants of every folded dtype, int64 wrapping, float edge
    values): the JS admission computes every value's shape and folded value as Python's does, admits each graph Python
    admits with the same statistics and refuses each one Python refuses in the same words. Where Python's admission
    raises something other than PackageError (NumPy refusing an operation, an index past a list), JS still refuses."""
    seen = {}
    real = admission._Graph.set

    def tracing(self, name, shape, value=None, counted=True):
        real(self, name, shape, value, counted)
        v = self.values.get(name)
        seen[name] = [[str(d) for d in shape], None if v is None else [
            str(v.dtype), [repr(float(x)) if v.dtype.kind == "f" else str(int(x)) for x in v.reshape(-1)]]]
    monkeypatch.setattr(admission._Graph, "set", tracing)
    rng = random.Random(0)
    cases, python = [], []
    for i in range(4000):
        kind = rng.choice(["unet", "text_encoder", "codec"])
        data = _random_graph(rng, kind, chain=i % 2 == 1)
        spec = {"kind": kind, "inputs": _IO, "outputs": _IO, "dims": {}, "cap": CAP}
        cases.append({"data": base64.b64encode(data).decode(), **spec})
        seen.clear()
        try:
            a = admission.admit_graph(data, where="g.onnx", **spec)
            python.append({"admitted": {"nodes": a.nodes, "largestValue": a.largest_value,
                                        "totalElements": a.total_elements}})
        except PackageError as e:
            python.append({"refused": str(e)})
        except Exception as e:  # noqa: BLE001 - a graph NumPy cannot fold: refused all the same (with a traceback)
            python.append({"raised": type(e).__name__})
        python[-1]["values"] = _trace(seen)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    done = run_node(["tools/admit_graphs.mjs", "--values", str(tmp_path / "cases.json"), str(tmp_path / "out.json")])
    assert done.returncode == 0, done.stderr[-2000:]
    js = json.loads((tmp_path / "out.json").read_text())
    differ = []
    for i, (p, j) in enumerate(zip(python, js, strict=True)):
        if "admitted" in p:
            same = j.get("admitted") == p["admitted"] and _trace(j["values"]) == p["values"]
        elif "refused" in p and not _crash_refusal(p["refused"]):
            same = j.get("error", {}).get("message") == p["refused"] and _trace(j["values"]) == p["values"]
        else:  # Python raised, or turned what NumPy raised into a refusal (its words name NumPy's error): JS refuses
            same = j.get("error", {}).get("name") == "PackageError"
        if not same:
            differ.append((i, p, j))
    assert not differ, differ[:3]
    outcomes = {o: sum(o in p for p in python) for o in ("admitted", "refused", "raised")}
    folded = sum(v[1] is not None for p in python for v in p["values"].values())
    assert outcomes["admitted"] > 400 and outcomes["refused"] > 2000 and folded > 2000, (outcomes, folded)
