"""`hierloc query`: the nearest keyframes of one or more query images."""

from __future__ import annotations

import argparse
import json
import sys

from ..utils.io import atomic_write_text
from .common import add_retrieval_arguments, open_index_and_extractor


def register(subparsers) -> None:
    """Add the `query` subcommand."""
    p = subparsers.add_parser("query", help="retrieve the nearest keyframes of query images from an index")
    add_retrieval_arguments(p, k=10, max_distance=float("inf"))
    p.add_argument("images", nargs="+", help="query image files or folders")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write all results as JSON to FILE (to stdout without FILE)")
    p.set_defaults(func=run)


def retrieval_to_dict(hit) -> dict:
    """A Retrieval as plain JSON types."""
    out = {"rank": hit.rank, "keyframe_id": hit.keyframe_id, "mission": hit.mission, "name": hit.name,
           "distance": float(hit.distance)}
    if hit.position is not None:
        out["position"] = [float(v) for v in hit.position]
        out["rotation"] = [[float(v) for v in row] for row in hit.rotation]
    return out


def run(args: argparse.Namespace) -> int:
    """Describe each query image, search, print a table (and JSON when asked)."""
    from ..utils.images import list_images, read_image

    index, retriever, extractor = open_index_and_extractor(args)
    results = []
    for path, name in list_images(args.images):
        descriptor = extractor.describe(read_image(path))
        hits = retriever.retrieve(descriptor, k=args.k, max_distance=args.max_distance)[0]
        results.append({"query": name, "path": str(path), "results": [retrieval_to_dict(h) for h in hits]})
    if args.json != "-":
        for result in results:
            print(f"query {result['query']}: {len(result['results'])} keyframes")
            print(f"  {'rank':>4s}  {'distance':>8s}  {'mission':16s} name")
            for hit in result["results"]:
                print(f"  {hit['rank']:4d}  {hit['distance']:8.4f}  {hit['mission'][:16]:16s} {hit['name']}")
    payload = json.dumps({"index": str(args.index), "model": args.model, "k": args.k,
                          "max_distance": args.max_distance, "pca_dims": args.pca_dims, "queries": results},
                         indent=2, allow_nan=True)
    if args.json == "-":
        sys.stdout.write(payload + "\n")
    elif args.json:
        atomic_write_text(args.json, payload)
        print(f"results written to {args.json}")
    return 0
