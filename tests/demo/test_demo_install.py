"""``taskfold demo`` outside an editable install of the source tree: a runtime-only install names the toolchain
extra; a non-editable install finds the bundled models in a clone it runs from, or says where they are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: hides the toolchain from a fresh interpreter, as a runtime-only install lacks it
WITHOUT_TOOLCHAIN = """import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "diffusers", "transformers", "accelerate"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
"""


def _python(code: str, cwd: Path, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", **({"PYTHONPATH": str(path)} if path else {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_a_runtime_only_install_names_the_missing_extra(tmp_path):
    out = tmp_path / "demo-out"
    done = _python(WITHOUT_TOOLCHAIN + f"from taskfold.cli import main\nsys.exit(main(['demo', '--out', {str(out)!r}]))",
                   cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("error: `taskfold demo` runs upcycle, train, export and bench, which need the toolchain; "
                           "not installed: torch, diffusers, transformers, accelerate (hint: pip install "
                           "'taskfold[toolchain]'; a runtime-only install runs `taskfold run` and `verify`)\n")
    assert not out.exists()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """taskfold installed non-editable (a wheel's files, no models) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(ROOT)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (target / "taskfold" / "demo.py").is_file() and not (target / "models").exists()
    assert (target / "taskfold" / "runtime" / "package_schema.json").is_file()  # the runtime's bounds ship with it
    return target


def test_a_non_editable_install_finds_the_models_of_the_clone_it_runs_from_or_says_where_they_are(installed,
                                                                                               tmp_path):
    where = _python("import taskfold.demo as d; print(d.__file__); print(d.bundled_models())", tmp_path, installed)
    assert done_ok(where) and where.stdout.splitlines() == [str(installed / "taskfold" / "demo.py"), "None"]
    out = tmp_path / "demo-out"
    refused = _python(f"import sys\nfrom taskfold.cli import main\nsys.exit(main(['demo', '--out', {str(out)!r}]))",
                      tmp_path, installed)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: the bundled models (models/tiny-base, models/tiny-mtu) are not in this "
                                     f"install: they ship with the source tree, and neither "
                                     f"'{installed.resolve() / 'models'}' nor ./models holds them (hint: run "
                                     "`taskfold demo` from the root of a clone of the repository")
    assert "Traceback" not in refused.stderr and not out.exists()
    clone = tmp_path / "clone"  # the root of a clone: its models/ folder
    clone.mkdir()
    (clone / "models").symlink_to(ROOT / "models")
    found = _python("import taskfold.demo as d; print(d.bundled_base()); print(d.bundled_mtu())", clone, installed)
    assert done_ok(found) and found.stdout.splitlines() == [str(clone / "models" / "tiny-base"),
                                                            str(clone / "models" / "tiny-mtu")]


def done_ok(done: subprocess.CompletedProcess) -> bool:
    assert done.returncode == 0, done.stderr[-2000:]
    return True
