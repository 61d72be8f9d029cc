"""Sequence matching on Nordland summer -> winter: recall@1/5 by sequence length, per describer.

Every query is matched as the sequence of the N winter frames ending at it (`hierloc.sequences.sequence_rank`:
contrast enhancement, repeated frames left out, straight-line search over velocities 0.8..1.25) against
the summer traversal; same file name = same place, no tolerance. Repeated summer (map) frames count only in
runs of at least `--min-stop` frames (default `DEFAULT_MIN_STOP`; several values: one row per value and
method, labelled `<method> (min-stop M)`); winter frames are judged one by one, online. Methods:

    seqslam (published)   SeqSLAM as published: patch-normalised 64x32 frames, mean absolute differences,
                          contrast enhancement over 10 references only, every frame kept
    seqslam               the same frames with hierloc's defaults (contrast also over the previous 20
                          queries, repeated frames left out; min-stop does not apply to `seqslam (published)`)
    densevlad             DenseVLAD fitted on summer (no PCA); descriptors cached as `hierloc evaluate`'s
    mobilenetvlad_imagenet  ImageNet MobileNetV2 + NetVLAD k-means-initialised on summer (frames enlarged to
                          a short side of 128, as the README's evaluation); cached likewise
    hog                   HOG of the 64x32 frames (4-pixel cells, 2x2-cell blocks)
    cnn-grid              ImageNet MobileNetV2 activations after layer_11 on frames enlarged 4 times,
                          kept as an 8x16 grid (no aggregation)
    combination           cnn-grid + hog + seqslam, their enhanced matrices summed

Repeated frames (the train stands still) are found from the patch-normalised frames for the frame
methods and from each describer's own descriptors for densevlad and mobilenetvlad_imagenet (as
`hierloc evaluate --sequence-length` does). HOG and cnn-grid descriptors are cached next to hierloc
evaluate's (`<cache>/sequence_frames/`, keyed by describer, season, frame count and a hash of the names).
Prints a table; `--json out.json` writes
{"nordland": {method: {length: {"r1", "r5", "seconds"}}}, "single_frame": {method: {"r1", "r5"}}, ...}.

    python bench/sequence.py --json out.json [--threads 2] [--methods seqslam hog] [--lengths 1 5 10 20]
                             [--velocities 0.9 0.95 1 1.05 1.1] [--min-stop 1 3 5 8] [--static-fraction 0.3]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import hashlib
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
    DEFAULT_MIN_STOP,
    DEFAULT_STATIC_FRACTION,
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
from hierloc.utils.io import atomic_path, atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

METHODS = ("seqslam (published)", "seqslam", "densevlad", "mobilenetvlad_imagenet", "hog", "cnn-grid", "combination")


def cached_frames(cache: Path, name: str, image_set, images: list, compute) -> np.ndarray:
    """`compute(images)` ([N, D] float32), read from `cache` when an earlier run stored it for the same frames."""
    names = hashlib.sha1("\n".join(image_set.names).encode()).hexdigest()[:12]
    path = cache / "sequence_frames" / f"{name}_{image_set.name}_{len(images)}_{names}.npy"
    if path.is_file():
        stored = np.load(path)  # plain float arrays: no pickles
        if stored.dtype == np.float32 and stored.ndim == 2 and len(stored) == len(images):
            return stored
    descriptors = np.ascontiguousarray(compute(images), np.float32)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, descriptors)
    return descriptors


def main() -> None:
    """Compute every method's distance matrix, match sequences of each length, report recall."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nordland", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/nordland")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    parser.add_argument("--cache", type=Path, default=None, help="descriptor cache (default: hierloc evaluate's)")
    parser.add_argument("--velocities", type=float, nargs="+", default=list(DEFAULT_VELOCITIES),
                        help=f"reference frames per query frame searched (default {list(DEFAULT_VELOCITIES)})")
    parser.add_argument("--min-stop", type=int, nargs="+", default=[DEFAULT_MIN_STOP],
                        help="repeated summer frames count in runs of at least this many frames (default "
                             f"{DEFAULT_MIN_STOP}; 1: every repeated frame, as before); several: one row each")
    parser.add_argument("--static-fraction", type=float, default=DEFAULT_STATIC_FRACTION,
                        help="a frame repeats its predecessor below this fraction of the median change "
                             f"(default {DEFAULT_STATIC_FRACTION})")
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
    if min(args.min_stop) < 1:
        parser.error("--min-stop values must be positive")
    fraction = args.static_fraction
    frame_moving = {m: (moving_frames(winter_frames, fraction, "sad"), moving_frames(summer_frames, fraction, "sad",
                                                                                     min_stop=m))
                    for m in args.min_stop}
    cache = args.cache or default_cache_dir()
    wanted = set(args.methods)
    matrices: dict[str, np.ndarray] = {}
    moving: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    timings: dict[str, float] = {}

    def timed(name: str, compute) -> None:
        begin = time.perf_counter()
        matrices[name] = compute()
        timings[name] = time.perf_counter() - begin
        print(f"{name}: distances in {timings[name]:.1f} s", flush=True)

    if wanted & {"seqslam (published)", "seqslam", "combination"}:
        timed("seqslam", lambda: sad_distances(winter_frames, summer_frames))
    if wanted & {"hog", "combination"}:
        timed("hog", lambda: descriptor_distances(cached_frames(cache, "hog", winter, winter_images, hog_descriptors),
                                                  cached_frames(cache, "hog", summer, summer_images, hog_descriptors)))
    if wanted & {"cnn-grid", "combination"}:
        def grid(images):
            return network_grid_descriptors(images, device=args.device)
        timed("cnn-grid", lambda: descriptor_distances(cached_frames(cache, "cnn-grid", winter, winter_images, grid),
                                                       cached_frames(cache, "cnn-grid", summer, summer_images, grid)))
    for name in ("seqslam", "hog", "cnn-grid"):
        moving[name] = frame_moving
    settings = EvaluationSettings()
    for name, method in (("densevlad", lambda: densevlad_method()),
                         ("mobilenetvlad_imagenet", lambda: kmeans_method(min_side=128, device=args.device,
                                                                          threads=threads))):
        if name in wanted:
            begin = time.perf_counter()
            run = describe_dataset(method(), dataset, cache, settings)
            matrices[name] = descriptor_distances(run.queries[winter.name], run.reference)
            timings[name] = time.perf_counter() - begin
            moving[name] = {m: (moving_frames(run.queries[winter.name], fraction),
                                moving_frames(run.reference, fraction, min_stop=m)) for m in args.min_stop}
            print(f"{name}: descriptors and distances in {timings[name]:.1f} s", flush=True)

    results: dict[str, dict[str, dict]] = {}
    single: dict[str, dict] = {}
    for method in args.methods:
        for min_stop in (args.min_stop if method != "seqslam (published)" else [None]):
            name = method if min_stop is None or len(args.min_stop) == 1 else f"{method} (min-stop {min_stop})"
            if method == "combination":
                parts, options = ["cnn-grid", "hog", "seqslam"], {}
                query_moving, reference_moving = frame_moving[min_stop]
            elif method == "seqslam (published)":
                parts, options = ["seqslam"], {"query_window": 0}
                query_moving = reference_moving = None
            else:
                parts, options = [method], {}
                query_moving, reference_moving = moving[method][min_stop]
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
            print(f"{name}: " + "  ".join(f"N={length} R@1 {100 * v['r1']:.1f}"
                                          for length, v in results[name].items()), flush=True)

    header = f"{'method':36s} {'single':>13s}" + "".join(f" {'N=' + str(length):>13s}" for length in args.lengths)
    print("\nNordland summer -> winter, recall@1 / recall@5 (%), sequences of N frames ending at each query")
    print(header)
    for name, by_length in results.items():
        cells = [f"{100 * single[name]['r1']:5.1f} / {100 * single[name]['r5']:5.1f}" if name in single else "-"]
        cells += [f"{100 * v['r1']:5.1f} / {100 * v['r5']:5.1f}" for v in by_length.values()]
        print(f"{name:36s}" + "".join(f" {c:>13s}" for c in cells))
    if args.json:
        atomic_write_text(args.json, to_json_text({
            "nordland": results, "single_frame": single, "distance_seconds": timings,
            "repeated_frames": {name: {str(stop): {"queries": int((~m[0]).sum()), "references": int((~m[1]).sum())}
                                       for stop, m in by_stop.items()} for name, by_stop in moving.items()},
            "min_stop": args.min_stop, "static_fraction": fraction,
            "velocities": args.velocities, "places": len(summer), "threads": threads, "machine": platform.platform(),
            "processor": platform.processor()}, indent=1) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
