"""Graph admission: run only graphs taskfold's exporters could have written.

A listed, hash-correct ``.onnx`` file is still code: a ``Loop`` that never ends, an ``Expand``
to billions of elements, a function whose attribute default reads a file nobody hashed. Before
any ONNX Runtime session exists, :func:`admit_graph` parses the graph once (its size bounded by
the manifest's listing and :file:`package_schema.json`) and admits it only if

* it imports only the opsets and domains the exporter writes, and holds **no functions, no
  subgraphs** (no ``If``/``Loop``/``Scan`` — the exporter writes none), no sparse tensors, no
  attribute references and no training information;
* every node's operator is in the exporter's operator set **for that kind of graph** (``unet``,
  ``text_encoder``, ``codec``: one list in :file:`package_schema.json`, which the exporter's
  own tests check every graph it writes against);
* its required inputs and its outputs are **exactly the manifest's declaration** (names, element
  types, static dimensions; named dimensions take the package's sample sizes);
* external data is held only by initializers and ``Constant`` values (every reference is returned
  for the package reader to confine, list-check and range-check, relative to the graph's real
  folder — the rule ONNX Runtime applies);
* **every value has a static shape the admission can compute**, each within
  :func:`value_cap` elements and all of them together within ``16 x`` that: shapes are propagated
  from the declared inputs through every node with the operator's own shape rule, small integer
  tensors (shape arithmetic) are folded with numpy, and a node whose output size cannot be
  bounded is refused. So an ``Expand``, ``ConstantOfShape``, ``Resize`` or ``Reshape`` sized by a
  crafted constant is refused without being run.

Every refusal is one :class:`~taskfold.errors.PackageError` naming the graph, the node and what
was expected. Parsing uses the ``onnx`` package's generated protobuf classes only (no checker, no
shape inference of its own, no external-data loading).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from taskfold.errors import ConfigError, PackageError

from .limits import bound, operators, opsets
from .onnx_refs import ExternalRef, external_ref

#: ONNX TensorProto element types by number, as the manifest names them.
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
              11: "float64", 16: "bfloat16"}
_NP = {"float32": np.float32, "uint8": np.uint8, "int8": np.int8, "int16": np.int16, "int32": np.int32,
       "int64": np.int64, "bool": np.bool_, "float16": np.float16, "float64": np.float64}
#: What a shape rule or tensor reader raises when fed what no export holds (turned into one refusal).
_RULE_ERRORS = (ArithmeticError, IndexError, KeyError, TypeError, ValueError)
_HINT = "the package is damaged or was crafted; only graphs `taskfold export` writes are run (re-export it)"


class Refused(Exception):
    """Internal: why a graph is not admitted (turned into one PackageError by :func:`admit_graph`)."""


@dataclass
class Admitted:
    """What admission learned about a graph: its external references and value statistics."""

    external: list[ExternalRef] = field(default_factory=list)
    nodes: int = 0
    largest_value: int = 0   # elements
    total_elements: int = 0


def _onnx():
    """ONNX's protobuf classes (``onnx.onnx_ml_pb2``) without importing the ``onnx`` package itself.

    ``import onnx`` pulls in its helpers and type tables (1.3 s on the project's machine); admission
    needs only the message classes, so their generated module is loaded on its own (and registered
    under its own name, so a later ``import onnx`` in the same process reuses it).
    """
    import sys

    name = "onnx.onnx_ml_pb2"
    if name in sys.modules:
        return sys.modules[name]
    import importlib.util

    try:
        spec = importlib.util.find_spec("onnx")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("checking a package's graphs needs the `onnx` package, which is not installed",
                          hint="pip install onnx (a dependency of taskfold's runtime)")
    import os

    path = os.path.join(list(spec.submodule_search_locations)[0], "onnx_ml_pb2.py")
    pb_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(pb_spec)
    pb_spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def _to_array(t, elem: str, dims: list[int]) -> np.ndarray:
    """The values of an inline TensorProto (raw_data or the typed repeated field)."""
    dtype = np.dtype(_NP[elem])
    n = int(np.prod(dims, dtype=object)) if dims else 1
    if t.raw_data:
        if len(t.raw_data) != n * dtype.itemsize:
            raise Refused(f"tensor {t.name!r}: {len(t.raw_data)} bytes of data for shape {dims}")
        return np.frombuffer(t.raw_data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(dims)
    field = {"float32": t.float_data, "float64": t.double_data, "int64": t.int64_data}.get(elem, t.int32_data)
    if len(field) != n:
        raise Refused(f"tensor {t.name!r}: {len(field)} values for shape {dims}")
    return np.array(field, dtype=dtype).reshape(dims)


def value_cap(batch: int, latent_h: int, latent_w: int) -> int:
    """The largest number of elements one value of an admitted graph may hold.

    64 x batch x tokens² covers attention scores (batch x heads x tokens x tokens, at most 20 heads
    in the SD configs, times the guidance branches) at the declared latent size; at least 2**24,
    at most :data:`graph.value_elements` of the limits (2**30 — SD2.1 at 768 px uses 0.85e9).
    """
    tokens = latent_h * latent_w
    return int(min(bound("graph.value_elements"), max(1 << 24, 64 * batch * tokens * tokens)))


# --- parsing --------------------------------------------------------------------------------------

def parse_model(data: bytes, where: str):
    """The ModelProto in ``data`` (already size-checked by the reader)."""
    onnx = _onnx()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise PackageError(f"{where} is not a well-formed ONNX model ({str(e)[:120]})", hint=_HINT) from None
    return model


def _dims(type_proto, what: str) -> tuple[str, list]:
    if type_proto.WhichOneof("value") != "tensor_type":
        raise Refused(f"{what} is not a tensor")
    tt = type_proto.tensor_type
    elem = ELEM_TYPES.get(tt.elem_type)
    if elem is None:
        raise Refused(f"{what} has element type {tt.elem_type}, not one taskfold writes")
    if not tt.HasField("shape"):
        raise Refused(f"{what} has no shape")
    out = []
    for d in tt.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return elem, out


def _attrs(node) -> dict:
    """A node's attributes as Python values; subgraphs and references are refused."""
    onnx = _onnx()
    A = onnx.AttributeProto
    out = {}
    for a in node.attribute:
        if a.ref_attr_name:
            raise Refused(f"attribute {a.name!r} refers to a function attribute")
        if a.type in (A.GRAPH, A.GRAPHS) or a.HasField("g") or len(a.graphs):
            raise Refused(f"attribute {a.name!r} holds a subgraph")
        if a.type in (A.SPARSE_TENSOR, A.SPARSE_TENSORS, A.TYPE_PROTO, A.TYPE_PROTOS) or a.HasField("sparse_tensor"):
            raise Refused(f"attribute {a.name!r} has a kind taskfold does not write")
        if a.type == A.INT:
            out[a.name] = a.i
        elif a.type == A.FLOAT:
            out[a.name] = a.f
        elif a.type == A.STRING:
            out[a.name] = a.s.decode("utf-8", "replace")
        elif a.type == A.INTS:
            if len(a.ints) > 64:
                raise Refused(f"attribute {a.name!r} has {len(a.ints)} values")
            out[a.name] = list(a.ints)
        elif a.type == A.FLOATS:
            out[a.name] = list(a.floats[:64])
        elif a.type == A.TENSOR:
            out[a.name] = a.t
        elif a.type == A.TENSORS:
            raise Refused(f"attribute {a.name!r} holds a list of tensors")
        else:
            raise Refused(f"attribute {a.name!r} has a kind taskfold does not write")
    return out


def _external(t) -> ExternalRef | None:
    """The external-data reference of a tensor, else None."""
    onnx = _onnx()
    if t.data_location != onnx.TensorProto.EXTERNAL and not len(t.external_data):
        return None
    try:
        return external_ref(t.name, {e.key: e.value for e in t.external_data})
    except ValueError as e:
        raise Refused(str(e)) from None


def _tensor_meta(t, what: str, refs: list) -> tuple[list[int], np.ndarray | None]:
    """``(shape, value or None)`` of an initializer or Constant tensor; its external reference recorded."""
    dims = list(t.dims)
    if len(dims) > bound("tensor_rank") or any(d < 0 for d in dims):
        raise Refused(f"{what} has shape {dims[:10]}")
    n = int(np.prod(dims, dtype=object)) if dims else 1
    elem = ELEM_TYPES.get(t.data_type)
    if elem is None:
        raise Refused(f"{what} has element type {t.data_type}, not one taskfold writes")
    ext = _external(t)
    if ext is not None:
        size = n * np.dtype(_NP.get(elem, np.float32)).itemsize if elem in _NP else None
        if ext.length is not None and size is not None and ext.length != size:
            raise Refused(f"{what}: external length {ext.length} differs from its shape x type ({size} bytes)")
        refs.append(ext)
        return dims, None
    if n > bound("graph.constant_elements"):
        raise Refused(f"{what} holds {n} elements inline, more than {bound('graph.constant_elements')}")
    value = None
    if n <= bound("graph.folded_elements") and elem in _NP and elem not in ("float16",):
        value = _to_array(t, elem, dims)
    return dims, value


# --- shapes ---------------------------------------------------------------------------------------

def _broadcast(*shapes) -> list[int]:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        if len(dims) > 1:
            raise Refused(f"shapes {list(map(list, shapes))} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return out


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Refused(f"axis {axis} outside rank {rank}")
    return axis % rank if rank else 0


def _ints(value, what: str) -> list[int]:
    if value is None:
        raise Refused(f"{what} is not a constant the admission can read")
    return [int(v) for v in np.asarray(value).reshape(-1)]


_UNARY = {"Cast", "Clip", "Cos", "Erf", "Floor", "Identity", "Neg", "Sigmoid", "Sin", "Softmax", "Sqrt", "Tanh",
          "Trilu", "InstanceNormalization", "LayerNormalization", "Gelu", "FastGelu", "QuickGelu"}
_BINARY = {"Add", "And", "Div", "Equal", "Less", "GreaterOrEqual", "Mod", "Mul", "Pow", "Sub", "BiasGelu", "Where"}
_FOLD = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal, "Less": np.less,
         "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Neg": np.negative, "Floor": np.floor}


def _conv(x, w, a) -> list[int]:
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise Refused("Conv with auto_pad")
    k = len(x) - 2
    if k < 1 or len(w) != len(x):
        raise Refused(f"Conv of shapes {x} and {w}")
    strides, dil = a.get("strides", [1] * k), a.get("dilations", [1] * k)
    pads = a.get("pads", [0] * 2 * k)
    if len(strides) != k or len(dil) != k or len(pads) != 2 * k or min(strides + dil) < 1 or min(pads) < 0:
        raise Refused("Conv attributes")
    spatial = [(x[2 + i] + pads[i] + pads[k + i] - dil[i] * (w[2 + i] - 1) - 1) // strides[i] + 1 for i in range(k)]
    if min(spatial) < 1:
        raise Refused(f"Conv output {spatial}")
    return [x[0], w[0], *spatial]


def _matmul(a, b) -> list[int]:
    if len(a) < 1 or len(b) < 1:
        raise Refused("MatMul of a scalar")
    a2, b2 = ([1] + a if len(a) == 1 else a), (b + [1] if len(b) == 1 else b)
    if a2[-1] != b2[-2]:
        raise Refused(f"MatMul of shapes {a} and {b}")
    out = _broadcast(a2[:-2], b2[:-2]) + [a2[-2], b2[-1]]
    if len(a) == 1:
        out.pop(-2)
    if len(b) == 1:
        out.pop(-1)
    return out


def _reshape(x, target, allowzero) -> list[int]:
    out, unknown = [], None
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(x):
                raise Refused("Reshape copies a dimension the input lacks")
            d = x[i]
        if d == -1:
            if unknown is not None:
                raise Refused("Reshape with two -1")
            unknown = i
            d = 1
        elif d < 0:
            raise Refused(f"Reshape to {target}")
        out.append(d)
    n, m = int(np.prod(x, dtype=object)), int(np.prod(out, dtype=object))
    if unknown is not None:
        if m == 0 or n % m:
            raise Refused(f"Reshape of {x} to {target}")
        out[unknown] = n // m
    elif n != m:
        raise Refused(f"Reshape of {x} ({n} elements) to {target}")
    return out


def _slice(x, starts, ends, axes, steps) -> tuple[list[int], list[slice]]:
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise Refused("Slice arguments of different lengths")
    out, index = list(x), [slice(None)] * len(x)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = _axis(ax, len(x))
        if st == 0:
            raise Refused("Slice with step 0")
        sl = slice(max(min(s, 2 ** 62), -2 ** 62), max(min(e, 2 ** 62), -2 ** 62), st)
        index[ax] = sl
        out[ax] = len(range(*sl.indices(x[ax])))
    return out, index


class _Graph:
    """Shape (and small-value) propagation through one graph, node by node in file order."""

    def __init__(self, cap: int):
        self.shapes: dict[str, list[int]] = {}
        self.values: dict[str, np.ndarray] = {}
        self.cap = cap
        self.total = 0
        self.largest = 0

    def shape(self, name: str, node) -> list[int]:
        if name not in self.shapes:
            raise Refused(f"node {node.name or node.op_type!r} reads {name!r}, which nothing before it produces")
        return self.shapes[name]

    def set(self, name: str, shape: list[int], value=None, counted: bool = True) -> None:
        if len(shape) > bound("tensor_rank") or any(not isinstance(d, int) or d < 0 for d in shape):
            raise Refused(f"value {name!r} would have shape {shape[:10]}")
        n = int(np.prod(shape, dtype=object)) if shape else 1
        if n > self.cap:
            raise Refused(f"value {name!r} would hold {n} elements (shape {shape[:10]}), more than the {self.cap} "
                          "a graph of this package's size may")
        if counted:
            self.total += n
            self.largest = max(self.largest, n)
            if self.total > 16 * self.cap:
                raise Refused(f"the graph's values would hold more than {16 * self.cap} elements in all")
        self.shapes[name] = list(shape)
        if value is not None and n <= bound("graph.folded_elements"):
            self.values[name] = np.asarray(value).reshape(shape)

    def run(self, node, attrs: dict, refs: list) -> None:
        op, ins, outs = node.op_type, list(node.input), [o for o in node.output]
        shp = [self.shape(i, node) if i else None for i in ins]
        val = [self.values.get(i) if i else None for i in ins]
        out, value = self._rule(op, attrs, ins, shp, val, refs, node)
        if op == "SkipLayerNormalization":  # (output, mean, inv_std_var, input_skip_bias_sum)
            extra = {1: out[:-1] + [1], 2: out[:-1] + [1], 3: out}
            for i, o in enumerate(outs):
                if o:
                    self.set(o, out if i == 0 else extra[i])
            return
        if op == "LayerNormalization":  # (Y, Mean, InvStdDev)
            axis = _axis(attrs.get("axis", -1), len(out))
            for i, o in enumerate(outs):
                if o:
                    self.set(o, out if i == 0 else out[:axis] + [1] * (len(out) - axis))
            return
        if len([o for o in outs if o]) != 1 or not outs[0]:
            raise Refused(f"{op} node {node.name!r} has {len(outs)} outputs")
        self.set(outs[0], out, value)

    def _rule(self, op, a, ins, shp, val, refs, node):
        if op == "Constant":
            if "value" not in a or len(a) != 1:
                raise Refused(f"Constant node {node.name!r} is not a plain tensor constant")
            return _tensor_meta(a["value"], f"Constant {node.name!r}", refs)
        if op in _UNARY:
            x = shp[0]
            v = None
            if val[0] is not None and op in ("Cast", "Floor", "Neg", "Identity", "Clip"):
                v = val[0]
                if op == "Cast":
                    to = ELEM_TYPES.get(a.get("to"))
                    v = v.astype(_NP[to]) if to in _NP and to != "float16" else None
                elif op == "Clip":
                    lo = val[1] if len(val) > 1 and val[1] is not None else None
                    hi = val[2] if len(val) > 2 and val[2] is not None else None
                    v = np.clip(v, lo, hi) if (len(ins) < 2 or not ins[1] or lo is not None) and \
                        (len(ins) < 3 or not ins[2] or hi is not None) else None
                elif op != "Identity":
                    v = _FOLD[op](v)
            return x, v
        if op in _BINARY:
            present = [s for s in shp if s is not None]
            out = _broadcast(*present)
            v = None
            if all(x is not None for x in val) and int(np.prod(out, dtype=object)) <= bound("graph.folded_elements"):
                with np.errstate(all="ignore"):
                    if op == "Where":
                        v = np.where(val[0], val[1], val[2])
                    elif op in ("Div", "Mod") and np.issubdtype(val[0].dtype, np.integer):
                        if np.any(val[1] == 0):
                            raise Refused(f"{op} node {node.name!r} divides by a constant zero")
                        if op == "Div":  # ONNX integer division truncates toward zero
                            q = np.abs(val[0]) // np.abs(val[1])
                            v = np.where((val[0] < 0) != (val[1] < 0), -q, q)
                        else:
                            v = np.fmod(val[0], val[1]) if a.get("fmod") else np.mod(val[0], val[1])
                    elif op == "Div":
                        v = val[0] / val[1]
                    elif op in _FOLD:
                        v = _FOLD[op](val[0], val[1])
            return out, v
        if op == "Conv":
            return _conv(shp[0], shp[1], a), None
        if op == "MatMul":
            return _matmul(shp[0], shp[1]), None
        if op == "Gemm":
            x, w = shp[0], shp[1]
            if len(x) != 2 or len(w) != 2:
                raise Refused("Gemm of non-matrices")
            m, k = (x[1], x[0]) if a.get("transA") else (x[0], x[1])
            k2, n = (w[1], w[0]) if a.get("transB") else (w[0], w[1])
            if k != k2:
                raise Refused(f"Gemm of shapes {x} and {w}")
            return [m, n], None
        if op == "Shape":
            x = shp[0]
            s = slice(a.get("start", 0), a.get("end", len(x)))
            dims = np.array(x[s], dtype=np.int64)
            return [len(dims)], dims
        if op == "Reshape":
            target = _ints(val[1], f"Reshape {node.name!r}'s shape")
            out = _reshape(shp[0], target, a.get("allowzero", 0))
            return out, (val[0].reshape(out) if val[0] is not None else None)
        if op == "Transpose":
            x = shp[0]
            perm = a.get("perm", list(range(len(x)))[::-1])
            if sorted(perm) != list(range(len(x))):
                raise Refused(f"Transpose perm {perm}")
            return [x[p] for p in perm], (np.transpose(val[0], perm) if val[0] is not None else None)
        if op in ("Unsqueeze", "Squeeze"):
            x = shp[0]
            axes = _ints(val[1], f"{op} {node.name!r}'s axes") if len(ins) > 1 and ins[1] else None
            if op == "Unsqueeze":
                if axes is None:
                    raise Refused("Unsqueeze without axes")
                rank = len(x) + len(axes)
                axes = sorted(_axis(i, rank) for i in axes)
                out = list(x)
                for ax in axes:
                    out.insert(ax, 1)
            else:
                axes = [_axis(i, len(x)) for i in axes] if axes is not None else [i for i, d in enumerate(x) if d == 1]
                if any(x[i] != 1 for i in axes):
                    raise Refused(f"Squeeze of a dimension that is not 1 ({x})")
                out = [d for i, d in enumerate(x) if i not in axes]
            return out, (val[0].reshape(out) if val[0] is not None else None)
        if op == "Concat":
            present = [s for s in shp if s is not None]
            ax = _axis(a.get("axis", 0), len(present[0]))
            if any(len(s) != len(present[0]) or any(s[i] != present[0][i] for i in range(len(s)) if i != ax)
                   for s in present):
                raise Refused(f"Concat of shapes {present}")
            out = list(present[0])
            out[ax] = sum(s[ax] for s in present)
            v = np.concatenate(val, axis=ax) if all(x is not None for x in val) else None
            return out, v
        if op == "Gather":
            x, idx = shp[0], shp[1]
            ax = _axis(a.get("axis", 0), len(x))
            out = x[:ax] + idx + x[ax + 1:]
            v = None
            if val[0] is not None and val[1] is not None:
                i = val[1].astype(np.int64)
                if np.any((i < -x[ax]) | (i >= x[ax])):
                    raise Refused("Gather index out of range")
                v = np.take(val[0], i, axis=ax)
            return out, v
        if op == "Slice":
            starts = _ints(val[1], "Slice starts")
            ends = _ints(val[2], "Slice ends")
            axes = _ints(val[3], "Slice axes") if len(ins) > 3 and ins[3] else None
            steps = _ints(val[4], "Slice steps") if len(ins) > 4 and ins[4] else None
            out, index = _slice(shp[0], starts, ends, axes, steps)
            return out, (val[0][tuple(index)] if val[0] is not None else None)
        if op == "ConstantOfShape":
            target = _ints(val[0], f"ConstantOfShape {node.name!r}'s shape")
            if any(d < 0 for d in target):
                raise Refused(f"ConstantOfShape to {target}")
            fill = 0
            if "value" in a:
                _, fv = _tensor_meta(a["value"], f"ConstantOfShape {node.name!r}'s value", refs)
                fill = fv.reshape(-1)[0] if fv is not None and fv.size == 1 else 0
            n = int(np.prod(target, dtype=object)) if target else 1
            return target, (np.full(target, fill) if n <= bound("graph.folded_elements") else None)
        if op == "Expand":
            target = _ints(val[1], f"Expand {node.name!r}'s shape")
            if any(d < 0 for d in target):
                raise Refused(f"Expand to {target}")
            out = _broadcast(shp[0], target)
            n = int(np.prod(out, dtype=object)) if out else 1
            v = np.broadcast_to(val[0], out) if val[0] is not None and n <= bound("graph.folded_elements") else None
            return out, v
        if op == "Resize":
            x = shp[0]
            sizes = _ints(val[3], "Resize sizes") if len(ins) > 3 and ins[3] else None
            if sizes is None:
                if len(ins) < 3 or val[2] is None:
                    raise Refused(f"Resize {node.name!r} has neither constant scales nor sizes")
                scales = [float(s) for s in np.asarray(val[2]).reshape(-1)]
                if len(scales) != len(x) or min(scales) <= 0 or max(scales) > 64:
                    raise Refused(f"Resize scales {scales}")
                sizes = [int(np.floor(d * s)) for d, s in zip(x, scales)]
            if len(sizes) != len(x):
                raise Refused(f"Resize sizes {sizes}")
            return sizes, None
        if op == "Pad":
            pads = _ints(val[1], f"Pad {node.name!r}'s pads")
            x = shp[0]
            if a.get("mode", "constant") not in ("constant", "reflect", "edge") or len(pads) != 2 * len(x) \
                    or len(ins) > 3 and ins[3]:
                raise Refused(f"Pad {node.name!r}")
            return [d + pads[i] + pads[len(x) + i] for i, d in enumerate(x)], None
        if op == "SkipLayerNormalization":
            return _broadcast(shp[0], shp[1]), None
        if op in ("ReduceMean",):
            x = shp[0]
            axes = _ints(val[1], "ReduceMean axes") if len(ins) > 1 and ins[1] else a.get("axes", list(range(len(x))))
            axes = [_axis(i, len(x)) for i in axes]
            keep = a.get("keepdims", 1)
            return [1 if i in axes else d for i, d in enumerate(x)] if keep else \
                [d for i, d in enumerate(x) if i not in axes], None
        if op == "Split":
            raise Refused("Split is admitted only where the exporter writes it")
        if op == "ArgMax":
            x = shp[0]
            ax = _axis(a.get("axis", 0), len(x))
            return ([1 if i == ax else d for i, d in enumerate(x)] if a.get("keepdims", 1)
                    else [d for i, d in enumerate(x) if i != ax]), None
        if op == "Flatten":
            x = shp[0]
            ax = _axis(a.get("axis", 1), len(x) + 1) if x else 0
            return [int(np.prod(x[:ax], dtype=object)), int(np.prod(x[ax:], dtype=object))], None
        raise Refused(f"operator {op} has no shape rule here")  # pragma: no cover - listed ops all have one


# --- admission ------------------------------------------------------------------------------------

def admit_graph(data: bytes, *, where: str, kind: str, inputs: list[dict], outputs: list[dict],
                dims: dict[str, int], cap: int, task_tensors: list[dict] = ()) -> Admitted:
    """Admit the serialized graph ``data`` of ``kind`` (see the module docstring) or raise PackageError.

    ``inputs``/``outputs``: the manifest's declaration (name, shape, dtype); ``dims``: the value
    of each named (dynamic) dimension at the package's sample size; ``cap``: :func:`value_cap`;
    ``task_tensors``: the adapters layout's per-task inputs (required inputs, or inputs with a default).
    """
    model = parse_model(data, where)
    try:
        return _admit(model, kind, inputs, outputs, dims, cap, list(task_tensors))
    except Refused as e:
        raise PackageError(f"{where} is not a graph taskfold writes: {e}", hint=_HINT) from None
    except RecursionError:
        raise PackageError(f"{where} is not a graph taskfold writes: nested too deeply", hint=_HINT) from None


def _admit(model, kind: str, inputs: list[dict], outputs: list[dict], dims: dict[str, int], cap: int,
           task_tensors: list[dict]) -> Admitted:
    if len(model.functions):
        raise Refused(f"it defines {len(model.functions)} function(s); taskfold writes none")
    if len(model.training_info):
        raise Refused("it holds training information")
    allowed_sets = opsets()
    imported = {}
    for o in model.opset_import:
        lo, hi = allowed_sets.get(o.domain, (None, None))
        if lo is None or not lo <= o.version <= hi:
            raise Refused(f"it imports opset {o.domain or 'ai.onnx'} {o.version}; allowed: "
                          + ", ".join(f"{d or 'ai.onnx'} {a}..{b}" for d, (a, b) in allowed_sets.items() if d != "ai.onnx"))
        imported[o.domain] = o.version
    g = model.graph
    if len(g.sparse_initializer):
        raise Refused("it holds sparse initializers")
    if len(g.node) > bound("graph.nodes") or len(g.initializer) > bound("graph.initializers"):
        raise Refused(f"{len(g.node)} nodes and {len(g.initializer)} initializers (at most {bound('graph.nodes')} "
                      f"and {bound('graph.initializers')})")
    allowed = operators(kind)
    admitted = Admitted(nodes=len(g.node))
    state = _Graph(cap)
    initializers = set()
    for t in g.initializer:
        try:
            shape, value = _tensor_meta(t, f"initializer {t.name!r}", admitted.external)
        except _RULE_ERRORS as e:
            raise Refused(f"initializer {t.name!r} cannot be read ({type(e).__name__}: {str(e)[:200]})") from None
        state.set(t.name, shape, value, counted=False)
        initializers.add(t.name)
    _check_io(g, inputs, outputs, dims, initializers, state, task_tensors)
    for node in g.node:
        domain = node.domain if node.domain != "ai.onnx" else ""
        if node.op_type not in allowed.get(domain, ()):
            raise Refused(f"node {node.name!r} uses operator {(domain + '.') if domain else ''}{node.op_type}, "
                          f"which taskfold's exporter does not write in a {kind} graph")
        if domain not in imported and not (domain == "" and "ai.onnx" in imported):
            raise Refused(f"node {node.name!r} uses domain {domain or 'ai.onnx'}, which the graph does not import")
        attrs = _attrs(node)
        try:
            state.run(node, attrs, admitted.external)
        except _RULE_ERRORS as e:  # a rule fed what no export has
            raise Refused(f"the shapes of {node.op_type} node {node.name!r} cannot be computed from its inputs "
                          f"({type(e).__name__}: {str(e)[:200]})") from None
    for o in outputs:
        got = state.shapes.get(o["name"])
        want = [d if isinstance(d, int) else dims[d] for d in o["shape"]]
        if got != want:
            raise Refused(f"output {o['name']!r} would have shape {got}, the manifest declares {o['shape']}")
    admitted.largest_value, admitted.total_elements = state.largest, state.total
    return admitted


def _check_io(g, inputs, outputs, dims, initializers, state, task_tensors) -> None:
    want_in = {t["name"]: t for t in inputs}
    task = {t["name"]: t for t in task_tensors}
    by_name = {vi.name: vi for vi in g.input}
    missing = [n for n in task if n not in by_name]
    if missing or set(task) & set(want_in):
        raise Refused(f"its inputs lack the task tensor {missing[:1] or sorted(set(task) & set(want_in))[:1]}")
    required = [vi.name for vi in g.input if vi.name not in initializers]
    if sorted(n for n in required if n not in task) != sorted(want_in):
        raise Refused(f"its inputs are {required[:8]}, the manifest declares {list(want_in)[:8]}")
    for name, vi in by_name.items():
        declared = want_in.get(name) or task.get(name)
        if declared is None:
            continue  # an input with an initializer default that nobody feeds: the initializer is its value
        _same(vi, declared, dims, "input")
        shape = [d if isinstance(d, int) else dims[d] for d in declared["shape"]]
        if name in initializers and state.shapes[name] != shape:
            raise Refused(f"input {name!r}'s default has shape {state.shapes[name]}, the manifest declares {shape}")
        state.set(name, shape, counted=False)
    got_out = [vi.name for vi in g.output]
    if got_out != [t["name"] for t in outputs]:
        raise Refused(f"its outputs are {got_out[:8]}, the manifest declares {[t['name'] for t in outputs][:8]}")
    for vi, t in zip(g.output, outputs):
        _same(vi, t, dims, "output")


def _same(vi, declared: dict, dims: dict[str, int], what: str) -> None:
    elem, shape = _dims(vi.type, f"{what} {vi.name!r}")
    if elem != declared["dtype"] or len(shape) != len(declared["shape"]):
        raise Refused(f"{what} {vi.name!r} is {elem} {shape}, the manifest declares {declared['dtype']} "
                      f"{declared['shape']}")
    for got, want in zip(shape, declared["shape"]):
        if isinstance(want, int):
            if got != want and not (what == "output" and isinstance(got, str)):
                raise Refused(f"{what} {vi.name!r} has shape {shape}, the manifest declares {declared['shape']}")
        elif want not in dims:
            raise Refused(f"{what} {vi.name!r} has a dimension {want!r} the package does not size")
