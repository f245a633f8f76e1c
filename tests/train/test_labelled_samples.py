"""The analyser agrees with a person on images models generated (``data/labelled/``).

Each PNG there is a sample a model of this project drew (``base-*``: the bundled tiny base's
t2i samples at guidance 2, 3 and 5; ``mtu-edit-*``, ``mtu-inpaint-*``: outputs of the bundled
fine-tuned model's ``edit`` and ``inpaint`` in the demo; ``mtu-t2i-v2-*``, ``mtu-edit-v2-*``: a
second batch of 96 from the bundled fine-tune, its ``t2i`` at guidance 3 and its ``edit`` with
the package's sampling on test rows 0-47 of a seed-5 shapes dataset, added later with their
number fixed before any was drawn), labelled by eye from an enlarged contact sheet, without the
prompts, before the analyser was run on them: ``shape`` and ``colour`` for one clear object, ``multi`` for two or
more objects, ``unclear`` where a person cannot name one shape and colour (a blob, a mixed colour,
a malformed shape, a faint second object) — those are left out. ``labels.json`` holds the labels.

Measured: the first batch 76 of its 78 judged images (0.974), the second 84 of 85 (0.988),
together 160 of 163 (0.982). The three misses are real limits of the analyser, kept in the set:
``mtu-edit-02`` is a dark olive yellow, (171, 172, 42), 72 from the palette's yellow where the
analyser accepts at most 70, and ``base-t2i-43`` (wider than tall) and ``mtu-t2i-v2-15`` (taller
than wide) are rectangles, which it reads as circles. The bounds below are those measurements.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from taskfold.train.analyser import analyse, analyse_all

HERE = Path(__file__).parent / "data" / "labelled"


def _agrees(image: np.ndarray, label: dict) -> bool:
    objects = analyse_all(image)
    if label.get("label") == "multi":
        return len(objects) >= 2
    a = analyse(image)
    return len(objects) == 1 and a.found and (a.shape, a.colour) == (label["shape"], label["colour"])


def test_the_analyser_names_shape_and_colour_of_labelled_generated_samples():
    labels = json.loads((HERE / "labels.json").read_text())
    assert sorted(labels) == sorted(p.name for p in HERE.glob("*.png")), "every PNG has a label and no label dangles"
    judged = {name: lab for name, lab in labels.items() if lab.get("label") != "unclear"}
    assert len(judged) == 163, len(judged)
    misses = [name for name, lab in judged.items()
              if not _agrees(np.asarray(Image.open(HERE / name).convert("RGB"), dtype=np.float32) / 255, lab)]
    agreement = 1 - len(misses) / len(judged)
    assert agreement >= 0.98, (f"{agreement:.3f}", misses)
    assert set(misses) <= {"mtu-edit-02.png", "base-t2i-43.png", "mtu-t2i-v2-15.png"}, misses
