"""Approximate search backends for large maps: faiss HNSW graphs and IVF-PQ, plus the automatic choice.

Both store unit vectors under the L2 metric (same ranking as the inner product) and label every
vector with its row number, so removing a mission keeps rows and labels in step:
- `hnsw`: a navigable small-world graph over flat, 8-bit (SQ8) or float16 vectors. Graph nodes cannot
  be deleted, so removed rows become tombstones: still used for routing, never returned.
- `ivfpq`: coarse k-means cells (IVF) holding product-quantized codes (PQ), optionally after an OPQ
  rotation and with re-ranking of the best candidates by a finer code (`refine`). Removing rows
  deletes their codes and renumbers the others in place.
- `ivfpq-mmap`: IVF-PQ codes in RAM (4-bit fast-scan codes by default), with every candidate re-ranked
  from an exact copy of the vectors in a second file that is memory-mapped, not loaded: RAM holds only
  the codes, row numbers, coarse centroids, codebooks and rotation (about 80 bytes per keyframe at 512-D)
  while recall is that of re-ranking with the full vectors. The copy is read only for the few
  candidates of each query, so the page cache keeps just the rows that queries touch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
from pathlib import Path
from typing import Any, ClassVar, Iterator

import faiss
import numpy as np

from hierloc.index.search import (
    SCORE_BLOCK_ELEMENTS,
    FaissSearch,
    SearchBackend,
    backend_class,
    make_backend,
    register_backend,
    squared_to_euclidean,
)
from hierloc.utils.io import atomic_path

logger = logging.getLogger(__name__)

HNSW_STORAGES = {"flat": None, "sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}
IVFPQ_REFINES = {None: None, "flat": "RFlat", "fp16": "Refine(SQfp16)", "sq8": "Refine(SQ8)"}
# OPQ rotation updates (faiss: 50); the rotation has mostly settled after 20 and each costs a PQ training.
OPQ_ITERATIONS = 20
PQ_POINTS_PER_CENTROID = 64
# Vectors OPQ learns its rotation from, whatever the code size: a 4-bit PQ's 64 points per centroid
# (1,024) are far too few to fit a D x D rotation.
OPQ_TRAIN_POINTS = PQ_POINTS_PER_CENTROID * 256
# faiss's k-means asks for this many training points per centroid before it warns.
MIN_POINTS_PER_CENTROID = 39

# Map sizes of the automatic choice (bench/search.py measures the trade-off behind them):
# exact search stays within a few milliseconds below AUTO_HNSW_FROM keyframes; HNSW answers in
# about a millisecond at high recall up to AUTO_IVFPQ_FROM; beyond, IVF-PQ keeps memory bounded.
AUTO_HNSW_FROM = 50_000
AUTO_IVFPQ_FROM = 2_000_000


@contextlib.contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _positive_int(value: Any, label: str, maximum: int = 2**31 - 1) -> int:
    # Parameters also come from index metadata (untrusted): integers only, capped so that no value can
    # make faiss allocate without bound (an HNSW beam, IVF cells, candidates per result).
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float)) or \
            not math.isfinite(value) or int(value) != value or not 1 <= int(value) <= maximum:
        raise ValueError(f"{label} must be an integer in [1, {maximum}], got {value!r}")
    return int(value)


@register_backend("hnsw")
class HNSWSearch(FaissSearch):
    """faiss HNSW graph (IndexHNSWFlat / IndexHNSWSQ) behind an id map; `ef_search` trades speed for recall."""

    def __init__(
        self, dim: int, m: int = 32, ef_construction: int = 80, ef_search: int = 64, storage: str = "flat"
    ) -> None:
        super().__init__(dim)
        if storage not in HNSW_STORAGES:
            raise ValueError(f"hnsw storage must be one of {sorted(HNSW_STORAGES)}, got {storage!r}")
        self.m = _positive_int(m, "hnsw m", 1024)
        self.ef_construction = _positive_int(ef_construction, "hnsw ef_construction", 2**16)
        self.ef_search = _positive_int(ef_search, "hnsw ef_search", 2**16)
        self.storage = storage
        quantizer = HNSW_STORAGES[storage]
        if quantizer is None:
            graph = faiss.IndexHNSWFlat(self.dim, self.m)
        else:
            graph = faiss.IndexHNSWSQ(self.dim, quantizer, self.m)
        graph.hnsw.efConstruction = self.ef_construction
        # The id map turns graph node numbers into rows and marks removed nodes with -1.
        self._attach(faiss.IndexIDMap(graph))

    def params(self) -> dict[str, Any]:
        """Constructor parameters."""
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "storage": self.storage}

    def _attach(self, index: faiss.Index) -> None:
        # No downcast_index here: it returns a non-owning proxy, and the owning one must be kept.
        if not isinstance(index, faiss.IndexIDMap):
            raise ValueError(f"expected a faiss IndexIDMap around an HNSW graph, got {type(index).__name__}")
        graph = faiss.downcast_index(index.index)
        if not isinstance(graph, faiss.IndexHNSW):
            raise ValueError(f"expected an HNSW graph inside the id map, got {type(graph).__name__}")
        graph.hnsw.efConstruction = self.ef_construction
        self._index, self._graph = index, graph
        self._removed = int(np.count_nonzero(faiss.vector_to_array(index.id_map) < 0)) if index.ntotal else 0

    @property
    def removed(self) -> int:
        """Tombstones: removed rows still in the graph (rebuild the index to drop them)."""
        return self._removed

    def __len__(self) -> int:
        return int(self._index.ntotal) - self._removed

    def _train(self, vectors: np.ndarray) -> None:
        if not self._index.is_trained:  # only the SQ8 storage learns (its value ranges)
            self._index.train(vectors)

    def reset(self) -> None:
        """Drop all vectors (and tombstones) but keep the training."""
        super().reset()
        self._removed = 0

    def _add(self, vectors: np.ndarray) -> None:
        start = len(self)
        self._index.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))

    def remove(self, rows: np.ndarray) -> None:
        """Turn rows into tombstones and renumber the others; the graph keeps routing through them."""
        self._check_writable("remove vectors")
        with self._lock:
            n = len(self)
            keep = np.ones(n, dtype=bool)
            keep[np.asarray(rows, dtype=np.int64)] = False
            renumbered = np.where(keep, np.cumsum(keep) - 1, -1)
            labels = faiss.vector_to_array(self._index.id_map)
            alive = labels >= 0
            labels[alive] = renumbered[labels[alive]]
            faiss.copy_array_to_vector(labels.astype(np.int64), self._index.id_map)
            self._removed = int(np.count_nonzero(labels < 0))

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        if self._removed:
            # Tombstones carry label -1, outside the live range 0..len-1 that this selector keeps.
            selector = faiss.IDSelectorRange(0, len(self))
            params.sel = selector
        squared, labels = self._index.search(queries, k, params=params)
        return squared_to_euclidean(squared, labels)


def auto_nlist(n: int) -> int:
    """Number of IVF cells for n vectors: a power of two near 4 sqrt(n), with enough points to train each."""
    target = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** max(0, round(math.log2(target)))
    while nlist > 1 and nlist * MIN_POINTS_PER_CENTROID > n:
        nlist //= 2
    return nlist


def auto_pq_m(dim: int, max_m: int = 64) -> int:
    """PQ sub-quantizers: the largest divisor of dim up to max_m (64 one-byte codes = 64 bytes per vector)."""
    return max(m for m in range(1, min(dim, max_m) + 1) if dim % m == 0)


@register_backend("ivfpq")
class IVFPQSearch(FaissSearch):
    """faiss IVF-PQ (optionally OPQ-rotated and re-ranked), trained on the map's own descriptors.

    `nlist` cells (default: from the training set size), `m` codes of `nbits` bits per vector,
    `nprobe` cells visited per query; `refine` re-ranks `k_factor * k` candidates with a finer copy
    ("flat", "fp16" or "sq8"), at that copy's memory cost. Training uses a random sample of
    `train_points` vectors (default: 40 per cell or per code centroid, whichever is more, about
    faiss's minimum of 39), which keeps k-means on a million-keyframe map to minutes.
    """

    # Inverted lists are memory-mapped by IO_FLAG_MMAP (the flat-code flag does not apply to them).
    _mmap_flags: ClassVar[int] = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    # The IVF classes a file of this kind may hold.
    _ivf_types: ClassVar[tuple[type, ...]] = (faiss.IndexIVFPQ,)

    def __init__(
        self,
        dim: int,
        nlist: int | None = None,
        m: int | None = None,
        nbits: int = 8,
        opq: bool = False,
        nprobe: int = 32,
        refine: str | None = None,
        k_factor: int = 4,
        train_points: int | None = None,
    ) -> None:
        super().__init__(dim)
        self.train_points = None if train_points is None else _positive_int(train_points, "ivfpq train_points")
        self.nlist = None if nlist is None else _positive_int(nlist, "ivfpq nlist", 2**24)
        self.m = auto_pq_m(self.dim) if m is None else _positive_int(m, "ivfpq m", 2**16)
        if not opq and self.dim % self.m:
            raise ValueError(f"ivfpq m={self.m} must divide the dimension {self.dim} (or use opq)")
        self.nbits = _positive_int(nbits, "ivfpq nbits")
        if self.nbits > 16:
            raise ValueError(f"ivfpq nbits must be at most 16, got {nbits}")
        self.opq = bool(opq)
        self.nprobe = _positive_int(nprobe, "ivfpq nprobe", 2**24)
        if refine not in IVFPQ_REFINES:
            raise ValueError(f"ivfpq refine must be one of {[r for r in IVFPQ_REFINES if r]} or None, got {refine!r}")
        self.refine = refine
        self.k_factor = _positive_int(k_factor, "ivfpq k_factor", 2**12)
        self._ivf: faiss.IndexIVF | None = None

    def params(self) -> dict[str, Any]:
        """Constructor parameters (nlist as trained)."""
        return {"nlist": self.nlist, "m": self.m, "nbits": self.nbits, "opq": self.opq, "nprobe": self.nprobe,
                "refine": self.refine, "k_factor": self.k_factor, "train_points": self.train_points}

    def factory_string(self, nlist: int) -> str:
        """The faiss index_factory description of this structure."""
        # OPQ rotates into m subspaces of 4 dimensions at most the input size (faiss's usual recipe).
        opq = f"OPQ{self.m}_{min(self.dim, 4 * self.m)}," if self.opq else ""
        refine = IVFPQ_REFINES[self.refine]
        return f"{opq}IVF{nlist},{self._codes_string()}" + (f",{refine}" if refine else "")

    def _codes_string(self) -> str:
        return f"PQ{self.m}x{self.nbits}"

    def _attach(self, index: faiss.Index) -> None:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is None or not isinstance(faiss.downcast_index(ivf), self._ivf_types):
            raise ValueError(f"expected a faiss IVF-PQ index, got {type(index).__name__}")
        self._index, self._ivf = index, faiss.downcast_index(ivf)
        self.nlist = int(self._ivf.nlist)

    @property
    def is_trained(self) -> bool:
        """Whether the cells and codebooks have been learnt."""
        return self._index is not None and bool(self._index.is_trained)

    def _train(self, vectors: np.ndarray) -> None:
        n = len(vectors)
        nlist = self.nlist or auto_nlist(n)
        needed = max(nlist, 2**self.nbits)
        if n < needed:
            raise ValueError(
                f"ivfpq needs at least {needed} training vectors for nlist={nlist} and nbits={self.nbits}, got {n}; "
                "use flat or hnsw search for a map this small, or lower nlist / nbits"
            )
        if n < MIN_POINTS_PER_CENTROID * needed:
            logger.warning("ivfpq: %d training vectors for %d centroids; codes will be coarse (faiss advises %d)",
                           n, needed, MIN_POINTS_PER_CENTROID * needed)
        wanted = self.train_points or 40 * max(nlist, 2**self.nbits)
        if n > wanted:
            vectors = vectors[np.sort(np.random.default_rng(0).choice(n, wanted, replace=False))]
        index = faiss.index_factory(self.dim, self.factory_string(nlist), faiss.METRIC_L2)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        # Warned above once rather than by faiss for every k-means run.
        ivf.cp.min_points_per_centroid = 1
        ivf.pq.cp.min_points_per_centroid = 1
        # 64 points per code centroid are plenty for 4-8-D sub-vectors, and PQ training time (slow
        # in faiss 1.15 at any thread count) falls with them: 16k points instead of 65k per codebook.
        ivf.pq.cp.max_points_per_centroid = PQ_POINTS_PER_CENTROID
        # The factory turns on polysemous training (a code permutation for Hamming pre-filtering,
        # unused here), which costs more than the rest of training together.
        if hasattr(ivf, "do_polysemous_training"):  # fast-scan indexes have no such training
            ivf.do_polysemous_training = False
        if self.opq:
            # OPQ otherwise trains a private 8-bit PQ; the IVF's own one has the right size and settings.
            rotated = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index
            opq = faiss.downcast_VectorTransform(rotated.chain.at(0))
            opq.pq = ivf.pq
            opq.niter = OPQ_ITERATIONS
            opq.max_train_points = max(OPQ_TRAIN_POINTS, PQ_POINTS_PER_CENTROID * 2**self.nbits)
            # OPQ alternates thousands of k-means runs on 4-D sub-vectors: far too small to share
            # between threads, whose start-up and barriers would dominate. The IVF k-means that
            # follows (index.train skips the trained rotation) is large and uses every thread.
            with _faiss_threads(1):
                opq.train(vectors)
        index.train(vectors)
        self._attach(index)

    @property
    def _has_refine(self) -> bool:
        return self.refine is not None

    def _add(self, vectors: np.ndarray) -> None:
        if self._has_refine:
            # The re-ranking copy is addressed by insertion order, so it takes no explicit ids.
            self._index.add(vectors)
        else:
            start = len(self)
            self._index.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))

    def remove(self, rows: np.ndarray) -> None:
        """Delete the rows' codes and renumber the remaining labels in place (no retraining)."""
        self._check_writable("remove vectors")
        if self._has_refine:
            raise NotImplementedError("ivfpq with refine cannot remove vectors in place; re-add the remaining ones")
        with self._lock:
            n = len(self)
            keep = np.ones(n, dtype=bool)
            keep[np.asarray(rows, dtype=np.int64)] = False
            renumbered = np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)
            self._index.remove_ids(faiss.IDSelectorBatch(np.flatnonzero(~keep).astype(np.int64)))
            lists = self._ivf.invlists
            for list_no in range(self._ivf.nlist):
                size = lists.list_size(list_no)
                if not size:
                    continue
                labels = faiss.rev_swig_ptr(lists.get_ids(list_no), size).copy()
                codes = faiss.rev_swig_ptr(lists.get_codes(list_no), size * lists.code_size).copy()
                new_labels = renumbered[labels]
                lists.update_entries(list_no, 0, size, faiss.swig_ptr(new_labels), faiss.swig_ptr(codes))

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params: faiss.SearchParameters = faiss.SearchParametersIVF(nprobe=min(self.nprobe, self.nlist))
        if self._has_refine:
            params = faiss.IndexRefineSearchParameters(k_factor=self.k_factor, base_index_params=params)
        squared, labels = self._index.search(queries, k, params=params)
        return squared_to_euclidean(squared, labels)


RERANK_DTYPES = ("float16", "float32")
ADD_CHUNK_ROWS = 65536
# The re-ranking copy of side file X.faiss is X.rerank.npy: a plain name in the same folder, tied to X's token.
RERANK_SUFFIX = ".rerank.npy"


def rerank_copy_path(path: str | os.PathLike) -> Path:
    """Where the re-ranking copy of the `ivfpq-mmap` structure written to `path` lives."""
    path = Path(path)
    return path.with_name(path.stem + RERANK_SUFFIX)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def _map_npy(path: Path, dtype: np.dtype, shape: tuple[int, int]) -> np.ndarray:
    """A read-only view of the .npy file at `path`, memory-mapped, checked to hold `shape` of `dtype`.

    The header is parsed by numpy's own reader (a literal dict, never unpickled) and the sizes are
    checked against the file before anything is mapped. The mapping is advised as random access: a
    query reads a few scattered rows, and read-ahead would fetch many pages around each of them.
    """
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f"unsupported .npy version {version}")
            header = readers[version](f)
        except ValueError as exc:
            raise ValueError(f"{path}: not a .npy array file ({exc})") from None
        offset = f.tell()
        stored_shape, fortran, stored_dtype = header
        if stored_dtype != dtype or fortran or tuple(stored_shape) != tuple(shape):
            raise ValueError(f"{path}: holds a {'x'.join(map(str, stored_shape))} {stored_dtype} array, expected "
                             f"{'x'.join(map(str, shape))} {np.dtype(dtype)} (C order)")
        needed = offset + math.prod(shape) * dtype.itemsize
        size = os.fstat(f.fileno()).st_size
        if size != needed:
            raise ValueError(f"{path}: has {size} bytes, its header announces {needed}")
        if not math.prod(shape):
            return np.empty(shape, dtype)
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mapping, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)
    return np.ndarray(shape, dtype=dtype, buffer=mapping, offset=offset)


@register_backend("ivfpq-mmap")
class IVFPQMappedSearch(IVFPQSearch):
    """IVF-PQ codes in RAM; candidates re-ranked by exact distance to a memory-mapped copy of the vectors.

    The compressed index proposes `k_factor * k` candidates from `nprobe` cells and the copy (float16
    or float32, a second file next to the index's, see `rerank_copy_path`) decides among them, so
    recall is bounded by whether the true neighbours are among the candidates rather than by the
    code's precision. `nbits=4` (the default) uses faiss's fast-scan PQ (SIMD look-ups in registers),
    `m` defaults to 64 bytes of code per vector, and OPQ is on by default (it rotates the vectors so
    that the sub-quantizers share the variance). Only the codes, row numbers, centroids, codebooks
    and rotation count in `memory_bytes`; the copy is in `disk_bytes` and in the page cache only as
    far as queries touched it. Rows cannot be removed in place (re-add the remaining ones).
    """

    _ivf_types: ClassVar[tuple[type, ...]] = (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)

    def __init__(
        self,
        dim: int,
        nlist: int | None = None,
        m: int | None = None,
        nbits: int = 4,
        opq: bool = True,
        nprobe: int = 16,
        k_factor: int = 8,
        rerank_dtype: str = "float16",
        train_points: int | None = None,
    ) -> None:
        if nbits not in (4, 8):
            raise ValueError(f"ivfpq-mmap nbits must be 4 (fast-scan) or 8, got {nbits!r}")
        if rerank_dtype not in RERANK_DTYPES:
            raise ValueError(f"ivfpq-mmap rerank_dtype must be one of {list(RERANK_DTYPES)}, got {rerank_dtype!r}")
        m = auto_pq_m(int(dim), max_m=512 // nbits) if m is None else m
        super().__init__(dim, nlist=nlist, m=m, nbits=nbits, opq=opq, nprobe=nprobe, refine=None,
                         k_factor=k_factor, train_points=train_points)
        self.rerank_dtype = rerank_dtype
        self._copy = np.empty((0, self.dim), np.dtype(rerank_dtype))

    def params(self) -> dict[str, Any]:
        """Constructor parameters (nlist as trained)."""
        params = super().params()
        del params["refine"]
        return {**params, "rerank_dtype": self.rerank_dtype}

    def _codes_string(self) -> str:
        return f"PQ{self.m}x4fs" if self.nbits == 4 else f"PQ{self.m}x{self.nbits}"

    def _attach(self, index: faiss.Index) -> None:
        super()._attach(index)
        # A fresh or freshly read structure has no copy yet; `read` and `_add` provide it.
        if len(self._copy) != self._index.ntotal:
            self._copy = np.empty((0, self.dim), np.dtype(self.rerank_dtype))

    @property
    def rerank_copy(self) -> np.ndarray:
        """The (N, dim) copy candidates are re-ranked with: memory-mapped once read with mmap=True."""
        return self._copy

    def disk_bytes(self) -> int:
        """Bytes of the re-ranking copy (on disk, memory-mapped once read back)."""
        return int(self._copy.nbytes)

    def _add(self, vectors: np.ndarray) -> None:
        start = len(self)
        extended = np.empty((start + len(vectors), self.dim), np.dtype(self.rerank_dtype))
        extended[:start] = self._copy
        extended[start:] = vectors
        # In chunks: the OPQ rotation and the residuals would otherwise hold a float32 copy of all vectors.
        for first in range(0, len(vectors), ADD_CHUNK_ROWS):
            chunk = vectors[first:first + ADD_CHUNK_ROWS]
            self._index.add_with_ids(chunk, np.arange(start + first, start + first + len(chunk), dtype=np.int64))
        self._copy = extended

    def reset(self) -> None:
        """Drop all vectors and their copy but keep the training."""
        super().reset()
        self._copy = np.empty((0, self.dim), np.dtype(self.rerank_dtype))

    def remove(self, rows: np.ndarray) -> None:
        """Not supported: fast-scan lists pack codes in blocks, and the copy would need rewriting anyway."""
        raise NotImplementedError("ivfpq-mmap cannot remove vectors in place; re-add the remaining ones")

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        candidates_per_query = min(len(self), k * self.k_factor)
        params = faiss.SearchParametersIVF(nprobe=min(self.nprobe, self.nlist))
        _, candidates = self._index.search(queries, candidates_per_query, params=params)
        return self._rerank(queries, candidates, k)

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact distances from the copy to each query's candidates (-1: none), nearest k first."""
        distances = np.full((len(queries), k), np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        kept = min(k, candidates.shape[1])
        # Bounds the gathered candidate vectors of one chunk of queries (float32) to about 256 MB.
        chunk = max(1, SCORE_BLOCK_ELEMENTS // max(1, candidates.shape[1] * self.dim))
        for start in range(0, len(queries), chunk):
            block = candidates[start:start + chunk]
            valid = block >= 0
            vectors = self._copy[np.where(valid, block, 0)].astype(np.float32)
            squared = np.square(vectors - queries[start:start + chunk, None, :]).sum(axis=2)
            squared[~valid] = np.inf
            order = np.argsort(squared, axis=1, kind="stable")[:, :kept]
            best = np.take_along_axis(squared, order, axis=1)
            distances[start:start + chunk, :kept] = np.sqrt(best)
            rows[start:start + chunk, :kept] = np.where(np.isfinite(best), np.take_along_axis(block, order, axis=1), -1)
        return distances, rows

    # --- files ---------------------------------------------------------------------------------

    @classmethod
    def companion_paths(cls, path: str | os.PathLike) -> list[Path]:
        """The re-ranking copy that `write(path)` puts next to `path`."""
        return [rerank_copy_path(path)]

    def write(self, path: str | os.PathLike) -> None:
        """Write the copy (`rerank_copy_path(path)`), then the compressed index, each atomically."""
        _write_npy(rerank_copy_path(path), np.ascontiguousarray(self._copy))
        super().write(path)

    @classmethod
    def read(cls, path: str | os.PathLike, params: dict[str, Any] | None = None,
             mmap: bool = False) -> IVFPQMappedSearch:
        """Read the compressed index into RAM and its copy memory-mapped (`mmap`, read-only) or loaded."""
        path = os.fspath(path)
        try:
            index = faiss.read_index(path, 0)
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a readable faiss index ({str(exc).splitlines()[0][:200]})") from None
        backend = cls(index.d, **(params or {}))
        backend._attach(index)
        copy_path = rerank_copy_path(path)
        try:
            copy = _map_npy(copy_path, np.dtype(backend.rerank_dtype), (len(backend), backend.dim))
        except FileNotFoundError:
            raise ValueError(f"{path}: its re-ranking copy {copy_path.name} is missing") from None
        except OSError as exc:
            raise ValueError(f"{copy_path}: unreadable ({exc})") from None
        backend._copy = copy if mmap else np.array(copy)
        backend._read_only = mmap
        return backend


def choose_backend(n: int, dim: int) -> tuple[str, dict[str, Any]]:
    """The automatic search structure for a map of n keyframes: exact, then HNSW, then IVF-PQ."""
    if n < AUTO_HNSW_FROM:
        return "flat", {}
    if n < AUTO_IVFPQ_FROM:
        return "hnsw", {"storage": "flat" if dim <= 512 else "sq8"}
    # OPQ pays off above 128-D; above 1024-D its training takes too long (reduce with --pca-dims).
    return "ivfpq", {"opq": 128 < dim <= 1024}


def resolve_backend(
    kind: str, n: int, dim: int, params_by_kind: dict[str, dict[str, Any]] | None = None
) -> tuple[str, dict[str, Any]]:
    """(kind, constructor parameters): "auto" chooses by map size; `params_by_kind` overrides per kind."""
    overrides = (params_by_kind or {})
    if kind == "auto":
        kind, params = choose_backend(n, dim)
    else:
        backend_class(kind)  # unknown names fail here, with the list of known ones
        params = {}
    return kind, {**params, **overrides.get(kind, {})}


def build_backend(kind: str, vectors: np.ndarray, params: dict[str, Any] | None = None) -> SearchBackend:
    """A backend of `kind` with `params`, trained on (if it learns) and filled with the (N, D) unit vectors."""
    backend = make_backend(kind, vectors.shape[1], **(params or {}))
    if not backend.is_trained:
        backend.train(vectors)
    if len(vectors):
        backend.add(vectors)
    return backend
