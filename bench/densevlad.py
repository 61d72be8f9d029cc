"""DenseVLAD settings side by side: recall on Nordland summer -> winter and time per image.

For each configuration: fit the vocabulary and PCA on the summer frames, describe summer and winter,
rank exactly, report recall@1/5 and milliseconds per image (64x32 Nordland frames, and a 640x480
image to check that dense SIFT stays well under a second there). All variants run in one process so
that they share the machine's state. Prints a table; `--json out.json` writes the numbers.

    python bench/densevlad.py [--nordland ../shared/data/nordland] [--step 4] [--threads 2]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import dataclasses
import logging
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from hierloc.datasets import read_nordland
from hierloc.evaluation import GroundTruth, recall_at_n
from hierloc.evaluation.retrieval import rank_references
from hierloc.models.densevlad import DenseVLAD, DenseVLADConfig, local_descriptors
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

DEFAULT = DenseVLADConfig()
VARIANTS = {
    "default": DEFAULT,
    "no upscaling (64x32)": dataclasses.replace(DEFAULT, min_image_side=None),
    "upscale to short side 128": dataclasses.replace(DEFAULT, min_image_side=128),
    "no flat-patch filter": dataclasses.replace(DEFAULT, min_patch_contrast=0.0),
    "flat-patch filter 25": dataclasses.replace(DEFAULT, min_patch_contrast=25.0),
    "grid step 4": dataclasses.replace(DEFAULT, grid_step=4),
    "2 scales (1, 0.5)": dataclasses.replace(DEFAULT, scales=(1.0, 0.5)),
    "PCA without whitening": dataclasses.replace(DEFAULT, whiten=False),
    "whitening regularisation 0.1": dataclasses.replace(DEFAULT, whiten_regularization=0.1),
    "raw VLAD (no PCA)": dataclasses.replace(DEFAULT, pca_dim=None),
    "DoG keypoints": dataclasses.replace(DEFAULT, detector="dog"),
}


def _ms_per_call(fn, repeats: int) -> float:
    fn()
    begin = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - begin) / repeats


def main() -> None:
    """Run every variant and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nordland", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/nordland")
    parser.add_argument("--step", type=int, default=4, help="every STEP-th frame (default 4: 894 places)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    dataset = read_nordland(args.nordland).subsampled(args.step, args.step)
    summer, winter = dataset.reference, dataset.queries[0]
    summer_images = [summer.load(i) for i in range(len(summer))]
    winter_images = [winter.load(i) for i in range(len(winter))]
    truth: GroundTruth = dataset.ground_truth(winter)
    large = cv2.resize(np.ascontiguousarray(summer_images[len(summer_images) // 2]), (640, 480),
                       interpolation=cv2.INTER_LINEAR)
    rows = []
    for name in args.variants:
        config = VARIANTS[name]
        begin = time.perf_counter()
        model = DenseVLAD.fit(summer_images, config, vocabulary_images=500, pca_images=None, progress=False)
        fit_s = time.perf_counter() - begin
        begin = time.perf_counter()
        references = model.describe_batch(summer_images)
        queries = model.describe_batch(winter_images)
        ms_small = 1000 * (time.perf_counter() - begin) / (len(summer_images) + len(winter_images))
        ranking = rank_references(references, queries, 5)
        recall = recall_at_n(ranking.rows, truth, [1, 5])
        ms_sift_640 = _ms_per_call(lambda: local_descriptors(large, config), 3)
        ms_640 = _ms_per_call(lambda: model.describe(large), 3)
        rows.append({"variant": name, "config": dataclasses.asdict(config), "dim": model.descriptor_dim,
                     "recall@1": recall[1], "recall@5": recall[5], "fit_s": fit_s, "ms_per_image_64x32": ms_small,
                     "ms_dense_sift_640x480": ms_sift_640, "ms_per_image_640x480": ms_640})
        r = rows[-1]
        print(f"{name:30s} {r['dim']:5d}-D  R@1 {100 * r['recall@1']:5.1f}  R@5 {100 * r['recall@5']:5.1f}  "
              f"fit {fit_s:6.1f} s  {ms_small:6.1f} ms/img (64x32)  SIFT 640x480 {ms_sift_640:6.0f} ms  "
              f"DenseVLAD 640x480 {ms_640:6.0f} ms", flush=True)
    if args.json:
        atomic_write_text(args.json, to_json_text({
            "benchmark": "densevlad", "places": len(summer), "step": args.step, "threads": threads,
            "machine": platform.platform(), "processor": platform.processor(), "results": rows}, indent=1) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
