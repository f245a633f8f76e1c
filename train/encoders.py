"""Text encoders and image codecs behind one interface, so training, export and runtime treat them alike.

Codecs map images to what the UNet denoises and back:

==============  ==================================================================  ==============
codec           ``encode(images [B, 3, H, W] in [-1, 1])``                         ``scale_factor``
==============  ==================================================================  ==============
identity        the images themselves (pixel-space models, the bundled tiny base)  1
vae             ``(mode(q(z | x)) - shift_factor) * scaling_factor`` of a           ``2 ** (blocks - 1)``
                diffusers ``AutoencoderKL`` (Stable Diffusion's latent space)
==============  ==================================================================  ==============

``decode`` inverts that and clamps to [-1, 1]. Latents are the *mode* (mean) of the VAE's
diagonal Gaussian by default, not a sample: the same image then always gives the same
latents (a resumed or re-sharded training run draws exactly what it drew before, latents
can be cached, the exported encoder graph is a pure function with no noise input); the SD
VAE's posterior standard deviation is small next to the latent scale, so little is lost.
``encode(..., sample=True, generator=g)`` draws from the posterior instead, as the diffusers
text-to-image training script does.

Text encoders map prompts to ``[B, L, dim]`` hidden states (the UNet's
``encoder_hidden_states``); ``tokenize`` gives int64 ``[B, L]`` ids, padded or truncated to
``max_length``:

* :class:`TinyTextEncoder` -- the project's own: a ``tokenizers`` WordLevel tokenizer
  (lower case; split on white space and around punctuation; ``[PAD] [UNK] [BOS] [EOS]``) and
  a small pre-norm transformer (token embedding + learned positions + ``nn.TransformerEncoder``
  + LayerNorm). No padding mask, like the SD CLIP encoders: the UNet attends to all ``L``
  states, pads included, so training, export and runtime see one fixed-length function.
* :class:`CLIPTextEncoder` -- a pipeline's ``text_encoder/`` (``CLIPTextModel``) and
  ``tokenizer/`` (``CLIPTokenizer``), loaded from a local folder; its ``last_hidden_state``
  (SD 1.x / 2.x; SDXL's second encoder and penultimate-layer states are not handled here).

Folders written by ``save_pretrained``::

    tiny/                          clip/
      config.json   kind "tiny"      config.json        CLIPTextConfig (transformers)
      tokenizer.json  WordLevel      model.safetensors
      model.safetensors              tokenizer.json, tokenizer_config.json

:func:`load_text_encoder` and :func:`load_codec` pick the class from what a folder holds.
:func:`shapes_world_prompts` / :func:`dataset_prompts` give the prompts a tiny vocabulary is
built from; :func:`save_random_clip` / :func:`save_random_vae` write random-weight SD-layout
components (no hub is reachable: tests and demos build their own).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from taskfold._io import atomic_output_dir, write_json_atomic
from taskfold.errors import BaseModelError, CheckpointError, ConfigError

TINY_FORMAT_VERSION = 1
#: Special tokens of the tiny tokenizer; their ids are their positions.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
CLIP_MODEL_TYPES = ("clip_text_model", "clip")


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {what} {str(path)!r}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {str(path)!r} is not a JSON object")
    return obj


@contextlib.contextmanager
def _quiet_hf():
    """Silence the transformers / diffusers progress bars for one load or save, then restore them."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    t_on, d_on = tlog.is_progress_bar_enabled(), dlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        if t_on:
            tlog.enable_progress_bar()
        if d_on:
            dlog.enable_progress_bar()


# --- Codecs --------------------------------------------------------------------------------------

class Codec(nn.Module):
    """Images ``[B, 3, H, W]`` in [-1, 1] <-> what the UNet denoises ``[B, C, H / f, W / f]``.

    ``kind`` is ``"identity"`` or ``"vae"``; ``scale_factor`` (f) is pixels per latent along
    each side; ``latent_channels`` (C) the channels the UNet sees; ``scaling_factor`` (and
    ``shift_factor``) map raw VAE latents to roughly unit variance.
    """

    kind: str = ""
    scale_factor: int = 1
    latent_channels: int = 3
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    source: str | None = None

    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the latents of an ``height x width`` image; both must divide by ``scale_factor``."""
        f = self.scale_factor
        if height % f or width % f or height < f or width < f:
            raise ConfigError(f"image size {height}x{width} is not a positive multiple of the {self.kind} "
                              f"codec's scale factor {f}")
        return height // f, width // f

    def to_dict(self) -> dict:
        """The record a package or a training run stores (``codec.json``); :func:`load_codec` reads it."""
        return {"kind": self.kind, "scale_factor": self.scale_factor, "latent_channels": self.latent_channels,
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor, "source": self.source}

    def _check_images(self, images: torch.Tensor, channels: int, what: str) -> None:
        if images.dim() != 4 or images.shape[1] != channels:
            raise ConfigError(f"{self.kind} codec {what} expects [B, {channels}, H, W], got {list(images.shape)}")


class IdentityCodec(Codec):
    """The codec of pixel-space models: encode and decode return their input."""

    kind = "identity"

    def __init__(self, channels: int = 3):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"identity codec channels must be a positive integer, got {channels!r}")
        self.latent_channels = channels

    def encode(self, images, sample=False, generator=None):
        self._check_images(images, self.latent_channels, "encode")
        return images

    def decode(self, latents):
        self._check_images(latents, self.latent_channels, "decode")
        return latents


def _vae_folder(folder: Path) -> Path:
    """The folder holding the VAE's ``config.json``: ``folder`` itself or a pipeline's ``vae/``."""
    if not folder.is_dir():
        raise BaseModelError(f"VAE folder {str(folder)!r} does not exist or is not a directory")
    for cand in (folder / "vae", folder):
        cfg = cand / "config.json"
        if cfg.is_file() and _read_json(cfg, "VAE config").get("_class_name") == "AutoencoderKL":
            return cand
    raise BaseModelError(f"{str(folder)!r} holds no AutoencoderKL: expected config.json with "
                         f"_class_name 'AutoencoderKL' there or in vae/")


class VAECodec(Codec):
    """A diffusers ``AutoencoderKL`` as a codec (latent-space models such as Stable Diffusion)."""

    kind = "vae"

    def __init__(self, vae: nn.Module, source: str | None = None):
        super().__init__()
        cfg = vae.config
        self.vae = vae
        self.scale_factor = 2 ** (len(cfg.block_out_channels) - 1)
        self.latent_channels = int(cfg.latent_channels)
        self.scaling_factor = float(cfg.scaling_factor)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)
        self.source = source

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "VAECodec":
        """Load ``folder/vae`` (a pipeline) or ``folder`` (a VAE) in float32, from local files only."""
        from diffusers import AutoencoderKL

        folder = Path(folder)
        where = _vae_folder(folder)
        try:
            with _quiet_hf():
                vae = AutoencoderKL.from_pretrained(str(where), local_files_only=True, torch_dtype=torch.float32)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load the VAE in {str(where)!r}: {str(e).splitlines()[0]}") from None
        return cls(vae.eval(), source=str(folder.resolve()))

    def encode(self, images, sample=False, generator=None):
        self._check_images(images, int(self.vae.config.in_channels), "encode")
        dist = self.vae.encode(images).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, latents):
        self._check_images(latents, self.latent_channels, "decode")
        z = latents / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.clamp(-1.0, 1.0)


def load_codec(folder_or_record: str | Path | dict) -> Codec:
    """A codec from a record (:meth:`Codec.to_dict`), a ``codec.json``, a VAE folder or a pipeline folder."""
    rec = folder_or_record
    if not isinstance(rec, dict):
        path = Path(rec)
        if path.is_file() and path.suffix == ".json":
            rec = _read_json(path, "codec record")
        elif path.is_dir() and (path / "codec.json").is_file():
            rec = _read_json(path / "codec.json", "codec record")
        elif path.is_dir():
            return VAECodec.from_pretrained(path)
        else:
            raise BaseModelError(f"codec {str(path)!r} does not exist: expected a codec.json, a VAE folder "
                                 f"or a pipeline folder with vae/")
    kind = rec.get("kind")
    if kind == "identity":
        return IdentityCodec(rec.get("latent_channels", 3))
    if kind == "vae":
        if not rec.get("source"):
            raise ConfigError("vae codec record has no 'source' folder to load the VAE from")
        codec = VAECodec.from_pretrained(rec["source"])
        for key in ("scale_factor", "latent_channels", "scaling_factor", "shift_factor"):
            if key in rec and rec[key] is not None and float(rec[key]) != float(getattr(codec, key)):
                raise ConfigError(f"codec record says {key} {rec[key]} but the VAE in {rec['source']!r} "
                                  f"has {getattr(codec, key)}")
        return codec
    raise ConfigError(f"codec kind {kind!r} is not one of identity, vae")


# --- Text encoders: the interface ------------------------------------------------------------------

class TextEncoder(nn.Module):
    """Prompts -> ``[B, max_length, dim]`` hidden states, in two steps: ``tokenize`` then ``forward``."""

    kind: str = ""
    max_length: int
    dim: int
    vocab_size: int
    source: str | None = None

    def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
        """int64 ``[B, max_length]`` token ids (with the encoder's begin/end tokens, padded, truncated)."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """``forward(tokenize(prompts))`` on the encoder's device."""
        device = next(self.parameters()).device
        return self(torch.from_numpy(self.tokenize(prompts)).to(device))

    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        raise NotImplementedError

    def save_tokenizer(self, folder: str | Path) -> list[str]:
        """Write the tokenizer files a runtime reads (:mod:`taskfold.runtime.tokenizers`); return their names."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"kind": self.kind, "max_length": self.max_length, "dim": self.dim, "vocab_size": self.vocab_size,
                "source": self.source}

    @staticmethod
    def _check_prompts(prompts) -> list[str]:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"prompts must be a list of strings, got {type(prompts).__name__} "
                              f"{str(prompts)[:60]!r}")
        return list(prompts)


# --- The tiny text encoder ------------------------------------------------------------------------

def _normalizer():
    from tokenizers import normalizers

    return normalizers.Lowercase()


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def build_vocabulary(prompts: Sequence[str], min_count: int = 1) -> list[str]:
    """The words of ``prompts`` as the tiny tokenizer splits them, sorted; those seen ``min_count``+ times.

    The order depends only on the set of words, not on the order of the rows, so the same
    dataset always gives the same ids. Special tokens are not included (they take ids 0-3).
    """
    norm, pre = _normalizer(), _pre_tokenizer()
    counts: dict[str, int] = {}
    for p in TextEncoder._check_prompts(prompts):
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(p)):
            counts[word] = counts.get(word, 0) + 1
    return sorted(w for w, n in counts.items() if n >= min_count and w not in SPECIAL_TOKENS)


def dataset_prompts(data_dir: str | Path) -> list[str]:
    """Every ``prompt`` of ``data_dir/metadata.jsonl`` (all splits and tasks; rows without one give "")."""
    from taskfold.errors import DataError

    from .data import METADATA

    path = Path(data_dir) / METADATA
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {str(path)!r}: {e.strerror or e}") from None
    prompts = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{str(path)!r} line {i} is not JSON: {e.msg}") from None
        prompt = row.get("prompt", "") if isinstance(row, dict) else None
        if not isinstance(prompt, str):
            raise DataError(f"{str(path)!r} line {i}: prompt must be a string, got {prompt!r}")
        prompts.append(prompt)
    return prompts


def shapes_world_prompts() -> list[str]:
    """Every prompt the shapes world (:mod:`.shapes`) can write, in a fixed order: a vocabulary that
    covers any shapes dataset, however few rows it has."""
    from .shapes import MOVES, OBJECT_SIZES, PALETTE, SHAPES

    out = [""]
    for shape in SHAPES:
        for colour in PALETTE:
            out += [f"a {colour} {shape}", *(f"a {size} {colour} {shape}" for size in OBJECT_SIZES),
                    f"make the {shape} {colour}", f"remove the {colour} {shape}"]
        out += [f"move the {shape} {d}" for d in MOVES] + [f"make the {shape} larger", f"make the {shape} smaller"]
    return out


def wordlevel_tokenizer(words: Sequence[str], max_length: int):
    """The tiny encoder's ``tokenizers.Tokenizer``: ids 0-3 the specials, then ``words`` in order."""
    from tokenizers import Tokenizer, processors
    from tokenizers.models import WordLevel

    words = list(words)
    dup = sorted({w for w in words if words.count(w) > 1} | (set(words) & set(SPECIAL_TOKENS)))
    if dup:
        raise ConfigError(f"vocabulary words must be unique and not special tokens, got duplicates {dup[:5]}")
    if any(not isinstance(w, str) or not w for w in words):
        raise ConfigError("vocabulary words must be non-empty strings")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(words))}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS_ID), ("[EOS]", EOS_ID)])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=PAD_ID, pad_token="[PAD]", length=max_length)
    return tok


@dataclass(frozen=True)
class TinyTextConfig:
    """The tiny encoder's ``config.json``; the only way to rebuild it."""

    vocab_size: int
    dim: int
    layers: int = 2
    heads: int = 4
    max_length: int = 16
    ff_mult: int = 4
    kind: str = "tiny"
    format_version: int = TINY_FORMAT_VERSION

    def __post_init__(self):
        for name in ("vocab_size", "dim", "layers", "heads", "max_length", "ff_mult"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"tiny text encoder {name} must be a positive integer, got {v!r}")
        if self.dim % self.heads:
            raise ConfigError(f"tiny text encoder dim {self.dim} is not divisible by heads {self.heads}")
        if self.max_length < 2:
            raise ConfigError(f"tiny text encoder max_length must be at least 2 ([BOS] and [EOS]), "
                              f"got {self.max_length}")
        if self.vocab_size < len(SPECIAL_TOKENS):
            raise ConfigError(f"tiny text encoder vocab_size {self.vocab_size} is smaller than its "
                              f"{len(SPECIAL_TOKENS)} special tokens")
        if self.kind != "tiny":
            raise ConfigError(f"tiny text encoder config has kind {self.kind!r}, expected 'tiny'")
        if self.format_version != TINY_FORMAT_VERSION:
            raise ConfigError(f"tiny text encoder format_version {self.format_version!r} is not supported "
                              f"(this taskfold reads {TINY_FORMAT_VERSION})")

    @classmethod
    def from_dict(cls, d: dict) -> "TinyTextConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown tiny text encoder config key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


class TinyTextEncoder(TextEncoder):
    """A WordLevel tokenizer and a small pre-norm transformer; ``vocab`` is the words (see :func:`build_vocabulary`)."""

    kind = "tiny"

    def __init__(self, vocab: Sequence[str], dim: int, layers: int = 2, heads: int = 4, max_length: int = 16,
                 ff_mult: int = 4, seed: int | None = 0, tokenizer=None):
        super().__init__()
        words = list(vocab)
        self.config = TinyTextConfig(len(words) + len(SPECIAL_TOKENS), dim, layers, heads, max_length, ff_mult)
        self.tokenizer = tokenizer if tokenizer is not None else wordlevel_tokenizer(words, max_length)
        self.max_length, self.dim, self.vocab_size = max_length, dim, self.config.vocab_size
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.token_embedding = nn.Embedding(self.vocab_size, dim)
            self.position_embedding = nn.Parameter(torch.randn(1, max_length, dim) * 0.02)
            nn.init.normal_(self.token_embedding.weight, std=0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, dim * ff_mult, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.final_norm = nn.LayerNorm(dim)

    @property
    def words(self) -> list[str]:
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][len(SPECIAL_TOKENS):]

    def tokenize(self, prompts):
        enc = self.tokenizer.encode_batch(self._check_prompts(prompts))
        return np.array([e.ids for e in enc], dtype=np.int64).reshape(len(enc), self.max_length)

    def forward(self, input_ids):
        if input_ids.dim() != 2 or input_ids.shape[1] != self.max_length:
            raise ConfigError(f"tiny text encoder expects input_ids [B, {self.max_length}], "
                              f"got {list(input_ids.shape)}")
        x = self.token_embedding(input_ids) + self.position_embedding
        return self.final_norm(self.encoder(x))

    def save_tokenizer(self, folder):
        self.tokenizer.save(str(Path(folder) / "tokenizer.json"))
        return ["tokenizer.json"]

    def save_pretrained(self, folder, overwrite=False):
        """Write ``config.json``, ``tokenizer.json``, ``model.safetensors``; the folder appears whole or not at all."""
        from safetensors.torch import save_file

        with atomic_output_dir(folder, overwrite=overwrite) as tmp:
            write_json_atomic(tmp / "config.json", asdict(self.config))
            self.save_tokenizer(tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                      str(tmp / "model.safetensors"))
        return Path(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "TinyTextEncoder":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise CheckpointError(f"tiny text encoder folder {str(folder)!r} has no {name}",
                                      hint="it is written by TinyTextEncoder.save_pretrained")
        cfg = TinyTextConfig.from_dict(_read_json(folder / "config.json", "tiny text encoder config"))
        try:
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises plain Exception on a bad file
            raise CheckpointError(f"cannot read {str(folder / 'tokenizer.json')!r}: {str(e).splitlines()[0]}") \
                from None
        if tok.get_vocab_size(with_added_tokens=True) != cfg.vocab_size:
            raise CheckpointError(f"{str(folder / 'tokenizer.json')!r} has {tok.get_vocab_size()} tokens, "
                                  f"config.json says vocab_size {cfg.vocab_size}")
        words = [t for t, _ in sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])]
        model = cls(words[len(SPECIAL_TOKENS):], cfg.dim, cfg.layers, cfg.heads, cfg.max_length, cfg.ff_mult,
                    seed=None, tokenizer=tok)
        try:
            state = load_file(str(folder / "model.safetensors"))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read {str(folder / 'model.safetensors')!r}: {e}") from None
        missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
        bad = [k for k in set(state) & set(model.state_dict()) if state[k].shape != model.state_dict()[k].shape]
        if missing or unexpected or bad:
            raise CheckpointError(f"{str(folder / 'model.safetensors')!r} does not match config.json: "
                                  f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}, "
                                  f"wrong shape {sorted(bad)[:3]}")
        model.load_state_dict(state)
        model.source = str(folder.resolve())
        return model.eval()

    def to_dict(self):
        return super().to_dict() | {"layers": self.config.layers, "heads": self.config.heads}


# --- CLIP (Stable Diffusion pipelines) -------------------------------------------------------------

def _clip_folders(folder: Path) -> tuple[Path, Path]:
    """``(model folder, tokenizer folder)``: a pipeline's ``text_encoder/`` + ``tokenizer/``, or one flat folder."""
    if not folder.is_dir():
        raise BaseModelError(f"text encoder folder {str(folder)!r} does not exist or is not a directory")
    if (folder / "text_encoder" / "config.json").is_file():
        model_dir, tok_dir = folder / "text_encoder", folder / "tokenizer"
    else:
        model_dir = tok_dir = folder
    cfg = model_dir / "config.json"
    model_type = _read_json(cfg, "text encoder config").get("model_type") if cfg.is_file() else None
    if model_type not in CLIP_MODEL_TYPES:
        raise BaseModelError(f"{str(model_dir)!r} holds no CLIP text model: expected config.json with "
                             f"model_type 'clip_text_model', got {model_type!r}")
    if not any((tok_dir / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise BaseModelError(f"{str(tok_dir)!r} holds no CLIP tokenizer: expected vocab.json + merges.txt "
                             f"or tokenizer.json")
    return model_dir, tok_dir


class CLIPTextEncoder(TextEncoder):
    """A transformers ``CLIPTextModel`` + ``CLIPTokenizer``; ``forward`` returns ``last_hidden_state``."""

    kind = "clip"

    def __init__(self, model: nn.Module, tokenizer, source: str | None = None):
        super().__init__()
        self.model, self.tokenizer, self.source = model, tokenizer, source
        cfg = model.config
        self.dim, self.vocab_size = int(cfg.hidden_size), int(cfg.vocab_size)
        self.max_length = int(min(tokenizer.model_max_length, cfg.max_position_embeddings))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "CLIPTextEncoder":
        """Load a pipeline folder (``text_encoder/``, ``tokenizer/``) or a flat CLIP folder, local files only."""
        from transformers import CLIPTextModel, CLIPTokenizer

        folder = Path(folder)
        model_dir, tok_dir = _clip_folders(folder)
        try:
            with _quiet_hf():
                model = CLIPTextModel.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
                tok = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load the CLIP text encoder in {str(folder)!r}: "
                                  f"{str(e).splitlines()[0]}") from None
        return cls(model.eval(), tok, source=str(folder.resolve()))

    def tokenize(self, prompts):
        out = self.tokenizer(self._check_prompts(prompts), padding="max_length", max_length=self.max_length,
                             truncation=True, return_tensors="np")
        return out["input_ids"].astype(np.int64)

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state

    def save_tokenizer(self, folder):
        with _quiet_hf():
            self.tokenizer.save_pretrained(str(folder))
        return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("tokenizer") or
                      p.name in ("vocab.json", "merges.txt", "special_tokens_map.json"))

    def save_pretrained(self, folder, overwrite=False):
        """Write the model (``config.json``, ``model.safetensors``) and tokenizer into one flat folder."""
        with atomic_output_dir(folder, overwrite=overwrite) as tmp, _quiet_hf():
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
        return Path(folder)

    def to_dict(self):
        return super().to_dict() | {"model_type": self.model.config.model_type}


def load_text_encoder(folder: str | Path) -> TextEncoder:
    """The text encoder saved in ``folder``: ``config.json`` of kind "tiny", or a CLIP (flat or pipeline) folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BaseModelError(f"text encoder folder {str(folder)!r} does not exist or is not a directory")
    cfg = folder / "config.json"
    if cfg.is_file():
        d = _read_json(cfg, "text encoder config")
        if d.get("kind") == "tiny":
            return TinyTextEncoder.from_pretrained(folder)
        if "kind" in d:
            raise ConfigError(f"{str(cfg)!r} has text encoder kind {d['kind']!r}, expected 'tiny'")
        if d.get("model_type") in CLIP_MODEL_TYPES:
            return CLIPTextEncoder.from_pretrained(folder)
    if (folder / "text_encoder" / "config.json").is_file():
        return CLIPTextEncoder.from_pretrained(folder)
    raise BaseModelError(f"{str(folder)!r} holds no text encoder: expected config.json with kind 'tiny', "
                         f"a CLIP text model folder, or a pipeline folder with text_encoder/ and tokenizer/")


# --- Random stand-ins: SD-layout components built offline (tests, demos) ---------------------------

def learn_bpe_merges(prompts: Sequence[str], num_merges: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges learnt from ``prompts`` (CLIP's split, ``</w>`` word ends), most frequent pair first.

    Ties go to the smaller pair, so the result depends only on the prompts. Enough to give a
    random CLIP tokenizer multi-symbol words; not a replacement for CLIP's real merges.
    """
    from taskfold.runtime.tokenizers import CLIPBPETokenizer

    counts: dict[tuple[str, ...], int] = {}
    for p in prompts:
        for w in CLIPBPETokenizer.pre_tokenize(CLIPBPETokenizer.normalize(p)):
            key = tuple(w[:-1]) + (w[-1] + "</w>",)
            counts[key] = counts.get(key, 0) + 1
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: dict[tuple[str, str], int] = {}
        for word, n in counts.items():
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda pr: (-pairs[pr], pr))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for word, n in counts.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        counts = merged
    return merges


def save_random_clip(folder: str | Path, prompts: Sequence[str], num_merges: int = 64, hidden: int = 32,
                     layers: int = 2, heads: int = 4, max_length: int = 16, seed: int = 0,
                     pad_token: str = "<|endoftext|>") -> Path:
    """Write a random-weight CLIP text encoder in SD pipeline layout: ``folder/text_encoder``, ``folder/tokenizer``.

    The tokenizer folder holds ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json``
    like an SD 1.x / 2.x pipeline (all 256 byte symbols, with and without ``</w>``, the
    merges learnt from ``prompts``, then the two specials).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    from taskfold.runtime.tokenizers import byte_symbols

    folder = Path(folder)
    merges = learn_bpe_merges(prompts, num_merges)
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges]
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                        encoding="utf-8")
    write_json_atomic(tok_dir / "tokenizer_config.json",
                      {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length,
                       "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                       "pad_token": pad_token})
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden * 4,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_length,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab[pad_token] if pad_token in vocab else 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(cfg).eval()
    with _quiet_hf():
        model.save_pretrained(str(folder / "text_encoder"))
    return folder


def save_random_vae(folder: str | Path, block_out_channels: Sequence[int] = (8, 16), latent_channels: int = 4,
                    seed: int = 0, scaling_factor: float = 0.18215) -> Path:
    """Write a random-weight ``AutoencoderKL`` to ``folder/vae`` (SD pipeline layout)."""
    from diffusers import AutoencoderKL

    folder = Path(folder)
    n = len(block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(block_out_channels=tuple(block_out_channels), down_block_types=("DownEncoderBlock2D",) * n,
                            up_block_types=("UpDecoderBlock2D",) * n, latent_channels=latent_channels,
                            norm_num_groups=min(4, min(block_out_channels)), layers_per_block=1,
                            scaling_factor=scaling_factor)
    with _quiet_hf():
        vae.save_pretrained(str(folder / "vae"))
    return folder
