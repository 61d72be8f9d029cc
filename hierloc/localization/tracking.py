"""Localizing a stream of frames: follow the previous frame's points, track around the previous pose, fall back to
global retrieval when lost.

    tracker = Tracker(Localizer.load("maps/office"))
    for frame in camera_stream:
        result = tracker.track(frame.image, frame.camera, frame.name)
        result.retrieval_path   # "flow", "tracking" (around the previous pose), "prior" or "global" (retrieval)

Three paths, cheapest first, as visual odometry systems do:

- "flow": the previous frame's PnP inlier keypoints are followed into the new frame with pyramidal
  Lucas-Kanade optical flow (OpenCV, kept only where the flow back from the new frame lands where it started),
  each still tied to its 3-D map point, and the pose is PnP RANSAC on those 2D-3D pairs (the localizer's own
  `estimate_absolute_pose`, with a tighter threshold: `flow_max_reprojection_px`). No local features, no
  matching. The pose counts when it has at least the localizer's `min_inliers` inliers and a share
  (`flow_min_inlier_ratio`) of the points followed; only its inliers are followed on. Points followed from
  frame to frame drift, so a full localization (the next path) refreshes them after `flow_refresh_frames`
  flow frames and whenever fewer than `flow_min_kept_ratio` of the points it gave are left. Optional
  (`TrackingConfig.optical_flow`).
- "tracking": the frame's local features are matched against the map images that observe most of the 3-D
  points the previous pose was computed from (its PnP inliers): the camera moved little, so those keyframes
  see the same scene (after flow frames: the map images nearest to the last flow pose, `keyframes_near_pose`,
  since the camera may have left the scene the last full localization saw). This skips the global describer
  and the search. A tracked pose with fewer inliers than the localizer needs, or than `min_inlier_ratio` of
  the last full localization's, is a failure. The pose is then estimated again on its inliers with a tighter PnP
  RANSAC threshold (`max_reprojection_px`; with the localizer's 12 px, poses 15-60 cm off passed), and is a
  failure when fewer than `min_inlier_ratio` of them (or than the localizer needs) stay, or when the camera
  moved more than `max_jump_keyframe_spacings` times the map's keyframe spacing (`keyframe_spacing`) from the
  previous pose.
- "global": the same frame is localized again through global retrieval, and tracking restarts from the next
  success. The time of failed attempts counts in the frame's total.

A prior pose (odometry, a client's guess; `track(..., prior=T_cam_world)` or, for a single frame,
`localize_with_prior`) serves the same way when there is nothing to track from: the frame is localized
against the map images whose cameras are nearest to the prior and look the same way
(`keyframes_near_pose`; path "prior"), and through global retrieval when that fails.

A Tracker keeps one grayscale frame (the previous one) and the points followed from it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from ..maps.poses import invert_pose
from ..maps.types import Camera
from ..utils.images import as_uint8, to_grayscale
from .absolute_pose import estimate_absolute_pose
from .localizer import STAGES, LocalizationResult, Localizer
from .scene_map import SceneMap


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
    # PnP RANSAC threshold of tracked poses, pixels: the tracked pose is estimated again on the localizer's inliers
    # (12 px, hloc's) with this threshold, and a frame where fewer than `min_inlier_ratio` of them stay is a failure.
    # On bench/tracking.py (320x240) tracked poses 15-60 cm off passed with 89-97 % of their correspondences inside
    # 12 px: among nearby keyframes, matches a few pixels off agree with a wrong pose. With 3 px, translation error
    # median / p95 / max went from 0.52 / 15.6 / 61 cm to 0.48 / 1.2 / 3.5 (independent localization: 0.46 / 1.7 /
    # 22) at the same speed. None: keep the localizer's pose.
    max_reprojection_px: float | None = 3.0
    # A tracked pose whose camera centre moved more than this many map keyframe spacings (median distance between
    # neighbouring keyframe centres: maps need not be metric) from the previous pose is a failure: a stream moves
    # little between frames (on the benchmark the worst tracked pose, 61 cm off, had jumped 3 spacings). None: off.
    max_jump_keyframe_spacings: float | None = 2.0
    max_prior_angle_deg: float = 90.0  # keyframes near a prior pose look within this angle of its direction
    # Optical flow ("flow" path): follow the previous frame's inlier keypoints instead of extracting features.
    # Off by default: on bench/tracking.py it makes a stream 11x faster per frame than independent localization
    # (median; tracking alone: 1.9x) but less accurate than tracking (with its 3 px check): translation error
    # median / p95 / max 0.64 / 2.1 / 13 cm against 0.48 / 1.2 / 3.5 (about 100 points followed where a full
    # localization has 150-400 inliers); with flow_refresh_frames=1, 2.8x at 0.50 / 1.7 / 13 cm.
    # See the README's "Streams: tracking".
    optical_flow: bool = False
    flow_window: int = 11  # Lucas-Kanade window side, pixels (11 drifted least on the synthetic world; 21 is OpenCV's)
    flow_levels: int = 3  # pyramid levels above the image: motions up to about 2**levels x the window
    flow_max_round_trip_px: float = 0.5  # forward then backward flow must land this close to the start
    # PnP RANSAC threshold of flow poses: followed points are sub-pixel measurements, and one that drifted by a
    # few pixels must leave the set (with the localizer's 12 px, flow poses 28-50 cm off passed on the benchmark).
    flow_max_reprojection_px: float = 2.0
    flow_min_inlier_ratio: float = 0.5  # a flow pose needs this share of the points followed as PnP inliers
    flow_refresh_frames: int = 3  # at most this many flow frames in a row, then a full localization (bounds drift)
    flow_min_kept_ratio: float = 0.5  # ... or sooner when fewer than this share of its points are still followed


@dataclass
class _FlowState:
    """What the flow path follows: the previous frame and its PnP inlier keypoints with their 3-D points."""

    gray: np.ndarray  # previous frame, grayscale uint8
    keypoints: np.ndarray  # (M, 2) float32, OpenCV pixels of `gray`
    point_rows: np.ndarray  # (M,) row of each keypoint's 3-D point in SceneMap.points_xyz
    map_images: np.ndarray  # (M,) row in map order of the map image the match came from
    map_keypoints: np.ndarray  # (M,) that map image's keypoint
    camera: Camera
    camera_source: str
    place: list[str]
    seeded: int  # points the last full localization gave
    T_cam_world: np.ndarray  # pose of `gray`
    frames: int = 0  # frames served by flow since then


def keyframes_near_pose(scene: SceneMap, T_cam_world: np.ndarray, count: int = 5,
                        max_angle_deg: float = 90.0) -> list[str]:
    """Map images whose camera centres are nearest to the pose's, nearest first (at most `count`), among
    those whose optical axis is within `max_angle_deg` of the pose's (a camera looking away sees other points)."""
    if not scene.images or count < 1:
        return []
    T_world_cam = invert_pose(np.asarray(T_cam_world, dtype=np.float64))
    poses = scene.camera_poses  # T_world_cam of every keyframe
    distances = np.linalg.norm(poses[:, :3, 3] - T_world_cam[:3, 3], axis=1)
    cosines = poses[:, :3, 2] @ T_world_cam[:3, 2]  # optical axes (unit z of each camera) in the world
    eligible = np.flatnonzero(cosines >= np.cos(np.radians(max_angle_deg)) - 1e-9)
    nearest = eligible[np.argsort(distances[eligible], kind="stable")[:count]]
    return [scene.images[i].name for i in nearest]


def keyframe_spacing(scene: SceneMap) -> float:
    """The map's own length scale: median distance from each keyframe's camera centre to its nearest other one
    (1.0 for a map of fewer than two keyframes, or all at one place)."""
    if len(scene.images) < 2:
        return 1.0
    centres = scene.camera_poses[:, :3, 3]
    nearest = np.empty(len(centres))
    for start in range(0, len(centres), 1024):  # blocks of rows: memory stays bounded on large maps
        distances = np.linalg.norm(centres[start:start + 1024, None, :] - centres[None, :, :], axis=2)
        distances[np.arange(len(distances)), np.arange(start, start + len(distances))] = np.inf
        nearest[start:start + len(distances)] = distances.min(axis=1)
    spacing = float(np.median(nearest))
    return spacing if np.isfinite(spacing) and spacing > 0 else 1.0


def localize_or_fall_back(localizer: Localizer, image: np.ndarray, camera: Camera | None, name: str,
                          candidates: Sequence[str], path: str, image_path=None,
                          check: Callable[[LocalizationResult], None] | None = None,
                          retry_global: bool = True) -> LocalizationResult:
    """Localize against `candidates` (`retrieval_path` = `path`; `check` may turn a success into a failure) and,
    when there are none or that fails, through global retrieval (the failed attempt's time counts in the total)."""
    result = None
    if candidates:
        result = localizer.localize(image, camera, name, image_path, candidates=candidates)
        result.retrieval_path = path
        if result.success and check is not None:
            check(result)
    if result is None or (not result.success and retry_global):
        spent = result.timings.get("total", 0.0) if result is not None else 0.0
        result = localizer.localize(image, camera, name, image_path)
        result.retrieval_path = "global"
        result.timings["total"] += spent
    return result


def localize_with_prior(localizer: Localizer, image: np.ndarray, camera: Camera | None, name: str,
                        prior: np.ndarray, config: TrackingConfig | None = None, image_path=None) -> LocalizationResult:
    """One frame with a prior pose `prior` (T_cam_world): against the keyframes near it (path "prior"), through
    global retrieval when that fails (path "global"). Stateless and thread-safe, unlike a Tracker."""
    config = config or TrackingConfig()
    candidates = keyframes_near_pose(localizer.scene, prior, config.keyframes, config.max_prior_angle_deg)
    return localize_or_fall_back(localizer, image, camera, name, candidates, "prior", image_path,
                                 retry_global=config.retry_global)


def _inlier_observations(scene: SceneMap, result: LocalizationResult) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A result's inlier matches flattened: the map images that have some, the (query keypoint, map keypoint)
    pairs of all of them in that order, and each pair's 3-D point row (-1 where the map keypoint has none)."""
    names = [map_name for map_name, pairs in result.inlier_matches.items() if len(pairs)]
    if not names:
        return names, np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    pairs = np.concatenate([result.inlier_matches[map_name] for map_name in names]).astype(np.int64)
    rows = np.concatenate([scene.point_index[map_name][result.inlier_matches[map_name][:, 1]]
                           for map_name in names]).astype(np.int64)
    return names, pairs, rows


def _grayscale_copy(image: np.ndarray) -> np.ndarray | None:
    """The frame as grayscale uint8, in memory of its own (the caller may reuse its buffer for the next frame);
    None for what is not an image (the localizer then refuses it with its own message)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1 or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        return None
    try:
        gray = to_grayscale(as_uint8(image[:, :, :3] if image.ndim == 3 else image))
    except (ValueError, TypeError):
        return None
    return gray.copy() if np.shares_memory(gray, image) else np.ascontiguousarray(gray)


class Tracker:
    """Stateful, one per stream (a robot's camera, a service session); `track` calls are serialised."""

    def __init__(self, localizer: Localizer, config: TrackingConfig | None = None) -> None:
        self.localizer = localizer
        self.config = config or TrackingConfig()
        self._last_points: np.ndarray | None = None  # 3-D point rows of the last success's inliers
        self._last_inliers = 0  # inliers of the last full localization ("tracking", "prior" or "global")
        self._flow: _FlowState | None = None
        self._last_pose: np.ndarray | None = None  # T_cam_world of the last success (any path)
        # One place decides PnP (estimate_absolute_pose, the localizer's options) with the flow path's threshold.
        self._flow_pose_config = dataclasses.replace(localizer.config.pose,
                                                     ransac_max_error=self.config.flow_max_reprojection_px)
        self._tracked_pose_config = (None if self.config.max_reprojection_px is None else dataclasses.replace(
            localizer.config.pose, ransac_max_error=self.config.max_reprojection_px))
        self._lock = threading.Lock()
        scene = localizer.scene
        self.keyframe_spacing = keyframe_spacing(scene)
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
            self._last_points, self._last_inliers, self._flow, self._last_pose = None, 0, None, None

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
              image_path=None, prior: np.ndarray | None = None) -> LocalizationResult:
        """Pose of the next frame of the stream; `result.retrieval_path` is "flow", "tracking", "prior" or "global".

        `prior` (T_cam_world, e.g. from odometry) is used when there is nothing to track from.
        """
        with self._lock:
            start = time.perf_counter()
            gray = _grayscale_copy(image) if self.config.optical_flow else None
            flow_seconds = 0.0
            if gray is not None and self._flow_is_due(gray, camera):
                result = self._track_flow(gray, camera, name, start)
                if result.success:
                    return result
                flow_seconds = time.perf_counter() - start  # a failed flow attempt is part of this frame's cost
            if self._last_points is not None:
                candidates, path, check = self._tracking_candidates(), "tracking", self._check_tracked
            elif prior is not None:
                candidates = keyframes_near_pose(self.localizer.scene, prior, self.config.keyframes,
                                                 self.config.max_prior_angle_deg)
                path, check = "prior", None
            else:
                candidates, path, check = [], "global", None
            result = localize_or_fall_back(self.localizer, image, camera, name, candidates, path, image_path,
                                           check, self.config.retry_global)
            if flow_seconds:
                result.timings["flow"] = flow_seconds
                result.timings["total"] += flow_seconds
            self._remember(result, gray)
            return result

    def _tracking_candidates(self) -> list[str]:
        """Keyframes to track against: after flow frames, those near the last flow pose (the camera may have moved
        away from the keyframes the last full localization saw); else those seeing most of its inlier points."""
        flow = self._flow
        if flow is not None and flow.frames > 0:
            return keyframes_near_pose(self.localizer.scene, flow.T_cam_world, self.config.keyframes,
                                       self.config.max_prior_angle_deg)
        return self.candidates(self._last_points)

    def _check_tracked(self, result: LocalizationResult) -> None:
        """Turns a doubtful tracked pose into a failure (see TrackingConfig): far fewer inliers than the previous
        frame's, too few left under the tighter threshold (the pose is re-estimated with it), or a jump."""
        config = self.config
        message = ""
        if result.num_inliers < config.min_inlier_ratio * self._last_inliers:
            message = (f"{result.num_inliers} inliers, fewer than {config.min_inlier_ratio:g} x the previous "
                       f"frame's {self._last_inliers}")
        elif self._tracked_pose_config is not None:
            loose = result.num_inliers
            t0 = time.perf_counter()
            reestimated = self._reestimate(result)
            seconds = time.perf_counter() - t0  # part of the frame's PnP and of its latency
            result.timings["pose"] = result.timings.get("pose", 0.0) + seconds
            result.timings["total"] = result.timings.get("total", 0.0) + seconds
            if not reestimated:
                message = f"no pose within {config.max_reprojection_px:g} px from the {loose} inliers"
            elif result.num_inliers < max(self.localizer.config.min_inliers, config.min_inlier_ratio * loose):
                message = (f"{result.num_inliers} of {loose} inliers within {config.max_reprojection_px:g} px, "
                           f"fewer than {config.min_inlier_ratio:g} of them or {self.localizer.config.min_inliers}")
        if not message and config.max_jump_keyframe_spacings is not None and self._last_pose is not None:
            jump = np.linalg.norm(invert_pose(result.T_cam_world)[:3, 3] - invert_pose(self._last_pose)[:3, 3])
            if jump > config.max_jump_keyframe_spacings * self.keyframe_spacing:
                message = (f"the camera moved {jump:.3g} from the previous pose, more than "
                           f"{config.max_jump_keyframe_spacings:g} x the map's keyframe spacing "
                           f"{self.keyframe_spacing:.3g}")
        if message:
            result.success, result.T_cam_world, result.message = False, None, f"tracking: {message}"

    def _reestimate(self, result: LocalizationResult) -> bool:
        """PnP again on the result's inlier 2D-3D pairs with `max_reprojection_px`; the result then holds that pose,
        its inliers and their matches. False when RANSAC finds no pose."""
        scene = self.localizer.scene
        names, pairs, rows = _inlier_observations(scene, result)
        if not names or result.query_keypoints is None:
            return False
        valid = rows >= 0
        # One 2D-3D pair per (query keypoint, 3-D point): matched in several map images, it is one observation.
        stride = np.int64(max(scene.num_points, 1))
        keys = np.unique(pairs[valid, 0] * stride + rows[valid])
        query_rows, point_rows = keys // stride, keys % stride
        estimate = estimate_absolute_pose(np.asarray(result.query_keypoints)[query_rows], scene.points_xyz[point_rows],
                                          result.camera, self._tracked_pose_config)
        if estimate is None:
            return False
        inlier_keys = keys[estimate["inlier_mask"]]
        result.T_cam_world, result.num_inliers = estimate["T_cam_world"], estimate["num_inliers"]
        for map_name in names:
            matches = result.inlier_matches[map_name]
            map_rows = scene.point_index[map_name][matches[:, 1]]
            keep = np.isin(matches[:, 0].astype(np.int64) * stride + map_rows, inlier_keys) & (map_rows >= 0)
            result.inlier_matches[map_name] = matches[keep]
        return True

    def _remember(self, result: LocalizationResult, gray: np.ndarray | None) -> None:
        """After a full localization: its inliers are what the next frame tracks from (and follows by flow)."""
        self._flow = None
        self._last_pose = result.T_cam_world if result.success else None
        if not result.success:
            self._last_points, self._last_inliers = None, 0
            return
        self._last_inliers = result.num_inliers
        scene = self.localizer.scene
        names, pairs, rows = _inlier_observations(scene, result)
        if not names:
            self._last_points = None
            return
        map_images = np.concatenate([np.full(len(result.inlier_matches[map_name]), scene.index_of(map_name))
                                     for map_name in names])
        valid = rows >= 0
        points = np.unique(rows[valid])
        self._last_points = points if len(points) else None
        if gray is None or result.query_keypoints is None or self._last_points is None:
            return
        # One followed point per query keypoint (matched in several map images, it is the same observation).
        _, first = np.unique(pairs[valid, 0], return_index=True)
        keep = np.flatnonzero(valid)[first]
        self._flow = _FlowState(
            gray=gray, keypoints=(np.asarray(result.query_keypoints)[pairs[keep, 0]] - 0.5).astype(np.float32),
            point_rows=rows[keep], map_images=map_images[keep], map_keypoints=pairs[keep, 1],
            camera=result.camera, camera_source=result.camera_source, place=list(result.place), seeded=len(keep),
            T_cam_world=result.T_cam_world)

    # ------------------------------------------------------------------ the flow path

    def _flow_is_due(self, gray: np.ndarray, camera: Camera | None) -> bool:
        """Whether this frame tries the flow path: there are points to follow and no refresh is due."""
        flow, config = self._flow, self.config
        if flow is None or flow.gray.shape != gray.shape:
            return False
        if flow.frames >= config.flow_refresh_frames or len(flow.keypoints) < config.flow_min_kept_ratio * flow.seeded:
            return False
        camera = camera or flow.camera
        return (camera.width, camera.height) == (gray.shape[1], gray.shape[0])

    def _follow(self, previous: np.ndarray, current: np.ndarray,
                keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pyramidal Lucas-Kanade flow of `keypoints` (OpenCV pixels of `previous`) into `current`: their new
        positions and which of them to keep (found both ways, back within `flow_max_round_trip_px`, inside)."""
        window = (self.config.flow_window, self.config.flow_window)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
        start = keypoints.reshape(-1, 1, 2)
        forward, found, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, None, winSize=window,
                                                     maxLevel=self.config.flow_levels, criteria=criteria)
        backward, found_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, forward, None, winSize=window,
                                                           maxLevel=self.config.flow_levels, criteria=criteria)
        forward, backward = forward.reshape(-1, 2), backward.reshape(-1, 2)
        round_trip = np.linalg.norm(backward - keypoints, axis=1)
        height, width = current.shape
        inside = ((forward[:, 0] >= 0) & (forward[:, 0] <= width - 1) & (forward[:, 1] >= 0)
                  & (forward[:, 1] <= height - 1))
        keep = (found.ravel() == 1) & (found_back.ravel() == 1) & (round_trip <= self.config.flow_max_round_trip_px)
        return forward, keep & inside & np.isfinite(forward).all(axis=1)

    def _track_flow(self, gray: np.ndarray, camera: Camera | None, name: str, start: float) -> LocalizationResult:
        """The flow path (see the module docstring); a failure when it does not hold."""
        flow, localizer = self._flow, self.localizer
        min_inliers = localizer.config.min_inliers
        camera_source = "given" if camera is not None else flow.camera_source
        camera = camera or flow.camera  # a stream keeps its camera: the one the last full localization used
        timings = {stage: 0.0 for stage in STAGES}
        t0 = time.perf_counter()
        followed, keep = self._follow(flow.gray, gray, flow.keypoints)
        timings["flow"] = time.perf_counter() - t0
        kept = np.flatnonzero(keep)
        estimate = None
        if len(kept) >= max(min_inliers, 4):
            t0 = time.perf_counter()
            # OpenCV pixels -> COLMAP pixels (top-left pixel centre at 0.5), as every hierloc keypoint.
            estimate = estimate_absolute_pose(followed[kept].astype(np.float64) + 0.5,
                                              localizer.scene.points_xyz[flow.point_rows[kept]], camera,
                                              self._flow_pose_config)
            timings["pose"] = time.perf_counter() - t0
        inliers = 0 if estimate is None else estimate["num_inliers"]
        timings["total"] = time.perf_counter() - start
        result = LocalizationResult(name, False, None, inliers, int(len(kept)), camera, camera_source,
                                    place=list(flow.place), timings=timings, num_keypoints=int(len(kept)),
                                    retrieval_path="flow")
        if estimate is None or inliers < min_inliers or inliers < self.config.flow_min_inlier_ratio * len(kept):
            result.message = (f"flow: {inliers} inliers among {len(kept)} of {len(flow.keypoints)} points followed; "
                              f"needs {min_inliers} and {self.config.flow_min_inlier_ratio:g} of those followed")
            return result
        chosen = kept[estimate["inlier_mask"]]
        result.success, result.T_cam_world = True, estimate["T_cam_world"]
        result.query_keypoints = followed[chosen].astype(np.float64) + 0.5
        names = self.localizer.scene.names
        result.inlier_matches = {
            names[image]: np.stack([np.flatnonzero(flow.map_images[chosen] == image),
                                    flow.map_keypoints[chosen][flow.map_images[chosen] == image]], axis=1)
            for image in np.unique(flow.map_images[chosen])}
        # Only the inliers are followed on; the last full localization's inlier count stays the reference.
        self._flow = _FlowState(gray=gray, keypoints=followed[chosen].astype(np.float32),
                                point_rows=flow.point_rows[chosen], map_images=flow.map_images[chosen],
                                map_keypoints=flow.map_keypoints[chosen], camera=camera, camera_source=camera_source,
                                place=flow.place, seeded=flow.seeded, T_cam_world=result.T_cam_world,
                                frames=flow.frames + 1)
        self._last_points = np.unique(flow.point_rows[chosen])
        self._last_pose = result.T_cam_world
        result.timings["total"] = time.perf_counter() - start
        return result
