"""VGG16 convolutional trunk up to conv5_3 (torchvision parameter names `features.N`)."""

from __future__ import annotations

import torch
from torch import nn

# Channels per conv, "M" for 2x2 max-pooling; conv5_3 is the last conv (no pool after it).
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG16Conv5(nn.Module):
    """VGG16 conv1_1 .. conv5_3; `relu_last=False` drops the ReLU after conv5_3, as NetVLAD does."""

    def __init__(self, relu_last: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(item)
        if not relu_last:
            layers.pop()
        self.features = nn.Sequential(*layers)
        self.out_channels = 512
        self.stride = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the conv5_3 feature map of [B, 3, H, W] images."""
        return self.features(x)
