"""`hierloc ros`: a ROS 1 localization node (rospy) wrapped around the ROS-free `hierloc.ros.core`.

    roscore &
    hierloc ros outputs/demo/map --image-topic /camera/image_raw --camera-info-topic /camera/camera_info

Subscribes `sensor_msgs/Image` (`~image_topic`), `sensor_msgs/CameraInfo` (`~camera_info_topic`) and
optionally `nav_msgs/Odometry` (`~odom_topic`); publishes `geometry_msgs/PoseWithCovarianceStamped` of
`~base_frame` in `~map_frame` on `~pose_topic`, stamped with the image's stamp, and, when odometry of the
image's time is known, broadcasts `~map_frame` -> `~odom_frame` on /tf (REP 105). Only the latest frame
waits for localization (`core.StreamWorker`): the image callback never blocks and never builds a backlog.

rospy and the message packages are imported inside functions only: the rest of hierloc never needs ROS.
Debian's ROS 1 packages are pure Python for the system's Python 3 in /usr/lib/python3/dist-packages; that
folder is appended (never prepended) to sys.path here, so the virtual environment's own packages win.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from .core import (
    ROS1_DEBIAN_PACKAGES,
    Frame,
    IndependentFrames,
    LiveConfig,
    LiveLocalizer,
    NodeOptions,
    PoseEstimate,
    StreamStats,
    StreamWorker,
    camera_from_camera_info,
    image_from_message,
    pose_from_position_quaternion,
    position_quaternion,
    resolve_options,
    transform_from_values,
    warm_up,
)

DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
NODE_NAME = "hierloc"
INSTALL_HINT = ("ROS 1 is not importable; install rospy and the messages: apt-get install "
                + " ".join(ROS1_DEBIAN_PACKAGES) + " (Debian/Ubuntu), or source a ROS 1 setup.bash")


def import_ros() -> SimpleNamespace:
    """rospy, rosgraph, tf2_ros and the message classes the node uses; RuntimeError (one line) when missing."""
    if os.path.isdir(DEBIAN_DIST_PACKAGES) and DEBIAN_DIST_PACKAGES not in sys.path:
        sys.path.append(DEBIAN_DIST_PACKAGES)  # after the venv's site-packages: its numpy, yaml, ... come first
    try:
        import rosgraph
        import rospy
        import tf2_ros
        from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CameraInfo, Image
    except ImportError as error:
        raise RuntimeError(f"{INSTALL_HINT} ({error})") from None
    return SimpleNamespace(rospy=rospy, rosgraph=rosgraph, tf2_ros=tf2_ros, Image=Image, CameraInfo=CameraInfo,
                           Odometry=Odometry, PoseWithCovarianceStamped=PoseWithCovarianceStamped,
                           TransformStamped=TransformStamped)


class RosLocalizationNode:
    """The subscriptions, publishers and callbacks of the node; `run_node` creates and spins it."""

    def __init__(self, ros: SimpleNamespace, options: NodeOptions, tracker: Any,
                 on_result: Callable[[Frame, Any, PoseEstimate | None], None] | None = None) -> None:
        self.ros = ros
        self.options = options
        self.live = LiveLocalizer(tracker, LiveConfig(T_base_cam=transform_from_values(options.camera_to_base),
                                                      odom_tolerance=options.odom_tolerance))
        self.worker = StreamWorker(tracker, self._publish, decode=image_from_message)
        self.extra_on_result = on_result
        self.frames_without_camera = 0
        self._camera = None
        self._camera_key = None
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        rospy = ros.rospy
        self.pose_publisher = rospy.Publisher(options.pose_topic, ros.PoseWithCovarianceStamped, queue_size=10)
        self.broadcaster = ros.tf2_ros.TransformBroadcaster() if options.odom_topic else None
        self.subscribers = []

    def start(self) -> None:
        """Start the worker, then subscribe (camera info and odometry first, images last)."""
        ros, options = self.ros, self.options
        self.worker.start()
        if options.camera_info_topic:
            self.subscribers.append(ros.rospy.Subscriber(options.camera_info_topic, ros.CameraInfo,
                                                         self._on_camera_info, queue_size=1))
        if options.odom_topic:
            self.subscribers.append(ros.rospy.Subscriber(options.odom_topic, ros.Odometry, self._on_odometry,
                                                         queue_size=100))
        # A large buff_size: with rospy's default (64 KiB) a queue of 1 still delivers stale images.
        self.subscribers.append(ros.rospy.Subscriber(options.image_topic, ros.Image, self._on_image, queue_size=1,
                                                     buff_size=1 << 26, tcp_nodelay=True))

    def stop(self, timeout: float = 60.0) -> StreamStats:
        """Unsubscribe, let the frame in progress finish; the final counters."""
        for subscriber in self.subscribers:
            subscriber.unregister()
        self.worker.stop(timeout)
        return self.worker.stats

    # ------------------------------------------------------------------ callbacks (rospy's threads)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.ros.rospy.logwarn(message)

    def _on_camera_info(self, msg: Any) -> None:
        key = (tuple(msg.K), tuple(msg.D), msg.width, msg.height, msg.distortion_model)
        if key == self._camera_key:
            return
        try:
            camera = camera_from_camera_info(msg)
        except ValueError as error:
            self.ros.rospy.logerr_throttle(10.0, f"{self.options.camera_info_topic}: {error}")
            return
        if camera is None:
            self._warn_once("uncalibrated", f"{self.options.camera_info_topic}: K is zero (uncalibrated camera); "
                                            "the localizer guesses the intrinsics")
        with self._lock:
            self._camera, self._camera_key = camera, key

    def _on_odometry(self, msg: Any) -> None:
        if msg.child_frame_id and msg.child_frame_id != self.options.base_frame:
            self._warn_once("child", f"{self.options.odom_topic}: child_frame_id {msg.child_frame_id!r} is not "
                                     f"base_frame {self.options.base_frame!r}; its poses are used as base_frame's")
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        self.live.odometry.add(msg.header.stamp.to_sec(), pose_from_position_quaternion([p.x, p.y, p.z],
                                                                                          [q.x, q.y, q.z, q.w]))

    def _on_image(self, msg: Any) -> None:
        """Never blocks: the message is decoded and localized on the worker thread."""
        with self._lock:
            camera, have_info = self._camera, self._camera_key is not None
        if self.options.camera_info_topic and not have_info:
            self.frames_without_camera += 1
            self.ros.rospy.logwarn_throttle(5.0, f"no CameraInfo on {self.options.camera_info_topic} yet: "
                                                 "images are skipped until one arrives")
            return
        stamp = msg.header.stamp
        if stamp.is_zero():
            stamp = msg.header.stamp = self.ros.rospy.Time.now()
        self.worker.submit(Frame(msg, stamp.to_sec(), camera, name=f"{stamp.to_sec():.9f}", context=msg.header))

    # ------------------------------------------------------------------ results (the worker's thread)

    def _publish(self, frame: Frame, result: Any) -> None:
        ros, options = self.ros, self.options
        estimate = self.live.estimate(result, frame.stamp)
        if estimate is None:
            ros.rospy.logwarn_throttle(5.0, f"image at {frame.stamp:.3f} not localized: {result.message}")
        else:
            msg = ros.PoseWithCovarianceStamped()
            msg.header.stamp = frame.context.stamp
            msg.header.frame_id = options.map_frame
            _fill_pose(msg.pose.pose, estimate.position, estimate.quaternion_xyzw)
            msg.pose.covariance = [float(v) for v in estimate.covariance.reshape(-1)]
            self.pose_publisher.publish(msg)
            if estimate.T_map_odom is not None and self.broadcaster is not None:
                self.broadcaster.sendTransform(self._map_to_odom(frame, estimate.T_map_odom))
            elif self.broadcaster is not None:
                ros.rospy.logwarn_throttle(10.0, f"no odometry on {options.odom_topic} at {frame.stamp:.3f} "
                                                 f"(within {options.odom_tolerance} s): map->odom not broadcast")
        if self.extra_on_result is not None:
            self.extra_on_result(frame, result, estimate)

    def _map_to_odom(self, frame: Frame, T_map_odom: np.ndarray) -> Any:
        ros, options = self.ros, self.options
        transform = ros.TransformStamped()
        transform.header.stamp = frame.context.stamp + ros.rospy.Duration.from_sec(options.transform_tolerance)
        transform.header.frame_id = options.map_frame
        transform.child_frame_id = options.odom_frame
        position, quaternion = position_quaternion(T_map_odom)
        t, r = transform.transform.translation, transform.transform.rotation
        t.x, t.y, t.z = (float(v) for v in position)
        r.x, r.y, r.z, r.w = (float(v) for v in quaternion)
        return transform


def _fill_pose(pose: Any, position: np.ndarray, quaternion_xyzw: np.ndarray) -> None:
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    o = pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in quaternion_xyzw)


def run_node(flags: dict[str, Any], ros_args: list[str] | None = None,
             on_ready: Callable[[str], None] | None = None) -> StreamStats:
    """Start the node (flags over ~parameters over defaults), spin until shutdown, return the final counters.

    `flags` holds NodeOptions' names (None: not given); `ros_args` are ROS's NAME:=VALUE arguments (remappings,
    `_param:=value`, `__name:=`). Raises RuntimeError with one line when ROS or the master is missing.
    """
    from ..localization import Localizer, LocalizerConfig
    from ..localization.tracking import Tracker
    from ..utils.threads import configure_threads

    ros = import_ros()
    rospy = ros.rospy
    master_uri = ros.rosgraph.get_master_uri()
    if not ros.rosgraph.Master(f"/{NODE_NAME}", master_uri).is_online():
        raise RuntimeError(f"no ROS master at {master_uri} (ROS_MASTER_URI): start roscore first")
    rospy.init_node(NODE_NAME, argv=[sys.argv[0], *(ros_args or [])])
    try:
        options = resolve_options(flags, lambda name, default: rospy.get_param(f"~{name}", default))
        threads = configure_threads(options.threads or None)
        rospy.loginfo(f"hierloc ros: loading {options.map} ({threads} threads, {options.device})")
        localizer = Localizer.load(options.map, LocalizerConfig(num_retrieved=options.num_retrieved,
                                                                min_inliers=options.min_inliers),
                                   device=options.device)
        if options.warm_up:
            warm_up(localizer)
        tracker = Tracker(localizer) if options.tracking else IndependentFrames(localizer)
        node = RosLocalizationNode(ros, options, tracker)
        node.start()
    except BaseException:
        rospy.signal_shutdown("hierloc ros: start failed")
        raise
    resolved = {name: rospy.resolve_name(getattr(options, name)) if getattr(options, name) else "(none)"
                for name in ("image_topic", "camera_info_topic", "odom_topic", "pose_topic")}
    summary = (f"ready: {localizer.scene.summary()}; images {resolved['image_topic']}, camera info "
               f"{resolved['camera_info_topic']}, odometry {resolved['odom_topic']} -> poses "
               f"{resolved['pose_topic']} in {options.map_frame}"
               + (f", {options.map_frame}->{options.odom_frame} on /tf" if options.odom_topic else ""))
    rospy.loginfo(f"hierloc ros: {summary}; options {asdict(options)}")
    if on_ready is not None:
        on_ready(summary)
    timer = rospy.Timer(rospy.Duration(30.0), lambda _: rospy.loginfo(f"hierloc ros: {node.worker.stats.summary()}"))
    try:
        rospy.spin()
    except KeyboardInterrupt:
        pass
    finally:
        timer.shutdown()
        if not rospy.is_shutdown():
            rospy.signal_shutdown("hierloc ros: stopping")
    stats = node.stop()
    if node.frames_without_camera:
        rospy.logwarn(f"hierloc ros: {node.frames_without_camera} images skipped before the first CameraInfo")
    return stats
