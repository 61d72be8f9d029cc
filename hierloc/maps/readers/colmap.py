"""Maps from COLMAP reconstructions (binary or text models): validated record by record, then read with pycolmap."""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

import numpy as np

from hierloc.maps.poses import invert_pose, make_pose, qvec_to_rotmat, timestamp_from_name
from hierloc.maps.readers.colmap_binary import load_colmap_reconstruction
from hierloc.maps.readers.folder import natural_key
from hierloc.maps.types import Camera, Keyframe, Map, Mission

logger = logging.getLogger(__name__)


def is_colmap_model(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a COLMAP model (cameras and images, .bin or .txt)."""
    folder = Path(folder)
    return all((folder / f"{part}.bin").is_file() or (folder / f"{part}.txt").is_file()
               for part in ("cameras", "images"))


def _guess_image_dir(model_dir: Path, first_name: str) -> Path | None:
    # Usual layouts: project/sparse/0 + project/images, project/sparse + project/images, model/images.
    for base in (model_dir, model_dir.parent, model_dir.parent.parent):
        candidate = base / "images"
        if (candidate / first_name).is_file():
            return candidate
    return None


def _cam_from_world_matrix(image) -> np.ndarray:
    cam_from_world = image.cam_from_world
    if callable(cam_from_world):  # a method since pycolmap 3.12, a property before
        cam_from_world = cam_from_world()
    # From the quaternion, normalised: pycolmap turns a slightly non-unit stored quaternion into a scaled matrix.
    x, y, z, w = np.asarray(cam_from_world.rotation.quat, dtype=np.float64)
    return make_pose(qvec_to_rotmat([w, x, y, z]), np.asarray(cam_from_world.translation, dtype=np.float64))


def read_colmap_model(
    model_dir: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    *,
    group_by_folder: bool = True,
    name: str | None = None,
) -> Map:
    """Read a COLMAP model as a Map with camera-to-world poses and the model's cameras.

    Images are grouped into missions by the parent folder of their name (`seq1/0001.png` ->
    mission `seq1`; names without a folder go to a mission named after the map) unless
    `group_by_folder` is False (one mission). `image_dir` is the folder the image names are
    relative to; if omitted, an `images/` folder beside or above the model is used when found.
    Unregistered images are kept without a pose. The model is validated before pycolmap reads it
    (`hierloc.maps.readers.colmap_binary`): damaged files, non-finite poses and image names outside the image
    folder are one ValueError naming the file.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such COLMAP model folder")
    if not is_colmap_model(model_dir):
        raise FileNotFoundError(f"{model_dir}: not a COLMAP model (expected cameras.bin/.txt and images.bin/.txt)")
    reconstruction = load_colmap_reconstruction(model_dir)

    images = sorted(reconstruction.images.values(), key=lambda im: natural_key(im.name))
    if not images:
        raise ValueError(f"{model_dir}: the COLMAP model holds no images")
    if image_dir is None:
        image_dir = _guess_image_dir(model_dir, images[0].name)
        if image_dir is None:
            logger.warning("%s: no image folder given or found; keyframes have no image paths", model_dir)
    else:
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir}: no such image folder")

    map_name = name or (Path(image_dir).resolve().name if image_dir is not None else model_dir.resolve().name)
    cameras = {camera_id: Camera.from_pycolmap(camera) for camera_id, camera in reconstruction.cameras.items()}
    missions: dict[str, Mission] = {}
    unposed = 0
    for image in images:
        parent = str(PurePosixPath(image.name).parent)
        mission_name = parent if group_by_folder and parent != "." else map_name
        mission = missions.setdefault(mission_name, Mission(mission_name))
        pose = invert_pose(_cam_from_world_matrix(image)) if image.has_pose else None
        unposed += pose is None
        mission.keyframes.append(
            Keyframe.create(
                image.name,
                mission_name,
                len(mission.keyframes),
                image_path=Path(image_dir) / image.name if image_dir is not None else None,
                timestamp=timestamp_from_name(image.name),
                pose=pose,
                camera=cameras.get(image.camera_id),
            )
        )
    if unposed:
        logger.info("%s: %d of %d images are not registered and have no pose", model_dir, unposed, len(images))
    ordered = {key: missions[key] for key in sorted(missions, key=natural_key)}
    return Map(map_name, ordered, Path(image_dir) if image_dir is not None else None)
