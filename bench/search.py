"""Keyframe search at scale: exact, graph, compressed, kd-tree and hloc-style matmul, side by side.

For N keyframes (10k, 100k, 1M) and descriptor sizes 4096 (raw) and 512 / 128 (PCA fitted on the
map, as `hierloc index build --pca-dims` does), it measures in one process:
single-query latency p50/p95 (k=10, one query per call, as a robot queries), batch throughput,
build time, memory per keyframe (the serialised structure; the raw matrix for matmul) and
recall@10 relative to exact search (|approximate top 10 & exact top 10| / 10).

`ivfpq-mmap` keeps only its codes, row numbers, centroids, codebooks and OPQ rotation in RAM (the
bytes per keyframe counted) and re-ranks from a copy on disk (`disk B/kf`). It is written to
--tmp-dir and read back memory-mapped before it is timed, three ways: *first touch* (the file was
just written, so its pages are in the page cache but not yet mapped by this process: minor page
faults), *cold* (the copy dropped from the page cache with posix_fadvise(DONTNEED) first, which
needs no root: every row is read from the disk, or from whatever caches the disk below the
kernel) and *warm* (after the recall and throughput runs touched the rows; the p50/p95 columns).
The anonymous RAM the reloaded structure adds to the process (RssAnon) cross-checks its bytes.

Descriptors (`--data real`, the default when ../shared/data exists): real MobileNetVLAD-ImageNet
descriptors of all Nordland frames (computed once, cached) seed a mixture that keeps their
statistics. Each synthetic *place* is a real frame's descriptor moved along the directions in
which real places differ (their principal components); each *keyframe* is a place moved along the
directions in which one real place differs between summer and winter (the principal components of
the summer - winter differences). Queries are new keyframes of mapped places. `--data mixture`
(no images needed) uses a Gaussian mixture with a power-law spectrum instead.

Approximate structures are swept over their speed knob (HNSW efSearch, IVF nprobe) and reported at
the first setting that reaches --target-recall, with every point of the sweep in the JSON.
Variants that would take hours or exceed --max-memory-gb at a size are listed as skipped, with why.

Usage: python bench/search.py --json out.json        # all sizes (1M takes about an hour on 2 cores)
       python bench/search.py --quick --json out.json  # 10k keyframes, minutes
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import os

# Spinning OpenMP threads make a 2-core machine shared with other jobs many times slower (a thread
# spins while its partner waits for a core); sleeping at barriers costs little when it is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import gc
import io
import logging
import math
import pickle
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np
import torch
from scipy.spatial import cKDTree

from hierloc.index import PCA
from hierloc.index.approximate import build_backend
from hierloc.index.search import SearchBackend
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

logger = logging.getLogger("bench.search")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path.home() / ".cache" / "hierloc" / "bench"
K = 10
RAW_DIM = 4096
# Candidates per result that ivfpq-mmap re-ranks from its copy on disk.
MAPPED_K_FACTOR = 8


# --- descriptor distributions ------------------------------------------------------------------


@dataclass
class LowRankGaussian:
    """Zero-mean Gaussian: top principal directions with their variances plus an isotropic rest."""

    directions: np.ndarray  # (r, D) orthonormal rows
    stddevs: np.ndarray  # (r,)
    residual_std: float

    @classmethod
    def fit(cls, samples: np.ndarray, rank: int) -> LowRankGaussian:
        """Fit to (n, D) samples (centred here)."""
        centred = torch.from_numpy(np.ascontiguousarray(samples - samples.mean(axis=0), dtype=np.float32))
        rank = min(rank, *centred.shape)
        torch.manual_seed(0)
        # Randomised SVD of the top components: seconds, where a full SVD of 7k x 4096 takes minutes.
        _, singular, v = torch.svd_lowrank(centred, q=min(rank + 16, *centred.shape), niter=3)
        variances = (singular[:rank] ** 2 / max(len(samples) - 1, 1)).numpy()
        total = float((centred.double() ** 2).sum()) / max(len(samples) - 1, 1)
        residual = max(total - float(variances.sum()), 0.0) / max(samples.shape[1] - rank, 1)
        return cls(np.ascontiguousarray(v[:, :rank].T.numpy(), dtype=np.float32),
                   np.sqrt(variances).astype(np.float32), float(np.sqrt(residual)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, D) float32 draws."""
        z = rng.standard_normal((n, len(self.stddevs)), dtype=np.float32) * self.stddevs
        out = z @ self.directions
        out += rng.standard_normal(out.shape, dtype=np.float32) * self.residual_std
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class DescriptorGenerator:
    """Places around real descriptors, keyframes around places; deterministic for a seed."""

    def __init__(self, anchors: np.ndarray, between: LowRankGaussian, within: LowRankGaussian,
                 place_spread: float, keyframes_per_place: int, description: str) -> None:
        self.anchors = anchors.astype(np.float32)
        self.between, self.within = between, within
        self.place_spread = place_spread
        self.keyframes_per_place = keyframes_per_place
        self.description = description

    def places(self, n_places: int, seed: int) -> np.ndarray:
        """(n_places, D) unit place centres."""
        rng = np.random.default_rng(seed)
        chosen = self.anchors[rng.integers(0, len(self.anchors), n_places)]
        return _unit(chosen + self.place_spread * self.between.sample(rng, n_places))

    def keyframes(self, places: np.ndarray, place_ids: np.ndarray, seed: int) -> np.ndarray:
        """(len(place_ids), D) unit keyframes of the given places."""
        rng = np.random.default_rng(seed)
        return _unit(places[place_ids] + self.within.sample(rng, len(place_ids)))


def real_generator(descriptors: np.ndarray, names: list[str], missions: list[str], keyframes_per_place: int,
                   seed: int = 0) -> DescriptorGenerator:
    """The real-descriptor-seeded mixture (see the module docstring), in RAW_DIM dimensions."""
    rng = np.random.default_rng(seed)
    # A fixed random projection stands in for MobileNetVLAD's learnt reduction to 4096-D.
    projection = rng.standard_normal((descriptors.shape[1], RAW_DIM), dtype=np.float32) / math.sqrt(RAW_DIM)
    raw = _unit(descriptors @ projection)
    missions_array = np.asarray(missions)
    stem = [n.split("/")[-1] for n in names]
    summer = {s: i for i, (s, m) in enumerate(zip(stem, missions)) if m == "summer"}
    pairs = [(summer[s], i) for i, (s, m) in enumerate(zip(stem, missions)) if m == "winter" and s in summer]
    if not pairs:
        raise ValueError("real descriptors need summer/winter pairs of the same frame names")
    deltas = np.stack([raw[a] - raw[b] for a, b in pairs])
    # A keyframe deviates from its place by half a summer-winter difference's spread (the place sits
    # between the two seasons), so two keyframes of a place differ as much as real seasons do.
    within = LowRankGaussian.fit(deltas / 2.0, rank=256)
    between = LowRankGaussian.fit(raw, rank=256)
    anchors = raw[missions_array == "summer"] if (missions_array == "summer").any() else raw
    return DescriptorGenerator(anchors, between, within, place_spread=0.5, keyframes_per_place=keyframes_per_place,
                               description=f"places around {len(anchors)} real Nordland descriptors (10240-D "
                                           f"MobileNetVLAD-ImageNet, randomly projected to {RAW_DIM}-D); "
                                           f"within-place spread from {len(pairs)} summer/winter pairs")


def mixture_generator(keyframes_per_place: int, seed: int = 0) -> DescriptorGenerator:
    """A Gaussian mixture with a power-law spectrum, for machines without the shared images."""
    rng = np.random.default_rng(seed)
    rank = 256
    directions, _ = np.linalg.qr(rng.standard_normal((RAW_DIM, rank)))
    spectrum = (np.arange(1, rank + 1, dtype=np.float32) ** -0.7)
    between = LowRankGaussian(directions.T.astype(np.float32), (spectrum / np.linalg.norm(spectrum)).astype(np.float32),
                              residual_std=0.002)
    within = LowRankGaussian(directions.T.astype(np.float32),
                             (0.45 * spectrum / np.linalg.norm(spectrum)).astype(np.float32),
                             residual_std=0.004)
    anchors = _unit(between.sample(rng, 8192))
    return DescriptorGenerator(anchors, between, within, place_spread=0.5, keyframes_per_place=keyframes_per_place,
                               description="Gaussian mixture with a power-law spectrum (no real images)")


def nordland_descriptors(nordland: Path, batch_size: int, limit: int | None) -> tuple[np.ndarray, list[str], list[str]]:
    """Real descriptors of the Nordland frames (bench/index_throughput.py's model), cached on disk."""
    tag = f"nordland_mobilenetvlad_imagenet_256x128_{limit or 'all'}.npz"
    cached = CACHE / tag
    if cached.is_file():
        data = np.load(cached)
        return data["descriptors"], data["names"].tolist(), data["missions"].tolist()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from index_throughput import make_model  # the same model, with k-means VLAD centres

    from hierloc.describers import NetworkDescriber, Preprocessing
    from hierloc.index.build import build_index
    from hierloc.maps import load_map

    print(f"computing real descriptors of {nordland} once (cached in {cached})")
    map_ = load_map(nordland, kind="folder").select(["summer", "winter"], 1)
    if limit:
        for mission in map_.missions.values():
            mission.keyframes = mission.keyframes[:limit]
    model = make_model(nordland, (256, 128), 200)
    describer = NetworkDescriber(model, Preprocessing(resize=(256, 128)), device="cpu")
    index, _ = build_index(map_, describer, batch_size=batch_size)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cached, descriptors=index.descriptors, names=np.array(index.names), missions=np.array(index.missions))
    return index.descriptors, index.names, index.missions


def make_dataset(generator: DescriptorGenerator, n: int, n_queries: int, dims: list[int], seed: int,
                 max_bytes: float) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[int, str], float]:
    """Database and query vectors for each requested size (PCA fitted on the database), chunk by chunk.

    Returns ({dim: database}, {dim: queries}, {dim: skip reason}, seconds spent).
    """
    start = time.perf_counter()
    n_places = max(1, n // generator.keyframes_per_place)
    places = generator.places(n_places, seed)
    rng = np.random.default_rng(seed + 1)
    place_of_keyframe = rng.integers(0, n_places, n)
    place_of_query = rng.integers(0, n_places, n_queries)
    skipped = {d: f"{n:,} x {d} float32 = {n * d * 4 / 2**30:.1f} GiB exceeds --max-memory-gb"
               for d in dims if n * d * 4 > max_bytes}
    kept = [d for d in dims if d not in skipped]
    reduced = [d for d in kept if d != RAW_DIM]
    # PCA on a sample of the map, as hierloc fits it on the map's descriptors.
    sample_ids = place_of_keyframe[: min(n, 50_000)]
    pcas = {}
    if reduced:
        sample = generator.keyframes(places, sample_ids, seed + 2)
        # One fit: the components come sorted, so smaller PCAs are truncations of the largest.
        largest = PCA.fit(sample, max(reduced))
        pcas = {d: PCA(mean=largest.mean, components=largest.components[:d],
                       explained_variance=largest.explained_variance[:d], num_fit_samples=largest.num_fit_samples)
                for d in reduced}
        del sample
    database = {d: np.empty((n, d), np.float32) for d in kept}
    chunk = 50_000
    for first in range(0, n, chunk):
        raw = generator.keyframes(places, place_of_keyframe[first:first + chunk], seed + 3 + first)
        for d in kept:
            database[d][first:first + len(raw)] = raw if d == RAW_DIM else pcas[d].transform(raw)
    raw_queries = generator.keyframes(places, place_of_query, seed + 10**9)
    queries = {d: (raw_queries if d == RAW_DIM else pcas[d].transform(raw_queries)).astype(np.float32) for d in kept}
    return database, queries, skipped, time.perf_counter() - start


# --- methods -----------------------------------------------------------------------------------


@dataclass
class Method:
    """A search method of the table: how to build it, its speed knob, and when it is too slow to run."""

    name: str
    build: Callable[[np.ndarray], Any]
    search: Callable[[Any, np.ndarray, int], np.ndarray]  # -> (B, k) row indices
    memory: Callable[[Any, np.ndarray], int]
    knob: str | None = None
    knob_values: tuple[int, ...] = ()
    set_knob: Callable[[Any, int], None] | None = None
    skip: Callable[[int, int], str | None] = lambda n, d: None
    notes: list[str] = field(default_factory=list)
    # Written and read back memory-mapped before timing (a backend with a copy on disk).
    mapped: bool = False


def _backend(kind: str, **params: Any) -> Callable[[np.ndarray], SearchBackend]:
    return lambda vectors: build_backend(kind, vectors, params)


def _backend_search(backend: SearchBackend, queries: np.ndarray, k: int) -> np.ndarray:
    return backend.search(queries, k)[1]


def _backend_memory(backend: SearchBackend, _: np.ndarray) -> int:
    return backend.memory_bytes()


def _faiss_flat(database: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    return index


class TorchMatmul:
    """hloc's retrieval: a similarity matrix by matrix product, then top-k (here in blocks of queries)."""

    def __init__(self, database: np.ndarray) -> None:
        self.database = torch.from_numpy(database)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        with torch.inference_mode():
            rows = []
            for start in range(0, len(queries), 256):  # hloc builds the whole matrix; blocks bound memory here
                similarity = torch.from_numpy(queries[start:start + 256]) @ self.database.T
                rows.append(torch.topk(similarity, k, dim=1).indices.numpy())
            return np.concatenate(rows)


class _CountingFile(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        self.size += size
        return size


def _pickled_size(obj: Any) -> int:
    counter = _CountingFile()
    pickle.dump(obj, counter, protocol=pickle.HIGHEST_PROTOCOL)
    return counter.size


def _kdtree_skip(n: int, d: int) -> str | None:
    # In high dimensions a kd-tree visits almost every leaf: each query costs a scalar linear scan.
    if n * d > 128 * 1_000_000:
        return f"kd-tree at {d}-D degenerates to a linear scan: hours for {n:,} keyframes and the queries"
    return None


def _hnsw_build_skip(n: int, d: int) -> str | None:
    if d >= RAW_DIM and n > 100_000:
        return "HNSW build at 4096-D and this size takes hours on 2 cores"
    return None


def _opq_skip(n: int, d: int) -> str | None:
    if d > 512:
        return "OPQ training on 4096-D input takes tens of minutes here; hierloc reduces with PCA first"
    return None


def methods(args: argparse.Namespace) -> list[Method]:
    """Every method of the table."""
    def set_attr(attr: str) -> Callable[[Any, int], None]:
        def setter(backend: Any, value: int) -> None:
            setattr(backend, attr, value)
        return setter

    return [
        Method("hierloc flat, exact (torch over faiss storage)", _backend("flat"), _backend_search, _backend_memory),
        Method("faiss IndexFlatIP, exact", _faiss_flat, lambda index, q, k: index.search(q, k)[1],
               lambda index, db: db.nbytes),
        Method("torch matmul, exact (hloc)", TorchMatmul, lambda m, q, k: m.search(q, k),
               lambda m, db: db.nbytes),
        Method("scipy cKDTree eps=0.1 (libnabo stand-in)", lambda db: cKDTree(db, leafsize=16, balanced_tree=False),
               lambda t, q, k: t.query(q, k=k, eps=0.1)[1], lambda t, _: _pickled_size(t), skip=_kdtree_skip),
        Method("hnsw M=32, flat storage", _backend("hnsw", m=32, ef_construction=args.hnsw_ef_construction),
               _backend_search, _backend_memory, "efSearch", (16, 32, 64, 128, 256, 512), set_attr("ef_search"),
               skip=_hnsw_build_skip),
        Method("hnsw M=32, SQ8 storage", _backend("hnsw", m=32, ef_construction=args.hnsw_ef_construction,
                                                   storage="sq8"),
               _backend_search, _backend_memory, "efSearch", (16, 32, 64, 128, 256, 512), set_attr("ef_search"),
               skip=_hnsw_build_skip),
        Method("ivfpq PQ64", _backend("ivfpq", m=64), _backend_search, _backend_memory,
               "nprobe", (4, 8, 16, 32, 64, 128, 256), set_attr("nprobe")),
        Method("ivfpq PQ64, OPQ", _backend("ivfpq", m=64, opq=True), _backend_search, _backend_memory,
               "nprobe", (4, 8, 16, 32, 64, 128, 256), set_attr("nprobe"), skip=_opq_skip),
        Method("ivfpq PQ64, OPQ, re-rank fp16", _backend("ivfpq", m=64, opq=True, refine="fp16", k_factor=8),
               _backend_search, _backend_memory, "nprobe", (4, 8, 16, 32, 64, 128, 256), set_attr("nprobe"),
               skip=_opq_skip),
        Method("ivfpq-mmap PQ128x4fs, OPQ, fp16 on disk", _backend("ivfpq-mmap", m=128, nbits=4, opq=True,
                                                                   k_factor=MAPPED_K_FACTOR),
               _backend_search, _backend_memory, "nprobe", (4, 8, 16, 32, 64, 128), set_attr("nprobe"),
               skip=_opq_skip, mapped=True),
        Method("ivfpq-mmap PQ64x8, OPQ, fp16 on disk", _backend("ivfpq-mmap", m=64, nbits=8, opq=True,
                                                                k_factor=MAPPED_K_FACTOR),
               _backend_search, _backend_memory, "nprobe", (4, 8, 16, 32, 64, 128), set_attr("nprobe"),
               skip=_opq_skip, mapped=True),
    ]


# --- measurement -------------------------------------------------------------------------------


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean |found & exact| / k over queries."""
    k = exact.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found[:, :k], exact)]))


def single_query_latency(structure: Any, search: Callable, queries: np.ndarray, warm_up: bool = True
                         ) -> tuple[float, float]:
    """p50 and p95 in milliseconds of one-query calls (after 5 untimed ones if `warm_up`)."""
    for q in queries[:5] if warm_up else ():
        search(structure, q[None], K)
    times = []
    for q in queries:
        start = time.perf_counter()
        search(structure, q[None], K)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3)


def rss_anon_bytes() -> int:
    """Anonymous resident memory of this process (Linux; -1 elsewhere): RAM not backed by a file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (clean and unmapped ones go; no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def reload_mapped(structure: SearchBackend, method: Method, queries: np.ndarray, latency_queries: int,
                  folder: Path) -> tuple[SearchBackend, dict[str, Any]]:
    """Write the structure, read it back memory-mapped, and time first-touch and cold single queries.

    Code paths are warmed up with the last 5 queries (their rows are few) so that the timed ones,
    the first `latency_queries`, meet untouched rows.
    """
    path = folder / "structure.faiss"
    start = time.perf_counter()
    structure.write(path)
    info: dict[str, Any] = {"write_s": time.perf_counter() - start}
    params, kind = structure.params(), type(structure)
    timed, warm_up = queries[:latency_queries], queries[-5:]
    for label in ("first_touch", "cold"):
        if label == "cold":
            for companion in kind.companion_paths(path):
                drop_from_page_cache(companion)
        gc.collect()
        anon_before = rss_anon_bytes()
        mapped = kind.read(path, params, mmap=True)
        info["rss_anon_bytes_added"] = rss_anon_bytes() - anon_before
        single_query_latency(mapped, method.search, warm_up)
        info[f"{label}_p50_ms"], info[f"{label}_p95_ms"] = single_query_latency(mapped, method.search, timed,
                                                                                warm_up=False)
        if label == "first_touch":
            del mapped
    info["disk_bytes"] = sum(p.stat().st_size for p in kind.companion_paths(path))
    return mapped, info


def measure(method: Method, database: np.ndarray, queries: np.ndarray, exact: np.ndarray,
            latency_queries: int, target: float, tmp_dir: Path | None = None) -> dict[str, Any]:
    """Build, sweep the knob, time single queries and batches, size the structure."""
    start = time.perf_counter()
    structure = method.build(database)
    build_s = time.perf_counter() - start
    row: dict[str, Any] = {"method": method.name, "build_s": build_s,
                           "bytes_per_keyframe": method.memory(structure, database) / len(database)}
    sweep = []
    if method.knob:
        for value in method.knob_values:
            method.set_knob(structure, value)
            found = method.search(structure, queries, K)
            sweep.append({method.knob: value, "recall_at_10": recall_at_k(found, exact)})
            if sweep[-1]["recall_at_10"] >= target:
                break
        row["sweep"] = sweep
        row[method.knob] = sweep[-1][method.knob]
    folder = None
    if method.mapped:
        # The sweep ran on the structure as built (its copy in RAM; same results); time the mapped one.
        folder = Path(tempfile.mkdtemp(prefix="hierloc-bench-search-", dir=tmp_dir))
        structure, mapped_info = reload_mapped(structure, method, queries, latency_queries, folder)
        row.update(mapped_info)
        row["disk_bytes_per_keyframe"] = row.pop("disk_bytes") / len(database)
        row["rss_anon_bytes_per_keyframe"] = row.pop("rss_anon_bytes_added") / len(database)
    start = time.perf_counter()
    found = method.search(structure, queries, K)
    batch_s = time.perf_counter() - start
    row["recall_at_10"] = recall_at_k(found, exact)
    row["batch_queries_per_s"] = len(queries) / batch_s
    row["p50_ms"], row["p95_ms"] = single_query_latency(structure, method.search, queries[:latency_queries])
    del structure
    gc.collect()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    return row


def run_cell(n: int, dim: int, database: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Every method at one (N, D)."""
    exact_index = faiss.IndexFlatIP(dim)
    exact_index.add(database)
    exact = exact_index.search(queries, K)[1]
    del exact_index
    rows = []
    for method in methods(args):
        if args.methods and not any(m in method.name for m in args.methods.split(",")):
            continue
        reason = method.skip(n, dim)
        if reason:
            rows.append({"method": method.name, "skipped": reason})
            print(f"  {method.name}: skipped ({reason})", flush=True)
            continue
        row = measure(method, database, queries, exact, args.latency_queries, args.target_recall, args.tmp_dir)
        rows.append(row)
        knob = f" {method.knob}={row[method.knob]}" if method.knob else ""
        mapped = (f" (first touch p50 {row['first_touch_p50_ms']:.2f} ms, cold p50 {row['cold_p50_ms']:.2f} ms, "
                  f"{row['disk_bytes_per_keyframe']:.0f} B/kf on disk)" if method.mapped else "")
        print(f"  {method.name}{knob}: p50 {row['p50_ms']:.3f} ms, recall@10 {row['recall_at_10']:.3f}, "
              f"{row['bytes_per_keyframe']:.0f} B/kf, build {row['build_s']:.1f} s{mapped}", flush=True)
    return rows


def print_table(cells: list[dict], target: float) -> None:
    """The results as one table."""
    header = (f"{'N':>9s} {'D':>5s} {'method':42s} {'knob':>12s} {'p50 ms':>8s} {'p95 ms':>8s} {'batch q/s':>10s} "
              f"{'build s':>8s} {'B/kf':>7s} {'R@10':>6s} {'disk B/kf':>9s} {'1st-touch p50/p95':>17s} "
              f"{'cold p50/p95':>13s}")
    print("\n" + header + "\n" + "-" * len(header))
    for cell in cells:
        if "skipped" in cell:
            print(f"{cell['n']:>9,d} {cell['dim']:>5d} (all methods skipped: {cell['skipped']})")
            continue
        for row in cell["rows"]:
            if "skipped" in row:
                print(f"{cell['n']:>9,d} {cell['dim']:>5d} {row['method']:42s} skipped: {row['skipped']}")
                continue
            knob = next((f"{k}={row[k]}" for k in ("efSearch", "nprobe") if k in row), "")
            mark = " " if row["recall_at_10"] >= target else "<"
            mapped = (f" {row['disk_bytes_per_keyframe']:9.0f} {row['first_touch_p50_ms']:8.2f}/"
                      f"{row['first_touch_p95_ms']:<8.2f} {row['cold_p50_ms']:6.2f}/{row['cold_p95_ms']:<6.2f}"
                      if "cold_p50_ms" in row else "")
            print(f"{cell['n']:>9,d} {cell['dim']:>5d} {row['method']:42s} {knob:>12s} {row['p50_ms']:8.3f} "
                  f"{row['p95_ms']:8.3f} {row['batch_queries_per_s']:10.0f} {row['build_s']:8.1f} "
                  f"{row['bytes_per_keyframe']:7.0f} {row['recall_at_10']:6.3f}{mark}{mapped}")


# The compressed-index target: at most this much RAM per keyframe, p50 within this many ms, recall >= --target-recall.
TARGET_BYTES_PER_KEYFRAME = 128
TARGET_P50_MS = 2.0


def rows_within_budget(cell: dict, target: float) -> list[dict[str, Any]]:
    """The cell's rows with at most 128 B of RAM per keyframe, p50 <= 2 ms and recall@10 >= target."""
    return [{"method": r["method"], "bytes_per_keyframe": r["bytes_per_keyframe"], "recall_at_10": r["recall_at_10"],
             "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"], "build_s": r["build_s"],
             **{k: r[k] for k in ("nprobe", "disk_bytes_per_keyframe", "cold_p50_ms", "first_touch_p50_ms") if k in r}}
            for r in cell.get("rows", []) if "skipped" not in r and r["bytes_per_keyframe"] <= TARGET_BYTES_PER_KEYFRAME
            and r["p50_ms"] <= TARGET_P50_MS and r["recall_at_10"] >= target]


def check_targets(cells: list[dict], target: float) -> dict[str, Any]:
    """The compressed-index target at 1M x 512 (if that cell ran), and the rows within it at every size."""
    within = {f"{c['n']}x{c['dim']}": rows_within_budget(c, target) for c in cells if "rows" in c}
    cell = next((c for c in cells if c["n"] == 1_000_000 and c["dim"] == 512 and "rows" in c), None)
    if cell is None:
        return {"evaluated": False, "why": "the 1M x 512 cell did not run (use the full run, not --quick)",
                "within_budget": within}
    return {"evaluated": True, "within_budget": within, "met": bool(within["1000000x512"])}


def main() -> None:
    """Generate the data, run every cell, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only N=10k (minutes)")
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 10000,100000,1000000)")
    parser.add_argument("--dims", default="4096,512,128", help="comma-separated descriptor sizes")
    parser.add_argument("--data", choices=["real", "mixture"], default=None,
                        help="real-descriptor-seeded mixture (default when ../shared/data exists) or a synthetic one")
    parser.add_argument("--nordland", type=Path, default=SHARED / "nordland")
    parser.add_argument("--keyframes-per-place", type=int, default=8)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall and batch throughput")
    parser.add_argument("--latency-queries", type=int, default=300, help="queries timed one by one")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--hnsw-ef-construction", type=int, default=80)
    parser.add_argument("--methods", default=None,
                        help="only methods whose name contains one of these (comma-separated)")
    parser.add_argument("--max-memory-gb", type=float, default=6.0, help="largest database matrix to generate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tmp-dir", type=Path, default=None,
                        help="folder for the files of memory-mapped structures (default: the system's temporary "
                             "folder; use a disk, not a tmpfs, for meaningful cold timings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    threads = configure_threads(args.threads)
    sizes = [int(s) for s in (args.sizes or ("10000" if args.quick else "10000,100000,1000000")).split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    data = args.data or ("real" if args.nordland.is_dir() else "mixture")
    if data == "real":
        descriptors, names, missions = nordland_descriptors(args.nordland, batch_size=32, limit=None)
        generator = real_generator(descriptors, names, missions, args.keyframes_per_place, args.seed)
    else:
        generator = mixture_generator(args.keyframes_per_place, args.seed)
    print(f"data: {generator.description}; {args.keyframes_per_place} keyframes per place on average; "
          f"{threads} threads; faiss {faiss.__version__} (SIMD {faiss.SIMDConfig.get_level_name()})")

    cells = []
    for n in sizes:
        database, queries, skipped, gen_s = make_dataset(generator, n, args.queries, dims, args.seed,
                                                         args.max_memory_gb * 2**30)
        print(f"N={n:,}: generated in {gen_s:.0f} s", flush=True)
        for dim in dims:
            if dim in skipped:
                cells.append({"n": n, "dim": dim, "skipped": skipped[dim]})
                continue
            print(f"N={n:,} D={dim}", flush=True)
            cells.append({"n": n, "dim": dim, "rows": run_cell(n, dim, database[dim], queries[dim], args)})
            del database[dim]
            gc.collect()
    print_table(cells, args.target_recall)
    targets = check_targets(cells, args.target_recall)
    print(f"\nwithin the budget (<= {TARGET_BYTES_PER_KEYFRAME} B of RAM per keyframe, p50 <= {TARGET_P50_MS} ms, "
          f"recall@10 >= {args.target_recall}); the target is evaluated at 1M x 512:")
    for cell_name, rows in targets["within_budget"].items():
        listed = "; ".join(f"{r['method']} nprobe={r.get('nprobe')}: {r['bytes_per_keyframe']:.0f} B, "
                           f"recall {r['recall_at_10']:.3f}, p50 {r['p50_ms']:.3f} ms" for r in rows)
        print(f"  {cell_name}: {listed or 'none'}")
    print("target met at 1M x 512: " + (str(targets["met"]) if targets["evaluated"] else targets["why"]))
    if args.json:
        results = {"data": generator.description, "keyframes_per_place": args.keyframes_per_place, "k": K,
                   "queries": args.queries, "latency_queries": args.latency_queries, "threads": threads,
                   "target_recall": args.target_recall, "faiss": faiss.__version__,
                   "faiss_simd": faiss.SIMDConfig.get_level_name(), "torch": torch.__version__,
                   "machine": platform.machine(), "processor": platform.processor(),
                   "command": " ".join(sys.argv), "cells": cells, "targets": targets}
        atomic_write_text(args.json, to_json_text(results, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
