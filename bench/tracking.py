"""Tracking a stream vs localizing every frame independently, on a synthetic-world sequence.

Builds the 3-D map of the day mission (SIFT, triangulated from its poses, the default global
describer) and localizes the dusk mission's frames in order three times: each frame independently
(global retrieval -> places -> matching -> PnP), as one stream through `hierloc.localization.Tracker`
(around the previous pose while tracking holds, the pose estimated again on its inliers with a 3 px threshold,
global retrieval when lost or when that check fails), and through the Tracker with
optical flow on ("tracking + flow": the previous frame's inlier keypoints followed by Lucas-Kanade flow and
PnP on their 3-D points, full localizations in between). Reports per-frame median and mean time (wall clock
and process CPU time: other jobs on the machine slow the wall clock, so read ratios), localized frames, pose
errors (median, 95th percentile, max), which path served each frame, the stage medians (for the flow frames:
flow and PnP) and the speed-ups against the independent mode.

Usage: python bench/tracking.py [--frames 200] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import dataclasses
import time

import numpy as np

from hierloc.evaluation.pose_errors import pose_errors, summarize_errors
from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
from hierloc.localization.localizer import summarize_timings
from hierloc.localization.tracking import Tracker, TrackingConfig
from hierloc.maps.synthetic import make_synthetic_map
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads


def summarize(results, truth: dict, seconds: list[float], cpu_seconds: list[float]) -> dict:
    """Localized count, errors, wall and CPU time per frame, the paths that served the frames, stage medians."""
    per_frame = pose_errors({r.name: r.T_world_cam for r in results}, truth)
    errors = summarize_errors(per_frame)
    localized = np.array([e for e in per_frame.values() if np.isfinite(e[0])]).reshape(-1, 2)
    paths: dict[str, int] = {}
    for result in results:
        paths[result.retrieval_path] = paths.get(result.retrieval_path, 0) + 1
    flow_frames = [r for r in results if r.retrieval_path == "flow"]
    return {"localized": errors["num_localized"], "frames": len(results),
            "median_translation_cm": 100 * errors["median_translation_m"],
            "median_rotation_deg": errors["median_rotation_deg"],
            "p95_translation_cm": 100 * float(np.percentile(localized[:, 0], 95)) if len(localized) else None,
            "max_translation_cm": 100 * float(localized[:, 0].max()) if len(localized) else None,
            "p95_rotation_deg": float(np.percentile(localized[:, 1], 95)) if len(localized) else None,
            "max_rotation_deg": float(localized[:, 1].max()) if len(localized) else None,
            "ms_per_frame_median": 1e3 * float(np.median(seconds)), "ms_per_frame_mean": 1e3 * float(np.mean(seconds)),
            "cpu_ms_per_frame_median": 1e3 * float(np.median(cpu_seconds)),
            "cpu_ms_per_frame_mean": 1e3 * float(np.mean(cpu_seconds)),
            "paths": paths,
            "stage_ms_median": {stage: 1e3 * value["median_s"] for stage, value in summarize_timings(results).items()},
            "flow_frames_stage_ms_median": {stage: 1e3 * float(np.median([r.timings[stage] for r in flow_frames]))
                                            for stage in ("flow", "pose", "total")} if flow_frames else {},
            "flow_frames_median_points": float(np.median([r.num_correspondences for r in flow_frames]))
            if flow_frames else None,
            "flow_frames_median_inliers": float(np.median([r.num_inliers for r in flow_frames]))
            if flow_frames else None}


def main() -> None:
    """Build the map, run both modes, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    configure_threads(args.threads)
    world = make_synthetic_map(num_missions=2, frames_per_mission=args.frames, image_size=(args.width, args.height),
                               seed=0)
    reference, stream = list(world.missions)[:2]
    config = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=3, global_model=GlobalConfig())
    t0 = time.perf_counter()
    scene, _ = build_scene_map(world.select([reference]), config, progress=False)
    build_seconds = time.perf_counter() - t0
    localizer = Localizer(scene, LocalizerConfig(num_retrieved=5))
    frames = world.missions[stream].keyframes
    images = [kf.load_image() for kf in frames]  # decoded once: both modes time localization only
    localizer.localize(images[0], frames[0].camera, "warm-up")
    localizer.localize(images[1], frames[1].camera, "warm-up")  # the second call of a size traces the network
    truth = {kf.name: kf.pose for kf in frames}
    report = {"frames": len(frames), "image_size": [args.width, args.height], "threads": args.threads,
              "map_build_seconds": build_seconds, "modes": {}}
    # "flow/1": a full localization after every flow frame (accuracy closest to tracking's, half the speed-up).
    modes = {"independent": None, "tracking": TrackingConfig(optical_flow=False),
             "tracking + flow": TrackingConfig(optical_flow=True),
             "tracking + flow/1": TrackingConfig(optical_flow=True, flow_refresh_frames=1)}
    report["tracking_configs"] = {mode: dataclasses.asdict(config) for mode, config in modes.items() if config}
    for mode, tracking_config in modes.items():
        tracker = Tracker(localizer, tracking_config) if tracking_config is not None else None
        results, seconds, cpu_seconds = [], [], []
        for kf, image in zip(frames, images):
            t0, c0 = time.perf_counter(), time.process_time()
            result = (localizer.localize(image, kf.camera, kf.name) if tracker is None
                      else tracker.track(image, kf.camera, kf.name))
            seconds.append(time.perf_counter() - t0)
            cpu_seconds.append(time.process_time() - c0)
            results.append(result)
        report["modes"][mode] = summarize(results, truth, seconds, cpu_seconds)
    independent = report["modes"]["independent"]
    for mode in list(modes)[1:]:
        row = report["modes"][mode]
        row["speedup_median"] = independent["ms_per_frame_median"] / row["ms_per_frame_median"]
        row["speedup_mean"] = independent["ms_per_frame_mean"] / row["ms_per_frame_mean"]
        row["cpu_speedup_median"] = independent["cpu_ms_per_frame_median"] / row["cpu_ms_per_frame_median"]
        row["cpu_speedup_mean"] = independent["cpu_ms_per_frame_mean"] / row["cpu_ms_per_frame_mean"]
    report["speedup_median"] = report["modes"]["tracking"]["speedup_median"]  # kept from the two-mode report
    print(f"{len(frames)} frames ({args.width}x{args.height}) against a {len(scene)}-keyframe map, "
          f"{args.threads} threads")
    print(f"{'mode':17s} {'localized':>9s} {'cm p50':>7s} {'p95':>6s} {'max':>6s} {'deg p50':>8s} {'max':>6s} "
          f"{'ms p50':>7s} {'mean':>6s} {'cpu p50':>8s} {'mean':>6s}  paths")
    for mode, row in report["modes"].items():
        print(f"{mode:17s} {row['localized']:5d}/{row['frames']:<3d} {row['median_translation_cm']:7.2f} "
              f"{row['p95_translation_cm']:6.2f} {row['max_translation_cm']:6.2f} {row['median_rotation_deg']:8.3f} "
              f"{row['max_rotation_deg']:6.2f} {row['ms_per_frame_median']:7.1f} {row['ms_per_frame_mean']:6.1f} "
              f"{row['cpu_ms_per_frame_median']:8.1f} {row['cpu_ms_per_frame_mean']:6.1f}  {row['paths']}")
    for mode, row in report["modes"].items():
        print(f"{mode} stage medians (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in row["stage_ms_median"].items()))
        if row["flow_frames_stage_ms_median"]:
            print(f"{mode} flow frames (ms): " + ", ".join(
                f"{k} {v:.1f}" for k, v in row["flow_frames_stage_ms_median"].items())
                + f"; {row['flow_frames_median_points']:.0f} points followed, "
                f"{row['flow_frames_median_inliers']:.0f} inliers (medians)")
    for mode in list(modes)[1:]:
        row = report["modes"][mode]
        print(f"{mode} is {row['speedup_median']:.2f}x faster per frame than independent (median; mean "
              f"{row['speedup_mean']:.2f}x; CPU time: median {row['cpu_speedup_median']:.2f}x, mean "
              f"{row['cpu_speedup_mean']:.2f}x)")
    if args.json:
        atomic_write_text(args.json, to_json_text(report, indent=2))
        print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
