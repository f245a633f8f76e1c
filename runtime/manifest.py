"""The package manifest's schema: written by ``taskfold export``, checked here before anything trusts it.

``manifest.json`` (format ``taskfold-package``, schema 1) is the only description of a
package the runtime, ``taskfold verify`` and ``taskfold bench`` believe. A package is
downloaded from anywhere, so :func:`validate_manifest` checks the whole structure and every
type up front and raises one :class:`~taskfold.errors.PackageError` naming the key and what
was expected (``manifest: graphs[2].path: expected a relative path string, got 7``). The
files the manifest names are then opened only through :class:`taskfold.runtime.reader.PackageReader`.

The schema is a small tree of checkers (:class:`Obj`, :class:`ListOf`, :class:`DictOf`, scalar
checkers); :data:`MANIFEST_SCHEMA` is the whole of it, :data:`WEIGHT_INDEX_SCHEMA` the
per-graph weight index (``onnx/<task>.index.json``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

from taskfold.errors import PackageError, TaskfoldError
from taskfold.tasks import GUIDANCE_KINDS, INPUT_PARTS, task_from_record

from .limits import bound

FORMAT = "taskfold-package"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHT_INDEX_FORMAT = "taskfold-weight-index"
WEIGHT_INDEX_SCHEMA_VERSION = 1
#: Largest manifest / JSON side file read (bytes); a real SD manifest is a few hundred KB.
MAX_JSON_BYTES = 64 << 20
#: numpy dtypes a weight record may name.
WEIGHT_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


# --- checkers ----------------------------------------------------------------------------------

class Check:
    """A checker: ``check(value, where)`` returns the value or raises :class:`PackageError`."""

    what = "a value"

    def __call__(self, value, where: str):
        if not self.ok(value):
            raise PackageError(f"manifest: {where}: expected {self.what}, got {_show(value)}",
                               hint="the package is malformed or was not written by `taskfold export`; re-export it")
        return value

    def ok(self, value) -> bool:  # pragma: no cover - overridden
        return True


class Scalar(Check):
    def __init__(self, what: str, test: Callable[[Any], bool]):
        self.what, self.test = what, test

    def ok(self, value) -> bool:
        return self.test(value)


class Opt(Check):
    """``None`` or what ``inner`` accepts."""

    def __init__(self, inner: Check):
        self.inner, self.what = inner, f"{inner.what} or null"

    def __call__(self, value, where):
        return None if value is None else self.inner(value, where)


class ListOf(Check):
    def __init__(self, item: Check, min_len: int = 0, max_len: int = 100000):
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.what = f"a list of {item.what}" + (f" (at least {min_len})" if min_len else "") + \
            f" (at most {max_len})"

    def __call__(self, value, where):
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            return super().__call__(value, where)  # raises
        for i, v in enumerate(value):
            self.item(v, f"{where}[{i}]")
        return value

    def ok(self, value):
        return False


class DictOf(Check):
    """An object whose keys are free (checked by ``key``) and whose values all pass ``item``."""

    def __init__(self, item: Check, key: Check | None = None, max_len: int = 100000):
        self.item, self.key, self.max_len = item, key, max_len
        self.what = f"an object of {item.what} (at most {max_len} keys)"

    def __call__(self, value, where):
        if not isinstance(value, dict) or len(value) > self.max_len:
            return super().__call__(value, where)
        for k, v in value.items():
            if self.key is not None:
                self.key(k, f"{where} key {k!r}")
            self.item(v, f"{where}[{k!r}]")
        return value

    def ok(self, value):
        return False


class Obj(Check):
    """An object with ``required`` and ``optional`` keys (others are allowed and ignored)."""

    def __init__(self, required: dict[str, Check], optional: dict[str, Check] | None = None):
        self.required, self.optional = required, optional or {}
        self.what = "an object"

    def __call__(self, value, where):
        if not isinstance(value, dict):
            return super().__call__(value, where)
        for k, check in self.required.items():
            if k not in value:
                raise PackageError(f"manifest: {where}: missing key {k!r}",
                                   hint="the package is malformed or was not written by `taskfold export`; "
                                        "re-export it")
            check(value[k], f"{where}.{k}")
        for k, check in self.optional.items():
            if k in value:
                check(value[k], f"{where}.{k}")
        return value

    def ok(self, value):
        return False


def _show(value) -> str:
    text = json.dumps(value)[:60] if _jsonable(value) else repr(value)[:60]
    return f"{type(value).__name__} {text}" if not isinstance(value, (dict, list)) else text


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _is_rel_path(v) -> bool:
    """A relative POSIX path inside the package: no absolute path, no ``..``, no backslash or NUL."""
    if not isinstance(v, str) or not v or len(v) > bound("path_chars") or "\\" in v or "\0" in v \
            or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in v):
        return False
    if v.startswith("/") or re.match(r"^[A-Za-z]:", v):
        return False
    return all(p not in ("..",) for p in v.split("/"))


STR = Scalar("a string", lambda v: isinstance(v, str))
BOOL = Scalar("true or false", lambda v: isinstance(v, bool))
INT = Scalar("an integer", _is_int)
NONNEG = Scalar("an integer >= 0", lambda v: _is_int(v) and v >= 0)
POS = Scalar("an integer >= 1", lambda v: _is_int(v) and v >= 1)
NUM = Scalar("a finite number", _is_num)
PATH = Scalar("a relative path string inside the package (no '..', not absolute)", _is_rel_path)
NAME = Scalar("a file name (no '/', no '..')", lambda v: _is_rel_path(v) and "/" not in v and v != ".")
SHA256 = Scalar("a sha256 hex digest", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None)
DIM = Scalar("an integer from 1 to 2**31 or an axis name (a word)",
             lambda v: (_is_int(v) and 1 <= v <= 1 << 31) or (isinstance(v, str) and re.fullmatch(r"\w{1,64}", v)))


def one_of(*choices) -> Scalar:
    return Scalar(f"one of {', '.join(map(repr, choices))}", lambda v: v in choices)


def upto(name: str, low: int = 1) -> Scalar:
    """An integer from ``low`` to the limits' bound ``name`` (package_schema.json)."""
    top = bound(name)
    return Scalar(f"an integer from {low} to {top}", lambda v: _is_int(v) and low <= v <= top)


TENSOR_DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8")
TENSOR = Obj({"name": Scalar("a tensor name", lambda v: isinstance(v, str) and 0 < len(v) <= 256),
              "shape": ListOf(DIM, max_len=bound("tensor_rank")), "dtype": one_of(*TENSOR_DTYPES)})
FILE_ENTRY = Obj({"bytes": NONNEG, "sha256": SHA256})
COMPONENT_GRAPH = Obj({"file": NAME, "inputs": ListOf(TENSOR, 1, 16), "outputs": ListOf(TENSOR, 1, 16)},
                      {"weights": ListOf(NAME, max_len=4096)})
TASK = Obj({"inputs": ListOf(one_of(*INPUT_PARTS), 1, 8), "uses_text": BOOL, "guidance": one_of(*GUIDANCE_KINDS),
            "guidance_scale": NUM, "in_channels": upto("channels")},
           {"name": STR, "image_guidance_scale": Opt(NUM), "graphs": DictOf(PATH), "strength": NUM, "steps": POS})
LAYOUTS = ("graphs", "adapters")
GRAPH = Obj({"task": STR, "format": STR, "path": PATH},
            {"precision": STR, "external_data": ListOf(PATH, max_len=4096), "weight_index": Opt(PATH),
             "inputs": ListOf(TENSOR, 1, 16), "outputs": ListOf(TENSOR, 1, 16), "function": STR,
             "refittable_engine": PATH, "refit_from": PATH, "layout": one_of(*LAYOUTS), "adapter": PATH,
             "backbone_id": NONNEG, "task_channels": upto("channels"),
             "task_tensors": ListOf(TENSOR, max_len=bound("task_tensors"))})
TASK_NAME = Scalar("a task name (lower case letters, digits, '-' or '_', at most 32)",
                   lambda v: isinstance(v, str) and re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", v) is not None)
MANIFEST_SCHEMA = Obj({
    "format": STR,
    "schema_version": INT,
    "sample": Obj({"height": upto("latent_side"), "width": upto("latent_side"), "batch": upto("batch"),
                   "text_len": upto("text_len"), "image_height": upto("image_side"),
                   "image_width": upto("image_side")}),
    "codec": Obj({"kind": one_of("identity", "vae"), "scale_factor": upto("latent_side"),
                  "latent_channels": upto("channels"), "scaling_factor": NUM},
                 {"shift_factor": Opt(NUM), "graphs": Opt(DictOf(COMPONENT_GRAPH, max_len=8))}),
    "tasks": DictOf(TASK, key=TASK_NAME, max_len=bound("tasks")),
    "graphs": ListOf(GRAPH, max_len=bound("graphs")),
    "files": DictOf(FILE_ENTRY, key=PATH, max_len=bound("files")),
    "scheduler": Obj({"num_train_timesteps": upto("num_train_timesteps", 2)}),
}, {
    "dtr": Opt(Obj({"timesteps": upto("num_train_timesteps", 2), "alpha": NUM, "beta": NUM})),
    "text_encoder": Opt(Obj({"graph": Obj({"file": NAME, "inputs": ListOf(TENSOR, 1, 16),
                                           "outputs": ListOf(TENSOR, 1, 16),
                                           "tokenizer": Obj({"files": ListOf(NAME, 1, 8),
                                                             "max_length": upto("tokenizer_max_length", 2)},
                                                            {"pad_id": upto("vocab_size", 0)})},
                                          {"weights": ListOf(NAME, max_len=4096)})})),
    "model": Obj({}, {"unet_config": Opt(Obj({})), "upcycle": Opt(Obj({}))}),
    "sampling": Opt(Obj({"source": STR}, {"file": NAME, "tasks": ListOf(STR)})),
})
WEIGHT_RECORD = Obj({"name": STR, "file": NAME, "offset": NONNEG, "length": NONNEG,
                     "shape": ListOf(NONNEG, max_len=bound("tensor_rank")), "dtype": one_of(*WEIGHT_DTYPES)})
WEIGHT_INDEX_SCHEMA = Obj({"format": STR, "schema_version": INT,
                           "initializers": ListOf(WEIGHT_RECORD, max_len=bound("graph.initializers"))})


# --- reading -----------------------------------------------------------------------------------

def parse_json(data: bytes, where: str) -> Any:
    """JSON from bytes, refusing NaN/Infinity and anything that is not UTF-8 JSON."""
    def no_constants(name):
        raise ValueError(f"{name} is not allowed")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackageError(f"{where} is not valid JSON: {str(e)[:200]}",
                           hint="the package is damaged; re-copy or re-export it") from None


def check_versioned(doc: Any, fmt: str, schema: int, where: str) -> dict:
    from taskfold import __version__

    if not isinstance(doc, dict) or doc.get("format") != fmt:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise PackageError(f"{where} is not a taskfold {fmt} document (format {got!r}, expected {fmt!r})",
                           hint="give the --out of `taskfold export`")
    version = doc.get("schema_version")
    if not _is_int(version) or version > schema or version < 1:
        raise PackageError(f"{where} has schema_version {version!r}; this taskfold ({__version__}) reads schema "
                           f"{schema} and older", hint="upgrade taskfold to read it")
    return doc


def validate_manifest(doc: Any) -> dict:
    """The manifest, checked: structure and types, and the cross-references between its parts."""
    check_versioned(doc, FORMAT, SCHEMA_VERSION, MANIFEST)
    MANIFEST_SCHEMA(doc, "manifest")
    for i, g in enumerate(doc["graphs"]):
        if g["task"] not in doc["tasks"]:
            raise PackageError(f"manifest: graphs[{i}].task {g['task']!r} is not one of the package's tasks "
                               f"({', '.join(doc['tasks'])})", hint="re-export the package")
        if g["format"] != "diffusers":  # graphs a runtime runs declare their inputs and outputs
            Obj({"inputs": ListOf(TENSOR, 1), "outputs": ListOf(TENSOR, 1)})(g, f"manifest.graphs[{i}]")
        if g.get("layout") == "adapters" and g["format"] in ("onnx", "tensorrt"):  # its task file and backbone
            Obj({"adapter": PATH, "backbone_id": NONNEG, "task_channels": POS, "task_tensors": ListOf(TENSOR, 1)})(
                g, f"manifest.graphs[{i}]")
            names = [t["name"] for t in g["task_tensors"]]
            clash = [n for n in names if names.count(n) > 1 or n in {t["name"] for t in g["inputs"]}]
            if clash:
                raise PackageError(f"manifest: graphs[{i}].task_tensors: {clash[0]!r} is named twice or like one of "
                                   "the graph's inputs", hint="re-export the package")
    for name, t in doc["tasks"].items():
        if t["inputs"][0] != "noisy":
            raise PackageError(f"manifest: tasks[{name!r}].inputs must start with 'noisy', got {t['inputs']}",
                               hint="re-export the package")
        try:  # the whole definition, recommended sampling included, holds together
            task_from_record(t)
        except TaskfoldError as e:
            raise PackageError(f"manifest: tasks[{name!r}]: {e}", hint="re-export the package") from None
    return doc


def validate_weight_index(doc: Any, where: str) -> list[dict]:
    """The records of a graph's weight index, each one's ``length`` equal to its shape x dtype size."""
    import numpy as np

    check_versioned(doc, WEIGHT_INDEX_FORMAT, WEIGHT_INDEX_SCHEMA_VERSION, where)
    try:
        WEIGHT_INDEX_SCHEMA(doc, where)
    except PackageError as e:
        raise PackageError(str(e).replace("manifest: ", "", 1), hint=e.hint) from None
    for i, rec in enumerate(doc["initializers"]):
        want = math.prod(rec["shape"]) * np.dtype(rec["dtype"]).itemsize  # Python ints: no wrap-around
        if want != rec["length"]:
            raise PackageError(f"{where}: initializers[{i}] ({rec['name']!r}) has length {rec['length']}, but shape "
                               f"{rec['shape']} of {rec['dtype']} is {want} bytes",
                               hint="the package is damaged; re-copy or re-export it")
    return doc["initializers"]
