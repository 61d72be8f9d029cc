"""Localization through the index stack: the demo's map with a flat and with an HNSW global index, side by side.

Renders the demo world (`hierloc.pipelines.demo`, without its own localization), builds the 3-D map of
the day mission twice with `map build --global-index INDEX --index flat|hnsw` (same describer, same
descriptors, different search structure), localizes every dusk frame against each, and reports the
search time per query (the map's retriever alone, on the queries' descriptors), the retrieval stage
(describer + search), the total per query, whether both maps retrieved the same keyframes, and the
largest pose difference between them.

Usage: python bench/map_index.py [--frames 60] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig
from hierloc.maps import load_map
from hierloc.pipelines.demo import QUERIES, REFERENCE, DemoConfig, run_demo
from hierloc.pipelines.indexing import MapSource
from hierloc.pipelines.mapping import MapJobConfig, build_map
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

KINDS = ("flat", "hnsw")


def localize_with(map_dir: Path, queries) -> dict:
    """Poses, retrieved keyframes and timings of every query against one map."""
    localizer = Localizer.load(map_dir, LocalizerConfig(num_retrieved=5))
    retriever, describer = localizer._retriever, localizer._global
    localizer.localize(queries[0].load_image(), queries[0].camera, "warm-up")  # traces the network once
    results = [localizer.localize(kf.load_image(), kf.camera, kf.name) for kf in queries]
    descriptors = [describer.describe(kf.load_image()) for kf in queries]
    search_ms = []
    for descriptor in descriptors:
        runs = []
        for _ in range(20):
            t0 = time.perf_counter()
            retriever.retrieve(descriptor, k=5)
            runs.append((time.perf_counter() - t0) * 1e3)
        search_ms.append(statistics.median(runs))
    return {"backend": retriever.backend.name, "results": results, "search_ms": float(np.median(search_ms)),
            "retrieval_ms": float(np.median([r.timings["retrieval"] for r in results]) * 1e3),
            "total_ms": float(np.median([r.timings["total"] for r in results]) * 1e3)}


def pose_difference(a, b) -> tuple[float, float]:
    """Largest translation (m) and rotation (deg) difference between two lists of results (both localized)."""
    translation, rotation = 0.0, 0.0
    for x, y in zip(a, b):
        if x.T_cam_world is None or y.T_cam_world is None:
            if (x.T_cam_world is None) != (y.T_cam_world is None):
                return float("inf"), float("inf")
            continue
        translation = max(translation, float(np.linalg.norm(x.T_world_cam[:3, 3] - y.T_world_cam[:3, 3])))
        cos = (np.trace(x.T_cam_world[:3, :3] @ y.T_cam_world[:3, :3].T) - 1) / 2
        rotation = max(rotation, float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
    return translation, rotation


def main() -> None:
    """Build both maps, localize, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_map_index"))
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    configure_threads(args.threads)
    demo = run_demo(DemoConfig(out=args.out / "demo", frames=args.frames, localize=False, threads=args.threads))
    world, index = demo.outputs["world"], demo.outputs["index"]
    queries = list(load_map(world).missions[QUERIES].keyframes)
    runs = {}
    for kind in KINDS:
        build = MapBuildConfig(features="sift", pairs="sequential", num_neighbors=3,
                               global_model=GlobalConfig(index=str(index), search=kind))
        build_map(MapJobConfig(MapSource(str(world), missions=[REFERENCE]), args.out / f"map_{kind}", build,
                               threads=args.threads))
        runs[kind] = localize_with(args.out / f"map_{kind}", queries)
    same_retrieved = sum(a.retrieved == b.retrieved for a, b in zip(runs["flat"]["results"], runs["hnsw"]["results"]))
    translation, rotation = pose_difference(runs["flat"]["results"], runs["hnsw"]["results"])
    print(f"{len(queries)} dusk queries against the day map ({args.frames} keyframes), {args.threads} threads")
    print(f"{'map index':10s} {'localized':>9s} {'search ms':>10s} {'retrieval ms':>13s} {'total ms':>9s}")
    report = {"queries": len(queries), "keyframes": args.frames, "threads": args.threads, "maps": {}}
    for kind, run in runs.items():
        localized = sum(r.success for r in run["results"])
        print(f"{run['backend']:10s} {localized:5d}/{len(queries):<3d} {run['search_ms']:10.3f} "
              f"{run['retrieval_ms']:13.1f} {run['total_ms']:9.1f}")
        report["maps"][kind] = {"backend": run["backend"], "localized": localized, "search_ms_median": run["search_ms"],
                                "retrieval_ms_median": run["retrieval_ms"], "total_ms_median": run["total_ms"]}
    print(f"same retrieved keyframes: {same_retrieved}/{len(queries)}; largest pose difference "
          f"{translation * 100:.4f} cm, {rotation:.5f} deg")
    report.update(same_retrieved=same_retrieved, max_translation_difference_m=translation,
                  max_rotation_difference_deg=rotation)
    if args.json:
        atomic_write_text(args.json, to_json_text(report, indent=2))
        print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
