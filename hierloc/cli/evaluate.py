"""`hierloc evaluate`: recall@N of descriptor sources on a retrieval dataset, with plots and pictures."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from .common import add_threads_argument

logger = logging.getLogger("hierloc")

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
                        "references (no training); a model file (TorchScript, ONNX, checkpoint); or an h5 file of "
                        "precomputed descriptors keyed by paths relative to the dataset folder (default: densevlad)")
    p.add_argument("--weights", default=None, help="weights of a single network method (else use NAME=WEIGHTS)")
    p.add_argument("--pca-dims", nargs="+", default=["none"], metavar="DIMS",
                   help="PCA sizes fitted on the reference descriptors; 'none' = no PCA (default: none)")
    p.add_argument("--max-n", type=int, default=25, help="neighbours kept per query: recall@1..max-n (default 25)")
    p.add_argument("--search", default="flat", help="search structure: flat (exact, default), hnsw, ivfpq")
    p.add_argument("--search-param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter of the search structure (repeatable), e.g. ef_search=64")
    g = p.add_argument_group("dataset options")
    g.add_argument("--reference", default=None, help="reference session/season/folder (dataset default)")
    g.add_argument("--queries", nargs="+", default=None, help="query sessions/seasons/folder (dataset default)")
    g.add_argument("--ground-truth", default=None, help="file of correct references per query (folders, vprbench)")
    g.add_argument("--reference-poses", default=None, help="pose file or folder of .camera files (folders)")
    g.add_argument("--query-poses", default=None, help="pose file or folder of .camera files (folders)")
    g.add_argument("--max-distance", type=float, default=None, help="pose ground truth: metres (NCLT default 10)")
    g.add_argument("--max-angle", type=float, default=None, help="pose ground truth: degrees (NCLT default 90)")
    g.add_argument("--tolerance", type=int, default=None, help="name ground truth: also accept references this "
                                                                  "many frames away (Nordland; default 0)")
    g.add_argument("--camera", type=int, default=None, help="NCLT camera (default 4)")
    g.add_argument("--undistortion-map", default=None, help="NCLT U2D_Cam<k>_1616X1232.txt (default: searched)")
    g.add_argument("--no-undistort", action="store_true", help="NCLT: skip undistortion")
    g.add_argument("--pool-queries", action="store_true",
                   help="NCLT: one query set of all query sessions, as the original (default: one per session)")
    g.add_argument("--step", type=int, default=1, help="use every STEP-th reference and query (quick runs)")
    g.add_argument("--min-side", type=int, default=None,
                   help="upscale images whose short side is smaller, for networks (e.g. 128 for Nordland's 64x32 "
                        "frames; DenseVLAD resizes by its own configuration)")
    o = p.add_argument_group("outputs")
    o.add_argument("--json", default=None, help="write all numbers to this JSON file")
    o.add_argument("--out", default=None, help="folder for results.json, PNG plots and retrieval grids, "
                                               "per-query CSV files and index.html")
    o.add_argument("--cache", default=None, help="descriptor cache folder (default: $HIERLOC_CACHE_DIR/evaluate "
                                                 "or ~/.cache/hierloc/evaluate)")
    o.add_argument("--no-cache", action="store_true", help="compute descriptors without reading or writing a cache")
    o.add_argument("--top-k", type=int, default=5, help="retrieved images per query in the grids (default 5)")
    o.add_argument("--examples", type=int, default=4, help="successes and failures shown per grid (default 4 each)")
    r = p.add_argument_group("inference")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    r.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    add_threads_argument(r)
    p.set_defaults(func=run)


def _pca_dims(values: list[str]) -> list[int | None]:
    dims: list[int | None] = []
    for value in values:
        if value.lower() in ("none", "0", "full"):
            dims.append(None)
            continue
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"--pca-dims: {value!r} is neither 'none' nor a positive integer") from None
        if number < 1:
            raise ValueError(f"--pca-dims: {number} is not a positive size")
        dims.append(number)
    return list(dict.fromkeys(dims))


def _search_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--search-param {item!r}: expected KEY=VALUE")
        for cast in (int, float):
            try:
                params[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[key] = None if value.lower() == "none" else value
    return params


def default_cache_dir() -> Path:
    """$HIERLOC_CACHE_DIR/evaluate or ~/.cache/hierloc/evaluate."""
    base = os.environ.get("HIERLOC_CACHE_DIR")
    return Path(base) / "evaluate" if base else Path.home() / ".cache" / "hierloc" / "evaluate"


def _weights_identity(model: str, weights: str) -> str:
    from ..evaluation.methods import file_identity
    from ..models import get_model_spec, resolve_weights
    from ..models.weights import WeightsNotFoundError

    if weights.lower() == "none":
        return "initial network"
    if weights == "auto":
        try:
            spec = get_model_spec(model)
            return file_identity(resolve_weights(spec.default_weights)) if spec.default_weights else "initial network"
        except (ValueError, WeightsNotFoundError):
            return "initial network"
    try:
        return file_identity(resolve_weights(weights))
    except (ValueError, FileNotFoundError):
        return weights


def parse_methods(args: argparse.Namespace) -> list:
    """Method objects for the --method values."""
    from ..evaluation.methods import densevlad_method, extractor_method, file_identity, kmeans_method, precomputed_method
    from ..models import MODEL_SPECS
    from .common import EXTRA_MODEL_NAMES, make_extractor

    networks = [m for m in args.method if "=" not in m and not m.lower().endswith((".h5", ".hdf5"))
                and m != "densevlad" and not (m == "mobilenetvlad_imagenet" and args.weights is None)]
    if args.weights is not None and len(networks) != 1:
        raise ValueError("--weights needs exactly one network method; give several as NAME=WEIGHTS")
    methods = []
    for text in args.method:
        name, sep, weights = text.partition("=")
        if not sep:
            weights = args.weights if text in networks else None
        if name.lower().endswith((".h5", ".hdf5")):
            methods.append(precomputed_method(name))
        elif name == "densevlad":
            methods.append(densevlad_method(weights) if weights else densevlad_method())
        elif name == "mobilenetvlad_imagenet" and weights is None:
            methods.append(kmeans_method(name, label="mobilenetvlad_imagenet (k-means init)", min_side=args.min_side,
                                         device=args.device, precision=args.precision))
        elif name in MODEL_SPECS or name in EXTRA_MODEL_NAMES or Path(name).is_file():
            weights = weights or "auto"
            if Path(name).is_file():
                label, identity = Path(name).stem, f"file:{file_identity(name)}"
            else:
                label = name if weights == "auto" else f"{name} (untrained)" if weights.lower() == "none" \
                    else f"{name} ({Path(weights).name})"
                identity = f"{name}:{_weights_identity(name, weights)}"
            namespace = argparse.Namespace(model=name, weights=weights, device=args.device, precision=args.precision,
                                           threads=args.threads)
            methods.append(extractor_method(label, lambda ns=namespace: make_extractor(ns), identity, args.min_side))
        else:
            raise ValueError(f"--method {text!r}: not densevlad, a model name ({', '.join(sorted(MODEL_SPECS))}), "
                             "a model file or an .h5 descriptor file")
    return methods


def run(args: argparse.Namespace) -> int:
    """Run the evaluation, print the table and where every output went."""
    from ..datasets import load_dataset
    from ..evaluation.pipeline import EvaluationSettings, evaluate
    from ..evaluation.report import write_json, write_report
    from ..index import available_backends
    from ..utils.threads import configure_threads

    configure_threads(args.threads)
    kind, path = args.dataset
    if kind not in DATASET_KINDS:
        raise ValueError(f"--dataset kind {kind!r}: choose one of {', '.join(DATASET_KINDS)}")
    if args.search not in available_backends():
        raise ValueError(f"--search {args.search!r}: choose one of {', '.join(available_backends())}")
    if args.max_n < 1 or args.step < 1:
        raise ValueError("--max-n and --step must be at least 1")
    options = {
        "reference": args.reference, "queries": args.queries, "ground_truth": args.ground_truth,
        "reference_poses": args.reference_poses, "query_poses": args.query_poses, "max_distance": args.max_distance,
        "max_angle_deg": args.max_angle, "tolerance": args.tolerance, "camera": args.camera,
        "undistortion_map": args.undistortion_map, "undistort": False if args.no_undistort else None,
        "pool_queries": True if args.pool_queries else None,
    }
    from ..datasets import detect_dataset_kind

    resolved_kind = detect_dataset_kind(path) if kind == "auto" else kind
    if resolved_kind in ("nordland", "nclt") and args.queries is not None:
        options["queries"] = tuple(args.queries)
    elif args.queries is not None:
        if len(args.queries) != 1:
            raise ValueError(f"a {resolved_kind} dataset has one query folder; got {len(args.queries)}")
        options["queries"] = args.queries[0]
    dataset = load_dataset(resolved_kind, path, **options).subsampled(args.step, args.step)
    methods = parse_methods(args)
    settings = EvaluationSettings(pca_dims=_pca_dims(args.pca_dims), max_n=args.max_n, backend=args.search,
                                  backend_params=_search_params(args.search_param), batch_size=args.batch_size)
    cache_dir = None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir()
    for note in dataset.notes:
        print(f"dataset: {note}")
    evaluation = evaluate(dataset, methods, settings, cache_dir)
    print()
    print(evaluation.table())
    print()
    for run_ in evaluation.runs:
        timing = "" if run_.seconds_per_image != run_.seconds_per_image else \
            f", {1000 * run_.seconds_per_image:.1f} ms/image"
        print(f"{run_.method.label}: {run_.descriptor_dim}-D{timing}"
              + (f"; descriptors cached in {Path(run_.cache_files[0]).parent}" if run_.cache_files else ""))
    from_shell = bool(sys.argv) and Path(sys.argv[0]).name == "hierloc"
    command = "hierloc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if from_shell else ""
    if args.json:
        print(f"numbers written to {write_json(evaluation, args.json, {'command': command})}")
    if args.out:
        written = write_report(evaluation, args.out, top=args.top_k, examples=args.examples, command=command)
        print(f"plots written to {', '.join(str(p) for p in written['plots'])}")
        print(f"retrieval grids written to {Path(args.out) / 'retrievals'} ({len(written['grids'])} PNG)")
        print(f"per-query results written to {Path(args.out) / 'per_query'} ({len(written['csv'])} CSV)")
        print(f"report written to {written['html'][0]}")
    return 0
