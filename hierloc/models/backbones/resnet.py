"""ResNet-50 up to block3 (`layer3`: stride 16, 1024 channels), torchvision parameter names."""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus the shortcut."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, bn_eps: float = 1e-5) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=bn_eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=bn_eps)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=bn_eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the bottleneck and add the (downsampled) shortcut, then ReLU."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Block3(nn.Module):
    """ResNet-50 stem and blocks 1-3; the features the original's triplet models pool."""

    def __init__(self, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, 64, 3, 1, bn_eps)
        self.layer2 = self._stage(256, 128, 4, 2, bn_eps)
        self.layer3 = self._stage(512, 256, 6, 2, bn_eps)
        self.out_channels = 1024
        self.stride = 16

    @staticmethod
    def _stage(cin: int, width: int, blocks: int, stride: int, bn_eps: float) -> nn.Sequential:
        units = [Bottleneck(cin, width, stride, bn_eps)]
        units += [Bottleneck(width * Bottleneck.expansion, width, 1, bn_eps) for _ in range(blocks - 1)]
        return nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the block-3 feature map of [B, 3, H, W] images."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))
