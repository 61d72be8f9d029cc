"""Tracking a stream vs localizing every frame independently, on a synthetic-world sequence.

Builds the 3-D map of the day mission (SIFT, triangulated from its poses, the default global
describer) and localizes the dusk mission's frames in order twice: each frame independently
(global retrieval -> places -> matching -> PnP), and as one stream through `hierloc.localization.Tracker`
(around the previous pose while tracking holds, global retrieval when lost). Reports per-frame median
time, localized frames, median pose errors, which path served each frame, and the speed-up.

Usage: python bench/tracking.py [--frames 200] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hierloc.evaluation.pose_errors import pose_errors, summarize_errors
from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
from hierloc.localization.localizer import summarize_timings
from hierloc.localization.tracking import Tracker
from hierloc.maps.synthetic import make_synthetic_map
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads


def summarize(results, truth: dict, seconds: list[float]) -> dict:
    """Localized count, median errors, time per frame and the paths that served the frames."""
    errors = summarize_errors(pose_errors({r.name: r.T_world_cam for r in results}, truth))
    paths: dict[str, int] = {}
    for result in results:
        paths[result.retrieval_path] = paths.get(result.retrieval_path, 0) + 1
    return {"localized": errors["num_localized"], "frames": len(results),
            "median_translation_cm": 100 * errors["median_translation_m"],
            "median_rotation_deg": errors["median_rotation_deg"],
            "ms_per_frame_median": 1e3 * float(np.median(seconds)), "ms_per_frame_mean": 1e3 * float(np.mean(seconds)),
            "paths": paths,
            "stage_ms_median": {stage: 1e3 * value["median_s"] for stage, value in summarize_timings(results).items()}}


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
    for mode in ("independent", "tracking"):
        tracker = Tracker(localizer)
        results, seconds = [], []
        for kf, image in zip(frames, images):
            t0 = time.perf_counter()
            result = (localizer.localize(image, kf.camera, kf.name) if mode == "independent"
                      else tracker.track(image, kf.camera, kf.name))
            seconds.append(time.perf_counter() - t0)
            results.append(result)
        report["modes"][mode] = summarize(results, truth, seconds)
    independent, tracking = report["modes"]["independent"], report["modes"]["tracking"]
    report["speedup_median"] = independent["ms_per_frame_median"] / tracking["ms_per_frame_median"]
    print(f"{len(frames)} frames ({args.width}x{args.height}) against a {len(scene)}-keyframe map, "
          f"{args.threads} threads")
    print(f"{'mode':12s} {'localized':>9s} {'median cm':>10s} {'median deg':>11s} {'ms/frame p50':>13s} "
          f"{'mean':>7s}  paths")
    for mode, row in report["modes"].items():
        print(f"{mode:12s} {row['localized']:5d}/{row['frames']:<3d} {row['median_translation_cm']:10.2f} "
              f"{row['median_rotation_deg']:11.3f} {row['ms_per_frame_median']:13.1f} {row['ms_per_frame_mean']:7.1f}"
              f"  {row['paths']}")
    for mode, row in report["modes"].items():
        print(f"{mode} stage medians (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in row["stage_ms_median"].items()))
    print(f"tracking is {report['speedup_median']:.2f}x faster per frame (median)")
    if args.json:
        atomic_write_text(args.json, to_json_text(report, indent=2))
        print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
