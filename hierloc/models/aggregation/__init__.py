"""Pooling of a dense feature map into one global vector: NetVLAD in its two published forms."""

from .kmeans_init import initialize_vlad_clusters
from .matconvnet_vlad import MatConvNetVLAD, l2_normalize_matconvnet
from .netvlad import BatchNormNoScale, NetVLAD, l2_normalize_tf

__all__ = [
    "NetVLAD",
    "MatConvNetVLAD",
    "BatchNormNoScale",
    "initialize_vlad_clusters",
    "l2_normalize_tf",
    "l2_normalize_matconvnet",
]
