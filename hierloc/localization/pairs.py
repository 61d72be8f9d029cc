"""Which map images to match with each other: exhaustive, from poses, from retrieval, or sequential."""

from __future__ import annotations

from typing import Sequence

import numpy as np

PAIR_STRATEGIES = ("auto", "exhaustive", "poses", "retrieval", "sequential")


def _unique(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Unordered pairs without repeats or self-pairs, (min, max) each, in first-seen order."""
    seen: set[tuple[int, int]] = set()
    out = []
    for i, j in pairs:
        if i == j:
            continue
        key = (min(i, j), max(i, j))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def exhaustive_pairs(num_images: int) -> list[tuple[int, int]]:
    """Every pair of images: n (n - 1) / 2 of them."""
    return [(i, j) for i in range(num_images) for j in range(i + 1, num_images)]


def pairs_from_poses(poses: np.ndarray, num_neighbors: int, max_angle_deg: float = 60.0) -> list[tuple[int, int]]:
    """Each image with its `num_neighbors` nearest camera centres among those looking within `max_angle_deg`.

    `poses` are (N, 4, 4) T_world_cam; the angle is between the optical axes (third rotation columns).
    """
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    n = len(poses)
    centres = poses[:, :3, 3]
    axes = poses[:, :3, 2]
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    cosines = np.clip(axes @ axes.T, -1.0, 1.0)
    distances[cosines < np.cos(np.radians(max_angle_deg))] = np.inf
    np.fill_diagonal(distances, np.inf)
    pairs = []
    for i in range(n):
        order = np.argsort(distances[i], kind="stable")[:num_neighbors]
        pairs += [(i, int(j)) for j in order if np.isfinite(distances[i, j])]
    return _unique(pairs)


def pairs_from_retrieval(descriptors: np.ndarray, num_neighbors: int) -> list[tuple[int, int]]:
    """Each image with its `num_neighbors` most similar others by global descriptor (unit vectors)."""
    descriptors = np.asarray(descriptors, dtype=np.float32)
    similarity = descriptors @ descriptors.T
    np.fill_diagonal(similarity, -np.inf)
    pairs = []
    for i in range(len(descriptors)):
        order = np.argsort(-similarity[i], kind="stable")[:num_neighbors]
        pairs += [(i, int(j)) for j in order]
    return _unique(pairs)


def sequential_pairs(missions: Sequence[str], window: int) -> list[tuple[int, int]]:
    """Each image with the next `window` images of the same mission (images given in recording order)."""
    pairs = []
    for i in range(len(missions)):
        for j in range(i + 1, min(len(missions), i + window + 1)):
            if missions[j] == missions[i]:
                pairs.append((i, j))
    return _unique(pairs)


def choose_strategy(requested: str, num_images: int, has_poses: bool, has_global: bool,
                    exhaustive_limit: int = 40) -> str:
    """'auto': exhaustive for small maps, else from poses when known, else retrieval, else sequential."""
    if requested not in PAIR_STRATEGIES:
        raise ValueError(f"unknown pair strategy {requested!r}; choose one of {', '.join(PAIR_STRATEGIES)}")
    if requested != "auto":
        if requested == "poses" and not has_poses:
            raise ValueError("pairs from poses need a pose for every map image")
        if requested == "retrieval" and not has_global:
            raise ValueError("pairs from retrieval need global descriptors (a global model)")
        return requested
    if num_images <= exhaustive_limit:
        return "exhaustive"
    if has_poses:
        return "poses"
    return "retrieval" if has_global else "sequential"
