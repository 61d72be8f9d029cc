"""Options and set-up shared by subcommands."""

from __future__ import annotations

import argparse
import logging

from ..utils.threads import configure_threads


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str | None = "mobilenetvlad") -> None:
    """--model, --weights, --device, --precision, --threads (no default model: the index's)."""
    from ..models import MODEL_SPECS

    parser.add_argument("--model", default=default_model, choices=sorted(MODEL_SPECS),
                        help=f"global descriptor network (default: {default_model or 'the one that built the index'})")
    parser.add_argument("--weights", default="auto",
                        help="checkpoint path or weight name; 'auto' uses the model's default weights when a "
                             "local copy exists, 'none' the initial network")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="inference precision (auto: fp16 on CUDA, fp32 on CPU)")
    add_threads_argument(parser)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """--threads."""
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch/OpenCV/faiss (default: all usable cores)")


def make_extractor(args: argparse.Namespace):
    """Load the model named by the arguments and wrap it for inference."""
    from ..extraction import GlobalExtractor
    from ..models import load_model

    configure_threads(args.threads)
    weights = None if str(args.weights).lower() == "none" else args.weights
    model = load_model(args.model, weights=weights)
    return GlobalExtractor(model, device=args.device, precision=args.precision)


def setup_logging(verbose: bool = False) -> None:
    """Warnings and errors on stderr, as one readable line each."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("hierloc").setLevel(logging.DEBUG if verbose else logging.INFO)



def add_retrieval_arguments(parser: argparse.ArgumentParser, k: int, max_distance: float) -> None:
    """index, -k, --max-distance, --pca-dims and the model options (the model defaults to the index's)."""
    parser.add_argument("index", help="index file (.h5 or .pb) built by `hierloc index build`")
    parser.add_argument("-k", "--num-neighbours", type=int, default=k, dest="k", help=f"neighbours (default {k})")
    parser.add_argument("--max-distance", type=float, default=max_distance,
                        help=f"largest Euclidean distance in the searched space (default {max_distance})")
    parser.add_argument("--pca-dims", type=int, default=None,
                        help="search after PCA to this size, fitted on the map descriptors")
    add_model_arguments(parser, default_model=None)


def open_index_and_extractor(args: argparse.Namespace):
    """(index, retriever, extractor) for `args.index`, refusing a model that did not build the index."""
    from ..index.io import load_index
    from ..index.retriever import Retriever
    from ..models.configs import canonical_model_name

    index = load_index(args.index)
    built_by = canonical_model_name(index.model_name)
    if args.model is None:
        args.model = built_by
    elif args.model != built_by:
        raise ValueError(f"{args.index}: built by model {index.model_name!r} ({index.descriptor_size}-D), "
                         f"not {args.model!r}: query with --model {built_by} or rebuild the index")
    built_with = index.metadata.get("weights")
    if built_with is not None and str(built_with) != str(args.weights):
        logging.getLogger("hierloc").warning("%s was built with weights %r; queries use %r",
                                             args.index, built_with, args.weights)
    extractor = make_extractor(args)
    index.check_compatible(descriptor_size=extractor.descriptor_dim)
    return index, Retriever(index, pca_dims=args.pca_dims), extractor
