"""`hierloc localize`: 6-DoF poses of query images (files, folders or a ROS bag) against a 3-D map."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path, PurePosixPath

import numpy as np

from .common import add_threads_argument

logger = logging.getLogger("hierloc")


def register(subparsers) -> None:
    """Add the `localize` subcommand."""
    from ..features import MATCHER_NAMES

    p = subparsers.add_parser(
        "localize", help="6-DoF poses of query images against a 3-D map (`hierloc map build`)",
        description="Retrieves the nearest map images, clusters them into places by covisibility, matches "
                    "local features and estimates the pose with pycolmap (LO-RANSAC + refinement). Writes "
                    "poses.txt (hloc format: name qw qx qy qz tx ty tz, world-to-camera; failures omitted) and "
                    "results.json (every query, inliers, per-stage timings). With --ground-truth, prints pose "
                    "errors and draws localization.png.")
    p.add_argument("map", help="map folder written by `hierloc map build`")
    p.add_argument("queries", nargs="+", help="query images or folders (or a ROS bag with --image-topic)")
    p.add_argument("--out", default="outputs/localize", help="output folder (default outputs/localize)")
    p.add_argument("--camera", default="auto",
                   help="auto: the ground truth's camera, else EXIF, else a guess (focal refined by PnP); map: the "
                        "map's camera (one camera maps); a cameras.txt path; or 'MODEL W H p1 p2 ...'")
    p.add_argument("--default-fov", type=float, default=None,
                   help="horizontal field of view (deg) for queries without calibration or EXIF")
    p.add_argument("--ground-truth", default=None,
                   help="map source with the queries' true poses (Strecha scene, image folder + poses, COLMAP model): "
                        "prints errors; an SfM map is aligned to it first by a similarity from the map images")
    p.add_argument("--image-topic", default=None, help="queries from this image topic of a ROS bag")
    p.add_argument("--num-retrieved", type=int, default=5, help="keyframes retrieved per query (0: all map images)")
    p.add_argument("--no-clustering", action="store_true", help="match all retrieved keyframes as one place")
    p.add_argument("--max-places", type=int, default=3, help="places tried per query (default 3)")
    p.add_argument("--min-inliers", type=int, default=20, help="fewer PnP inliers is a failure (default 20)")
    p.add_argument("--ransac-max-error", type=float, default=12.0, help="RANSAC inlier threshold, pixels (12)")
    p.add_argument("--matcher", default=None, choices=MATCHER_NAMES, help="override the map's matcher")
    p.add_argument("--matches-png", type=int, default=4, help="draw the inlier matches of the first N queries (4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_argument(p)
    p.set_defaults(func=run)


def parse_camera(text: str):
    """A Camera from a cameras.txt path (one camera) or 'MODEL W H params...'."""
    from ..maps.poses import read_cameras_txt
    from ..maps.types import Camera

    path = Path(text)
    if path.is_file():
        cameras = read_cameras_txt(path)
        if len(cameras) != 1:
            raise ValueError(f"{path}: holds {len(cameras)} cameras; give a file with one")
        return next(iter(cameras.values()))
    parts = text.replace(",", " ").split()
    if len(parts) < 4:
        raise ValueError(f"--camera {text!r}: expected auto, map, a cameras.txt path, or 'MODEL W H params...'")
    try:
        return Camera(parts[0], int(parts[1]), int(parts[2]), [float(v) for v in parts[3:]])
    except ValueError as exc:
        raise ValueError(f"--camera {text!r}: {exc}") from None


def _name_keys(name: str) -> list[str]:
    parts = PurePosixPath(name).parts
    return ["/".join(parts[i:]) for i in range(len(parts))]


def _lookup(table: dict, name: str):
    for key in _name_keys(name):
        if key in table:
            return table[key]
    return None


def _ground_truth(source: str):
    """({name and every trailing sub-path: Keyframe}, {name: T_world_cam}) of a map source with poses."""
    from ..maps import load_map

    truth = load_map(source)
    table, poses = {}, {}
    for kf in truth.keyframes():
        if kf.pose is None:
            continue
        poses[kf.name] = kf.pose
        for key in _name_keys(kf.name):
            table.setdefault(key, kf)
    if not poses:
        raise ValueError(f"{source}: no image has a pose; it cannot serve as ground truth")
    return table, poses


def _queries(args: argparse.Namespace, truth_table: dict | None, map_camera):
    from ..localization import QueryImage
    from ..utils.images import list_images, read_image

    queries = []
    if args.image_topic:
        if len(args.queries) != 1:
            raise ValueError("with --image-topic give exactly one ROS bag")
        from ..maps import load_map

        bag = load_map(args.queries[0], kind="rosbag", image_topic=args.image_topic)
        for kf in bag.keyframes():
            queries.append(QueryImage(kf.name.replace(" ", "_"), kf.load_image, kf.camera, None))
    else:
        for path, name in list_images(args.queries):
            queries.append(QueryImage(name, (lambda p=path: read_image(p)), None, path))
    if not queries:
        raise FileNotFoundError(f"no query images in {args.queries}")
    for query in queries:
        if args.camera == "map":
            query.camera = map_camera
        elif args.camera != "auto":
            query.camera = parse_camera(args.camera)
        elif query.camera is None and truth_table is not None:
            known = _lookup(truth_table, query.name)
            if known is not None and known.camera is not None:
                query.camera = known.camera
    return queries


def run(args: argparse.Namespace) -> int:
    """Localize every query; print a line each, the summary, and where the outputs went."""
    import cv2

    from ..evaluation.pose_errors import (align_similarity, format_summary, plot_localization, pose_errors,
                                          summarize_errors)
    from ..localization import Localizer, LocalizerConfig, PoseEstimationConfig, SceneMap
    from ..localization.results import write_hloc_poses, write_results_json
    from ..localization.visualize import localization_figure
    from ..utils.images import read_image
    from ..utils.io import atomic_path
    from ..utils.threads import configure_threads

    configure_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_load = time.perf_counter()
    scene = SceneMap.load(args.map)
    config = LocalizerConfig(num_retrieved=args.num_retrieved, covisibility_clustering=not args.no_clustering,
                             max_places=args.max_places, min_inliers=args.min_inliers, default_fov_deg=args.default_fov,
                             pose=PoseEstimationConfig(ransac_max_error=args.ransac_max_error))
    localizer = Localizer(scene, config, device=args.device, matcher=args.matcher)
    load_seconds = time.perf_counter() - t_load
    cameras = {(im.camera.model, im.camera.width, im.camera.height, tuple(im.camera.params)) for im in scene.images}
    map_camera = scene.images[0].camera if len(cameras) == 1 else None
    if args.camera == "map" and map_camera is None:
        raise ValueError(f"{args.map}: the map has {len(cameras)} cameras; --camera map needs exactly one")
    truth_table, truth_poses = _ground_truth(args.ground_truth) if args.ground_truth else (None, None)
    queries = _queries(args, truth_table, map_camera)
    print(f"{scene.summary()}\nloaded in {load_seconds:.1f} s; localizing {len(queries)} queries")

    results = localizer.localize_many(queries)
    for result in results:
        status = (f"{result.num_inliers} inliers / {result.num_correspondences}" if result.success
                  else f"FAILED ({result.message})")
        print(f"{result.name}: {status}, place of {len(result.place)} images, "
              f"{1000 * result.timings['total']:.0f} ms")

    extra = {"map": str(Path(args.map).resolve()), "map_load_s": load_seconds, "config": {
        "num_retrieved": args.num_retrieved, "clustering": not args.no_clustering, "min_inliers": args.min_inliers,
        "ransac_max_error": args.ransac_max_error, "matcher": localizer.matcher.describe_config()}}
    outputs = ["poses.txt (hloc format)", "results.json"]
    if truth_poses is not None:
        estimated, truth = {}, {}
        for result in results:
            known = _lookup(truth_table, result.name)
            if known is None:
                logger.warning("%s has no ground-truth pose in %s", result.name, args.ground_truth)
                continue
            truth[result.name] = known.pose
            estimated[result.name] = result.T_world_cam
        map_poses = {im.name: im.pose for im in scene.images}
        if not scene.is_metric:
            # An SfM map has its own frame and scale: a similarity from the map images brings it onto the truth.
            reference = {name: _lookup(truth_table, name).pose for name in map_poses if _lookup(truth_table, name)}
            similarity = align_similarity({n: map_poses[n] for n in reference}, reference)
            estimated = {n: None if T is None else similarity.transform_pose(T) for n, T in estimated.items()}
            map_poses = {n: similarity.transform_pose(T) for n, T in map_poses.items()}
            extra["alignment"] = {"scale": similarity.scale, "from_map_images": len(reference)}
            print(f"SfM map aligned to the ground truth by a similarity (scale {similarity.scale:.4f}) "
                  f"from {len(reference)} map images")
        errors = pose_errors(estimated, truth)
        summary = summarize_errors(errors)
        extra["evaluation"] = {"summary": summary, "errors": {n: {"translation_m": e[0], "rotation_deg": e[1]}
                                                              for n, e in errors.items()}}
        for name, (dt, dr) in errors.items():
            print(f"  {name}: {100 * dt:.2f} cm, {dr:.3f} deg" if np.isfinite(dt) else f"  {name}: not localized")
        print(format_summary(summary))
        plot_localization(out / "localization.png", map_poses, truth, estimated,
                          f"{Path(args.map).name}: {format_summary(summary)}")
        outputs.append("localization.png (map cameras, queries, errors)")

    write_hloc_poses(out / "poses.txt", results)
    write_results_json(out / "results.json", results, extra)
    for k, (query, result) in enumerate(zip(queries[: args.matches_png], results)):
        image_for = {im.name: im.image_path for im in scene.images}

        def load_map_image(name: str):
            if image_for.get(name) is None:
                raise FileNotFoundError(f"the map has no image file for {name}")
            return read_image(image_for[name])

        try:
            figure = localization_figure(query.load(), result, load_map_image, scene)
        except FileNotFoundError as exc:
            logger.warning("no match picture for %s: %s", result.name, exc)
            continue
        with atomic_path(out / f"matches_{k:03d}.png", suffix=".png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
        if k == 0:
            outputs.append("matches_NNN.png (inlier matches)")
    timing = np.median([r.timings["total"] for r in results])
    print(f"{sum(r.success for r in results)}/{len(results)} localized, median {1000 * timing:.0f} ms per query")
    print(f"outputs in {out}/: {', '.join(outputs)}")
    return 0
