"""Strecha leave-one-out localization: each image is localized against a 3-D map of the others.

For every scene and every left-out image: the map is triangulated from the ground-truth poses of
the other images (or reconstructed by SfM with --mode sfm, then aligned to the ground truth by a
similarity from the map images); the left-out image is localized (retrieval of --num-retrieved
keyframes, covisibility places, matching, pycolmap PnP) and compared with its ground-truth pose.
Methods run side by side in one process, so their timings share the machine's state. Features of
a scene are extracted once per method (the left-out image's features are the same whether it is
in the map or the query) and pair matches are cached across the leave-one-out maps; the global
(retrieval) network is adapted to each map without the left-out image.

Prints a table, writes JSON (--json) and one PNG per scene and method (camera positions, errors).
Timings: wall clock per stage, and the process CPU time of the query (cpu), which on a machine
shared with other jobs is the steadier number; with --threads 1 it is the single-core cost.

With --synthetic N, the synthetic world is localized as well: a map of its day loop (N frames,
640x480, exact poses), queries from the dusk loop, one at a time and in batch mode (the next
query decoded and described by the networks while the current one is matched and posed).
--resize-max 640 runs every method on images whose long side is 640 (Strecha: 640x427), the
query size of a robot's camera; by default Strecha runs at full resolution (1536x1024).
`sift-fast` is hierloc's CPU fast path (hierloc.features.registry): SIFT at 512 px with 1024
keypoints, more accurate on Strecha than SIFT at 1024 px with 2048 and a third of its time.
`xfeat-fast` describes 1536x1024 frames at 800 px, with subpixel keypoints; --global-resize
sets the longest side the retrieval network sees (part of the map's describer, default 640).
The table's <2cm,.1d column is the share of queries within 2 cm and 0.1 deg.

Usage: python bench/localize.py --json out.json          # every Strecha scene of ../shared/data
       python bench/localize.py --scene path/to/strecha-scene [--scene ...]
       [--methods sift-1024,sift-fast,xfeat-fast] [--resize-max 640] [--global-resize 640] [--synthetic 40]
       [--threads 1] [--json out.json]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from hierloc.evaluation.pose_errors import (
    DEFAULT_THRESHOLDS,
    align_similarity,
    format_summary,
    plot_localization,
    pose_error,
    summarize_errors,
)
from hierloc.features import make_extractor, make_matcher
from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, MatchCache, build_scene_map
from hierloc.localization.build import attach_global_index
from hierloc.localization.retrieval import describe_prepared_images, global_describer
from hierloc.maps import load_map
from hierloc.utils.images import read_image
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

# name -> (features, feature options, matcher)
# LightGlue's attention grows with the square of the keypoints: 2048 per image as hloc's LightGlue set-ups.
METHODS = {
    "sift": ("sift", {}, "mnn-ratio"),
    "sift-1024": ("sift", {"resize_max": 1024, "max_keypoints": 2048}, "mnn-ratio"),
    # hierloc's fast SIFT (hierloc.features.registry): 512 px, 1024 keypoints; and the same at 640 px.
    "sift-fast": ("sift-fast", {}, "mnn-ratio"),
    "sift-640-1k": ("sift", {"resize_max": 640, "max_keypoints": 1024}, "mnn-ratio"),
    "xfeat": ("xfeat", {}, "mnn"),
    "xfeat-2048": ("xfeat", {"max_keypoints": 2048}, "mnn"),
    # hierloc's CPU fast path (hierloc.features.registry): XFeat at 800 px with subpixel keypoints.
    "xfeat-fast": ("xfeat-fast", {}, "mnn"),
    "xfeat-800": ("xfeat", {"max_keypoints": 2048, "resize_max": 800}, "mnn"),  # the same without subpixel
    "xfeat+lighterglue": ("xfeat", {"max_keypoints": 2048}, "lighterglue"),
    "aliked+lightglue": ("aliked", {"resize_max": 1024, "max_keypoints": 2048}, "lightglue"),
}
# Strecha's ground truth is good to millimetres: the share within 2 cm and 0.1 deg tells methods apart.
FINE_THRESHOLD = (0.02, 0.1)
STAGES = ("decode", "retrieval", "local_features", "clustering", "matching", "pose", "total")
# --stages: retrieval and local features one after the other, at the same time, or whichever the first
# warm queries measure faster (the localizer's default; hierloc.localization.stage_modes).
STAGE_MODES = {"auto": None, "concurrent": True, "sequential": False}
SHARED_STRECHA = Path(__file__).resolve().parents[2] / "shared" / "data" / "strecha"


def method_setup(method: str, resize_max: int | None) -> tuple[str, dict, str]:
    """(features, feature options, matcher) of a method, with --resize-max applied."""
    features, options, matcher = METHODS[method]
    options = dict(options)
    if resize_max:
        options["resize_max"] = min(resize_max, options.get("resize_max") or resize_max)
    return features, options, matcher


def summarize_rows(rows: list[dict]) -> dict:
    """Pose-error summary of per-query rows, with median stage timings and CPU time."""
    stats = summarize_errors({r["query"]: (r["translation_m"], r["rotation_deg"]) for r in rows},
                             (*DEFAULT_THRESHOLDS, FINE_THRESHOLD))
    stats["median_timings_s"] = {st: statistics.median(r["timings_s"].get(st, 0.0) for r in rows) for st in STAGES}
    stats["median_cpu_s"] = statistics.median(r["cpu_s"] for r in rows)
    return stats


def timed_load(keyframe) -> tuple[np.ndarray, float]:
    """A keyframe's image and the seconds its decoding took."""
    t0 = time.perf_counter()
    image = keyframe.load_image()
    return image, time.perf_counter() - t0


def run_scene(scene_dir: Path, methods: list[str], args: argparse.Namespace, out: Path) -> dict:
    """Leave-one-out over one scene for every method; returns per-method results."""
    scene_map = load_map(scene_dir)
    keyframes = list(scene_map.keyframes())
    truth = {kf.name: kf.pose for kf in keyframes}
    images = {kf.name: kf.load_image() for kf in keyframes}
    caches = {}
    for method in methods:
        features, options, matcher = method_setup(method, args.resize_max)
        extractor = make_extractor(features, **options)
        caches[method] = MatchCache.open(out / f"{scene_map.name}_{method}_matches.h5", extractor.describe_config(),
                                         make_matcher(matcher, extractor.describe_config()).describe_config())
    results = {method: [] for method in methods}
    for kf in keyframes:
        others = [k.name for k in keyframes if k.name != kf.name]
        t0 = time.perf_counter()
        describer = global_describer(GlobalConfig(resize_max=args.global_resize), lambda: [images[n] for n in others])
        descriptors = describe_prepared_images(describer, [describer.prepare(images[n]) for n in others],
                                               progress=False)
        global_seconds = time.perf_counter() - t0
        query_image, decode_seconds = timed_load(kf)
        for method in methods:
            features, options, matcher = method_setup(method, args.resize_max)
            config = MapBuildConfig(features=features, feature_options=options, matcher=matcher, pairs=args.pairs,
                                    num_neighbors=args.num_neighbors, mode=args.mode,
                                    global_model=GlobalConfig(model="none"))
            t0 = time.perf_counter()
            scene, report = build_scene_map(scene_map, config, exclude=[kf.name], match_cache=caches[method],
                                            feature_cache=out / f"{scene_map.name}_{method}_features.h5",
                                            progress=False)
            attach_global_index(scene, describer, descriptors, others)
            build_seconds = time.perf_counter() - t0
            localizer = Localizer(scene, LocalizerConfig(num_retrieved=args.num_retrieved,
                                                         concurrent_stages=STAGE_MODES[args.stages]))
            for _ in range(3):  # the 2nd call traces the global network, the 3rd still warms it up
                localizer.retrieve(query_image)
            cpu0 = time.process_time()
            result = localizer.localize(query_image, kf.camera, kf.name)
            cpu = time.process_time() - cpu0
            result.timings["decode"] = decode_seconds
            result.timings["total"] += decode_seconds  # end to end: from the image file to the pose
            estimate = result.T_world_cam
            alignment = None
            if estimate is not None and not scene.is_metric:
                similarity = align_similarity({im.name: im.pose for im in scene.images}, truth)
                estimate = similarity.transform_pose(estimate)
                alignment = similarity.scale
            dt, dr = pose_error(estimate, kf.pose) if estimate is not None else (float("inf"), float("inf"))
            results[method].append({
                "query": kf.name, "success": result.success, "translation_m": dt, "rotation_deg": dr,
                "inliers": result.num_inliers, "correspondences": result.num_correspondences,
                "keypoints": result.num_keypoints, "place": result.place, "retrieved": result.retrieved,
                "timings_s": result.timings, "cpu_s": cpu, "map_points": scene.num_points,
                "map_build_s": build_seconds, "map_global_s": global_seconds, "sim3_scale": alignment,
                "stage_mode": localizer.stage_mode,
                "estimate_T_world_cam": None if estimate is None else np.asarray(estimate).tolist()})
            print(f"{scene_map.name} {kf.name} {method:18s} "
                  + (f"{100 * dt:6.2f} cm {dr:6.3f} deg" if np.isfinite(dt) else "   FAILED        ")
                  + f"  {result.num_inliers:5d} inliers  {1000 * result.timings['total']:6.0f} ms "
                    f"(cpu {1000 * cpu:5.0f} ms)  load {os.getloadavg()[0]:.1f}", flush=True)
    summary = {}
    for method in methods:
        rows = results[method]
        stats = summarize_rows(rows)
        stats["median_map_build_s"] = statistics.median(r["map_build_s"] for r in rows)
        summary[method] = {"summary": stats, "queries": rows}
        estimated = {r["query"]: None if r["estimate_T_world_cam"] is None else np.array(r["estimate_T_world_cam"])
                     for r in rows}
        png = plot_localization(out / f"{scene_map.name}_{method}.png", {}, truth, estimated,
                                f"{scene_map.name}, {method}, leave-one-out: {format_summary(stats)}")
        summary[method]["png"] = str(png)
    return summary


def run_synthetic(methods: list[str], args: argparse.Namespace, out: Path) -> dict:
    """Synthetic world at 640x480: map of the day loop, dusk queries one by one and in batch mode."""
    from hierloc.localization.localizer import QueryImage
    from hierloc.maps import make_synthetic_map
    from hierloc.maps.synthetic import write_synthetic_dataset

    world = make_synthetic_map(num_missions=2, frames_per_mission=args.synthetic, image_size=(640, 480), seed=0)
    # Queries are read from PNG files, so the decode stage is a real one.
    folder = write_synthetic_dataset(world.select(["dusk"]), out / "synthetic_queries")
    keyframes = list(world.missions["dusk"].keyframes)
    truth = {kf.name: kf.pose for kf in keyframes}
    map_truth = {kf.name: kf.pose for kf in world.missions["day"].keyframes}
    files = {kf.name: folder / "dusk" / Path(kf.name).name for kf in keyframes}
    summary = {}
    for method in methods:
        features, options, matcher = method_setup(method, args.resize_max)
        config = MapBuildConfig(features=features, feature_options=options, matcher=matcher, pairs="sequential",
                                num_neighbors=args.num_neighbors,
                                global_model=GlobalConfig(resize_max=args.global_resize))
        t0 = time.perf_counter()
        scene, _ = build_scene_map(world.select(["day"]), config, progress=False)
        build_seconds = time.perf_counter() - t0
        localizer = Localizer(scene, LocalizerConfig(num_retrieved=args.num_retrieved,
                                                     concurrent_stages=STAGE_MODES[args.stages]))
        warm = keyframes[0].load_image()
        for _ in range(3):  # the second call traces the global network, the third still warms it
            localizer.localize(warm, keyframes[0].camera, "warm-up")
        queries = [QueryImage(kf.name, (lambda f=files[kf.name]: read_image(f)), kf.camera) for kf in keyframes]
        rows = []
        for query in queries:  # one at a time, as a robot's frames arrive
            t0 = time.perf_counter()
            image = query.load()
            decode_seconds = time.perf_counter() - t0
            cpu0 = time.process_time()
            result = localizer.localize(image, query.camera, query.name)
            result.timings["decode"] = decode_seconds
            result.timings["total"] += decode_seconds
            rows.append((result, time.process_time() - cpu0))
        batch = {}
        for overlap in (False, True):
            t0 = time.perf_counter()
            localizer.localize_many(queries, progress=False, overlap=overlap)
            batch["overlapped" if overlap else "sequential"] = (time.perf_counter() - t0) / len(queries)
        errors = {r.name: pose_error(r.T_world_cam, truth[r.name]) if r.success else (float("inf"), float("inf"))
                  for r, _ in rows}
        query_rows = [{"query": r.name, "success": r.success, "translation_m": errors[r.name][0],
                       "rotation_deg": errors[r.name][1], "inliers": r.num_inliers, "timings_s": r.timings,
                       "cpu_s": cpu} for r, cpu in rows]
        stats = summarize_rows(query_rows)
        stats["median_map_build_s"] = build_seconds
        stats["batch_s_per_query"] = batch
        estimated = {r.name: r.T_world_cam for r, _ in rows}
        png = plot_localization(out / f"synthetic_{method}.png", map_truth, truth, estimated,
                                f"synthetic world 640x480, {method}: {format_summary(stats)}")
        summary[method] = {"summary": stats, "png": str(png), "queries": query_rows}
        print(f"synthetic {method:18s} {format_summary(stats)}; batch mode "
              f"{1000 * batch['sequential']:.0f} ms/query sequential, {1000 * batch['overlapped']:.0f} overlapped",
              flush=True)
    return summary


def main() -> None:
    """Run the benchmark and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", action="append", type=Path,
                        help="Strecha scene folder (repeat; default: every scene in ../shared/data/strecha)")
    parser.add_argument("--no-strecha", action="store_true", help="only the synthetic world")
    parser.add_argument("--resize-max", type=int, default=None,
                        help="long image side for local features of map and queries (default: full resolution)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="FRAMES",
                        help="also localize the synthetic world (640x480) with a map of this many frames")
    parser.add_argument("--methods", default="sift,xfeat+lighterglue,aliked+lightglue",
                        help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--mode", default="triangulation", choices=["triangulation", "sfm"])
    parser.add_argument("--pairs", default="poses", help="map pairs: poses (default), exhaustive, retrieval")
    parser.add_argument("--num-neighbors", type=int, default=6, help="pairs per map image (default 6)")
    parser.add_argument("--num-retrieved", type=int, default=5, help="keyframes retrieved per query (default 5)")
    parser.add_argument("--stages", choices=sorted(STAGE_MODES), default="auto",
                        help="retrieval and local features of a query: auto (default: the faster of the two modes, "
                             "timed on the first warm queries), concurrent or sequential")
    parser.add_argument("--global-resize", type=int, default=640,
                        help="longest image side for the retrieval network (default 640, the describer's own)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenCV threads (default 1: on a shared machine, 2 threads spin-wait for each "
                             "other and inflate both wall and CPU times several-fold)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_localize"))
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    threads = configure_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    if args.no_strecha:
        args.scene = []
    elif not args.scene:
        args.scene = sorted(d for d in SHARED_STRECHA.glob("*") if (d / "gt_dense_cameras").is_dir())
        if not args.scene and not args.synthetic:
            parser.error(f"no Strecha scenes in {SHARED_STRECHA}: pass --scene or --synthetic")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": threads,
                          "load_average_start": os.getloadavg()},
              "settings": {k: str(v) for k, v in vars(args).items()}, "scenes": {}}
    for scene_dir in args.scene:
        report["scenes"][scene_dir.name] = run_scene(scene_dir, methods, args, args.out)
    if args.synthetic:
        report["scenes"]["synthetic"] = run_synthetic(methods, args, args.out)
    report["machine"]["load_average_end"] = os.getloadavg()

    header = (f"\n{'scene':16s} {'method':18s} {'loc.':>6s} {'<0.25m,2d':>9s} {'<0.5m,5d':>9s} {'<5m,10d':>8s} "
              f"{'<2cm,.1d':>8s} "
              f"{'med cm':>7s} {'med deg':>8s} | " + " ".join(f"{s[:8]:>8s}" for s in STAGES) + f" {'cpu':>6s}")
    print(header + "\n" + "-" * len(header))
    for scene, methods_result in report["scenes"].items():
        for method, data in methods_result.items():
            s = data["summary"]
            recall = list(s["recall"].values())
            timings = " ".join(f"{1000 * s['median_timings_s'][st]:8.0f}" for st in STAGES)
            print(f"{scene:16s} {method:18s} {s['num_localized']:3d}/{s['num_queries']:<2d} {recall[0]:8.1f}% "
                  f"{recall[1]:8.1f}% {recall[2]:7.1f}% {recall[3]:7.1f}% {100 * s['median_translation_m']:7.2f} "
                  f"{s['median_rotation_deg']:8.3f} | {timings} {1000 * s['median_cpu_s']:6.0f}")
    print("timings: median milliseconds per query and stage "
          "(wall clock; cpu = CPU time of the process for the whole query)")
    modes = {}
    for methods_result in report["scenes"].values():
        for method, data in methods_result.items():
            chosen = [q["stage_mode"]["chosen"] for q in data.get("queries", []) if "stage_mode" in q]
            if chosen:
                modes.setdefault(method, chosen[-1])
    print(f"retrieval and local features (--stages {args.stages}): "
          + ", ".join(f"{m} {mode or 'still timing both'}" for m, mode in modes.items())
          + "; a concurrent stage's ms overlap, so they add up to more than the total")
    for method, data in report["scenes"].get("synthetic", {}).items():
        batch = data["summary"]["batch_s_per_query"]
        print(f"synthetic batch mode, {method}: {1000 * batch['sequential']:.0f} ms per query with stages in sequence, "
              f"{1000 * batch['overlapped']:.0f} ms with the next query's networks overlapping")
    print(f"machine load average {report['machine']['load_average_start']} -> {report['machine']['load_average_end']}")
    if args.json:
        atomic_write_text(args.json, to_json_text(report, indent=2, default=float))
        print(f"JSON written to {args.json}")
    print(f"PNGs in {args.out}/")


if __name__ == "__main__":
    main()
