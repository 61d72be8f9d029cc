"""Maps from ROS1 bags and ROS2 bag folders (via `rosbags`): one mission per bag.

Design note: by default every image is decoded into memory (`Keyframe.image`), which suits the
small bags used for maps and tests. With `lazy=True` only the message times are kept and each
`Keyframe.image_loader` re-opens the bag and reads its one message on demand, so a long recording
does not have to fit in memory.

Names are `<mission>/<stamp seconds>.png` (the name the frame gets when the map is written as an
image folder); times are the header stamps (the log times where a header stamp is zero). Poses
are associated to images by nearest time within `max_time_diff`. ROS intrinsics put pixel centres
at integer coordinates; they are shifted by +0.5 to hierloc's COLMAP convention.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hierloc.maps.poses import make_pose, nearest_in_time, qvec_to_rotmat
from hierloc.maps.types import Camera, Keyframe, Map, Mission

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = (
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/PoseWithCovarianceStamped",
    "nav_msgs/msg/Odometry",
    "geometry_msgs/msg/TransformStamped",
)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"

# encoding -> (dtype, channels, conversion to RGB or None)
_RAW_ENCODINGS: dict[str, tuple[str, int, int | None]] = {
    "mono8": ("u1", 1, None),
    "8uc1": ("u1", 1, None),
    "mono16": ("u2", 1, None),
    "16uc1": ("u2", 1, None),
    "rgb8": ("u1", 3, None),
    "8uc3": ("u1", 3, cv2.COLOR_BGR2RGB),
    "bgr8": ("u1", 3, cv2.COLOR_BGR2RGB),
    "rgba8": ("u1", 4, cv2.COLOR_RGBA2RGB),
    "bgra8": ("u1", 4, cv2.COLOR_BGRA2RGB),
    "rgb16": ("u2", 3, None),
    "bgr16": ("u2", 3, cv2.COLOR_BGR2RGB),
    "32fc1": ("f4", 1, None),
}


def is_rosbag(path: str | os.PathLike) -> bool:
    """Whether `path` is a ROS1 .bag file or a ROS2 bag folder (with metadata.yaml)."""
    path = Path(path)
    return (path.is_file() and path.suffix == ".bag") or (path.is_dir() and (path / "metadata.yaml").is_file())


def decode_image_message(msg, where: str = "image message") -> np.ndarray:
    """sensor_msgs Image or CompressedImage to HxW or HxWx3 RGB (8 or 16 bit; 32FC1 as float32)."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        image = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"{where}: cannot decode the compressed image (format {msg.format!r})")
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        return image
    encoding = msg.encoding.lower()
    if encoding not in _RAW_ENCODINGS:
        raise ValueError(f"{where}: unsupported image encoding {msg.encoding!r}; "
                         f"supported: {', '.join(_RAW_ENCODINGS)}")
    kind, channels, conversion = _RAW_ENCODINGS[encoding]
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if step < row_bytes or data.size < height * step:
        raise ValueError(
            f"{where}: {msg.encoding} image of {width}x{height} with step {step} needs {height * step} bytes, "
            f"got {data.size}"
        )
    # Rows may be padded to `step` bytes; drop the padding before viewing as pixels.
    rows = np.ascontiguousarray(data[: height * step].reshape(height, step)[:, :row_bytes])
    image = rows.view(dtype).reshape(height, width, channels).astype(dtype.newbyteorder("="))
    if conversion is not None:
        image = cv2.cvtColor(image, conversion)
    return image[:, :, 0] if image.shape[2] == 1 else image


def pose_from_message(msg) -> np.ndarray:
    """4x4 pose from PoseStamped, PoseWithCovarianceStamped, Odometry or TransformStamped."""
    if hasattr(msg, "transform"):
        t, q = msg.transform.translation, msg.transform.rotation
    else:
        pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
        t, q = pose.position, pose.orientation
    return make_pose(qvec_to_rotmat([q.w, q.x, q.y, q.z]), [t.x, t.y, t.z])


def camera_from_info(msg, where: str = "camera info") -> Camera:
    """sensor_msgs/CameraInfo to a Camera (plumb_bob, rational_polynomial, equidistant or none)."""
    K = np.asarray(getattr(msg, "k", getattr(msg, "K", None)), dtype=np.float64).reshape(3, 3)
    D = np.asarray(getattr(msg, "d", getattr(msg, "D", [])), dtype=np.float64).reshape(-1)
    fx, fy = K[0, 0], K[1, 1]
    cx, cy = K[0, 2] + 0.5, K[1, 2] + 0.5
    model = (msg.distortion_model or "").lower()
    w, h = int(msg.width), int(msg.height)
    if D.size == 0 or np.allclose(D, 0.0):
        return Camera.pinhole(fx, fy, cx, cy, w, h)
    if model in ("plumb_bob", "rational_polynomial"):
        d = np.zeros(8)
        d[: min(D.size, 8)] = D[:8]
        k1, k2, p1, p2, k3, k4, k5, k6 = d
        if not np.any(d[4:]):
            return Camera("OPENCV", w, h, [fx, fy, cx, cy, k1, k2, p1, p2])
        return Camera("FULL_OPENCV", w, h, [fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6])
    if model == "equidistant":
        d = np.zeros(4)
        d[: min(D.size, 4)] = D[:4]
        return Camera("OPENCV_FISHEYE", w, h, [fx, fy, cx, cy, *d])
    raise ValueError(f"{where}: unsupported distortion model {msg.distortion_model!r}")


def _stamp(msg, log_time_ns: int, use_header_stamp: bool) -> float:
    header = getattr(msg, "header", None)
    if use_header_stamp and header is not None:
        seconds = header.stamp.sec + header.stamp.nanosec * 1e-9
        if seconds > 0:
            return float(seconds)
    return log_time_ns * 1e-9


def _open(path: Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    # ROS2 bags may lack message definitions; ROS1 bags carry their own.
    return AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))


def _connections(reader, topic: str, allowed: tuple[str, ...], path: Path, role: str) -> list:
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        available = ", ".join(sorted(f"{c.topic} ({c.msgtype})" for c in reader.connections)) or "none"
        raise ValueError(f"{path}: no {role} topic {topic!r}; topics in the bag: {available}")
    bad = [c.msgtype for c in connections if c.msgtype not in allowed]
    if bad:
        raise ValueError(f"{path}: {role} topic {topic!r} has type {bad[0]}; supported: {', '.join(allowed)}")
    return connections


def _load_lazy_image(path: Path, topic: str, log_time_ns: int) -> np.ndarray:
    with _open(path) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        for connection, _, raw in reader.messages(connections=connections, start=log_time_ns, stop=log_time_ns + 1):
            return decode_image_message(reader.deserialize(raw, connection.msgtype), f"{path} {topic} @{log_time_ns}")
    raise ValueError(f"{path}: no message on {topic} at log time {log_time_ns} ns")


def read_rosbag(
    path: str | os.PathLike,
    image_topic: str,
    pose_topic: str | None = None,
    *,
    camera_info_topic: str | None = None,
    camera: Camera | None = None,
    max_time_diff: float = 0.1,
    T_body_cam: np.ndarray | None = None,
    lazy: bool = False,
    use_header_stamp: bool = True,
    name: str | None = None,
) -> Map:
    """Read images (and optionally poses and intrinsics) from a ROS1 .bag or ROS2 bag folder as a one-mission Map."""
    from rosbags.highlevel import AnyReaderError

    path = Path(path)
    if path.is_file() and path.suffix in (".db3", ".mcap") and (path.parent / "metadata.yaml").is_file():
        path = path.parent
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bag file or folder")
    if not is_rosbag(path):
        raise ValueError(f"{path}: not a ROS bag (expected a .bag file or a folder with metadata.yaml)")
    mission = name or (path.stem if path.is_file() else path.name)
    T_body_cam = None if T_body_cam is None else np.asarray(T_body_cam, dtype=np.float64).reshape(4, 4)

    frames: list[tuple[float, int, np.ndarray | None]] = []  # (stamp s, log time ns, image)
    pose_times: list[float] = []
    poses: list[np.ndarray] = []
    try:
        with _open(path) as reader:
            image_conns = _connections(reader, image_topic, IMAGE_TYPES, path, "image")
            pose_conns = _connections(reader, pose_topic, POSE_TYPES, path, "pose") if pose_topic else []
            info_conns = (_connections(reader, camera_info_topic, (CAMERA_INFO_TYPE,), path, "camera info")
                          if camera_info_topic else [])
            image_ids = {c.id for c in image_conns}
            total = sum(c.msgcount for c in image_conns + pose_conns + info_conns)
            messages = reader.messages(connections=image_conns + pose_conns + info_conns)
            for connection, log_time, raw in tqdm(messages, total=total, desc=f"reading {path.name}", unit="msg",
                                                  disable=None):
                msg = reader.deserialize(raw, connection.msgtype)
                if connection.id in image_ids:
                    # Lazy maps keep only the time; decoding (the costly part) happens on load_image.
                    image = None if lazy else decode_image_message(msg, f"{path} {image_topic} @{log_time}")
                    frames.append((_stamp(msg, log_time, use_header_stamp), log_time, image))
                elif connection.msgtype == CAMERA_INFO_TYPE:
                    if camera is None:
                        camera = camera_from_info(msg, f"{path} {camera_info_topic}")
                else:
                    pose_times.append(_stamp(msg, log_time, use_header_stamp))
                    poses.append(pose_from_message(msg))
    except AnyReaderError as error:
        raise ValueError(f"{path}: cannot read the bag: {error}") from error
    if not frames:
        raise ValueError(f"{path}: no messages on image topic {image_topic!r}")
    if pose_topic and not poses:
        raise ValueError(f"{path}: no messages on pose topic {pose_topic!r}")

    frames.sort(key=lambda f: (f[0], f[1]))
    times = np.array([f[0] for f in frames])
    matches = nearest_in_time(times, np.array(pose_times), max_time_diff) if poses else np.full(len(frames), -1)
    if poses and not np.any(matches >= 0):
        raise ValueError(
            f"{path}: no pose on {pose_topic!r} within {max_time_diff} s of any image on {image_topic!r} "
            f"(images {times.min():.3f}..{times.max():.3f} s, poses {min(pose_times):.3f}..{max(pose_times):.3f} s)"
        )
    if poses and np.any(matches < 0):
        logger.warning("%s: %d of %d images have no pose within %s s", path, int(np.sum(matches < 0)), len(frames),
                       max_time_diff)

    keyframes = []
    seen: dict[str, int] = {}
    for index, ((stamp, log_time, image), match) in enumerate(zip(frames, matches)):
        base = f"{mission}/{stamp:.9f}"
        count = seen.get(base, 0)
        seen[base] = count + 1
        image_name = f"{base}.png" if count == 0 else f"{base}_{count}.png"
        pose = None
        if match >= 0:
            pose = poses[match] @ T_body_cam if T_body_cam is not None else poses[match]
        loader = functools.partial(_load_lazy_image, path, image_topic, log_time) if lazy else None
        keyframes.append(
            Keyframe.create(image_name, mission, index, timestamp=stamp, pose=pose, camera=camera, image=image,
                            image_loader=loader)
        )
    return Map(mission, {mission: Mission(mission, keyframes)}, None)
