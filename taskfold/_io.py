"""Atomic writes: a file or directory appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` (bytes-like) to ``path`` through a temp file and a rename; creates the parent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` through a temp file and a rename."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_versioned_json(path: Path, fmt: str, schema: int, error, what: str) -> dict:
    """Read a taskfold JSON document (``format`` + ``schema_version``), raising ``error`` for anything else.

    ``what`` names the document in messages ("MTU config", "package manifest").
    """
    from taskfold import __version__

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise error(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise error(f"{str(path)!r} is not a taskfold {what} (format "
                    f"{doc.get('format') if isinstance(doc, dict) else None!r}, expected {fmt!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > schema:
        raise error(f"{str(path)!r} has schema_version {version!r}; this taskfold ({__version__}) reads "
                    f"schema {schema} and older", hint="upgrade taskfold to read it")
    return doc


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing non-empty ``path`` unless ``overwrite``; return it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output path {str(path)!r} exists and is not a directory",
                                hint="choose another --out")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"output directory {str(path)!r} already exists and is not empty",
                                hint="choose another --out or pass --overwrite")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename.

    On any error the temporary directory is removed and ``path`` is untouched, so an
    interrupted run never leaves a directory that looks complete, and nothing the user had
    is lost until the new one is whole.
    """
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        for f in tmp.rglob("*"):  # some writers create 0600 files; make them ordinary files
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
