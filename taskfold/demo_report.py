"""``taskfold report DIR``: the demo's page, ``index.html`` and ``report.md``, from what its stages wrote.

Reads, all under ``DIR``: ``stages.json`` (the commands that ran), ``train/log.jsonl`` (loss
per task), ``package/manifest.json`` (graphs, parity, files), ``eval/metrics.json`` (the
runtime's images and their scores), ``routers.png`` (``inspect --heatmap``) and
``bench/report.json`` (FLOPs and latency). It computes nothing new beyond a loss chart, and
every path on the page is relative, so the folder can be moved or served as it is.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .benchmarks.evaluate import format_kinds, format_rate
from .errors import ConfigError

SHOWN_PER_TASK = 8
#: how models/tiny-mtu was trained (its README), said once for both places the page names it
BUNDLED_STEPS = "22,800 steps"
BUNDLED_TRAINING = (f"{BUNDLED_STEPS} in twelve stages, the last ten with the shared backbone trainable too, the last "
                    "four the text encoder (models/tiny-mtu/README.md)")
NEEDED = ("stages.json", "package/manifest.json", "eval/metrics.json", "bench/report.json", "routers.png")


def _read(root: Path, rel: str) -> dict:
    try:
        return json.loads((root / rel).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {str(root / rel)!r}: {e}") from None


def _losses(root: Path) -> list[dict]:
    path = root / "train" / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _running_median(xs: list[float], half: int) -> list[float]:
    """Each point's median over its ``2 * half + 1`` neighbours (fewer at the ends): the trend under the noise."""
    import statistics

    return [statistics.median(xs[max(0, i - half):i + half + 1]) for i in range(len(xs))]


def loss_chart(records: list[dict], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._io import write_bytes_atomic

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    tasks = sorted({t for r in records for t in r.get("loss_per_task", {})})
    for i, t in enumerate(tasks):
        pts = [(r["step"], r["loss_per_task"][t]) for r in records if t in r.get("loss_per_task", {})]
        steps, losses = [p[0] for p in pts], [p[1] for p in pts]
        colour = f"C{i}"
        ax.plot(steps, losses, color=colour, alpha=0.25, linewidth=0.8)
        trend = _running_median(losses, max(1, len(losses) // 8))
        ax.plot(steps, trend, color=colour, linewidth=1.6, label=f"{t} (running median)",
                marker="o" if len(steps) < 3 else None)
    ax.set_yscale("log")
    from matplotlib.ticker import LogFormatter

    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(3, 1)))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("noise-prediction MSE")
    ax.legend(fontsize=8)
    ax.set_title("Multi-task fine-tuning loss per task", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


# --- The content, once, for both renderings ------------------------------------------------

def _sampled_with(m: dict) -> str:
    """``img2img 0.35, guidance 7.5 / 1.6`` or ``from noise, guidance 3``."""
    sm = m.get("sampling")
    if not sm:
        return "–"
    start = f"img2img {sm['strength']:g}" if sm["strength"] < 1 else "from noise"
    if sm.get("guidance_scale") is None:
        scales = "none"
    else:
        scales = f"{sm['guidance_scale']:g}" + (f" / {sm['image_guidance_scale']:g}"
                                                if sm.get("image_guidance_scale") is not None else "")
    steps = f", {sm['steps']} steps" if sm.get("steps") else ""
    return f"{start}, guidance {scales}{steps}"


def _interval(lo_hi) -> str:
    return f"[{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]"


def _quality_rows(metrics: dict, model: str) -> list[list[str]]:
    rows = []
    for task, m in metrics["tasks"].items():
        success = format_rate(m) if "success_rate" in m else "–"
        kinds = format_kinds(m)
        if kinds:
            success += f"; {kinds}"
        for name, also in m.get("also", {}).items():  # an earlier metric on the same outputs, for comparison
            success += f" (earlier {name.replace('_', '-')} metric: {also['successes']}/{m['n']}; {format_kinds(also)})"
        if "psnr" in m:
            image = [f"{m['psnr']:.2f} / {m['ssim']:.3f}",
                     f"{m['condition_baseline_psnr']:.2f} / {m['condition_baseline_ssim']:.3f}",
                     f"{m['psnr_gain_db']:+.2f} {_interval(m['psnr_gain_interval'])}"]
        else:
            image = ["–", "–", "–"]
        rows.append([task, model, f"{m['n']}", _sampled_with(m), success, *image])
    return rows


QUALITY_HEAD = ["task", "model", "rows", "sampled with", "task success, 95 % interval", "PSNR (dB) / SSIM to target",
                "condition image as output", "PSNR gain over it (dB), 95 % interval"]
FLOP_HEAD = ["graph", "FLOPs (M)", "ratio to base", "ratio, conv_in aside", "parity (rel. error)"]
LAT_HEAD = ["graph", "engine", "median (ms)", "p10–p90 (ms)", "ratio to base (median)", "memory added (MiB)"]


def _flop_rows(bench: dict) -> list[list[str]]:
    out = []
    for r in bench["rows"]:
        par = r.get("parity") or {}
        out.append([r["name"], f"{r['flops'] / 1e6:,.2f}", f"{r['flop_ratio']:.6f}",
                    f"{r['flop_ratio_conv_in_aside']:.6f}",
                    f"{par['relative_error']:.1e}" if "relative_error" in par else "–"])
    return out


def _latency_rows(bench: dict) -> list[list[str]]:
    out = []
    for r in bench["rows"]:
        lat = r["latency_s"]
        ratio = "reference" if r["name"] == r["reference"] else f"{r['ratio_to_reference']['median']:.3f}"
        mem = "–" if r["memory_added_bytes"] is None else f"{r['memory_added_bytes'] / 2**20:,.1f}"
        out.append([r["name"], r["engine"], f"{lat['median'] * 1e3:.2f}",
                    f"{lat['p10'] * 1e3:.2f}–{lat['p90'] * 1e3:.2f}", ratio, mem])
    return out


def _artifacts(root: Path, manifest: dict) -> list[tuple[str, str]]:
    graphs = ", ".join(sorted({g["format"] for g in manifest["graphs"]}))
    items = [("mtu-init/", "the bundled tiny base upcycled (MTU, 4 experts, DTR inherited)"),
             ("data/", "the shapes-world dataset (metadata.jsonl + PNGs)"),
             ("train/log.jsonl", "loss per task, every logged step"),
             ("train/checkpoints/", "the last checkpoints (model, optimiser, step)"),
             ("train/mtu/", "the fine-tuned MTU model (config.json, model.safetensors, encoders)"),
             ("package/manifest.json", f"the exported package: {len(manifest['graphs'])} graphs ({graphs}), "
                                       f"{len(manifest['files'])} files with sha256"),
             ("eval/metrics.json", "the runtime's outputs on held-out rows and their scores"),
             ("routers.png", "router weights per layer and task"),
             ("bench/report.md", "FLOPs and latency: base, folded, unfolded, eager"),
             ("stages.json", "the exact command of every stage")]
    return [(rel, what) for rel, what in items if (root / rel.rstrip("/")).exists()]


# --- HTML --------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1300px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.grid td { text-align: center; vertical-align: top; font-size: 0.75em; max-width: 110px; }
.grid img { width: 96px; height: 96px; image-rendering: pixelated; display: block; margin: auto; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 0.8em; background: #f5f5f5; padding: 0.6em; }
.prompt { max-width: 110px; } .note { color: #555; font-size: 0.9em; } code { background: #f5f5f5; }
"""


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _img(rel: str, alt: str) -> str:
    return f'<img src="{html.escape(rel)}" alt="{html.escape(alt)}">'


def _grid(task: str, m: dict) -> str:
    samples = m["samples"][:SHOWN_PER_TASK]
    kinds = [k for k in ("condition", "mask", "output", "target") if k in samples[0]["files"]]
    rows = ["<tr><th>prompt</th>" + "".join(f'<td class="prompt">{html.escape(s["prompt"] or "(none)")}</td>'
                                           for s in samples) + "</tr>"]
    label = {"condition": "input", "mask": "mask", "output": "output (runtime)", "target": "target"}
    for k in kinds:
        rows.append(f"<tr><th>{label[k]}</th>" + "".join(
            f"<td>{_img('eval/' + s['files'][k], f'{task} {k}')}</td>" for s in samples) + "</tr>")
    score = []
    for s in samples:
        parts = [("done" if s["success"] else "not done")] if "success" in s else []
        if s.get("wrong"):  # the strict edit metric names what the output got wrong
            parts[0] += f" ({', '.join(s['wrong'])} wrong)"
        if "psnr_gain_db" in s:
            parts.append(f"{s['psnr_gain_db']:+.1f} dB")
        score.append(", ".join(parts) or "–")
    rows.append("<tr><th>did the task</th>" + "".join(f"<td>{c}</td>" for c in score) + "</tr>")
    return f'<table class="grid">{"".join(rows)}</table>'


def render_html(root: Path, content: dict) -> str:
    from .demo_live import live_panel

    c = content
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>taskfold demo</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>taskfold demo: one tiny UNet, four tasks, one iso-FLOP graph per task</h1>",
             f"<p>{html.escape(c['summary'])}</p>",
             "<h2>Quality on held-out rows (through the runtime)</h2>",
             _table(QUALITY_HEAD, c["quality"]),
             f"<p class='note'>{html.escape(c['quality_note'])}</p>"]
    for task, m in c["metrics"]["tasks"].items():
        parts += [f"<h3>{html.escape(task)}</h3>", _grid(task, m)]
    parts += ["<h2>Router weights (MTU paper, Figure 5)</h2>", _img("routers.png", "router weights"),
              "<h2>Iso-FLOP: every task graph costs what the base UNet costs</h2>",
              _table(FLOP_HEAD, c["flops"]),
              f"<p class='note'>{html.escape(c['flop_note'])}</p>",
              "<h2>Latency of the tiny package</h2>", _table(LAT_HEAD, c["latency"]),
              _img("bench/latency.png", "latency chart"),
              f"<p class='note'>{html.escape(c['latency_note'])}</p>"]
    parts.append(live_panel(_read(root, "package/manifest.json")))  # the package, run in the browser
    if c["loss"]:
        parts += ["<h2>Training (this demo's fine-tune)</h2>", _img("loss.png", "loss per task"),
                  f"<p class='note'>{html.escape(c['loss_note'])}</p>"]
    parts += ["<h2>Artifacts</h2><table><tr><th>path</th><th>what</th></tr>" + "".join(
        f"<tr><td><a href='{html.escape(rel)}'><code>{html.escape(rel)}</code></a></td><td>{html.escape(w)}</td></tr>"
        for rel, w in c["artifacts"]) + "</table>",
        "<h2>Commands</h2><pre>" + html.escape("\n".join(c["commands"])) + "</pre>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(content: dict) -> str:
    c = content
    lines = ["# taskfold demo", "", c["summary"], "", "## Quality on held-out rows (through the runtime)", ""]
    lines += _md_table(QUALITY_HEAD, c["quality"]) + ["", c["quality_note"], "",
                                                      "## Iso-FLOP", ""]
    lines += _md_table(FLOP_HEAD, c["flops"]) + ["", c["flop_note"], "", "## Latency", ""]
    lines += _md_table(LAT_HEAD, c["latency"]) + ["", c["latency_note"], "", "![latency](bench/latency.png)", "",
                                                  "![routers](routers.png)", "", "## Artifacts", ""]
    lines += [f"- `{rel}` — {what}" for rel, what in c["artifacts"]]
    lines += ["", "## Commands", ""] + [f"    {cmd}" for cmd in c["commands"]]
    return "\n".join(lines) + "\n"


def _checks(manifest: dict) -> str:
    """``onnx: 8 graphs passed the parity gate; coreml: 4 graphs got the structural check (no macOS)``."""
    out = []
    for fmt in sorted({g["format"] for g in manifest["graphs"]}):
        graphs = [g for g in manifest["graphs"] if g["format"] == fmt]
        status = sorted({(g.get("parity") or {}).get("status", "none") for g in graphs})
        n = f"{len(graphs)} graph{'s' if len(graphs) != 1 else ''}"
        if status == ["passed"]:
            out.append(f"{fmt}: {n} passed the parity gate")
        elif status == ["structural"]:
            out.append(f"{fmt}: {n} got the structural check only (Core ML predicts on macOS only)")
        else:
            out.append(f"{fmt}: {n} ({', '.join(status)})")
    return "; ".join(out)


def _model_name(root: Path, stages: dict) -> str:
    """The model the package was exported from, as the export stage named it: relative to the demo
    folder, or ``models/<name> (bundled)`` for a model of the source tree's ``models/``."""
    argv = stages.get("export", {}).get("argv", [])
    if len(argv) < 2:
        return "?"
    p = Path(argv[1]).resolve()
    bundled = Path(__file__).resolve().parent.parent / "models"
    for folder, label in ((root.resolve(), "{} (this demo's fine-tune)"), (bundled, "models/{} (bundled fine-tune)")):
        try:
            return label.format(p.relative_to(folder))
        except ValueError:
            continue
    return p.name


def write_report(root: str | Path) -> Path:
    """Write ``index.html``, ``report.md`` (and ``loss.png``) into the demo folder ``root``."""
    import shlex

    from ._io import write_bytes_atomic
    from .benchmarks.machine import one_line

    root = Path(root)
    missing = [rel for rel in NEEDED if not (root / rel).exists()]
    if missing:
        raise ConfigError(f"{str(root)!r} lacks {', '.join(missing)}: not a finished demo folder",
                          hint="run `taskfold demo --out DIR` (it reuses finished stages)")
    stages, manifest = _read(root, "stages.json"), _read(root, "package/manifest.json")
    metrics, bench = _read(root, "eval/metrics.json"), _read(root, "bench/report.json")
    losses = _losses(root)
    if losses:
        loss_chart(losses, root / "loss.png")
    train_argv = stages.get("train", {}).get("argv", [])
    steps = train_argv[train_argv.index("--steps") + 1] if "--steps" in train_argv else "?"
    tasks = list(metrics["tasks"])
    last = losses[-1] if losses else None
    seconds = sum(s.get("seconds", 0) for s in stages.values())
    model = _model_name(root, stages)
    shown_is_own = model.endswith("(this demo's fine-tune)")
    trained = (f"The bundled tiny base (pixel-space 32×32, trained from scratch with DTR) was upcycled for "
               f"{', '.join(tasks)} with {manifest['model']['upcycle']['num_experts']} experts per feed-forward "
               f"layer and fine-tuned here on the shapes world for {steps} steps"
               + (f" (final loss {last['loss']:.4f}; chart under Training)" if last else "") + ". ")
    shown = ("That model is the one shown below" if shown_is_own else
             f"Every number and image below belongs to {model}: fine-tuned for {BUNDLED_TRAINING}, exported here")
    sampled = ("sampled with the package's recommended settings, what `taskfold run` uses without flags"
               if metrics.get("steps") == "package defaults" else f"{metrics['steps']} {metrics['scheduler']} steps")
    summary = (trained + shown + f" ({_checks(manifest)}) and run through the runtime on held-out rows of this "
               f"demo's dataset ({metrics['scheduler']}, {sampled}; per task in the table). "
               f"Machine: {one_line(bench['machine'])}. Stages took {seconds:.0f} s.")
    folded = [r for r in bench["rows"] if r["role"] == "folded"]
    unf = next((r for r in bench["rows"] if r["role"] == "unfolded"), None)
    content = {
        "summary": summary, "metrics": metrics, "quality": _quality_rows(metrics, _model_name(root, stages)),
        "quality_note": "Task success, read by the deterministic pixel analyser (validated on degraded targets): "
                        "t2i — the object has the prompt's shape and colour (and size when named); edit (strict) — "
                        "one object, with the asked change (recolour, move, resize) made and every other attribute "
                        "kept: shape, colour, size, position (within half a move's shift) and the input's background "
                        "(a column says what was wrong; the earlier metric, which checked only the asked attribute "
                        "and the shape, is shown beside it on the same outputs); inpaint — the named object is gone "
                        "and the other kept. 95 % intervals: Wilson for rates, normal for mean gains. "
                        "PSNR/SSIM compare the output with the dataset's target; the baseline returns the "
                        "condition image (sr: upsampled bicubically). img2img s: the condition image noised to the "
                        "first of the last s × steps sampling steps; guidance: text / image scale.",
        "loss_note": (f"This stage is here to show fine-tuning at work: {steps} steps, in which the loss falls "
                      "(on this demo's data it falls from about 0.010 in the first 10 steps to 0.003–0.009, then "
                      "stays there to step 100, measured). "
                      + ("Its model is the one shown above." if shown_is_own else
                         f"Its model is not shown: the numbers and images above belong to {model}, fine-tuned "
                         f"for {BUNDLED_STEPS} (`taskfold demo --model trained` shows this one instead).")),
        "flops": _flop_rows(bench),
        "flop_note": "FLOPs counted from each exported ONNX graph (Conv, MatMul, Gemm, Einsum). The folded graphs "
                     "differ from the base only by conv_in's input channels; the unfolded graph keeps all experts, "
                     "routers and every task's conv_in. Eager rows (PyTorch) are counted by PyTorch's own FLOP "
                     "counter, which on the CPU does not count scaled_dot_product_attention: they are lower than the "
                     "graph count of the same UNet by the attention score and value products.",
        "latency": _latency_rows(bench),
        "latency_note": (f"{bench['config']['runs']} interleaved rounds on {one_line(bench['machine'])}; folded "
                         f"tasks {min(r['ratio_to_reference']['median'] for r in folded):.3f}–"
                         f"{max(r['ratio_to_reference']['median'] for r in folded):.3f}× the base"
                         + (f", unfolded {unf['ratio_to_reference']['median']:.3f}×" if unf else "") +
                         ". A tiny UNet's call lasts milliseconds, so these ratios are noisier than the SD1.5 "
                         "table in docs/measurements.md. *base* is the base UNet's graph opened as the runtime opens task "
                         "graphs (weights shared with the other sessions, no pre-packing, ORT_ENABLE_EXTENDED), "
                         "the reference of every ratio; *base (plain ORT)* is the same graph in a plain session "
                         "(ORT_ENABLE_ALL, pre-packed) — what a user exporting the base alone would run. *Memory "
                         "added* is the process's resident memory after the contender's first call minus after the "
                         "previous contender's (all sessions are built first; the first row also carries what "
                         "building them took): sessions that share mapped weights add little, and a small negative "
                         "value means the allocator handed memory back between calls — noise at this size."),
        "loss": bool(losses),
        "artifacts": _artifacts(root, manifest),
        "commands": [f"taskfold {shlex.join(s['argv'])}" for s in stages.values()],
    }
    write_bytes_atomic(root / "report.md", render_markdown(content).encode())
    return write_bytes_atomic(root / "index.html", render_html(root, content).encode())


def add_report_parser(subparsers):
    p = subparsers.add_parser("report", help="write index.html and report.md of a demo folder from its stages' outputs")
    p.add_argument("demo", help="the demo's --out folder")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    path = write_report(args.demo)
    print(f"wrote {path} and {Path(args.demo) / 'report.md'}")
    return 0
