"""The runtime's tokenizers: a package's ``tokenizer.json`` run by the ``tokenizers`` library.

Every text encoder a package carries saved its tokenizer as a ``tokenizers`` JSON: the tiny
encoder's WordLevel tokenizer (lower case; white space and punctuation split;
``[BOS] ... [EOS]``) and a pipeline's CLIP BPE tokenizer (``CLIPTokenizer`` is a ``tokenizers``
tokenizer in transformers 5 and writes ``tokenizer.json`` itself). ``tokenizers`` is a Rust
wheel without torch, so the runtime reads that file directly: the ids are the training
tokenizer's by construction, and checked at export (:func:`taskfold.export.encoders.export_tokenizer`).

``tokenizer(prompts)`` returns int64 ``[B, max_length]``, the text encoder graph's ``input_ids``:
each prompt truncated (begin and end tokens kept) and padded to ``max_length`` with the
package's pad id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from taskfold.errors import ConfigError, PackageError

#: The files a runtime tokenizer may read, by name; nothing else in its folder is opened.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _require_tokenizers():
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("the runtime's tokenizer needs the `tokenizers` package, which is not installed",
                          hint="pip install tokenizers (it has no torch dependency)") from None
    return Tokenizer


def _json(data: bytes, where: str) -> dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackageError(f"cannot read tokenizer file {where!r}: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise PackageError(f"tokenizer file {where!r} is not a JSON object")
    return obj


class RuntimeTokenizer:
    """Prompts to ``input_ids``: a ``tokenizers.Tokenizer`` truncating and padding to ``max_length``."""

    def __init__(self, tokenizer, max_length: int, pad_id: int, kind: str, unk_id: int | None = None):
        self.tokenizer, self.max_length, self.pad_id, self.kind = tokenizer, int(max_length), int(pad_id), kind
        self.unk_id = unk_id
        self._plain = None  # an untruncated, unpadded twin, built on the first look at a whole prompt
        tokenizer.enable_truncation(self.max_length)
        pad_token = tokenizer.id_to_token(self.pad_id)
        tokenizer.enable_padding(length=self.max_length, pad_id=self.pad_id, pad_token=pad_token or "")

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        enc = self.tokenizer.encode_batch(list(prompts))
        return np.array([e.ids for e in enc], dtype=np.int64).reshape(len(enc), self.max_length)

    def untruncated(self, prompt: str) -> tuple[int, list[str]]:
        """``prompt`` before truncation: how many tokens it is (begin and end tokens included), and the pieces
        the vocabulary lacks (each encoded as the unknown token), in order, once each."""
        if self._plain is None:
            self._plain = type(self.tokenizer).from_str(self.tokenizer.to_str())
            self._plain.no_truncation()
            self._plain.no_padding()
        enc = self._plain.encode(prompt)
        unknown = []
        if self.unk_id is not None:
            for i, (start, end) in zip(enc.ids, enc.offsets):
                word = prompt[start:end]
                if i == self.unk_id and word and word not in unknown:
                    unknown.append(word)
        return len(enc.ids), unknown


def tokenizer_from_files(files: dict[str, bytes], max_length: int | None = None, pad_id: int | None = None,
                         where: str = "tokenizer") -> RuntimeTokenizer:
    """The runtime tokenizer from its files' contents by name (what the package reader has read and checked).

    ``max_length`` and ``pad_id`` default to what the files say: the tokenizer's own fixed padding
    (the tiny encoder's), else ``tokenizer_config.json``'s ``model_max_length`` and ``pad_token``.
    """
    Tokenizer = _require_tokenizers()
    if "tokenizer.json" not in files:
        raise PackageError(f"{where!r} holds no tokenizer.json (the files are {sorted(files)})",
                           hint="re-export the package with this taskfold; it writes tokenizer.json")
    d = _json(files["tokenizer.json"], f"{where}/tokenizer.json")
    try:
        tok = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    except Exception as e:  # the Rust library's own error type
        raise PackageError(f"{where}/tokenizer.json is not a tokenizer the `tokenizers` library reads "
                           f"({str(e).splitlines()[0][:200]})") from None
    cfg = _json(files["tokenizer_config.json"], f"{where}/tokenizer_config.json") \
        if "tokenizer_config.json" in files else {}
    padding = d.get("padding") or {}
    if max_length is None:
        strategy = padding.get("strategy")
        fixed = strategy.get("Fixed") if isinstance(strategy, dict) else None
        max_length = fixed or (d.get("truncation") or {}).get("max_length") or cfg.get("model_max_length")
    if not isinstance(max_length, int) or max_length < 2:
        raise PackageError(f"{where}: no usable max_length ({max_length!r}) for the tokenizer")
    if pad_id is None:
        pad_token = cfg.get("pad_token")
        pad_token = pad_token.get("content") if isinstance(pad_token, dict) else pad_token
        pad_id = padding.get("pad_id") if padding else (tok.token_to_id(pad_token) if pad_token else None)
    if not isinstance(pad_id, int) or pad_id < 0:
        raise PackageError(f"{where}: no pad token id for the tokenizer (got {pad_id!r})")
    model = d.get("model") if isinstance(d.get("model"), dict) else {}
    kind = {"WordLevel": "wordlevel", "BPE": "clip-bpe"}.get(model.get("type"), "other")
    unk = model.get("unk_token")
    unk_id = tok.token_to_id(unk) if isinstance(unk, str) else None
    return RuntimeTokenizer(tok, max_length, pad_id, kind, unk_id)


def load_tokenizer(folder: str | Path, max_length: int | None = None, pad_id: int | None = None) -> RuntimeTokenizer:
    """The runtime tokenizer saved in ``folder`` (``tokenizer.json`` and, if there, ``tokenizer_config.json``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PackageError(f"{str(folder)!r} holds no tokenizer: it is not a directory")
    files = {}
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            try:
                files[name] = (folder / name).read_bytes()
            except OSError as e:
                raise PackageError(f"cannot read tokenizer file {str(folder / name)!r}: {e}") from None
    return tokenizer_from_files(files, max_length, pad_id, where=str(folder))
