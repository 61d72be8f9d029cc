"""Index building throughput on Nordland, and what lower precision does to recall.

Builds an index of every Nordland frame (summer + winter, 7152 images) with `mobilenetvlad_imagenet`
(ImageNet MobileNetV2 trunk, NetVLAD centres from k-means on summer frames) through
`hierloc.index.build.build_index`, once per variant, in one process:
- the pre-DataLoader path: batch 1, images read in the main process;
- batches with decode + resize in DataLoader worker processes overlapping the network, in fp32
  (traced and frozen), bf16 and fp16 (autocast).
For each precision it reports images/second and recall@1/5/10 of winter queries against the summer
frames (same file name = same place), and the change from fp32. Prints a table, writes JSON.

Usage: python bench/index_throughput.py [--resize 128x64] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import os

# Spinning OpenMP threads make a 2-core machine shared with other jobs many times slower (a thread
# spins while its partner waits for a core); sleeping at barriers costs little when it is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hierloc.describers import NetworkDescriber, Preprocessing
from hierloc.extraction import image_to_tensor
from hierloc.extraction.pipeline import resize_image
from hierloc.index.build import build_index
from hierloc.maps import load_map
from hierloc.models import load_model
from hierloc.models.aggregation.kmeans_init import initialize_vlad_clusters
from hierloc.utils.images import read_image
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

DEFAULT_NORDLAND = Path(__file__).resolve().parents[2] / "shared" / "data" / "nordland"
MODEL = "mobilenetvlad_imagenet"


def make_model(nordland: Path, resize: tuple[int, int] | None, kmeans_images: int):
    """ImageNet trunk + VLAD centres from k-means on the first summer frames (deterministic)."""
    model = load_model(MODEL, weights="auto")
    frames = sorted((nordland / "summer").glob("*.png"))[:kmeans_images]
    initialize_vlad_clusters(model, (image_to_tensor(resize_image(read_image(p), resize)) for p in frames),
                             features_per_image=200)
    return model


def recall(descriptors: np.ndarray, names: list[str], missions: list[str], ns=(1, 5, 10)) -> dict[str, float]:
    """Recall@N of winter queries against summer frames, a hit being the frame of the same name."""
    missions_array = np.asarray(missions)
    summer, winter = np.flatnonzero(missions_array == "summer"), np.flatnonzero(missions_array == "winter")
    summer_row = {names[i].split("/")[-1]: k for k, i in enumerate(summer)}
    truth = np.array([summer_row[names[i].split("/")[-1]] for i in winter])
    similarities = descriptors[winter] @ descriptors[summer].T
    top = np.argsort(-similarities, axis=1)[:, : max(ns)]
    return {f"@{n}": float(np.mean((top[:, :n] == truth[:, None]).any(axis=1))) for n in ns}


def run_variant(map_, model, label: str, precision: str, batch_size: int, workers: int, resize, limit: int | None):
    """Build the index once with these settings; return timing, descriptors and the row order."""
    extractor = NetworkDescriber(model, Preprocessing(resize=resize), device="cpu", precision=precision)
    selected = map_
    if limit is not None:  # the slow baseline runs on the first frames of each season only
        selected = map_.select(None, 1)
        for mission in selected.missions.values():
            mission.keyframes = mission.keyframes[:limit]
    # Warm-up outside the timing: tracing (fp32) happens on the second call of a batch shape.
    first = [kf.load_image() for kf in list(selected.keyframes())[:batch_size]]
    warm = torch.cat([image_to_tensor(resize_image(image, resize)) for image in first])
    for _ in range(2):
        extractor.run(warm)
    start = time.perf_counter()
    index, report = build_index(selected, extractor, batch_size=batch_size, io_workers=workers, model_name=MODEL)
    seconds = time.perf_counter() - start
    row = {"variant": label, "precision": precision, "batch_size": batch_size, "workers": workers,
           "images": len(index), "seconds": seconds, "images_per_second": len(index) / seconds,
           "skipped": len(report.skipped)}
    return row, index


def main() -> None:
    """Run every variant and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nordland", type=Path, default=DEFAULT_NORDLAND, help="folder with summer/ and winter/")
    parser.add_argument("--resize", default=None, help="WIDTHxHEIGHT given to the network (default: native 64x32)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader decode processes")
    parser.add_argument("--precisions", default="fp32,bf16,fp16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--baseline-limit", type=int, default=500,
                        help="frames per season for the slow batch-1 baseline (0: skip it)")
    parser.add_argument("--limit", type=int, default=None, help="frames per season for every variant (quick runs)")
    parser.add_argument("--kmeans-images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save-descriptors", type=Path, default=None,
                        help="write the fp32 descriptors, names and missions to this .npz (bench/search.py can use it)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if not (args.nordland / "summer").is_dir() or not (args.nordland / "winter").is_dir():
        sys.exit(f"{args.nordland}: expected summer/ and winter/ folders of Nordland frames")
    threads = configure_threads(args.threads)
    resize = tuple(int(v) for v in args.resize.lower().split("x")) if args.resize else None
    map_ = load_map(args.nordland, kind="folder")
    map_ = map_.select(["summer", "winter"], 1)
    model = make_model(args.nordland, resize, args.kmeans_images)

    rows = []
    if args.baseline_limit:
        row, _ = run_variant(map_, model, "batch 1, no workers (previous path)", "fp32", 1, 0, resize,
                             min(args.baseline_limit, args.limit or args.baseline_limit))
        rows.append(row)
    reference, reference_row = None, None
    for precision in args.precisions.split(","):
        label = f"batch {args.batch_size}, {args.workers} workers, {precision}"
        row, index = run_variant(map_, model, label, precision, args.batch_size, args.workers, resize, args.limit)
        row["recall"] = recall(index.descriptors, index.names, index.missions)
        if reference is None:
            reference, reference_row = index, row
            if args.save_descriptors:
                np.savez(args.save_descriptors, descriptors=index.descriptors, names=np.array(index.names),
                         missions=np.array(index.missions))
        else:
            row["recall_change_vs_first"] = {k: row["recall"][k] - reference_row["recall"][k]
                                             for k in row["recall"]}
            cosine = np.sum(index.descriptors * reference.descriptors, axis=1)
            # Near-uniform frames (tunnels) have almost no local features and turn with any rounding,
            # so the minimum says little; the 1st percentile and the recall change say more.
            row["descriptor_cosine_vs_first"] = {"mean": float(cosine.mean()), "p01": float(np.percentile(cosine, 1)),
                                                 "min": float(cosine.min())}
        rows.append(row)

    results = {"model": MODEL, "resize": resize or "native 64x32", "threads": threads, "rows": rows,
               "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
               "command": " ".join(sys.argv)}
    print(f"\nNordland summer + winter, {MODEL}, input {results['resize']}, {threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'variant':40s} {'images':>7s} {'img/s':>8s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} "
          f"{'dR@1':>7s} {'cos p01':>8s}")
    for r in rows:
        rec = r.get("recall", {})
        change = r.get("recall_change_vs_first", {}).get("@1")
        cosine = r.get("descriptor_cosine_vs_first", {}).get("p01")
        print(f"{r['variant']:40s} {r['images']:7d} {r['images_per_second']:8.1f} "
              + " ".join(f"{rec[k]:6.3f}" if k in rec else f"{'-':>6s}" for k in ("@1", "@5", "@10"))
              + (f" {change:+7.3f}" if change is not None else f" {'-':>7s}")
              + (f" {cosine:8.4f}" if cosine is not None else f" {'-':>8s}"))
    if args.json:
        atomic_write_text(args.json, to_json_text(results, indent=2))
        print(f"results written to {args.json}")
    if args.save_descriptors:
        print(f"fp32 descriptors written to {args.save_descriptors}")


if __name__ == "__main__":
    main()
