"""Geometric re-ranking of retrieved keyframes: local matches + RANSAC inliers turn recall@K into recall@1.

Global descriptors find the right place among the top K more often than at rank 1. For each of the
top-K candidates, the query's local features are matched to the candidate's (mutual nearest
neighbours for XFeat and SIFT, LightGlue for ALIKED/DISK; one batched matrix product of the query
against all K candidates where the matcher allows), the matches are verified by a robust two-view
fit, and the candidates are re-sorted by their number of inliers:

    from hierloc.reranking import GeometricReranker, RerankConfig, ReferenceFeatures
    reranker = GeometricReranker(RerankConfig(k=20), ReferenceFeatures.for_images(loaders, "refs.h5", config))
    result = reranker.rerank(query_image, names, distances)    # names / distances in the global order
    result.candidates[0].name, result.candidates[0].inliers, result.conclusive, result.timings

Candidates with at least `min_inliers` inliers come first (most inliers first, ties in the global
order); the others keep their global order after them. When no candidate reaches `min_inliers` the
verification is inconclusive and the global order is kept unchanged.

Reference features are computed once (lazily, for the candidates that appear, or all at once) and
cached in hloc's h5 layout with the extractor configuration; a 3-D map's own `features.h5` is used
when its features are the family asked for. `reranker_for_index` wires this to an index file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from .features import (
    LocalFeatures,
    MutualNearestNeighbor,
    extract_features,
    feature_family,
    feature_names,
    make_extractor,
    make_matcher,
    read_feature_config,
    read_features,
)
from .features.base import LocalFeatureExtractor
from .features.matchers import Matcher

logger = logging.getLogger(__name__)

GEOMETRIES = ("fundamental", "homography")
RERANK_FEATURES = ("xfeat", "sift", "aliked", "disk")


class RerankError(ValueError):
    """Re-ranking cannot run: no reference images or features, or a bad option."""


@dataclass(frozen=True)
class RerankConfig:
    """How the top-K candidates are verified.

    Geometry: OpenCV's USAC with MAGSAC++ scoring (`cv2.USAC_MAGSAC`). A fundamental matrix needs no
    camera (queries and references may come from unknown cameras and sizes) and holds for any rigid
    scene; `homography` suits planar scenes and pure rotations. OpenCV rather than pycolmap because
    it is several times faster per pair (20 XFeat pairs of 320x240 demo frames, one after the other
    on a quiet 2-core machine: 13 ms in all vs 89 ms for pycolmap's `estimate_fundamental_matrix` at
    512 keypoints, 60 ms vs 320 ms at 1024), needs no camera, and MAGSAC++ marginalises over the
    noise scale, so one threshold serves small (upscaled) and large frames alike.
    `threshold` is in pixels of the image the features were detected on (after `min_side` and
    `resize_max`).
    """

    k: int = 20  # candidates verified (the top K of the global ranking)
    features: str = "xfeat"  # sift, xfeat, aliked, disk
    max_keypoints: int = 512
    min_side: int = 240  # frames whose shorter side is smaller are enlarged to it for the local features
    resize_max: int | None = 640  # longest side fed to the detector (None: full resolution)
    matcher: str = "auto"  # auto (mnn for XFeat, mnn-ratio for SIFT, LightGlue for ALIKED/DISK), mnn, ...
    geometry: str = "fundamental"
    threshold: float = 3.0  # RANSAC inlier threshold, pixels of the feature image
    confidence: float = 0.999
    max_iterations: int = 2000
    min_inliers: int = 20  # a candidate with fewer is not verified
    workers: int = 2  # threads for the per-pair RANSAC (OpenCV releases the GIL)
    device: str = "cpu"

    def validate(self) -> None:
        """Refuse bad values with a one-line RerankError."""
        if self.k < 1:
            raise RerankError(f"re-ranking needs k >= 1 candidates, got {self.k}")
        if self.features not in RERANK_FEATURES:
            raise RerankError(f"re-ranking features {self.features!r}: choose one of {', '.join(RERANK_FEATURES)}")
        if self.geometry not in GEOMETRIES:
            raise RerankError(f"re-ranking geometry {self.geometry!r}: choose one of {', '.join(GEOMETRIES)}")
        for name in ("max_keypoints", "min_inliers", "max_iterations", "workers"):
            if getattr(self, name) < 1:
                raise RerankError(f"re-ranking {name} must be positive, got {getattr(self, name)}")
        if self.min_side < 0 or self.threshold <= 0 or not 0 < self.confidence < 1:
            raise RerankError("re-ranking needs min_side >= 0, threshold > 0 and 0 < confidence < 1")

    def extractor_options(self) -> dict[str, Any]:
        """Options of `make_extractor` for the reference and query features."""
        return {"max_keypoints": self.max_keypoints, "resize_max": self.resize_max}

    def to_json(self) -> dict[str, Any]:
        """Every option, as plain JSON."""
        return asdict(self)


class ScaledExtractor:
    """A local feature extractor that first enlarges frames whose shorter side is below `min_side`.

    Keypoints are returned in the pixels of the original image, like every extractor's; `scale`
    gives the factor from original pixels to those of the image the detector saw.
    """

    def __init__(self, extractor: LocalFeatureExtractor, min_side: int = 0) -> None:
        self.extractor = extractor
        self.min_side = int(min_side)
        self.name = extractor.name

    def describe_config(self) -> dict[str, Any]:
        """The extractor's configuration plus `min_side` (stored in feature files)."""
        return {**self.extractor.describe_config(), "min_side": self.min_side}

    def upscale(self, width: int, height: int) -> float:
        """The enlargement applied to an image of this size (1 when its shorter side is long enough)."""
        return max(1.0, self.min_side / max(1, min(width, height)))

    def scale(self, width: int, height: int) -> float:
        """Original pixels -> pixels of the image the detector saw."""
        return feature_scale((width, height), self.describe_config())

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Features of one image, keypoints in its original COLMAP pixels."""
        height, width = image.shape[:2]
        factor = self.upscale(width, height)
        if factor == 1.0:
            return self.extractor.extract(image)
        size = (int(round(width * factor)), int(round(height * factor)))
        features = self.extractor.extract(cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_CUBIC))
        # COLMAP pixels (corner at 0) scale with the pixel grid.
        keypoints = features.keypoints * np.array([width / size[0], height / size[1]], np.float32)
        return LocalFeatures(keypoints, features.descriptors, features.scores, (width, height),
                             None if features.scales is None else features.scales / factor, features.orientations)


def feature_scale(image_size: tuple[int, int], config: Mapping[str, Any] | None) -> float:
    """Original pixels -> pixels of the image an extractor of `config` (with `min_side`, `resize_max`) saw."""
    width, height = image_size
    config = config or {}
    factor = max(1.0, (config.get("min_side") or 0) / max(1, min(width, height)))
    resize_max = config.get("resize_max")
    if resize_max and max(width, height) * factor > resize_max:
        factor = resize_max / max(width, height)
    return float(factor)


def config_digest(values: Mapping[str, Any]) -> str:
    """8 hex digits identifying an extractor configuration (for cache file names)."""
    text = repr(sorted((str(k), repr(v)) for k, v in values.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class ReferenceFeatures:
    """Local features of reference images by name: in memory, in an hloc-layout cache file, or computed.

    `loaders` gives each reference image by name (None: the features must all be in `path`, e.g. a
    3-D map's `features.h5`). Missing features are extracted on demand and added to `path`. At most
    `capacity` images are kept in memory (the oldest are dropped and read from `path` again when needed).
    """

    def __init__(self, extractor: ScaledExtractor | None, loaders: Mapping[str, Callable[[], np.ndarray]] | None,
                 path: str | os.PathLike | None, config: Mapping[str, Any] | None = None, read_only: bool = False,
                 progress: bool = False, capacity: int = 4096) -> None:
        self.extractor = extractor
        self.capacity = capacity
        self.loaders = loaders
        self.path = Path(path) if path is not None else None
        self.config = dict(config or (extractor.describe_config() if extractor is not None else {}))
        self.read_only = read_only
        self.progress = progress
        self._memory: dict[str, LocalFeatures] = {}
        # One reranker may serve several threads (the service's workers): the memory and the cache file change
        # under this lock (re-entrant: `get` holds it across `prepare`).
        self._lock = threading.RLock()

    @classmethod
    def for_images(cls, loaders: Mapping[str, Callable[[], np.ndarray]], path: str | os.PathLike | None,
                   config: RerankConfig, progress: bool = False) -> ReferenceFeatures:
        """Features of the images `loaders` gives, extracted as `config` says and cached in `path`."""
        return cls(make_scaled_extractor(config), loaders, path, progress=progress)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ReferenceFeatures:
        """Read-only features of an hloc-layout file (e.g. a 3-D map's `features.h5`)."""
        return cls(None, None, path, read_feature_config(path) or {}, read_only=True)

    def __contains__(self, name: str) -> bool:
        return name in self._memory or (self.loaders is not None and name in self.loaders)

    def prepare(self, names: Sequence[str]) -> float:
        """Make the features of `names` available (read or extracted in one pass); returns the seconds spent."""
        with self._lock:
            return self._prepare(names)

    def _prepare(self, names: Sequence[str]) -> float:
        begin = time.perf_counter()
        names = list(dict.fromkeys(names))
        for name in names:  # most recently used last
            if name in self._memory:
                self._memory[name] = self._memory.pop(name)
        wanted = [n for n in names if n not in self._memory]
        if not wanted:
            return 0.0
        if self.read_only or self.loaders is None:
            if self.path is None:
                raise RerankError("no reference features and no reference images to compute them from")
            self._memory.update(read_features(self.path, wanted))
            self._evict(keep=len(names))
            return time.perf_counter() - begin
        unknown = [n for n in wanted if n not in self.loaders]
        if unknown:
            raise RerankError(f"no image for reference {unknown[0]!r} ({len(unknown)} unknown references)")
        sources = [(name, self.loaders[name]) for name in wanted]
        self._memory.update(extract_features(self.extractor, sources, self.path, progress=self.progress))
        self._evict(keep=len(names))
        return time.perf_counter() - begin

    def _evict(self, keep: int) -> None:
        """Drop the oldest entries beyond `capacity` (never the `keep` just added, nor any without a file)."""
        if self.path is None:
            return
        excess = len(self._memory) - max(self.capacity, keep)
        for name in list(self._memory)[: max(0, excess)]:
            del self._memory[name]

    def prepare_all(self) -> float:
        """Features of every reference image (`hierloc query --rerank-all`)."""
        if self.loaders is None:
            if self.path is None:
                raise RerankError("no reference features and no reference images to compute them from")
            return self.prepare(feature_names(self.path))
        return self.prepare(list(self.loaders))

    def get(self, names: Sequence[str]) -> list[LocalFeatures]:
        """Features of `names` in order (computed first when missing)."""
        with self._lock:
            self._prepare(names)
            return [self._memory[name] for name in names]

    def scale(self, features: LocalFeatures) -> float:
        """Original pixels -> detector pixels of a reference."""
        return feature_scale(features.image_size, self.config)


def make_scaled_extractor(config: RerankConfig) -> ScaledExtractor:
    """The extractor `config` asks for, enlarging small frames to `min_side`."""
    return ScaledExtractor(make_extractor(config.features, device=config.device, **config.extractor_options()),
                           config.min_side)


@dataclass
class RankedCandidate:
    """One candidate after re-ranking; `inliers` is its score."""

    name: str
    global_rank: int  # 0-based rank in the global-descriptor order
    distance: float  # global-descriptor distance
    inliers: int = 0  # RANSAC inliers (0: not verified, too few matches)
    matches: int = 0  # tentative local matches
    verified: bool = False  # inliers >= min_inliers

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (no non-finite numbers)."""
        return {"name": self.name, "global_rank": self.global_rank,
                "distance": self.distance if np.isfinite(self.distance) else None, "inliers": self.inliers,
                "matches": self.matches, "verified": self.verified}


@dataclass
class RerankResult:
    """Candidates in their new order, whether verification decided it, and seconds per stage."""

    candidates: list[RankedCandidate]
    conclusive: bool  # at least one candidate reached min_inliers (else the global order is kept)
    timings: dict[str, float] = field(default_factory=dict)  # query_features, reference_features, matching, ...

    @property
    def order(self) -> list[int]:
        """Global ranks in the new order."""
        return [c.global_rank for c in self.candidates]


def order_candidates(candidates: Sequence[RankedCandidate], min_inliers: int) -> tuple[list[RankedCandidate], bool]:
    """Verified candidates by inliers (ties: global order), then the others in global order; unchanged if none."""
    in_global = sorted(candidates, key=lambda c: c.global_rank)
    for c in in_global:
        c.verified = c.inliers >= min_inliers
    verified = sorted((c for c in in_global if c.verified), key=lambda c: (-c.inliers, c.global_rank))
    if not verified:
        return in_global, False
    return verified + [c for c in in_global if not c.verified], True


def count_inliers(points0: np.ndarray, points1: np.ndarray, config: RerankConfig) -> int:
    """RANSAC inliers of a fundamental matrix or homography between matched points (detector pixels)."""
    needed = 8 if config.geometry == "fundamental" else 4
    if len(points0) < needed:
        return 0
    p0 = np.ascontiguousarray(points0, np.float64)
    p1 = np.ascontiguousarray(points1, np.float64)
    try:
        if config.geometry == "fundamental":
            _, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, config.threshold, config.confidence,
                                             config.max_iterations)
        else:
            _, mask = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, config.threshold, maxIters=config.max_iterations,
                                         confidence=config.confidence)
    except cv2.error as exc:  # degenerate configurations
        logger.debug("RANSAC failed: %s", exc)
        return 0
    return 0 if mask is None else int(np.count_nonzero(mask))


class GeometricReranker:
    """Re-sorts the top-K retrieved keyframes of a query by RANSAC-verified local matches."""

    def __init__(self, config: RerankConfig, references: ReferenceFeatures,
                 extractor: ScaledExtractor | None = None, matcher: Matcher | None = None) -> None:
        config.validate()
        self.config = config
        self.references = references
        # The references' extractor (built from the same config) serves the queries too.
        self.extractor = extractor or references.extractor or make_scaled_extractor(config)
        reference_family = references.config.get("name")
        if reference_family and reference_family != self.extractor.name:
            raise RerankError(f"reference features are {reference_family}, the query's would be {self.extractor.name}")
        self.matcher = matcher or make_matcher(config.matcher, config.features, device=config.device)
        self._pool = ThreadPoolExecutor(max_workers=config.workers) if config.workers > 1 else None

    def close(self) -> None:
        """Stop the RANSAC threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def query_features(self, image: np.ndarray) -> LocalFeatures:
        """Local features of a query image."""
        return self.extractor.extract(image)

    def verify(self, query: LocalFeatures, names: Sequence[str],
               timings: dict[str, float] | None = None) -> list[tuple[int, int]]:
        """(inliers, matches) of the query against each named reference; `timings` gets seconds per stage."""
        timings = {} if timings is None else timings
        if not names:
            return []
        begin = time.perf_counter()
        references = self.references.get(list(names))
        t_references = time.perf_counter()
        if isinstance(self.matcher, MutualNearestNeighbor):
            matched = self.matcher.match_many(query.descriptors, [r.descriptors for r in references])
        else:
            matched = [self.matcher.match(query, r) for r in references]
        t_matching = time.perf_counter()
        query_scale = self.extractor.scale(*query.image_size)

        def check(pair: tuple[LocalFeatures, np.ndarray]) -> tuple[int, int]:
            reference, matches0 = pair
            i0 = np.flatnonzero(matches0 >= 0)
            points0 = query.keypoints[i0] * query_scale
            points1 = reference.keypoints[matches0[i0]] * self.references.scale(reference)
            return count_inliers(points0, points1, self.config), len(i0)

        pairs = list(zip(references, (m for m, _ in matched)))
        scores = list(self._pool.map(check, pairs)) if self._pool is not None else [check(p) for p in pairs]
        end = time.perf_counter()
        for key, seconds in (("reference_features", t_references - begin), ("matching", t_matching - t_references),
                             ("geometry", end - t_matching)):
            timings[key] = timings.get(key, 0.0) + seconds
        return scores

    def rerank(self, query: np.ndarray | LocalFeatures, names: Sequence[str],
               distances: Sequence[float] | None = None, k: int | None = None) -> RerankResult:
        """Verify the first `k` (default `config.k`) of `names` (global order) and re-sort them; later ones stay
        after, in order. A smaller `k` per call lets one reranker serve requests that each ask for their own K."""
        k = self.config.k if k is None else int(k)
        if k < 1:
            raise RerankError(f"re-ranking needs k >= 1 candidates, got {k}")
        begin = time.perf_counter()
        timings: dict[str, float] = {}
        if not isinstance(query, LocalFeatures):
            query = self.query_features(query)
            timings["query_features"] = time.perf_counter() - begin
        distances = [float("nan")] * len(names) if distances is None else [float(d) for d in distances]
        if len(distances) != len(names):
            raise ValueError(f"{len(names)} candidate names but {len(distances)} distances")
        head = list(names[:k])
        candidates = [RankedCandidate(name, rank, distances[rank]) for rank, name in enumerate(head)]
        for candidate, (inliers, matches) in zip(candidates, self.verify(query, head, timings)):
            candidate.inliers, candidate.matches = inliers, matches
        ordered, conclusive = order_candidates(candidates, self.config.min_inliers)
        tail = [RankedCandidate(name, rank, distances[rank]) for rank, name in enumerate(names) if rank >= k]
        timings["total"] = time.perf_counter() - begin
        return RerankResult(ordered + tail, conclusive, timings)


# --------------------------------------------------------------------------- index files

MAP_DESCRIPTION, MAP_FEATURES = "map.json", "features.h5"


def reference_cache_path(index: str | os.PathLike, config: RerankConfig) -> Path:
    """`INDEX.rerank-<features>-<config digest>.h5`: reference features cached beside an index."""
    extractor_config = {"features": config.features, "min_side": config.min_side, **config.extractor_options()}
    return Path(f"{index}.rerank-{config.features}-{config_digest(extractor_config)}.h5")


def _map_features(index: Path, config: RerankConfig) -> Path | None:
    """A 3-D map's features.h5 when `index` is the map's global index and its features are the family asked for."""
    folder = index.parent
    features = folder / MAP_FEATURES
    if not ((folder / MAP_DESCRIPTION).is_file() and features.is_file()):
        return None
    stored = read_feature_config(features) or {}
    if stored.get("name") != feature_family(config.features):
        logger.info("%s holds %s features, not %s: reference features are extracted instead", features,
                    stored.get("name"), config.features)
        return None
    return features


def reference_loaders(index: str | os.PathLike, reference_root: str | os.PathLike | None = None
                      ) -> dict[str, Callable[[], np.ndarray]]:
    """{keyframe name: image loader} of an index: its recorded map source, or names relative to `reference_root`."""
    from .index.io import detect_format, load_index
    from .index.native_format import read_native_catalog
    from .utils.images import read_image

    index = Path(index)
    catalog = read_native_catalog(index) if detect_format(index) == "native" else load_index(index)
    names = list(catalog.names)
    if reference_root is not None:
        root = Path(reference_root)
        if not root.is_dir():
            raise RerankError(f"--reference-root {root}: no such folder")
        return {name: (lambda p=root / name: read_image(p)) for name in names}
    source = catalog.metadata.get("source")
    if source is None:
        raise RerankError(f"{index} does not record where its keyframe images are (built before re-ranking "
                          "existed): pass --reference-root DIR (keyframe names are relative to it) or rebuild it")
    from .pipelines.indexing import MapSource

    map_ = MapSource.from_json(source).load()
    by_name = {kf.name: kf.load_image for kf in map_.keyframes()}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise RerankError(f"{index}: {len(missing)} keyframes are not in its recorded map source {source['path']} "
                          f"(e.g. {missing[0]!r}); pass --reference-root DIR")
    return {name: by_name[name] for name in names}


def reranker_for_index(index: str | os.PathLike, config: RerankConfig,
                       reference_root: str | os.PathLike | None = None, progress: bool = False) -> GeometricReranker:
    """A reranker for an index file: a 3-D map's features, or features cached in `reference_cache_path`."""
    config.validate()
    index = Path(index)
    map_features = _map_features(index, config) if reference_root is None else None
    if map_features is not None:
        references = ReferenceFeatures.from_file(map_features)
    else:
        references = ReferenceFeatures.for_images(reference_loaders(index, reference_root),
                                                  reference_cache_path(index, config), config, progress=progress)
    return GeometricReranker(config, references)
