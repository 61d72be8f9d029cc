"""`hierloc convert`: turn the original published models into hierloc checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

# Where each kind's output goes by default: the weight name that `--weights auto` then finds.
DEFAULT_OUTPUT_WEIGHTS = {
    "tf-mobilenetvlad": "mobilenetvlad_depth-0.35",
    "netvlad-mat": "netvlad_vgg16_pitts30k",
    "netvlad-tf": "netvlad_vgg16_pitts30k",
}
TF_KINDS = ("tf-mobilenetvlad", "tf-slim-mobilenetv2", "netvlad-tf")


def register(subparsers) -> None:
    """Add the `convert` subcommand."""
    from ..models.convert import CONVERTERS

    p = subparsers.add_parser(
        "convert", help="convert an original TF / MatConvNet model into a hierloc checkpoint",
        description="Convert the released MobileNetVLAD (TF SavedModel), TF-slim MobileNetV2 ImageNet checkpoints "
                    "and NetVLAD VGG16 (MatConvNet .mat or netvlad_tf_open checkpoint). No TensorFlow needed.",
    )
    p.add_argument("kind", choices=sorted(CONVERTERS), help="source format")
    p.add_argument("source", help="SavedModel folder, checkpoint prefix / .index file, or .mat file")
    p.add_argument("output", nargs="?", default=None,
                   help="output file (default: the weights cache, under the name `--weights auto` looks for)")
    p.add_argument("--list", action="store_true", help="only list the variables of a TF checkpoint and exit")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the CRC-32C checks of the tensor data (TF kinds)")
    p.add_argument("--no-ema", dest="use_ema", action="store_false",
                   help="use raw variables instead of their exponential moving averages when both exist")
    p.add_argument("--no-logits", dest="include_logits", action="store_false",
                   help="tf-slim-mobilenetv2: drop the ImageNet classifier")
    p.set_defaults(func=run)


def default_output(kind: str, source: str) -> Path:
    """The cache path a converted model is written to when no output is given."""
    from ..models.weights import cache_dir, get_weight_spec

    if kind in DEFAULT_OUTPUT_WEIGHTS:
        return cache_dir() / get_weight_spec(DEFAULT_OUTPUT_WEIGHTS[kind]).filename
    stem = Path(source).name.split(".index")[0].split(".data-")[0] or "converted"
    return cache_dir() / f"{stem}_slim.pth"


def run(args: argparse.Namespace) -> int:
    """Convert, then print where the checkpoint went and what was (not) used."""
    from ..models.convert import TensorBundleReader, convert

    if args.list:
        if args.kind not in TF_KINDS:
            raise ValueError("--list reads TF checkpoints only")
        reader = TensorBundleReader(args.source, verify=args.verify)
        for name, entry in sorted(reader.entries.items()):
            print(f"{name:80s} {entry.dtype_name:8s} {list(entry.shape)}")
        print(f"{len(reader)} variables in {reader.index_path}")
        return 0
    options = {}
    if args.kind in TF_KINDS:
        options["verify"] = args.verify
    if args.kind in ("tf-mobilenetvlad", "tf-slim-mobilenetv2"):
        options["use_ema"] = args.use_ema
    if args.kind == "tf-slim-mobilenetv2":
        options["include_logits"] = args.include_logits
    output = Path(args.output) if args.output else default_output(args.kind, args.source)
    provenance = convert(args.kind, args.source, output, **options)
    for record in provenance["source_files"]:
        print(f"source {record['file']}: {record['bytes']} bytes, sha256 {record['sha256']}")
    if "variables" in provenance:
        print(f"{provenance['variables']} variables read, {len(provenance.get('ignored', {}))} ignored")
    for name, reason in provenance.get("ignored", {}).items():
        print(f"  ignored {name}: {reason}")
    for key, reason in provenance.get("filled", {}).items():
        print(f"  default {key}: {reason}")
    if provenance.get("unused_trunk_layers"):
        print(f"kept, not run (past the endpoint): {', '.join(provenance['unused_trunk_layers'])}")
    if "usage" in provenance:
        print(f"use as: {provenance['usage'].replace('PATH', str(output))}")
    print(f"wrote {output}")
    return 0
