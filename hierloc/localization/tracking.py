"""Localizing a stream of frames: track around the previous pose, fall back to global retrieval when lost.

    tracker = Tracker(Localizer.load("maps/office"))
    for frame in camera_stream:
        result = tracker.track(frame.image, frame.camera, frame.name)
        result.retrieval_path   # "tracking" (around the previous pose) or "global" (retrieval)

While tracking holds, a frame is localized against the map images that observe most of the 3-D
points the previous frame's pose was computed from (its PnP inliers): the camera moved little,
so those keyframes see the same scene. This skips the global describer and the search, the largest
stage after local features. When a tracked frame fails (fewer inliers than the localizer needs),
the same frame is localized again through global retrieval, and tracking restarts from the next
success. Each result says which path served it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..maps.types import Camera
from .localizer import LocalizationResult, Localizer


@dataclass
class TrackingConfig:
    """How a Tracker chooses keyframes while tracking."""

    keyframes: int = 5  # map images localized against while tracking (those seeing most of the last inliers)
    min_shared_points: int = 10  # a map image sharing fewer of the last inlier points is not a candidate
    retry_global: bool = True  # a tracked frame that fails is localized again with global retrieval
    # A tracked pose needs at least this share of the previous pose's inliers: a pose from few inliers among
    # nearby keyframes can pass the localizer's absolute threshold and still be centimetres off (seen on the
    # demo world: 28 inliers and 3.1 cm where global retrieval gave 182 inliers and 0.18 cm).
    min_inlier_ratio: float = 0.5


class Tracker:
    """Stateful, one per stream (a robot's camera, a service session); `track` calls are serialised."""

    def __init__(self, localizer: Localizer, config: TrackingConfig | None = None) -> None:
        self.localizer = localizer
        self.config = config or TrackingConfig()
        self._last_points: np.ndarray | None = None  # 3-D point rows of the last success's inliers
        self._last_inliers = 0
        self._lock = threading.Lock()
        scene = localizer.scene
        # Inverse observation index, built once: for every 3-D point, the map images that observe it.
        pairs = [(scene.points_of(name), row) for row, name in enumerate(scene.names)]
        points = np.concatenate([p for p, _ in pairs]) if pairs else np.zeros(0, np.int64)
        images = np.concatenate([np.full(len(p), row) for p, row in pairs]) if pairs else np.zeros(0, np.int64)
        order = np.argsort(points, kind="stable")
        self._observed_points, self._observing_images = points[order], images[order]

    @property
    def tracking(self) -> bool:
        """Whether the next frame will be localized around the previous pose."""
        return self._last_points is not None

    def reset(self) -> None:
        """Forget the previous pose: the next frame goes through global retrieval."""
        with self._lock:
            self._last_points = None

    def candidates(self, point_rows: np.ndarray) -> list[str]:
        """Map images observing most of `point_rows`, best first (at most `keyframes`)."""
        start = np.searchsorted(self._observed_points, point_rows, side="left")
        stop = np.searchsorted(self._observed_points, point_rows, side="right")
        observers = np.concatenate([self._observing_images[a:b] for a, b in zip(start, stop)]) if len(start) else []
        counts = np.bincount(np.asarray(observers, dtype=np.int64), minlength=len(self.localizer.scene))
        best = np.argsort(-counts, kind="stable")[: self.config.keyframes]
        names = self.localizer.scene.names
        return [names[i] for i in best if counts[i] >= self.config.min_shared_points]

    def track(self, image: np.ndarray, camera: Camera | None = None, name: str = "frame",
              image_path=None) -> LocalizationResult:
        """Pose of the next frame of the stream; `result.retrieval_path` is "tracking" or "global"."""
        with self._lock:
            result = None
            if self._last_points is not None:
                candidates = self.candidates(self._last_points)
                if candidates:
                    result = self.localizer.localize(image, camera, name, image_path, candidates=candidates)
                    result.retrieval_path = "tracking"
                    if result.success and result.num_inliers < self.config.min_inlier_ratio * self._last_inliers:
                        result.success, result.T_cam_world = False, None
                        result.message = (f"tracking: {result.num_inliers} inliers, fewer than "
                                          f"{self.config.min_inlier_ratio:g} x the previous frame's "
                                          f"{self._last_inliers}")
            if result is None or (not result.success and self.config.retry_global):
                spent = result.timings.get("total", 0.0) if result is not None else 0.0
                result = self._global(image, camera, name, image_path)
                result.timings["total"] += spent  # a failed tracking attempt is part of this frame's cost
            self._remember(result)
            return result

    def _global(self, image, camera, name, image_path) -> LocalizationResult:
        result = self.localizer.localize(image, camera, name, image_path)
        result.retrieval_path = "global"
        return result

    def _remember(self, result: LocalizationResult) -> None:
        if not result.success:
            self._last_points, self._last_inliers = None, 0
            return
        self._last_inliers = result.num_inliers
        scene = self.localizer.scene
        rows = [scene.point_index[map_name][pairs[:, 1]] for map_name, pairs in result.inlier_matches.items()
                if len(pairs)]
        points = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
        self._last_points = points[points >= 0] if len(points) else None
