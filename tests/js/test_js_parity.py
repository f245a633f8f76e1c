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


def test_node_opens_a_dynamic_package_with_a_vae(node, images, tmp_path):
    """A --dynamic export names the VAE's pixel axes height/width and its latent axes latent_*: the JS reader
    sizes them as the Python reader does (it refused the package before), and the images agree."""
    from taskfold.runtime import open_package

    from .conftest import sd_pipeline_package

    pkg_dir = sd_pipeline_package(tmp_path, "t2i,edit", "--dynamic")
    cases = [{"id": f"dyn-{task}", "package": str(pkg_dir), "task": task,
              "options": {"prompt": "a red circle", "steps": 2, "seed": 3,
                          **({"image": str(images["cond64"]), "strength": 0.75} if task == "edit" else {})}}
             for task in ("t2i", "edit")]
    pkg = open_package(pkg_dir)
    py = {c["id"]: pkg.generate(c["task"], "a red circle", image=c["options"].get("image"), steps=2, seed=3,
                                strength=c["options"].get("strength")) for c in cases}
    (tmp_path / "cases.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/run_cases.mjs", str(tmp_path / "cases.json"), str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr[-2000:]
    rows = compare(cases, py, tmp_path / "out")
    assert failures(rows) == [], report("dynamic package", rows)
