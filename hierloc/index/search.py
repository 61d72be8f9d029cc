"""Nearest-neighbour search structures behind one small interface, chosen by name from a registry.

Every backend stores unit vectors and answers with Euclidean distances and row numbers (the order
in which vectors were added, renumbered after removals). Backends built on faiss can be written to
a file and read back, memory-mapped where faiss allows it (see `FaissSearch.read`).
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import faiss
import numpy as np
import torch

from hierloc.utils.io import atomic_path

# Descriptors are unit vectors up to float32 rounding (and float16 storage); this is loose enough
# for both and still catches raw, unnormalised features.
UNIT_NORM_TOLERANCE = 1e-2
# Exact search ranks queries in chunks whose score matrix has at most this many entries (see FlatSearch).
SCORE_BLOCK_ELEMENTS = 64 * 2**20


class SearchBackend(abc.ABC):
    """A searchable set of `dim`-dimensional vectors; searches may run concurrently once adding is over."""

    name: ClassVar[str] = ""
    # True for structures that learn from the data (quantizers, coarse clusters) before adding.
    needs_training: ClassVar[bool] = False

    def __init__(self, dim: int) -> None:
        if int(dim) < 1:
            raise ValueError(f"search dimension must be positive, got {dim}")
        self.dim = int(dim)

    @abc.abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append (N, dim) vectors; their row numbers continue from len(self)."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (distances (B, k) float32, indices (B, k) int64), nearest first, inf / -1 where missing."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of vectors added."""

    @property
    def is_trained(self) -> bool:
        """Whether `add` may be called (structures that need training are untrained until `train`)."""
        return True

    def train(self, vectors: np.ndarray) -> None:
        """Learn the structure's parameters from representative (N, dim) vectors (no-op unless needed)."""

    def remove(self, rows: np.ndarray) -> None:
        """Delete the given rows; the remaining ones are renumbered 0..len-1 in their previous order."""
        raise NotImplementedError(f"{self.name} search cannot remove vectors")

    def reset(self) -> None:
        """Drop all vectors, keeping what was learnt in training."""
        raise NotImplementedError(f"{self.name} search cannot be reset")

    def params(self) -> dict[str, Any]:
        """JSON-serialisable constructor parameters that rebuild an equivalent (empty) backend."""
        return {}

    def memory_bytes(self) -> int:
        """Bytes the structure occupies in RAM (what it would take to store it), or -1 if unknown."""
        return -1

    def disk_bytes(self) -> int:
        """Bytes kept on disk and memory-mapped rather than in RAM once read back (not in memory_bytes)."""
        return 0

    @classmethod
    def companion_paths(cls, path: str | os.PathLike) -> list[Path]:
        """Files that `write(path)` puts next to `path` besides `path` itself (to move or delete with it)."""
        return []

    def _checked(self, vectors: np.ndarray, label: str) -> np.ndarray:
        array = np.asarray(vectors)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"{self.name} search: {label} must have shape (n, {self.dim}), got {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{self.name} search: {label} must be real numbers, got dtype {array.dtype}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"{self.name} search: {label} contain NaN or infinity")
        return array

    def _check_unit(self, vectors: np.ndarray, label: str) -> None:
        norms = np.linalg.norm(vectors, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE)
        if bad.size:
            raise ValueError(
                f"{self.name} search compares unit vectors, but {label} row {bad[0]} has norm {norms[bad[0]]:.4g}; "
                "L2-normalise them first"
            )

    @staticmethod
    def _check_k(k: int) -> int:
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return int(k)


_Backend = TypeVar("_Backend", bound=type[SearchBackend])
_REGISTRY: dict[str, type[SearchBackend]] = {}


def register_backend(kind: str) -> Callable[[_Backend], _Backend]:
    """Class decorator that makes a SearchBackend available to make_backend under `kind`."""

    def decorator(cls: _Backend) -> _Backend:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"a search backend named {kind!r} is already registered ({_REGISTRY[kind].__name__})")
        cls.name = kind
        _REGISTRY[kind] = cls
        return cls

    return decorator


def available_backends() -> list[str]:
    """Names accepted by make_backend."""
    return sorted(_REGISTRY)


def backend_class(kind: str) -> type[SearchBackend]:
    """The SearchBackend class registered under `kind`."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown search backend {kind!r}; available: {', '.join(available_backends())}")
    return _REGISTRY[kind]


def make_backend(kind: str, dim: int, **params: Any) -> SearchBackend:
    """Create an empty search backend by name, passing `params` to its constructor."""
    return backend_class(kind)(dim, **params)


def remove_side_file(path: str | os.PathLike) -> None:
    """Delete a structure file written by some backend's `write(path)` and the files written beside it."""
    path = Path(path)
    companions = {p for cls in _REGISTRY.values() for p in cls.companion_paths(path)}
    for file in (path, *sorted(companions)):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()


def squared_to_euclidean(squared: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """faiss L2 results (squared distances, labels) -> (float32 distances, int64 rows) with inf / -1 misses."""
    missing = indices < 0
    distances = np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)
    distances[missing] = np.inf
    rows = indices.astype(np.int64)
    rows[missing] = -1
    return distances, rows


class _ByteCounter:
    """A faiss writer callback that only counts bytes, to size an index without a second copy of it."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self, chunk: bytes) -> None:
        self.total += len(chunk)


class FaissSearch(SearchBackend):
    """Shared plumbing of faiss-based backends: adding, file I/O (optionally memory-mapped) and sizing.

    Subclasses create `self._index` (a faiss index whose labels are row numbers) and may override
    `_faiss_search` for search-time parameters.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._index: faiss.Index | None = None
        self._lock = threading.Lock()
        self._read_only = False

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying faiss index (for inspection; use the backend's methods to change it)."""
        return self._index

    @property
    def read_only(self) -> bool:
        """True when the index was memory-mapped from a file: it can be searched but not changed."""
        return self._read_only

    @property
    def is_trained(self) -> bool:
        """Whether vectors can be added."""
        return self._index is not None and bool(self._index.is_trained)

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def _check_writable(self, action: str) -> None:
        if self._read_only:
            raise RuntimeError(
                f"cannot {action}: this {self.name} index was memory-mapped read-only; load it with mmap=False"
            )

    def train(self, vectors: np.ndarray) -> None:
        """Learn the structure from (N, dim) unit vectors."""
        self._check_writable("train")
        array = self._checked(vectors, "training vectors")
        self._check_unit(array, "training vectors")
        with self._lock:
            self._train(array)

    def _train(self, vectors: np.ndarray) -> None:
        self._index.train(vectors)

    def add(self, vectors: np.ndarray) -> None:
        """Append (N, dim) unit vectors."""
        self._check_writable("add vectors")
        array = self._checked(vectors, "vectors")
        self._check_unit(array, "vectors")
        if not self.is_trained:
            raise RuntimeError(f"{self.name} search must be trained before vectors are added (call train first)")
        with self._lock:
            self._add(array)

    def _add(self, vectors: np.ndarray) -> None:
        self._index.add(vectors)

    def reset(self) -> None:
        """Drop all vectors but keep what was learnt in training."""
        self._check_writable("reset")
        with self._lock:
            self._index.reset()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the k nearest stored vectors per query as Euclidean distances and row indices."""
        k = self._check_k(k)
        array = self._checked(queries, "queries")
        self._check_unit(array, "queries")
        if len(self) == 0:
            return np.full((len(array), k), np.inf, np.float32), np.full((len(array), k), -1, np.int64)
        return self._faiss_search(array, k)

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        squared, labels = self._index.search(queries, k)
        return squared_to_euclidean(squared, labels)

    def memory_bytes(self) -> int:
        """Size of the serialised faiss index, which is what it occupies in memory up to small overheads."""
        counter = _ByteCounter()
        faiss.write_index(self._index, faiss.PyCallbackIOWriter(counter))
        return counter.total

    # --- files ---------------------------------------------------------------------------------

    # faiss maps flat codes and HNSW graphs with IO_FLAG_MMAP_IFC, IVF inverted lists with IO_FLAG_MMAP.
    _mmap_flags: ClassVar[int] = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY

    def write(self, path: str | os.PathLike) -> None:
        """Write the faiss index atomically (a temporary file renamed onto `path`)."""
        with atomic_path(path, suffix=".faiss") as tmp:
            faiss.write_index(self._index, str(tmp))

    @classmethod
    def read(cls, path: str | os.PathLike, params: dict[str, Any] | None = None, mmap: bool = False) -> FaissSearch:
        """Read a backend written by `write`; `mmap` maps it read-only instead of loading it into memory."""
        path = os.fspath(path)
        try:
            index = faiss.read_index(path, cls._mmap_flags if mmap else 0)
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a readable faiss index ({str(exc).splitlines()[0][:200]})") from None
        backend = cls(index.d, **(params or {}))
        backend._attach(index)
        backend._read_only = mmap
        return backend

    def _attach(self, index: faiss.Index) -> None:
        """Adopt a faiss index read from a file (subclasses check its type and re-apply search settings)."""
        self._index = index


@register_backend("flat")
class FlatSearch(FaissSearch):
    """Exact search by inner product on unit vectors (faiss IndexFlatIP), reported as Euclidean distance."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._index = faiss.IndexFlatIP(self.dim)

    def _attach(self, index: faiss.Index) -> None:
        if not isinstance(index, faiss.IndexFlatIP):
            raise ValueError(f"expected a faiss IndexFlatIP for flat search, got {type(index).__name__}")
        self._index = index

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by torch matrix products over faiss's own storage (no copy), then exact distances.

        faiss 1.15's CPU wheel scans for a few queries on one thread per query and its bundled BLAS
        was 5x slower than torch's for batches here, so faiss only stores the vectors (adding,
        removing, files, memory-mapping) and torch ranks them (bench/search.py compares both).
        The distances of the k winners are recomputed as |q - x| rather than from 2 - 2 q.x, so a
        stored copy of the query is at distance 0 instead of float32 rounding noise (~3e-4).
        """
        count = len(self)
        stored = faiss.rev_swig_ptr(self._index.get_xb(), count * self.dim).reshape(count, self.dim)
        with warnings.catch_warnings():
            # Memory-mapped storage is read-only; it is only read here.
            warnings.simplefilter("ignore", UserWarning)
            database = torch.from_numpy(stored)
        k_found = min(k, count)
        distances = np.full((len(queries), k), np.inf, np.float32)
        indices = np.full((len(queries), k), -1, np.int64)
        # Bounds the score matrix and the gathered winners of one chunk of queries to about 256 MB each.
        chunk = max(1, SCORE_BLOCK_ELEMENTS // max(count, k_found * self.dim))
        for start in range(0, len(queries), chunk):
            block = torch.from_numpy(queries[start:start + chunk])
            top_rows = torch.topk(block @ database.T, k_found, dim=1).indices
            exact = torch.linalg.vector_norm(database[top_rows] - block[:, None, :], dim=2)
            exact, order = torch.sort(exact, dim=1, stable=True)
            distances[start:start + chunk, :k_found] = exact.numpy()
            indices[start:start + chunk, :k_found] = torch.gather(top_rows, 1, order).numpy()
        return distances, indices

    def remove(self, rows: np.ndarray) -> None:
        """Delete rows; IndexFlat compacts its storage, so the others keep their order."""
        self._check_writable("remove vectors")
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        with self._lock:
            self._index.remove_ids(faiss.IDSelectorBatch(rows))

