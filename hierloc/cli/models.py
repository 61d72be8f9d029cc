"""`hierloc models`: the named models and where their weights are found."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the `models` subcommand."""
    p = subparsers.add_parser("models", help="list the named models and the state of their weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per model and per weight file."""
    from ..models import MODEL_SPECS, WEIGHTS, WeightsNotFoundError, resolve_weights

    for spec in MODEL_SPECS.values():
        print(f"{spec.name:24s} {spec.description}")
    print()
    for spec in WEIGHTS.values():
        try:
            where = str(resolve_weights(spec.name))
        except WeightsNotFoundError:
            where = f"not found locally (source: {spec.url})"
        print(f"{spec.name:26s} {where}")
    return 0
