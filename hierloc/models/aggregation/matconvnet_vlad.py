"""The VLAD layer of the original NetVLAD (MatConvNet `vlad_preL2_intra` + whitening PCA).

Soft assignment: 1x1 conv without bias, softmax. v_k = sum_n a_kn (x_n - c_k); every cluster and
then the flattened vector are normalised as MatConvNet does, x / sqrt(sum(x^2) + 1e-12). The
flattening is dimension-major ([D, K] row-major), the layout of the published whitening matrix
(MatConvNet, netvlad_tf_open and hloc's struct export all use it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .netvlad import l2_normalize_tf

MATCONVNET_EPSILON = 1e-12


def l2_normalize_matconvnet(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """MatConvNet's normalisation: x / sqrt(sum(x^2) + 1e-12)."""
    return x * torch.rsqrt((x * x).sum(dim=dim, keepdim=True) + MATCONVNET_EPSILON)


class MatConvNetVLAD(nn.Module):
    """NetVLAD (Arandjelovic et al.) pooling with optional whitening PCA: [B, D, H, W] -> [B, out]."""

    def __init__(self, input_dim: int = 512, num_clusters: int = 64, whitening_dim: int | None = 4096) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.feature_dim = input_dim
        self.assignment = nn.Conv2d(input_dim, num_clusters, 1, bias=False)
        self.centers = nn.Parameter(torch.randn(num_clusters, input_dim) * 0.1)
        self.whitening = nn.Linear(num_clusters * input_dim, whitening_dim) if whitening_dim else None
        self.output_dim = whitening_dim or num_clusters * input_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Pool [B, D, H, W] features into L2-normalised VLAD descriptors, whitened if configured."""
        a = torch.softmax(self.assignment(features), dim=1).flatten(2).float()  # [B, K, N]
        x = features.flatten(2).float()  # [B, D, N]
        vlad = torch.bmm(a, x.transpose(1, 2)) - a.sum(-1, keepdim=True) * self.centers.float()  # [B, K, D]
        vlad = l2_normalize_matconvnet(vlad, dim=-1)
        vlad = l2_normalize_matconvnet(vlad.transpose(1, 2).flatten(1), dim=-1)  # dimension-major
        if self.whitening is not None:
            vlad = l2_normalize_tf(F.linear(vlad, self.whitening.weight.float(), self.whitening.bias.float()))
        return vlad
