"""Random-weight stand-ins for Stable Diffusion pipeline components, built offline (no hub is reachable).

Tests build small SD-layout pipelines from these: a CLIP text encoder and tokenizer, and an
``AutoencoderKL``, with the published layouts and random weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from taskfold._io import write_json_atomic
from taskfold.upcycle._hf import quiet_hf as _quiet_hf

# --- Random stand-ins: SD-layout components built offline (tests, demos) ---------------------------

def learn_bpe_merges(prompts: Sequence[str], num_merges: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges learnt from ``prompts`` with ``tokenizers``' trainer (CLIP's split and normalisation,
    ``</w>`` word ends). Enough to give a random CLIP tokenizer multi-symbol words; not CLIP's real merges."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) * 2 + num_merges, initial_alphabet=alphabet,
                                  end_of_word_suffix="</w>", show_progress=False, min_frequency=1)
    tok.train_from_iterator(list(prompts), trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges][:num_merges]


def byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE stands for bytes with (GPT-2's table), in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def save_random_clip(folder: str | Path, prompts: Sequence[str], num_merges: int = 64, hidden: int = 32,
                     layers: int = 2, heads: int = 4, max_length: int = 16, seed: int = 0,
                     pad_token: str = "<|endoftext|>") -> Path:
    """Write a random-weight CLIP text encoder in SD pipeline layout: ``folder/text_encoder``, ``folder/tokenizer``.

    The tokenizer folder holds ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json``
    like an SD 1.x / 2.x pipeline (all 256 byte symbols, with and without ``</w>``, the
    merges learnt from ``prompts``, then the two specials).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

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
