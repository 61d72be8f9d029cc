"""6-DoF localization against 3-D maps: map building (triangulation, SfM, COLMAP import) and the Localizer.

    from hierloc.localization import MapBuildConfig, build_scene_map, Localizer
    scene, report = build_scene_map(load_map("scene"), MapBuildConfig(features="sift"))
    scene.save("maps/scene")
    result = Localizer(scene).localize(image, camera)     # result.T_cam_world, result.num_inliers
"""

from .absolute_pose import PoseEstimationConfig, estimate_absolute_pose, query_camera
from .build import (
    BUILD_MODES,
    MapBuildConfig,
    MatchCache,
    attach_global_index,
    build_scene_map,
    describe_globally,
    import_colmap_model,
    select_keyframes,
    write_build_outputs,
)
from .clustering import covisibility_clusters
from .localizer import LocalizationResult, Localizer, LocalizerConfig, QueryImage, summarize_timings
from .pairs import PAIR_STRATEGIES, exhaustive_pairs, pairs_from_poses, pairs_from_retrieval, sequential_pairs
from .reconstruction import ReconstructionConfig, incremental_sfm, triangulate_from_poses
from .results import read_hloc_poses, write_hloc_poses, write_results_json
from .retrieval import GlobalConfig
from .scene_map import MapFormatError, MapImage, SceneMap

__all__ = [
    "BUILD_MODES", "GlobalConfig", "LocalizationResult", "Localizer", "LocalizerConfig", "MapBuildConfig",
    "MapFormatError", "MapImage", "MatchCache", "PAIR_STRATEGIES", "PoseEstimationConfig", "QueryImage",
    "ReconstructionConfig", "SceneMap", "attach_global_index", "build_scene_map", "describe_globally",
    "import_colmap_model", "covisibility_clusters", "estimate_absolute_pose",
    "exhaustive_pairs", "incremental_sfm", "pairs_from_poses", "pairs_from_retrieval", "query_camera",
    "read_hloc_poses", "select_keyframes", "sequential_pairs", "summarize_timings", "triangulate_from_poses",
    "write_build_outputs", "write_hloc_poses", "write_results_json",
]
