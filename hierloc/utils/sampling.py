"""Deterministic subsampling."""

from __future__ import annotations

import numpy as np


def spread_rows(count: int, limit: int | None) -> np.ndarray:
    """Up to `limit` indices spread evenly over range(count), first and last included (all when limit is None)."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))
