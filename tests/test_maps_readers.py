"""Folder and COLMAP map readers, and load_map's choice of reader."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from hierloc.maps import Camera, detect_map_kind, keyframe_id, load_map, read_colmap_model, read_image_folder
from hierloc.maps.poses import make_pose, pose_from_xy_yaw, pose_to_colmap, write_pose_csv, write_tum


def write_images(folder: Path, names: list[str], size: tuple[int, int] = (32, 24)) -> None:
    for k, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = np.full((size[1], size[0], 3), (k * 20) % 256, np.uint8)
        assert cv2.imwrite(str(path), image)


def poses_along_x(n: int) -> np.ndarray:
    return np.stack([make_pose(np.eye(3), [float(i), 0.0, 0.0]) for i in range(n)])


def test_folder_root_is_one_mission_with_tum_poses_by_order(tmp_path):
    root = tmp_path / "office"
    write_images(root, [f"frame{i}.png" for i in (1, 2, 10)])
    write_tum(root / "poses.txt", [0.1, 0.2, 0.3], poses_along_x(3))
    (root / "cameras.txt").write_text("1 PINHOLE 32 24 30 30 16 12\n")
    map_ = read_image_folder(root)
    assert map_.name == "office" and list(map_.missions) == ["office"]
    kfs = list(map_.keyframes())
    assert [kf.name for kf in kfs] == ["frame1.png", "frame2.png", "frame10.png"]  # natural order
    assert [kf.index for kf in kfs] == [0, 1, 2]
    np.testing.assert_allclose([kf.pose[0, 3] for kf in kfs], [0, 1, 2])
    assert [kf.timestamp for kf in kfs] == pytest.approx([0.1, 0.2, 0.3])
    assert kfs[0].camera.model == "PINHOLE" and kfs[0].id == keyframe_id("frame1.png", "office")
    assert kfs[2].load_image().shape == (24, 32, 3)


def test_folder_missions_per_subfolder_with_auto_pose_files(tmp_path):
    write_images(tmp_path / "summer", ["a/0.png", "a/1.png"])
    write_images(tmp_path / "winter", ["0.jpg", "1.jpg", "2.jpg"])
    write_images(tmp_path / "empty_dir", [])
    (tmp_path / "empty_dir").mkdir(exist_ok=True)
    write_tum(tmp_path / "winter.txt", [0, 1, 2], poses_along_x(3))  # next to the mission folder
    write_pose_csv(tmp_path / "summer" / "poses.csv", ["a/1.png", "0.png"], poses_along_x(2))
    map_ = read_image_folder(tmp_path, camera=Camera.pinhole(30, 30, 16, 12, 32, 24))
    assert list(map_.missions) == ["summer", "winter"]
    summer = map_.missions["summer"].keyframes
    assert [kf.name for kf in summer] == ["summer/a/0.png", "summer/a/1.png"]
    np.testing.assert_allclose([kf.pose[0, 3] for kf in summer], [1, 0])  # associated by name
    assert all(kf.pose is not None for kf in map_.missions["winter"].keyframes)
    assert all(kf.camera.params[0] == 30 for kf in map_.keyframes())


def test_folder_explicit_pose_files(tmp_path):
    write_images(tmp_path / "m1", ["0.png", "1.png"])
    write_images(tmp_path / "m2", ["0.png", "1.png"])
    write_tum(tmp_path / "p1.txt", [0, 1], poses_along_x(2))
    map_ = read_image_folder(tmp_path, pose_file={"m1": tmp_path / "p1.txt"})
    assert all(kf.pose is not None for kf in map_.missions["m1"])
    assert all(kf.pose is None for kf in map_.missions["m2"])
    # One file for all missions needs names relative to the root.
    write_pose_csv(tmp_path / "all.csv", ["m2/1.png", "m1/0.png"], poses_along_x(2))
    map_ = read_image_folder(tmp_path, pose_file=tmp_path / "all.csv")
    assert map_.missions["m2"].keyframes[1].pose[0, 3] == 0 and map_.missions["m1"].keyframes[0].pose[0, 3] == 1
    assert map_.missions["m1"].keyframes[1].pose is None
    with pytest.raises(ValueError, match=r"p1\.txt: one pose file for 2 missions needs an image-name column"):
        read_image_folder(tmp_path, pose_file=tmp_path / "p1.txt")
    with pytest.raises(ValueError, match="unknown missions"):
        read_image_folder(tmp_path, pose_file={"m3": tmp_path / "p1.txt"})
    with pytest.raises(FileNotFoundError, match="nope.txt: no such pose file"):
        read_image_folder(tmp_path, pose_file={"m1": tmp_path / "nope.txt"})


def test_folder_timestamps_from_nclt_style_names(tmp_path):
    root = tmp_path / "2012-01-08"
    utimes = [1326031000000000 + k * 200000 for k in range(4)]
    write_images(root, [f"{u}.tiff" for u in utimes])
    lines = ["time,x,y,angle"] + [f"{1326031000000000 + k * 100000},{k},0,0" for k in range(9)]
    (tmp_path / "pose_2012-01-08.csv").write_text("\n".join(lines) + "\n")
    map_ = read_image_folder(root, pose_file=tmp_path / "pose_2012-01-08.csv", max_time_diff=0.01)
    kfs = list(map_.keyframes())
    np.testing.assert_allclose([kf.pose[0, 3] for kf in kfs], [0, 2, 4, 6])
    np.testing.assert_allclose(kfs[1].pose, pose_from_xy_yaw(2, 0, 0))
    assert kfs[1].timestamp == pytest.approx(1326031000.2)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images found"):
        read_image_folder(tmp_path)
    write_images(tmp_path / "m", ["0.png", "1.png", "2.png"])
    write_tum(tmp_path / "m" / "poses.txt", [0, 1], poses_along_x(2))
    with pytest.raises(ValueError, match=r"poses\.txt: cannot associate 2 poses with 3 images"):
        read_image_folder(tmp_path)
    (tmp_path / "m" / "poses.txt").write_text("0 0 0 0 0 0 0 1\n1 0 0\n")
    with pytest.raises(ValueError, match=r"poses\.txt:2: expected 8 values"):
        read_image_folder(tmp_path)


def test_strecha_folder_reader():
    from conftest import shared_path

    scene = shared_path("data", "strecha", "fountain-P11")
    map_ = read_image_folder(scene)
    assert list(map_.missions) == ["fountain-P11"] and len(map_) == 11
    kf = map_.missions["fountain-P11"].keyframes[0]
    assert kf.name == "0000.jpg" and kf.image_path == scene / "images" / "0000.jpg"
    assert kf.camera.model == "PINHOLE" and kf.camera.width == 1536
    np.testing.assert_allclose(kf.pose[:3, 3], [-7.28137, -7.57667, 0.204446])
    both = load_map(scene.parent)
    assert set(both.missions) == {"fountain-P11", "Herz-Jesus-P25"} and len(both) == 36


def build_colmap_model(folder: Path, names: list[str], poses: np.ndarray) -> None:
    """A pycolmap 4 reconstruction (trivial rigs and frames) written as binary."""
    reconstruction = pycolmap.Reconstruction()
    camera = pycolmap.Camera.create_from_model_name(1, "SIMPLE_RADIAL", 500.0, 640, 480)
    camera.params = [500.0, 320.0, 240.0, 0.01]
    reconstruction.add_camera_with_trivial_rig(camera)
    for image_id, (name, T) in enumerate(zip(names, poses), start=1):
        qvec, tvec = pose_to_colmap(T)
        w, x, y, z = qvec
        cam_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([x, y, z, w])), tvec)
        reconstruction.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=1, image_id=image_id),
                                                    cam_from_world)
    folder.mkdir(parents=True, exist_ok=True)
    reconstruction.write(str(folder))


def test_colmap_reader_converts_poses_and_groups_missions(tmp_path):
    rng = np.random.default_rng(0)
    names = ["seq1/0001.png", "seq1/0002.png", "seq2/0001.png", "top.png"]
    poses = np.stack([make_pose(Rotation.random(random_state=k).as_matrix(), rng.uniform(-3, 3, 3)) for k in range(4)])
    project = tmp_path / "project"
    build_colmap_model(project / "sparse" / "0", names, poses)  # COLMAP writes registered images only
    write_images(project / "images", names)

    map_ = read_colmap_model(project / "sparse" / "0")  # images/ found two levels up
    assert map_.name == "images"
    assert list(map_.missions) == ["images", "seq1", "seq2"]
    by_name = {kf.name: kf for kf in map_.keyframes()}
    for name, T in zip(names, poses):
        np.testing.assert_allclose(by_name[name].pose, T, atol=1e-9)
        assert by_name[name].image_path == project / "images" / name
    assert by_name["seq1/0002.png"].mission == "seq1" and by_name["seq1/0002.png"].index == 1
    camera = by_name["top.png"].camera
    assert camera.model == "SIMPLE_RADIAL"
    np.testing.assert_allclose(camera.params, [500, 320, 240, 0.01])
    assert by_name["seq1/0001.png"].load_image().shape == (24, 32, 3)

    single = read_colmap_model(project / "sparse" / "0", project / "images", group_by_folder=False, name="office")
    assert list(single.missions) == ["office"] and len(single) == 4

    # load_map finds the model in a COLMAP project folder and uses its images/.
    assert detect_map_kind(project) == "colmap"
    loaded = load_map(project)
    assert len(loaded) == 4 and by_name["top.png"].image_path == loaded.keyframe(by_name["top.png"].id).image_path


def test_colmap_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such COLMAP model folder"):
        read_colmap_model(tmp_path / "missing")
    (tmp_path / "cameras.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="not a COLMAP model"):
        read_colmap_model(tmp_path)
    (tmp_path / "images.txt").write_text("garbage line that is not an image\n")
    (tmp_path / "points3D.txt").write_text("")
    with pytest.raises(ValueError, match="cameras.txt: no cameras"):
        read_colmap_model(tmp_path)


def test_load_map_dispatch_and_errors(tmp_path):
    write_images(tmp_path / "maps" / "m", ["0.png"])
    assert detect_map_kind(tmp_path / "maps") == "folder"
    assert len(load_map(tmp_path / "maps")) == 1
    assert len(load_map(tmp_path / "maps", kind="folder", camera=Camera.pinhole(1, 1, 1, 1, 2, 2))) == 1
    with pytest.raises(FileNotFoundError, match="no such map"):
        load_map(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown map kind"):
        load_map(tmp_path / "maps", kind="lidar")
    with pytest.raises(TypeError, match="folder maps take no option image_topic"):
        load_map(tmp_path / "maps", image_topic="/cam")
    (tmp_path / "x.bag").write_bytes(b"")
    assert detect_map_kind(tmp_path / "x.bag") == "rosbag"
    with pytest.raises(ValueError, match="needs image_topic"):
        load_map(tmp_path / "x.bag")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot tell what kind of map"):
        load_map(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="no COLMAP model"):
        load_map(tmp_path / "maps", kind="colmap")
