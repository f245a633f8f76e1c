"""The layers: lower packages never import higher ones, the runtime needs neither torch nor the toolchain.

Every ``import`` in the source (function-local ones included) is read with ``ast``, so a lazy
import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import package -> source folder
FOLDERS = {"upcycle": "upcycle", "train": "train", "export": "export", "runtime": "runtime",
           "benchmarks": "benchmarks"}
#: the top-level applications in taskfold/ (everything else there is the core every layer may use)
APPS = {"cli", "demo", "demo_report", "__main__"}


def _modules():
    for pkg, folder in FOLDERS.items():
        for f in sorted((ROOT / folder).glob("*.py")):
            yield pkg, f"taskfold.{pkg}.{f.stem}", f
    for f in sorted((ROOT / "taskfold").glob("*.py")):
        yield ("app" if f.stem in APPS else "core"), f"taskfold.{f.stem}", f


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _layer(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "taskfold" or len(parts) < 2:
        return None
    if parts[1] in FOLDERS:
        return parts[1]
    return "app" if parts[1] in APPS else "core"


def _graph():
    edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for layer, module, path in _modules():
        for name in _imports(path, module):
            target = _layer(name)
            if target is not None and target != layer:
                edges.setdefault(layer, set()).add(target)
                where.setdefault((layer, target), f"{module} imports {name}")
    return edges, where


def test_no_cycle_between_the_packages_and_the_core_imports_none():
    edges, where = _graph()
    assert "core" not in edges or edges["core"] == set(), [where[("core", t)] for t in edges["core"]]
    assert not any("app" in targets for layer, targets in edges.items() if layer != "app"), \
        [w for (a, b), w in where.items() if b == "app" and a != "app"]

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    cycles = [(a, b, where[(a, b)]) for a in edges for b in edges[a] if a in reach(b)]
    assert cycles == []
    # the intended order, bottom up
    order = ["core", "runtime", "upcycle", "export", "train", "benchmarks", "app"]
    upward = [w for (a, b), w in where.items() if order.index(b) > order.index(a)]
    assert upward == []


def test_runtime_imports_neither_the_toolchain_nor_torch():
    # onnx is a runtime dependency since graph admission (its protobuf classes parse a package's graphs; it
    # needs no torch), imported only when a package is opened
    heavy = ("torch", "diffusers", "transformers", "accelerate", "safetensors")
    bad = []
    for layer, module, path in _modules():
        if layer != "runtime":
            continue
        for name in _imports(path, module):
            top = name.split(".")[0]
            if _layer(name) in ("export", "train", "upcycle", "benchmarks", "app"):
                bad.append(f"{module} imports {name}")
            elif top in heavy and not (module == "taskfold.runtime.tensorrt_runner" and top == "torch"):
                bad.append(f"{module} imports {name}")  # only the TensorRT runner needs torch (CUDA buffers)
    assert bad == []


def test_the_onnx_runtime_path_loads_no_heavy_module():
    code = ("import sys\n"
            "from taskfold.runtime import open_package, package, reader, sampler, backends, manifest, tokenizers\n"
            "import taskfold.runtime.cli_run\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers', "
            "'onnx', 'accelerate', 'coremltools', 'tensorrt'}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
