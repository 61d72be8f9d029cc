"""Modules compiled with torch.jit.script inside exported graphs.

This file must not use `from __future__ import annotations`: TorchScript reads the annotations.
"""

from typing import List

import torch


class SamePaddingConv2d(torch.nn.Module):
    """TorchScript-compiled twin of Conv2dSame: the TF 'SAME' padding is computed from the input size
    inside the graph, so traced and ONNX files keep it right for every image size (tracing the
    Python version would freeze the padding of the example image)."""

    stride: List[int]
    kernel_size: List[int]
    dilation: List[int]
    groups: int

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride = list(conv.stride)
        self.kernel_size = list(conv.kernel_size)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups

    def _total_padding(self, size: int, kernel: int, stride: int, dilation: int) -> int:
        effective = (kernel - 1) * dilation + 1
        out = (size + stride - 1) // stride
        return max((out - 1) * stride + effective - size, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad the input to TF 'SAME' for its size, then convolve without padding."""
        ph = self._total_padding(x.size(2), self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = self._total_padding(x.size(3), self.kernel_size[1], self.stride[1], self.dilation[1])
        x = torch.nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride, [0, 0], self.dilation, self.groups)
