"""`hierloc export-descriptors`: a teacher's descriptors of image folders (NAME.npy files + one h5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_describer_arguments, describer_choice
from .validators import positive_int


def register(subparsers) -> None:
    """Add the `export-descriptors` subcommand."""
    p = subparsers.add_parser(
        "export-descriptors", help="write a model's descriptor of every image as NAME.npy (+ an h5 file)",
        description="Runs any model (a hierloc name with --weights, a TorchScript/ONNX file, a checkpoint, or "
                    "densevlad with --weights VOCAB.npz) over image folders. For IMAGE_DIR/sub/img.jpg it writes "
                    "OUT/sub/img.npy and OUT/descriptors.h5 (hloc layout). Rerunning skips images already done.")
    p.add_argument("inputs", nargs="*", help="image folders or files (default: the config's data.image_folders)")
    p.add_argument("--config", default=None,
                   help="export config (YAML path or shipped name, e.g. netvlad_export_distill): image folders, "
                        "preprocessing, model and weights; command-line options take precedence")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="output folder of the .npy files")
    where.add_argument("--name", default=None,
                       help="export name: written to EXPER_ROOT/exports/NAME, or DATA_ROOT/NAME with --as-dataset")
    p.add_argument("--as-dataset", action="store_true",
                   help="with --name: write under the data root, where `hierloc train` reads distillation targets")
    p.add_argument("--data-root", default=None, help="data root ($HIERLOC_DATA_PATH, default: current folder)")
    p.add_argument("--exper-root", default=None, help="experiments root ($HIERLOC_EXPER_PATH, default: ./experiments)")
    p.add_argument("--h5", default=None, help="h5 file (default: OUT/descriptors.h5)")
    p.add_argument("--resize", type=positive_int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
                   help="resize every image first (the original: 480 640); default: the config's, else none")
    p.add_argument("--no-resize", action="store_true", help="keep the original image sizes")
    p.add_argument("--grayscale", action=argparse.BooleanOptionalAction, default=None,
                   help="convert to grayscale first (default: the config's, else no)")
    add_describer_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass")
    p.add_argument("--overwrite", action="store_true", help="recompute descriptors that exist")
    p.add_argument("--skip-unreadable", action="store_true", help="warn and skip unreadable images")
    p.set_defaults(func=run)


def _export_config(args: argparse.Namespace) -> dict:
    from ..training.config import find_config, read_yaml

    if not args.config:
        return {}
    path = find_config(args.config)
    values = read_yaml(path)
    unknown = set(values) - {"data", "model", "weights", "batch_size"}
    if unknown:
        raise ValueError(f"{path}: unknown export config keys {sorted(unknown)} (data, model, weights, batch_size)")
    return values


def run(args: argparse.Namespace) -> int:
    """Export and print where the descriptors went."""
    from ..training.config import data_root, experiments_root, resolve_data_path
    from ..training.export_descriptors import export_descriptors

    config = _export_config(args)
    data = config.get("data") or {}
    preprocessing = dict(data.get("preprocessing") or {})
    if args.resize:
        preprocessing["resize"] = list(args.resize)
    if args.no_resize:
        preprocessing["resize"] = None
    if args.grayscale is not None:
        preprocessing["grayscale"] = args.grayscale
    inputs = list(args.inputs) or [str(resolve_data_path(f, args.data_root)) for f in data.get("image_folders", [])]
    if not inputs:
        raise ValueError("no images given: pass image folders or a --config with data.image_folders")
    if args.model in (None, "auto") and (config.get("model") or {}).get("name"):
        args.model = (config.get("model") or {}).get("name")
        if args.model is None:
            raise ValueError("no model given: pass --model (or a --config naming model.name)")
        if str(args.weights) == "auto" and config.get("weights"):
            args.weights = config["weights"]
    if args.out:
        out = Path(args.out)
    elif args.name:
        out = data_root(args.data_root) / args.name if args.as_dataset else \
            experiments_root(args.exper_root) / "exports" / args.name
    else:
        raise ValueError("give --out DIR, or --name NAME (with --as-dataset to write it as training data)")
    describer = describer_choice(args).build()
    summary = export_descriptors(describer, inputs, out, preprocessing=preprocessing,
                                 batch_size=args.batch_size if args.batch_size else config.get("batch_size", 8),
                                 overwrite=args.overwrite, skip_unreadable=args.skip_unreadable, h5_path=args.h5,
                                 model_label=args.model)
    print(f"{summary['written']} descriptors written ({summary['descriptor_dim']}-D, {args.model}), "
          f"{summary['skipped_existing']} already present, {len(summary['unreadable'])} unreadable skipped")
    print(f"descriptors in {out}/ (one .npy per image) and {summary['h5']} ({summary['h5_entries']} images)")
    return 0
