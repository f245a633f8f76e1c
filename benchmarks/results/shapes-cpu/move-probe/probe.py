"""Four-direction probe of a package's `edit` (models/tiny-mtu/README.md, stages 9-11).

    python benchmarks/results/shapes-cpu/move-probe/probe.py PKG VAL_DATA [STRENGTH]

The first 12 test `move` rows of a shapes dataset; each source image is asked "move the <shape> <d>" for
all four directions at the package's sampling (seed 0). For each direction: how many outputs show an
object (analyser), and where it went relative to the source centre: along the asked direction (7 px is
one move at 32 px) and across it.
"""
import json
import sys
from pathlib import Path

import numpy as np

from taskfold.runtime import open_package
from taskfold.train.analyser import analyse
from taskfold.train.metrics import move_displacement
from taskfold.train.shapes import MOVES

pkg, root = open_package(sys.argv[1]), Path(sys.argv[2])
kw = {"strength": float(sys.argv[3])} if len(sys.argv) > 3 else {}
rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
rows = [r for r in rows if r["task"] == "edit" and r["split"] == "test" and r["edit"] == "move"][:12]
for d in MOVES:
    along, across, found = [], [], 0
    for r in rows:
        src = r["source"]
        img = pkg.generate("edit", f"move the {src['shape']} {d}", image=str(root / r["condition"]), seed=0, **kw)[0]
        a = analyse(img.transpose(1, 2, 0), (-1, 1))  # the runtime gives [3, H, W] in [-1, 1]
        if a.found:
            found += 1
            on, off = move_displacement(a.centre, src, d)
            along.append(on)
            across.append(off)
    along = np.array(along)
    print(f"{d:5s} found {found}/{len(rows)}  along: median {np.median(along):.1f} mean {along.mean():.1f} px "
          f"(7 asked), >= 3.5 px in {(along >= 3.5).sum()}  across: median {np.median(across):.1f} px")
