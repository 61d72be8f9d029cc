"""Retrieval datasets: reference and query image sets with their ground truth, read from common layouts."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from .base import GroundTruthRule, ImageSet, ImageTransform, RetrievalDataset, list_image_names, natural_key
from .folders import read_folders
from .ground_truth import (
    GroundTruth,
    ground_truth_from_names,
    ground_truth_from_planar_poses,
    ground_truth_from_poses,
    pose_ground_truth,
    read_ground_truth_file,
)
from .nclt import read_nclt
from .nordland import read_nordland
from .strecha import read_strecha
from .vprbench import read_vprbench

DATASET_READERS = {
    "folders": read_folders,
    "nordland": read_nordland,
    "vprbench": read_vprbench,
    "nclt": read_nclt,
    "strecha": read_strecha,
}


def detect_dataset_kind(path: str | os.PathLike) -> str:
    """Guess the layout of a dataset folder (VPR-Bench, Nordland, NCLT, Strecha, or reference/query folders)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    if (root / "ref").is_dir() and (root / "query").is_dir() and (root / "ground_truth_new.npy").is_file():
        return "vprbench"
    if (root / "summer").is_dir() and (root / "winter").is_dir():
        return "nordland"
    if any(p.is_dir() for p in root.glob("*/lb3")):
        return "nclt"
    if any((root / name).is_dir() for name in ("gt_dense_cameras", "cameras")):
        return "strecha"
    return "folders"


def load_dataset(kind: str, path: str | os.PathLike, **options: Any) -> RetrievalDataset:
    """Read a dataset of `kind` ('auto' to detect it); options the reader does not take are refused
    unless they are None (so that command-line defaults can be passed through)."""
    if kind == "auto":
        kind = detect_dataset_kind(path)
    if kind not in DATASET_READERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(sorted(DATASET_READERS))} or auto")
    reader = DATASET_READERS[kind]
    accepted = set(inspect.signature(reader).parameters) - {"path"}
    unknown = sorted(k for k, v in options.items() if v is not None and k not in accepted)
    if unknown:
        raise ValueError(f"dataset kind {kind!r} does not take the option(s) {', '.join(unknown)}; "
                         f"it takes {', '.join(sorted(accepted)) or 'none'}")
    return reader(path, **{k: v for k, v in options.items() if v is not None and k in accepted})


__all__ = [
    "DATASET_READERS", "GroundTruth", "GroundTruthRule", "ImageSet", "ImageTransform", "RetrievalDataset",
    "detect_dataset_kind", "ground_truth_from_names", "ground_truth_from_planar_poses", "ground_truth_from_poses",
    "list_image_names", "load_dataset", "natural_key", "pose_ground_truth", "read_folders", "read_ground_truth_file",
    "read_nclt", "read_nordland", "read_strecha", "read_vprbench",
]
