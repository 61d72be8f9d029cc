"""`hierloc train CONFIG EXPERIMENT_DIR`: distillation or triplet training from a YAML configuration."""

from __future__ import annotations

import argparse

from ..utils.threads import configure_threads
from .common import add_threads_argument


def register(subparsers) -> None:
    """Add the `train` subcommand."""
    p = subparsers.add_parser(
        "train", help="train a global descriptor network (distillation from a teacher, or triplets from poses)",
        description="CONFIG is a YAML file or the name of a shipped config (see --list-configs). Relative data "
                    "paths in it are resolved against --data-root ($HIERLOC_DATA_PATH, default: the current "
                    "folder). EXPERIMENT_DIR receives config.yaml, log.txt, TensorBoard events, checkpoints/ and "
                    "model.pt. Ctrl+C (or SIGTERM) saves a checkpoint and stops; --resume continues to the same "
                    "weights an uninterrupted run reaches (also after kill -9, from the last periodic checkpoint).")
    p.add_argument("config", nargs="?", help="training config (.yaml path or shipped config name)")
    p.add_argument("experiment", nargs="?", help="experiment folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of EXPERIMENT_DIR")
    p.add_argument("--data-root", default=None, help="folder relative data paths start from")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config entry (dotted keys, YAML values), e.g. --set train_iter=1000 "
                        "--set model.batch_size=8 (repeatable)")
    p.add_argument("--images", action="append", default=None, metavar="DIR",
                   help="image folder for distillation (repeatable; replaces data.image_folders, no truncation)")
    p.add_argument("--descriptors", action="append", default=None, metavar="DIR_OR_H5",
                   help="teacher descriptors of the matching --images folder (NAME.npy folder or .h5)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's, auto)")
    p.add_argument("--list-configs", action="store_true", help="print the shipped configs and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print where everything went."""
    from ..training.config import deep_update, find_config, load_config, parse_override, shipped_configs
    from ..training.trainer import train

    if args.list_configs:
        for name in shipped_configs():
            print(f"{name:32s} {find_config(name)}")
        return 0
    if not args.config or not args.experiment:
        raise ValueError("give CONFIG and EXPERIMENT_DIR (or --list-configs)")
    configure_threads(args.threads)
    overrides: dict = {}
    for text in args.overrides:
        overrides = deep_update(overrides, parse_override(text))
    if args.device:
        overrides["device"] = args.device
    if args.images or args.descriptors:
        if len(args.images or []) != len(args.descriptors or []):
            raise ValueError("give one --descriptors for every --images folder")
        overrides = deep_update(overrides, {"data": {"image_folders": args.images,
                                                     "descriptor_folders": args.descriptors, "truncate": None}})
    config = load_config(args.config, overrides)
    result = train(config, args.experiment, data_root=args.data_root, resume=args.resume,
                   progress=not args.no_progress)
    if result.get("rank", 0) != 0:  # under torchrun, the main process reports
        return 0
    if result.get("validation"):
        first, last = result["validation"][0], result["validation"][-1]
        metric = next(iter(k for k in last if k != "iteration"))
        print(f"validation {metric}: {first[metric]:.5f} at iteration {first['iteration']} -> "
              f"{last[metric]:.5f} at iteration {last['iteration']}")
    if result.get("stopped_by"):
        print(f"stopped by {result['stopped_by']} at iteration {result['iteration']} of {result['train_iter']}; "
              f"continue with: hierloc train {args.config} {args.experiment} --resume")
    else:
        timing = result["seconds_per_iteration"]
        print(f"trained to iteration {result['iteration']}" + (f" ({timing:.3f} s per iteration)" if timing else ""))
    print(f"outputs in {args.experiment}/: model.pt (use with --model or --weights), checkpoints/ "
          f"(newest {result.get('checkpoint')}), config.yaml, log.txt, training_summary.json, TensorBoard events "
          f"(tensorboard --logdir {args.experiment})")
    if args.verbose:
        from ..utils.io import to_json_text

        print(to_json_text(result, indent=2))
    return 0
