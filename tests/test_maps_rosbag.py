"""ROS bag reader on tiny ROS1 and ROS2 bags written with rosbags."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from hierloc.maps import detect_map_kind, load_map, read_rosbag
from hierloc.maps.poses import qvec_to_rotmat
from hierloc.maps.readers.rosbag import decode_image_message

T0 = 1_700_000_000  # seconds


def make_image(k: int, width: int = 16, height: int = 12) -> np.ndarray:
    """RGB test image whose pixels encode the frame number."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 10 * k
    image[..., 1] = np.arange(width, dtype=np.uint8)[None, :] * 3
    image[..., 2] = 200
    return image


def header(ts, store: Stores, seconds: float, frame: str = "cam"):
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    stamp = Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))
    return (Header(seq=0, stamp=stamp, frame_id=frame) if store == Stores.ROS1_NOETIC
            else Header(stamp=stamp, frame_id=frame))


def raw_image_msg(ts, store, seconds, image: np.ndarray, encoding: str, pad: int = 0):
    if encoding == "bgr8":
        data = image[:, :, ::-1]
    elif encoding == "mono8":
        data = image[:, :, 0]
    elif encoding == "mono16":
        data = image[:, :, 0].astype(">u2") * 257  # big-endian on purpose
    else:
        data = image
    data = np.ascontiguousarray(data)
    row = data.reshape(data.shape[0], -1).view(np.uint8)
    rows = np.concatenate([row, np.zeros((row.shape[0], pad), np.uint8)], axis=1)  # padded rows (step > width)
    return ts.types["sensor_msgs/msg/Image"](
        header=header(ts, store, seconds), height=image.shape[0], width=image.shape[1], encoding=encoding,
        is_bigendian=int(encoding == "mono16"), step=rows.shape[1], data=rows.reshape(-1),
    )


def compressed_msg(ts, store, seconds, image: np.ndarray):
    ok, encoded = cv2.imencode(".png", image[:, :, ::-1])
    assert ok
    return ts.types["sensor_msgs/msg/CompressedImage"](header=header(ts, store, seconds), format="png",
                                                       data=encoded.reshape(-1))


def pose_msgs(ts, store, seconds, x: float):
    Point, Quaternion = ts.types["geometry_msgs/msg/Point"], ts.types["geometry_msgs/msg/Quaternion"]
    Pose = ts.types["geometry_msgs/msg/Pose"]
    pose = Pose(position=Point(x=x, y=1.0, z=2.0), orientation=Quaternion(x=0.0, y=0.0, z=np.sqrt(0.5), w=np.sqrt(0.5)))
    return ts.types["geometry_msgs/msg/PoseStamped"](header=header(ts, store, seconds, "map"), pose=pose)


def odometry_msg(ts, store, seconds, x: float):
    pose = pose_msgs(ts, store, seconds, x).pose
    PoseWithCovariance = ts.types["geometry_msgs/msg/PoseWithCovariance"]
    TwistWithCovariance = ts.types["geometry_msgs/msg/TwistWithCovariance"]
    Twist, Vector3 = ts.types["geometry_msgs/msg/Twist"], ts.types["geometry_msgs/msg/Vector3"]
    zero = Vector3(x=0.0, y=0.0, z=0.0)
    return ts.types["nav_msgs/msg/Odometry"](
        header=header(ts, store, seconds, "map"), child_frame_id="base",
        pose=PoseWithCovariance(pose=pose, covariance=np.zeros(36)),
        twist=TwistWithCovariance(twist=Twist(linear=zero, angular=zero), covariance=np.zeros(36)),
    )


def transform_msg(ts, store, seconds, x: float):
    Vector3, Quaternion = ts.types["geometry_msgs/msg/Vector3"], ts.types["geometry_msgs/msg/Quaternion"]
    Transform = ts.types["geometry_msgs/msg/Transform"]
    transform = Transform(translation=Vector3(x=x, y=1.0, z=2.0),
                          rotation=Quaternion(x=0.0, y=0.0, z=np.sqrt(0.5), w=np.sqrt(0.5)))
    return ts.types["geometry_msgs/msg/TransformStamped"](header=header(ts, store, seconds, "map"),
                                                          child_frame_id="cam", transform=transform)


def camera_info_msg(ts, store, seconds):
    fields = dict(
        header=header(ts, store, seconds), height=12, width=16, distortion_model="plumb_bob",
        binning_x=0, binning_y=0,
        roi=ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )
    values = dict(d=np.array([0.1, -0.01, 0.0, 0.0, 0.0]), k=np.array([20.0, 0, 7.5, 0, 21.0, 5.5, 0, 0, 1]),
                  r=np.eye(3).reshape(-1), p=np.zeros(12))
    if store == Stores.ROS1_NOETIC:
        values = {k.upper(): v for k, v in values.items()}
    return ts.types["sensor_msgs/msg/CameraInfo"](**fields, **values)


def write_bag(path: Path, store: Stores, messages: list[tuple[str, float, object]]) -> None:
    """Write (topic, time, message) tuples as a ROS1 bag or a ROS2 bag folder."""
    ts = get_typestore(store)
    if store == Stores.ROS1_NOETIC:
        from rosbags.rosbag1 import Writer

        writer, serialize = Writer(path), ts.serialize_ros1
    else:
        from rosbags.rosbag2 import Writer

        writer, serialize = Writer(path, version=9), ts.serialize_cdr
    with writer:
        connections = {}
        for topic, seconds, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=ts)
            writer.write(connections[topic], int(seconds * 1e9), serialize(msg, msg.__msgtype__))


def test_ros1_bag_raw_images_and_pose_stamped(tmp_path):
    store = Stores.ROS1_NOETIC
    ts = get_typestore(store)
    messages = []
    for k in range(4):
        t = T0 + k * 0.5
        messages.append(("/cam/image_raw", t, raw_image_msg(ts, store, t, make_image(k), "bgr8", pad=4)))
        messages.append(("/cam/mono", t, raw_image_msg(ts, store, t, make_image(k), "mono8")))
        messages.append(("/cam/mono16", t, raw_image_msg(ts, store, t, make_image(k), "mono16", pad=2)))
    for k in range(12):  # poses at 6 Hz, offset from the images
        messages.append(("/pose", T0 + k / 6 + 0.01, pose_msgs(ts, store, T0 + k / 6 + 0.01, float(k))))
    messages.append(("/odom", T0, odometry_msg(ts, store, T0, 5.0)))
    messages.sort(key=lambda m: m[1])
    path = tmp_path / "run1.bag"
    write_bag(path, store, messages)

    assert detect_map_kind(path) == "rosbag"
    map_ = load_map(path, image_topic="/cam/image_raw", pose_topic="/pose", max_time_diff=0.05)
    assert map_.name == "run1" and list(map_.missions) == ["run1"]
    kfs = list(map_.keyframes())
    assert len(kfs) == 4 and [kf.index for kf in kfs] == [0, 1, 2, 3]
    for k, kf in enumerate(kfs):
        np.testing.assert_array_equal(kf.load_image(), make_image(k))
        assert kf.timestamp == pytest.approx(T0 + k * 0.5)
        assert kf.name == f"run1/{T0 + k * 0.5:.9f}.png"
        np.testing.assert_allclose(kf.pose[:3, 3], [3 * k, 1, 2])  # nearest pose: k / 6 * 6 = 3k
        np.testing.assert_allclose(kf.pose[:3, :3], qvec_to_rotmat([np.sqrt(0.5), 0, 0, np.sqrt(0.5)]), atol=1e-12)

    mono = read_rosbag(path, "/cam/mono")
    assert mono.missions["run1"].keyframes[2].load_image().shape == (12, 16)
    assert all(kf.pose is None for kf in mono.keyframes())
    mono16 = read_rosbag(path, "/cam/mono16")
    image16 = mono16.missions["run1"].keyframes[3].load_image()
    assert image16.dtype == np.uint16 and int(image16[0, 0]) == 30 * 257

    T_body_cam = np.eye(4)
    T_body_cam[:3, 3] = [1.0, 0.0, 0.5]  # camera 1 m ahead of and 0.5 m above the odometry frame
    odom = read_rosbag(path, "/cam/mono", pose_topic="/odom", max_time_diff=0.1, T_body_cam=T_body_cam)
    odom_kfs = list(odom.keyframes())
    np.testing.assert_allclose(odom_kfs[0].pose[:3, 3], [5, 2, 2.5])  # body yawed 90 degrees: ahead is +y
    assert all(kf.pose is None for kf in odom_kfs[1:])  # beyond max_time_diff


def test_ros2_bag_compressed_transform_camera_info_lazy(tmp_path):
    store = Stores.ROS2_HUMBLE
    ts = get_typestore(store)
    messages = [("/cam/info", T0, camera_info_msg(ts, store, T0))]
    for k in range(3):
        t = T0 + k * 0.1
        messages.append(("/cam/compressed", t, compressed_msg(ts, store, t, make_image(k))))
        messages.append(("/tf_cam", t + 0.002, transform_msg(ts, store, t + 0.002, float(k))))
    path = tmp_path / "ros2_run"
    write_bag(path, store, messages)

    assert detect_map_kind(path) == "rosbag"
    for lazy in (False, True):
        map_ = read_rosbag(path, "/cam/compressed", "/tf_cam", camera_info_topic="/cam/info", lazy=lazy)
        kfs = list(map_.keyframes())
        assert len(kfs) == 3
        assert (kfs[1].image is None) == lazy
        np.testing.assert_array_equal(kfs[1].load_image(), make_image(1))
        np.testing.assert_allclose([kf.pose[0, 3] for kf in kfs], [0, 1, 2])
        camera = kfs[0].camera
        assert camera.model == "OPENCV"
        np.testing.assert_allclose(camera.params, [20, 21, 8.0, 6.0, 0.1, -0.01, 0, 0])  # ROS centres + 0.5
    # A storage file inside the bag folder is accepted too.
    storage = next(p for p in path.iterdir() if p.suffix in (".db3", ".mcap"))
    assert len(load_map(storage, image_topic="/cam/compressed")) == 3


def test_rosbag_errors(tmp_path):
    store = Stores.ROS1_NOETIC
    ts = get_typestore(store)
    path = tmp_path / "small.bag"
    write_bag(path, store, [("/cam", T0, raw_image_msg(ts, store, T0, make_image(0), "rgb8")),
                            ("/pose", T0 + 5, pose_msgs(ts, store, T0 + 5, 0.0))])
    with pytest.raises(ValueError,
                       match=r"no image topic '/camera'; topics in the bag: /cam \(sensor_msgs/msg/Image\)"):
        read_rosbag(path, "/camera")
    with pytest.raises(ValueError, match="image topic '/pose' has type geometry_msgs/msg/PoseStamped"):
        read_rosbag(path, "/pose")
    with pytest.raises(ValueError, match="no pose on '/pose' within 0.1 s"):
        read_rosbag(path, "/cam", "/pose")
    with pytest.raises(FileNotFoundError, match="no such bag"):
        read_rosbag(tmp_path / "missing.bag", "/cam")
    (tmp_path / "broken.bag").write_bytes(b"not a bag at all")
    with pytest.raises(ValueError, match="broken.bag: cannot read the bag"):
        read_rosbag(tmp_path / "broken.bag", "/cam")


def test_decode_rejects_bad_messages():
    ts = get_typestore(Stores.ROS2_HUMBLE)
    msg = raw_image_msg(ts, Stores.ROS2_HUMBLE, T0, make_image(0), "rgb8")
    msg.encoding = "bayer_rggb8"
    with pytest.raises(ValueError, match="unsupported image encoding 'bayer_rggb8'"):
        decode_image_message(msg, "test")
    msg = raw_image_msg(ts, Stores.ROS2_HUMBLE, T0, make_image(0), "rgb8")
    msg.data = msg.data[:-10]
    with pytest.raises(ValueError, match="needs 576 bytes, got 566"):
        decode_image_message(msg, "test")
    bad = ts.types["sensor_msgs/msg/CompressedImage"](header=msg.header, format="jpeg", data=np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match="cannot decode the compressed image"):
        decode_image_message(bad, "test")
