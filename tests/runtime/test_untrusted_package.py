"""A package is untrusted input: crafted packages are refused before any session, and nothing outside is touched.

Each attack starts from a copy of the tiny exported package, changes it the way an attacker
would (updating the manifest's sizes and hashes to match, so integrity checks alone do not
catch it), and checks three things: ``taskfold verify`` exits 2 naming the bad entry; the
runtime raises :class:`PackageError` before any ONNX Runtime session exists; and no file or
folder outside the package is opened, stat'ed or listed (a secret file the test writes next
to the package, watched with an audit hook and wrappers around ``os.stat``/``os.lstat``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskfold.cli import main
from taskfold.errors import PackageError
from taskfold.runtime import open_package
from taskfold.runtime.reader import PackageReader, verify_package

# --- the watch on the outside --------------------------------------------------------------------

_WATCHED: list[str] = []  # path prefixes nobody may touch
_SEEN: list[tuple[str, str]] = []


def _touches(value) -> str | None:
    if isinstance(value, (str, bytes, os.PathLike)):
        try:
            text = os.fsdecode(value)
        except TypeError:
            return None
        if any(text.startswith(p) for p in _WATCHED):
            return text
    return None


def _audit(event, args):
    if _WATCHED:
        for a in args if isinstance(args, tuple) else ():
            if (hit := _touches(a)) is not None:
                _SEEN.append((event, hit))


sys.addaudithook(_audit)


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A secret file beside the package's parent; records every access to that folder."""
    folder = tmp_path / "outside"
    folder.mkdir()
    secret = folder / "secret.bin"
    secret.write_bytes(np.arange(1 << 14, dtype=np.float32).tobytes())
    for name in ("stat", "lstat", "readlink"):
        real = getattr(os, name)

        def wrapped(path, *a, _real=real, _name=name, **k):
            if (hit := _touches(path)) is not None:
                _SEEN.append((f"os.{_name}", hit))
            return _real(path, *a, **k)
        monkeypatch.setattr(os, name, wrapped)
    _WATCHED[:] = [str(folder), str(folder.resolve())]
    _SEEN.clear()
    yield secret
    _WATCHED.clear()


@pytest.fixture
def sessions(monkeypatch):
    """Every ONNX Runtime session created while the test runs."""
    import onnxruntime as ort

    made = []
    real = ort.InferenceSession

    def recording(*a, **k):
        made.append(a[0] if a else k.get("path_or_bytes"))
        return real(*a, **k)
    monkeypatch.setattr(ort, "InferenceSession", recording)
    return made


# --- crafting ----------------------------------------------------------------------------------

class Crafted:
    """A copy of the package whose files and manifest a test rewrites (hashes kept consistent)."""

    def __init__(self, src: Path, dst: Path):
        shutil.copytree(src, dst)
        self.root = dst
        self.manifest = json.loads((dst / "manifest.json").read_text())

    def graph(self, task="t2i"):
        return next(g for g in self.manifest["graphs"] if g["task"] == task and g["format"] == "onnx")

    def index(self, task="t2i") -> dict:
        return json.loads((self.root / self.graph(task)["weight_index"]).read_text())

    def write_index(self, doc, task="t2i"):
        rel = self.graph(task)["weight_index"]
        (self.root / rel).write_text(json.dumps(doc))
        self.relist(rel)

    def relist(self, rel, path: Path | None = None):
        data = (path or self.root / rel).read_bytes()
        self.manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def save(self, text: str | None = None):
        (self.root / "manifest.json").write_text(json.dumps(self.manifest) if text is None else text)
        return self.root


def _index_file(c: Crafted, name: str):
    doc = c.index()
    doc["initializers"][1]["file"] = name
    c.write_index(doc)


def _symlink_weights(c: Crafted, secret: Path, relative: bool, listed: bool):
    link = c.root / "onnx" / "evil.weights"
    os.symlink(os.path.relpath(secret, link.parent) if relative else secret, link)
    doc = c.index()
    doc["initializers"][1].update(file="evil.weights", offset=0, length=16384, shape=[128, 32])
    c.write_index(doc)
    if listed:  # the attacker lists the link with the target's true size and hash
        c.relist("onnx/evil.weights", secret)


def _onnx_external_location(c: Crafted, secret: Path):
    import onnx

    rel = c.graph()["path"]
    model = onnx.load(str(c.root / rel), load_external_data=False)
    t = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for e in t.external_data:
        if e.key == "location":
            e.value = os.path.relpath(secret, (c.root / rel).parent)
    (c.root / rel).write_bytes(model.SerializeToString())
    c.relist(rel)


def _truncate_weights(c: Crafted):
    p = c.root / "onnx" / "shared.weights"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    c.relist("onnx/shared.weights")


def _offset_beyond(c: Crafted):
    doc = c.index()
    size = (c.root / "onnx" / "shared.weights").stat().st_size
    rec = next(r for r in doc["initializers"] if r["file"] == "shared.weights")
    rec["offset"] = size - 8
    c.write_index(doc)


def _unlist(c: Crafted, task="t2i"):
    g = c.graph(task)
    for rel in [g["path"], g["weight_index"], f"onnx/{task}.weights"]:
        c.manifest["files"].pop(rel)


def _rewrite_graph(c: Crafted, change, task="t2i"):
    import onnx

    rel = c.graph(task)["path"]
    model = onnx.load(str(c.root / rel), load_external_data=False)
    change(model, onnx)
    (c.root / rel).write_bytes(model.SerializeToString())
    c.relist(rel)


def _function_constant(c: Crafted, secret: Path):
    """A model-local function whose Constant takes its tensor from the function's attribute default, stored
    as external data pointing at a file of the attacker's (here: a listed copy, so only admission stops it)."""
    def change(model, onnx):
        h = onnx.helper
        (c.root / "onnx" / "hidden.bin").write_bytes(secret.read_bytes()[:64])
        c.relist("onnx/hidden.bin")
        t = onnx.TensorProto(name="hidden", data_type=1, dims=[16], data_location=onnx.TensorProto.EXTERNAL)
        for k, v in (("location", "hidden.bin"), ("offset", "0"), ("length", "64")):
            t.external_data.add(key=k, value=v)
        default = h.make_attribute("value", t)
        fn = h.make_function("evil", "Hide", [], ["y"], [h.make_node("Constant", [], ["y"], value=t)],
                             [h.make_opsetid("", 17)], attributes=[])
        fn.attribute_proto.append(default)
        model.functions.append(fn)
        model.opset_import.append(h.make_opsetid("evil", 1))
        model.graph.node.append(h.make_node("Hide", [], ["hidden_out"], domain="evil"))
    _rewrite_graph(c, change)


def _folder_symlink(c: Crafted):
    """``onnx2 -> onnx`` inside the package; the graph is named through the link."""
    os.symlink("onnx", c.root / "onnx2")
    g = c.graph()
    g["path"] = g["path"].replace("onnx/", "onnx2/", 1)
    c.manifest["files"][g["path"]] = c.manifest["files"]["onnx/t2i.onnx"]


def _hard_link(c: Crafted, secret: Path):
    target = c.root / "text_encoder" / "tokenizer.json"
    outside_copy = secret.with_name("tokenizer.json")
    shutil.copy(target, outside_copy)
    target.unlink()
    os.link(outside_copy, target)
    _WATCHED.append(str(outside_copy))


def _add_nodes(c: Crafted, kind: str):
    def change(model, onnx):
        h = onnx.helper
        if kind == "expand":
            model.graph.node.append(h.make_node("Constant", [], ["bomb_shape"],
                                                value=h.make_tensor("s", 7, [1], [2_000_000_000])))
            model.graph.node.append(h.make_node("Expand", ["timestep", "bomb_shape"], ["bomb"]))
        elif kind == "loop":
            body = h.make_graph([h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                                [h.make_tensor_value_info("i", 7, []), h.make_tensor_value_info("cond_in", 9, [])],
                                [h.make_tensor_value_info("cond_out", 9, [])])
            model.graph.node.append(h.make_node("Constant", [], ["trips"], value=h.make_tensor("n", 7, [], [10 ** 12])))
            model.graph.node.append(h.make_node("Loop", ["trips", ""], [], body=body))
        elif kind == "domain":
            model.opset_import.append(h.make_opsetid("evil", 1))
            model.graph.node.append(h.make_node("Run", ["timestep"], ["ran"], domain="evil"))
        elif kind == "input":
            model.graph.input.append(h.make_tensor_value_info("extra", 1, [1]))
    _rewrite_graph(c, change)


def _sparse_graph(c: Crafted):
    rel = c.graph()["path"]
    with open(c.root / rel, "r+b") as f:
        f.truncate(6 << 30)  # sparse: no disk used
    c.manifest["files"][rel] = {"bytes": 6 << 30, "sha256": "0" * 64}


def _tokenizer_regex(c: Crafted):
    rel = "text_encoder/tokenizer.json"
    d = json.loads((c.root / rel).read_text())
    d["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False}
    (c.root / rel).write_text(json.dumps(d))
    c.relist(rel)


ATTACKS = {
    "index file with ..": (lambda c, s: _index_file(c, "../../outside/secret.bin"), "expected a file name"),
    "index file absolute": (lambda c, s: _index_file(c, str(s)), "expected a file name"),
    "index file via unlisted absolute symlink": (lambda c, s: _symlink_weights(c, s, False, False),
                                                 "passes through a symbolic link"),
    "index file via unlisted relative symlink": (lambda c, s: _symlink_weights(c, s, True, False),
                                                 "passes through a symbolic link"),
    "listed symlink pointing out": (lambda c, s: _symlink_weights(c, s, True, True), "passes through a symbolic link"),
    # --- a package is code (issue 23) ---
    "function whose Constant reads external data": (lambda c, s: _function_constant(c, s), "defines 1 function"),
    "graph path through a folder symlink inside": (lambda c, s: _folder_symlink(c), "passes through a symbolic link"),
    "listed file hard-linked to a file outside": (lambda c, s: _hard_link(c, s), "hard links"),
    "Expand to 2e9 elements": (lambda c, s: _add_nodes(c, "expand"), "would hold 2000000000 elements"),
    "Loop of 1e12 trips": (lambda c, s: _add_nodes(c, "loop"), "uses operator Loop"),
    "operator from an unknown domain": (lambda c, s: _add_nodes(c, "domain"), "imports opset evil 1"),
    "graph input the manifest does not declare": (lambda c, s: _add_nodes(c, "input"), "its inputs are"),
    "listed 6 GB sparse graph": (lambda c, s: _sparse_graph(c), "more than the 536870912 a file of its kind"),
    "catastrophic tokenizer regex": (lambda c, s: _tokenizer_regex(c), "regular expression '(a+)+$'"),
    "empty shape for a graph input": (lambda c, s: c.graph()["inputs"][0].update(shape=[]),
                                      "the manifest declares float32 []"),
    "manifest files entry with ..": (
        lambda c, s: c.manifest["files"].update({"../outside/secret.bin": {"bytes": 1, "sha256": "0" * 64}}),
        "'../outside/secret.bin'"),
    "manifest files entry absolute": (
        lambda c, s: c.manifest["files"].update({str(s): {"bytes": 1, "sha256": "0" * 64}}), "secret.bin"),
    "graph path outside": (lambda c, s: c.graph().update(path="../outside/secret.bin"), "graphs[0].path"),
    "graph path absolute": (lambda c, s: c.graph().update(path=str(s)), "graphs[0].path"),
    "weight_index outside": (lambda c, s: c.graph().update(weight_index="../outside/secret.bin"),
                             "graphs[0].weight_index"),
    "external_data outside": (lambda c, s: c.graph().update(external_data=["../outside/secret.bin"]),
                              "graphs[0].external_data[0]"),
    "onnx external-data location outside": (_onnx_external_location, "external data of"),
    "unlisted graph files": (lambda c, s: _unlist(c), "'onnx/t2i.onnx' is not listed"),
    "offset beyond the file": (lambda c, s: _offset_beyond(c), "lie beyond the end of onnx/shared.weights"),
    "truncated weights with updated hash": (lambda c, s: _truncate_weights(c), "lie beyond the end"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_crafted_package_is_refused_without_touching_the_outside(tiny_package, tmp_path, outside, sessions, capsys,
                                                                  attack):
    craft, words = ATTACKS[attack]
    c = Crafted(tiny_package[1], tmp_path / "pkg")
    craft(c, outside)
    pkg = c.save()
    _SEEN.clear()  # crafting reads the secret; from here on nothing may
    capsys.readouterr()

    assert main(["verify", str(pkg)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err, err
    assert not sessions

    with pytest.raises(PackageError) as e:
        p = open_package(pkg)
        p.unet("t2i")
        p.encode_text(["a red circle"])
    assert words in str(e.value), str(e.value)
    assert not sessions, "a session was created for a crafted package"
    with pytest.raises(PackageError):
        open_package(pkg).generate("t2i", "a red circle", steps=1)
    assert not sessions
    assert _SEEN == [], f"touched outside the package: {_SEEN}"


def test_unlisted_file_inside_is_reported_and_verify_names_each_problem(tiny_package, tmp_path, capsys):
    c = Crafted(tiny_package[1], tmp_path / "pkg")
    (c.root / "onnx" / "stray.bin").write_bytes(b"x")
    _unlist(c, "edit")
    pkg = c.save()
    problems = verify_package(pkg)
    assert "onnx/stray.bin: in the package folder but not listed in the manifest" in problems
    assert any("'onnx/edit.onnx' is not listed" in p for p in problems)
    assert any(p.startswith("onnx/edit.weights: in the package folder but not listed") for p in problems)
    # the runtime still runs what is intact, and refuses what is not
    p = open_package(pkg)
    assert p.unet("t2i") is not None
    with pytest.raises(PackageError, match="'onnx/edit.onnx' is not listed"):
        p.unet("edit")


MALFORMED = {
    "a JSON list": ("[1, 2]", "not a taskfold"),
    "not JSON": ("{nope", "not valid JSON"),
    "NaN": (None, "NaN is not allowed"),
    "missing files": ("files", "missing key 'files'"),
    "missing graphs": ("graphs", "missing key 'graphs'"),
    "missing tasks": ("tasks", "missing key 'tasks'"),
    "missing sample": ("sample", "missing key 'sample'"),
    "missing codec": ("codec", "missing key 'codec'"),
    "missing scheduler": ("scheduler", "missing key 'scheduler'"),
    "files of the wrong type": ({"files": [1]}, "manifest.files: expected an object"),
    "bytes a string": ({"files.onnx/t2i.onnx.bytes": "7"}, "expected an integer >= 0"),
    "sha256 not hex": ({"files.onnx/t2i.onnx.sha256": "zz"}, "expected a sha256 hex digest"),
    "sample height zero": ({"sample.height": 0}, "manifest.sample.height: expected an integer from 1 to 512"),
    # every size a manifest sets has an upper bound (package_schema.json)
    "sample height 1e5": ({"sample.height": 10 ** 5}, "manifest.sample.height: expected an integer from 1 to 512"),
    "image side 1e5": ({"sample.image_width": 10 ** 5}, "sample.image_width: expected an integer from 1 to 4096"),
    "timesteps 1e9": ({"scheduler.num_train_timesteps": 10 ** 9},
                      "scheduler.num_train_timesteps: expected an integer from 2 to 10000"),
    "latent channels 1e7": ({"codec.latent_channels": 10 ** 7}, "codec.latent_channels: expected an integer from 1 to 64"),
    "tokenizer max_length 1e8": ({"text_encoder.graph.tokenizer.max_length": 10 ** 8},
                                 "tokenizer.max_length: expected an integer from 2 to 512"),
    "batch 0 in a graph input": ({"graphs.0.inputs.0.shape.0": 0}, "expected an integer from 1 to 2**31"),
    "empty tensor name": ({"graphs.0.inputs.0.name": ""}, "expected a tensor name"),
    "unknown tensor dtype": ({"graphs.0.inputs.0.dtype": "complex64"}, "inputs[0].dtype: expected one of"),
    "task name with a newline": ({"tasks": {"depth\n": {}}}, "expected a task name"),
    "file name with control characters": ({"files": {"onnx/\x1b[2K.onnx": {"bytes": 1, "sha256": "0" * 64}}},
                                          "expected a relative path"),
    "guidance unknown": ({"tasks.t2i.guidance": "magic"}, "manifest.tasks['t2i'].guidance"),
    "graph of an unknown task": ({"graphs.0.task": "nope"}, "'nope' is not one of the package's tasks"),
    "graph without inputs": ({"graphs.0.inputs": None}, "missing key 'inputs'"),
    "newer schema": ({"schema_version": 99}, "schema_version 99"),
    "strength a string": ({"tasks.sr.strength": "high"}, "manifest.tasks['sr'].strength: expected a finite number"),
    "strength above 1": ({"tasks.sr.strength": 2}, "strength must be a number in (0, 1], got 2"),
    "strength on a text-only task": ({"tasks.t2i.strength": 0.5}, "strength 0.5 needs an image input"),
    "steps zero": ({"tasks.edit.steps": 0}, "manifest.tasks['edit'].steps: expected an integer >= 1"),
    "steps huge": ({"tasks.edit.steps": 10 ** 6}, "steps must be an integer from 1 to 1000"),
    "sampling record without source": ({"sampling": {"tasks": []}}, "missing key 'source'"),
}


def _set(doc, dotted, value):
    keys = dotted.split(".")
    if keys[0] == "files" and len(keys) > 2:
        keys = ["files", ".".join(keys[1:-1]), keys[-1]]
    node = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is None and not isinstance(node, list):
        node.pop(last)
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def apply_malformed(c: Crafted, change) -> None:
    """Write ``c``'s manifest changed as a MALFORMED entry says: a top-level key dropped, the whole text
    replaced, a NaN, or dotted keys set (also used by the JavaScript runtime's tests)."""
    if isinstance(change, str) and change in c.manifest:
        c.manifest.pop(change)
        c.save()
    elif isinstance(change, str):
        c.save(change)
    elif change is None:
        c.save(json.dumps(c.manifest).replace('"guidance_scale": 7.5', '"guidance_scale": NaN', 1))
    else:
        for k, v in change.items():
            _set(c.manifest, k, v)
        c.save()


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_manifest_is_one_error_naming_the_key(tiny_package, tmp_path, capsys, case):
    change, words = MALFORMED[case]
    c = Crafted(tiny_package[1], tmp_path / "pkg")
    apply_malformed(c, change)
    with pytest.raises(PackageError) as e:
        open_package(c.root)
    assert words in str(e.value), str(e.value)
    capsys.readouterr()
    assert main(["verify", str(c.root)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.startswith("error: ") and "Traceback" not in err


def test_pristine_package_verifies_and_each_file_is_hashed_once(tiny_package, monkeypatch):
    import hashlib as hl

    _, pkg_dir, _, _ = tiny_package
    reader = PackageReader(pkg_dir)
    assert reader.verify_all() == []
    closure = reader.referenced_files()
    assert set(closure) == set(reader.files)  # every listed file is read by something, and vice versa
    # Opening every task hashes each file once: the shared backbone is not re-hashed per task.
    calls = []
    real = hl.sha256

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr("taskfold.runtime.reader.hashlib.sha256", counting)
    p = open_package(pkg_dir)
    for t in p.tasks:
        p.unet(t)
    p.encode_text(["a red circle"])
    assert len(calls) == len(reader.files)


SEGFAULT = """
import sys, numpy as np
from taskfold.runtime import open_package
pkg, share = sys.argv[1], sys.argv[2] == "1"
x = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)
t = np.array([500.0], np.float32)
h = np.random.default_rng(1).standard_normal((1, 16, 64), dtype=np.float32)
unet = open_package(pkg, share_weights=share).unet("t2i")   # the package object is not kept
import gc; gc.collect()
a = unet(x, t, h)
p = open_package(pkg, share_weights=share)
u2 = p.unet("t2i"); p.close(); gc.collect()                 # a closed package: its calls still work
b = u2(x, t, h)
keep = open_package(pkg, share_weights=share)
c = keep.unet("t2i")(x, t, h)
np.save(sys.argv[3], np.stack([a, b, c]))
"""


@pytest.mark.parametrize("share", [True, False])
def test_a_dropped_package_cannot_crash_the_interpreter(tiny_package, tmp_path, share):
    _, pkg_dir, _, _ = tiny_package
    out = tmp_path / "out.npy"
    r = subprocess.run([sys.executable, "-c", SEGFAULT, str(pkg_dir), "1" if share else "0", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b, c = np.load(out)
    assert float(np.abs(c).max()) > 0.1
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, c)


def test_external_refs_agree_with_onnx_and_garbage_is_refused(tiny_package):
    import onnx
    from onnx.external_data_helper import uses_external_data

    from taskfold.runtime.onnx_refs import external_refs

    _, pkg_dir, _, _ = tiny_package
    for graph in sorted((pkg_dir / "onnx").glob("*.onnx")):
        model = onnx.load(str(graph), load_external_data=False)
        tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute
                                                   if a.type == onnx.AttributeProto.TENSOR]
        want = []
        for t in tensors:
            if uses_external_data(t):
                e = {x.key: x.value for x in t.external_data}
                want.append((t.name, e["location"], int(e.get("offset", 0)), int(e["length"])))
        got = [(r.tensor, r.location, r.offset, r.length) for r in external_refs(graph.read_bytes(), graph.name)]
        assert got == want and len(got) > 50, graph.name
    rng = np.random.default_rng(0)
    data = bytearray((pkg_dir / "onnx" / "t2i.onnx").read_bytes())
    for cut in (10, 1000, len(data) // 2):  # truncated models and random bytes: one PackageError each
        with pytest.raises(PackageError, match="not a well-formed ONNX model"):
            external_refs(bytes(data[:cut]) + rng.integers(0, 256, 64, dtype=np.uint8).tobytes(), "t2i.onnx")


# --- sizes and crashes (issue 23) ------------------------------------------------------------------

RESOURCE = """
import json, resource, sys, time
from taskfold.cli import main
from taskfold.errors import PackageError
from taskfold.runtime import open_package
pkg = sys.argv[1]
t0 = time.perf_counter()
rc = main(["verify", pkg])
try:
    open_package(pkg).generate("t2i", "a red circle", steps=1)
    refused = ""
except PackageError as e:
    refused = str(e)
print(json.dumps({"rc": rc, "refused": refused, "seconds": time.perf_counter() - t0,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _long_prompt_regex_and_max_length(c: Crafted):
    _tokenizer_regex(c)
    c.manifest["text_encoder"]["graph"]["tokenizer"]["max_length"] = 10 ** 8


RESOURCE_ATTACKS = {
    "Expand to 2e9 elements": (lambda c: _add_nodes(c, "expand"), "would hold 2000000000 elements"),
    "Loop of 1e12 trips": (lambda c: _add_nodes(c, "loop"), "uses operator Loop"),
    "listed 6 GB sparse graph": (_sparse_graph, "more than the 536870912"),
    "tokenizer max_length 1e8": (
        lambda c: c.manifest["text_encoder"]["graph"]["tokenizer"].update(max_length=10 ** 8), "from 2 to 512"),
    "catastrophic tokenizer regex": (_tokenizer_regex, "'(a+)+$'"),
}


@pytest.mark.parametrize("attack", list(RESOURCE_ATTACKS))
def test_resource_attacks_are_refused_quickly_and_in_little_memory(tiny_package, tmp_path, attack):
    """Each attack that used to exhaust the machine: refused by verify and the runtime in < 5 s, < 1 GB peak."""
    craft, words = RESOURCE_ATTACKS[attack]
    c = Crafted(tiny_package[1], tmp_path / "pkg")
    craft(c)
    pkg = c.save()
    done = subprocess.run([sys.executable, "-c", RESOURCE, str(pkg)], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: __import__("resource").setrlimit(
                              __import__("resource").RLIMIT_AS, (4 << 30, 4 << 30)))
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["rc"] == 2 and words in done.stderr and words in got["refused"], (got, done.stderr[-1000:])
    assert got["seconds"] < 5 and got["max_rss_mb"] < 1024, got


def test_a_weights_file_truncated_under_a_live_session_is_an_error_not_a_crash(tiny_package, tmp_path):
    """Weights stay mapped (open time); before each UNet call the runtime compares every mapped file's size with
    the size it was checked at, so a file cut short between calls is a PackageError, not SIGBUS (exit 135)."""
    c = Crafted(tiny_package[1], tmp_path / "pkg")
    pkg = c.save()
    code = """
import sys, numpy as np
from taskfold.errors import PackageError
from taskfold.runtime import open_package
p = open_package(sys.argv[1])
x = np.ones((1, 3, 16, 16), np.float32); t = np.array([500.0], np.float32); h = np.ones((1, 16, 64), np.float32)
a = p.unet("t2i")(x, t, h)
with open(sys.argv[1] + "/onnx/shared.weights", "r+b") as f:
    f.truncate(100)
try:
    p.unet("t2i")(x, t, h)
    print("ran")
except PackageError as e:
    print("refused:", e)
"""
    done = subprocess.run([sys.executable, "-c", code, str(pkg)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # 135 was SIGBUS
    assert "refused:" in done.stdout and "100 bytes now" in done.stdout and "changed while open" in done.stdout, \
        done.stdout


def test_deeply_nested_folders_are_one_problem_not_a_crash(tiny_package, tmp_path, capsys):
    c = Crafted(tiny_package[1], tmp_path / "pkg")
    pkg = c.save()
    deep = pkg / "junk"
    deep.mkdir()
    for _ in range(1200):  # os.makedirs (and shutil.rmtree, below) recurse themselves
        deep = deep / "d"
        deep.mkdir()
    try:
        assert main(["verify", str(pkg)]) == 2
        err = capsys.readouterr().err
        assert "folders nested deeper than 32" in err and "Traceback" not in err, err[-500:]
    finally:
        while deep != pkg:
            deep.rmdir()
            deep = deep.parent


def test_weight_index_shapes_whose_int64_product_wraps_are_refused(tiny_package, tmp_path):
    c = Crafted(tiny_package[1], tmp_path / "pkg")
    doc = c.index()
    rec = doc["initializers"][0]
    rec["shape"] = [2 ** 32, 2 ** 32]  # 2**64 elements: 0 in int64
    rec["length"] = 0
    c.write_index(doc)
    pkg = c.save()
    with pytest.raises(PackageError, match=r"shape \[4294967296, 4294967296\] of float32 is 73786976294838206464 bytes"):
        open_package(pkg).unet("t2i")


def test_every_graph_of_the_pristine_package_is_admitted_with_its_measured_sizes(tiny_package):
    _, pkg_dir, _, _ = tiny_package
    reader = PackageReader(pkg_dir)
    closure = reader.referenced_files()
    assert set(closure) == set(reader.files)
    kinds = {rel: a for rel, a in reader._admitted.items()}
    assert {r.split("/")[0] for r in kinds} == {"onnx", "text_encoder"}
    for rel, a in kinds.items():
        assert a.nodes > 100 and 0 < a.largest_value <= a.total_elements, (rel, a)
    unet = kinds["onnx/t2i.onnx"]
    # the largest value of the 16x16 tiny UNet: far below the cap it was admitted under (2**24)
    assert unet.largest_value < 1 << 24
