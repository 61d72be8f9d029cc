"""Options shared by subcommands: which describer, how to run it, threads, logging."""

from __future__ import annotations

import argparse
import logging

from .validators import positive_int


def add_describer_arguments(parser: argparse.ArgumentParser, reads_artifact: bool = False) -> None:
    """--model, --weights, --device, --precision, --threads; with `reads_artifact` also --force-describer.

    A command that reads an index or map uses the describer recorded in it unless --model is given.
    """
    if reads_artifact:
        model_help = ("global describer; default: the one recorded in the index or map (another one is refused "
                      "unless --force-describer)")
    else:
        model_help = ("global describer: a model name (mobilenetvlad, netvlad, mobilenetvlad_imagenet, ...), "
                      "NAME=WEIGHTS, a checkpoint, an exported .onnx/.pt, densevlad=VOCAB.npz, an index or map "
                      "(its describer), or auto (default: the trained MobileNetVLAD if installed, else ImageNet "
                      "MobileNetV2 + NetVLAD initialised by k-means on the map)")
    parser.add_argument("--model", default=None if reads_artifact else "auto", type=describer_argument,
                        help=model_help)
    parser.add_argument("--weights", default="auto",
                        help="weights of a named model: a checkpoint or weight name; 'auto' its default weights "
                             "(downloaded on first use), 'none' the untrained network")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="inference precision (auto: fp16 on CUDA, fp32 on CPU)")
    if reads_artifact:
        parser.add_argument("--force-describer", action="store_true",
                            help="use --model even though the index or map was built by another describer")
    add_threads_argument(parser)


def describer_argument(value: str) -> str:
    """--model: any spelling hierloc.describers.make_describer accepts (checked before anything loads)."""
    from ..describers import is_describer_spelling

    if is_describer_spelling(value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither a model name, densevlad, auto, nor an existing model, "
                                     "vocabulary, index or map file")


def describer_choice(args: argparse.Namespace, resize: tuple[int, int] | None = None):
    """The DescriberChoice the describer options spell (`resize`: a fixed image size to record with it)."""
    from ..pipelines.indexing import DescriberChoice

    return DescriberChoice(spelling=args.model, weights=args.weights, device=args.device, precision=args.precision,
                           threads=args.threads, force=getattr(args, "force_describer", False),
                           resize=resize)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """--threads."""
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch/OpenCV/faiss (default: all usable cores)")


def setup_logging(verbose: bool = False) -> None:
    """Warnings and errors on stderr, as one readable line each."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("hierloc").setLevel(logging.DEBUG if verbose else logging.INFO)


def add_retrieval_arguments(parser: argparse.ArgumentParser, k: int, max_distance: float) -> None:
    """index, -k, --max-distance, --pca-dims and the describer options (default: the index's describer)."""
    from .validators import non_negative_float

    parser.add_argument("index", help="index file (.h5 or .pb) built by `hierloc index build`")
    parser.add_argument("-k", "--num-neighbours", type=positive_int, default=k, dest="k",
                        help=f"neighbours (default {k})")
    parser.add_argument("--max-distance", type=non_negative_float, default=max_distance,
                        help=f"largest Euclidean distance in the searched space (default {max_distance})")
    parser.add_argument("--pca-dims", type=positive_int, default=None,
                        help="search after PCA to this size, fitted on the map descriptors")
    add_describer_arguments(parser, reads_artifact=True)


def add_rerank_arguments(parser: argparse.ArgumentParser, index: bool = True) -> None:
    """--rerank K and the options of geometric re-ranking (`hierloc.reranking.RerankConfig`)."""
    from .validators import non_negative_int, positive_float

    g = parser.add_argument_group("geometric re-ranking")
    g.add_argument("--rerank", type=positive_int, default=None, metavar="K",
                   help="re-sort the top K by local matches verified with RANSAC (inliers; e.g. 20); candidates "
                        "without enough inliers keep their global order after the verified ones")
    g.add_argument("--rerank-features", default="xfeat", choices=["xfeat", "sift", "aliked", "disk"],
                   help="local features for re-ranking (default xfeat)")
    g.add_argument("--rerank-matcher", default="auto",
                   help="auto (mnn for XFeat, mnn-ratio for SIFT, LightGlue for ALIKED/DISK), mnn, mnn-ratio, "
                        "lightglue, lighterglue")
    g.add_argument("--rerank-max-keypoints", type=positive_int, default=None, help="keypoints per image (default 512)")
    g.add_argument("--rerank-min-side", type=non_negative_int, default=None,
                   help="enlarge frames whose shorter side is smaller for the local features (default 240)")
    g.add_argument("--rerank-geometry", default="fundamental", choices=["fundamental", "homography"],
                   help="model verified by RANSAC (OpenCV USAC MAGSAC++; default fundamental: no camera needed)")
    g.add_argument("--rerank-threshold", type=positive_float, default=None,
                   help="RANSAC threshold in pixels of the feature image (default 3)")
    g.add_argument("--rerank-min-inliers", type=positive_int, default=None,
                   help="inliers a candidate needs to count as verified (default 20)")
    if index:
        g.add_argument("--reference-root", default=None, metavar="DIR",
                       help="folder the index's keyframe names are relative to (needed for indexes that do not "
                            "record their map source)")
        g.add_argument("--rerank-all", action="store_true",
                       help="compute the local features of every keyframe first (default: only of candidates)")


def rerank_config(args: argparse.Namespace):
    """The RerankConfig the --rerank options spell, or None without --rerank."""
    if args.rerank is None:
        return None
    from ..reranking import RerankConfig

    options = {"max_keypoints": args.rerank_max_keypoints, "min_side": args.rerank_min_side,
               "threshold": args.rerank_threshold, "min_inliers": args.rerank_min_inliers}
    config = RerankConfig(k=args.rerank, features=args.rerank_features, matcher=args.rerank_matcher,
                          geometry=args.rerank_geometry, **{k: v for k, v in options.items() if v is not None})
    config.validate()
    return config
