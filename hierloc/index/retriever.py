"""Keyframe retrieval: query global descriptors -> nearest indexed keyframes, nearest first."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from hierloc.index.descriptor_index import DescriptorIndex
from hierloc.index.errors import IndexCompatibilityError
from hierloc.index.native_format import IndexCatalog
from hierloc.index.pca import PCA, l2_normalize
from hierloc.index.search import SearchBackend, make_backend

_ZERO_NORM = 1e-12


@dataclass(frozen=True, eq=False)
class Retrieval:
    """One retrieved keyframe; `distance` is Euclidean in the searched (possibly PCA) space."""

    rank: int  # 0 for the nearest
    keyframe_id: str
    mission: str
    name: str
    distance: float
    index_position: int  # row of the keyframe in the DescriptorIndex
    position: np.ndarray | None  # (3,) read-only, if the index stores poses
    rotation: np.ndarray | None  # (3, 3) read-only, if the index stores poses

    def __eq__(self, other: object) -> bool:
        # Field by field, with the pose arrays compared by value (the generated __eq__ cannot).
        if not isinstance(other, Retrieval):
            return NotImplemented
        return all(
            np.array_equal(mine, theirs) if isinstance(mine, np.ndarray) or isinstance(theirs, np.ndarray)
            else mine == theirs
            for mine, theirs in ((getattr(self, f.name), getattr(other, f.name)) for f in fields(self))
        )


def _read_only(array: np.ndarray | None) -> np.ndarray | None:
    if array is None:
        return None
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


def search_space_vectors(descriptors: np.ndarray, pca: PCA | None, label: str) -> np.ndarray:
    """(N, D) descriptors -> unit vectors in the searched space (L2, or the PCA's L2 -> project -> L2)."""
    norms = np.linalg.norm(descriptors, axis=1)
    zero = np.flatnonzero(norms < _ZERO_NORM)
    if zero.size:
        raise ValueError(f"{label} row {zero[0]} is all zeros and has no direction to search")
    if pca is None:
        return l2_normalize(descriptors)
    projected = pca.transform(descriptors)
    lost = np.flatnonzero(np.linalg.norm(projected, axis=1) < 0.5)
    if lost.size:
        raise ValueError(f"{label} row {lost[0]} projects to zero in the PCA space (it equals the map mean)")
    return projected


class Retriever:
    """Searches a DescriptorIndex; built once, then safe to query from many threads at the same time."""

    def __init__(
        self,
        index: DescriptorIndex,
        *,
        pca_dims: int | None = None,
        pca: PCA | None = None,
        whiten: bool = False,
        backend: str | SearchBackend = "flat",
        backend_params: dict[str, Any] | None = None,
    ) -> None:
        """Fit (or reuse) a PCA if asked, then load the L2-normalised (projected) map descriptors into `backend`.

        `backend` is a registered name (the structure is trained on the map if it learns) or an
        already filled SearchBackend holding exactly the index's rows in the searched space (e.g. one
        read from the file stored next to the index, with `pca` the PCA it was built with).
        """
        index.validate()
        self._set_rows(index)
        self._pca = self._choose_pca(index, pca_dims, pca, whiten)
        search_dim = self._pca.n_components if self._pca is not None else self._descriptor_size
        if isinstance(backend, SearchBackend):
            if backend_params:
                raise ValueError("backend_params only apply when the backend is given by name")
            self._backend = self._checked_backend(backend, len(index), search_dim)
            return
        from hierloc.index.approximate import build_backend

        vectors = (self._prepare(index.descriptors, "map descriptors") if len(index)
                   else np.zeros((0, search_dim), np.float32))
        self._backend = (build_backend(backend, vectors, backend_params) if len(index)
                         else make_backend(backend, search_dim, **(backend_params or {})))

    @classmethod
    def from_catalog(cls, catalog: IndexCatalog, backend: SearchBackend, pca: PCA | None = None) -> Retriever:
        """A retriever over a filled search structure and a catalog's rows, without loading any descriptors.

        `pca` is the projection the structure's vectors went through (None: raw L2-normalised descriptors).
        """
        if pca is not None and pca.input_dim != catalog.descriptor_size:
            raise IndexCompatibilityError(
                f"the PCA takes {pca.input_dim}-D descriptors but the index of map {catalog.data_name!r} "
                f"holds {catalog.descriptor_size}-D ones (model {catalog.model_name!r})"
            )
        retriever = cls.__new__(cls)
        retriever._set_rows(catalog)
        retriever._pca = pca
        search_dim = pca.n_components if pca is not None else catalog.descriptor_size
        retriever._backend = cls._checked_backend(backend, len(catalog), search_dim)
        return retriever

    @staticmethod
    def _checked_backend(backend: SearchBackend, rows: int, search_dim: int) -> SearchBackend:
        if backend.dim != search_dim:
            raise IndexCompatibilityError(
                f"the {backend.name} search structure holds {backend.dim}-D vectors, "
                f"but {search_dim}-D ones are searched"
            )
        if len(backend) != rows:
            raise IndexCompatibilityError(
                f"the {backend.name} search structure holds {len(backend)} vectors, but the index has {rows} keyframes"
            )
        return backend

    def _set_rows(self, index: DescriptorIndex | IndexCatalog) -> None:
        self._model_name = index.model_name
        self._data_name = index.data_name
        self._descriptor_size = index.descriptor_size
        # Private immutable copies: nothing that a query reads can change under it.
        self._keyframe_ids = tuple(index.keyframe_ids)
        self._missions = tuple(index.missions)
        self._names = tuple(index.names)
        self._positions = _read_only(index.positions)
        self._rotations = _read_only(index.rotations)

    def _choose_pca(self, index: DescriptorIndex, pca_dims: int | None, pca: PCA | None, whiten: bool) -> PCA | None:
        if pca is not None:
            if pca.input_dim != index.descriptor_size:
                raise IndexCompatibilityError(
                    f"the PCA takes {pca.input_dim}-D descriptors but the index of map {index.data_name!r} "
                    f"holds {index.descriptor_size}-D ones (model {index.model_name!r})"
                )
            if pca_dims is not None and pca_dims != pca.n_components:
                raise ValueError(f"pca_dims={pca_dims} contradicts the given PCA with {pca.n_components} components")
            return pca
        if pca_dims is None:
            return None
        stored = index.pca
        if stored is not None and stored.n_components == pca_dims and stored.whiten == bool(whiten):
            return stored
        return PCA.fit(index.descriptors, pca_dims, whiten=whiten)

    @property
    def model_name(self) -> str:
        """Model that built the index."""
        return self._model_name

    @property
    def descriptor_size(self) -> int:
        """Size of the descriptors that queries must have."""
        return self._descriptor_size

    @property
    def search_dim(self) -> int:
        """Size of the vectors actually searched (the PCA size if any)."""
        return self._backend.dim

    @property
    def pca(self) -> PCA | None:
        """The PCA in use (assign it to `index.pca` and save the native format to reuse it)."""
        return self._pca

    @property
    def backend(self) -> SearchBackend:
        """The search structure holding the map vectors."""
        return self._backend

    def __len__(self) -> int:
        return len(self._backend)

    def _prepare(self, descriptors: np.ndarray, label: str) -> np.ndarray:
        return search_space_vectors(descriptors, self._pca, label)

    def _check_queries(self, query_descriptors: np.ndarray) -> np.ndarray:
        queries = np.asarray(query_descriptors)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2:
            raise ValueError(f"query descriptors must be (D,) or (B, D), got shape {np.shape(query_descriptors)}")
        if queries.shape[1] != self._descriptor_size:
            raise IndexCompatibilityError(
                f"query descriptors have size {queries.shape[1]}, but the index of map {self._data_name!r} "
                f"expects size {self._descriptor_size} (it was built by model {self._model_name!r})"
            )
        if not (np.issubdtype(queries.dtype, np.floating) or np.issubdtype(queries.dtype, np.integer)):
            raise ValueError(f"query descriptors must be real numbers, got dtype {queries.dtype}")
        queries = queries.astype(np.float32, copy=False)
        if not np.isfinite(queries).all():
            raise ValueError("query descriptors contain NaN or infinity")
        return queries

    def search(
        self, query_descriptors: np.ndarray, k: int = 20, max_distance: float = math.inf
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (distances (B, k), rows (B, k)) nearest first; inf / -1 where fewer than k are within max_distance."""
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        max_distance = float(max_distance)
        if math.isnan(max_distance) or max_distance < 0:
            raise ValueError(f"max_distance must be a non-negative number, got {max_distance}")
        queries = self._check_queries(query_descriptors)
        if len(queries) == 0:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        distances, rows = self._backend.search(self._prepare(queries, "query descriptors"), k)
        beyond = distances > max_distance
        distances[beyond] = np.inf
        rows[beyond] = -1
        return distances, rows

    def retrieve(
        self, query_descriptors: np.ndarray, k: int = 20, max_distance: float = math.inf
    ) -> list[list[Retrieval]]:
        """Return, for each (D,) or (B, D) query, up to k keyframes within max_distance, nearest first."""
        distances, rows = self.search(query_descriptors, k, max_distance)
        results: list[list[Retrieval]] = []
        for query_distances, query_rows in zip(distances.tolist(), rows.tolist()):
            hits: list[Retrieval] = []
            for distance, row in zip(query_distances, query_rows):
                if row < 0:
                    continue
                hits.append(
                    Retrieval(
                        rank=len(hits),
                        keyframe_id=self._keyframe_ids[row],
                        mission=self._missions[row],
                        name=self._names[row],
                        distance=distance,
                        index_position=row,
                        position=None if self._positions is None else self._positions[row],
                        rotation=None if self._rotations is None else self._rotations[row],
                    )
                )
            results.append(hits)
        return results
