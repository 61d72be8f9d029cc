"""Atomic file writing so that a crash never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

_UMASK_LOCK = threading.Lock()


def _umask_by_swapping() -> int:
    """The umask read by setting it and putting it back (the only portable way), under a lock."""
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def _umask_from_proc() -> int | None:
    """The umask from /proc/self/status (Linux >= 4.7): no window in which another thread sees a changed umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


# Read once at import (single-threaded then) for systems without /proc; current_umask() prefers /proc so that a
# umask changed later by the program is honoured.
_IMPORT_UMASK = _umask_by_swapping() if _umask_from_proc() is None else None


def current_umask() -> int:
    """The process's file mode creation mask, read without changing it where the system allows."""
    umask = _umask_from_proc()
    if umask is not None:
        return umask
    return _IMPORT_UMASK if _IMPORT_UMASK is not None else _umask_by_swapping()


def default_file_mode(existing: str | os.PathLike | None = None) -> int:
    """The permission bits a plain open(path, "w") gives: those of `existing` if it is a file, else 0o666 & ~umask."""
    if existing is not None:
        with contextlib.suppress(OSError):
            info = os.stat(existing)
            if stat.S_ISREG(info.st_mode):
                return stat.S_IMODE(info.st_mode)
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory so that os.replace is an atomic rename on the same filesystem.
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the result the mode open() would have (writers may have recreated tmp).
        os.chmod(tmp, default_file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (inf, nan, also numpy's) replaced by None and numpy scalars and arrays
    made plain Python, recursively through dicts, lists and tuples (tuples become lists, as JSON has them)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {(k.item() if isinstance(k, np.generic) else k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def to_json_text(obj: Any, **kwargs: Any) -> str:
    """Strict JSON of `obj` (json.dumps keyword arguments accepted): inf and nan are written as null, never as
    the non-standard Infinity/NaN that other parsers reject; numpy scalars and arrays are accepted."""
    default: Callable[[Any], Any] | None = kwargs.pop("default", None)
    if default is not None:
        # What `default` turns an unknown object into is cleaned too.
        kwargs["default"] = lambda o, _default=default: json_safe(_default(o))
    kwargs.pop("allow_nan", None)
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
