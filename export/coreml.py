"""CoreML export of folded task UNets: ``.mlpackage`` ML programs, palettised or multifunction.

A task graph (:class:`~taskfold.export.graph.UNetGraph` around ``fold(mtu, task)``) goes
through ``torch.export`` and coremltools' ExportedProgram frontend into an ML program whose
inputs and output carry the ONNX names of the graph's :class:`~taskfold.export.graph.GraphSpec`
(``sample``, ``timestep``, ``encoder_hidden_states`` [, ``text_embeds``, ``time_ids``] ->
``out_sample``) with the spec's shapes and dtypes. Converting works on Linux; *predicting*
needs the Core ML framework, i.e. macOS (:func:`predict`).

On Linux a converted graph is checked structurally instead: :func:`describe` reads its
interface and :func:`op_histogram` counts the MIL operations of its program, and
:func:`structural_problems` compares both with the spec and with the base UNet converted the
same way — the base architecture carrying a task's folded weights
(:func:`taskfold.export.fold.base_twin`), since the converter folds constants by value.
Folding keeps the base architecture (DESIGN.md "Folding"), so a folded task graph has exactly
the operation counts of the base graph; only ``conv_in``'s channels differ.

coremltools 9.0 facts this module relies on (read in its source, ``converters/_converters_entry.py``,
``converters/mil/frontend/torch/converter.py``, ``models/utils.py``, ``optimize/coreml``):

* ``ct.convert`` accepts a ``torch.export.ExportedProgram`` only in the ATEN or EDGE dialect;
  ``torch.export.export`` returns the TRAINING dialect, so the program is lowered with
  ``run_decompositions(table)`` first.
* For an ExportedProgram, user ``inputs`` are matched to the program's inputs by position;
  their ``name`` and ``dtype`` are applied and their ``shape`` must equal the traced one.
  ``outputs=[ct.TensorType(name=...)]`` renames the outputs.
* With ``compute_precision=FLOAT16`` inputs/outputs without an explicit dtype become fp16
  (target >= iOS16/macOS13); the spec's dtypes are therefore always passed explicitly.
* ``ct.transform.FP16ComputePrecision(op_selector)`` casts an op to fp16 only where the
  selector returns True.
* ``ct.utils.MultiFunctionDescriptor.add_function(model_path, src_function_name,
  target_function_name)`` + ``ct.utils.save_multifunction(desc, path)`` write one package
  with one function per source model; constants equal across functions are stored once
  (``const_deduplication._deduplicate_const_across_functions``); the spec version is raised
  to at least iOS18.
* ``ct.optimize.coreml.palettize_weights(mlmodel, OptimizationConfig(global_config=
  OpPalettizerConfig(mode="kmeans", nbits=n, weight_threshold=t)))``: k-means look-up
  tables (scikit-learn's KMeans), only for weights with more than ``t`` elements.
* ``MLModel.save`` requires the ``.mlpackage`` extension for ML programs.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import json
import os
import shutil
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch

from taskfold.errors import ConfigError, ExportError
from taskfold.runtime.backends import COREML
from taskfold.runtime.coreml_runner import (  # noqa: F401  (re-exported: the export API names them)
    COMPUTE_UNITS,
    _coremltools as _runtime_coremltools,
    _quiet,
    _spec,
    describe,
    functions,
    load,
    predict,
)

from .graph import GraphSpec

PRECISIONS = ("fp16", "fp32")
#: k-means palette sizes offered. coremltools also accepts 1 bit, which no diffusion UNet survives.
PALETTE_BITS = (2, 3, 4, 6, 8)
#: coremltools' default: weights with at most this many elements stay dense.
PALETTE_WEIGHT_THRESHOLD = 2048
DEFAULT_TARGET = "iOS17"
#: Ops that hold learned weights; the timestep path is kept in fp32 up to (not through) them.
LEARNED_OPS = frozenset({"linear", "matmul", "conv", "conv_transpose", "einsum"})
HINT = COREML.hint

_IO_DTYPES = {"float32": np.float32, "float16": np.float16}


# ---------------------------------------------------------------------------------------------
# coremltools import and noise (loading, describing and predicting live in the runtime)
# ---------------------------------------------------------------------------------------------

def _coremltools():
    """``import coremltools`` (with its optimiser, for palettisation), quietly; a missing install is an
    :class:`ExportError` with the extra to install."""
    ct = _runtime_coremltools(ExportError)
    try:
        with _quiet():
            import coremltools.optimize.coreml  # noqa: F401
    except ImportError as e:
        raise ExportError(f"CoreML export needs coremltools' optimiser, which could not be imported ({e})",
                          hint=HINT) from e
    return ct


def _bool_and(a, b):
    return torch.ops.aten.bitwise_and.Tensor(a, b)


#: ``run_decompositions`` table: composite ops (group_norm, scaled_dot_product_attention, gelu)
#: stay whole, coremltools lowers them directly. ``aten.__and__.Tensor`` (the DTR mask
#: ``(iota >= start) & (iota < start + k)``) has no coremltools 9.0 translation;
#: ``aten.bitwise_and.Tensor`` has one (``logical_and`` for bool tensors, the only kind here).
DECOMPOSITIONS = {torch.ops.aten.__and__.Tensor: _bool_and}


def export_program(module: torch.nn.Module, spec: GraphSpec, example: dict[str, torch.Tensor]):
    """``torch.export`` of ``module`` on the spec's inputs, lowered to the ATEN dialect coremltools reads."""
    missing = [n for n in spec.input_names if n not in example]
    if missing:
        raise ConfigError(f"example inputs lack {missing}; the graph spec needs {spec.input_names}")
    args = tuple(example[n] for n in spec.input_names)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.export(module.eval(), args)
            return program.run_decompositions(DECOMPOSITIONS)
    except Exception as e:
        raise ExportError(f"torch.export could not capture the graph: {type(e).__name__}: {e}") from e


def _input_vars(op):
    for v in op.inputs.values():
        yield from (v if isinstance(v, (list, tuple)) else (v,))


def timestep_fp32_selector(fp32_inputs=("timestep", "time_ids")):
    """An ``FP16ComputePrecision`` op selector that keeps the timestep arithmetic in fp32.

    An op stays fp32 when it is not a learned layer (:data:`LEARNED_OPS`) and every
    non-constant input derives from ``fp32_inputs`` through such ops: the sinusoidal
    embedding ``sin/cos(t * freq)`` and, with DTR, the mask row (``t`` rounded half up). In fp16
    ``t`` = 700.3 is stored as 700.5, which would pick mask row 701 instead of 700, and the
    embedding's arguments (up to ~1000 rad) would carry errors up to 0.25 rad. Learned layers
    (the time-embedding MLP, every ``time_emb_proj``) take the fp32 features cast to fp16.
    SDXL's ``time_ids`` (pixel sizes up to ~1024, embedded the same way) are kept too.
    """
    fp32_inputs = frozenset(fp32_inputs)
    memo: dict[object, bool] = {}

    def keeps_fp32(root) -> bool:
        stack = [root]
        while stack:  # iterative post-order: UNet graphs are deeper than Python's recursion limit
            op = stack[-1]
            if op in memo:
                stack.pop()
                continue
            if op.op_type in LEARNED_OPS:
                memo[op] = False
                stack.pop()
                continue
            pending = [v.op for v in _input_vars(op)
                       if v.op is not None and v.op.op_type != "const" and v.op not in memo]
            if pending:
                stack.extend(pending)
                continue
            reached, clean = False, True
            for v in _input_vars(op):
                if v.op is None:  # a function input
                    reached |= v.name in fp32_inputs
                    clean &= v.name in fp32_inputs
                elif v.op.op_type != "const":
                    reached |= memo[v.op]
                    clean &= memo[v.op]
            memo[op] = reached and clean
            stack.pop()
        return memo[root]

    return lambda op: not keeps_fp32(op)


def _target(ct, minimum_deployment_target):
    if minimum_deployment_target is None:
        minimum_deployment_target = DEFAULT_TARGET
    if isinstance(minimum_deployment_target, str):
        names = list(ct.target.__members__)  # with aliases (macOS14 is iOS17)
        if minimum_deployment_target not in names:
            raise ConfigError(f"unknown CoreML deployment target {minimum_deployment_target!r}; "
                              f"expected one of {names}")
        return ct.target[minimum_deployment_target]
    return minimum_deployment_target


def _tensor_types(ct, tensors, with_shape: bool = True) -> list:
    """``ct.TensorType`` per spec tensor; outputs get no shape (coremltools infers and refuses one)."""
    out = []
    for t in tensors:
        if any(not isinstance(s, int) for s in t.shape):
            raise ConfigError(f"CoreML graphs are exported with static shapes; {t.name!r} has shape "
                              f"{list(t.shape)}", hint="build the graph spec with dynamic=False")
        if t.dtype not in _IO_DTYPES:
            raise ConfigError(f"CoreML input/output {t.name!r} has dtype {t.dtype!r}; "
                              f"expected one of {sorted(_IO_DTYPES)}")
        shape = {"shape": tuple(t.shape)} if with_shape else {}
        out.append(ct.TensorType(name=t.name, dtype=_IO_DTYPES[t.dtype], **shape))
    return out


def convert(module: torch.nn.Module, spec: GraphSpec, example: dict[str, torch.Tensor],
            out_path: str | Path | None, precision: str = "fp16", minimum_deployment_target=None):
    """Convert ``module`` (a :class:`~taskfold.export.graph.UNetGraph`) into a CoreML ML program.

    ``torch.export.export(module.eval(), args)`` with ``args`` the spec's inputs taken from
    ``example``, lowered by :data:`DECOMPOSITIONS`, then ``ct.convert(program,
    inputs=[TensorType(name, shape, dtype)], outputs=[TensorType(name="out_sample", dtype)],
    convert_to="mlprogram", ...)``. The timestep needs no int/float tweak: it is a float32
    ``[B]`` input, diffusers' sinusoidal embedding takes it as is and its ``expand(B)`` is
    traced with the static batch. DTR's mask row (round half up,
    :func:`taskfold.upcycle.dtr.timestep_index`) is computed in float32 exactly, as in PyTorch.

    ``precision``: ``"fp16"`` computes in fp16 except the timestep arithmetic
    (:func:`timestep_fp32_selector`); ``"fp32"`` computes in fp32. Inputs and outputs keep the
    spec's dtypes either way. ``minimum_deployment_target``: a ``ct.target`` member or its
    name, default ``iOS17``. Writes ``out_path`` (an ``.mlpackage``) atomically unless it is
    None, and returns the ``MLModel`` (on Linux without loading it: Core ML is macOS-only).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown CoreML precision {precision!r}; expected one of {list(PRECISIONS)}")
    if out_path is not None:
        _check_package_path(out_path)
    ct = _coremltools()
    inputs, outputs = _tensor_types(ct, spec.inputs), _tensor_types(ct, spec.outputs, with_shape=False)
    target = _target(ct, minimum_deployment_target)
    program = export_program(module, spec, example)
    compute = (ct.transform.FP16ComputePrecision(op_selector=timestep_fp32_selector())
               if precision == "fp16" else ct.precision.FLOAT32)
    log = io.StringIO()
    try:
        with _quiet(log):
            mlmodel = ct.convert(program, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                                 compute_precision=compute, minimum_deployment_target=target,
                                 skip_model_load=sys.platform != "darwin")
    except Exception as e:
        tail = log.getvalue().strip().splitlines()[-5:]
        raise ExportError(f"coremltools could not convert the graph: {type(e).__name__}: {e}"
                          + (f" (last converter output: {' | '.join(tail)})" if tail else "")) from e
    mlmodel.short_description = "taskfold folded task UNet"
    mlmodel.user_defined_metadata["taskfold.graph_spec"] = json.dumps(spec.to_dict())
    mlmodel.user_defined_metadata["taskfold.precision"] = precision
    if out_path is not None:
        save(mlmodel, out_path)
    return mlmodel


# ---------------------------------------------------------------------------------------------
# Saving: atomic, palettised, multifunction
# ---------------------------------------------------------------------------------------------

def _check_package_path(path) -> Path:
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ConfigError(f"a CoreML ML program is saved as a .mlpackage directory, got {str(path)!r}")
    return path


def _atomic_write(write, out_path) -> Path:
    """``write(tmp)`` into a hidden sibling ``.mlpackage``, then rename it to ``out_path``.

    An existing package is moved aside first and removed only after the rename, so an
    interrupted run leaves either the old package or the new one, never a half-written one.
    """
    out = _check_package_path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.stem}.{token}.tmp.mlpackage"
    old = out.parent / f".{out.stem}.{token}.old.mlpackage"
    try:
        write(str(tmp))
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        for p in (tmp, old):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
    return out


#: Written beside the package by ``MLModel.save`` for torch.export conversions: a map from
#: ExecuTorch debug handles to MIL ops (all ``null`` here), outside the package manifest and
#: never read by Core ML; ~200 KB for the tiny graph, so :func:`save` leaves it out.
DEBUG_MAP = "executorch_debug_handle_mapping.json"


def save(mlmodel, out_path: str | Path) -> Path:
    """Save ``mlmodel`` as ``out_path`` (an ``.mlpackage``) atomically, without :data:`DEBUG_MAP`."""
    def write(tmp):
        with _quiet():
            mlmodel.save(tmp)
        Path(tmp, DEBUG_MAP).unlink(missing_ok=True)
    return _atomic_write(write, out_path)


def palettize(mlmodel, bits: int, weight_threshold: int = PALETTE_WEIGHT_THRESHOLD):
    """k-means palettisation of the weights of ``mlmodel`` (an ``MLModel`` or a package path).

    Every weight with more than ``weight_threshold`` elements becomes a table of ``2**bits``
    values plus ``bits``-bit indices (``OpPalettizerConfig(mode="kmeans", nbits=bits)``, one
    table per tensor); coremltools clusters with scikit-learn's KMeans. 3 bits needs an iOS18
    model: the iOS16 ``constexpr_lut_to_dense`` takes tables of 2, 4, 16, 64 or 256 entries.
    Measured on the tiny fp16 graph (420,352 weight bytes): 2 bits 157,824 B, 4 bits
    198,016 B, 6 bits 236,864 B, 8 bits 282,432 B (small tensors stay fp16). Returns a new
    MLModel; save it with :func:`save`.
    """
    if isinstance(bits, bool) or bits not in PALETTE_BITS:
        raise ConfigError(f"palettisation bits must be one of {list(PALETTE_BITS)}, got {bits!r}")
    if importlib.util.find_spec("sklearn") is None:
        raise ExportError("k-means palettisation in coremltools needs scikit-learn, which is not installed",
                          hint="pip install scikit-learn")
    ct = _coremltools()
    import coremltools.optimize.coreml as cto

    if isinstance(mlmodel, (str, Path)):
        mlmodel = load(mlmodel)
    version = mlmodel.get_spec().specificationVersion
    if bits == 3 and version < ct.target.iOS18.value:
        raise ConfigError(f"3-bit look-up tables need an iOS18 / macOS15 model; this one has spec version {version}",
                          hint="convert with minimum_deployment_target='iOS18', or use 2 or 4 bits")
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
        mode="kmeans", nbits=int(bits), weight_threshold=int(weight_threshold)))
    with _quiet():
        out = cto.palettize_weights(mlmodel, config)
    out.user_defined_metadata["taskfold.palettized_bits"] = str(bits)
    return out


def save_multifunction(paths: dict[str, str | Path], out_path: str | Path, default_function: str) -> Path:
    """One ``.mlpackage`` holding the ``main`` function of each package in ``paths`` as a function named by its key.

    Weights equal across the task graphs (the frozen backbone) are stored once. Measured for
    the tiny 4-task model (``tests/export/test_coreml.py``): 468,544 weight bytes against
    1,680,256 for the four separate packages, within 3 % of the distinct fp16 tensors
    (454,920 B); whole packages 1.31 MB against 2.52 MB, as each function keeps its own
    program text. Load one task with ``load(path, function_name=task)``. The package needs
    iOS18 / macOS15 (coremltools raises the spec version itself); task names are used as
    function names unchanged (``inpaint-mask`` saves; loading it on a device is unverified).
    """
    if not paths:
        raise ConfigError("a multifunction package needs at least one function, got none")
    if default_function not in paths:
        raise ConfigError(f"default function {default_function!r} is not one of the functions {sorted(paths)}")
    missing = [str(p) for p in paths.values() if not Path(p).is_dir()]
    if missing:
        raise ExportError(f"CoreML packages not found: {missing}")
    ct = _coremltools()
    desc = ct.utils.MultiFunctionDescriptor()
    for name, path in paths.items():
        desc.add_function(str(path), "main", name)
    desc.default_function_name = default_function

    def write(tmp):
        with _quiet():
            ct.utils.save_multifunction(desc, tmp)
    return _atomic_write(write, out_path)


def package_bytes(path: str | Path, weights_only: bool = False) -> int:
    """Bytes on disk of a ``.mlpackage`` (or of its weight files only)."""
    root = Path(path)
    if weights_only:
        root = root / "Data" / "com.apple.CoreML" / "weights"
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Structural checks (Linux) and prediction (macOS)
# ---------------------------------------------------------------------------------------------

def _count_ops(block, counts: collections.Counter, include_const: bool) -> None:
    for op in block.operations:
        if include_const or op.type != "const":
            counts[op.type] += 1
        for inner in op.blocks:
            _count_ops(inner, counts, include_const)


def op_histogram(model_or_path, function: str | None = None, include_const: bool = False) -> collections.Counter:
    """MIL op types of ``function`` (default: ``main``, or a package's default function) and
    how often each occurs, nested blocks included.

    Read from ``spec.mlProgram.functions[function].block_specializations[opset]``. ``const``
    ops are left out by default: they hold weights, not compute, and the converter merges
    equal constants within a graph, so their count depends on the weight values.
    """
    spec = _spec(model_or_path)
    fns = spec.mlProgram.functions
    function = function or spec.description.defaultFunctionName or "main"
    if function not in fns:
        raise ConfigError(f"no function {function!r} in the ML program; it has {list(fns.keys())}")
    fn = fns[function]
    counts: collections.Counter = collections.Counter()
    _count_ops(fn.block_specializations[fn.opset], counts, include_const)
    return counts


def structural_problems(mlmodel, spec: GraphSpec, reference_ops: collections.Counter,
                        function: str | None = None) -> list[str]:
    """Everything in which a converted graph differs from its spec and its reference; [] when none.

    * inputs and outputs: the spec's names in order, shapes and dtypes;
    * operations: the op histogram (:func:`op_histogram`) equals ``reference_ops``, the
      histogram of the base UNet converted the same way (same precision; with DTR, the base
      wrapped in the same DTR masks). A folded task graph differs from the base only in
      ``conv_in``'s input channels, which changes no count.
    """
    problems = []
    got = describe(mlmodel, function)
    for kind, declared in (("input", spec.inputs), ("output", spec.outputs)):
        have = got[kind + "s"]
        names = [t["name"] for t in have]
        if names != [t.name for t in declared]:
            problems.append(f"{kind} names are {names}, the spec declares {[t.name for t in declared]}")
            continue
        for t, h in zip(declared, have):
            if h["shape"] != tuple(t.shape):
                problems.append(f"{kind} {t.name!r} has shape {list(h['shape'])}, the spec declares {list(t.shape)}")
            if h["dtype"] != t.dtype:
                problems.append(f"{kind} {t.name!r} has dtype {h['dtype']}, the spec declares {t.dtype}")
    ops = op_histogram(mlmodel, function)
    for op in sorted(set(ops) | set(reference_ops)):
        if ops[op] != reference_ops[op]:
            problems.append(f"op {op!r}: {ops[op]} in the graph, {reference_ops[op]} in the reference")
    return problems
