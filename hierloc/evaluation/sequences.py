"""Recall with sequence matching (`hierloc evaluate --sequence-length N`): every ranking of an evaluation
redone by `hierloc.sequences.sequence_rank` on the same descriptors.

For each (method, PCA size, query set) result, the full query-by-reference distance matrix of the same
descriptors (after the same PCA) is matched as sequences of the N frames ending at each query, and the
result is added next to the single-frame one (method label `<method> + sequence N`), so tables, JSON and
plots show both. Both image sets must be in the order they were recorded (a sequence is consecutive
images), as Nordland's are; frames that repeat their predecessor (the vehicle stands still) are found
from each set's own descriptors and left out of the sequences (in the reference set only runs of at least
`DEFAULT_MIN_STOP` such frames; in the queries every one, which needs no later query).
"""

from __future__ import annotations

import time

from ..index import PCA
from ..sequences import (
    DEFAULT_MIN_STOP,
    DEFAULT_QUERY_WINDOW,
    DEFAULT_STATIC_FRACTION,
    DEFAULT_VELOCITIES,
    DEFAULT_WINDOW,
    descriptor_distances,
    moving_frames,
    sequence_rank,
)
from .pipeline import Evaluation, Result
from .recall import ranking_metrics
from .retrieval import Ranking, truncated_pca


def sequence_label(method: str, length: int) -> str:
    """The method label of a sequence-matched result."""
    return f"{method} + sequence {length}"


def sequence_evaluation(evaluation: Evaluation, length: int) -> list[Result]:
    """Add a sequence-matched result after every single-frame result of `evaluation` (in place); returns them."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"--sequence-length must be a positive integer, got {length!r}")
    base = [r for r in evaluation.results if r.rerank is None and r.sequence is None]
    runs = {run.method.label: run for run in evaluation.runs}
    added: dict[int, Result] = {}
    pcas: dict[str, PCA | None] = {}
    for result in base:
        run = runs[result.method]
        reference, queries = run.reference, run.queries[result.query_set]
        if result.pca_dims is not None:
            # The same PCA as the single-frame ranking: one fit at the largest size, smaller ones truncated.
            if run.method.label not in pcas:
                sizes = [r.pca_dims for r in base if r.method == result.method and r.pca_dims is not None]
                pcas[run.method.label] = PCA.fit(reference, max(sizes), whiten=evaluation.settings.whiten)
            pca = truncated_pca(pcas[run.method.label], result.pca_dims)
            reference, queries = pca.transform(reference), pca.transform(queries)
        begin = time.perf_counter()
        distances = descriptor_distances(queries, reference)
        query_moving, reference_moving = moving_frames(queries), moving_frames(reference, min_stop=DEFAULT_MIN_STOP)
        k = result.ranking.rows.shape[1]
        ranked = sequence_rank(distances, length, k, query_moving=query_moving, reference_moving=reference_moving)
        seconds = time.perf_counter() - begin
        ranking = Ranking(ranked.rows, ranked.scores, result.ranking.search_dim, result.pca_dims, "sequence")
        info = {"base_method": result.method, "length": length, "window": DEFAULT_WINDOW,
                "query_window": DEFAULT_QUERY_WINDOW, "velocities": list(DEFAULT_VELOCITIES),
                "static_fraction": DEFAULT_STATIC_FRACTION, "min_stop": DEFAULT_MIN_STOP,
                "repeated_query_frames": int((~query_moving).sum()),
                "repeated_reference_frames": int((~reference_moving).sum()),
                "ms_per_query": 1000 * seconds / max(1, len(queries))}
        added[id(result)] = Result(sequence_label(result.method, length), result.pca_dims, result.query_set,
                                   ranking, ranking_metrics(ranking.rows, ranking.distances, result.ground_truth),
                                   result.ground_truth, seconds, sequence=info)
    return evaluation.insert_derived(added)


__all__ = ["sequence_evaluation", "sequence_label"]
