"""PCA fitted on map descriptors to shrink global descriptors before nearest-neighbour search."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

PCA_FORMAT = "hierloc.pca"
PCA_FORMAT_VERSION = 1

_NORM_EPS = 1e-12
_SAFE_NORM_RANGE = (1e-15, 1e15)
_BOUND_TOLERANCE = 1e-3
# Rows per block when accumulating the covariance, so that a 100k x 4096 map never needs a
# second full-size float64 copy in memory.
_COVARIANCE_BLOCK_BYTES = 64 * 2**20


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit L2 norm (rows of zeros stay zero)."""
    x = np.asarray(vectors, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
    # Rows of very small or large values lose their norm to float32 under- or overflow: scale those
    # by their largest value first (the others take the plain path, unchanged to the last bit).
    extreme = ~((norms > _SAFE_NORM_RANGE[0]) & (norms < _SAFE_NORM_RANGE[1]))
    if extreme.any():
        rows = np.flatnonzero(extreme.reshape(-1)) if x.ndim > 1 else None
        part = x[rows] if rows is not None else x
        scale = np.abs(part).max(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            scaled = np.where(scale > 0, part / np.where(scale > 0, scale, 1), 0).astype(np.float32)
        fixed = scaled / np.maximum(np.linalg.norm(scaled, axis=-1, keepdims=True), _NORM_EPS)
        if rows is None:
            return fixed.astype(np.float32)
        out = x / np.maximum(norms, _NORM_EPS)
        out[rows] = fixed
        return out
    return x / np.maximum(norms, _NORM_EPS)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class PCA:
    """L2 -> mean-centre -> project on the top principal axes (-> optional whitening) -> L2."""

    mean: np.ndarray  # (D,) mean of the L2-normalised fitting descriptors
    components: np.ndarray  # (k, D) orthonormal rows, by decreasing explained variance
    explained_variance: np.ndarray  # (k,) variance along each component
    whiten: bool = False
    num_fit_samples: int = 0

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean)
        components = np.asarray(self.components)
        variance = np.asarray(self.explained_variance)
        if mean.ndim != 1 or mean.shape[0] < 1:
            raise ValueError(f"PCA mean must be a non-empty 1-D array, got shape {mean.shape}")
        if components.ndim != 2 or components.shape[1] != mean.shape[0] or components.shape[0] < 1:
            raise ValueError(
                f"PCA components must have shape (k, {mean.shape[0]}) with k >= 1, got {components.shape}"
            )
        if variance.shape != (components.shape[0],):
            raise ValueError(
                f"PCA explained_variance must have shape ({components.shape[0]},), got {variance.shape}"
            )
        for label, array in (("mean", mean), ("components", components), ("explained_variance", variance)):
            if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
                raise ValueError(f"PCA {label} must be finite real numbers")
        if (variance < 0).any():
            raise ValueError("PCA explained_variance must be non-negative")
        # Fitted on unit vectors: the mean lies in the unit ball and the variances sum to at most
        # n / (n - 1) <= 2. Anything far outside is damage, and would overflow every projection.
        if float(np.linalg.norm(mean.astype(np.float64))) > 1 + _BOUND_TOLERANCE:
            raise ValueError("PCA mean has a norm above 1; it was not fitted on unit descriptors")
        if float(variance.astype(np.float64).sum()) > 2 + _BOUND_TOLERANCE:
            raise ValueError("PCA explained_variance sums to more than 2; it was not fitted on unit descriptors")
        gram = components.astype(np.float64) @ components.astype(np.float64).T
        if not np.allclose(gram, np.eye(components.shape[0]), atol=1e-3):
            raise ValueError("PCA components are not orthonormal")
        object.__setattr__(self, "mean", _frozen(mean.astype(np.float32)))
        object.__setattr__(self, "components", _frozen(components.astype(np.float32)))
        object.__setattr__(self, "explained_variance", _frozen(variance.astype(np.float64)))
        object.__setattr__(self, "whiten", bool(self.whiten))
        object.__setattr__(self, "num_fit_samples", operator.index(self.num_fit_samples))

    @property
    def input_dim(self) -> int:
        """Size of the descriptors the PCA accepts."""
        return int(self.mean.shape[0])

    @property
    def n_components(self) -> int:
        """Size of the projected descriptors."""
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, descriptors: np.ndarray, pca_dims: int, *, whiten: bool = False) -> PCA:
        """Fit on (N, D) map descriptors, keeping the top `pca_dims` principal components."""
        x = np.asarray(descriptors)
        if x.ndim != 2:
            raise ValueError(f"PCA is fitted on an (N, D) descriptor matrix, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise ValueError(f"PCA is fitted on real numbers, got dtype {x.dtype}")
        n, d = x.shape
        try:
            k = operator.index(pca_dims)
        except TypeError:
            raise ValueError(f"pca_dims must be an integer, got {pca_dims!r}") from None
        if n == 0 or d == 0:
            raise ValueError(f"cannot fit a PCA on an empty descriptor matrix of shape {x.shape}")
        if k < 1:
            raise ValueError(f"pca_dims must be at least 1, got {k}")
        if k > min(n, d):
            raise ValueError(
                f"pca_dims={k} is larger than min(number of descriptors, descriptor size) = "
                f"min({n}, {d}) = {min(n, d)}; choose pca_dims <= {min(n, d)}"
            )
        block = max(1, _COVARIANCE_BLOCK_BYTES // (8 * d))
        mean = np.zeros(d, dtype=np.float64)
        for start in range(0, n, block):
            mean += l2_normalize(x[start : start + block]).sum(axis=0, dtype=np.float64)
        mean /= n
        if not np.isfinite(mean).all():
            raise ValueError("cannot fit a PCA on descriptors containing NaN or infinity")
        dof = max(n - 1, 1)
        if n >= d:
            # D x D covariance in float64, then only the top-k eigenpairs: far cheaper than an
            # SVD of the N x D matrix when N is large.
            covariance = np.zeros((d, d), dtype=np.float64)
            for start in range(0, n, block):
                centred = l2_normalize(x[start : start + block]).astype(np.float64) - mean
                covariance += centred.T @ centred
            eigenvalues, eigenvectors = scipy.linalg.eigh(covariance, subset_by_index=(d - k, d - 1))
            components = eigenvectors[:, ::-1].T
            variance = eigenvalues[::-1] / dof
        else:
            centred = l2_normalize(x).astype(np.float64) - mean
            _, singular_values, vt = np.linalg.svd(centred, full_matrices=False)
            components = vt[:k]
            variance = singular_values[:k] ** 2 / dof
        # Fix the arbitrary sign of each axis so that fits are reproducible across LAPACK builds.
        pivots = np.argmax(np.abs(components), axis=1)
        signs = np.sign(components[np.arange(k), pivots])
        signs[signs == 0] = 1.0
        components = components * signs[:, None]
        return cls(
            mean=mean,
            components=components,
            explained_variance=np.clip(variance, 0.0, None),
            whiten=whiten,
            num_fit_samples=n,
        )

    def transform(self, descriptors: np.ndarray) -> np.ndarray:
        """Project (D,) or (B, D) descriptors to unit-norm (k,) or (B, k) float32 vectors."""
        x = np.asarray(descriptors, dtype=np.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"PCA expects descriptors of size {self.input_dim} as (D,) or (B, D), got shape {x.shape}"
            )
        projected = (l2_normalize(x) - self.mean) @ self.components.T
        if self.whiten:
            floor = max(float(self.explained_variance.max()) * 1e-6, _NORM_EPS)
            projected = projected / np.sqrt(np.maximum(self.explained_variance, floor)).astype(np.float32)
        return l2_normalize(projected)

    def to_dict(self) -> dict[str, Any]:
        """Parameters as plain values and numpy arrays (for HDF5 groups or np.savez)."""
        return {
            "format": PCA_FORMAT,
            "version": PCA_FORMAT_VERSION,
            "mean": np.array(self.mean),
            "components": np.array(self.components),
            "explained_variance": np.array(self.explained_variance),
            "whiten": self.whiten,
            "num_fit_samples": self.num_fit_samples,
        }

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> PCA:
        """Rebuild a PCA from `to_dict()` output, raising ValueError if it is incomplete or invalid."""
        fmt = params.get("format", PCA_FORMAT)
        fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        if fmt != PCA_FORMAT:
            raise ValueError(f"not PCA parameters (format {fmt!r}, expected {PCA_FORMAT!r})")
        version = int(params.get("version", PCA_FORMAT_VERSION))
        if version > PCA_FORMAT_VERSION:
            raise ValueError(
                f"PCA parameters have version {version}, newer than the supported {PCA_FORMAT_VERSION}"
            )
        missing = [key for key in ("mean", "components", "explained_variance") if key not in params]
        if missing:
            raise ValueError(f"PCA parameters lack {', '.join(missing)}")
        return cls(
            mean=np.asarray(params["mean"]),
            components=np.asarray(params["components"]),
            explained_variance=np.asarray(params["explained_variance"]),
            whiten=bool(params.get("whiten", False)),
            num_fit_samples=int(params.get("num_fit_samples", 0)),
        )
