"""The ROS side of tests/test_ros_node.py, run as its own process (rospy configures logging and signals globally).

    python tests/ros_driver.py stream WORLD OUT.json --count 30 ...   # publish frames, wait for each pose
    python tests/ros_driver.py listen OUT.json --count 6 ...          # record poses (while `rosbag play` runs)

Both write {"poses": {"<secs>.<nsecs>": [x, y, z, qx, qy, qz, qw]}, "covariance": {...}, "tf": {...}}
(`tf`: every map->odom transform seen on /tf, by its own stamp, as [x, y, z, qx, qy, qz, qw]).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def stamp_key(stamp) -> str:
    return f"{stamp.secs}.{stamp.nsecs:09d}"


def camera_info_values(camera) -> dict:
    """CameraInfo fields for a hierloc PINHOLE camera (COLMAP pixel centres -> ROS's: -0.5)."""
    fx, fy, cx, cy = camera.params
    K = [fx, 0.0, cx - 0.5, 0.0, fy, cy - 0.5, 0.0, 0.0, 1.0]
    P = [fx, 0.0, cx - 0.5, 0.0, 0.0, fy, cy - 0.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    return dict(width=camera.width, height=camera.height, distortion_model="plumb_bob", D=[0.0] * 5, K=K,
                R=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], P=P)


def odom_poses(truth: list[np.ndarray], T_map_odom: np.ndarray, T_base_cam: np.ndarray) -> list[np.ndarray]:
    """T_odom_base of each frame such that map->odom is T_map_odom: inv(T_map_odom) T_map_cam inv(T_base_cam)."""
    from hierloc.maps.poses import invert_pose

    return [invert_pose(T_map_odom) @ T_map_cam @ invert_pose(T_base_cam) for T_map_cam in truth]


class Recorder:
    """Poses on the pose topic and map->odom transforms on /tf."""

    def __init__(self, ros, pose_topic: str, map_frame: str = "map", odom_frame: str = "odom") -> None:
        self.poses, self.covariance, self.tf = {}, {}, {}
        self.condition = threading.Condition()
        self.map_frame, self.odom_frame = map_frame, odom_frame
        self.pose_sub = ros.rospy.Subscriber(pose_topic, ros.PoseWithCovarianceStamped, self.on_pose)
        self.tf_sub = ros.rospy.Subscriber("/tf", ros.TFMessage, self.on_tf)

    def on_pose(self, msg) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        with self.condition:
            assert msg.header.frame_id == self.map_frame, msg.header.frame_id
            self.poses[stamp_key(msg.header.stamp)] = [p.x, p.y, p.z, q.x, q.y, q.z, q.w]
            self.covariance[stamp_key(msg.header.stamp)] = list(msg.pose.covariance)
            self.condition.notify_all()

    def on_tf(self, msg) -> None:
        for t in msg.transforms:
            if t.header.frame_id == self.map_frame and t.child_frame_id == self.odom_frame:
                v, r = t.transform.translation, t.transform.rotation
                with self.condition:
                    self.tf[stamp_key(t.header.stamp)] = [v.x, v.y, v.z, r.x, r.y, r.z, r.w]

    def wait_for(self, predicate, timeout: float) -> bool:
        with self.condition:
            return self.condition.wait_for(predicate, timeout)

    def save(self, path: Path, **extra) -> None:
        with self.condition:
            data = {"poses": self.poses, "covariance": self.covariance, "tf": self.tf, **extra}
        path.write_text(json.dumps(data))


def import_ros():
    if DIST_PACKAGES not in sys.path:
        sys.path.append(DIST_PACKAGES)
    from types import SimpleNamespace

    import rospy
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    return SimpleNamespace(rospy=rospy, PoseWithCovarianceStamped=PoseWithCovarianceStamped, Odometry=Odometry,
                           CameraInfo=CameraInfo, Image=Image, TFMessage=TFMessage)


def wait_connections(publishers, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(p.get_num_connections() == 0 for p in publishers):
        if time.monotonic() > deadline:
            raise TimeoutError("the node did not subscribe to " + ", ".join(p.name for p in publishers
                                                                               if p.get_num_connections() == 0))
        time.sleep(0.05)


def stream(args) -> int:
    """Publish `count` frames of a mission (camera info, odometry, image), each after the previous pose came."""
    from hierloc.maps import load_map
    from hierloc.ros.core import position_quaternion, transform_from_values

    ros = import_ros()
    rospy = ros.rospy
    rospy.init_node("hierloc_test_stream", disable_signals=True)
    keyframes = load_map(args.world).missions[args.mission].keyframes[: args.count]
    T_base_cam, T_map_odom = transform_from_values(args.camera_to_base), transform_from_values(args.map_to_odom)
    odom = odom_poses([kf.pose for kf in keyframes], T_map_odom, T_base_cam)
    recorder = Recorder(ros, args.pose_topic)
    image_pub = rospy.Publisher("/camera/image_raw", ros.Image, queue_size=1)
    info_pub = rospy.Publisher("/camera/camera_info", ros.CameraInfo, queue_size=1, latch=True)
    odom_pub = rospy.Publisher("/odom", ros.Odometry, queue_size=10)
    wait_connections([image_pub, info_pub, odom_pub], args.timeout)
    while recorder.pose_sub.get_num_connections() == 0 or recorder.tf_sub.get_num_connections() == 0:
        time.sleep(0.05)
    waits, missing = [], []
    for i, (kf, T_odom_base) in enumerate(zip(keyframes, odom)):
        stamp = rospy.Time(args.t0 + i, 500_000_000)  # stamps 1 s apart; published as fast as they are localized
        info = ros.CameraInfo(**camera_info_values(kf.camera))
        info.header.stamp, info.header.frame_id = stamp, "camera"
        info_pub.publish(info)
        odometry = ros.Odometry()
        odometry.header.stamp, odometry.header.frame_id, odometry.child_frame_id = stamp, "odom", "base_link"
        position, quaternion = position_quaternion(T_odom_base)
        p, q = odometry.pose.pose.position, odometry.pose.pose.orientation
        p.x, p.y, p.z = map(float, position)
        q.x, q.y, q.z, q.w = map(float, quaternion)
        odom_pub.publish(odometry)
        pixels = np.ascontiguousarray(kf.load_image())
        image = ros.Image(height=pixels.shape[0], width=pixels.shape[1], encoding="rgb8", is_bigendian=0,
                          step=pixels.shape[1] * 3, data=pixels.tobytes())
        image.header.stamp, image.header.frame_id, image.header.seq = stamp, "camera", i
        t0 = time.monotonic()
        image_pub.publish(image)
        key = stamp_key(stamp)
        if not recorder.wait_for(lambda: key in recorder.poses, args.timeout):
            missing.append(kf.name)
        waits.append(time.monotonic() - t0)
    recorder.wait_for(lambda: len(recorder.tf) >= len(keyframes) - len(missing), 2.0)
    truth = {f"{args.t0 + i}.500000000": kf.pose.tolist() for i, kf in enumerate(keyframes)}
    recorder.save(Path(args.out), truth=truth, seconds_per_pose=waits, missing=missing)
    rospy.signal_shutdown("done")
    return 0


def listen(args) -> int:
    """Record poses until `count` came, or the pose stamped `last`, or `timeout` s passed (prints "listening")."""
    ros = import_ros()
    rospy = ros.rospy
    rospy.init_node("hierloc_test_listen", disable_signals=True)
    recorder = Recorder(ros, args.pose_topic)
    deadline = time.monotonic() + args.timeout
    while recorder.pose_sub.get_num_connections() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    print("listening", flush=True)
    recorder.wait_for(lambda: len(recorder.poses) >= args.count or args.last in recorder.poses,
                      max(0.0, deadline - time.monotonic()))
    time.sleep(0.5)  # the last transform
    recorder.save(Path(args.out))
    rospy.signal_shutdown("done")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("stream")
    s.add_argument("world")
    s.add_argument("out")
    s.add_argument("--mission", default="dusk")
    s.add_argument("--count", type=int, default=30)
    s.add_argument("--t0", type=int, default=100)
    s.add_argument("--camera-to-base", default="")
    s.add_argument("--map-to-odom", default="")
    s.add_argument("--pose-topic", default="/hierloc/pose")
    s.add_argument("--timeout", type=float, default=60.0)
    s.set_defaults(func=stream)
    listen_parser = sub.add_parser("listen")
    listen_parser.add_argument("out")
    listen_parser.add_argument("--count", type=int, required=True)
    listen_parser.add_argument("--last", default=None, help="stop after the pose of this stamp (<secs>.<nsecs>)")
    listen_parser.add_argument("--pose-topic", default="/hierloc/pose")
    listen_parser.add_argument("--timeout", type=float, default=60.0)
    listen_parser.set_defaults(func=listen)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
