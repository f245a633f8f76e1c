"""Classifier-free guidance in numpy: how several UNet outputs become one noise prediction.

Three kinds, named by what the extra evaluations drop:

* ``none``: one evaluation with every condition, used as is.
* ``text``: classifier-free guidance on the prompt (Ho & Salimans 2022, Eq. 6, written
  with ``s = 1 + w``)::

      e = e(z, c_img, empty) + s * (e(z, c_img, c_txt) - e(z, c_img, empty))

  Tasks with an image condition (super-resolution, inpainting) keep it in both
  evaluations; only the prompt is replaced by the empty prompt's embedding.
* ``image_text``: InstructPix2Pix guidance on the image and the instruction (Brooks et al. 2023,
  Eq. 3)::

      e = e(z, 0, empty) + s_I * (e(z, c_img, empty) - e(z, 0, empty))
                         + s_T * (e(z, c_img, c_txt) - e(z, c_img, empty))

  where "0" is an all-zero image condition.

:func:`guidance_batches` lists the evaluations each kind needs, in the order
:func:`combine` expects them, so a runtime can stack them into one batch or loop over a
graph exported with a static batch of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from taskfold.errors import ConfigError
from taskfold.tasks import GUIDANCE_KINDS  # noqa: F401  (the kinds are the tasks' guidance kinds)


@dataclass(frozen=True)
class Conditioning:
    """What one UNet evaluation is conditioned on.

    ``text``: the prompt's embedding (False: the empty prompt's). ``image``: the task's image
    condition (False: zeros of the same shape); ignored by tasks without one.
    """

    text: bool
    image: bool


UNCOND = Conditioning(text=False, image=False)
IMAGE_ONLY = Conditioning(text=False, image=True)
FULL = Conditioning(text=True, image=True)

_BATCHES = {
    "none": (FULL,),
    "text": (IMAGE_ONLY, FULL),
    "image_text": (UNCOND, IMAGE_ONLY, FULL),
}


def _check_kind(kind: str) -> None:
    if kind not in _BATCHES:
        raise ConfigError(f"guidance {kind!r} is not supported; expected one of: {', '.join(GUIDANCE_KINDS)}")


def guidance_batches(kind: str) -> tuple[Conditioning, ...]:
    """The UNet evaluations one step of ``kind`` needs, in :func:`combine`'s order.

    ``none`` -> (full,); ``text`` -> (empty prompt, full); ``image_text`` -> (unconditional,
    image only, full). The length is the number of evaluations per step.
    """
    _check_kind(kind)
    return _BATCHES[kind]


def effective_kind(kind: str, text_scale: float | None, image_scale: float | None) -> str:
    """The guidance a step runs: ``none`` where the scales make ``kind``'s combination equal the fully
    conditioned prediction (``text`` at scale 1; ``image_text`` at text and image scale 1), so its
    unconditional evaluations are skipped, as diffusers' pipelines skip them at ``guidance_scale`` 1;
    else ``kind`` itself. ``None`` scales count as 1 (the task has no such scale)."""
    _check_kind(kind)
    text = 1.0 if text_scale is None else float(text_scale)
    image = 1.0 if image_scale is None else float(image_scale)
    if (kind == "text" and text == 1.0) or (kind == "image_text" and text == 1.0 and image == 1.0):
        return "none"
    return kind


def none(eps_full: np.ndarray) -> np.ndarray:
    """No guidance: the fully conditioned prediction itself."""
    return eps_full


def text_cfg(eps_uncond: np.ndarray, eps_text: np.ndarray, scale: float) -> np.ndarray:
    """``e_uncond + scale * (e_text - e_uncond)``; scale 1 gives ``e_text``, 0 ``e_uncond``."""
    return eps_uncond + float(scale) * (eps_text - eps_uncond)


def dual_cfg(eps_uncond: np.ndarray, eps_image: np.ndarray, eps_full: np.ndarray,
             text_scale: float, image_scale: float) -> np.ndarray:
    """InstructPix2Pix guidance (Brooks et al. 2023, Eq. 3)::

        e_uncond + image_scale * (e_image - e_uncond) + text_scale * (e_full - e_image)

    ``eps_image`` is conditioned on the image only, ``eps_full`` on image and text. With
    both scales 1 it is ``eps_full``; with equal scales ``s`` it is
    ``text_cfg(eps_uncond, eps_full, s)``.
    """
    return (eps_uncond + float(image_scale) * (eps_image - eps_uncond)
            + float(text_scale) * (eps_full - eps_image))


def combine(kind: str, outputs: Sequence[np.ndarray] | np.ndarray, *, text_scale: float = 7.5,
            image_scale: float = 1.5) -> np.ndarray:
    """Apply guidance ``kind`` to the UNet outputs of :func:`guidance_batches` ``(kind)``.

    ``outputs`` is either a sequence with one array per evaluation, or one array holding
    them stacked along axis 0 in the same order (a batched call), which is split evenly.
    ``image_scale`` is used by ``image_text`` only; neither scale by ``none``.
    """
    n = len(guidance_batches(kind))
    if isinstance(outputs, np.ndarray):
        if outputs.shape[0] % n:
            raise ConfigError(f"guidance {kind!r} needs {n} stacked outputs; batch {outputs.shape[0]} "
                              f"is not a multiple of {n}")
        outputs = np.split(outputs, n, axis=0)
    if len(outputs) != n:
        raise ConfigError(f"guidance {kind!r} needs {n} UNet outputs, got {len(outputs)}")
    if kind == "none":
        return none(*outputs)
    if kind == "text":
        return text_cfg(*outputs, text_scale)
    return dual_cfg(*outputs, text_scale, image_scale)
