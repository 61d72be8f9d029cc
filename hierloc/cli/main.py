"""Entry point of the `hierloc` command."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import (
    convert,
    demo,
    download_landmarks,
    evaluate,
    export_descriptors,
    export_model,
    extract,
    index,
    localize,
    map_build,
    models,
    query,
    ros,
    serve,
    time_query,
    train,
)
from .common import setup_logging

SUBCOMMANDS = [demo, extract, index, query, time_query, models, convert, map_build, localize, train, export_descriptors,
               export_model, download_landmarks, evaluate, serve, ros]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="hierloc", description="Hierarchical visual localization.")
    parser.add_argument("--version", action="version", version=f"hierloc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the subcommand; user errors print one line, not a traceback."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # only `hierloc ros` takes more: ROS's NAME:=VALUE arguments, anywhere on its line
        if not (getattr(args, "ros_arguments", False) and all(":=" in a for a in unknown)):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.ros_args = [*args.ros_args, *unknown]
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        if args.verbose:
            raise
        print(f"hierloc {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
