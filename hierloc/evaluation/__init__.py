"""Retrieval evaluation: recall@N and precision-recall, cached descriptors, plots and pictures.

`evaluate(EvaluationConfig)` is all of `hierloc evaluate`; `evaluate_methods(dataset, methods, settings)`
runs descriptor sources (`hierloc.evaluation.methods`) on a `hierloc.datasets` dataset; `write_report` writes
JSON, CSV, PNG and HTML. The ground truth lives in `hierloc.datasets.ground_truth` (datasets build it); its
names are re-exported here.
"""

from __future__ import annotations

from ..datasets.ground_truth import (
                                     GroundTruth,
                                     ground_truth_from_names,
                                     ground_truth_from_planar_poses,
                                     ground_truth_from_poses,
                                     heading_difference_deg,
                                     pose_ground_truth,
                                     read_ground_truth_file,
                                     relative_rotation_deg,
)
from . import methods as _methods
from .descriptors import compute_descriptors

# The descriptor sources are whatever `methods` declares (its __all__), so that module can evolve on its own.
from .methods import *  # noqa: F401,F403
from .pipeline import (
                                     Evaluation,
                                     EvaluationConfig,
                                     EvaluationResult,
                                     EvaluationSettings,
                                     Result,
                                     evaluate,
                                     evaluate_methods,
                                     per_query_rows,
)
from .recall import (
                                     PrecisionRecall,
                                     RankingMetrics,
                                     cumulative_true_false_positives,
                                     precision_recall_curve,
                                     ranking_metrics,
                                     recall_at_n,
                                     recall_curve,
)
from .report import write_json, write_report
from .retrieval import rank_references
from .visualize import plot_pr_curves, plot_recall_curves, retrieval_grid

__all__ = [
    "Evaluation", "EvaluationConfig", "EvaluationResult", "EvaluationSettings", "GroundTruth", "PrecisionRecall",
    "RankingMetrics", "Result",
    "compute_descriptors", "cumulative_true_false_positives", "evaluate", "evaluate_methods", "ground_truth_from_names",
    "ground_truth_from_planar_poses", "ground_truth_from_poses", "heading_difference_deg", "per_query_rows",
    "plot_pr_curves", "plot_recall_curves", "pose_ground_truth", "precision_recall_curve", "rank_references",
    "ranking_metrics", "read_ground_truth_file", "recall_at_n", "recall_curve", "relative_rotation_deg",
    "retrieval_grid", "write_json", "write_report", *_methods.__all__,
]
