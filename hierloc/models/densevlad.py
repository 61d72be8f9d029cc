"""DenseVLAD: dense RootSIFT pooled by VLAD, PCA-whitened; a classical descriptor that needs no weights.

After Torii et al., "24/7 place recognition by view synthesis" (CVPR 2015). The pipeline:

  image -> grayscale -> resize (see `DenseVLADConfig`) -> SIFT on a grid at several scales (or at
  OpenCV's DoG keypoints) -> RootSIFT -> hard assignment to a k-means vocabulary -> VLAD
  residual sums -> signed square root -> intra-normalisation -> L2 -> PCA-whitening -> L2.

Fitting is reproducible: for a given seed, the vocabulary (`kmeans_float64`: Lloyd's algorithm in
float64, seeded initial centres, fixed-order sums) and the PCA (`pca_float64`: float64, one sign
convention) are the same bits whatever the thread counts of the process, because their arithmetic
runs single-threaded (torch, float64; a few seconds for the usual sizes). faiss's k-means and PCA,
used before, changed with the thread count (OpenBLAS's threaded LAPACK eigensolver does too).

Choices made for speed on small CPUs (documented in DenseVLADConfig):
- Several scales are computed on an image pyramid with one fixed SIFT patch size instead of growing
  the patch on the full image. The descriptor of a k-times larger patch on a smoothed image is
  what SIFT on the k-times smaller image gives, and OpenCV's cost per keypoint grows with the patch
  area, so this is several times faster (about 0.1-0.3 s for 640x480 on 2 cores). The grid step is
  in pixels of each pyramid level, so coarse levels are sampled more sparsely, as DoG does.
- Tiny images (Nordland's 64x32 frames) are upscaled so that their short side is `min_image_side`
  (64) before sampling: a 16-pixel SIFT patch would otherwise cover half of the frame. On Nordland
  summer -> winter, short sides 48-64 gave the best recall (128 and 256 were worse and slower).
  Small frames gain nothing from more: on the demo world (160x120 frames, seeds 0-2) a short side
  of 240 gave recall@1 0.92 / 1.00 / 0.97 against 0.98 / 0.98 / 0.98 at 64, and on Nordland (every
  10th frame) 17.9 against 18.7, 24 times slower.
- Flat patches (grey-level standard deviation below `min_patch_contrast` = 5 in the 16-px window)
  are dropped: their SIFT descriptors are zero or amplified noise that all land in one cluster, so
  blank frames, sky and snow became hubs (on Nordland 19 % of winter queries retrieved one of the 68
  black summer frames first). Dropping them raised recall@1 and @5 on Nordland; larger thresholds
  helped Nordland more (bench/densevlad.py) but would drop real content in dark images.
- Whitening divides each PCA component by sqrt(eigenvalue + mean eigenvalue): plain whitening of a
  PCA fitted on a few thousand images amplifies the noisy last components and halved recall@1.
- Small fitting sets keep the raw VLAD: a PCA fitted on n images spans at most n - 1 directions, and
  projecting a query onto them throws away everything the fitting images did not vary in (on the
  demo world, 60 frames of 160x120, seeds 0-2, the 59-D whitened descriptor scored recall@1
  0.95 / 0.98 / 0.97 where the raw 8192-D VLAD scored 0.98 each; on Nordland every 10th frame,
  358 images, 19.6 / 18.7 at R@1 and 57.3 / 59.2 at R@20). When n - 1 < `min_pca_fraction` (1/2) x
  min(`pca_dim`, K x 128), `fit` keeps the raw (power- and intra-normalised) VLAD, says so in one log
  line and records it in `info["pca"]`; between that and `pca_dim` the PCA is capped to n - 1
  components (with a warning).

A fitted DenseVLAD (vocabulary, PCA and configuration) is one `.npz` file, written atomically. It has
`describe`, `describe_batch` and `descriptor_dim`; `hierloc.describers.DenseVLADDescriber` wraps it in
the describer contract that indexing, evaluation and distillation use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.images import as_uint8, read_image
from ..utils.io import atomic_path, to_json_text
from ..utils.sampling import spread_rows

logger = logging.getLogger(__name__)

FILE_FORMAT = "hierloc.densevlad"
FILE_FORMAT_VERSION = 1
SIFT_DIM = 128
_EPS = 1e-12


@dataclass
class DenseVLADConfig:
    """Parameters of DenseVLAD; the defaults balance recall and speed on a 2-core CPU."""

    detector: str = "dense"  # "dense": grid at several scales; "dog": OpenCV's DoG keypoints (rotation-invariant)
    grid_step: int = 6  # pixels between grid points at every pyramid level
    bin_size: float = 4.0  # SIFT spatial bin in pixels (VLFeat convention: the patch is 4 x 4 bins = 16 px)
    scales: tuple[float, ...] = (1.0, 0.707, 0.5, 0.354)  # pyramid levels (image scale factors)
    max_image_side: int | None = 640  # larger images are first downscaled (area) to this long side
    min_image_side: int | None = 64  # smaller images are first upscaled (bilinear) to this short side
    max_dog_keypoints: int = 4000  # only for detector="dog": strongest keypoints kept
    min_patch_contrast: float = 5.0  # dense patches whose grey-level standard deviation is lower are dropped
    num_clusters: int = 64  # vocabulary size K; the raw VLAD has K * 128 dimensions
    power_norm: bool = True  # signed square root of the residual sums
    intra_norm: bool = True  # L2 of each cluster's block (Arandjelovic & Zisserman, CVPR 2013)
    pca_dim: int | None = 4096  # PCA output size (capped by the fitting images - 1, see below); None: raw VLAD
    # PCA only when the fitting VLADs span at least this share of pca_dim (n - 1 >= share x pca_dim);
    # a smaller fitting set keeps the raw VLAD (see the module documentation).
    min_pca_fraction: float = 0.5
    whiten: bool = True  # scale every PCA component to unit variance
    whiten_regularization: float = 1.0  # added to eigenvalues, as a share of the mean eigenvalue kept

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if self.detector not in ("dense", "dog"):
            raise ValueError(f"DenseVLAD detector must be 'dense' or 'dog', got {self.detector!r}")
        if self.grid_step < 1 or self.bin_size <= 0 or not self.scales or min(self.scales) <= 0:
            raise ValueError("DenseVLAD needs grid_step >= 1, bin_size > 0 and positive scales")
        if self.num_clusters < 1:
            raise ValueError(f"num_clusters must be positive, got {self.num_clusters}")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise ValueError(f"pca_dim must be positive or None, got {self.pca_dim}")
        if not 0.0 <= self.min_pca_fraction <= 1.0:
            raise ValueError(f"min_pca_fraction must be in [0, 1], got {self.min_pca_fraction}")

    def pca_fits(self, fitting_images: int) -> bool:
        """Whether a PCA is fitted on this many images: n - 1 >= min_pca_fraction x min(pca_dim, vlad_dim).

        False without a configured PCA, or when the images span too few directions (the raw VLAD is kept).
        """
        if self.pca_dim is None:
            return False
        return fitting_images - 1 >= max(1.0, self.min_pca_fraction * min(self.pca_dim, self.vlad_dim))

    @property
    def vlad_dim(self) -> int:
        """Size of the raw VLAD vector (before PCA)."""
        return self.num_clusters * SIFT_DIM


def config_from_dict(values: dict) -> DenseVLADConfig:
    """Rebuild a DenseVLADConfig, refusing unknown keys with a clear message."""
    known = {f.name for f in dataclasses.fields(DenseVLADConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown DenseVLAD configuration keys: {sorted(unknown)}")
    return DenseVLADConfig(**values)


# --------------------------------------------------------------------------- local features


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """HxW / HxWx1 / HxWx3 (RGB) / HxWx4 image of uint8, uint16 or float in [0, 1] -> HxW uint8."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(
            np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    if image.ndim != 2 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {image.shape}")
    return as_uint8(image)


def resize_for_sampling(gray: np.ndarray, config: DenseVLADConfig) -> np.ndarray:
    """Apply the configured size limits: downscale to max_image_side, or upscale to min_image_side."""
    height, width = gray.shape
    factor = 1.0
    if config.max_image_side and max(height, width) > config.max_image_side:
        factor = config.max_image_side / max(height, width)
    elif config.min_image_side and min(height, width) < config.min_image_side:
        factor = config.min_image_side / min(height, width)
    if factor == 1.0:
        return gray
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then element-wise square root."""
    descriptors = descriptors.astype(np.float32, copy=False)
    l1 = np.abs(descriptors).sum(axis=1, keepdims=True)
    return np.sqrt(descriptors / np.maximum(l1, _EPS))


def _patch_contrast(level: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Grey-level standard deviation in a size x size window around each (x, y) point."""
    image = level.astype(np.float32)
    mean = cv2.boxFilter(image, -1, (size, size), borderType=cv2.BORDER_REFLECT)
    mean_sq = cv2.boxFilter(image * image, -1, (size, size), borderType=cv2.BORDER_REFLECT)
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, level.shape[1] - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, level.shape[0] - 1)
    return std[rows, cols]


class _GridCache:
    """Grid keypoints per pyramid-level shape: building cv2.KeyPoint lists costs as much as small images."""

    def __init__(self, max_entries: int = 32) -> None:
        self._entries: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, height: int, width: int, step: int, size: float) -> tuple:
        key = (height, width, step, size)
        with self._lock:
            if key not in self._entries:
                if len(self._entries) >= self._max:
                    self._entries.pop(next(iter(self._entries)))
                # Centred grid; at least one point even on a level smaller than the step.
                ys = np.arange(step / 2, max(height - step / 2, step / 2) + 1e-3, step)
                xs = np.arange(step / 2, max(width - step / 2, step / 2) + 1e-3, step)
                keypoints = tuple(cv2.KeyPoint(float(x), float(y), size) for y in ys for x in xs)
                self._entries[key] = (keypoints, np.array([kp.pt for kp in keypoints], np.float32))
            return self._entries[key]


_GRIDS = _GridCache()


def local_descriptors(image: np.ndarray, config: DenseVLADConfig) -> np.ndarray:
    """RootSIFT descriptors [N, 128] float32 of one image (dense grid at several scales, or DoG)."""
    gray = resize_for_sampling(to_gray_uint8(image), config)
    sift = cv2.SIFT_create(nfeatures=config.max_dog_keypoints if config.detector == "dog" else 0)
    if config.detector == "dog":
        _, descriptors = sift.detectAndCompute(gray, None)
        if descriptors is None or len(descriptors) == 0:
            # A blank frame has no DoG extrema: describe its centre so that it still gets a descriptor.
            keypoint = [cv2.KeyPoint(gray.shape[1] / 2, gray.shape[0] / 2, config.bin_size * 2 / 3)]
            _, descriptors = sift.compute(gray, keypoint)
        return root_sift(descriptors)
    # OpenCV's SIFT patch is 4 bins of 3 * size / 2 pixels: size = 2 * bin / 3 gives VLFeat's bin size.
    keypoint_size = config.bin_size * 2.0 / 3.0
    blocks = []
    for scale in config.scales:
        level = gray if scale == 1.0 else cv2.resize(
            gray, (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))),
            interpolation=cv2.INTER_AREA)
        keypoints, points = _GRIDS.get(level.shape[0], level.shape[1], config.grid_step, keypoint_size)
        if config.min_patch_contrast > 0:
            keep = _patch_contrast(level, points, max(3, int(round(4 * config.bin_size)))) >= config.min_patch_contrast
            keypoints = [kp for kp, k in zip(keypoints, keep) if k]
        if not keypoints:
            continue
        _, descriptors = sift.compute(level, keypoints)
        if descriptors is not None:
            blocks.append(descriptors)
    if not blocks:
        # A flat image: describe its centre so that it still gets a (constant) descriptor.
        keypoint = [cv2.KeyPoint(gray.shape[1] / 2, gray.shape[0] / 2, keypoint_size)]
        blocks.append(sift.compute(gray, keypoint)[1])
    return root_sift(np.concatenate(blocks))


# --------------------------------------------------------------------------- reproducible fitting


@contextlib.contextmanager
def single_threaded_torch():
    """torch (and the MKL it calls) on one thread inside the block: results independent of thread counts."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def kmeans_float64(features: np.ndarray, num_clusters: int, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """k-means centres [K, D] float32 of `features` [N, D], the same bits for a seed whatever the threads.

    Lloyd's algorithm in float64 on one thread, from k-means++ initial centres drawn with numpy's
    seeded generator; ties go to the lowest cluster index, sums run in row order, and a cluster left
    empty takes the row farthest from its centre (lowest index among equals). Stops early when the
    assignment no longer changes.
    """
    import torch

    features = np.asarray(features)
    if features.ndim != 2 or len(features) < num_clusters or num_clusters < 1:
        raise ValueError(f"k-means needs at least {num_clusters} rows of [N, D] features, got {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("k-means features contain NaN or infinity")
    rng = np.random.default_rng(seed)
    with single_threaded_torch():
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64))
        squared_norms = (x * x).sum(1)
        centroids = _kmeans_plus_plus(x, num_clusters, rng)
        labels = None
        for _ in range(max(1, iterations)):
            # argmin |x - c|^2 = argmax 2 x.c - |c|^2; argmax returns the first of equal maxima.
            scores = 2.0 * (x @ centroids.T) - (centroids * centroids).sum(1)[None]
            best, new_labels = scores.max(1)
            if labels is not None and torch.equal(new_labels, labels):
                break
            labels = new_labels
            counts = torch.bincount(labels, minlength=num_clusters)
            sums = torch.zeros_like(centroids).index_add_(0, labels, x)
            empty = torch.nonzero(counts == 0).flatten().tolist()
            if empty:
                distances = squared_norms - best
                farthest = np.argsort(-distances.numpy(), kind="stable")[: len(empty)]
                for cluster, row in zip(empty, farthest.tolist()):
                    sums[cluster] = x[row]
                    counts[cluster] = 1
            centroids = sums / counts[:, None].to(sums.dtype)
        return centroids.numpy().astype(np.float32)


def _kmeans_plus_plus(x, num_clusters: int, rng: np.random.Generator):
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre drawn with probability ~ distance^2."""
    import torch

    squared_norms = (x * x).sum(1)

    def squared_distances(row: int):
        return (squared_norms - 2.0 * (x @ x[row]) + squared_norms[row]).clamp_min(0.0)

    chosen = [int(rng.integers(len(x)))]
    nearest = squared_distances(chosen[0])
    for _ in range(num_clusters - 1):
        cumulative = torch.cumsum(nearest, 0).numpy()
        if cumulative[-1] > 0:
            row = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            row = min(row, len(x) - 1)
        else:  # every row sits on a centre already: any row (the cluster refill handles the rest)
            row = int(rng.integers(len(x)))
        chosen.append(row)
        nearest = torch.minimum(nearest, squared_distances(row))
    return x[torch.tensor(chosen)].clone()


def pca_float64(vectors: np.ndarray, out_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean [D], components [out_dim, D], eigenvalues [out_dim]) of `vectors` [N, D], float64.

    The same bits whatever the thread counts (single-threaded float64 arithmetic). Eigenvalues are
    variances (covariance / N), in decreasing order; each component has unit length and its entry
    of largest magnitude positive (the lowest index among equals). With N <= D the eigenvectors come
    from the N x N Gram matrix.
    """
    import torch

    vectors = np.asarray(vectors)
    n = len(vectors)
    if vectors.ndim != 2 or n < 2:
        raise ValueError(f"a PCA needs at least 2 vectors [N, D], got {vectors.shape}")
    d = vectors.shape[1]
    if not 1 <= out_dim <= (d if n > d else n - 1):
        raise ValueError(f"a PCA of {n} vectors of {d} dimensions cannot keep {out_dim} components")
    with single_threaded_torch():
        x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float64))
        mean = x.mean(0)
        centred = x - mean
        if n <= d:
            gram = centred @ centred.T
            values, vectors_n = torch.linalg.eigh(0.5 * (gram + gram.T))
            values, vectors_n = values.flip(0)[:out_dim], vectors_n.flip(1)[:, :out_dim]
            components = (centred.T @ vectors_n).T
            components = components / components.norm(dim=1, keepdim=True).clamp_min(1e-300)
        else:
            covariance = centred.T @ centred
            values, vectors_d = torch.linalg.eigh(0.5 * (covariance + covariance.T))
            values, components = values.flip(0)[:out_dim], vectors_d.flip(1)[:, :out_dim].T.contiguous()
        largest = components.abs().argmax(1)  # first index among equal magnitudes
        signs = torch.sign(components[torch.arange(out_dim), largest])
        components = components * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
        eigenvalues = values.clamp_min(0.0) / n
        return mean.numpy(), components.numpy().copy(), eigenvalues.numpy().copy()


# --------------------------------------------------------------------------- VLAD


def assign_to_clusters(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid of each descriptor (hard assignment)."""
    scores = descriptors @ centroids.T - 0.5 * (centroids * centroids).sum(axis=1)[None]
    return np.argmax(scores, axis=1)


def vlad(descriptors: np.ndarray, centroids: np.ndarray, power_norm: bool = True,
         intra_norm: bool = True) -> np.ndarray:
    """VLAD vector [K * D] float32: residual sums per cluster, signed sqrt, intra-normalised, L2."""
    k, d = centroids.shape
    assignment = assign_to_clusters(descriptors, centroids)
    counts = np.bincount(assignment, minlength=k).astype(np.float32)
    one_hot = np.zeros((len(descriptors), k), np.float32)
    one_hot[np.arange(len(descriptors)), assignment] = 1.0
    residuals = one_hot.T @ descriptors - counts[:, None] * centroids  # sum of (x - c_k) over x in cluster k
    if power_norm:
        residuals = np.sign(residuals) * np.sqrt(np.abs(residuals))
    if intra_norm:
        residuals /= np.maximum(np.linalg.norm(residuals, axis=1, keepdims=True), _EPS)
    flat = residuals.reshape(-1)
    return (flat / max(float(np.linalg.norm(flat)), _EPS)).astype(np.float32)


# --------------------------------------------------------------------------- the descriptor


def _load_item(item: Any) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    return read_image(item)


class DenseVLAD:
    """A fitted DenseVLAD: vocabulary + optional PCA-whitening, with GlobalExtractor's interface."""

    name = "densevlad"

    def __init__(self, config: DenseVLADConfig, centroids: np.ndarray, pca_mean: np.ndarray | None = None,
                 pca_matrix: np.ndarray | None = None, pca_eigenvalues: np.ndarray | None = None,
                 info: dict | None = None) -> None:
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if centroids.shape != (config.num_clusters, SIFT_DIM):
            raise ValueError(f"DenseVLAD centroids must have shape ({config.num_clusters}, {SIFT_DIM}), "
                             f"got {centroids.shape}")
        if (pca_matrix is None) != (pca_mean is None):
            raise ValueError("DenseVLAD PCA needs both a mean and a matrix")
        if pca_matrix is not None:
            pca_matrix = np.ascontiguousarray(pca_matrix, dtype=np.float32)
            pca_mean = np.ascontiguousarray(pca_mean, dtype=np.float32)
            if pca_matrix.ndim != 2 or pca_matrix.shape[1] != config.vlad_dim or pca_mean.shape != (config.vlad_dim,):
                raise ValueError(f"DenseVLAD PCA must map {config.vlad_dim}-D VLADs, got matrix "
                                 f"{pca_matrix.shape} and mean {pca_mean.shape}")
        for label, array in (("centroids", centroids), ("PCA matrix", pca_matrix), ("PCA mean", pca_mean)):
            if array is not None and not np.isfinite(array).all():
                raise ValueError(f"DenseVLAD {label} contain NaN or infinity")
        self.config = config
        self.centroids = centroids
        self.pca_mean = pca_mean
        self.pca_matrix = pca_matrix
        self.pca_eigenvalues = None if pca_eigenvalues is None else np.asarray(pca_eigenvalues, np.float32)
        self.info = dict(info or {})

    @property
    def descriptor_dim(self) -> int:
        """Size of the descriptors this extractor returns."""
        return self.config.vlad_dim if self.pca_matrix is None else int(self.pca_matrix.shape[0])

    def __repr__(self) -> str:
        return (f"DenseVLAD({self.config.detector}, K={self.config.num_clusters}, {self.descriptor_dim}-D"
                f"{', whitened' if self.pca_matrix is not None and self.config.whiten else ''})")

    # ---------------------------------------------------------------- inference

    def raw_vlad(self, image: np.ndarray) -> np.ndarray:
        """The L2-normalised VLAD of an image, before PCA: [K * 128]."""
        c = self.config
        return vlad(local_descriptors(image, c), self.centroids, c.power_norm, c.intra_norm)

    def project(self, vlads: np.ndarray) -> np.ndarray:
        """Raw VLADs [N, K * 128] -> final unit descriptors [N, D] (PCA-whitened when fitted with PCA)."""
        vlads = np.atleast_2d(np.asarray(vlads, np.float32))
        if self.pca_matrix is not None:
            vlads = (vlads - self.pca_mean) @ self.pca_matrix.T
        norms = np.linalg.norm(vlads, axis=1, keepdims=True)
        return (vlads / np.maximum(norms, _EPS)).astype(np.float32)

    def describe(self, image: np.ndarray) -> np.ndarray:
        """One image -> [D] float32 unit descriptor."""
        return self.project(self.raw_vlad(image))[0]

    def describe_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images of any sizes -> [N, D] float32 unit descriptors."""
        if len(images) == 0:
            return np.zeros((0, self.descriptor_dim), np.float32)
        return self.project(np.stack([self.raw_vlad(im) for im in images]))

    # ---------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        images: Sequence[Any],
        config: DenseVLADConfig | None = None,
        *,
        vocabulary_images: int | None = 500,
        descriptors_per_image: int = 300,
        pca_images: int | None = 5000,
        kmeans_iterations: int = 20,
        seed: int = 0,
        progress: bool = True,
    ) -> "DenseVLAD":
        """Learn the vocabulary (`kmeans_float64`) and the PCA-whitening (`pca_float64`) from `images`.

        `images`: a sequence of numpy images or image paths (indexable, read lazily). Up to
        `vocabulary_images` of them, spread evenly, give `descriptors_per_image` random local
        descriptors each for k-means; up to `pca_images` give the VLADs the PCA is fitted on.
        """
        config = config or DenseVLADConfig()
        if len(images) == 0:
            raise ValueError("DenseVLAD.fit needs at least one image")
        rng = np.random.default_rng(seed)
        samples = []
        for i in tqdm(spread_rows(len(images), vocabulary_images), desc="DenseVLAD vocabulary features",
                      unit="img", disable=not progress):
            descriptors = local_descriptors(_load_item(images[int(i)]), config)
            keep = rng.choice(len(descriptors), size=min(descriptors_per_image, len(descriptors)), replace=False)
            samples.append(descriptors[np.sort(keep)])
        features = np.ascontiguousarray(np.concatenate(samples), dtype=np.float32)
        k = config.num_clusters
        if len(features) < k:
            raise ValueError(f"{len(features)} local descriptors are too few for {k} clusters: give more images")
        centroids = kmeans_float64(features, k, iterations=kmeans_iterations, seed=seed)
        model = cls(config, centroids, info={"vocabulary_images": len(samples),
                                                   "vocabulary_descriptors": int(len(features))})
        if config.pca_dim is None:
            return model
        pca_indices = spread_rows(len(images), pca_images)
        if not config.pca_fits(len(pca_indices)):
            return model._without_pca(len(pca_indices))
        vlads = np.stack([model.raw_vlad(_load_item(images[int(i)]))
                          for i in tqdm(pca_indices, desc="DenseVLAD PCA fit", unit="img", disable=not progress)])
        return model.with_pca(vlads)

    def with_pca(self, vlads: np.ndarray) -> "DenseVLAD":
        """A copy whose PCA(-whitening) to config.pca_dim is fitted on raw VLADs [N, K * 128] (`pca_float64`)."""
        vlads = np.ascontiguousarray(vlads, dtype=np.float32)
        n = len(vlads)
        rank = min(n - 1, vlads.shape[1])
        if rank < 1:
            raise ValueError("the DenseVLAD PCA needs at least 2 fitting images")
        if not self.config.pca_fits(n):
            return self._without_pca(n)
        out_dim = min(self.config.pca_dim, rank)
        if out_dim < self.config.pca_dim:
            logger.warning("DenseVLAD: PCA to %d dimensions instead of %d: only %d fitting images",
                           out_dim, self.config.pca_dim, n)
        mean, matrix, eigenvalues = pca_float64(vlads, out_dim)
        if self.config.whiten:
            # Regularised whitening: the last components of a PCA fitted on few images are noise
            # that plain 1/sqrt(eigenvalue) would amplify the most.
            floor = self.config.whiten_regularization * float(eigenvalues.mean())
            matrix = matrix / np.sqrt(np.maximum(eigenvalues, 0.0) + floor)[:, None]
        config = dataclasses.replace(self.config)
        info = dict(self.info, pca_images=n, pca_dim=out_dim)
        return DenseVLAD(config, self.centroids, mean, matrix.astype(np.float32), eigenvalues, info)

    def _without_pca(self, fitting_images: int) -> "DenseVLAD":
        """A copy without PCA, for a fitting set too small for the configured PCA (see `pca_fits`)."""
        c = self.config
        logger.info("DenseVLAD: %d fitting images span at most %d directions, fewer than %g x %d (min_pca_fraction "
                    "x pca_dim): keeping the raw %d-D VLAD without PCA-whitening", fitting_images,
                    max(fitting_images - 1, 0), c.min_pca_fraction, min(c.pca_dim, c.vlad_dim), c.vlad_dim)
        info = dict(self.info, pca_images=fitting_images,
                    pca=f"skipped: {fitting_images} fitting images for pca_dim {c.pca_dim}")
        return DenseVLAD(dataclasses.replace(c), self.centroids, info=info)

    # ---------------------------------------------------------------- files

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary, PCA and configuration to one .npz file, atomically."""
        path = Path(path)
        arrays = {
            "format": np.array(FILE_FORMAT),
            "version": np.array(FILE_FORMAT_VERSION),
            "config_json": np.array(to_json_text(dataclasses.asdict(self.config))),
            "info_json": np.array(to_json_text(self.info)),
            "centroids": self.centroids,
        }
        if self.pca_matrix is not None:
            arrays.update(pca_mean=self.pca_mean, pca_matrix=self.pca_matrix, pca_eigenvalues=self.pca_eigenvalues)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DenseVLAD":
        """Read a file written by `save`, with a clear error for anything else."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such DenseVLAD vocabulary file")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a DenseVLAD vocabulary file "
                             f"(.npz written by DenseVLAD.save): {exc}") from None
        if str(arrays.get("format", "")) != FILE_FORMAT:
            raise ValueError(f"{path}: not a DenseVLAD vocabulary file (format {arrays.get('format')!r})")
        version = int(arrays.get("version", 0))
        if version > FILE_FORMAT_VERSION:
            raise ValueError(f"{path}: DenseVLAD file version {version} is newer than the supported "
                             f"{FILE_FORMAT_VERSION}; update hierloc")
        try:
            values = json.loads(str(arrays["config_json"]))
            values["scales"] = tuple(values.get("scales", ()))
            values.setdefault("min_patch_contrast", 0.0)  # files written before the filter existed
            config = config_from_dict(values)
            return cls(config, arrays["centroids"], arrays.get("pca_mean"), arrays.get("pca_matrix"),
                       arrays.get("pca_eigenvalues"), json.loads(str(arrays.get("info_json", "{}"))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid DenseVLAD file: {exc}") from None


def load_densevlad(weights: str | os.PathLike | None) -> DenseVLAD:
    """The DenseVLAD of a vocabulary file; a clear error when none is given (it has no default)."""
    if weights in (None, "auto", "none"):
        raise FileNotFoundError(
            "densevlad needs a vocabulary file: pass --weights VOCAB.npz. Fit one with "
            "`python -m hierloc.models.densevlad IMAGES... --out VOCAB.npz`, or let "
            "`hierloc evaluate --method densevlad` fit it on the reference images")
    return DenseVLAD.load(weights)


def main(argv: Iterable[str] | None = None) -> int:
    """`python -m hierloc.models.densevlad IMAGES... --out FILE`: fit a vocabulary + PCA on images."""
    import argparse

    from ..cli.validators import positive_int
    from ..utils.images import list_images
    from ..utils.threads import configure_threads

    parser = argparse.ArgumentParser(prog="python -m hierloc.models.densevlad", description=main.__doc__)
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True, help="output .npz vocabulary file")
    defaults = DenseVLADConfig()
    parser.add_argument("--detector", default=defaults.detector, choices=["dense", "dog"])
    parser.add_argument("--num-clusters", type=positive_int, default=defaults.num_clusters)
    parser.add_argument("--pca-dim", default=str(defaults.pca_dim), help="PCA size, or 'none' for the raw VLAD")
    parser.add_argument("--no-whiten", action="store_true", help="PCA without whitening")
    parser.add_argument("--min-pca-fraction", type=float, default=defaults.min_pca_fraction,
                        help="keep the raw VLAD when the images - 1 are fewer than this share of the PCA size "
                             f"(default {defaults.min_pca_fraction})")
    parser.add_argument("--grid-step", type=positive_int, default=defaults.grid_step)
    parser.add_argument("--min-image-side", type=positive_int, default=defaults.min_image_side)
    parser.add_argument("--max-image-side", type=positive_int, default=defaults.max_image_side)
    parser.add_argument("--vocabulary-images", type=positive_int, default=500)
    parser.add_argument("--pca-images", type=positive_int, default=5000)
    parser.add_argument("--threads", type=positive_int, default=None)
    args = parser.parse_args(None if argv is None else list(argv))
    configure_threads(args.threads)
    config = DenseVLADConfig(
        detector=args.detector, num_clusters=args.num_clusters, grid_step=args.grid_step,
        pca_dim=None if args.pca_dim.lower() == "none" else int(args.pca_dim), whiten=not args.no_whiten,
        min_pca_fraction=args.min_pca_fraction,
        min_image_side=args.min_image_side, max_image_side=args.max_image_side)
    paths = [path for path, _ in list_images(args.inputs)]
    if not paths:
        raise SystemExit(f"no images found in {args.inputs}")
    model = DenseVLAD.fit(paths, config, vocabulary_images=args.vocabulary_images, pca_images=args.pca_images)
    out = model.save(args.out)
    print(f"{model} fitted on {len(paths)} images, written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
