"""Generic layout: a reference folder and a query folder, with a ground-truth file, pose files, or same names.

    DATASET/
      reference/ (or ref/, database/, db/, map/)      images
      query/ (or queries/)                              images
      ground_truth.{txt,csv,npy}  (optional)  correct references of each query
      reference_poses.* / query_poses.*  (optional)  TUM, KITTI or CSV pose files, or folders of
                                                     Strecha `.camera` files
Without a ground-truth file or poses, a query's correct reference is the one with the same file name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..maps.poses import associate_poses, read_pose_file
from .base import GroundTruthRule, ImageSet, RetrievalDataset, list_image_names
from .ground_truth import read_ground_truth_file
from .strecha import read_camera_poses

REFERENCE_FOLDERS = ("reference", "references", "ref", "database", "db", "map")
QUERY_FOLDERS = ("query", "queries")
GROUND_TRUTH_FILES = ("ground_truth.txt", "ground_truth.csv", "ground_truth.npy", "ground_truth_new.npy")


def _first_existing(root: Path, candidates, want_dir: bool = True) -> Path | None:
    for name in candidates:
        path = root / name
        if (path.is_dir() if want_dir else path.exists()):
            return path
    return None


def _pose_source(root: Path, stem: str) -> Path | None:
    matches = sorted(p for p in root.glob(f"{stem}.*") if p.is_file()) + (
        [root / stem] if (root / stem).is_dir() else [])
    return matches[0] if matches else None


def load_set_poses(source: str | os.PathLike, image_set: ImageSet, max_time_diff: float = 0.1) -> np.ndarray:
    """[N, 4, 4] poses of an image set from a pose file (by name, time or order) or a `.camera` folder.

    Images without a pose get NaN rows (they can be dropped with `drop_unposed`)."""
    source = Path(source)
    if source.is_dir():
        return read_camera_poses(source, image_set.names)
    table = read_pose_file(source)
    rows, _ = associate_poses(table, image_set.names, max_time_diff=max_time_diff)
    poses = np.full((len(image_set), 4, 4), np.nan)
    poses[rows >= 0] = table.poses[rows[rows >= 0]]
    return poses


def drop_unposed(image_set: ImageSet) -> tuple[ImageSet, int]:
    """The images that have a finite pose, and how many were dropped."""
    keep = np.isfinite(image_set.poses.reshape(len(image_set), -1)).all(axis=1)
    return (image_set if keep.all() else image_set.subset(np.flatnonzero(keep))), int((~keep).sum())


def read_folders(path: str | os.PathLike, reference: str | None = None, queries: str | None = None,
                 ground_truth: str | os.PathLike | None = None, reference_poses: str | os.PathLike | None = None,
                 query_poses: str | os.PathLike | None = None, max_distance: float | None = None,
                 max_angle_deg: float = 180.0, tolerance: int = 0) -> RetrievalDataset:
    """A reference + query folder pair; see the module documentation for the layout."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    ref_dir = root / reference if reference else _first_existing(root, REFERENCE_FOLDERS)
    query_dir = root / queries if queries else _first_existing(root, QUERY_FOLDERS)
    if ref_dir is None or not ref_dir.is_dir():
        raise FileNotFoundError(f"{root}: no reference folder (one of {', '.join(REFERENCE_FOLDERS)})")
    if query_dir is None or not query_dir.is_dir():
        raise FileNotFoundError(f"{root}: no query folder (one of {', '.join(QUERY_FOLDERS)})")
    ref_set = ImageSet(ref_dir.name, ref_dir, list_image_names(ref_dir),
                       key_prefix=ref_dir.relative_to(root).as_posix())
    query_set = ImageSet(query_dir.name, query_dir, list_image_names(query_dir),
                         key_prefix=query_dir.relative_to(root).as_posix())
    notes = []
    gt_file = Path(ground_truth) if ground_truth else _first_existing(root, GROUND_TRUTH_FILES, want_dir=False)
    ref_pose_source = reference_poses or _pose_source(root, "reference_poses")
    query_pose_source = query_poses or _pose_source(root, "query_poses")
    if gt_file is not None:
        truth = read_ground_truth_file(gt_file, query_set.names, ref_set.names)
        rule = GroundTruthRule("given", given={query_set.name: truth})
        notes.append(f"ground truth from {gt_file.name}")
    elif ref_pose_source and query_pose_source:
        if max_distance is None:
            raise ValueError(f"{root}: pose ground truth needs a distance threshold: pass --max-distance")
        ref_set.poses = load_set_poses(ref_pose_source, ref_set)
        query_set.poses = load_set_poses(query_pose_source, query_set)
        ref_set, dropped_refs = drop_unposed(ref_set)
        query_set, dropped_queries = drop_unposed(query_set)
        if dropped_refs or dropped_queries:
            notes.append(f"left out images without a pose: {dropped_refs} references, {dropped_queries} queries")
        if len(ref_set) == 0 or len(query_set) == 0:
            raise ValueError(f"{root}: no reference or no query image has a pose")
        rule = GroundTruthRule("poses", max_distance, max_angle_deg)
        notes.append(f"pose ground truth from {Path(ref_pose_source).name} and {Path(query_pose_source).name}")
    elif ref_pose_source or query_pose_source:
        raise ValueError(f"{root}: poses were found for only one of the reference and query folders")
    else:
        rule = GroundTruthRule("names", tolerance=tolerance)
        notes.append("no ground-truth file or poses: the reference with the same file name is correct")
    return RetrievalDataset(root.name, root, ref_set, [query_set], rule, notes)
