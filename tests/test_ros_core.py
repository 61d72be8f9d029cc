"""The ROS-free core of the ROS node: latest-frame slot and worker, conversions, REP 105 frames, options."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from hierloc.cli.main import build_parser
from hierloc.cli.ros import split_ros_args
from hierloc.maps.poses import invert_pose, make_pose, pose_from_xy_yaw, qvec_to_rotmat, yaw_of
from hierloc.ros.core import (
    CovarianceModel,
    Frame,
    LatestFrameSlot,
    LiveConfig,
    LiveLocalizer,
    NodeOptions,
    OdometryBuffer,
    StreamWorker,
    base_in_map,
    camera_from_camera_info,
    camera_from_intrinsics,
    covariance_from_inliers,
    image_from_fields,
    map_to_odom,
    pose_from_position_quaternion,
    position_quaternion,
    resolve_options,
    transform_from_values,
)


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return make_pose(qvec_to_rotmat(q), rng.normal(size=3) * 5)


# --------------------------------------------------------------------------- slot and worker


def test_slot_keeps_only_the_latest_frame_and_counts_the_dropped():
    slot = LatestFrameSlot()
    assert slot.take(timeout=0.01) is None
    assert [slot.put(Frame(i, float(i))) for i in range(3)] == [False, True, True]
    assert (slot.received, slot.dropped, slot.pending) == (3, 2, 1)
    assert slot.take().data == 2 and slot.pending == 0
    waiter = []
    thread = threading.Thread(target=lambda: waiter.append(slot.take()))
    thread.start()
    slot.close()
    thread.join(2)
    assert waiter == [None] and not slot.put(Frame(9, 9.0))


class SlowTracker:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.seen = seconds, []

    def track(self, image, camera=None, name="frame"):
        time.sleep(self.seconds)
        if isinstance(image, str):
            raise ValueError("bad frame")
        self.seen.append(name)
        return SimpleNamespace(success=True, name=name)


def test_worker_never_blocks_the_callback_and_never_builds_a_backlog():
    tracker = SlowTracker(0.15)
    results, last = [], threading.Event()
    worker = StreamWorker(tracker, lambda frame, result: (results.append(frame.name),
                                                          frame.name == "f29" and last.set())).start()
    submit_times, t_start = [], time.perf_counter()
    for i in range(30):  # 30 frames at 100 Hz against a 0.15 s localization
        t0 = time.perf_counter()
        worker.submit(Frame(np.zeros((4, 4), np.uint8), i * 0.01, name=f"f{i}"))
        submit_times.append(time.perf_counter() - t0)
        time.sleep(0.01)
    elapsed = time.perf_counter() - t_start
    assert last.wait(5), results  # the latest frame is always localized
    assert worker.stop(2)
    stats = worker.stats
    assert max(submit_times) < 0.05  # the callback returns at once (0.15 s would mean it waited for the tracker)
    assert stats.received == 30 and stats.processed == len(results) == len(tracker.seen) <= 2 + elapsed / 0.15
    assert stats.processed + stats.dropped == 30 and stats.localized == stats.processed
    assert results == sorted(results, key=lambda n: int(n[1:]))  # in order, never an old frame after a new one
    assert "30 frames received" in stats.summary()


def test_a_failing_frame_is_counted_and_the_worker_goes_on():
    errors, results = [], []
    worker = StreamWorker(SlowTracker(0.0), lambda frame, result: results.append(frame.name),
                          on_error=lambda frame, error: errors.append((frame.name, str(error)))).start()
    worker.submit(Frame("not pixels", 0.0, name="bad"))
    deadline = time.monotonic() + 5
    while worker.stats.processed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.submit(Frame(np.zeros((4, 4), np.uint8), 1.0, name="good"))
    while worker.stats.processed < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop(2)
    assert errors == [("bad", "bad frame")] and results == ["good"]
    assert (worker.stats.errors, worker.stats.localized) == (1, 1)


def test_worker_rescales_a_camera_of_another_size():
    seen = []

    class Recorder:
        def track(self, image, camera=None, name="frame"):
            seen.append(camera)
            return SimpleNamespace(success=False)

    done = threading.Event()
    worker = StreamWorker(Recorder(), lambda frame, result: done.set()).start()
    camera = camera_from_intrinsics([200, 0, 79.5, 0, 200, 59.5, 0, 0, 1], 160, 120)
    worker.submit(Frame(np.zeros((240, 320, 3), np.uint8), 0.0, camera))
    assert done.wait(5)
    worker.stop(2)
    assert (seen[0].width, seen[0].height) == (320, 240)
    np.testing.assert_allclose(seen[0].params, [400, 400, 160, 120])


# --------------------------------------------------------------------------- conversions


def image_fields(image: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> dict:
    pixels = image.astype(image.dtype.newbyteorder(">" if big_endian else "<"))
    rows = pixels.reshape(image.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], axis=1)
    return dict(data=padded.tobytes(), width=image.shape[1], height=image.shape[0], step=padded.shape[1],
                encoding=encoding, is_bigendian=big_endian)


@pytest.mark.parametrize("pad", [0, 3])
def test_image_fields_to_pixels(pad):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (5, 7, 3), np.uint8)
    np.testing.assert_array_equal(image_from_fields(**image_fields(rgb, "rgb8", pad)), rgb)
    np.testing.assert_array_equal(image_from_fields(**image_fields(rgb[:, :, ::-1].copy(), "bgr8", pad)), rgb)
    mono = rgb[:, :, 0].copy()
    np.testing.assert_array_equal(image_from_fields(**image_fields(mono, "mono8", pad)), mono)
    deep = rng.integers(0, 65535, (5, 7), np.uint16)
    for big_endian in (False, True):
        out = image_from_fields(**image_fields(deep, "mono16", pad, big_endian))
        assert out.dtype == np.uint16 and out.dtype.isnative
        np.testing.assert_array_equal(out, deep)
    with pytest.raises(ValueError, match="encoding"):
        image_from_fields(**image_fields(mono, "yuv422", pad))
    with pytest.raises(ValueError, match="bytes"):
        image_from_fields(**{**image_fields(rgb, "rgb8", pad), "height": 9})


def test_camera_info_to_camera():
    K = [256.0, 0, 159.5, 0, 257.0, 119.5, 0, 0, 1]
    camera = camera_from_intrinsics(K, 320, 240)
    assert (camera.model, camera.width, camera.height) == ("PINHOLE", 320, 240)
    np.testing.assert_allclose(camera.params, [256, 257, 160, 120])  # ROS pixel centres -> COLMAP's (+0.5)
    ros1 = SimpleNamespace(K=K, D=[0.1, 0.01, 0, 0, 0], distortion_model="plumb_bob", width=320, height=240)
    assert camera_from_camera_info(ros1).model == "OPENCV"
    ros2 = SimpleNamespace(k=K, d=[], distortion_model="", width=320, height=240)
    np.testing.assert_allclose(camera_from_camera_info(ros2).params, camera.params)
    assert camera_from_intrinsics([0.0] * 9, 320, 240) is None  # ROS: K = 0 means uncalibrated


def test_pose_conversions_and_covariance():
    rng = np.random.default_rng(1)
    T = random_pose(rng)
    position, quaternion = position_quaternion(T)
    assert quaternion[3] >= 0 and abs(np.linalg.norm(quaternion) - 1) < 1e-12
    np.testing.assert_allclose(pose_from_position_quaternion(position, quaternion), T, atol=1e-12)
    np.testing.assert_allclose(transform_from_values(" ".join(map(str, [*position, *quaternion]))), T, atol=1e-9)
    np.testing.assert_allclose(transform_from_values(list(T.reshape(-1))), T)
    np.testing.assert_array_equal(transform_from_values(""), np.eye(4))
    with pytest.raises(ValueError, match="7 numbers"):
        transform_from_values("1 2 3")
    with pytest.raises(ValueError, match="rigid"):
        transform_from_values([2.0] * 16)
    few, many = covariance_from_inliers(25), covariance_from_inliers(400)
    assert few.shape == (6, 6) and np.all(np.diag(few) > np.diag(many)) and np.allclose(few, np.diag(np.diag(few)))
    np.testing.assert_allclose(np.sqrt(np.diag(CovarianceModel().covariance(100))[[0, 3]]), [0.05, 0.02])


# --------------------------------------------------------------------------- REP 105


def test_map_to_odom_from_a_camera_pose_with_an_extrinsic():
    rng = np.random.default_rng(2)
    T_map_odom, T_odom_base, T_base_cam = random_pose(rng), random_pose(rng), random_pose(rng)
    T_map_base = T_map_odom @ T_odom_base
    T_map_cam = T_map_base @ T_base_cam
    np.testing.assert_allclose(base_in_map(T_map_cam, T_base_cam), T_map_base, atol=1e-9)
    np.testing.assert_allclose(map_to_odom(T_map_base, T_odom_base), T_map_odom, atol=1e-9)

    live = LiveLocalizer(tracker=None, config=LiveConfig(T_base_cam=T_base_cam))
    result = SimpleNamespace(success=True, T_cam_world=invert_pose(T_map_cam), num_inliers=100,
                             retrieval_path="tracking")
    estimate = live.estimate(result, 10.0)
    assert estimate.T_map_odom is None  # no odometry yet
    np.testing.assert_allclose(estimate.T_map_base, T_map_base, atol=1e-9)
    np.testing.assert_allclose(pose_from_position_quaternion(estimate.position, estimate.quaternion_xyzw),
                               T_map_base, atol=1e-9)
    live.odometry.add(10.0, T_odom_base)
    np.testing.assert_allclose(live.estimate(result, 10.0).T_map_odom, T_map_odom, atol=1e-9)
    assert live.estimate(SimpleNamespace(success=False, T_cam_world=None), 10.0) is None


def test_odometry_buffer_interpolates_the_image_time():
    odometry = OdometryBuffer(max_age=10.0)
    odometry.add(1.0, pose_from_xy_yaw(1.0, 0.0, 0.2))
    odometry.add(0.0, pose_from_xy_yaw(0.0, 0.0, 0.0))  # out of order
    odometry.add(3.0, pose_from_xy_yaw(3.0, 0.0, 0.0))
    middle = odometry.lookup(0.25)
    np.testing.assert_allclose(middle[:3, 3], [0.25, 0, 0], atol=1e-12)
    assert abs(yaw_of(middle) - 0.05) < 1e-9
    assert odometry.lookup(2.0, max_gap=1.0) is None  # 2 s between the poses around it, none within 0.1 s
    np.testing.assert_allclose(odometry.lookup(3.05)[:3, 3], [3, 0, 0])  # the nearest within tolerance
    assert odometry.lookup(3.5) is None and odometry.lookup(-1.0) is None
    odometry.add(20.0, np.eye(4))
    assert len(odometry) == 1  # older than max_age: forgotten


# --------------------------------------------------------------------------- options and the command line


def test_options_flags_over_parameters_over_defaults():
    parameters = {"map": "/maps/a", "min_inliers": "30", "tracking": "false", "camera_to_base": [0, 0, 1, 0, 0, 0, 1],
                  "image_topic": "/param/image"}
    options = resolve_options({"image_topic": "/flag/image", "threads": None},
                              lambda name, default: parameters.get(name, default))
    assert options.image_topic == "/flag/image" and options.map == "/maps/a" and options.min_inliers == 30
    assert options.tracking is False and options.pose_topic == NodeOptions.pose_topic
    np.testing.assert_allclose(transform_from_values(options.camera_to_base)[:3, 3], [0, 0, 1])
    with pytest.raises(ValueError, match="no map"):
        resolve_options({}, lambda name, default: default)
    with pytest.raises(ValueError, match="min_inliers"):
        resolve_options({"map": "m", "min_inliers": "many"}, lambda name, default: default)


def test_cli_takes_ros_arguments_anywhere():
    parser = build_parser()
    args, unknown = parser.parse_known_args(["ros", "maps/a", "--image-topic", "/cam", "image:=/x", "_threads:=2"])
    args.ros_args = [*args.ros_args, *unknown]
    assert split_ros_args(args) == ("maps/a", ["image:=/x", "_threads:=2"]) and args.image_topic == "/cam"
    args = parser.parse_args(["ros", "_map:=maps/b", "__name:=loc"])
    assert split_ros_args(args) == (None, ["_map:=maps/b", "__name:=loc"]) and args.image_topic is None
    assert args.tracking is None and parser.parse_args(["ros", "m", "--no-tracking"]).tracking is False


def test_cli_without_rospy_says_what_to_install(tmp_path):
    code = ("import sys, hierloc.ros.node as node; node.DEBIAN_DIST_PACKAGES = '/nonexistent'; "
            "from hierloc.cli.main import main; sys.exit(main(['ros', 'map']))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    if "no ROS master" in run.stderr:
        pytest.skip("rospy is importable from elsewhere than Debian's folder")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert "apt-get install python3-rospy" in lines[0] and "ros-core" in lines[0]
