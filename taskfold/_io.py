"""Atomic writes: a file or directory appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError, OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data, exclusive: bool = False) -> Path:
    """Write ``data`` (bytes-like) to ``path`` through a temp file and a rename; creates the parent.

    ``exclusive``: never replace an existing file, even one another process creates meanwhile
    (the complete file is hard-linked into place, which fails if the name exists) —
    :class:`OutputExistsError` instead.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(f"{str(path)!r} already exists (another process wrote it first)",
                                        hint="choose another --out or pass --overwrite") from None
            except OSError:  # a file system without hard links: claim the name, then fill it in one rename
                try:
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_umask()))
                except FileExistsError:
                    raise OutputExistsError(f"{str(path)!r} already exists (another process wrote it first)",
                                            hint="choose another --out or pass --overwrite") from None
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
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
        doc = json.loads(read_regular_file(path, error, what))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise error(f"{str(path)!r} is not a taskfold {what} (format "
                    f"{doc.get('format') if isinstance(doc, dict) else None!r}, expected {fmt!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > schema:
        raise error(f"{str(path)!r} has schema_version {version!r}; this taskfold ({__version__}) reads "
                    f"schema {schema} and older", hint="upgrade taskfold to read it")
    return doc


def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse ``path`` when it cannot be created or written: checked by creating (and removing) a
    temporary file in its nearest existing folder, before any work is done."""
    path = Path(path)
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {str(path)!r}: {str(parent)!r} is not a directory",
                          hint=f"choose another {what}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".taskfold-write-check-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{what} {str(path)!r} is not writable: {e.strerror} ({str(parent)!r})",
                          hint=f"choose a writable {what}, or free space / fix permissions there") from None
    return path


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing non-empty ``path`` unless ``overwrite``, or one that cannot be written; return it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"output path {str(path)!r} exists and is not a directory",
                                hint="choose another --out")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"output directory {str(path)!r} already exists and is not empty",
                                hint="choose another --out or pass --overwrite")
    return check_writable(path)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _folders_above(real: str) -> set[tuple[int, int]]:
    """The identities of the existing folders above the real path ``real`` (not ``real`` itself)."""
    ids, parent = set(), os.path.dirname(real)
    while True:
        ident = _identity(parent)
        if ident is not None:
            ids.add(ident)
        if parent == os.path.dirname(parent):
            return ids
        parent = os.path.dirname(parent)


def check_apart_from_inputs(out: str | os.PathLike, inputs, what: str = "--out") -> None:
    """Refuse an output that is, contains, or is inside one of ``inputs`` (``(name, path)`` pairs; paths that
    do not exist, such as ``preset:tiny``, are skipped): writing there, or replacing it with ``--overwrite``,
    would change or delete what the user gave.

    Paths are compared by what they are on disk: real paths (symlinks followed), and device and inode of
    the path and of every folder above it, so a hard link, a bind mount or a case-insensitive spelling is
    recognised too. ``name`` ``"."`` is the current folder: an output may lie inside it, but may not be it
    or a folder above it.
    """
    out_real = os.path.realpath(out)
    out_id = _identity(out_real)
    above_out = _folders_above(out_real)
    for name, given in inputs:
        if given is None or not os.path.lexists(given):
            continue
        real = os.path.realpath(given)
        ident = _identity(real)
        if real == out_real or (ident is not None and ident == out_id):
            relation = "is"
        elif out_id is not None and out_id in _folders_above(real):
            relation = "contains"
        elif name != "." and ident is not None and ident in above_out:
            relation = "is inside"
        else:
            continue
        given_as = f"the current folder ({real!r})" if name == "." else f"the {name} given ({str(given)!r})"
        raise OutputError(f"{what} {str(out)!r} {relation} {given_as}; writing there would change or delete it",
                          hint=f"choose a {what} outside every input of the command")


def check_output_file(path: str | os.PathLike, overwrite: bool, what: str = "--out") -> Path:
    """Refuse an output file path before any work is done: a symbolic link (even a dangling one), a folder,
    an existing file unless ``overwrite``, a parent folder that does not exist (it is never created
    silently), or one that cannot be written. Returns the path."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{what} {str(path)!r} is a symbolic link (to {os.readlink(path)!r}); taskfold writes "
                          "only plain files", hint=f"give a {what} path that is not a link")
    if path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a folder; give a file path",
                          hint=f"e.g. {what} {path / 'out.png'}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{what} {str(path)!r} already exists",
                                hint=f"choose another {what} or pass --overwrite")
    check_writable(path, what)
    parent = path.parent
    if not parent.is_dir():
        missing = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"{what} {str(path)!r}: its folder {str(parent)!r} {missing}",
                          hint="create the folder first, or choose another " + what)
    return path


#: The largest JSON document taskfold reads as a config, manifest or record (they are a few kB).
MAX_JSON_BYTES = 16 * 2**20


def read_regular_file(path: str | os.PathLike, error, what: str, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of ``path``, refused with ``error`` naming it when it is not a regular file (a FIFO or a
    device would block or never end; it is opened without blocking and checked before any read) or is
    larger than ``max_bytes``."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise error(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device")
            raise error(f"{what} {str(path)!r} is {kind}, not a regular file", hint="give the path of a file")
        if st.st_size > max_bytes:
            raise error(f"{what} {str(path)!r} is {st.st_size:,} bytes; the most taskfold reads is {max_bytes:,}")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{what} {str(path)!r} is more than {max_bytes:,} bytes; the most taskfold reads is {max_bytes:,}")
    return data


PARTIAL_SUFFIX = ".partial"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(path: str | os.PathLike, log=print) -> list[Path]:
    """Remove what interrupted runs left beside ``path``: ``.NAME.<pid>.*.partial`` folders and
    ``.NAME.old-<pid>`` folders whose process is gone (a live run's are kept). Returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for p in sorted(path.parent.glob(f".{glob.escape(path.name)}.*")):
        rest = p.name[len(path.name) + 2:]
        if rest.endswith(PARTIAL_SUFFIX):
            head = rest.split(".", 1)[0]
        elif rest.startswith("old-"):
            head = rest[4:]
        else:
            continue
        pid = int(head) if head.isdigit() else None
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
        log(f"removed {str(p)!r} ({size / 1e6:.1f} MB), left by an interrupted run")
    return removed


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = False, log=print) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename.

    On any error the temporary directory is removed and ``path`` is untouched, so an
    interrupted run never leaves a directory that looks complete, and nothing the user had
    is lost until the new one is whole. A run killed outright (SIGKILL, power loss) cannot
    clean up: its ``.NAME.<pid>.*.partial`` folder is removed by the next run with the same
    output (:func:`remove_stale_partials`).
    """
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path, log)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=PARTIAL_SUFFIX, dir=path.parent))
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
