"""A pixel analyser for the shapes world: what object an image shows, with no learned weights.

It takes the place of learned scores (CLIP, detectors), whose weights cannot be downloaded
here: a generated image passes when the object the analyser finds has the shape, colour
(and size, if named) that the prompt asks for.

Steps, all deterministic:

1. **Background**: the median colour of the one-pixel border (the shapes world keeps a
   margin free); the spread of the border sets the foreground threshold, so a noise
   image has no foreground.
2. **Foreground**: pixels farther than the threshold from the background colour, split
   into 4-connected components; the dominant object is the largest component.
3. **Colour**: the median of the component's interior (its edge pixels mix with the
   background), matched to the nearest :data:`~taskfold.train.shapes.PALETTE` colour.
4. **Coverage**: each pixel near the object gets ``alpha`` in [0, 1], its position on
   the line from the background colour to the object colour, so anti-aliased edges count
   in proportion. The object's *silhouette* is ``alpha >= 1/2``: a blurred edge crosses half
   height where the sharp edge was, so the silhouette keeps its size and outline under the
   blur a generated image shows (where the soft coverage would spread).
5. **Shape** by template: each of the three shapes is drawn (anti-aliased, as the shapes
   world draws) with the silhouette's area and centroid, and the one whose silhouette
   overlaps best (intersection over union) wins; the margin to the second is the confidence.
   Blur, noise, sub-pixel shifts and rounded corners move the overlap little, while the
   shapes' outlines differ a lot. (The fill ratio and vertical skewness of the coverage are
   reported beside it.)
6. **Size**: the larger side of the silhouette against the image side, split halfway
   between the shapes world's small and large objects.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from taskfold.errors import DataError

from .shapes import OBJECT_SIZES, PALETTE, SHAPES

#: Feature prototypes (fill ratio, vertical skewness) of the ideal shapes.
SHAPE_PROTOTYPES: dict[str, tuple[float, float]] = {
    "circle": (math.pi / 4, 0.0),
    "square": (1.0, 0.0),
    "triangle": (0.5, -2 * math.sqrt(2) / 5),
}
#: Feature scales: the distance between neighbouring prototypes on each axis.
FEATURE_SCALES = (1.0 - math.pi / 4, 2 * math.sqrt(2) / 5)

MIN_THRESHOLD = 40.0  # RGB distance from the background that counts as foreground, at least
BORDER_SPREAD_FACTOR = 6.0  # ... or this many times the border's median deviation
MAX_COLOUR_DISTANCE = 70.0  # farther than this from every palette colour: no colour
MAX_COLOUR_SPREAD = 30.0  # median deviation inside the object; more is not a flat object
MIN_AREA_FRACTION = 0.005
MAX_AREA_FRACTION = 0.6
SIZE_SPLIT = OBJECT_SIZES["small"] + OBJECT_SIZES["large"]  # full extent halfway between them


@dataclass(frozen=True)
class Analysis:
    """What the analyser found. ``found`` is False (with a ``reason``) when no single flat
    palette-coloured object stands out from the background; then ``shape``, ``colour`` and
    ``size`` are ``None`` and ``confidence`` is 0."""

    found: bool
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    confidence: float = 0.0
    shape_confidence: float = 0.0
    colour_confidence: float = 0.0
    colour_distance: float = math.inf
    fill_ratio: float = math.nan
    skewness: float = math.nan
    extent: float = math.nan  # larger side of the object / image side
    area_fraction: float = 0.0
    centre: tuple[float, float] | None = None  # (x, y) in pixels
    background: tuple[float, float, float] | None = None
    reason: str = ""


def as_rgb255(image, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """An ``(H, W, 3)`` image as float64 in [0, 255]: ``uint8`` as it is, floats mapped from
    ``value_range`` (use ``(-1, 1)`` for model outputs)."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        hint = "transpose a (3, H, W) array to (H, W, 3)" if a.ndim == 3 and a.shape[0] == 3 else None
        raise DataError(f"expected an RGB image of shape (H, W, 3), got shape {a.shape}", hint=hint)
    if a.dtype == np.uint8:
        return a.astype(np.float64)
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"expected a uint8 or float image, got dtype {a.dtype}")
    lo, hi = value_range
    return np.clip((a.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0) * 255.0


# --- pixel helpers ---------------------------------------------------------------------------

def _shifted(mask: np.ndarray) -> list[np.ndarray]:
    """The four 4-neighbour views of a boolean mask (False outside the image)."""
    up, down, left, right = (np.zeros_like(mask) for _ in range(4))
    up[1:], down[:-1], left[:, 1:], right[:, :-1] = mask[:-1], mask[1:], mask[:, :-1], mask[:, 1:]
    return [up, down, left, right]


def _components(fg: np.ndarray) -> np.ndarray:
    """4-connected component labels of ``fg`` (-1 for background), by min-label propagation."""
    h, w = fg.shape
    big = h * w
    labels = np.where(fg, np.arange(big).reshape(h, w), big)
    while True:
        m = labels.copy()
        np.minimum(m[1:], labels[:-1], out=m[1:])
        np.minimum(m[:-1], labels[1:], out=m[:-1])
        np.minimum(m[:, 1:], labels[:, :-1], out=m[:, 1:])
        np.minimum(m[:, :-1], labels[:, 1:], out=m[:, :-1])
        m = np.where(fg, m, big)
        if np.array_equal(m, labels):
            return np.where(fg, labels, -1)
        labels = m


def _margin_confidence(d1: float, d2: float) -> float:
    """0 when the best and second-best candidates are equally near, 1 when the best is exact."""
    return (d2 - d1) / (d2 + d1) if d2 + d1 > 0 else 0.0


#: Blurs the shape templates are tried at (pixels): sharp targets up to very soft samples.
TEMPLATE_BLURS = (0.0, 0.5, 0.8, 1.1, 1.5, 2.0)


def _template_error(shape: str, alpha: np.ndarray, area: float, cx: float, cy: float) -> float:
    """Least squared difference between the coverage ``alpha`` and ``shape`` drawn with the same mass and
    centroid, over :data:`TEMPLATE_BLURS` (blur keeps an object's mass and centroid, so those fix the
    template's size and place whatever blur the image has)."""
    from .shapes import SUPERSAMPLE, gaussian_blur

    h, w = alpha.shape
    r = math.sqrt(area / {"square": 4.0, "circle": math.pi, "triangle": 2.0}[shape])
    y0 = cy - r / 3 if shape == "triangle" else cy  # apex (x, y - r), base y + r: the centroid is r/3 low
    s = SUPERSAMPLE
    px = (np.arange(w * s) + 0.5)[None, :] / s - cx
    py = (np.arange(h * s) + 0.5)[:, None] / s - y0
    if shape == "circle":
        inside = px ** 2 + py ** 2 <= r * r
    elif shape == "square":
        inside = (np.abs(px) <= r) & (np.abs(py) <= r)
    else:
        inside = (py <= r) & (np.abs(px) <= (py + r) / 2)
    sharp = inside.reshape(h, s, w, s).mean(axis=(1, 3))
    best = math.inf
    for sigma in TEMPLATE_BLURS:
        t = sharp if sigma == 0 else gaussian_blur(sharp[:, :, None], sigma)[:, :, 0]
        best = min(best, float(((alpha - t) ** 2).sum()))
    return best


# --- the analysis ----------------------------------------------------------------------------

def background_of(img: np.ndarray) -> tuple[np.ndarray, float]:
    """``(background colour, foreground threshold)`` of an ``(H, W, 3)`` image in 0..255: the median of the
    one-pixel border, and the RGB distance from it beyond which a pixel is foreground."""
    h, w, _ = img.shape
    if min(h, w) < 8:
        raise DataError(f"image of {h}x{w} pixels is too small to analyse; expected at least 8x8")
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    bg = np.median(border, axis=0)
    spread = float(np.median(np.linalg.norm(border - bg, axis=1)))
    return bg, max(MIN_THRESHOLD, BORDER_SPREAD_FACTOR * spread)


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` grown by ``steps`` pixels (4-neighbourhood)."""
    for _ in range(steps):
        mask = mask | np.logical_or.reduce(_shifted(mask))
    return mask


def _foreground(image, value_range):
    """``(image 0..255, background colour, foreground labels)`` of a shapes-world image."""
    img = as_rgb255(image, value_range)
    bg, threshold = background_of(img)
    fg = np.linalg.norm(img - bg, axis=2) > threshold
    return img, bg, _components(fg) if fg.any() else np.full(fg.shape, -1)


def analyse(image, value_range: tuple[float, float] = (0.0, 1.0)) -> Analysis:
    """Find the dominant object of a shapes-world image and name its shape, colour and size."""
    img, bg, labels = _foreground(image, value_range)
    if not (labels >= 0).any():
        return Analysis(False, background=tuple(round(float(c), 1) for c in bg),
                        reason="nothing stands out from the background")
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    return _analyse_component(img, bg, labels == ids[np.argmax(counts)])


def analyse_all(image, value_range: tuple[float, float] = (0.0, 1.0)) -> list[Analysis]:
    """Every object of the image (components of at least :data:`MIN_AREA_FRACTION`), largest first."""
    img, bg, labels = _foreground(image, value_range)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    h, w = labels.shape
    return [_analyse_component(img, bg, labels == i, others=(labels >= 0) & (labels != i))
            for i, n in sorted(zip(ids, counts), key=lambda x: -x[1]) if n / (h * w) >= MIN_AREA_FRACTION]


def _analyse_component(img: np.ndarray, bg: np.ndarray, comp: np.ndarray, others: np.ndarray | None = None) -> Analysis:
    """Shape, colour and size of the object covering the component ``comp``; the pixels of ``others``
    (other objects' components) and their edges do not count toward its coverage."""
    h, w, _ = img.shape
    background = tuple(round(float(c), 1) for c in bg)
    area_fraction = float(comp.sum()) / (h * w)
    if not MIN_AREA_FRACTION <= area_fraction <= MAX_AREA_FRACTION:
        return Analysis(False, area_fraction=area_fraction, background=background,
                        reason=f"the largest foreground region covers {area_fraction:.1%} of the image; "
                               f"expected {MIN_AREA_FRACTION:.1%} to {MAX_AREA_FRACTION:.0%}")

    # Colour from the object's strongest pixels: those at least 3/4 as far from the background as the
    # farthest (a blurred object's edge pixels mix with the background; its middle keeps the colour).
    dist = np.linalg.norm(img - bg, axis=2)
    core = comp & (dist >= 0.75 * float(np.percentile(dist[comp], 95)))
    pixels = img[core] if core.sum() >= 3 else img[comp]
    obj = np.median(pixels, axis=0)
    colour_spread = float(np.median(np.linalg.norm(pixels - obj, axis=1)))
    names = list(PALETTE)
    dists = np.linalg.norm(np.array([PALETTE[n] for n in names], dtype=np.float64) - obj, axis=1)
    order = np.argsort(dists)
    d1, d2 = float(dists[order[0]]), float(dists[order[1]])
    if colour_spread > MAX_COLOUR_SPREAD:
        return Analysis(False, area_fraction=area_fraction, background=background, colour_distance=d1,
                        reason=f"the object's colour varies by {colour_spread:.0f} (median RGB distance); "
                               f"a flat object varies by at most {MAX_COLOUR_SPREAD:.0f}")
    if d1 > MAX_COLOUR_DISTANCE:
        return Analysis(False, area_fraction=area_fraction, background=background, colour_distance=d1,
                        reason=f"the object's colour {tuple(int(c) for c in obj)} is {d1:.0f} from the nearest "
                               f"palette colour ({names[order[0]]}); expected at most {MAX_COLOUR_DISTANCE:.0f}")
    colour = names[order[0]]

    # Coverage of every pixel within three pixels of the object (a blurred edge reaches that far).
    near = dilate(comp, 3)
    if others is not None and others.any():
        near &= ~dilate(others, 1)
    axis = obj - bg
    alpha = np.clip((img - bg) @ axis / float(axis @ axis), 0.0, 1.0) * near
    area = float(alpha.sum())
    width, height = float(alpha.max(axis=0).sum()), float(alpha.max(axis=1).sum())
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    cy = float((alpha.sum(axis=1) * ys).sum()) / area
    cx = float((alpha.sum(axis=0) * xs).sum()) / area
    row_mass = alpha.sum(axis=1)
    var_y = float((row_mass * (ys - cy) ** 2).sum()) / area
    skew = float((row_mass * (ys - cy) ** 3).sum()) / area / var_y ** 1.5 if var_y > 0 else 0.0
    fill = area / (width * height)

    silhouette = alpha >= 0.5
    if silhouette.sum() < 3:
        return Analysis(False, area_fraction=area_fraction, background=background, colour_distance=d1,
                        reason="the object is too faint to outline")
    errors = {name: _template_error(name, alpha, area, cx, cy) for name in SHAPES}
    ranked = sorted(errors, key=errors.get)
    shape = ranked[0]
    shape_conf = _margin_confidence(errors[ranked[0]], errors[ranked[1]])
    colour_conf = _margin_confidence(d1, d2)
    rows, cols = np.nonzero(silhouette)
    extent = max((cols.max() - cols.min() + 1) / w, (rows.max() - rows.min() + 1) / h)
    return Analysis(True, shape=shape, colour=colour, size="large" if extent >= SIZE_SPLIT else "small",
                    confidence=min(shape_conf, colour_conf), shape_confidence=shape_conf,
                    colour_confidence=colour_conf, colour_distance=d1, fill_ratio=fill, skewness=skew,
                    extent=extent, area_fraction=area_fraction, centre=(cx, cy), background=background)


# --- prompts ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptObject:
    """What a shapes-world prompt asks for; ``None`` where it does not say."""

    shape: str | None
    colour: str | None
    size: str | None


def parse_prompt(prompt: str) -> PromptObject:
    """Read the shape, colour and size words of a caption such as "a large blue square".

    A prompt that names no shape and no colour, or names two of either, raises
    :class:`DataError`.
    """
    words = re.findall(r"[a-z]+", prompt.lower())
    found = {}
    for kind, vocab in (("shape", SHAPES), ("colour", tuple(PALETTE)), ("size", tuple(OBJECT_SIZES))):
        named = sorted({w for w in words if w in vocab})
        if len(named) > 1:
            raise DataError(f"prompt {prompt!r} names more than one {kind}: {', '.join(named)}")
        found[kind] = named[0] if named else None
    if found["shape"] is None and found["colour"] is None:
        raise DataError(f"prompt {prompt!r} names no shape ({', '.join(SHAPES)}) and no colour "
                        f"({', '.join(PALETTE)})")
    return PromptObject(**found)


def t2i_pass(image, prompt: str, value_range: tuple[float, float] = (0.0, 1.0),
             min_confidence: float = 0.0) -> bool:
    """True when the image's dominant object has every attribute the prompt names
    (shape, colour, and size if given) and the analysis is at least ``min_confidence`` sure."""
    want = parse_prompt(prompt)
    got = analyse(image, value_range)
    if not got.found or got.confidence < min_confidence:
        return False
    return all(w is None or w == g for w, g in ((want.shape, got.shape), (want.colour, got.colour),
                                                  (want.size, got.size)))
