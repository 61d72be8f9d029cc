"""Map readers: image folders (with pose files or Strecha cameras), COLMAP models and ROS bags."""

from hierloc.maps.readers.colmap import is_colmap_model, read_colmap_model
from hierloc.maps.readers.folder import is_strecha_scene, read_image_folder
from hierloc.maps.readers.rosbag import is_rosbag, read_rosbag

__all__ = ["is_colmap_model", "is_rosbag", "is_strecha_scene", "read_colmap_model", "read_image_folder", "read_rosbag"]
