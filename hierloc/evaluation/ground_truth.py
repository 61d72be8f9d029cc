"""Which reference keyframes are correct for a query: within a distance and a viewing-angle change."""

from __future__ import annotations

import numpy as np


def relative_rotation_deg(rotations_a: np.ndarray, rotations_b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of R_a^T R_b for every pair: [A, 3, 3] x [B, 3, 3] -> [A, B]."""
    traces = np.einsum("aji,bji->ab", rotations_a, rotations_b)  # trace(R_a^T R_b)
    return np.degrees(np.arccos(np.clip((traces - 1.0) / 2.0, -1.0, 1.0)))


def pose_ground_truth(query_poses: np.ndarray, reference_poses: np.ndarray, max_distance: float,
                      max_angle_deg: float = 180.0) -> np.ndarray:
    """[Q, R] bool: reference within `max_distance` metres and `max_angle_deg` of the query (3-D form).

    Poses are 4x4 camera-to-world matrices, as everywhere in hierloc.
    """
    query_poses = np.asarray(query_poses, dtype=np.float64)
    reference_poses = np.asarray(reference_poses, dtype=np.float64)
    distances = np.linalg.norm(query_poses[:, None, :3, 3] - reference_poses[None, :, :3, 3], axis=-1)
    angles = relative_rotation_deg(query_poses[:, :3, :3], reference_poses[:, :3, :3])
    return (distances <= max_distance) & (angles <= max_angle_deg)
