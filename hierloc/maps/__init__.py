"""Maps: missions of keyframes with camera-to-world poses, read from folders, COLMAP models, ROS bags or synthesised.

Conventions are documented in `hierloc.maps.types`: `Keyframe.pose` is T_world_cam (4x4,
camera-to-world, OpenCV camera axes), quaternions are (w, x, y, z), ids are 128-bit hex strings.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from hierloc.maps.poses import (
    PoseTable,
    associate_poses,
    invert_pose,
    make_pose,
    pose_from_colmap,
    pose_to_colmap,
    qvec_to_rotmat,
    read_pose_file,
    read_strecha_camera,
    rotmat_to_qvec,
)
from hierloc.maps.readers import (
    is_colmap_model,
    is_rosbag,
    read_colmap_model,
    read_image_folder,
    read_rosbag,
)
from hierloc.maps.synthetic import SyntheticWorld, make_synthetic_map, write_synthetic_dataset
from hierloc.maps.types import (
    Camera,
    Keyframe,
    Map,
    Mission,
    id_to_uint64_pair,
    keyframe_id,
    uint64_pair_to_id,
)

MAP_KINDS = ("auto", "folder", "colmap", "rosbag")

_READERS = {"folder": read_image_folder, "colmap": read_colmap_model, "rosbag": read_rosbag}


def _colmap_model_in(folder: Path) -> Path | None:
    # A COLMAP project folder: the model is usually in sparse/0 or sparse.
    for candidate in (folder, folder / "sparse" / "0", folder / "sparse"):
        if candidate.is_dir() and is_colmap_model(candidate):
            return candidate
    return None


def detect_map_kind(source: str | os.PathLike) -> str:
    """'rosbag', 'colmap' or 'folder' from what the path looks like."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such map file or folder")
    if is_rosbag(path) or (path.suffix in (".db3", ".mcap") and (path.parent / "metadata.yaml").is_file()):
        return "rosbag"
    if path.is_dir():
        return "colmap" if _colmap_model_in(path) is not None else "folder"
    raise ValueError(
        f"{path}: cannot tell what kind of map this is (expected an image folder, a COLMAP model folder, "
        "a ROS1 .bag file or a ROS2 bag folder)"
    )


def load_map(source: str | os.PathLike, kind: str = "auto", **options) -> Map:
    """Read a map from an image folder, a COLMAP model or a ROS bag; `options` go to the reader.

    kind 'folder': `read_image_folder` options (pose_file, pose_format, camera, ...);
    'colmap': `read_colmap_model` (image_dir, group_by_folder); 'rosbag': `read_rosbag`
    (image_topic required, pose_topic, camera_info_topic, lazy, ...).
    """
    if kind not in MAP_KINDS:
        raise ValueError(f"unknown map kind {kind!r}; choose one of {', '.join(MAP_KINDS)}")
    path = Path(source)
    if kind == "auto":
        kind = detect_map_kind(path)
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such map file or folder")
    reader = _READERS[kind]
    accepted = [p for p in inspect.signature(reader).parameters if p not in ("root", "model_dir", "path")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{kind} maps take no option {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    if kind == "rosbag" and "image_topic" not in options:
        raise ValueError(f"{path}: a ROS bag map needs image_topic=... (and optionally pose_topic=...)")
    if kind == "colmap":
        model = _colmap_model_in(path)
        if model is None:
            raise FileNotFoundError(f"{path}: no COLMAP model (cameras and images .bin/.txt) "
                                    "here or in sparse/0, sparse")
        if "image_dir" not in options and model != path and (path / "images").is_dir():
            options["image_dir"] = path / "images"
        path = model
    return reader(path, **options)


__all__ = [
    "Camera",
    "Keyframe",
    "MAP_KINDS",
    "Map",
    "Mission",
    "PoseTable",
    "SyntheticWorld",
    "associate_poses",
    "detect_map_kind",
    "id_to_uint64_pair",
    "invert_pose",
    "keyframe_id",
    "load_map",
    "make_pose",
    "make_synthetic_map",
    "pose_from_colmap",
    "pose_to_colmap",
    "qvec_to_rotmat",
    "read_colmap_model",
    "read_image_folder",
    "read_pose_file",
    "read_rosbag",
    "read_strecha_camera",
    "rotmat_to_qvec",
    "uint64_pair_to_id",
    "write_synthetic_dataset",
]
