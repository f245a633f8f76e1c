"""A package from a URL (or a folder) is untrusted in JavaScript too: the crafted packages of
``tests/runtime/test_untrusted_package.py`` that apply to it are refused by the JS runtime with the Python
runtime's words, before any ONNX Runtime session exists, and a fetched package makes no request outside
its own folder."""

from __future__ import annotations

import json

import pytest

from ..runtime.test_untrusted_package import ATTACKS, MALFORMED, Crafted, apply_malformed
from .conftest import run_node

#: attacks that need a file system's links: they apply to a folder opened by Node, not to a URL
LINK_ATTACKS = {"index file via unlisted absolute symlink", "index file via unlisted relative symlink",
                "listed symlink pointing out", "graph path through a folder symlink inside",
                "listed file hard-linked to a file outside"}


def _flip_byte(c: Crafted):
    p = c.root / "onnx" / "shared.weights"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))  # same size, the manifest's hash now wrong


def _grow(c: Crafted):
    p = c.root / "onnx" / "t2i.weights"
    p.write_bytes(p.read_bytes() + b"\0" * 8)  # the manifest's size now wrong


EXTRA = {
    "weights modified (hash differs)": (lambda c, s: _flip_byte(c), "sha256 differs from the manifest"),
    "weights grown (size differs)": (lambda c, s: _grow(c), "the manifest says"),
}


@pytest.fixture(scope="module")
def refusals(node, tiny_package, tmp_path_factory):
    """Every crafted package, opened by the JS runtime from its folder and (where it applies) by URL."""
    root = tmp_path_factory.mktemp("js-crafted")
    cases, words = [], {}
    attacks = {**ATTACKS, **EXTRA}
    for i, (name, (craft, expect)) in enumerate(attacks.items()):
        base = root / f"a{i}"
        (base / "outside").mkdir(parents=True)
        secret = base / "outside" / "secret.bin"
        secret.write_bytes(b"top secret " * 100)
        c = Crafted(tiny_package[1], base / "pkg")
        craft(c, secret)
        c.save()
        words[name] = expect
        cases.append({"id": name, "dir": str(c.root), "url": False, "run": True})
        if name not in LINK_ATTACKS:
            cases.append({"id": f"{name} (URL)", "dir": str(c.root), "url": True, "run": True})
    for i, (name, (change, expect)) in enumerate(MALFORMED.items()):
        c = Crafted(tiny_package[1], root / f"m{i}" / "pkg")
        apply_malformed(c, change)
        words[f"manifest: {name}"] = expect
        cases.append({"id": f"manifest: {name}", "dir": str(c.root), "url": False, "run": False})
        cases.append({"id": f"manifest: {name} (URL)", "dir": str(c.root), "url": True, "run": False})
    cases.append({"id": "pristine", "dir": str(tiny_package[1]), "url": False, "run": True})
    cases.append({"id": "pristine (URL)", "dir": str(tiny_package[1]), "url": True, "run": True})
    (root / "cases.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/try_open.mjs", str(root / "cases.json"), str(root / "out.json")])
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "out.json").read_text()), words


def test_the_pristine_package_opens_and_runs(refusals):
    out, _ = refusals
    for key in ("pristine", "pristine (URL)"):
        assert out[key]["errors"] == [None, None] and out[key]["sessions"] > 0, out[key]


@pytest.mark.parametrize("attack", list(ATTACKS) + list(EXTRA))
def test_crafted_package_is_refused_before_any_session(refusals, attack):
    out, words = refusals
    for key in (attack, f"{attack} (URL)"):
        if key not in out:
            continue
        r = out[key]
        assert r["sessions"] == 0, f"{key}: a session was created for a crafted package"
        for err in r["errors"]:
            assert err is not None and err["name"] == "PackageError", f"{key}: {err}"
        assert words[attack] in r["errors"][0]["message"], f"{key}: {r['errors'][0]['message']}"
        if r["requests"] is not None:  # fetched: nothing asked for outside the package's folder
            assert all(u.startswith("/pkg/") for u in r["requests"]), r["requests"]
            assert not any("secret" in u or "outside" in u for u in r["requests"]), r["requests"]


def test_the_expand_bomb_is_refused_naming_the_graph_the_value_and_the_bound(refusals):
    """Bounding every value's shape (js/src/shapes.js): refused before ONNX Runtime allocates 8 GB."""
    out, _ = refusals
    for key in ("Expand to 2e9 elements", "Expand to 2e9 elements (URL)"):
        assert ("onnx/t2i.onnx is not a graph taskfold writes: value 'bomb' would hold 2000000000 elements (shape "
                "[2000000000]), more than the 16777216 a graph of this package's size may") in out[key]["errors"][0]["message"]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_manifest_is_one_error_naming_the_key(refusals, case):
    out, words = refusals
    for key in (f"manifest: {case}", f"manifest: {case} (URL)"):
        (err,) = out[key]["errors"]
        assert err is not None and err["name"] == "PackageError", f"{key}: {err}"
        assert words[f"manifest: {case}"] in err["message"], f"{key}: {err['message']}"
        assert out[key]["sessions"] == 0
