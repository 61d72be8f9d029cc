"""Sequence matching on Nordland summer -> winter: recall@1/5 by sequence length, per describer.

Every query is matched as the sequence of the N winter frames ending at it (`hierloc.sequences.sequence_rank`:
contrast enhancement, repeated frames left out, straight-line search over velocities 0.8..1.25) against
the summer traversal; same file name = same place, no tolerance. Methods:

    seqslam (published)   SeqSLAM as published: patch-normalised 64x32 frames, mean absolute differences,
                          contrast enhancement over 10 references only, every frame kept
    seqslam               the same frames with hierloc's defaults (contrast also over the previous 20
                          queries, repeated frames left out)
    densevlad             DenseVLAD fitted on summer (no PCA); descriptors cached as `hierloc evaluate`'s
    mobilenetvlad_imagenet  ImageNet MobileNetV2 + NetVLAD k-means-initialised on summer (frames enlarged to
                          a short side of 128, as the README's evaluation); cached likewise
    hog                   HOG of the 64x32 frames (4-pixel cells, 2x2-cell blocks)
    cnn-grid              ImageNet MobileNetV2 activations after layer_11 on frames enlarged 4 times,
                          kept as an 8x16 grid (no aggregation)
    combination           cnn-grid + hog + seqslam, their enhanced matrices summed

Repeated frames (the train stands still) are found from the patch-normalised frames for the frame
methods and from each describer's own descriptors for densevlad and mobilenetvlad_imagenet (as
`hierloc evaluate --sequence-length` does). Prints a table; `--json out.json` writes
{"nordland": {method: {length: {"r1", "r5", "seconds"}}}, "single_frame": {method: {"r1", "r5"}}, ...}.

    python bench/sequence.py --json out.json [--threads 2] [--methods seqslam hog] [--lengths 1 5 10 20]
                             [--velocities 0.9 0.95 1 1.05 1.1]
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

import numpy as np

from hierloc.datasets import read_nordland
from hierloc.evaluation import recall_at_n
from hierloc.evaluation.methods import densevlad_method, kmeans_method
from hierloc.evaluation.pipeline import EvaluationSettings, default_cache_dir, describe_dataset
from hierloc.sequences import (
    DEFAULT_VELOCITIES,
    descriptor_distances,
    hog_descriptors,
    moving_frames,
    network_grid_descriptors,
    patch_normalize,
    rank_scores,
    sad_distances,
    sequence_rank,
)
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

METHODS = ("seqslam (published)", "seqslam", "densevlad", "mobilenetvlad_imagenet", "hog", "cnn-grid", "combination")


def main() -> None:
    """Compute every method's distance matrix, match sequences of each length, report recall."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nordland", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/nordland")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    parser.add_argument("--cache", type=Path, default=None, help="descriptor cache (default: hierloc evaluate's)")
    parser.add_argument("--velocities", type=float, nargs="+", default=list(DEFAULT_VELOCITIES),
                        help=f"reference frames per query frame searched (default {list(DEFAULT_VELOCITIES)})")
    parser.add_argument("--device", default="cpu", help="device of the networks (default cpu)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    dataset = read_nordland(args.nordland)
    summer, winter = dataset.reference, dataset.queries[0]
    truth = dataset.ground_truth(winter)
    summer_images = [summer.load(i) for i in range(len(summer))]
    winter_images = [winter.load(i) for i in range(len(winter))]
    summer_frames, winter_frames = patch_normalize(summer_images), patch_normalize(winter_images)
    frame_moving = (moving_frames(winter_frames, metric="sad"), moving_frames(summer_frames, metric="sad"))
    wanted = set(args.methods)
    matrices: dict[str, np.ndarray] = {}
    moving: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    timings: dict[str, float] = {}

    def timed(name: str, compute) -> None:
        begin = time.perf_counter()
        matrices[name] = compute()
        timings[name] = time.perf_counter() - begin
        print(f"{name}: distances in {timings[name]:.1f} s", flush=True)

    if wanted & {"seqslam (published)", "seqslam", "combination"}:
        timed("seqslam", lambda: sad_distances(winter_frames, summer_frames))
    if wanted & {"hog", "combination"}:
        timed("hog", lambda: descriptor_distances(hog_descriptors(winter_images), hog_descriptors(summer_images)))
    if wanted & {"cnn-grid", "combination"}:
        timed("cnn-grid", lambda: descriptor_distances(network_grid_descriptors(winter_images, device=args.device),
                                                       network_grid_descriptors(summer_images, device=args.device)))
    for name in ("seqslam", "hog", "cnn-grid"):
        moving[name] = frame_moving
    cache = args.cache or default_cache_dir()
    settings = EvaluationSettings()
    for name, method in (("densevlad", lambda: densevlad_method()),
                         ("mobilenetvlad_imagenet", lambda: kmeans_method(min_side=128, device=args.device,
                                                                          threads=threads))):
        if name in wanted:
            begin = time.perf_counter()
            run = describe_dataset(method(), dataset, cache, settings)
            matrices[name] = descriptor_distances(run.queries[winter.name], run.reference)
            timings[name] = time.perf_counter() - begin
            moving[name] = (moving_frames(run.queries[winter.name]), moving_frames(run.reference))
            print(f"{name}: descriptors and distances in {timings[name]:.1f} s", flush=True)

    results: dict[str, dict[str, dict]] = {}
    single: dict[str, dict] = {}
    for name in args.methods:
        if name == "combination":
            parts, options = ["cnn-grid", "hog", "seqslam"], {}
            query_moving, reference_moving = frame_moving
        elif name == "seqslam (published)":
            parts, options = ["seqslam"], {"query_window": 0}
            query_moving = reference_moving = None
        else:
            parts, options = [name], {}
            query_moving, reference_moving = moving[name]
        if len(parts) == 1:
            rows, _ = rank_scores(matrices[parts[0]], 5)
            recall = recall_at_n(rows, truth, [1, 5])
            single[name] = {"r1": recall[1], "r5": recall[5]}
        results[name] = {}
        for length in args.lengths:
            begin = time.perf_counter()
            ranking = sequence_rank([matrices[p] for p in parts], length, 5, query_moving=query_moving,
                                    reference_moving=reference_moving, velocities=args.velocities, **options)
            seconds = time.perf_counter() - begin
            recall = recall_at_n(ranking.rows, truth, [1, 5])
            results[name][str(length)] = {"r1": recall[1], "r5": recall[5], "seconds": seconds}
        print(f"{name}: " + "  ".join(f"N={length} R@1 {100 * v['r1']:.1f}" for length, v in results[name].items()),
              flush=True)

    header = f"{'method':24s} {'single':>13s}" + "".join(f" {'N=' + str(length):>13s}" for length in args.lengths)
    print("\nNordland summer -> winter, recall@1 / recall@5 (%), sequences of N frames ending at each query")
    print(header)
    for name, by_length in results.items():
        cells = [f"{100 * single[name]['r1']:5.1f} / {100 * single[name]['r5']:5.1f}" if name in single else "-"]
        cells += [f"{100 * v['r1']:5.1f} / {100 * v['r5']:5.1f}" for v in by_length.values()]
        print(f"{name:24s}" + "".join(f" {c:>13s}" for c in cells))
    if args.json:
        atomic_write_text(args.json, to_json_text({
            "nordland": results, "single_frame": single, "distance_seconds": timings,
            "repeated_frames": {name: {"queries": int((~m[0]).sum()), "references": int((~m[1]).sum())}
                                for name, m in moving.items()},
            "velocities": args.velocities, "places": len(summer), "threads": threads, "machine": platform.platform(),
            "processor": platform.processor()}, indent=1) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
