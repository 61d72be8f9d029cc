"""`hierloc ros`: a ROS 1 localization node (`hierloc.ros.node`) on a 3-D map."""

from __future__ import annotations

import argparse

from .validators import non_negative_int, positive_int

# NodeOptions field -> (flag, help); the ROS parameter of the same name (~field) is read when the flag is absent.
_FLAGS = {
    "image_topic": ("--image-topic", "sensor_msgs/Image topic"),
    "camera_info_topic": ("--camera-info-topic", 'sensor_msgs/CameraInfo topic ("": none, the camera is guessed)'),
    "odom_topic": ("--odom-topic", 'nav_msgs/Odometry topic; with odometry, map->odom is broadcast ("": none)'),
    "pose_topic": ("--pose-topic", "geometry_msgs/PoseWithCovarianceStamped output (~pose: /hierloc/pose)"),
    "map_frame": ("--map-frame", "frame of the map and of the published poses"),
    "odom_frame": ("--odom-frame", "odometry frame (child of map_frame in the broadcast transform)"),
    "base_frame": ("--base-frame", "robot frame whose pose is published (odometry's child_frame_id)"),
    "min_inliers": ("--min-inliers", "fewer PnP inliers: no pose for the frame"),
    "num_retrieved": ("--num-retrieved", "keyframes retrieved per frame (0: every map image)"),
    "device": ("--device", "cpu or cuda"),
    "threads": ("--threads", "torch/OpenCV/faiss threads (0: the usable cores)"),
    "camera_to_base": ("--camera-to-base", 'camera pose in base_frame, "x y z qx qy qz qw" or 16 numbers '
                                           '(T_base_camera; "": identity, the camera is the base)'),
    "odom_tolerance": ("--odom-tolerance", "seconds between an image and odometry usable without interpolation"),
    "transform_tolerance": ("--transform-tolerance", "map->odom is stamped this many seconds after the image"),
}
_TYPES = {"min_inliers": positive_int, "num_retrieved": non_negative_int, "threads": non_negative_int,
          "odom_tolerance": float, "transform_tolerance": float}


def register(subparsers) -> None:
    """Add the `ros` subcommand."""
    from ..ros.core import NodeOptions

    defaults = NodeOptions()
    p = subparsers.add_parser(
        "ros", help="a ROS 1 node: camera images in, 6-DoF poses in the map frame out (needs rospy)",
        description="Localize a ROS 1 camera stream against a 3-D map: subscribes sensor_msgs/Image and CameraInfo "
                    "(and nav_msgs/Odometry), publishes geometry_msgs/PoseWithCovarianceStamped in the map frame and, "
                    "with odometry, the map->odom transform (REP 105). Only the latest frame waits: a slow "
                    "localization drops frames, never builds a backlog. Each option is also the private ROS parameter "
                    "of the same name (~image_topic, ...); a flag wins over a parameter. A roscore must be running "
                    "(ROS_MASTER_URI).",
        epilog="ROS arguments (remappings image:=/cam, private parameters _min_inliers:=30, __name:=loc) may follow.")
    p.add_argument("map", nargs="?", default=None,
                   help="map folder written by `hierloc map build` (or the demo's outputs/demo/map); default: ~map")
    p.add_argument("ros_args", nargs="*", metavar="NAME:=VALUE", default=[], help=argparse.SUPPRESS)
    for name, (flag, text) in _FLAGS.items():
        default = getattr(defaults, name)
        p.add_argument(flag, dest=name, type=_TYPES.get(name, str), default=None,
                       help=f"{text} (default {default!r}; parameter ~{name})")
    p.add_argument("--no-tracking", dest="tracking", action="store_const", const=False, default=None,
                   help="localize every frame by global retrieval (default: track around the previous pose; "
                        "parameter ~tracking)")
    p.add_argument("--no-warm-up", dest="warm_up", action="store_const", const=False, default=None,
                   help="subscribe at once, without a first run of the networks (parameter ~warm_up)")
    p.set_defaults(func=run, ros_arguments=True)


def split_ros_args(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(map, ROS's NAME:=VALUE arguments) from the positionals; a second map or a stray word is a ValueError."""
    positionals = ([args.map] if args.map is not None else []) + list(args.ros_args)
    ros_args = [a for a in positionals if ":=" in a]
    maps = [a for a in positionals if ":=" not in a]
    if len(maps) > 1:
        raise ValueError(f"one map expected, got {maps} (ROS arguments are NAME:=VALUE)")
    return (maps[0] if maps else None), ros_args


def run(args: argparse.Namespace) -> int:
    """Run the node until Ctrl-C / SIGTERM / rosnode kill; print its counters."""
    from ..ros.core import PARAMETERS
    from ..ros.node import run_node

    map_folder, ros_args = split_ros_args(args)
    flags = {name: getattr(args, name, None) for name in PARAMETERS}
    flags["map"] = map_folder
    stats = run_node(flags, ros_args, on_ready=lambda summary: print(f"hierloc ros: {summary}", flush=True))
    print(f"hierloc ros: stopped; {stats.summary()}", flush=True)
    return 0
