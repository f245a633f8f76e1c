"""Loading base UNets: presets with seeds, diffusers folders, and what is refused."""

import json

import pytest
import torch
from diffusers.models.activations import GELU

from taskfold.errors import BaseModelError
from taskfold.upcycle import PRESETS, load_base, preset_config
from taskfold.upcycle.base import build_unet, check_supported


def test_presets_are_seeded(tiny_base):
    a, info = tiny_base
    b, _ = load_base("preset:tiny", seed=0)
    c, _ = load_base("preset:tiny", seed=1)
    assert info.kind == "preset" and info.seed == 0
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv_in.weight"], sc["conv_in.weight"])
    assert 100_000 < sum(p.numel() for p in a.parameters()) < 1_000_000


def test_published_configs():
    sd15, sd21, sdxl = preset_config("sd15"), preset_config("sd21"), preset_config("sdxl")
    assert sd15["block_out_channels"] == [320, 640, 1280, 1280] and sd15["cross_attention_dim"] == 768
    assert sd21["attention_head_dim"] == [5, 10, 20, 20] and sd21["use_linear_projection"]
    assert sd21["cross_attention_dim"] == 1024
    assert sdxl["transformer_layers_per_block"] == [1, 2, 10] and sdxl["addition_embed_type"] == "text_time"
    assert sdxl["projection_class_embeddings_input_dim"] == 2816
    for name in ("sd15-narrow", "sd21-narrow", "sdxl-narrow"):  # same structure, small widths
        narrow, full = preset_config(name), preset_config(name.split("-")[0])
        for key in ("down_block_types", "up_block_types", "layers_per_block", "use_linear_projection",
                    "addition_embed_type"):
            assert narrow.get(key) == full.get(key), (name, key)
    assert set(PRESETS) >= {"tiny", "sd15", "sd21", "sdxl"}


@pytest.mark.parametrize("layout", ["unet", "pipeline"])
def test_diffusers_folders(tmp_path, tiny_base, layout):
    unet, _ = tiny_base
    target = tmp_path / "model"
    if layout == "pipeline":
        unet.save_pretrained(target / "unet")
        (target / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    else:
        unet.save_pretrained(target)
    loaded, info = load_base(str(target))
    assert info.kind == "diffusers"
    a, b = unet.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_folder_with_broken_weights(tmp_path, tiny_base):
    unet, _ = tiny_base
    unet.save_pretrained(tmp_path / "u")
    w = next((tmp_path / "u").glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(BaseModelError, match="cannot load UNet weights from"):
        load_base(str(tmp_path / "u"))


def test_pipeline_folder_without_unet(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(BaseModelError, match="pipeline folder without unet/config.json"):
        load_base(str(tmp_path))


def test_unsupported_architectures():
    unet = build_unet(preset_config("tiny"))
    unet.down_blocks[0].attentions[0].transformer_blocks[0].ff.net[0] = GELU(16, 64)
    with pytest.raises(BaseModelError, match="uses LayerNorm -> GELU; expected LayerNorm -> GEGLU"):
        check_supported(unet, "x")
    no_attn = build_unet(dict(preset_config("tiny"), down_block_types=["DownBlock2D", "DownBlock2D"],
                              up_block_types=["UpBlock2D", "UpBlock2D"], mid_block_type=None))
    with pytest.raises(BaseModelError, match="has no transformer blocks"):
        check_supported(no_attn, "x")
