"""The synthetic world: determinism, exact geometry, missions, speed, and the written dataset."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hierloc.maps import Camera, read_image_folder
from hierloc.maps.poses import invert_pose
from hierloc.maps.synthetic import (
    APPEARANCES,
    BLOCK,
    ROOM,
    Appearance,
    SyntheticWorld,
    make_synthetic_map,
    write_synthetic_dataset,
)

SMALL = (160, 120)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(seed=0)


@pytest.fixture(scope="module")
def small_map():
    return make_synthetic_map(num_missions=3, frames_per_mission=12, image_size=SMALL, seed=0)


def backproject(depth: np.ndarray, camera: Camera, pose: np.ndarray,
                pixels: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """World points of pixel indices (rows, cols) with COLMAP pixel centres (+0.5)."""
    rows, cols = pixels
    rays = np.c_[cols + 0.5, rows + 0.5, np.ones(len(rows))] @ np.linalg.inv(camera.K).T
    points_cam = rays * depth[rows, cols][:, None]
    return points_cam @ pose[:3, :3].T + pose[:3, 3]


def project(points: np.ndarray, camera: Camera, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixel coordinates with COLMAP centres, z in the camera) of world points."""
    T = invert_pose(pose)
    cam = points @ T[:3, :3].T + T[:3, 3]
    uv = cam @ camera.K.T
    return uv[:, :2] / uv[:, 2:3], cam[:, 2]


def test_render_is_deterministic_and_seeded(world):
    camera = world.default_camera(SMALL)
    pose = world.loop_pose(3.0)
    a = world.render(pose, camera, APPEARANCES["night"], noise_seed=5)
    b = SyntheticWorld(seed=0).render(pose, camera, APPEARANCES["night"], noise_seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    other = SyntheticWorld(seed=1).render(pose, camera, APPEARANCES["night"], noise_seed=5)
    assert np.mean(np.abs(other[0].astype(int) - a[0].astype(int))) > 5  # other textures
    np.testing.assert_allclose(other[1], a[1])  # same geometry


def test_depth_back_projects_onto_the_scene_planes(world):
    camera = world.default_camera((320, 240))
    rng = np.random.default_rng(0)
    for pose in world.mission_poses(1, 40)[::7]:
        image, depth = world.render(pose, camera)
        assert image.shape == (240, 320, 3) and image.dtype == np.uint8
        assert depth.dtype == np.float32 and np.all(depth > 0)  # a closed room: every pixel sees a surface
        pixels = rng.integers(0, 240, 400), rng.integers(0, 320, 400)
        points = backproject(depth, camera, pose, pixels)
        assert np.max(world.surface_distance(points)) < 1e-4
        assert np.all((points[:, 0] > -1e-3) & (points[:, 0] < ROOM[0] + 1e-3)
                      & (points[:, 2] > -1e-3) & (points[:, 2] < ROOM[2] + 1e-3))
        inside_block = ((points[:, 0] > BLOCK[0] + 1e-3) & (points[:, 0] < BLOCK[2] - 1e-3)
                        & (points[:, 1] > BLOCK[1] + 1e-3) & (points[:, 1] < BLOCK[3] - 1e-3))
        assert not np.any(inside_block)


def test_points_project_consistently_into_two_frames(world):
    camera = world.default_camera((320, 240))
    clean = Appearance()
    poses = world.mission_poses(0, 40)
    image_a, depth_a = world.render(poses[10], camera, clean)
    image_b, depth_b = world.render(poses[11], camera, clean)
    rows, cols = np.mgrid[20:220:6, 20:300:6]
    points = backproject(depth_a, camera, poses[10], (rows.ravel(), cols.ravel()))
    uv, z = project(points, camera, poses[11])
    inside = (z > 0) & (uv[:, 0] >= 1) & (uv[:, 0] < 319) & (uv[:, 1] >= 1) & (uv[:, 1] < 239)
    col_b, row_b = np.floor(uv[inside]).astype(int).T
    visible = np.abs(depth_b[row_b, col_b] - z[inside]) < 0.02 * z[inside]  # not occluded in frame b
    assert inside.sum() > 500 and visible.mean() > 0.8
    # The same surface point has the same colour in both frames (up to resampling).
    colour_a = image_a[rows.ravel()[inside][visible], cols.ravel()[inside][visible]].astype(float)
    colour_b = image_b[row_b[visible], col_b[visible]].astype(float)
    assert np.median(np.abs(colour_a - colour_b)) < 12
    assert np.median(np.abs(colour_a - np.roll(colour_b, 7, axis=0))) > 2 * np.median(np.abs(colour_a - colour_b))


def test_synthetic_map_missions(small_map):
    assert list(small_map.missions) == ["day", "dusk", "night"]
    assert len(small_map) == 36
    day, dusk = small_map.missions["day"].keyframes, small_map.missions["dusk"].keyframes
    kf = day[3]
    assert kf.name == "day/000003.png" and kf.index == 3 and kf.camera.model == "PINHOLE"
    assert kf.image.shape == (120, 160, 3) and kf.depth.shape == (120, 160)
    assert kf.timestamp == pytest.approx(3 * SyntheticWorld(0).loop_length / 12)
    # Camera looks horizontally along the path at 1.4 m; the other missions are offset a little.
    assert kf.pose[2, 3] == pytest.approx(1.4) and abs(kf.pose[2, 2]) < 1e-9
    offsets = np.linalg.norm([a.position - b.position for a, b in zip(day, dusk)], axis=1)
    assert np.all(offsets > 0.05) and np.all(offsets < 3.0)
    brightness = [np.mean([k.image.mean() for k in m.keyframes]) for m in small_map.missions.values()]
    assert brightness[0] > brightness[1] > brightness[2]  # day, dusk, night
    again = make_synthetic_map(num_missions=3, frames_per_mission=12, image_size=SMALL, seed=0, num_threads=1)
    for a, b in zip(small_map.keyframes(), again.keyframes()):
        assert a.id == b.id
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.pose, b.pose)


def test_rendering_speed_is_reasonable():
    start = time.perf_counter()
    map_ = make_synthetic_map(num_missions=2, frames_per_mission=50, image_size=(640, 480), seed=0)
    elapsed = time.perf_counter() - start
    assert len(map_) == 100
    assert elapsed < 20.0, f"rendering 100 frames at 640x480 took {elapsed:.1f} s"


def test_written_dataset_reads_back(small_map, tmp_path):
    subset = small_map.select(["day", "night"], subsampling=2)
    out = write_synthetic_dataset(subset, tmp_path / "synthetic", depth=True)
    assert (out / "cameras.txt").is_file() and (out / "day" / "poses.txt").is_file()
    read = read_image_folder(out)
    assert list(read.missions) == ["day", "night"] and len(read) == len(subset)
    for original, loaded in zip(subset.keyframes(), read.keyframes()):
        assert loaded.name == original.name and loaded.id == original.id
        np.testing.assert_allclose(loaded.pose, original.pose, atol=1e-6)
        assert loaded.timestamp == pytest.approx(original.timestamp)
        np.testing.assert_allclose(loaded.camera.params, original.camera.params)
        np.testing.assert_array_equal(loaded.load_image(), original.image)  # PNG is lossless
    depths = np.load(out / "night" / "depth.npz")
    np.testing.assert_array_equal(depths["000002"], subset.missions["night"].keyframes[1].depth)


def test_invalid_arguments(world):
    with pytest.raises(ValueError, match="positive"):
        make_synthetic_map(num_missions=0)
    with pytest.raises(ValueError, match="pinhole camera"):
        world.render(np.eye(4), Camera("SIMPLE_RADIAL", 64, 48, [50, 32, 24, 0.1]))
