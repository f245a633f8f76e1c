"""Images in and out of the runtime: Pillow files <-> float32 ``[C, H, W]`` arrays in [-1, 1].

The conventions are the training data's (:mod:`taskfold.train.data`): RGB images are
``x / 127.5 - 1``; masks are single-channel, 1 where the region is to be filled (pixel value
128 or more), 0 elsewhere. Outputs are written through a temp file and a rename, so a PNG
either exists whole or not at all.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from taskfold._io import write_bytes_atomic
from taskfold.errors import ConfigError

#: Pillow modes the runtime converts to RGB without asking: grey, palette, RGBA (alpha dropped).
RGB_MODES = ("RGB", "L", "P", "RGBA", "LA", "I;16", "I", "CMYK")
#: The largest image taskfold decodes, runtime inputs and training data alike: this many pixels a side
#: (8192 x 8192 RGB is 200 MB decoded). Refused from the file's header, before any pixel is decoded.
MAX_IMAGE_SIDE = 8192
#: The file formats taskfold decodes (Pillow's names); others are refused unread.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


def to_chw(image: Image.Image) -> np.ndarray:
    """uint8 HWC (or HW) image to float32 CHW in [-1, 1]."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(a.transpose(2, 0, 1) / np.float32(127.5) - np.float32(1.0))


def mask_to_array(image: Image.Image) -> np.ndarray:
    """A mask image to float32 ``[1, H, W]``: 1 where the pixel is 128 or brighter (the region to fill)."""
    return (np.asarray(image.convert("L"), dtype=np.float32)[None] >= 128).astype(np.float32)


def read_image(path: str | Path, what: str = "image", name: str | None = None, error=ConfigError) -> Image.Image:
    """Decode the image file ``path``, or raise ``error`` naming it (as ``name``, default the path).

    Its size is read from the header (``Image.open`` is lazy) and refused above :data:`MAX_IMAGE_SIDE`
    before any pixel is decoded; every error Pillow raises for a bad file (decompression bombs included)
    becomes one message.
    """
    path = Path(path)
    name = str(path) if name is None else name
    if not path.is_file():
        raise error(f"{what} {name!r} does not exist or is not a file")
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: the bound below refuses sooner
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if max(w, h) > MAX_IMAGE_SIDE:
                    raise error(f"{what} {name!r} is {w}x{h} pixels; taskfold reads images of at most "
                                f"{MAX_IMAGE_SIDE} pixels a side", hint="resize it first")
                im.load()
                return im.copy()
    except Image.DecompressionBombError as e:
        raise error(f"{what} {name!r} is larger than taskfold reads (at most {MAX_IMAGE_SIDE} pixels a side): "
                    f"{e}", hint="resize it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise error(f"{what} {name!r} is not a readable image ({reason})",
                    hint=f"give a {', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]} file") from None


def open_image(path: str | Path, what: str = "image") -> Image.Image:
    """Open ``path`` with Pillow (:func:`read_image`), or raise a one-line :class:`ConfigError` naming it."""
    return read_image(path, what)


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


#: JPEG at quality 95 without chroma subsampling (4:4:4): small generated images keep their colours
JPEG = {"quality": 95, "subsampling": 0}
#: What an output file's suffix writes (Pillow's format and options): PNG and WebP lossless, JPEG as :data:`JPEG`.
OUTPUT_FORMATS = {".png": ("PNG", {}), ".jpg": ("JPEG", JPEG), ".jpeg": ("JPEG", JPEG),
                  ".webp": ("WEBP", {"lossless": True})}


def output_format(path: str | Path, what: str = "output") -> tuple[str, dict]:
    """The Pillow format and options ``path``'s suffix asks for, or a ConfigError naming the suffixes taken."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"{what} {str(path)!r} must end in {', '.join(OUTPUT_FORMATS)}",
                          hint="the suffix picks the format: PNG, JPEG (quality 95, 4:4:4) or WebP (lossless)")
    return OUTPUT_FORMATS[suffix]


def save_image(array: np.ndarray, path: str | Path, overwrite: bool = True) -> Path:
    """Write an image in [-1, 1] atomically as :func:`save_png` does, in the format of ``path``'s suffix
    (:data:`OUTPUT_FORMATS`)."""
    fmt, options = output_format(path)
    buf = io.BytesIO()
    Image.fromarray(to_uint8(array)).save(buf, format=fmt, **options)
    return write_bytes_atomic(path, buf.getbuffer(), exclusive=not overwrite)
