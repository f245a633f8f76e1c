"""Single-file checkpoints: a diffusers UNet written in the original LDM key layout loads back exactly.

The SD1.5 UNet is rebuilt with random weights, its state dict renamed to the CompVis/LDM layout
(``model.diffusion_model.input_blocks...``) and saved as one ``.safetensors`` file, which
``load_base`` must detect as SD1.x (or SD1.x inpainting, for 9 input channels) and convert back.
"""

import gc
import re

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import save_file

from taskfold.upcycle import load_base
from taskfold.upcycle.base import build_unet, preset_config

LDM_PREFIX = "model.diffusion_model."

# Top-level layers with a fixed LDM name.
_FIXED = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
# Layers inside a diffusers ResnetBlock2D -> inside an LDM ResBlock.
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _resnet(ldm_block: str, rest: str) -> str:
    layer, param = rest.split(".", 1)
    return f"{ldm_block}.{_RESNET[layer]}.{param}"


def diffusers_to_ldm(state_dict: dict, config: dict) -> dict:
    """Rename a diffusers ``UNet2DConditionModel`` state dict to the original LDM layout (no prefix).

    The inverse of diffusers' ``convert_ldm_unet_checkpoint`` for SD1.x/2.x-style UNets.
    """
    per_block = config["layers_per_block"] + 1  # LDM slots per level: the resnets plus a down/up sampler
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in state_dict.items():
        module, param = key.rsplit(".", 1)
        if module in _FIXED:
            out[f"{_FIXED[module]}.{param}"] = value
            continue
        if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = f"input_blocks.{per_block * level + j + 1}"
            new = _resnet(f"{block}.0", rest) if kind == "resnets" else f"{block}.1.{rest}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
            new = f"input_blocks.{per_block * (int(m[1]) + 1)}.0.op.{m[2]}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = _resnet(f"middle_block.{2 * int(m[1])}", m[2])
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = f"output_blocks.{per_block * level + j}"
            new = _resnet(f"{block}.0", rest) if kind == "resnets" else f"{block}.1.{rest}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
            level = int(m[1])
            slot = 2 if up_has_attention[level] else 1
            new = f"output_blocks.{per_block * level + per_block - 1}.{slot}.conv.{m[2]}"
        else:
            raise KeyError(f"no LDM name for {key!r}")
        out[new] = value
    return out


def test_ldm_renaming_inverts_diffusers_converter():
    """Fast check of the helper itself, on the narrow SD1.5 structure: diffusers maps it straight back."""
    config = preset_config("sd15-narrow")
    state = build_unet(config, seed=0).state_dict()
    ldm = diffusers_to_ldm(state, config)
    assert "input_blocks.3.0.op.weight" in ldm and "output_blocks.11.0.skip_connection.weight" in ldm
    assert "output_blocks.2.1.conv.weight" in ldm and "output_blocks.5.2.conv.weight" in ldm
    back = convert_ldm_unet_checkpoint({LDM_PREFIX + k: v for k, v in ldm.items()}, config)
    assert back.keys() == state.keys()
    assert all(back[k] is state[k] for k in state)


@pytest.fixture(scope="module")
def sd15_state():
    """The random-weight SD1.5 UNet's state dict (about 3.4 GB, float32)."""
    unet = build_unet(preset_config("sd15"), seed=0)
    state = unet.state_dict()
    del unet
    yield state
    del state
    gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("in_channels", [4, 9], ids=["sd15", "sd15-inpainting"])
def test_sd15_single_file_round_trip(tmp_path, sd15_state, in_channels):
    config = preset_config("sd15")
    expected = dict(sd15_state)
    if in_channels != 4:  # inpainting: conv_in also reads the masked image latents and the mask
        extra = torch.randn(320, in_channels - 4, 3, 3, generator=torch.Generator().manual_seed(1))
        expected["conv_in.weight"] = torch.cat([sd15_state["conv_in.weight"], extra], dim=1)
    path = tmp_path / "sd15.safetensors"
    ldm = {LDM_PREFIX + k: v for k, v in diffusers_to_ldm(expected, config).items()}
    save_file(ldm, str(path))
    del ldm
    gc.collect()
    try:
        unet, info = load_base(str(path))
    finally:
        path.unlink()  # 3.4 GB: do not leave it behind in pytest's kept temp dirs

    assert info.kind == "single_file" and info.source == str(path)
    cfg = unet.config
    assert list(cfg.block_out_channels) == [320, 640, 1280, 1280]
    assert cfg.cross_attention_dim == 768 and cfg.in_channels == in_channels
    assert list(cfg.down_block_types) == config["down_block_types"]
    assert list(cfg.up_block_types) == config["up_block_types"]
    loaded = unet.state_dict()
    del unet
    assert loaded.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(loaded[k], expected[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"
    del loaded, expected
    gc.collect()
