"""VLAD layers against direct numpy implementations of SPEC.md's formulas."""

from __future__ import annotations

import numpy as np
import torch

from hierloc.models.aggregation import MatConvNetVLAD, NetVLAD


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def tf_l2(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.maximum((x * x).sum(-1, keepdims=True), 1e-12))


def randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "var" in str(t) else torch.randn(t.shape, generator=g))


def test_mobilenetvlad_layer_matches_numpy_formula():
    torch.manual_seed(0)
    layer = NetVLAD(input_dim=6, num_clusters=4, reduction_dim=5, bn_eps=1e-3).eval()
    with torch.no_grad():
        layer.memberships.weight.normal_()
        layer.memberships_bn.bias.normal_()
        layer.memberships_bn.running_mean.normal_()
        layer.memberships_bn.running_var.uniform_(0.5, 2.0)
        layer.clusters.normal_()
        layer.reduction.weight.normal_()
        layer.reduction.bias.normal_()
    features = torch.randn(2, 6, 3, 5)
    with torch.no_grad():
        out = layer(features).numpy()

    x = features.numpy().transpose(0, 2, 3, 1).reshape(2, 15, 6)  # [B, N, D]
    w = layer.memberships.weight.detach().numpy()[:, :, 0, 0]  # [K, D]
    bn = layer.memberships_bn
    logits = x @ w.T
    # BatchNorm with an offset and no scale.
    logits = (logits - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + 1e-3) + bn.bias.detach().numpy()
    a = softmax(logits, axis=-1)  # [B, N, K]
    c = layer.clusters.detach().numpy()  # [K, D]
    residual = c[None, None] - x[:, :, None]  # cluster - feature: [B, N, K, D]
    v = (a[..., None] * residual).sum(1)  # [B, K, D]
    v = tf_l2(v)
    v = tf_l2(v.reshape(2, -1))  # cluster-major
    v = tf_l2(tf_l2(v) @ layer.reduction.weight.detach().numpy().T + layer.reduction.bias.detach().numpy())
    np.testing.assert_allclose(out, v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_mobilenetvlad_layer_without_reduction_is_intra_normalised():
    layer = NetVLAD(input_dim=4, num_clusters=3, reduction_dim=None).eval()
    with torch.no_grad():
        out = layer(torch.randn(1, 4, 2, 2))
    per_cluster = out.view(3, 4).norm(dim=1)
    assert torch.allclose(per_cluster, torch.full((3,), 3 ** -0.5), atol=1e-5)


def test_matconvnet_vlad_matches_numpy_formula():
    torch.manual_seed(1)
    layer = MatConvNetVLAD(input_dim=5, num_clusters=3, whitening_dim=4).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    features = torch.randn(2, 5, 4, 3)
    with torch.no_grad():
        out = layer(features).numpy()
    x = features.numpy().transpose(0, 2, 3, 1).reshape(2, 12, 5)
    a = softmax(x @ layer.assignment.weight.detach().numpy()[:, :, 0, 0].T, axis=-1)  # [B, N, K]
    centers = layer.centers.detach().numpy()  # [K, D]
    v = (a[..., None] * (x[:, :, None] - centers[None, None])).sum(1)  # [B, K, D]

    def mcn(y):
        return y / np.sqrt((y * y).sum(-1, keepdims=True) + 1e-12)

    v = mcn(v)
    v = mcn(v.transpose(0, 2, 1).reshape(2, -1))  # dimension-major, as MatConvNet's [D, K]
    v = tf_l2(v @ layer.whitening.weight.detach().numpy().T + layer.whitening.bias.detach().numpy())
    np.testing.assert_allclose(out, v, rtol=1e-4, atol=1e-5)
