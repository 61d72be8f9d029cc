"""VPR-Bench layout: `ref/`, `query/` and `ground_truth_new.npy` listing the correct references of each query."""

from __future__ import annotations

import os
from pathlib import Path

from .base import GroundTruthRule, ImageSet, RetrievalDataset, list_image_names
from .ground_truth import read_ground_truth_file

GROUND_TRUTH_FILE = "ground_truth_new.npy"


def read_vprbench(path: str | os.PathLike, ground_truth: str | os.PathLike | None = None) -> RetrievalDataset:
    """A VPR-Bench dataset folder. Images are ordered naturally ('2.jpg' before '10.jpg'), which is the
    index order of `ground_truth_new.npy` (rows `[query_index, [reference indices]]`)."""
    root = Path(path)
    for folder in ("ref", "query"):
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"{root}: a VPR-Bench dataset has ref/ and query/ folders; {folder}/ is missing")
    gt_path = Path(ground_truth) if ground_truth else root / GROUND_TRUTH_FILE
    reference = ImageSet("ref", root / "ref", list_image_names(root / "ref", recursive=False), key_prefix="ref")
    queries = ImageSet("query", root / "query", list_image_names(root / "query", recursive=False), key_prefix="query")
    truth = read_ground_truth_file(gt_path, queries.names, reference.names)
    notes = [f"VPR-Bench layout: {len(reference)} references, {len(queries)} queries, ground truth {gt_path.name}"]
    return RetrievalDataset(root.name, root, reference, [queries],
                            GroundTruthRule("given", given={"query": truth}), notes)
