"""`hierloc map build|info`: 3-D maps (keyframes, local features, 3-D points, global index) for `hierloc localize`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_threads_argument
from .validators import field_of_view, positive_int


def register(subparsers) -> None:
    """Add the `map` subcommand group."""
    from ..features import FEATURE_CONFS, MATCHER_NAMES
    from ..localization import BUILD_MODES, PAIR_STRATEGIES

    p = subparsers.add_parser("map", help="build and inspect 3-D maps for 6-DoF localization")
    sub = p.add_subparsers(dest="map_command", metavar="ACTION", required=True)

    b = sub.add_parser(
        "build", help="images (+ poses) or a COLMAP model -> 3-D map",
        description="Builds a 3-D map: local features of every image, global descriptors for retrieval, "
                    "matches of image pairs, and 3-D points by triangulation from the known poses (an image "
                    "folder with a pose file, a Strecha scene, a ROS bag, a COLMAP model) or by SfM when poses "
                    "are unknown. With --colmap-features, a COLMAP model is imported with its own 3-D points.")
    b.add_argument("source", help="image folder (+ pose file / Strecha gt_dense_cameras), COLMAP model folder, "
                                  "or ROS bag")
    b.add_argument("--out", required=True, help="map folder to write")
    b.add_argument("--kind", default="auto", choices=["auto", "folder", "colmap", "rosbag"], help="source kind")
    b.add_argument("--poses", default=None, help="pose file of a single-mission image folder (TUM, KITTI, CSV)")
    b.add_argument("--image-dir", default=None, help="images of a COLMAP model")
    b.add_argument("--image-topic", default=None, help="image topic of a ROS bag")
    b.add_argument("--pose-topic", default=None, help="pose or odometry topic of a ROS bag")
    b.add_argument("--mission", action="append", default=None, dest="missions",
                   help="only this mission of the source (repeatable; default: all)")
    b.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="leave this image out (name or file name; repeatable), e.g. for leave-one-out tests")
    b.add_argument("--features", default="sift", choices=sorted(FEATURE_CONFS), help="local features (default sift)")
    b.add_argument("--max-keypoints", type=positive_int, default=None,
                   help="keypoint cap per image (default: the --features configuration's; 4096 for sift, 1024 for "
                        "sift-fast)")
    b.add_argument("--resize-max", type=positive_int, default=None,
                   help="longest image side for local features (default: full)")
    b.add_argument("--matcher", default="auto", choices=MATCHER_NAMES,
                   help="auto: ratio test for SIFT, mutual NN for XFeat, LightGlue for ALIKED/DISK")
    b.add_argument("--mode", default="auto", choices=BUILD_MODES,
                   help="triangulation from known poses, or SfM (auto: triangulation when every image has a pose)")
    b.add_argument("--pairs", default="auto", choices=PAIR_STRATEGIES,
                   help="image pairs to match (auto: exhaustive up to 40 images, else from poses or retrieval)")
    b.add_argument("--num-neighbors", type=positive_int, default=10, help="neighbours per image for pairs (default 10)")
    b.add_argument("--global-model", default="auto", type=_global_model_argument,
                   help="retrieval describer: auto (trained MobileNetVLAD if installed, else ImageNet MobileNetV2 + "
                        "NetVLAD k-means-initialised on the map), any --model spelling of `hierloc index build` "
                        "(NAME, NAME=WEIGHTS, a checkpoint, .onnx/.pt, densevlad=VOCAB.npz), or none")
    b.add_argument("--global-weights", default="auto", help="weights of --global-model (path or registry name)")
    b.add_argument("--global-index", default=None,
                   help="reuse an existing index: its describer, and its descriptors of the map's images (by name)")
    b.add_argument("--index", default="auto", choices=["auto", "flat", "hnsw", "ivfpq", "ivfpq-mmap"], dest="search",
                   help="search structure of the map's global index (auto: flat below 50k images, HNSW above)")
    b.add_argument("--pca-dims", type=positive_int, default=None,
                   help="search the map's global index after PCA to this size")
    b.add_argument("--global-resize", type=positive_int, default=None,
                   help="longest image side the retrieval network sees, for map and queries (default 640)")
    b.add_argument("--default-fov", type=field_of_view, default=None,
                   help="SfM: horizontal field of view (deg) of images without calibration or EXIF")
    b.add_argument("--feature-cache", default=None, help="hloc-layout features file reused between builds")
    b.add_argument("--match-cache", default=None, help="hloc-layout matches file reused between builds")
    b.add_argument("--colmap-features", default=None,
                   help="import a COLMAP model keeping its 3-D points: the features file (hloc layout) its "
                        "keypoints came from; --features names them when the file was not written by hierloc")
    b.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_argument(b)
    b.set_defaults(func=run_build)

    i = sub.add_parser("info", help="print what a 3-D map holds")
    i.add_argument("map", help="map folder")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)


def _feature_options(args: argparse.Namespace) -> dict:
    return {k: v for k, v in (("max_keypoints", args.max_keypoints), ("resize_max", args.resize_max)) if v is not None}


def _global_model_argument(value: str) -> str:
    from .common import describer_argument

    return value if value.lower() == "none" else describer_argument(value)


def run_build(args: argparse.Namespace) -> int:
    """Build the map and print where it went."""
    from ..localization import GlobalConfig, MapBuildConfig
    from ..pipelines.mapping import MapJobConfig, build_map
    from .index import map_source

    global_config = GlobalConfig(args.global_model, args.global_weights, args.search, pca_dims=args.pca_dims,
                                 index=args.global_index, resize_max=args.global_resize)
    build = MapBuildConfig(features=args.features, feature_options=_feature_options(args), matcher=args.matcher,
                           pairs=args.pairs, num_neighbors=args.num_neighbors, mode=args.mode,
                           global_model=global_config, default_fov_deg=args.default_fov, device=args.device)
    args.subsampling = 1
    result = build_map(MapJobConfig(map_source(args), Path(args.out), build, args.exclude, args.feature_cache,
                                    args.match_cache, args.colmap_features, args.threads))
    report = result.report
    print(result.summary)
    # Said on stdout as well as logged: a map missing most of its images must not look like a success.
    unregistered = report.get("unregistered") or []
    print(f"{report['registered']} of {report['images']} images registered ({report['mode']})"
          + (f"; not in the map: {', '.join(unregistered[:5])}{', ...' if len(unregistered) > 5 else ''}"
             if unregistered else ""))
    if report["timings"]:
        print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["timings"].items()))
    print(f"map written to {result.out}/ (map.json, sfm/ COLMAP model, features.h5"
          f"{', global_index.h5 and its describer' if result.has_global_index else ''}"
          f"{', pairs.txt' if report['pair_list'] else ''}) in {result.seconds:.1f} s")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print a map's summary."""
    from ..localization import SceneMap
    from ..utils.io import to_json_text

    scene = SceneMap.load(args.map)
    if args.json:
        print(to_json_text({"images": len(scene), "points": scene.num_points, "features": scene.feature_config,
                          "matcher": scene.matcher_config, "global_model": scene.global_model,
                          "metadata": scene.metadata}, indent=2, default=str))
    else:
        print(scene.summary())
        print(f"features: {scene.feature_config}")
        print(f"matcher: {scene.matcher_config}")
        missions = sorted({im.mission for im in scene.images})
        print(f"missions: {', '.join(missions)}; folder: {Path(args.map).resolve()}")
    return 0
