"""A trained search structure stored next to a native index file, and retrievers that use it.

`map.h5` keeps the descriptors, rows and PCA; a built approximate structure goes into a side file
`map.h5.<token>.faiss` (faiss's own format, so that it can be memory-mapped) and the h5 metadata
records it under "search_index": kind, parameters, file name, size, PCA use and a fingerprint of the
rows. Saving writes the side file first and the h5 last (both atomically), so the h5 always names a
complete side file; a new token per save means a stale or foreign side file is never mistaken for
the current one. An index without (or with an unusable) side file still works: its structure is
rebuilt from the stored descriptors, with a warning for approximate kinds.

The record is untrusted input, checked when read:
- Its file name must be a plain name of the form hierloc writes (`<name>.<8 hex digits>.faiss`, no
  folder, no ".."): any other name is never opened. hierloc deletes a previous side file (after a
  successful save) only when its name is exactly `<this index's file name>.<token>.faiss` in the
  index's folder, so a record naming another file cannot make it delete that file.
- A CRC-32C of the side file (and of the files written beside it, see `companion_paths`) is stored
  under "crc32c" and verified when loading, which reads the files once. A side file damaged without
  a change of size is therefore unusable like a missing one: a warning, and the structure is rebuilt
  from the stored descriptors (which the h5 protects with its own checksums). Records written before
  the checksum existed load without the check.
- A record with fields of the wrong type or out of range is ignored with a warning: exact search.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import google_crc32c
import numpy as np

from hierloc.index.approximate import build_backend, resolve_backend
from hierloc.index.descriptor_index import DescriptorIndex
from hierloc.index.errors import IndexFormatError
from hierloc.index.io import detect_format, load_index, save_index
from hierloc.index.native_format import IndexCatalog, read_native_catalog, read_native_metadata
from hierloc.index.pca import PCA
from hierloc.index.retriever import Retriever, search_space_vectors
from hierloc.index.search import FaissSearch, SearchBackend, available_backends, backend_class, remove_side_file

logger = logging.getLogger(__name__)

SEARCH_METADATA_KEY = "search_index"
SIDE_FILE_SUFFIX = ".faiss"
# Rows projected at a time when building, so that a PCA of a huge map needs no second full copy.
_PROJECT_CHUNK = 65536
# Side file names hierloc writes: "<index file name>.<8 hex digits>.faiss". Read: any such plain name (an
# index copied under another name still finds its structure); deleted: only the index's own prefix.
_TOKEN_PATTERN = r"\.[0-9a-f]{8}" + re.escape(SIDE_FILE_SUFFIX)
_SIDE_NAME = re.compile(r"[^/\\\x00]+" + _TOKEN_PATTERN)
# Upper bounds of the record's numbers: far beyond any real map, far below what would exhaust memory.
_MAX_COUNT = 2**40
_MAX_DIM = 2**20
_CRC_CHUNK = 2**22


@dataclass
class StoredSearchInfo:
    """What the h5 metadata records about the search structure stored next to it."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    file: str | None = None  # side file name, relative to the index's folder; None: rebuilt on load (flat)
    dim: int = 0
    count: int = 0
    pca: bool = False  # whether the vectors went through the index's stored PCA
    rows_sha256: str = ""
    bytes: int = 0
    crc32c: str = ""  # of the side file and its companions, 8 hex digits; "" in records older than the checksum

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the index metadata."""
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], source: str | os.PathLike | None = None
                      ) -> StoredSearchInfo | None:
        """The record in an index's metadata, or None (with a warning) if it has none or an invalid one."""
        value = metadata.get(SEARCH_METADATA_KEY)
        if value is None:
            return None
        problem = _record_problem(value)
        if problem is None:
            try:
                return cls(**value)
            except TypeError as exc:
                problem = str(exc)
        logger.warning("%s: ignoring its invalid %r record (%s): exact search instead",
                       "the index" if source is None else os.fspath(source), SEARCH_METADATA_KEY, problem)
        return None


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _record_problem(value: Any) -> str | None:
    """Why a "search_index" record cannot be used (wrong types, out-of-range numbers), or None."""
    if not isinstance(value, dict):
        return f"a {type(value).__name__}, not an object"
    unknown = sorted(set(value) - {f for f in StoredSearchInfo.__dataclass_fields__})
    if unknown:
        return f"unknown fields {unknown}"
    kind = value.get("kind")
    if not isinstance(kind, str) or kind not in available_backends():
        return f"kind {kind!r} is not one of {available_backends()}"
    params = value.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(key, str) for key in params):
        return "params is not an object"
    name = value.get("file")
    if name is not None and not isinstance(name, str):
        return f"file is a {type(name).__name__}, not a name"
    for label, low, high in (("dim", 0, _MAX_DIM), ("count", 0, _MAX_COUNT), ("bytes", 0, 2**62)):
        if not _is_int(value.get(label, 0), low, high):
            return f"{label} {value.get(label)!r} is not an integer in [{low}, {high}]"
    if not isinstance(value.get("pca", False), bool):
        return "pca is not true or false"
    for label, pattern in (("rows_sha256", r"([0-9a-f]{64})?"), ("crc32c", r"([0-9a-f]{8})?")):
        text = value.get(label, "")
        if not isinstance(text, str) or not re.fullmatch(pattern, text):
            return f"{label} is not a hex digest"
    if value.get("dim", 0) >= 1:
        try:  # the constructor checks each parameter's type and range; an empty structure costs nothing
            backend_class(kind)(value["dim"], **params)
        except (TypeError, ValueError) as exc:
            return f"params {params}: {exc}"
    return None


def is_side_file_name(name: str) -> bool:
    """True for a plain side file name of the form hierloc writes (no folder, no '..')."""
    return bool(_SIDE_NAME.fullmatch(name)) and not name.startswith(".")


def owned_side_file(index_path: str | os.PathLike, name: str | None) -> Path | None:
    """The side file `name` in the index's folder if its name is one this index's saves write, else None.

    Only such files are ever deleted: `<index file name>.<8 hex digits>.faiss`, in the same folder.
    """
    index_path = Path(index_path)
    if name is None or not re.fullmatch(re.escape(index_path.name) + _TOKEN_PATTERN, name):
        return None
    return index_path.with_name(name)


def files_crc32c(paths: Sequence[Path]) -> str:
    """CRC-32C (8 hex digits) of the files' bytes in order, read in chunks."""
    checksum = google_crc32c.Checksum()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(_CRC_CHUNK):
                checksum.update(block)
    return checksum.digest().hex()


def _side_files(side: Path, kind: str) -> list[Path]:
    return [side, *backend_class(kind).companion_paths(side)]


def rows_fingerprint(keyframe_ids: Sequence[str]) -> str:
    """SHA-256 of the keyframe ids in row order: ties a side file to exactly these rows."""
    digest = hashlib.sha256()
    for kf_id in keyframe_ids:
        digest.update(kf_id.encode("ascii"))
    return digest.hexdigest()


def project_map(descriptors: np.ndarray, pca: PCA | None) -> np.ndarray:
    """All map descriptors as unit vectors of the searched space, projected in chunks."""
    dim = pca.n_components if pca is not None else descriptors.shape[1]
    out = np.empty((len(descriptors), dim), np.float32)
    for start in range(0, len(descriptors), _PROJECT_CHUNK):
        chunk = descriptors[start:start + _PROJECT_CHUNK]
        out[start:start + len(chunk)] = search_space_vectors(chunk, pca, f"map descriptors (from row {start})")
    return out


def build_search(
    index: DescriptorIndex,
    kind: str = "auto",
    params_by_kind: dict[str, dict[str, Any]] | None = None,
    pca_dims: int | None = None,
    whiten: bool = False,
) -> SearchBackend:
    """Fit the PCA (kept in `index.pca`) if asked, then train and fill a search structure of `kind`."""
    if pca_dims is not None:
        if index.pca is None or index.pca.n_components != pca_dims or index.pca.whiten != whiten:
            index.pca = PCA.fit(index.descriptors, pca_dims, whiten=whiten)
        pca = index.pca
    else:
        pca = None
    vectors = project_map(index.descriptors, pca)
    kind, params = resolve_backend(kind, len(index), vectors.shape[1], params_by_kind)
    logger.info("building %s search over %d keyframes (%d-D)%s", kind, len(index), vectors.shape[1],
                f" with {params}" if params else "")
    return build_backend(kind, vectors, params)


def side_file_path(index_path: str | os.PathLike, info: StoredSearchInfo) -> Path | None:
    """Where the side file of `info` lives for the index at `index_path` (None if it has none).

    Raises ValueError for a recorded name that is not a plain side file name (see `is_side_file_name`).
    """
    if info.file is None:
        return None
    if not is_side_file_name(info.file):
        raise ValueError(f"the recorded side file name {info.file!r} is not a plain name hierloc writes")
    return Path(index_path).with_name(info.file)


def save_index_with_search(
    index: DescriptorIndex, backend: SearchBackend, path: str | os.PathLike, pca: PCA | None = None, **options
) -> Path | None:
    """Save a native index and its search structure (side file for faiss structures); return the side file.

    `pca` is the projection the backend's vectors went through; it must be `index.pca` (the one
    the h5 stores). `options` go to the native writer (dtype, compression).
    """
    path = Path(path)
    if path.suffix.lower() in (".pb", ".proto", ".protobuf"):
        raise ValueError(f"{path}: a stored search structure needs the native .h5 format, not protobuf")
    if pca is not None and pca is not index.pca:
        raise ValueError("the search structure's PCA must be the index's own (set index.pca to it first)")
    previous = _referenced_side_file(path)
    info = StoredSearchInfo(kind=backend.name, params=backend.params(), dim=backend.dim, count=len(backend),
                            pca=pca is not None, rows_sha256=rows_fingerprint(index.keyframe_ids))
    if len(backend) != len(index):
        raise ValueError(f"the search structure holds {len(backend)} vectors but the index has {len(index)} rows")
    side = None
    # Exact flat search is rebuilt from the descriptors in milliseconds per thousand rows: no side file.
    if isinstance(backend, FaissSearch) and backend.name != "flat":
        info.file = f"{path.name}.{secrets.token_hex(4)}{SIDE_FILE_SUFFIX}"
        side = path.with_name(info.file)
        backend.write(side)
        info.bytes = side.stat().st_size
        info.crc32c = files_crc32c(_side_files(side, backend.name))
    index.metadata[SEARCH_METADATA_KEY] = info.to_json()
    try:
        save_index(index, path, format="native", **options)
    except BaseException:
        if side is not None:
            remove_side_file(side)  # and the files written beside it (an ivfpq-mmap copy)
        raise
    if previous is not None and previous != side:
        remove_side_file(previous)
    return side


def _referenced_side_file(path: Path) -> Path | None:
    if not path.is_file():
        return None
    try:
        info = StoredSearchInfo.from_metadata(read_native_metadata(path), path)
    except (IndexFormatError, OSError, ValueError):
        return None
    return None if info is None else owned_side_file(path, info.file)


def load_stored_search(
    path: str | os.PathLike, rows: DescriptorIndex | IndexCatalog, mmap: bool = True
) -> tuple[SearchBackend, StoredSearchInfo] | None:
    """Read the structure stored next to the index at `path` if it matches `rows`; None (with a warning) if not."""
    info = StoredSearchInfo.from_metadata(rows.metadata, path)
    if info is None or info.file is None:
        return None
    try:
        side = side_file_path(path, info)
    except ValueError:  # a name with a folder in it: not one this module wrote
        side = None
    problem = None
    if side is None:
        problem = f"the recorded file name {info.file!r} is not a plain file name"
    elif not side.is_file():
        problem = f"its file {side} is missing"
    elif info.count != len(rows) or info.rows_sha256 != rows_fingerprint(rows.keyframe_ids):
        problem = "it was built for other rows (the index was changed without it)"
    elif info.pca and (rows.pca is None or rows.pca.n_components != info.dim):
        problem = "the PCA it was built with is not in the index"
    elif side.stat().st_size != info.bytes:
        problem = f"{side} has {side.stat().st_size} bytes, {info.bytes} were written"
    elif info.crc32c:
        try:
            actual = files_crc32c(_side_files(side, info.kind))
        except OSError as exc:
            problem = f"a file of its structure is unreadable ({exc})"
        else:
            if actual != info.crc32c:
                problem = f"{side} (or a file written beside it) fails its CRC-32C check: it was damaged"
    if problem is None:
        try:
            backend = backend_class(info.kind).read(side, info.params, mmap=mmap)
        except (ValueError, TypeError) as exc:  # TypeError: recorded params the backend does not take
            problem = str(exc)
        else:
            if len(backend) != len(rows) or backend.dim != info.dim:
                problem = f"{side} holds {len(backend)} {backend.dim}-D vectors, not {len(rows)} {info.dim}-D ones"
            else:
                return backend, info
    logger.warning("%s: not using the stored %s search structure: %s", path, info.kind, problem)
    return None


def retriever_for_index(
    index: DescriptorIndex,
    path: str | os.PathLike | None = None,
    pca_dims: int | None = None,
    mmap: bool = False,
    _tried_stored: bool = False,
) -> Retriever:
    """A Retriever for a loaded index: its stored structure if usable, else one rebuilt as recorded (or flat)."""
    info = StoredSearchInfo.from_metadata(index.metadata, path)
    if info is None:
        return Retriever(index, pca_dims=pca_dims)
    stored_dims = info.dim if info.pca else None
    if pca_dims is not None and pca_dims != stored_dims:
        logger.warning("the index's %s search runs %s; --pca-dims %d asks for another space: exact search instead",
                       info.kind, f"after PCA to {stored_dims}" if stored_dims else "on raw descriptors", pca_dims)
        return Retriever(index, pca_dims=pca_dims)
    pca = index.pca if info.pca else None
    if info.pca and pca is None:
        logger.warning("the index lost the PCA its search structure used: exact search on raw descriptors instead")
        return Retriever(index)
    loaded = load_stored_search(path, index, mmap=mmap) if path is not None and not _tried_stored else None
    if loaded is not None:
        return Retriever(index, pca=pca, backend=loaded[0])
    if info.kind != "flat":
        logger.warning("rebuilding the %s search structure of %s from its descriptors", info.kind, path or "the index")
    return Retriever(index, pca=pca, backend=info.kind, backend_params=info.params)


def load_retriever(path: str | os.PathLike, pca_dims: int | None = None, mmap: bool = True) -> Retriever:
    """Open an index file for retrieval; a stored structure is memory-mapped and no descriptor is loaded."""
    tried = False
    if detect_format(path) == "native":
        catalog = read_native_catalog(path)
        info = StoredSearchInfo.from_metadata(catalog.metadata, path)
        matches = info is not None and (pca_dims is None or (info.pca and pca_dims == info.dim))
        if matches and info.file is not None:
            tried = True
            loaded = load_stored_search(path, catalog, mmap=mmap)
            if loaded is not None:
                return Retriever.from_catalog(catalog, loaded[0], catalog.pca if info.pca else None)
    return retriever_for_index(load_index(path), path, pca_dims=pca_dims, mmap=mmap, _tried_stored=tried)
