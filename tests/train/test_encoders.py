"""Text encoders and codecs: tokenization, save/load round trips, CLIP and VAE from local folders, errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from taskfold.errors import BaseModelError, CheckpointError, ConfigError, OutputExistsError
from taskfold.train.data import dataset_prompts
from taskfold.train.shapes import shapes_world_prompts
from taskfold.upcycle.codecs import IdentityCodec, VAECodec, load_codec
from taskfold.upcycle.text_encoders import CLIPTextEncoder, TinyTextEncoder, build_vocabulary, load_text_encoder

from .._standins import save_random_clip, save_random_vae

PROMPTS = shapes_world_prompts()


@pytest.fixture(scope="module")
def tiny():
    return TinyTextEncoder(build_vocabulary(PROMPTS), dim=32, layers=2, heads=4, max_length=8).eval()


@pytest.fixture(scope="module")
def clip_pipeline(tmp_path_factory):
    return save_random_clip(tmp_path_factory.mktemp("sd") / "pipe", PROMPTS, num_merges=80, max_length=16)


@pytest.fixture(scope="module")
def vae_pipeline(tmp_path_factory):
    return save_random_vae(tmp_path_factory.mktemp("sd") / "pipe", block_out_channels=(8, 16))


# --- vocabulary and the tiny tokenizer ----------------------------------------------------------------

def test_shapes_world_prompts_cover_a_generated_dataset(shapes32):
    seen = set(dataset_prompts(shapes32))
    assert len(seen) > 5 and seen <= set(PROMPTS)
    assert len(PROMPTS) == len(set(PROMPTS)) == 109


def test_vocabulary_is_sorted_and_independent_of_row_order():
    shuffled = PROMPTS[:]
    random.Random(0).shuffle(shuffled)
    words = build_vocabulary(PROMPTS)
    assert words == build_vocabulary(shuffled) == sorted(words)
    assert words[:6] == ["a", "blue", "circle", "cyan", "down", "green"]
    assert len(words) == 22 and "[PAD]" not in words
    assert build_vocabulary(["A Red, red circle!", "red"], min_count=2) == ["red"]


def test_tiny_tokenize_pads_truncates_and_maps_unknown_words(tiny):
    vocab = tiny.tokenizer.get_vocab()
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[BOS]", "[EOS]")] == [0, 1, 2, 3]
    a, red, circle = vocab["a"], vocab["red"], vocab["circle"]
    ids = tiny.tokenize(["a red circle", "A RED circle!", "", "a " * 20, "a red zebra"])
    assert ids.dtype == np.int64 and ids.shape == (5, 8)
    assert ids[0].tolist() == [2, a, red, circle, 3, 0, 0, 0]
    assert ids[1].tolist() == [2, a, red, circle, 1, 3, 0, 0]  # "!" is its own, unknown, word
    assert ids[2].tolist() == [2, 3, 0, 0, 0, 0, 0, 0]
    assert ids[3].tolist() == [2] + [a] * 6 + [3]  # truncated, [EOS] kept
    assert ids[4].tolist() == [2, a, red, 1, 3, 0, 0, 0]
    with pytest.raises(ConfigError, match="list of strings"):
        tiny.tokenize("a red circle")


def test_tiny_forward_shape_and_encode(tiny):
    with torch.no_grad():
        out = tiny.encode(["a red circle", "make the square blue"])
    assert out.shape == (2, 8, 32)
    # final LayerNorm: every state has mean 0 and variance 1 (weight 1, bias 0 at init)
    assert float(out.mean(-1).abs().max()) < 1e-5
    assert float((out.var(-1, unbiased=False) - 1).abs().max()) < 1e-3
    with pytest.raises(ConfigError, match=r"input_ids \[B, 8\]"):
        tiny(torch.zeros(2, 5, dtype=torch.long))


def test_tiny_init_is_seeded():
    words = build_vocabulary(PROMPTS)
    a, b = TinyTextEncoder(words, 16, max_length=8), TinyTextEncoder(words, 16, max_length=8)
    c = TinyTextEncoder(words, 16, max_length=8, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.token_embedding.weight, c.token_embedding.weight)


def test_tiny_round_trip_is_bit_exact(tiny, tmp_path):
    out = tiny.save_pretrained(tmp_path / "te")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert json.loads((out / "config.json").read_text()) == {
        "vocab_size": 26, "dim": 32, "layers": 2, "heads": 4, "max_length": 8, "ff_mult": 4, "kind": "tiny",
        "format_version": 1}
    back = load_text_encoder(out)
    assert isinstance(back, TinyTextEncoder) and back.words == tiny.words
    odd = ["A RED Circle, please!", "[PAD] move the square left", "x" * 50]
    np.testing.assert_array_equal(back.tokenize(PROMPTS + odd), tiny.tokenize(PROMPTS + odd))
    ids = torch.from_numpy(tiny.tokenize(PROMPTS))
    with torch.no_grad():
        assert torch.equal(back(ids), tiny(ids))
    assert back.to_dict() == {"kind": "tiny", "max_length": 8, "dim": 32, "vocab_size": 26,
                              "source": str(out.resolve()), "layers": 2, "heads": 4}
    with pytest.raises(OutputExistsError):
        tiny.save_pretrained(out)


def test_tiny_config_and_vocabulary_errors():
    with pytest.raises(ConfigError, match="dim 30 is not divisible by heads 4"):
        TinyTextEncoder(["a"], 30)
    with pytest.raises(ConfigError, match="max_length must be at least 2"):
        TinyTextEncoder(["a"], 32, max_length=1)
    with pytest.raises(ConfigError, match=r"duplicates \['\[PAD\]', 'a'\]"):
        TinyTextEncoder(["a", "a", "[PAD]"], 32)


def test_tiny_from_pretrained_names_the_bad_file(tiny, tmp_path):
    good = tiny.save_pretrained(tmp_path / "te")
    cfg = json.loads((good / "config.json").read_text())

    (good / "config.json").write_text(json.dumps(cfg | {"dropout": 0.1}))
    with pytest.raises(ConfigError, match=r"unknown tiny text encoder config key\(s\) \['dropout'\]"):
        load_text_encoder(good)
    (good / "config.json").write_text(json.dumps(cfg | {"vocab_size": 30}))
    with pytest.raises(CheckpointError, match="has 26 tokens, config.json says vocab_size 30"):
        load_text_encoder(good)
    (good / "config.json").write_text(json.dumps(cfg | {"dim": 64}))
    with pytest.raises(CheckpointError, match="does not match config.json"):
        load_text_encoder(good)
    (good / "config.json").write_text(json.dumps(cfg | {"kind": "bert"}))
    with pytest.raises(ConfigError, match="kind 'bert', expected 'tiny'"):
        load_text_encoder(good)
    (good / "config.json").write_text(json.dumps(cfg))
    (good / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"{good}.* has no model.safetensors"):
        load_text_encoder(good)


def test_load_text_encoder_rejects_folders_without_an_encoder(tmp_path):
    with pytest.raises(BaseModelError, match=f"{tmp_path / 'nope'}.* does not exist"):
        load_text_encoder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="holds no text encoder: expected config.json with kind 'tiny'"):
        load_text_encoder(tmp_path / "empty")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(BaseModelError, match="unet.* holds no text encoder"):
        load_text_encoder(tmp_path / "unet")


# --- CLIP ---------------------------------------------------------------------------------------------

def test_clip_from_pipeline_folder(clip_pipeline):
    from transformers import CLIPTextModel, CLIPTokenizer

    enc = load_text_encoder(clip_pipeline)
    assert isinstance(enc, CLIPTextEncoder)
    assert (enc.max_length, enc.dim) == (16, 32)
    ids = enc.tokenize(["a red circle", "make the triangle smaller", "", "a red circle " * 10])
    ref_tok = CLIPTokenizer.from_pretrained(str(clip_pipeline / "tokenizer"), local_files_only=True)
    assert ids.dtype == np.int64 and ids.shape == (4, 16)
    bos, eos = ref_tok.bos_token_id, ref_tok.eos_token_id
    assert ref_tok.convert_ids_to_tokens(ids[0][:5].tolist()) == \
        ["<|startoftext|>", "a</w>", "red</w>", "circle</w>", "<|endoftext|>"]
    assert ids[2].tolist() == [bos] + [eos] * 15  # SD 1.x pads with <|endoftext|>
    assert ids[3][0] == bos and ids[3][-1] == eos and eos not in ids[3][1:-1]
    ref = CLIPTextModel.from_pretrained(str(clip_pipeline / "text_encoder"), local_files_only=True).eval()
    with torch.no_grad():
        got = enc(torch.from_numpy(ids))
        want = ref(input_ids=torch.from_numpy(ids)).last_hidden_state
    assert got.shape == (4, 16, 32) and torch.equal(got, want)


def test_clip_round_trip_is_bit_exact(clip_pipeline, tmp_path):
    enc = CLIPTextEncoder.from_pretrained(clip_pipeline)
    flat = enc.save_pretrained(tmp_path / "te")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= \
        {p.name for p in flat.iterdir()}
    back = load_text_encoder(flat)
    assert isinstance(back, CLIPTextEncoder)
    np.testing.assert_array_equal(back.tokenize(PROMPTS), enc.tokenize(PROMPTS))
    ids = torch.from_numpy(enc.tokenize(PROMPTS[:8]))
    with torch.no_grad():
        assert torch.equal(back(ids), enc(ids))
    assert back.to_dict() | {"source": None} == {"kind": "clip", "max_length": 16, "dim": 32,
                                                 "vocab_size": enc.vocab_size, "source": None,
                                                 "model_type": "clip_text_model"}


def test_clip_folder_without_tokenizer_is_refused(clip_pipeline, tmp_path):
    import shutil

    shutil.copytree(clip_pipeline / "text_encoder", tmp_path / "pipe" / "text_encoder")
    with pytest.raises(BaseModelError, match="tokenizer.* holds no CLIP tokenizer: expected vocab.json"):
        load_text_encoder(tmp_path / "pipe")


# --- codecs -------------------------------------------------------------------------------------------

def test_identity_codec():
    codec = IdentityCodec()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert codec.encode(x) is x and codec.decode(x) is x
    assert codec.to_dict() == {"kind": "identity", "scale_factor": 1, "latent_channels": 3, "scaling_factor": 1.0,
                               "shift_factor": 0.0, "source": None}
    assert load_codec(codec.to_dict()).to_dict() == codec.to_dict()
    assert codec.latent_size(32, 24) == (32, 24)
    with pytest.raises(ConfigError, match=r"expects \[B, 3, H, W\], got \[2, 4, 8, 8\]"):
        codec.encode(torch.zeros(2, 4, 8, 8))


def test_vae_codec_scales_the_mode(vae_pipeline):
    from diffusers import AutoencoderKL

    codec = load_codec(vae_pipeline)
    assert isinstance(codec, VAECodec)
    assert (codec.scale_factor, codec.latent_channels, codec.scaling_factor) == (2, 4, 0.18215)
    assert codec.latent_size(32, 16) == (16, 8)
    with pytest.raises(ConfigError, match="image size 31x16 is not a positive multiple of the vae codec's"):
        codec.latent_size(31, 16)
    ref = AutoencoderKL.from_pretrained(str(vae_pipeline / "vae"), local_files_only=True).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = codec.encode(x)
        dist = ref.encode(x).latent_dist
        assert z.shape == (2, 4, 8, 8) and torch.equal(z, dist.mode() * 0.18215)
        s1 = codec.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
        s2 = codec.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
        assert torch.equal(s1, s2) and not torch.equal(s1, z)
        # a sample is the mode plus noise of the posterior's standard deviation
        assert float(((s1 - z) / (dist.std * 0.18215)).std()) == pytest.approx(1.0, abs=0.15)
        y = codec.decode(z)
        want = ref.decode(z / 0.18215).sample.clamp(-1, 1)
    assert y.shape == (2, 3, 16, 16) and torch.equal(y, want)
    assert float(y.abs().max()) <= 1.0


def test_vae_codec_record_round_trip_and_errors(vae_pipeline, tmp_path):
    codec = VAECodec.from_pretrained(vae_pipeline / "vae")  # the VAE folder itself also loads
    rec = codec.to_dict()
    assert rec == {"kind": "vae", "scale_factor": 2, "latent_channels": 4, "scaling_factor": 0.18215,
                   "shift_factor": 0.0, "source": str((vae_pipeline / "vae").resolve())}
    (tmp_path / "codec.json").write_text(json.dumps(rec))
    assert load_codec(tmp_path / "codec.json").to_dict() == rec
    assert load_codec(tmp_path).to_dict() == rec  # a folder holding codec.json
    with pytest.raises(ConfigError, match="codec record says scaling_factor 0.13025 but the VAE in .* has 0.18215"):
        load_codec(rec | {"scaling_factor": 0.13025})
    with pytest.raises(ConfigError, match="codec kind 'gan' is not one of identity, vae"):
        load_codec({"kind": "gan"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="empty.* holds no AutoencoderKL: expected config.json"):
        load_codec(tmp_path / "empty")
    with pytest.raises(BaseModelError, match="missing.* does not exist"):
        load_codec(tmp_path / "missing")
