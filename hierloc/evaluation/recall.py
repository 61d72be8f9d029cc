"""recall@N: the share of queries (with at least one true reference) that have one in their top N."""

from __future__ import annotations

import numpy as np


def recall_at_n(ranked: np.ndarray, ground_truth: np.ndarray, ns: list[int] | tuple[int, ...]) -> dict[int, float]:
    """`ranked` [Q, K] reference rows (-1 = none), `ground_truth` [Q, R] bool; queries without truth are left out."""
    ranked = np.asarray(ranked)
    valid = ground_truth.any(axis=1)
    if not valid.any():
        raise ValueError("no query has a true reference: recall is undefined")
    safe = np.where(ranked >= 0, ranked, 0)
    hits = np.take_along_axis(ground_truth, safe, axis=1) & (ranked >= 0)  # [Q, K]
    first_hit = np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int64).max)
    return {n: float(np.mean(first_hit[valid] < n)) for n in ns}
