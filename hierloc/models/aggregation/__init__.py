"""Pooling of a dense feature map into one global vector: NetVLAD in its two published forms."""

from .netvlad import NetVLAD, BatchNormNoScale, l2_normalize_tf
from .matconvnet_vlad import MatConvNetVLAD, l2_normalize_matconvnet
from .kmeans_init import initialize_vlad_clusters

__all__ = [
    "NetVLAD",
    "MatConvNetVLAD",
    "BatchNormNoScale",
    "initialize_vlad_clusters",
    "l2_normalize_tf",
    "l2_normalize_matconvnet",
]
