"""The sampling loop, written once: schedulers, guidance, img2img strength and the UNet input of every task.

Both the runtime (:meth:`taskfold.runtime.Package.generate`, exported graphs) and the PyTorch
reference sampler (:func:`taskfold.train.pipeline.generate`, the model itself) are thin
adapters that hand :func:`sample` a :class:`Model` — four numpy-in, numpy-out callables — so the
two differ only by their UNet, text encoder and codec.

Per step, the task's guidance (:mod:`.guidance`) lists the UNet evaluations it needs:

* ``none`` (sr): one evaluation with the prompt (empty for tasks without text) and image;
* ``text`` (t2i): the empty prompt and the prompt, ``guidance_scale``;
* ``image_text`` (edit, inpaint): InstructPix2Pix dual guidance — nothing, image only,
  image and prompt — with ``image_guidance_scale`` and ``guidance_scale``.

The UNet input is ``concat[scaled noisy latents, condition parts]`` in the task's layout
(:func:`condition_parts`, also what training feeds); a dropped image condition is zeros (as in
training), a dropped prompt is the empty prompt, or the row's **negative prompt** where one is given:
``text`` guidance's unconditional evaluation and both of ``image_text``'s (nothing, image only) read
it, as diffusers' StableDiffusionPipeline and StableDiffusionInstructPix2PixPipeline do. Noise is
:mod:`.noise`: one source per call, seeded with ``seed``, drawn for the initial noise of every row at
once (``[B, C, h, w]`` in C order, row after row) and then for every ancestral step (euler-a), so a seed
gives the same images in every language that runs a package. ``strength`` below 1 starts from the
encoded condition image noised to that fraction of the schedule (img2img,
:func:`~.schedulers.start_latents`).

After each step that runs, ``callback(step, timestep, latents)`` (diffusers' ``callback_on_step_end``)
sees the step's index among the steps that run (from 0), its timestep and the latents it produced; it
returns ``None`` to go on, or an array of the latents' shape to go on from instead. ``progress``
(:class:`~.progress.Progress`) is told the number of steps that run, then each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from taskfold.config import check_finite, check_seed
from taskfold.errors import ConfigError
from taskfold.tasks import TaskSpec

from . import guidance as G
from .noise import noise_source, normal
from .schedulers import SCHEDULERS, SchedulerConfig, check_strength, make_scheduler, start_latents

Array = np.ndarray


@dataclass(frozen=True)
class Model:
    """What the loop calls, numpy in and out (float32).

    ``unet(sample, timestep, encoder_hidden_states) -> noise``; ``encode_text(prompts) -> [B, L, D]``;
    ``encode_images(images in [-1, 1]) -> UNet sample space`` (latents x scaling factor; the images
    themselves for pixel models); ``decode(latents) -> images in [-1, 1]``.
    """

    unet: Callable[[Array, Array, Array], Array]
    encode_text: Callable[[list[str]], Array]
    encode_images: Callable[[Array], Array]
    decode: Callable[[Array], Array]
    #: the most samples one ``unet`` call takes at once (``None``: any): when a step's guidance
    #: evaluations fit, they run as one batched call instead of one call each.
    max_batch: int | None = 1
    #: the codec's ``latents = (raw - shift) * scaling``: a task whose image condition enters as raw
    #: latents (``image_latents="unscaled"``, InstructPix2Pix's convention) gets ``latents / scaling + shift``.
    scaling_factor: float = 1.0
    shift_factor: float = 0.0


def nearest(mask: Array, size: tuple[int, int]) -> Array:
    """Nearest-neighbour resize ``[B, 1, H, W]`` -> ``[B, 1, h, w]`` (source index floor(i * H / h),
    as ``torch.nn.functional.interpolate(mode="nearest")``)."""
    H, W = mask.shape[2:]
    h, w = size
    if (H, W) == (h, w):
        return mask
    rows = np.minimum((np.arange(h) * (H / h)).astype(np.int64), H - 1)
    cols = np.minimum((np.arange(w) * (W / w)).astype(np.int64), W - 1)
    return mask[:, :, rows][:, :, :, cols]


def condition_parts(spec: TaskSpec, encode_images: Callable[[Array], Array], condition: Array | None,
                    mask: Array | None, latent_hw: tuple[int, int], scaling_factor: float = 1.0,
                    shift_factor: float = 0.0) -> Array | None:
    """The task's condition channels (everything after the noisy latents), ``[B, C - c, h, w]``.

    ``condition`` ``[B, 3, H, W]`` in [-1, 1], ``mask`` ``[B, 1, H, W]`` (1 = fill). ``image`` is the
    encoded condition, ``masked_image`` the encoded condition with the mask's region zeroed, ``mask``
    the mask resized to the latent size (nearest). Encoded images are the codec's scaled latents, or
    the raw ones (``/ scaling_factor + shift_factor``) for a task with ``image_latents="unscaled"``.
    ``None`` for a task without condition parts. Training and both samplers assemble inputs here.
    """
    parts = []
    for part in spec.inputs[1:]:
        if part == "mask":
            parts.append(nearest(np.asarray(mask, np.float32), latent_hw))
            continue
        img = condition * (1 - mask) if part == "masked_image" else condition
        latents = np.asarray(encode_images(np.asarray(img, np.float32)), np.float32)
        if spec.image_latents == "unscaled":
            latents = latents / np.float32(scaling_factor) + np.float32(shift_factor)
        parts.append(latents)
    return np.concatenate(parts, 1) if parts else None


def check_inputs(spec: TaskSpec, condition, mask, strength: float) -> float:
    """Refuse a missing or unexpected condition image or mask, and a strength the task cannot use."""
    if spec.needs_mask and mask is None:
        raise ConfigError(f"task {spec.name!r} needs a mask (white = region to fill)", hint="pass --mask MASK.png")
    if spec.needs_condition and condition is None:
        raise ConfigError(f"task {spec.name!r} needs a condition image", hint="pass --image IMAGE.png")
    if not spec.needs_condition and condition is not None:
        raise ConfigError(f"task {spec.name!r} takes no condition image (its input is {list(spec.inputs)})")
    if not spec.needs_mask and mask is not None:
        raise ConfigError(f"task {spec.name!r} takes no mask (its input is {list(spec.inputs)})")
    strength = check_strength(strength)
    if strength < 1 and not spec.needs_condition:
        raise ConfigError(f"strength {strength} needs a condition image to start from; task {spec.name!r} takes none",
                          hint="strength applies to image-conditioned tasks (edit, sr, inpaint)")
    return strength


def check_options(prompts, steps, scheduler: str, seed, guidance_scale, image_guidance_scale) -> list[str]:
    """The prompts as a list; every option checked, each refusal naming its value."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ConfigError(f"prompt must be a string or a non-empty list of strings, got {prompts!r}")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    check_seed(seed, "seed")
    check_finite(guidance_scale, "guidance scale")
    check_finite(image_guidance_scale, "image guidance scale")
    return prompts


def sample(model: Model, spec: TaskSpec, prompts: list[str], *, scheduler_config: dict,
           latent_shape: tuple[int, int, int], condition: Array | None = None, mask: Array | None = None,
           steps: int | None = None, scheduler: str = "ddim", guidance_scale: float | None = None,
           image_guidance_scale: float | None = None, seed: int = 0, strength: float | None = None,
           negative_prompts: list[str] | None = None, callback: Callable | None = None,
           progress=None) -> Array:
    """Images ``[B, 3, H, W]`` in [-1, 1] for ``prompts`` (and their conditions) of task ``spec``.

    ``latent_shape`` is the UNet sample's ``(channels, h, w)``; ``condition``/``mask`` and
    ``negative_prompts`` (``None``: the empty prompt) have one row per prompt. Steps, strength and
    guidance scales default to the task's recommended sampling. ``callback`` and ``progress``: see the
    module docstring.
    """
    steps = spec.steps if steps is None else steps
    strength = spec.strength if strength is None else strength
    prompts = check_options(prompts, steps, scheduler, seed, guidance_scale, image_guidance_scale)
    strength = check_inputs(spec, condition, mask, strength)
    b, (c, h, w) = len(prompts), latent_shape
    s_text = spec.guidance_scale if guidance_scale is None else guidance_scale
    s_img = spec.image_guidance_scale if image_guidance_scale is None else image_guidance_scale
    kind = G.effective_kind(spec.guidance, s_text, s_img)  # scales of 1: one evaluation per step, not 2 or 3
    sched = make_scheduler(scheduler, SchedulerConfig.from_diffusers_config(scheduler_config), steps)
    image_parts = condition_parts(spec, model.encode_images, condition, mask, (h, w), model.scaling_factor,
                                  model.shift_factor)
    negative = check_negative(spec, negative_prompts, b)
    text = model.encode_text(prompts if spec.uses_text else [""] * b)
    empty = model.encode_text(negative or [""] * b) if kind != "none" else None  # read by unconditional evaluations only
    source = noise_source(seed)
    noise = normal(source, (b, c, h, w))
    init = model.encode_images(condition) if strength < 1 else None
    x, start = start_latents(sched, noise, init, strength)
    if progress is not None:
        progress.start(len(sched.timesteps) - start)
    for i in range(start, len(sched.timesteps)):
        xin = sched.scale_model_input(x, i)
        ts = np.full((b,), float(sched.timesteps[i]), dtype=np.float32)
        evals = [(xin if image_parts is None else
                  np.concatenate([xin, image_parts if c.image else np.zeros_like(image_parts)], 1),
                  text if c.text else empty) for c in G.guidance_batches(kind)]
        if len(evals) > 1 and (model.max_batch is None or model.max_batch >= b * len(evals)):
            out = model.unet(np.concatenate([e[0] for e in evals]), np.tile(ts, len(evals)),
                             np.concatenate([e[1] for e in evals]))
            outs = np.split(np.asarray(out, np.float32), len(evals))
        else:
            outs = [np.asarray(model.unet(x_in, ts, states), np.float32) for x_in, states in evals]
        eps = G.combine(kind, outs, text_scale=s_text, image_scale=s_img if s_img is not None else 1.0)
        x = sched.step(eps.astype(np.float32), i, x, generator=source)
        if callback is not None:
            x = _from_callback(callback(i - start, float(sched.timesteps[i]), x), x)
        if progress is not None:
            progress.update()
    if progress is not None:
        progress.close()
    return model.decode(x)


def check_images_per_prompt(n) -> int:
    """``num_images_per_prompt`` as a positive integer."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"images per prompt must be a positive integer, got {n!r}")
    return n


def check_negative(spec: TaskSpec, negative_prompts, rows: int) -> list[str] | None:
    """The negative prompts, one per row, or ``None`` when there are none (or all are empty: today's sampling).

    Refused for a task that runs no unconditional text evaluation (guidance ``none``, or no text).
    """
    if negative_prompts is None:
        return None
    negative = [negative_prompts] if isinstance(negative_prompts, str) else list(negative_prompts)
    if not all(isinstance(p, str) for p in negative):
        raise ConfigError(f"negative prompt must be a string or a list of strings, got {negative_prompts!r}")
    if not any(negative):
        return None
    if spec.guidance == "none" or not spec.uses_text:
        raise ConfigError(f"task {spec.name!r} uses no classifier-free guidance on text (guidance {spec.guidance!r}); "
                          "a negative prompt has nothing to replace", hint="drop the negative prompt")
    if len(negative) == 1:
        negative = negative * rows
    if len(negative) != rows:
        raise ConfigError(f"{len(negative)} negative prompts for {rows} prompts; give one, or one per prompt")
    return negative


def _from_callback(returned, x: Array) -> Array:
    """What a step callback returned: ``None`` (go on with ``x``) or replacement latents of ``x``'s shape."""
    if returned is None:
        return x
    out = np.asarray(returned, np.float32)
    if out.shape != x.shape:
        raise ConfigError(f"the step callback returned shape {list(out.shape)}; the latents are {list(x.shape)} "
                          "(return None to keep them)")
    return out
