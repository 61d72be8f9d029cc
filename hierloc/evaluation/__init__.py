"""Retrieval evaluation: ground truth from poses, recall@N, pictures of retrieved images."""

from .ground_truth import pose_ground_truth, relative_rotation_deg
from .recall import recall_at_n
from .visualize import retrieval_grid

__all__ = ["pose_ground_truth", "relative_rotation_deg", "recall_at_n", "retrieval_grid"]
