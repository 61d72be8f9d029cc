"""Local features and pairwise matches of images, in hierloc's pixel convention.

Keypoints in memory follow hierloc's (COLMAP's) convention: the centre of the top-left pixel is at
(0.5, 0.5). hloc's feature files put it at (0, 0); `hierloc.features.h5io` converts on write and
read, so that files can be exchanged with hloc and pycolmap gets the coordinates it expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class LocalFeatures:
    """Keypoints (N, 2) float32, descriptors (N, D) float32, scores (N,) of one image of `image_size` (w, h)."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    scales: np.ndarray | None = field(default=None, repr=False)  # SIFT scale in pixels, when known
    orientations: np.ndarray | None = field(default=None, repr=False)  # radians, when known

    def __post_init__(self) -> None:
        self.keypoints = np.ascontiguousarray(np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 2))
        n = len(self.keypoints)
        descriptors = np.asarray(self.descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or descriptors.shape[0] != n:
            raise ValueError(f"descriptors must be (N={n}, D), got shape {descriptors.shape}")
        self.descriptors = np.ascontiguousarray(descriptors)
        self.scores = np.ascontiguousarray(np.asarray(self.scores, dtype=np.float32).reshape(-1))
        if len(self.scores) != n:
            raise ValueError(f"scores must have one value per keypoint ({n}), got {len(self.scores)}")
        width, height = (int(v) for v in self.image_size)
        if width <= 0 or height <= 0:
            raise ValueError(f"image_size must be (width, height) > 0, got {self.image_size}")
        self.image_size = (width, height)
        for label in ("scales", "orientations"):
            value = getattr(self, label)
            if value is not None:
                value = np.asarray(value, dtype=np.float32).reshape(-1)
                if len(value) != n:
                    raise ValueError(f"{label} must have one value per keypoint ({n}), got {len(value)}")
                setattr(self, label, value)

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def descriptor_dim(self) -> int:
        """Size of one descriptor."""
        return int(self.descriptors.shape[1])

    def subset(self, indices: np.ndarray) -> "LocalFeatures":
        """The features at `indices` (an index array or boolean mask), in that order."""
        pick = np.asarray(indices)
        return LocalFeatures(
            self.keypoints[pick], self.descriptors[pick], self.scores[pick], self.image_size,
            None if self.scales is None else self.scales[pick],
            None if self.orientations is None else self.orientations[pick],
        )

    @classmethod
    def empty(cls, descriptor_dim: int, image_size: tuple[int, int]) -> "LocalFeatures":
        """No keypoints (an image without texture)."""
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, descriptor_dim), np.float32), np.zeros(0, np.float32),
                   image_size)


def matches_to_pairs(matches0: np.ndarray) -> np.ndarray:
    """(M, 2) index pairs (i0, i1) from hloc's `matches0` vector (index into image 1 or -1)."""
    matches0 = np.asarray(matches0).reshape(-1)
    i0 = np.flatnonzero(matches0 >= 0)
    return np.stack([i0, matches0[i0]], axis=1).astype(np.int64)


def pairs_to_matches(pairs: np.ndarray, num_keypoints0: int) -> np.ndarray:
    """hloc's `matches0` vector (int32, -1 = unmatched) from (M, 2) index pairs."""
    matches0 = np.full(int(num_keypoints0), -1, dtype=np.int32)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    matches0[pairs[:, 0]] = pairs[:, 1]
    return matches0
