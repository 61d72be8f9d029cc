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
