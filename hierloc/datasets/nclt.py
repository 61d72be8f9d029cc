"""NCLT (University of Michigan North Campus Long-Term): Ladybug3 images across seasons, as the original evaluated it.

Folder layout (as NCLT's downloads unpack):

    NCLT/
      <date>/lb3/Cam<k>/<utime>.tiff            1616 x 1232 images, utime in microseconds
      groundtruth_<date>.csv                     (also <date>/ or ground_truth/): utime,x,y,z,roll,pitch,yaw
      U2D_Cam<k>_1616X1232.txt                   (also undistort_maps/, U2D/, cam_params/): undistortion map
      pose_<date>.csv                            written by `python -m hierloc.datasets.nclt poses NCLT`

Preprocessing as the original (retrievalnet/datasets/nclt.py): undistort with the U2D map, crop the
black border to a 30-pixel eroded valid mask, rotate by 270 degrees (counter-clockwise, i.e. 90
clockwise: the camera is mounted sideways), grayscale, resize bilinearly to 640 rows x 488 columns.
(The original converted OpenCV's BGR image with an RGB formula; hierloc uses the correct weights.)
Ground truth: 2-D, within 10 m and 90 degrees of heading, reference 2012-01-08, queries 2012-08-20
and 2013-02-23, camera 4.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..utils.images import to_grayscale
from ..utils.io import atomic_write_text
from .base import GroundTruthRule, ImageSet, ImageTransform, RetrievalDataset

logger = logging.getLogger(__name__)

REFERENCE_DATE = "2012-01-08"
QUERY_DATES = ("2012-08-20", "2013-02-23")
CAMERA = 4
MAX_DISTANCE = 10.0
MAX_ANGLE_DEG = 90.0
OUTPUT_SIZE = (488, 640)  # (width, height) after the rotation; the original's resize [640, 488] is [rows, cols]
MASK_EROSION = 30
MAP_FOLDERS = ("", "undistort_maps", "U2D", "cam_params", "calib/U2D", "U2D_ALL_1616X1232")
GROUND_TRUTH_FOLDERS = ("", "{date}", "ground_truth", "groundtruth")


# --------------------------------------------------------------------------- undistortion


@dataclass
class UndistortionMap:
    """NCLT's U2D map: for every undistorted pixel, where to sample the distorted image; plus the crop."""

    map_x: np.ndarray  # [H, W] float32 column (u) in the distorted image
    map_y: np.ndarray  # [H, W] float32 row (v)
    crop: tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive, as the original's slicing)
    path: Path | None = None

    def undistort(self, image: np.ndarray, crop: bool = True) -> np.ndarray:
        """Remap (bilinear) and optionally crop an image of the map's size."""
        if image.shape[:2] != self.map_x.shape:
            raise ValueError(f"image of size {image.shape[1]}x{image.shape[0]} does not match the undistortion map "
                             f"{self.path} ({self.map_x.shape[1]}x{self.map_x.shape[0]})")
        out = cv2.remap(image, self.map_x, self.map_y, cv2.INTER_LINEAR)
        if crop:
            y0, y1, x0, x1 = self.crop
            out = out[y0:y1, x0:x1]
        return out


def read_undistortion_map(path: str | os.PathLike, erosion: int = MASK_EROSION) -> UndistortionMap:
    """Read `U2D_Cam<k>_<W>X<H>.txt`: a header giving the size (cols, then rows), then lines `row col v u`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such undistortion map")
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        numbers = [int(n) for n in re.findall(r"\d+", re.sub(r"[^0-9,\s]", " ", header))]
        if len(numbers) != 2:
            raise ValueError(f"{path}:1: expected a header with the width and height (e.g. "
                             f"'width/cols = 1616 , height/rows = 1232'), got {header.strip()[:80]!r}")
        width, height = numbers
        try:
            data = np.loadtxt(f, dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise ValueError(f"{path}: malformed map line ({exc})") from None
    if data.shape[1] != 4:
        raise ValueError(f"{path}: map lines must have 4 numbers 'row col v u', got {data.shape[1]}")
    rows, cols = data[:, 0].astype(np.int64), data[:, 1].astype(np.int64)
    if (rows.min(initial=0) < 0 or cols.min(initial=0) < 0
            or rows.max(initial=0) >= height or cols.max(initial=0) >= width):
        raise ValueError(f"{path}: map pixel outside the {width}x{height} image of its header")
    map_x = np.zeros((height, width), np.float32)
    map_y = np.zeros((height, width), np.float32)
    map_x[rows, cols] = data[:, 3]
    map_y[rows, cols] = data[:, 2]
    # Valid region: the remapped all-ones image, eroded so that interpolated border pixels go too.
    mask = cv2.remap(np.ones((height, width), np.uint8), map_x, map_y, cv2.INTER_LINEAR)
    mask = cv2.erode(mask, np.ones((erosion, erosion), np.uint8), iterations=1)
    middle_row, middle_col = np.flatnonzero(mask[height // 2, :]), np.flatnonzero(mask[:, width // 2])
    if middle_row.size == 0 or middle_col.size == 0:
        raise ValueError(f"{path}: the undistortion map leaves no valid pixel in the image centre")
    crop = (int(middle_col.min()), int(middle_col.max()), int(middle_row.min()), int(middle_row.max()))
    return UndistortionMap(map_x, map_y, crop, path)


class NcltPreprocessing(ImageTransform):
    """Undistort + crop, rotate by 270 degrees, grayscale, resize to 488 x 640 (the original's pipeline)."""

    def __init__(self, undistortion: UndistortionMap | None, grayscale: bool = True,
                 size: tuple[int, int] | None = OUTPUT_SIZE) -> None:
        self.undistortion = undistortion
        self.grayscale = grayscale
        self.size = size
        undistort = undistortion.path.name if undistortion and undistortion.path else bool(undistortion)
        self.description = (f"nclt:undistort={undistort}"
                            f":crop={undistortion.crop if undistortion else None}:rot270:gray={grayscale}:size={size}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Undistort, rotate, convert to grayscale and resize one image as configured."""
        if self.undistortion is not None:
            image = self.undistortion.undistort(image)
        image = np.ascontiguousarray(np.rot90(image, k=3))  # as tf.image.rot90(image, k=3)
        if self.grayscale:
            image = to_grayscale(image)
        if self.size is not None:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        return image


# --------------------------------------------------------------------------- poses


def read_ground_truth_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """NCLT `groundtruth_<date>.csv` (utime, x, y, z, roll, pitch, yaw; no header) -> (utime [N] int64,
    [N, 3] x, y, yaw), time-sorted, rows with NaN dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NCLT ground-truth file")
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not an NCLT ground-truth CSV (utime,x,y,z,roll,pitch,yaw): {exc}") from None
    if data.shape[1] != 7:
        raise ValueError(f"{path}: expected 7 columns (utime,x,y,z,roll,pitch,yaw), got {data.shape[1]}")
    data = data[np.isfinite(data).all(axis=1)]
    if len(data) < 2:
        raise ValueError(f"{path}: fewer than 2 finite ground-truth rows")
    data = data[np.argsort(data[:, 0], kind="stable")]
    return data[:, 0].astype(np.int64), data[:, [1, 2, 6]]


def interpolate_planar_poses(times: np.ndarray, xyh: np.ndarray, query_times: np.ndarray,
                             max_gap_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(valid [M] bool, [M, 3] x, y, heading) at `query_times` (microseconds): linear in position,
    linear in unwrapped heading; invalid outside the ground truth or inside gaps over `max_gap_s`."""
    times = np.asarray(times, np.float64)
    query = np.asarray(query_times, np.float64)
    right = np.searchsorted(times, query, side="left")
    inside = (query >= times[0]) & (query <= times[-1])
    right = np.clip(right, 1, len(times) - 1)
    gap = (times[right] - times[right - 1]) * 1e-6
    exact = np.isin(query, times)
    valid = inside & ((gap <= max_gap_s) | exact)
    heading = np.unwrap(xyh[:, 2])
    out = np.stack([np.interp(query, times, xyh[:, 0]), np.interp(query, times, xyh[:, 1]),
                    np.interp(query, times, heading)], axis=1)
    out[:, 2] = np.mod(out[:, 2] + np.pi, 2 * np.pi) - np.pi
    return valid, out


def write_pose_file(path: str | os.PathLike, times: np.ndarray, xyh: np.ndarray) -> Path:
    """Write `pose_<date>.csv` as the original read it: header `time,x,y,angle`, then one row per image."""
    buffer = io.StringIO()
    buffer.write("time,x,y,angle\n")
    for t, (x, y, h) in zip(np.asarray(times, np.int64), np.asarray(xyh, np.float64)):
        buffer.write(f"{t},{x:.6f},{y:.6f},{h:.6f}\n")
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def read_pose_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """`pose_<date>.csv` -> (utime [N] int64, [N, 3] x, y, angle)."""
    path = Path(path)
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not an NCLT pose file (header 'time,x,y,angle', then numbers): {exc}") from None
    if data.shape[1] != 4:
        raise ValueError(f"{path}: expected 4 columns time,x,y,angle, got {data.shape[1]}")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: non-finite values")
    return data[:, 0].astype(np.int64), data[:, 1:]


def _find(root: Path, folders: Sequence[str], filename: str, date: str = "") -> Path | None:
    for folder in folders:
        candidate = root / folder.format(date=date) / filename
        if candidate.is_file():
            return candidate
    return None


def ground_truth_csv_path(root: Path, date: str) -> Path:
    """Where `groundtruth_<date>.csv` is (searched in the usual places)."""
    found = _find(root, GROUND_TRUTH_FOLDERS, f"groundtruth_{date}.csv", date)
    if found is None:
        places = ", ".join(str(root / f.format(date=date) / f"groundtruth_{date}.csv") for f in GROUND_TRUTH_FOLDERS)
        raise FileNotFoundError(f"no NCLT ground truth for {date} (looked for {places})")
    return found


def camera_folder(root: Path, date: str, camera: int) -> Path:
    """`<root>/<date>/lb3/Cam<k>`."""
    folder = root / date / "lb3" / f"Cam{camera}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no NCLT image folder (layout <date>/lb3/Cam<k>/<utime>.tiff)")
    return folder


def image_times(folder: Path) -> np.ndarray:
    """utime of every `<utime>.tiff` in a camera folder, sorted."""
    times = sorted(int(p.stem) for p in folder.glob("*.tiff") if p.stem.isdigit())
    if not times:
        raise FileNotFoundError(f"{folder}: no <utime>.tiff images")
    return np.asarray(times, np.int64)


def poses_at_images(root: Path, date: str, camera: int = CAMERA,
                    max_gap_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(utime, [N, 3] x, y, heading) of the images of a session that lie inside its ground truth."""
    times = image_times(camera_folder(root, date, camera))
    gt_times, gt_xyh = read_ground_truth_csv(ground_truth_csv_path(root, date))
    valid, xyh = interpolate_planar_poses(gt_times, gt_xyh, times, max_gap_s)
    return times[valid], xyh[valid]


def make_pose_files(root: str | os.PathLike, dates: Sequence[str], camera: int = CAMERA,
                    out_dir: str | os.PathLike | None = None, max_gap_s: float = 1.0) -> list[Path]:
    """Write `pose_<date>.csv` (image time, x, y, heading interpolated from the ground truth) per session."""
    root = Path(root)
    written = []
    for date in dates:
        times, xyh = poses_at_images(root, date, camera, max_gap_s)
        if len(times) == 0:
            raise ValueError(f"NCLT {date}: no image time falls inside the ground truth")
        written.append(write_pose_file(Path(out_dir or root) / f"pose_{date}.csv", times, xyh))
    return written


# --------------------------------------------------------------------------- dataset


def find_undistortion_map(root: Path, camera: int) -> Path | None:
    """`U2D_Cam<k>_1616X1232.txt` in the usual places, or None."""
    return _find(root, MAP_FOLDERS, f"U2D_Cam{camera}_1616X1232.txt")


def _session(root: Path, date: str, camera: int, transform: ImageTransform, pose_dir: Path,
             notes: list[str]) -> ImageSet:
    folder = camera_folder(root, date, camera)
    pose_file = pose_dir / f"pose_{date}.csv"
    if pose_file.is_file():
        times, xyh = read_pose_file(pose_file)
        exists = np.array([(folder / f"{t}.tiff").is_file() for t in times])
        if not exists.all():
            notes.append(f"{date}: {int((~exists).sum())} images of {pose_file.name} are missing and left out")
            times, xyh = times[exists], xyh[exists]
        source = pose_file.name
    else:
        times, xyh = poses_at_images(root, date, camera)
        source = f"groundtruth_{date}.csv (interpolated; write pose files with `python -m hierloc.datasets.nclt poses`)"
    if len(times) == 0:
        raise ValueError(f"NCLT {date}: no image with a pose")
    notes.append(f"{date}: {len(times)} images of Cam{camera}, poses from {source}")
    return ImageSet(date, folder, [f"{t}.tiff" for t in times], key_prefix=f"{date}/lb3/Cam{camera}",
                    planar_poses=xyh, timestamps=times * 1e-6, transform=transform)


def read_nclt(path: str | os.PathLike, reference: str = REFERENCE_DATE, queries: Sequence[str] = QUERY_DATES,
              camera: int = CAMERA, max_distance: float = MAX_DISTANCE, max_angle_deg: float = MAX_ANGLE_DEG,
              undistortion_map: str | os.PathLike | None = None, undistort: bool = True,
              pose_dir: str | os.PathLike | None = None, pool_queries: bool = False) -> RetrievalDataset:
    """NCLT sessions as the original evaluated them (see the module documentation).

    `pool_queries`: one query set made of all query sessions, as the original's notebook concatenated
    them (otherwise one result per session).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such NCLT folder")
    undistortion = None
    if undistort:
        map_path = Path(undistortion_map) if undistortion_map else find_undistortion_map(root, camera)
        if map_path is None:
            raise FileNotFoundError(
                f"{root}: no undistortion map U2D_Cam{camera}_1616X1232.txt (looked in "
                f"{', '.join(str(root / f) for f in MAP_FOLDERS)}); pass its path, or disable undistortion")
        undistortion = read_undistortion_map(map_path)
    transform = NcltPreprocessing(undistortion)
    notes = [f"NCLT Cam{camera}: " + ("undistorted + cropped, " if undistortion else "not undistorted, ")
             + "rotated 270 deg, grayscale, 488x640; "
             + f"2-D ground truth within {max_distance:g} m and {max_angle_deg:g} deg"]
    pose_dir = Path(pose_dir) if pose_dir else root
    reference_set = _session(root, reference, camera, transform, pose_dir, notes)
    query_sets = [_session(root, date, camera, transform, pose_dir, notes) for date in queries]
    if pool_queries and len(query_sets) > 1:
        query_sets = [ImageSet(
            "+".join(q.name for q in query_sets), root, [f"{q.key_prefix}/{n}" for q in query_sets for n in q.names],
            planar_poses=np.concatenate([q.planar_poses for q in query_sets]),
            timestamps=np.concatenate([q.timestamps for q in query_sets]), transform=transform)]
        notes.append(f"query sessions pooled into one query set ({len(query_sets[0])} images), as the original")
    return RetrievalDataset("nclt", root, reference_set, query_sets,
                            GroundTruthRule("planar_poses", max_distance, max_angle_deg), notes)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hierloc.datasets.nclt poses NCLT_ROOT`: write pose_<date>.csv for the evaluated sessions."""
    from ..cli.validators import non_negative_int, positive_float

    parser = argparse.ArgumentParser(prog="python -m hierloc.datasets.nclt", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    poses = sub.add_parser("poses", help="interpolate groundtruth_<date>.csv at the image times")
    poses.add_argument("root", help="NCLT folder (<date>/lb3/Cam<k>/, groundtruth_<date>.csv)")
    poses.add_argument("--dates", nargs="+", default=[REFERENCE_DATE, *QUERY_DATES])
    poses.add_argument("--camera", type=non_negative_int, default=CAMERA)
    poses.add_argument("--out", default=None, help="output folder (default: the NCLT folder)")
    poses.add_argument("--max-gap", type=positive_float, default=1.0,
                       help="largest ground-truth gap (s) to interpolate over")
    args = parser.parse_args(argv)
    for path in make_pose_files(args.root, args.dates, args.camera, args.out, args.max_gap):
        print(f"poses written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
