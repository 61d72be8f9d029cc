"""Validation of COLMAP models (binary or text) before pycolmap reads them.

pycolmap trusts every count it reads: an empty or damaged `points3D.bin` makes it allocate gigabytes, and a
truncated `frames.bin` makes it spin without end. So `validate_colmap_model` walks each file's records itself,
checking every count and length against the bytes that remain before anything is allocated from it, and every
value that matters (finite poses and points, known camera models, sane image sizes, unique ids, references to
existing cameras, images and points, plain image names inside the image folder). Only a model that passes is
handed to pycolmap by `load_colmap_reconstruction`. Every problem is one ValueError naming the file (and, for
text models, the line).

Binary layouts (little-endian, as COLMAP 3.12 / 4.x write them):

- cameras.bin: u64 count; per camera u32 id, i32 model, u64 width, u64 height, f64 params[model's count].
- images.bin: u64 count; per image u32 id, f64 qvec[4], f64 tvec[3], u32 camera id, NUL-terminated name,
  u64 num_points2D, then per point f64 x, f64 y, u64 point3D id (2^64-1: none).
- points3D.bin: u64 count; per point u64 id, f64 xyz[3], u8 rgb[3], f64 error, u64 track length, then per
  element u32 image id, u32 point2D index.
- rigs.bin: u64 count; per rig u32 id, u32 num_sensors, then (when > 0) the reference sensor i32 type, u32 id,
  and per further sensor i32 type, u32 id, u8 has_pose [f64 qvec[4], f64 tvec[3]].
- frames.bin: u64 count; per frame u32 id, u32 rig id, f64 qvec[4], f64 tvec[3], u32 num_data_ids, then per
  data id i32 sensor type, u32 sensor id, u64 data id.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

# Largest image side a camera may declare (COLMAP itself has no limit; 2^20 is far beyond any sensor).
MAX_CAMERA_SIDE = 1 << 20
# Longest image name (bytes); Linux paths end at 4096.
MAX_NAME_BYTES = 4096
INVALID_POINT3D_ID = (1 << 64) - 1
# How far from 1 a stored quaternion's norm may be: COLMAP writes 17 digits; tools printing 6 digits stay within
# a few 1e-6. pycolmap does not normalise, so a larger error would reach every pose as a scaled rotation.
QUATERNION_TOLERANCE = 1e-4
SENSOR_TYPES = {0: "CAMERA", 1: "IMU"}  # COLMAP's SensorType (-1 is INVALID)


def _camera_model_params() -> dict[int, tuple[str, int]]:
    """COLMAP camera model id -> (name, number of parameters), as the installed pycolmap defines them."""
    import pycolmap

    models = {}
    for name, model_id in pycolmap.CameraModelId.__members__.items():
        if int(model_id) < 0:
            continue
        camera = pycolmap.Camera.create_from_model_id(1, model_id, 1.0, 1, 1)
        models[int(model_id)] = (name, len(camera.params))
    return models


_MODELS: dict[int, tuple[str, int]] | None = None


def camera_models() -> dict[int, tuple[str, int]]:
    """Camera model id -> (name, parameter count), computed once."""
    global _MODELS
    if _MODELS is None:
        _MODELS = _camera_model_params()
    return _MODELS


def check_image_name(name: str, where: str) -> None:
    """ValueError unless `name` is a plain relative name inside the image folder (no '..', absolute path, NUL)."""
    if not name:
        raise ValueError(f"{where}: empty image name")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ValueError(f"{where}: image name of more than {MAX_NAME_BYTES} bytes")
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise ValueError(f"{where}: image name {name[:80]!r} holds control characters")
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if path.is_absolute() or (len(normalised) > 1 and normalised[1] == ":") or ".." in path.parts:
        raise ValueError(f"{where}: image name {name[:80]!r} points outside the image folder")


@dataclass
class ModelSummary:
    """What a validated model holds: its ids, each image's number of 2-D points, and its format."""

    format: str  # "binary" or "text"
    camera_ids: set[int] = field(default_factory=set)
    image_points2d: dict[int, int] = field(default_factory=dict)  # image id -> number of 2-D points
    image_names: dict[int, str] = field(default_factory=dict)
    point_ids: set[int] = field(default_factory=set)
    rig_ids: set[int] = field(default_factory=set)
    rig_sensors: dict[int, set[tuple[int, int]]] = field(default_factory=dict)  # rig id -> (sensor type, id)
    observations: list[np.ndarray] = field(default_factory=list)  # 3-D point ids seen by 2-D points


class _Reader:
    """A cursor over one file's bytes that refuses to read past its end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def fail(self, problem: str) -> ValueError:
        return ValueError(f"{self.path}: {problem} (at byte {self.offset} of {len(self.data)})")

    def need(self, size: int, what: str) -> None:
        if size > self.remaining:
            raise self.fail(f"truncated: {what} needs {size} bytes, {self.remaining} remain")

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        self.need(size, what)
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def doubles(self, count: int, what: str) -> np.ndarray:
        self.need(8 * count, what)
        values = np.frombuffer(self.data, dtype="<f8", count=count, offset=self.offset)
        self.offset += 8 * count
        return values

    def count(self, smallest_record: int, what: str) -> int:
        """A u64 record count, refused when that many records of at least `smallest_record` bytes cannot fit."""
        (number,) = self.unpack("<Q", f"the number of {what}")
        if number * smallest_record > self.remaining:
            raise self.fail(f"declares {number} {what} but only {self.remaining} bytes remain "
                            f"(at least {smallest_record} bytes each)")
        return number

    def string(self, what: str) -> str:
        end = self.data.find(b"\x00", self.offset, self.offset + MAX_NAME_BYTES + 1)
        if end < 0:
            raise self.fail(f"{what} is not NUL-terminated within {MAX_NAME_BYTES} bytes")
        raw = self.data[self.offset:end]
        self.offset = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None

    def finish(self) -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} bytes after the last record")


def _check_pose(where: str, qvec: np.ndarray, tvec: np.ndarray) -> None:
    if not (np.all(np.isfinite(qvec)) and np.all(np.isfinite(tvec))):
        raise ValueError(f"{where}: non-finite pose")
    largest = float(np.abs(qvec).max())
    norm = float(np.linalg.norm(qvec)) if largest < 1e6 else largest  # no overflow warning for huge values
    # pycolmap turns the quaternion into a matrix as it is: one that is not unit gives a scaled "rotation".
    if abs(norm - 1.0) > QUATERNION_TOLERANCE:
        raise ValueError(f"{where}: quaternion of norm {norm:.6g} is not a unit quaternion")


def _check_camera(where: str, model_id: int, width: int, height: int, params) -> None:
    models = camera_models()
    if model_id not in models:
        raise ValueError(f"{where}: unknown camera model id {model_id}")
    if not (0 < width <= MAX_CAMERA_SIDE and 0 < height <= MAX_CAMERA_SIDE):
        raise ValueError(f"{where}: camera size {width}x{height} outside 1..{MAX_CAMERA_SIDE}")
    if not np.all(np.isfinite(np.asarray(params, dtype=np.float64))):
        raise ValueError(f"{where}: non-finite camera parameters")


def _add_unique(ids: set[int], new: int, where: str, what: str) -> None:
    if new in ids:
        raise ValueError(f"{where}: duplicate {what} id {new}")
    ids.add(new)


# --------------------------------------------------------------------------- binary


def _binary_cameras(path: Path, summary: ModelSummary) -> None:
    reader = _Reader(path)
    models = camera_models()
    for _ in range(reader.count(24, "cameras")):
        camera_id, model_id, width, height = reader.unpack("<IiQQ", "a camera")
        where = f"{path}: camera {camera_id}"
        if model_id not in models:
            raise reader.fail(f"camera {camera_id}: unknown camera model id {model_id}")
        params = reader.doubles(models[model_id][1], f"the parameters of camera {camera_id}")
        _check_camera(where, model_id, width, height, params)
        _add_unique(summary.camera_ids, camera_id, str(path), "camera")
    reader.finish()
    if not summary.camera_ids:
        raise ValueError(f"{path}: no cameras")


def _binary_images(path: Path, summary: ModelSummary) -> None:
    reader = _Reader(path)
    for _ in range(reader.count(4 + 56 + 4 + 1 + 8, "images")):
        (image_id,) = reader.unpack("<I", "an image id")
        pose = reader.doubles(7, f"the pose of image {image_id}")
        (camera_id,) = reader.unpack("<I", f"the camera of image {image_id}")
        name = reader.string(f"the name of image {image_id}")
        where = f"{path}: image {image_id}"
        _check_pose(where, pose[:4], pose[4:])
        check_image_name(name, where)
        if camera_id not in summary.camera_ids:
            raise ValueError(f"{where}: unknown camera id {camera_id}")
        (num_points,) = reader.unpack("<Q", f"the number of 2-D points of image {image_id}")
        reader.need(24 * num_points, f"{num_points} 2-D points of image {image_id}")
        points = np.frombuffer(reader.data, dtype=[("xy", "<f8", 2), ("point3d", "<u8")], count=num_points,
                               offset=reader.offset)
        reader.offset += 24 * num_points
        if not np.all(np.isfinite(points["xy"])):
            raise ValueError(f"{where}: non-finite 2-D point")
        if image_id in summary.image_points2d:
            raise ValueError(f"{path}: duplicate image id {image_id}")
        summary.image_points2d[image_id] = int(num_points)
        summary.image_names[image_id] = name
        summary.observations.append(points["point3d"])
    reader.finish()
    _check_unique_names(path, summary)


def _check_unique_names(path: Path, summary: ModelSummary) -> None:
    seen: dict[str, int] = {}
    for image_id, name in summary.image_names.items():
        if name in seen:
            raise ValueError(f"{path}: images {seen[name]} and {image_id} have the same name {name[:80]!r}")
        seen[name] = image_id


# The fixed part of a points3D.bin record (51 bytes, packed): id, xyz, rgb, error, track length.
_POINT_HEADER = np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("length", "<u8")])


def _binary_points(path: Path, summary: ModelSummary) -> None:
    """points3D.bin: one Python step per point to find the records (the track length sets the next offset), then
    every value checked at once with numpy (a map holds millions of points)."""
    reader = _Reader(path)
    header_size = _POINT_HEADER.itemsize
    count = reader.count(header_size, "3-D points")
    data, end = reader.data, len(reader.data)
    start_list, length_list = [], []
    length_at = struct.Struct("<Q").unpack_from
    offset = reader.offset
    last_header = end - header_size
    for index in range(count):
        if offset > last_header:
            reader.offset = offset
            raise reader.fail(f"truncated: 3-D point {index + 1} of {count} needs {header_size} bytes, "
                              f"{end - offset} remain")
        length = length_at(data, offset + header_size - 8)[0]
        if length > (last_header - offset) >> 3:
            reader.offset = offset + header_size
            raise reader.fail(f"truncated: the track of {length} elements of 3-D point {index + 1} of {count} "
                              f"needs {8 * length} bytes, {last_header - offset} remain")
        start_list.append(offset)
        length_list.append(length)
        offset += header_size + 8 * length
    reader.offset = offset
    reader.finish()
    starts = np.array(start_list, dtype=np.int64)
    lengths = np.array(length_list, dtype=np.int64)

    buffer = np.frombuffer(data, dtype=np.uint8)
    track_starts = starts + header_size
    # +1 where a track begins, -1 where it ends: the running sum marks the bytes of tracks.
    edges = np.bincount(track_starts, minlength=end + 1) - np.bincount(track_starts + 8 * lengths, minlength=end + 1)
    in_track = np.cumsum(edges[:end]) > 0
    in_track[:8] = True  # the count
    headers = buffer[~in_track].view(_POINT_HEADER)
    in_track[:8] = False
    tracks = buffer[in_track].view("<u4").reshape(-1, 2)
    ids = headers["id"]

    def fail(index: int, problem: str) -> ValueError:
        return ValueError(f"{path}: 3-D point {int(ids[index])}: {problem}")

    finite = np.isfinite(headers["xyz"]).all(axis=1) & np.isfinite(headers["error"])
    if not finite.all():
        raise fail(int(np.argmin(finite)), "non-finite position or error")
    if np.any(ids == INVALID_POINT3D_ID):
        raise fail(int(np.argmax(ids == INVALID_POINT3D_ID)), "reserved id")
    unique, first = np.unique(ids, return_index=True)
    if len(unique) != len(ids):
        duplicate = np.setdiff1d(np.arange(len(ids)), first)[0]
        raise ValueError(f"{path}: duplicate 3-D point id {int(ids[duplicate])}")
    bad = _bad_track_elements(tracks, summary)
    if bad is not None:
        element, problem = bad
        raise fail(int(np.searchsorted(np.cumsum(lengths), element, side="right")), problem)
    summary.point_ids.update(ids.tolist())


def _bad_track_elements(track: np.ndarray, summary: ModelSummary) -> tuple[int, str] | None:
    """(row, problem) of the first track element naming an unknown image or 2-D point, or None."""
    if not len(track):
        return None
    known = np.array(sorted(summary.image_points2d), dtype=np.int64)
    counts = np.array([summary.image_points2d[i] for i in known.tolist()], dtype=np.int64)
    image_ids, point2d = track[:, 0].astype(np.int64), track[:, 1].astype(np.int64)
    position = np.clip(np.searchsorted(known, image_ids), 0, max(len(known) - 1, 0))
    found = (known[position] == image_ids) if len(known) else np.zeros(len(track), dtype=bool)
    if not found.all():
        row = int(np.argmin(found))
        return row, f"track names unknown image {int(image_ids[row])}"
    within = point2d < counts[position]
    if not within.all():
        row = int(np.argmin(within))
        return row, (f"track names 2-D point {int(point2d[row])} of image {int(image_ids[row])}, "
                     f"which has {int(counts[position[row]])}")
    return None


def _check_track(where: str, track: np.ndarray, summary: ModelSummary) -> None:
    for image_id, point2d_index in track.tolist():
        count = summary.image_points2d.get(image_id)
        if count is None:
            raise ValueError(f"{where}: track names unknown image {image_id}")
        if point2d_index >= count:
            raise ValueError(f"{where}: track names 2-D point {point2d_index} of image {image_id}, "
                             f"which has {count}")


def _binary_rigs(path: Path, summary: ModelSummary) -> None:
    reader = _Reader(path)
    for _ in range(reader.count(8, "rigs")):
        rig_id, num_sensors = reader.unpack("<II", "a rig")
        # Each sensor takes at least 8 bytes (type and id): the count is bounded by what remains.
        reader.need(8 * num_sensors, f"{num_sensors} sensors of rig {rig_id}")
        sensors: set[tuple[int, int]] = set()
        for index in range(num_sensors):
            sensor_type, sensor_id = reader.unpack("<iI", f"a sensor of rig {rig_id}")
            if sensor_type not in SENSOR_TYPES:
                raise reader.fail(f"rig {rig_id}: unknown sensor type {sensor_type}")
            if (sensor_type, sensor_id) in sensors:
                raise reader.fail(f"rig {rig_id}: duplicate sensor {sensor_id}")
            sensors.add((sensor_type, sensor_id))
            if sensor_type == 0 and sensor_id not in summary.camera_ids:
                raise reader.fail(f"rig {rig_id}: unknown camera {sensor_id}")
            if index == 0:
                continue
            (has_pose,) = reader.unpack("<B", f"a sensor of rig {rig_id}")
            if has_pose > 1:
                raise reader.fail(f"rig {rig_id}: has_pose byte {has_pose} is neither 0 nor 1")
            if has_pose:
                pose = reader.doubles(7, f"the pose of a sensor of rig {rig_id}")
                _check_pose(f"{path}: rig {rig_id}", pose[:4], pose[4:])
        _add_unique(summary.rig_ids, rig_id, str(path), "rig")
        summary.rig_sensors[rig_id] = sensors
    reader.finish()


def _binary_frames(path: Path, summary: ModelSummary) -> None:
    reader = _Reader(path)
    frame_ids: set[int] = set()
    for _ in range(reader.count(4 + 4 + 56 + 4, "frames")):
        frame_id, rig_id = reader.unpack("<II", "a frame")
        pose = reader.doubles(7, f"the pose of frame {frame_id}")
        (num_data,) = reader.unpack("<I", f"the number of data ids of frame {frame_id}")
        reader.need(16 * num_data, f"{num_data} data ids of frame {frame_id}")
        data = np.frombuffer(reader.data, dtype=[("type", "<i4"), ("sensor", "<u4"), ("id", "<u8")],
                             count=num_data, offset=reader.offset)
        reader.offset += 16 * num_data
        where = f"{path}: frame {frame_id}"
        _check_pose(where, pose[:4], pose[4:])
        _check_frame_data(where, rig_id, data["type"].tolist(), data["sensor"].tolist(), data["id"].tolist(),
                          summary)
        _add_unique(frame_ids, frame_id, str(path), "frame")
    reader.finish()


def _check_frame_data(where: str, rig_id: int, types: list[int], sensors: list[int], ids: list[int],
                      summary: ModelSummary) -> None:
    if rig_id not in summary.rig_sensors:
        raise ValueError(f"{where}: unknown rig {rig_id}")
    for sensor_type, sensor_id, data_id in zip(types, sensors, ids):
        if sensor_type not in SENSOR_TYPES:
            raise ValueError(f"{where}: unknown sensor type {sensor_type}")
        if (sensor_type, sensor_id) not in summary.rig_sensors[rig_id]:
            raise ValueError(f"{where}: sensor {sensor_id} is not in rig {rig_id}")
        if sensor_type == 0 and data_id not in summary.image_points2d:
            raise ValueError(f"{where}: names unknown image {data_id}")
        if sensor_type == 0 and sensor_id not in summary.camera_ids:
            raise ValueError(f"{where}: names unknown camera {sensor_id}")


def _check_observations(path: Path, summary: ModelSummary) -> None:
    """Every 2-D point's 3-D point id is none or an existing point."""
    if not summary.observations:
        return
    ids = np.concatenate(summary.observations)
    ids = ids[ids != INVALID_POINT3D_ID]
    if len(ids) and summary.point_ids:
        known = np.fromiter(summary.point_ids, dtype=np.uint64, count=len(summary.point_ids))
        unknown = ids[~np.isin(ids, known)]
    else:
        unknown = ids
    if len(unknown):
        raise ValueError(f"{path}: a 2-D point names the unknown 3-D point {int(unknown[0])}")


# --------------------------------------------------------------------------- text


def _text_lines(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    if "\x00" in text:
        raise ValueError(f"{path}: holds NUL bytes")
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((number, stripped.split()))
    return lines


def _integer(path: Path, number: int, token: str, what: str, low: int = 0, high: int = (1 << 32) - 1) -> int:
    try:
        value = int(token)
    except ValueError:
        raise ValueError(f"{path}:{number}: {what} {token[:40]!r} is not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{path}:{number}: {what} {value} outside {low}..{high}")
    return value


def _floats(path: Path, number: int, tokens: list[str], what: str) -> np.ndarray:
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}:{number}: {what} is not numeric") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}:{number}: non-finite {what}")
    return values


def _text_cameras(path: Path, summary: ModelSummary) -> None:
    by_name = {name: (model_id, count) for model_id, (name, count) in camera_models().items()}
    for number, tokens in _text_lines(path):
        if len(tokens) < 4 or tokens[1] not in by_name:
            raise ValueError(f"{path}:{number}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...' with a known model")
        model_id, count = by_name[tokens[1]]
        if len(tokens) != 4 + count:
            raise ValueError(f"{path}:{number}: {tokens[1]} has {count} parameters, got {len(tokens) - 4}")
        camera_id = _integer(path, number, tokens[0], "camera id")
        width = _integer(path, number, tokens[2], "width", 1, MAX_CAMERA_SIDE)
        height = _integer(path, number, tokens[3], "height", 1, MAX_CAMERA_SIDE)
        _check_camera(f"{path}:{number}", model_id, width, height, _floats(path, number, tokens[4:], "parameters"))
        _add_unique(summary.camera_ids, camera_id, f"{path}:{number}", "camera")
    if not summary.camera_ids:
        raise ValueError(f"{path}: no cameras")


def _text_images(path: Path, summary: ModelSummary) -> None:
    # Two lines per image; the second (2-D points) may be empty, which COLMAP writes as an empty line.
    try:
        raw_lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    lines = [(n, line.strip()) for n, line in enumerate(raw_lines, start=1) if not line.strip().startswith("#")]
    while lines and not lines[-1][1]:
        lines.pop()
    observations = []
    index = 0
    while index < len(lines):
        number, line = lines[index]
        if not line:
            index += 1
            continue
        tokens = line.split(maxsplit=9)
        if len(tokens) != 10:
            raise ValueError(f"{path}:{number}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME'")
        image_id = _integer(path, number, tokens[0], "image id")
        pose = _floats(path, number, tokens[1:8], "pose")
        camera_id = _integer(path, number, tokens[8], "camera id")
        name = tokens[9]
        where = f"{path}:{number}"
        _check_pose(where, pose[:4], pose[4:])
        check_image_name(name, where)
        if camera_id not in summary.camera_ids:
            raise ValueError(f"{where}: unknown camera id {camera_id}")
        points_number, points_line = lines[index + 1] if index + 1 < len(lines) else (number + 1, "")
        point_tokens = points_line.split()
        if len(point_tokens) % 3:
            raise ValueError(f"{path}:{points_number}: 2-D points come as 'X Y POINT3D_ID' triplets")
        _floats(path, points_number, [t for i, t in enumerate(point_tokens) if i % 3 != 2], "2-D point")
        for token in point_tokens[2::3]:
            point_id = _integer(path, points_number, token, "3-D point id", -1, (1 << 64) - 2)
            if point_id >= 0:
                observations.append(point_id)
        if image_id in summary.image_points2d:
            raise ValueError(f"{where}: duplicate image id {image_id}")
        summary.image_points2d[image_id] = len(point_tokens) // 3
        summary.image_names[image_id] = name
        index += 2
    summary.observations.append(np.array(observations, dtype=np.uint64))
    _check_unique_names(path, summary)


def _text_points(path: Path, summary: ModelSummary) -> None:
    for number, tokens in _text_lines(path):
        if len(tokens) < 8 or len(tokens) % 2:
            raise ValueError(f"{path}:{number}: expected 'POINT3D_ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)...'")
        point_id = _integer(path, number, tokens[0], "3-D point id", 0, (1 << 64) - 2)
        _floats(path, number, tokens[1:4] + tokens[7:8], "position or error")
        for token in tokens[4:7]:
            _integer(path, number, token, "colour", 0, 255)
        track = np.array([_integer(path, number, t, "track element") for t in tokens[8:]], dtype=np.int64)
        _check_track(f"{path}:{number}", track.reshape(-1, 2), summary)
        _add_unique(summary.point_ids, point_id, f"{path}:{number}", "3-D point")


def _text_rigs(path: Path, summary: ModelSummary) -> None:
    sensor_types = {name: value for value, name in SENSOR_TYPES.items()}
    for number, tokens in _text_lines(path):
        if len(tokens) < 2:
            raise ValueError(f"{path}:{number}: expected 'RIG_ID NUM_SENSORS ...'")
        rig_id = _integer(path, number, tokens[0], "rig id")
        num_sensors = _integer(path, number, tokens[1], "number of sensors", 0, len(tokens))
        position = 2
        sensors: set[tuple[int, int]] = set()
        for index in range(num_sensors):
            if position + 2 > len(tokens) or tokens[position] not in sensor_types:
                raise ValueError(f"{path}:{number}: malformed sensor {index} of rig {rig_id}")
            sensor_id = _integer(path, number, tokens[position + 1], "sensor id")
            if (sensor_types[tokens[position]], sensor_id) in sensors:
                raise ValueError(f"{path}:{number}: duplicate sensor {sensor_id} in rig {rig_id}")
            sensors.add((sensor_types[tokens[position]], sensor_id))
            if tokens[position] == "CAMERA" and sensor_id not in summary.camera_ids:
                raise ValueError(f"{path}:{number}: rig {rig_id} names unknown camera {sensor_id}")
            position += 2
            if index == 0:
                continue
            if position >= len(tokens):
                raise ValueError(f"{path}:{number}: sensor {index} of rig {rig_id} lacks HAS_POSE")
            has_pose = _integer(path, number, tokens[position], "HAS_POSE", 0, 1)
            position += 1
            if has_pose:
                pose = _floats(path, number, tokens[position:position + 7], "sensor pose")
                if len(pose) != 7:
                    raise ValueError(f"{path}:{number}: truncated sensor pose of rig {rig_id}")
                _check_pose(f"{path}:{number}", pose[:4], pose[4:])
                position += 7
        if position != len(tokens):
            raise ValueError(f"{path}:{number}: {len(tokens) - position} values after the sensors of rig {rig_id}")
        _add_unique(summary.rig_ids, rig_id, f"{path}:{number}", "rig")
        summary.rig_sensors[rig_id] = sensors


def _text_frames(path: Path, summary: ModelSummary) -> None:
    frame_ids: set[int] = set()
    sensor_types = {name: value for value, name in SENSOR_TYPES.items()}
    for number, tokens in _text_lines(path):
        if len(tokens) < 10:
            raise ValueError(f"{path}:{number}: expected 'FRAME_ID RIG_ID QW QX QY QZ TX TY TZ NUM_DATA_IDS ...'")
        frame_id = _integer(path, number, tokens[0], "frame id")
        rig_id = _integer(path, number, tokens[1], "rig id")
        pose = _floats(path, number, tokens[2:9], "pose")
        num_data = _integer(path, number, tokens[9], "number of data ids", 0, len(tokens))
        if len(tokens) != 10 + 3 * num_data:
            raise ValueError(f"{path}:{number}: {num_data} data ids need {3 * num_data} values, "
                             f"got {len(tokens) - 10}")
        where = f"{path}:{number}"
        _check_pose(where, pose[:4], pose[4:])
        triplets = [tokens[10 + 3 * i:13 + 3 * i] for i in range(num_data)]
        if any(t[0] not in sensor_types for t in triplets):
            raise ValueError(f"{where}: unknown sensor type")
        _check_frame_data(where, rig_id, [sensor_types[t[0]] for t in triplets],
                          [_integer(path, number, t[1], "sensor id") for t in triplets],
                          [_integer(path, number, t[2], "data id", 0, (1 << 64) - 1) for t in triplets], summary)
        _add_unique(frame_ids, frame_id, where, "frame")


# --------------------------------------------------------------------------- entry points

_READERS = {
    "binary": (".bin", _binary_cameras, _binary_images, _binary_points, _binary_rigs, _binary_frames),
    "text": (".txt", _text_cameras, _text_images, _text_points, _text_rigs, _text_frames),
}


def model_format(model_dir: str | os.PathLike) -> str:
    """'binary' or 'text', the way pycolmap chooses (all three binary files present: binary)."""
    model_dir = Path(model_dir)
    for kind, extension in (("binary", ".bin"), ("text", ".txt")):
        if all((model_dir / f"{part}{extension}").is_file() for part in ("cameras", "images", "points3D")):
            return kind
    raise FileNotFoundError(f"{model_dir}: not a COLMAP model (expected cameras, images and points3D, "
                            ".bin or .txt)")


def validate_colmap_model(model_dir: str | os.PathLike) -> ModelSummary:
    """Check a COLMAP model folder record by record (see the module); ValueError naming the file otherwise."""
    model_dir = Path(model_dir)
    kind = model_format(model_dir)
    extension, cameras, images, points, rigs, frames = _READERS[kind]
    summary = ModelSummary(kind)
    rigs_path, frames_path = model_dir / f"rigs{extension}", model_dir / f"frames{extension}"
    cameras(model_dir / f"cameras{extension}", summary)
    if rigs_path.is_file() != frames_path.is_file():
        raise ValueError(f"{model_dir}: rigs{extension} and frames{extension} come together; one is missing")
    if rigs_path.is_file():
        rigs(rigs_path, summary)
    images(model_dir / f"images{extension}", summary)
    points(model_dir / f"points3D{extension}", summary)
    _check_observations(model_dir / f"images{extension}", summary)
    if frames_path.is_file():
        frames(frames_path, summary)
    return summary


def load_colmap_reconstruction(model_dir: str | os.PathLike):
    """A pycolmap.Reconstruction of a model that passed `validate_colmap_model`; ValueError naming the file."""
    import pycolmap

    validate_colmap_model(model_dir)
    try:
        return pycolmap.Reconstruction(str(model_dir))
    except Exception as error:  # pycolmap raises plain RuntimeError/ValueError with terse messages
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{model_dir}: cannot read the COLMAP model: {message}") from None
