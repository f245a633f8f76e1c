"""One base for every stage config: typed fields, ``to_dict``/``from_dict``, errors that name the field.

Every stage config (``UpcycleConfig``, ``TrainConfig``, ``ExportConfig``, ``BenchConfig``, a
declared ``TaskSpec``) is a frozen dataclass deriving from :class:`Config`. Configs come from
JSON files and manifests other people wrote, so :meth:`Config.from_dict` refuses anything but
an object, unknown keys, and values of the wrong type (``num_experts: expected an integer,
got "4"``; NaN and infinities are never numbers here) with one :class:`ConfigError` before the
dataclass's own range checks run. Types are read from the field annotations: ``int``,
``float``, ``bool``, ``str``, ``X | None``, ``tuple[X, ...]``, ``dict`` and nested configs.

``cli_options`` lets the CLI take its options and the help text's defaults from the fields, so
a default lives in one place.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints

from .errors import ConfigError


def is_finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def max_threads() -> int:
    """The most intra-op threads taskfold accepts: 4 per core of this machine (more only contend)."""
    import os

    return 4 * (os.cpu_count() or 1)


def check_threads(n, what: str = "--threads"):
    """``n`` (``None``: the library's default) if it is a thread count this machine can use."""
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= max_threads():
        raise ConfigError(f"{what} {n!r} is not between 1 and {max_threads()} (4 per core; this machine has "
                          f"{max_threads() // 4})", hint=f"leave {what} unset to use one thread per core")
    return n


#: The largest noise seed: seeds are MT19937's ``init_genrand`` seeds (taskfold.runtime.noise), 32 bits.
MAX_SEED = 2**32 - 1


def check_seed(seed, what: str = "--seed"):
    """A noise seed: an integer in [0, 2**32 - 1] (see :mod:`taskfold.runtime.noise`)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{what} {seed!r} is not an integer in [0, {MAX_SEED}] (2**32 - 1)",
                          hint="seeds are 32-bit unsigned integers (MT19937's seed)")
    return seed


def check_finite(value, what: str):
    """``value`` (or ``None``) if it is a finite number."""
    if value is not None and not is_finite_number(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return value


def _describe(tp) -> str:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in parts) + " or null"
    if origin is tuple:
        return f"a list of {_describe(get_args(tp)[0])}"
    if origin is dict or tp is dict:
        return "an object"
    if isinstance(tp, type) and issubclass(tp, Config):
        return f"an object ({tp.__name__})"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def coerce(tp, value, where: str, error=ConfigError):
    """``value`` checked against the annotation ``tp`` (lists become tuples, dicts nested configs)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        for a in get_args(tp):
            if a is type(None):
                continue
            try:
                return coerce(a, value, where, error)
            except error:
                pass
        raise error(f"{where}: expected {_describe(tp)}, got {_show(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: expected {_describe(tp)}, got {_show(value)}")
        item = get_args(tp)[0]
        return tuple(coerce(item, v, f"{where}[{i}]", error) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise error(f"{where}: expected an object, got {_show(value)}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Config):
        return value if isinstance(value, tp) else tp.from_dict(value, where=where)
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: is_finite_number,
          bool: lambda v: isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(tp)
    if ok is None or ok(value):
        return float(value) if tp is float else value
    raise error(f"{where}: expected {_describe(tp)}, got {_show(value)}")


def _show(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}"


class Config:
    """Mixin for frozen dataclass configs: typed ``from_dict``, ``to_dict`` (JSON-ready)."""

    #: How messages name the config ("upcycle config"); a plain class attribute, not a field.
    label: typing.ClassVar[str] = "config"

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        hints = get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d, where: str | None = None, **overrides):
        """The config from a JSON object: no unknown keys, every value of its field's type."""
        where = where or cls.label
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a JSON object, got {type(d).__name__}")
        d = {**d, **overrides}
        types_ = cls.field_types()
        unknown = sorted(set(d) - set(types_))
        if unknown:
            raise ConfigError(f"unknown {where} key(s) {unknown}; known: {sorted(types_)}")
        return cls(**{k: coerce(types_[k], v, f"{where}.{k}") for k, v in d.items()})

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _plain(v):
    if isinstance(v, Config):
        return v.to_dict()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def default_of(cls, name: str):
    """The default of field ``name`` of the dataclass ``cls`` (for help texts)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def help_default(cls, name: str, text: str) -> str:
    """``text`` with the field's default appended: ``"experts per FFN (default 4)"``."""
    d = default_of(cls, name)
    if isinstance(d, tuple):
        d = ",".join(map(str, d))
    return f"{text} (default {d})" if d is not None and not isinstance(d, bool) else text


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _arg_type(tp):
    """The argparse ``type`` for a field annotation (``tuple[str, ...]`` -> comma-separated)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _arg_type(inner[0]) if len(inner) == 1 else str
    if origin is tuple:
        return _csv
    return tp if tp in (int, float, str) else str


def option(parser, cls, name: str, *flags: str, help: str, unset: bool = False, **kw):
    """An option for field ``name`` of config ``cls``: its type from the annotation, its help ending in the
    field's default. ``unset``: the option's own default is ``None`` (the config, a preset or a file decides),
    but the help still shows the field's default."""
    if kw.get("action") != "store_true":
        kw.setdefault("type", _arg_type(cls.field_types()[name]))
    if not unset:
        d = default_of(cls, name)
        kw.setdefault("default", list(d) if isinstance(d, tuple) else d)
    elif kw.get("action") == "store_true":
        kw.setdefault("default", None)
    parser.add_argument(*(flags or (f"--{name.replace('_', '-')}",)), dest=name,
                        help=help_default(cls, name, help), **kw)


def from_args(cls, args, names, **fixed):
    """The config ``cls`` from the options of ``names`` that were given (``None`` = keep the field's default)."""
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return cls.from_dict(given | fixed)
