"""The bench report as Markdown tables and a latency chart (``report.md``, ``latency.png``).

Both are drawn from ``report.json`` alone (:func:`markdown`, :func:`plot_latency`), so a
report can be re-rendered without measuring again::

    python -m taskfold.benchmarks.report bench-sd15/report.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from .machine import one_line

ROLE_LABEL = {"base": "base UNet", "base-plain": "base UNet, plain ORT_ENABLE_ALL session", "folded": "folded task",
              "adapters": "shared graph + task adapter", "unfolded": "unfolded multi-task",
              "eager-base": "base UNet", "eager-unfolded": "unfolded multi-task (MTU)"}


def _g(x) -> str:
    return f"{x / 1e9:,.3f}" if x else "–"


def _ratio(x, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _mib(x) -> str:
    return "–" if x is None else f"{x / 2**20:,.0f}"


def _mb(x) -> str:
    return "–" if x is None else f"{x / 1e6:,.1f}"


def _label(row: dict) -> str:
    return row["name"] if row["role"] != "folded" else f"{row['name']} (folded)"


def _vs_plain(row: dict) -> str:
    r = row.get("ratio_to_plain_base")
    return "–" if not r else f"{r['median']:.3f}"


def findings(report: dict) -> list[str]:
    """The sentences a reader comes for: iso-FLOP, iso-latency, the unfolded cost, the floor."""
    rows = report["rows"]
    base = next(r for r in rows if r["role"] in ("base", "base-plain"))
    folded = [r for r in rows if r["role"] == "folded"]
    out = []
    if folded:
        fr = [r["flop_ratio_conv_in_aside"] for r in folded]
        lr = [r["ratio_to_reference"]["median"] for r in folded]
        out.append(f"Folded task graphs count {min(fr):.6f}–{max(fr):.6f} × the base UNet's FLOPs (conv_in aside; "
                   f"{min(r['flop_ratio'] for r in folded):.6f}–{max(r['flop_ratio'] for r in folded):.6f} with it) "
                   f"and take {min(lr):.3f}–{max(lr):.3f} × its time (median of per-round ratios).")
    shared = [r for r in rows if r["role"] == "adapters"]
    if shared:
        lr = [r["ratio_to_reference"]["median"] for r in shared]
        fr = [r["flop_ratio"] for r in shared]
        out.append(f"Adapters layout: every task through one shared graph and session takes {min(lr):.3f}–"
                   f"{max(lr):.3f} × the time of the base UNet in a plain ONNX Runtime session (ORT_ENABLE_ALL, "
                   f"pre-packed), for {min(fr):.6f}–{max(fr):.6f} × its FLOPs (the sample padded to the widest "
                   "task's conv_in; the per-task FFN scales are counted apart, in the FLOPs table's notes).")
        if folded:
            gr = [r["ratio_to_plain_base"]["median"] for r in folded if r.get("ratio_to_plain_base")]
            if gr:
                out.append(f"Graphs layout in the same run: the folded task graphs take {min(gr):.3f}–{max(gr):.3f} "
                           "× the plain base session's time.")
    sw = report.get("task_switch")
    if sw:
        out.append(f"Switching task in the shared session: the first call after a switch takes "
                   f"{sw['after_switch_s'] * 1e3:,.1f} ms against {sw['repeated_s'] * 1e3:,.1f} ms for a repeated "
                   f"call (median of {sw['rounds']} pairs; ratio {sw['ratio']:.3f}); no session is opened.")
    unf = next((r for r in rows if r["role"] == "unfolded"), None)
    if unf:
        m = unf["ratio_to_reference"]["median"]
        out.append(f"The unfolded multi-task graph (experts and routers in the graph, task id as input) takes "
                   f"{m:.3f} × the base UNet's time ({(m - 1) * 100:+.1f} %) for {unf['flop_ratio']:.4f} × its FLOPs.")
    eu = next((r for r in rows if r["role"] == "eager-unfolded"), None)
    eb = next((r for r in rows if r["role"] == "eager-base"), None)
    if eu and eb:
        out.append(f"In PyTorch eager the unfolded MTU model takes {eu['ratio_to_reference']['median']:.3f} × the base "
                   f"UNet's time; the base graph in {base['engine']} runs at "
                   f"{eb['latency_s']['median'] / base['latency_s']['median']:.2f} × the speed of eager "
                   f"({eb['latency_s']['median'] * 1e3:,.1f} ms → {base['latency_s']['median'] * 1e3:,.1f} ms).")
    peak = report["matmul_peak"]["best_gflops"]
    if base.get("x_matmul_floor"):
        floor_ms = base["flops"] / (peak * 1e9) * 1e3
        out.append(f"The base UNet step in {base['engine']} takes {base['latency_s']['median'] * 1e3:,.1f} ms, "
                   f"{base['x_matmul_floor']:.2f} × the matmul-peak floor of {floor_ms:,.1f} ms "
                   f"({_g(base['flops'])} GFLOPs at the measured {peak:,.1f} GFLOP/s); it achieves "
                   f"{base['achieved_gflops']:,.1f} GFLOP/s.")
    return out


def markdown(report: dict) -> str:
    cfg, shapes, rows = report["config"], report["shapes"], report["rows"]
    src = report["source"]
    title = f"preset:{src['preset']}" if src["kind"] == "preset" else src["path"]
    lines = [f"# taskfold bench: {title}", "",
             f"Machine: {one_line(report['machine'])}. Backend {cfg['backend']} on {cfg['provider']}, "
             f"{cfg['precision']}; batch {shapes['batch']}, UNet sample {shapes['height']}×{shapes['width']} "
             f"({shapes['image_height']}×{shapes['image_width']} px images), {shapes['text_len']} text tokens; "
             f"tasks {', '.join(report['tasks'])}. Measured {report['created']}: {cfg['runs']} interleaved rounds "
             f"after {cfg['warmup']} warm-up; every time is one UNet call.", "",
             f"Weights: {src.get('weights') or src.get('reference_weights')}.", "",
             "## Findings", ""]
    lines += [f"- {s}" for s in findings(report)]
    lines += ["", "## FLOPs per UNet call", "",
              "| graph | kind | FLOPs (G) | ratio to base | ratio, conv_in aside | conv_in (MFLOPs) | counted by | "
              "parity (rel. error) |",
              "|---|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        par = r.get("parity") or {}
        perr = f"{par['relative_error']:.1e}" if "relative_error" in par else par.get("status", "–")
        lines.append(f"| {_label(r)} | {ROLE_LABEL[r['role']]} | {_g(r['flops'])} | {_ratio(r['flop_ratio'], 6)} | "
                     f"{_ratio(r['flop_ratio_conv_in_aside'], 6)} | {r['conv_in_flops'] / 1e6:,.1f} | "
                     f"{r['flops_method']} | {perr} |")
    shared = next((r for r in rows if r["role"] == "adapters" and r.get("elementwise_flops")), None)
    if shared:
        base = next(r for r in rows if r["role"] in ("base", "base-plain"))
        e = shared["elementwise_flops"]
        lines += ["", f"The shared graph (adapters layout) also multiplies every FFN's hidden units by the task's "
                      f"scales: {e / 1e6:,.1f} MFLOPs per call, {e / base['flops'] * 100:.4f} % of the base's count "
                      f"(with them: {(shared['flops'] + e) / base['flops']:.6f} × the base). Its conv_in takes the "
                      "widest task's channels for every task (the conv_in column)."]
    lines += ["", "## Latency per UNet call", "",
              "| graph | engine | median (ms) | p10 | p90 | ratio to its reference: median [p10, p90] | "
              "ratio to plain base | GFLOP/s | × matmul floor | memory added (MiB) | on disk (MB) |",
              "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat, rr = r["latency_s"], r["ratio_to_reference"]
        ratio = "1 (reference)" if r["name"] == r["reference"] else \
            f"{rr['median']:.3f} [{rr['p10']:.3f}, {rr['p90']:.3f}] ({r['reference']})"
        lines.append(f"| {_label(r)} | {r['engine']} | {lat['median'] * 1e3:,.1f} | {lat['p10'] * 1e3:,.1f} | "
                     f"{lat['p90'] * 1e3:,.1f} | {ratio} | {_vs_plain(r)} | "
                     f"{'–' if r['achieved_gflops'] is None else format(r['achieved_gflops'], ',.1f')} | "
                     f"{_ratio(r['x_matmul_floor'], 2)} | {_mib(r['memory_added_bytes'])} | {_mb(r['graph_bytes'])} |")
    peaks = "; ".join(f"{p['engine']} {p['n']}³ {p['dtype']}: {p['best_gflops']:,.1f} GFLOP/s best, "
                      f"{p['median_gflops']:,.1f} median" for p in report["matmul_peak"]["engines"])
    pkg = report["package"]
    lines += ["",
              "Eager rows are compared with the eager base; their FLOPs come from PyTorch's counter, which does not "
              "count scaled-dot-product attention on the CPU. *Memory added* is what the process's resident memory "
              "(GPU: device memory in use) grew by when the contender was opened and run once, in the order "
              "listed, in a process of its engine's own: with shared weights the first task graph maps the "
              "package's backbone and later ones add only their own tensors (the base and unfolded graphs map "
              "their own folder's weights); eager rows count the first call's activations, the modules having "
              "been built before. *On disk* is the graph with every weight file it references (eager: the "
              "module's parameter bytes).", "",
              f"Matmul peak (measured in this run): {peaks}. Floor = FLOPs / best peak.", "",
              f"Package: {pkg['bytes']:,} bytes in {pkg['files']} files ({pkg['onnx_bytes']:,} in onnx/). "
              f"Process peak resident memory: {_mib(report.get('process_peak_rss_bytes'))} MiB. "
              f"Threads: ONNX Runtime {report['threads']['onnxruntime_intra_op']}, PyTorch "
              f"{report['threads']['torch']}.", "",
              "## Reproduce", "", f"    {report['command']}", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ". "
              f"Seconds: prepare {report['seconds']['prepare']:.0f}, measure {report['seconds']['measure']:.0f}, "
              f"total {report['seconds']['total']:.0f}.", ""]
    return "\n".join(lines)


def plot_latency(report: dict, path: str | Path) -> Path:
    """Horizontal bars of the median time per UNet call with p10–p90 whiskers, one per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taskfold._io import write_bytes_atomic

    rows = report["rows"]
    labels = [f"{_label(r)}\n{r['engine']}" for r in rows]
    med = [r["latency_s"]["median"] * 1e3 for r in rows]
    lo = [m - r["latency_s"]["p10"] * 1e3 for m, r in zip(med, rows)]
    hi = [r["latency_s"]["p90"] * 1e3 - m for m, r in zip(med, rows)]
    colours = {"base": "#4c72b0", "base-plain": "#64b5cd", "folded": "#55a868", "adapters": "#ccb974",
               "unfolded": "#c44e52", "eager-base": "#8172b2",
               "eager-unfolded": "#937860"}
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.6), dpi=110)
    y = list(range(len(rows)))[::-1]
    ax.barh(y, med, xerr=[lo, hi], color=[colours[r["role"]] for r in rows], capsize=3, height=0.6)
    for yi, m, h, r in zip(y, med, hi, rows):  # the label starts past the whisker's end, never on it
        ratio = "" if r["name"] == r["reference"] else f"  {r['ratio_to_reference']['median']:.3f}×"
        ax.text(m + h, yi, f"  {m:,.1f} ms{ratio}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("ms per UNet call (median; whiskers p10–p90)")
    src = report["source"]
    name = f"preset:{src['preset']}" if src["kind"] == "preset" else Path(src["path"]).name
    sh = report["shapes"]
    ax.set_title(f"{name}, {sh['image_height']}×{sh['image_width']} px, batch {sh['batch']} — "
                 f"{report['machine']['cores']} cores", fontsize=9)
    ax.set_xlim(0, max(m + h for m, h in zip(med, hi)) * 1.45)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def main(argv=None) -> int:
    import json

    from taskfold._io import write_bytes_atomic

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m taskfold.benchmarks.report REPORT.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    report = json.loads(path.read_text())
    write_bytes_atomic(path.with_name("report.md"), markdown(report).encode())
    plot_latency(report, path.with_name("latency.png"))
    print(f"wrote {path.with_name('report.md')} and {path.with_name('latency.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
