"""Maps from image folders, with optional pose files, cameras files and Strecha ground truth.

Layout (`root` is the folder given to `read_image_folder`):

- If `root` holds images directly, it is one mission named after the folder (images directly in
  it only). Otherwise every sub-folder holding images (at any depth) is a mission named after the
  sub-folder, in natural name order; hidden folders are skipped.
- Keyframe names are relative to `root` (`summer/00001.png`), ordered naturally (`2.png` < `10.png`).
- Strecha scene (a folder with `gt_dense_cameras/`, images in `images/` or beside it): poses and
  cameras come from `gt_dense_cameras/<image file name>.camera` (an explicit `pose_file` or
  `camera` takes precedence).
- Pose files, unless `pose_file` is given, are found per mission as the first of: in the mission
  folder `poses.txt`, `poses.csv`, `groundtruth.txt`, `groundtruth.csv`, `<mission>.txt`,
  `<mission>.csv`; next to the mission folder `<mission>.txt`, `<mission>.csv`,
  `pose_<mission>.csv`. Formats and association: see `hierloc.maps.poses`.
- Cameras, unless `camera` is given: a COLMAP `cameras.txt` holding one camera, in the mission
  folder or else in `root`, applies to all the mission's images.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from hierloc.maps.poses import (
    PoseTable,
    associate_poses,
    read_cameras_txt,
    read_pose_file,
    read_strecha_camera,
    timestamp_from_name,
)
from hierloc.maps.types import Camera, Keyframe, Map, Mission
from hierloc.utils.images import IMAGE_EXTENSIONS, list_images

logger = logging.getLogger(__name__)

STRECHA_CAMERA_DIR = "gt_dense_cameras"
CAMERAS_FILE = "cameras.txt"

PoseFileArg = str | os.PathLike | Mapping[str, str | os.PathLike] | None


@dataclass
class _MissionSource:
    name: str
    folder: Path
    images: list[tuple[Path, str]]  # (path, name relative to the map root)
    strecha: bool = False


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: `img2` before `img10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def is_strecha_scene(folder: Path) -> bool:
    """Whether `folder` follows the Strecha layout (a `gt_dense_cameras/` sub-folder)."""
    return (folder / STRECHA_CAMERA_DIR).is_dir()


def _has_direct_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def _strecha_images(folder: Path, prefix: str) -> list[tuple[Path, str]]:
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    return [(p, prefix + name) for p, name in list_images([image_dir], recursive=False)]


def _discover_missions(root: Path) -> list[_MissionSource]:
    root_name = root.resolve().name
    if is_strecha_scene(root):
        return [_MissionSource(root_name, root, _strecha_images(root, ""), strecha=True)]
    if _has_direct_images(root):
        return [_MissionSource(root_name, root, list_images([root], recursive=False))]
    missions = []
    for sub in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: natural_key(p.name)):
        if is_strecha_scene(sub):
            images = _strecha_images(sub, f"{sub.name}/")
            strecha = True
        else:
            images = [(p, f"{sub.name}/{name}") for p, name in list_images([sub], recursive=True)]
            images = [(p, n) for p, n in images if not any(part.startswith(".") for part in Path(n).parts)]
            strecha = False
        if images:
            missions.append(_MissionSource(sub.name, sub, images, strecha))
    if not missions:
        raise FileNotFoundError(
            f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} in the folder and its sub-folders)"
        )
    return missions


def _find_pose_file(root: Path, mission: _MissionSource) -> Path | None:
    name = mission.name
    candidates = [mission.folder / f for f in ("poses.txt", "poses.csv", "groundtruth.txt", "groundtruth.csv",
                                               f"{name}.txt", f"{name}.csv")]
    if mission.folder != root:
        candidates += [root / f for f in (f"{name}.txt", f"{name}.csv", f"pose_{name}.csv")]
    for candidate in candidates:
        if candidate.is_file():
            logger.info("mission %s: poses from %s", name, candidate)
            return candidate
    return None


def _find_camera(root: Path, mission: _MissionSource) -> Camera | None:
    for folder in (mission.folder, root):
        path = folder / CAMERAS_FILE
        if path.is_file():
            cameras = read_cameras_txt(path)
            if len(cameras) != 1:
                raise ValueError(f"{path}: holds {len(cameras)} cameras; "
                                 "a folder map needs exactly one per cameras file")
            return next(iter(cameras.values()))
    return None


def _load_table(path: Path, pose_format: str, T_body_cam: np.ndarray | None) -> PoseTable:
    table = read_pose_file(path, pose_format)
    return table.transformed(T_body_cam) if T_body_cam is not None else table


def _apply_table(
    keyframes: list[Keyframe], table: PoseTable, names: list[str], max_time_diff: float
) -> None:
    indices, method = associate_poses(table, names, max_time_diff=max_time_diff)
    missing = int(np.sum(indices < 0))
    if missing:
        logger.warning("%s: %d of %d images have no pose (association by %s)", table.path, missing, len(names), method)
    for kf, row in zip(keyframes, indices):
        if row < 0:
            continue
        kf.pose = table.poses[row].copy()
        if table.timestamps is not None:
            kf.timestamp = float(table.timestamps[row])


def _strecha_keyframe_fields(mission: _MissionSource, path: Path) -> dict:
    camera_file = mission.folder / STRECHA_CAMERA_DIR / f"{path.name}.camera"
    if not camera_file.is_file():
        logger.warning("%s: missing Strecha camera file; image kept without pose", camera_file)
        return {}
    camera, pose = read_strecha_camera(camera_file)
    return {"camera": camera, "pose": pose}


def read_image_folder(
    root: str | os.PathLike,
    pose_file: PoseFileArg = None,
    pose_format: str = "auto",
    camera: Camera | None = None,
    *,
    max_time_diff: float = 0.1,
    T_body_cam: np.ndarray | None = None,
    name: str | None = None,
) -> Map:
    """Read an image folder (one mission per sub-folder, or the folder itself) as a Map.

    `pose_file` is one file (for a single mission, or names relative to `root` for several) or a
    mapping mission -> file; `T_body_cam` maps tracked-body poses to camera poses.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    sources = _discover_missions(root)
    missions: dict[str, Mission] = {}
    for source in sources:
        mission_camera = camera if camera is not None else _find_camera(root, source)
        ordered = sorted(source.images, key=lambda item: natural_key(item[1]))
        keyframes = []
        for index, (path, image_name) in enumerate(ordered):
            fields = _strecha_keyframe_fields(source, path) if source.strecha else {}
            if camera is not None or "camera" not in fields:
                fields["camera"] = mission_camera
            keyframes.append(
                Keyframe.create(image_name, source.name, index, image_path=path,
                                timestamp=timestamp_from_name(image_name), **fields)
            )
        missions[source.name] = Mission(source.name, keyframes)

    by_mission = _pose_files_by_mission(root, sources, pose_file)
    if isinstance(by_mission, Path):
        # One file for several missions: associate by the names relative to the root.
        all_keyframes = [kf for m in missions.values() for kf in m.keyframes]
        table = _load_table(by_mission, pose_format, T_body_cam)
        if table.names is None:
            raise ValueError(
                f"{by_mission}: one pose file for {len(missions)} missions needs an image-name column; "
                "pass a mapping mission -> pose file instead"
            )
        _apply_table(all_keyframes, table, [kf.name for kf in all_keyframes], max_time_diff)
    else:
        for source in sources:
            path = by_mission.get(source.name)
            if path is None:
                continue
            keyframes = missions[source.name].keyframes
            table = _load_table(path, pose_format, T_body_cam)
            _apply_table(keyframes, table, [kf.name for kf in keyframes], max_time_diff)
    return Map(name or root.resolve().name, missions, root)


def _pose_files_by_mission(root: Path, sources: list[_MissionSource], pose_file: PoseFileArg) -> Path | dict[str, Path]:
    if pose_file is None:
        found = {}
        for source in sources:
            if source.strecha:
                continue
            path = _find_pose_file(root, source)
            if path is not None:
                found[source.name] = path
        return found
    if isinstance(pose_file, Mapping):
        names = {s.name for s in sources}
        unknown = [m for m in pose_file if m not in names]
        if unknown:
            raise ValueError(f"pose files given for unknown missions {unknown}; missions in {root}: {sorted(names)}")
        files = {m: Path(p) for m, p in pose_file.items()}
    else:
        path = Path(pose_file)
        if len(sources) > 1:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such pose file")
            return path
        files = {sources[0].name: path}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such pose file")
    return files
