"""Core ML graphs in the runtime: load a ``.mlpackage``, read its interface, predict (macOS).

The conversion lives in :mod:`taskfold.export.coreml`; this module is what running a package
needs, so the runtime does not import the exporter. Loading works everywhere coremltools
installs (without compiling the model off macOS); prediction needs the Core ML framework.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from taskfold.errors import ConfigError, ExportError

COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")
_PROTO_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "INT32": "int32"}


def _coremltools(error=ExportError):
    """``import coremltools``, quietly; a missing install is one ``error`` naming the extra."""
    from .backends import COREML

    try:
        with _quiet():
            import coremltools as ct
    except ImportError as e:
        raise error(f"CoreML needs coremltools, which could not be imported ({e})", hint=COREML.hint) from e
    return ct


@contextlib.contextmanager
def _quiet(captured: io.StringIO | None = None):
    """Mute coremltools' logger (Linux "Failed to load ..." and version warnings) and its tqdm bars.

    tqdm resolves ``sys.stderr`` when a bar is created, so redirecting stderr silences the
    progress bars; what was written there is kept in ``captured`` for error messages.
    """
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(captured if captured is not None else io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def load(path: str | Path, compute_units: str = "all", function_name: str | None = None):
    """The ``MLModel`` at ``path``; loaded into Core ML (compiled) only on macOS."""
    ct = _coremltools()
    path = Path(path)
    if not path.exists():
        raise ExportError(f"no CoreML package at {str(path)!r}")
    if compute_units not in COMPUTE_UNITS:
        raise ConfigError(f"unknown CoreML compute units {compute_units!r}; expected one of {list(COMPUTE_UNITS)}")
    with _quiet():
        return ct.models.MLModel(str(path), skip_model_load=sys.platform != "darwin",
                                 compute_units=ct.ComputeUnit[compute_units.upper()], function_name=function_name)


def _spec(model_or_path):
    ct = _coremltools()
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.exists():
            raise ExportError(f"no CoreML package at {str(path)!r}")
        with _quiet():
            return ct.utils.load_spec(str(path))
    return model_or_path.get_spec()


def _feature(ct, f) -> dict:
    array = f.type.multiArrayType
    name = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    return {"name": f.name, "shape": tuple(int(s) for s in array.shape), "dtype": _PROTO_DTYPES.get(name, name.lower())}


def functions(model_or_path) -> list[str]:
    """Function names of an ML program (``["main"]`` for a single-function model)."""
    spec = _spec(model_or_path)
    return list(spec.mlProgram.functions.keys())


def describe(model_or_path, function: str | None = None) -> dict:
    """``{"inputs": [...], "outputs": [...]}``, each ``{"name", "shape", "dtype"}``, from the model spec.

    For a multifunction package, ``function`` picks the function (default: the package's default).
    """
    ct = _coremltools()
    spec = _spec(model_or_path)
    desc = spec.description
    if len(desc.functions):
        function = function or desc.defaultFunctionName
        found = [f for f in desc.functions if f.name == function]
        if not found:
            raise ConfigError(f"no function {function!r} in the model; it has {[f.name for f in desc.functions]}")
        desc = found[0]
    elif function not in (None, "main"):
        raise ConfigError(f"no function {function!r} in a single-function model (it has 'main')")
    return {"inputs": [_feature(ct, f) for f in desc.input], "outputs": [_feature(ct, f) for f in desc.output]}


def predict(model_or_path, inputs: dict[str, np.ndarray], function_name: str | None = None,
            compute_units: str = "cpu_only") -> np.ndarray:
    """Run a converted graph on macOS and return its (first) output as float32.

    ``compute_units`` one of :data:`COMPUTE_UNITS`; ``cpu_only`` by default for parity checks.
    """
    if sys.platform != "darwin":
        raise ExportError(f"CoreML prediction needs the Core ML framework (macOS); this is {sys.platform}",
                          hint="check CoreML graphs structurally on Linux (structural_problems) and predict on a Mac")
    model = load(model_or_path, compute_units, function_name) if isinstance(model_or_path, (str, Path)) \
        else model_or_path
    out_name = describe(model, function_name)["outputs"][0]["name"]
    feed = {k: np.ascontiguousarray(np.asarray(v)) for k, v in inputs.items()}
    result = model.predict(feed)
    return np.asarray(result[out_name], dtype=np.float32)
