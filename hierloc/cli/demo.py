"""`hierloc demo`: the main job end to end on the embedded synthetic world (`hierloc.pipelines.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_threads_argument, describer_argument
from .validators import non_negative_int, positive_float, positive_int


def register(subparsers) -> None:
    """Add the `demo` subcommand."""
    p = subparsers.add_parser("demo", help="index a synthetic world, localize another mission: recall and pose errors")
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--frames", type=positive_int, default=60, help="frames per mission (default 60)")
    p.add_argument("--width", type=positive_int, default=320)
    p.add_argument("--height", type=positive_int, default=240)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="auto", type=describer_argument,
                   help="auto: trained mobilenetvlad if its weights are installed, else the ImageNet "
                        "MobileNetV2 + NetVLAD initialised by k-means on the map images; or any describer spelling")
    p.add_argument("--max-distance", type=positive_float, default=1.5,
                   help="a retrieved keyframe is right within this many metres")
    p.add_argument("--max-angle", type=positive_float, default=45.0,
                   help="... and this many degrees of viewing direction")
    p.add_argument("--pca-dims", type=non_negative_int, default=32,
                   help="also evaluate search after PCA to this size (0: no)")
    p.add_argument("--no-localize", dest="localize", action="store_false",
                   help="skip the 6-DoF part (3-D map of the reference mission, poses of the queries)")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its tables and where everything went."""
    from ..pipelines.demo import DemoConfig, run_demo

    demo = run_demo(DemoConfig(Path(args.out), args.frames, args.width, args.height, args.seed, args.model,
                               args.max_distance, args.max_angle, args.pca_dims or None, args.localize, args.threads))
    results = demo.results
    print(f"synthetic world: missions 'day' (map) and 'dusk' (queries), {results['keyframes']} + {results['queries']} "
          f"frames, {args.width}x{args.height}, written to {results['world']}")
    print(f"describer: {results['describer']}")
    print(f"\n{'search':10s} {'dim':>6s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'search ms':>10s}")
    for label, variant in results["variants"].items():
        recall = variant["recall"]
        print(f"{label:10s} {variant['search_dim']:6d} {recall['@1']:6.3f} {recall['@5']:6.3f} {recall['@10']:6.3f} "
              f"{variant['search_ms_mean']:10.3f}")
    print(f"descriptor: {results['descriptor_ms_median']:.1f} ms median per {args.width}x{args.height} query")
    if "localization" in results:
        print_localization(results["localization"])
    print(f"\noutputs in {args.out}/: " + ", ".join(f"{key} {path.name}" for key, path in demo.outputs.items())
          + f"; total {results['total_seconds']:.1f} s")
    print(f"try: hierloc query {args.out}/index.h5 {results['world']}/dusk/000000.png")
    return 0


def print_localization(localization: dict) -> None:
    """The 6-DoF table: localized, recall at three thresholds, median errors, time per query."""
    summary, timings = localization["pose_errors"], localization["timings"]
    recall = summary["recall"]
    print(f"\n6-DoF localization: {localization['map']['summary']} "
          f"(built in {localization['map']['build_seconds']:.1f} s)")
    print(f"{'localized':>10s} {'<0.25m,2deg':>12s} {'<0.5m,5deg':>11s} {'<5m,10deg':>10s} {'median cm':>10s} "
          f"{'median deg':>11s} {'ms/query':>9s}")
    print(f"{summary['num_localized']:4d}/{summary['num_queries']:<5d} {recall['0.25m_2deg']:11.1f}% "
          f"{recall['0.5m_5deg']:10.1f}% {recall['5m_10deg']:9.1f}% {100 * summary['median_translation_m']:10.2f} "
          f"{summary['median_rotation_deg']:11.3f} {1000 * timings['total']['median_s']:9.0f}")
