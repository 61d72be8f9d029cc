"""The ROS-free core of live localization: a latest-frame slot, a worker, message conversions, REP 105 frames.

Nothing here imports ROS. `hierloc.ros.node` (ROS 1, rospy) is a thin wrapper around it:

    core = LiveLocalizer(Tracker(Localizer.load(MAP, config)), LiveConfig(T_base_cam=...))
    worker = StreamWorker(core.tracker, on_result=publish, decode=image_from_message)
    worker.start()
    # image callback:       worker.submit(Frame(msg, stamp, camera_from_camera_info(info), context=msg.header))
    # odometry callback:    core.odometry.add(stamp, T_odom_base)
    # publish(frame, result): estimate = core.estimate(result, frame.stamp)
    #                         -> PoseWithCovarianceStamped(estimate.position, estimate.quaternion_xyzw,
    #                            estimate.covariance); estimate.T_map_odom -> a map->odom transform

The image callback never blocks and never builds a backlog: `StreamWorker.submit` puts the frame in a
`LatestFrameSlot` that holds at most one unprocessed frame (a newer frame replaces it, and the replaced
frame is counted as dropped), and one worker thread localizes whatever frame is latest when it is free.
A slow localization therefore costs frames, never latency or memory.

A ROS 2 node would wrap exactly the same objects: `rclpy.create_node`, `declare_parameter` for every entry
of `PARAMETERS` (the defaults of `NodeOptions`), `create_subscription` for `sensor_msgs/msg/Image`,
`sensor_msgs/msg/CameraInfo` and `nav_msgs/msg/Odometry` (a sensor-data QoS of depth 1: the slot already
keeps only the latest frame), `create_publisher` for `geometry_msgs/msg/PoseWithCovarianceStamped`, and a
`tf2_ros.TransformBroadcaster(node)` for map->odom. The conversions read both message spellings
(`K`/`D` in ROS 1, `k`/`d` in ROS 2; ROS 2 stamps are `sec` + `nanosec`, see `stamp_seconds`).

Frames (REP 105): the map's world frame is `map_frame`; odometry gives T_odom_base; the camera-to-base
extrinsic T_base_cam (identity by default) makes the published pose that of `base_frame`:
T_map_base = T_map_cam * inv(T_base_cam), and T_map_odom = T_map_base * inv(T_odom_base) with the
odometry of the image's timestamp (interpolated by `OdometryBuffer`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np

from ..maps.poses import invert_pose, make_pose, qvec_to_rotmat, rotmat_to_qvec
from ..maps.types import Camera

logger = logging.getLogger(__name__)

ROS1_DEBIAN_PACKAGES = ("python3-rospy", "python3-sensor-msgs", "python3-geometry-msgs", "python3-nav-msgs",
                        "python3-tf2-ros", "ros-core")
IMAGE_ENCODINGS = ("rgb8", "bgr8", "mono8", "mono16", "rgba8", "bgra8", "8uc1", "8uc3", "16uc1", "rgb16", "bgr16")


# --------------------------------------------------------------------------- options (ROS parameters)


@dataclass
class NodeOptions:
    """Everything a localization node is configured with: ROS parameters (`~name`) and `hierloc ros` flags."""

    map: str = ""  # map folder written by `hierloc map build` (or the demo's outputs/demo/map)
    image_topic: str = "/camera/image_raw"
    camera_info_topic: str = "/camera/camera_info"  # "": no CameraInfo, the localizer guesses the camera
    odom_topic: str = "/odom"  # nav_msgs/Odometry; "": no odometry, no map->odom transform
    pose_topic: str = "~pose"  # geometry_msgs/PoseWithCovarianceStamped in map_frame (~: the node's namespace)
    map_frame: str = "map"
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    min_inliers: int = 20  # fewer PnP inliers: no pose is published for the frame
    num_retrieved: int = 5  # keyframes from global retrieval (0: every map image)
    device: str = "cpu"
    threads: int = 0  # torch/OpenCV/faiss threads (0: the usable cores)
    camera_to_base: str = ""  # T_base_cam as "x y z qx qy qz qw" or 16 row-major numbers; "": identity
    odom_tolerance: float = 0.1  # seconds between an image and the nearest odometry used without interpolation
    transform_tolerance: float = 0.1  # map->odom is stamped this far past the image (as amcl does)
    tracking: bool = True  # localize around the previous pose while tracking holds (hierloc Tracker)
    warm_up: bool = True  # run the networks once on a blank frame before subscribing

    def validate(self) -> "NodeOptions":
        """Check the values (a ValueError names the first wrong one); returns self."""
        if not self.map:
            raise ValueError("no map: give MAP on the command line or the ~map parameter")
        if not self.image_topic:
            raise ValueError("image_topic must not be empty")
        for name in ("min_inliers", "num_retrieved", "threads"):
            if int(getattr(self, name)) < (1 if name == "min_inliers" else 0):
                raise ValueError(f"{name} must be {'positive' if name == 'min_inliers' else '>= 0'}")
        for name in ("odom_tolerance", "transform_tolerance"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0 seconds")
        for name in ("map_frame", "odom_frame", "base_frame"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        transform_from_values(self.camera_to_base)
        return self


PARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(NodeOptions))


def coerce_option(name: str, value: Any) -> Any:
    """A parameter value (from ROS or a flag) converted to the type of NodeOptions' default for `name`."""
    default = NodeOptions.__dataclass_fields__[name].default
    if value is None and isinstance(default, str):  # `_odom_topic:=` (an empty YAML value) means ""
        return ""
    if name == "camera_to_base" and isinstance(value, (list, tuple)):
        return " ".join(repr(float(v)) for v in value)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if value.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"parameter {name}: expected true or false, got {value!r}")
        return bool(value)
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {name}: expected {type(default).__name__}, got {value!r}") from None


def resolve_options(flags: dict[str, Any], parameter: Callable[[str, Any], Any]) -> NodeOptions:
    """Options from command-line flags (None: not given) over parameters (`parameter(name, default)`) over defaults."""
    values = {}
    for name in PARAMETERS:
        given = flags.get(name)
        default = NodeOptions.__dataclass_fields__[name].default
        values[name] = coerce_option(name, given if given is not None else parameter(name, default))
    return NodeOptions(**values).validate()


# --------------------------------------------------------------------------- the latest-frame slot and worker


@dataclass
class Frame:
    """One image of a stream: pixels or a message (decoded in the worker), its time, camera and a context."""

    data: Any  # np.ndarray pixels, or a message that `StreamWorker.decode` turns into pixels
    stamp: float  # seconds (the image header's stamp)
    camera: Camera | None = None
    name: str = "frame"
    context: Any = None  # handed back untouched with the result (a ROS header, a request id)
    received: float = field(default_factory=time.monotonic)


class LatestFrameSlot:
    """At most one unprocessed frame: `put` never blocks and replaces (drops) a frame nobody took yet."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, frame: Frame) -> bool:
        """Offer a frame; True when it replaced an unprocessed one (counted in `dropped`). Ignored once closed."""
        with self._condition:
            if self._closed:
                return False
            replaced = self._frame is not None
            self.dropped += int(replaced)
            self.received += 1
            self._frame = frame
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Frame | None:
        """The latest unprocessed frame, waiting up to `timeout` s (None: until one comes or the slot closes)."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        """Refuse new frames and wake a waiting `take` (a frame still waiting is dropped)."""
        with self._condition:
            self._closed = True
            if self._frame is not None:
                self.dropped += 1
                self._frame = None
            self._condition.notify_all()

    @property
    def pending(self) -> int:
        """Frames waiting: 0 or 1."""
        with self._condition:
            return int(self._frame is not None)


@dataclass
class StreamStats:
    """Counters of a stream; `dropped` frames were replaced by a newer one before the worker took them."""

    received: int = 0
    dropped: int = 0
    processed: int = 0
    localized: int = 0
    failed: int = 0
    errors: int = 0
    latency_s_sum: float = 0.0  # from arrival (`Frame.received`) to the localization result
    latency_s_max: float = 0.0
    localize_s_sum: float = 0.0

    def summary(self) -> str:
        """One line: the counts and mean times."""
        n = max(self.processed, 1)
        return (f"{self.received} frames received, {self.localized} localized, {self.failed} failed, "
                f"{self.errors} errors, {self.dropped} dropped by the latest-frame slot; mean localization "
                f"{1e3 * self.localize_s_sum / n:.0f} ms, mean latency {1e3 * self.latency_s_sum / n:.0f} ms "
                f"(max {1e3 * self.latency_s_max:.0f} ms)")


class StreamWorker:
    """One thread localizing the latest frame of a stream (`tracker.track(image, camera, name)`).

    `submit` is what a message callback calls: it returns at once. `on_result(frame, result)` runs on the
    worker thread for every processed frame (successes and failures); `on_error(frame, exception)` for a
    frame whose decoding or localization raised (the worker goes on with the next frame).
    """

    def __init__(self, tracker: Any, on_result: Callable[[Frame, Any], None],
                 decode: Callable[[Any], np.ndarray] | None = None,
                 on_error: Callable[[Frame, BaseException], None] | None = None) -> None:
        self.tracker = tracker
        self.on_result = on_result
        self.decode = decode
        self.on_error = on_error
        self.slot = LatestFrameSlot()
        self._stats = StreamStats()
        self._stats_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "StreamWorker":
        """Start the worker thread (a daemon); returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hierloc-stream-worker", daemon=True)
            self._thread.start()
        return self

    def submit(self, frame: Frame) -> bool:
        """Hand a frame to the worker without blocking; True when it replaced (dropped) an unprocessed frame."""
        return self.slot.put(frame)

    def stop(self, timeout: float | None = None) -> bool:
        """Refuse new frames, let the frame in progress finish; True when the thread ended within `timeout`."""
        self.slot.close()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the counters."""
        with self._stats_lock:
            snapshot = StreamStats(**vars(self._stats))
        snapshot.received, snapshot.dropped = self.slot.received, self.slot.dropped
        return snapshot

    def _run(self) -> None:
        while True:
            frame = self.slot.take()
            if frame is None:
                return
            t0 = time.monotonic()
            try:
                image = self.decode(frame.data) if self.decode is not None else frame.data
                camera = frame.camera
                if camera is not None and (camera.width, camera.height) != (image.shape[1], image.shape[0]):
                    logger.warning("%s: image of %dx%d, camera of %dx%d: the camera is rescaled", frame.name,
                                   image.shape[1], image.shape[0], camera.width, camera.height)
                    camera = camera.rescaled(image.shape[1], image.shape[0])
                result = self.tracker.track(image, camera, frame.name)
            except Exception as error:  # noqa: BLE001 - one bad frame must not stop the stream
                with self._stats_lock:
                    self._stats.processed += 1
                    self._stats.errors += 1
                logger.exception("frame %s (stamp %.3f) could not be localized", frame.name, frame.stamp)
                if self.on_error is not None:
                    self.on_error(frame, error)
                continue
            done = time.monotonic()
            with self._stats_lock:
                stats = self._stats
                stats.processed += 1
                stats.localized += int(bool(result.success))
                stats.failed += int(not result.success)
                stats.localize_s_sum += done - t0
                stats.latency_s_sum += done - frame.received
                stats.latency_s_max = max(stats.latency_s_max, done - frame.received)
            try:
                self.on_result(frame, result)
            except Exception:  # noqa: BLE001 - a failing publisher must not stop the stream
                logger.exception("handling the result of frame %s failed", frame.name)


class IndependentFrames:
    """A Tracker stand-in that localizes every frame on its own (global retrieval each time)."""

    def __init__(self, localizer: Any) -> None:
        self.localizer = localizer

    def track(self, image: np.ndarray, camera: Camera | None = None, name: str = "frame") -> Any:
        """`localizer.localize(image, camera, name)`."""
        return self.localizer.localize(image, camera, name)


def warm_up(localizer: Any, rounds: int = 2) -> None:
    """Run every stage on a noise frame of the map's camera size `rounds` times (tracing, lazy loading)."""
    camera = localizer.scene.images[0].camera
    image = np.random.default_rng(0).integers(0, 255, size=(camera.height, camera.width, 3), dtype=np.uint8)
    for _ in range(rounds):
        localizer.localize(image, camera, "warm-up")


# --------------------------------------------------------------------------- message conversions


def stamp_seconds(stamp: Any) -> float:
    """Seconds of a ROS 1 (`secs`, `nsecs`) or ROS 2 (`sec`, `nanosec`) time, or of a number."""
    if isinstance(stamp, (int, float)):
        return float(stamp)
    if hasattr(stamp, "secs"):
        return float(stamp.secs) + 1e-9 * float(stamp.nsecs)
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def image_from_fields(data: bytes | bytearray | memoryview, width: int, height: int, step: int, encoding: str,
                      is_bigendian: bool = False) -> np.ndarray:
    """sensor_msgs/Image fields to pixels: HxWx3 RGB for colour encodings (bgr8 converted), HxW for mono8/mono16."""
    from ..maps.readers.rosbag import decode_image_message

    message = SimpleNamespace(data=data, width=width, height=height, step=step, encoding=encoding,
                              is_bigendian=is_bigendian)
    return decode_image_message(message, f"{encoding} image {width}x{height}")


def image_from_message(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image (ROS 1 or 2; rgb8, bgr8, mono8, mono16, ...) or CompressedImage to pixels."""
    from ..maps.readers.rosbag import decode_image_message

    return decode_image_message(msg)


def camera_from_intrinsics(K: Sequence[float], width: int, height: int, D: Sequence[float] = (),
                           distortion_model: str = "") -> Camera | None:
    """A Camera from CameraInfo's K (3x3 row-major), size and distortion; None when K is all zero (uncalibrated).

    ROS puts pixel centres at integer coordinates, COLMAP (hierloc) at +0.5: the principal point is shifted.
    Without distortion the camera is PINHOLE fx fy cx cy; plumb_bob/rational_polynomial/equidistant map to
    OPENCV/FULL_OPENCV/OPENCV_FISHEYE.
    """
    from ..maps.readers.rosbag import camera_from_info

    K = np.asarray(K, dtype=np.float64).reshape(-1)
    if K.size != 9:
        raise ValueError(f"camera info: K has 9 values, got {K.size}")
    if not np.any(K):
        return None
    message = SimpleNamespace(K=K, D=np.asarray(D, dtype=np.float64), distortion_model=distortion_model,
                              width=width, height=height)
    return camera_from_info(message)


def camera_from_camera_info(msg: Any) -> Camera | None:
    """A sensor_msgs/CameraInfo (ROS 1 `K`/`D` or ROS 2 `k`/`d`) to a Camera; None when uncalibrated (K = 0)."""
    K = getattr(msg, "K", None)
    K = getattr(msg, "k", None) if K is None else K
    D = getattr(msg, "D", None)
    D = getattr(msg, "d", ()) if D is None else D
    return camera_from_intrinsics(K, int(msg.width), int(msg.height), D, getattr(msg, "distortion_model", ""))


def position_quaternion(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 4x4 pose as (position (3,), quaternion (x, y, z, w), ROS's order, w >= 0)."""
    T = np.asarray(T, dtype=np.float64)
    w, x, y, z = rotmat_to_qvec(T[:3, :3])
    return T[:3, 3].copy(), np.array([x, y, z, w])


def pose_from_position_quaternion(position: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """A 4x4 pose from a position and a quaternion in ROS's order (x, y, z, w)."""
    x, y, z, w = quaternion_xyzw
    return make_pose(qvec_to_rotmat([w, x, y, z]), position)


def transform_from_values(values: str | Sequence[float] | None) -> np.ndarray:
    """A 4x4 transform from "x y z qx qy qz qw" (tf's order) or 16 row-major numbers; empty: identity."""
    if values is None or (isinstance(values, str) and not values.strip()):
        return np.eye(4)
    if isinstance(values, str):
        try:
            values = [float(v) for v in values.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"camera_to_base: expected numbers, got {values!r}") from None
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 7:
        return pose_from_position_quaternion(values[:3], values[3:])
    if values.size == 16:
        T = values.reshape(4, 4)
        if not np.allclose(T[3], [0, 0, 0, 1]) or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6):
            raise ValueError("camera_to_base: 16 numbers must be a rigid 4x4 transform, row-major")
        return T
    raise ValueError(f"camera_to_base: expected 7 numbers (x y z qx qy qz qw) or 16 (a 4x4), got {values.size}")


@dataclass
class CovarianceModel:
    """A heuristic pose covariance from the PnP inlier count: standard deviations scale as 1/sqrt(inliers).

    It is not a calibrated uncertainty; it tells a filter (robot_localization, amcl-style fusion) that poses
    from many inliers are more trustworthy than poses from few. At 100 inliers the defaults give 5 cm and
    1.1 degrees.
    """

    position_sigma_1: float = 0.5  # metres at one inlier
    rotation_sigma_1: float = 0.2  # radians at one inlier

    def covariance(self, num_inliers: int) -> np.ndarray:
        """6x6 covariance over (x, y, z, rotation about x, y, z), ROS's PoseWithCovariance order."""
        n = max(int(num_inliers), 1)
        sigma_t, sigma_r = self.position_sigma_1 / np.sqrt(n), self.rotation_sigma_1 / np.sqrt(n)
        return np.diag([sigma_t ** 2] * 3 + [sigma_r ** 2] * 3)


def covariance_from_inliers(num_inliers: int, model: CovarianceModel | None = None) -> np.ndarray:
    """6x6 pose covariance (ROS order) from the inlier count (see `CovarianceModel`)."""
    return (model or CovarianceModel()).covariance(num_inliers)


# --------------------------------------------------------------------------- REP 105 frames


def base_in_map(T_map_cam: np.ndarray, T_base_cam: np.ndarray | None = None) -> np.ndarray:
    """T_map_base from the camera's pose in the map and the camera-to-base extrinsic (identity by default)."""
    T_map_cam = np.asarray(T_map_cam, dtype=np.float64)
    return T_map_cam if T_base_cam is None else T_map_cam @ invert_pose(T_base_cam)


def map_to_odom(T_map_base: np.ndarray, T_odom_base: np.ndarray) -> np.ndarray:
    """REP 105's map->odom transform: T_map_odom = T_map_base * inv(T_odom_base), both at the image's time."""
    return np.asarray(T_map_base, dtype=np.float64) @ invert_pose(T_odom_base)


class OdometryBuffer:
    """Recent odometry poses T_odom_base by time; `lookup` interpolates the pose of an image's timestamp."""

    def __init__(self, max_age: float = 30.0, max_entries: int = 10000) -> None:
        self.max_age = max_age
        self._entries: deque[tuple[float, np.ndarray]] = deque(maxlen=max_entries)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def add(self, stamp: float, T_odom_base: np.ndarray) -> None:
        """Record a pose (out-of-order stamps are inserted in order; older than `max_age` s are forgotten)."""
        entry = (float(stamp), np.asarray(T_odom_base, dtype=np.float64))
        with self._lock:
            entries = self._entries
            if entries and entry[0] < entries[-1][0]:
                items = sorted([*entries, entry], key=lambda e: e[0])
                entries.clear()
                entries.extend(items)
            else:
                entries.append(entry)
            while entries and entries[-1][0] - entries[0][0] > self.max_age:
                entries.popleft()

    def lookup(self, stamp: float, tolerance: float = 0.1, max_gap: float = 1.0) -> np.ndarray | None:
        """T_odom_base at `stamp`: interpolated between the poses around it (at most `max_gap` s apart), else the
        nearest within `tolerance` s, else None."""
        from scipy.spatial.transform import Rotation, Slerp

        with self._lock:
            entries = list(self._entries)
        if not entries:
            return None
        times = np.array([e[0] for e in entries])
        after = int(np.searchsorted(times, stamp, side="left"))
        if after < len(times) and times[after] == stamp:
            return entries[after][1].copy()
        if 0 < after < len(times) and times[after] - times[after - 1] <= max_gap:
            (t0, T0), (t1, T1) = entries[after - 1], entries[after]
            a = (stamp - t0) / (t1 - t0)
            rotation = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))([a])
            return make_pose(rotation.as_matrix()[0], (1 - a) * T0[:3, 3] + a * T1[:3, 3])
        nearest = int(np.argmin(np.abs(times - stamp)))
        return entries[nearest][1].copy() if abs(times[nearest] - stamp) <= tolerance else None


# --------------------------------------------------------------------------- what to publish for a result


@dataclass
class PoseEstimate:
    """What a node publishes for one localized frame: the base's pose in the map and, with odometry, map->odom."""

    stamp: float
    T_map_base: np.ndarray
    position: np.ndarray  # (3,) of base_frame in map_frame
    quaternion_xyzw: np.ndarray  # (4,)
    covariance: np.ndarray  # (6, 6), ROS order
    num_inliers: int
    retrieval_path: str
    T_map_odom: np.ndarray | None = None  # None without odometry at the image's time


@dataclass
class LiveConfig:
    """Frames and tolerances of `LiveLocalizer`."""

    T_base_cam: np.ndarray | None = None  # camera-to-base extrinsic; None: the camera is the base
    odom_tolerance: float = 0.1  # seconds (see OdometryBuffer.lookup)
    odom_max_gap: float = 1.0
    covariance: CovarianceModel = field(default_factory=CovarianceModel)


class LiveLocalizer:
    """Turns localization results of a stream into pose estimates in the map frame (and map->odom)."""

    def __init__(self, tracker: Any, config: LiveConfig | None = None) -> None:
        self.tracker = tracker
        self.config = config or LiveConfig()
        self.odometry = OdometryBuffer()

    def estimate(self, result: Any, stamp: float) -> PoseEstimate | None:
        """The estimate for a LocalizationResult of the frame at `stamp`; None for a failure."""
        if not result.success or result.T_cam_world is None:
            return None
        T_map_base = base_in_map(invert_pose(result.T_cam_world), self.config.T_base_cam)
        position, quaternion = position_quaternion(T_map_base)
        T_map_odom = None
        T_odom_base = self.odometry.lookup(stamp, self.config.odom_tolerance, self.config.odom_max_gap)
        if T_odom_base is not None:
            T_map_odom = map_to_odom(T_map_base, T_odom_base)
        return PoseEstimate(stamp, T_map_base, position, quaternion,
                            self.config.covariance.covariance(result.num_inliers), int(result.num_inliers),
                            getattr(result, "retrieval_path", "global"), T_map_odom)
