"""Options and set-up shared by subcommands."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..utils.threads import configure_threads


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str | None = "mobilenetvlad") -> None:
    """--model, --weights, --device, --precision, --threads (no default model: the index's)."""
    from ..models import MODEL_SPECS

    parser.add_argument("--model", default=default_model, type=model_argument,
                        help=f"global descriptor network: {', '.join(sorted(MODEL_SPECS))}, or a model file "
                             "(TorchScript/ONNX from `hierloc export-model`, or a hierloc checkpoint such as an "
                             f"experiment's model.pt) (default: {default_model or 'the one that built the index'})")
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


def model_argument(value: str) -> str:
    """--model: a named model, DenseVLAD, or an existing model file."""
    from ..models import MODEL_SPECS

    if value in MODEL_SPECS or value in EXTRA_MODEL_NAMES or Path(value).is_file():
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither a model name ({', '.join(sorted(MODEL_SPECS))}, "
                                     f"{', '.join(EXTRA_MODEL_NAMES)}) nor an existing model file")


# Describers that are not networks of MODEL_SPECS (their --weights is their fitted file).
EXTRA_MODEL_NAMES = ("densevlad",)


def resolve_model_file(args: argparse.Namespace) -> None:
    """When --model is a file, keep it in `args.model_file` and set `args.model` to the model name inside.

    Indexes record that name, so an index built with the eager network can be queried with its
    TorchScript or ONNX export and the other way round.
    """
    from ..models import MODEL_SPECS

    value = getattr(args, "model", None)
    if (value is None or value in MODEL_SPECS or value in EXTRA_MODEL_NAMES or getattr(args, "model_file", None)
            or not Path(value).is_file()):
        return
    from ..export.runtime import exported_model_name, is_exported_model
    from ..models.checkpoint import is_hierloc_checkpoint, read_checkpoint

    if is_exported_model(value):
        name = exported_model_name(value)
    else:
        payload = read_checkpoint(value)
        if not is_hierloc_checkpoint(payload):
            raise ValueError(f"{value}: not a model file hierloc can run (TorchScript, ONNX or a hierloc checkpoint)")
        name = payload["model_name"]
    args.model_file, args.model = value, name


def make_extractor(args: argparse.Namespace):
    """Load the model named by the arguments and wrap it for inference."""
    from ..extraction import GlobalExtractor
    from ..models import load_model

    configure_threads(args.threads)
    resolve_model_file(args)
    weights = None if str(args.weights).lower() == "none" else args.weights
    model_file = getattr(args, "model_file", None)
    if model_file is not None:
        from ..export.runtime import is_exported_model, load_exported_model

        if str(args.weights) not in ("auto", "none", str(model_file)):
            logging.getLogger("hierloc").warning("--weights %s ignored: the weights are those of %s",
                                                 args.weights, model_file)
        if is_exported_model(model_file):
            return load_exported_model(model_file, device=args.device, precision=args.precision,
                                       threads=args.threads)
        weights = model_file
    if args.model == "densevlad":
        from ..models.densevlad import load_densevlad

        return load_densevlad(weights)
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
    from ..index.stored_search import retriever_for_index
    from ..models.configs import canonical_model_name

    index = load_index(args.index)
    resolve_model_file(args)
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
    # The search structure stored with the index (hnsw / ivfpq side file) when there is one.
    return index, retriever_for_index(index, args.index, pca_dims=args.pca_dims, mmap=True), extractor
