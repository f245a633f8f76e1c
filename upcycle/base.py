"""Base UNets: load one from disk, or build one from a preset with random weights.

``--base`` accepts

* a diffusers pipeline folder (``model_index.json`` + ``unet/``) or a UNet folder
  (``config.json`` naming ``UNet2DConditionModel``);
* a single-file Stable Diffusion checkpoint (``.safetensors``, original LDM key layout),
  loaded through diffusers' single-file loader with the matching published config
  resolved offline;
* ``preset:NAME`` — the exact published configs of SD1.5, SD2.1 and SDXL (``sd15``,
  ``sd21``, ``sdxl``), narrow variants of them with the same structure and small widths
  (``sd15-narrow``, ``sd21-narrow``, ``sdxl-narrow``), and ``tiny`` for tests — with random
  weights drawn from a seed. FLOPs and latency do not depend on the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from taskfold.errors import BaseModelError

# --- Presets ---------------------------------------------------------------------------

_SD15 = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
_SD21 = dict(
    _SD15, sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True, upcast_attention=True,
)
_SDXL = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True, norm_num_groups=32,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)

#: name -> diffusers ``UNet2DConditionModel`` config (keyword arguments).
PRESETS: dict[str, dict] = {
    "sd15": _SD15,
    "sd21": _SD21,
    "sdxl": _SDXL,
    # Same block structure as the published configs, small widths: for fast tests.
    "sd15-narrow": dict(_SD15, sample_size=16, block_out_channels=(16, 32, 64, 64),
                        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8),
    "sd21-narrow": dict(_SD21, sample_size=16, block_out_channels=(16, 32, 64, 64),
                        cross_attention_dim=32, attention_head_dim=(1, 2, 4, 4), norm_num_groups=8),
    "sdxl-narrow": dict(_SDXL, sample_size=16, block_out_channels=(16, 32, 64),
                        transformer_layers_per_block=(1, 2, 3), attention_head_dim=(1, 2, 4),
                        cross_attention_dim=32, addition_time_embed_dim=8,
                        projection_class_embeddings_input_dim=32 + 6 * 8, norm_num_groups=8),
    # About 200k parameters: one cross-attention level plus the mid block.
    "tiny": dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    ),
    # Pixel-space RGB model for the shapes world (the bundled base's architecture), ~1.1M parameters.
    "tiny-pixel": dict(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8,
    ),
}

# diffusers' single-file model types -> (preset, sample_size override)
_SINGLE_FILE_TYPES = {
    "v1": ("sd15", None), "inpainting": ("sd15", None),
    "v2": ("sd21", None), "inpainting_v2": ("sd21", 64),
    "xl_base": ("sdxl", None), "xl_inpaint": ("sdxl", None),
}


@dataclass(frozen=True)
class BaseInfo:
    """Where a base UNet came from, saved with everything built from it."""

    source: str
    kind: str  # "preset", "diffusers", "single_file"
    seed: int | None = None
    #: a DTR-trained base (``taskfold pretrain``): {"timesteps", "alpha", "beta"}; its upcycled
    #: model must keep the same masks, or the function changes.
    dtr: dict | None = None


def preset_config(name: str) -> dict:
    if name not in PRESETS:
        raise BaseModelError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return _plain(PRESETS[name])


def _plain(cfg: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def build_unet(config: dict, seed: int | None = 0, device: str | torch.device = "cpu"):
    """A ``UNet2DConditionModel`` from a config, weights drawn from ``seed`` (float32)."""
    from diffusers import UNet2DConditionModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device(device):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            unet = UNet2DConditionModel(**cfg)
        except TypeError as e:
            raise BaseModelError(f"config is not a UNet2DConditionModel config: {e}") from None
    return unet.eval()


def load_base(spec: str, seed: int = 0, device: str = "cpu"):
    """Load or build the base UNet named by ``spec``; returns ``(unet, BaseInfo)``."""
    if spec.startswith("preset:"):
        name = spec.split(":", 1)[1]
        unet = build_unet(preset_config(name), seed=seed, device=device)
        info = BaseInfo(source=spec, kind="preset", seed=seed)
    else:
        path = Path(spec)
        if not path.exists():
            raise BaseModelError(f"base {spec!r} does not exist",
                                 hint=f"give a diffusers folder, a .safetensors file or preset:{{{','.join(PRESETS)}}}")
        if path.is_dir():
            unet = _load_folder(path)
            info = BaseInfo(source=str(path), kind="diffusers", dtr=_folder_dtr(path))
        elif path.suffix == ".safetensors":
            unet = _load_single_file(path)
            info = BaseInfo(source=str(path), kind="single_file")
        else:
            raise BaseModelError(f"base {spec!r} is a {path.suffix or 'extension-less'} file; "
                                 "expected a diffusers folder or a .safetensors checkpoint")
    check_supported(unet, spec)
    return unet.float().eval(), info


def _load_folder(path: Path):
    from diffusers import UNet2DConditionModel

    unet_dir = path
    if (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file():
        unet_dir = path / "unet"
        if not (unet_dir / "config.json").is_file():
            raise BaseModelError(f"base {str(path)!r} is a pipeline folder without unet/config.json")
    cfg_path = unet_dir / "config.json"
    if not cfg_path.is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
        raise BaseModelError(f"base {str(path)!r} is not a diffusers pipeline or UNet folder: "
                             f"no model_index.json or config.json (found: {found})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BaseModelError(f"cannot read {str(cfg_path)!r}: {e}") from None
    cls_name = cfg.get("_class_name") if isinstance(cfg, dict) else None
    if cls_name != "UNet2DConditionModel":
        raise BaseModelError(f"base {str(unet_dir)!r} holds a {cls_name or 'unnamed'} config; "
                             "expected a UNet2DConditionModel")
    try:
        return UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BaseModelError(f"cannot load UNet weights from {str(unet_dir)!r}: {first}") from None


def _folder_dtr(path: Path) -> dict | None:
    """DTR parameters of a base written by ``taskfold pretrain`` (``unet/taskfold_dtr.json``)."""
    for p in (path / "taskfold_dtr.json", path / "unet" / "taskfold_dtr.json"):
        if p.is_file():
            try:
                d = json.loads(p.read_text())
                return {"timesteps": int(d["timesteps"]), "alpha": float(d["alpha"]), "beta": float(d["beta"])}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise BaseModelError(f"cannot read DTR settings {str(p)!r}: {e}") from None
    return None


def _load_single_file(path: Path):
    """Single-file LDM checkpoint: detect its family offline, then let diffusers convert it."""
    import tempfile

    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            conv_in_key = "model.diffusion_model.input_blocks.0.0.weight"
            in_channels = f.get_slice(conv_in_key).get_shape()[1] if conv_in_key in keys else None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise BaseModelError(f"cannot read {str(path)!r} as safetensors: {e}") from None
    if in_channels is None:
        raise BaseModelError(f"{str(path)!r} is not a Stable Diffusion UNet checkpoint "
                             f"(no {conv_in_key!r} among its {len(keys)} tensors)")
    # Only the key names and the few shapes the detector reads are needed: a lazy dict.
    probe = _ShapeProbe(path, keys)
    model_type = infer_diffusers_model_type(probe)
    if model_type not in _SINGLE_FILE_TYPES:
        raise BaseModelError(f"{str(path)!r} is a {model_type!r} checkpoint; supported: SD1.x, SD2.x, SDXL base "
                             "(and their inpainting variants)")
    preset, sample_size = _SINGLE_FILE_TYPES[model_type]
    cfg = preset_config(preset) | {"in_channels": int(in_channels), "_class_name": "UNet2DConditionModel"}
    if sample_size:
        cfg["sample_size"] = sample_size
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        try:
            return UNet2DConditionModel.from_single_file(str(path), config=tmp, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise BaseModelError(f"cannot convert {str(path)!r} as a {preset} checkpoint: {e}") from None


class _ShapeProbe(dict):
    """Key membership and tensor shapes of a safetensors file, loading only what is read."""

    def __init__(self, path: Path, keys: list[str]):
        super().__init__()
        self._path = str(path)
        for k in keys:
            dict.__setitem__(self, k, None)

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        if value is None:
            from safetensors import safe_open

            with safe_open(self._path, framework="pt") as f:
                value = f.get_tensor(key)
            dict.__setitem__(self, key, value)
        return value


def check_supported(unet, source: str) -> None:
    """Every transformer block must have the LayerNorm -> GEGLU feed-forward MTU splits."""
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention import BasicTransformerBlock

    blocks = [(n, m) for n, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)]
    if not blocks:
        raise BaseModelError(f"base {source!r} has no transformer blocks: nothing to upcycle")
    for name, block in blocks:
        act = block.ff.net[0]
        if not isinstance(act, GEGLU) or not isinstance(block.norm3, torch.nn.LayerNorm):
            raise BaseModelError(
                f"unsupported architecture in {source!r}: {name} uses {type(block.norm3).__name__} -> "
                f"{type(act).__name__}; expected LayerNorm -> GEGLU feed-forward (SD1.x/2.x/XL)")
