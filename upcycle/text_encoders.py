"""Text encoders behind one interface: prompts to the UNet's ``encoder_hidden_states``.

``encode(prompts)`` gives ``[B, L, dim]`` hidden states; ``tokenize`` int64 ``[B, L]`` ids, padded
or truncated to ``max_length``:

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
      token_counts.json  (optional)

``token_counts.json`` is a tiny encoder's record of what it was trained on: how often each word
appeared in the captions of the rows that trained it (written by ``taskfold train`` /
``taskfold pretrain`` when the encoder is trained). A word it does not list (or lists with 0) was
never trained: its embedding is still the random initialisation. CLIP encoders record nothing.

:func:`load_text_encoder` picks the class from what a folder holds; :func:`build_vocabulary`
gives a tiny encoder's words from prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from taskfold._io import atomic_output_dir, write_json_atomic
from taskfold.errors import BaseModelError, CheckpointError, ConfigError

from ._hf import quiet_hf as _quiet_hf, read_json as _read_json

TINY_FORMAT_VERSION = 1
#: Special tokens of the tiny tokenizer; their ids are their positions.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
CLIP_MODEL_TYPES = ("clip_text_model", "clip")
#: A tiny encoder's record of the words it was trained on (see the module docstring).
TOKEN_COUNTS_FILE = "token_counts.json"



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


def prompt_words(prompt: str) -> list[str]:
    """The words of ``prompt`` as the tiny tokenizer splits them (lower case; white space and punctuation)."""
    return [word for word, _ in _pre_tokenizer().pre_tokenize_str(_normalizer().normalize_str(prompt))]


def count_words(prompts: Sequence[str]) -> dict[str, int]:
    """How often each word (:func:`prompt_words`) occurs in ``prompts``, sorted by word."""
    norm, pre = _normalizer(), _pre_tokenizer()
    counts: dict[str, int] = {}
    for p in TextEncoder._check_prompts(prompts):
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(p)):
            counts[word] = counts.get(word, 0) + 1
    return dict(sorted(counts.items()))


def build_vocabulary(prompts: Sequence[str], min_count: int = 1) -> list[str]:
    """The words of ``prompts`` as the tiny tokenizer splits them, sorted; those seen ``min_count``+ times.

    The order depends only on the set of words, not on the order of the rows, so the same
    dataset always gives the same ids. Special tokens are not included (they take ids 0-3).
    """
    return [w for w, n in count_words(prompts).items() if n >= min_count and w not in SPECIAL_TOKENS]


def read_token_counts(folder: str | Path) -> dict[str, int] | None:
    """A tiny encoder folder's ``token_counts.json`` (word -> count), or ``None`` when it has none."""
    path = Path(folder) / TOKEN_COUNTS_FILE
    if not path.is_file():
        return None
    counts = _read_json(path, "text encoder token counts")
    bad = [k for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise CheckpointError(f"{str(path)!r} must map words to non-negative counts; {bad[0]!r} maps to "
                              f"{counts[bad[0]]!r}", hint="it is written by `taskfold pretrain` / `taskfold train`")
    return counts


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
        #: word -> how often it appeared in the captions this encoder was trained on; None: not recorded
        self.token_counts: dict[str, int] | None = None
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
            if self.token_counts is not None:
                write_json_atomic(tmp / TOKEN_COUNTS_FILE, dict(sorted(self.token_counts.items())))
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
        model.token_counts = read_token_counts(folder)
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


