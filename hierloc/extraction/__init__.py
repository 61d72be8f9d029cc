"""Image -> descriptor: batched, thread-safe inference and hloc-layout feature files."""

from .global_descriptors import GlobalExtractor, image_to_tensor
from .h5_features import extract_global_descriptors, read_global_descriptors

__all__ = ["GlobalExtractor", "image_to_tensor", "extract_global_descriptors", "read_global_descriptors"]
