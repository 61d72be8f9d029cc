"""Evaluate descriptor sources on a retrieval dataset: descriptors (cached) -> ranking per PCA size -> metrics."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datasets.base import ImageSet, RetrievalDataset
from ..index import PCA
from .descriptors import compute_descriptors, read_cache, read_precomputed
from .ground_truth import GroundTruth
from .methods import Method
from .recall import RankingMetrics, cumulative_true_false_positives, ranking_metrics
from .retrieval import Ranking, rank_references, truncated_pca

logger = logging.getLogger(__name__)

RECALL_NS = (1, 5, 10, 20)


@dataclass
class EvaluationSettings:
    """What is measured: PCA sizes (None = no PCA), how many neighbours, which search structure."""

    pca_dims: Sequence[int | None] = (None,)
    max_n: int = 25  # neighbours kept per query: recall@1..max_n (at least 1 % of the references)
    backend: str = "flat"
    backend_params: dict[str, Any] = field(default_factory=dict)
    whiten: bool = False  # whitening in the evaluation PCA
    batch_size: int = 8
    io_workers: int = 2


@dataclass
class Result:
    """One (method, PCA size, query set) cell of an evaluation, with per-query outcomes."""

    method: str
    pca_dims: int | None
    query_set: str
    ranking: Ranking
    metrics: RankingMetrics
    ground_truth: GroundTruth
    search_seconds: float

    @property
    def pca_label(self) -> str:
        """'none' or the PCA size, as printed."""
        return "none" if self.pca_dims is None else str(self.pca_dims)

    def summary(self, ns: Sequence[int] = RECALL_NS) -> dict:
        """Numbers for tables and JSON."""
        m = self.metrics
        recall = {str(n): float(m.recall[n - 1]) for n in ns if n <= len(m.recall)}
        gt = self.ground_truth.summary()
        return {
            "method": self.method, "pca_dims": self.pca_dims, "query_set": self.query_set,
            "search_dim": self.ranking.search_dim, "backend": self.ranking.backend, "recall": recall,
            "recall_curve": [float(v) for v in m.recall], "recall_at_1_percent": _finite(m.recall_at_one_percent),
            "average_precision": float(m.precision_recall.average_precision),
            "valid_queries": gt["valid_queries"], "queries_without_ground_truth": gt["queries_without_ground_truth"],
            "references": gt["references"], "search_seconds": self.search_seconds,
        }


def _finite(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


@dataclass
class MethodRun:
    """Descriptors of one method and how they were obtained."""

    method: Method
    descriptor_dim: int
    reference: np.ndarray
    queries: dict[str, np.ndarray]
    seconds_per_image: float  # NaN when read from the cache or a file
    cache_files: list[str]
    skipped_pca: list[int] = field(default_factory=list)


@dataclass
class Evaluation:
    """All results of one run, with what is needed to draw and report them."""

    dataset: RetrievalDataset
    settings: EvaluationSettings
    runs: list[MethodRun]
    results: list[Result]
    ground_truths: dict[str, GroundTruth]

    def result(self, method: str, pca_dims: int | None, query_set: str) -> Result:
        """The result of one cell."""
        for r in self.results:
            if (r.method, r.pca_dims, r.query_set) == (method, pca_dims, query_set):
                return r
        raise KeyError((method, pca_dims, query_set))

    def table(self, ns: Sequence[int] = RECALL_NS) -> str:
        """A plain-text table of recall@N (percent) and average precision per method, PCA size and query set."""
        header = ["query set", "method", "PCA", "dim"] + [f"R@{n}" for n in ns] + ["R@1%", "AP"]
        rows = []
        for r in self.results:
            s = r.summary(ns)
            rows.append([r.query_set, r.method, r.pca_label, str(r.ranking.search_dim)]
                        + [f"{100 * s['recall'][str(n)]:.1f}" if str(n) in s["recall"] else "-" for n in ns]
                        + ["-" if s["recall_at_1_percent"] is None else f"{100 * s['recall_at_1_percent']:.1f}",
                           f"{100 * s['average_precision']:.1f}"])
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Everything except per-query arrays, as JSON-serialisable values."""
        dataset = self.dataset
        return {
            "dataset": {
                "name": dataset.name, "path": str(dataset.root), "notes": dataset.notes,
                "reference": {"name": dataset.reference.name, "images": len(dataset.reference)},
                "query_sets": [{"name": q.name, "images": len(q), "ground_truth": self.ground_truths[q.name].summary()}
                               for q in dataset.queries],
            },
            "settings": {"pca_dims": list(self.settings.pca_dims), "max_n": self.settings.max_n,
                         "backend": self.settings.backend, "backend_params": self.settings.backend_params,
                         "whiten": self.settings.whiten},
            "methods": [{"label": run.method.label, "kind": run.method.kind, "descriptor_dim": run.descriptor_dim,
                         "seconds_per_image": _finite(run.seconds_per_image), "cache_files": run.cache_files,
                         "notes": run.method.notes, "skipped_pca_dims": run.skipped_pca} for run in self.runs],
            "results": [r.summary() for r in self.results],
        }


def describe_dataset(method: Method, dataset: RetrievalDataset, cache_dir: Path | None,
                     settings: EvaluationSettings) -> MethodRun:
    """Reference and query descriptors of one method (computed, cached, or read from its file)."""
    if method.kind == "precomputed":
        reference = read_precomputed(method.path, dataset.reference)
        queries = {q.name: read_precomputed(method.path, q) for q in dataset.queries}
        return MethodRun(method, reference.shape[1], reference, queries, float("nan"), [str(method.path)])
    key = method.cache_key(dataset.reference)
    cache_files = []
    describers = []  # built on the first cache miss only (building may fit a vocabulary or run k-means)

    def run(image_set: ImageSet) -> tuple[np.ndarray, float]:
        cache = (cache_dir / method.slug / f"{image_set.name}-{image_set.identity()}-{key}.h5"
                 if cache_dir is not None else None)
        if cache is not None:
            cache_files.append(str(cache))
        cached = read_cache(cache, image_set.keys)
        if cached is not None:
            return cached, float("nan")
        if not describers:
            describers.append(method.build(dataset.reference, cache_dir))
        return compute_descriptors(describers[0], image_set, cache, method.prepare, settings.batch_size,
                                   settings.io_workers, method.label,
                                   attrs={"method": method.label, "identity": method.identity})

    reference, seconds = run(dataset.reference)
    timings = [seconds]
    queries = {}
    for query_set in dataset.queries:
        queries[query_set.name], seconds = run(query_set)
        timings.append(seconds)
    measured = [t for t in timings if math.isfinite(t)]
    return MethodRun(method, int(reference.shape[1]), reference, queries,
                     float(np.mean(measured)) if measured else float("nan"), cache_files)


def evaluate(dataset: RetrievalDataset, methods: Sequence[Method], settings: EvaluationSettings | None = None,
             cache_dir: str | Path | None = None) -> Evaluation:
    """Run every method on every query set at every PCA size."""
    settings = settings or EvaluationSettings()
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two methods share a label: {labels}")
    ground_truths = {q.name: dataset.ground_truth(q) for q in dataset.queries}
    for name, gt in ground_truths.items():
        summary = gt.summary()
        if summary["valid_queries"] == 0:
            raise ValueError(f"query set {name!r}: no query has a true reference ({gt.description})")
        if summary["queries_without_ground_truth"]:
            logger.info("%s: %d of %d queries have no true reference and are left out", name,
                        summary["queries_without_ground_truth"], summary["queries"])
    runs, results = [], []
    for method in methods:
        run = describe_dataset(method, dataset, cache_dir, settings)
        runs.append(run)
        limit = min(len(dataset.reference), run.descriptor_dim)
        sizes = [d for d in settings.pca_dims if d is not None and d <= limit]
        for pca_dims in settings.pca_dims:
            if pca_dims is not None and pca_dims > limit:
                logger.warning("%s: PCA to %d skipped: at most min(references, dimension) = %d components",
                               method.label, pca_dims, limit)
                run.skipped_pca.append(pca_dims)
        # One fit at the largest size; smaller sizes are its leading components.
        largest = PCA.fit(run.reference, max(sizes), whiten=settings.whiten) if sizes else None
        for pca_dims in settings.pca_dims:
            if pca_dims is not None and pca_dims > limit:
                continue
            pca = truncated_pca(largest, pca_dims) if pca_dims is not None else None
            # At least 1 % of the references, so that recall@1% is always measured.
            k = max(settings.max_n, int(round(len(dataset.reference) / 100.0)))
            for query_set in dataset.queries:
                begin = time.perf_counter()
                ranking = rank_references(run.reference, run.queries[query_set.name], k, pca_dims,
                                          settings.backend, settings.backend_params, settings.whiten, pca=pca)
                seconds = time.perf_counter() - begin
                gt = ground_truths[query_set.name]
                results.append(Result(method.label, pca_dims, query_set.name, ranking,
                                      ranking_metrics(ranking.rows, ranking.distances, gt), gt, seconds))
    return Evaluation(dataset, settings, runs, results, ground_truths)


def per_query_rows(evaluation: Evaluation, result: Result, top: int = 5) -> list[dict]:
    """One dict per query: name, valid, first correct rank, top references with distances and correctness,
    cumulative true/false positives at the last rank (for inspecting failures)."""
    dataset = evaluation.dataset
    query_set = next(q for q in dataset.queries if q.name == result.query_set)
    rows = []
    tp, fp = cumulative_true_false_positives(result.metrics.correct, result.ranking.rows)
    for i, name in enumerate(query_set.names):
        ranked = result.ranking.rows[i, :top]
        rows.append({
            "query": name, "valid": bool(result.metrics.valid[i]),
            "first_correct_rank": int(result.metrics.first_correct_rank[i]) + 1 if result.metrics.first_correct_rank[i] >= 0 else None,
            "retrieved": [dataset.reference.names[r] if r >= 0 else "" for r in ranked],
            "distances": [float(d) for d in result.ranking.distances[i, :top]],
            "correct": [bool(c) for c in result.metrics.correct[i, :top]],
            "true_positives": int(tp[i, -1]), "false_positives": int(fp[i, -1]),
            "true_references": [dataset.reference.names[r] for r in result.ground_truth.positives(i)[:5]],
        })
    return rows
