"""Recall with geometric re-ranking: every ranking of an evaluation re-sorted by verified local matches.

For each (method, PCA size, query set) result, the top K references of every query are verified by
`hierloc.reranking.GeometricReranker` and re-sorted; the re-ranked result is added next to the
original one (method label `<method> + rerank <features>@<K>`), so tables, JSON and plots show both.
Reference features are computed once per reference set and cached in `<cache>/rerank/`; each
(query, reference) pair is verified once even when several methods or PCA sizes retrieve it. The
time added per query (query features, matching, RANSAC; mean and median wall clock, mean process
CPU time) is measured on the first result's candidates, after one untimed warm-up query.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..reranking import GeometricReranker, RankedCandidate, ReferenceFeatures, RerankConfig, config_digest
from ..reranking import order_candidates as order_by_inliers
from .pipeline import Evaluation, Result
from .recall import ranking_metrics
from .retrieval import Ranking

logger = logging.getLogger(__name__)


def rerank_label(method: str, config: RerankConfig) -> str:
    """The method label of a re-ranked result."""
    return f"{method} + rerank {config.features}@{config.k}"


def reference_feature_cache(evaluation: Evaluation, config: RerankConfig, cache_dir: Path) -> Path:
    """`<cache>/rerank/<reference set>-<its identity>-<features>-<config digest>.h5`."""
    reference = evaluation.dataset.reference
    options = {"features": config.features, "min_side": config.min_side, **config.extractor_options()}
    return Path(cache_dir) / "rerank" / f"{reference.name}-{reference.identity()}-{config.features}-" \
                                        f"{config_digest(options)}.h5"


def rerank_evaluation(evaluation: Evaluation, config: RerankConfig, cache_dir: str | Path | None = None,
                      progress: bool = True) -> list[Result]:
    """Add a re-ranked result after every result of `evaluation` (in place); returns the new results."""
    config.validate()
    dataset = evaluation.dataset
    reference = dataset.reference
    keys = reference.keys
    loaders = {key: (lambda i=i: reference.load(i)) for i, key in enumerate(keys)}
    cache = reference_feature_cache(evaluation, config, Path(cache_dir)) if cache_dir is not None else None
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    reranker = GeometricReranker(config, ReferenceFeatures.for_images(loaders, cache, config, progress=progress))
    base = [r for r in evaluation.results if r.rerank is None]
    added: dict[int, Result] = {}
    try:
        for query_set in dataset.queries:
            results = [r for r in base if r.query_set == query_set.name]
            if not results:
                continue
            for result, reranked in zip(results, _rerank_query_set(reranker, results, query_set, keys, cache,
                                                                   progress)):
                added[id(result)] = reranked
    finally:
        reranker.close()
    return evaluation.insert_derived(added)


def _rerank_query_set(reranker: GeometricReranker, results: list[Result], query_set, keys: list[str],
                      cache: Path | None, progress: bool) -> list[Result]:
    """The re-ranked versions of `results` (one query set), timing the first result's verification."""
    config = reranker.config
    k = min(config.k, results[0].ranking.rows.shape[1])
    valid = results[0].ground_truth.valid
    union = np.unique(np.concatenate([r.ranking.rows[valid, :k].ravel() for r in results]))
    union = union[union >= 0]
    prepare_seconds = reranker.references.prepare([keys[row] for row in union])
    rows = [r.ranking.rows.copy() for r in results]
    distances = [r.ranking.distances.copy() for r in results]
    inconclusive = [0] * len(results)
    scores: dict[tuple[int, int], tuple[int, int]] = {}
    wall, cpu, stages = [], [], {}
    if valid.any():  # untimed warm-up: the first forward pass of a network at a new size is slow
        reranker.query_features(query_set.load(int(np.flatnonzero(valid)[0])))
    for q in tqdm(np.flatnonzero(valid), desc=f"re-ranking {query_set.name}", unit="query", disable=not progress):
        image = query_set.load(int(q))
        begin_wall, begin_cpu = time.perf_counter(), time.process_time()
        features = reranker.query_features(image)
        timings = {"query_features": time.perf_counter() - begin_wall}
        for j, result in enumerate(results):
            ranked = [int(row) for row in result.ranking.rows[q, :k] if row >= 0]
            todo = [row for row in ranked if (q, row) not in scores]
            pair_timings = timings if j == 0 else {}
            for row, score in zip(todo, reranker.verify(features, [keys[row] for row in todo], pair_timings)):
                scores[(q, row)] = score
            if j == 0:
                wall.append(time.perf_counter() - begin_wall)
                cpu.append(time.process_time() - begin_cpu)
                for key, value in timings.items():
                    stages.setdefault(key, []).append(value)
            candidates = [RankedCandidate(keys[row], rank, float(result.ranking.distances[q, rank]),
                                          *scores[(q, row)]) for rank, row in enumerate(ranked)]
            order, conclusive = order_by_inliers(candidates, config.min_inliers)
            positions = [c.global_rank for c in order]
            rows[j][q, :len(positions)] = result.ranking.rows[q, positions]
            distances[j][q, :len(positions)] = result.ranking.distances[q, positions]
            inconclusive[j] += not conclusive
    timing = {"ms_per_query": 1e3 * float(np.mean(wall)) if wall else None,
              "median_ms_per_query": 1e3 * float(np.median(wall)) if wall else None,
              "cpu_ms_per_query": 1e3 * float(np.mean(cpu)) if cpu else None,
              "stages_ms": {key: 1e3 * float(np.mean(values)) for key, values in stages.items()},
              "reference_features_seconds": prepare_seconds, "reference_features": str(cache) if cache else None}
    out = []
    for j, result in enumerate(results):
        ranking = Ranking(rows[j], distances[j], result.ranking.search_dim, result.ranking.pca_dims,
                          result.ranking.backend)
        info = {"based_on": result.method, "k": k, "config": config.to_json(), "queries": int(valid.sum()),
                "inconclusive": inconclusive[j], **timing}
        out.append(Result(rerank_label(result.method, config), result.pca_dims, result.query_set, ranking,
                          ranking_metrics(ranking.rows, ranking.distances, result.ground_truth), result.ground_truth,
                          result.search_seconds, rerank=info))
    return out
