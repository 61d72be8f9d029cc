"""The fuzz harness on the readers (bench/fuzz.py), and the validation that makes its cases end cleanly."""

from __future__ import annotations

import importlib.util
import json
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from hierloc.maps.poses import read_kitti, read_pose_csv, read_pose_file, read_strecha_camera, read_tum
from hierloc.maps.readers.colmap_binary import check_image_name, load_colmap_reconstruction, validate_colmap_model
from hierloc.utils.encoded_images import ImageTooLargeError
from hierloc.utils.images import ImageReadError, read_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fuzzing import mutators  # noqa: E402

# Cases per target module: the map readers are this file's subject; the other modules get a smoke run.
MODULE_CASES = {"maps": 150, "indexes": 50, "landmarks": 50}


@pytest.mark.parametrize("module", list(MODULE_CASES))
def test_fuzzing_ends_in_clean_errors_or_plausible_results(module, tmp_path):
    if importlib.util.find_spec(f"bench.fuzzing.{module}") is None:
        pytest.skip(f"bench/fuzzing/{module}.py is not in this checkout")
    report_path = tmp_path / "fuzz.json"
    # A fresh process: the harness forks its cases from a process that imported hierloc with one thread,
    # which a pytest process (threads set by conftest, torch pools started) is not.
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--cases", str(MODULE_CASES[module]), "--seed", "7",
         "--jobs", "2", "--targets", module, "--timeout", "30", "--json", str(report_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert all(outcome == "accepted" for outcome in report["seed_outcomes"].values()), report["seed_outcomes"]
    totals = {name: sum(row[name] for row in report["targets"].values()) for name in report["classes"]}
    assert sum(totals.values()) == MODULE_CASES[module]
    bad = {name: totals[name] for name in report["non_clean"] if totals[name]}
    assert not bad, (bad, [(f["replay"], f["mutator"], f["stderr"][-1:]) for f in report["findings"][:10]])
    assert totals["clean-error"] > 0


def test_mutators_replay_from_their_seed():
    data = bytes(range(256)) * 4
    for mutator in (*mutators.BYTE_MUTATORS, *mutators.CANARY_MUTATORS):
        assert mutator(data, random.Random(5)) == mutator(data, random.Random(5)), mutator.__name__
    assert mutators.truncate(data, random.Random(1)) != data and mutators.empty(data, random.Random(1)) == b""


# --------------------------------------------------------------------------- COLMAP validation


@pytest.fixture
def colmap_model(tmp_path) -> Path:
    """A valid binary model: one camera, three images with two 2-D points each, one 3-D point seen twice."""
    import pycolmap

    model = pycolmap.Reconstruction()
    model.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=64, height=48,
                                                      params=[50, 50, 32, 24], camera_id=1))
    for image_id in (1, 2, 3):
        points = [pycolmap.Point2D(np.array([1.0 * image_id, 2.0])), pycolmap.Point2D(np.array([3.0, 4.0]))]
        image = pycolmap.Image(name=f"day/{image_id:06d}.png", camera_id=1, image_id=image_id, points2D=points)
        model.add_image_with_trivial_frame(image, pycolmap.Rigid3d())
    track = pycolmap.Track()
    track.add_element(1, 0)
    track.add_element(2, 1)
    model.add_point3D(np.array([1.0, 2.0, 3.0]), track, np.array([255, 0, 0], dtype=np.uint8))
    folder = tmp_path / "sparse"
    folder.mkdir()
    model.write_binary(str(folder))
    return folder


def test_a_valid_binary_model_passes_and_loads(colmap_model):
    summary = validate_colmap_model(colmap_model)
    assert summary.format == "binary" and summary.image_points2d == {1: 2, 2: 2, 3: 2} and len(summary.point_ids) == 1
    assert load_colmap_reconstruction(colmap_model).num_points3D() == 1


@pytest.mark.parametrize("damage, message", [
    (lambda data: b"", "points3D.bin: truncated"),
    (lambda data: struct.pack("<Q", 10**12) + data[8:], "declares 1000000000000 3-D points"),
    (lambda data: struct.pack("<Q", (1 << 64) - 1) + data[8:], "3-D points but only"),
    (lambda data: data[:-3], "points3D.bin: truncated"),
    (lambda data: data + b"\x00" * 5, "bytes after the last record"),
    (lambda data: data[:32] + struct.pack("<d", float("nan")) + data[40:], "non-finite"),
])
def test_a_damaged_points3d_bin_is_one_value_error(colmap_model, damage, message):
    path = colmap_model / "points3D.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        load_colmap_reconstruction(colmap_model)


def test_damaged_images_frames_and_names_are_refused(colmap_model):
    images = colmap_model / "images.bin"
    valid = images.read_bytes()
    images.write_bytes(valid.replace(b"day/000002.png", b"../outside/x.p"))
    with pytest.raises(ValueError, match="images.bin: image 2: image name '../outside/x.p' points outside"):
        validate_colmap_model(colmap_model)
    images.write_bytes(valid.replace(b"day/000002.png", b"day/000001.png"))
    with pytest.raises(ValueError, match="the same name"):
        validate_colmap_model(colmap_model)
    images.write_bytes(valid)
    frames = colmap_model / "frames.bin"
    frames.write_bytes(frames.read_bytes()[:-7])
    with pytest.raises(ValueError, match="frames.bin: truncated"):
        validate_colmap_model(colmap_model)
    frames.unlink()
    with pytest.raises(ValueError, match="come together"):
        validate_colmap_model(colmap_model)


def test_text_models_are_checked_line_by_line(colmap_model, tmp_path):
    import pycolmap

    text = tmp_path / "text"
    text.mkdir()
    pycolmap.Reconstruction(str(colmap_model)).write_text(str(text))
    assert validate_colmap_model(text).format == "text"
    frames = text / "frames.txt"
    frames.write_text(frames.read_text().replace(" 1 CAMERA 1 1", " 1000000 CAMERA 1 1", 1))
    with pytest.raises(ValueError, match=r"frames.txt:\d+: "):
        validate_colmap_model(text)


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "a/../../x.png", "a\x00b.png", "", "C:\\x.png"])
def test_image_names_stay_inside_the_image_folder(name):
    with pytest.raises(ValueError, match="images.bin"):
        check_image_name(name, "images.bin")
    check_image_name("seq1/sub/0001.png", "images.bin")


# --------------------------------------------------------------------------- pose files


def test_kitti_matrices_must_be_rotations(tmp_path):
    path = tmp_path / "poses.txt"
    identity = "1 0 0 0 0 1 0 0 0 0 1 0"
    path.write_text(f"{identity}\n2 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(ValueError, match=r"poses.txt:2: the rotation part is not orthonormal"):
        read_kitti(path)
    path.write_text(f"{identity}\n-1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(ValueError, match=r"poses.txt:2: .*reflection"):
        read_kitti(path)
    path.write_text(f"{identity}\n1 0 0 nan 0 1 0 0 0 0 1 0\n")
    with pytest.raises(ValueError, match=r"poses.txt:2: non-finite"):
        read_kitti(path)
    path.write_text(f"{identity}\n1 0 0 0 0 0.99999999 0 0 0 0 1 0\n")
    assert len(read_kitti(path)) == 2  # printing precision is not a defect


def test_pose_files_refuse_duplicates_huge_fields_and_non_finite_values(tmp_path):
    tum = tmp_path / "tum.txt"
    tum.write_text("0 0 0 0 0 0 0 1\n1 0 0 0 0 0 0 1\n1 5 0 0 0 0 0 1\n")
    with pytest.raises(ValueError, match=r"tum.txt:3: duplicate timestamp"):
        read_tum(tum)
    tum.write_text("0 0 0 inf 0 0 0 1\n")
    with pytest.raises(ValueError, match=r"tum.txt:1: non-finite"):
        read_tum(tum)
    csv_file = tmp_path / "poses.csv"
    csv_file.write_text("name,x,y,yaw\na.png,0,0,0\nb.png,1,0,0\na.png,2,0,0\n")
    with pytest.raises(ValueError, match=r"poses.csv:4: duplicate image name 'a.png'"):
        read_pose_csv(csv_file)
    csv_file.write_text("name,x,y,yaw\n" + '"' + "x" * 200_000 + '",0,0,0\n')
    with pytest.raises(ValueError, match=r"poses.csv:2: line of 200008 characters"):
        read_pose_file(csv_file)
    csv_file.write_text('name,x,y,yaw\n"a.png,0,0,0\n')
    with pytest.raises(ValueError, match=r"poses.csv:2: "):
        read_pose_csv(csv_file)


def test_strecha_cameras_need_a_rotation_and_a_sane_size(tmp_path):
    path = tmp_path / "0000.jpg.camera"
    rows = ["50 0 32", "0 50 24", "0 0 1", "0 0 0", "1 0 0", "0 1 0", "0 0 1", "0 0 0"]
    path.write_text("\n".join([*rows, "64 48"]) + "\n")
    camera, _ = read_strecha_camera(path)
    assert (camera.width, camera.height) == (64, 48)
    path.write_text("\n".join([*rows, "1e12 1e12"]) + "\n")
    with pytest.raises(ValueError, match=r"0000.jpg.camera:9: image size"):
        read_strecha_camera(path)
    path.write_text("\n".join([*rows[:4], "2 0 0", *rows[5:], "64 48"]) + "\n")
    with pytest.raises(ValueError, match=r"0000.jpg.camera:5: R is not a rotation"):
        read_strecha_camera(path)


# --------------------------------------------------------------------------- images


def _png_declaring(width: int, height: int) -> bytes:
    import cv2

    data = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    ihdr = data[12:16] + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def test_images_declaring_too_many_pixels_are_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(30000, 30000))
    with pytest.raises(ImageTooLargeError, match=r"bomb.png: PNG of 30000x30000 pixels exceeds"):
        read_image(bomb)
    broken = tmp_path / "broken.png"
    broken.write_bytes(_png_declaring(4, 4)[:40])
    with pytest.raises(ImageReadError, match="broken.png: "):
        read_image(broken)


# --------------------------------------------------------------------------- outcome classes


def _classified(tmp_path, stderr: str, status: int | None, hung: bool = False, canary: bool = False) -> str:
    from bench.fuzzing.runner import Case, classify
    from bench.fuzzing.target import FuzzTarget

    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    (folder / ".stderr").write_text(stderr)
    (folder / ".stdout").write_text("")
    (folder / ".canary").unlink(missing_ok=True)
    if canary:
        (folder / ".canary").touch()
    target = FuzzTarget("t", lambda f: ["x"], lambda f: [])
    case = Case(target, 1, folder, "sub/poses.txt", "bit_flips")
    return classify(case, status, hung, 0.1).outcome


def test_outcomes_are_classified_from_status_and_stderr(tmp_path):
    exit_1, exit_0, killed = 1 << 8, 0, 9  # os.waitpid statuses: exit codes in the high byte, signals low
    clean = "WARNING: something\nstep: 100%|####| 3/3\nhierloc index: error: sub/poses.txt:3: bad\n"
    assert _classified(tmp_path, clean, exit_1) == "clean-error"
    assert _classified(tmp_path, "some library text\nhierloc index: error: x\n", exit_1) == "unclear-error"
    assert _classified(tmp_path, "Traceback (most recent call last):\nKeyError: 1\n", exit_1) == "traceback"
    assert _classified(tmp_path, "Traceback (most recent call last):\nMemoryError\n", exit_1) == "crash"
    assert _classified(tmp_path, "", killed) == "crash"
    assert _classified(tmp_path, "", None, hung=True) == "hang"
    assert _classified(tmp_path, "", exit_0) == "accepted"
    assert _classified(tmp_path, "", exit_0, canary=True) == "code-executed"
