"""A URL package's scratch folder in Node (onnxruntime-node reads graph files from disk) is removed when the
process ends, whether or not the caller reached ``close()`` — copies of model files must not pile up in the
temporary folder (an SD 1.5 package is 3.3 GB)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_node


@pytest.mark.parametrize("mode", ["return", "throw"])
def test_scratch_removed_at_exit_without_close(node, tiny_mtu_package, tmp_path, mode):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = run_node(["tools/scratch_exit.mjs", str(tiny_mtu_package), mode], env={"TMPDIR": str(tmp)})
    assert done.returncode == (1 if mode == "throw" else 0), done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    scratch = Path(report["scratch"])
    assert report["existed"] and scratch.parent == tmp, report  # the graphs were copied, into TMPDIR
    assert not scratch.exists()
    assert sorted(p.name for p in tmp.glob("taskfold-js-*")) == []
