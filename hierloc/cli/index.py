"""`hierloc index build|add|remove-mission|info|convert`: index a map, extend or trim it, inspect and convert."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .common import add_model_arguments, make_extractor

logger = logging.getLogger("hierloc")

# Accepted spellings of the two index formats.
FORMAT_NAMES = {"auto": "auto", "proto": "protobuf", "protobuf": "protobuf", "pb": "protobuf", "native": "native",
                "h5": "native"}
SEARCH_KINDS = ("auto", "flat", "hnsw", "ivfpq")


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
    parser.add_argument("--kind", default="auto", choices=["auto", "folder", "colmap", "rosbag"], help="map source kind")
    parser.add_argument("--poses", default=None, help="pose file for a single-mission image folder (TUM, KITTI or CSV)")
    parser.add_argument("--image-dir", default=None, help="images of a COLMAP model")
    parser.add_argument("--image-topic", default=None, help="image topic of a ROS bag")
    parser.add_argument("--pose-topic", default=None, help="pose or odometry topic of a ROS bag")
    parser.add_argument("--subsampling", type=int, default=1, help="index every k-th keyframe of each mission")
    parser.add_argument("--mission", action="append", default=None, dest="missions",
                        help="only this mission (repeatable; default: all)")


def add_throughput_arguments(parser: argparse.ArgumentParser) -> None:
    """--batch-size, --workers, --resize, --ray and its options."""
    parser.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes decoding and resizing images while the network runs (0: none; default 2)")
    parser.add_argument("--resize", type=_image_size, default=None, metavar="WxH",
                        help="resize every image to WIDTHxHEIGHT before the network (recorded in the index: "
                             "resize queries the same way)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="describe the images on a Ray cluster: 'local' starts one on this machine, 'auto' "
                             "joins the running one, or host:port / ray://host:10001 (needs the 'ray' extra)")
    parser.add_argument("--ray-actors", type=int, default=None,
                        help="model replicas on Ray (default: one per GPU, else one per --ray-cpus-per-actor CPUs)")
    parser.add_argument("--ray-cpus-per-actor", type=float, default=2.0, help="CPUs reserved by each CPU model replica")
    parser.add_argument("--shard-dir", default=None,
                        help="empty folder where Ray writes descriptor shards before they are merged (on a "
                             "cluster: shared storage or an s3:// URI; default: a local temporary folder)")


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """--index and the parameters of each search structure."""
    parser.add_argument("--index", default="auto", choices=SEARCH_KINDS, dest="search",
                        help="search structure stored with the index: flat (exact), hnsw (graph), ivfpq (compressed) "
                             "or auto: flat below 50k keyframes, hnsw below 2M, ivfpq above (default)")
    parser.add_argument("--pca-dims", type=int, default=None,
                        help="fit a PCA on the map and search in that many dimensions (stored with the index)")
    parser.add_argument("--whiten", action="store_true", help="whiten the PCA")
    hnsw = parser.add_argument_group("hnsw")
    hnsw.add_argument("--hnsw-m", type=int, default=None, help="graph links per node (default 32)")
    hnsw.add_argument("--hnsw-ef-construction", type=int, default=None, help="build-time beam width (default 80)")
    hnsw.add_argument("--hnsw-ef-search", type=int, default=None, help="query-time beam width (default 64)")
    hnsw.add_argument("--hnsw-storage", choices=["flat", "sq8", "fp16"], default=None,
                      help="vectors kept as float32 (flat), 8-bit or float16 (default: flat up to 512-D, else sq8)")
    ivf = parser.add_argument_group("ivfpq")
    ivf.add_argument("--ivf-nlist", type=int, default=None, help="coarse cells (default: about 4 sqrt(N))")
    ivf.add_argument("--pq-m", type=int, default=None, help="bytes of code per keyframe (default 64, must divide D)")
    ivf.add_argument("--pq-nbits", type=int, default=None, help="bits per code (default 8)")
    ivf.add_argument("--opq", action=argparse.BooleanOptionalAction, default=None,
                     help="rotate with OPQ before quantizing (default: on above 128-D)")
    ivf.add_argument("--nprobe", type=int, default=None, help="cells visited per query (default 32)")
    ivf.add_argument("--refine", choices=["flat", "fp16", "sq8"], default=None,
                     help="re-rank candidates with a finer copy (costs its memory)")
    ivf.add_argument("--k-factor", type=int, default=None, help="candidates re-ranked per result (default 4)")


def search_params_from_args(args: argparse.Namespace) -> dict[str, dict]:
    """Per-kind constructor overrides from the command line (only the options that were given)."""
    given = {
        "hnsw": {"m": args.hnsw_m, "ef_construction": args.hnsw_ef_construction, "ef_search": args.hnsw_ef_search,
                 "storage": args.hnsw_storage},
        "ivfpq": {"nlist": args.ivf_nlist, "m": args.pq_m, "nbits": args.pq_nbits, "opq": args.opq,
                  "nprobe": args.nprobe, "refine": args.refine, "k_factor": args.k_factor},
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
    add_model_arguments(b)
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
    add_model_arguments(a, default_model=None)
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


def _describe_map(args: argparse.Namespace, map_, store_poses: bool, out: Path):
    """Build the DescriptorIndex of the map's selected keyframes, locally or on Ray."""
    from ..index.build import build_index

    if args.ray:
        from ..distributed import RayConfig, ray_describer
        from ..models import MODEL_SPECS
        from ..utils.threads import configure_threads

        if args.model not in MODEL_SPECS:
            raise ValueError(f"--ray builds the model by name on every worker: use one of {sorted(MODEL_SPECS)} "
                             f"(a checkpoint goes in --weights), not {args.model!r}")
        configure_threads(args.threads)
        config = RayConfig(address=args.ray, actors=args.ray_actors, cpus_per_actor=args.ray_cpus_per_actor,
                           batch_size=args.batch_size, resize=args.resize,
                           shard_dir=args.shard_dir)
        with ray_describer(args.model, args.weights, config, device=args.device, precision=args.precision) as describe:
            return build_index(map_, None, args.model, subsampling=args.subsampling, missions=args.missions,
                               store_poses=store_poses, resize=args.resize, describe=describe)
    extractor = make_extractor(args)
    return build_index(map_, extractor, args.model, subsampling=args.subsampling, missions=args.missions,
                       store_poses=store_poses, batch_size=args.batch_size, io_workers=args.workers,
                       resize=args.resize)


def _print_report(report) -> None:
    for mission, count in report.indexed.items():
        print(f"mission {mission}: {count} keyframes indexed")
    if report.skipped:
        print(f"{len(report.skipped)} keyframes skipped (unreadable), e.g. {report.skipped[0][0]}: {report.skipped[0][1]}")


def run_build(args: argparse.Namespace) -> int:
    """Build and save the index (and its search structure), printing a summary per mission."""
    from ..index.io import format_for_path, save_index
    from ..index.stored_search import build_search, save_index_with_search

    out = Path(args.out)
    fmt = FORMAT_NAMES[args.format]
    fmt = format_for_path(out) if fmt == "auto" else fmt
    if fmt == "protobuf" and (args.search not in ("auto", "flat") or args.pca_dims):
        raise ValueError(f"{out}: --index {args.search} / --pca-dims need the native .h5 format (the protobuf "
                         "format stores descriptors only)")
    map_ = load_map_from_args(args)
    if args.name:
        map_.name = args.name
    index, report = _describe_map(args, map_, args.store_poses, out)
    index.metadata["weights"] = str(args.weights)
    _print_report(report)
    if fmt == "protobuf":
        save_index(index, out, format="protobuf")
        print(f"index of {len(index)} keyframes ({index.descriptor_size}-D, model {args.model}) written to {out}")
        return 0
    backend = build_search(index, args.search, search_params_from_args(args), pca_dims=args.pca_dims,
                           whiten=args.whiten)
    side = save_index_with_search(index, backend, out, pca=index.pca if args.pca_dims else None)
    space = f", searched after PCA to {args.pca_dims}-D" if args.pca_dims else ""
    print(f"index of {len(index)} keyframes ({index.descriptor_size}-D, model {args.model}{space}) written to {out}")
    if side is not None:
        print(f"{backend.name} search structure ({side.stat().st_size / max(len(index), 1):.0f} bytes per keyframe) "
              f"written to {side}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    """Describe the new keyframes with the index's model and append them to the index and its search structure."""
    from ..index.io import detect_format, load_index
    from ..index.native_format import read_native_catalog
    from ..index.update import add_keyframes
    from ..models.configs import canonical_model_name

    path = Path(args.index)
    existing = read_native_catalog(path) if detect_format(path) == "native" else load_index(path)
    built_by = canonical_model_name(existing.model_name)
    if args.model is None:
        args.model = built_by
    elif args.model != built_by:
        raise ValueError(f"{path}: built by model {existing.model_name!r}, not {args.model!r}; "
                         f"add with --model {built_by}")
    built_with = existing.metadata.get("weights")
    if built_with is not None and str(built_with) != str(args.weights):
        logger.warning("%s was built with weights %r; the new keyframes use %r", path, built_with, args.weights)
    recorded_resize = existing.metadata.get("image_resize")
    if args.resize is None and recorded_resize:
        args.resize = tuple(recorded_resize)
    map_ = load_map_from_args(args)
    new, report = _describe_map(args, map_, existing.positions is not None, path)
    new.model_name = existing.model_name
    _print_report(report)
    result = add_keyframes(path, new)
    print(f"{path}: {result.rows_before} -> {result.rows_after} keyframes (search structure {result.search})")
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
    from ..index.io import detect_format, load_index
    from ..index.native_format import read_native_catalog
    from ..index.stored_search import SEARCH_METADATA_KEY

    fmt = detect_format(args.index)
    index = read_native_catalog(args.index) if fmt == "native" else load_index(args.index)
    missions: dict[str, int] = {}
    for m in index.missions:
        missions[m] = missions.get(m, 0) + 1
    metadata = dict(index.metadata)
    search = metadata.pop(SEARCH_METADATA_KEY, None) or {"kind": "flat (built when loaded)"}
    info = {"path": str(args.index), "format": fmt, "model_name": index.model_name,
            "data_name": index.data_name, "keyframes": len(index), "descriptor_size": index.descriptor_size,
            "has_poses": index.positions is not None and index.rotations is not None, "missions": missions,
            "pca_dims": None if index.pca is None else index.pca.n_components, "search": search,
            "metadata": metadata}
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
