"""Images in and out of the runtime: Pillow files <-> float32 ``[C, H, W]`` arrays in [-1, 1].

The conventions are the training data's (:mod:`taskfold.train.data`): RGB images are
``x / 127.5 - 1``; masks are single-channel, 1 where the region is to be filled (pixel value
128 or more), 0 elsewhere. Outputs are written through a temp file and a rename, so a PNG
either exists whole or not at all.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from taskfold._io import write_bytes_atomic
from taskfold.errors import ConfigError

#: Pillow modes the runtime converts to RGB without asking: grey, palette, RGBA (alpha dropped).
RGB_MODES = ("RGB", "L", "P", "RGBA", "LA", "I;16", "I", "CMYK")


def to_chw(image: Image.Image) -> np.ndarray:
    """uint8 HWC (or HW) image to float32 CHW in [-1, 1]."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(a.transpose(2, 0, 1) / np.float32(127.5) - np.float32(1.0))


def mask_to_array(image: Image.Image) -> np.ndarray:
    """A mask image to float32 ``[1, H, W]``: 1 where the pixel is 128 or brighter (the region to fill)."""
    return (np.asarray(image.convert("L"), dtype=np.float32)[None] >= 128).astype(np.float32)


def open_image(path: str | Path, what: str = "image") -> Image.Image:
    """Open ``path`` with Pillow, or raise a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist or is not a file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"{what} {str(path)!r} is not a readable image ({e.__class__.__name__})",
                          hint="give a PNG or JPEG file") from None


def fit_image(image: Image.Image, size: tuple[int, int], what: str, *, also: tuple[int, int] | None = None,
              resize: bool = False) -> Image.Image:
    """``image`` at ``size`` (width, height), or a one-line error.

    ``also`` is a second accepted size that is upsampled bicubically without asking (the
    half-size input of super-resolution, as in training). Any other size is refused unless
    ``resize``, which resamples bicubically — the image's aspect ratio is not preserved.
    """
    if image.size == size:
        return image
    if image.size == also or resize:
        return image.resize(size, Image.Resampling.BICUBIC)
    accepted = f"{size[0]}x{size[1]}" + (f" or {also[0]}x{also[1]}" if also else "")
    raise ConfigError(f"{what} is {image.size[0]}x{image.size[1]} pixels; the package expects {accepted}",
                      hint="resize it, or pass --resize to let the runtime resample it (bicubic)")


def to_rgb(image: Image.Image, what: str) -> Image.Image:
    if image.mode not in RGB_MODES:
        raise ConfigError(f"{what} has image mode {image.mode!r}; expected one of {', '.join(RGB_MODES)}",
                          hint="save it as an RGB PNG")
    return image.convert("RGB")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """float ``[C, H, W]`` (or ``[H, W]``) in [-1, 1] -> uint8 ``[H, W, C]`` (or ``[H, W]``), rounded."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    elif a.ndim != 2:
        raise ConfigError(f"an image array must be [C, H, W] or [H, W], got shape {list(a.shape)}")
    return np.round((np.clip(a, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def save_png(array: np.ndarray, path: str | Path, overwrite: bool = True) -> Path:
    """Write an image in [-1, 1] (``[3, H, W]``, ``[1, H, W]`` or ``[H, W]``) as a PNG, atomically.

    Without ``overwrite`` an existing file (also one another process writes meanwhile) is kept
    and :class:`~taskfold.errors.OutputExistsError` raised.
    """
    buf = io.BytesIO()
    Image.fromarray(to_uint8(array)).save(buf, format="PNG")
    return write_bytes_atomic(path, buf.getbuffer(), exclusive=not overwrite)
