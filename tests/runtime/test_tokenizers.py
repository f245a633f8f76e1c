"""The runtime's pure-Python tokenizers give the training tokenizers' ids, prompt for prompt."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from taskfold.errors import ConfigError, PackageError
from taskfold.runtime.tokenizers import CLIPBPETokenizer, WordLevelTokenizer, byte_symbols, load_tokenizer
from taskfold.train.shapes import shapes_world_prompts
from taskfold.upcycle.text_encoders import CLIPTextEncoder, TinyTextEncoder, build_vocabulary

from .._standins import save_random_clip

PROMPTS = shapes_world_prompts()
ODD = [
    "A RED Circle!!", "a red circle, please.", "make the circle purple-ish", "don't move it's", "it'S 'quoted'",
    "  a\tred\n\ncircle  ", "a red circle " * 10, "[PAD] a [UNK]red[EOS]", "ΟΔΟΣ Ünïcödé café",
    "x\x1cy\u00a0z\u2003w", "e\u0301 ² ⅷ Ⓐ 42 3.14", "<|endoftext|> a <|startoftext|>b <|ENDOFTEXT|>",
    "hello_world #tag @me $5 ~ `q` \"dq\" (x) [y] {z}", "🙂 emoji 🐈\u200d⬛", "İstanbul ΣΑΣ", "",
    "zebra giraffe", "a\u3000red\u2028circle", "...", "---a---",
]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    enc = TinyTextEncoder(build_vocabulary(PROMPTS), dim=16, heads=2, max_length=10)
    d = tmp_path_factory.mktemp("tiny")
    enc.save_tokenizer(d)
    return enc, d


@pytest.fixture(scope="module", params=["<|endoftext|>", "!"], ids=["sd1-pad", "sd2-pad"])
def clip_pipeline(request, tmp_path_factory):
    """SD 1.x pads with <|endoftext|>, SD 2.x with "!"."""
    root = tmp_path_factory.mktemp("clip") / "pipe"
    save_random_clip(root, PROMPTS, num_merges=80, hidden=8, layers=1, heads=2, max_length=12,
                     pad_token=request.param)
    return CLIPTextEncoder.from_pretrained(root), root, request.param


def test_wordlevel_matches_tokenizers(tiny_files):
    enc, d = tiny_files
    rt = WordLevelTokenizer.from_file(d / "tokenizer.json")
    assert (rt.max_length, rt.pad_id, rt.prefix, rt.suffix) == (10, 0, [2], [3])
    want = enc.tokenize(PROMPTS + ODD)
    got = rt(PROMPTS + ODD)
    assert got.dtype == np.int64 and got.shape == (len(PROMPTS + ODD), 10)
    np.testing.assert_array_equal(got, want)
    # the odd inputs exercise what they are meant to: unknown words, truncation, specials in the text
    assert (want == 1).sum() > 20 and (want[:, -1] == 3).sum() >= 2 and want[ODD.index("[PAD] a [UNK]red[EOS]")
                                                                              + len(PROMPTS)][1] == 0
    assert rt.pre_tokenize("Don't, STOP!") == ["don", "'", "t", ",", "stop", "!"]


def test_wordlevel_max_length_override(tiny_files):
    enc, d = tiny_files
    rt = load_tokenizer(d, max_length=4)
    assert isinstance(rt, WordLevelTokenizer)
    assert rt(["a large red circle"]).tolist() == [[2, *enc.tokenizer.encode("a large").ids[1:3], 3]]


def test_clip_bpe_matches_clip_tokenizer(clip_pipeline):
    enc, root, pad = clip_pipeline
    rt = CLIPBPETokenizer.from_folder(root / "tokenizer")
    assert rt.max_length == enc.max_length == 12 and rt.pad_id == enc.tokenizer.pad_token_id == rt.vocab[pad]
    assert enc.tokenize([""])[0].tolist() == [rt.bos_id, rt.eos_id] + [rt.vocab[pad]] * 10
    np.testing.assert_array_equal(rt(PROMPTS + ODD), enc.tokenize(PROMPTS + ODD))
    # the learnt merges make whole words of the shapes vocabulary
    assert rt.encode("a red circle")[1:4] == [rt.vocab["a</w>"], rt.vocab["red</w>"], rt.vocab["circle</w>"]]


def test_clip_bpe_reads_the_tokenizer_json_transformers_writes(clip_pipeline, tmp_path):
    enc, _, _ = clip_pipeline
    enc.save_tokenizer(tmp_path)
    assert not (tmp_path / "vocab.json").exists() and (tmp_path / "tokenizer.json").is_file()
    rt = load_tokenizer(tmp_path)
    assert isinstance(rt, CLIPBPETokenizer)
    np.testing.assert_array_equal(rt(PROMPTS + ODD), enc.tokenize(PROMPTS + ODD))


def test_byte_symbols_are_a_printable_bijection():
    sym = byte_symbols()
    assert len(set(sym)) == 256 and sym[ord("a")] == "a" and sym[ord(" ")] == "Ġ" and sym[0] == "Ā"
    assert all(s.isprintable() and not s.isspace() for s in sym)


def test_unsupported_or_missing_files(tmp_path, tiny_files):
    _, d = tiny_files
    spec = json.loads((d / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec | {"normalizer": {"type": "NFKC"}}))
    with pytest.raises(ConfigError, match='normalizer is not supported by WordLevelTokenizer, got {"type": "NFKC"}'):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec | {"model": {"type": "Unigram"}}))
    with pytest.raises(ConfigError, match="has a 'Unigram' model; the runtime reads WordLevel and CLIP BPE"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(PackageError, match="cannot read tokenizer file .*tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(PackageError, match="nothing.* holds no tokenizer: expected tokenizer.json or vocab.json"):
        load_tokenizer(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="prompts must be a list of strings"):
        WordLevelTokenizer.from_file(d / "tokenizer.json")("a red circle")


def test_runtime_tokenizers_import_without_heavy_modules():
    code = ("import sys, taskfold.runtime.tokenizers\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'diffusers', 'transformers', 'tokenizers', 'onnxruntime')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"heavy modules loaded: {done.stdout.strip()}"
