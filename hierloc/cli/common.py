"""Options and set-up shared by subcommands."""

from __future__ import annotations

import argparse
import logging

from ..utils.threads import configure_threads


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str = "mobilenetvlad") -> None:
    """--model, --weights, --device, --precision, --threads."""
    from ..models import MODEL_SPECS

    parser.add_argument("--model", default=default_model, choices=sorted(MODEL_SPECS),
                        help=f"global descriptor network (default: {default_model})")
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
