"""The package limits: :file:`package_schema.json`, read once.

That JSON file is the one statement of what a package may hold — every size bound, the
operators each kind of graph may use, the tokenizer kinds — shared by this runtime, the
exporter (which admits its own graphs before writing them) and the JavaScript runtime. This
module only loads it and names its parts.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SCHEMA_FILE = Path(__file__).with_name("package_schema.json")


@lru_cache(maxsize=1)
def limits() -> dict:
    """The whole limits document (parsed once per process)."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def bound(name: str) -> int:
    """One size bound by name (``"image_side"``), or nested (``"bytes.graph"``, ``"graph.nodes"``)."""
    node = limits()["bounds"]
    for part in name.split("."):
        node = node[part]
    return node


def operators(kind: str) -> dict[str, frozenset[str]]:
    """``domain -> operator types`` a graph of ``kind`` (``unet``, ``text_encoder``, ``codec``) may use."""
    return {d: frozenset(ops) for d, ops in limits()["operators"][kind].items()}


def opsets() -> dict[str, tuple[int, int]]:
    """``domain -> (oldest, newest)`` opset versions a graph may import."""
    return {d: (lo, hi) for d, (lo, hi) in limits()["opsets"].items()}


def tokenizer_kinds() -> dict:
    """The tokenizer components and patterns a package's ``tokenizer.json`` may use."""
    return limits()["tokenizer"]
