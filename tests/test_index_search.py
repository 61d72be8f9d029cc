"""Tests of PCA, search backends and the Retriever against plain numpy references."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hierloc.index import (
    PCA,
    DescriptorIndex,
    FlatSearch,
    IndexCompatibilityError,
    Retriever,
    SearchBackend,
    available_backends,
    make_backend,
    register_backend,
    stable_id,
)
from hierloc.index import search as search_module


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_index(n: int = 300, d: int = 32, seed: int = 0, poses: bool = True) -> DescriptorIndex:
    rng = np.random.default_rng(seed)
    # A few dominant directions, like real descriptors, so that PCA has structure to find.
    basis = rng.normal(size=(8, d))
    descriptors = (rng.normal(size=(n, 8)) * np.linspace(3, 1, 8)) @ basis + 0.3 * rng.normal(size=(n, d))
    descriptors = (descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)).astype(np.float32)
    angles = rng.uniform(0, 2 * np.pi, n)
    rotations = np.zeros((n, 3, 3))
    rotations[:, 0, 0] = rotations[:, 1, 1] = np.cos(angles)
    rotations[:, 0, 1], rotations[:, 1, 0] = -np.sin(angles), np.sin(angles)
    rotations[:, 2, 2] = 1
    return DescriptorIndex(
        model_name="mobilenetvlad_depth-0.35",
        data_name="zurich",
        descriptors=descriptors,
        keyframe_ids=[stable_id(f"kf{i}") for i in range(n)],
        missions=[f"mission{i // 100}" for i in range(n)],
        names=[f"{i:05d}.jpg" for i in range(n)],
        positions=rng.normal(size=(n, 3)) if poses else None,
        rotations=rotations if poses else None,
    )


def brute_force(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    distances = np.linalg.norm(queries[:, None, :].astype(np.float64) - database[None], axis=2)
    order = np.argsort(distances, axis=1)[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def numpy_pca_projection(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: L2, centre, SVD; returns (components (k, D), projected + L2 data)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:k].T
    return vt[:k], projected / np.linalg.norm(projected, axis=1, keepdims=True)


# --- PCA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d, k", [(300, 32, 10), (20, 64, 12)])  # covariance path, SVD path
def test_pca_matches_numpy_svd_up_to_sign(n, d, k):
    x = make_index(n=n, d=d).descriptors
    pca = PCA.fit(x, k)
    components, projected = numpy_pca_projection(x, k)
    signs = np.sign(np.sum(pca.components * components, axis=1))
    np.testing.assert_allclose(pca.components, components * signs[:, None], atol=1e-4)
    np.testing.assert_allclose(pca.transform(x), projected * signs, atol=1e-4)
    # Same subspace, as a sign-free check.
    np.testing.assert_allclose(pca.components.T @ pca.components, components.T @ components, atol=1e-4)
    assert np.all(np.diff(pca.explained_variance) <= 1e-12)
    np.testing.assert_allclose(np.linalg.norm(pca.transform(x), axis=1), 1, atol=1e-5)


def test_pca_is_reproducible_and_round_trips_through_dict():
    x = make_index().descriptors
    a, b = PCA.fit(x, 6), PCA.fit(x.copy(), 6)
    np.testing.assert_array_equal(a.components, b.components)
    c = PCA.from_dict(a.to_dict())
    np.testing.assert_array_equal(c.transform(x[:5]), a.transform(x[:5]))
    with pytest.raises(ValueError, match="lack components"):
        PCA.from_dict({k: v for k, v in a.to_dict().items() if k != "components"})
    with pytest.raises(ValueError, match="not orthonormal"):
        PCA(mean=a.mean, components=a.components * 2, explained_variance=a.explained_variance)


def test_pca_whitening_scales_by_component_variance():
    x = make_index().descriptors
    plain, white = PCA.fit(x, 5), PCA.fit(x, 5, whiten=True)
    raw = (x / np.linalg.norm(x, axis=1, keepdims=True) - plain.mean) @ plain.components.T
    expected = raw / np.sqrt(plain.explained_variance)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(white.transform(x), expected, atol=1e-4)


def test_pca_refuses_too_many_dimensions():
    x = make_index(n=10, d=32).descriptors
    with pytest.raises(ValueError, match=r"pca_dims=11 is larger than .*min\(10, 32\) = 10"):
        PCA.fit(x, 11)
    with pytest.raises(ValueError, match="at least 1"):
        PCA.fit(x, 0)
    with pytest.raises(ValueError, match="size 32"):
        PCA.fit(x, 4).transform(np.ones(16))


# --- search backends ---------------------------------------------------------------------------


def test_flat_search_matches_brute_force():
    rng = np.random.default_rng(1)
    database, queries = unit_rows(rng, 500, 24), unit_rows(rng, 30, 24)
    backend = make_backend("flat", 24)
    backend.add(database[:200])
    backend.add(database[200:])
    assert len(backend) == 500 and backend.name == "flat" and "flat" in available_backends()
    distances, indices = backend.search(queries, 10)
    expected_distances, expected_indices = brute_force(database, queries, 10)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, atol=1e-3)
    assert distances.dtype == np.float32 and indices.dtype == np.int64


def test_flat_search_pads_missing_neighbours_and_validates():
    backend = FlatSearch(4)
    backend.add(np.eye(4, dtype=np.float32)[:2])
    distances, indices = backend.search(np.eye(4, dtype=np.float32)[:1], 4)
    np.testing.assert_array_equal(indices, [[0, 1, -1, -1]])
    np.testing.assert_allclose(distances[0, :2], [0, np.sqrt(2)], atol=1e-3)
    assert np.isinf(distances[0, 2:]).all()
    with pytest.raises(ValueError, match="norm 2"):
        backend.add(2 * np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        backend.search(np.ones((1, 5), np.float32), 1)
    with pytest.raises(ValueError, match="unknown search backend 'annoy'; available: .*flat"):
        make_backend("annoy", 4)


@pytest.fixture
def numpy_backend():
    """A second backend registered from outside the package, as approximate ones will be."""

    @register_backend("test-numpy")
    class NumpySearch(SearchBackend):
        def __init__(self, dim: int, scale: float = 1.0) -> None:
            super().__init__(dim)
            self.vectors = np.zeros((0, dim), np.float32)
            self.scale = scale

        def add(self, vectors):
            self.vectors = np.concatenate([self.vectors, self._checked(vectors, "vectors")])

        def search(self, queries, k):
            distances, indices = brute_force(self.vectors, self._checked(queries, "queries"), k)
            return distances.astype(np.float32) * self.scale, indices

        def __len__(self):
            return len(self.vectors)

    yield NumpySearch
    search_module._REGISTRY.pop("test-numpy")


def test_retriever_uses_registered_backend(numpy_backend):
    index = make_index()
    queries = index.descriptors[:5]
    custom = Retriever(index, backend="test-numpy", backend_params={"scale": 1.0})
    assert isinstance(custom.backend, numpy_backend)
    flat = Retriever(index)
    assert [[r.index_position for r in hits] for hits in custom.retrieve(queries, k=7)] == [
        [r.index_position for r in hits] for hits in flat.retrieve(queries, k=7)
    ]


# --- Retriever ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pca_dims", [None, 8])
def test_retrieve_matches_brute_force(pca_dims):
    index = make_index()
    rng = np.random.default_rng(5)
    queries = index.descriptors[:20] + 0.05 * rng.normal(size=(20, 32)).astype(np.float32)
    retriever = Retriever(index, pca_dims=pca_dims)
    if pca_dims is None:
        database, searched = index.descriptors, queries / np.linalg.norm(queries, axis=1, keepdims=True)
    else:
        components, database = numpy_pca_projection(index.descriptors, pca_dims)
        # Align the reference's arbitrary axis signs with the fitted PCA; distances do not care.
        database = database * np.sign(np.sum(retriever.pca.components * components, axis=1))
        searched = retriever.pca.transform(queries)
    expected_distances, expected_rows = brute_force(database, searched, 10)
    results = retriever.retrieve(queries, k=10)
    assert len(results) == 20
    for hits, rows, distances in zip(results, expected_rows, expected_distances):
        assert [hit.index_position for hit in hits] == rows.tolist()
        np.testing.assert_allclose([hit.distance for hit in hits], distances, atol=2e-3)
        assert [hit.rank for hit in hits] == list(range(10))
    hit = results[3][0]
    assert hit.keyframe_id == index.keyframe_ids[hit.index_position]
    assert hit.mission == index.missions[hit.index_position] and hit.name == index.names[hit.index_position]
    np.testing.assert_array_equal(hit.position, index.positions[hit.index_position])
    np.testing.assert_array_equal(hit.rotation, index.rotations[hit.index_position])
    assert not hit.position.flags.writeable


def test_single_query_and_max_distance_filter():
    index = make_index(poses=False)
    retriever = Retriever(index)
    query = index.descriptors[7]
    (hits,) = retriever.retrieve(query, k=50)
    assert hits[0].index_position == 7 and hits[0].distance < 1e-3 and hits[0].position is None
    max_distance = hits[10].distance + 1e-4
    (near,) = retriever.retrieve(query, k=50, max_distance=max_distance)
    assert [h.index_position for h in near] == [h.index_position for h in hits[:11]]
    assert all(h.distance <= max_distance for h in near)
    expected = np.sum(np.linalg.norm(index.descriptors - query, axis=1) <= 0.9)
    (within,) = retriever.retrieve(query, k=len(index), max_distance=0.9)
    assert abs(len(within) - expected) <= 1  # boundary cases may differ by float rounding
    assert retriever.retrieve(query, k=5, max_distance=0.0)[0][0].index_position == 7
    distances, rows = retriever.search(query, k=len(index) + 5)
    assert rows.shape == (1, len(index) + 5) and (rows[0, -5:] == -1).all()
    with pytest.raises(ValueError, match="max_distance"):
        retriever.retrieve(query, max_distance=-1)
    with pytest.raises(ValueError, match="k must be at least 1"):
        retriever.retrieve(query, k=0)


def test_concurrent_queries_equal_serial_ones():
    index = make_index(n=400, d=48)
    retriever = Retriever(index, pca_dims=16)
    rng = np.random.default_rng(3)
    batches = [unit_rows(rng, 5, 48) for _ in range(32)]
    serial = [retriever.retrieve(batch, k=15, max_distance=1.3) for batch in batches]
    start = threading.Barrier(8)

    def run(i: int):
        start.wait()
        return [retriever.retrieve(batches[j], k=15, max_distance=1.3) for j in range(i % 4, 32, 4)], i

    with ThreadPoolExecutor(max_workers=8) as pool:
        for results, i in pool.map(run, range(8)):
            assert results == [serial[j] for j in range(i % 4, 32, 4)]


def test_retriever_compatibility_errors_name_the_model():
    index = make_index(d=32)
    retriever = Retriever(index)
    with pytest.raises(IndexCompatibilityError, match="size 16.*expects size 32.*model 'mobilenetvlad_depth-0.35'"):
        retriever.retrieve(np.ones(16, np.float32))
    with pytest.raises(ValueError, match="all zeros"):
        retriever.retrieve(np.zeros(32, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        retriever.retrieve(np.full(32, np.nan, np.float32))
    with pytest.raises(IndexCompatibilityError, match="PCA takes 16-D"):
        Retriever(index, pca=PCA.fit(make_index(d=16).descriptors, 4))
    with pytest.raises(ValueError, match="pca_dims=400 is larger"):
        Retriever(index, pca_dims=400)


def test_retriever_reuses_a_stored_pca():
    index = make_index()
    index.pca = PCA.fit(index.descriptors, 8)
    assert Retriever(index, pca_dims=8).pca is index.pca
    assert Retriever(index, pca_dims=8, whiten=True).pca is not index.pca
    assert Retriever(index, pca_dims=6).pca.n_components == 6
    assert Retriever(index).pca is None and Retriever(index).search_dim == 32


def test_empty_index_retrieves_nothing():
    empty = make_index().subset([])
    retriever = Retriever(empty)
    assert len(retriever) == 0
    assert retriever.retrieve(np.ones((2, 32), np.float32), k=3) == [[], []]
    with pytest.raises(ValueError, match="empty descriptor matrix"):
        Retriever(empty, pca_dims=4)


def test_flat_search_matches_faiss_in_chunks_and_reads_memory_mapped_storage(tmp_path, monkeypatch):
    from hierloc.index import search as search_module
    from hierloc.index.search import make_backend

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    backend = make_backend("flat", 32)
    backend.add(vectors)
    queries = vectors[:12] + 0.05 * rng.standard_normal((12, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    faiss_similarities, faiss_rows = backend.faiss_index.search(queries, 5)
    monkeypatch.setattr(search_module, "SCORE_BLOCK_ELEMENTS", 500 * 5)  # chunks of 5 queries
    batch_distances, batch_rows = backend.search(queries, 5)
    np.testing.assert_array_equal(batch_rows, faiss_rows)
    np.testing.assert_allclose(batch_distances, np.sqrt(np.maximum(2 - 2 * faiss_similarities, 0)), atol=1e-3)
    exact_self, self_rows = backend.search(vectors[7:8], 1)
    assert self_rows[0, 0] == 7 and exact_self[0, 0] == 0.0
    backend.write(tmp_path / "flat.faiss")
    mapped = type(backend).read(tmp_path / "flat.faiss", mmap=True)
    mapped_distances, mapped_rows = mapped.search(queries[:2], 600)  # k beyond the stored count
    assert (mapped_rows[:, 500:] == -1).all() and np.isinf(mapped_distances[:, 500:]).all()
    np.testing.assert_array_equal(mapped_rows[:, :5], batch_rows[:2])
