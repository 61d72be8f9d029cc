"""`hierloc models`: the named models and where their weights are found; `hierloc models download`: fetch them."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    """Add the `models` subcommand (a listing) and its `download` action."""
    p = subparsers.add_parser("models", help="list the named models and the state of their weights; download them")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="models_action", metavar="ACTION")
    download = actions.add_parser(
        "download", help="download (and convert) named weights into the weights cache ahead of first use",
        description="Download named weights into $HIERLOC_WEIGHTS_DIR (default ~/.cache/hierloc/weights), "
                    "verify their SHA-256 where published and convert original formats; weights already "
                    "present are left as they are unless --force.")
    download.add_argument("names", nargs="*", metavar="NAME", help="weight names, as listed by `hierloc models`")
    download.add_argument("--all", action="store_true", help="every named weight file")
    download.add_argument("--force", action="store_true", help="download again even when a local copy exists")
    download.set_defaults(func=run_download)


def run(args: argparse.Namespace) -> int:
    """Print one line per model and per weight file."""
    from ..models import MODEL_SPECS, WEIGHTS
    from ..models.weights import download_command, find_local_copy

    for spec in MODEL_SPECS.values():
        print(f"{spec.name:24s} {spec.description}")
    print()
    for spec in WEIGHTS.values():
        local = find_local_copy(spec)
        where = str(local) if local is not None else f"not found locally (`{download_command(spec.name)}`)"
        print(f"{spec.name:26s} {where}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Fetch each named weight file, printing where it went; one error line per failure, exit 1 if any failed."""
    from ..models import WEIGHTS
    from ..models.fetch import fetch_weights
    from ..models.weights import find_local_copy, get_weight_spec, one_line

    if args.all and args.names:
        raise ValueError("give weight names or --all, not both")
    names = list(WEIGHTS) if args.all else args.names
    if not names:
        raise ValueError(f"name the weights to download (known: {', '.join(sorted(WEIGHTS))}) or pass --all")
    specs = [get_weight_spec(name) for name in names]  # every name checked before anything is downloaded
    failures = 0
    for spec in specs:
        present = None if args.force else find_local_copy(spec)
        if present is not None:
            print(f"{spec.name}: already present at {present}")
            continue
        try:
            path = fetch_weights(spec.name, force=args.force)
        except (OSError, RuntimeError, ValueError) as exc:  # not found offline, checksum, conversion
            if args.verbose:
                raise
            print(f"hierloc models download: error: {one_line(exc)}", file=sys.stderr)
            failures += 1
            continue
        print(f"{spec.name}: {path}")
    return 1 if failures else 0
