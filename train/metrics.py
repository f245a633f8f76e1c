"""Image metrics in numpy: PSNR and SSIM.

Both take two images of the same shape, ``(H, W)`` or ``(H, W, C)`` (channels last unless
``channel_axis`` says otherwise), with values in ``[0, data_range]``. ``data_range``
defaults to 1.0 for float images and 255 for ``uint8`` ones.

SSIM follows Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error
visibility to structural similarity", IEEE TIP 2004, section III-C:

    SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

with local statistics weighted by an 11x11 circular-symmetric Gaussian window
(sigma 1.5, normalised to unit sum), C1 = (K1 L)^2, C2 = (K2 L)^2, K1 = 0.01,
K2 = 0.03, L = ``data_range``. The map is computed where the window fits inside the
image ("valid" positions, as in the paper's reference implementation) and averaged
(the paper's MSSIM, eq. 17); colour images are averaged over channels.
"""

from __future__ import annotations

import math

import numpy as np

from taskfold.errors import DataError

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11x11 window


def gaussian_window(sigma: float, radius: int) -> np.ndarray:
    """1-D Gaussian weights at offsets ``-radius..radius``, normalised to sum to 1 (float64)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _pair(a, b, data_range: float | None, channel_axis: int | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Both images as float64 ``(C, H, W)`` arrays, and the data range to use."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise DataError(f"images to compare differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise DataError(f"expected an image of shape (H, W) or (H, W, C), got shape {a.shape}")
    if data_range is None:
        if a.dtype == np.uint8 and b.dtype == np.uint8:
            data_range = 255.0
        elif np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating):
            data_range = 1.0
        else:
            raise DataError(f"cannot tell the value range of images of dtype {a.dtype} and {b.dtype}",
                            hint="pass data_range (1.0 for images in [0, 1], 255 for 8-bit values)")
    if not data_range > 0:
        raise DataError(f"data_range must be positive, got {data_range}")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        a, b = a[None], b[None]
    else:
        axis = -1 if channel_axis is None else channel_axis
        a, b = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
    return a, b, float(data_range)


def psnr(a, b, data_range: float | None = None, channel_axis: int | None = -1) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(L^2 / MSE)`` over all pixels and channels.

    Identical images give ``inf``.
    """
    a, b, L = _pair(a, b, data_range, channel_axis)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(L * L / mse)


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable correlation of ``(C, H, W)`` with ``w`` on both spatial axes, valid positions only."""
    k = len(w)
    h, wd = x.shape[1] - k + 1, x.shape[2] - k + 1
    rows = sum(w[i] * x[:, i:i + h, :] for i in range(k))
    return sum(w[j] * rows[:, :, j:j + wd] for j in range(k))


def ssim_map(a, b, data_range: float | None = None, channel_axis: int | None = -1,
             sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    """Local SSIM at every valid window position: array ``(C, H - 2 radius, W - 2 radius)``."""
    a, b, L = _pair(a, b, data_range, channel_axis)
    size = 2 * radius + 1
    if a.shape[1] < size or a.shape[2] < size:
        raise DataError(f"image of {a.shape[1]}x{a.shape[2]} pixels is smaller than the "
                        f"{size}x{size} SSIM window")
    w = gaussian_window(sigma, radius)
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a ** 2
    var_b = _filter_valid(b * b, w) - mu_b ** 2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * L) ** 2, (SSIM_K2 * L) ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def ssim(a, b, data_range: float | None = None, channel_axis: int | None = -1,
         sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> float:
    """Mean structural similarity (Wang et al. 2004, eq. 17), averaged over channels; 1.0 if identical."""
    return float(np.mean(ssim_map(a, b, data_range, channel_axis, sigma, radius)))


# --- Per-task scores of generated samples ---------------------------------------------------

def to_unit(a) -> np.ndarray:
    """A ``(3, H, W)`` image in [-1, 1] as ``(H, W, 3)`` in [0, 1] (clipped)."""
    return np.clip((np.asarray(a).transpose(1, 2, 0) + 1) / 2, 0, 1)


def task_scores(task: str, images, items: list[dict]) -> dict:
    """Scores of generated ``images`` (``[B, 3, H, W]`` in [-1, 1]) for dataset ``items`` of ``task``.

    ``t2i``: the share of images in which the pixel analyser finds the prompt's shape and
    colour. Image-conditioned tasks: mean PSNR and SSIM to the target, and the same for the
    trivial baseline of returning the condition image unchanged. ``per_sample`` holds each
    image's own numbers.
    """
    from .analyser import t2i_pass

    if task == "t2i":
        passed = [bool(t2i_pass(to_unit(img), it["prompt"])) for img, it in zip(images, items)]
        return {"n": len(items), "t2i_pass_rate": float(np.mean(passed)),
                "per_sample": [{"t2i_pass": p} for p in passed]}
    per = []
    for img, it in zip(images, items):
        out, target, cond = to_unit(img), to_unit(it["target"]), to_unit(it["condition"])
        per.append({"psnr": psnr(out, target, data_range=1.0), "ssim": ssim(out, target, data_range=1.0),
                    "condition_psnr": psnr(cond, target, data_range=1.0),
                    "condition_ssim": ssim(cond, target, data_range=1.0)})
    mean = {k: float(np.mean([p[k] for p in per])) for k in ("psnr", "ssim", "condition_psnr", "condition_ssim")}
    return {"n": len(items), "psnr": mean["psnr"], "ssim": mean["ssim"],
            "condition_baseline_psnr": mean["condition_psnr"], "condition_baseline_ssim": mean["condition_ssim"],
            "per_sample": per}
