"""The PyTorch reference sampler: the runtime's sampling loop driving the model itself.

:func:`generate` is what the exported runtime is compared with and what the training
benchmarks sample with. It is a thin adapter: the loop, the schedulers, guidance, img2img
strength and the UNet input layout are :func:`taskfold.runtime.sampler.sample`, the same code
:meth:`taskfold.runtime.Package.generate` runs; only the UNet, text encoder and codec here are
PyTorch modules (numpy in and out at the boundary).
"""

from __future__ import annotations

import numpy as np
import torch

from taskfold.runtime.sampler import Model, sample


def torch_model(unet_fn, text_encoder, codec) -> Model:
    """The sampler's :class:`~taskfold.runtime.sampler.Model` for PyTorch modules (on the text encoder's device)."""
    device = next(text_encoder.parameters()).device

    def to(x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)

    def out(t):
        return t.float().cpu().numpy()

    @torch.no_grad()
    def unet(x, t, h):
        return out(unet_fn(to(x), to(t), to(h)))

    @torch.no_grad()
    def encode_text(prompts):
        return out(text_encoder.encode(list(prompts)))

    @torch.no_grad()
    def encode_images(images):
        return out(codec.encode(to(images)))

    @torch.no_grad()
    def decode(latents):
        return out(codec.decode(to(latents)).clamp(-1, 1))

    return Model(unet, encode_text, encode_images, decode, scaling_factor=float(codec.scaling_factor),
                 shift_factor=float(codec.shift_factor))


def generate(unet_fn, spec, prompts: list[str], *, text_encoder, codec, scheduler_config: dict,
             condition: np.ndarray | None = None, mask: np.ndarray | None = None, height: int = 32, width: int = 32,
             steps: int = 20, scheduler: str = "ddim", guidance_scale: float | None = None,
             image_guidance_scale: float | None = None, seed: int = 0, strength: float = 1.0) -> np.ndarray:
    """Images ``[B, 3, H, W]`` in [-1, 1] for ``prompts`` (and conditions) of task ``spec``.

    ``unet_fn(sample, timestep, encoder_hidden_states) -> noise`` (torch tensors) is an MTU model
    bound to the task (:func:`mtu_fn`) or a folded task UNet (:func:`folded_fn`).
    ``condition``/``mask`` are float arrays ``[B, 3|1, H, W]`` (mask 1 = region to fill).
    """
    f = codec.scale_factor
    return sample(torch_model(unet_fn, text_encoder, codec), spec, prompts, scheduler_config=scheduler_config,
                  latent_shape=(codec.latent_channels, height // f, width // f), condition=condition, mask=mask,
                  steps=steps, scheduler=scheduler, guidance_scale=guidance_scale,
                  image_guidance_scale=image_guidance_scale, seed=seed, strength=strength)


def mtu_fn(mtu, task: str):
    """``unet_fn`` for an MTU model and one task."""
    return lambda sample, t, text: mtu(sample, t, text, task)


def folded_fn(unet):
    """``unet_fn`` for a folded task UNet (stock or DTR)."""
    return lambda sample, t, text: unet(sample, t, text, return_dict=False)[0]
