"""The package manifest, read and checked without torch: what the runtime trusts.

``manifest.json`` is written last by ``taskfold export`` (schema below, in
:mod:`taskfold.export.package`); :func:`read_manifest` refuses a folder without one or with
another format or schema version, and :func:`verify_package` re-hashes the package's files
(or some of them) against it.
"""

from __future__ import annotations

from pathlib import Path

from taskfold._io import read_versioned_json, sha256_file
from taskfold.errors import PackageError

FORMAT = "taskfold-package"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def read_manifest(pkg: str | Path) -> dict:
    pkg = Path(pkg)
    path = pkg / MANIFEST
    if not pkg.is_dir():
        raise PackageError(f"package {str(pkg)!r} is not a directory", hint="give the --out of `taskfold export`")
    if not path.is_file():
        raise PackageError(f"{str(pkg)!r} has no {MANIFEST}: not a taskfold package, or its export did not finish",
                           hint="re-run `taskfold export`")
    manifest = read_versioned_json(path, FORMAT, SCHEMA_VERSION, PackageError, "package manifest")
    return manifest


def verify_package(pkg: str | Path, files: list[str] | None = None) -> list[str]:
    """Problems found re-hashing the package's files against its manifest (empty: all good).

    ``files`` limits the check to some relative paths (a runtime opening one task).
    """
    pkg = Path(pkg)
    manifest = read_manifest(pkg)
    problems = []
    for rel, entry in manifest["files"].items():
        if files is not None and not any(rel == f or rel.startswith(f.rstrip("/") + "/") for f in files):
            continue
        p = pkg / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif p.stat().st_size != entry["bytes"]:
            problems.append(f"{rel}: {p.stat().st_size} bytes, the manifest says {entry['bytes']}")
        elif sha256_file(p) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest (the file was modified or corrupted)")
    return problems
