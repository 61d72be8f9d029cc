"""Index jobs as library functions: build an index file, extend it, query it, time queries.

Each takes a typed configuration and returns a typed result; the CLI (`hierloc index ...`,
`hierloc query`, `hierloc time-query`), the benchmarks and the service call these. The index file
records its describer (`hierloc.describers.stored`): queries and extensions use it by default and
refuse another one unless forced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from ..describers import (
    METADATA_KEY,
    Describer,
    DescriberError,
    adaptation_loader,
    describer_for_artifact,
    describer_record,
    make_describer,
)
from ..index.retriever import Retrieval, Retriever

logger = logging.getLogger(__name__)

SEARCH_KINDS = ("auto", "flat", "hnsw", "ivfpq", "ivfpq-mmap")
FORMAT_NAMES = {"auto": "auto", "proto": "protobuf", "protobuf": "protobuf", "pb": "protobuf", "native": "native",
                "h5": "native"}


@dataclass
class MapSource:
    """Where keyframes come from: an image folder, a COLMAP model or a ROS bag, with reader options."""

    path: str
    kind: str = "auto"
    pose_file: str | None = None
    image_dir: str | None = None
    image_topic: str | None = None
    pose_topic: str | None = None
    subsampling: int = 1
    missions: list[str] | None = None
    name: str | None = None  # overrides the map's name

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (absolute paths): what `from_json` needs to open the same source again."""
        absolute = {key: (str(Path(value).resolve()) if value else None)
                    for key, value in (("path", self.path), ("pose_file", self.pose_file),
                                       ("image_dir", self.image_dir))}
        return {**absolute, "kind": self.kind, "image_topic": self.image_topic, "pose_topic": self.pose_topic,
                "missions": self.missions, "subsampling": self.subsampling}

    @classmethod
    def from_json(cls, values: Any) -> MapSource:
        """Rebuild a source recorded by `to_json`, refusing anything that is not its plain fields."""
        fields = ("path", "kind", "pose_file", "image_dir", "image_topic", "pose_topic")
        if not isinstance(values, dict) or not isinstance(values.get("path"), str):
            raise ValueError(f"not a recorded map source: {values!r:.200}")
        options = {key: values.get(key) for key in fields if isinstance(values.get(key), str)}
        missions = values.get("missions")
        if missions is not None and not (isinstance(missions, list) and all(isinstance(m, str) for m in missions)):
            raise ValueError(f"recorded missions must be a list of names, got {missions!r:.200}")
        return cls(missions=missions, **options)

    def load(self):
        """The hierloc Map."""
        from ..maps import load_map

        options = {key: value for key, value in (("pose_file", self.pose_file), ("image_dir", self.image_dir),
                                                 ("image_topic", self.image_topic), ("pose_topic", self.pose_topic))
                   if value}
        map_ = load_map(self.path, kind=self.kind, **options)
        if self.name:
            map_.name = self.name
        return map_


@dataclass
class DescriberChoice:
    """Which describer, as a user spells it (`hierloc.describers.make_describer`), and how to run it."""

    spelling: str | None = "auto"  # None: the one recorded in the artifact being read
    weights: str | None = "auto"
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    force: bool = False  # use a describer other than the artifact's (warned)
    resize: tuple[int, int] | None = None  # a fixed (width, height) for every image, recorded

    def options(self) -> dict[str, Any]:
        """Keyword options of the describer factories."""
        return {"device": self.device, "precision": self.precision, "threads": self.threads}

    def build(self, adaptation_images: Callable[[], Sequence[np.ndarray]] | None = None) -> Describer:
        """A new describer (for building an artifact)."""
        describer = make_describer(self.spelling or "auto", self.weights, adaptation_images=adaptation_images,
                                   **self.options())
        if self.resize is not None:
            describer.preprocessing = describer.preprocessing.with_overrides(resize=tuple(self.resize))
        return describer

    def for_artifact(self, path: str | Path) -> Describer:
        """The describer to read an artifact with: its own, or the one asked for when it is the same (or forced)."""
        return describer_for_artifact(path, self.spelling, self.weights, force=self.force, **self.options())


@dataclass
class BatchOptions:
    """How images reach the network when many are described; `ray` runs it on a Ray cluster."""

    batch_size: int = 8
    workers: int = 2
    ray: str | None = None
    ray_actors: int | None = None
    ray_cpus_per_actor: float = 2.0
    shard_dir: str | None = None


@dataclass
class SearchOptions:
    """The search structure stored with a native index (`hierloc.index.stored_search`)."""

    kind: str = "auto"
    params: dict[str, dict] = field(default_factory=dict)  # per kind: constructor overrides
    pca_dims: int | None = None
    whiten: bool = False


@dataclass
class IndexBuildConfig:
    """`build_index_file`: keyframes of `source` described by `describer`, written to `out`."""

    source: MapSource
    out: Path
    describer: DescriberChoice = field(default_factory=DescriberChoice)
    batch: BatchOptions = field(default_factory=BatchOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    store_poses: bool = False
    format: str = "auto"


@dataclass
class IndexBuildResult:
    """What `build_index_file` wrote."""

    path: Path
    keyframes: int
    descriptor_size: int
    describer: str  # identity summary
    indexed: dict[str, int]  # per mission
    skipped: list[tuple[str, str]]  # (keyframe name, reason)
    search: str
    side_file: Path | None = None
    side_bytes_per_keyframe: float | None = None
    describer_weights: Path | None = None  # the weights file stored beside the index, if any


def describe_map(map_, describer: Describer, batch: BatchOptions, store_poses: bool, source: MapSource,
                 weights_spelling: str | None = None, device: str = "auto", precision: str = "auto"):
    """(DescriptorIndex, BuildReport) of the selected keyframes, in this process or on Ray."""
    from ..index.build import build_index

    if batch.ray:
        from ..describers import NetworkDescriber
        from ..distributed import RayConfig, ray_describer

        named_weights = describer.weights_name is not None or weights_spelling not in (None, "auto")
        if not isinstance(describer, NetworkDescriber) or not named_weights:
            raise DescriberError("--ray builds the network on every worker from a name and weights: use a named "
                                 "model with its registry weights or --weights FILE")
        config = RayConfig(address=batch.ray, actors=batch.ray_actors, cpus_per_actor=batch.ray_cpus_per_actor,
                           batch_size=batch.batch_size, preprocessing=describer.preprocessing,
                           shard_dir=batch.shard_dir)
        weights = describer.weights_name or weights_spelling
        with ray_describer(describer.name, weights, config, device=device, precision=precision) as describe:
            return build_index(map_, describer, subsampling=source.subsampling, missions=source.missions,
                               store_poses=store_poses, describe=describe)
    return build_index(map_, describer, subsampling=source.subsampling, missions=source.missions,
                       store_poses=store_poses, batch_size=batch.batch_size, io_workers=batch.workers)


def build_index_file(config: IndexBuildConfig) -> IndexBuildResult:
    """Describe the map's keyframes, record the describer, and save the index with its search structure."""
    from ..index.io import format_for_path, save_index
    from ..index.stored_search import build_search, save_index_with_search
    from ..utils.threads import configure_threads

    out = Path(config.out)
    fmt = FORMAT_NAMES[config.format]
    fmt = format_for_path(out) if fmt == "auto" else fmt
    if fmt == "protobuf" and (config.search.kind not in ("auto", "flat") or config.search.pca_dims):
        raise ValueError(f"{out}: --index {config.search.kind} / --pca-dims need the native .h5 format (the "
                         "protobuf format stores descriptors only)")
    configure_threads(config.describer.threads)
    map_ = config.source.load()
    selected = map_.select(config.source.missions, config.source.subsampling)
    describer = config.describer.build(
        adaptation_images=adaptation_loader([kf.load_image for kf in selected.keyframes()]))
    index, report = describe_map(map_, describer, config.batch, config.store_poses, config.source,
                                 config.describer.weights, config.describer.device, config.describer.precision)
    index.metadata[METADATA_KEY] = record = describer_record(describer, out.parent)
    # Where the keyframes' images are, so that later stages (e.g. geometric re-ranking) can read them again.
    index.metadata["source"] = config.source.to_json()
    stored_weights = out.parent / record["weights_file"] if record["weights_file"] else None
    result = IndexBuildResult(out, len(index), index.descriptor_size, describer.identity.summary(),
                              dict(report.indexed), list(report.skipped), "flat", describer_weights=stored_weights)
    if fmt == "protobuf":
        save_index(index, out, format="protobuf")
        return result
    backend = build_search(index, config.search.kind, config.search.params, pca_dims=config.search.pca_dims,
                           whiten=config.search.whiten)
    side = save_index_with_search(index, backend, out, pca=index.pca if config.search.pca_dims else None)
    result.search = backend.name
    if side is not None:
        result.side_file = side
        result.side_bytes_per_keyframe = side.stat().st_size / max(len(index), 1)
    return result


@dataclass
class IndexExtendConfig:
    """`extend_index_file`: the keyframes of `source` appended to the index at `path`."""

    path: Path
    source: MapSource
    describer: DescriberChoice = field(default_factory=lambda: DescriberChoice(spelling=None))
    batch: BatchOptions = field(default_factory=BatchOptions)


@dataclass
class IndexExtendResult:
    """What `extend_index_file` changed."""

    path: Path
    rows_before: int
    rows_after: int
    search: str
    indexed: dict[str, int]
    skipped: list[tuple[str, str]]


def extend_index_file(config: IndexExtendConfig) -> IndexExtendResult:
    """Describe new keyframes with the index's own describer and append them (its search structure is extended)."""
    from ..index.io import detect_format, load_index
    from ..index.native_format import read_native_catalog
    from ..index.update import add_keyframes
    from ..utils.threads import configure_threads

    path = Path(config.path)
    configure_threads(config.describer.threads)
    existing = read_native_catalog(path) if detect_format(path) == "native" else load_index(path)
    describer = config.describer.for_artifact(path)
    map_ = config.source.load()
    new, report = describe_map(map_, describer, config.batch, existing.positions is not None, config.source,
                               config.describer.weights, config.describer.device, config.describer.precision)
    new.model_name = existing.model_name
    if METADATA_KEY in existing.metadata:
        new.metadata[METADATA_KEY] = existing.metadata[METADATA_KEY]
    update = add_keyframes(path, new)
    return IndexExtendResult(path, update.rows_before, update.rows_after, update.search, dict(report.indexed),
                             list(report.skipped))


@dataclass
class QueryConfig:
    """`query_index`: the nearest keyframes of query images."""

    index: Path
    images: list[str]  # files or folders
    k: int = 10
    max_distance: float = float("inf")
    pca_dims: int | None = None
    describer: DescriberChoice = field(default_factory=lambda: DescriberChoice(spelling=None))
    progress: bool = True
    rerank: Any = None  # a hierloc.reranking.RerankConfig: the top rerank.k re-sorted by verified local matches
    reference_root: str | None = None  # re-ranking: folder the keyframe names are relative to (old indexes)
    rerank_all: bool = False  # re-ranking: compute the features of every keyframe first (else only candidates')


@dataclass
class QueryHit:
    """One retrieved keyframe, as plain types."""

    rank: int
    keyframe_id: str
    mission: str
    name: str
    distance: float
    position: list[float] | None = None
    rotation: list[list[float]] | None = None
    inliers: int | None = None  # re-ranking score: RANSAC inliers of the local matches (None: not re-ranked)
    global_rank: int | None = None  # re-ranking: rank by global descriptor alone

    @classmethod
    def from_retrieval(cls, hit: Retrieval) -> QueryHit:
        """From the retriever's result."""
        return cls(hit.rank, hit.keyframe_id, hit.mission, hit.name, float(hit.distance),
                   None if hit.position is None else [float(v) for v in hit.position],
                   None if hit.rotation is None else [[float(v) for v in row] for row in hit.rotation])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (no non-finite numbers)."""
        out = {"rank": self.rank, "keyframe_id": self.keyframe_id, "mission": self.mission, "name": self.name,
               "distance": self.distance if np.isfinite(self.distance) else None}
        if self.position is not None:
            out["position"], out["rotation"] = self.position, self.rotation
        if self.global_rank is not None:
            out["inliers"], out["global_rank"] = self.inliers, self.global_rank
        return out


@dataclass
class QueryResult:
    """Per query image: its name, path and hits."""

    index: Path
    describer: str
    k: int
    max_distance: float
    pca_dims: int | None
    queries: list[dict[str, Any]]  # {"query", "path", "results": [QueryHit][, "rerank": {...}]}
    rerank: dict[str, Any] | None = None  # re-ranking options, reference features, mean ms per stage

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the infinite default max distance is null)."""
        out = {"index": str(self.index), "describer": self.describer, "k": self.k,
               "max_distance": self.max_distance if np.isfinite(self.max_distance) else None,
               "pca_dims": self.pca_dims,
               "queries": [{**q, "results": [hit.to_json() for hit in q["results"]]} for q in self.queries]}
        if self.rerank is not None:
            out["rerank"] = self.rerank
        return out


def open_index(path: str | Path, describer: DescriberChoice,
               pca_dims: int | None = None) -> tuple[Retriever, Describer]:
    """(retriever, describer) for an index file: its stored search structure and its own describer."""
    from ..index.stored_search import load_retriever
    from ..utils.threads import configure_threads

    configure_threads(describer.threads)
    chosen = describer.for_artifact(path)
    retriever = load_retriever(path, pca_dims=pca_dims, mmap=True)
    if retriever.descriptor_size != chosen.descriptor_dim:
        raise DescriberError(f"{path}: holds {retriever.descriptor_size}-D descriptors but the describer gives "
                             f"{chosen.descriptor_dim}-D ones")
    return retriever, chosen


def query_index(config: QueryConfig) -> QueryResult:
    """Describe each query image with the index's describer and search; a progress bar over the images."""
    from ..utils.images import list_images, read_image

    images = list_images(config.images)
    if not images:
        raise ValueError(f"no images found in {', '.join(config.images)}")
    retriever, describer = open_index(config.index, config.describer, config.pca_dims)
    reranker = None
    if config.rerank is not None:  # refused before any query is described
        from ..reranking import reranker_for_index

        reranker = reranker_for_index(config.index, config.rerank, config.reference_root, progress=config.progress)
    k = max(config.k, config.rerank.k) if reranker is not None else config.k
    queries = []
    for path, name in tqdm(images, desc="queries", unit="img", disable=not config.progress or len(images) < 2):
        descriptor = describer.describe(read_image(path))
        hits = retriever.retrieve(descriptor, k=k, max_distance=config.max_distance)[0]
        queries.append({"query": name, "path": str(path), "results": [QueryHit.from_retrieval(h) for h in hits]})
    result = QueryResult(Path(config.index), describer.identity.summary(), config.k, config.max_distance,
                         config.pca_dims, queries)
    if reranker is not None:
        try:
            result.rerank = _rerank_queries(reranker, queries, config)
        finally:
            reranker.close()
    for query in queries:
        query["results"] = query["results"][: config.k]
    return result


def rerank_hits(reranker, image: np.ndarray, hits: list[QueryHit], k: int) -> tuple[list[QueryHit], Any]:
    """The hits (global order) with their first `k` re-sorted by `reranker` (a GeometricReranker), in place:
    each gets its new rank, its global rank and, among the first `k`, its inliers; (new order, RerankResult)."""
    outcome = reranker.rerank(image, [h.name for h in hits], [h.distance for h in hits], k=k)
    reordered = []
    for rank, candidate in enumerate(outcome.candidates):
        hit = hits[candidate.global_rank]
        hit.rank, hit.global_rank = rank, candidate.global_rank
        hit.inliers = candidate.inliers if candidate.global_rank < k else None
        reordered.append(hit)
    return reordered, outcome


def _rerank_queries(reranker, queries: list[dict[str, Any]], config: QueryConfig) -> dict[str, Any]:
    """Re-sort each query's hits by verified local matches (in place); the summary for QueryResult.rerank."""
    from ..utils.images import read_image

    references = reranker.references
    prepare_seconds = references.prepare_all() if config.rerank_all else references.prepare(
        [hit.name for q in queries for hit in q["results"][: config.rerank.k]])
    stages: dict[str, list[float]] = {}
    for query in tqdm(queries, desc="re-ranking", unit="img", disable=not config.progress or len(queries) < 2):
        query["results"], outcome = rerank_hits(reranker, read_image(query["path"]), query["results"],
                                                config.rerank.k)
        query["rerank"] = {"conclusive": outcome.conclusive,
                           "timings_ms": {key: 1e3 * value for key, value in outcome.timings.items()}}
        for key, value in outcome.timings.items():
            stages.setdefault(key, []).append(value)
    return {"config": config.rerank.to_json(),
            "reference_features": None if references.path is None else str(references.path),
            "reference_features_seconds": prepare_seconds,
            "inconclusive": sum(not q["rerank"]["conclusive"] for q in queries),
            "mean_ms": {key: 1e3 * float(np.mean(values)) for key, values in stages.items()}}


@dataclass
class TimingConfig:
    """`time_queries`: the original's timing tool over query images or a map's missions."""

    index: Path
    queries: list[str] | None = None  # image files or folders
    query_map: MapSource | None = None
    k: int = 20
    max_distance: float = 1.0
    pca_dims: int | None = None
    max_queries: int | None = None
    warmup: int = 2
    describer: DescriberChoice = field(default_factory=lambda: DescriberChoice(spelling=None))


def _stats_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"mean_ms": float(ms.mean()), "median_ms": float(np.median(ms)),
            "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max()), "count": int(ms.size)}


def time_queries(config: TimingConfig) -> dict[str, Any]:
    """Descriptor and search times per query (mean / median / p95 / max ms) and the average number retrieved."""
    from ..utils.images import list_images, read_image

    if config.queries:
        loaders = [lambda p=path: read_image(p) for path, _ in list_images(config.queries)]
    elif config.query_map is not None:
        map_ = config.query_map.load().select(config.query_map.missions)
        loaders = [kf.load_image for kf in map_.keyframes()]
    else:
        raise ValueError("give query images or a query map")
    loaders = loaders[: config.max_queries] if config.max_queries is not None else loaders
    if not loaders:
        raise ValueError("no query images")
    retriever, describer = open_index(config.index, config.describer, config.pca_dims)
    for load in loaders[: config.warmup]:
        retriever.retrieve(describer.describe(load()), k=config.k, max_distance=config.max_distance)
    describe_times, search_times, retrieved = [], [], []
    for load in tqdm(loaders, desc="queries", unit="query"):
        image = load()
        t0 = time.perf_counter()
        descriptor = describer.describe(image)
        t1 = time.perf_counter()
        hits = retriever.retrieve(descriptor, k=config.k, max_distance=config.max_distance)[0]
        search_times.append(time.perf_counter() - t1)
        describe_times.append(t1 - t0)
        retrieved.append(len(hits))
    return {"index": str(config.index), "describer": describer.identity.summary(), "keyframes": len(retriever),
            "queries": len(loaders), "k": config.k, "max_distance": config.max_distance,
            "pca_dims": config.pca_dims, "search_dim": retriever.search_dim,
            "average_retrieved": float(np.mean(retrieved)), "compute_descriptor": _stats_ms(describe_times),
            "get_neighbours": _stats_ms(search_times)}
