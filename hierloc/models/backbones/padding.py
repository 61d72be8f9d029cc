"""Convolutions with TensorFlow 'SAME' padding, so weights trained in TF give identical outputs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding that TF 'SAME' applies along one axis; the extra pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d whose padding follows TF 'SAME' (asymmetric at stride 2); same parameter names."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)
        kh, kw = self.kernel_size
        sh, sw = self.stride
        # Stride 1 with an odd kernel is symmetric: let the convolution pad (no extra copy).
        self._symmetric = sh == 1 and sw == 1 and kh % 2 == 1 and kw % 2 == 1
        if self._symmetric:
            self.padding = ((kh - 1) * self.dilation[0] // 2, (kw - 1) * self.dilation[1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad the input as TF 'SAME' does (when asymmetric), then convolve."""
        if not self._symmetric:
            top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
            left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def make_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    tf_same: bool = False,
) -> nn.Conv2d:
    """A conv with symmetric (PyTorch) or TF 'SAME' padding; both keep nn.Conv2d's parameter names."""
    if tf_same:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias)
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, groups=groups, bias=bias
    )
