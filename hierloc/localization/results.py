"""Localization results on disk: hloc's pose list and a JSON report with inliers and per-stage timings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..maps.poses import qvec_to_rotmat, rotmat_to_qvec
from ..utils.io import atomic_write_text, to_json_text
from .localizer import LocalizationResult, summarize_timings


def write_hloc_poses(path: str | os.PathLike, results: Iterable[LocalizationResult]) -> Path:
    """hloc's results file: `name qw qx qy qz tx ty tz` (world-to-camera) per localized query; failures omitted."""
    lines = []
    for result in results:
        if not result.success:
            continue
        if any(c.isspace() for c in result.name):
            raise ValueError(f"query name {result.name!r} contains spaces; hloc's pose list cannot hold it")
        q = rotmat_to_qvec(result.T_cam_world[:3, :3])
        t = result.T_cam_world[:3, 3]
        lines.append(" ".join([result.name, *(f"{v:.12g}" for v in (*q, *t))]))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return Path(path)


def read_hloc_poses(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{name: 4x4 T_cam_world} from an hloc results file."""
    path = Path(path)
    poses = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 8:
            raise ValueError(f"{path}:{number}: expected 'name qw qx qy qz tx ty tz', got {line[:80]!r}")
        try:
            values = np.array([float(v) for v in parts[1:]])
        except ValueError:
            raise ValueError(f"{path}:{number}: non-numeric pose in {line[:80]!r}") from None
        T = np.eye(4)
        T[:3, :3] = qvec_to_rotmat(values[:4])
        T[:3, 3] = values[4:]
        poses[parts[0]] = T
    return poses


def write_results_json(path: str | os.PathLike, results: list[LocalizationResult],
                       extra: dict[str, Any] | None = None) -> Path:
    """All queries (failures included) with inliers, places, cameras, per-stage timings and their summary."""
    payload = {
        "num_queries": len(results),
        "num_localized": sum(r.success for r in results),
        "timings_summary": summarize_timings(results),
        **(extra or {}),
        "queries": [r.to_json() for r in results],
    }
    atomic_write_text(path, to_json_text(payload, indent=2))
    return Path(path)
