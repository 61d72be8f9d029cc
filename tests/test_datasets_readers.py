"""Dataset readers on small files written here in each layout's exact format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hierloc.datasets import detect_dataset_kind, load_dataset, read_folders, read_nordland, read_strecha
from hierloc.datasets.nclt import (
    NcltPreprocessing,
    interpolate_planar_poses,
    make_pose_files,
    read_ground_truth_csv,
    read_nclt,
    read_pose_file,
    read_undistortion_map,
)
from hierloc.maps.poses import write_tum


def _write_images(folder: Path, names, size=(48, 32), seed=0, ext=".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{name}{ext}" if "." not in name else folder / name), image)


def test_nordland_same_name_is_the_same_place(tmp_path):
    _write_images(tmp_path / "summer", ["images-00010", "images-00020", "images-00030"])
    _write_images(tmp_path / "winter", ["images-00010", "images-00030", "images-00040"], seed=1)
    assert detect_dataset_kind(tmp_path) == "nordland"
    dataset = read_nordland(tmp_path)
    (winter,) = dataset.queries
    gt = dataset.ground_truth(winter)
    assert dataset.reference.names == ["images-00010.png", "images-00020.png", "images-00030.png"]
    assert gt.dense().tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert gt.summary()["queries_without_ground_truth"] == 1
    assert winter.keys[0] == "winter/images-00010.png"
    assert dataset.reference.load(0).shape == (32, 48, 3)
    assert len(dataset.subsampled(2, 2).queries[0]) == 2
    with pytest.raises(FileNotFoundError, match="no season folder 'spring'"):
        read_nordland(tmp_path, queries=("spring",))


def test_vprbench_layout_uses_natural_order(tmp_path):
    _write_images(tmp_path / "ref", [f"{i}" for i in range(12)], ext=".jpg")
    _write_images(tmp_path / "query", [f"{i}" for i in range(3)], ext=".jpg", seed=2)
    rows = np.empty((3, 2), dtype=object)
    rows[0], rows[1], rows[2] = [0, [10, 11]], [1, [2]], [2, [9]]
    np.save(tmp_path / "ground_truth_new.npy", rows)
    assert detect_dataset_kind(tmp_path) == "vprbench"
    dataset = load_dataset("auto", tmp_path)
    assert dataset.reference.names[:3] == ["0.jpg", "1.jpg", "2.jpg"] and dataset.reference.names[-1] == "11.jpg"
    gt = dataset.ground_truth(dataset.queries[0])
    assert [gt.positives(i).tolist() for i in range(3)] == [[10, 11], [2], [9]]
    assert [dataset.reference.names[i] for i in gt.positives(0)] == ["10.jpg", "11.jpg"]
    with pytest.raises(ValueError, match="does not take the option"):
        load_dataset("vprbench", tmp_path, camera=4)


def test_folders_with_ground_truth_file_pose_files_camera_files_or_names(tmp_path):
    root = tmp_path / "set"
    _write_images(root / "database", ["a", "b", "c"])
    _write_images(root / "queries", ["a", "c"], seed=3)
    same_names = read_folders(root)
    assert same_names.rule.kind == "names"
    assert same_names.ground_truth(same_names.queries[0]).dense().tolist() == [[1, 0, 0], [0, 0, 1]]

    (root / "ground_truth.txt").write_text("a.png b.png\nc.png a.png c.png\n")
    given = read_folders(root)
    assert given.ground_truth(given.queries[0]).dense().tolist() == [[0, 1, 0], [1, 0, 1]]
    (root / "ground_truth.txt").unlink()

    eye = np.eye(4)
    ref_poses = np.stack([eye, eye, eye])
    ref_poses[:, 0, 3] = [0.0, 10.0, 20.0]
    write_tum(root / "reference_poses.txt", [1.0, 2.0, 3.0], ref_poses)
    query_poses = np.stack([eye, eye])
    query_poses[:, 0, 3] = [9.0, 30.0]
    write_tum(root / "query_poses.txt", [1.0, 2.0], query_poses)  # TUM rows associate by order here
    with pytest.raises(ValueError, match="--max-distance"):
        read_folders(root)
    posed = read_folders(root, max_distance=2.0)
    assert posed.ground_truth(posed.queries[0]).dense().tolist() == [[0, 1, 0], [0, 0, 0]]


def _write_strecha_camera(path: Path, centre, yaw_deg=0.0) -> None:
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    lines = ["100 0 24", "0 100 16", "0 0 1", "0 0 0"] + [" ".join(f"{v:.6f}" for v in row) for row in R]
    lines += [" ".join(str(v) for v in centre), "48 32"]
    path.write_text("\n".join(lines) + "\n")


def test_strecha_scene_splits_images_and_uses_camera_poses(tmp_path):
    names = [f"{i:04d}" for i in range(6)]
    _write_images(tmp_path / "images", names, ext=".jpg")
    (tmp_path / "gt_dense_cameras").mkdir()
    for i, name in enumerate(names):
        _write_strecha_camera(tmp_path / "gt_dense_cameras" / f"{name}.jpg.camera", [float(i), 0.0, 0.0], 20.0 * i)
    assert detect_dataset_kind(tmp_path) == "strecha"
    dataset = read_strecha(tmp_path, max_distance=1.0, max_angle_deg=25.0)
    assert dataset.reference.names == ["0000.jpg", "0002.jpg", "0004.jpg"]
    assert dataset.queries[0].names == ["0001.jpg", "0003.jpg", "0005.jpg"]
    assert dataset.queries[0].keys[0] == "images/0001.jpg"
    gt = dataset.ground_truth(dataset.queries[0])  # neighbours 1 m and 20 deg apart
    assert gt.dense().tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    (tmp_path / "gt_dense_cameras" / "0005.jpg.camera").unlink()
    with pytest.raises(FileNotFoundError, match="no camera file for 1 of 6 images"):
        read_strecha(tmp_path, max_distance=1.0)


# --------------------------------------------------------------------------- NCLT

WIDTH, HEIGHT = 160, 120


def _write_u2d_map(path: Path, scale: float) -> None:
    """NCLT's exact U2D format: a size header, then `row col v u` for every undistorted pixel."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    cx, cy = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
    u = (cols - cx) * scale + cx
    v = (rows - cy) * scale + cy
    lines = [f"width/cols = {WIDTH} , height/rows = {HEIGHT}"]
    lines += [f"{r} {c} {vv:.6f} {uu:.6f}" for r, c, vv, uu in zip(rows.ravel(), cols.ravel(), v.ravel(), u.ravel())]
    path.write_text("\n".join(lines) + "\n")


def _write_nclt(root: Path) -> dict:
    """Two sessions of camera 4 with NCLT's folder layout and ground-truth CSVs (utime,x,y,z,roll,pitch,yaw)."""
    times = {}
    for date, offset in (("2012-01-08", 0.0), ("2012-08-20", 1.0)):
        folder = root / date / "lb3" / "Cam4"
        folder.mkdir(parents=True)
        start = 1_326_000_000_000_000 if date == "2012-01-08" else 1_345_000_000_000_000
        image_times = [start + k * 500_000 for k in range(6)] + [start + 10_000_000]  # the last is beyond the GT
        for k, t in enumerate(image_times):
            image = np.full((HEIGHT, WIDTH, 3), 40 * k, np.uint8)
            image[:10, :10] = 255
            cv2.imwrite(str(folder / f"{t}.tiff"), image)
        gt_times = [start - 1_000_000 + k * 1_000_000 for k in range(6)]
        lines = [f"{t},{offset + 2.0 * k},{0.5 * k},0.0,0.0,0.0,{0.1 * k}" for k, t in enumerate(gt_times)]
        lines.insert(3, f"{gt_times[2] + 500_000},nan,nan,nan,nan,nan,nan")
        (root / f"groundtruth_{date}.csv").write_text("\n".join(lines) + "\n")
        times[date] = image_times
    return times


def test_nclt_undistortion_map_format_and_crop(tmp_path):
    _write_u2d_map(tmp_path / "U2D_Cam4_1616X1232.txt", scale=1.25)
    undistortion = read_undistortion_map(tmp_path / "U2D_Cam4_1616X1232.txt")
    assert undistortion.map_x.shape == (HEIGHT, WIDTH)
    y0, y1, x0, x1 = undistortion.crop
    # Sampling leaves the image where |col - cx| * 1.25 > cx; the 30 px erosion removes 15 more pixels.
    cx = (WIDTH - 1) / 2
    assert abs(x0 - (cx - cx / 1.25 + 15)) <= 2 and abs(x1 - (cx + cx / 1.25 - 15)) <= 2
    assert 0 < y0 < y1 < HEIGHT
    image = np.tile(np.arange(WIDTH, dtype=np.uint8), (HEIGHT, 1))
    out = undistortion.undistort(image)
    assert out.shape == (y1 - y0, x1 - x0)
    middle = out[out.shape[0] // 2]
    assert np.all(np.diff(middle.astype(int)) >= 0)
    assert abs(int(middle[0]) - ((x0 - cx) * 1.25 + cx)) <= 1.5  # the ramp, zoomed out by the map
    bad = tmp_path / "bad.txt"
    bad.write_text("no size here\n0 0 1 1\n")
    with pytest.raises(ValueError, match="bad.txt:1: expected a header"):
        read_undistortion_map(bad)


def test_nclt_rotation_grayscale_and_size():
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:10, :10] = 255  # top-left corner
    out = NcltPreprocessing(None, grayscale=True, size=None)(image)
    assert out.shape == (WIDTH, HEIGHT) and out.ndim == 2
    assert out[:10, -10:].min() == 255 and out[-10:, :10].max() == 0  # 270 deg: top-left -> top-right
    resized = NcltPreprocessing(None)(image)
    assert resized.shape == (640, 488)


def test_nclt_pose_interpolation_wraps_heading_and_respects_gaps():
    times = np.array([0, 1_000_000, 2_000_000, 10_000_000])
    xyh = np.array([[0.0, 0.0, np.radians(170.0)], [2.0, 4.0, np.radians(-170.0)], [2.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    valid, out = interpolate_planar_poses(times, xyh, np.array([500_000, -1, 5_000_000, 2_000_000]), max_gap_s=1.0)
    assert valid.tolist() == [True, False, False, True]
    assert out[0, :2] == pytest.approx([1.0, 2.0])
    assert abs(abs(np.degrees(out[0, 2])) - 180.0) < 1e-6  # through 180, not through 0


def test_nclt_pose_files_and_dataset(tmp_path):
    times = _write_nclt(tmp_path)
    _write_u2d_map(tmp_path / "U2D_Cam4_1616X1232.txt", scale=1.0)
    gt_times, gt = read_ground_truth_csv(tmp_path / "groundtruth_2012-01-08.csv")
    assert len(gt_times) == 6 and np.isfinite(gt).all()  # the NaN row is dropped

    written = make_pose_files(tmp_path, ["2012-01-08", "2012-08-20"])
    assert [p.name for p in written] == ["pose_2012-01-08.csv", "pose_2012-08-20.csv"]
    assert written[0].read_text().splitlines()[0] == "time,x,y,angle"
    pose_times, xyh = read_pose_file(written[0])
    assert pose_times.tolist() == times["2012-01-08"][:6]  # the image beyond the ground truth has no pose
    assert xyh[0, :2] == pytest.approx([2.0, 0.5])  # 1 s after the first GT sample

    assert detect_dataset_kind(tmp_path) == "nclt"
    dataset = read_nclt(tmp_path, queries=("2012-08-20",), max_distance=0.5)
    reference, (query,) = dataset.reference, dataset.queries
    assert len(reference) == 6 and reference.keys[0] == f"2012-01-08/lb3/Cam4/{times['2012-01-08'][0]}.tiff"
    image = reference.load(0)
    assert image.shape == (640, 488) and image.dtype == np.uint8
    gt = dataset.ground_truth(query)  # the query session runs 1 m (one image) ahead of the reference
    assert gt.dense()[2].tolist() == [False, False, False, True, False, False]
    with pytest.raises(FileNotFoundError, match="no undistortion map U2D_Cam5"):
        read_nclt(tmp_path, camera=5)
    no_map = read_nclt(tmp_path, queries=("2012-08-20",), undistort=False)
    assert no_map.reference.load(1).shape == (640, 488)
    pooled = read_nclt(tmp_path, queries=("2012-01-08", "2012-08-20"), reference="2012-08-20", pool_queries=True)
    (both,) = pooled.queries
    assert both.name == "2012-01-08+2012-08-20" and len(both) == 12
    assert both.keys[6] == f"2012-08-20/lb3/Cam4/{times['2012-08-20'][0]}.tiff"
    assert both.load(11).shape == (640, 488)
    assert pooled.ground_truth(both).shape == (12, 6)
