"""What the project imports is what it declares; the runtime installs and runs without the toolchain."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ("upcycle", "export", "train", "runtime", "benchmarks", "taskfold")
#: import names whose distribution is not installed here (optional backends), by their PyPI names
NOT_HERE = {"tensorrt": "tensorrt", "coremltools": "coremltools"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"base": project["dependencies"], **project["optional-dependencies"]}
    return {g: {_norm(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in reqs} for g, reqs in groups.items()}


def _imported_modules() -> dict[str, str]:
    """Top-level module -> one file importing it, over every module of the package (lazy imports included)."""
    out = {}
    for folder in SOURCE:
        for f in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for n in names:
                    out.setdefault(n.split(".")[0], f"{folder}/{f.name}")
    return out


def _distributions(module: str) -> set[str]:
    found = md.packages_distributions().get(module)
    if found:
        return {_norm(d) for d in found}
    return {_norm(NOT_HERE[module])} if module in NOT_HERE else set()


def test_every_imported_distribution_is_declared_and_every_declared_one_used():
    declared = _declared()
    everything = set().union(*declared.values())
    third_party = {m: f for m, f in _imported_modules().items()
                   if m not in sys.stdlib_module_names and m not in ("taskfold", "__future__")}
    undeclared = {m: f for m, f in third_party.items() if not _distributions(m) & everything}
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"
    used = set().union(*(_distributions(m) for m in third_party))
    # declared for other reasons: the GPU build of onnxruntime, scikit-learn (coremltools' palettiser imports
    # it), and the development tools
    dead = (declared["base"] | declared["toolchain"] | declared["coreml"]) - used - {"scikit-learn"}
    assert dead == set(), f"declared but never imported: {dead}"
    runtime_needs = {d for m, f in third_party.items() if f.startswith("runtime/") for d in _distributions(m)}
    assert runtime_needs - {"tensorrt", "coremltools", "torch"} <= declared["base"], runtime_needs


def test_pip_check_is_clean():
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(900)
def test_the_runtime_installs_and_runs_a_package_without_torch(tiny_package, tmp_path):
    """docs/install.md's runtime-only install (`pip install taskfold`, no extras) in a fresh venv, then `taskfold run`."""
    _, pkg, _, _ = tiny_package
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, cli = venv / "bin" / "python", venv / "bin" / "taskfold"
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    have = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('torch', 'diffusers', "
                                          "'transformers') if u.find_spec(m)])"],
                          capture_output=True, text=True, timeout=60)
    assert have.stdout.strip() == "[]", have.stdout
    out = tmp_path / "o.png"
    run = subprocess.run([str(cli), "run", str(pkg), "--task", "t2i", "--prompt", "a red circle", "--steps", "3",
                          "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in run.stdout
    verify = subprocess.run([str(cli), "verify", str(pkg)], capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stderr
    refused = subprocess.run([str(cli), "upcycle", "--base", "preset:tiny", "--out", str(tmp_path / "m")],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "needs the toolchain" in refused.stderr and "taskfold[toolchain]" in \
        refused.stderr and "Traceback" not in refused.stderr
    demo = subprocess.run([str(cli), "demo", "--out", str(tmp_path / "demo-out")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # names the extra, not a models/ path of site-packages
    assert demo.returncode == 2 and demo.stderr.startswith("error: `taskfold demo` runs upcycle, train, export and "
                                                           "bench, which need the toolchain; not installed: torch, ")
    assert "taskfold[toolchain]" in demo.stderr and "tiny-base" not in demo.stderr
    assert not (tmp_path / "demo-out").exists()
