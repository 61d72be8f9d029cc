"""`hierloc time-query`: the original's timing tool (descriptor computation and search times)."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from ..utils.io import atomic_write_text
from .common import add_retrieval_arguments, open_index_and_extractor


def register(subparsers) -> None:
    """Add the `time-query` subcommand."""
    p = subparsers.add_parser("time-query", help="time descriptor computation and search over many queries",
                              description="As the original time_query: 20 neighbours within distance 1 per query "
                                          "by default; prints the average number retrieved and timing statistics.")
    add_retrieval_arguments(p, k=20, max_distance=1.0)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--queries", nargs="+", help="query image files or folders")
    source.add_argument("--query-map", help="a map source whose mission(s) give the queries")
    p.add_argument("--query-mission", default=None, help="with --query-map: only this mission")
    p.add_argument("--kind", default="auto", choices=["auto", "folder", "colmap", "rosbag"])
    p.add_argument("--max-queries", type=int, default=None, help="at most this many queries")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed queries first (default 2: the second query of a size builds the fast path)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the statistics as JSON to FILE (to stdout without FILE)")
    p.set_defaults(func=run)


def stats_ms(seconds: list[float]) -> dict:
    """mean / median / p95 / max in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return {"mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)),
            "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max()), "count": int(ms.size)}


def query_loaders(args: argparse.Namespace) -> list:
    """Callables that each return one query image."""
    from ..utils.images import list_images, read_image

    if args.queries:
        return [lambda p=path: read_image(p) for path, _ in list_images(args.queries)]
    from ..maps import load_map

    missions = [args.query_mission] if args.query_mission else None
    map_ = load_map(args.query_map, kind=args.kind).select(missions)
    return [kf.load_image for kf in map_.keyframes()]


def run(args: argparse.Namespace) -> int:
    """Run the queries and print the statistics."""
    index, retriever, extractor = open_index_and_extractor(args)
    loaders = query_loaders(args)
    if args.max_queries is not None:
        loaders = loaders[: args.max_queries]
    if not loaders:
        raise ValueError("no query images")
    for load in loaders[: args.warmup]:
        retriever.retrieve(extractor.describe(load()), k=args.k, max_distance=args.max_distance)
    describe_times, search_times, retrieved = [], [], []
    for load in tqdm(loaders, desc="queries", unit="query"):
        image = load()
        t0 = time.perf_counter()
        descriptor = extractor.describe(image)
        t1 = time.perf_counter()
        hits = retriever.retrieve(descriptor, k=args.k, max_distance=args.max_distance)[0]
        t2 = time.perf_counter()
        describe_times.append(t1 - t0)
        search_times.append(t2 - t1)
        retrieved.append(len(hits))
    result = {
        "index": str(args.index), "model": args.model, "keyframes": len(index), "queries": len(loaders),
        "k": args.k, "max_distance": args.max_distance, "pca_dims": args.pca_dims,
        "search_dim": retriever.search_dim, "average_retrieved": float(np.mean(retrieved)),
        "compute_descriptor": stats_ms(describe_times), "get_neighbours": stats_ms(search_times),
    }
    print(f"{len(loaders)} queries against {len(index)} keyframes ({retriever.search_dim}-D search)")
    print(f"average number retrieved: {result['average_retrieved']:.2f} (k={args.k}, max distance {args.max_distance})")
    print(f"{'stage':20s} {'mean ms':>9s} {'median ms':>10s} {'p95 ms':>9s}")
    for stage in ("compute_descriptor", "get_neighbours"):
        s = result[stage]
        print(f"{stage:20s} {s['mean_ms']:9.3f} {s['median_ms']:10.3f} {s['p95_ms']:9.3f}")
    if args.json == "-":
        print(json.dumps(result, indent=2))
    elif args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"statistics written to {args.json}")
    return 0
