"""`hierloc time-query`: the original's timing tool (descriptor computation and search times)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils.io import atomic_write_text, to_json_text
from .common import add_retrieval_arguments, describer_choice
from .validators import non_negative_int, positive_int


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
    p.add_argument("--max-queries", type=positive_int, default=None, help="at most this many queries")
    p.add_argument("--warmup", type=non_negative_int, default=2,
                   help="untimed queries first (default 2: the second query of a size builds the fast path)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the statistics as JSON to FILE (to stdout without FILE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the queries and print the statistics."""
    from ..pipelines.indexing import MapSource, TimingConfig, time_queries

    query_map = (MapSource(args.query_map, kind=args.kind,
                           missions=[args.query_mission] if args.query_mission else None)
                 if args.query_map else None)
    result = time_queries(TimingConfig(Path(args.index), args.queries, query_map, args.k, args.max_distance,
                                       args.pca_dims, args.max_queries, args.warmup, describer_choice(args)))
    print(f"{result['queries']} queries against {result['keyframes']} keyframes ({result['search_dim']}-D search)")
    print(f"average number retrieved: {result['average_retrieved']:.2f} (k={args.k}, max distance {args.max_distance})")
    print(f"{'stage':20s} {'mean ms':>9s} {'median ms':>10s} {'p95 ms':>9s}")
    for stage in ("compute_descriptor", "get_neighbours"):
        s = result[stage]
        print(f"{stage:20s} {s['mean_ms']:9.3f} {s['median_ms']:10.3f} {s['p95_ms']:9.3f}")
    if args.json == "-":
        print(to_json_text(result, indent=2))
    elif args.json:
        atomic_write_text(args.json, to_json_text(result, indent=2))
        print(f"statistics written to {args.json}")
    return 0
