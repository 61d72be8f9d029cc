"""Rank reference descriptors for query descriptors: optional PCA fitted on the references, any search backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..index import PCA, l2_normalize, make_backend  # the package import registers every search backend


@dataclass
class Ranking:
    """Top-k references of every query, nearest first (Euclidean distance in the searched space)."""

    rows: np.ndarray  # [Q, K] int64 reference rows, -1 where fewer than K were returned
    distances: np.ndarray  # [Q, K] float32, inf where missing
    search_dim: int
    pca_dims: int | None
    backend: str


def _unit_rows(descriptors: np.ndarray, label: str) -> np.ndarray:
    descriptors = np.asarray(descriptors, np.float32)
    if descriptors.ndim != 2 or descriptors.shape[0] == 0:
        raise ValueError(f"{label} descriptors must be a non-empty [N, D] matrix, got shape {descriptors.shape}")
    if not np.isfinite(descriptors).all():
        raise ValueError(f"{label} descriptors contain NaN or infinity")
    zero = np.flatnonzero(np.linalg.norm(descriptors, axis=1) < 1e-12)
    if zero.size:
        raise ValueError(f"{label} descriptor row {zero[0]} is all zeros ({zero.size} such rows)")
    return l2_normalize(descriptors)


def rank_references(reference: np.ndarray, queries: np.ndarray, k: int, pca_dims: int | None = None,
                    backend: str = "flat", backend_params: dict[str, Any] | None = None,
                    whiten: bool = False, pca: PCA | None = None) -> Ranking:
    """k nearest references of each query, after L2 -> [PCA fitted on the references -> L2] as the original.

    `pca`: an already fitted PCA (e.g. `truncated_pca` of a larger one) instead of fitting one here.
    """
    reference = _unit_rows(reference, "reference")
    queries = _unit_rows(queries, "query")
    if reference.shape[1] != queries.shape[1]:
        raise ValueError(f"reference descriptors are {reference.shape[1]}-D but query descriptors "
                         f"{queries.shape[1]}-D: they must come from the same method")
    if pca is None and pca_dims is not None:
        pca = PCA.fit(reference, pca_dims, whiten=whiten)
    if pca is not None:
        pca_dims = pca.n_components
        reference, queries = pca.transform(reference), pca.transform(queries)
        lost = np.flatnonzero(np.linalg.norm(queries, axis=1) < 0.5)
        if lost.size:
            raise ValueError(f"query row {lost[0]} projects to zero in the PCA space (it equals the reference mean)")
    search = make_backend(backend, reference.shape[1], **(backend_params or {}))
    if not search.is_trained:
        search.train(reference)
    search.add(reference)
    k = min(int(k), len(reference))
    distances, rows = search.search(queries, k)
    return Ranking(rows.astype(np.int64), distances.astype(np.float32), reference.shape[1], pca_dims, backend)


def truncated_pca(pca: PCA, dims: int) -> PCA:
    """The PCA to `dims` components taken from a larger fitted one (the same top principal axes)."""
    if not 1 <= dims <= pca.n_components:
        raise ValueError(f"cannot take {dims} components of a PCA with {pca.n_components}")
    return PCA(pca.mean, pca.components[:dims], pca.explained_variance[:dims], pca.whiten, pca.num_fit_samples)
