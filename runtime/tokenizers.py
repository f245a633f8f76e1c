"""Tokenizers for the runtime in plain Python + numpy: no ``tokenizers``, ``transformers`` or torch.

Two readers reproduce, id for id, what training tokenized with:

* :class:`WordLevelTokenizer` reads the ``tokenizer.json`` of the tiny text encoder
  (``tokenizers`` WordLevel; lower case; split on white space, then around every
  punctuation character; ``[BOS] ... [EOS]``; truncated and padded to ``max_length``).
* :class:`CLIPBPETokenizer` reads a CLIP tokenizer folder (``vocab.json`` + ``merges.txt``
  as in SD pipelines, or the ``tokenizer.json`` transformers 5 writes) and reproduces
  ``transformers.CLIPTokenizer`` with ``padding="max_length", truncation=True``:
  NFC, white space runs to one space, lower case; CLIP's split into contractions, letter
  runs, single digits and other runs; byte-level symbols; BPE with ``</w>`` word ends.

Both follow the ``tokenizers`` pipeline: special tokens are cut out of the raw text first
(exact, case-sensitive matches), the rest is normalised, pre-tokenised and looked up.
Character classes follow the Rust definitions ``tokenizers`` uses, not Python's: white
space is the Unicode ``White_Space`` property (``str.isspace`` also counts U+001C-U+001F),
lower-casing is per character (``str.lower`` turns a final capital sigma into "ς", Rust's
``char::to_lowercase`` does not). Python's ``unicodedata`` tables can differ from the Rust
crates' for characters added in recent Unicode versions.

``tokenizer(prompts)`` returns int64 ``[B, max_length]``, the text encoder graph's ``input_ids``.
"""

from __future__ import annotations

import json
import string
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from taskfold.errors import ConfigError, PackageError

#: Unicode White_Space (what Rust's ``char::is_whitespace`` and regex ``\s`` match).
WHITE_SPACE = frozenset(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                                  0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))
_ASCII_PUNCTUATION = frozenset(string.punctuation)


#: The files a runtime tokenizer may read, by name; nothing else in its folder is opened.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def _parse_json(data: bytes, where: str) -> dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackageError(f"cannot read tokenizer file {where!r}: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise PackageError(f"tokenizer file {where!r} is not a JSON object")
    return obj


def _read_json(path: Path) -> dict:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PackageError(f"tokenizer file {str(path)!r} does not exist") from None
    except OSError as e:
        raise PackageError(f"cannot read tokenizer file {str(path)!r}: {e}") from None
    return _parse_json(data, str(path))


def _lower(text: str) -> str:
    return "".join(c.lower() for c in text)


def _is_punctuation(c: str) -> bool:
    return c in _ASCII_PUNCTUATION or unicodedata.category(c).startswith("P")


def _split_specials(text: str, specials: dict[str, int]) -> list[str | int]:
    """Cut exact occurrences of special tokens out of ``text`` (leftmost, longest first): text pieces and ids."""
    out: list[str | int] = []
    ordered = sorted(specials, key=len, reverse=True)
    first = {t[0] for t in ordered if t}
    start = i = 0
    while i < len(text):
        hit = next((s for s in ordered if text.startswith(s, i)), None) if text[i] in first else None
        if hit is None:
            i += 1
            continue
        if i > start:
            out.append(text[start:i])
        out.append(specials[hit])
        i = start = i + len(hit)
    if start < len(text):
        out.append(text[start:])
    return out


def _pad(rows: list[list[int]], length: int, pad_id: int) -> np.ndarray:
    out = np.full((len(rows), length), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ConfigError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    return list(prompts)


# --- Word level (the tiny text encoder) -------------------------------------------------------------

class WordLevelTokenizer:
    """The tiny text encoder's tokenizer, read from its ``tokenizer.json``."""

    kind = "wordlevel"

    def __init__(self, vocab: dict[str, int], unk_token: str, prefix: list[int], suffix: list[int],
                 specials: dict[str, int], max_length: int, pad_id: int):
        self.vocab, self.unk_id = vocab, vocab[unk_token]
        self.prefix, self.suffix, self.specials = prefix, suffix, specials
        self.max_length, self.pad_id = max_length, pad_id

    @classmethod
    def from_file(cls, path: str | Path, max_length: int | None = None) -> "WordLevelTokenizer":
        return cls.from_dict(_read_json(Path(path)), max_length, where=str(path))

    @classmethod
    def from_dict(cls, d: dict, max_length: int | None = None, where: str = "tokenizer.json") -> "WordLevelTokenizer":
        """Read a ``tokenizers`` JSON; anything but the tiny encoder's pipeline raises :class:`ConfigError`."""
        def expect(ok: bool, what: str, got) -> None:
            if not ok:
                raise ConfigError(f"{where}: {what} is not supported by WordLevelTokenizer, got {json.dumps(got)[:80]}")

        model = d.get("model") or {}
        expect(model.get("type") == "WordLevel", "model", model.get("type"))
        expect(d.get("normalizer") == {"type": "Lowercase"}, "normalizer", d.get("normalizer"))
        pre = d.get("pre_tokenizer") or {}
        steps = [p.get("type") for p in pre.get("pretokenizers", [])] if pre.get("type") == "Sequence" else []
        expect(steps == ["WhitespaceSplit", "Punctuation"] and pre["pretokenizers"][1].get("behavior") == "Isolated",
               "pre_tokenizer", pre)
        post = d.get("post_processor") or {}
        expect(post.get("type") == "TemplateProcessing", "post_processor", post.get("type"))
        prefix, suffix, seen = [], [], False
        for item in post["single"]:
            if "Sequence" in item:
                seen = True
            else:
                (suffix if seen else prefix).extend(post["special_tokens"][item["SpecialToken"]["id"]]["ids"])
        trunc, pad = d.get("truncation") or {}, d.get("padding") or {}
        expect(trunc.get("direction", "Right") == "Right", "truncation direction", trunc.get("direction"))
        expect(pad.get("direction", "Right") == "Right", "padding direction", pad.get("direction"))
        if max_length is None:
            fixed = pad.get("strategy", {}).get("Fixed") if isinstance(pad.get("strategy"), dict) else None
            max_length = fixed or trunc.get("max_length")
        if not isinstance(max_length, int) or max_length <= len(prefix) + len(suffix):
            raise ConfigError(f"{where}: max_length must be an integer above {len(prefix) + len(suffix)} "
                              f"(fixed padding or truncation length), got {max_length!r}")
        specials = {t["content"]: t["id"] for t in d.get("added_tokens", []) if t.get("special")}
        return cls(dict(model["vocab"]), model["unk_token"], prefix, suffix, specials, max_length,
                   int(pad.get("pad_id", 0)))

    def pre_tokenize(self, text: str) -> list[str]:
        """Lower case, split on white space, then isolate each punctuation character."""
        words: list[str] = []
        for chunk in "".join(" " if c in WHITE_SPACE else c for c in _lower(text)).split(" "):
            word = ""
            for c in chunk:
                if _is_punctuation(c):
                    words += [word, c] if word else [c]
                    word = ""
                else:
                    word += c
            if word:
                words.append(word)
        return words

    def encode(self, text: str) -> list[int]:
        """Ids of one prompt with begin/end tokens, truncated to ``max_length`` (not padded)."""
        ids: list[int] = []
        for part in _split_specials(text, self.specials):
            if isinstance(part, int):
                ids.append(part)
            else:
                ids += [self.vocab.get(w, self.unk_id) for w in self.pre_tokenize(part)]
        keep = self.max_length - len(self.prefix) - len(self.suffix)
        return self.prefix + ids[:keep] + self.suffix

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        return _pad([self.encode(p) for p in _check_prompts(prompts)], self.max_length, self.pad_id)


# --- CLIP byte-level BPE ------------------------------------------------------------------------------

def byte_symbols() -> list[str]:
    """The byte-level alphabet: byte ``b`` -> a printable character (printable Latin-1 bytes map to themselves)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


_BYTE_SYMBOLS = byte_symbols()
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_CLIP_LITERALS = ("<|startoftext|>", "<|endoftext|>") + _CONTRACTIONS


def _char_class(c: str) -> str:
    if c in WHITE_SPACE:
        return "space"
    cat = unicodedata.category(c)
    return "letter" if cat[0] == "L" else "number" if cat[0] == "N" else "other"


def _scan(text: str, literals: tuple[str, ...], single_number: bool) -> list[str]:
    """Regex-free ``literals | \\p{L}+ | \\p{N} (or \\p{N}+) | [^\\s\\p{L}\\p{N}]+`` matches, spaces dropped."""
    out, i = [], 0
    while i < len(text):
        lit = next((s for s in literals if text.startswith(s, i)), None)
        if lit is not None:
            out.append(lit)
            i += len(lit)
            continue
        kind = _char_class(text[i])
        if kind == "space":
            i += 1
            continue
        j = i + 1
        if not (kind == "number" and single_number):
            while j < len(text) and _char_class(text[j]) == kind:
                j += 1
        out.append(text[i:j])
        i = j
    return out


class CLIPBPETokenizer:
    """``transformers.CLIPTokenizer`` (padding to ``max_length``, truncation) from its vocabulary and merges."""

    kind = "clip-bpe"

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], bos_token: str, eos_token: str,
                 pad_token: str, unk_token: str, max_length: int, specials: dict[str, int] | None = None):
        self.vocab = vocab
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        for name, tok in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token), ("unk", unk_token)):
            if tok not in vocab:
                raise ConfigError(f"CLIP {name} token {tok!r} is not in the vocabulary")
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (vocab[t] for t in (bos_token, eos_token, pad_token,
                                                                                  unk_token))
        self.specials = dict(specials or {}) | {t: vocab[t] for t in (bos_token, eos_token, pad_token, unk_token)}
        if max_length < 2:
            raise ConfigError(f"CLIP tokenizer max_length must be at least 2, got {max_length}")
        self.max_length = max_length
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int | None = None) -> "CLIPBPETokenizer":
        """Read ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``) and ``tokenizer_config.json``."""
        return cls.from_files(_folder_files(folder), max_length, where=str(folder))

    @classmethod
    def from_files(cls, files: dict[str, bytes], max_length: int | None = None,
                   where: str = "tokenizer") -> "CLIPBPETokenizer":
        """The same from file contents by name (what the package reader has read and checked)."""
        def js(name):
            return _parse_json(files[name], f"{where}/{name}") if name in files else {}

        cfg, smap = js("tokenizer_config.json"), js("special_tokens_map.json")

        def token(name: str, default: str) -> str:
            t = cfg.get(name) or smap.get(name) or default
            return t["content"] if isinstance(t, dict) else t

        specials: dict[str, int] = {}
        folder = where
        if "vocab.json" in files:
            vocab = js("vocab.json")
            if "merges.txt" not in files:
                raise PackageError(f"{where!r} has vocab.json but no merges.txt")
            try:
                lines = files["merges.txt"].decode("utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise PackageError(f"cannot read {where + '/merges.txt'!r}: {e}") from None
            merges = [tuple(ln.split()) for ln in lines if ln.strip() and not ln.startswith("#version")]
        elif "tokenizer.json" in files:
            d = js("tokenizer.json")
            model = d.get("model") or {}
            if model.get("type") != "BPE" or model.get("end_of_word_suffix") != "</w>":
                raise ConfigError(f"{where + '/tokenizer.json'!r} is not a CLIP BPE tokenizer (model "
                                  f"{model.get('type')!r}, end_of_word_suffix {model.get('end_of_word_suffix')!r})")
            vocab = model["vocab"]
            merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
            specials = {t["content"]: t["id"] for t in d.get("added_tokens", []) if t.get("special")}
        else:
            raise PackageError(f"{where!r} holds no CLIP tokenizer: expected vocab.json + merges.txt "
                               f"or tokenizer.json")
        bad = [m for m in merges if len(m) != 2]
        if bad:
            raise PackageError(f"merges of {str(folder)!r} must be pairs of symbols, got {bad[0]!r}")
        if max_length is None:
            max_length = cfg.get("model_max_length", 77)
        return cls(vocab, merges, token("bos_token", "<|startoftext|>"), token("eos_token", "<|endoftext|>"),
                   token("pad_token", "<|endoftext|>"), token("unk_token", "<|endoftext|>"), int(max_length),
                   specials)

    @staticmethod
    def normalize(text: str) -> str:
        """NFC, every run of white space to one space, lower case."""
        text = unicodedata.normalize("NFC", text)
        out, space = [], False
        for c in text:
            if c in WHITE_SPACE:
                if not space:
                    out.append(" ")
                space = True
            else:
                out.append(c)
                space = False
        return _lower("".join(out))

    @staticmethod
    def pre_tokenize(text: str) -> list[str]:
        """CLIP's split, then the byte-level split of each piece, as byte-level symbol strings."""
        words = []
        for piece in _scan(text, _CLIP_LITERALS, single_number=True):
            for w in _scan(piece, _CONTRACTIONS, single_number=False):
                words.append("".join(_BYTE_SYMBOLS[b] for b in w.encode("utf-8")))
        return words

    def bpe(self, word: str) -> list[int]:
        """Merge the symbols of one word (last one carries ``</w>``) by rank, lowest first, leftmost on ties."""
        if word in self._cache:
            return self._cache[word]
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            ranked = [(self.ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            ranked = [(r, i) for r, i in ranked if r is not None]
            if not ranked:
                break
            _, i = min(ranked)
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        ids = [self.vocab.get(s, self.unk_id) for s in symbols]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids of one prompt: ``<|startoftext|> ... <|endoftext|>``, truncated to ``max_length``."""
        ids: list[int] = []
        for part in _split_specials(text, self.specials):
            if isinstance(part, int):
                ids.append(part)
            else:
                for w in self.pre_tokenize(self.normalize(part)):
                    ids += self.bpe(w)
        return [self.bos_id] + ids[:self.max_length - 2] + [self.eos_id]

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        return _pad([self.encode(p) for p in _check_prompts(prompts)], self.max_length, self.pad_id)


def _folder_files(folder: str | Path) -> dict[str, bytes]:
    folder = Path(folder)
    out = {}
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            try:
                out[name] = (folder / name).read_bytes()
            except OSError as e:
                raise PackageError(f"cannot read tokenizer file {str(folder / name)!r}: {e}") from None
    return out


def load_tokenizer(folder: str | Path, max_length: int | None = None):
    """The runtime tokenizer saved in ``folder``: the tiny WordLevel one, or CLIP's BPE."""
    if not Path(folder).is_dir():
        raise PackageError(f"{str(folder)!r} holds no tokenizer: expected tokenizer.json or vocab.json + merges.txt")
    return tokenizer_from_files(_folder_files(folder), max_length, where=str(folder))


def tokenizer_from_files(files: dict[str, bytes], max_length: int | None = None, where: str = "tokenizer"):
    """The runtime tokenizer from its files' contents by name (see :data:`TOKENIZER_FILES`)."""
    if "vocab.json" in files:
        return CLIPBPETokenizer.from_files(files, max_length, where)
    if "tokenizer.json" in files:
        d = _parse_json(files["tokenizer.json"], f"{where}/tokenizer.json")
        kind = (d.get("model") or {}).get("type")
        if kind == "WordLevel":
            return WordLevelTokenizer.from_dict(d, max_length, where=f"{where}/tokenizer.json")
        if kind == "BPE":
            return CLIPBPETokenizer.from_files(files, max_length, where)
        raise ConfigError(f"{where + '/tokenizer.json'!r} has a {kind!r} model; the runtime reads WordLevel and "
                          "CLIP BPE tokenizers")
    raise PackageError(f"{where!r} holds no tokenizer: expected tokenizer.json or vocab.json + merges.txt")
