"""The one way into a package: every file the runtime, ``taskfold verify`` or ``taskfold bench`` opens.

A package is an artefact people download, so nothing in it may make taskfold touch anything
outside its folder (DESIGN.md, "Packages are untrusted input"). :class:`PackageReader`
guarantees, for every consumer:

* **The manifest is checked before use**: at most :data:`~.manifest.MAX_JSON_BYTES`, UTF-8 JSON
  without NaN/Infinity, every key and type of :data:`~.manifest.MANIFEST_SCHEMA`, one
  :class:`PackageError` naming the key and what was expected.
* **Every path is confined**: a path the manifest, a weight index or a graph names is refused
  when absolute or when it has a ``..`` component; it is resolved one component at a time
  from the package root with ``lstat``, and **a package holds no links**: a symbolic link
  anywhere on the way, or a file with more than one hard link, is refused without touching what
  it points to. (With no links, the path the manifest names is the real path, so the folder an
  ``.onnx`` graph's external data is resolved from is the one ONNX Runtime uses; a hard link
  could be a file outside the package that no path check sees. A package that arrived with
  links is copied whole with ``cp -rL``.) Nothing outside the package is opened, hashed or even
  ``stat``-ed — a refusal reveals nothing about the outside.
* **Graphs are admitted** (:mod:`.admission`): every ONNX graph the runtime runs — task UNets,
  the adapters layout's backbone, text encoder, codec — is parsed once and must be a graph
  taskfold's exporter could have written (operator set, declared inputs and outputs, bounded
  static shapes, external data only where the exporter puts it) before any session exists.
* **Every size is bounded** (:file:`package_schema.json`): each kind of file has a largest size
  that is checked before it is read, and no file is read whole past it.
* **Only listed files are opened**: a file is read only if ``manifest.files`` lists it with size
  and sha256, and only when its size on disk equals the listed one. With ``verify`` its sha256
  is checked too, once per reader, on the bytes actually read (a JSON side file is hashed from
  the bytes parsed; a weights file before it is mapped).
* **Byte ranges are checked**: every weight record (``<task>.index.json``) and every external-data
  reference inside an ``.onnx`` graph lies within its listed file, and a record's length equals
  its shape x dtype size.
* **The closure is checked**: :meth:`graph_files` lists every file a graph makes anyone read (the
  graph, its weight index, the files the index and the graph's external data name, every file of a
  CoreML bundle); each one must be listed. :meth:`verify_all` also reports files in the folder
  that the manifest does not list.

What it does not guard against: a package modified *while* it is open (the files are checked
when first used, then trusted; the runtime refuses to call a UNet whose mapped weight file changed
size, but a change during a call is not covered), and CoreML or TensorRT graphs,
which are checked for listing, size and hash only (see docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from taskfold.errors import ConfigError, PackageError

from .admission import admit_graph, value_cap
from .limits import bound
from .manifest import MANIFEST, MAX_JSON_BYTES, parse_json, validate_manifest, validate_weight_index
from .onnx_refs import external_refs

_CHUNK = 1 << 22
_HINT = "the package is damaged or was crafted; re-copy or re-export it (`taskfold verify PKG` lists every problem)"


@dataclass(frozen=True)
class WeightRecord:
    """One initializer a session takes from a mapped file: ``length`` bytes at ``offset`` of ``path``."""

    name: str
    path: Path  # resolved, inside the package
    offset: int
    length: int
    dtype: str
    shape: tuple[int, ...]


def _add(files: list[str], rel: str) -> None:
    if rel not in files:
        files.append(rel)


def _split(rel: str) -> list[str]:
    return [p for p in rel.split("/") if p not in ("", ".")]


def _is_relative(rel) -> bool:
    """A path the manifest may name: relative, POSIX, no ``..`` component, no backslash or NUL."""
    return isinstance(rel, str) and bool(rel) and not rel.startswith("/") and "\\" not in rel and "\0" not in rel \
        and ".." not in rel.split("/") and not (len(rel) > 1 and rel[1] == ":")


def graph_kind(rel: str) -> str:
    """The admission kind of a graph by where the manifest keeps it: ``text_encoder/``, ``codec/``, else ``unet``."""
    return {"text_encoder": "text_encoder", "codec": "codec"}.get(rel.split("/", 1)[0], "unet")


def file_bound(rel: str) -> int:
    """The largest size a listed file of this kind may have (``package_schema.json`` bounds.bytes)."""
    name = rel.rsplit("/", 1)[-1]
    if name.endswith(".onnx"):
        return bound("bytes.graph")
    if name.startswith("tokenizer") or name == "special_tokens_map.json":
        return bound("bytes.tokenizer")
    if name.endswith(".json"):
        return bound("bytes.json")
    if name.endswith(".safetensors") or name.endswith(".onnx_adapter"):
        return bound("bytes.adapter")
    if name.endswith(".weights") or name.endswith(".bin"):
        return bound("bytes.weights")
    return bound("bytes.other")


class PackageReader:
    """A package folder opened for reading. See the module docstring for what it guarantees."""

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        self.name = str(path)
        try:
            root = os.path.realpath(self.name)
            is_dir = os.path.isdir(root)
        except (OSError, ValueError):
            is_dir = False
        if not is_dir:
            raise PackageError(f"package {self.name!r} is not a directory", hint="give the --out of `taskfold export`")
        self.root = Path(root)
        self.verify = verify
        self._hashed: set[str] = set()
        self._records: dict[str, list[WeightRecord]] = {}
        self._admitted: dict[str, object] = {}
        self._admitted_at: dict[tuple, object] = {}  # graphs with named axes admitted at another size
        self.manifest = self._read_manifest()
        self.files: dict[str, dict] = self.manifest["files"]

    def _fail(self, problem: str) -> PackageError:
        """The error for a problem with the package's contents (``.problem``: the bare text, for verify)."""
        e = PackageError(f"package {self.name!r} is damaged: {problem}", hint=_HINT)
        e.problem = problem
        return e

    # --- paths -----------------------------------------------------------------------------------

    def _resolve(self, rel: str, where: str) -> tuple[str, os.stat_result]:
        """``(real path, lstat)`` of ``rel`` inside the package; refuses anything that leaves it.

        Components are resolved one at a time from the root with ``lstat``; a symbolic link on the
        way, or a regular file with several hard links, is refused, so no path outside the package
        is ever looked at.
        """
        if not _is_relative(rel):
            raise self._fail(f"{where}: path {rel!r} is not a relative path inside the package (absolute paths and "
                             "'..' are refused)")
        cur = str(self.root)
        parts = _split(rel)
        if len(parts) > bound("path_depth"):
            raise self._fail(f"{where}: {rel!r} is nested deeper than {bound('path_depth')} folders")
        st = os.lstat(cur)
        for part in parts:
            nxt = os.path.join(cur, part)
            try:
                st = os.lstat(nxt)
            except FileNotFoundError:
                raise self._fail(f"{where}: {rel!r} is missing from the package") from None
            except OSError as e:
                raise self._fail(f"{where}: cannot read {rel!r}: {e.strerror}") from None
            if stat.S_ISLNK(st.st_mode):
                raise self._fail(f"{where}: {rel!r} passes through a symbolic link; a package holds no links "
                                 "(copy it with `cp -rL`)")
            cur = nxt
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise self._fail(f"{where}: {rel!r} has {st.st_nlink} hard links; a package holds no links (a hard "
                             "link can be a file outside it; copy the package with `cp -r`)")
        return cur, st

    def path(self, rel: str, where: str = "manifest") -> Path:
        """The real path of the listed regular file ``rel``, its size checked against the manifest."""
        real, st = self._resolve(rel, where)
        entry = self.files.get(rel)
        if entry is None:
            raise self._fail(f"{where}: {rel!r} is not listed in the manifest's files (with size and sha256); "
                             "taskfold opens only listed files")
        if not stat.S_ISREG(st.st_mode):
            raise self._fail(f"{where}: {rel!r} is not a regular file")
        if entry["bytes"] > file_bound(rel):
            raise self._fail(f"{where}: {rel!r} is listed with {entry['bytes']} bytes, more than the "
                             f"{file_bound(rel)} a file of its kind may have")
        if st.st_size != entry["bytes"]:
            raise self._fail(f"{rel}: {st.st_size} bytes, the manifest says {entry['bytes']}")
        return Path(real)

    def directory(self, rel: str, where: str = "manifest") -> Path:
        """The real path of the directory ``rel`` (a CoreML bundle), every file under it listed."""
        real, st = self._resolve(rel, where)
        if not stat.S_ISDIR(st.st_mode):
            raise self._fail(f"{where}: {rel!r} is not a directory")
        for sub in self._walk(real, rel.rstrip("/"), bundle=True):
            self.path(sub, where)
        return Path(real)

    def _walk(self, real: str, rel: str, bundle: bool) -> list[str]:
        """Relative paths of the files (and links) under the directory ``real`` (= ``rel``), never followed.

        Iterative, at most ``path_depth`` folders deep and ``files`` entries; in a bundle
        (``bundle``) a link is refused (its reader would follow it).
        """
        out, todo, limit = [], [(real, rel.strip("/"), 0)], bound("files")
        while todo:
            folder, base, depth = todo.pop()
            if depth > bound("path_depth"):
                raise self._fail(f"{base}: folders nested deeper than {bound('path_depth')}")
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as e:
                raise self._fail(f"{base or '.'}: cannot list the folder: {e.strerror}") from None
            for e in entries:
                name = f"{base}/{e.name}" if base else e.name
                if e.is_symlink():
                    if bundle:
                        raise self._fail(f"{name}: a symlink inside a bundle; refused")
                    out.append(name)
                elif e.is_dir(follow_symlinks=False):
                    todo.append((e.path, name, depth + 1))
                else:
                    out.append(name)
                if len(out) + len(todo) > limit:
                    raise self._fail(f"more than {limit} files in the package folder")
        return sorted(out)

    # --- bytes ------------------------------------------------------------------------------------

    def _check_hash(self, rel: str, digest: str) -> None:
        if digest != self.files[rel]["sha256"]:
            raise self._fail(f"{rel}: sha256 differs from the manifest (the file was modified or corrupted)")
        self._hashed.add(rel)

    def read_bytes(self, rel: str, where: str = "manifest", limit: int | None = None) -> bytes:
        """The bytes of a listed file (hashed from what was read when ``verify``)."""
        p = self.path(rel, where)
        size = self.files[rel]["bytes"]
        if limit is not None and size > limit:
            raise self._fail(f"{where}: {rel!r} is {size} bytes, more than the {limit} allowed for it")
        with open(p, "rb") as f:
            data = f.read(size + 1)
        if len(data) != size:
            raise self._fail(f"{rel}: changed size while being read")
        if self.verify and rel not in self._hashed:
            self._check_hash(rel, hashlib.sha256(data).hexdigest())
        return data

    def read_json(self, rel: str, where: str = "manifest"):
        data = self.read_bytes(rel, where, limit=MAX_JSON_BYTES)
        try:
            return parse_json(data, rel)
        except PackageError as e:
            raise self._fail(str(e)) from None

    def check(self, rels) -> None:
        """Sizes (always) and sha256 (with ``verify``, once per file per reader) of listed files."""
        for rel in rels:
            p = self.path(rel)
            if self.verify and rel not in self._hashed:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while block := f.read(_CHUNK):
                        h.update(block)
                self._check_hash(rel, h.hexdigest())

    def _read_manifest(self) -> dict:
        try:
            real, st = self._resolve(MANIFEST, MANIFEST)
        except PackageError:
            raise PackageError(f"{self.name!r} has no {MANIFEST}: not a taskfold package, or its export did not "
                               "finish", hint="re-run `taskfold export`") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_JSON_BYTES:
            raise self._fail(f"{MANIFEST} is not a regular file of at most {MAX_JSON_BYTES} bytes")
        with open(real, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
        try:
            return validate_manifest(parse_json(data, MANIFEST))
        except PackageError as e:
            raise PackageError(f"package {self.name!r}: {e}", hint=e.hint) from None

    # --- what graphs and components read ----------------------------------------------------------

    def weight_records(self, index_rel: str, graph_rel: str) -> list[WeightRecord]:
        """The validated records of a graph's weight index, each byte range inside its listed file."""
        if index_rel not in self._records:
            doc = self.read_json(index_rel, index_rel)
            try:
                self._records[index_rel] = weight_records(
                    doc, index_rel, graph_rel, lambda rel, where: (self.path(rel, where), self.files[rel]["bytes"]))
            except PackageError as e:
                if hasattr(e, "problem"):
                    raise
                raise self._fail(str(e)) from None
        return self._records[index_rel]

    def admit(self, graph_rel: str, where: str, inputs: list[dict], outputs: list[dict], task_tensors=(),
              dims: dict[str, int] | None = None):
        """Admit the graph ``graph_rel`` (:mod:`.admission`) once per reader and size; its external references.

        It is admitted at the manifest's ``sample`` sizes, or with ``dims`` replacing some of them
        (``height``/``width`` of the UNet sample, ``image_height``/``image_width`` in pixels, ``batch``): a
        graph with named (dynamic) axes run at another size is admitted again at that size, each value
        within the schema's bounds.
        """
        s = dict(self.manifest["sample"])
        for name, value in (dims or {}).items():
            top = {"height": "latent_side", "width": "latent_side", "image_height": "image_side",
                   "image_width": "image_side", "batch": "batch"}.get(name)
            if top is None or isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound(top):
                raise ConfigError(f"cannot admit {graph_rel} at {name} {value!r}: "
                                  + (f"an integer from 1 to {bound(top)} is needed" if top else "not a sample size"))
            s[name] = value
        size = (s["batch"], s["height"], s["width"], s["image_height"], s["image_width"])
        own = all(s[k] == v for k, v in self.manifest["sample"].items())
        admitted = self._admitted if own else self._admitted_at  # by path at the manifest's size, else by size too
        key = graph_rel if own else (graph_rel, *size)
        if key not in admitted:
            data = self.read_bytes(graph_rel, where, limit=bound("bytes.graph"))
            kind = graph_kind(graph_rel)
            named = {"batch": s["batch"], "height": s["height"], "width": s["width"], "text_len": s["text_len"],
                     "image_height": s["image_height"], "image_width": s["image_width"]}
            if kind == "codec":  # a dynamic codec names its pixel axes height/width and its latent axes latent_*
                named |= {"height": s["image_height"], "width": s["image_width"], "latent_height": s["height"],
                          "latent_width": s["width"]}
            try:
                admitted[key] = admit_graph(
                    data, where=graph_rel, kind=kind, inputs=inputs, outputs=outputs, dims=named,
                    cap=value_cap(s["batch"], s["height"], s["width"]), task_tensors=task_tensors)
            except PackageError as e:
                raise self._fail(str(e)) from None
        return admitted[key]

    def onnx_files(self, graph_rel: str, where: str, io: dict | None = None) -> list[str]:
        """``graph_rel`` and the listed files its external data names, every range inside its file.

        With ``io`` (``inputs``, ``outputs``, ``task_tensors`` of a graph the runtime runs) the graph
        is admitted first and its references are the admission's; otherwise (a graph only another
        tool reads) the protobuf is scanned for every external reference it can hold.
        """
        if io is not None:
            refs = self.admit(graph_rel, where, io["inputs"], io["outputs"], io.get("task_tensors", ())).external
        else:
            data = self.read_bytes(graph_rel, where, limit=bound("bytes.graph"))
            try:
                refs = external_refs(data, graph_rel)
            except PackageError as e:
                raise self._fail(str(e)) from None
        folder = graph_rel.rsplit("/", 1)[0] if "/" in graph_rel else ""
        files = [graph_rel]
        for ref in refs:
            what = f"{graph_rel}: external data of {ref.tensor!r}"
            if not _is_relative(ref.location):
                raise self._fail(f"{what}: location {ref.location!r} is not a relative path inside the package")
            rel = f"{folder}/{ref.location}" if folder else ref.location
            self.path(rel, what)
            end = ref.offset + (ref.length or 0)
            if end > self.files[rel]["bytes"]:
                raise self._fail(f"{what}: bytes {ref.offset}..{end} lie beyond the end of {rel} "
                                 f"({self.files[rel]['bytes']} bytes)")
            _add(files, rel)
        return files

    def graph_files(self, graph: dict) -> list[str]:
        """Every file a manifest graph entry makes anyone read, each one checked (see the module docstring)."""
        where = f"graph {graph['task']}/{graph['format']}"
        rel = graph["path"]
        if graph["format"] in ("coreml", "diffusers"):  # bundles: every file under the folder
            self.directory(rel, where)
            return [f for f in self.files if f.startswith(rel.rstrip("/") + "/")]
        files: list[str] = []
        runs = graph["format"] == "onnx"
        for r in (rel, graph.get("refittable_engine"), graph.get("refit_from")):
            if r is not None:
                io = graph if runs and r == rel else None
                for f in self.onnx_files(r, where, io) if r.endswith(".onnx") else [r]:
                    self.path(f, where)
                    _add(files, f)
        for extra in graph.get("external_data", []) + ([graph["adapter"]] if graph.get("adapter") else []):
            self.path(extra, where)
            _add(files, extra)
        if graph.get("weight_index"):
            for rec in self.weight_records(graph["weight_index"], rel):
                _add(files, rec.path.relative_to(self.root).as_posix())
            _add(files, graph["weight_index"])
        return files

    def component_files(self, folder: str, rec: dict) -> list[str]:
        """The files of a text-encoder or codec graph record (``{file, weights}`` inside ``folder``)."""
        files = self.onnx_files(f"{folder}/{rec['file']}", f"{folder}/{rec['file']}",
                                {"inputs": rec["inputs"], "outputs": rec.get("outputs") or []})
        for w in rec.get("weights", []):
            self.path(f"{folder}/{w}", folder)
            _add(files, f"{folder}/{w}")
        return files

    def tokenizer_files(self) -> list[str]:
        """The text encoder's tokenizer files (``text_encoder/<name>``), each one checked."""
        files = [f"text_encoder/{n}" for n in self.manifest["text_encoder"]["graph"]["tokenizer"]["files"]]
        for f in files:
            self.path(f, "text_encoder.graph.tokenizer")
        return files

    def tokenizer(self):
        """The package's tokenizer, admitted and built from its checked files (what the runtime uses)."""
        from .tokenizers import tokenizer_from_files

        tok = self.manifest["text_encoder"]["graph"]["tokenizer"]
        files = {rel.split("/", 1)[1]: self.read_bytes(rel, "text_encoder.graph.tokenizer", limit=bound("bytes.tokenizer"))
                 for rel in self.tokenizer_files()}
        try:
            return tokenizer_from_files(files, max_length=tok["max_length"], pad_id=tok.get("pad_id"),
                                        where="text_encoder")
        except PackageError as e:
            raise self._fail(str(e)) from None

    def _references(self):
        """``(what, files())`` for every part of the manifest that refers to files."""
        m = self.manifest
        for g in m["graphs"]:
            yield f"graph {g['task']}/{g['format']}", lambda g=g: self.graph_files(g)
        if m.get("text_encoder"):
            yield "text encoder", lambda: self.component_files("text_encoder", m["text_encoder"]["graph"])
            yield "tokenizer", self.tokenizer_files
        for name, rec in (m["codec"].get("graphs") or {}).items():
            yield f"codec {name}", lambda rec=rec: self.component_files("codec", rec)

    def referenced_files(self) -> dict[str, str]:
        """``file -> what refers to it`` for everything the manifest refers to, each reference checked."""
        out: dict[str, str] = {}
        for what, files in self._references():
            for f in files():
                out.setdefault(f, what)
        return out

    # --- verify -----------------------------------------------------------------------------------

    def verify_all(self) -> list[str]:
        """Every problem of the package (empty: all good): each listed file (size, sha256), the closure of
        every graph and component, and files in the folder that the manifest does not list."""
        problems: list[str] = []

        def attempt(fn, *args):
            try:
                return fn(*args)
            except PackageError as e:
                problems.append(getattr(e, "problem", str(e)))
                return None

        for rel in self.files:
            attempt(self.check, [rel])
        for _, files in self._references():
            attempt(files)
        if self.manifest.get("text_encoder"):
            attempt(self.tokenizer)
        from .package import load_task_tensors  # the adapters layout's task files, parsed as the runtime parses them

        for g in self.manifest["graphs"]:
            if g.get("adapter"):
                attempt(load_task_tensors, self, g)
        on_disk = attempt(self._walk, str(self.root), "", False) or []
        problems += [f"{rel}: in the package folder but not listed in the manifest"
                     for rel in sorted(set(on_disk) - set(self.files) - {MANIFEST})]
        return list(dict.fromkeys(problems))


def weight_records(doc, index_rel: str, graph_rel: str, locate) -> list[WeightRecord]:
    """Checked records of the weight index ``doc`` of ``graph_rel``; ``locate(rel, where) -> (path, bytes)``
    finds (and confines) each weight file, named relative to the graph's folder."""
    folder = graph_rel.rsplit("/", 1)[0] if "/" in graph_rel else ""
    out = []
    for i, rec in enumerate(validate_weight_index(doc, index_rel)):
        rel = f"{folder}/{rec['file']}" if folder else rec["file"]
        where = f"{index_rel}: initializers[{i}] ({rec['name']!r})"
        path, size = locate(rel, where)
        if rec["offset"] + rec["length"] > size:
            raise PackageError(f"{where}: bytes {rec['offset']}..{rec['offset'] + rec['length']} lie beyond the "
                               f"end of {rel} ({size} bytes)", hint=_HINT)
        out.append(WeightRecord(rec["name"], Path(path), rec["offset"], rec["length"], rec["dtype"],
                                tuple(rec["shape"])))
    return out


def local_weight_records(root: str | os.PathLike, index_rel: str, graph_rel: str) -> list[WeightRecord]:
    """The same for graphs this process exported itself (``taskfold bench``'s reference graphs), not a package."""
    root = Path(root)
    data = (root / index_rel).read_bytes()
    return weight_records(parse_json(data, index_rel), index_rel, graph_rel,
                          lambda rel, where: (root / rel, (root / rel).stat().st_size))


def verify_package(pkg: str | os.PathLike) -> list[str]:
    """Problems found checking the package against its manifest (empty: all good). See :meth:`PackageReader.verify_all`."""
    return PackageReader(pkg).verify_all()
