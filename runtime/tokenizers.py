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

from .limits import bound, tokenizer_kinds

#: The files a runtime tokenizer may read, by name; nothing else in its folder is opened.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_FATAL = (KeyboardInterrupt, SystemExit, MemoryError)


def _library_call(fn, where: str, what: str):
    """``fn()`` with anything the Rust library raises — its ``PanicException`` is a ``BaseException`` — as one
    PackageError (an app's ``except Exception`` would miss a panic)."""
    try:
        return fn()
    except _FATAL:
        raise
    except (ConfigError, PackageError):
        raise
    except BaseException as e:  # noqa: BLE001 - tokenizers' PanicException derives from BaseException
        raise PackageError(f"{where}: the tokenizer failed {what} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})",
                           hint="the package's tokenizer.json is damaged or crafted; re-export the package") from None


def admit_tokenizer(d: dict, where: str) -> None:
    """Refuse a ``tokenizer.json`` that is not one of the kinds taskfold writes (``package_schema.json``).

    The model is WordLevel or BPE with a bounded vocabulary and merges; every normalizer,
    pre-tokenizer, post-processor and decoder is of a listed type; a regular expression may only
    be one of the listed patterns (a crafted pattern can take minutes on a short prompt);
    truncation has no stride and padding and truncation lengths are bounded.
    """
    kinds = tokenizer_kinds()

    def fail(problem: str):
        raise PackageError(f"{where}: {problem}; taskfold writes only the tokenizer kinds of package_schema.json",
                           hint="the package's tokenizer.json is damaged or crafted; re-export the package")

    def component(node, allowed: list, field: str, path: str, depth: int = 0) -> None:
        if node is None:
            if None not in allowed:
                fail(f"{path} is missing")
            return
        if not isinstance(node, dict) or node.get("type") not in allowed or depth > 4:
            fail(f"{path} has type {node.get('type') if isinstance(node, dict) else type(node).__name__!r}")
        if node["type"] == "Sequence":
            children = node.get(field)
            if not isinstance(children, list) or len(children) > 16:
                fail(f"{path}.{field} is not a short list")
            for i, c in enumerate(children):
                component(c, [k for k in allowed if k is not None], field, f"{path}.{field}[{i}]", depth + 1)
        pattern = node.get("pattern")
        if pattern is not None:
            regex = pattern.get("Regex") if isinstance(pattern, dict) else None
            listed = kinds["split_patterns"] if node["type"] == "Split" else kinds["replace_patterns"]
            if regex is not None and regex not in listed:
                fail(f"{path} uses the regular expression {regex[:80]!r}, which is not one taskfold writes")
            if regex is None and not (isinstance(pattern, dict) and isinstance(pattern.get("String"), str)
                                      and len(pattern["String"]) <= 64):
                fail(f"{path}.pattern is neither a listed regular expression nor a short string")

    model = d.get("model")
    if not isinstance(model, dict) or model.get("type") not in kinds["models"]:
        fail(f"model type {model.get('type') if isinstance(model, dict) else None!r}")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not 0 < len(vocab) <= bound("vocab_size"):
        fail(f"its vocabulary is not an object of 1 to {bound('vocab_size')} entries")
    if model["type"] == "BPE":
        merges = model.get("merges")
        if not isinstance(merges, list) or len(merges) > bound("merges"):
            fail(f"its merges are not a list of at most {bound('merges')}")
        if model.get("dropout") not in (None, 0, 0.0):
            fail("BPE dropout is set (sampling tokenization is random)")
    if not isinstance(d.get("added_tokens", []), list) or len(d.get("added_tokens", [])) > 1024:
        fail("added_tokens is not a list of at most 1024")
    component(d.get("normalizer"), kinds["normalizers"], "normalizers", "normalizer")
    component(d.get("pre_tokenizer"), kinds["pre_tokenizers"], "pretokenizers", "pre_tokenizer")
    component(d.get("post_processor"), kinds["post_processors"], "processors", "post_processor")
    component(d.get("decoder"), kinds["decoders"], "decoders", "decoder")
    top = bound("tokenizer_max_length")
    trunc = d.get("truncation")
    if trunc is not None and (not isinstance(trunc, dict) or trunc.get("stride", 0) != 0
                              or not isinstance(trunc.get("max_length"), int) or not 2 <= trunc["max_length"] <= top):
        fail(f"truncation is not a max_length from 2 to {top} without stride")
    pad = d.get("padding")
    if pad is not None:
        strategy = pad.get("strategy") if isinstance(pad, dict) else None
        fixed = strategy.get("Fixed") if isinstance(strategy, dict) else None
        if not (strategy == "BatchLongest" or (isinstance(fixed, int) and 2 <= fixed <= top)) \
                or pad.get("pad_to_multiple_of") not in (None, 0, 1):
            fail(f"padding is not fixed to a length from 2 to {top}")


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
        _check_lengths(prompts)
        enc = _library_call(lambda: self.tokenizer.encode_batch(list(prompts)), "tokenizer", "on a prompt")
        return np.array([e.ids for e in enc], dtype=np.int64).reshape(len(enc), self.max_length)

    def untruncated(self, prompt: str) -> tuple[int, list[str]]:
        """``prompt`` before truncation: how many tokens it is (begin and end tokens included), and the pieces
        the vocabulary lacks (each encoded as the unknown token), in order, once each."""
        _check_lengths([prompt])
        if self._plain is None:
            def twin():
                plain = type(self.tokenizer).from_str(self.tokenizer.to_str())
                plain.no_truncation()
                plain.no_padding()
                return plain
            self._plain = _library_call(twin, "tokenizer", "to load")
        enc = _library_call(lambda: self._plain.encode(prompt), "tokenizer", "on a prompt")
        unknown: dict[str, None] = {}  # ordered, each once (a set's lookup keeps a long prompt linear)
        if self.unk_id is not None:
            for i, (start, end) in zip(enc.ids, enc.offsets):
                word = prompt[start:end]
                if i == self.unk_id and word:
                    unknown.setdefault(word)
        return len(enc.ids), list(unknown)


def _check_lengths(prompts) -> None:
    top = bound("prompt_chars")
    for p in prompts:
        if len(p) > top:
            raise ConfigError(f"a prompt of {len(p):,} characters; at most {top:,} are read",
                              hint="shorten the prompt (the text encoder reads only its first tokens anyway)")


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
    admit_tokenizer(d, f"{where}/tokenizer.json")
    tok = _library_call(lambda: Tokenizer.from_str(files["tokenizer.json"].decode("utf-8")),
                        f"{where}/tokenizer.json", "to load")
    cfg = _json(files["tokenizer_config.json"], f"{where}/tokenizer_config.json") \
        if "tokenizer_config.json" in files else {}
    padding = d.get("padding") or {}
    if max_length is None:
        strategy = padding.get("strategy")
        fixed = strategy.get("Fixed") if isinstance(strategy, dict) else None
        max_length = fixed or (d.get("truncation") or {}).get("max_length") or cfg.get("model_max_length")
    if not isinstance(max_length, int) or not 2 <= max_length <= bound("tokenizer_max_length"):
        raise PackageError(f"{where}: no usable max_length ({max_length!r}; expected 2 to "
                           f"{bound('tokenizer_max_length')}) for the tokenizer")
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
    return _library_call(lambda: RuntimeTokenizer(tok, max_length, pad_id, kind, unk_id), where, "to set up")


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
