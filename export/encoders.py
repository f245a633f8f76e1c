"""ONNX export of the text encoder and the codec, each behind the parity gate (DESIGN.md invariant 8).

=================  ====================================  =====================================
graph              input                                 output
=================  ====================================  =====================================
``text_encoder``   ``input_ids`` int64 ``[B, L]``        ``last_hidden_state`` ``[B, L, D]``
``vae_encoder``    ``images`` ``[B, 3, H, W]`` in [-1,1] ``latents`` ``[B, C, H/f, W/f]``, scaled
``vae_decoder``    ``latents`` ``[B, C, H/f, W/f]``      ``images`` ``[B, 3, H, W]``, clamped
=================  ====================================  =====================================

The latents are already multiplied by the VAE's ``scaling_factor`` (and shifted by its
``shift_factor``), so the runtime passes them to and from the UNet as they are. An identity
codec has no graph. The tokenizer files that :mod:`taskfold.runtime.tokenizers` reads are
written by :func:`export_tokenizer`, which checks that the pure-Python reader gives the
training tokenizer's ids.

Each graph is traced with PyTorch's TorchScript-based exporter (``dynamo=False``), like the
UNet graphs (:mod:`.onnx`), into a scratch folder; it is then run in ONNX Runtime on seeded
inputs and compared with PyTorch (relative error ``max |onnx - torch| / max |torch|``,
tolerance ``TOLERANCES[("onnx", "fp32")]`` = 1e-4). Only graphs that pass are moved to
their final names, so a failing gate writes nothing. A graph whose weights exceed
``EXTERNAL_DATA_BYTES`` keeps them in one ``<name>.weights`` file beside it (protobuf's
2 GB limit; SDXL's second text encoder is 2.8 GB in fp32).

``nn.TransformerEncoderLayer`` runs a fused inference kernel (``_transformer_encoder_layer_fwd``)
in eval mode without grad; it has no ONNX symbolic, so the trace runs with PyTorch's
multi-head-attention fast path switched off (and restored afterwards). The parity reference
is computed with the fast path as PyTorch inference uses it.

Why not Optimum's exporters: from optimum 2.0 on, the ONNX exporter lives in the separate
``optimum-onnx`` distribution (``optimum.exporters.onnx`` does not exist in the installed
optimum 2.3); its only release, 0.1.0, requires ``optimum~=2.1.0`` and ``transformers<4.58``,
which conflict with this project's transformers 5.x. The graphs here are small (one
``forward`` each), so the direct trace with our own gate is simpler than pinning an older stack.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from taskfold.errors import ConfigError, ExportError, ParityError

from .graph import GraphSpec, TensorSpec
from .onnx import MIN_OPSET, ort_runner
from .parity import TOLERANCES

EXTERNAL_DATA_BYTES = 1 << 30
#: Prompts the text encoder gate tokenizes besides random ids (shapes-world style, plus edge cases).
GATE_PROMPTS = ("", "a red circle", "a large blue square", "make the circle blue", "move the square left",
                "remove the green square", "A RED Circle, please!", "an unknown word " * 8)


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """Run the export with ``module`` in eval mode; give it back in the mode it came in."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


@contextlib.contextmanager
def _no_mha_fastpath():
    """Trace ``nn.TransformerEncoderLayer`` through its ONNX-exportable ops; restore the setting after."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


class _TextEncoderGraph(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids):
        return self.encoder(input_ids)


class _CodecEncodeGraph(nn.Module):
    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, images):
        return self.codec.encode(images)


class _CodecDecodeGraph(nn.Module):
    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, latents):
        return self.codec.decode(latents)


# --- Tracing and the gate ------------------------------------------------------------------------

def _trace(module: nn.Module, spec: GraphSpec, example: dict[str, torch.Tensor], path: Path, opset: int) -> list[str]:
    """Trace ``module`` to ``path``; return the weight files written beside it (none below the size limit)."""
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is below the supported minimum {MIN_OPSET}")
    raw = path.parent / f"raw-{path.name}"
    raw.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(example[n] for n in spec.input_names)
    try:
        with warnings.catch_warnings(), torch.no_grad(), _no_mha_fastpath():
            warnings.simplefilter("ignore")  # TracerWarnings on Python-side shape checks; legacy-exporter notice
            torch.onnx.export(module.eval(), args, str(raw), input_names=spec.input_names,
                              output_names=spec.output_names, opset_version=opset,
                              dynamic_axes=spec.dynamic_axes() or None, do_constant_folding=True, dynamo=False)
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as e:
        raise ExportError(f"cannot trace {path.stem}: {str(e).splitlines()[0]}") from None
    model = onnx.load(str(raw), load_external_data=True)
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size > EXTERNAL_DATA_BYTES:
        weights = f"{path.stem}.weights"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=weights, size_threshold=1024)
        files = [weights]
    else:
        onnx.save_model(model, str(path))
        files = []
    for f in path.parent.iterdir():  # the raw trace and any per-tensor files the exporter wrote
        if f != path and f.name not in files:
            f.unlink()
    return files


def _parity(name: str, path: Path, reference: nn.Module, examples: list[dict[str, torch.Tensor]],
            tolerance: float) -> dict:
    """Run ``path`` in ONNX Runtime on each example; raise :class:`ParityError` if the worst relative error fails."""
    run = ort_runner(path)
    worst, scale, rel = 0.0, 0.0, []
    for ex in examples:
        with torch.no_grad():
            ref = reference.eval()(*ex.values()).double().numpy()
        got = np.asarray(run({k: v.numpy() for k, v in ex.items()}), dtype=np.float64)
        if got.shape != ref.shape:
            raise ParityError(f"graph {name!r} output has shape {list(got.shape)}, PyTorch gives {list(ref.shape)}")
        err = float(np.max(np.abs(got - ref))) if np.all(np.isfinite(got)) else float("inf")
        s = float(np.max(np.abs(ref)))
        worst, scale = max(worst, err), max(scale, s)
        rel.append(err / max(s, 1e-6))
    relative = max(rel)
    if not relative <= tolerance:
        raise ParityError(f"graph {name!r}: relative error {relative:.2e} > tolerance {tolerance:.0e} "
                          f"(max abs {worst:.3e}, output scale {scale:.3g}, {len(examples)} input(s))",
                          hint="the graph was not written; report this with the model and export flags")
    return {"max_abs_error": worst, "output_scale": scale, "relative_error": relative, "tolerance": tolerance,
            "checks": len(examples), "status": "passed"}


def _record(name: str, path: Path, weights: list[str], spec: GraphSpec, opset: int, parity: dict) -> dict:
    return {"name": name, "file": path.name, "weights": weights, "opset": opset, **spec.to_dict(),
            "bytes": path.stat().st_size + sum((path.parent / w).stat().st_size for w in weights),
            "parity": parity}


def _export_checked(graphs: list[tuple[str, nn.Module, GraphSpec, list[dict]]], out_dir: Path, opset: int,
                    tolerance: float) -> dict[str, dict]:
    """Trace and gate every graph in a scratch folder, then move all of them into ``out_dir`` (or nothing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".taskfold-encoders-", dir=out_dir))
    try:
        records = {}
        for name, module, spec, examples in graphs:
            work = scratch / name
            work.mkdir()
            path = work / f"{name}.onnx"
            weights = _trace(module, spec, examples[0], path, opset)
            records[name] = _record(name, path, weights, spec, opset, _parity(name, path, module, examples, tolerance))
        for name, rec in records.items():  # weights first: a graph never appears without its weights
            for f in rec["weights"] + [rec["file"]]:
                os.replace(scratch / name / f, out_dir / f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return records


def _dim(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


# --- Text encoder ------------------------------------------------------------------------------------

def text_encoder_spec(encoder, batch: int, dynamic: bool = False) -> GraphSpec:
    b = "batch" if dynamic else batch
    return GraphSpec((TensorSpec("input_ids", (b, encoder.max_length), "int64"),),
                     (TensorSpec("last_hidden_state", (b, encoder.max_length, encoder.dim), "float32"),))


def text_encoder_examples(encoder, batch: int, seed: int = 0, prompts: Sequence[str] = GATE_PROMPTS,
                          dynamic: bool = False) -> list[dict[str, torch.Tensor]]:
    """Gate inputs: seeded random ids over the whole vocabulary, tokenized ``prompts`` (cycled to ``batch``),
    and with ``dynamic`` the random ids again at batch ``batch + 1``."""
    g = torch.Generator().manual_seed(seed)
    rand = [torch.randint(0, encoder.vocab_size, (b, encoder.max_length), generator=g)
            for b in ([batch, batch + 1] if dynamic else [batch])]
    ids = []
    for start in range(0, len(prompts), batch):
        chunk = [prompts[(start + i) % len(prompts)] for i in range(batch)]
        ids.append(torch.from_numpy(encoder.tokenize(chunk)))
    return [{"input_ids": x} for x in rand[:1] + ids + rand[1:]]


def export_text_encoder_onnx(encoder, path: str | Path, batch: int, opset: int = MIN_OPSET, dynamic: bool = False,
                             tolerance: float | None = None, seed: int = 0) -> dict:
    """Export ``encoder`` (a :class:`~taskfold.upcycle.text_encoders.TextEncoder`) to ``path``; return its record.

    The record holds the file, any weight file, input/output names, shapes and dtypes, the
    opset, the encoder's own record (kind, max_length, dim) and the parity reached.
    """
    path = Path(path)
    _dim(batch, "batch")
    if path.suffix != ".onnx":
        raise ConfigError(f"text encoder graph path {str(path)!r} must end in .onnx")
    tol = TOLERANCES[("onnx", "fp32")] if tolerance is None else tolerance
    spec = text_encoder_spec(encoder, batch, dynamic)
    examples = text_encoder_examples(encoder, batch, seed, dynamic=dynamic)
    name = path.stem
    with _eval_mode(encoder):
        rec = _export_checked([(name, _TextEncoderGraph(encoder), spec, examples)], path.parent, opset, tol)[name]
    return rec | {"encoder": encoder.to_dict()}


def export_tokenizer(encoder, out_dir: str | Path, prompts: Sequence[str] = GATE_PROMPTS) -> dict:
    """Write the runtime's tokenizer files for ``encoder`` into ``out_dir`` and check the runtime reader on ``prompts``.

    Raises :class:`ParityError` naming the first prompt whose ids differ.
    """
    from taskfold.runtime.tokenizers import load_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".taskfold-tokenizer-", dir=out_dir))
    try:
        files = encoder.save_tokenizer(scratch)
        reader = load_tokenizer(scratch, max_length=encoder.max_length)
        want, got = encoder.tokenize(list(prompts)), reader(list(prompts))
        bad = [i for i in range(len(prompts)) if not np.array_equal(want[i], got[i])]
        if bad:
            raise ParityError(f"runtime tokenizer ({reader.kind}) gives ids {got[bad[0]].tolist()} for "
                              f"prompt {prompts[bad[0]]!r}, the {encoder.kind} encoder gives {want[bad[0]].tolist()}")
        for f in files:
            os.replace(scratch / f, out_dir / f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"kind": reader.kind, "files": files, "max_length": encoder.max_length,
            "pad_id": int(reader.pad_id), "checked_prompts": len(prompts)}


# --- Codec ----------------------------------------------------------------------------------------------

def codec_specs(codec, batch: int, height: int, width: int, dynamic: bool = False) -> dict[str, GraphSpec]:
    h, w = codec.latent_size(height, width)
    b, H, W = ("batch", "height", "width") if dynamic else (batch, height, width)
    lh, lw = ("latent_height", "latent_width") if dynamic else (h, w)
    images = TensorSpec("images", (b, 3, H, W), "float32")
    latents = TensorSpec("latents", (b, codec.latent_channels, lh, lw), "float32")
    return {"vae_encoder": GraphSpec((images,), (latents,)), "vae_decoder": GraphSpec((latents,), (images,))}


def export_codec_onnx(codec, out_dir: str | Path, height: int, width: int, batch: int, opset: int = MIN_OPSET,
                      dynamic: bool = False, tolerance: float | None = None, seed: int = 0) -> dict:
    """Export a VAE codec as ``vae_encoder.onnx`` and ``vae_decoder.onnx`` in ``out_dir``; return the codec record
    with a ``graphs`` entry per graph. An identity codec writes nothing (``graphs`` is empty)."""
    for v, n in ((height, "height"), (width, "width"), (batch, "batch")):
        _dim(v, n)
    record = codec.to_dict()
    if codec.kind == "identity":
        return record | {"graphs": {}}
    if codec.kind != "vae":
        raise ConfigError(f"codec kind {codec.kind!r} is not one of identity, vae")
    tol = TOLERANCES[("onnx", "fp32")] if tolerance is None else tolerance
    specs = codec_specs(codec, batch, height, width, dynamic)
    h, w = codec.latent_size(height, width)
    g = torch.Generator().manual_seed(seed)
    sizes = [(batch, height, width, h, w)]
    if dynamic:  # a second size exercises the named axes
        f = codec.scale_factor
        sizes.append((batch + 1, height + 2 * f, width + f, h + 2, w + 1))
    images = [{"images": torch.rand(b, 3, H, W, generator=g) * 2 - 1} for b, H, W, _, _ in sizes]
    latents = [{"latents": torch.randn(b, codec.latent_channels, lh, lw, generator=g)} for b, _, _, lh, lw in sizes]
    graphs = [("vae_encoder", _CodecEncodeGraph(codec), specs["vae_encoder"], images),
              ("vae_decoder", _CodecDecodeGraph(codec), specs["vae_decoder"], latents)]
    with _eval_mode(codec):
        return record | {"graphs": _export_checked(graphs, Path(out_dir), opset, tol)}
