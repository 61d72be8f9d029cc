"""Query cameras and 6-DoF pose from 2D-3D correspondences (pycolmap LO-RANSAC + non-linear refinement)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..maps.types import Camera

COLMAP_DEFAULT_FOCAL_FACTOR = 1.2  # COLMAP's focal length guess: 1.2 x the longest side (about 45 deg)


@dataclass
class PoseEstimationConfig:
    """RANSAC and refinement options; focal estimation is for uncalibrated queries only."""

    ransac_max_error: float = 12.0  # pixels, as hloc and COLMAP
    estimate_focal_length: str = "auto"  # "always", "never", or "auto": when the camera is a guess (no EXIF)
    seed: int | None = 0  # RANSAC seed for repeatable results; None: random


def query_camera(width: int, height: int, image_path: str | os.PathLike | None = None,
                 default_fov_deg: float | None = None) -> tuple[Camera, str]:
    """(camera, where it came from) for a query without calibration: EXIF focal length, else a default.

    The source is "exif", "default-fov" (from `default_fov_deg`) or "guess" (COLMAP's 1.2 x max side).
    """
    if image_path is not None and Path(image_path).is_file():
        import pycolmap

        camera = pycolmap.infer_camera_from_image(str(image_path))
        if camera.has_prior_focal_length and (camera.width, camera.height) == (width, height):
            return Camera.from_pycolmap(camera), "exif"
    if default_fov_deg is not None:
        focal = 0.5 * max(width, height) / np.tan(np.radians(default_fov_deg) / 2.0)
        source = "default-fov"
    else:
        focal = COLMAP_DEFAULT_FOCAL_FACTOR * max(width, height)
        source = "guess"
    return Camera("SIMPLE_PINHOLE", width, height, [focal, width / 2.0, height / 2.0]), source


def estimate_absolute_pose(points2d: np.ndarray, points3d: np.ndarray, camera: Camera,
                           config: PoseEstimationConfig | None = None, estimate_focal: bool = False) -> dict | None:
    """T_cam_world, inlier mask and the (possibly refined) camera, or None when RANSAC finds no pose.

    `points2d` are COLMAP pixels of the query image, `points3d` world points.
    """
    import pycolmap

    config = config or PoseEstimationConfig()
    points2d = np.ascontiguousarray(points2d, dtype=np.float64).reshape(-1, 2)
    points3d = np.ascontiguousarray(points3d, dtype=np.float64).reshape(-1, 3)
    if len(points2d) < 4:
        return None
    estimation = pycolmap.AbsolutePoseEstimationOptions()
    estimation.ransac.max_error = config.ransac_max_error
    estimation.estimate_focal_length = estimate_focal
    if config.seed is not None:
        estimation.ransac.random_seed = int(config.seed)
    refinement = pycolmap.AbsolutePoseRefinementOptions()
    refinement.refine_focal_length = estimate_focal
    colmap_camera = camera.to_pycolmap()
    result = pycolmap.estimate_and_refine_absolute_pose(points2d, points3d, colmap_camera, estimation, refinement)
    if result is None:
        return None
    T = np.eye(4)
    T[:3, :] = np.asarray(result["cam_from_world"].matrix(), dtype=np.float64)
    return {"T_cam_world": T, "num_inliers": int(result["num_inliers"]),
            "inlier_mask": np.asarray(result["inlier_mask"], dtype=bool),
            "camera": Camera.from_pycolmap(colmap_camera) if estimate_focal else camera}
