"""`hierloc extract`: global descriptors of images into an hloc-layout h5 file."""

from __future__ import annotations

import argparse

from .common import add_describer_arguments, describer_choice
from .validators import positive_int


def register(subparsers) -> None:
    """Add the `extract` subcommand."""
    p = subparsers.add_parser("extract", help="compute global descriptors of images into an h5 file",
                              description="Write one group per image (its path relative to the given folder) "
                                          "holding the dataset `global_descriptor`, as hloc does.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output .h5 file (updated in place: existing images are skipped)")
    add_describer_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass (equal sizes only)")
    p.add_argument("--skip-unreadable", action="store_true", help="warn and skip unreadable images instead of stopping")
    p.add_argument("--overwrite", action="store_true", help="recompute images already in the output file")
    p.add_argument("--as-half", action="store_true", help="store float16 descriptors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the extraction and print where the descriptors went."""
    from ..extraction import extract_global_descriptors
    from ..utils.images import list_images, read_image

    def adaptation_images() -> list:  # for `--model auto` without the trained weights: the inputs themselves
        return [read_image(path) for path, _ in list_images(args.inputs)[:200]]

    extractor = describer_choice(args).build(adaptation_images)
    summary = extract_global_descriptors(
        extractor, args.inputs, args.out, batch_size=args.batch_size, skip_unreadable=args.skip_unreadable,
        overwrite=args.overwrite, as_half=args.as_half,
    )
    print(f"{summary['written']} new descriptors ({extractor.identity.summary()}), "
          f"{summary['skipped_existing']} already present, {len(summary['unreadable'])} unreadable skipped")
    print(f"descriptors written to {summary['output']}")
    return 0
