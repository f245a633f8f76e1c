"""The shapes world: a generated multi-task dataset the project can train and evaluate on offline.

Every image is one coloured shape (circle, square or upward triangle; small or large;
one of :data:`PALETTE`) on a plain or lightly textured neutral background
(:data:`BACKGROUNDS`); object-removal inputs carry a second, small shape. Per task:

=============  ======================================================================
t2i            target: the scene; prompt: its caption ("a red circle", "a large blue square")
edit           condition: the scene; target: the scene after the instruction
               ("make the circle blue", "move the square left", "make the triangle larger")
sr             target: the scene; condition: Gaussian blur, 2x downscale, Poisson noise
               (the paper's degradation, MTU appendix A.2); empty prompt
inpaint        condition: the scene plus an extra object; target: the scene;
               prompt "remove the green square" (object removal, as in the paper)
inpaint-mask   target: the scene; mask: a box around the object; condition: the scene
               with the box filled with grey; prompt: the caption
=============  ======================================================================

Each row also records the target's ``object`` (shape, colour, size, centre), and edit
rows the ``source`` object, so generated images can be checked with
:mod:`taskfold.train.analyser`. Row ``i`` of a task is drawn from its own random stream
seeded by ``(seed, task, i)``: the same seed writes byte-identical files, and a task's
rows do not depend on which other tasks are generated. The last ``int(n * test_fraction)``
rows of each task form the ``test`` split.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from taskfold._io import atomic_output_dir
from taskfold.errors import ConfigError

from .data import METADATA, resolve_data_tasks
from .metrics import gaussian_window

FORMAT = "taskfold-shapes"
FORMAT_VERSION = 1

SHAPES = ("circle", "square", "triangle")
#: Object colours (sRGB), chosen far apart: the closest pair (blue, purple) is 106 apart.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (140, 60, 190),
    "cyan": (40, 200, 210),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 232),
    "light grey": (180, 180, 180),
    "dark grey": (55, 55, 60),
}
#: Half extent of an object as a fraction of the image side.
OBJECT_SIZES: dict[str, float] = {"small": 0.16, "large": 0.28}
MASK_FILL = (128, 128, 128)
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOVE_FRACTION = 0.22  # how far "move" shifts an object, as a fraction of the image side
SUPERSAMPLE = 4  # coverage samples per pixel side (anti-aliased edges)
MARGIN = 1.0  # pixels kept free at the border, so the border shows the background


@dataclass(frozen=True)
class ShapeObject:
    """One object: what it is and where its centre lies (pixels, x right, y down)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float

    def half_extent(self, image_size: int) -> float:
        return OBJECT_SIZES[self.size] * image_size

    def caption(self, with_size: bool) -> str:
        return f"a {self.size} {self.colour} {self.shape}" if with_size else f"a {self.colour} {self.shape}"

    def to_dict(self) -> dict:
        return asdict(self) | {"x": round(self.x, 3), "y": round(self.y, 3)}


# --- drawing -------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _sample_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample coordinates, ``SUPERSAMPLE`` per pixel side, pixel i covering [i, i+1)."""
    t = (np.arange(size * SUPERSAMPLE, dtype=np.float64) + 0.5) / SUPERSAMPLE
    return t[None, :], t[:, None]


def coverage(obj: ShapeObject, size: int) -> np.ndarray:
    """Fraction of each pixel covered by ``obj``: float array ``(size, size)`` in [0, 1]."""
    px, py = _sample_grid(size)
    r = obj.half_extent(size)
    dx, dy = px - obj.x, py - obj.y
    if obj.shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif obj.shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif obj.shape == "triangle":  # apex (x, y - r), base from (x - r, y + r) to (x + r, y + r)
        inside = (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    else:
        raise ConfigError(f"unknown shape {obj.shape!r}; known shapes: {', '.join(SHAPES)}")
    s = SUPERSAMPLE
    return inside.reshape(size, s, size, s).mean(axis=(1, 3))


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A neutral background, float ``(size, size, 3)``: plain, or a faint gradient with light noise."""
    base = np.array(list(BACKGROUNDS.values())[rng.integers(len(BACKGROUNDS))], dtype=np.float64)
    image = np.broadcast_to(base, (size, size, 3)).copy()
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * math.pi)
        amplitude = rng.uniform(4, 12)
        t = np.arange(size, dtype=np.float64) / max(size - 1, 1) - 0.5
        ramp = math.cos(angle) * t[None, :] + math.sin(angle) * t[:, None]
        image += amplitude * ramp[:, :, None] + rng.normal(0, 2.0, size=(size, size, 1))
    return image


def render(bg: np.ndarray, objects: list[ShapeObject]) -> np.ndarray:
    """Draw ``objects`` in order over the float background; return uint8 ``(H, W, 3)``."""
    image = bg.copy()
    for obj in objects:
        alpha = coverage(obj, bg.shape[0])[:, :, None]
        image = image * (1 - alpha) + np.array(PALETTE[obj.colour], dtype=np.float64) * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float ``(H, W, C)`` image, edges reflected."""
    radius = max(1, math.ceil(3 * sigma))
    w = gaussian_window(sigma, radius)
    h, wd = image.shape[:2]
    p = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(w[i] * p[i:i + h] for i in range(len(w)))
    return sum(w[j] * rows[:, j:j + wd] for j in range(len(w)))


def degrade_for_sr(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low-resolution input for 2x super-resolution: Gaussian blur (sigma 0.3-1.0), 2x2
    area downscale, then mild Poisson noise (photon count 500-5000 at full scale), as in the
    paper's appendix A.2 ("Poisson and Gaussian blur and downscaling them by half")."""
    h, w = image.shape[:2]
    x = gaussian_blur(image.astype(np.float64) / 255.0, rng.uniform(0.3, 1.0))
    x = x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    peak = math.exp(rng.uniform(math.log(500), math.log(5000)))
    x = rng.poisson(np.clip(x, 0, 1) * peak) / peak
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


# --- sampling objects ----------------------------------------------------------------------

def _pick(rng: np.random.Generator, options, exclude=()) -> str:
    options = [o for o in options if o not in exclude]
    return options[int(rng.integers(len(options)))]


def _centre_range(r: float, size: int, shift: float = 0.0) -> tuple[float, float]:
    """Range of centre coordinates keeping an object of half extent ``r`` inside the margin,
    also after a move of ``shift`` pixels in the positive direction."""
    return r + MARGIN, size - r - MARGIN - shift


def random_object(rng: np.random.Generator, size: int, shape=None, colour=None, obj_size=None,
                  move: tuple[int, int] = (0, 0), shift: float = 0.0) -> ShapeObject:
    """A random object that fits the image (and still fits after ``move`` by ``shift`` pixels)."""
    shape = shape or _pick(rng, SHAPES)
    colour = colour or _pick(rng, PALETTE)
    obj_size = obj_size or _pick(rng, OBJECT_SIZES)
    r = OBJECT_SIZES[obj_size] * size
    centre = []
    for d in move:
        lo, hi = _centre_range(r, size, shift * abs(d))
        c = rng.uniform(lo, hi)
        centre.append(c + shift if d < 0 else c)  # a move left starts further right
    return ShapeObject(shape, colour, obj_size, centre[0], centre[1])


def _apart(a: ShapeObject, b: ShapeObject, size: int, gap: float = 1.0) -> bool:
    """Bounding boxes of ``a`` and ``b`` are at least ``gap`` pixels apart on some axis."""
    reach = a.half_extent(size) + b.half_extent(size) + gap
    return abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach


# --- one row per task ------------------------------------------------------------------------

def _row_t2i(rng, size):
    bg, obj = background(rng, size), random_object(rng, size)
    return obj.caption(rng.random() < 0.5), {"target": render(bg, [obj])}, {"object": obj.to_dict()}


def _row_edit(rng, size):
    bg = background(rng, size)
    kind = _pick(rng, ("colour", "move", "size"))
    if kind == "colour":
        src = random_object(rng, size)
        new = _pick(rng, PALETTE, exclude=(src.colour,))
        dst, prompt = replace(src, colour=new), f"make the {src.shape} {new}"
    elif kind == "move":
        direction = _pick(rng, MOVES)
        dx, dy = MOVES[direction]
        shift = round(MOVE_FRACTION * size)
        src = random_object(rng, size, move=(dx, dy), shift=shift)
        dst, prompt = replace(src, x=src.x + dx * shift, y=src.y + dy * shift), f"move the {src.shape} {direction}"
    else:  # resize about the centre; the centre is drawn so that the large version fits
        src = random_object(rng, size, obj_size="large")
        src = replace(src, size=_pick(rng, OBJECT_SIZES))
        new = "large" if src.size == "small" else "small"
        dst, prompt = replace(src, size=new), f"make the {src.shape} {'larger' if new == 'large' else 'smaller'}"
    images = {"target": render(bg, [dst]), "condition": render(bg, [src])}
    return prompt, images, {"object": dst.to_dict(), "source": src.to_dict(), "edit": kind}


def _row_sr(rng, size):
    bg, obj = background(rng, size), random_object(rng, size)
    target = render(bg, [obj])
    return "", {"target": target, "condition": degrade_for_sr(target, rng)}, {"object": obj.to_dict()}


def _row_inpaint(rng, size):
    bg = background(rng, size)
    obj = random_object(rng, size)
    for attempt in range(1, 1001):
        shape = _pick(rng, SHAPES)
        colour = _pick(rng, PALETTE, exclude=(obj.colour,) if shape == obj.shape else ())
        extra = random_object(rng, size, shape=shape, colour=colour, obj_size="small")
        if _apart(obj, extra, size):
            break
        if attempt % 10 == 0:  # nothing fits beside it here: move it, and after 100 tries make it small
            moved = random_object(rng, size, obj_size="small" if attempt >= 100 else obj.size)
            obj = replace(moved, shape=obj.shape, colour=obj.colour)
    else:  # pragma: no cover - two small objects fit side by side from 16 px up
        raise ConfigError(f"could not place two objects in a {size}x{size} image")
    images = {"target": render(bg, [obj]), "condition": render(bg, [obj, extra])}
    return f"remove the {extra.colour} {extra.shape}", images, {"object": obj.to_dict(), "removed": extra.to_dict()}


def _row_inpaint_mask(rng, size):
    bg, obj = background(rng, size), random_object(rng, size)
    target = render(bg, [obj])
    r = obj.half_extent(size)
    pad = rng.uniform(1, max(1.0, size / 16), size=4)
    x0, y0 = max(0, math.floor(obj.x - r - pad[0])), max(0, math.floor(obj.y - r - pad[1]))
    x1, y1 = min(size, math.ceil(obj.x + r + pad[2])), min(size, math.ceil(obj.y + r + pad[3]))
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 255
    condition = target.copy()
    condition[mask > 0] = MASK_FILL
    images = {"target": target, "condition": condition, "mask": mask}
    return obj.caption(rng.random() < 0.5), images, {"object": obj.to_dict()}


# --- rich t2i captions: a base whose text encoder learns every task word ------------------------

#: Caption kinds of ``captions="rich"`` t2i rows and their shares. The plain caption of the t2i rows
#: stays half of them; the rest puts every word of the other tasks' prompts (make, the, move, left,
#: right, up, down, larger, smaller, remove) in captions whose image shows what the word means.
RICH_CAPTIONS: dict[str, float] = {
    "plain": 0.50,     # "a red circle", "a large red circle"
    "position": 0.10,  # "a red circle up left": the centre in that part of the image
    "relation": 0.10,  # "a red circle left of a blue square", "... up from ...": boxes apart on that axis
    "pair": 0.05,      # "a red circle and a small blue square"
    "compare": 0.05,   # "the red circle is larger than the blue square"
    "recolour": 0.05,  # "make the circle blue" -> a blue circle (the instruction's result)
    "move": 0.05,      # "move the (red) circle left" -> a (red) circle in the left part
    "resize": 0.05,    # "make the (red) circle larger" -> a large (red) circle
    "remove": 0.05,    # "(a red circle and a blue square ,) remove the blue square" -> without it
}
CAPTION_STYLES = ("plain", "rich")
#: A position word holds when the object's centre lies in the outer ``REGION`` of the image on its side
#: ("left": x < 0.42 side), as a move's result mostly does.
REGION = 0.42
RELATIONS = {("x", -1): "left of", ("x", 1): "right of", ("y", -1): "up from", ("y", 1): "down from"}


def _in_region(rng, r: float, size: int, direction: int) -> float:
    """A centre coordinate for an object of half extent ``r``: in the low (-1) or high (+1) part of the image,
    anywhere (0)."""
    lo, hi = _centre_range(r, size)
    if direction < 0:
        hi = min(hi, REGION * size)
    elif direction > 0:
        lo = max(lo, (1 - REGION) * size)
    return rng.uniform(lo, hi)


def _placed(rng, size: int, shape=None, colour=None, obj_size=None, dx: int = 0, dy: int = 0) -> ShapeObject:
    """A random object whose centre lies in the part of the image ``(dx, dy)`` names (0: anywhere on that axis)."""
    obj = random_object(rng, size, shape=shape, colour=colour, obj_size=obj_size)
    r = obj.half_extent(size)
    return replace(obj, x=_in_region(rng, r, size, dx), y=_in_region(rng, r, size, dy))


def _pair_fits(size: int, sizes: tuple[str, str]) -> bool:
    """Whether objects of ``sizes`` can stand apart (``_apart``) on one axis of a ``size`` image."""
    (lo_a, hi_a), (lo_b, hi_b) = (_centre_range(OBJECT_SIZES[s] * size, size) for s in sizes)
    reach = (OBJECT_SIZES[sizes[0]] + OBJECT_SIZES[sizes[1]]) * size + 1.0
    return max(hi_b - lo_a, hi_a - lo_b) >= reach


def _pair_sizes(rng, size: int, different: bool = False) -> tuple[str, str]:
    """Sizes of two objects that fit apart: one large and one small when ``different``, else at most one
    large (two large never fit side by side); both small where a large one does not fit."""
    if different:
        return ("large", "small") if rng.random() < 0.5 else ("small", "large")
    sizes = (_pick(rng, OBJECT_SIZES), _pick(rng, OBJECT_SIZES))
    if sizes == ("large", "large"):
        sizes = ("large", "small") if rng.random() < 0.5 else ("small", "large")
    return sizes if _pair_fits(size, sizes) else ("small", "small")


def _two_objects(rng, size: int, sizes: tuple[str, str]) -> tuple[ShapeObject, ShapeObject, str, int]:
    """Two objects of ``sizes`` with different (shape, colour), boxes apart along one axis:
    ``(a, b, axis, sign)`` where ``sign`` is -1 when ``a`` lies before ``b`` on that axis (left of, up from)."""
    a = random_object(rng, size, obj_size=sizes[0])
    shape = _pick(rng, SHAPES)
    colour = _pick(rng, PALETTE, exclude=(a.colour,) if shape == a.shape else ())
    b = random_object(rng, size, shape=shape, colour=colour, obj_size=sizes[1])
    ra, rb = a.half_extent(size), b.half_extent(size)
    (lo_a, hi_a), (lo_b, hi_b) = _centre_range(ra, size), _centre_range(rb, size)
    reach = ra + rb + 1.0
    axis = "x" if rng.random() < 0.5 else "y"
    for _ in range(10000):
        ca = rng.uniform(lo_a, hi_a)
        spans = [(lo, hi) for lo, hi in ((lo_b, min(hi_b, ca - reach)), (max(lo_b, ca + reach), hi_b)) if hi >= lo]
        if spans:
            lo, hi = spans[int(rng.integers(len(spans)))]
            cb = rng.uniform(lo, hi)
            break
    else:  # pragma: no cover - _pair_sizes only asks for pairs that fit
        raise ConfigError(f"could not place a {sizes[0]} and a {sizes[1]} object apart in a {size}x{size} image")
    a, b = (replace(a, **{axis: ca}), replace(b, **{axis: cb}))
    return a, b, axis, -1 if ca < cb else 1


def _name(obj: ShapeObject, with_size: bool = False) -> str:
    return f"{obj.size} {obj.colour} {obj.shape}" if with_size else f"{obj.colour} {obj.shape}"


def _row_t2i_rich(rng, size):
    """A t2i row with a caption of one of the :data:`RICH_CAPTIONS` kinds (drawn by their shares)."""
    kinds = list(RICH_CAPTIONS)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(list(RICH_CAPTIONS.values())) / sum(RICH_CAPTIONS.values())))]
    bg = background(rng, size)
    with_size = rng.random() < 0.5
    if kind == "compare" and not _pair_fits(size, ("large", "small")):
        kind = "pair"  # a large and a small object do not fit apart at this image size
    if kind == "plain":
        objects = [random_object(rng, size)]
        caption = objects[0].caption(with_size)
    elif kind == "position":
        dx, dy = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, -1), (-1, 1), (1, 1))[int(rng.integers(8))]
        objects = [_placed(rng, size, dx=dx, dy=dy)]
        words = ([("up", "down")[dy > 0]] if dy else []) + ([("left", "right")[dx > 0]] if dx else [])
        caption = " ".join([objects[0].caption(with_size), *words])
    elif kind in ("relation", "pair", "compare"):
        sizes = _pair_sizes(rng, size, different=kind == "compare")
        a, b, axis, sign = _two_objects(rng, size, sizes)
        objects = [a, b]
        if kind == "relation":
            caption = f"{a.caption(with_size)} {RELATIONS[axis, sign]} {b.caption(with_size)}"
        elif kind == "pair":
            caption = f"{a.caption(rng.random() < 0.5)} and {b.caption(rng.random() < 0.5)}"
        else:
            caption = f"the {_name(a)} is {'larger' if a.size == 'large' else 'smaller'} than the {_name(b)}"
    elif kind == "recolour":  # the edit prompt's words; the image is its result
        objects = [random_object(rng, size)]
        caption = f"make the {objects[0].shape} {objects[0].colour}"
    elif kind == "move":
        direction = _pick(rng, MOVES)
        objects = [_placed(rng, size, dx=MOVES[direction][0], dy=MOVES[direction][1])]
        caption = f"move the {_name(objects[0]) if with_size else objects[0].shape} {direction}"
    elif kind == "resize":
        objects = [random_object(rng, size)]
        word = "larger" if objects[0].size == "large" else "smaller"
        caption = f"make the {_name(objects[0]) if with_size else objects[0].shape} {word}"
    else:  # remove: with the two-object scene named first, or alone; the image never shows the removed object
        a, b, _, _ = _two_objects(rng, size, _pair_sizes(rng, size))
        objects = [a]
        caption = f"remove the {_name(b)}"
        if rng.random() < 0.5:
            caption = f"{a.caption(False)} and {b.caption(False)} , {caption}"
    extra = {"caption": kind, "objects": [o.to_dict() for o in objects]}
    if len(objects) == 1:
        extra["object"] = objects[0].to_dict()
    return caption, {"target": render(bg, objects)}, extra


_ROW_MAKERS = {"t2i": _row_t2i, "edit": _row_edit, "sr": _row_sr, "inpaint": _row_inpaint,
               "inpaint-mask": _row_inpaint_mask}
ALL_TASKS = tuple(_ROW_MAKERS)


def make_row(task: str, seed: int, index: int, size: int,
             captions: str = "plain") -> tuple[str, dict[str, np.ndarray], dict]:
    """Row ``index`` of ``task``: ``(prompt, {"target"/"condition"/"mask": uint8 array}, extra columns)``.

    Drawn from the random stream seeded by ``(seed, task, index)``, so it is the same
    whatever else is generated. ``captions="rich"`` draws t2i rows with :data:`RICH_CAPTIONS`
    (other tasks are the same either way).
    """
    if captions not in CAPTION_STYLES:
        raise ConfigError(f"--captions must be one of {', '.join(CAPTION_STYLES)}, got {captions!r}")
    rng = np.random.default_rng([seed, ALL_TASKS.index(task), index])
    return (_row_t2i_rich if task == "t2i" and captions == "rich" else _ROW_MAKERS[task])(rng, size)


# --- the dataset ---------------------------------------------------------------------------

def _check_args(n: int, size: int, seed: int, test_fraction: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive number of rows per task, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size > 1024 or size % 2:
        raise ConfigError(f"--size must be an even number of pixels from 16 to 1024, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be in [0, 1), got {test_fraction!r}")


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def make_shapes(out_dir: str | Path, n: int, size: int = 32, seed: int = 0, tasks=ALL_TASKS,
                test_fraction: float = 0.1, overwrite: bool = False, captions: str = "plain") -> dict:
    """Write ``n`` rows per task of the shapes world to ``out_dir`` and return its description.

    ``out_dir`` receives ``metadata.jsonl`` (the format of :mod:`taskfold.train.data`),
    one folder of PNGs per task, and ``shapes.json`` with the arguments and palette. The
    folder appears whole or not at all (written beside it and renamed); an existing
    non-empty folder is replaced only with ``overwrite``. ``captions="rich"`` gives the t2i rows the
    captions a base is pretrained on (:data:`RICH_CAPTIONS`).
    """
    tasks = tuple(t.name for t in resolve_data_tasks(tasks))  # the built-in tasks: what the shapes world draws
    _check_args(n, size, seed, test_fraction)
    if captions not in CAPTION_STYLES:
        raise ConfigError(f"--captions must be one of {', '.join(CAPTION_STYLES)}, got {captions!r}")
    n_test = int(n * test_fraction)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        lines = []
        for task in tasks:
            (tmp / task).mkdir()
            for i in range(n):
                prompt, images, extra = make_row(task, seed, i, size, captions)
                row = {"task": task, "split": "test" if i >= n - n_test else "train", "prompt": prompt}
                for column in ("target", "condition", "mask"):
                    if column in images:
                        rel = f"{task}/{i:05d}_{column}.png"
                        _save_png(images[column], tmp / rel)
                        row[column] = rel
                lines.append(json.dumps(row | extra))
        (tmp / METADATA).write_text("\n".join(lines) + "\n", encoding="utf-8")
        info = {"format": FORMAT, "version": FORMAT_VERSION, "seed": seed, "n": n, "size": size,
                "tasks": list(tasks), "captions": captions, "test_fraction": test_fraction,
                "test_rows_per_task": n_test,
                "rows": len(lines), "shapes": list(SHAPES), "palette": PALETTE, "backgrounds": BACKGROUNDS,
                "object_sizes": OBJECT_SIZES}
        (tmp / "shapes.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def shapes_world_prompts() -> list[str]:
    """Every prompt the shapes world (:mod:`.shapes`) can write, in a fixed order: a vocabulary that
    covers any shapes dataset, however few rows it has."""
    out = [""]
    for shape in SHAPES:
        for colour in PALETTE:
            out += [f"a {colour} {shape}", *(f"a {size} {colour} {shape}" for size in OBJECT_SIZES),
                    f"make the {shape} {colour}", f"remove the {colour} {shape}"]
        out += [f"move the {shape} {d}" for d in MOVES] + [f"make the {shape} larger", f"make the {shape} smaller"]
    return out
