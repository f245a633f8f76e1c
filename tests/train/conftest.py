"""Fixtures for the training-data tests: small shapes-world datasets, generated once per session."""

from __future__ import annotations

import pytest

from taskfold.train.shapes import make_shapes


@pytest.fixture(scope="session")
def shapes32(tmp_path_factory):
    """20 rows per task at 32x32, seed 0, 4 test rows per task."""
    out = tmp_path_factory.mktemp("shapes") / "s32"
    make_shapes(out, n=20, size=32, seed=0, test_fraction=0.2)
    return out
