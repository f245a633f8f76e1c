"""Time to open a package and make its first task ready, A/B between two checkouts of taskfold, interleaved.

What is timed, in a fresh process each round: ``open_package(PKG, verify=...)`` and ``unet(TASK)`` — the
manifest read and validated, the shared graphs and tokenizer admitted (new code), the task graph's
files confined, hashed (with verify) and admitted, the weights loaded and the ONNX Runtime session
created — i.e. everything before the first UNet call. Each round runs A then B (or B then A on odd
rounds) so drifts in the machine's load hit both alike; the report gives per-round times, medians
and the ratio of medians.

    python -m taskfold.benchmarks.open_time PKG --a-path /old/checkout/py --b-path '' --rounds 5

``--a-path``/``--b-path``: a folder put first on ``PYTHONPATH`` holding an importable ``taskfold``
(an empty string: this installation).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import sys, time
t0 = time.perf_counter()
from taskfold.runtime import open_package
t1 = time.perf_counter()
p = open_package(sys.argv[1], verify=sys.argv[3] == "1")
p.unet(sys.argv[2])
t2 = time.perf_counter()
import taskfold.runtime.reader as r
print(f"{t2 - t1:.4f} {t1 - t0:.4f} {r.__file__}")
"""


def _once(path: str, pkg: str, task: str, verify: bool) -> tuple[float, str]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path
    done = subprocess.run([sys.executable, "-c", CHILD, pkg, task, "1" if verify else "0"], capture_output=True,
                          text=True, env=env, cwd="/", timeout=1800)
    if done.returncode:
        raise SystemExit(f"error: a timed process failed: {done.stderr[-1500:]}")
    seconds, _, where = done.stdout.split()
    return float(seconds), where


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package")
    ap.add_argument("--task", default="t2i")
    ap.add_argument("--a-path", required=True)
    ap.add_argument("--b-path", default="")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    a, b, where = [], [], {}
    for r in range(args.rounds):
        order = (("A", args.a_path, a), ("B", args.b_path, b))
        for name, path, acc in order if r % 2 == 0 else order[::-1]:
            t, where[name] = _once(path, args.package, args.task, not args.no_verify)
            acc.append(t)
            print(f"round {r + 1} {name}: {t:.3f} s", flush=True)
    ma, mb = statistics.median(a), statistics.median(b)
    result = {"package": args.package, "task": args.task, "verify": not args.no_verify, "A": a, "B": b,
              "A_median_s": ma, "B_median_s": mb, "B_over_A": mb / ma, "A_code": where["A"], "B_code": where["B"]}
    print(f"median A {ma:.3f} s, B {mb:.3f} s, B/A {mb / ma:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
