"""Hierarchical localization of a query image against a 3-D map, with everything kept in memory.

    localizer = Localizer.load("maps/office")           # map, index, networks: loaded once
    result = localizer.localize(image, camera)          # per frame: retrieval -> places -> matching -> PnP
    if result.success:
        T_cam_world = result.T_cam_world

Stages (each timed in `result.timings`): global descriptor + top-k keyframes (`retrieval`), local
features of the query (`local_features`), covisibility clustering of the retrieved keyframes into
places (`clustering`), matching the query against each place's keyframes and lifting the matches
to 2D-3D correspondences (`matching`), and pycolmap absolute pose LO-RANSAC + refinement
(`pose`). Places are tried best first; the first one with at least `min_inliers` inliers gives the
pose. A query without such a place is a failure: its pose is None, never a retrieved keyframe's.

Local features that run outside torch (OpenCV SIFT) can be extracted on a worker thread while the
retrieval network runs on the calling one (`LocalizerConfig.concurrent_stages`; by default the faster
mode is measured on the first queries: see `stage_modes`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..features import LocalFeatures, make_extractor, make_matcher
from ..features.matchers import MutualNearestNeighbor
from ..maps.poses import invert_pose
from ..maps.types import Camera
from ..utils.threads import torch_threads
from .absolute_pose import PoseEstimationConfig, estimate_absolute_pose, query_camera
from .clustering import covisibility_clusters
from .scene_map import SceneMap
from .stage_modes import CONCURRENT, MEASURED, SEQUENTIAL, StageModeChooser, stage_mode_chooser

logger = logging.getLogger(__name__)

STAGES = ("retrieval", "local_features", "clustering", "matching", "pose")


@dataclass
class LocalizerConfig:
    """How a query is localized; the defaults follow HF-Net / hloc."""

    num_retrieved: int = 5  # keyframes from global retrieval; 0: every map image (no retrieval)
    covisibility_clustering: bool = True
    min_covisible_points: int = 1  # keyframes sharing this many 3-D points are one place
    max_places: int = 3  # places tried at most
    min_inliers: int = 20  # a pose with fewer PnP inliers is a failure
    match_triangulated_only: bool | None = None  # None: True for nearest-neighbour matching, False for LightGlue
    # Mutual NN without a ratio test: match the query once against the place's 3-D points (one
    # descriptor per point, as HF-Net) instead of against each keyframe, which sees many of the same points.
    match_place_points: bool = True
    pose: PoseEstimationConfig = field(default_factory=PoseEstimationConfig)
    default_fov_deg: float | None = None  # camera of uncalibrated queries without EXIF; None: COLMAP's guess
    trace_global_network: bool = True  # faster per frame after a one-off cost of seconds (see GlobalExtractor)
    # Retrieval and local features of a query at the same time, on two threads (on a CPU the network gets one
    # thread fewer). None: when the local features run outside torch (OpenCV SIFT) and torch has 2+ threads or
    # a GPU, whichever mode the first warm queries measure faster (see stage_modes). Results are the same.
    concurrent_stages: bool | None = None


@dataclass(eq=False)
class LocalizationResult:
    """Outcome of one query. `T_cam_world` is world-to-camera (hloc's and COLMAP's convention)."""

    name: str
    success: bool
    T_cam_world: np.ndarray | None
    num_inliers: int
    num_correspondences: int
    camera: Camera
    camera_source: str
    retrieved: list[str] = field(default_factory=list)
    place: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    message: str = ""
    num_keypoints: int = 0
    inlier_matches: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # map image -> (K, 2) q, map kp
    query_keypoints: np.ndarray | None = field(default=None, repr=False)
    retrieval_path: str = "global"  # which path chose the keyframes: "global" retrieval, "tracking", "given"

    @property
    def T_world_cam(self) -> np.ndarray | None:
        """Camera-to-world pose (hierloc's keyframe convention), or None for a failure."""
        return None if self.T_cam_world is None else invert_pose(self.T_cam_world)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays but the pose)."""
        from ..maps.poses import rotmat_to_qvec

        pose = None
        if self.T_cam_world is not None:
            pose = {"qvec_wxyz": rotmat_to_qvec(self.T_cam_world[:3, :3]).tolist(),
                    "tvec": self.T_cam_world[:3, 3].tolist(), "convention": "world-to-camera (COLMAP/hloc)"}
        return {"name": self.name, "success": self.success, "message": self.message, "pose": pose,
                "num_inliers": self.num_inliers, "num_correspondences": self.num_correspondences,
                "num_keypoints": self.num_keypoints,
                "camera": {"model": self.camera.model, "width": self.camera.width, "height": self.camera.height,
                           "params": self.camera.params.tolist(), "source": self.camera_source},
                "retrieved": self.retrieved, "retrieval_path": self.retrieval_path, "place": self.place,
                "attempts": self.attempts,
                "timings_s": self.timings}


@dataclass
class QueryImage:
    """A query for batch localization: a name, a pixel loader, and optionally a camera or the file path."""

    name: str
    load: Callable[[], np.ndarray]
    camera: Camera | None = None
    image_path: Path | None = None


@dataclass
class _Described:
    """A query after the network stages: retrieved keyframes, local features, and their timings."""

    retrieved: list[str]
    features: LocalFeatures
    timings: dict[str, float]
    network_seconds: float  # wall clock of the network stages (less than their sum when they ran concurrently)


@dataclass
class _Target:
    """What a query is matched against in one map image."""

    features: LocalFeatures  # all keypoints, or only those with a 3-D point
    keypoint_index: np.ndarray  # row in the map image's full keypoint list
    point_rows: np.ndarray  # 3-D point per matched keypoint, -1 where none
    descriptors: torch.Tensor | None  # for nearest-neighbour matching


class Localizer:
    """A resident localizer: the map, its index and the networks stay loaded; `localize` is thread-safe."""

    def __init__(self, scene: SceneMap, config: LocalizerConfig | None = None, *, device: str = "cpu",
                 matcher: str | None = None, matcher_options: dict | None = None) -> None:
        self.scene = scene
        self.config = config = config or LocalizerConfig()
        self.device = torch.device(device)
        self.extractor = make_extractor(scene.feature_config, device=device)
        self.matcher = make_matcher(matcher or scene.matcher_config, scene.feature_config, device=device,
                                    **(matcher_options or {}))
        only_3d = config.match_triangulated_only
        self._only_3d = isinstance(self.matcher, MutualNearestNeighbor) if only_3d is None else bool(only_3d)
        self._targets: dict[str, _Target] = {}
        self._lock = threading.Lock()
        self._stage_pool: ThreadPoolExecutor | None = None  # the concurrent local-feature stage, made on first use
        self._stage_chooser: StageModeChooser | None = None
        self._network_calls = 0  # the traced network's first calls are slow: the stage modes are timed after them
        self._global = None
        self._retriever = None
        if config.num_retrieved and scene.global_index is not None:
            # Retrieval goes through the index stack with the map's own describer (recorded in its index).
            self._global = scene.load_global_describer(device=device, fast=config.trace_global_network)
            self._retriever = scene.load_retriever()
        elif config.num_retrieved and len(scene) > config.num_retrieved:
            logger.warning("the map has no global index: every query is matched against all %d map images",
                           len(scene))

    @classmethod
    def load(cls, folder: str | os.PathLike, config: LocalizerConfig | None = None, **options) -> "Localizer":
        """Load a map folder (see `SceneMap`) and build the localizer."""
        return cls(SceneMap.load(folder), config, **options)

    # ------------------------------------------------------------------ stages

    def retrieve(self, image: np.ndarray, k: int | None = None) -> list[str]:
        """Map images most similar to the query, best first: `k` (default `num_retrieved`); all without an index."""
        if self._retriever is None:
            return list(self.scene.names)
        return [hit.name for hit in self.retrieve_hits(image, k)]

    def retrieve_hits(self, image: np.ndarray, k: int | None = None) -> list:
        """The search's hits (name, distance, row) for the query, best first: `k` (default `num_retrieved`).
        Needs the map's global index (`retrieve` falls back to every map image without one)."""
        if self._retriever is None:
            raise ValueError("this map has no global index to retrieve from")
        descriptor = self._global.describe(image)
        self._network_calls += 1
        k = min(k or self.config.num_retrieved, len(self.scene))
        return self._retriever.retrieve(descriptor, k=k)[0]

    def places(self, candidates: Sequence[str]) -> list[list[str]]:
        """Candidates grouped into places by covisibility (or one place when clustering is off)."""
        candidates = [c for c in candidates if len(self.scene.points_of(c))]
        if not candidates:
            return []
        if not self.config.covisibility_clustering:
            return [list(candidates)]
        counts = self.scene.covisibility(list(candidates))
        return covisibility_clusters(candidates, counts, self.config.min_covisible_points)

    def _target(self, name: str) -> _Target:
        with self._lock:
            target = self._targets.get(name)
            if target is None:
                features = self.scene.features[name]
                rows = self.scene.point_index[name]
                keep = np.flatnonzero(rows >= 0) if self._only_3d else np.arange(len(features))
                subset = features.subset(keep)
                descriptors = (torch.from_numpy(subset.descriptors)
                               if isinstance(self.matcher, MutualNearestNeighbor) else None)
                target = _Target(subset, keep, rows[keep], descriptors)
                self._targets[name] = target
        return target

    def _matches_place_points(self) -> bool:
        return (self.config.match_place_points and self._only_3d and isinstance(self.matcher, MutualNearestNeighbor)
                and self.matcher.config.ratio_threshold is None)

    def _place_point_correspondences(self, query: LocalFeatures,
                                     place: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list]:
        """Mutual nearest neighbours between the query and the place's 3-D points (first observation of each)."""
        targets = [self._target(name) for name in place]
        rows = np.concatenate([t.point_rows for t in targets])
        source = np.concatenate([np.full(len(t.point_rows), i) for i, t in enumerate(targets)])
        keypoint = np.concatenate([t.keypoint_index for t in targets])
        _, first = np.unique(rows, return_index=True)  # keyframes come best-retrieved first
        descriptors = torch.cat([t.descriptors for t in targets])[torch.from_numpy(first)]
        matches0, _ = self.matcher.match_descriptors(query.descriptors, descriptors)
        q = np.flatnonzero(matches0 >= 0)
        chosen = first[matches0[q]]
        provenance = [(name, q[source[chosen] == i], keypoint[chosen[source[chosen] == i]])
                      for i, name in enumerate(place)]
        return q, rows[chosen], provenance

    def correspondences(self, query: LocalFeatures, place: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list]:
        """(query keypoint indices, 3-D point rows) without repeats, and per map image its (q, kp, corr) triples."""
        if self._matches_place_points() and len(place) > 1:
            return self._place_point_correspondences(query, place)
        pairs_q, pairs_p, provenance = [], [], []
        for name in place:
            target = self._target(name)
            if isinstance(self.matcher, MutualNearestNeighbor):
                matches0, _ = self.matcher.match_descriptors(query.descriptors, target.descriptors)
            else:
                matches0, _ = self.matcher.match(query, target.features)
            q = np.flatnonzero(matches0 >= 0)
            t = matches0[q]
            rows = target.point_rows[t]
            ok = rows >= 0
            pairs_q.append(q[ok])
            pairs_p.append(rows[ok])
            provenance.append((name, q[ok], target.keypoint_index[t[ok]]))
        if not pairs_q:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), provenance
        stacked = np.stack([np.concatenate(pairs_q), np.concatenate(pairs_p)], axis=1)
        unique = np.unique(stacked, axis=0) if len(stacked) else stacked.reshape(0, 2)
        return unique[:, 0], unique[:, 1], provenance

    # ------------------------------------------------------------------ the query

    def localize(self, image: np.ndarray, camera: Camera | None = None, name: str = "query",
                 image_path: str | os.PathLike | None = None,
                 candidates: Sequence[str] | None = None) -> LocalizationResult:
        """Pose of one query image (HxW or HxWx3); `camera` default: EXIF of `image_path`, else a guess.

        `candidates` (map image names, best first) replace global retrieval: a tracker that knows
        where the camera was passes the keyframes around its previous pose and skips the network.
        """
        result = self._match_and_pose(self._describe(image, candidates), image, camera, name, image_path)
        result.retrieval_path = "global" if candidates is None else "given"
        return result

    def _describe(self, image: np.ndarray, candidates: Sequence[str] | None = None) -> _Described:
        """The network stages of a query: retrieval (global descriptor + search, unless given) and local features."""
        timings = {stage: 0.0 for stage in STAGES}
        start = time.perf_counter()
        mode = self._stage_mode() if candidates is None else SEQUENTIAL
        if mode == CONCURRENT:
            local = self._local_stage_pool().submit(_timed, self.extractor.extract, image)
            # On a CPU the OpenCV stage keeps one core busy: the network gets the others.
            network_threads = (torch_threads(torch.get_num_threads() - 1) if self.device.type == "cpu"
                               else contextlib.nullcontext())
            with network_threads:
                retrieved, timings["retrieval"] = _timed(self.retrieve, image)
            features, timings["local_features"] = local.result()
        else:
            if candidates is None:
                retrieved, timings["retrieval"] = _timed(self.retrieve, image)
            else:
                retrieved = list(candidates)
            features, timings["local_features"] = _timed(self.extractor.extract, image)
        seconds = time.perf_counter() - start
        if self._stage_chooser is not None and candidates is None:
            self._stage_chooser.record(mode, seconds)
        return _Described(retrieved, features, timings, seconds)

    def _stage_policy(self) -> str:
        """SEQUENTIAL or CONCURRENT when fixed (by `concurrent_stages` or the set-up), else MEASURED."""
        forced = self.config.concurrent_stages
        if self._retriever is None or forced is False:
            return SEQUENTIAL
        if forced:
            return CONCURRENT
        # The automatic choice needs local features off torch, and a GPU or a spare CPU thread.
        if self.extractor.uses_torch or (self.device.type == "cpu" and torch.get_num_threads() < 2):
            return SEQUENTIAL
        return MEASURED

    def _stage_mode(self) -> str:
        """Sequential or concurrent retrieval and local features for the next query (see `concurrent_stages`)."""
        policy = self._stage_policy()
        if policy != MEASURED:
            return policy
        if self._network_calls < 3:  # the traced network is steady from its fourth call: the first would decide
            return SEQUENTIAL
        if self._stage_chooser is None:
            setup = (self._global.kind, self._global.name, self._global.preprocessing,
                     repr(sorted(self.extractor.describe_config().items())), self.device.type,
                     torch.get_num_threads())
            self._stage_chooser = stage_mode_chooser(setup)
        return self._stage_chooser.next_mode()

    @property
    def stage_mode(self) -> dict:
        """How retrieval and local features run: the choice (None while measuring) and its trial timings."""
        if self._stage_chooser is not None:
            return self._stage_chooser.summary()
        policy = self._stage_policy()
        return {"chosen": None if policy == MEASURED else policy, "trial_seconds": {}}

    def _local_stage_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._stage_pool is None:
                self._stage_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hierloc-local-features")
            return self._stage_pool

    def _match_and_pose(self, described: _Described, image: np.ndarray, camera: Camera | None, name: str,
                        image_path: str | os.PathLike | None) -> LocalizationResult:
        """The geometric stages of a described query: places, 2D-3D matches, PnP, and the verdict."""
        start = time.perf_counter()
        timings = dict(described.timings)
        height, width = image.shape[:2]
        camera_source = "given"
        if camera is None:
            camera, camera_source = query_camera(width, height, image_path, self.config.default_fov_deg)
        elif (camera.width, camera.height) != (width, height):
            raise ValueError(f"query {name}: camera is {camera.width}x{camera.height} but the image {width}x{height}")
        focal_policy = self.config.pose.estimate_focal_length
        estimate_focal = focal_policy == "always" or (focal_policy == "auto" and camera_source == "guess")
        retrieved, query = described.retrieved, described.features

        t0 = time.perf_counter()
        places = self.places(retrieved)[: self.config.max_places]
        timings["clustering"] = time.perf_counter() - t0

        result = LocalizationResult(name, False, None, 0, 0, camera, camera_source, retrieved,
                                    num_keypoints=len(query), query_keypoints=query.keypoints)
        best = None
        for place in places:
            t0 = time.perf_counter()
            q_idx, p_rows, provenance = self.correspondences(query, place)
            timings["matching"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            estimate = estimate_absolute_pose(query.keypoints[q_idx], self.scene.points_xyz[p_rows], camera,
                                              self.config.pose, estimate_focal) if len(q_idx) >= 4 else None
            timings["pose"] += time.perf_counter() - t0
            inliers = 0 if estimate is None else estimate["num_inliers"]
            result.attempts.append({"place": list(place), "correspondences": int(len(q_idx)), "inliers": inliers})
            if best is None or inliers > best[0]:
                best = (inliers, place, q_idx, p_rows, provenance, estimate)
            if inliers >= self.config.min_inliers:
                break
        result.timings = timings
        if best is None:
            result.message = "no retrieved map image observes 3-D points" if not places else "no correspondences"
            timings["total"] = described.network_seconds + time.perf_counter() - start
            return result
        inliers, place, q_idx, p_rows, provenance, estimate = best
        result.num_inliers, result.num_correspondences, result.place = inliers, int(len(q_idx)), list(place)
        if estimate is not None:  # kept for failures too: pictures of a failure show what RANSAC agreed on
            result.inlier_matches = _inlier_matches(self.scene, q_idx, p_rows, estimate["inlier_mask"], provenance)
        # The query's own latency, whether or not its network stages overlapped with another query's.
        timings["total"] = described.network_seconds + time.perf_counter() - start
        if estimate is None or inliers < self.config.min_inliers:
            result.message = (f"best place has {inliers} inliers of {len(q_idx)} correspondences, fewer than "
                              f"min_inliers={self.config.min_inliers}")
            return result
        result.success = True
        result.T_cam_world = estimate["T_cam_world"]
        result.camera = estimate["camera"]
        return result

    def localize_many(self, queries: Sequence[QueryImage], progress: bool = True,
                      overlap: bool | None = None) -> list[LocalizationResult]:
        """Batch mode: results in order; with `overlap`, the next queries are decoded and described
        (networks) in a worker thread while the current one is matched and posed.

        `overlap` defaults to True when the networks run on a GPU. On a CPU every stage is compute
        bound and already uses all cores, so overlapping gained nothing on 2 cores (bench/localize.py).
        """
        if overlap is None:
            overlap = self.device.type == "cuda"

        def decode_and_describe(query: QueryImage) -> tuple[np.ndarray, _Described]:
            t0 = time.perf_counter()
            image = query.load()
            decode_seconds = time.perf_counter() - t0
            described = self._describe(image)
            described.timings["decode"] = decode_seconds
            return image, described

        results = []
        bar = tqdm(total=len(queries), desc="localizing", unit="query", disable=not progress)
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead: deque = deque()
            upcoming = iter(queries)
            for query in upcoming:
                if not overlap:
                    image, described = decode_and_describe(query)
                    results.append(self._match_and_pose(described, image, query.camera, query.name, query.image_path))
                    bar.update()
                    continue
                ahead.append((query, pool.submit(decode_and_describe, query)))
                # Two queries in flight bound the memory of decoded images while keeping the worker busy.
                if len(ahead) < 2:
                    continue
                results.append(self._finish_next(ahead))
                bar.update()
            while overlap and ahead:
                results.append(self._finish_next(ahead))
                bar.update()
        bar.close()
        return results

    def _finish_next(self, ahead: deque) -> LocalizationResult:
        query, future = ahead.popleft()
        image, described = future.result()
        return self._match_and_pose(described, image, query.camera, query.name, query.image_path)


def _timed(function: Callable, *args) -> tuple[Any, float]:
    """`function(*args)` and the seconds it took."""
    t0 = time.perf_counter()
    return function(*args), time.perf_counter() - t0


def _inlier_matches(scene: SceneMap, q_idx: np.ndarray, p_rows: np.ndarray, inlier_mask: np.ndarray,
                    provenance: list) -> dict[str, np.ndarray]:
    """Per map image, the (query keypoint, map keypoint) matches whose 2D-3D correspondence is a PnP inlier."""
    # A (query keypoint, 3-D point) pair as one integer, so that membership is one vectorised np.isin.
    stride = np.int64(max(scene.num_points, 1))
    inlier_keys = np.asarray(q_idx, np.int64)[inlier_mask] * stride + np.asarray(p_rows, np.int64)[inlier_mask]
    out = {}
    for map_name, q, kp in provenance:
        rows = scene.point_index[map_name][kp]
        keep = np.isin(np.asarray(q, np.int64) * stride + rows, inlier_keys) & (rows >= 0)
        out[map_name] = np.stack([q[keep], kp[keep]], axis=1) if keep.any() else np.zeros((0, 2), np.int64)
    return out


def summarize_timings(results: Iterable[LocalizationResult]) -> dict[str, dict[str, float]]:
    """Median and mean seconds per stage over results."""
    results = list(results)
    summary = {}
    for stage in ("decode", *STAGES, "total"):
        values = [r.timings[stage] for r in results if stage in r.timings]
        if values:
            summary[stage] = {"median_s": float(np.median(values)), "mean_s": float(np.mean(values))}
    return summary
