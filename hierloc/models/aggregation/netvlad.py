"""The NetVLAD layer of MobileNetVLAD (the original TF `vlad` + `dimensionality_reduction`).

Memberships: 1x1 conv (no bias) + BatchNorm with offset and no scale, softmax over clusters.
Residuals are `cluster - feature` weighted by membership and summed over the image; each cluster
is L2-normalised, the [K, D] result is flattened cluster-major and L2-normalised again. An
optional fully connected layer (with bias) reduces the dimension, followed by L2.

The released MobileNetVLAD graph does not normalise per cluster: its "intra-normalization" is
`tf.nn.l2_normalize(v, axis=1)` on v of shape [B, K, D], i.e. over the clusters for every
feature dimension (see `saved_model.pb`: `pred/vlad/l2_normalize/Sum/reduction_indices` = 1).
`intra_normalization="across_clusters"` reproduces that; "per_cluster" is the paper's form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TF_L2_EPSILON = 1e-12
# Axis of the [B, K, D] residual sums that the first normalisation runs over.
INTRA_NORMALIZATION_DIMS = {"per_cluster": -1, "across_clusters": 1}


def l2_normalize_tf(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """tf.nn.l2_normalize: x / sqrt(max(sum(x^2), 1e-12))."""
    return x * torch.rsqrt(torch.clamp((x * x).sum(dim=dim, keepdim=True), min=TF_L2_EPSILON))


class BatchNormNoScale(nn.Module):
    """BatchNorm with a learned offset but no scale (TF-slim `batch_norm(scale=False)`)."""

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.01) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with batch (training) or running (eval) statistics and add the learned offset."""
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias,
                            self.training, self.momentum, self.eps)


class NetVLAD(nn.Module):
    """MobileNetVLAD's VLAD pooling: [B, D, H, W] -> [B, K*D] (or [B, reduction_dim])."""

    def __init__(
        self,
        input_dim: int,
        num_clusters: int = 32,
        intermediate_proj: int | None = None,
        reduction_dim: int | None = 4096,
        bn_eps: float = 1e-3,
        intra_normalization: str = "per_cluster",
    ) -> None:
        super().__init__()
        if intra_normalization not in INTRA_NORMALIZATION_DIMS:
            raise ValueError(f"unknown intra_normalization {intra_normalization!r}: "
                             f"use one of {sorted(INTRA_NORMALIZATION_DIMS)}")
        self.intra_normalization = intra_normalization
        self._intra_dim = INTRA_NORMALIZATION_DIMS[intra_normalization]
        self.num_clusters = num_clusters
        self.intermediate_proj = None
        if intermediate_proj:
            self.intermediate_proj = nn.Sequential(
                nn.Conv2d(input_dim, intermediate_proj, 1, bias=False), BatchNormNoScale(intermediate_proj, bn_eps)
            )
            input_dim = intermediate_proj
        self.feature_dim = input_dim
        self.memberships = nn.Conv2d(input_dim, num_clusters, 1, bias=False)
        self.memberships_bn = BatchNormNoScale(num_clusters, bn_eps)
        self.clusters = nn.Parameter(torch.randn(num_clusters, input_dim) * 0.1)
        self.reduction = nn.Linear(num_clusters * input_dim, reduction_dim) if reduction_dim else None
        self.output_dim = reduction_dim or num_clusters * input_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Pool [B, D, H, W] features into L2-normalised VLAD descriptors, reduced if configured."""
        if self.intermediate_proj is not None:
            features = self.intermediate_proj(features)
        memberships = torch.softmax(self.memberships_bn(self.memberships(features)), dim=1)
        a = memberships.flatten(2).float()  # [B, K, N]
        x = features.flatten(2).float()  # [B, D, N]
        # sum_n a_kn (c_k - x_n) = c_k * sum_n a_kn - sum_n a_kn x_n, without the [B, K, D, N] tensor.
        vlad = a.sum(-1, keepdim=True) * self.clusters.float() - torch.bmm(a, x.transpose(1, 2))
        vlad = l2_normalize_tf(vlad, dim=self._intra_dim)  # [B, K, D]: -1 per cluster, 1 across clusters
        vlad = l2_normalize_tf(vlad.flatten(1), dim=-1)  # cluster-major
        if self.reduction is not None:
            vlad = l2_normalize_tf(F.linear(vlad, self.reduction.weight.float(), self.reduction.bias.float()))
        return vlad
