"""MobileNetV2 with any width multiplier, cut at a named endpoint, torchvision-compatible names.

Endpoints follow TF-slim: `layer_1` is the stem conv, `layer_2` .. `layer_18` the 17 inverted
residual blocks, `layer_19` the final 1x1 conv. Parameter names match torchvision's
`mobilenet_v2` (`features.N...`), so its ImageNet checkpoint loads key for key.
"""

from __future__ import annotations

import torch
from torch import nn

from .padding import make_conv2d

# (expansion factor t, output channels c, repeats n, first stride s), as in the paper and TF-slim.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
NUM_ENDPOINTS = 19


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels as TF-slim and torchvision do: multiple of `divisor`, never below 90 %."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def endpoint_index(endpoint: str) -> int:
    """Parse `layer_K` into K (1..19) with a clear error for anything else."""
    prefix = "layer_"
    if not endpoint.startswith(prefix) or not endpoint[len(prefix):].isdigit():
        raise ValueError(f"unknown MobileNetV2 endpoint {endpoint!r}: expected layer_1 .. layer_{NUM_ENDPOINTS}")
    index = int(endpoint[len(prefix):])
    if not 1 <= index <= NUM_ENDPOINTS:
        raise ValueError(f"unknown MobileNetV2 endpoint {endpoint!r}: expected layer_1 .. layer_{NUM_ENDPOINTS}")
    return index


class ConvBNReLU(nn.Sequential):
    """Conv + BatchNorm + ReLU6 (indices 0, 1, 2 as in torchvision)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 tf_same: bool = False, bn_eps: float = 1e-5) -> None:
        super().__init__(
            make_conv2d(cin, cout, kernel, stride=stride, groups=groups, tf_same=tf_same),
            nn.BatchNorm2d(cout, eps=bn_eps),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear projection (1x1), residual when shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int,
                 tf_same: bool = False, bn_eps: float = 1e-5) -> None:
        super().__init__()
        hidden = make_divisible(cin * expansion) if expansion != 1 else cin
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU(cin, hidden, 1, tf_same=tf_same, bn_eps=bn_eps))
        layers += [
            ConvBNReLU(hidden, hidden, 3, stride=stride, groups=hidden, tf_same=tf_same, bn_eps=bn_eps),
            make_conv2d(hidden, cout, 1, tf_same=tf_same),
            nn.BatchNorm2d(cout, eps=bn_eps),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block, adding the input when the block is residual."""
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 trunk up to `endpoint`, optionally with the ImageNet classifier (full model)."""

    def __init__(
        self,
        width_multiplier: float = 1.0,
        endpoint: str = "layer_18",
        tf_same_padding: bool = False,
        bn_eps: float = 1e-5,
        last_channels: int | None = None,
        num_classes: int | None = None,
        keep_layers_after_endpoint: bool = False,
    ) -> None:
        """`keep_layers_after_endpoint`: also hold the trunk's layers past the cut (not run), so that a
        converted checkpoint keeps every variable of the original (TF-slim builds all 19 layers)."""
        super().__init__()
        cut = endpoint_index(endpoint)
        if num_classes is not None and cut != NUM_ENDPOINTS:
            raise ValueError("the classifier needs the full trunk (endpoint layer_19)")
        self.width_multiplier = width_multiplier
        self.endpoint = endpoint
        kw = dict(tf_same=tf_same_padding, bn_eps=bn_eps)
        channels = make_divisible(32 * width_multiplier)
        layers: list[nn.Module] = [ConvBNReLU(3, channels, 3, stride=2, **kw)]
        endpoint_channels = [channels]
        for expansion, c, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
            cout = make_divisible(c * width_multiplier)
            for i in range(repeats):
                layers.append(InvertedResidual(channels, cout, first_stride if i == 0 else 1, expansion, **kw))
                channels = cout
                endpoint_channels.append(channels)
        if last_channels is None:
            last_channels = make_divisible(1280 * max(1.0, width_multiplier))
        layers.append(ConvBNReLU(channels, last_channels, 1, **kw))
        endpoint_channels.append(last_channels)
        self.num_active_layers = cut
        self.features = nn.Sequential(*(layers if keep_layers_after_endpoint else layers[:cut]))
        self.out_channels = endpoint_channels[cut - 1]
        self.stride = 2 ** sum(1 for layer in layers[:cut] for m in layer.modules()
                               if isinstance(m, nn.Conv2d) and m.stride[0] == 2)
        self.classifier = None
        if num_classes is not None:
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers up to `endpoint`, then the classifier when there is one."""
        if len(self.features) == self.num_active_layers:
            x = self.features(x)
        else:
            for layer in self.features[: self.num_active_layers]:
                x = layer(x)
        if self.classifier is not None:
            x = self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
        return x
