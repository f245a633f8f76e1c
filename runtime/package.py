"""Run every task of an exported package: open it, pick a task and a backend, generate.

::

    from taskfold.runtime import open_package

    pkg = open_package("tiny-pkg")                       # ONNX Runtime on the CPU
    images = pkg.generate("edit", "make the circle blue", image="in.png", steps=20, seed=0)
    pkg.save(images[0], "out.png")

The ONNX path imports numpy, onnxruntime and Pillow only — no torch, no diffusers — so an
app can ship it. Per call it does what the PyTorch reference sampler
(:func:`taskfold.train.pipeline.generate`) does, with the same numpy schedulers, guidance
and seeded noise; the two differ only by the UNet (the exported graph against the model).

Sessions
    One ONNX Runtime session per graph, created on first use and kept. The task graphs of a
    package keep the frozen backbone in one ``onnx/shared.weights`` file; with
    ``share_weights`` (the default) the package maps that file once and hands the same
    arrays to every task's session (``SessionOptions.add_initializer``), and all sessions
    draw their activations from one CPU arena registered with the ONNX Runtime environment
    (``session.use_env_allocators``), so opening four tasks holds one backbone and one
    activation arena plus each task's own tensors. Everything that would copy the shared
    weights is off in this mode: matmul pre-packing (``session.disable_prepacking``) and the
    layout optimisations of ``ORT_ENABLE_ALL`` (which re-block every convolution's weights
    per session); graphs are optimised at ``ORT_ENABLE_EXTENDED``. Measured on SD1.5 at
    512x512 (2-core CPU): 1 task open 5.1 GiB, 4 tasks 5.8 GiB, at the same speed within a
    few percent. ``share_weights=False`` gives each session its own fully optimised,
    pre-packed copy and its own arena.

Inputs
    Condition images must have the package's image size; super-resolution also takes the
    half-size image it was trained on (upsampled bicubically, as in training). Other sizes
    are refused unless ``resize=True``. Grey, palette and RGBA images become RGB (alpha is
    dropped). A mask is 1 (to fill) where its pixels are 128 or brighter.

Integrity
    Every file is opened through :class:`~taskfold.runtime.reader.PackageReader`: confined to
    the package, listed in the manifest with the right size, byte ranges checked. With
    ``verify`` (the default) each file a graph needs is also re-hashed against the manifest,
    once, before its first session is created; a problem raises :class:`PackageError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taskfold.config import check_threads
from taskfold.errors import ConfigError, PackageError
from taskfold.tasks import TaskSpec, task_from_record

from .backends import ONNX, PROVIDERS, check_provider, coreml_runner, tensorrt_runner
from .backends import backend as get_backend
from .images import fit_image, mask_to_array, open_image, save_image, to_chw, to_rgb
from .limits import bound
from .progress import ProgressBar
from .reader import PackageReader, WeightRecord
from .sampler import Model, check_images_per_prompt, check_inputs, check_negative, check_options, sample

UNET_INPUTS = ("sample", "timestep", "encoder_hidden_states")


class WeightStore:
    """Memory-mapped weight files and the ONNX Runtime values over them, shared by all sessions.

    Each file is confined, listed and (with verify) hashed by the package reader before it is
    mapped. Values are keyed by file and byte range, so two graphs that reference the same range of
    ``shared.weights`` get the same ``OrtValue`` (one copy in memory). Every session made with the
    store points into its mappings: whoever holds a session holds the store too (:class:`UNetCall`
    does), so a mapping never goes away under a live session.

    A mapped file cut short while mapped makes the next read of a lost page raise SIGBUS, which no
    Python code can catch. :meth:`guard` (run before every UNet call) compares each mapped file's
    size, through the descriptor kept open since it was hashed, with the size it was mapped at and
    raises :class:`PackageError` instead; a file truncated *during* a call is not covered (see the
    docs/reliability.md). Reading the weights into memory instead would close that window
    too, but doubled the SD1.5 package's open time (measured 11.9 s against 5.1 s).
    """

    def __init__(self):
        self.maps: dict[str, np.memmap] = {}
        self.files: dict[str, tuple[object, int]] = {}  # path -> (open file, size when mapped)
        self.values: dict[tuple, object] = {}

    def load(self, reader: PackageReader, records: list[WeightRecord]) -> None:
        """Check (and, with verify, hash) every file ``records`` take bytes from, then map it, once."""
        for rec in records:
            key = str(rec.path)
            if key not in self.maps:
                rel = rec.path.relative_to(reader.root).as_posix()
                reader.check([rel])
                self._map(key, reader.files[rel]["bytes"])

    def _map(self, key: str, size: int) -> None:
        f = open(key, "rb")  # noqa: SIM115 - kept open: guard() reads its size through it
        self.files[key] = (f, size)
        self.maps[key] = np.memmap(f, dtype=np.uint8, mode="r", shape=(size,))

    def guard(self) -> None:
        """Refuse to run on a mapped file whose size changed since it was checked (a truncated file: SIGBUS)."""
        import os

        for key, (f, size) in self.files.items():
            now = os.fstat(f.fileno()).st_size
            if now != size:
                raise PackageError(f"{key}: {now} bytes now, {size} when it was checked and mapped; the package "
                                   "changed while open", hint="re-open the package once it is complete again")

    def value(self, ort, rec: WeightRecord):
        key = (str(rec.path), rec.offset, rec.length, rec.dtype, rec.shape)
        if key not in self.values:
            if key[0] not in self.maps:  # a graph this process exported itself (bench's references), not a package
                self._map(key[0], rec.path.stat().st_size)
            dtype = np.dtype(rec.dtype)
            arr = np.frombuffer(self.maps[key[0]], dtype=dtype, count=rec.length // dtype.itemsize,
                                offset=rec.offset).reshape(rec.shape)
            self.values[key] = (arr, ort.OrtValue.ortvalue_from_numpy(arr))  # the array outlives the value
        return self.values[key][1]


_SHARED_ARENA = []  # set once the process-wide CPU arena is registered with ONNX Runtime's environment


def _register_shared_arena(ort) -> None:
    """One CPU arena in the ONNX Runtime environment, for every session that asks for env allocators."""
    if _SHARED_ARENA:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    try:
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({}))
    except Exception as e:  # ORT's own exception type; an app may have registered one already
        if "already registered" not in str(e):
            raise
    _SHARED_ARENA.append(info)


def ort_session(path: Path, *, providers: list[str], threads: int | None = None,
                weights: list[WeightRecord] | None = None, store: WeightStore | None = None):
    """An ONNX Runtime session for the graph at ``path`` (already checked by the package reader).

    With ``weights`` (the graph's checked weight records) and a ``store``, the graph's external
    weights are handed to the session from the store's shared mappings, activations come from
    the environment's shared CPU arena, and nothing copies the weights (no pre-packing, no
    layout optimisation: ``ORT_ENABLE_EXTENDED``); otherwise ONNX Runtime loads, fully
    optimises and pre-packs the weights itself. The caller keeps ``store`` alive as long as the
    session.
    """
    ort = ONNX.check_installed()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if store is not None and weights:
        for rec in weights:
            opts.add_initializer(rec.name, store.value(ort, rec))
        opts.add_session_config_entry("session.disable_prepacking", "1")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        _register_shared_arena(ort)
        opts.add_session_config_entry("session.use_env_allocators", "1")
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # ORT's own exception types; keep the first line
        raise PackageError(f"onnxruntime cannot load {Path(path).name}: {str(e).splitlines()[0][:300]}",
                           hint="`taskfold verify PKG` checks the package's files") from None


#: ``__metadata__["format"]`` of an adapters-layout task file (``adapters/<task>.safetensors``)
TASK_FILE_FORMAT = "taskfold-task-tensors"


def task_file_metadata(task: str, backbone_id: int) -> dict[str, str]:
    """The ``__metadata__`` a task file holds: whose task and whose backbone its tensors are."""
    return {"format": TASK_FILE_FORMAT, "task": task, "backbone_id": str(backbone_id)}


def load_task_tensors(reader: PackageReader, graph: dict) -> dict[str, np.ndarray]:
    """The task tensors of an adapters-layout graph entry, read from its ``.safetensors`` file and checked.

    The file is read through the package reader (listed, size- and hash-checked) and parsed by
    :mod:`.safetensors_io`: it must hold exactly the entry's ``task_tensors`` (names, shapes, dtypes:
    the graph's inputs) and the ``__metadata__`` of this task and backbone
    (:func:`task_file_metadata`), so a file of another task or package is refused. Anything else is
    one :class:`PackageError` naming the file and the key. No session is involved.
    """
    from .safetensors_io import MAX_HEADER_BYTES, read_tensors

    rel, where = graph["adapter"], f"graph {graph['task']}/{graph['format']}"
    if rel.endswith(".onnx_adapter"):
        raise reader._fail(f"{where}: {rel!r} is an ONNX Runtime adapter, which this taskfold no longer reads "
                           "(task tensors are a .safetensors file per task); re-export the package")
    if "task_tensors" not in graph or "backbone_id" not in graph:
        raise reader._fail(f"{where}: the entry names no task_tensors and backbone_id for {rel!r}")
    sizes = []
    for t in graph["task_tensors"]:
        if not all(isinstance(d, int) for d in t["shape"]) or t["dtype"] not in ("float32", "float16"):
            raise reader._fail(f"{where}: task tensor {t['name']!r} is {t['dtype']} {t['shape']}; task tensors are "
                               "float32 or float16 of a fixed shape")
        sizes.append(int(np.prod(t["shape"], dtype=np.int64)) * np.dtype(t["dtype"]).itemsize)
    data = reader.read_bytes(rel, where, limit=8 + MAX_HEADER_BYTES + sum(sizes))
    try:
        return read_tensors(data, rel, graph["task_tensors"], task_file_metadata(graph["task"], graph["backbone_id"]))
    except PackageError as e:
        raise reader._fail(str(e)) from None


class UNetCall:
    """``call(sample, timestep, encoder_hidden_states) -> noise`` for one task (numpy in and out).

    Holds everything its session points into (the weight store, the loaded model), so it stays
    valid after the :class:`Package` that made it is gone or closed.
    """

    def __init__(self, call, batch: "_Batching", keep=(), guard=None):
        self._call, self._batch, self._keep, self._guard = call, batch, keep, guard

    def __call__(self, sample, timestep, encoder_hidden_states):
        if self._guard is not None:
            self._guard()
        return self._batch.run(self._call, [np.asarray(sample, np.float32), np.asarray(timestep, np.float32),
                                            np.asarray(encoder_hidden_states, np.float32)])


@dataclass
class _Batching:
    """A graph's batch: fixed (static export) or ``None`` (dynamic axis)."""

    size: int | None

    def run(self, fn, arrays: list[np.ndarray]) -> np.ndarray:
        """``fn(*chunks)`` over rows of ``arrays`` in chunks of the graph's batch (last chunk padded)."""
        n = arrays[0].shape[0]
        if self.size is None or self.size == n:
            return fn(*arrays)
        out = []
        for start in range(0, n, self.size):
            chunk = [a[start:start + self.size] for a in arrays]
            short = self.size - chunk[0].shape[0]
            if short:
                chunk = [np.concatenate([c, np.repeat(c[-1:], short, axis=0)]) for c in chunk]
            out.append(fn(*chunk)[: self.size - short])
        return np.concatenate(out)


class Package:
    """An exported taskfold package opened for inference. See the module docstring."""

    def __init__(self, path: str | Path, *, backend: str = "onnx", provider: str = "cpu", verify: bool = True,
                 share_weights: bool = True, threads: int | None = None, layout: str | None = None):
        self.path = Path(path)
        self._reader = PackageReader(self.path, verify=verify)
        self.manifest = self._reader.manifest
        self._backend = get_backend(backend)
        self._providers = check_provider(provider) if backend == "onnx" else PROVIDERS.get(provider)
        if self._providers is None:
            raise ConfigError(f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
        check_threads(threads, "threads")
        self.backend, self.provider, self.verify = backend, provider, verify
        self.share_weights, self.threads = share_weights, threads
        self._backend.check_installed()
        formats = {g["format"] for g in self.manifest["graphs"]}
        if backend not in formats:
            raise ConfigError(f"package {str(self.path)!r} has no {backend} graphs (it has: "
                              f"{', '.join(sorted(formats)) or 'none'})",
                              hint=f"re-export with `taskfold export --format {backend}`")
        layouts = sorted({g.get("layout", "graphs") for g in self.manifest["graphs"] if g["format"] == backend})
        if layout is None:  # the package's own layout; with both, the adapters one (see docs/measurements.md, the adapters layout)
            layout = "adapters" if "adapters" in layouts else layouts[0]
        if layout not in layouts:
            raise ConfigError(f"package {str(self.path)!r} has no {backend} graphs in the {layout!r} layout (it has "
                              f"{', '.join(layouts)})", hint="re-export with `taskfold export --layout " + layout + "`")
        self.layout = layout
        self._sessions: dict[str, object] = {}
        self._weights = WeightStore()
        self._specs: dict[str, TaskSpec] = {}
        # What every task shares is checked at open, before any session: the tokenizer (admitted and built)
        # and the text encoder and codec graphs (admitted). Each task's own graph is admitted before its session.
        self._tokenizer = self._reader.tokenizer() if self.manifest.get("text_encoder") else None
        te = self.manifest.get("text_encoder")
        components = [("text_encoder", te["graph"])] if te else []
        components += [("codec", rec) for rec in (self.manifest["codec"].get("graphs") or {}).values()]
        for folder, rec in components:
            self._reader.admit(f"{folder}/{rec['file']}", f"{folder}/{rec['file']}", rec["inputs"], rec["outputs"])

    # --- what the package holds -----------------------------------------------------------

    @property
    def tasks(self) -> list[str]:
        return list(self.manifest["tasks"])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels of the images the package makes."""
        s = self.manifest["sample"]
        return s["image_height"], s["image_width"]

    def task(self, name: str) -> dict:
        """The manifest entry of task ``name`` (input layout, text use, guidance and its scales)."""
        if name not in self.manifest["tasks"]:
            raise ConfigError(f"unknown task {name!r}; this package has: {', '.join(self.tasks)}")
        return self.manifest["tasks"][name]

    def sampling(self, task: str, **given) -> dict:
        """The settings ``generate`` uses for ``task``: each of ``steps``, ``strength``, ``guidance_scale``,
        ``image_guidance_scale`` as given (not ``None``), else the package's recommendation for the task."""
        spec = self.spec(task)
        out = {k: given.get(k) if given.get(k) is not None else getattr(spec, k)
               for k in ("steps", "strength", "guidance_scale", "image_guidance_scale")}
        if not spec.needs_condition:
            out["strength"] = None
        if spec.guidance != "image_text":
            out["image_guidance_scale"] = None
        if spec.guidance == "none":
            out["guidance_scale"] = None
        return out

    def prompt_warnings(self, task: str, prompt: str) -> list[str]:
        """One-line warnings about ``prompt`` for ``task``: a prompt given to a task that reads no text, words
        the text encoder's vocabulary lacks (encoded as unknown; the first 20 named), a prompt longer than the
        encoder reads.

        A prompt of more than 256 words is tokenized in pieces of 256, split at white space (no token of the
        tokenizers taskfold packages spans white space), so the time taken grows linearly with its length
        whatever one call costs on a long prompt.
        """
        piece, named = 256, 20
        spec = self.spec(task)
        if not spec.uses_text:
            return [f"task {task!r} reads no text; the prompt {_short(prompt)!r} is ignored"] if prompt.strip() else []
        if self.manifest.get("text_encoder") is None or not prompt:
            return []
        tok = self._load_tokenizer()
        words = prompt.split()
        if len(words) <= piece:
            n, unknown = tok.untruncated(prompt)
        else:
            ends = tok.untruncated("")[0]  # the begin/end tokens, counted once for the whole prompt
            n, seen = ends, {}
            for i in range(0, len(words), piece):
                k, unk = tok.untruncated(" ".join(words[i:i + piece]))
                n += k - ends
                seen.update(dict.fromkeys(unk))
            unknown = list(seen)
        out = []
        if unknown:
            more = f" and {len(unknown) - named:,} more" if len(unknown) > named else ""
            out.append(f"prompt word(s) {', '.join(map(repr, unknown[:named]))}{more} are not in the text encoder's "
                       "vocabulary (encoded as unknown)")
        if n > tok.max_length:
            out.append(f"the prompt is {n} tokens; the text encoder reads the first {tok.max_length}")
        return out

    def spec(self, name: str) -> TaskSpec:
        """The task definition of ``name``, as the package recorded it."""
        if name not in self._specs:
            self._specs[name] = task_from_record(self.task(name))
        return self._specs[name]

    def graph(self, task: str) -> dict:
        self.task(task)
        for g in self.manifest["graphs"]:
            if g["task"] == task and g["format"] == self.backend and g.get("layout", "graphs") == self.layout:
                return g
        raise ConfigError(f"package {str(self.path)!r} has no {self.backend} graph for task {task!r}",
                          hint=f"re-export with `taskfold export --format {self.backend} --tasks {task}`")

    # --- sessions -------------------------------------------------------------------------

    def _checked(self, files: list[str]) -> None:
        self._reader.check(files)  # sizes always, sha256 once per file with verify

    def unet(self, task: str) -> UNetCall:
        """``fn(sample, timestep, encoder_hidden_states) -> noise`` for ``task`` (numpy in and out).

        Every file the graph reads is confined, listed and checked (hashed with ``verify``)
        before its session is created; the call keeps alive what its session points into.
        """
        if task in self._sessions:
            return self._sessions[task]
        g = self.graph(task)
        names = [t["name"] for t in g["inputs"]]
        if tuple(names) != UNET_INPUTS:
            raise ConfigError(f"task {task!r}'s graph takes {names}; the runtime's sampler drives graphs with "
                              f"{list(UNET_INPUTS)} (SDXL graphs need the app to supply text_embeds and time_ids)",
                              hint="run the graph (manifest graphs[].path) with onnxruntime directly")
        files = self._reader.graph_files(g)  # confined, listed, admitted (the graph), byte ranges checked
        batch = _Batching(g["inputs"][0]["shape"][0] if isinstance(g["inputs"][0]["shape"][0], int) else None)
        dtype = np.dtype(g["inputs"][0]["dtype"])
        if self.backend == "onnx" and self.layout != "adapters" and self.share_weights and g.get("weight_index"):
            self._weights.load(self._reader, self._reader.weight_records(g["weight_index"], g["path"]))
        tensors = load_task_tensors(self._reader, g) if g.get("adapter") else {}  # hashed from the bytes parsed
        self._checked(files)
        if self.backend == "onnx" and self.layout == "adapters":
            call, keep = self._adapter_call(g, dtype, tensors)
        elif self.backend == "onnx":
            weights = self._reader.weight_records(g["weight_index"], g["path"]) \
                if self.share_weights and g.get("weight_index") else None
            store = self._weights if weights else None
            sess = ort_session(self._reader.path(g["path"]), providers=self._providers, threads=self.threads,
                               weights=weights, store=store)
            out_name = sess.get_outputs()[0].name

            def call(x, t, h):
                return sess.run([out_name], {"sample": x.astype(dtype), "timestep": t.astype(np.float32),
                                             "encoder_hidden_states": h.astype(dtype)})[0].astype(np.float32)
            keep = (sess, store)
        else:  # Core ML (loaded and compiled once, like a session) or a TensorRT engine
            run = coreml_runner(self._reader.directory(g["path"]), g.get("function")) \
                if self.backend == "coreml" else tensorrt_runner(self._reader.path(g["path"]))
            io_dtype = np.float32 if self.backend == "coreml" else dtype
            width = int(g["inputs"][0]["shape"][1])
            extra = tensors  # the shared TensorRT engine takes the task tensors as inputs too

            def call(x, t, h):
                if x.shape[1] < width:  # the shared-graph form: padded to the widest task
                    x = np.concatenate([x, np.zeros((x.shape[0], width - x.shape[1], *x.shape[2:]), x.dtype)], 1)
                return np.asarray(run({"sample": x.astype(io_dtype), "timestep": t.astype(np.float32),
                                       "encoder_hidden_states": h.astype(io_dtype), **extra}), np.float32)
            keep = (run,)
        self._sessions[task] = UNetCall(call, batch, keep, self._weights.guard)
        return self._sessions[task]

    def _adapter_call(self, g: dict, dtype, tensors: dict[str, np.ndarray]):
        """The shared graph's one session (fully optimised, pre-packed), fed this task's tensors as inputs."""
        key = ("backbone", g["path"])
        if key not in self._sessions:
            self._sessions[key] = ort_session(self._reader.path(g["path"]), providers=self._providers,
                                              threads=self.threads)
        sess = self._sessions[key]
        takes = {i.name for i in sess.get_inputs()}
        if takes != set(UNET_INPUTS) | set(tensors):
            odd = sorted(takes ^ (set(UNET_INPUTS) | set(tensors)))
            raise self._reader._fail(f"graph {g['task']}/onnx: {g['path']} takes {len(takes)} inputs, the manifest "
                                     f"names {len(UNET_INPUTS) + len(tensors)} (first difference: {odd[0]!r})")
        out_name = sess.get_outputs()[0].name
        channels = int(g["inputs"][0]["shape"][1])

        def call(x, t, h):
            if x.shape[1] < channels:  # a narrower task: its conv_in weight is zero on the padding
                x = np.concatenate([x, np.zeros((x.shape[0], channels - x.shape[1], *x.shape[2:]), x.dtype)], 1)
            return sess.run([out_name], {"sample": x.astype(dtype), "timestep": t.astype(np.float32),
                                         "encoder_hidden_states": h.astype(dtype), **tensors})[0].astype(np.float32)
        return call, (sess,)

    def _component(self, key: str, folder: str, rec: dict):
        if key not in self._sessions:
            self._checked(self._reader.component_files(folder, rec))
            sess = ort_session(self._reader.path(f"{folder}/{rec['file']}"), providers=self._providers,
                               threads=self.threads)
            shape0 = rec["inputs"][0]["shape"][0]
            batch = _Batching(shape0 if isinstance(shape0, int) else None)
            name = rec["inputs"][0]["name"]
            self._sessions[key] = lambda x: batch.run(lambda a: sess.run(None, {name: a})[0], [x])
        return self._sessions[key]

    # --- text and images ------------------------------------------------------------------

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        """``[B, L, D]`` text-encoder states for ``prompts`` (the package's tokenizer and encoder graph)."""
        te = self.manifest.get("text_encoder")
        if not te:
            raise PackageError(f"package {str(self.path)!r} has no text encoder; its graphs take "
                               "encoder_hidden_states from the app", hint="call Package.unet(task) directly")
        tokenizer = self._load_tokenizer()
        ONNX.check_installed()
        encoder = self._component("text_encoder", "text_encoder", te["graph"])
        return encoder(tokenizer(list(prompts)).astype(np.int64)).astype(np.float32)

    def _load_tokenizer(self):
        """The package's tokenizer (read, checked, admitted and built once)."""
        if self._tokenizer is None:
            self._tokenizer = self._reader.tokenizer()
        return self._tokenizer

    def _codec(self, which: str, x: np.ndarray) -> np.ndarray:
        codec = self.manifest["codec"]
        if codec["kind"] == "identity":
            return x
        rec = codec.get("graphs", {}).get(which)
        if rec is None:
            raise PackageError(f"package {str(self.path)!r} has a {codec['kind']} codec but no {which} graph",
                               hint="re-export from a model folder that holds its codec (codec.json / vae/)")
        return self._component(which, "codec", rec)(x.astype(np.float32)).astype(np.float32)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Images ``[B, 3, H, W]`` in [-1, 1] to the UNet's sample space (identity for pixel models)."""
        return self._codec("vae_encoder", images)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """UNet samples to images ``[B, 3, H, W]`` in [-1, 1] (clipped)."""
        return np.clip(self._codec("vae_decoder", latents), -1.0, 1.0)

    def _batch_array(self, a: np.ndarray, channels: int, what: str, values: str,
                     size: tuple[int, int] | None = None) -> np.ndarray:
        """``[C, H, W]`` or ``[B, C, H, W]`` at ``size`` (the package's image size), as float32 ``[B, C, H, W]``."""
        size = size or self.image_size
        b = a[None] if a.ndim == 3 else a
        if b.ndim != 4 or b.shape[1] != channels or b.shape[2:] != tuple(size):
            raise ConfigError(f"{what} has shape {list(a.shape)}; expected [B, {channels}, "
                              f"{size[0]}, {size[1]}]{values}")
        return b.astype(np.float32)

    def load_condition(self, task: str, image, resize: bool = False, size: tuple[int, int] | None = None) -> np.ndarray:
        """A condition image (path, PIL image or ``[3, H, W]``/``[B, 3, H, W]`` array) as ``[B, 3, H, W]``, at
        ``size`` ``(height, width)`` (default: the package's image size)."""
        if isinstance(image, np.ndarray):
            return self._batch_array(image, 3, "condition array", " in [-1, 1]", size)
        im = open_image(image, "condition image") if isinstance(image, (str, Path)) else image
        h, w = size or self.image_size
        scale = self.spec(task).condition_scale
        also = (w // scale, h // scale) if scale > 1 else None
        im = fit_image(to_rgb(im, "condition image"), (w, h), "condition image", also=also, resize=resize)
        return to_chw(im)[None]

    def load_mask(self, mask, resize: bool = False, size: tuple[int, int] | None = None) -> np.ndarray:
        """A mask (path, PIL image or ``[1, H, W]``/``[B, 1, H, W]`` array of 0/1) as ``[B, 1, H, W]``, at
        ``size`` ``(height, width)`` (default: the package's image size)."""
        if isinstance(mask, np.ndarray):
            return self._batch_array(mask, 1, "mask array", "", size)
        im = open_image(mask, "mask") if isinstance(mask, (str, Path)) else mask
        h, w = size or self.image_size
        return mask_to_array(fit_image(im, (w, h), "mask", resize=resize))[None]

    # --- generate -------------------------------------------------------------------------

    def model(self, task: str) -> Model:
        """What :func:`~taskfold.runtime.sampler.sample` drives for ``task``: its graph and the package's
        text encoder and codec."""
        unet = self.unet(task)  # admits the graph first
        shape0 = self.graph(task)["inputs"][0]["shape"][0]
        codec = self.manifest["codec"]
        return Model(unet, self.encode_text, self.encode_images, self.decode,
                     max_batch=shape0 if isinstance(shape0, int) else None,
                     scaling_factor=float(codec["scaling_factor"]), shift_factor=float(codec.get("shift_factor") or 0.0))

    def generate(self, task: str, prompt: str | list[str] = "", *, image=None, mask=None, steps: int | None = None,
                 scheduler: str = "ddim", guidance_scale: float | None = None,
                 image_guidance_scale: float | None = None, seed: int = 0, resize: bool = False,
                 strength: float | None = None, negative_prompt: str | list[str] | None = None,
                 num_images_per_prompt: int = 1, height: int | None = None, width: int | None = None,
                 callback=None, progress=False) -> np.ndarray:
        """Images ``[B * num_images_per_prompt, 3, H, W]`` in [-1, 1] for ``task``.

        ``image`` / ``mask``: what the task's input layout needs (see :meth:`load_condition`,
        :meth:`load_mask`); one image is used for every prompt, or one per prompt. ``steps``, ``strength``
        and the guidance scales default to the task's recommended sampling as the package records it
        (:meth:`sampling`). Noise is :mod:`.noise` seeded with ``seed`` (MT19937, the same numbers in every
        language), as in the PyTorch reference.
        ``strength`` below 1 (image-conditioned tasks) starts from the condition image noised to
        that fraction of the schedule instead of from pure noise (see :mod:`.sampler`).

        The options of diffusers' pipelines, defined so that every runtime gives the same images:

        * ``num_images_per_prompt`` n: the rows are each prompt repeated n times in place — prompts
          ``[p, q]`` with n = 2 run as ``[p, p, q, q]`` (with their condition images and negative prompts),
          exactly as if that list were given — and one noise draw ``[B * n, C, h, w]`` covers every row in
          that order (diffusers' one-generator draw, and the same images as calling with the repeated list).
        * ``negative_prompt`` (one, or one per prompt): what the unconditional evaluations read instead of
          the empty prompt — text guidance's one, and both of dual (image and text) guidance's, as
          StableDiffusionInstructPix2PixPipeline does. Refused for a task without text guidance. ``None`` or
          ``""`` is today's sampling.
        * ``height`` / ``width`` (pixels; each defaults to the package's): another size needs a package whose
          graphs have dynamic spatial axes (``taskfold export --dynamic``) and the ONNX backend; the graphs are
          admitted again at that size (:meth:`output_size`).
        * ``callback(step, timestep, latents)`` after every step that runs (diffusers' ``callback_on_step_end``;
          returning an array replaces the latents, see :mod:`.sampler`).
        * ``progress``: ``True`` draws a bar on stderr when it is a terminal; or a
          :class:`~.progress.Progress` to report to.
        """
        spec = self.spec(task)
        steps = spec.steps if steps is None else steps
        strength = spec.strength if strength is None else strength
        prompts = check_options(prompt, steps, scheduler, seed, guidance_scale, image_guidance_scale)
        check_inputs(spec, image, mask, strength)
        n = check_images_per_prompt(num_images_per_prompt)
        size = self.output_size(task, height, width)
        negative = check_negative(spec, negative_prompt, len(prompts))
        b = len(prompts)
        cond = _rows(self.load_condition(task, image, resize, size), b, "condition image") \
            if spec.needs_condition else None
        msk = _rows(self.load_mask(mask, resize, size), b, "mask") if spec.needs_mask else None
        model = self.model(task)  # sessions (and integrity checks) before any sampling work
        self._admit_size(task, size)
        sched_cfg = {k: v for k, v in self.manifest["scheduler"].items() if k != "source"}
        codec = self.manifest["codec"]

        def each(rows):  # every row n times in place: p, p, q, q
            if rows is None or n == 1:
                return rows
            return np.repeat(rows, n, axis=0) if isinstance(rows, np.ndarray) else [r for r in rows for _ in range(n)]
        if progress is True:
            progress = ProgressBar(task)
        return sample(model, spec, each(prompts), scheduler_config=sched_cfg,
                      latent_shape=(codec["latent_channels"], size[0] // codec["scale_factor"],
                                    size[1] // codec["scale_factor"]),
                      condition=each(cond), mask=each(msk), steps=steps, scheduler=scheduler,
                      guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale, seed=seed,
                      strength=strength, negative_prompts=each(negative), callback=callback,
                      progress=progress or None)

    def output_size(self, task: str, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """``(height, width)`` in pixels of the images :meth:`generate` makes for ``task``: the package's image
        size, or the size asked for where the task's graphs take it.

        Another size is refused, naming why, unless the backend is ONNX and the task's graph and the codec's
        graphs have named (dynamic) height and width axes; it must be a multiple of the codec's scale times the
        UNet's downsampling (the export's own rule) and within the schema's bounds.
        """
        ph, pw = self.image_size
        h, w = ph if height is None else height, pw if width is None else width
        for name, v in (("height", h), ("width", w)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive number of pixels, got {v!r}")
        if (h, w) == (ph, pw):
            return h, w
        g = self.graph(task)
        where = f"package {str(self.path)!r} makes {pw}x{ph} images only"
        if self.backend != "onnx":
            raise ConfigError(f"{where} with the {self.backend} backend (asked for {w}x{h}); another size needs the "
                              "onnx backend and a package exported with --dynamic")
        codec = self.manifest["codec"]
        named = [(f"{task}'s graph", g["inputs"][:1])]
        named += [(f"the codec's {k}", rec["inputs"] + rec["outputs"]) for k, rec in (codec.get("graphs") or {}).items()]
        static = [what for what, tensors in named if not all(isinstance(d, str) for t in tensors for d in t["shape"][2:])]
        if static:
            raise ConfigError(f"{where} (asked for {w}x{h}): {' and '.join(static)} "
                              f"{'has' if len(static) == 1 else 'have'} a static height and width",
                              hint="re-export with `taskfold export --dynamic` for a package that runs other sizes")
        scale = int(codec["scale_factor"])
        levels = len((self.manifest.get("model", {}).get("unet_config") or {}).get("block_out_channels") or [0])
        stride = scale * 2 ** (levels - 1)
        for name, v in (("height", h), ("width", w)):
            if v % stride:
                raise ConfigError(f"{name} {v} is not a multiple of {stride} (codec scale {scale} x UNet "
                                  f"downsampling {stride // scale})", hint=f"try {max(stride, v // stride * stride)}")
            top = min(bound("image_side"), bound("latent_side") * scale)
            if v > top:
                raise ConfigError(f"{name} {v} is past the largest image side a package may run, {top} pixels")
        return h, w

    def _admit_size(self, task: str, size: tuple[int, int]) -> None:
        """Admit ``task``'s graph and the codec's at ``size`` (pixels) when it is not the package's own."""
        if tuple(size) == self.image_size:
            return
        scale = int(self.manifest["codec"]["scale_factor"])
        dims = {"height": size[0] // scale, "width": size[1] // scale, "image_height": size[0], "image_width": size[1]}
        g = self.graph(task)
        self._reader.admit(g["path"], f"graph {task}/{g['format']}", g["inputs"], g["outputs"],
                           g.get("task_tensors", ()), dims=dims)
        for rec in (self.manifest["codec"].get("graphs") or {}).values():
            self._reader.admit(f"codec/{rec['file']}", f"codec/{rec['file']}", rec["inputs"], rec["outputs"], dims=dims)

    @staticmethod
    def save(image: np.ndarray, path: str | Path, overwrite: bool = True) -> Path:
        """Write one image ``[3, H, W]`` in [-1, 1] as PNG, JPEG or WebP by ``path``'s suffix (``.png``, ``.jpg``,
        ``.jpeg``, ``.webp``), atomically (``overwrite=False``: never replace an existing file, also not one
        another process creates meanwhile)."""
        return save_image(image, path, overwrite=overwrite)

    def close(self) -> None:
        """Drop every session and weight mapping."""
        self._sessions.clear()
        self._weights = WeightStore()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_package(path: str | Path, **kwargs) -> Package:
    """Open an exported package (see :class:`Package` for the options)."""
    return Package(path, **kwargs)


def _rows(a: np.ndarray, b: int, what: str) -> np.ndarray:
    if a.shape[0] == b:
        return a
    if a.shape[0] == 1:
        return np.repeat(a, b, axis=0)
    raise ConfigError(f"{what} has {a.shape[0]} rows for {b} prompts; give one, or one per prompt")


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a message (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"
