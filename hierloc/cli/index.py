"""`hierloc index build|add|remove-mission|info|convert`: index a map, extend or trim it, inspect and convert."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils.io import to_json_text
from .common import add_describer_arguments, describer_choice
from .validators import non_negative_int, positive_float, positive_int

FORMAT_NAMES = ("auto", "proto", "protobuf", "pb", "native", "h5")
SEARCH_KINDS = ("auto", "flat", "hnsw", "ivfpq", "ivfpq-mmap")


def _image_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {value!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {value!r}")
    return width, height


def add_map_arguments(parser: argparse.ArgumentParser) -> None:
    """source and the map reader options."""
    parser.add_argument("source", help="image folder, COLMAP model folder, or ROS 1 .bag / ROS 2 bag folder")
    parser.add_argument("--kind", default="auto", choices=["auto", "folder", "colmap", "rosbag"],
                        help="map source kind")
    parser.add_argument("--poses", default=None, help="pose file for a single-mission image folder (TUM, KITTI or CSV)")
    parser.add_argument("--image-dir", default=None, help="images of a COLMAP model")
    parser.add_argument("--image-topic", default=None, help="image topic of a ROS bag")
    parser.add_argument("--pose-topic", default=None, help="pose or odometry topic of a ROS bag")
    parser.add_argument("--subsampling", type=positive_int, default=1, help="index every k-th keyframe of each mission")
    parser.add_argument("--mission", action="append", default=None, dest="missions",
                        help="only this mission (repeatable; default: all)")


def add_throughput_arguments(parser: argparse.ArgumentParser) -> None:
    """--batch-size, --workers, --resize, --ray and its options."""
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per network call (default 8)")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="processes decoding and resizing images while the network runs (0: none; default 2)")
    parser.add_argument("--resize", type=_image_size, default=None, metavar="WxH",
                        help="resize every image to WIDTHxHEIGHT before the network (recorded in the index: "
                             "recorded with the describer: queries are resized the same way)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="describe the images on a Ray cluster: 'local' starts one on this machine, 'auto' "
                             "joins the running one, or host:port / ray://host:10001 (needs the 'ray' extra)")
    parser.add_argument("--ray-actors", type=positive_int, default=None,
                        help="model replicas on Ray (default: one per GPU, else one per --ray-cpus-per-actor CPUs)")
    parser.add_argument("--ray-cpus-per-actor", type=positive_float, default=2.0,
                        help="CPUs reserved by each CPU model replica")
    parser.add_argument("--shard-dir", default=None,
                        help="empty folder where Ray writes descriptor shards before they are merged (on a "
                             "cluster: shared storage or an s3:// URI; default: a local temporary folder)")


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """--index and the parameters of each search structure."""
    parser.add_argument("--index", default="auto", choices=SEARCH_KINDS, dest="search",
                        help="search structure stored with the index: flat (exact), hnsw (graph), ivfpq (compressed), "
                             "ivfpq-mmap (compressed codes in RAM, re-ranked from a memory-mapped copy in a second "
                             "side file) or auto: flat below 50k keyframes, hnsw below 2M, ivfpq above (default)")
    parser.add_argument("--pca-dims", type=positive_int, default=None,
                        help="fit a PCA on the map and search in that many dimensions (stored with the index)")
    parser.add_argument("--whiten", action="store_true", help="whiten the PCA")
    hnsw = parser.add_argument_group("hnsw")
    hnsw.add_argument("--hnsw-m", type=positive_int, default=None, help="graph links per node (default 32)")
    hnsw.add_argument("--hnsw-ef-construction", type=positive_int, default=None,
                      help="build-time beam width (default 80)")
    hnsw.add_argument("--hnsw-ef-search", type=positive_int, default=None, help="query-time beam width (default 64)")
    hnsw.add_argument("--hnsw-storage", choices=["flat", "sq8", "fp16"], default=None,
                      help="vectors kept as float32 (flat), 8-bit or float16 (default: flat up to 512-D, else sq8)")
    ivf = parser.add_argument_group("ivfpq and ivfpq-mmap")
    ivf.add_argument("--ivf-nlist", type=positive_int, default=None, help="coarse cells (default: about 4 sqrt(N))")
    ivf.add_argument("--pq-m", type=positive_int, default=None,
                     help="codes per keyframe (default: 64 bytes' worth, must divide D)")
    ivf.add_argument("--pq-nbits", type=positive_int, default=None,
                     help="bits per code (default 8; ivfpq-mmap: 4, faiss fast-scan)")
    ivf.add_argument("--opq", action=argparse.BooleanOptionalAction, default=None,
                     help="rotate with OPQ before quantizing (default: on above 128-D)")
    ivf.add_argument("--nprobe", type=positive_int, default=None, help="cells visited per query (default 32)")
    ivf.add_argument("--refine", choices=["flat", "fp16", "sq8"], default=None,
                     help="re-rank candidates with a finer copy (costs its memory)")
    ivf.add_argument("--k-factor", type=positive_int, default=None, help="candidates re-ranked per result (default 4)")


def search_params_from_args(args: argparse.Namespace) -> dict[str, dict]:
    """Per-kind constructor overrides from the command line (only the options that were given)."""
    given = {
        "hnsw": {"m": args.hnsw_m, "ef_construction": args.hnsw_ef_construction, "ef_search": args.hnsw_ef_search,
                 "storage": args.hnsw_storage},
        "ivfpq": {"nlist": args.ivf_nlist, "m": args.pq_m, "nbits": args.pq_nbits, "opq": args.opq,
                  "nprobe": args.nprobe, "refine": args.refine, "k_factor": args.k_factor},
        # Re-ranks every candidate from its memory-mapped copy, so --refine does not apply.
        "ivfpq-mmap": {"nlist": args.ivf_nlist, "m": args.pq_m, "nbits": args.pq_nbits, "opq": args.opq,
                       "nprobe": args.nprobe, "k_factor": args.k_factor},
    }
    return {kind: {k: v for k, v in params.items() if v is not None} for kind, params in given.items()}


def register(subparsers) -> None:
    """Add the `index` subcommand group."""
    p = subparsers.add_parser("index", help="build, extend, trim, inspect and convert descriptor indexes")
    sub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", help="index a map's keyframes with a global descriptor network",
                       description="Map sources: an image folder (one mission per sub-folder, optional pose "
                                   "files), a COLMAP model folder (with --image-dir), or a ROS bag (with "
                                   "--image-topic).")
    add_map_arguments(b)
    b.add_argument("--out", required=True, help="index file: .h5 (native) or .pb (the original protobuf)")
    b.add_argument("--name", default=None, help="map name stored in the index (default: the source's name)")
    add_describer_arguments(b)
    b.add_argument("--store-poses", action="store_true", help="store keyframe positions and rotations")
    b.add_argument("--format", default="auto", choices=sorted(FORMAT_NAMES),
                   help="index format: proto (the original protobuf) or native (h5); default: from the extension")
    add_throughput_arguments(b)
    add_search_arguments(b)
    b.set_defaults(func=run_build)

    a = sub.add_parser("add", help="add the keyframes of more missions to an index (its search structure is "
                                   "extended, not rebuilt)")
    a.add_argument("index", help="index file to extend (.h5 or .pb)")
    add_map_arguments(a)
    add_describer_arguments(a, reads_artifact=True)
    add_throughput_arguments(a)
    a.set_defaults(func=run_add)

    r = sub.add_parser("remove-mission", help="remove every keyframe of a mission from an index")
    r.add_argument("index", help="index file (.h5 or .pb)")
    r.add_argument("mission", help="mission name (see `hierloc index info`)")
    r.set_defaults(func=run_remove_mission)

    i = sub.add_parser("info", help="print what an index holds")
    i.add_argument("index", help="index file (.h5 or .pb)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)

    c = sub.add_parser("convert", help="convert between the protobuf and native formats")
    c.add_argument("src")
    c.add_argument("dst", help="output; the format follows the extension (.pb or .h5)")
    c.set_defaults(func=run_convert)


def map_source(args: argparse.Namespace):
    """The MapSource the map options spell."""
    from ..pipelines.indexing import MapSource

    return MapSource(args.source, kind=args.kind, pose_file=args.poses, image_dir=args.image_dir,
                     image_topic=args.image_topic, pose_topic=args.pose_topic, subsampling=args.subsampling,
                     missions=args.missions, name=getattr(args, "name", None))


def batch_options(args: argparse.Namespace):
    """The BatchOptions the throughput options spell."""
    from ..pipelines.indexing import BatchOptions

    return BatchOptions(args.batch_size, args.workers, args.ray, args.ray_actors, args.ray_cpus_per_actor,
                        args.shard_dir)


def _print_report(indexed: dict[str, int], skipped: list[tuple[str, str]]) -> None:
    for mission, count in indexed.items():
        print(f"mission {mission}: {count} keyframes indexed")
    if skipped:
        print(f"{len(skipped)} keyframes skipped (unreadable), e.g. {skipped[0][0]}: {skipped[0][1]}")


def run_build(args: argparse.Namespace) -> int:
    """Build and save the index (with its describer and search structure), printing a summary per mission."""
    from ..pipelines.indexing import IndexBuildConfig, SearchOptions, build_index_file

    search = SearchOptions(args.search, search_params_from_args(args), args.pca_dims, args.whiten)
    result = build_index_file(IndexBuildConfig(map_source(args), Path(args.out), describer_choice(args, args.resize),
                                               batch_options(args), search, args.store_poses, args.format))
    _print_report(result.indexed, result.skipped)
    space = f", searched after PCA to {args.pca_dims}-D" if args.pca_dims else ""
    print(f"index of {result.keyframes} keyframes ({result.descriptor_size}-D{space}) written to {result.path}")
    print(f"describer: {result.describer}" + (f"; its weights stored beside the index: {result.describer_weights}"
                                              if result.describer_weights else ""))
    if result.side_file is not None:
        print(f"{result.search} search structure ({result.side_bytes_per_keyframe:.0f} bytes per keyframe) "
              f"written to {result.side_file}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    """Describe the new keyframes with the index's describer and append them to the index and its search structure."""
    from ..pipelines.indexing import IndexExtendConfig, extend_index_file

    result = extend_index_file(IndexExtendConfig(Path(args.index), map_source(args),
                                                 describer_choice(args, args.resize), batch_options(args)))
    _print_report(result.indexed, result.skipped)
    print(f"{result.path}: {result.rows_before} -> {result.rows_after} keyframes (search structure {result.search})")
    return 0


def run_remove_mission(args: argparse.Namespace) -> int:
    """Remove a mission's keyframes from the index and its search structure."""
    from ..index.update import remove_mission

    result = remove_mission(args.index, args.mission)
    print(f"{args.index}: mission {args.mission!r} removed, {result.rows_before} -> {result.rows_after} keyframes "
          f"(search structure {result.search})")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Describe an index file."""
    from ..index.info import index_info

    info = index_info(args.index)
    if args.json:
        print(to_json_text(info, indent=2, default=str))
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
