"""Sequence matching (`hierloc.sequences`, `hierloc evaluate --sequence-length`): recovery of a route that single
frames cannot find, the first frames, length 1, non-square matrices, repeated frames, determinism."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest

from hierloc.sequences import (
    consecutive_distances,
    descriptor_distances,
    enhance_contrast,
    hog_descriptors,
    moving_frames,
    patch_normalize,
    rank_scores,
    sad_distances,
    sequence_rank,
    sequence_scores,
)


def _noisy_route(n: int = 200, signal: float = 1.5, seed: int = 0) -> np.ndarray:
    """[n, n] Gaussian distances whose diagonal (the true place) is `signal` lower: one frame rarely finds it."""
    distances = np.random.default_rng(seed).normal(size=(n, n)).astype(np.float32)
    distances[np.arange(n), np.arange(n)] -= signal
    return distances


def _brute_force_scores(d: np.ndarray, length: int, velocities) -> np.ndarray:
    q_count, r_count = d.shape
    neutral = d.mean(axis=1)
    out = np.full(d.shape, np.inf)
    for q in range(q_count):
        for r in range(r_count):
            for v in velocities:
                terms = []
                for k in range(min(length, q + 1)):
                    ref = r - int(np.floor(v * k + 0.5))
                    terms.append(d[q - k, ref] if ref >= 0 else neutral[q - k])
                out[q, r] = min(out[q, r], float(np.mean(terms)))
    return out


def test_sequences_recover_a_route_that_single_frames_miss():
    distances = _noisy_route()
    truth = np.arange(len(distances))
    single = np.argmin(distances, axis=1)
    assert np.mean(single == truth) < 0.2
    ranking = sequence_rank(distances, 10, k=5)
    assert ranking.rows.shape == (200, 5) and ranking.scores.shape == (200, 5)
    assert np.mean(ranking.rows[9:, 0] == truth[9:]) > 0.8  # full sequences
    assert np.all(np.diff(ranking.scores, axis=1) >= 0)
    longer = sequence_rank(distances, 20, k=5)
    assert np.mean(longer.rows[19:, 0] == truth[19:]) > 0.98
    assert np.mean(longer.rows[:, 0] == truth) > np.mean(ranking.rows[:, 0] == truth)


def test_scores_match_a_brute_force_search_on_a_non_square_matrix():
    d = np.random.default_rng(1).random((7, 11)).astype(np.float32)
    velocities = (0.5, 1.0, 1.5)
    np.testing.assert_allclose(sequence_scores(d, 4, velocities), _brute_force_scores(d, 4, velocities), rtol=1e-5)
    ranking = sequence_rank(d, 4, k=6, window=3, query_window=2, velocities=velocities)
    assert ranking.rows.shape == (7, 6) and ranking.rows.max() < 11
    wide = sequence_rank(np.random.default_rng(2).random((30, 50)), 5, k=50)
    assert wide.rows.shape == (30, 50) and all(sorted(row) == list(range(50)) for row in wide.rows)


def test_length_one_is_the_single_frame_ranking_and_first_queries_use_shorter_sequences():
    distances = _noisy_route(60, seed=3)
    single = np.argsort(distances, axis=1, kind="stable")[:, :8]
    plain = sequence_rank(distances, 1, k=8, window=None)
    np.testing.assert_array_equal(plain.rows, single)
    np.testing.assert_allclose(plain.scores, np.take_along_axis(distances, single, axis=1))
    np.testing.assert_array_equal(sequence_scores(distances, 1), distances)
    # Query 0 has no history: its sequence is itself, whatever the length.
    long = sequence_rank(distances, 10, k=8, window=None)
    np.testing.assert_array_equal(long.rows[0], single[0])
    # Query 2 is matched by its three frames.
    scores = sequence_scores(distances, 10, (1.0,))
    assert scores[2, 5] == pytest.approx((distances[2, 5] + distances[1, 4] + distances[0, 3]) / 3, rel=1e-5)


def test_ranking_is_deterministic_with_ties_broken_by_the_lower_reference():
    distances = _noisy_route(80, seed=4)
    first, second = sequence_rank(distances, 5, k=10), sequence_rank(distances.copy(), 5, k=10)
    np.testing.assert_array_equal(first.rows, second.rows)
    np.testing.assert_array_equal(first.scores, second.scores)
    flat = sequence_rank(np.ones((12, 40), np.float32), 3, k=5)
    assert np.isfinite(flat.scores).all()
    np.testing.assert_array_equal(flat.rows, np.tile(np.arange(5), (12, 1)))
    rows, scores = rank_scores(np.array([[2.0, 1.0, 1.0, 0.5] * 10]), 3)
    assert rows.tolist() == [[3, 7, 11]] and scores.tolist() == [[0.5, 0.5, 0.5]]


def test_combined_matrices_and_bad_inputs():
    a, b = _noisy_route(50, 1.0, seed=5), _noisy_route(50, 1.0, seed=6)
    combined = sequence_rank([a, b], 5, k=3, weights=[1.0, 2.0])
    assert combined.rows.shape == (50, 3)
    with pytest.raises(ValueError, match="positive integer"):
        sequence_rank(a, 0)
    with pytest.raises(ValueError, match="different shapes"):
        sequence_rank([a, a[:, :40]], 5)
    with pytest.raises(ValueError, match="weights"):
        sequence_rank([a, b], 5, weights=[1.0])
    with pytest.raises(ValueError, match="NaN"):
        sequence_rank(np.full((4, 4), np.nan), 2)
    with pytest.raises(ValueError, match="velocity"):
        sequence_scores(a, 3, ())
    with pytest.raises(ValueError, match="mask"):
        sequence_rank(a, 3, query_moving=np.ones(3, bool))
    assert np.isfinite(enhance_contrast(np.zeros((5, 9)))).all()


def test_repeated_frames_are_skipped_and_a_stop_keeps_its_time():
    """Both traversals stand still at place 20 for six frames, the query side with slightly different timing
    noise; a query in the stop is matched to the reference as many frames after the start of the stop."""
    rng = np.random.default_rng(7)
    places = rng.normal(size=(40, 32)).astype(np.float32)
    order = list(range(20)) + [20] * 6 + list(range(21, 40))  # 45 frames, 20..25 the same place
    reference = places[order] + 0.001 * rng.normal(size=(45, 32)).astype(np.float32)
    queries = places[order] + 0.3 * rng.normal(size=(45, 32)).astype(np.float32)
    queries[21:26] = queries[20] + 0.001 * rng.normal(size=(5, 32)).astype(np.float32)
    query_moving, reference_moving = moving_frames(queries), moving_frames(reference)
    assert reference_moving.tolist() == [True] * 21 + [False] * 5 + [True] * 19
    assert query_moving.tolist() == reference_moving.tolist()
    assert consecutive_distances(reference).shape == (44,)
    distances = descriptor_distances(queries, reference)
    ranking = sequence_rank(distances, 8, k=3, query_moving=query_moving, reference_moving=reference_moving)
    np.testing.assert_array_equal(ranking.rows[1:, 0], np.arange(1, 45))  # query 0: one noisy frame
    assert ranking.query_moving.sum() == 40 and ranking.reference_moving.sum() == 40


def test_frame_describers():
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (3, 32, 64, 3), dtype=np.uint8)
    frames = patch_normalize(images)
    assert frames.shape == (3, 2048) and frames.dtype == np.float32
    np.testing.assert_allclose(frames.reshape(3, 4, 8, 8, 8).mean(axis=(2, 4)), 0, atol=1e-4)
    assert patch_normalize(np.zeros((1, 32, 64), np.uint8)).max() == 0  # a flat frame (a tunnel) stays finite
    assert patch_normalize(images, size=(32, 16), patch=8).shape == (3, 512)
    with pytest.raises(ValueError, match="multiple"):
        patch_normalize(images, size=(30, 16), patch=8)
    sad = sad_distances(frames[:2], frames)
    np.testing.assert_allclose(sad, np.abs(frames[:2, None] - frames[None]).mean(axis=2), rtol=1e-5, atol=1e-5)
    hog = hog_descriptors(images)
    assert hog.shape == (3, 7 * 15 * 36) and np.isfinite(hog).all()


def test_evaluate_sequence_length_end_to_end(tmp_path):
    """`hierloc evaluate --sequence-length` on a Nordland-layout folder with precomputed descriptors that single
    frames cannot match: the sequence result is reported beside the single-frame one."""
    from hierloc.cli.main import main as hierloc

    n = 120
    rng = np.random.default_rng(9)
    summer = rng.normal(size=(n, 64)).astype(np.float32)
    winter = summer + 4.0 * rng.normal(size=(n, 64)).astype(np.float32)
    image = np.zeros((32, 64, 3), np.uint8)
    with h5py.File(tmp_path / "descriptors.h5", "w") as f:
        for season, descriptors in (("summer", summer), ("winter", winter)):
            (tmp_path / "nordland" / season).mkdir(parents=True)
            for i, descriptor in enumerate(descriptors):
                name = f"images-{10 * (i + 1):05d}.png"
                cv2.imwrite(str(tmp_path / "nordland" / season / name), image)
                f.create_group(f"{season}/{name}").create_dataset("global_descriptor", data=descriptor)
    out = tmp_path / "out.json"
    assert hierloc(["evaluate", "--dataset", "nordland", str(tmp_path / "nordland"), "--method",
                    str(tmp_path / "descriptors.h5"), "--pca-dims", "none", "16", "--sequence-length", "10",
                    "--no-cache", "--json", str(out), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").is_file()
    assert len(list((tmp_path / "report" / "per_query").glob("*.csv"))) == 4
    results = {(r["method"], r["pca_dims"]): r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {("descriptors", None), ("descriptors + sequence 10", None),
                            ("descriptors", 16), ("descriptors + sequence 10", 16)}
    single, sequence = results[("descriptors", None)], results[("descriptors + sequence 10", None)]
    assert single["recall"]["1"] < 0.5 < 0.9 < sequence["recall"]["1"]
    assert sequence["sequence"]["length"] == 10 and sequence["sequence"]["base_method"] == "descriptors"
    assert "sequence" not in single
    with pytest.raises(SystemExit):
        hierloc(["evaluate", "--dataset", "nordland", str(tmp_path / "nordland"), "--sequence-length", "0"])


def test_network_grid_descriptors():
    from hierloc.sequences import network_grid_descriptors

    images = np.random.default_rng(10).integers(0, 256, (2, 32, 64), dtype=np.uint8)
    try:
        descriptors = network_grid_descriptors(images, layer=4, scale=2.0, grid=(2, 4))
    except Exception as exc:  # the ImageNet weights are an optional offline package
        pytest.skip(f"ImageNet MobileNetV2 weights unavailable: {exc}")
    assert descriptors.shape == (2, 24 * 2 * 4) and np.isfinite(descriptors).all()


def test_min_stop_keeps_short_repeats_as_motion():
    """Runs of repeated frames shorter than `min_stop` are slow motion, not a stop: they stay in the sequence."""
    rng = np.random.default_rng(11)
    places = rng.normal(size=(30, 16)).astype(np.float32)
    order = list(range(10)) + [10] * 3 + list(range(11, 20)) + [20] * 6 + list(range(21, 30))  # repeats of 2 and 5
    frames = places[order] + 0.001 * rng.normal(size=(len(order), 16)).astype(np.float32)
    every = moving_frames(frames)
    assert (~every).sum() == 7 and not every[11] and not every[12] and not every[23:28].any()
    stops = moving_frames(frames, min_stop=3)
    assert stops[11] and stops[12] and not stops[23:28].any() and (~stops).sum() == 5
    assert moving_frames(frames, min_stop=6).all()
    np.testing.assert_array_equal(moving_frames(frames, min_stop=1), every)
    with pytest.raises(ValueError, match="min_stop"):
        moving_frames(frames, min_stop=0)


def test_min_stop_on_the_map_keeps_a_slow_stretch_aligned():
    """The map's train slows down for two frames (they barely change) where the query's does not: with every
    repeated map frame left out, the query after the slow stretch is matched a frame off; counting only stops
    of at least `DEFAULT_MIN_STOP` frames keeps every query on its own place."""
    from hierloc.sequences import DEFAULT_MIN_STOP

    rng = np.random.default_rng(12)
    n = 60
    places = np.cumsum(rng.normal(size=(n, 32)), axis=0).astype(np.float32)  # neighbours alike, as along a route
    reference = places + 0.01 * rng.normal(size=(n, 32)).astype(np.float32)
    reference[31] = reference[30] + 0.001 * rng.normal(size=32)  # slow: 31 and 32 barely differ from 30
    reference[32] = reference[30] + 0.001 * rng.normal(size=32)
    queries = places + 0.3 * rng.normal(size=(n, 32)).astype(np.float32)
    distances = descriptor_distances(queries, reference)
    query_moving = moving_frames(queries)
    assert query_moving.all()
    every = sequence_rank(distances, 8, k=1, query_moving=query_moving, reference_moving=moving_frames(reference))
    stops = sequence_rank(distances, 8, k=1, query_moving=query_moving,
                          reference_moving=moving_frames(reference, min_stop=DEFAULT_MIN_STOP))
    truth = np.arange(n)
    assert (every.rows[33:, 0] != truth[33:]).any()  # the frames after the slow stretch drift by one
    np.testing.assert_array_equal(stops.rows[:, 0], truth)
