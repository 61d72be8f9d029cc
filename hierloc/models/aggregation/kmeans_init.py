"""Start a VLAD layer without training: k-means centres of real local features (faiss)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from .matconvnet_vlad import MatConvNetVLAD
from .netvlad import NetVLAD


def _sharpness(features: np.ndarray, centroids: np.ndarray) -> float:
    """Softmax temperature that gives the nearest centre ~100x the weight of the second (NetVLAD init)."""
    dots = features @ centroids.T
    dots.sort(axis=1)
    gap = float(np.mean(dots[:, -1] - dots[:, -2]))
    return float(-np.log(0.01) / max(gap, 1e-6))


@torch.inference_mode()
def initialize_vlad_clusters(
    model: torch.nn.Module,
    images: Iterable[torch.Tensor],
    max_features: int = 50_000,
    features_per_image: int = 500,
    iterations: int = 25,
    seed: int = 0,
) -> np.ndarray:
    """Set the VLAD centres and memberships of `model` from k-means on its local features of `images`.

    `images` are [1, C, H, W] float tensors of raw pixel values, as the model's forward expects.
    Returns the centroids [K, D].
    """
    import faiss

    vlad = model.aggregation
    if not isinstance(vlad, (NetVLAD, MatConvNetVLAD)):
        raise TypeError(f"{type(vlad).__name__} is not a VLAD layer")
    rng = np.random.default_rng(seed)
    samples: list[np.ndarray] = []
    total = 0
    model.eval()
    for image in tqdm(images, desc="local features for k-means", unit="img"):
        features = model.local_features(image)  # [1, D, H, W]
        if isinstance(vlad, NetVLAD) and vlad.intermediate_proj is not None:
            features = vlad.intermediate_proj(features)
        flat = features[0].flatten(1).T.float().numpy()
        keep = rng.choice(len(flat), size=min(features_per_image, len(flat)), replace=False)
        samples.append(flat[keep])
        total += len(keep)
        if total >= max_features:
            break
    if not samples:
        raise ValueError("no images were given to initialise the VLAD clusters")
    features = np.ascontiguousarray(np.concatenate(samples)[:max_features], dtype=np.float32)
    k = vlad.num_clusters
    if len(features) < k:
        raise ValueError(f"{len(features)} local features are too few for {k} clusters: give more images")
    kmeans = faiss.Kmeans(features.shape[1], k, niter=iterations, seed=seed, verbose=False,
                          max_points_per_centroid=max(1, len(features) // k + 1))
    kmeans.train(features)
    centroids = kmeans.centroids.astype(np.float32)
    alpha = _sharpness(features, centroids)
    c = torch.from_numpy(centroids)
    if isinstance(vlad, NetVLAD):
        # softmax over (2*alpha*c_k . x - alpha*|c_k|^2) is a soft nearest-centre assignment.
        bn = vlad.memberships_bn
        scale = float(np.sqrt(1.0 + bn.eps))  # cancels the BatchNorm with unit running variance
        vlad.memberships.weight.copy_((2 * alpha * c * scale)[:, :, None, None])
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.bias.copy_(-alpha * (c * c).sum(1))
        vlad.clusters.copy_(c)
    else:
        vlad.assignment.weight.copy_((2 * alpha * c)[:, :, None, None])
        vlad.centers.copy_(c)
    return centroids
