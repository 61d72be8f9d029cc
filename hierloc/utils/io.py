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
    # Same directory so that os.replace is an atomic rename on the same filesystem; the name says whose it is
    # (see temporary_prefix) so that a later successful write can remove what a killed one left.
    fd, tmp_name = tempfile.mkstemp(
        prefix=temporary_prefix(target), suffix=suffix if suffix is not None else ".tmp", dir=target.parent
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
    fsync_directory(target.parent)
    remove_stale_temporaries(target, fresh=False)


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


# ---------------------------------------------------------------------------------------------- leftovers of kills
# Every temporary file or folder hierloc writes beside a target is named `.<target name>.hierloc-<kind>-<pid>-<random>`
# (kind: tmp for what is being written, old for what is being replaced). A process killed with -9 cannot remove its
# own; the next successful write of the same target removes those whose process is gone, and nothing else.
_LEFTOVER_KINDS = ("tmp", "old")


def temporary_prefix(target: str | os.PathLike, kind: str = "tmp") -> str:
    """The name prefix of hierloc's temporaries for `target` made by this process (`kind`: tmp or old)."""
    if kind not in _LEFTOVER_KINDS:
        raise ValueError(f"unknown temporary kind {kind!r}")
    return f".{Path(target).name}.hierloc-{kind}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or an odd number): not ours to judge, keep its files
    return True


_MARKED_NAMES: dict[str, list[str]] = {}  # folder -> its names in hierloc's temporary naming, read once per process
_MARKED_LOCK = threading.Lock()


def _marked_names(folder: Path, fresh: bool) -> list[str]:
    """Names in `folder` that look like hierloc temporaries. Listed once per folder and process unless `fresh`:
    a writer of many files into one big folder must not list it again for every file."""
    key = os.path.abspath(folder)
    with _MARKED_LOCK:
        if fresh or key not in _MARKED_NAMES:
            try:
                with os.scandir(folder) as entries:
                    _MARKED_NAMES[key] = [e.name for e in entries
                                          if e.name.startswith(".") and any(f".hierloc-{kind}-" in e.name
                                                                            for kind in _LEFTOVER_KINDS)]
            except OSError:
                _MARKED_NAMES[key] = []
        return list(_MARKED_NAMES[key])


def leftover_temporaries(target: str | os.PathLike, fresh: bool = True) -> list[Path]:
    """Temporaries beside `target` in hierloc's naming whose writing process no longer runs (killed writers).

    `fresh=False` reuses this process's earlier listing of the folder (what atomic writers do)."""
    target = Path(target)
    found = []
    for name in _marked_names(target.parent, fresh):
        for kind in _LEFTOVER_KINDS:
            head = f".{target.name}.hierloc-{kind}-"
            if not name.startswith(head):
                continue
            pid_text = name[len(head):].split("-", 1)[0]
            if pid_text.isdigit() and not _process_alive(int(pid_text)):
                found.append(target.parent / name)
    return sorted(found)


def remove_stale_temporaries(target: str | os.PathLike, fresh: bool = True) -> list[Path]:
    """Remove what killed hierloc writers left beside `target` (see leftover_temporaries); returns what went."""
    import shutil

    removed = []
    for path in leftover_temporaries(target, fresh):
        if not os.path.lexists(path):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:  # another process cleaning at the same time, or not ours to remove after all
            continue
    return removed


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make a rename or a new entry in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file and folder under `folder` (before it is renamed into place)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(root)


# ---------------------------------------------------------------------------------------------- folders in one step
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange_paths(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc before 2.28, musl without it
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    import errno

    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # the filesystem does not support the exchange: the caller falls back
    raise OSError(error, os.strerror(error), str(b))


def replace_directory(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the complete folder `new` (a sibling of `target`) at `target`, replacing what is there in one step.

    On Linux the two are exchanged atomically (renameat2) and the old folder removed afterwards; elsewhere the
    old folder is renamed aside first, so a kill between the two renames leaves no folder at `target` but the
    old one beside it, which `recover_directory` puts back.
    """
    import shutil

    new, target = Path(new), Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OSError(f"{target}: exists and is not a folder; not replacing it")
    if not target.exists():
        os.rename(new, target)
    elif _exchange_paths(new, target):
        shutil.rmtree(new)  # now the old folder; a kill here leaves a leftover in hierloc's naming
    else:
        aside = Path(tempfile.mkdtemp(prefix=temporary_prefix(target, "old"), dir=target.parent))
        aside.rmdir()
        os.rename(target, aside)
        os.rename(new, target)
        shutil.rmtree(aside)
    fsync_directory(target.parent)


def recover_directory(target: str | os.PathLike) -> bool:
    """After a kill between the two renames of a non-atomic `replace_directory`: put the old folder back.

    Only acts when `target` is missing and a folder set aside by a finished process exists; True if it did.
    """
    target = Path(target)
    if target.exists() or target.is_symlink():
        return False
    aside = [p for p in leftover_temporaries(target)
             if p.name.startswith(f".{target.name}.hierloc-old-") and p.is_dir() and not p.is_symlink()]
    if not aside:
        return False
    newest = max(aside, key=lambda p: p.stat().st_mtime)
    os.rename(newest, target)
    return True


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; if the block succeeds it replaces `path` in one step.

    The block writes the complete new folder; on failure (or a kill) `path` keeps its old content and the
    temporary folder goes (or is removed by the next successful write of `path`).
    """
    import shutil

    target = Path(path)
    if target.is_symlink() and target.is_dir():
        target = Path(os.path.realpath(target))  # replace the folder the link points to; the link stays
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OSError(f"{target}: exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(target), dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        fsync_tree(tmp)
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    remove_stale_temporaries(target)


# ---------------------------------------------------------------------------------------------- manifests
MANIFEST_FORMAT = "hierloc-manifest"
MANIFEST_VERSION = 1
CHECKSUM_ON_LOAD_BYTES = 16 << 20  # files up to this size are checksummed on every load; larger ones by size


class TornFolderError(ValueError):
    """A folder does not hold what its manifest lists (a torn or mixed write, or damage)."""


def file_crc32c(path: str | os.PathLike, chunk: int = 1 << 20, offset: int = 0) -> str:
    """CRC32C of a file (from byte `offset` to its end) as 8 hex digits (google-crc32c when installed)."""
    try:
        from google_crc32c import extend
    except ImportError:  # pragma: no cover - google-crc32c is a dependency
        from ..models.convert.crc32c import crc32c as extend
    crc = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while block := f.read(chunk):
            crc = extend(crc, block)
    return f"{crc:08x}"


def is_plain_relative_name(name: Any) -> bool:
    """Whether `name` is a relative path that stays inside its folder (no '..', not absolute, no NUL/backslash)."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts) and not os.path.isabs(name)


def write_manifest(folder: str | os.PathLike, manifest_name: str = "MANIFEST.json") -> dict:
    """List every file under `folder` (relative name, size, CRC32C) in `folder/manifest_name`, written last."""
    folder = Path(folder)
    files = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if relative == manifest_name or path.is_symlink():
                continue
            files[relative] = {"size": path.stat().st_size, "crc32c": file_crc32c(path)}
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": dict(sorted(files.items()))}
    atomic_write_text(folder / manifest_name, to_json_text(manifest, indent=1))
    return manifest


def verify_manifest(folder: str | os.PathLike, manifest_name: str = "MANIFEST.json",
                    checksum_max_bytes: int | None = CHECKSUM_ON_LOAD_BYTES) -> dict:
    """Check `folder` against its manifest: every listed file present with its size, and its CRC32C when it is
    at most `checksum_max_bytes` (None: all). TornFolderError (one line naming the folder) otherwise."""
    folder = Path(folder)
    path = folder / manifest_name
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TornFolderError(f"{folder}: incomplete or torn (no {manifest_name}, which is written last)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TornFolderError(f"{folder}: unreadable {manifest_name} ({exc})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict)
            or manifest.get("version") != MANIFEST_VERSION):
        raise TornFolderError(f"{folder}: {manifest_name} is not a {MANIFEST_FORMAT} version {MANIFEST_VERSION}")
    for name, entry in files.items():
        if not is_plain_relative_name(name):
            raise TornFolderError(f"{folder}: {manifest_name} lists {name!r}, not a plain name inside the folder")
        if (not isinstance(entry, dict) or isinstance(entry.get("size"), bool) or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("crc32c"), str)):
            raise TornFolderError(f"{folder}: {manifest_name} has a malformed entry for {name!r}")
        file = folder / name
        try:
            size = file.stat().st_size if file.is_file() and not file.is_symlink() else None
        except OSError:
            size = None
        if size is None:
            raise TornFolderError(f"{folder}: torn or incomplete: {name} is missing")
        if size != entry["size"]:
            raise TornFolderError(f"{folder}: torn or mixed: {name} has {size} bytes, the manifest says "
                                  f"{entry['size']}")
        if (checksum_max_bytes is None or size <= checksum_max_bytes) and file_crc32c(file) != entry["crc32c"]:
            raise TornFolderError(f"{folder}: torn, mixed or damaged: the checksum of {name} is not the one in "
                                  f"{manifest_name}")
    return manifest
