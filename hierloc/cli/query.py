"""`hierloc query`: the nearest keyframes of one or more query images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..utils.io import atomic_write_text, to_json_text
from .common import add_rerank_arguments, add_retrieval_arguments, describer_choice, rerank_config


def register(subparsers) -> None:
    """Add the `query` subcommand."""
    p = subparsers.add_parser("query", help="retrieve the nearest keyframes of query images from an index")
    add_retrieval_arguments(p, k=10, max_distance=float("inf"))
    p.add_argument("images", nargs="+", help="query image files or folders")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write all results as JSON to FILE (to stdout without FILE)")
    add_rerank_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Describe each query image with the index's describer, search, print a table (and JSON when asked)."""
    from ..pipelines.indexing import QueryConfig, query_index

    result = query_index(QueryConfig(Path(args.index), args.images, args.k, args.max_distance, args.pca_dims,
                                     describer_choice(args), rerank=rerank_config(args),
                                     reference_root=args.reference_root, rerank_all=args.rerank_all))
    if args.json != "-":
        for query in result.queries:
            verdict = ""
            if "rerank" in query:
                verdict = (", re-ranked by inliers" if query["rerank"]["conclusive"]
                           else ", global order kept (no candidate verified)")
            print(f"query {query['query']}: {len(query['results'])} keyframes{verdict}")
            scores = f"  {'inliers':>7s}  {'global':>6s}" if result.rerank is not None else ""
            print(f"  {'rank':>4s}  {'distance':>8s}{scores}  {'mission':16s} name")
            for hit in query["results"]:
                if result.rerank is not None:
                    inliers = "-" if hit.inliers is None else str(hit.inliers)
                    scores = f"  {inliers:>7s}  {hit.global_rank:6d}"
                print(f"  {hit.rank:4d}  {hit.distance:8.4f}{scores}  {hit.mission[:16]:16s} {hit.name}")
        if result.rerank is not None:
            summary = result.rerank
            stages = ", ".join(f"{key} {value:.1f}" for key, value in summary["mean_ms"].items() if key != "total")
            print(f"re-ranking: {summary['mean_ms']['total']:.1f} ms per query ({stages}); reference features in "
                  f"{summary['reference_features']}")
    payload = to_json_text(result.to_json(), indent=2)
    if args.json == "-":
        sys.stdout.write(payload + "\n")
    elif args.json:
        atomic_write_text(args.json, payload)
        print(f"results written to {args.json}")
    return 0
