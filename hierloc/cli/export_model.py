"""`hierloc export-model`: TorchScript and ONNX files of a network, checked against the eager model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils.threads import configure_threads
from .common import add_threads_argument
from .validators import positive_int


def register(subparsers) -> None:
    """Add the `export-model` subcommand."""
    p = subparsers.add_parser(
        "export-model", help="export a network to TorchScript and ONNX (dynamic image size) with a parity check",
        description="SOURCE is an experiment folder (its model.pt), a hierloc checkpoint, or a model name (with "
                    "--weights). The files take `image` float32 [B, C, H, W] of raw 0..255 pixels and give "
                    "`descriptor` [B, D]; `--model FILE` runs them in every hierloc command.")
    p.add_argument("source", help="experiment folder, checkpoint file, or model name")
    p.add_argument("--weights", default="auto", help="with a model name: checkpoint path or weight name")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default=None, help="file name stem (default: the model name)")
    p.add_argument("--formats", nargs="+", default=["torchscript", "onnx"], choices=["torchscript", "onnx"])
    p.add_argument("--height", type=positive_int, default=480,
                   help="example image height used for tracing (default 480)")
    p.add_argument("--width", type=positive_int, default=640, help="example image width used for tracing (default 640)")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--onnx-exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="torch.onnx exporter (torchscript: seconds; dynamo: minutes)")
    p.add_argument("--no-parity-check", action="store_true", help="skip the comparison with the eager model")
    add_threads_argument(p)
    p.set_defaults(func=run)


def load_source_model(source: str, weights: str = "auto"):
    """The eager model of an experiment folder, a hierloc checkpoint or a model name."""
    from ..models import MODEL_SPECS, load_model
    from ..models.checkpoint import is_hierloc_checkpoint, read_checkpoint

    path = Path(source)
    if path.is_dir():
        path = path / "model.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{source}: no model.pt in this experiment folder (train it to the end, or "
                                    "interrupt it with Ctrl+C, to write one)")
    if path.is_file():
        payload = read_checkpoint(path)
        if not is_hierloc_checkpoint(payload):
            raise ValueError(f"{path}: not a hierloc checkpoint; give a model name with --weights {path}")
        return load_model(payload["model_name"], weights=path)
    if source not in MODEL_SPECS:
        raise ValueError(f"{source!r} is neither a folder, a checkpoint file nor a model name "
                         f"({', '.join(sorted(MODEL_SPECS))})")
    return load_model(source, weights=None if str(weights).lower() == "none" else weights)


def run(args: argparse.Namespace) -> int:
    """Export, check parity, print the differences and where the files went."""
    from ..export import PARITY_TOLERANCE, check_parity, export_onnx, export_torchscript
    from ..utils.io import atomic_write_text, to_json_text

    configure_threads(args.threads)
    model = load_source_model(args.source, args.weights)
    out = Path(args.out)
    stem = args.name or model.name
    size = (args.height, args.width)
    files: dict[str, Path] = {}
    if "torchscript" in args.formats:
        files["torchscript"] = export_torchscript(model, out / f"{stem}.torchscript.pt", size)
    if "onnx" in args.formats:
        files["onnx"] = export_onnx(model, out / f"{stem}.onnx", size, opset=args.opset, exporter=args.onnx_exporter)
    report = {"model": model.name, "descriptor_dim": model.descriptor_dim, "input_channels": model.input_channels,
              "files": {k: str(v) for k, v in files.items()}, "parity": None}
    failed = []
    if not args.no_parity_check:
        sizes = (size, (size[0] * 3 // 4 + 1, size[1] * 3 // 4 + 1), (size[0] // 2 + 3, size[1] // 2 - 1))
        report["parity"] = check_parity(model, files, sizes=sizes)
        for fmt, result in report["parity"].items():
            sizes_text = ", ".join(f"{k}: {v:.2e}" for k, v in result["sizes"].items())
            print(f"{fmt:11s} max |descriptor difference| vs eager fp32 = {result['max_abs_diff']:.2e} "
                  f"({sizes_text}) {'OK' if result['ok'] else f'ABOVE {PARITY_TOLERANCE:g}'}")
            if not result["ok"]:
                failed.append(fmt)
    atomic_write_text(out / f"{stem}.export.json", to_json_text(report, indent=2))
    for fmt, path in files.items():
        print(f"{fmt}: {path}")
    print(f"report: {out / f'{stem}.export.json'}; input `image` float32 [B, {model.input_channels}, H, W] "
          f"(0..255), output `descriptor` [B, {model.descriptor_dim}]")
    if failed:
        raise RuntimeError(f"parity check failed for {', '.join(failed)} (difference above {PARITY_TOLERANCE:g})")
    return 0
