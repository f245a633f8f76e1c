"""The latency chart's labels sit past their whiskers (they overlapped them; the demo page's notes on its
columns are checked in tests/demo/test_demo.py)."""

from __future__ import annotations

import matplotlib

from taskfold.benchmarks.report import plot_latency


def _row(name, role, median, p10, p90, ref="base"):
    return {"name": name, "role": role, "engine": "onnxruntime cpu", "reference": ref,
            "latency_s": {"median": median, "p10": p10, "p90": p90}, "ratio_to_reference": {"median": median / 0.01}}


def test_latency_labels_start_past_the_whisker(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    placed = []
    real = Axes.text
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, **k: placed.append((x, s)) or real(self, x, y, s, **k))
    rows = [_row("base", "base", 0.010, 0.008, 0.014), _row("t2i", "folded", 0.011, 0.009, 0.020)]
    report = {"rows": rows, "source": {"kind": "preset", "preset": "tiny"}, "machine": {"cores": 2},
              "shapes": {"image_height": 32, "image_width": 32, "batch": 1}}
    plot_latency(report, tmp_path / "lat.png")
    ends = sorted(r["latency_s"]["p90"] * 1e3 for r in rows)
    got = sorted(x for x, s in placed if " ms" in s)
    assert got == ends  # each label starts at its p90 whisker's end (14 ms, 20 ms), not at the median
    assert (tmp_path / "lat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

