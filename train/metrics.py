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


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n`` (good at small ``n`` and near 0 or 1)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(xs, z: float = 1.96) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its 95 % normal-approximation interval."""
    a = np.asarray([x for x in xs if math.isfinite(x)], dtype=np.float64)
    if a.size == 0:
        return (math.nan, math.nan, math.nan)
    half = z * float(a.std(ddof=1)) / math.sqrt(a.size) if a.size > 1 else math.inf
    return (float(a.mean()), float(a.mean()) - half, float(a.mean()) + half)


# --- Did the task do its job? (the shapes world; the pixel analyser reads the outputs) -------------

def t2i_success(out: np.ndarray, item: dict) -> bool:
    """The output shows one object, with the prompt's shape and colour (and size, when the prompt names one):
    a second object, or a blob the analyser cannot name, beside the right one is not the asked scene."""
    from .analyser import analyse_all, t2i_pass

    return len(analyse_all(out)) == 1 and bool(t2i_pass(out, item["prompt"]))


#: What an edit must keep, besides making the asked change (:func:`edit_check`): the attributes of the scene.
EDIT_ATTRIBUTES = ("objects", "shape", "colour", "size", "position", "background")
#: Tolerances of the strict edit metric, in the shapes world's own scale: an object's centre may lie up to half a
#: move's shift from where it belongs (a move by half the shift is not a move), a background up to half the
#: distance between the two closest backgrounds from the input's.
POSITION_TOLERANCE = 0.5  # x MOVE_FRACTION x image side
BACKGROUND_TOLERANCE = 0.5  # x the distance between the two closest BACKGROUNDS


def _edit_meta(item: dict) -> tuple[dict, dict, str]:
    meta = item.get("meta") or {}
    src, dst, kind = meta.get("source"), meta.get("object"), meta.get("edit")
    if not (src and dst and kind):
        raise DataError("an edit row needs the shapes world's 'source', 'object' and 'edit' to be scored",
                        hint="score a shapes-world dataset (`taskfold data make-shapes`)")
    return src, dst, kind


def _centroid(obj: dict, side: int) -> tuple[float, float]:
    """Where the analyser finds the centre of ``obj``: its centroid (a triangle's lies a third of its half extent
    below the centre the shapes world records)."""
    from .shapes import OBJECT_SIZES

    low = OBJECT_SIZES[obj["size"]] * side / 3 if obj["shape"] == "triangle" else 0.0
    return obj["x"], obj["y"] + low


def edit_check(out: np.ndarray, item: dict) -> list[str]:
    """The attributes (:data:`EDIT_ATTRIBUTES`) an edit output got wrong; ``[]`` when it made the asked change
    and kept everything else.

    The output must show exactly one object (``objects``) with the target's ``shape``, ``colour`` and ``size``
    (the source's, but for the one attribute the instruction changes), its centre within
    :data:`POSITION_TOLERANCE` of the target's (``position``: the source's place, or the moved one), on the
    input's background colour (``background``: the condition image's border colour, within
    :data:`BACKGROUND_TOLERANCE`). A re-generated scene that happens to show the asked attribute fails here.
    """
    from .analyser import analyse_all, as_rgb255, background_of
    from .shapes import BACKGROUNDS, MOVE_FRACTION

    _, dst, _ = _edit_meta(item)
    if "condition" not in item:
        raise DataError("an edit row needs its condition image to score whether the background was kept")
    objects = analyse_all(out)
    if len(objects) != 1 or not objects[0].found:
        return ["objects"]
    a, side = objects[0], out.shape[0]
    wrong = [k for k in ("shape", "colour", "size") if getattr(a, k) != dst[k]]
    cx, cy = _centroid(dst, side)
    if math.hypot(a.centre[0] - cx, a.centre[1] - cy) >= POSITION_TOLERANCE * MOVE_FRACTION * side:
        wrong.append("position")
    bg_out, _ = background_of(as_rgb255(out))
    bg_in, _ = background_of(as_rgb255(to_unit(item["condition"])))
    colours = [np.array(c, dtype=np.float64) for c in BACKGROUNDS.values()]
    closest = min(np.linalg.norm(p - q) for i, p in enumerate(colours) for q in colours[i + 1:])
    if np.linalg.norm(bg_out - bg_in) >= BACKGROUND_TOLERANCE * closest:
        wrong.append("background")
    return wrong


def edit_success(out: np.ndarray, item: dict) -> bool:
    """The strict edit metric: the asked change made and every other attribute kept (:func:`edit_check`)."""
    return not edit_check(out, item)


def edit_success_asked_only(out: np.ndarray, item: dict) -> bool:
    """The earlier, lenient edit metric (kept for side-by-side reports): the output's object has the target's
    changed attribute and the source's shape (and colour, unless recoloured); a move puts the centre at least
    half the shift in the asked direction (and less than half off the other axis). Size, place and background
    are not checked where the instruction did not ask about them, so a re-generated scene can pass."""
    from .analyser import analyse
    from .shapes import MOVE_FRACTION, MOVES

    src, dst, kind = _edit_meta(item)
    a = analyse(out)
    if not a.found or a.shape != src["shape"]:
        return False
    if kind == "colour":
        return a.colour == dst["colour"]
    if a.colour != src["colour"]:
        return False
    if kind == "size":
        return a.size == dst["size"]
    shift = MOVE_FRACTION * out.shape[0]
    direction = next(k for k in MOVES if f" {k}" in item["prompt"])
    along, across = move_displacement(a.centre, src, direction)
    return along >= shift / 2 and across < shift / 2


def move_displacement(centre, source: dict, direction: str) -> tuple[float, float]:
    """How far an object found at ``centre`` (x, y pixels) lies from ``source``'s recorded centre, along the move
    ``direction`` (:data:`~.shapes.MOVES`; positive: the asked way) and across it (absolute)."""
    from .shapes import MOVES

    wx, wy = MOVES[direction]
    dx, dy = centre[0] - source["x"], centre[1] - source["y"]
    return dx * wx + dy * wy, abs(dx * wy - dy * wx)


def inpaint_success(out: np.ndarray, item: dict) -> bool:
    """The named object is gone and the other one kept: where the removed object was, the output shows the
    background (median RGB distance below the analyser's foreground threshold); the rest of the scene (that
    place painted with the background) holds the kept object (shape and colour) and nothing with the removed
    object's shape and colour."""
    from .analyser import analyse_all, as_rgb255, background_of, dilate
    from .shapes import ShapeObject, coverage

    meta = item.get("meta") or {}
    keep, removed = meta.get("object"), meta.get("removed")
    if not (keep and removed):
        raise DataError("an inpaint row needs the shapes world's 'object' and 'removed' to be scored",
                        hint="score a shapes-world dataset (`taskfold data make-shapes`)")
    img = as_rgb255(out)
    if img.shape[0] != img.shape[1]:
        raise DataError(f"an inpaint output must be square like the shapes world, got {img.shape[1]}x{img.shape[0]}")
    bg, threshold = background_of(img)
    cover = coverage(ShapeObject(**{k: removed[k] for k in ("shape", "colour", "size", "x", "y")}), img.shape[0])
    where = cover >= 0.5
    if float(np.median(np.linalg.norm(img[where] - bg, axis=1))) >= threshold:
        return False
    rest = img.copy()
    rest[dilate(cover > 0, 2)] = bg
    found = [(a.shape, a.colour) for a in analyse_all(rest, value_range=(0, 255)) if a.found]
    return (keep["shape"], keep["colour"]) in found and (removed["shape"], removed["colour"]) not in found


def inpaint_mask_success(out: np.ndarray, item: dict) -> bool:
    """The filled region holds the scene's object again: the output's object is the target's (shape, colour)."""
    from .analyser import analyse

    obj = (item.get("meta") or {}).get("object")
    if not obj:
        raise DataError("an inpaint-mask row needs the shapes world's 'object' to be scored")
    a = analyse(out)
    return a.found and a.shape == obj["shape"] and a.colour == obj["colour"]


#: task -> whether an output did its job, for the shapes world's built-in tasks (sr is scored by PSNR gain)
SUCCESS = {"t2i": t2i_success, "edit": edit_success, "inpaint": inpaint_success, "inpaint-mask": inpaint_mask_success}
#: task -> {name: an earlier metric}, scored beside :data:`SUCCESS` so that reports can show both on the same outputs
ALSO_SCORED = {"edit": {"asked_only": edit_success_asked_only}}


def _inpaint_kind(item: dict) -> str:
    keep = (item.get("meta") or {}).get("object") or {}
    return "kept object large" if keep.get("size") == "large" else "both objects small"


#: The name of each kind of edit in reports (the rows' ``edit`` column says colour, move, size).
EDIT_KINDS = {"colour": "recolour", "move": "move", "size": "resize"}

#: task -> the kind of row, for success counted per kind: an edit's instruction (recolour, move, resize); for
#: object removal whether size alone tells the two objects apart (the removed one is always small)
KINDS = {"edit": lambda item: EDIT_KINDS.get((item.get("meta") or {}).get("edit"), "?"), "inpaint": _inpaint_kind}


def _count_by_kind(task: str, ok: list[bool], items: list[dict]) -> dict[str, list[int]]:
    by: dict[str, list[int]] = {}
    for o, it in zip(ok, items):
        counts = by.setdefault(KINDS[task](it), [0, 0])
        counts[0] += int(o)
        counts[1] += 1
    return dict(sorted(by.items()))


def task_scores(task: str, images, items: list[dict]) -> dict:
    """Scores of generated ``images`` (``[B, 3, H, W]`` in [-1, 1]) for dataset ``items`` of ``task``.

    ``success_rate`` (with its 95 % Wilson interval): the share of outputs that did the task's job
    (:data:`SUCCESS`: read by the pixel analyser), for edit and inpaint also ``success_by_kind``
    ``{kind: [successes, rows]}`` (:data:`KINDS`); edit also the attributes each output got wrong
    (``per_sample[i]["wrong"]``, :func:`edit_check`) and, under ``also``, the earlier metrics of
    :data:`ALSO_SCORED` on the same outputs (``{name: {successes, success_rate, success_by_kind}}``).
    Image-conditioned tasks also get PSNR and SSIM to the target beside the trivial baseline of
    returning the condition image (for ``sr`` the bicubic upsampled input), and ``psnr_gain_db``, the
    mean gain over that baseline with its 95 % interval — ``sr``'s score. ``per_sample`` holds each
    image's own numbers.
    """
    per = [{} for _ in items]
    out: dict = {"n": len(items)}
    if task in SUCCESS:
        if task == "edit":  # what each output got wrong; success is getting nothing wrong
            wrong = [edit_check(to_unit(img), it) for img, it in zip(images, items)]
            ok = [not w for w in wrong]
        else:
            ok = [bool(SUCCESS[task](to_unit(img), it)) for img, it in zip(images, items)]
        k = sum(ok)
        out |= {"success_rate": k / len(ok) if ok else math.nan, "success_interval": list(wilson_interval(k, len(ok))),
                "successes": k}
        if task in KINDS:
            out["success_by_kind"] = _count_by_kind(task, ok, items)
        for p, o in zip(per, ok):
            p["success"] = o
        if task == "edit":
            for p, w in zip(per, wrong):
                p["wrong"] = w
        for name, fn in ALSO_SCORED.get(task, {}).items():
            also = [bool(fn(to_unit(img), it)) for img, it in zip(images, items)]
            out.setdefault("also", {})[name] = {"successes": sum(also), "success_rate": sum(also) / len(also),
                                                "success_by_kind": _count_by_kind(task, also, items)}
            for p, o in zip(per, also):
                p[name] = o
    if items and "condition" in items[0]:
        for p, img, it in zip(per, images, items):
            o, target, cond = to_unit(img), to_unit(it["target"]), to_unit(it["condition"])
            p |= {"psnr": psnr(o, target, data_range=1.0), "ssim": ssim(o, target, data_range=1.0),
                  "condition_psnr": psnr(cond, target, data_range=1.0),
                  "condition_ssim": ssim(cond, target, data_range=1.0)}
            p["psnr_gain_db"] = p["psnr"] - p["condition_psnr"]
        mean = {k: float(np.mean([p[k] for p in per])) for k in ("psnr", "ssim", "condition_psnr", "condition_ssim")}
        gain, lo, hi = mean_interval([p["psnr_gain_db"] for p in per])
        out |= {"psnr": mean["psnr"], "ssim": mean["ssim"], "condition_baseline_psnr": mean["condition_psnr"],
                "condition_baseline_ssim": mean["condition_ssim"], "psnr_gain_db": gain,
                "psnr_gain_interval": [lo, hi]}
    out["per_sample"] = per
    return out
