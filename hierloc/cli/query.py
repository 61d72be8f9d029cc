"""`hierloc query`: the nearest keyframes of one or more query images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..utils.io import atomic_write_text, to_json_text
from .common import add_retrieval_arguments, describer_choice


def register(subparsers) -> None:
    """Add the `query` subcommand."""
    p = subparsers.add_parser("query", help="retrieve the nearest keyframes of query images from an index")
    add_retrieval_arguments(p, k=10, max_distance=float("inf"))
    p.add_argument("images", nargs="+", help="query image files or folders")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write all results as JSON to FILE (to stdout without FILE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Describe each query image with the index's describer, search, print a table (and JSON when asked)."""
    from ..pipelines.indexing import QueryConfig, query_index

    result = query_index(QueryConfig(Path(args.index), args.images, args.k, args.max_distance, args.pca_dims,
                                     describer_choice(args)))
    if args.json != "-":
        for query in result.queries:
            print(f"query {query['query']}: {len(query['results'])} keyframes")
            print(f"  {'rank':>4s}  {'distance':>8s}  {'mission':16s} name")
            for hit in query["results"]:
                print(f"  {hit.rank:4d}  {hit.distance:8.4f}  {hit.mission[:16]:16s} {hit.name}")
    payload = to_json_text(result.to_json(), indent=2)
    if args.json == "-":
        sys.stdout.write(payload + "\n")
    elif args.json:
        atomic_write_text(args.json, payload)
        print(f"results written to {args.json}")
    return 0
