"""The original's triplet-trained models on ResNet-50 block3: NetVLAD pooling and DELF attention pooling.

Both read grayscale (or RGB) raw pixels normalised as (x - 128) / 128 and tiled to 3 channels, run
ResNet-50 v1 up to block3 (stride 16, 1024 channels), pool, optionally reduce the dimension
(L2, fully connected with bias, L2) and return unit descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .aggregation import NetVLAD
from .aggregation.netvlad import l2_normalize_tf
from .backbones import ResNet50Block3
from .base import GlobalDescriptorModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ResNetNetVLADConfig:
    """ResNet-50 block3 + NetVLAD (+ reduction): the original `netvlad_triplets` model."""

    num_clusters: int = 32
    intermediate_proj: int | None = 100
    reduction_dim: int | None = 40
    input_channels: int = 1
    normalization: str = "tf"  # "tf": (x - 128) / 128; "imagenet": torchvision mean/std
    bn_eps: float = 1e-5  # ResNet's BatchNorm epsilon (slim resnet_arg_scope)
    vlad_bn_eps: float = 1e-3  # the VLAD layer's BatchNorm (slim default)
    # The original's `vlad` layer normalises the [K, D] sums over K for every feature dimension.
    intra_normalization: str = "across_clusters"
    resize_factor: float | None = None
    backbone_init: str | None = None  # torchvision ResNet-50 state dict (path or weight name)


@dataclass
class DelfConfig:
    """ResNet-50 block3 + DELF attention pooling (or max pooling) (+ reduction): `delf_triplets`."""

    use_attention: bool = True  # False: global max pooling, the original's ResNet baseline
    attention_kernel: int = 1
    attention_channels: int = 512
    normalize_feature_map: bool = True  # L2 of every local feature before pooling
    normalize_average: bool = True  # divide by the sum of the attention scores
    reduction_dim: int | None = 40
    input_channels: int = 1
    normalization: str = "tf"
    bn_eps: float = 1e-5
    resize_factor: float | None = None
    backbone_init: str | None = None


class DimensionalityReduction(nn.Module):
    """L2, fully connected (with bias), L2: the original's `dimensionality_reduction`."""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(input_dim, output_dim)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalise, project with the fully connected layer and L2-normalise again."""
        return l2_normalize_tf(self.fc(l2_normalize_tf(x)))


class DelfAttentionPooling(nn.Module):
    """Attention-weighted sum of local features (DELF): conv -> BN -> ReLU -> conv to 1 -> softplus."""

    def __init__(self, input_dim: int, config: DelfConfig) -> None:
        super().__init__()
        self.config = config
        self.use_attention = config.use_attention
        self.attention = None
        if config.use_attention:
            k = config.attention_kernel
            self.attention = nn.Sequential(
                nn.Conv2d(input_dim, config.attention_channels, k, padding=k // 2, bias=False),
                nn.BatchNorm2d(config.attention_channels, eps=config.bn_eps),
                nn.ReLU(inplace=True),
                nn.Conv2d(config.attention_channels, 1, k, padding=k // 2),
                nn.Softplus(),
            )
        self.reduction = DimensionalityReduction(input_dim, config.reduction_dim) if config.reduction_dim else None
        self.output_dim = config.reduction_dim or input_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Pool [B, D, H, W] features into one descriptor per image (attention-weighted sum or max)."""
        if self.attention is None:
            descriptor = features.amax(dim=(2, 3))
        else:
            scores = self.attention(features)  # [B, 1, H, W]
            if self.config.normalize_feature_map:
                features = l2_normalize_tf(features, dim=1)
            descriptor = (features * scores).sum(dim=(2, 3))
            if self.config.normalize_average:
                descriptor = descriptor / scores.sum(dim=(2, 3))
        if self.reduction is not None:
            return self.reduction(descriptor)
        return l2_normalize_tf(descriptor)


class _ResNetModel(GlobalDescriptorModel):
    """Shared input handling of the ResNet-50 block3 models."""

    def _init_trunk(self, config) -> None:
        if config.normalization not in ("tf", "imagenet"):
            raise ValueError(f"unknown input normalization {config.normalization!r}: use 'tf' or 'imagenet'")
        if config.input_channels not in (1, 3):
            raise ValueError("input_channels must be 1 (grayscale) or 3 (RGB)")
        self.input_channels = config.input_channels
        self.backbone = ResNet50Block3(bn_eps=config.bn_eps)
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if config.normalization == "imagenet" else ((0.5,) * 3, (0.5,) * 3)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        # (x - 128) / 128 for "tf" (0.5 * 255 = 127.5: the original used 128).
        if self.config.normalization == "tf":
            return (images - 128.0) / 128.0
        return (images - self.pixel_mean) / self.pixel_std

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trunk parameters (frozen by the original's `train_backbone: false`)."""
        return list(self.backbone.parameters())

    def load_backbone_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        """Initialise the trunk from a torchvision ResNet-50 state dict (`backbone_init`)."""
        load_torchvision_resnet50(self.backbone, state_dict, source)


class ResNetNetVLAD(_ResNetModel):
    """ResNet-50 block3 -> NetVLAD (optional 1x1 projection) -> optional reduction."""

    kind = "resnet_netvlad"

    def __init__(self, config: ResNetNetVLADConfig | None = None, name: str = "netvlad_triplets") -> None:
        config = config or ResNetNetVLADConfig()
        super().__init__(name, config)
        self._init_trunk(config)
        self.aggregation = NetVLAD(self.backbone.out_channels, config.num_clusters, config.intermediate_proj,
                                   reduction_dim=None, bn_eps=config.vlad_bn_eps,
                                   intra_normalization=config.intra_normalization)
        self.reduction = (DimensionalityReduction(self.aggregation.output_dim, config.reduction_dim)
                          if config.reduction_dim else None)

    @property
    def descriptor_dim(self) -> int:
        """Size of the output descriptor (after the reduction when there is one)."""
        return self.config.reduction_dim or self.aggregation.output_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Global descriptors of [B, C, H, W] images: VLAD pooling, then the optional reduction."""
        if images.ndim != 4:
            raise ValueError(f"{self.name}: expected images of shape [B, C, H, W], got {tuple(images.shape)}")
        descriptor = self.aggregation(self.local_features(images))
        return self.reduction(descriptor) if self.reduction is not None else descriptor


class DelfModel(_ResNetModel):
    """ResNet-50 block3 -> DELF attention (or max) pooling -> optional reduction."""

    kind = "delf"

    def __init__(self, config: DelfConfig | None = None, name: str = "delf_triplets") -> None:
        config = config or DelfConfig()
        super().__init__(name, config)
        self._init_trunk(config)
        self.aggregation = DelfAttentionPooling(self.backbone.out_channels, config)


def load_torchvision_resnet50(backbone: ResNet50Block3, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load a torchvision ResNet-50 state dict into the block3 trunk (layer4 and fc are left unused)."""
    from .checkpoint import load_state_dict_strict

    own = backbone.state_dict()
    unused = [k for k in state_dict if k not in own and not k.startswith(("layer4.", "fc."))]
    if unused:
        from .checkpoint import CheckpointError

        raise CheckpointError(f"{source}: not a torchvision ResNet-50 state dict (unexpected keys {unused[:3]})")
    load_state_dict_strict(backbone, {k: v for k, v in state_dict.items() if k in own}, source)


__all__ = ["ResNetNetVLADConfig", "DelfConfig", "ResNetNetVLAD", "DelfModel", "DelfAttentionPooling",
           "DimensionalityReduction", "load_torchvision_resnet50"]
