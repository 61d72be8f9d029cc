"""`hierloc evaluate`: recall@N of descriptor sources on a retrieval dataset, with plots and pictures."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_rerank_arguments, add_threads_argument, rerank_config
from .validators import non_negative_int, positive_float, positive_int

if TYPE_CHECKING:
    from ..evaluation.pipeline import EvaluationConfig

# As hierloc.evaluation.pipeline.DATASET_KINDS (not imported: `hierloc --help` stays light).
DATASET_KINDS = ("auto", "folders", "nordland", "vprbench", "nclt", "strecha")


def register(subparsers) -> None:
    """Add the `evaluate` subcommand."""
    p = subparsers.add_parser(
        "evaluate", help="recall@N, precision-recall and retrieval pictures of descriptors on a dataset",
        description="Compute (and cache) descriptors of the reference and query images of a dataset for each "
                    "method, retrieve the nearest references of every query (optionally after PCA fitted on the "
                    "references), and report recall@N, precision-recall and pictures of retrieved images.")
    p.add_argument("--dataset", nargs=2, metavar=("KIND", "PATH"), required=True,
                   help=f"dataset kind ({', '.join(DATASET_KINDS)}) and folder")
    p.add_argument("--method", nargs="+", default=["densevlad"], metavar="METHOD",
                   help="descriptor sources: 'densevlad' (fitted on the references, cached) or 'densevlad=VOCAB.npz'; "
                        "a hierloc model name, optionally NAME=WEIGHTS (NAME=none: the untrained network); "
                        "'mobilenetvlad_imagenet' alone: ImageNet MobileNetV2 + NetVLAD initialised by k-means on the "
                        "references (no training); a model file (TorchScript, ONNX, checkpoint); an index file or a "
                        "3-D map folder (the describer recorded in it); or an h5 file of precomputed descriptors keyed "
                        "by paths relative to the dataset folder (default: densevlad)")
    p.add_argument("--weights", default=None, help="weights of a single network method (else use NAME=WEIGHTS)")
    p.add_argument("--pca-dims", nargs="+", default=["none"], metavar="DIMS",
                   help="PCA sizes fitted on the reference descriptors; 'none' = no PCA (default: none)")
    p.add_argument("--max-n", type=positive_int, default=25,
                   help="neighbours kept per query: recall@1..max-n (default 25)")
    p.add_argument("--search", default="flat", help="search structure: flat (exact, default), hnsw, ivfpq")
    p.add_argument("--search-param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter of the search structure (repeatable), e.g. ef_search=64")
    p.add_argument("--sequence-length", type=positive_int, default=None, metavar="N",
                   help="also rank by sequences (SeqSLAM-style: contrast enhancement, straight-line search over "
                        "velocities, repeated frames left out) of the N frames ending at each query, reported beside "
                        "single-frame recall as '<method> + sequence N'; assumes both image sets are ordered "
                        "sequences, in the order they were recorded (as Nordland's)")
    g = p.add_argument_group("dataset options")
    g.add_argument("--reference", default=None, help="reference session/season/folder (dataset default)")
    g.add_argument("--queries", nargs="+", default=None, help="query sessions/seasons/folder (dataset default)")
    g.add_argument("--ground-truth", default=None, help="file of correct references per query (folders, vprbench)")
    g.add_argument("--reference-poses", default=None, help="pose file or folder of .camera files (folders)")
    g.add_argument("--query-poses", default=None, help="pose file or folder of .camera files (folders)")
    g.add_argument("--max-distance", type=positive_float, default=None,
                   help="pose ground truth: metres (NCLT default 10)")
    g.add_argument("--max-angle", type=positive_float, default=None,
                   help="pose ground truth: degrees (NCLT default 90)")
    g.add_argument("--tolerance", type=non_negative_int, default=None,
                   help="name ground truth: also accept references this many frames away (Nordland; default 0)")
    g.add_argument("--camera", type=non_negative_int, default=None, help="NCLT camera (default 4)")
    g.add_argument("--undistortion-map", default=None, help="NCLT U2D_Cam<k>_1616X1232.txt (default: searched)")
    g.add_argument("--no-undistort", action="store_true", help="NCLT: skip undistortion")
    g.add_argument("--pool-queries", action="store_true",
                   help="NCLT: one query set of all query sessions, as the original (default: one per session)")
    g.add_argument("--step", type=positive_int, default=1, help="use every STEP-th reference and query (quick runs)")
    g.add_argument("--min-side", type=non_negative_int, default=None,
                   help="networks: enlarge images whose short side is smaller (default: the shortest side of "
                        "hierloc.describers.NETWORK_PREPROCESSING; 0: images as they are). DenseVLAD resizes by its "
                        "own configuration, and an index or map uses the preprocessing it recorded")
    o = p.add_argument_group("outputs")
    o.add_argument("--json", default=None, help="write all numbers to this JSON file")
    o.add_argument("--out", default=None, help="folder for results.json, PNG plots and retrieval grids, "
                                               "per-query CSV files and index.html")
    o.add_argument("--cache", default=None, help="descriptor cache folder (default: $HIERLOC_CACHE_DIR/evaluate "
                                                 "or ~/.cache/hierloc/evaluate)")
    o.add_argument("--no-cache", action="store_true", help="compute descriptors without reading or writing a cache")
    o.add_argument("--top-k", type=positive_int, default=5, help="retrieved images per query in the grids (default 5)")
    o.add_argument("--examples", type=positive_int, default=4,
                   help="successes and failures shown per grid (default 4 each)")
    r = p.add_argument_group("inference")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    r.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    add_threads_argument(r)
    add_rerank_arguments(p, index=False)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> EvaluationConfig:
    """The evaluation configuration of parsed arguments (values are validated by `EvaluationConfig.validate`)."""
    from ..evaluation.pipeline import (
        DatasetOptions,
        EvaluationConfig,
        default_cache_dir,
        parse_pca_dims,
        parse_search_params,
    )

    kind, path = args.dataset
    dataset = DatasetOptions(
        reference=args.reference, queries=tuple(args.queries) if args.queries else None,
        ground_truth=args.ground_truth, reference_poses=args.reference_poses, query_poses=args.query_poses,
        max_distance=args.max_distance, max_angle=args.max_angle, tolerance=args.tolerance, camera=args.camera,
        undistortion_map=args.undistortion_map, undistort=False if args.no_undistort else None,
        pool_queries=True if args.pool_queries else None)
    from_shell = bool(sys.argv) and Path(sys.argv[0]).name == "hierloc"
    return EvaluationConfig(
        dataset_kind=kind, dataset_path=Path(path), methods=tuple(args.method), weights=args.weights, dataset=dataset,
        step=args.step, min_side=args.min_side, pca_dims=parse_pca_dims(args.pca_dims), max_n=args.max_n,
        search=args.search, search_params=parse_search_params(args.search_param),
        cache_dir=None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir(),
        json_path=Path(args.json) if args.json else None, out_dir=Path(args.out) if args.out else None,
        top_k=args.top_k, examples=args.examples, device=args.device, precision=args.precision,
        batch_size=args.batch_size, threads=args.threads, rerank=rerank_config(args),
        sequence_length=args.sequence_length,
        command="hierloc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if from_shell else "")


def run(args: argparse.Namespace) -> int:
    """Arguments -> EvaluationConfig -> `hierloc.evaluation.pipeline.evaluate` -> the table and where outputs went."""
    from ..evaluation.pipeline import evaluate

    result = evaluate(config_from_args(args))
    print("\n".join(result.summary_lines()))
    return 0
