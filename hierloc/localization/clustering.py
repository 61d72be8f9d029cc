"""Covisibility clustering of retrieved keyframes into places (HF-Net, Sarlin et al. CVPR 2019).

Retrieved keyframes that observe common 3-D points belong to the same place; each place is then
matched and localized on its own, so that a wrong retrieval in another part of the map does not
pollute the 2D-3D correspondences of the right one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def covisibility_clusters(candidates: Sequence[str], covisibility: np.ndarray, min_shared: int = 1) -> list[list[str]]:
    """Connected components of the candidates under "share at least `min_shared` points".

    `covisibility` is the (n, n) shared-point count of `candidates` (given best first). Places are
    ordered by size, then by the rank of their best candidate; each keeps the retrieval order.
    """
    n = len(candidates)
    covisibility = np.asarray(covisibility)
    if covisibility.shape != (n, n):
        raise ValueError(f"covisibility must be ({n}, {n}), got {covisibility.shape}")
    label = -np.ones(n, dtype=np.int64)
    places: list[list[int]] = []
    for start in range(n):
        if label[start] >= 0:
            continue
        label[start] = len(places)
        members, frontier = [start], [start]
        while frontier:
            i = frontier.pop()
            for j in np.flatnonzero((covisibility[i] >= min_shared) & (label < 0)):
                label[j] = label[start]
                members.append(int(j))
                frontier.append(int(j))
        places.append(sorted(members))
    places.sort(key=lambda members: (-len(members), members[0]))
    return [[candidates[i] for i in members] for members in places]
