"""Evaluate descriptor sources on a retrieval dataset: descriptors (cached) -> ranking per PCA size -> metrics.

Two entry points: `evaluate(EvaluationConfig) -> EvaluationResult` does everything `hierloc evaluate`
does (validate, read the dataset, build the methods, evaluate, write JSON and the report);
`evaluate_methods(dataset, methods, settings, cache_dir) -> Evaluation` runs given methods on a dataset.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..datasets.base import ImageSet, RetrievalDataset
from ..datasets.ground_truth import GroundTruth
from ..describers import DescriberIdentity
from ..index import PCA
from .descriptors import compute_descriptors, read_cache, read_precomputed
from .methods import Method, parse_methods
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
    rerank: dict | None = None  # a geometrically re-ranked result: its base method, K, options, ms per query
    sequence: dict | None = None  # a sequence-matched result (hierloc.evaluation.sequences): length, options

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
        } | ({"rerank": self.rerank} if self.rerank is not None else {}) \
            | ({"sequence": self.sequence} if self.sequence is not None else {})


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
    # None for precomputed descriptors, and for a fitted describer whose descriptors all came from the cache
    describer: DescriberIdentity | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable description (with the describer's identity: weights SHA-256, preprocessing)."""
        identity = self.describer
        notes = list(self.method.notes) + ([f"describer: {identity.summary()}"] if identity is not None else [])
        return {"label": self.method.label, "kind": self.method.kind, "descriptor_dim": self.descriptor_dim,
                "seconds_per_image": _finite(self.seconds_per_image), "cache_files": self.cache_files,
                "notes": notes, "skipped_pca_dims": self.skipped_pca,
                "describer": None if identity is None else {
                    "kind": identity.kind, "name": identity.name, "descriptor_dim": identity.descriptor_dim,
                    "weights_sha256": identity.weights_sha256, "preprocessing": identity.preprocessing.to_json()}}


@dataclass
class Evaluation:
    """All results of one run, with what is needed to draw and report them."""

    dataset: RetrievalDataset
    settings: EvaluationSettings
    runs: list[MethodRun]
    results: list[Result]
    ground_truths: dict[str, GroundTruth]

    def insert_derived(self, derived: dict[int, Result]) -> list[Result]:
        """Put each derived result (keyed by `id` of the result it came from) right after its source; return them."""
        ordered = []
        for result in self.results:
            ordered.append(result)
            if id(result) in derived:
                ordered.append(derived[id(result)])
        self.results[:] = ordered
        return list(derived.values())

    def result(self, method: str, pca_dims: int | None, query_set: str) -> Result:
        """The result of one cell."""
        for r in self.results:
            if (r.method, r.pca_dims, r.query_set) == (method, pca_dims, query_set):
                return r
        raise KeyError((method, pca_dims, query_set))

    def table(self, ns: Sequence[int] = RECALL_NS) -> str:
        """A plain-text table of recall@N (percent) and average precision per method, PCA size and query set."""
        header = ["query set", "method", "PCA", "dim"] + [f"R@{n}" for n in ns] + ["R@1%", "AP"]
        reranked = any(r.rerank is not None for r in self.results)
        header += ["+ms/query"] if reranked else []
        rows = []
        for r in self.results:
            s = r.summary(ns)
            rows.append([r.query_set, r.method, r.pca_label, str(r.ranking.search_dim)]
                        + [f"{100 * s['recall'][str(n)]:.1f}" if str(n) in s["recall"] else "-" for n in ns]
                        + ["-" if s["recall_at_1_percent"] is None else f"{100 * s['recall_at_1_percent']:.1f}",
                           f"{100 * s['average_precision']:.1f}"]
                        + ([f"{r.rerank['ms_per_query']:.0f}" if r.rerank and r.rerank["ms_per_query"] else "-"]
                           if reranked else []))
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
            "methods": [run.to_dict() for run in self.runs],
            "results": [r.summary() for r in self.results],
        }


def describe_dataset(method: Method, dataset: RetrievalDataset, cache_dir: Path | None,
                     settings: EvaluationSettings) -> MethodRun:
    """Reference and query descriptors of one method (computed, cached, or read from its file).

    The describer is built before the cache is looked up (its identity is the cache key); a fit on the
    reference images (DenseVLAD, k-means) runs only when some descriptors are missing.
    """
    if method.kind == "precomputed":
        reference = read_precomputed(method.path, dataset.reference)
        queries = {q.name: read_precomputed(method.path, q) for q in dataset.queries}
        return MethodRun(method, reference.shape[1], reference, queries, float("nan"), [str(method.path)])
    key = method.cache_key(dataset.reference)
    base = method.base_describer()
    identity = [base.identity] if base is not None and not method.fitted_on_reference else []
    cache_files = []

    def run(image_set: ImageSet) -> tuple[np.ndarray, float]:
        cache = (cache_dir / method.slug / f"{image_set.name}-{image_set.identity()}-{key}.h5"
                 if cache_dir is not None else None)
        if cache is not None:
            cache_files.append(str(cache))
        cached = read_cache(cache, image_set.keys)
        if cached is not None:
            return cached, float("nan")
        describer = method.describer(dataset.reference, cache_dir)
        identity[:] = [describer.identity]
        return compute_descriptors(describer, image_set, cache, settings.batch_size, settings.io_workers,
                                   method.label, attrs={"method": method.label, "cache_key": key,
                                                        "describer": describer.identity.summary()})

    try:
        reference, seconds = run(dataset.reference)
        timings = [seconds]
        queries = {}
        for query_set in dataset.queries:
            queries[query_set.name], seconds = run(query_set)
            timings.append(seconds)
    finally:
        method.release()  # networks can be large: one method's describer in memory at a time
    measured = [t for t in timings if math.isfinite(t)]
    return MethodRun(method, int(reference.shape[1]), reference, queries,
                     float(np.mean(measured)) if measured else float("nan"), cache_files,
                     describer=identity[0] if identity else None)


def evaluate_methods(dataset: RetrievalDataset, methods: Sequence[Method], settings: EvaluationSettings | None = None,
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
            "first_correct_rank": (int(result.metrics.first_correct_rank[i]) + 1
                                   if result.metrics.first_correct_rank[i] >= 0 else None),
            "retrieved": [dataset.reference.names[r] if r >= 0 else "" for r in ranked],
            "distances": [float(d) for d in result.ranking.distances[i, :top]],
            "correct": [bool(c) for c in result.metrics.correct[i, :top]],
            "true_positives": int(tp[i, -1]), "false_positives": int(fp[i, -1]),
            "true_references": [dataset.reference.names[r] for r in result.ground_truth.positives(i)[:5]],
        })
    return rows


# --------------------------------------------------------------------------- the whole evaluation from a config

DATASET_KINDS = ("auto", "folders", "nordland", "vprbench", "nclt", "strecha")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Dataset kinds whose --queries names several sessions or seasons; the others take one query folder.
MULTI_QUERY_KINDS = ("nordland", "nclt")


def default_cache_dir() -> Path:
    """$HIERLOC_CACHE_DIR/evaluate or ~/.cache/hierloc/evaluate."""
    base = os.environ.get("HIERLOC_CACHE_DIR")
    return Path(base) / "evaluate" if base else Path.home() / ".cache" / "hierloc" / "evaluate"


def parse_pca_dims(values: Sequence[str]) -> tuple[int | None, ...]:
    """'none' (also '0', 'full') or positive sizes, without repeats, in order."""
    dims: list[int | None] = []
    for value in values:
        if str(value).lower() in ("none", "0", "full"):
            dims.append(None)
            continue
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"--pca-dims: {value!r} is neither 'none' nor a positive integer") from None
        if number < 1:
            raise ValueError(f"--pca-dims: {number} is not a positive size")
        dims.append(number)
    return tuple(dict.fromkeys(dims))


def parse_search_params(items: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE strings -> {key: int, float, None ('none') or string}."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--search-param {item!r}: expected KEY=VALUE")
        for cast in (int, float):
            try:
                params[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[key] = None if value.lower() == "none" else value
    return params


@dataclass(frozen=True)
class DatasetOptions:
    """Reader options of `hierloc.datasets.load_dataset` (None: the dataset's default)."""

    reference: str | None = None
    queries: tuple[str, ...] | None = None
    ground_truth: str | None = None
    reference_poses: str | None = None
    query_poses: str | None = None
    max_distance: float | None = None
    max_angle: float | None = None
    tolerance: int | None = None
    camera: int | None = None
    undistortion_map: str | None = None
    undistort: bool | None = None
    pool_queries: bool | None = None


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything one evaluation needs (what `hierloc evaluate` parses its arguments into)."""

    dataset_kind: str
    dataset_path: Path
    methods: tuple[str, ...] = ("densevlad",)  # --method spellings (hierloc.evaluation.methods)
    weights: str | None = None  # weights of the single network method spelled without '=WEIGHTS'
    dataset: DatasetOptions = DatasetOptions()
    step: int = 1  # every step-th reference and query
    min_side: int | None = None  # networks' shortest side (None: NETWORK_PREPROCESSING's; 0: images as they are)
    pca_dims: tuple[int | None, ...] = (None,)
    max_n: int = 25
    search: str = "flat"
    search_params: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None  # None: descriptors are neither read from nor written to a cache
    json_path: Path | None = None
    out_dir: Path | None = None  # results.json, plots, retrieval grids, per-query CSV, index.html
    top_k: int = 5
    examples: int = 4
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 8
    threads: int | None = None
    command: str = ""  # the command line, recorded in the JSON and the HTML page
    rerank: Any = None  # a hierloc.reranking.RerankConfig: also every ranking re-sorted by verified local matches
    sequence_length: int | None = None  # also every ranking by sequences of this many frames (ordered image sets)

    def validate(self) -> None:
        """Refuse bad values with a one-line ValueError (FileNotFoundError for a missing dataset) before
        anything is read or loaded."""
        from ..index import available_backends

        if self.dataset_kind not in DATASET_KINDS:
            raise ValueError(f"--dataset kind {self.dataset_kind!r}: choose one of {', '.join(DATASET_KINDS)}")
        if not Path(self.dataset_path).is_dir():
            raise FileNotFoundError(f"{self.dataset_path}: no such dataset folder")
        if not self.methods:
            raise ValueError("--method: give at least one descriptor source")
        for name in ("step", "max_n", "top_k", "examples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.min_side is not None and (not isinstance(self.min_side, int) or self.min_side < 0):
            raise ValueError(f"--min-side must be 0 or a positive integer, got {self.min_side!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"--threads must be a positive integer, got {self.threads!r}")
        if not self.pca_dims or any(d is not None and (not isinstance(d, int) or d < 1) for d in self.pca_dims):
            raise ValueError(f"--pca-dims: sizes must be positive integers or 'none', got {list(self.pca_dims)}")
        if self.search not in available_backends():
            raise ValueError(f"--search {self.search!r}: choose one of {', '.join(available_backends())}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.rerank is not None:
            self.rerank.validate()
        if self.sequence_length is not None and (isinstance(self.sequence_length, bool) or
                                                 not isinstance(self.sequence_length, int) or self.sequence_length < 1):
            raise ValueError(f"--sequence-length must be a positive integer, got {self.sequence_length!r}")
        queries = self.dataset.queries
        if queries is not None and len(queries) != 1 and self.resolved_kind() not in MULTI_QUERY_KINDS:
            raise ValueError(f"a {self.resolved_kind()} dataset has one query folder; got {len(queries)}")

    def resolved_kind(self) -> str:
        """The dataset kind, detected from the folder for 'auto'."""
        from ..datasets import detect_dataset_kind

        return detect_dataset_kind(self.dataset_path) if self.dataset_kind == "auto" else self.dataset_kind

    def load_dataset(self) -> RetrievalDataset:
        """The dataset with its options, subsampled by `step`."""
        from ..datasets import load_dataset

        kind, o = self.resolved_kind(), self.dataset
        queries = o.queries if o.queries is None or kind in MULTI_QUERY_KINDS else o.queries[0]
        options = {"reference": o.reference, "queries": queries, "ground_truth": o.ground_truth,
                   "reference_poses": o.reference_poses, "query_poses": o.query_poses,
                   "max_distance": o.max_distance, "max_angle_deg": o.max_angle, "tolerance": o.tolerance,
                   "camera": o.camera, "undistortion_map": o.undistortion_map, "undistort": o.undistort,
                   "pool_queries": o.pool_queries}
        return load_dataset(kind, self.dataset_path, **options).subsampled(self.step, self.step)

    def methods_to_run(self) -> list[Method]:
        """The Method of every --method value (nothing loaded yet; bad spellings refused here)."""
        return parse_methods(self.methods, self.weights, self.min_side, device=self.device,
                             precision=self.precision, threads=self.threads)

    def settings(self) -> EvaluationSettings:
        """What is measured."""
        max_n = max(self.max_n, self.rerank.k) if self.rerank is not None else self.max_n
        return EvaluationSettings(pca_dims=self.pca_dims, max_n=max_n, backend=self.search,
                                  backend_params=dict(self.search_params), batch_size=self.batch_size)


@dataclass
class EvaluationResult:
    """An evaluation and where its outputs went."""

    evaluation: Evaluation
    json_path: Path | None = None
    out_dir: Path | None = None
    report_files: dict[str, list[Path]] = field(default_factory=dict)  # write_report's: json, plots, grids, csv, html

    def summary_lines(self) -> list[str]:
        """What `hierloc evaluate` prints: dataset notes, the table, one line per method, the outputs."""
        evaluation = self.evaluation
        lines = [f"dataset: {note}" for note in evaluation.dataset.notes] + ["", evaluation.table(), ""]
        for run in evaluation.runs:
            timing = f", {1000 * run.seconds_per_image:.1f} ms/image" if math.isfinite(run.seconds_per_image) else ""
            cached = f"; descriptors cached in {Path(run.cache_files[0]).parent}" if run.cache_files and \
                run.method.kind != "precomputed" else ""
            describer = f" ({run.describer.summary()})" if run.describer is not None else ""
            lines.append(f"{run.method.label}: {run.descriptor_dim}-D{timing}{cached}{describer}")
        for result in evaluation.results:
            info = result.rerank
            if info is None or info["ms_per_query"] is None:
                continue
            stages = ", ".join(f"{key} {value:.1f}" for key, value in info["stages_ms"].items())
            lines.append(f"{result.method} (PCA {result.pca_label}, {result.query_set}): +{info['ms_per_query']:.1f} "
                         f"ms per query (median {info['median_ms_per_query']:.1f}, {info['cpu_ms_per_query']:.1f} ms "
                         f"CPU; {stages}), "
                         f"{info['inconclusive']} of {info['queries']} queries kept their global order; "
                         f"reference features in {info['reference_features']}")
        if self.json_path is not None:
            lines.append(f"numbers written to {self.json_path}")
        if self.out_dir is not None:
            files = self.report_files
            lines += [f"plots written to {', '.join(str(p) for p in files.get('plots', []))}",
                      f"retrieval grids written to {self.out_dir / 'retrievals'} ({len(files.get('grids', []))} PNG)",
                      f"per-query results written to {self.out_dir / 'per_query'} ({len(files.get('csv', []))} CSV)"]
            lines += [f"report written to {path}" for path in files.get("html", [])]
        return lines


def evaluate(config: EvaluationConfig) -> EvaluationResult:
    """Validate `config`, read the dataset, run every method, write the JSON and the report folder."""
    from ..utils.threads import configure_threads
    from .report import write_json, write_report  # report builds on this module

    config.validate()
    methods = config.methods_to_run()
    configure_threads(config.threads)
    dataset = config.load_dataset()
    evaluation = evaluate_methods(dataset, methods, config.settings(), config.cache_dir)
    if config.rerank is not None:
        from .reranking import rerank_evaluation

        rerank_evaluation(evaluation, config.rerank, config.cache_dir)
    if config.sequence_length is not None:
        from .sequences import sequence_evaluation

        sequence_evaluation(evaluation, config.sequence_length)
    extra = {"command": config.command} if config.command else None
    json_path = write_json(evaluation, config.json_path, extra) if config.json_path is not None else None
    files = {}
    if config.out_dir is not None:
        files = write_report(evaluation, config.out_dir, top=config.top_k, examples=config.examples,
                             command=config.command)
    return EvaluationResult(evaluation, json_path, config.out_dir, files)
