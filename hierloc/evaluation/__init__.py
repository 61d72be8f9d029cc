"""Retrieval evaluation: ground truth, recall@N and precision-recall, cached descriptors, plots and pictures.

`evaluate(dataset, methods, settings)` runs descriptor sources (`hierloc.evaluation.methods`) on a
`hierloc.datasets` dataset; `write_report` writes JSON, CSV, PNG and HTML. The pipeline names are
imported lazily because hierloc.datasets itself builds on the ground-truth module.
"""

from __future__ import annotations

import importlib

from .ground_truth import (GroundTruth, ground_truth_from_names, ground_truth_from_planar_poses,
                           ground_truth_from_poses, heading_difference_deg, pose_ground_truth,
                           read_ground_truth_file, relative_rotation_deg)
from .recall import (PrecisionRecall, RankingMetrics, cumulative_true_false_positives, precision_recall_curve,
                     ranking_metrics, recall_at_n, recall_curve)
from .visualize import plot_pr_curves, plot_recall_curves, retrieval_grid

_LAZY = {
    "evaluate": "pipeline", "Evaluation": "pipeline", "EvaluationSettings": "pipeline", "Result": "pipeline",
    "per_query_rows": "pipeline", "write_report": "report", "write_json": "report",
    "Method": "methods", "densevlad_method": "methods", "kmeans_method": "methods", "extractor_method": "methods",
    "precomputed_method": "methods", "rank_references": "retrieval", "compute_descriptors": "descriptors",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GroundTruth", "PrecisionRecall", "RankingMetrics", "cumulative_true_false_positives", "ground_truth_from_names",
    "ground_truth_from_planar_poses", "ground_truth_from_poses", "heading_difference_deg", "plot_pr_curves",
    "plot_recall_curves", "pose_ground_truth", "precision_recall_curve", "ranking_metrics", "read_ground_truth_file",
    "recall_at_n", "recall_curve", "relative_rotation_deg", "retrieval_grid", *_LAZY,
]
