"""A 3-D map for localization: keyframes with poses, their local features and the 3-D points they observe.

On disk a map is a folder:

    map.json             what built it (features, matcher, global model), the keyframes, statistics
    sfm/                 the COLMAP model (cameras, images with keypoints and point ids, points3D), binary
    features.h5          local features of the keyframes, hloc layout (same keypoint order as sfm/)
    global_index.h5      global descriptors of the keyframes: a hierloc index (describer recorded, search
                         structure stored) that retrieval goes through, if retrieval is on
    describer-*.pth      the describer's weights when not in the registry (e.g. adapted to this map)
    pairs.txt            the image pairs matched (written by `hierloc map build`)
    MANIFEST.json        every other file with its size and CRC32C, written last

A map folder switches from the old to the new content in one step: `save` writes everything into a hidden
sibling folder (`.<name>.hierloc-tmp-<pid>-<random>`), fsyncs it and exchanges it with the old folder
(renameat2 on Linux). `load` refuses a folder that does not match its manifest (torn, mixed or damaged) with one
line naming it, and validates map.json field by field. Map images are referenced as plain relative names
(`image_name`) inside one folder (`image_root`).

Poses are T_world_cam (camera-to-world) as everywhere in hierloc; COLMAP stores cam_from_world.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..features.h5io import read_features, write_features
from ..features.types import LocalFeatures
from ..maps.poses import invert_pose
from ..maps.types import Camera
from ..utils.images import IMAGE_EXTENSIONS
from ..utils.io import (
    TornFolderError,
    atomic_directory,
    atomic_write_text,
    is_plain_relative_name,
    recover_directory,
    to_json_text,
    verify_manifest,
    write_manifest,
)

logger = logging.getLogger(__name__)

MAP_FORMAT = "hierloc-scene-map"
MAP_VERSION = 2  # 2: MANIFEST.json, image_root + image_name instead of absolute image paths
MANIFEST_FILE = "MANIFEST.json"
ADAPTED_MODEL_FILE = "global_model.pth"  # maps written before describers were recorded
GLOBAL_INDEX_FILE = "global_index.h5"


class MapFormatError(ValueError):
    """A map folder is missing, incomplete or of another format."""


@dataclass(eq=False)
class MapImage:
    """One keyframe of a 3-D map."""

    name: str
    keyframe_id: str
    mission: str
    camera: Camera
    pose: np.ndarray  # T_world_cam, 4x4
    image_path: Path | None = None
    colmap_id: int = 0
    calibrated: bool = True  # False: the camera is a guess that SfM may refine

    def to_json(self, image_root: Path | None = None) -> dict[str, Any]:
        """JSON-ready description (the pose is in the COLMAP model); the image file as a name under `image_root`."""
        image_name = None
        if self.image_path is not None and image_root is not None:
            image_name = Path(os.path.abspath(self.image_path)).relative_to(image_root).as_posix()
        return {"name": self.name, "keyframe_id": self.keyframe_id, "mission": self.mission,
                "image_name": image_name, "colmap_id": self.colmap_id}


def cam_from_world_matrix(image) -> np.ndarray:
    """4x4 cam_from_world of a pycolmap.Image."""
    cam_from_world = image.cam_from_world
    if callable(cam_from_world):  # a method in recent pycolmap, a property before
        cam_from_world = cam_from_world()
    T = np.eye(4)
    T[:3, :] = np.asarray(cam_from_world.matrix(), dtype=np.float64)
    return T


@dataclass(eq=False)
class SceneMap:
    """Keyframes, their local features, 3-D points and covisibility, plus the optional global index."""

    images: list[MapImage]
    features: dict[str, LocalFeatures]
    point_index: dict[str, np.ndarray]  # name -> (N,) row into points_xyz per keypoint, -1 where none
    points_xyz: np.ndarray  # (P, 3) world coordinates
    reconstruction: Any  # pycolmap.Reconstruction
    feature_config: dict
    matcher_config: dict
    global_index: Any = None  # hierloc.index.DescriptorIndex over `images`, in the same order
    global_model: dict | None = None  # what map.json says about retrieval (describer summary, search)
    global_describer: Any = None  # hierloc.describers.Describer in memory (after a build); loaded lazily otherwise
    metadata: dict = field(default_factory=dict)
    root: Path | None = None

    def __post_init__(self) -> None:
        self._by_name = {im.name: i for i, im in enumerate(self.images)}
        if len(self._by_name) != len(self.images):
            raise MapFormatError("map image names must be unique")
        self._points_of = {im.name: np.unique(self.point_index[im.name][self.point_index[im.name] >= 0])
                           for im in self.images}

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self.images)

    @property
    def names(self) -> list[str]:
        """Image names in map order."""
        return [im.name for im in self.images]

    @cached_property
    def camera_poses(self) -> np.ndarray:
        """(N, 4, 4) T_world_cam of the images in map order, stacked once (trackers ask for them every frame)."""
        if not self.images:
            return np.zeros((0, 4, 4))
        return np.stack([im.pose for im in self.images]).astype(np.float64)

    @property
    def num_points(self) -> int:
        """Number of 3-D points."""
        return len(self.points_xyz)

    def image(self, name: str) -> MapImage:
        """The map image with this name."""
        if name not in self._by_name:
            raise KeyError(f"the map has no image {name!r}")
        return self.images[self._by_name[name]]

    def index_of(self, name: str) -> int:
        """Row of an image in map order."""
        return self._by_name[name]

    def points_of(self, name: str) -> np.ndarray:
        """Sorted rows of the 3-D points an image observes."""
        return self._points_of[name]

    def covisibility(self, names: list[str]) -> np.ndarray:
        """(n, n) number of 3-D points shared by each pair of the given images."""
        sets = [self._points_of[n] for n in names]
        counts = np.zeros((len(names), len(names)), dtype=np.int64)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                counts[i, j] = counts[j, i] = len(np.intersect1d(sets[i], sets[j], assume_unique=True))
        return counts

    @property
    def is_metric(self) -> bool:
        """Whether the map frame is the frame of the input poses (triangulation), not an SfM frame."""
        return self.metadata.get("mode") in ("triangulation", "colmap-import")

    def summary(self) -> str:
        """One paragraph: images, points, mean track length, build mode."""
        observations = sum(int((p >= 0).sum()) for p in self.point_index.values())
        track = observations / max(1, self.num_points)
        return (f"3-D map: {len(self.images)} images, {self.num_points} points, {observations} observations "
                f"(mean track length {track:.2f}), built by {self.metadata.get('mode', '?')} with "
                f"{self.feature_config.get('name')} features and {self.matcher_config.get('name')} matching; "
                f"global retrieval: {self._retrieval_summary()}")

    def _retrieval_summary(self) -> str:
        if self.global_index is None:
            return "off"
        if self.global_describer is not None:
            return self.global_describer.identity.summary()
        model = self.global_model or {}
        return str(model.get("describer") or model.get("name") or self.global_index.model_name)

    def load_global_describer(self, device: str = "cpu", fast: bool = True):
        """The describer of the map's global index: the one in memory, or the one recorded in the saved map."""
        from ..describers import load_artifact_describer

        if self.global_describer is None:
            if self.root is None:
                raise MapFormatError("this map has a global index but no describer (neither in memory nor saved)")
            self.global_describer = load_artifact_describer(self.root, device=device, fast=fast)
        return self.global_describer

    def load_retriever(self):
        """A Retriever over the map's images through the index stack (stored search structure when saved)."""
        from ..index.stored_search import load_retriever, retriever_for_index

        path = self.root / GLOBAL_INDEX_FILE if self.root is not None else None
        if path is not None and path.is_file():
            return load_retriever(path, mmap=True)
        search = (self.global_model or {}).get("search") or {}
        if search.get("kind", "flat") in ("auto", "flat") and not search.get("pca_dims"):
            return retriever_for_index(self.global_index)
        from ..index.retriever import Retriever
        from ..index.stored_search import build_search

        backend = build_search(self.global_index, search["kind"], search.get("params") or {},
                               pca_dims=search.get("pca_dims"))
        return Retriever(self.global_index, pca=self.global_index.pca if search.get("pca_dims") else None,
                         backend=backend)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_reconstruction(cls, reconstruction, images: list[MapImage], features: dict[str, LocalFeatures],
                            feature_config: dict, matcher_config: dict, **extra) -> "SceneMap":
        """Index a pycolmap reconstruction whose images carry our keypoints in the same order.

        Images that the reconstruction did not register are left out (with a warning); poses are
        taken from the reconstruction.
        """
        by_name = {im.name: im for im in reconstruction.images.values()}
        point_ids = np.array(sorted(reconstruction.points3D.keys()), dtype=np.int64)
        row_of = {int(pid): row for row, pid in enumerate(point_ids)}
        points_xyz = np.array([reconstruction.points3D[int(pid)].xyz for pid in point_ids],
                              dtype=np.float64).reshape(-1, 3)
        kept, point_index = [], {}
        for image in images:
            rec_image = by_name.get(image.name)
            if rec_image is None or not rec_image.has_pose:
                logger.warning("map image %s was not registered; it is left out of the map", image.name)
                continue
            n = len(features[image.name])
            if rec_image.num_points2D() != n:
                raise MapFormatError(f"image {image.name}: the model has {rec_image.num_points2D()} keypoints, "
                                     f"the feature file {n}")
            ids = np.array([p.point3D_id if p.has_point3D() else -1 for p in rec_image.points2D], dtype=np.int64)
            point_index[image.name] = np.array([row_of.get(int(i), -1) for i in ids], dtype=np.int64)
            image.pose = invert_pose(cam_from_world_matrix(rec_image))
            image.camera = Camera.from_pycolmap(reconstruction.cameras[rec_image.camera_id])  # SfM may refine it
            image.colmap_id = int(rec_image.image_id)
            kept.append(image)
        if not kept:
            raise MapFormatError("no image of the map was registered")
        return cls(kept, {im.name: features[im.name] for im in kept}, point_index, points_xyz, reconstruction,
                   feature_config, matcher_config, **extra)

    # ------------------------------------------------------------------ files

    def save(self, folder: str | os.PathLike, extra_files: Callable[[Path], None] | None = None) -> Path:
        """Write the map folder (see the module docstring) in one step; returns it.

        Everything is written into a temporary sibling folder (plus what `extra_files(folder)` adds), listed in
        MANIFEST.json, fsynced and swapped with `folder`: a kill at any moment leaves the old map or the new one.
        """
        folder = Path(folder)
        check_map_target(folder)
        with atomic_directory(folder) as staging:
            self._write_files(staging)
            if extra_files is not None:
                extra_files(staging)
            write_manifest(staging, MANIFEST_FILE)
        self.root = folder
        return folder

    def _write_files(self, staging: Path) -> None:
        """Every file of the map into the empty folder `staging` (which becomes the map folder)."""
        from ..index.io import save_index

        (staging / "sfm").mkdir()
        self.reconstruction.write_binary(str(staging / "sfm"))
        write_features(staging / "features.h5", self.features, self.feature_config)
        if self.global_index is not None and self.global_describer is not None:
            self._save_global_index(staging)
        elif self.global_index is not None:
            saved_root = Path(self.root) if self.root is not None else None
            if saved_root is not None and (saved_root / GLOBAL_INDEX_FILE).is_file():
                # Loaded from a folder: its index, search structure and describer weights are copied as they are.
                written = {"map.json", MANIFEST_FILE, "pairs.txt", "features.h5"}
                for entry in os.scandir(saved_root):
                    if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".") \
                            and entry.name not in written:
                        shutil.copyfile(entry.path, staging / entry.name)
            else:
                save_index(self.global_index, staging / GLOBAL_INDEX_FILE)
        paths = [os.path.abspath(im.image_path) for im in self.images if im.image_path is not None]
        image_root = Path(os.path.commonpath([os.path.dirname(p) for p in paths])) if paths else None
        description = {
            "format": MAP_FORMAT, "version": MAP_VERSION, "hierloc_version": __version__,
            "features": self.feature_config, "matcher": self.matcher_config, "global_model": self.global_model,
            "image_root": None if image_root is None else str(image_root),
            "images": [im.to_json(image_root) for im in self.images], "metadata": self.metadata,
        }
        atomic_write_text(staging / "map.json", to_json_text(description, indent=2))

    def _save_global_index(self, folder: Path) -> None:
        """The global index with its describer record (weights beside it) and its search structure."""
        from ..describers import METADATA_KEY, describer_record
        from ..index.stored_search import build_search, save_index_with_search

        search = (self.global_model or {}).get("search") or {}
        pca_dims = search.get("pca_dims")
        self.global_index.metadata[METADATA_KEY] = describer_record(self.global_describer, folder)
        backend = build_search(self.global_index, search.get("kind", "auto"), search.get("params") or {},
                               pca_dims=pca_dims)
        save_index_with_search(self.global_index, backend, folder / GLOBAL_INDEX_FILE,
                               pca=self.global_index.pca if pca_dims else None)

    @classmethod
    def load(cls, folder: str | os.PathLike, verify: str = "auto") -> "SceneMap":
        """Read a map folder written by `save`; a torn, mixed or malformed one is refused (MapFormatError).

        `verify`: "auto" checks every file's size against the manifest and the checksum of files up to 16 MiB;
        "full" checksums every file.
        """
        from ..index.io import load_index

        folder = Path(folder)
        if not folder.exists() and recover_directory(folder):
            logger.warning("%s: put back the previous map, set aside by a build that was killed", folder)
        description_path = folder / "map.json"
        if not description_path.is_file():
            raise MapFormatError(f"{folder}: not a hierloc 3-D map (no map.json); build one with `hierloc map build`")
        has_manifest = (folder / MANIFEST_FILE).is_file()
        if has_manifest:
            try:
                verify_manifest(folder, MANIFEST_FILE, checksum_max_bytes=None if verify == "full" else 16 << 20)
            except TornFolderError as exc:
                raise MapFormatError(str(exc)) from None
        description = read_map_description(description_path)
        if description["version"] >= 2 and not has_manifest:
            raise MapFormatError(f"{folder}: torn or incomplete map (no {MANIFEST_FILE}, which is written last)")
        if not has_manifest:
            logger.warning("%s: a map of version %d has no manifest; a torn write cannot be detected (rebuild it)",
                           folder, description["version"])
        reconstruction = _read_reconstruction(folder / "sfm")
        names = [entry["name"] for entry in description["images"]]
        features = read_features(folder / "features.h5", names)
        rec_by_name = {im.name: im for im in reconstruction.images.values()}
        images = []
        for entry in description["images"]:
            rec_image = rec_by_name.get(entry["name"])
            if rec_image is None:
                raise MapFormatError(f"{folder}: image {entry['name']!r} is in map.json but not in sfm/")
            if rec_image.camera_id not in reconstruction.cameras:
                raise MapFormatError(f"{folder / 'sfm'}: image {entry['name']!r} has no camera")
            images.append(MapImage(entry["name"], entry["keyframe_id"], entry["mission"],
                                   Camera.from_pycolmap(reconstruction.cameras[rec_image.camera_id]),
                                   np.eye(4), entry["image_path"]))
        global_index = load_index(folder / GLOBAL_INDEX_FILE) if (folder / GLOBAL_INDEX_FILE).is_file() else None
        try:
            scene = cls.from_reconstruction(reconstruction, images, features, description["features"],
                                            description["matcher"], global_index=global_index,
                                            global_model=description["global_model"],
                                            metadata=description["metadata"])
        except MapFormatError as exc:
            raise MapFormatError(f"{folder}: {exc}") from None
        for image in scene.images:
            if not np.isfinite(image.pose).all() or not np.isfinite(image.camera.params).all():
                raise MapFormatError(f"{folder / 'sfm'}: image {image.name!r} has a non-finite pose or camera")
        if not np.isfinite(scene.points_xyz).all():
            raise MapFormatError(f"{folder / 'sfm'}: non-finite 3-D point coordinates")
        scene.root = folder
        return scene


def check_map_target(folder: str | os.PathLike) -> None:
    """Refuse to write a map over a folder that holds something else: saving replaces the whole folder."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.is_dir():
        raise MapFormatError(f"{folder}: a link to no folder; not writing a map there")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise MapFormatError(f"{folder}: exists and is not a folder; choose another map folder")
    if not any(folder.iterdir()):
        return
    try:
        is_map = json.loads((folder / "map.json").read_text(encoding="utf-8")).get("format") == MAP_FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        is_map = False
    if not is_map:
        raise MapFormatError(f"{folder}: exists and is not a hierloc 3-D map (no valid map.json); a map build "
                             "replaces the whole folder, so choose another one or remove it")


def _read_reconstruction(sfm_dir: Path):
    """The COLMAP model of a map, validated before pycolmap allocates anything."""
    try:
        from ..maps.readers.colmap_binary import load_colmap_reconstruction
    except ImportError:  # the validating reader is not there: pycolmap directly
        load_colmap_reconstruction = None
    if load_colmap_reconstruction is not None:
        try:
            return load_colmap_reconstruction(sfm_dir)
        except (ValueError, OSError, RuntimeError) as exc:
            raise MapFormatError(str(exc) if str(sfm_dir) in str(exc) else f"{sfm_dir}: {exc}") from None
    import pycolmap

    try:
        return pycolmap.Reconstruction(str(sfm_dir))
    except Exception as exc:  # pycolmap raises terse RuntimeErrors
        raise MapFormatError(f"{sfm_dir}: cannot read the COLMAP model ({exc})") from None


def _image_path_of(entry: dict, image_root: str | None, source: Path) -> Path | None:
    """The image file of a map.json image entry: a plain relative name under image_root (version 2) or, in
    version 1 maps, a path without '..'; anything else (outside the folder, not an image file) is refused."""
    name = entry.get("image_name")
    legacy = entry.get("image_path")
    if name is not None:
        if not is_plain_relative_name(name):
            raise MapFormatError(f"{source}: image_name {name!r} is not a plain relative name inside image_root")
        if image_root is None:
            raise MapFormatError(f"{source}: image_name {name!r} without an image_root")
        path = Path(image_root) / name
        root_real = os.path.realpath(image_root)
        if os.path.commonpath([root_real, os.path.realpath(path)]) != root_real:
            raise MapFormatError(f"{source}: image {name!r} leads outside image_root (a link)")
    elif legacy is not None:
        # Version 1 wrote the path it was given: absolute, or relative to the directory it was built from
        # (as the demo's `outputs/...`), which it is read against as before.
        if not isinstance(legacy, str) or not legacy or "\x00" in legacy or ".." in Path(legacy).parts:
            raise MapFormatError(f"{source}: image_path {legacy!r} is not a path without '..'")
        path = Path(legacy)
    else:
        return None
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise MapFormatError(f"{source}: image {str(path)!r} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
    return path


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_map_description(path: str | os.PathLike) -> dict[str, Any]:
    """map.json parsed and validated field by field (MapFormatError, one line naming the file, otherwise).

    The result has every field with its type checked; each image entry has "image_path" (Path or None).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        description = json.loads(text, parse_constant=lambda c: math.nan)
    except (OSError, UnicodeDecodeError) as exc:
        raise MapFormatError(f"{path}: unreadable ({exc})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MapFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(description, dict):
        raise MapFormatError(f"{path}: expected a JSON object, got {type(description).__name__}")
    if description.get("format") != MAP_FORMAT:
        raise MapFormatError(f"{path}: format {description.get('format')!r}, expected {MAP_FORMAT!r}")
    version = description.get("version", 1)
    if not _is_int(version) or version < 1:
        raise MapFormatError(f"{path}: version {version!r} is not a positive integer")
    if version > MAP_VERSION:
        raise MapFormatError(f"{path}: map version {version} is newer than this hierloc reads ({MAP_VERSION}); "
                             "upgrade hierloc")
    for key, kinds, required in (("features", dict, True), ("matcher", dict, True), ("metadata", dict, False),
                                 ("global_model", (dict, type(None)), False), ("image_root", (str, type(None)), False),
                                 ("images", list, True)):
        if key not in description:
            if required:
                raise MapFormatError(f"{path}: no {key!r} field")
            continue
        if not isinstance(description[key], kinds):
            raise MapFormatError(f"{path}: {key!r} is {type(description[key]).__name__}, not what a map has")
    metadata = description.get("metadata", {})
    image_root = description.get("image_root")
    if image_root is not None and ("\x00" in image_root or not os.path.isabs(image_root)):
        raise MapFormatError(f"{path}: image_root {image_root!r} is not an absolute folder")
    images, seen = [], set()
    for k, entry in enumerate(description["images"]):
        if not isinstance(entry, dict):
            raise MapFormatError(f"{path}: images[{k}] is {type(entry).__name__}, not an object")
        for key in ("name", "keyframe_id", "mission"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise MapFormatError(f"{path}: images[{k}] has {key} {entry.get(key)!r}, not a non-empty string")
        if not is_plain_relative_name(entry["name"]):
            raise MapFormatError(f"{path}: images[{k}] name {entry['name']!r} is not a plain relative name")
        if entry["name"] in seen:
            raise MapFormatError(f"{path}: image {entry['name']!r} is listed twice")
        seen.add(entry["name"])
        for key in ("image_name", "image_path"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise MapFormatError(f"{path}: images[{k}] has {key} {entry[key]!r}, not a string")
        if "colmap_id" in entry and not _is_int(entry["colmap_id"]):
            raise MapFormatError(f"{path}: images[{k}] has colmap_id {entry['colmap_id']!r}, not an integer")
        images.append({"name": entry["name"], "keyframe_id": entry["keyframe_id"], "mission": entry["mission"],
                       "image_path": _image_path_of(entry, image_root, path)})
    if not images:
        raise MapFormatError(f"{path}: the map lists no image")
    return {"version": version, "features": description["features"], "matcher": description["matcher"],
            "global_model": description.get("global_model"), "metadata": metadata, "images": images}
