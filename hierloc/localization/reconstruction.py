"""3-D points with pycolmap: triangulation from known poses, incremental SfM, and COLMAP model import.

Our keypoints and matches go into a COLMAP database; COLMAP then triangulates (poses fixed) or
reconstructs. Two details matter with pycolmap 4.2:

- Two-view geometries must have their `config` set (CALIBRATED here): COLMAP 4.2's triangulator
  skips pairs whose configuration is unset, which leaves an empty map (hloc's own triangulation
  hits this with pycolmap 4.2.1).
- Keypoints are written in COLMAP pixels (top-left pixel centre at (0.5, 0.5)), the convention
  hierloc uses in memory; hloc-layout files are converted on reading.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..features.h5io import write_pairs
from ..features.types import LocalFeatures
from ..maps.poses import invert_pose
from ..maps.types import Camera
from .scene_map import MapImage, cam_from_world_matrix

logger = logging.getLogger(__name__)


@dataclass
class ReconstructionConfig:
    """Options of triangulation and SfM (COLMAP's names where they exist)."""

    epipolar_max_error: float = 4.0  # px; matches farther from the epipolar line of the known poses are dropped
    min_pair_inliers: int = 15  # a pair with fewer matches is not used
    ignore_two_view_tracks: bool = False  # COLMAP drops points seen twice by default; small maps need them
    filter_max_reproj_error: float = 4.0  # px
    filter_min_tri_angle: float = 1.5  # degrees
    num_threads: int = -1
    seed: int = 0


@contextmanager
def _quiet_colmap():
    """COLMAP's errors only: its per-image warnings (e.g. no image file to take colours from) are noise here."""
    import pycolmap

    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = max(int(level), 2)
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = level


def _pipeline_options(config: ReconstructionConfig):
    import pycolmap

    options = pycolmap.IncrementalPipelineOptions()
    options.extract_colors = False  # images may be in memory only; colours are not needed to localize
    options.num_threads = config.num_threads
    options.random_seed = config.seed
    options.triangulation.ignore_two_view_tracks = config.ignore_two_view_tracks
    options.mapper.filter_max_reproj_error = config.filter_max_reproj_error
    options.mapper.filter_min_tri_angle = config.filter_min_tri_angle
    return options


def _camera_key(camera: Camera) -> tuple:
    return camera.model, camera.width, camera.height, tuple(np.round(camera.params, 9))


class _DatabaseWriter:
    """Cameras, trivial rigs and frames, images and keypoints of a fresh COLMAP database (and reconstruction)."""

    def __init__(self, path: Path, images: Sequence[MapImage], features: dict[str, LocalFeatures],
                 with_poses: bool) -> None:
        import pycolmap

        self.db = pycolmap.Database.open(str(path))
        self.reconstruction = pycolmap.Reconstruction()
        camera_ids: dict[tuple, int] = {}
        for image_id, image in enumerate(images, start=1):
            key = _camera_key(image.camera)
            if key not in camera_ids:
                camera_ids[key] = len(camera_ids) + 1
                camera = image.camera.to_pycolmap(camera_ids[key])
                camera.has_prior_focal_length = image.calibrated
                self.db.write_camera(camera, use_camera_id=True)
                self.reconstruction.add_camera_with_trivial_rig(camera)
                self.db.write_rig(self.reconstruction.rig(camera_ids[key]), use_rig_id=True)
            keypoints = features[image.name].keypoints.astype(np.float64)
            colmap_image = pycolmap.Image(name=image.name, keypoints=keypoints, camera_id=camera_ids[key],
                                          image_id=image_id)
            if with_poses:
                cam_from_world = pycolmap.Rigid3d(invert_pose(image.pose)[:3, :])
                self.reconstruction.add_image_with_trivial_frame(colmap_image, cam_from_world)
            else:
                self.reconstruction.add_image_with_trivial_frame(colmap_image)
            # COLMAP checks that a frame exists before the image that belongs to it.
            self.db.write_frame(self.reconstruction.frame(image_id), use_frame_id=True)
            self.db.write_image(self.reconstruction.image(image_id), use_image_id=True)
            self.db.write_keypoints(image_id, keypoints.astype(np.float32))
            image.colmap_id = image_id

    def close(self) -> None:
        self.db.close()


def _essential_from_poses(T_cam1_world: np.ndarray, T_cam2_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cam2_from_cam1 4x4, essential matrix E with x2^T E x1 = 0 for normalised points)."""
    T21 = T_cam2_world @ invert_pose(T_cam1_world)
    t = T21[:3, 3]
    skew = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return T21, skew @ T21[:3, :3]


def epipolar_errors(points1: np.ndarray, points2: np.ndarray, camera1: Camera, camera2: Camera,
                    T_world_cam1: np.ndarray, T_world_cam2: np.ndarray) -> np.ndarray:
    """Largest of the two point-to-epipolar-line distances (pixels) of matched COLMAP pixels, from known poses."""
    _, E = _essential_from_poses(invert_pose(T_world_cam1), invert_pose(T_world_cam2))
    cam1, cam2 = camera1.to_pycolmap(), camera2.to_pycolmap()
    # Undistorted normalised rays; distances measured in each image through its mean focal length.
    rays1 = np.c_[cam1.cam_from_img(np.asarray(points1, dtype=np.float64)), np.ones(len(points1))]
    rays2 = np.c_[cam2.cam_from_img(np.asarray(points2, dtype=np.float64)), np.ones(len(points2))]
    lines2 = rays1 @ E.T  # epipolar lines in image 2
    lines1 = rays2 @ E  # in image 1
    d2 = np.abs(np.sum(lines2 * rays2, axis=1)) / np.maximum(np.linalg.norm(lines2[:, :2], axis=1), 1e-12)
    d1 = np.abs(np.sum(lines1 * rays1, axis=1)) / np.maximum(np.linalg.norm(lines1[:, :2], axis=1), 1e-12)
    return np.maximum(d1 * cam1.mean_focal_length(), d2 * cam2.mean_focal_length())


def triangulate_from_poses(images: Sequence[MapImage], features: dict[str, LocalFeatures],
                           matches: dict[tuple[int, int], np.ndarray], work_dir: str | os.PathLike | None = None,
                           config: ReconstructionConfig | None = None):
    """pycolmap.Reconstruction with the given poses fixed and points triangulated from verified matches.

    `matches` maps image index pairs (i, j) to (M, 2) keypoint index pairs. Matches are verified
    against the epipolar geometry of the known poses (`epipolar_max_error` px).
    """
    import pycolmap

    config = config or ReconstructionConfig()
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp, _quiet_colmap():
        database = Path(tmp) / "database.db"
        writer = _DatabaseWriter(database, images, features, with_poses=True)
        kept = 0
        for (i, j), pairs in matches.items():
            if len(pairs) == 0:
                continue
            a, b = images[i], images[j]
            writer.db.write_matches(a.colmap_id, b.colmap_id, pairs.astype(np.uint32))
            errors = epipolar_errors(features[a.name].keypoints[pairs[:, 0]], features[b.name].keypoints[pairs[:, 1]],
                                     a.camera, b.camera, a.pose, b.pose)
            inliers = pairs[errors < config.epipolar_max_error]
            if len(inliers) < config.min_pair_inliers:
                continue
            T21, E = _essential_from_poses(invert_pose(a.pose), invert_pose(b.pose))
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            geometry.E = E
            geometry.cam2_from_cam1 = pycolmap.Rigid3d(T21[:3, :])
            geometry.inlier_matches = inliers.astype(np.uint32)
            writer.db.write_two_view_geometry(a.colmap_id, b.colmap_id, geometry)
            kept += 1
        writer.close()
        if kept == 0:
            raise RuntimeError("no image pair has enough matches consistent with the given poses; "
                               "check the poses and cameras, or use SfM (mode sfm)")
        output = Path(tmp) / "model"
        output.mkdir()
        reconstruction = pycolmap.triangulate_points(writer.reconstruction, str(database), tmp, str(output),
                                                     options=_pipeline_options(config))
    return reconstruction


def incremental_sfm(images: Sequence[MapImage], features: dict[str, LocalFeatures],
                    matches: dict[tuple[int, int], np.ndarray], work_dir: str | os.PathLike | None = None,
                    config: ReconstructionConfig | None = None, refine_intrinsics: bool | None = None):
    """The largest pycolmap.Reconstruction of incremental SfM on our matches (verified by COLMAP).

    Intrinsics are refined by bundle adjustment when some camera is a guess (`refine_intrinsics`
    None), otherwise kept.
    """
    import pycolmap

    config = config or ReconstructionConfig()
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp, _quiet_colmap():
        database = Path(tmp) / "database.db"
        writer = _DatabaseWriter(database, images, features, with_poses=False)
        pair_names = []
        for (i, j), pairs in matches.items():
            if len(pairs) >= config.min_pair_inliers:
                writer.db.write_matches(images[i].colmap_id, images[j].colmap_id, pairs.astype(np.uint32))
                pair_names.append((images[i].name, images[j].name))
        writer.close()
        if not pair_names:
            raise RuntimeError("no image pair has enough matches for SfM")
        write_pairs(Path(tmp) / "pairs.txt", pair_names)
        verification = pycolmap.TwoViewGeometryOptions()
        verification.ransac.random_seed = config.seed
        pycolmap.verify_matches(str(database), str(Path(tmp) / "pairs.txt"), verification)
        options = _pipeline_options(config)
        if refine_intrinsics is None:
            refine_intrinsics = not all(image.calibrated for image in images)
        options.ba_refine_focal_length = refine_intrinsics
        options.ba_refine_extra_params = refine_intrinsics
        output = Path(tmp) / "sparse"
        output.mkdir()
        models = pycolmap.incremental_mapping(str(database), tmp, str(output), options)
    if not models:
        raise RuntimeError("SfM registered no image pair: too few or inconsistent matches")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    logger.info("SfM: %d models, the largest registers %d of %d images", len(models), best.num_reg_images(),
                len(images))
    return best


def reconstruction_poses(reconstruction) -> dict[str, np.ndarray]:
    """{image name: T_world_cam} of the registered images of a pycolmap reconstruction."""
    return {im.name: invert_pose(cam_from_world_matrix(im)) for im in reconstruction.images.values() if im.has_pose}
