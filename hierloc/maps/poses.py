"""Pose conventions, pose-file readers (TUM, KITTI, CSV, Strecha, COLMAP cameras.txt) and association.

Every pose returned here is a 4x4 camera-to-world (or body-to-world) transform T_world_cam;
quaternions are (w, x, y, z); timestamps are seconds. COLMAP stores world-to-camera
(`qvec`, `tvec`): `pose_from_colmap` and `pose_to_colmap` convert.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from hierloc.maps.types import Camera
from hierloc.utils.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

POSE_FORMATS = ("auto", "tum", "kitti", "csv")
# Longest line of a pose file: real lines are under 1 KiB; a longer one is damage (and csv refuses fields over
# 128 KiB with its own error).
MAX_POSE_LINE_CHARS = 64 * 1024
# How far a 3x3 block may be from a rotation (|R R^T - I|, |det R - 1|): 12 printed digits give 1e-9; poses
# exported in float32 give 1e-6.
ROTATION_TOLERANCE = 1e-4
MAX_IMAGE_SIDE = 1 << 20  # largest image side a camera file may declare


# --------------------------------------------------------------------------- rotations and poses


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Quaternion(s) (w, x, y, z), normalised first, to 3x3 rotation matrix(es)."""
    q = np.asarray(qvec, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"a quaternion has 4 values (w, x, y, z), got shape {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("cannot convert a non-finite quaternion to a rotation")
    scale = np.abs(q).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # scaled first: squares of 1e300 overflow
        norms = np.linalg.norm(q / scale, axis=-1) * scale[..., 0]
    if np.any(~np.isfinite(norms)) or np.any(norms < 1e-12):
        raise ValueError("cannot convert a zero or non-finite quaternion to a rotation")
    return Rotation.from_quat(q / norms[..., None], scalar_first=True).as_matrix()


def rotmat_to_qvec(rotmat: np.ndarray) -> np.ndarray:
    """Rotation matrix(es) to unit quaternion(s) (w, x, y, z) with w >= 0 (sign-stable)."""
    R = np.asarray(rotmat, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"a rotation matrix is 3x3, got shape {R.shape}")
    return Rotation.from_matrix(R).as_quat(canonical=True, scalar_first=True)


def rotation_problem(R: np.ndarray, tolerance: float = ROTATION_TOLERANCE) -> str | None:
    """Why a 3x3 matrix is not a rotation (finite, orthonormal, determinant +1), or None when it is one."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        return "not a finite 3x3 matrix"
    if np.abs(R).max() > 1.0 + tolerance:  # also keeps R R^T below overflow
        return f"not orthonormal (an entry of {np.abs(R).max():.3g})"
    orthonormality = float(np.abs(R @ R.T - np.eye(3)).max())
    if orthonormality > tolerance:
        return f"not orthonormal (|R R^T - I| = {orthonormality:.2g})"
    determinant = float(np.linalg.det(R))
    if abs(determinant - 1.0) > tolerance:
        return f"determinant {determinant:.4g}, not +1 (a reflection)" if determinant < 0 else \
            f"determinant {determinant:.4g}, not +1"
    return None


def make_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 rigid transform from a 3x3 rotation and a 3-vector translation."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of 4x4 rigid transform(s), using R^T rather than a general matrix inverse."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    inv = np.zeros_like(T)
    inv[..., :3, :3] = np.swapaxes(R, -1, -2)
    inv[..., :3, 3] = -np.einsum("...ji,...j->...i", R, t)
    inv[..., 3, 3] = 1.0
    return inv


def pose_from_colmap(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """Camera-to-world T_world_cam from COLMAP's world-to-camera quaternion (w, x, y, z) and translation."""
    return invert_pose(make_pose(qvec_to_rotmat(qvec), tvec))


def pose_to_colmap(T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP's world-to-camera (qvec (w, x, y, z), tvec) from a camera-to-world pose."""
    T_cam_world = invert_pose(T_world_cam)
    return rotmat_to_qvec(T_cam_world[:3, :3]), T_cam_world[:3, 3].copy()


def pose_from_xy_yaw(x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    """Planar pose: position (x, y, z) and a rotation of `yaw` radians about the world z axis."""
    return make_pose(Rotation.from_euler("z", yaw).as_matrix(), [x, y, z])


def yaw_of(T: np.ndarray) -> float:
    """Heading (radians) of a pose's x axis in the world x-y plane."""
    R = np.asarray(T)[:3, :3]
    return float(np.arctan2(R[1, 0], R[0, 0]))


def pose_distance(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(translation distance, rotation angle in degrees) between two 4x4 poses."""
    dt = float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))
    cos = (np.trace(T_a[:3, :3].T @ T_b[:3, :3]) - 1.0) / 2.0
    return dt, float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


# --------------------------------------------------------------------------- pose tables


@dataclass(eq=False)
class PoseTable:
    """Poses read from one file: N 4x4 poses with optional timestamps (seconds) and image names."""

    poses: np.ndarray
    timestamps: np.ndarray | None = None
    names: list[str] | None = None
    path: Path | None = None
    format: str = ""

    def __post_init__(self) -> None:
        self.poses = np.asarray(self.poses, dtype=np.float64).reshape(-1, 4, 4)
        n = len(self.poses)
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
            if len(self.timestamps) != n:
                raise ValueError(f"{self.path}: {n} poses but {len(self.timestamps)} timestamps")
        if self.names is not None and len(self.names) != n:
            raise ValueError(f"{self.path}: {n} poses but {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.poses)

    def transformed(self, T_body_cam: np.ndarray) -> "PoseTable":
        """Poses of a sensor rigidly mounted on the tracked body: T_world_cam = T_world_body @ T_body_cam."""
        T = np.asarray(T_body_cam, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"T_body_cam must be 4x4, got shape {T.shape}")
        return PoseTable(self.poses @ T, self.timestamps, self.names, self.path, self.format)


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of non-blank, non-'#' lines."""
    lines = []
    for number, line in enumerate(_text_lines(path), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            lines.append((number, line))
    return lines


def _text_lines(path: Path) -> list[str]:
    """The file's lines; ValueError naming the line when one is longer than MAX_POSE_LINE_CHARS or holds NUL."""
    lines = _read_text(path).splitlines()
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_POSE_LINE_CHARS:
            raise ValueError(f"{path}:{number}: line of {len(line)} characters (at most {MAX_POSE_LINE_CHARS})")
        if "\x00" in line:
            raise ValueError(f"{path}:{number}: NUL character")
    return lines


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such pose file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None


def _numbers(path: Path, number: int, line: str, expected: int | None, what: str) -> np.ndarray:
    tokens = [t for t in re.split(r"[,;\s]+", line) if t]
    if expected is not None and len(tokens) != expected:
        raise ValueError(f"{path}:{number}: expected {expected} values ({what}), got {len(tokens)}: {line[:80]!r}")
    try:
        values = np.array([float(t) for t in tokens])
    except ValueError:
        raise ValueError(f"{path}:{number}: non-numeric value in {line[:80]!r} (expected {what})") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}:{number}: non-finite value in {line[:80]!r}")
    return values


def _empty(path: Path) -> ValueError:
    return ValueError(f"{path}: the pose file holds no poses")


def read_tum(path: str | os.PathLike) -> PoseTable:
    """TUM trajectory: lines `t tx ty tz qx qy qz qw` (camera-to-world), '#' comments."""
    path = Path(path)
    lines = _data_lines(path)
    rows = [_numbers(path, n, line, 8, "t tx ty tz qx qy qz qw") for n, line in lines]
    if not rows:
        raise _empty(path)
    data = np.stack(rows)
    duplicate = _first_duplicate(data[:, 0].tolist(), [number for number, _ in lines])
    if duplicate is not None:
        raise ValueError(f"{path}:{duplicate[0]}: duplicate timestamp {duplicate[1]!r}")
    poses = np.empty((len(data), 4, 4))
    for i, (row, (number, _)) in enumerate(zip(data, lines)):
        try:
            poses[i] = make_pose(qvec_to_rotmat(row[[7, 4, 5, 6]]), row[1:4])
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    return PoseTable(poses, timestamps=_to_seconds(data[:, 0]), path=path, format="tum")


def read_kitti(path: str | os.PathLike) -> PoseTable:
    """KITTI odometry poses: 12 numbers per line, a 3x4 row-major camera-to-world matrix."""
    path = Path(path)
    lines = _data_lines(path)
    rows = [_numbers(path, n, line, 12, "3x4 row-major matrix") for n, line in lines]
    if not rows:
        raise _empty(path)
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :] = np.stack(rows).reshape(-1, 3, 4)
    for (number, _), pose in zip(lines, poses):
        problem = rotation_problem(pose[:3, :3])
        if problem is not None:
            raise ValueError(f"{path}:{number}: the rotation part is {problem}")
    return PoseTable(poses, path=path, format="kitti")


_CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "time": ("timestamp", "time", "t", "utime", "stamp", "ts", "sec", "seconds", "timestamp_s", "time_s",
             "timestamp_ns"),
    "name": ("name", "image", "file", "filename", "file_name", "image_name", "imagename", "image_file", "path", "img"),
    "x": ("x", "tx", "pos_x", "position_x", "p_x", "p_rs_r_x"),
    "y": ("y", "ty", "pos_y", "position_y", "p_y", "p_rs_r_y"),
    "z": ("z", "tz", "pos_z", "position_z", "p_z", "p_rs_r_z"),
    "qw": ("qw", "q_w", "quat_w", "orientation_w", "q_rs_w"),
    "qx": ("qx", "q_x", "quat_x", "orientation_x", "q_rs_x"),
    "qy": ("qy", "q_y", "quat_y", "orientation_y", "q_rs_y"),
    "qz": ("qz", "q_z", "quat_z", "orientation_z", "q_rs_z"),
    "roll": ("roll", "roll_deg"),
    "pitch": ("pitch", "pitch_deg"),
    "yaw": ("yaw", "heading", "angle", "theta", "yaw_deg", "heading_deg", "angle_deg", "theta_deg"),
}


def _normalise_column(name: str) -> str:
    name = re.sub(r"[\[\(].*?[\]\)]", "", name.strip().lstrip("#").lower())
    return re.sub(r"[\s\-\.]+", "_", name.strip()).strip("_")


def _split_row(line: str, delimiter: str | None, where: str) -> list[str]:
    if delimiter is None:
        return line.split()
    try:
        return [cell.strip() for cell in next(csv.reader(io.StringIO(line), delimiter=delimiter, strict=True))]
    except (csv.Error, StopIteration) as error:
        raise ValueError(f"{where}: malformed CSV row ({error})") from None


def _first_duplicate(keys: Sequence, numbers: Sequence[int]) -> tuple[int, object] | None:
    """(line number, key) of the first key seen before, or None."""
    seen: set = set()
    for key, number in zip(keys, numbers):
        if key in seen:
            return number, key
        seen.add(key)
    return None


def read_pose_csv(path: str | os.PathLike) -> PoseTable:
    """CSV (or whitespace-separated) poses with a header naming the columns.

    Columns (case-insensitive, units in brackets ignored): a time (`timestamp`/`time`/`t`/`utime`)
    and/or image `name` (`image`/`file`), a position `x y [z]` (or `tx ty tz`), and an orientation:
    quaternion `qw qx qy qz`, or `roll pitch yaw`, or a planar `yaw`/`heading`/`angle`/`theta`
    (radians; degrees when the column name ends in `_deg`). A header after '#' is accepted when
    the first uncommented line is numeric (EuRoC style).
    """
    path = Path(path)
    lines = _text_lines(path)
    header_number, header, comment = None, None, None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            comment = (number, line.lstrip("#").strip())
            continue
        if _is_numeric_row(line) and comment is not None:
            header_number, header = comment
        else:
            header_number, header = number, line
        break
    if header is None or _is_numeric_row(header):
        raise ValueError(
            f"{path}: no CSV header; expected column names like 'timestamp,x,y,z,qw,qx,qy,qz' or 'time,x,y,angle'"
        )
    delimiter = "," if "," in header else ";" if ";" in header else "\t" if "\t" in header else None
    columns = [_normalise_column(c) for c in _split_row(header, delimiter, f"{path}:{header_number}")]
    found: dict[str, int] = {}
    for key, synonyms in _CSV_COLUMNS.items():
        for synonym in synonyms:
            if synonym in columns:
                found[key] = columns.index(synonym)
                break
    degrees = {key: columns[i].endswith("_deg") for key, i in found.items()}
    has_quat = all(k in found for k in ("qw", "qx", "qy", "qz"))
    has_euler = all(k in found for k in ("roll", "pitch", "yaw"))
    missing = [k for k in ("x", "y") if k not in found]
    if missing or not (has_quat or has_euler or "yaw" in found):
        raise ValueError(
            f"{path}:{header_number}: header {header[:120]!r} lacks "
            + ("position columns x, y" if missing
               else "an orientation (qw qx qy qz, roll pitch yaw, or yaw/heading/angle)")
        )

    times, names, poses, numbers = [], [], [], []
    for number, raw in enumerate(lines[header_number:], start=header_number + 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        numbers.append(number)
        cells = _split_row(line, delimiter, f"{path}:{number}")
        if len(cells) != len(columns):
            raise ValueError(f"{path}:{number}: expected {len(columns)} columns as in the header, got {len(cells)}")

        def value(key: str, default: float | None = None) -> float:
            if key not in found:
                return default  # type: ignore[return-value]
            try:
                v = float(cells[found[key]])
            except ValueError:
                raise ValueError(f"{path}:{number}: column {columns[found[key]]!r} "
                                 f"is not a number: {cells[found[key]]!r}") from None
            if not np.isfinite(v):
                raise ValueError(f"{path}:{number}: column {columns[found[key]]!r} is not finite")
            return np.radians(v) if degrees.get(key) else v

        position = [value("x"), value("y"), value("z", 0.0)]
        try:
            if has_quat:
                R = qvec_to_rotmat([value("qw"), value("qx"), value("qy"), value("qz")])
            elif has_euler:
                R = Rotation.from_euler("ZYX", [value("yaw"), value("pitch"), value("roll")]).as_matrix()
            else:
                R = Rotation.from_euler("z", value("yaw")).as_matrix()
        except ValueError as error:
            if str(error).startswith(str(path)):
                raise
            raise ValueError(f"{path}:{number}: {error}") from None
        poses.append(make_pose(R, position))
        if "time" in found:
            times.append(value("time"))
        if "name" in found:
            names.append(cells[found["name"]])
    if not poses:
        raise _empty(path)
    duplicate = _first_duplicate(names, numbers) if "name" in found else \
        _first_duplicate(times, numbers) if "time" in found else None
    if duplicate is not None:
        raise ValueError(f"{path}:{duplicate[0]}: duplicate {'image name' if 'name' in found else 'timestamp'} "
                         f"{str(duplicate[1])[:80]!r}")
    timestamps = _to_seconds(np.array(times)) if "time" in found else None
    return PoseTable(np.stack(poses), timestamps, names if "name" in found else None, path, "csv")


def _is_numeric_row(line: str) -> bool:
    tokens = [t for t in re.split(r"[,;\s]+", line) if t]
    try:
        [float(t) for t in tokens]
    except ValueError:
        return False
    return bool(tokens)


def detect_pose_format(path: str | os.PathLike) -> str:
    """Guess 'tum', 'kitti' or 'csv' from the first uncommented line of a pose file."""
    path = Path(path)
    lines = _data_lines(path)
    if not lines:
        if any(line.strip().startswith("#") for line in _text_lines(path)):
            return "csv"  # only a '#' header: let the CSV reader report the missing rows
        raise _empty(path)
    number, line = lines[0]
    if not _is_numeric_row(line):
        return "csv"
    count = len([t for t in re.split(r"[,;\s]+", line) if t])
    if count == 8:
        return "tum"
    if count == 12:
        return "kitti"
    if path.suffix.lower() == ".csv":
        return "csv"
    raise ValueError(
        f"{path}:{number}: cannot tell the pose format from a line of {count} numbers "
        "(TUM has 8, KITTI 12; a CSV needs a header)"
    )


def read_pose_file(path: str | os.PathLike, format: str = "auto") -> PoseTable:
    """Read a pose file as a PoseTable; `format` is 'auto', 'tum', 'kitti' or 'csv'."""
    path = Path(path)
    if format not in POSE_FORMATS:
        raise ValueError(f"unknown pose format {format!r}; choose one of {', '.join(POSE_FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pose file")
    if format == "auto":
        format = detect_pose_format(path)
    reader = {"tum": read_tum, "kitti": read_kitti, "csv": read_pose_csv}[format]
    return reader(path)


def write_tum(path: str | os.PathLike, timestamps: Sequence[float], poses: np.ndarray) -> None:
    """Write camera-to-world poses as a TUM trajectory file (atomically)."""
    from hierloc.utils.io import atomic_write_text

    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for t, T in zip(timestamps, np.asarray(poses).reshape(-1, 4, 4)):
        w, x, y, z = rotmat_to_qvec(T[:3, :3])
        tx, ty, tz = T[:3, 3]
        lines.append(" ".join(f"{v:.9f}" for v in (t, tx, ty, tz, x, y, z, w)))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_pose_csv(path: str | os.PathLike, names: Sequence[str], poses: np.ndarray,
                   timestamps: Sequence[float] | None = None) -> None:
    """Write camera-to-world poses as a CSV `name[,timestamp],x,y,z,qw,qx,qy,qz` (atomically)."""
    from hierloc.utils.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name"] + (["timestamp"] if timestamps is not None else [])
                    + ["x", "y", "z", "qw", "qx", "qy", "qz"])
    poses = np.asarray(poses).reshape(-1, 4, 4)
    for k, (name, T) in enumerate(zip(names, poses)):
        time = [f"{timestamps[k]:.9f}"] if timestamps is not None else []
        values = [*T[:3, 3], *rotmat_to_qvec(T[:3, :3])]
        writer.writerow([name, *time, *(f"{v:.9f}" for v in values)])
    atomic_write_text(path, buffer.getvalue())


# --------------------------------------------------------------------------- camera files


def read_strecha_camera(path: str | os.PathLike) -> tuple[Camera, np.ndarray]:
    """Strecha `NNNN.jpg.camera`: K (3 rows), distortion row, R (3 rows, camera-to-world), centre C, `width height`.

    Returns the camera and T_world_cam = [R | C]. All-zero distortion gives a PINHOLE camera;
    otherwise the row is read as radial k1 k2 [k3] of a FULL_OPENCV camera.
    """
    path = Path(path)
    lines = _data_lines(path)
    if len(lines) < 9:
        raise ValueError(f"{path}: a Strecha camera file has 9 lines (K, distortion, R, C, size), got {len(lines)}")
    K = np.stack([_numbers(path, n, line, 3, "a row of K") for n, line in lines[0:3]])
    number, line = lines[3]
    distortion = _numbers(path, number, line, None, "distortion coefficients")
    if len(distortion) > 3:
        raise ValueError(f"{path}:{number}: expected up to 3 distortion coefficients, got {len(distortion)}")
    R = np.stack([_numbers(path, n, line, 3, "a row of R") for n, line in lines[4:7]])
    C = _numbers(path, lines[7][0], lines[7][1], 3, "camera centre")
    size = _numbers(path, lines[8][0], lines[8][1], 2, "width height")
    problem = rotation_problem(R, tolerance=1e-3)
    if problem is not None:
        raise ValueError(f"{path}:{lines[4][0]}: R is not a rotation matrix ({problem})")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not (fx > 0 and fy > 0):
        raise ValueError(f"{path}:{lines[0][0]}: focal lengths must be positive, got {fx:g} and {fy:g}")
    if not np.all((size >= 1) & (size <= MAX_IMAGE_SIDE)):
        raise ValueError(f"{path}:{lines[8][0]}: image size {lines[8][1][:40]!r} outside 1..{MAX_IMAGE_SIDE}")
    width, height = int(round(size[0])), int(round(size[1]))
    if np.allclose(distortion, 0.0):
        camera = Camera.pinhole(fx, fy, cx, cy, width, height)
    else:
        k = np.zeros(3)
        k[: len(distortion)] = distortion
        camera = Camera("FULL_OPENCV", width, height, [fx, fy, cx, cy, k[0], k[1], 0, 0, k[2], 0, 0, 0])
    return camera, make_pose(R, C)


def read_cameras_txt(path: str | os.PathLike) -> dict[int, Camera]:
    """COLMAP cameras.txt: lines `CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`, '#' comments."""
    path = Path(path)
    cameras: dict[int, Camera] = {}
    for number, line in _data_lines(path):
        tokens = line.split()
        if len(tokens) < 5:
            raise ValueError(f"{path}:{number}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...', got {line[:80]!r}")
        try:
            camera_id, width, height = int(tokens[0]), int(tokens[2]), int(tokens[3])
            params = [float(t) for t in tokens[4:]]
        except ValueError:
            raise ValueError(f"{path}:{number}: malformed camera line {line[:80]!r}") from None
        try:
            cameras[camera_id] = Camera(tokens[1], width, height, np.array(params))
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    if not cameras:
        raise ValueError(f"{path}: no camera lines")
    return cameras


def write_cameras_txt(path: str | os.PathLike, cameras: dict[int, Camera]) -> None:
    """Write cameras in COLMAP's cameras.txt format (atomically)."""
    from hierloc.utils.io import atomic_write_text

    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    lines += [camera.to_colmap_line(camera_id) for camera_id, camera in cameras.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- association


def _to_seconds(values: np.ndarray) -> np.ndarray:
    """Epoch times in ns, us or ms (told apart by magnitude) to seconds; small values are seconds."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    largest = float(np.max(np.abs(values)))
    for threshold, scale in ((1e17, 1e-9), (1e14, 1e-6), (1e11, 1e-3)):
        if largest >= threshold:
            return values * scale
    return values


_NUMERIC_STEM = re.compile(r"^\d+(\.\d+)?$")


def timestamp_from_name(name: str) -> float | None:
    """Seconds from an image file name that is a time: `<float seconds>.ext` or an epoch integer in s/ms/us/ns.

    Integers below 1e8 are frame counters, not times (so `000123.png` gives None).
    """
    stem = PurePosixPath(name).name
    stem = stem[: -len(PurePosixPath(stem).suffix)] if PurePosixPath(stem).suffix.lower() in IMAGE_EXTENSIONS else stem
    if not _NUMERIC_STEM.match(stem):
        return None
    if "." in stem:
        return float(stem)
    value = int(stem)
    if value < 1e8:
        return None
    return float(_to_seconds(np.array([float(value)]))[0])


def _name_keys(name: str) -> list[str]:
    """Lookup keys for an image name: every trailing sub-path, with and without the extension."""
    parts = PurePosixPath(name).parts
    keys = []
    for i in range(len(parts)):
        sub = "/".join(parts[i:])
        keys.append(sub)
        suffix = PurePosixPath(sub).suffix
        if suffix:
            keys.append(sub[: -len(suffix)])
    return keys


def nearest_in_time(query_times: np.ndarray, ref_times: np.ndarray, max_time_diff: float) -> np.ndarray:
    """Index of the nearest reference time for each query time, -1 where it is over `max_time_diff` away."""
    query = np.asarray(query_times, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref_times, dtype=np.float64).reshape(-1)
    if ref.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    order = np.argsort(ref, kind="stable")
    sorted_ref = ref[order]
    right = np.clip(np.searchsorted(sorted_ref, query), 0, len(ref) - 1)
    left = np.clip(right - 1, 0, len(ref) - 1)
    pick = np.where(np.abs(sorted_ref[left] - query) <= np.abs(sorted_ref[right] - query), left, right)
    return np.where(np.abs(sorted_ref[pick] - query) <= max_time_diff, order[pick], -1).astype(np.int64)


def associate_poses(
    table: PoseTable,
    names: Sequence[str],
    max_time_diff: float = 0.1,
    timestamps: Sequence[float | None] | None = None,
) -> tuple[np.ndarray, str]:
    """Index into `table` for each image (-1: no pose) and the method used: 'name', 'timestamp' or 'order'.

    By name if the table has names; else by nearest timestamp within `max_time_diff` seconds
    (image times from `timestamps` or parsed from the names); else by order when counts match.
    """
    n = len(names)
    source = table.path or "pose table"
    if table.names is not None:
        owner: dict[str, int] = {}
        ambiguous: set[str] = set()
        for i, name in enumerate(names):
            for key in _name_keys(name):
                if key in owner and owner[key] != i:
                    ambiguous.add(key)
                owner.setdefault(key, i)
        indices = np.full(n, -1, dtype=np.int64)
        for row, pose_name in enumerate(table.names):
            pose_name = re.sub(r"^(\./)+", "", pose_name.strip().replace("\\", "/"))
            for key in (pose_name, *_name_keys(pose_name)[-2:]):
                if key in owner and key not in ambiguous:
                    indices[owner[key]] = row
                    break
        if n and not np.any(indices >= 0):
            raise ValueError(
                f"{source}: none of its {len(table)} image names matches the {n} images "
                f"(e.g. {table.names[0]!r} vs {names[0]!r})"
            )
        return indices, "name"

    if timestamps is None:
        timestamps = [timestamp_from_name(name) for name in names]
    if table.timestamps is not None and n and all(t is not None for t in timestamps):
        image_times = np.asarray(timestamps, dtype=np.float64)
        indices = nearest_in_time(image_times, table.timestamps, max_time_diff)
        if np.any(indices >= 0) or len(table) != n:
            if not np.any(indices >= 0):
                raise ValueError(
                    f"{source}: no pose within {max_time_diff} s of any image time (images "
                    f"{image_times.min():.3f}..{image_times.max():.3f} s, poses "
                    f"{table.timestamps.min():.3f}..{table.timestamps.max():.3f} s)"
                )
            return indices, "timestamp"
    if len(table) == n:
        if table.timestamps is not None and n and all(t is not None for t in timestamps):
            logger.warning("%s: no pose time near the image times; associating %d poses by order", source, n)
        return np.arange(n, dtype=np.int64), "order"
    raise ValueError(
        f"{source}: cannot associate {len(table)} poses with {n} images: the file has no image names, "
        "the image names carry no timestamps matching it, and the counts differ"
    )
