"""Same seed, same image: the JavaScript runtime (Node here; Chromium in test_js_browser.py) against the
Python runtime, every task of ``models/tiny-mtu`` and of an SD-layout package (CLIP BPE, VAE, 64 px),
every scheduler, within 1/255 (max abs)."""

from __future__ import annotations

import json

from ._parity import TOLERANCE, compare, failures, report
from .conftest import run_node


def test_node_images_equal_the_python_runtimes(node, parity_cases, tmp_path):
    cases, py = parity_cases
    (tmp_path / "cases.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/run_cases.mjs", str(tmp_path / "cases.json"), str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr[-2000:]
    rows = compare(cases, py, tmp_path / "out")
    print(report("Node (onnxruntime-node) vs Python runtime", rows))
    assert len(rows) == len(cases) and len({c["task"] for c in cases}) >= 5
    assert failures(rows) == [], report("failures", [r for r in rows if r["id"] in failures(rows)])
    assert max(r["float"] for r in rows) <= TOLERANCE
