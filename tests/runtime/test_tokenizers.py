"""The runtime tokenizer (``tokenizers`` on a package's tokenizer.json) gives the training tokenizers' ids.

``data/tokenizer_ids.json`` holds the ids taskfold's earlier pure-Python tokenizers gave for the
1,200 prompts of :func:`._tokenizer_corpus.corpus` (unicode, long, empty, specials in the text),
with the vocabularies they used: the replacement must give exactly those, and exactly what
transformers' ``CLIPTokenizer`` gives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskfold.errors import ConfigError, PackageError
from taskfold.runtime.tokenizers import load_tokenizer, tokenizer_from_files
from taskfold.train.shapes import shapes_world_prompts
from taskfold.upcycle.text_encoders import CLIPTextEncoder

from .._standins import save_random_clip
from ._tokenizer_corpus import corpus

FIXTURE = json.loads((Path(__file__).parent / "data" / "tokenizer_ids.json").read_text(encoding="utf-8"))
PROMPTS = corpus()


def test_the_corpus_is_varied():
    assert len(PROMPTS) == 1200 and "" in PROMPTS and max(map(len, PROMPTS)) > 400
    assert any(any(ord(c) > 0x3000 for c in p) for p in PROMPTS) and any("<|endoftext|>" in p for p in PROMPTS)


def test_wordlevel_ids_equal_todays():
    fx = FIXTURE["wordlevel"]
    rt = tokenizer_from_files({"tokenizer.json": fx["tokenizer_json"].encode()})
    assert (rt.kind, rt.max_length, rt.pad_id) == ("wordlevel", 16, 0)
    got = rt(PROMPTS)
    assert got.dtype == np.int64 and got.shape == (1200, 16)
    np.testing.assert_array_equal(got, np.array(fx["ids"]))
    assert (got == 1).sum() > 1000 and (got[:, -1] == 3).sum() > 50  # unknown words and truncation exercised


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"], ids=["sd1-pad", "sd2-pad"])
def test_clip_ids_equal_todays_and_clip_tokenizers(tmp_path, pad):
    from transformers import CLIPTokenizer

    fx = FIXTURE["clip"]
    (tmp_path / "vocab.json").write_text(json.dumps(fx["vocab"], ensure_ascii=False), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in fx["merges"]),
                                         encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({  # an SD pipeline's tokenizer/ folder
        "tokenizer_class": "CLIPTokenizer", "model_max_length": fx["max_length"], "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad}))
    hf = CLIPTokenizer.from_pretrained(str(tmp_path))
    out = tmp_path / "saved"
    hf.save_pretrained(str(out))  # what export writes: tokenizer.json + tokenizer_config.json
    rt = load_tokenizer(out)
    assert rt.kind == "clip-bpe" and rt.max_length == 24 and rt.pad_id == fx["vocab"][pad]
    got = rt(PROMPTS)
    want = hf(PROMPTS, padding="max_length", max_length=24, truncation=True, return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, np.array(fx["ids"][pad]))


def test_an_exported_clip_tokenizer_reads_back_with_the_encoders_ids(tmp_path):
    root = save_random_clip(tmp_path / "pipe", shapes_world_prompts(), num_merges=80, hidden=8, layers=1, heads=2,
                            max_length=12)
    enc = CLIPTextEncoder.from_pretrained(root)
    files = enc.save_tokenizer(tmp_path / "tok")
    assert "tokenizer.json" in files and not (tmp_path / "tok" / "vocab.json").exists()
    rt = load_tokenizer(tmp_path / "tok")
    np.testing.assert_array_equal(rt(PROMPTS[:300]), enc.tokenize(PROMPTS[:300]))
    # the learnt merges make whole words of the shapes vocabulary
    t = rt.tokenizer
    words = [t.token_to_id(w) for w in ("<|startoftext|>", "a</w>", "red</w>", "circle</w>", "<|endoftext|>")]
    assert rt(["a red circle"])[0][:5].tolist() == words and None not in words


def test_bad_or_missing_files_are_one_error(tmp_path):
    with pytest.raises(PackageError, match="holds no tokenizer.json"):
        tokenizer_from_files({"vocab.json": b"{}"})
    with pytest.raises(PackageError, match="cannot read tokenizer file .*tokenizer.json"):
        tokenizer_from_files({"tokenizer.json": b"{not json"})
    with pytest.raises(PackageError, match="model type 'Nope'"):
        tokenizer_from_files({"tokenizer.json": b'{"model": {"type": "Nope"}}'})
    with pytest.raises(PackageError, match="is not a directory"):
        load_tokenizer(tmp_path / "nothing")
    rt = tokenizer_from_files({"tokenizer.json": FIXTURE["wordlevel"]["tokenizer_json"].encode()})
    with pytest.raises(ConfigError, match="prompts must be a list of strings"):
        rt("a red circle")


def test_runtime_tokenizers_import_without_heavy_modules():
    code = ("import sys, taskfold.runtime.tokenizers\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'diffusers', 'transformers', 'tokenizers', 'onnxruntime')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"heavy modules loaded: {done.stdout.strip()}"


def _crafted(change) -> bytes:
    d = json.loads(FIXTURE["wordlevel"]["tokenizer_json"])
    change(d)
    return json.dumps(d).encode()


CRAFTED = {
    "catastrophic split regex": (lambda d: d.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(a+)+$"},
                                                                   "behavior": "Isolated", "invert": False}),
                                 "regular expression '(a+)+$'"),
    "unknown normalizer": (lambda d: d.update(normalizer={"type": "Precompiled", "precompiled_charsmap": "AA=="}),
                           "normalizer has type 'Precompiled'"),
    "nested sequence of an unknown pre-tokenizer": (
        lambda d: d["pre_tokenizer"]["pretokenizers"].append({"type": "Metaspace"}),
        "pre_tokenizer.pretokenizers[2] has type 'Metaspace'"),
    "truncation stride (a panic in the library)": (lambda d: d["truncation"].update(stride=100), "without stride"),
    "huge fixed padding": (lambda d: d["padding"].update(strategy={"Fixed": 10 ** 8}), "padding is not fixed"),
    "huge truncation": (lambda d: d["truncation"].update(max_length=10 ** 8), "truncation is not a max_length"),
    "unigram model": (lambda d: d["model"].update(type="Unigram"), "model type 'Unigram'"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_tokenizer_json_is_refused_before_the_library_sees_it(case, monkeypatch):
    import tokenizers

    change, words = CRAFTED[case]
    seen = []
    real = tokenizers.Tokenizer.from_str
    monkeypatch.setattr(tokenizers.Tokenizer, "from_str", lambda *a: seen.append(a) or real(*a))
    with pytest.raises(PackageError) as e:
        tokenizer_from_files({"tokenizer.json": _crafted(change)})
    assert words in str(e.value) and "package_schema.json" in str(e.value), str(e.value)
    assert seen == []


def test_a_panic_in_the_tokenizer_library_is_a_package_error():
    """tokenizers' PanicException derives from BaseException: the runtime turns it into a PackageError."""
    from tokenizers import Tokenizer

    from taskfold.runtime.tokenizers import RuntimeTokenizer

    crafted = _crafted(lambda d: d["truncation"].update(stride=100)).decode()
    rt = RuntimeTokenizer(Tokenizer.from_str(crafted), 16, 0, "wordlevel")
    rt.tokenizer = Tokenizer.from_str(crafted)  # as the crafted file set it, admission skipped
    with pytest.raises(PackageError, match="PanicException") as e:
        rt(["a red circle " * 20])
    assert isinstance(e.value, Exception)


def test_over_long_prompts_are_refused_by_length():
    rt = tokenizer_from_files({"tokenizer.json": FIXTURE["wordlevel"]["tokenizer_json"].encode()})
    with pytest.raises(ConfigError, match="a prompt of 100,001 characters; at most 100,000"):
        rt(["a" * 100_001])
    assert rt(["a" * 100_000]).shape == (1, rt.max_length)
