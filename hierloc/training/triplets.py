"""Triplets for metric learning, mined from camera poses: a positive near the anchor, a negative far away.

A positive is a keyframe within `positive_distance` metres of the anchor (and, optionally, within
`max_angle` degrees of viewing direction, and from another mission, as the original paired NCLT
sessions); a negative is beyond `negative_distance` metres. Mining is seeded and reproducible.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch.utils.data import Dataset

from ..datasets.ground_truth import relative_rotation_deg
from .data import DatasetError, ImageCache, preprocess_image

logger = logging.getLogger(__name__)


def mine_triplets(
    positions: np.ndarray,
    positive_distance: float,
    negative_distance: float,
    rotations: np.ndarray | None = None,
    max_angle: float | None = None,
    missions: np.ndarray | None = None,
    cross_mission_positives: bool = False,
    per_anchor: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """[N, 3] int rows (anchor, positive, negative) into `positions` ([K, 3] metres).

    Anchors without any valid positive or negative are skipped. `per_anchor` triplets are drawn for
    every anchor (positives and negatives drawn independently, with replacement).
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] not in (2, 3):
        raise ValueError(f"positions must be [K, 2] or [K, 3], got {positions.shape}")
    if not 0 < positive_distance < negative_distance:
        raise ValueError(f"need 0 < positive_distance ({positive_distance}) < negative_distance ({negative_distance})")
    if max_angle is not None and rotations is None:
        raise ValueError("max_angle needs the rotations of the keyframes")
    if cross_mission_positives and missions is None:
        raise ValueError("cross_mission_positives needs the mission of every keyframe")
    rng = np.random.default_rng(seed)
    tree = cKDTree(positions)
    near = tree.query_ball_point(positions, r=positive_distance)
    not_far = tree.query_ball_point(positions, r=negative_distance)
    count = len(positions)
    triplets = []
    for anchor in range(count):
        candidates = np.array([i for i in near[anchor] if i != anchor], dtype=np.int64)
        if cross_mission_positives and len(candidates):
            candidates = candidates[missions[candidates] != missions[anchor]]
        if max_angle is not None and len(candidates):
            angles = relative_rotation_deg(rotations[anchor][None], rotations[candidates])[0]
            candidates = candidates[angles <= max_angle]
        if not len(candidates):
            continue
        excluded = np.zeros(count, dtype=bool)
        excluded[not_far[anchor]] = True
        negatives = np.flatnonzero(~excluded)
        if not len(negatives):
            continue
        for _ in range(per_anchor):
            triplets.append((anchor, rng.choice(candidates), rng.choice(negatives)))
    if not triplets:
        raise ValueError(f"no triplet found: no keyframe has a positive within {positive_distance} m and a "
                         f"negative beyond {negative_distance} m")
    triplets = np.asarray(triplets, dtype=np.int64)
    return triplets[rng.permutation(len(triplets))]


def load_triplet_map(data: dict, root: str | os.PathLike | None = None):
    """The keyframes (with poses and images) a `triplets` data config points to."""
    from ..maps import load_map
    from .config import resolve_data_path

    if not data.get("map"):
        raise DatasetError("data.map is required for triplet training: a map with poses and images")
    source = resolve_data_path(data["map"], root)
    map_ = load_map(source, kind=data.get("map_kind", "auto"), **(data.get("map_options") or {}))
    keyframes = [kf for kf in map_.keyframes() if kf.pose is not None and kf.has_image]
    if len(keyframes) < 3:
        raise DatasetError(f"{source}: {len(keyframes)} keyframes with a pose and an image; triplets need more")
    return keyframes


def triplets_for(keyframes: list, data: dict, root: str | os.PathLike | None = None) -> np.ndarray:
    """Triplets from a stored .npy (data.triplets) or mined from the keyframe poses."""
    from .config import resolve_data_path

    if data.get("triplets"):
        path = resolve_data_path(data["triplets"], root)
        triplets = np.load(path, allow_pickle=False)
        if triplets.ndim != 2 or triplets.shape[1] != 3 or triplets.min() < 0 or triplets.max() >= len(keyframes):
            raise DatasetError(f"{path}: expected [N, 3] keyframe rows below {len(keyframes)}, got {triplets.shape}")
        return triplets.astype(np.int64)
    poses = np.stack([kf.pose for kf in keyframes])
    missions = np.array([kf.mission for kf in keyframes])
    triplets = mine_triplets(poses[:, :3, 3], float(data["positive_distance"]), float(data["negative_distance"]),
                             rotations=poses[:, :3, :3], max_angle=data.get("max_angle"), missions=missions,
                             cross_mission_positives=bool(data.get("cross_mission_positives")),
                             per_anchor=int(data.get("triplets_per_anchor", 1)), seed=int(data.get("seed", 0)))
    logger.info("mined %d triplets from %d keyframes (positives within %s m, negatives beyond %s m)",
                len(triplets), len(keyframes), data["positive_distance"], data["negative_distance"])
    return triplets


class TripletDataset(Dataset):
    """Triplet rows -> {"image", "p", "n"}: uint8 [C, H, W] images of anchor, positive and negative."""

    def __init__(self, keyframes: list, triplets: np.ndarray, preprocessing: dict,
                 cache_in_memory: bool = False) -> None:
        if not len(triplets):
            raise DatasetError("no triplets")
        self.keyframes = keyframes
        self.triplets = np.asarray(triplets, dtype=np.int64)
        self.resize = preprocessing.get("resize")
        self.grayscale = bool(preprocessing.get("grayscale", True))
        self.cache = ImageCache()
        if cache_in_memory:
            rows = sorted(set(self.triplets.reshape(-1).tolist()))
            self.cache.fill(rows, self.load_image, desc="caching triplet images")

    def __len__(self) -> int:
        return len(self.triplets)

    def load_image(self, row: int) -> np.ndarray:
        """Keyframe `row`'s image, preprocessed."""
        return preprocess_image(self.keyframes[row].load_image(), self.resize, self.grayscale)

    def __getitem__(self, index: int) -> dict:
        out = {}
        for key, row in zip(("image", "p", "n"), self.triplets[index]):
            image = self.cache.get(int(row), self.load_image)
            out[key] = torch.from_numpy(image.transpose(2, 0, 1).copy())
        return out


def save_triplets(path: str | os.PathLike, triplets: np.ndarray) -> Path:
    """Write mined triplets as .npy, atomically (reusable as data.triplets)."""
    from ..utils.io import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(triplets, dtype=np.int64))
    return path
