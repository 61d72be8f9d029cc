"""Pose conventions, pose-file readers and association of poses with images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hierloc.maps.poses import (
    PoseTable,
    associate_poses,
    detect_pose_format,
    invert_pose,
    make_pose,
    nearest_in_time,
    pose_distance,
    pose_from_colmap,
    pose_from_xy_yaw,
    pose_to_colmap,
    qvec_to_rotmat,
    read_cameras_txt,
    read_pose_file,
    read_strecha_camera,
    rotmat_to_qvec,
    timestamp_from_name,
    write_pose_csv,
    write_tum,
    yaw_of,
)


def random_poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    R = Rotation.random(n, random_state=seed).as_matrix()
    return np.stack([make_pose(R[i], rng.uniform(-5, 5, 3)) for i in range(n)])


def test_quaternion_round_trip_normalising_and_sign_stable():
    R = Rotation.random(50, random_state=1).as_matrix()
    q = rotmat_to_qvec(R)
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0)
    np.testing.assert_allclose(qvec_to_rotmat(q), R, atol=1e-12)
    # -q is the same rotation; a scaled quaternion is normalised first.
    np.testing.assert_allclose(rotmat_to_qvec(qvec_to_rotmat(-3.0 * q[0])), q[0], atol=1e-12)
    np.testing.assert_allclose(rotmat_to_qvec(np.eye(3)), [1, 0, 0, 0])
    # 90 degrees about z: w = x... ordering (w, x, y, z)
    np.testing.assert_allclose(rotmat_to_qvec(Rotation.from_euler("z", 90, degrees=True).as_matrix()),
                               [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)
    with pytest.raises(ValueError, match="zero"):
        qvec_to_rotmat([0, 0, 0, 0])
    with pytest.raises(ValueError, match="4 values"):
        qvec_to_rotmat([1, 0, 0])


def test_colmap_world_to_camera_round_trip():
    for T in random_poses(20):
        qvec, tvec = pose_to_colmap(T)
        np.testing.assert_allclose(pose_from_colmap(qvec, tvec), T, atol=1e-10)
        # COLMAP maps world points to the camera: x_cam = R(q) x_world + t, and the centre to zero.
        np.testing.assert_allclose(qvec_to_rotmat(qvec) @ T[:3, 3] + tvec, 0, atol=1e-10)
    T = random_poses(5)
    np.testing.assert_allclose(invert_pose(T) @ T, np.broadcast_to(np.eye(4), T.shape), atol=1e-12)


def test_planar_pose_and_distance():
    T = pose_from_xy_yaw(1.0, 2.0, np.radians(30), z=0.5)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 0.5])
    assert yaw_of(T) == pytest.approx(np.radians(30))
    d, angle = pose_distance(T, pose_from_xy_yaw(4.0, 6.0, np.radians(-15), z=0.5))
    assert d == pytest.approx(5.0) and angle == pytest.approx(45.0)


def test_tum_write_read_round_trip(tmp_path):
    poses = random_poses(6)
    path = tmp_path / "traj.txt"
    write_tum(path, np.arange(6) * 0.5, poses)
    table = read_pose_file(path)
    assert table.format == "tum" and len(table) == 6
    np.testing.assert_allclose(table.poses, poses, atol=1e-8)
    np.testing.assert_allclose(table.timestamps, np.arange(6) * 0.5)


def test_tum_reader_comments_and_quaternion_order(tmp_path):
    path = tmp_path / "groundtruth.txt"
    path.write_text("# ground truth\n# timestamp tx ty tz qx qy qz qw\n\n1.0 1 2 3 0 0 0.7071068 0.7071068\n")
    table = read_pose_file(path)
    np.testing.assert_allclose(table.poses[0][:3, 3], [1, 2, 3])
    np.testing.assert_allclose(table.poses[0][:3, :3], Rotation.from_euler("z", 90, degrees=True).as_matrix(),
                               atol=1e-6)


def test_kitti_reader(tmp_path):
    poses = random_poses(3)
    path = tmp_path / "00.txt"
    path.write_text("\n".join(" ".join(f"{v:.12e}" for v in T[:3].reshape(-1)) for T in poses) + "\n")
    table = read_pose_file(path)
    assert table.format == "kitti" and table.timestamps is None
    np.testing.assert_allclose(table.poses, poses, atol=1e-10)


def test_csv_with_names_and_quaternions(tmp_path):
    poses = random_poses(4)
    path = tmp_path / "poses.csv"
    write_pose_csv(path, [f"img{i}.png" for i in range(4)], poses, timestamps=[10, 11, 12, 13])
    table = read_pose_file(path)
    assert table.format == "csv" and table.names == [f"img{i}.png" for i in range(4)]
    np.testing.assert_allclose(table.poses, poses, atol=1e-8)
    np.testing.assert_allclose(table.timestamps, [10, 11, 12, 13])


def test_csv_planar_nclt_style_microseconds(tmp_path):
    path = tmp_path / "pose_2012-01-08.csv"
    path.write_text("time,x,y,angle\n1326031000000000,1.0,2.0,0.5\n1326031000200000,2.0,3.0,-1.0\n")
    table = read_pose_file(path)
    np.testing.assert_allclose(table.timestamps, [1326031000.0, 1326031000.2])
    np.testing.assert_allclose(table.poses[1], pose_from_xy_yaw(2.0, 3.0, -1.0))


def test_csv_variants(tmp_path):
    # Whitespace separated, degrees, roll/pitch/yaw.
    path = tmp_path / "a.txt"
    path.write_text("t x y z roll pitch yaw\n0.0 1 2 3 0 0 1.5\n")
    np.testing.assert_allclose(read_pose_file(path).poses[0][:3, :3], Rotation.from_euler("z", 1.5).as_matrix(),
                               atol=1e-12)
    path = tmp_path / "b.csv"
    path.write_text("timestamp;tx;ty;heading_deg\n0;1;2;90\n")
    assert yaw_of(read_pose_file(path).poses[0]) == pytest.approx(np.pi / 2)
    # EuRoC style: the header is a '#' comment, with units in brackets.
    path = tmp_path / "data.csv"
    path.write_text("#timestamp [ns],p_RS_R_x [m],p_RS_R_y [m],p_RS_R_z [m],q_RS_w [],q_RS_x [],q_RS_y [],q_RS_z []\n"
                    "1403636579758555392,4.68,-1.78,0.78,0.53,-0.15,-0.82,-0.12\n")
    table = read_pose_file(path)
    assert table.timestamps[0] == pytest.approx(1403636579.758555392)
    np.testing.assert_allclose(table.poses[0][:3, 3], [4.68, -1.78, 0.78])


@pytest.mark.parametrize(
    "text, fmt, message",
    [
        ("1 2 3 4 5 6 7 8\n1 2 3\n", "tum", r"x\.txt:2: expected 8 values"),
        ("# c\n1 2 3 4 5 6 7 8\n1 2 3 x 5 6 7 8\n", "tum", r"x\.txt:3: non-numeric"),
        ("1 2 3 4 0 0 0 0\n", "tum", r"x\.txt:1: .*zero"),
        ("1 2 3 4 5 6 7 8 9 10 11\n", "kitti", r"x\.txt:1: expected 12 values"),
        ("time,x,y,angle\n1,2,3,4\n1,2,3\n", "csv", r"x\.txt:3: expected 4 columns"),
        ("time,x,y,angle\n1,2,abc,4\n", "csv", r"x\.txt:2: column 'y' is not a number"),
        ("time,x,y\n1,2,3\n", "csv", r"x\.txt:1: header .* lacks an orientation"),
        ("time,a,b,angle\n1,2,3,4\n", "csv", r"lacks position columns"),
        ("1 2 3\n", "auto", r"x\.txt:1: cannot tell the pose format"),
        ("# only comments\n", "auto", r"no CSV header|no poses"),
        ("", "auto", r"no poses"),
    ],
)
def test_malformed_pose_files_name_file_and_line(tmp_path, text, fmt, message):
    path = tmp_path / "x.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_pose_file(path, fmt)


def test_pose_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pose file"):
        read_pose_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown pose format"):
        read_pose_file(tmp_path / "missing.txt", "g2o")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="not a text file"):
        read_pose_file(tmp_path / "bin.txt")


def test_detect_format(tmp_path):
    (tmp_path / "t.txt").write_text("0 0 0 0 0 0 0 1\n")
    (tmp_path / "k.txt").write_text(" ".join(["0"] * 12) + "\n")
    (tmp_path / "c.csv").write_text("name,x,y,yaw\na.png,0,0,0\n")
    assert [detect_pose_format(tmp_path / f) for f in ("t.txt", "k.txt", "c.csv")] == ["tum", "kitti", "csv"]


def test_timestamp_from_name():
    assert timestamp_from_name("1326031000123456.tiff") == pytest.approx(1326031000.123456)  # NCLT microseconds
    assert timestamp_from_name("cam/1403636579763555584.png") == pytest.approx(1403636579.763555584)  # ns
    assert timestamp_from_name("1311868164.363181.png") == pytest.approx(1311868164.363181)  # float seconds
    assert timestamp_from_name("12.5.jpg") == 12.5
    assert timestamp_from_name("000123.png") is None  # a frame counter
    assert timestamp_from_name("frame_1326031000.png") is None


def test_nearest_in_time():
    ref = np.array([3.0, 1.0, 2.0])
    np.testing.assert_array_equal(nearest_in_time([0.95, 2.4, 2.6, 5.0], ref, 0.45), [1, 2, 0, -1])
    np.testing.assert_array_equal(nearest_in_time([1.0], np.array([]), 1.0), [-1])


def test_association_by_name_timestamp_and_order():
    poses = random_poses(3)
    by_name = PoseTable(poses, names=["c.png", "./seq/a.png", "b"])
    indices, method = associate_poses(by_name, ["m/seq/a.png", "m/b.png", "m/c.png", "m/d.png"])
    assert method == "name" and list(indices) == [1, 2, 0, -1]

    by_time = PoseTable(poses, timestamps=[1326031000.0, 1326031000.5, 1326031001.0])
    names = ["1326031000020000.tiff", "1326031000990000.tiff", "1326031009000000.tiff"]
    indices, method = associate_poses(by_time, names, max_time_diff=0.05)
    assert method == "timestamp" and list(indices) == [0, 2, -1]

    indices, method = associate_poses(by_time, ["000.png", "001.png", "002.png"])
    assert method == "order" and list(indices) == [0, 1, 2]


def test_association_errors():
    poses = random_poses(3)
    with pytest.raises(ValueError, match="poses.txt: cannot associate 3 poses with 2 images"):
        associate_poses(PoseTable(poses, timestamps=[0, 1, 2], path="poses.txt"), ["a.png", "b.png"])
    with pytest.raises(ValueError, match="none of its 3 image names matches"):
        associate_poses(PoseTable(poses, names=["x.png", "y.png", "z.png"]), ["a.png"])
    with pytest.raises(ValueError, match="no pose within 0.1 s"):
        associate_poses(PoseTable(poses, timestamps=[0, 1, 2]), ["1326031000000000.png"])


def test_strecha_camera_reader(tmp_path):
    R = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    C = np.array([1.0, -2.0, 3.0])
    rows = ["1000 0 760", "0 1001 500", "0 0 1", "0 0 0", *(" ".join(f"{v:.17g}" for v in r) for r in R),
            " ".join(f"{v:.17g}" for v in C), "1536 1024"]
    path = tmp_path / "0000.jpg.camera"
    path.write_text("\n".join(rows) + "\n")
    camera, pose = read_strecha_camera(path)
    assert camera.model == "PINHOLE" and (camera.width, camera.height) == (1536, 1024)
    np.testing.assert_allclose(camera.params, [1000, 1001, 760, 500])
    np.testing.assert_allclose(pose, make_pose(R, C))
    # The README's world-to-camera: R_cw = R^T, t_cw = -R^T C.
    qvec, tvec = pose_to_colmap(pose)
    np.testing.assert_allclose(qvec_to_rotmat(qvec), R.T, atol=1e-12)
    np.testing.assert_allclose(tvec, -R.T @ C, atol=1e-12)
    rows[5] = "1 2 3"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"0000\.jpg\.camera:5: R is not a rotation"):
        read_strecha_camera(path)
    path.write_text("\n".join(rows[:6]) + "\n")
    with pytest.raises(ValueError, match="has 9 lines"):
        read_strecha_camera(path)


def test_strecha_shared_scene_is_consistent():
    from conftest import shared_path

    folder = shared_path("data", "strecha", "fountain-P11", "gt_dense_cameras")
    cameras = sorted(folder.glob("*.camera"))
    assert len(cameras) == 11
    centres = []
    for path in cameras:
        camera, pose = read_strecha_camera(path)
        assert camera.model == "PINHOLE" and (camera.width, camera.height) == (1536, 1024)
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-4)
        centres.append(pose[:3, 3])
    # The cameras circle the fountain a few metres away, all looking at roughly the same point.
    spread = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert 0.3 < np.median(spread) < 5.0


def test_cameras_txt(tmp_path):
    path = tmp_path / "cameras.txt"
    path.write_text("# comment\n1 PINHOLE 640 480 500 500 320 240\n2 SIMPLE_RADIAL 100 80 90 50 40 0.01\n")
    cameras = read_cameras_txt(path)
    assert cameras[1].model == "PINHOLE" and cameras[2].params[-1] == 0.01
    path.write_text("1 PINHOLE 640 480 500 500 320\n")
    with pytest.raises(ValueError, match=r"cameras\.txt:1: camera model PINHOLE takes 4 parameters"):
        read_cameras_txt(path)
    path.write_text("1 PINHOLE 640 x 500 500 320 240\n")
    with pytest.raises(ValueError, match=r"cameras\.txt:1: malformed"):
        read_cameras_txt(path)
