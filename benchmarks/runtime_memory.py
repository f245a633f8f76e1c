"""Resident memory of the runtime opening 1..N tasks of one package, in each layout it holds, and disk bytes.

    python -m taskfold.benchmarks.runtime_memory PKG --out DIR [--tasks t2i,edit,sr,inpaint] [--calls 3]
                                                     [--unshared-tasks K]

Each configuration runs in a fresh Python process (so nothing is left from the one before):
import the runtime, read ``VmRSS``; open the package, create the sessions of the first k
tasks and run ``--calls`` UNet calls on each, read ``VmRSS`` and ``VmHWM`` (peak) again.
The figure is the growth over the imported-runtime baseline, in MiB, for

* the **adapters** layout: one session for every task (fully optimised, pre-packed), each
  task's tensors (``adapters/<task>.safetensors``) fed as inputs;
* the **graphs** layout with ``share_weights=True`` (one mapped backbone for every task's
  session) and ``share_weights=False`` (each session its own optimised, packed copy;
  ``--unshared-tasks`` caps how many, an SD-sized model does not fit a small machine four times);
* **plain**: ``onnxruntime.InferenceSession`` on one task graph with its defaults
  (``ORT_ENABLE_ALL``) — what a user running one exported UNet alone gets (a package with the
  adapters layout only: the shared graph, fed the first task's tensors).

The median UNet call time of the last task opened is reported beside each (single medians on a
shared machine, not a comparison: ``taskfold bench`` compares latency). Disk: every layout's bytes
and what each task adds. Writes ``runtime_memory.json`` and ``runtime_memory.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, sys, time
import numpy as np

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
from taskfold.runtime import open_package
base = status("VmRSS")
pkg_dir, tasks, mode, calls, layout = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]), sys.argv[5]
pkg = open_package(pkg_dir, verify=False, share_weights=mode == "shared", layout=layout)
times = []
for task in tasks:
    g = pkg.graph(task)
    if mode == "plain":
        import onnxruntime as ort
        from taskfold.runtime.package import load_task_tensors
        sess = ort.InferenceSession(str(pkg._reader.path(g["path"])), providers=["CPUExecutionProvider"])
        extra = load_task_tensors(pkg._reader, g) if g.get("adapter") else {}
        fn = lambda x, t, h: sess.run(None, {"sample": x, "timestep": t, "encoder_hidden_states": h, **extra})
    else:
        fn = pkg.unet(task)
    shape = {t["name"]: t["shape"] for t in g["inputs"]}
    if layout == "adapters" and mode != "plain":
        shape["sample"] = [shape["sample"][0], g["task_channels"], *shape["sample"][2:]]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape["sample"], dtype=np.float32)
    h = rng.standard_normal(shape["encoder_hidden_states"], dtype=np.float32)
    t = np.full(shape["timestep"], 500.0, np.float32)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(x, t, h)
        times.append(time.perf_counter() - start)
print(json.dumps({"rss_mib": status("VmRSS") - base, "peak_mib": status("VmHWM") - base,
                  "baseline_mib": base, "call_s": sorted(times)[len(times) // 2]}))
"""


MODES = {"adapters": "adapters layout, one session", "shared": "graphs layout, shared backbone",
         "unshared": "graphs layout, one copy per session", "plain": "plain ORT session on one task graph"}


def measure(pkg: Path, tasks: list[str], mode: str, calls: int, layout: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(pkg), ",".join(tasks), mode, str(calls), layout],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed ({mode}, {tasks}): "
                           f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk_bytes(manifest: dict) -> dict:
    """Bytes of each ONNX layout of the package, and what one more task adds in each."""
    files = manifest["files"]
    onnx = [g for g in manifest["graphs"] if g["format"] == "onnx"]
    out = {}
    for layout in ("graphs", "adapters"):
        graphs = [g for g in onnx if g.get("layout", "graphs") == layout]
        if not graphs:
            continue
        rels = set()
        per_task = {}
        for g in graphs:
            own = {g["path"], g.get("weight_index"), *g.get("external_data", []), g.get("adapter")} - {None}
            rels |= own
            per_task[g["task"]] = own
        shared = set.intersection(*per_task.values()) if len(per_task) > 1 else set()
        out[layout] = {"bytes": sum(files[r]["bytes"] for r in rels),
                       "shared_bytes": sum(files[r]["bytes"] for r in shared),
                       "per_task_bytes": {t: sum(files[r]["bytes"] for r in own - shared) for t, own in per_task.items()}}
    return out


def run(pkg: Path, tasks: list[str], calls: int = 3, unshared_tasks: int | None = None) -> dict:
    from taskfold.runtime.reader import PackageReader

    from .machine import describe, one_line

    manifest = PackageReader(pkg, verify=False).manifest
    unknown = [t for t in tasks if t not in manifest["tasks"]]
    if unknown:
        from taskfold.errors import ConfigError

        raise ConfigError(f"unknown task(s) {', '.join(unknown)}; the package has {', '.join(manifest['tasks'])}")
    weights = {rel: f["bytes"] for rel, f in manifest["files"].items() if rel.startswith("onnx/")
               and rel.endswith(".weights")}
    disk = disk_bytes(manifest)
    # plain: one task graph of the graphs layout (else the shared graph, its default task) in a default session
    plan = [("plain", 1, "graphs" if "graphs" in disk else "adapters")]
    if "adapters" in disk:
        plan += [("adapters", k, "adapters") for k in range(1, len(tasks) + 1)]
    if "graphs" in disk:
        plan += [("shared", k, "graphs") for k in range(1, len(tasks) + 1)]
        plan += [("unshared", k, "graphs") for k in range(1, min(len(tasks), unshared_tasks or len(tasks)) + 1)]
    rows = []
    for mode, k, layout in plan:
        r = measure(pkg, tasks[:k], mode, calls, layout)
        rows.append({"mode": mode, "share_weights": mode == "shared", "tasks_open": k, **r})
        print(f"{mode} tasks={k}: rss +{r['rss_mib']:.0f} MiB, peak +{r['peak_mib']:.0f} MiB, "
              f"call {r['call_s']:.3f} s", flush=True)
    return {"package": Path(pkg).name, "tasks": tasks, "calls": calls, "weight_files_bytes": weights,
            "disk": disk, "machine": one_line(describe()), "rows": rows}


def to_markdown(report: dict) -> str:
    mib = {k: v / 2**20 for k, v in report["weight_files_bytes"].items()}
    lines = [f"Package `{report['package']}`; weight files: "
             + ", ".join(f"{Path(k).name} {v:.0f} MiB" for k, v in mib.items()), "",
             "| layout | bytes on disk | shared by every task | each task adds (bytes) |", "|---|---:|---:|---|"]
    for layout, d in report.get("disk", {}).items():
        per = ", ".join(f"{t} {b:,}" for t, b in d["per_task_bytes"].items())
        lines.append(f"| {layout} | {d['bytes']:,} | {d['shared_bytes']:,} | {per} |")
    lines += ["", "| opened as | tasks open | RSS growth (MiB) | peak growth (MiB) | UNet call (s, median) |",
              "|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        mode = r.get("mode") or ("shared" if r["share_weights"] else "unshared")
        lines.append(f"| {MODES[mode]} | {r['tasks_open']} | "
                     f"{r['rss_mib']:.0f} | {r['peak_mib']:.0f} | {r['call_s']:.3f} |")
    lines += ["", f"Machine: {report['machine']}. Each row is a fresh process."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from taskfold._io import write_bytes_atomic, write_json_atomic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package")
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", default="t2i,edit,sr,inpaint")
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--unshared-tasks", type=int, help="open at most this many tasks without sharing (default all)")
    args = p.parse_args(argv)
    report = run(Path(args.package), [t for t in args.tasks.split(",") if t], args.calls, args.unshared_tasks)
    out = Path(args.out)
    write_json_atomic(out / "runtime_memory.json", report)
    write_bytes_atomic(out / "runtime_memory.md", to_markdown(report).encode())
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
