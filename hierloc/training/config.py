"""Training configurations: YAML files laid out as the original's (data / model / top-level run keys).

A configuration is a nested dict. `load_config` reads a YAML file (or a shipped config by name),
fills in the defaults below and checks the keys, so that a typo is an error, not a silent default.
Relative data paths are resolved against the data root (`--data-root`, $HIERLOC_DATA_PATH, or the
current folder), as the original resolved them against its DATA_PATH.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# Keys of the `model` section that configure training rather than the architecture.
TRAINING_MODEL_KEYS = {
    "name", "batch_size", "eval_batch_size", "learning_rate", "learning_rate_step", "weight_decay",
    "train_backbone", "train_vlad", "train_attention", "vlad_init", "vlad_init_images", "triplet_margin",
    "loss_squared", "loss_in", "proj_regularizer", "learning_rate_schedule", "warmup_iter",
    "distill_l2_weight", "distill_similarity_weight", "distill_temperature", "distill_anchors",
}
# The original's architecture key names and hierloc's.
MODEL_KEY_ALIASES = {"n_clusters": "num_clusters", "dimensionality_reduction": "reduction_dim",
                     "image_channels": "input_channels"}

DEFAULT_DISTILLATION_DATA: dict[str, Any] = {
    "name": "distillation",
    "image_folders": [],
    "descriptor_folders": [],  # one per image folder: a folder of NAME.npy or an hloc-layout .h5 file
    "truncate": None,  # an int (all folders together) or one int/null per folder
    "shuffle": True,
    "seed": 0,  # shuffle seed of the image list (the original's random.Random(0))
    "validation_size": 200,
    "preprocessing": {"resize": [480, 640], "grayscale": True},
    "augmentation": {},
    "cache_in_memory": False,
    "num_workers": 2,
}
DEFAULT_TRIPLET_DATA: dict[str, Any] = {
    "name": "triplets",
    "map": None,  # a map source hierloc can read (image folder with poses, COLMAP model, ROS bag)
    "map_kind": "auto",
    "map_options": {},
    "triplets": None,  # optional .npy [N, 3] of keyframe rows mined before (the original's training_triplets)
    "positive_distance": 5.0,  # metres
    "negative_distance": 25.0,  # metres
    "max_angle": None,  # degrees of viewing direction for positives
    "triplets_per_anchor": 1,
    "cross_mission_positives": False,
    "seed": 0,
    "validation_size": 200,
    "preprocessing": {"resize": None, "grayscale": True},
    "augmentation": {},
    "cache_in_memory": False,
    "num_workers": 2,
}
DEFAULT_MODEL: dict[str, Any] = {
    "name": "mobilenetvlad",
    "batch_size": 16,
    "eval_batch_size": 16,
    "learning_rate": 0.001,  # a float, or a list of values with `learning_rate_step` boundaries
    "learning_rate_step": [],
    "learning_rate_schedule": "step",  # "step": `learning_rate_step` boundaries; "cosine": first to last value
    "warmup_iter": 0,  # linear warm-up from 0 over this many iterations
    "weight_decay": 0.0,
    "train_backbone": True,
    "train_vlad": True,
    "vlad_init": None,  # "kmeans": centres from k-means on the training images' local features
    "vlad_init_images": 100,
}
# The distillation loss (hierloc.training.tasks.DistillationTask): the original's plain L2 by default.
DEFAULT_DISTILLATION_MODEL: dict[str, Any] = {
    "distill_l2_weight": 1.0,
    "distill_similarity_weight": 0.0,  # > 0 adds the teacher-similarity KL term
    "distill_temperature": 0.05,
    "distill_anchors": 4096,  # teacher descriptors of training images the similarities are taken to
}
DEFAULT_TRIPLET_MODEL: dict[str, Any] = {
    "triplet_margin": 0.5,
    "loss_squared": True,
    "loss_in": False,
}
DEFAULT_RUN: dict[str, Any] = {
    "weights": None,  # initial weights of the whole model: checkpoint path or weight name
    "train_iter": 150000,
    "validation_interval": 500,
    "save_interval": 5000,
    "keep_checkpoints": 5,
    "log_interval": 50,
    "seed": 0,
    "amp": True,  # mixed precision on CUDA (ignored on CPU)
    "device": "auto",
}


def deep_update(base: dict, update: dict) -> dict:
    """`base` with `update` merged in recursively (dicts merged, everything else replaced); copies."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def shipped_configs_folder():
    """The package folder of shipped configurations (hierloc/configs, package data)."""
    return resources.files("hierloc") / "configs"


def shipped_configs() -> list[str]:
    """Names of the configurations shipped in the package (hierloc/configs/*.yaml)."""
    folder = shipped_configs_folder()
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def find_config(name_or_path: str | os.PathLike) -> Path:
    """A config file path, or the shipped config of that name (with or without `.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if str(path.parent) in ("", ".") and name in shipped_configs():
        return Path(str(shipped_configs_folder() / f"{name}.yaml"))
    raise FileNotFoundError(f"{name_or_path}: no such config file, and not a shipped config "
                            f"({', '.join(shipped_configs())})")


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping, with errors naming the file."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a training config must be a YAML mapping, found {type(values).__name__}")
    return values


def _check_keys(section: str, values: dict, known: set[str], source: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {section} keys {unknown}; known: {sorted(known)}")


def complete_config(values: dict, source: str = "config") -> dict:
    """Defaults filled in, aliases renamed and keys checked; the result is what a run uses."""
    values = copy.deepcopy(values)
    data = values.get("data") or {}
    kind = data.get("name", "distillation")
    if kind not in ("distillation", "triplets"):
        raise ValueError(f"{source}: data.name must be 'distillation' or 'triplets', got {kind!r}")
    data_defaults = DEFAULT_DISTILLATION_DATA if kind == "distillation" else DEFAULT_TRIPLET_DATA
    _check_keys("data", data, set(data_defaults), source)
    model = {MODEL_KEY_ALIASES.get(k, k): v for k, v in (values.get("model") or {}).items()}
    task_defaults = DEFAULT_TRIPLET_MODEL if kind == "triplets" else DEFAULT_DISTILLATION_MODEL
    model_defaults = deep_update(DEFAULT_MODEL, task_defaults)
    run = {k: v for k, v in values.items() if k not in ("data", "model")}
    _check_keys("top-level", run, set(DEFAULT_RUN), source)
    config = deep_update(DEFAULT_RUN, run)
    config["data"] = deep_update(data_defaults, data)
    config["model"] = deep_update(model_defaults, model)
    _check_model_keys(config["model"], source)
    return config


def _check_model_keys(model: dict, source: str) -> None:
    import dataclasses

    from ..models.configs import get_model_spec

    spec = get_model_spec(model["name"])
    architecture = {f.name for f in dataclasses.fields(spec.config)}
    _check_keys(f"model ({model['name']})", model, architecture | TRAINING_MODEL_KEYS, source)


def architecture_overrides(model_section: dict) -> dict:
    """The `model` keys that are fields of the named model's configuration dataclass."""
    return {k: v for k, v in model_section.items() if k not in TRAINING_MODEL_KEYS}


def load_config(name_or_path: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Read, merge `overrides` into, and complete a training configuration."""
    path = find_config(name_or_path)
    values = deep_update(read_yaml(path), overrides or {})
    return complete_config(values, source=str(path))


def parse_override(text: str) -> dict:
    """`a.b.c=VALUE` (VALUE parsed as YAML) as a nested dict, for `--set` on the command line."""
    if "=" not in text:
        raise ValueError(f"--set expects KEY=VALUE (dotted keys for nested entries), got {text!r}")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value) if value else None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed
    return out


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where relative dataset paths point: the argument, $HIERLOC_DATA_PATH, or the current folder."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("HIERLOC_DATA_PATH", "."))


def experiments_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where experiments live when given by name: the argument, $HIERLOC_EXPER_PATH, or ./experiments."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("HIERLOC_EXPER_PATH", "experiments"))


def resolve_data_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """An absolute path as is, a relative one under the data root."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else data_root(root) / path


def dump_config(config: dict) -> str:
    """YAML text of a configuration (as copied into the experiment folder)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
