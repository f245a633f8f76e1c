"""TensorRT engines from the exported ONNX task graphs, refit per task, and a support check.

Three things, each usable without the others:

* :func:`onnx_ops_unsupported_by_tensorrt` checks an ONNX graph against the published
  support list of TensorRT's ONNX parser (:data:`TENSORRT_ONNX_OPS`) without TensorRT being
  installed: every node's operator, its floating-point type and the per-operator
  restrictions the list states.
* :func:`build_engine` builds a serialized engine from an ONNX file (FP16, one optimisation
  profile, a persistent timing cache, optionally refittable), written atomically.
* :func:`refit_engine` puts a task's weights into a refittable engine built from another task
  of the same architecture: folding keeps every task graph identical up to its weights, so
  one build serves every task with the same ``conv_in`` width (DESIGN.md "Folding").

TensorRT 10 Python API used (checked in NVIDIA/TensorRT ``python/src/infer/pyCore.cpp`` and
``python/src/parsers/pyOnnx.cpp`` of the 10.x line, and the "Refitting an Engine" guide):
``trt.Builder(logger)``, ``builder.create_network(flags=0)`` (networks are explicit-batch in
TensorRT 10), ``trt.OnnxParser(network, logger)``, ``parser.parse_from_file(path) -> bool``,
``parser.num_errors`` / ``parser.get_error(i)`` (a ParserError with ``code()``, ``desc()``,
``node()``, ``node_name()``, ``node_operator()``), ``builder.create_builder_config()``,
``config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, n)``, ``config.set_flag(
trt.BuilderFlag.FP16 | REFIT | REFIT_IDENTICAL | STRIP_PLAN)``,
``builder.create_optimization_profile()``, ``profile.set_shape(name, min, opt, max)``,
``config.add_optimization_profile(profile)``, ``config.create_timing_cache(bytes)``,
``config.set_timing_cache(cache, ignore_mismatch)``, ``config.get_timing_cache().serialize()``,
``builder.build_serialized_network(network, config) -> IHostMemory | None``,
``trt.Runtime(logger).deserialize_cuda_engine(bytes)``, ``trt.Refitter(engine, logger)``,
``trt.OnnxParserRefitter(refitter, logger).refit_from_file(path) -> bool``,
``refitter.get_missing_weights()``, ``refitter.refit_cuda_engine() -> bool``,
``engine.create_serialization_config()`` + ``trt.SerializationFlag.EXCLUDE_WEIGHTS`` +
``engine.serialize_with_config(config)``.
"""

from __future__ import annotations

from pathlib import Path

from taskfold._io import write_bytes_atomic
from taskfold.errors import ConfigError, ExportError

from taskfold.runtime.tensorrt_runner import engine_runner  # noqa: F401  (re-exported: the export API names it)

from .graph import GraphSpec

HINT = "pip install 'taskfold[tensorrt]' (NVIDIA's wheels; building and refitting need a CUDA GPU)"
DEFAULT_WORKSPACE_BYTES = 8 << 30

# ---------------------------------------------------------------------------------------------
# The published support list (data)
# ---------------------------------------------------------------------------------------------

#: Source: onnx/onnx-tensorrt ``docs/operators.md``, revision for TensorRT 10.15 ("supports
#: operators in the inclusive range of opset 9 to opset 24"). TensorRT 10.0's revision of the
#: same document states opset 9 to 20.
TENSORRT_VERSION_OF_LIST = "10.15"
TENSORRT_OPSET_RANGE = (9, 24)

_F = ("FP32", "FP16", "BF16")
_FI = _F + ("INT32", "INT64")
_FIB = _FI + ("BOOL",)
_F2 = ("FP32", "FP16")

#: Operator -> the types its "Supported Types" column lists, for every row marked ``Y``.
TENSORRT_ONNX_OPS: dict[str, tuple[str, ...]] = {
    "Abs": _FI, "Acos": _F, "Acosh": _F, "Add": _FI, "And": ("BOOL",), "ArgMax": _FI, "ArgMin": _FI,
    "Asin": _F, "Asinh": _F, "Atan": _F, "Atanh": _F, "Attention": _F + ("INT8", "FP8"),
    "AveragePool": _F, "BatchNormalization": _F, "BlackmanWindow": _F2,
    "Cast": _FI + ("UINT8", "BOOL"), "CastLike": _FI + ("UINT8", "BOOL"), "Ceil": _F, "Celu": _F,
    "Clip": _F, "Concat": _FIB, "Constant": _FIB + ("FP8", "FP4", "INT4"),
    "ConstantOfShape": _FIB + ("FP8", "FP4", "INT4"), "Conv": _F, "ConvTranspose": _F, "Cos": _F,
    "Cosh": _F, "CumSum": _F, "DeformConv": _F2, "DepthToSpace": _FI,
    "DequantizeLinear": ("INT8", "FP8", "FP4", "INT4"), "Div": _FI, "Dropout": _F, "Einsum": _F, "Elu": _F,
    "Equal": _FI, "Erf": _F, "Exp": _F, "Expand": _FIB, "EyeLike": _FIB, "Flatten": _FIB, "Floor": _F,
    "Gather": _FIB, "GatherElements": _FIB, "GatherND": _FIB, "Gelu": _F + ("INT8", "INT32", "INT64"),
    "Gemm": _F, "GlobalAveragePool": _F, "GlobalLpPool": _F, "GlobalMaxPool": _F, "Greater": _FI,
    "GreaterOrEqual": _FI, "GridSample": _F2, "GroupNormalization": _F, "GRU": _F, "HammingWindow": _F2,
    "HannWindow": _F2, "HardSigmoid": _F, "HardSwish": _F, "Hardmax": _F, "Identity": _FIB, "If": _FIB,
    "ImageScaler": _F, "InstanceNormalization": _F, "IsInf": _F, "IsNaN": _FI, "LayerNormalization": _F,
    "LeakyRelu": _F, "Less": _FI, "LessOrEqual": _FI, "Log": _F, "LogSoftmax": _F, "Loop": _FIB, "LRN": _F,
    "LSTM": _F, "LpNormalization": _F, "LpPool": _F, "MatMul": _F, "Max": _FI, "MaxPool": _F,
    "Mean": _F + ("FP8", "INT32", "INT64"), "MeanVarianceNormalization": _F, "Min": _FI, "Mish": _F2,
    "Mod": _FI, "Mul": _FI, "Neg": _FI, "NonMaxSuppression": _F2, "NonZero": _F2, "Not": ("BOOL",),
    "OneHot": _FIB, "Or": ("BOOL",), "Pad": _FI, "ParametricSoftplus": _F, "Pow": _FI, "PRelu": _F,
    "QuantizeLinear": _F, "RandomNormal": _F, "RandomNormalLike": _F, "RandomUniform": _F,
    "RandomUniformLike": _F, "Range": _FI, "Reciprocal": _F, "ReduceL1": _FI, "ReduceL2": _FI,
    "ReduceLogSum": _FI, "ReduceLogSumExp": _FI, "ReduceMax": _FI, "ReduceMean": _FI, "ReduceMin": _FI,
    "ReduceProd": _FI, "ReduceSum": _FI, "ReduceSumSquare": _FI, "Relu": _FI, "Reshape": _FIB,
    "Resize": _F, "ReverseSequence": _FIB, "RMSNormalization": _F, "RNN": _F, "RoiAlign": _F2,
    "RotaryEmbedding": _F, "Round": _F, "STFT": ("FP32",), "ScaledTanh": _F, "Scan": _F, "Scatter": _FI,
    "ScatterElements": _FI, "ScatterND": _FI, "Selu": _F, "Shape": _FIB, "Shrink": _FI, "Sigmoid": _F,
    "Sign": _FI, "Sin": _F, "Sinh": _F, "Size": _FIB, "Slice": _FIB, "Softmax": _F, "Softplus": _F,
    "Softsign": _F, "SpaceToDepth": _FI, "Split": _FIB, "Sqrt": _F, "Squeeze": _FIB, "Sub": _FI, "Sum": _FI,
    "Tan": _F, "Tanh": _F, "TensorScatter": _F + ("INT32",), "ThresholdedRelu": _F, "Tile": _FIB,
    "TopK": _FI, "Transpose": _FIB, "Trilu": _FIB, "Unsqueeze": _FIB, "Upsample": _F, "Where": _FIB,
    "Xor": ("BOOL",),
}
TENSORRT_SUPPORTED_OPS = frozenset(TENSORRT_ONNX_OPS)

#: Rows of the same document marked ``N``.
TENSORRT_UNSUPPORTED_OPS = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im",
    "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear",
    "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv",
    "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence",
    "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
})

#: Restrictions the document states for operators a UNet graph can contain (checked below).
RESIZE_COORDINATE_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                     "align_corners"})
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
REDUCE_OPS = frozenset(op for op in TENSORRT_SUPPORTED_OPS if op.startswith("Reduce"))
POOL_OPS = frozenset({"AveragePool", "MaxPool", "LpPool"})

#: ONNX element types as the document names them. DOUBLE is listed as cast down to FLOAT.
_ONNX_TYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "FP32",
               16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 22: "INT4", 23: "FP4"}


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------

def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _node_problems(node, attrs: dict, dtype: str | None, constant) -> list[str]:
    """Reasons ``node`` (a supported operator) breaks a restriction of the support list."""
    op, out = node.op_type, []
    allowed = TENSORRT_ONNX_OPS[op]
    # Floating-point types only: the column under-reports integer support (Clip lists only
    # FP32/FP16/BF16, yet the 10.x importer clips INT32/INT64 element-wise), and integer
    # tensors in a UNet graph only carry shape and index arithmetic.
    if dtype in _F and dtype not in allowed:
        out.append(f"{dtype} input is not supported (supported types: {', '.join(allowed)})")
    if op == "Resize":
        ctm = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
        mode = _text(attrs.get("mode", "nearest"))
        nearest = _text(attrs.get("nearest_mode", "round_prefer_floor"))
        if ctm not in RESIZE_COORDINATE_MODES:
            out.append(f"coordinate_transformation_mode {ctm!r} is not one of {sorted(RESIZE_COORDINATE_MODES)}")
        if mode not in RESIZE_MODES:
            out.append(f"mode {mode!r} is not one of {sorted(RESIZE_MODES)}")
        if mode == "nearest" and nearest not in RESIZE_NEAREST_MODES:
            out.append(f"nearest_mode {nearest!r} is not one of {sorted(RESIZE_NEAREST_MODES)}")
        if attrs.get("antialias", 0):
            out.append("antialiasing is not supported")
        if _text(attrs.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
            out.append("only keep_aspect_ratio_policy 'stretch' is supported")
    elif op in REDUCE_OPS and len(node.input) > 1 and node.input[1] and not constant(node.input[1]):
        out.append("`axes` must be an initializer")
    elif op in ("Squeeze", "Unsqueeze") and len(node.input) > 1 and node.input[1] and not constant(node.input[1]):
        out.append("`axes` must be a constant")
    elif op == "CumSum" and not constant(node.input[1]):
        out.append("`axis` must be a build-time constant")
    elif op in POOL_OPS:
        kernel = attrs.get("kernel_shape", [])
        if op != "LpPool" and len(kernel) not in (2, 3):
            out.append(f"{len(kernel)}D pooling; only 2D or 3D pooling is supported")
        if any(d != 1 for d in attrs.get("dilations", [])):
            out.append("`dilations` must be empty or all ones")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            out.append("the `Indices` output is not supported")
    elif op == "LayerNormalization" and any(node.output[1:]):
        out.append("only the first output `Y` is supported")
    elif op == "Dropout" and len(node.input) > 2 and node.input[2] and not constant(node.input[2]):
        out.append("`is_training` must be an initializer (evaluating to False)")
    elif op == "ScatterND" and _text(attrs.get("reduction", "none")) != "none":
        out.append("`reduction` other than 'none' is not supported")
    elif op == "TopK":
        if attrs.get("sorted", 1) != 1:
            out.append("`sorted` must be 1")
    elif op == "Constant" and any(k in attrs for k in ("sparse_value", "value_string", "value_strings")):
        out.append("sparse and string constants are not supported")
    return out


def _graph_problems(graph, types: dict, found: list) -> None:
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for i, node in enumerate(graph.node):
        name = node.name or f"<unnamed {node.op_type} #{i}>"
        if node.domain not in ("", "ai.onnx"):
            found.append((name, node.op_type, f"custom-domain operator ({node.domain}); TensorRT parses it "
                                              "only through a plugin"))
        elif node.op_type in TENSORRT_UNSUPPORTED_OPS:
            found.append((name, node.op_type, f"listed as unsupported by TensorRT {TENSORRT_VERSION_OF_LIST}"))
        elif node.op_type not in TENSORRT_SUPPORTED_OPS:
            found.append((name, node.op_type, f"not in TensorRT {TENSORRT_VERSION_OF_LIST}'s ONNX operator list"))
        else:
            data = node.input[0] if node.input else None
            dtype = _ONNX_TYPES.get(types.get(data)) if data else None
            for reason in _node_problems(node, _attrs(node), dtype, constants.__contains__):
                found.append((name, node.op_type, reason))
        for attr in node.attribute:  # If / Loop / Scan bodies
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _graph_problems(sub, types, found)


def onnx_ops_unsupported_by_tensorrt(onnx_model) -> list[tuple[str, str, str]]:
    """``(node_name, op_type, reason)`` for every node TensorRT's ONNX parser would refuse; [] if none.

    ``onnx_model`` is a ``ModelProto`` or a path (external weights are not read). Checked
    against :data:`TENSORRT_ONNX_OPS`: the operator is a ``Y`` row; a floating-point data
    operand (first input, after shape inference; DOUBLE counts as FP32, which the list says
    TensorRT casts it to) has a listed type; and the stated restrictions of Resize, Reduce*,
    Squeeze/Unsqueeze, CumSum, pooling, LayerNormalization, Dropout, ScatterND, TopK and
    Constant hold. An opset outside the list's range is reported as node ``"<model>"``.
    """
    import onnx

    if isinstance(onnx_model, (str, Path)):
        path = Path(onnx_model)
        if not path.is_file():
            raise ExportError(f"no ONNX file at {str(path)!r}")
        onnx_model = onnx.load(str(path), load_external_data=False)
    found: list[tuple[str, str, str]] = []
    lo, hi = TENSORRT_OPSET_RANGE
    for imp in onnx_model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            found.append(("<model>", "opset_import", f"opset {imp.version} is outside TensorRT "
                                                     f"{TENSORRT_VERSION_OF_LIST}'s range {lo}..{hi}"))
    try:
        inferred = onnx.shape_inference.infer_shapes(onnx_model)
    except Exception:  # an unusual graph: check operators without inferred types
        inferred = onnx_model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    _graph_problems(onnx_model.graph, types, found)
    return found


# ---------------------------------------------------------------------------------------------
# Building and refitting engines
# ---------------------------------------------------------------------------------------------

def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ExportError(f"TensorRT engines need the tensorrt package, which could not be imported ({e})",
                          hint=HINT) from e
    return trt


def profile_shapes(spec: GraphSpec, batch=(1, 1, 1), height=None, width=None) -> dict[str, tuple]:
    """``{input: (min, opt, max)}`` for an optimisation profile.

    Static axes keep their size; the named axes ``batch``, ``height`` and ``width`` take the
    given ``(min, opt, max)`` triples (required for a spec that has them).
    """
    ranges = {"batch": batch, "height": height, "width": width}
    out, problems = {}, []
    for t in spec.inputs:
        dims = []
        for d in t.shape:
            if isinstance(d, int):
                dims.append((d, d, d))
            elif ranges.get(d) is None:
                problems.append(f"input {t.name!r} has the dynamic axis {d!r} and no (min, opt, max) was given for it")
            else:
                dims.append(tuple(int(x) for x in ranges[d]))
        out[t.name] = tuple(tuple(dim[i] for dim in dims) for i in range(3))
    if problems:
        raise ConfigError("; ".join(problems))
    return out


def _check_shapes(spec: GraphSpec, shapes: dict) -> None:
    problems = []
    unknown = sorted(set(shapes) - set(spec.input_names))
    if unknown:
        problems.append(f"shapes given for {unknown}, which are not graph inputs {spec.input_names}")
    for t in spec.inputs:
        if t.name not in shapes:
            problems.append(f"no (min, opt, max) shapes for input {t.name!r}")
            continue
        triple = shapes[t.name]
        if len(triple) != 3 or any(len(s) != len(t.shape) for s in triple):
            problems.append(f"input {t.name!r}: expected (min, opt, max) shapes of rank {len(t.shape)}, got {triple}")
            continue
        lo, opt, hi = triple
        for i, d in enumerate(t.shape):
            if not lo[i] <= opt[i] <= hi[i]:
                problems.append(f"input {t.name!r} axis {i}: min {lo[i]} <= opt {opt[i]} <= max {hi[i]} does not hold")
            if isinstance(d, int) and not lo[i] == opt[i] == hi[i] == d:
                problems.append(f"input {t.name!r} axis {i} is static ({d}); got {lo[i]}/{opt[i]}/{hi[i]}")
    if problems:
        raise ConfigError("; ".join(problems))


def _parser_errors(parser) -> list[str]:
    out = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = getattr(e, "node_name", lambda: "")() or f"#{e.node()}"
        op = getattr(e, "node_operator", lambda: "")()
        out.append(f"node {node}{f' ({op})' if op else ''}: {e.code()}: {e.desc()}")
    return out


def build_engine(onnx_path: str | Path, engine_path: str | Path, spec: GraphSpec, shapes: dict | None = None,
                 fp16: bool = True, timing_cache_path: str | Path | None = None, refit: bool = False,
                 strip_weights: bool = False, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES) -> Path:
    """Build a TensorRT engine from ``onnx_path`` and write it to ``engine_path`` atomically.

    ``shapes``: ``{input: (min, opt, max)}`` for the one optimisation profile; by default the
    spec's static shapes (:func:`profile_shapes`). ``fp16`` sets ``BuilderFlag.FP16``.
    ``timing_cache_path``: read if present, written back after the build, so later builds of
    the same layers skip timing. ``refit``: ``BuilderFlag.REFIT``, an engine that
    :func:`refit_engine` can load any task's weights into. ``strip_weights``: ``STRIP_PLAN``,
    the plan is written without its refittable weights (to be refitted from an ONNX file
    before use); without ``refit`` it pairs with ``REFIT_IDENTICAL``, which lets TensorRT
    optimise for exactly the build weights, so the refit must use the same ONNX weights.
    Every ONNX parser error is reported in one :class:`ExportError`.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"no ONNX file at {str(onnx_path)!r}")
    if workspace_bytes <= 0:
        raise ConfigError(f"the TensorRT workspace must be a positive number of bytes, got {workspace_bytes}")
    shapes = profile_shapes(spec) if shapes is None else shapes
    _check_shapes(spec, shapes)
    trt = _tensorrt()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser)
        raise ExportError(f"TensorRT's ONNX parser refused {onnx_path.name} ({len(errors)} errors): "
                          + "; ".join(errors), hint="onnx_ops_unsupported_by_tensorrt() lists unsupported nodes")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if refit:
        config.set_flag(trt.BuilderFlag.REFIT)
    if strip_weights:
        config.set_flag(trt.BuilderFlag.STRIP_PLAN)
        if not refit:
            config.set_flag(trt.BuilderFlag.REFIT_IDENTICAL)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    if cache_path is not None:
        cached = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(cached)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise ExportError(f"the timing cache {str(cache_path)!r} was written by another TensorRT or GPU",
                              hint="delete it; the next build writes a new one")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name}",
                          hint="rerun with a larger workspace_bytes or check the TensorRT log above")
    if cache_path is not None:
        write_bytes_atomic(cache_path, config.get_timing_cache().serialize())
    return write_bytes_atomic(engine_path, serialized)


def _onnx_input_shapes(onnx_path: Path) -> dict[str, tuple]:
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    inits = {t.name for t in g.initializer}
    return {v.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
            for v in g.input if v.name not in inits}


def refit_engine(engine_path: str | Path, onnx_path_of_task: str | Path, out_path: str | Path) -> Path:
    """Load the weights of ``onnx_path_of_task`` into the refittable engine at ``engine_path``.

    The engine must have been built with ``refit=True`` from a graph of the same architecture
    (another task of the same MTU model): weights are matched by their ONNX initializer names,
    which folding keeps. Tasks whose ``conv_in`` widths differ (``t2i`` 4 channels, ``edit``
    8) have differently shaped weights and need their own engine; that is checked up front.
    The refitted engine is written (with its weights) to ``out_path`` atomically.
    """
    engine_path, onnx_path = Path(engine_path), Path(onnx_path_of_task)
    for p, what in ((engine_path, "engine"), (onnx_path, "ONNX file")):
        if not p.is_file():
            raise ExportError(f"no {what} at {str(p)!r}")
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise ExportError(f"{engine_path.name} is not an engine this TensorRT and GPU can load")
    if not getattr(engine, "refittable", True):
        raise ExportError(f"{engine_path.name} was built without refit", hint="build it with refit=True (--trt-refit)")

    wanted = _onnx_input_shapes(onnx_path)
    mismatched = []
    for name, shape in wanted.items():
        have = tuple(engine.get_tensor_shape(name))
        if len(have) != len(shape) or any(a != b and a != -1 and b != -1 for a, b in zip(have, shape)):
            mismatched.append(f"{name}: engine {list(have)}, {onnx_path.name} {list(shape)}")
    if mismatched:
        raise ExportError("the task graph does not fit the engine's inputs (" + "; ".join(mismatched) + ")",
                          hint="refit only between tasks with the same input channels; build one engine per width")

    refitter = trt.Refitter(engine, logger)
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_file(str(onnx_path)):
        errors = _parser_errors(parser_refitter)
        raise ExportError(f"refitting from {onnx_path.name} failed ({len(errors)} errors): " + "; ".join(errors))
    missing = list(refitter.get_missing_weights())
    if missing:
        raise ExportError(f"{onnx_path.name} lacks {len(missing)} weights the engine needs: {missing[:10]}")
    if not refitter.refit_cuda_engine():
        raise ExportError(f"TensorRT could not refit {engine_path.name} with {onnx_path.name}")

    serialization = engine.create_serialization_config()
    serialization.clear_flag(trt.SerializationFlag.EXCLUDE_WEIGHTS)  # a stripped plan gets its weights back
    return write_bytes_atomic(Path(out_path), engine.serialize_with_config(serialization))
