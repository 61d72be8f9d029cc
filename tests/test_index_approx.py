"""Approximate search (HNSW, IVF-PQ, IVF-PQ re-ranked from a memory-mapped copy): recall, removal, files
and memory-mapping, storage next to an index, in-place updates, and the `hierloc index` commands."""

from __future__ import annotations

import json
import logging
import mmap as memory_map

import faiss
import numpy as np
import pytest

from hierloc.cli.main import main
from hierloc.index import DescriptorIndex, Retriever, make_backend, native_format, stable_id
from hierloc.index.approximate import (
    AUTO_HNSW_FROM,
    AUTO_IVFPQ_FROM,
    HNSWSearch,
    IVFPQMappedSearch,
    IVFPQSearch,
    auto_nlist,
    build_backend,
    choose_backend,
    rerank_copy_path,
    resolve_backend,
)
from hierloc.index.io import load_index, save_index
from hierloc.index.search import backend_class
from hierloc.index.stored_search import (
    SEARCH_METADATA_KEY,
    build_search,
    load_retriever,
    save_index_with_search,
)
from hierloc.index.update import add_keyframes, remove_mission
from hierloc.maps.synthetic import make_synthetic_map, write_synthetic_dataset

SMALL_IVF = {"nlist": 16, "nbits": 6, "m": 16, "nprobe": 16}
SMALL_MAPPED = {"nlist": 16, "m": 16, "nprobe": 16, "k_factor": 16}  # 4-bit fast-scan codes with OPQ (defaults)


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """k-means runs thousands of tiny parallel regions; on a 2-core machine shared with other jobs,
    two spinning OpenMP threads make it many times slower than one (results do not depend on it)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int, d: int, seed: int = 0, clusters: int = 60) -> np.ndarray:
    """Unit vectors around random centres: a few dozen places seen many times, like a map."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_rows(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    distances = np.linalg.norm(queries[:, None, :] - database[None], axis=2)
    return np.argsort(distances, axis=1)[:, :k]


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found.tolist(), exact.tolist())]))


@pytest.fixture(scope="module")
def data():
    database = clustered(3000, 32)
    queries = clustered(40, 32, seed=1)
    return database, queries, exact_rows(database, queries, 10)


@pytest.mark.parametrize("kind, params, min_recall, distance_error", [
    ("hnsw", {}, 0.97, 2e-3),
    ("hnsw", {"storage": "sq8"}, 0.9, 1e-2),
    ("hnsw", {"storage": "fp16"}, 0.97, 3e-3),
    ("ivfpq", SMALL_IVF, 0.6, 0.1),  # distances estimated from the codes
    ("ivfpq", {**SMALL_IVF, "opq": True, "refine": "flat"}, 0.97, 2e-3),
    ("ivfpq-mmap", SMALL_MAPPED, 0.97, 2e-3),  # exact distances from the float16 copy
    ("ivfpq-mmap", {**SMALL_MAPPED, "nbits": 8, "opq": False, "rerank_dtype": "float32"}, 0.97, 1e-5),
])
def test_approximate_search_finds_the_exact_neighbours(data, kind, params, min_recall, distance_error):
    database, queries, exact = data
    backend = build_backend(kind, database, params)
    assert len(backend) == len(database) and backend.name == kind
    distances, rows = backend.search(queries, 10)
    assert rows.dtype == np.int64 and distances.dtype == np.float32
    assert recall(rows, exact) >= min_recall
    assert np.all(np.diff(distances, axis=1) >= -1e-5)  # nearest first
    true = np.linalg.norm(database[rows[:, 0]] - queries, axis=1)
    np.testing.assert_allclose(distances[:, 0], true, atol=distance_error)


def test_exhaustive_ivfpq_with_exact_refine_equals_brute_force(data):
    database, queries, exact = data
    backend = build_backend("ivfpq", database, {**SMALL_IVF, "refine": "flat", "k_factor": 30})
    assert recall(backend.search(queries, 10)[1], exact) >= 0.99


@pytest.mark.parametrize("kind, params", [("flat", {}), ("hnsw", {}), ("ivfpq", SMALL_IVF)])
def test_remove_renumbers_rows_like_a_fresh_structure(data, kind, params):
    database, queries, _ = data
    backend = build_backend(kind, database, params)
    removed = np.arange(0, len(database), 3)
    backend.remove(removed)
    kept = np.delete(database, removed, axis=0)
    assert len(backend) == len(kept)
    rows = backend.search(kept[:50], 1)[1][:, 0]
    assert np.mean(rows == np.arange(50)) >= 0.95  # each kept vector is found under its new row
    assert rows.max() < len(kept)
    exact = exact_rows(kept, queries, 10)
    assert recall(backend.search(queries, 10)[1], exact) >= (0.95 if kind != "ivfpq" else 0.6)
    backend.add(database[removed[:5]])  # rows continue after the kept ones
    assert set(backend.search(database[removed[:5]], 1)[1][:, 0]) <= set(range(len(kept), len(kept) + 5))


def test_hnsw_tombstones_are_never_returned():
    database = clustered(600, 16)
    backend = build_backend("hnsw", database)
    backend.remove(np.arange(300))
    assert backend.removed == 300 and len(backend) == 300
    _, rows = backend.search(database[:300], 10)  # queries sitting on removed vectors
    assert rows.min() >= 0 and rows.max() < 300
    backend.remove(np.arange(300))
    distances, rows = backend.search(database[:2], 3)
    assert len(backend) == 0 and (rows == -1).all() and np.isinf(distances).all()


def test_refined_ivfpq_cannot_remove_in_place(data):
    backend = build_backend("ivfpq", data[0], {**SMALL_IVF, "refine": "sq8"})
    with pytest.raises(NotImplementedError, match="re-add"):
        backend.remove([0])
    backend.reset()
    assert len(backend) == 0 and backend.is_trained


@pytest.mark.parametrize("kind, params", [("flat", {}), ("hnsw", {"storage": "sq8"}), ("ivfpq", SMALL_IVF),
                                          ("ivfpq", {**SMALL_IVF, "refine": "fp16"}), ("ivfpq-mmap", SMALL_MAPPED)])
def test_files_round_trip_and_memory_map(tmp_path, data, kind, params):
    database, queries, _ = data
    backend = build_backend(kind, database, params)
    path = tmp_path / f"{kind}.faiss"
    backend.write(path)
    assert backend.memory_bytes() == path.stat().st_size
    expected = backend.search(queries, 10)
    for mmap in (False, True):
        loaded = backend_class(kind).read(path, backend.params(), mmap=mmap)
        assert loaded.read_only == mmap and loaded.params() == backend.params()
        for got, want in zip(loaded.search(queries, 10), expected):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(RuntimeError, match="memory-mapped read-only"):
        loaded.add(database[:1])


def test_mapped_ivfpq_keeps_codes_in_ram_and_maps_its_copy(tmp_path, data):
    database, queries, exact = data
    backend = build_backend("ivfpq-mmap", database, SMALL_MAPPED)
    with pytest.raises(NotImplementedError, match="re-add"):
        backend.remove([0])
    path = tmp_path / "structure.faiss"
    backend.write(path)
    copy_path = rerank_copy_path(path)
    assert copy_path.name == "structure.rerank.npy" and IVFPQMappedSearch.companion_paths(path) == [copy_path]
    assert backend.disk_bytes() == database.size * 2  # float16
    mapped = IVFPQMappedSearch.read(path, backend.params(), mmap=True)
    assert isinstance(mapped.rerank_copy.base, memory_map.mmap) and not mapped.rerank_copy.flags.writeable
    loaded = IVFPQMappedSearch.read(path, backend.params(), mmap=False)
    assert loaded.rerank_copy.flags.owndata and not loaded.read_only
    np.testing.assert_array_equal(mapped.rerank_copy, database.astype(np.float16))
    assert recall(mapped.search(queries, 10)[1], exact) >= 0.97
    loaded.reset()  # what remove_mission falls back to: keep the training, re-add the remaining rows
    loaded.add(database[:100])
    assert len(loaded) == 100 and loaded.disk_bytes() == 100 * database.shape[1] * 2
    assert set(loaded.search(database[:20], 1)[1][:, 0]) == set(range(20))


def test_mapped_ivfpq_refuses_a_missing_or_mismatched_copy(tmp_path, data):
    database = data[0]
    backend = build_backend("ivfpq-mmap", database, SMALL_MAPPED)
    path = tmp_path / "structure.faiss"
    backend.write(path)
    copy_path = rerank_copy_path(path)
    good = copy_path.read_bytes()
    copy_path.write_bytes(good[:-2])  # truncated
    with pytest.raises(ValueError, match="header announces"):
        IVFPQMappedSearch.read(path, backend.params(), mmap=True)
    np.save(copy_path, database[:10].astype(np.float16))  # another size
    with pytest.raises(ValueError, match="holds a 10x32 float16 array, expected 3000x32 float16"):
        IVFPQMappedSearch.read(path, backend.params())
    np.save(copy_path, database)  # float32 where the parameters say float16
    with pytest.raises(ValueError, match="float32 array"):
        IVFPQMappedSearch.read(path, backend.params())
    copy_path.write_bytes(b"\x93NUMPY junk")
    with pytest.raises(ValueError, match="not a .npy array file"):
        IVFPQMappedSearch.read(path, backend.params())
    copy_path.unlink()
    with pytest.raises(ValueError, match="re-ranking copy structure.rerank.npy is missing"):
        IVFPQMappedSearch.read(path, backend.params())


def test_foreign_faiss_file_is_refused(tmp_path, data):
    path = tmp_path / "flat.faiss"
    build_backend("flat", data[0]).write(path)
    with pytest.raises(ValueError, match="IVF-PQ"):
        IVFPQSearch.read(path)
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="junk.faiss: not a readable faiss index"):
        HNSWSearch.read(tmp_path / "junk.faiss")


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="storage must be one of"):
        make_backend("hnsw", 8, storage="pq")
    with pytest.raises(ValueError, match="m=5 must divide the dimension 32"):
        make_backend("ivfpq", 32, m=5)
    with pytest.raises(ValueError, match="refine must be one of"):
        make_backend("ivfpq", 32, refine="exact")
    with pytest.raises(ValueError, match="nbits must be 4 .fast-scan. or 8"):
        make_backend("ivfpq-mmap", 32, nbits=6)
    with pytest.raises(ValueError, match="rerank_dtype must be one of"):
        make_backend("ivfpq-mmap", 32, rerank_dtype="int8")
    assert make_backend("ivfpq-mmap", 512).factory_string(1024) == "OPQ128_512,IVF1024,PQ128x4fs"
    backend = make_backend("ivfpq", 32, nbits=8)
    with pytest.raises(ValueError, match="needs at least 256 training vectors"):
        backend.train(clustered(100, 32))
    with pytest.raises(RuntimeError, match="must be trained"):
        backend.add(clustered(10, 32))


def test_automatic_choice_by_map_size():
    assert choose_backend(AUTO_HNSW_FROM - 1, 512) == ("flat", {})
    assert choose_backend(AUTO_HNSW_FROM, 512)[0] == "hnsw"
    assert choose_backend(AUTO_HNSW_FROM, 4096)[1]["storage"] == "sq8"
    assert choose_backend(AUTO_IVFPQ_FROM, 512)[0] == "ivfpq"
    kind, params = resolve_backend("auto", 10**6, 512, {"hnsw": {"ef_search": 128}, "ivfpq": {"nprobe": 8}})
    assert kind == "hnsw" and params["ef_search"] == 128 and "nprobe" not in params
    assert resolve_backend("ivfpq", 10, 8, {"ivfpq": {"nlist": 4}}) == ("ivfpq", {"nlist": 4})
    with pytest.raises(ValueError, match="unknown search backend 'kdtree'"):
        resolve_backend("kdtree", 10, 8)
    assert auto_nlist(1_000_000) == 4096 and auto_nlist(3000) == 64 and auto_nlist(10) == 1


# --- stored with an index ------------------------------------------------------------------------


def make_index(n: int, d: int = 32, missions=("a", "b"), seed: int = 0, start: int = 0) -> DescriptorIndex:
    descriptors = clustered(n, d, seed=seed)
    return DescriptorIndex(
        model_name="mobilenetvlad", data_name="map", descriptors=descriptors,
        keyframe_ids=[stable_id(f"kf{start + i}") for i in range(n)],
        missions=[missions[i * len(missions) // n] for i in range(n)],
        names=[f"{start + i:05d}.png" for i in range(n)],
    )


def test_stored_structure_is_memory_mapped_without_loading_descriptors(tmp_path, monkeypatch):
    index = make_index(2000)
    backend = build_search(index, "hnsw", pca_dims=16)
    path = tmp_path / "map.h5"
    side = save_index_with_search(index, backend, path, pca=index.pca)
    assert side.parent == tmp_path and side.name.startswith("map.h5.") and side.suffix == ".faiss"
    record = load_index(path).metadata[SEARCH_METADATA_KEY]
    assert record["kind"] == "hnsw" and record["file"] == side.name and record["pca"] and record["dim"] == 16
    fresh = Retriever(index, pca=index.pca, backend="hnsw")

    def no_descriptors(*_):
        raise AssertionError("the descriptors were loaded")

    monkeypatch.setattr("hierloc.index.stored_search.load_index", no_descriptors)
    retriever = load_retriever(path)
    assert retriever.backend.read_only and retriever.search_dim == 16 and len(retriever) == 2000
    queries = index.descriptors[:30]
    assert retriever.retrieve(queries, k=5) == fresh.retrieve(queries, k=5)


def test_unusable_side_files_fall_back_to_a_rebuild(tmp_path, caplog):
    index = make_index(1500)
    path = tmp_path / "map.h5"
    side = save_index_with_search(index, build_search(index, "ivfpq", {"ivfpq": SMALL_IVF}), path)
    queries = index.descriptors[:10]
    expected = [[h.index_position for h in hits] for hits in load_retriever(path).retrieve(queries, k=1)]
    side.unlink()
    with caplog.at_level(logging.WARNING):
        retriever = load_retriever(path)
    assert "is missing" in caplog.text and "rebuilding the ivfpq" in caplog.text
    assert isinstance(retriever.backend, IVFPQSearch) and not retriever.backend.read_only
    assert [[h.index_position for h in hits] for hits in retriever.retrieve(queries, k=1)] == expected
    # Rows changed behind the structure's back (a subset saved without it): never trusted.
    save_index_with_search(index, build_search(index, "hnsw"), path)
    save_index(load_index(path).subset(np.arange(1000)), path)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(load_retriever(path)) == 1000
    assert "built for other rows" in caplog.text


def test_flat_index_has_no_side_file_and_old_files_still_load(tmp_path):
    index = make_index(300)
    path = tmp_path / "map.h5"
    assert save_index_with_search(index, build_search(index, "auto", pca_dims=8), path, pca=index.pca) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.h5"]
    retriever = load_retriever(path)
    assert retriever.backend.name == "flat" and retriever.search_dim == 8
    plain = tmp_path / "plain.h5"
    save_index(make_index(50), plain)  # an index from before stored structures
    assert load_retriever(plain).backend.name == "flat"
    assert native_format.read_native_catalog(plain).metadata == {}


@pytest.mark.parametrize("kind, params", [("hnsw", {}), ("ivfpq", {"ivfpq": SMALL_IVF}),
                                          ("ivfpq", {"ivfpq": {**SMALL_IVF, "refine": "fp16"}}), ("flat", {}),
                                          ("ivfpq-mmap", {"ivfpq-mmap": SMALL_MAPPED})])
def test_add_keyframes_and_remove_a_mission_update_the_structure(tmp_path, kind, params):
    index = make_index(2000, missions=("a", "b"))
    path = tmp_path / "map.h5"
    first_side = save_index_with_search(index, build_search(index, kind, params, pca_dims=16), path, pca=index.pca)
    new = make_index(400, missions=("c",), seed=5, start=2000)
    report = add_keyframes(path, new)
    assert (report.rows_before, report.rows_after) == (2000, 2400)
    assert report.search == ("updated in place" if kind != "flat" else "rebuilt")
    retriever = load_retriever(path)
    assert len(retriever) == 2400
    hits = retriever.retrieve(new.descriptors[:20], k=1)
    assert np.mean([h[0].mission == "c" and h[0].name == f"{2000 + i:05d}.png" for i, h in enumerate(hits)]) >= 0.9
    with pytest.raises(ValueError, match="already indexed"):
        add_keyframes(path, new)

    report = remove_mission(path, "a")
    assert report.rows_after == 1400
    assert report.search == {"flat": "rebuilt", "hnsw": "updated in place", "ivfpq-mmap": "re-filled"}.get(
        kind, "re-filled" if "refine" in str(params) else "updated in place")
    retriever = load_retriever(path)
    saved = load_index(path)
    assert len(retriever) == 1400 and set(saved.missions) == {"b", "c"} and saved.pca is not None
    hits = retriever.retrieve(saved.descriptors[:50], k=1)
    assert np.mean([h[0].index_position == i for i, h in enumerate(hits)]) >= 0.9
    assert all(h[0].mission in ("b", "c") for h in retriever.retrieve(index.descriptors[:100], k=1))
    remaining = sorted(p.name for p in tmp_path.iterdir())
    # The old side files (and an ivfpq-mmap copy) were removed.
    assert len(remaining) == {"flat": 1, "ivfpq-mmap": 3}.get(kind, 2)
    if first_side is not None:
        assert first_side.name not in remaining
    with pytest.raises(ValueError, match=r"no mission 'a' in the index; it has \['b', 'c'\]"):
        remove_mission(path, "a")


# --- command line ------------------------------------------------------------------------------


def test_index_commands_build_extend_and_trim_a_stored_structure(tmp_path, capsys):
    world = make_synthetic_map(num_missions=3, frames_per_mission=6, image_size=(96, 72), seed=2)
    root = tmp_path / "world"
    write_synthetic_dataset(world, root)
    first, second, third = list(world.missions)
    out = tmp_path / "map.h5"
    assert main(["index", "build", str(root), "--out", str(out), "--weights", "none", "--mission", first,
                 "--mission", second, "--index", "hnsw", "--hnsw-m", "8", "--pca-dims", "6", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "hnsw search structure" in printed and str(out) in printed
    assert main(["index", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["search"]["kind"] == "hnsw" and info["search"]["params"]["m"] == 8 and info["pca_dims"] == 6
    assert info["keyframes"] == 12

    assert main(["index", "add", str(out), str(root), "--mission", third, "--weights", "none", "--workers", "0"]) == 0
    assert "12 -> 18 keyframes (search structure updated in place)" in capsys.readouterr().out
    assert main(["index", "remove-mission", str(out), first]) == 0
    assert "12 keyframes" in capsys.readouterr().out
    retriever = load_retriever(out)
    assert len(retriever) == 12 and retriever.backend.name == "hnsw"
    assert set(load_index(out).missions) == {second, third}

    query = next((root / third).glob("*.png"))
    assert main(["query", str(out), str(query), "-k", "2", "--json"]) == 0
    assert main(["index", "build", str(root), "--out", str(tmp_path / "map.pb"), "--weights", "none",
                 "--index", "hnsw"]) == 1
    assert "need the native .h5 format" in capsys.readouterr().err
    mapped = tmp_path / "mapped.h5"
    assert main(["index", "build", str(root), "--out", str(mapped), "--weights", "none", "--index", "ivfpq-mmap",
                 "--ivf-nlist", "1", "--pq-m", "2", "--pca-dims", "6", "--workers", "0"]) == 0
    assert "ivfpq-mmap search structure" in capsys.readouterr().out
    assert len(list(tmp_path.glob("mapped.h5.*.rerank.npy"))) == 1
    retriever = load_retriever(mapped)
    assert retriever.backend.params()["m"] == 2 and retriever.backend.read_only and len(retriever) == 18
    assert main(["index", "remove-mission", str(out), "nowhere"]) == 1
    assert "no mission 'nowhere'" in capsys.readouterr().err


def test_mapped_structure_is_stored_next_to_the_index_and_memory_mapped(tmp_path, caplog):
    index = make_index(3000)
    path = tmp_path / "map.h5"
    backend = build_search(index, "ivfpq-mmap", {"ivfpq-mmap": SMALL_MAPPED}, pca_dims=16)
    side = save_index_with_search(index, backend, path, pca=index.pca)
    copy = rerank_copy_path(side)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["map.h5", side.name, copy.name])
    assert load_index(path).metadata[SEARCH_METADATA_KEY]["bytes"] == side.stat().st_size == backend.memory_bytes()
    retriever = load_retriever(path)
    assert retriever.backend.name == "ivfpq-mmap" and retriever.backend.read_only
    assert isinstance(retriever.backend.rerank_copy.base, memory_map.mmap)
    queries = index.descriptors[:30]
    expected = Retriever(index, pca=index.pca, backend=backend).retrieve(queries, k=5)
    assert retriever.retrieve(queries, k=5) == expected
    assert np.mean([hits[0].index_position == i for i, hits in enumerate(expected)]) >= 0.95
    # Saving again replaces both files; a missing copy makes loading rebuild the structure.
    second = save_index_with_search(index, backend, path, pca=index.pca)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["map.h5", second.name, rerank_copy_path(second).name])
    rerank_copy_path(second).unlink()
    with caplog.at_level(logging.WARNING):
        rebuilt = load_retriever(path)
    assert rerank_copy_path(second).name in caplog.text and "not using the stored ivfpq-mmap" in caplog.text
    assert rebuilt.backend.name == "ivfpq-mmap" and not rebuilt.backend.read_only and len(rebuilt) == 3000


def test_memory_per_keyframe_of_mapped_ivfpq_counts_only_what_is_in_ram():
    n, d, m, nlist = 6000, 32, 16, 32
    backend = build_backend("ivfpq-mmap", clustered(n, d, clusters=200), {"m": m, "nlist": nlist})
    code_bytes = m * 4 // 8
    # Centroids, 4-bit codebooks and the OPQ rotation are shared by all keyframes.
    fixed = nlist * d * 4 + m * 16 * (d // m) * 4 + d * d * 4
    # Fast-scan lists hold codes in blocks of 32 vectors: at most 31 codes of padding per list.
    least = n * (code_bytes + 8) + fixed
    assert least <= backend.memory_bytes() <= least + nlist * 31 * code_bytes + 4096
    assert backend.disk_bytes() == n * d * 2  # the float16 copy is not counted in RAM


def test_memory_per_keyframe_of_ivfpq_is_its_code_size():
    n, d, m, nbits, nlist = 6000, 32, 16, 6, 32
    backend = build_backend("ivfpq", clustered(n, d, clusters=200), {"m": m, "nbits": nbits, "nlist": nlist})
    code_bytes = m * nbits // 8
    fixed = nlist * d * 4 + 2**nbits * d * 4  # coarse centroids and PQ codebooks, shared by all keyframes
    # A code and a row number (int64) per keyframe, plus the shared part and headers.
    assert n * (code_bytes + 8) + fixed <= backend.memory_bytes() <= n * (code_bytes + 8) + fixed + 4096
    assert isinstance(faiss.extract_index_ivf(backend.faiss_index), faiss.IndexIVF)
