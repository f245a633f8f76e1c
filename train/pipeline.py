"""Sampling with the PyTorch model: every task, its guidance, the same schedulers the runtime uses.

:func:`generate` is the reference the exported runtime is compared with, and what the
training benchmarks sample with. Its scheduler arithmetic is the runtime's own numpy code
(:mod:`taskfold.runtime.schedulers`, :mod:`taskfold.runtime.guidance`), and the initial
noise comes from ``numpy.random.default_rng(seed)``, so the two differ only by the UNet
(PyTorch against the exported graph).

Per step and task guidance (the task's manifest entry / :class:`TaskSpec`):

* ``none`` (sr): one evaluation with the prompt (empty for tasks without text) and image;
* ``text`` (t2i): the empty prompt and the prompt, ``guidance_scale``;
* ``image_text`` (edit, inpaint): InstructPix2Pix dual guidance — nothing, image only,
  image and prompt — with ``image_guidance_scale`` and ``guidance_scale``.

The UNet input is ``concat[scaled noisy latents, condition parts]`` in the task's layout;
a dropped image condition is zeros (as in training), a dropped prompt is the empty prompt.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from taskfold.errors import ConfigError

GUIDANCE_OF_TASK = {"none": "none", "text": "text", "image_text": "dual"}


def condition_parts(spec, codec, condition: torch.Tensor | None, mask: torch.Tensor | None,
                    latent_hw: tuple[int, int]) -> torch.Tensor | None:
    """The task's condition channels (after the noisy latents) for images in [-1, 1]."""
    parts = []
    for part in spec.inputs[1:]:
        if part == "mask":
            if mask is None:
                raise ConfigError(f"task {spec.name!r} needs a mask")
            parts.append(F.interpolate(mask.float(), size=latent_hw, mode="nearest"))
            continue
        if condition is None:
            raise ConfigError(f"task {spec.name!r} needs a condition image")
        img = condition * (1 - mask) if part == "masked_image" else condition
        parts.append(codec.encode(img))
    return torch.cat(parts, 1) if parts else None


@torch.no_grad()
def generate(unet_fn, spec, prompts: list[str], *, text_encoder, codec, scheduler_config: dict,
             condition: np.ndarray | None = None, mask: np.ndarray | None = None, height: int = 32, width: int = 32,
             steps: int = 20, scheduler: str = "ddim", guidance_scale: float | None = None,
             image_guidance_scale: float | None = None, seed: int = 0, strength: float = 1.0) -> np.ndarray:
    """Images ``[B, 3, H, W]`` in [-1, 1] for ``prompts`` (and conditions) of task ``spec``.

    ``unet_fn(sample, timestep, encoder_hidden_states) -> noise`` is an MTU model bound to the
    task or a folded task UNet. ``condition``/``mask`` are float arrays ``[B, 3|1, H, W]``
    (mask 1 = region to fill). Guidance scales default to the task's. ``strength`` below 1
    starts from the encoded condition image noised part-way (img2img, as the runtime does).
    """
    from taskfold.runtime import guidance as G
    from taskfold.runtime.schedulers import SchedulerConfig, check_strength, make_scheduler, start_latents

    kind = GUIDANCE_OF_TASK[spec.guidance]
    s_text = spec.guidance_scale if guidance_scale is None else guidance_scale
    s_img = spec.image_guidance_scale if image_guidance_scale is None else image_guidance_scale
    sched = make_scheduler(scheduler, SchedulerConfig.from_diffusers_config(scheduler_config), steps)
    b = len(prompts)
    f = codec.scale_factor
    h, w = height // f, width // f
    device = next(text_encoder.parameters()).device
    cond = torch.from_numpy(np.asarray(condition, np.float32)).to(device) if condition is not None else None
    msk = torch.from_numpy(np.asarray(mask, np.float32)).to(device) if mask is not None else None
    image_parts = condition_parts(spec, codec, cond, msk, (h, w))
    text = text_encoder.encode(list(prompts) if spec.uses_text else [""] * b)
    empty = text_encoder.encode([""] * b)
    strength = check_strength(strength)
    if strength < 1 and cond is None:
        raise ConfigError(f"strength {strength} needs a condition image to start from; task {spec.name!r} takes none")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((b, codec.latent_channels, h, w), dtype=np.float32)
    init = codec.encode(cond).float().cpu().numpy() if strength < 1 else None
    x, start = start_latents(sched, noise, init, strength)
    for i in range(start, len(sched.timesteps)):
        t = sched.timesteps[i]
        xin = torch.from_numpy(sched.scale_model_input(x, i)).to(device)
        outs = []
        for c in G.guidance_batches(kind):
            parts = [xin]
            if image_parts is not None:
                parts.append(image_parts if c.image else torch.zeros_like(image_parts))
            sample = torch.cat(parts, 1)
            ts = torch.full((b,), float(t), device=device)
            eps = unet_fn(sample, ts, text if c.text or kind == "none" else empty)
            outs.append(eps.float().cpu().numpy())
        eps = G.combine(kind, outs, text_scale=s_text, image_scale=s_img if s_img is not None else 1.0)
        x = sched.step(eps.astype(np.float32), i, x)
    images = codec.decode(torch.from_numpy(x).to(device)).clamp(-1, 1)
    return images.float().cpu().numpy()


def mtu_fn(mtu, task: str):
    """``unet_fn`` for an MTU model and one task."""
    return lambda sample, t, text: mtu(sample, t, text, task)


def folded_fn(unet):
    """``unet_fn`` for a folded task UNet (stock or DTR)."""
    return lambda sample, t, text: unet(sample, t, text, return_dict=False)[0]
