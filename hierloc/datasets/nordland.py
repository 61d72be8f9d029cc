"""Nordland railway: the same route in several seasons; the same file name is the same place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .base import GroundTruthRule, ImageSet, RetrievalDataset, list_image_names

SEASONS = ("summer", "winter", "spring", "fall")


def read_nordland(path: str | os.PathLike, reference: str = "summer", queries: Sequence[str] = ("winter",),
                  tolerance: int = 0) -> RetrievalDataset:
    """Season folders under `path` (e.g. summer/, winter/); the query's same-name reference is correct.

    `tolerance` also accepts references up to that many frames away (0: only the same name).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such Nordland folder")
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    for season in (reference, *queries):
        if season not in present:
            raise FileNotFoundError(f"{root}: no season folder {season!r} (found: {', '.join(present) or 'none'})")
    if reference in queries:
        raise ValueError(f"the reference season {reference!r} cannot also be a query season")

    def season_set(season: str) -> ImageSet:
        return ImageSet(season, root / season, list_image_names(root / season), key_prefix=season)

    reference_set = season_set(reference)
    query_sets = [season_set(season) for season in queries]
    notes = [f"Nordland {reference} (reference) vs {', '.join(queries)} (queries); same file name = same place"
             + (f" +-{tolerance} frames" if tolerance else "")]
    return RetrievalDataset("nordland", root, reference_set, query_sets,
                            GroundTruthRule("names", tolerance=tolerance), notes)
