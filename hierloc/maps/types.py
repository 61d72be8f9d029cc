"""Map data types: cameras, keyframes, missions and maps, and stable 128-bit keyframe ids.

Conventions (the one documented convention used everywhere in hierloc):

- ``Keyframe.pose`` is the 4x4 camera-to-world transform ``T_world_cam`` in the map frame: it maps
  a point from the camera frame to the world frame, ``X_world = T_world_cam @ X_cam``.
- The camera frame is the OpenCV/COLMAP one: x right, y down, z forward (optical axis).
- Pixel coordinates follow COLMAP: the centre of the top-left pixel is at (0.5, 0.5), so a
  centred principal point is (width / 2, height / 2).
- Keyframe names are POSIX paths relative to the map root (the folder given to the reader), hence
  unique within a map; ids are 32 lower-case hex characters (128 bits).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from hierloc.utils.ids import id_to_pair, normalize_id, pair_to_id, stable_id
from hierloc.utils.images import read_image, to_grayscale

# The id helpers live in hierloc.utils.ids, shared with the index formats; these names are the maps' API.
check_id = normalize_id
id_to_uint64_pair = id_to_pair
uint64_pair_to_id = pair_to_id


def keyframe_id(name: str, mission: str) -> str:
    """Stable 128-bit id (32 hex chars): blake2b(digest_size=16) of f"{mission}/{name}" in UTF-8."""
    return stable_id(f"{mission}/{name}")


@dataclass(eq=False)
class Camera:
    """Intrinsics in COLMAP's camera model convention (model name, image size, parameter vector)."""

    model: str
    width: int
    height: int
    params: np.ndarray

    def __post_init__(self) -> None:
        self.model = str(self.model).upper()
        self.width = int(self.width)
        self.height = int(self.height)
        self.params = np.asarray(self.params, dtype=np.float64).reshape(-1)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        # pycolmap knows every model's parameter count; reuse it instead of a table of our own.
        self.to_pycolmap()

    @classmethod
    def pinhole(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> "Camera":
        """A PINHOLE camera (fx, fy, cx, cy) of the given image size."""
        return cls("PINHOLE", width, height, np.array([fx, fy, cx, cy], dtype=np.float64))

    @classmethod
    def from_pycolmap(cls, camera) -> "Camera":
        """Convert a pycolmap.Camera."""
        return cls(camera.model.name, camera.width, camera.height, np.array(camera.params, dtype=np.float64))

    def to_pycolmap(self, camera_id: int = 1):
        """Convert to a pycolmap.Camera (raises ValueError for unknown models or wrong parameter counts)."""
        import pycolmap

        if self.model == "INVALID" or self.model not in pycolmap.CameraModelId.__members__:
            raise ValueError(f"unknown camera model {self.model!r}")
        camera = pycolmap.Camera.create_from_model_name(camera_id, self.model, 1.0, self.width, self.height)
        expected = len(camera.params)
        if self.params.size != expected:
            raise ValueError(
                f"camera model {self.model} takes {expected} parameters ({camera.params_info}), "
                f"got {self.params.size}"
            )
        camera.params = self.params
        return camera

    @property
    def K(self) -> np.ndarray:
        """3x3 calibration matrix (focal lengths and principal point; distortion is not included)."""
        camera = self.to_pycolmap()
        if not camera.focal_length_idxs() or not camera.principal_point_idxs():
            raise ValueError(f"camera model {self.model} has no pinhole calibration matrix")
        return np.asarray(camera.calibration_matrix(), dtype=np.float64)

    @property
    def is_pinhole(self) -> bool:
        """True for models without distortion (SIMPLE_PINHOLE, PINHOLE)."""
        return self.model in ("SIMPLE_PINHOLE", "PINHOLE")

    def rescaled(self, width: int, height: int) -> "Camera":
        """The same camera for the image resized to width x height."""
        camera = self.to_pycolmap()
        camera.rescale(int(width), int(height))
        return Camera.from_pycolmap(camera)

    def to_colmap_line(self, camera_id: int = 1) -> str:
        """One line of COLMAP's cameras.txt: CAMERA_ID MODEL WIDTH HEIGHT PARAMS..."""
        params = " ".join(repr(float(p)) for p in self.params)
        return f"{camera_id} {self.model} {self.width} {self.height} {params}"

    def __repr__(self) -> str:
        params = ", ".join(f"{p:g}" for p in self.params)
        return f"Camera({self.model}, {self.width}x{self.height}, [{params}])"


@dataclass(eq=False)
class Keyframe:
    """One map image (a vertex of a mission) with its optional pose, intrinsics and pixels.

    `pose` is T_world_cam (camera-to-world, 4x4) in the map frame. `image` holds in-memory pixels
    (synthetic data, rosbags); `image_loader` reads pixels on demand (lazy rosbags); otherwise
    `image_path` is read from disk. `depth` is an optional HxW float32 z-depth in metres
    (0 = no surface).
    """

    id: str
    name: str
    mission: str
    index: int
    image_path: Path | None = None
    timestamp: float | None = None
    pose: np.ndarray | None = field(default=None, repr=False)
    camera: Camera | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    depth: np.ndarray | None = field(default=None, repr=False)
    image_loader: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.id = check_id(self.id)
        if self.image_path is not None:
            self.image_path = Path(self.image_path)
        if self.pose is not None:
            pose = np.asarray(self.pose, dtype=np.float64)
            if pose.shape == (3, 4):
                pose = np.vstack([pose, [0.0, 0.0, 0.0, 1.0]])
            if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
                raise ValueError(f"keyframe {self.name!r}: pose must be a finite 4x4 matrix, got shape {pose.shape}")
            self.pose = pose

    @classmethod
    def create(cls, name: str, mission: str, index: int, **fields) -> "Keyframe":
        """A keyframe whose id is derived from its name and mission (see `keyframe_id`)."""
        return cls(id=keyframe_id(name, mission), name=name, mission=mission, index=index, **fields)

    @property
    def has_image(self) -> bool:
        """Whether pixels can be obtained (in memory, by a loader or from a file path)."""
        return self.image is not None or self.image_loader is not None or self.image_path is not None

    def load_image(self, grayscale: bool = False) -> np.ndarray:
        """Pixels as HxW (grayscale) or HxWx3 RGB, from memory, the lazy loader or `image_path`."""
        if self.image is not None:
            image = self.image
        elif self.image_loader is not None:
            image = self.image_loader()
        elif self.image_path is not None:
            return read_image(self.image_path, grayscale=grayscale)
        else:
            raise ValueError(f"keyframe {self.name!r} of mission {self.mission!r} has no image")
        return to_grayscale(image) if grayscale else image

    @property
    def position(self) -> np.ndarray | None:
        """Camera centre in the map frame (translation of T_world_cam), or None without a pose."""
        return None if self.pose is None else self.pose[:3, 3].copy()

    @property
    def rotation(self) -> np.ndarray | None:
        """Camera-to-world rotation R_world_cam, or None without a pose."""
        return None if self.pose is None else self.pose[:3, :3].copy()


@dataclass
class Mission:
    """A recording session: keyframes in recording order."""

    name: str
    keyframes: list[Keyframe] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keyframes)

    def __iter__(self) -> Iterator[Keyframe]:
        return iter(self.keyframes)


@dataclass
class Map:
    """A named set of missions (insertion-ordered) sharing one map frame."""

    name: str
    missions: dict[str, Mission] = field(default_factory=dict)
    root: Path | None = None

    @classmethod
    def from_keyframes(cls, name: str, keyframes: Iterable[Keyframe], root: str | os.PathLike | None = None) -> "Map":
        """Group keyframes by mission, keeping first-seen mission order and keyframe order."""
        missions: dict[str, Mission] = {}
        for kf in keyframes:
            missions.setdefault(kf.mission, Mission(kf.mission)).keyframes.append(kf)
        return cls(name, missions, Path(root) if root is not None else None)

    def keyframes(self) -> Iterator[Keyframe]:
        """All keyframes, mission by mission, in recording order."""
        for mission in self.missions.values():
            yield from mission.keyframes

    def __len__(self) -> int:
        return sum(len(m) for m in self.missions.values())

    def __iter__(self) -> Iterator[Keyframe]:
        return self.keyframes()

    def keyframe(self, kf_id: str) -> Keyframe:
        """The keyframe with this id (KeyError naming the id if absent); a linear scan."""
        wanted = check_id(kf_id)
        for kf in self.keyframes():
            if kf.id == wanted:
                return kf
        raise KeyError(f"map {self.name!r} has no keyframe with id {wanted}")

    def select(self, missions: str | Sequence[str] | None = None, subsampling: int = 1) -> "Map":
        """A new Map with the given missions (default all) keeping every `subsampling`-th keyframe.

        Keyframes are shared, not copied, and keep their original `index` in the mission.
        """
        if isinstance(subsampling, bool) or not isinstance(subsampling, (int, np.integer)) or subsampling < 1:
            raise ValueError(f"subsampling must be a positive integer, got {subsampling!r}")
        if missions is None:
            names = list(self.missions)
        else:
            names = [missions] if isinstance(missions, str) else list(missions)
            unknown = [n for n in names if n not in self.missions]
            if unknown:
                raise KeyError(
                    f"map {self.name!r} has no mission {', '.join(map(repr, unknown))}; "
                    f"available: {', '.join(map(repr, self.missions)) or 'none'}"
                )
        selected = {n: Mission(n, self.missions[n].keyframes[:: int(subsampling)]) for n in names}
        return dataclasses.replace(self, missions=selected)

    def summary(self) -> str:
        """One line per mission: name, number of keyframes, how many have poses."""
        lines = [f"map {self.name!r}: {len(self.missions)} missions, {len(self)} keyframes"]
        for mission in self.missions.values():
            posed = sum(kf.pose is not None for kf in mission.keyframes)
            lines.append(f"  {mission.name}: {len(mission)} keyframes, {posed} with poses")
        return "\n".join(lines)
