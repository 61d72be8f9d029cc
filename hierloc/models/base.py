"""Common interface of global descriptor networks: raw-pixel images in, unit descriptors out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R 601 luma weights, the same as OpenCV's and TF's rgb_to_grayscale.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class GlobalDescriptorModel(nn.Module):
    """Base class: `forward(images)` takes [B, C, H, W] floats in 0..255 and returns [B, D] unit vectors."""

    kind: str = ""
    input_channels: int = 3

    def __init__(self, name: str, config) -> None:
        super().__init__()
        self.name = name
        self.config = config

    @property
    def descriptor_dim(self) -> int:
        """Size of the output descriptor."""
        return self.aggregation.output_dim

    def adapt_channels(self, images: torch.Tensor) -> torch.Tensor:
        """Convert grayscale to RGB (replicate) or RGB to grayscale (luma) as the network expects."""
        channels = images.shape[1]
        if channels == self.input_channels:
            return images
        if channels == 1 and self.input_channels == 3:
            return images.expand(-1, 3, -1, -1)
        if channels == 3 and self.input_channels == 1:
            w = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
            return (images * w).sum(1, keepdim=True)
        raise ValueError(f"{self.name}: images must have 1 or 3 channels, got {channels}")

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the configured input resize factor, if any."""
        factor = getattr(self.config, "resize_factor", None)
        if not factor or factor == 1:
            return images
        size = (max(1, round(images.shape[-2] * factor)), max(1, round(images.shape[-1] * factor)))
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """Map raw 0..255 pixels to what the trunk was trained on."""
        raise NotImplementedError

    def local_features(self, images: torch.Tensor) -> torch.Tensor:
        """The dense feature map the aggregation pools: [B, D, h, w]."""
        x = self.normalize_input(self.adapt_channels(self.resize(images)))
        return self.backbone(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Global descriptors [B, descriptor_dim] of [B, C, H, W] images."""
        if images.ndim != 4:
            raise ValueError(f"{self.name}: expected images of shape [B, C, H, W], got {tuple(images.shape)}")
        return self.aggregation(self.local_features(images))
