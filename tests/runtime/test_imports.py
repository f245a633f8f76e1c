"""The runtime's numpy modules must load without torch or diffusers."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = ("taskfold.runtime.schedulers", "taskfold.runtime.guidance")


def test_runtime_modules_import_without_torch_or_diffusers():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in RUNTIME_MODULES)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"heavy modules loaded: {done.stdout.strip()}"
