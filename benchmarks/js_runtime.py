"""The JavaScript runtime's speed against the Python runtime: per UNet call and per image, one interleaved run.

::

    python -m taskfold.benchmarks.js_runtime PKG [PKG ...] --threads 2 --rounds 7 --calls 5 --out js-bench.json

For each package, three runtimes run the same task graph on the same input shapes: the Python runtime
(``Package.unet``, onnxruntime), the JavaScript runtime in Node (onnxruntime-node) and in headless
Chromium (onnxruntime-web, WASM, a cross-origin isolated page, the package fetched by URL). Each runtime
lives in its own process (the JS ones are ``js/tools/bench_worker.mjs``), opened once, its first call
done before timing. Every round calls each runtime ``calls`` times, in alternating order (A B C, C B A, …)
so a shared machine's drift touches all alike; a runtime's *ratio* is the median over rounds of its median
call time over the Python runtime's in the same round (a speed of 1 / ratio). All get the same number of
intra-op threads (WASM: ``ort.env.wasm.numThreads``). ``--images`` rounds then time one whole image per
runtime (``generate`` with the package's recommended sampling; packages with a text encoder only).

Writes the report as JSON and prints a markdown table with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from taskfold.errors import ConfigError

from . import machine

JS = Path(__file__).resolve().parents[1] / "js"


class Worker:
    """One JS runtime in a process of its own (``bench_worker.mjs node|wasm``), one JSON line per command."""

    def __init__(self, mode: str):
        self.mode = mode
        self.proc = subprocess.Popen(["node", "tools/bench_worker.mjs", mode], cwd=JS, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            raise ConfigError(f"the {self.mode} worker ended (exit {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise ConfigError(f"the {self.mode} worker: {reply['error']}")
        return reply

    def close(self):
        try:
            self.ask(cmd="quit")
        except (ConfigError, BrokenPipeError, ValueError):
            pass
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PythonRuntime:
    """The Python runtime in this process, with the same commands."""

    mode = "python"

    def ask(self, cmd, **kw):
        from taskfold.runtime import open_package

        if cmd == "open":
            t0 = time.perf_counter()
            self.pkg = open_package(kw["package"], threads=kw["threads"])
            self.task = kw["task"]
            self.call = self.pkg.unet(self.task)
            g = self.pkg.graph(self.task)
            rng = np.random.default_rng(1)
            x, _, h = (tuple(t["shape"]) for t in g["inputs"])
            self.args = (rng.uniform(-1, 1, x).astype(np.float32), np.array([500.0], np.float32),
                         rng.uniform(-1, 1, h).astype(np.float32))
            self.call(*self.args)
            return {"ok": True, "seconds": time.perf_counter() - t0}
        if cmd == "unet":
            out = []
            for _ in range(kw["calls"]):
                t0 = time.perf_counter()
                self.call(*self.args)
                out.append(time.perf_counter() - t0)
            return {"seconds": out}
        if cmd == "generate":
            t0 = time.perf_counter()
            self.pkg.generate(self.task, kw["prompt"], seed=kw["seed"], steps=kw.get("steps"))
            return {"seconds": time.perf_counter() - t0}
        return {"ok": True}

    def close(self):
        self.pkg.close()


def measure(package: Path, task: str, threads: int, rounds: int, calls: int, images: int, runtimes: list[str]) -> dict:
    """One package: per-call medians per round and runtime, ratios to Python, and whole-image times."""
    manifest = json.loads((package / "manifest.json").read_text())
    workers = [PythonRuntime()] + [Worker(m) for m in runtimes]
    try:
        opened = {w.mode: w.ask(cmd="open", package=str(package), task=task, threads=threads) for w in workers}
        per_round = {w.mode: [] for w in workers}
        for r in range(rounds):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                per_round[w.mode].append(statistics.median(w.ask(cmd="unet", calls=calls)["seconds"]))
        image = {w.mode: [] for w in workers}
        if manifest.get("text_encoder") and images:
            for r in range(images):
                for w in (workers if r % 2 == 0 else workers[::-1]):
                    image[w.mode].append(w.ask(cmd="generate", prompt="a red circle", seed=r, steps=None)["seconds"])
    finally:
        for w in workers:
            w.close()
    py = per_round["python"]
    out = {"package": str(package), "task": task, "sample": manifest["sample"], "threads": threads, "rounds": rounds,
           "calls": calls, "open": opened, "unet_median_s": {}, "ratio_to_python": {}, "image_median_s": {}}
    for mode, xs in per_round.items():
        out["unet_median_s"][mode] = statistics.median(xs)
        ratios = [a / b for a, b in zip(xs, py)]
        out["ratio_to_python"][mode] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        if image[mode]:
            out["image_median_s"][mode] = statistics.median(image[mode])
    return out


def markdown(report: dict) -> str:
    lines = [f"Machine: {machine.one_line(report['machine'])}; {report['threads']} intra-op threads each; "
             f"{report['rounds']} interleaved rounds of {report['calls']} calls.", "",
             "| package | sample | runtime | UNet call (median) | ÷ Python (median, range) | speed | image (median) |",
             "|---|---|---|---|---|---|---|"]
    for p in report["packages"]:
        s = p["sample"]
        for mode, t in p["unet_median_s"].items():
            r = p["ratio_to_python"][mode]
            img = p["image_median_s"].get(mode)
            name = {"python": "Python (onnxruntime)", "node": "Node (onnxruntime-node)",
                    "wasm": "Chromium WASM (onnxruntime-web)"}[mode]
            lines.append(f"| {Path(p['package']).name} | {s['image_height']}² ({s['height']}² latent) | {name} | "
                         f"{t * 1000:.1f} ms | {r['median']:.3f} ({r['min']:.2f}–{r['max']:.2f}) | "
                         f"{1 / r['median']:.2f} | {'' if img is None else f'{img:.2f} s'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("packages", nargs="+", help="package folders (taskfold export --out)")
    p.add_argument("--task", default="t2i")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--images", type=int, default=3, help="whole-image rounds (0: none)")
    p.add_argument("--runtimes", default="node,wasm", help="JS runtimes to time beside Python: node, wasm")
    p.add_argument("--out", help="write the report (JSON) here")
    args = p.parse_args(argv)
    report = {"machine": machine.describe(), "threads": args.threads, "rounds": args.rounds, "calls": args.calls,
              "packages": []}
    for pkg in args.packages:
        report["packages"].append(measure(Path(pkg), args.task, args.threads, args.rounds, args.calls, args.images,
                                          [m for m in args.runtimes.split(",") if m]))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
