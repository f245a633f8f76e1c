"""The demo page's live panel (taskfold/demo_live.py), served by ``taskfold serve``'s server and driven in
headless Chromium as a reader would (task, prompt, image file, seed -> Generate): the image on its canvas
equals the Python runtime's for that seed."""

from __future__ import annotations

import json
import shutil

import numpy as np

from taskfold.demo_live import live_panel
from taskfold.runtime import open_package
from taskfold.runtime.serve import serve_in_thread

from ._parity import to_uint8
from .conftest import run_node


def test_the_live_panel_draws_the_python_runtimes_image(chromium, tiny_mtu_package, images, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(tiny_mtu_package, site / "package")
    manifest = json.loads((site / "package" / "manifest.json").read_text())
    (site / "index.html").write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                                     + live_panel(manifest) + "</body></html>")
    runs = [{"id": "t2i", "task": "t2i", "prompt": "a red circle", "seed": 3, "scheduler": "ddim", "steps": 6},
            {"id": "edit", "task": "edit", "prompt": "make the circle blue", "seed": 5, "scheduler": "euler-a",
             "steps": 5, "image": str(images["cond32"])},
            {"id": "sr", "task": "sr", "prompt": "", "seed": 1, "scheduler": "dpmpp-2m", "image": str(images["cond16"])}]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    server, url = serve_in_thread(site, quiet=True)
    try:
        done = run_node(["tools/drive_live_panel.mjs", url, str(tmp_path / "out"), str(tmp_path / "runs.json")],
                        timeout=600)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["_page"]["isolated"] is True, results["_page"]
    pkg = open_package(tiny_mtu_package)
    for r in runs:
        got = results[r["id"]]
        assert got["error"] is None, (r["id"], got, results["_page"])
        rgba = np.fromfile(tmp_path / "out" / f"{r['id']}.rgba", np.uint8).reshape(got["height"], got["width"], 4)
        want = to_uint8(pkg.generate(r["task"], r["prompt"], image=r.get("image"), seed=r["seed"],
                                     scheduler=r["scheduler"], steps=r.get("steps")))[0]
        diff = int(np.abs(rgba[..., :3].astype(int) - want.astype(int)).max())
        print(f"live panel {r['id']}: max difference {diff}/255 against the Python runtime ({got['status']})")
        assert diff <= 1 and (rgba[..., 3] == 255).all()
