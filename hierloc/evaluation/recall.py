"""Retrieval metrics: recall@N, precision-recall by top-1 distance, cumulative true/false positives.

All metrics leave out the queries without any true reference (and report how many there were).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from ..datasets.ground_truth import GroundTruth


def _correct(ranked: np.ndarray, ground_truth) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(ground_truth, GroundTruth):
        return ground_truth.correct(ranked), ground_truth.valid
    if scipy.sparse.issparse(ground_truth):
        gt = GroundTruth(ground_truth)
        return gt.correct(ranked), gt.valid
    ground_truth = np.asarray(ground_truth, bool)
    ranked = np.asarray(ranked)
    safe = np.where(ranked >= 0, ranked, 0)
    return np.take_along_axis(ground_truth, safe, axis=1) & (ranked >= 0), ground_truth.any(axis=1)


def recall_at_n(ranked: np.ndarray, ground_truth, ns: list[int] | tuple[int, ...]) -> dict[int, float]:
    """`ranked` [Q, K] reference rows (-1 = none), ground truth [Q, R] (bool array, sparse or GroundTruth);
    queries without truth are left out."""
    correct, valid = _correct(ranked, ground_truth)
    if not valid.any():
        raise ValueError("no query has a true reference: recall is undefined")
    curve = recall_curve(correct, valid)
    return {n: float(curve[min(n, len(curve)) - 1]) if n >= 1 else 0.0 for n in ns}


def recall_curve(correct: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[K] recall@N for N = 1..K: share of valid queries with a correct reference in their top N."""
    correct = np.asarray(correct, bool)
    if not np.any(valid):
        raise ValueError("no query has a true reference: recall is undefined")
    found = np.logical_or.accumulate(correct[np.asarray(valid)], axis=1)
    return found.mean(axis=0)


def cumulative_true_false_positives(correct: np.ndarray,
                                    ranked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[Q, K] running counts of true and false positives along each ranking, as the original's
    `compute_tp_fp` (missing results, -1 in `ranked`, count as neither)."""
    correct = np.asarray(correct, bool)
    present = np.ones_like(correct) if ranked is None else np.asarray(ranked) >= 0
    return np.cumsum(correct, axis=1), np.cumsum(present & ~correct, axis=1)


@dataclass
class PrecisionRecall:
    """Precision-recall of accepting a query's top-1 reference when its distance is below a threshold."""

    precision: np.ndarray  # [M] at each distinct threshold, by increasing distance
    recall: np.ndarray  # [M]
    thresholds: np.ndarray  # [M] top-1 distances
    average_precision: float  # area under the curve (step-wise, as scikit-learn's average precision)


def precision_recall_curve(top1_distances: np.ndarray, top1_correct: np.ndarray) -> PrecisionRecall:
    """PR curve of valid queries ranked by their top-1 distance (recall = correct accepted / all valid)."""
    distances = np.asarray(top1_distances, np.float64)
    correct = np.asarray(top1_correct, bool)
    if distances.shape != correct.shape or distances.ndim != 1:
        raise ValueError("top-1 distances and correctness must be 1-D arrays of the same length")
    if len(distances) == 0:
        raise ValueError("no valid query: the precision-recall curve is undefined")
    order = np.argsort(distances, kind="stable")
    distances, correct = distances[order], correct[order]
    true_positives = np.cumsum(correct)
    accepted = np.arange(1, len(correct) + 1)
    # One point per distinct threshold: the last of a run of equal distances.
    last = np.r_[np.flatnonzero(np.diff(distances) > 0), len(distances) - 1]
    precision = true_positives[last] / accepted[last]
    recall = true_positives[last] / len(correct)
    previous_recall = np.r_[0.0, recall[:-1]]
    average_precision = float(np.sum((recall - previous_recall) * precision))
    return PrecisionRecall(precision, recall, distances[last], average_precision)


@dataclass
class RankingMetrics:
    """Everything measured for one ranking of the references for every query."""

    recall: np.ndarray  # [K] recall@1..K over valid queries
    precision_recall: PrecisionRecall
    valid: np.ndarray  # [Q] bool
    correct: np.ndarray  # [Q, K] bool
    first_correct_rank: np.ndarray  # [Q] 0-based rank of the first correct reference, -1 if none in top K
    recall_at_one_percent: float  # recall@N with N = 1 % of the references (at least 1), if N <= K
    extra: dict = field(default_factory=dict)

    def recall_at(self, n: int) -> float:
        """recall@n (n beyond K is refused rather than guessed)."""
        if not 1 <= n <= len(self.recall):
            raise ValueError(f"recall@{n} needs {n} retrieved references; only {len(self.recall)} were kept")
        return float(self.recall[n - 1])


def ranking_metrics(ranked: np.ndarray, distances: np.ndarray, ground_truth: GroundTruth) -> RankingMetrics:
    """Recall curve, PR curve and per-query outcomes of `ranked` [Q, K] rows with their `distances`."""
    correct = ground_truth.correct(ranked)
    valid = ground_truth.valid
    if not valid.any():
        raise ValueError("no query has a true reference: recall is undefined")
    curve = recall_curve(correct, valid)
    first = np.where(correct.any(axis=1), correct.argmax(axis=1), -1)
    top1 = np.asarray(distances, np.float64)[:, 0]
    top1 = np.where(np.isfinite(top1), top1, np.inf)
    pr = precision_recall_curve(top1[valid], correct[valid, 0])
    n_one_percent = max(1, int(round(ground_truth.num_references / 100.0)))
    one_percent = float(curve[n_one_percent - 1]) if n_one_percent <= len(curve) else float("nan")
    return RankingMetrics(curve, pr, valid, correct, first, one_percent)
