"""Recommended sampling per task: what ``run``/``generate`` use when the caller gives none.

A model folder may hold ``sampling.json``, written by the evaluation that chose the values
(``taskfold evaluate --write-sampling``) or by hand::

    {"format": "taskfold-sampling", "version": 1,
     "source": "chosen on the validation split of shapes-v2 (64 rows per task)",
     "tasks": {"sr": {"strength": 0.3, "steps": 20},
               "edit": {"strength": 0.7, "guidance_scale": 3.0, "image_guidance_scale": 1.2}}}

``taskfold export`` applies it to the tasks (:func:`taskfold.tasks.with_sampling`) and the
manifest records the result in each task's entry, with the file's ``source``; a task the file
does not name keeps its definition's values (:class:`taskfold.tasks.TaskSpec`). Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path

from taskfold.errors import ConfigError
from taskfold.tasks import SAMPLING_FIELDS, TaskSpec, check_object, with_sampling

SAMPLING_FILE = "sampling.json"
FORMAT = "taskfold-sampling"
VERSION = 1
MAX_BYTES = 1 << 20


def read_sampling(path: str | Path, tasks: dict[str, TaskSpec]) -> dict:
    """``{"source": str, "tasks": {name: {field: value}}}`` from a sampling file, checked against ``tasks``.

    Refuses a file over 1 MiB, one that is not the format, names a task the model lacks, or holds a
    value its task cannot take (each error names the file, the task and the value)."""
    path = Path(path)
    where = str(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ConfigError(f"sampling file {where!r} is not a regular file")
        if size > MAX_BYTES:
            raise ConfigError(f"sampling file {where!r} is {size:,} bytes; expected at most {MAX_BYTES:,}")
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read sampling file {where!r}: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"sampling file {where!r} is not JSON: {str(e)[:200]}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ConfigError(f"sampling file {where!r} is not a {FORMAT} file (its 'format' must be {FORMAT!r})")
    if obj.get("version") != VERSION:
        raise ConfigError(f"sampling file {where!r} has version {obj.get('version')!r}; this taskfold reads "
                          f"version {VERSION}")
    unknown = sorted(set(obj) - {"format", "version", "source", "tasks"})
    if unknown:
        raise ConfigError(f"sampling file {where!r} has unknown key(s) {', '.join(map(repr, unknown))}")
    source = obj.get("source", "")
    if not isinstance(source, str) or len(source) > 500:
        raise ConfigError(f"sampling file {where!r}: 'source' must be a string of at most 500 characters")
    entries = obj.get("tasks")
    check_object(entries, tasks, f"sampling file {where!r}: 'tasks'",
                 f"an object of task name -> {{{', '.join(SAMPLING_FIELDS)}}}", error=ConfigError)
    for name, values in entries.items():
        with_sampling(tasks[name], values, where=f"sampling file {where!r}")  # checks every value
    return {"source": source, "tasks": entries}


def apply_sampling(specs, sampling: dict | None) -> tuple[TaskSpec, ...]:
    """``specs`` with the recommended sampling of :func:`read_sampling`'s result applied."""
    if not sampling:
        return tuple(specs)
    return tuple(with_sampling(s, sampling["tasks"][s.name]) if s.name in sampling["tasks"] else s for s in specs)


def write_sampling(path: str | Path, tasks: dict[str, dict], source: str) -> Path:
    """Write a sampling file (atomically) with ``tasks`` ``{name: {field: value}}``."""
    from taskfold._io import write_json_atomic

    write_json_atomic(Path(path), {"format": FORMAT, "version": VERSION, "source": source, "tasks": tasks})
    return Path(path)
