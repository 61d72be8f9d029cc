"""Named model configurations; the defaults reproduce the original models (SPEC.md section 2)."""

from __future__ import annotations

import dataclasses
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
    """Rebuild a configuration dataclass, refusing unknown keys with a clear message."""
    if kind not in CONFIG_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {kind} configuration keys: {sorted(unknown)}")
    values = dict(values)
    if "average_rgb" in values:
        values["average_rgb"] = tuple(values["average_rgb"])
    return cls(**values)


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
