"""`hierloc localize`: 6-DoF poses of query images (files, folders or a ROS bag) against a 3-D map."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .common import add_threads_argument
from .validators import field_of_view, non_negative_int, positive_float, positive_int

if TYPE_CHECKING:
    from ..pipelines.localizing import LocalizeRun, LocalizeStart


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
    p.add_argument("--default-fov", type=field_of_view, default=None,
                   help="horizontal field of view (deg) for queries without calibration or EXIF")
    p.add_argument("--ground-truth", default=None,
                   help="map source with the queries' true poses (Strecha scene, image folder + poses, COLMAP model): "
                        "prints errors; an SfM map is aligned to it first by a similarity from the map images")
    p.add_argument("--image-topic", default=None, help="queries from this image topic of a ROS bag")
    p.add_argument("--num-retrieved", type=non_negative_int, default=5,
                   help="keyframes retrieved per query (0: all map images)")
    p.add_argument("--no-clustering", action="store_true", help="match all retrieved keyframes as one place")
    p.add_argument("--max-places", type=positive_int, default=3, help="places tried per query (default 3)")
    p.add_argument("--min-inliers", type=positive_int, default=20, help="fewer PnP inliers is a failure (default 20)")
    p.add_argument("--ransac-max-error", type=positive_float, default=12.0, help="RANSAC inlier threshold, pixels (12)")
    p.add_argument("--matcher", default=None, choices=MATCHER_NAMES, help="override the map's matcher")
    p.add_argument("--matches-png", type=non_negative_int, default=4,
                   help="draw the inlier matches of the first N queries (default 4; 0: none)")
    p.add_argument("--sequence", action="store_true",
                   help="the queries are one stream in order (a folder of frames, a bag): localize each around "
                        "the previous pose while tracking holds, with global retrieval when lost")
    p.add_argument("--optical-flow", action="store_true",
                   help="with --sequence: follow the previous frame's inliers by optical flow and solve PnP on them "
                        "(several times faster; a full localization every few frames keeps drift bounded; "
                        "see the README's tracking table for its accuracy)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Localize every query (`hierloc.pipelines.localizing`); print a line each, the summary, and the outputs."""
    from ..localization import LocalizerConfig, PoseEstimationConfig
    from ..localization.tracking import TrackingConfig
    from ..pipelines.localizing import LocalizeConfig, localize_queries

    if args.optical_flow and not args.sequence:
        raise ValueError("--optical-flow follows a stream of frames: give --sequence as well")

    localizer = LocalizerConfig(num_retrieved=args.num_retrieved, covisibility_clustering=not args.no_clustering,
                                max_places=args.max_places, min_inliers=args.min_inliers,
                                default_fov_deg=args.default_fov,
                                pose=PoseEstimationConfig(ransac_max_error=args.ransac_max_error))
    config = LocalizeConfig(Path(args.map), list(args.queries), Path(args.out), image_topic=args.image_topic,
                            camera=args.camera, ground_truth=args.ground_truth, localizer=localizer,
                            matcher=args.matcher, matches_png=args.matches_png, device=args.device,
                            threads=args.threads, sequence=args.sequence,
                            tracking=TrackingConfig(optical_flow=True) if args.optical_flow else None)
    result = localize_queries(config, on_start=_print_start)
    _print_results(result)
    return 0


def _print_start(start: LocalizeStart) -> None:
    print(f"{start.map_summary}\nloaded in {start.load_seconds:.1f} s; localizing {start.num_queries} queries")


def _print_results(run: LocalizeRun) -> None:
    """A line per query, the ground-truth errors and summary, the success count and where the outputs went."""
    from ..evaluation.pose_errors import format_summary

    for result in run.results:
        status = (f"{result.num_inliers} inliers / {result.num_correspondences}" if result.success
                  else f"FAILED ({result.message})")
        print(f"{result.name}: {status}, place of {len(result.place)} images, "
              f"{1000 * result.timings['total']:.0f} ms ({result.retrieval_path})")
    outputs = ["poses.txt (hloc format)", "results.json"]
    evaluation = run.evaluation
    if evaluation is not None:
        if evaluation.alignment is not None:
            print(f"SfM map aligned to the ground truth by a similarity (scale {evaluation.alignment.scale:.4f}) "
                  f"from {evaluation.alignment.from_map_images} map images")
        for name, (dt, dr) in evaluation.errors.items():
            print(f"  {name}: {100 * dt:.2f} cm, {dr:.3f} deg" if np.isfinite(dt) else f"  {name}: not localized")
        print(format_summary(evaluation.summary))
    if run.localization_png is not None:
        outputs.append("localization.png (map cameras, queries, errors)")
    if run.matches_pngs:
        outputs.append("matches_NNN.png (inlier matches)")
    print(f"{run.num_localized}/{len(run.results)} localized, median {1000 * run.median_seconds:.0f} ms per query")
    print(f"outputs in {run.out}/: {', '.join(outputs)}")
