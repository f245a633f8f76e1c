"""WebGPU where present: headless Chromium's WebGPU (SwiftShader, a software adapter, on machines without a
GPU) runs the JS runtime on onnxruntime-web's WebGPU execution provider; its images equal the Python
runtime's within 1/255. Slow on a software adapter (minutes), so marked ``slow`` (``make test-slow``)."""

from __future__ import annotations

import json

import pytest

from ._parity import compare, failures, report
from .conftest import run_node


@pytest.mark.slow
def test_chromium_webgpu_images_equal_the_python_runtimes(chromium, parity_cases, tmp_path):
    cases, py = parity_cases
    chosen = [c for c in cases if c["options"].get("scheduler") == "ddim" and c["id"].startswith("sd-")]
    chosen += [c for c in cases if c["id"] == "tiny-t2i-ddim"]
    (tmp_path / "cases.json").write_text(json.dumps({"cases": chosen}))
    done = run_node(["tools/run_cases_browser.mjs", str(tmp_path / "cases.json"), str(tmp_path / "out"), "webgpu"],
                    timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    browser = json.loads((tmp_path / "out" / "results.json").read_text())["_browser"]
    if not browser["gpu"]:
        pytest.skip("this Chromium offers no WebGPU adapter")
    rows = compare(chosen, py, tmp_path / "out")
    print(report(f"Chromium {browser['version']} WebGPU ({browser['gpu']}) vs Python runtime", rows))
    assert failures(rows) == []
