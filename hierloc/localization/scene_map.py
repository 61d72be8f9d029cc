"""A 3-D map for localization: keyframes with poses, their local features and the 3-D points they observe.

On disk a map is a folder:

    map.json             what built it (features, matcher, global model), the keyframes, statistics
    sfm/                 the COLMAP model (cameras, images with keypoints and point ids, points3D), binary
    features.h5          local features of the keyframes, hloc layout (same keypoint order as sfm/)
    global_index.h5      global descriptors of the keyframes: a hierloc index (describer recorded, search
                         structure stored) that retrieval goes through, if retrieval is on
    describer-*.pth      the describer's weights when not in the registry (e.g. adapted to this map)

Poses are T_world_cam (camera-to-world) as everywhere in hierloc; COLMAP stores cam_from_world.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..features.h5io import read_features, write_features
from ..features.types import LocalFeatures
from ..maps.poses import invert_pose
from ..maps.types import Camera
from ..utils.io import atomic_write_text, to_json_text

logger = logging.getLogger(__name__)

MAP_FORMAT = "hierloc-scene-map"
MAP_VERSION = 1
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

    def to_json(self) -> dict[str, Any]:
        """JSON-ready description (the pose is in the COLMAP model)."""
        return {"name": self.name, "keyframe_id": self.keyframe_id, "mission": self.mission,
                "image_path": None if self.image_path is None else str(self.image_path), "colmap_id": self.colmap_id}


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

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the map folder (see the module docstring); returns it."""
        from ..index.io import save_index

        folder = Path(folder)
        (folder / "sfm").mkdir(parents=True, exist_ok=True)
        self.reconstruction.write_binary(str(folder / "sfm"))
        write_features(folder / "features.h5", self.features, self.feature_config)
        global_model = self.global_model
        if self.global_index is not None and self.global_describer is not None:
            self._save_global_index(folder)
        elif self.global_index is not None and (self.root is None or Path(self.root).resolve() != folder.resolve()):
            save_index(self.global_index, folder / GLOBAL_INDEX_FILE)
        description = {
            "format": MAP_FORMAT, "version": MAP_VERSION, "hierloc_version": __version__,
            "features": self.feature_config, "matcher": self.matcher_config, "global_model": global_model,
            "images": [im.to_json() for im in self.images], "metadata": self.metadata,
        }
        atomic_write_text(folder / "map.json", to_json_text(description, indent=2))
        self.root = folder
        return folder

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
    def load(cls, folder: str | os.PathLike) -> "SceneMap":
        """Read a map folder written by `save`."""
        import pycolmap

        from ..index.io import load_index

        folder = Path(folder)
        description_path = folder / "map.json"
        if not description_path.is_file():
            raise MapFormatError(f"{folder}: not a hierloc 3-D map (no map.json); build one with `hierloc map build`")
        try:
            description = json.loads(description_path.read_text())
        except json.JSONDecodeError as exc:
            raise MapFormatError(f"{description_path}: not valid JSON ({exc})") from None
        if description.get("format") != MAP_FORMAT:
            raise MapFormatError(f"{description_path}: format {description.get('format')!r}, expected {MAP_FORMAT!r}")
        if int(description.get("version", 0)) > MAP_VERSION:
            raise MapFormatError(f"{description_path}: map version {description['version']} is newer than this "
                                 f"hierloc reads ({MAP_VERSION}); upgrade hierloc")
        try:
            reconstruction = pycolmap.Reconstruction(str(folder / "sfm"))
        except Exception as exc:  # pycolmap raises terse RuntimeErrors
            raise MapFormatError(f"{folder / 'sfm'}: cannot read the COLMAP model ({exc})") from None
        names = [entry["name"] for entry in description["images"]]
        features = read_features(folder / "features.h5", names)
        rec_by_name = {im.name: im for im in reconstruction.images.values()}
        images = []
        for entry in description["images"]:
            rec_image = rec_by_name.get(entry["name"])
            if rec_image is None:
                raise MapFormatError(f"{folder}: image {entry['name']!r} is in map.json but not in sfm/")
            images.append(MapImage(entry["name"], entry["keyframe_id"], entry["mission"],
                                   Camera.from_pycolmap(reconstruction.cameras[rec_image.camera_id]),
                                   np.eye(4), Path(entry["image_path"]) if entry.get("image_path") else None))
        global_index = load_index(folder / GLOBAL_INDEX_FILE) if (folder / GLOBAL_INDEX_FILE).is_file() else None
        global_model = description.get("global_model")
        scene = cls.from_reconstruction(reconstruction, images, features, description["features"],
                                        description["matcher"], global_index=global_index,
                                        global_model=global_model, metadata=description.get("metadata", {}))
        scene.root = folder
        return scene
