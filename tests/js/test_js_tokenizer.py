"""The JS runtime's tokenizer gives the Python runtime's ids on the 1,200-prompt corpus, for both kinds the
exporter writes (the tiny encoder's WordLevel tokenizer, a pipeline's CLIP BPE tokenizer), and the same
untruncated lengths and unknown words for the prompt warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskfold.runtime.tokenizers import load_tokenizer

from ..runtime._tokenizer_corpus import corpus
from .conftest import run_node

FIXTURE = json.loads((Path(__file__).parents[1] / "runtime" / "data" / "tokenizer_ids.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer_folders(tiny_mtu_package, sd_package, tmp_path_factory):
    """``id -> (folder, max_length)``: the exported packages' tokenizers and the fixture's CLIP vocabulary saved
    as transformers' CLIPTokenizer saves it (SD1's and SD2's pad tokens)."""
    from transformers import CLIPTokenizer

    out = {"wordlevel (models/tiny-mtu)": (tiny_mtu_package / "text_encoder", None),
           "clip-bpe (SD-layout package)": (sd_package / "text_encoder", None)}
    fx = FIXTURE["clip"]
    for pad in ("<|endoftext|>", "!"):
        d = tmp_path_factory.mktemp("clip")
        (d / "vocab.json").write_text(json.dumps(fx["vocab"], ensure_ascii=False), encoding="utf-8")
        (d / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in fx["merges"]),
                                      encoding="utf-8")
        (d / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": fx["max_length"], "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad}))
        CLIPTokenizer.from_pretrained(str(d)).save_pretrained(str(d / "saved"))
        out[f"clip-bpe (fixture vocabulary, pad {pad!r})"] = (d / "saved", None)
    w = tmp_path_factory.mktemp("wordlevel")
    (w / "tokenizer.json").write_text(FIXTURE["wordlevel"]["tokenizer_json"], encoding="utf-8")
    out["wordlevel (fixture)"] = (w, None)
    return out


def test_js_ids_equal_pythons_on_the_corpus(node, tokenizer_folders, tmp_path):
    prompts = corpus()
    spec = {"prompts": prompts, "tokenizers": []}
    want = {}
    for name, (folder, max_length) in tokenizer_folders.items():
        py = load_tokenizer(folder, max_length=max_length)
        files = {f.name: str(f) for f in folder.iterdir() if f.name in ("tokenizer.json", "tokenizer_config.json")}
        spec["tokenizers"].append({"id": name, "files": files, "max_length": py.max_length, "pad_id": py.pad_id})
        want[name] = (py.kind, py(prompts).tolist(), [list(py.untruncated(p)) for p in prompts])
    (tmp_path / "in.json").write_text(json.dumps(spec))
    done = run_node(["tools/tokenize.mjs", str(tmp_path / "in.json"), str(tmp_path / "out.json")])
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads((tmp_path / "out.json").read_text())
    kinds = set()
    for name, (kind, ids, untruncated) in want.items():
        g = got[name]
        same = sum(a == b for a, b in zip(g["ids"], ids))
        print(f"{name}: {same}/{len(prompts)} prompts give Python's ids")
        assert g["kind"] == kind and same == len(prompts) == 1200
        assert [[n, list(u)] for n, u in g["untruncated"]] == untruncated
        kinds.add(kind)
    assert kinds == {"wordlevel", "clip-bpe"}
