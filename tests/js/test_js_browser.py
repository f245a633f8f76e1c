"""Same seed, same image in a browser: headless Chromium (Debian's) running the JavaScript runtime on
onnxruntime-web's WASM backend, each package fetched from 127.0.0.1 by URL (cross-origin isolated), against
the Python runtime: every task x scheduler of both packages within 1/255, and the adapters layout."""

from __future__ import annotations

import json

from ._parity import TOLERANCE, cases_for, compare, failures, python_images, report
from .conftest import run_node


def test_chromium_wasm_images_equal_the_python_runtimes(chromium, parity_cases, tiny_mtu_adapters_package, images,
                                                         tmp_path):
    cases, py = parity_cases
    # the adapters layout too (one shared graph, task tensors from safetensors files): each task, two schedulers
    adapters = [c for c in cases_for("adapters", tiny_mtu_adapters_package, images, steps=4)
                if c["options"].get("scheduler") in ("ddim", "dpmpp-2m-karras")]
    cases, py = cases + adapters, {**py, **python_images(adapters)}
    (tmp_path / "cases.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/run_cases_browser.mjs", str(tmp_path / "cases.json"), str(tmp_path / "out"), "wasm"],
                    timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    browser = json.loads((tmp_path / "out" / "results.json").read_text())["_browser"]
    assert browser["isolated"] is True  # COOP/COEP: WebAssembly threads are available
    rows = compare(cases, py, tmp_path / "out")
    print(report(f"Chromium {browser['version']} (onnxruntime-web, WASM) vs Python runtime", rows))
    assert failures(rows) == [], report("failures", [r for r in rows if r["id"] in failures(rows)])
    assert max(r["float"] for r in rows) <= TOLERANCE
