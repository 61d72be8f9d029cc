"""Strecha-style scenes: images with one `<image name>.camera` file each (K, distortion, R camera-to-world, C)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from ..maps.poses import read_strecha_camera
from .base import GroundTruthRule, ImageSet, RetrievalDataset, list_image_names

CAMERA_FOLDERS = ("gt_dense_cameras", "cameras")


def read_camera_poses(folder: str | os.PathLike, names: Sequence[str]) -> np.ndarray:
    """[N, 4, 4] camera-to-world poses from `<folder>/<file name>.camera` for each image name."""
    folder = Path(folder)
    poses, missing = [], []
    for name in names:
        path = folder / f"{PurePosixPath(name).name}.camera"
        if not path.is_file():
            missing.append(path.name)
            continue
        poses.append(read_strecha_camera(path)[1])
    if missing:
        raise FileNotFoundError(f"{folder}: no camera file for {len(missing)} of {len(names)} images, "
                                f"e.g. {', '.join(missing[:3])}")
    return np.stack(poses)


def find_camera_folder(scene: Path) -> Path:
    """The folder of `.camera` files of a scene (gt_dense_cameras/ as in the benchmark, or cameras/)."""
    for name in CAMERA_FOLDERS:
        if (scene / name).is_dir():
            return scene / name
    raise FileNotFoundError(f"{scene}: no camera folder ({' or '.join(CAMERA_FOLDERS)}) with .camera files")


def read_strecha(path: str | os.PathLike, max_distance: float | None = None, max_angle_deg: float = 180.0,
                 query_every: int = 2) -> RetrievalDataset:
    """One scene (images/ + gt_dense_cameras/): every `query_every`-th image (from the second) is a
    query, the others are references; 3-D pose ground truth within `max_distance` m and `max_angle_deg`."""
    scene = Path(path)
    image_folder = scene / "images" if (scene / "images").is_dir() else scene
    names = list_image_names(image_folder, recursive=False)
    poses = read_camera_poses(find_camera_folder(scene), names)
    if query_every < 2 or len(names) < 2:
        raise ValueError(f"{scene}: a Strecha scene is split into references and queries: needs query_every >= 2 "
                         f"and at least 2 images (got {len(names)})")
    rows = np.arange(len(names))
    is_query = rows % query_every == 1
    prefix = image_folder.relative_to(scene).as_posix() if image_folder != scene else ""
    everything = ImageSet("images", image_folder, names, key_prefix=prefix, poses=poses)
    reference = everything.subset(rows[~is_query])
    reference.name = "reference"
    queries = everything.subset(rows[is_query])
    queries.name = "query"
    notes = [f"Strecha scene {scene.name}: every {query_every}th image is a query ({is_query.sum()}), "
             f"the rest references ({(~is_query).sum()}); camera-file poses"]
    return RetrievalDataset(scene.name, scene, reference, [queries],
                            GroundTruthRule("poses", max_distance, max_angle_deg), notes)
