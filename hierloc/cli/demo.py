"""`hierloc demo`: the main job end to end on the embedded synthetic world.

Renders a small world with two missions under different lighting, indexes the first, queries
with the second, prints recall@1/5/10 and timings, and writes the index and a PNG of retrievals.
Then builds a 3-D map of the first mission (SIFT, triangulated from its poses), localizes every
frame of the second in 6-DoF and prints the pose errors (and a PNG of them).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.io import atomic_path, atomic_write_text
from ..utils.threads import configure_threads
from .common import add_threads_argument

logger = logging.getLogger("hierloc")


def register(subparsers) -> None:
    """Add the `demo` subcommand."""
    p = subparsers.add_parser("demo", help="index a synthetic world, localize another mission: recall and pose errors")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--frames", type=int, default=60, help="frames per mission (default 60)")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="auto",
                   help="auto: trained mobilenetvlad if its weights are installed, else the ImageNet "
                        "MobileNetV2 + NetVLAD initialised by k-means on the map images")
    p.add_argument("--max-distance", type=float, default=1.5, help="a retrieved keyframe is right within this many metres")
    p.add_argument("--max-angle", type=float, default=45.0, help="... and this many degrees of viewing direction")
    p.add_argument("--pca-dims", type=int, default=32, help="also evaluate search after PCA to this size (0: no)")
    p.add_argument("--no-localize", dest="localize", action="store_false",
                   help="skip the 6-DoF part (3-D map of the reference mission, poses of the queries)")
    add_threads_argument(p)
    p.set_defaults(func=run)


def choose_model(requested: str, map_images: list[np.ndarray]):
    """The model for the demo and a line saying which and why."""
    from ..extraction import image_to_tensor
    from ..models import build_model, load_model, resolve_weights
    from ..models.aggregation import initialize_vlad_clusters
    from ..models.weights import WeightsNotFoundError

    if requested not in ("auto", "mobilenetvlad_imagenet"):
        return load_model(requested), f"{requested} (its default weights, see `hierloc models`)"
    if requested == "auto":
        try:
            resolve_weights("mobilenetvlad_depth-0.35")
            return load_model("mobilenetvlad"), "mobilenetvlad with its trained weights"
        except WeightsNotFoundError:
            pass
    try:
        model = load_model("mobilenetvlad_imagenet", weights=None)
    except WeightsNotFoundError as exc:
        logger.warning("%s: falling back to the untrained mobilenetvlad", exc)
        return build_model("mobilenetvlad"), "mobilenetvlad, untrained (no weights installed)"
    # The standard way to start NetVLAD without training: k-means on the map's own local features.
    initialize_vlad_clusters(model, (image_to_tensor(im) for im in map_images), features_per_image=200)
    return model, "mobilenetvlad_imagenet: ImageNet MobileNetV2 1.0 + NetVLAD initialised by k-means on the map"


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where everything went."""
    from ..evaluation import pose_ground_truth, recall_at_n, retrieval_grid
    from ..extraction import GlobalExtractor
    from ..index.build import build_index
    from ..index.io import save_index
    from ..index.retriever import Retriever
    from ..maps.synthetic import make_synthetic_map

    configure_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    world = make_synthetic_map(num_missions=2, frames_per_mission=args.frames,
                               image_size=(args.width, args.height), seed=args.seed)
    reference_name, query_name = list(world.missions)[:2]
    reference = world.select([reference_name])
    queries = world.missions[query_name].keyframes
    print(f"synthetic world: missions {reference_name!r} (map, {len(reference)} frames) and {query_name!r} "
          f"(queries, {len(queries)} frames), {args.width}x{args.height}, rendered in "
          f"{time.perf_counter() - t_start:.1f} s")

    model, model_line = choose_model(args.model, [kf.load_image() for kf in reference.keyframes()])
    print(f"model: {model_line}")
    extractor = GlobalExtractor(model, device="cpu")
    index, _ = build_index(reference, extractor, model.name, store_poses=True)
    index_path = out / "index.h5"
    save_index(index, index_path)
    save_index(index, out / "index.pb")

    describe_times, query_descriptors = [], []
    for kf in tqdm(queries, desc="query descriptors", unit="img"):
        image = kf.load_image()
        t0 = time.perf_counter()
        query_descriptors.append(extractor.describe(image))
        describe_times.append(time.perf_counter() - t0)
    query_descriptors = np.stack(query_descriptors)
    reference_poses = np.stack([kf.pose for kf in reference.keyframes()])
    truth = pose_ground_truth(np.stack([kf.pose for kf in queries]), reference_poses, args.max_distance,
                              args.max_angle)
    results = {"model": model_line, "keyframes": len(index), "queries": len(queries),
               "queries_with_a_true_reference": int(truth.any(1).sum()),
               "descriptor_ms_median": float(np.median(describe_times) * 1e3), "variants": {}}
    variants = [("exact", None)] + ([(f"pca{args.pca_dims}", args.pca_dims)] if args.pca_dims else [])
    ranked = None
    for label, pca_dims in variants:
        retriever = Retriever(index, pca_dims=pca_dims)
        t0 = time.perf_counter()
        for d in query_descriptors:  # one at a time, as a robot would query
            retriever.search(d, k=10)
        search_ms = (time.perf_counter() - t0) / len(query_descriptors) * 1e3
        _, rows = retriever.search(query_descriptors, k=10)
        recall = recall_at_n(rows, truth, (1, 5, 10))
        results["variants"][label] = {"recall": {f"@{n}": r for n, r in recall.items()}, "search_ms_mean": search_ms,
                                      "search_dim": retriever.search_dim}
        if ranked is None:
            ranked = rows
    print(f"\n{'search':10s} {'dim':>6s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'search ms':>10s}")
    for label, v in results["variants"].items():
        r = v["recall"]
        print(f"{label:10s} {v['search_dim']:6d} {r['@1']:6.3f} {r['@5']:6.3f} {r['@10']:6.3f} {v['search_ms_mean']:10.3f}")
    print(f"descriptor: {results['descriptor_ms_median']:.1f} ms median per {args.width}x{args.height} query")

    reference_images = [kf.load_image() for kf in reference.keyframes()]
    step = max(1, len(queries) // 8)
    rows_png = []
    for q in range(0, len(queries), step)[:8]:
        retrieved = [(reference_images[r], f"#{i + 1}", bool(truth[q, r])) for i, r in enumerate(ranked[q][:4]) if r >= 0]
        rows_png.append((queries[q].load_image(), f"query {q}", retrieved))
    grid_path = out / "retrievals.png"
    with atomic_path(grid_path, suffix=".png") as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(retrieval_grid(rows_png), cv2.COLOR_RGB2BGR))
    outputs = "index.h5 and index.pb (the index), retrievals.png (queries and their top 4, green = right place)"
    if args.localize:
        results["localization"] = localize_queries(reference, queries, model, index, out, args)
        outputs += (", map/ (3-D map), poses.txt (hloc format), localization.json and localization.png "
                    "(map cameras, queries and their errors)")
    results["total_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    print(f"\noutputs in {out}/: {outputs}, results.json; total {results['total_seconds']:.1f} s")
    return 0


def localize_queries(reference, queries, model, index, out: Path, args: argparse.Namespace) -> dict:
    """6-DoF: triangulate the map mission from its poses (SIFT), localize every query frame, print pose errors."""
    from ..evaluation.pose_errors import format_summary, plot_localization, pose_errors, summarize_errors
    from ..localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, build_scene_map
    from ..localization.build import attach_global_index
    from ..localization.localizer import summarize_timings
    from ..localization.results import write_hloc_poses, write_results_json

    t0 = time.perf_counter()
    config = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=3, global_model=GlobalConfig(model="none"))
    scene, report = build_scene_map(reference, config)
    # Retrieval reuses the demo's network and the descriptors of its index (same keyframes, same order).
    attach_global_index(scene, model, {"name": model.name, "weights": None, "resize_max": None}, index.descriptors,
                        list(index.names))
    scene.save(out / "map")
    build_seconds = time.perf_counter() - t0
    print(f"\n6-DoF localization: {scene.summary()} (built in {build_seconds:.1f} s)")
    localizer = Localizer(scene, LocalizerConfig(num_retrieved=5))
    results = [localizer.localize(kf.load_image(), kf.camera, kf.name) for kf in tqdm(queries, desc="localizing",
                                                                                        unit="query")]
    truth = {kf.name: kf.pose for kf in queries}
    estimated = {r.name: r.T_world_cam for r in results}
    errors = pose_errors(estimated, truth)
    summary = summarize_errors(errors)
    timings = summarize_timings(results)
    write_hloc_poses(out / "poses.txt", [r for r in results])
    write_results_json(out / "localization.json", results, {"evaluation": summary})
    plot_localization(out / "localization.png", {im.name: im.pose for im in scene.images}, truth, estimated,
                      f"synthetic world, {len(queries)} queries: {format_summary(summary)}")
    recall = summary["recall"]
    print(f"{'localized':>10s} {'<0.25m,2deg':>12s} {'<0.5m,5deg':>11s} {'<5m,10deg':>10s} {'median cm':>10s} "
          f"{'median deg':>11s} {'ms/query':>9s}")
    print(f"{summary['num_localized']:4d}/{summary['num_queries']:<5d} {recall['0.25m_2deg']:11.1f}% "
          f"{recall['0.5m_5deg']:10.1f}% {recall['5m_10deg']:9.1f}% {100 * summary['median_translation_m']:10.2f} "
          f"{summary['median_rotation_deg']:11.3f} {1000 * timings['total']['median_s']:9.0f}")
    return {"map": {"images": len(scene), "points": scene.num_points, "build_seconds": build_seconds},
            "pose_errors": summary, "timings": timings}
