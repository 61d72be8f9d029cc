"""MobileNetVLAD: a MobileNetV2 trunk pooled by NetVLAD, distilled from NetVLAD (CoRL 2018)."""

from __future__ import annotations

import torch
from torch import nn

from .aggregation import NetVLAD
from .backbones import MobileNetV2
from .base import GlobalDescriptorModel
from .configs import MobileNetVLADConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MobileNetVLAD(GlobalDescriptorModel):
    """Grayscale (or RGB) image -> MobileNetV2 endpoint -> NetVLAD -> optional FC reduction."""

    kind = "mobilenetvlad"

    def __init__(self, config: MobileNetVLADConfig | None = None, name: str = "mobilenetvlad") -> None:
        config = config or MobileNetVLADConfig()
        super().__init__(name, config)
        if config.normalization not in ("tf", "imagenet"):
            raise ValueError(f"unknown input normalization {config.normalization!r}: use 'tf' or 'imagenet'")
        if config.input_channels not in (1, 3):
            raise ValueError("input_channels must be 1 (grayscale) or 3 (RGB)")
        self.input_channels = config.input_channels
        self.backbone = MobileNetV2(
            config.depth_multiplier, config.endpoint, tf_same_padding=config.tf_same_padding, bn_eps=config.bn_eps,
            last_channels=config.last_channels, keep_layers_after_endpoint=config.keep_layers_after_endpoint,
        )
        self.aggregation = NetVLAD(
            self.backbone.out_channels, config.num_clusters, config.intermediate_proj, config.reduction_dim,
            bn_eps=config.bn_eps, intra_normalization=config.intra_normalization,
        )
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if config.normalization == "imagenet" else ((0.5,) * 3, (0.5,) * 3)
        # Stored as buffers (not in checkpoints) so that .to(device) and dtype casts follow the model.
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.stem_takes_gray = False  # set by `fold_grayscale_stem` on a deployment copy

    def can_fold_grayscale_stem(self) -> bool:
        """Whether the stem can take the grayscale image itself: 1 input channel tiled to 3 with one
        normalisation for all three (the 'tf' one), so tiling and summing the stem's weights agree."""
        return self.input_channels == 1 and self.config.normalization == "tf" and not self.stem_takes_gray

    @torch.no_grad()
    def fold_grayscale_stem(self) -> MobileNetVLAD:
        """Make the stem convolution take the 1-channel image (its weights summed over RGB), in place.

        conv(tile(x)) = conv'(x) with w'[o, 0] = sum_c w[o, c], padding included (zeros in both), so
        descriptors stay the same up to float rounding while the stem reads a third of the input and
        the tiled copy is never made. For deployment copies (exports, runtimes): training keeps RGB weights.
        """
        if not self.can_fold_grayscale_stem():
            raise ValueError(f"{self.name}: the stem takes a tiled grayscale image only with input_channels=1 "
                             "and normalization='tf'")
        stem = self.backbone.features[0][0]
        stem.weight = nn.Parameter(stem.weight.sum(dim=1, keepdim=True))
        stem.in_channels = 1
        self.stem_takes_gray = True
        return self

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise pixel values as `config.normalization` says, with grayscale tiled to 3 channels."""
        if self.config.normalization == "tf":
            # The original: (x - 128) / 128 on grayscale, then tiled to the 3 input channels.
            images = (images - 128.0) / 128.0
            return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 and not self.stem_takes_gray else images
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return (images - self.pixel_mean) / self.pixel_std

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trunk parameters (frozen by the original's `train_backbone: false`)."""
        return list(self.backbone.parameters())
