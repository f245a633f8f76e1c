"""How far a text encoder tells apart the words an instruction turns on.

::

    python -m taskfold.benchmarks.word_contrast PATH [--json OUT]

``PATH`` is an exported package (encoded through the runtime, no torch) or a text-encoder folder
(``text_encoder/`` of a base or fine-tune, loaded with torch). For each group of words the shapes
world's prompts contrast -- ``move`` (left / right / up / down), ``resize`` (larger / smaller),
``recolour`` (the six colours), ``shape`` (circle / square / triangle) -- every pair of prompts
that differ in that one word is encoded, and the pair's *contrast* is the largest per-token L2
distance between the two encodings divided by their mean token norm: 0 when the encoder gives
both words the same output, about 1 when the outputs are as far apart as unrelated vectors of
that norm. A token-embedding norm in the trained range (what ``taskfold data check`` looks at)
says a word was trained; this says whether the encoder's *output* still separates it from the
word it must be told from -- a UNet cannot follow "left" where the encoder gives "right" the same
vectors. Reported per group: median and least contrast over its pairs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from taskfold.errors import ConfigError, TaskfoldError

GROUPS = ("move", "resize", "recolour", "shape")


def contrast_pairs() -> dict[str, list[tuple[str, str]]]:
    """``{group: [(prompt_a, prompt_b), ...]}``: shapes-world prompts that differ in one word of the group."""
    from taskfold.train.shapes import MOVES, PALETTE, SHAPES

    pairs: dict[str, list[tuple[str, str]]] = {g: [] for g in GROUPS}
    for shape in SHAPES:
        pairs["move"] += [(f"move the {shape} {a}", f"move the {shape} {b}") for a, b in itertools.combinations(MOVES, 2)]
        pairs["resize"].append((f"make the {shape} larger", f"make the {shape} smaller"))
        pairs["recolour"] += [(f"make the {shape} {a}", f"make the {shape} {b}")
                              for a, b in itertools.combinations(PALETTE, 2)]
    for colour in PALETTE:
        pairs["shape"] += [(f"a {colour} {a}", f"a {colour} {b}") for a, b in itertools.combinations(SHAPES, 2)]
    return pairs


def pair_contrast(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-token L2 distance of two ``[L, D]`` encodings over their mean token norm."""
    if a.shape != b.shape or a.ndim != 2:
        raise ConfigError(f"encodings must be two [L, D] arrays of one shape, got {a.shape} and {b.shape}")
    scale = float(np.concatenate([np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)]).mean())
    return float(np.linalg.norm(a - b, axis=-1).max()) / scale if scale > 0 else 0.0


def word_contrast(encode) -> dict:
    """``{group: {"median", "min", "pairs"}}`` for ``encode(prompts) -> [B, L, D]`` (see the module docstring)."""
    out = {}
    for group, pairs in contrast_pairs().items():
        enc = np.asarray(encode([p for pair in pairs for p in pair]), dtype=np.float64)
        values = [pair_contrast(enc[2 * i], enc[2 * i + 1]) for i in range(len(pairs))]
        out[group] = {"median": float(np.median(values)), "min": float(np.min(values)), "pairs": len(values)}
    return out


def encoder_for(path: str | Path):
    """``encode(prompts)`` for a package folder (``manifest.json``: the runtime) or a text-encoder folder (torch)."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        from taskfold.runtime import open_package

        return open_package(path).encode_text
    if (path / "config.json").is_file():
        import torch

        from taskfold.upcycle.text_encoders import load_text_encoder

        te = load_text_encoder(path).eval()

        def encode(prompts):
            with torch.no_grad():
                return te.encode(prompts).numpy()
        return encode
    raise ConfigError(f"{str(path)!r} is neither a package (manifest.json) nor a text-encoder folder (config.json)")


def format_table(result: dict) -> str:
    lines = ["| group | pairs | median contrast | least |", "|---|---:|---:|---:|"]
    lines += [f"| {g} | {r['pairs']} | {r['median']:.3f} | {r['min']:.3f} |" for g, r in result.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taskfold.benchmarks.word_contrast", description=__doc__.split("\n")[0])
    parser.add_argument("path", help="an exported package or a text_encoder/ folder")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    try:
        result = word_contrast(encoder_for(args.path))
    except TaskfoldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        from taskfold._io import write_json_atomic

        write_json_atomic(args.json, {"path": str(args.path), "groups": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
