"""Image codecs: what the UNet denoises, from images and back (identity for pixel space, a VAE for latents).

==============  ==================================================================  ==============
codec           ``encode(images [B, 3, H, W] in [-1, 1])``                         ``scale_factor``
==============  ==================================================================  ==============
identity        the images themselves (pixel-space models, the bundled tiny base)  1
vae             ``(mode(q(z | x)) - shift_factor) * scaling_factor`` of a           ``2 ** (blocks - 1)``
                diffusers ``AutoencoderKL`` (Stable Diffusion's latent space)
==============  ==================================================================  ==============

``decode`` inverts that and clamps to [-1, 1]. Latents are the *mode* (mean) of the VAE's
diagonal Gaussian by default, not a sample: the same image then always gives the same
latents (a resumed or re-sharded training run draws exactly what it drew before, latents
can be cached, the exported encoder graph is a pure function with no noise input); the SD
VAE's posterior standard deviation is small next to the latent scale, so little is lost.
``encode(..., sample=True, generator=g)`` draws from the posterior instead, as the diffusers
text-to-image training script does. :func:`load_codec` picks the class from a folder or record.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from taskfold.errors import BaseModelError, CheckpointError, ConfigError

from ._hf import quiet_hf as _quiet_hf, read_json as _read_json


# --- Codecs --------------------------------------------------------------------------------------

class Codec(nn.Module):
    """Images ``[B, 3, H, W]`` in [-1, 1] <-> what the UNet denoises ``[B, C, H / f, W / f]``.

    ``kind`` is ``"identity"`` or ``"vae"``; ``scale_factor`` (f) is pixels per latent along
    each side; ``latent_channels`` (C) the channels the UNet sees; ``scaling_factor`` (and
    ``shift_factor``) map raw VAE latents to roughly unit variance.
    """

    kind: str = ""
    scale_factor: int = 1
    latent_channels: int = 3
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    source: str | None = None

    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the latents of an ``height x width`` image; both must divide by ``scale_factor``."""
        f = self.scale_factor
        if height % f or width % f or height < f or width < f:
            raise ConfigError(f"image size {height}x{width} is not a positive multiple of the {self.kind} "
                              f"codec's scale factor {f}")
        return height // f, width // f

    def to_dict(self) -> dict:
        """The record a package or a training run stores (``codec.json``); :func:`load_codec` reads it."""
        return {"kind": self.kind, "scale_factor": self.scale_factor, "latent_channels": self.latent_channels,
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor, "source": self.source}

    def _check_images(self, images: torch.Tensor, channels: int, what: str) -> None:
        if images.dim() != 4 or images.shape[1] != channels:
            raise ConfigError(f"{self.kind} codec {what} expects [B, {channels}, H, W], got {list(images.shape)}")


class IdentityCodec(Codec):
    """The codec of pixel-space models: encode and decode return their input."""

    kind = "identity"

    def __init__(self, channels: int = 3):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"identity codec channels must be a positive integer, got {channels!r}")
        self.latent_channels = channels

    def encode(self, images, sample=False, generator=None):
        self._check_images(images, self.latent_channels, "encode")
        return images

    def decode(self, latents):
        self._check_images(latents, self.latent_channels, "decode")
        return latents


def _vae_folder(folder: Path) -> Path:
    """The folder holding the VAE's ``config.json``: ``folder`` itself or a pipeline's ``vae/``."""
    if not folder.is_dir():
        raise BaseModelError(f"VAE folder {str(folder)!r} does not exist or is not a directory")
    for cand in (folder / "vae", folder):
        cfg = cand / "config.json"
        if cfg.is_file() and _read_json(cfg, "VAE config").get("_class_name") == "AutoencoderKL":
            return cand
    raise BaseModelError(f"{str(folder)!r} holds no AutoencoderKL: expected config.json with "
                         f"_class_name 'AutoencoderKL' there or in vae/")


class VAECodec(Codec):
    """A diffusers ``AutoencoderKL`` as a codec (latent-space models such as Stable Diffusion)."""

    kind = "vae"

    def __init__(self, vae: nn.Module, source: str | None = None):
        super().__init__()
        cfg = vae.config
        self.vae = vae
        self.scale_factor = 2 ** (len(cfg.block_out_channels) - 1)
        self.latent_channels = int(cfg.latent_channels)
        self.scaling_factor = float(cfg.scaling_factor)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)
        self.source = source

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "VAECodec":
        """Load ``folder/vae`` (a pipeline) or ``folder`` (a VAE) in float32, from local files only."""
        from diffusers import AutoencoderKL

        folder = Path(folder)
        where = _vae_folder(folder)
        try:
            with _quiet_hf():
                vae = AutoencoderKL.from_pretrained(str(where), local_files_only=True, torch_dtype=torch.float32)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load the VAE in {str(where)!r}: {str(e).splitlines()[0]}") from None
        return cls(vae.eval(), source=str(folder.resolve()))

    def encode(self, images, sample=False, generator=None):
        self._check_images(images, int(self.vae.config.in_channels), "encode")
        dist = self.vae.encode(images).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, latents):
        self._check_images(latents, self.latent_channels, "decode")
        z = latents / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.clamp(-1.0, 1.0)


def load_codec(folder_or_record: str | Path | dict) -> Codec:
    """A codec from a record (:meth:`Codec.to_dict`), a ``codec.json``, a VAE folder or a pipeline folder."""
    rec = folder_or_record
    if not isinstance(rec, dict):
        path = Path(rec)
        if path.is_file() and path.suffix == ".json":
            rec = _read_json(path, "codec record")
        elif path.is_dir() and (path / "codec.json").is_file():
            rec = _read_json(path / "codec.json", "codec record")
        elif path.is_dir():
            return VAECodec.from_pretrained(path)
        else:
            raise BaseModelError(f"codec {str(path)!r} does not exist: expected a codec.json, a VAE folder "
                                 f"or a pipeline folder with vae/")
    kind = rec.get("kind")
    if kind == "identity":
        return IdentityCodec(rec.get("latent_channels", 3))
    if kind == "vae":
        if not rec.get("source"):
            raise ConfigError("vae codec record has no 'source' folder to load the VAE from")
        codec = VAECodec.from_pretrained(rec["source"])
        for key in ("scale_factor", "latent_channels", "scaling_factor", "shift_factor"):
            if key in rec and rec[key] is not None and float(rec[key]) != float(getattr(codec, key)):
                raise ConfigError(f"codec record says {key} {rec[key]} but the VAE in {rec['source']!r} "
                                  f"has {getattr(codec, key)}")
        return codec
    raise ConfigError(f"codec kind {kind!r} is not one of identity, vae")


