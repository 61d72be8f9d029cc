"""Named model configurations; the defaults reproduce the original models (SPEC.md section 2)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .triplet import DelfConfig, ResNetNetVLADConfig


@dataclass
class MobileNetVLADConfig:
    """MobileNetV2 trunk + NetVLAD (+ FC reduction): the original MobileNetVLAD and its variants."""

    depth_multiplier: float = 0.35
    endpoint: str = "layer_18"
    num_clusters: int = 32
    intermediate_proj: int | None = None
    reduction_dim: int | None = 4096
    input_channels: int = 1  # 1: grayscale as the original; 3: RGB
    normalization: str = "tf"  # "tf": (x - 128) / 128; "imagenet": torchvision mean/std
    tf_same_padding: bool = True
    bn_eps: float = 1e-3  # TF-slim's BatchNorm epsilon
    resize_factor: float | None = None  # optional resize of the input image, as the original's `resize_input`
    backbone_init: str | None = None  # named weights for the trunk when no full checkpoint is given
    # "across_clusters": the released graph's first VLAD normalisation (over K for each feature
    # dimension); "per_cluster": the paper's intra-normalisation.
    intra_normalization: str = "across_clusters"
    # Keep the trunk's layers past `endpoint` as unused parameters (converted TF-slim checkpoints
    # hold all 19 layers); their width when kept (TF-slim: 1280 * depth, torchvision: 1280 at <= 1).
    keep_layers_after_endpoint: bool = False
    last_channels: int | None = None


@dataclass
class NetVLADConfig:
    """VGG16 conv5_3 + MatConvNet NetVLAD + whitening PCA: the original teacher (Pitts30k)."""

    num_clusters: int = 64
    whitening_dim: int | None = 4096
    # Replaced by the learned `average_rgb` of the published model when converted.
    average_rgb: tuple[float, float, float] = (123.68, 116.779, 103.939)
    resize_factor: float | None = None


@dataclass
class ModelSpec:
    """A named model: its architecture kind, configuration and default weights."""

    name: str
    kind: str  # "mobilenetvlad" or "netvlad"
    config: Any
    default_weights: str | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)


MODEL_SPECS: dict[str, ModelSpec] = {
    "mobilenetvlad": ModelSpec(
        "mobilenetvlad", "mobilenetvlad", MobileNetVLADConfig(),
        default_weights="mobilenetvlad_depth-0.35",
        description="MobileNetV2 0.35 (TF-SAME) to layer_18, NetVLAD 32 clusters, FC to 4096; grayscale",
    ),
    "netvlad": ModelSpec(
        "netvlad", "netvlad", NetVLADConfig(),
        default_weights="netvlad_vgg16_pitts30k",
        description="VGG16 conv5_3, NetVLAD 64 clusters, whitening PCA to 4096; RGB (the teacher)",
    ),
    "mobilenetvlad_imagenet": ModelSpec(
        "mobilenetvlad_imagenet", "mobilenetvlad",
        MobileNetVLADConfig(depth_multiplier=1.0, num_clusters=32, reduction_dim=None, input_channels=3,
                            normalization="imagenet", tf_same_padding=False, bn_eps=1e-5,
                            backbone_init="mobilenet_v2_imagenet"),
        description="ImageNet MobileNetV2 1.0 (torchvision weights, offline) to layer_18, NetVLAD 32 "
                    "clusters (k-means init), 10240-D; RGB",
    ),
}

# The original's triplet-trained ResNet-50 block3 models (hierloc.models.triplet).
MODEL_SPECS.update({
    "netvlad_triplets": ModelSpec(
        "netvlad_triplets", "resnet_netvlad", ResNetNetVLADConfig(),
        description="ResNet-50 block3, 1x1 projection to 100, NetVLAD 32 clusters, FC to 40; grayscale "
                    "(the original's triplet-trained NetVLAD)",
    ),
    "delf_triplets": ModelSpec(
        "delf_triplets", "delf", DelfConfig(),
        description="ResNet-50 block3, DELF attention pooling, FC to 40; grayscale (the original's "
                    "triplet-trained DELF)",
    ),
    "resnet_maxpool": ModelSpec(
        "resnet_maxpool", "delf", DelfConfig(use_attention=False, reduction_dim=None),
        description="ResNet-50 block3, global max pooling, 1024-D (the original's ResNet baseline)",
    ),
})

CONFIG_CLASSES = {"mobilenetvlad": MobileNetVLADConfig, "netvlad": NetVLADConfig,
                  "resnet_netvlad": ResNetNetVLADConfig, "delf": DelfConfig}


def config_to_dict(config: Any) -> dict:
    """Plain dict of a configuration dataclass (stored in checkpoints)."""
    return dataclasses.asdict(config)


def config_from_dict(kind: str, values: dict) -> Any:
    """Rebuild a configuration dataclass, refusing unknown keys and values outside `validate_config`'s bounds."""
    if kind not in CONFIG_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(CONFIG_CLASSES)}")
    if not isinstance(values, dict):
        raise ValueError(f"a {kind} configuration must be a dict, got {type(values).__name__}")
    cls = CONFIG_CLASSES[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {kind} configuration keys: {sorted(unknown, key=str)}")
    values = dict(values)
    if "average_rgb" in values:
        if not isinstance(values["average_rgb"], (list, tuple)):
            raise ValueError("average_rgb must be a list of three numbers")
        values["average_rgb"] = tuple(values["average_rgb"])
    config = cls(**values)
    validate_config(kind, config)
    return config


# Bounds of configuration values (checkpoints are untrusted input): generous for real models, far below
# what would make building the model exhaust memory. _MAX_HEAD_WEIGHTS bounds the largest layer, the
# VLAD output -> reduction matrix (the published NetVLAD's whitening has 2^27 weights).
_MAX_CLUSTERS = 1024
_MAX_CHANNELS = 16384
_MAX_OUTPUT_DIM = 65536
_MAX_HEAD_WEIGHTS = 2**28
_MAX_DEPTH_MULTIPLIER = 4.0
_MAX_RESIZE_FACTOR = 16.0
# Feature channels entering the VLAD layer when no projection sets them (upper bounds).
_TRUNK_CHANNELS = {"netvlad": 512, "resnet_netvlad": 1024, "delf": 1024}
_CHOICES = {"normalization": ("tf", "imagenet"), "intra_normalization": ("across_clusters", "per_cluster")}


def _check_int(label: str, value: Any, low: int, high: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"configuration {label} must be an integer in [{low}, {high}]"
                         f"{' or null' if optional else ''}, got {value!r}")


def _check_float(label: str, value: Any, low: float, high: float, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low < value <= high:
        raise ValueError(f"configuration {label} must be a number in ({low}, {high}]"
                         f"{' or null' if optional else ''}, got {value!r}")


def validate_config(kind: str, config: Any) -> None:
    """Raise ValueError unless every value of a model configuration has the right type and a sane size."""
    values = dataclasses.asdict(config)
    for label, value in values.items():
        if label in _CHOICES and value not in _CHOICES[label]:
            raise ValueError(f"configuration {label} must be one of {list(_CHOICES[label])}, got {value!r}")
        if label in ("tf_same_padding", "keep_layers_after_endpoint", "use_attention", "normalize_feature_map",
                     "normalize_average") and not isinstance(value, bool):
            raise ValueError(f"configuration {label} must be true or false, got {value!r}")
        if label == "backbone_init" and value is not None and not isinstance(value, str):
            raise ValueError(f"configuration {label} must be a string or null, got {type(value).__name__}")
        if label == "endpoint" and not isinstance(value, str):
            raise ValueError(f"configuration {label} must be a string, got {type(value).__name__}")
    if "num_clusters" in values:
        _check_int("num_clusters", values["num_clusters"], 1, _MAX_CLUSTERS)
    for label in ("intermediate_proj", "last_channels", "attention_channels"):
        if label in values:
            _check_int(label, values[label], 1, _MAX_CHANNELS, optional=True)
    for label in ("reduction_dim", "whitening_dim"):
        if label in values:
            _check_int(label, values[label], 1, _MAX_OUTPUT_DIM, optional=True)
    if "input_channels" in values and values["input_channels"] not in (1, 3):
        raise ValueError(f"configuration input_channels must be 1 or 3, got {values['input_channels']!r}")
    if "attention_kernel" in values:
        _check_int("attention_kernel", values["attention_kernel"], 1, 15)
    for label in ("bn_eps", "vlad_bn_eps"):
        if label in values:
            _check_float(label, values[label], 0.0, 1.0)
    _check_float("resize_factor", values.get("resize_factor"), 0.0, _MAX_RESIZE_FACTOR, optional=True)
    if "depth_multiplier" in values:
        _check_float("depth_multiplier", values["depth_multiplier"], 0.0, _MAX_DEPTH_MULTIPLIER)
    if "average_rgb" in values:
        rgb = values["average_rgb"]
        if len(rgb) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                    and abs(v) <= 1e4 for v in rgb):
            raise ValueError(f"configuration average_rgb must be three finite numbers, got {rgb!r}")
    if kind == "mobilenetvlad":
        from .backbones.mobilenetv2 import endpoint_index

        endpoint_index(values["endpoint"])  # ValueError naming the valid endpoints
        trunk = math.ceil(320 * values["depth_multiplier"] / 8) * 8 if values["last_channels"] is None \
            else values["last_channels"]
    else:
        trunk = _TRUNK_CHANNELS.get(kind, 1024)
    features = values.get("intermediate_proj") or max(trunk, values.get("attention_channels") or 0)
    aggregated = values.get("num_clusters", 1) * features
    head = aggregated * (values.get("reduction_dim") or values.get("whitening_dim") or 1)
    if head > _MAX_HEAD_WEIGHTS:
        raise ValueError(f"configuration gives a {aggregated}-D aggregate and a head of {head} weights "
                         f"(at most {_MAX_HEAD_WEIGHTS}); the checkpoint is damaged or not a real model")


def get_model_spec(name: str) -> ModelSpec:
    """The named model, or a clear error listing the known names."""
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODEL_SPECS))}")
    return MODEL_SPECS[name]


# Model names used by the original deployment code, as stored in its index files.
MODEL_ALIASES = {"mobilenetvlad_depth-0.35": "mobilenetvlad"}


def canonical_model_name(name: str) -> str:
    """hierloc's name for a model name found in an index (the original's names are aliases)."""
    return MODEL_ALIASES.get(name, name)
