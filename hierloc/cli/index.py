"""`hierloc index build|info|convert`: index a map's keyframes, inspect and convert index files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_model_arguments, make_extractor


# Accepted spellings of the two index formats.
FORMAT_NAMES = {"auto": "auto", "proto": "protobuf", "protobuf": "protobuf", "pb": "protobuf", "native": "native",
                "h5": "native"}


def register(subparsers) -> None:
    """Add the `index` subcommand group."""
    p = subparsers.add_parser("index", help="build, inspect and convert descriptor indexes")
    sub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", help="index a map's keyframes with a global descriptor network",
                       description="Map sources: an image folder (one mission per sub-folder, optional pose "
                                   "files), a COLMAP model folder (with --image-dir), or a ROS bag (with "
                                   "--image-topic).")
    b.add_argument("source", help="image folder, COLMAP model folder, or ROS 1 .bag / ROS 2 bag folder")
    b.add_argument("--out", required=True, help="index file: .h5 (native) or .pb (the original protobuf)")
    b.add_argument("--kind", default="auto", choices=["auto", "folder", "colmap", "rosbag"], help="map source kind")
    b.add_argument("--poses", default=None, help="pose file for a single-mission image folder (TUM, KITTI or CSV)")
    b.add_argument("--image-dir", default=None, help="images of a COLMAP model")
    b.add_argument("--image-topic", default=None, help="image topic of a ROS bag")
    b.add_argument("--pose-topic", default=None, help="pose or odometry topic of a ROS bag")
    b.add_argument("--name", default=None, help="map name stored in the index (default: the source's name)")
    add_model_arguments(b)
    b.add_argument("--subsampling", type=int, default=1, help="index every k-th keyframe of each mission")
    b.add_argument("--mission", action="append", default=None, dest="missions",
                   help="only this mission (repeatable; default: all)")
    b.add_argument("--store-poses", action="store_true", help="store keyframe positions and rotations")
    b.add_argument("--format", default="auto", choices=sorted(FORMAT_NAMES),
                   help="index format: proto (the original protobuf) or native (h5); default: from the extension")
    b.add_argument("--batch-size", type=int, default=1)
    b.set_defaults(func=run_build)

    i = sub.add_parser("info", help="print what an index holds")
    i.add_argument("index", help="index file (.h5 or .pb)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)

    c = sub.add_parser("convert", help="convert between the protobuf and native formats")
    c.add_argument("src")
    c.add_argument("dst", help="output; the format follows the extension (.pb or .h5)")
    c.set_defaults(func=run_convert)


def load_map_from_args(args: argparse.Namespace):
    """The map named by `source` and the reader options."""
    from ..maps import load_map

    options = {}
    if getattr(args, "poses", None):
        options["pose_file"] = args.poses
    if getattr(args, "image_dir", None):
        options["image_dir"] = args.image_dir
    if getattr(args, "image_topic", None):
        options["image_topic"] = args.image_topic
    if getattr(args, "pose_topic", None):
        options["pose_topic"] = args.pose_topic
    return load_map(args.source, kind=args.kind, **options)


def run_build(args: argparse.Namespace) -> int:
    """Build and save the index, printing a summary per mission."""
    from ..index.build import build_index
    from ..index.io import save_index

    map_ = load_map_from_args(args)
    if args.name:
        map_.name = args.name
    extractor = make_extractor(args)
    index, report = build_index(map_, extractor, args.model, subsampling=args.subsampling, missions=args.missions,
                                store_poses=args.store_poses, batch_size=args.batch_size)
    index.metadata["weights"] = str(args.weights)
    save_index(index, args.out, format=FORMAT_NAMES[args.format])
    for mission, count in report.indexed.items():
        print(f"mission {mission}: {count} keyframes indexed")
    if report.skipped:
        print(f"{len(report.skipped)} keyframes skipped (unreadable), e.g. {report.skipped[0][0]}: {report.skipped[0][1]}")
    print(f"index of {len(index)} keyframes ({index.descriptor_size}-D, model {args.model}) written to {args.out}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Describe an index file."""
    from ..index.io import detect_format, load_index

    index = load_index(args.index)
    missions: dict[str, int] = {}
    for m in index.missions:
        missions[m] = missions.get(m, 0) + 1
    info = {"path": str(args.index), "format": detect_format(args.index), "model_name": index.model_name,
            "data_name": index.data_name, "keyframes": len(index), "descriptor_size": index.descriptor_size,
            "has_poses": index.has_poses, "missions": missions, "metadata": index.metadata}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for key, value in info.items():
            print(f"{key:16s} {value}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert an index file to the other format."""
    from ..index.io import convert_index

    index = convert_index(args.src, args.dst)
    print(f"index of {len(index)} keyframes converted to {Path(args.dst)}")
    return 0
