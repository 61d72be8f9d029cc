"""Nearest-neighbour search structures behind one small interface, chosen by name from a registry."""

from __future__ import annotations

import abc
import threading
from typing import Any, Callable, ClassVar, TypeVar

import faiss
import numpy as np

# Descriptors are unit vectors up to float32 rounding (and float16 storage); this is loose enough
# for both and still catches raw, unnormalised features.
UNIT_NORM_TOLERANCE = 1e-2


class SearchBackend(abc.ABC):
    """A searchable set of `dim`-dimensional vectors; searches may run concurrently once adding is over."""

    name: ClassVar[str] = ""

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


def make_backend(kind: str, dim: int, **params: Any) -> SearchBackend:
    """Create an empty search backend by name, passing `params` to its constructor."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown search backend {kind!r}; available: {', '.join(available_backends())}")
    return _REGISTRY[kind](dim, **params)


@register_backend("flat")
class FlatSearch(SearchBackend):
    """Exact search by inner product on unit vectors (faiss IndexFlatIP), reported as Euclidean distance."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._index = faiss.IndexFlatIP(self.dim)
        self._add_lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _check_unit(self, vectors: np.ndarray, label: str) -> None:
        norms = np.linalg.norm(vectors, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE)
        if bad.size:
            raise ValueError(
                f"flat search compares unit vectors, but {label} row {bad[0]} has norm {norms[bad[0]]:.4g}; "
                "L2-normalise them first"
            )

    def add(self, vectors: np.ndarray) -> None:
        """Append (N, dim) unit vectors."""
        array = self._checked(vectors, "vectors")
        self._check_unit(array, "vectors")
        with self._add_lock:
            self._index.add(array)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the k nearest stored vectors per query as Euclidean distances and row indices."""
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        array = self._checked(queries, "queries")
        self._check_unit(array, "queries")
        similarities, indices = self._index.search(array, int(k))
        missing = indices < 0
        similarities[missing] = -1.0  # faiss fills misses with -FLT_MAX, which would overflow below
        # |a - b|^2 = 2 - 2 a.b for unit vectors; clamp the rounding that would make it negative.
        # Near zero this resolves distances only to about 3e-4 (float32 inner products).
        distances = np.sqrt(np.maximum(2.0 - 2.0 * similarities, 0.0)).astype(np.float32)
        distances[missing] = np.inf
        indices = indices.astype(np.int64)
        indices[missing] = -1
        return distances, indices
