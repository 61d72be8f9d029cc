"""Live localization for robots: a ROS-free streaming core (`hierloc.ros.core`) and a ROS 1 node (`hierloc.ros.node`).

Importing this package never imports ROS; `hierloc ros` (see `hierloc.ros.node`) does.
"""

from .core import (
    PARAMETERS,
    CovarianceModel,
    Frame,
    IndependentFrames,
    LatestFrameSlot,
    LiveConfig,
    LiveLocalizer,
    NodeOptions,
    OdometryBuffer,
    PoseEstimate,
    StreamStats,
    StreamWorker,
    base_in_map,
    camera_from_camera_info,
    camera_from_intrinsics,
    covariance_from_inliers,
    image_from_fields,
    image_from_message,
    map_to_odom,
    position_quaternion,
    resolve_options,
    transform_from_values,
)

__all__ = [
    "PARAMETERS", "CovarianceModel", "Frame", "IndependentFrames", "LatestFrameSlot", "LiveConfig", "LiveLocalizer",
    "NodeOptions", "OdometryBuffer", "PoseEstimate", "StreamStats", "StreamWorker", "base_in_map",
    "camera_from_camera_info", "camera_from_intrinsics", "covariance_from_inliers", "image_from_fields",
    "image_from_message", "map_to_odom", "position_quaternion", "resolve_options", "transform_from_values",
]
