"""Resident memory of the runtime opening 1..N task graphs of one package, backbone shared or not.

    python -m taskfold.benchmarks.runtime_memory PKG --out DIR [--tasks t2i,edit,sr,inpaint] [--calls 3]
                                                     [--unshared-tasks K]

Each configuration runs in a fresh Python process (so nothing is left from the one before):
import the runtime, read ``VmRSS``; open the package, create the sessions of the first k
tasks and run ``--calls`` UNet calls on each, read ``VmRSS`` and ``VmHWM`` (peak) again.
The figure is the growth over the imported-runtime baseline, in MiB, for
``share_weights=True`` (the runtime's default: one mapped backbone for every session) and
``share_weights=False`` (each session loads, optimises and packs its own copy; ``--unshared-tasks``
caps how many are opened that way, since an SD-sized model does not fit a small machine four
times). The median UNet call time of the last task opened is reported beside it, because
sharing optimises the graphs at ``ORT_ENABLE_EXTENDED`` without pre-packing. Writes
``runtime_memory.json`` and ``runtime_memory.md``.
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
pkg_dir, tasks, share, calls = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "1", int(sys.argv[4])
pkg = open_package(pkg_dir, verify=False, share_weights=share)
times = []
for task in tasks:
    fn = pkg.unet(task)
    g = pkg.graph(task)
    shape = {t["name"]: t["shape"] for t in g["inputs"]}
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


def measure(pkg: Path, tasks: list[str], share: bool, calls: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(pkg), ",".join(tasks), "1" if share else "0",
                           str(calls)], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed ({'shared' if share else 'unshared'}, {tasks}): "
                           f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    rows = []
    for share in (True, False):
        for k in range(1, (len(tasks) if share else min(len(tasks), unshared_tasks or len(tasks))) + 1):
            r = measure(pkg, tasks[:k], share, calls)
            rows.append({"share_weights": share, "tasks_open": k, **r})
            print(f"share={share} tasks={k}: rss +{r['rss_mib']:.0f} MiB, peak +{r['peak_mib']:.0f} MiB, "
                  f"call {r['call_s']:.3f} s", flush=True)
    return {"package": str(pkg), "tasks": tasks, "calls": calls, "weight_files_bytes": weights,
            "machine": one_line(describe()),
            "rows": rows}


def to_markdown(report: dict) -> str:
    mib = {k: v / 2**20 for k, v in report["weight_files_bytes"].items()}
    lines = [f"Package `{report['package']}`; weight files: "
             + ", ".join(f"{Path(k).name} {v:.0f} MiB" for k, v in mib.items()), "",
             "| weights | tasks open | RSS growth (MiB) | peak growth (MiB) | UNet call (s, median) |",
             "|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {'shared' if r['share_weights'] else 'per session'} | {r['tasks_open']} | "
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
