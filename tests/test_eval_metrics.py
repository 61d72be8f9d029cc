"""Ground truth and retrieval metrics against hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hierloc.evaluation import (
    GroundTruth,
    cumulative_true_false_positives,
    ground_truth_from_names,
    ground_truth_from_planar_poses,
    ground_truth_from_poses,
    pose_ground_truth,
    precision_recall_curve,
    ranking_metrics,
    read_ground_truth_file,
    recall_at_n,
)
from hierloc.evaluation.retrieval import rank_references
from hierloc.maps.poses import make_pose


def test_recall_at_n_leaves_out_queries_without_truth_and_ignores_missing_results():
    gt = np.array([[1, 0, 0, 0],   # query 0: true ref 0
                   [0, 0, 1, 1],   # query 1: refs 2, 3
                   [0, 0, 0, 0],   # query 2: no truth -> left out
                   [0, 1, 0, 0]], bool)
    ranked = np.array([[0, 1, 2],     # hit at rank 1
                       [0, 1, 3],     # hit at rank 3
                       [0, 1, 2],     # left out whatever it returns
                       [2, -1, -1]])  # never: -1 is "nothing retrieved", not reference 0
    expected = {1: 1 / 3, 2: 1 / 3, 3: 2 / 3}
    assert recall_at_n(ranked, gt, [1, 2, 3]) == pytest.approx(expected)
    assert recall_at_n(ranked, GroundTruth(gt), [1, 2, 3]) == pytest.approx(expected)
    metrics = ranking_metrics(ranked, np.zeros(ranked.shape), GroundTruth(gt))
    assert metrics.valid.tolist() == [True, True, False, True]
    assert metrics.first_correct_rank.tolist() == [0, 2, -1, -1]


def test_recall_needs_a_valid_query():
    with pytest.raises(ValueError, match="no query has a true reference"):
        recall_at_n(np.zeros((2, 1), int), np.zeros((2, 3), bool), [1])


def test_cumulative_true_false_positives_as_the_original():
    correct = np.array([[False, True, True], [False, False, False]])
    ranked = np.array([[4, 2, 1], [3, -1, -1]])
    tp, fp = cumulative_true_false_positives(correct, ranked)
    assert tp.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert fp.tolist() == [[1, 1, 1], [1, 1, 1]]


def test_precision_recall_by_top1_distance_by_hand():
    # Sorted by distance: correct, wrong, correct, wrong -> precision 1, 1/2, 2/3, 2/4; recall 1/4 .. 2/4.
    pr = precision_recall_curve(np.array([0.4, 0.1, 0.3, 0.2]), np.array([False, True, True, False]))
    assert pr.thresholds.tolist() == [0.1, 0.2, 0.3, 0.4]
    assert pr.precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 2 / 4])
    assert pr.recall.tolist() == pytest.approx([1 / 4, 1 / 4, 2 / 4, 2 / 4])
    assert pr.average_precision == pytest.approx(1 / 4 * 1 + 1 / 4 * 2 / 3)


def test_precision_recall_merges_equal_distances():
    pr = precision_recall_curve(np.array([0.5, 0.5, 0.9]), np.array([True, False, True]))
    assert pr.thresholds.tolist() == [0.5, 0.9]
    assert pr.precision.tolist() == pytest.approx([0.5, 2 / 3])


def _pose(x, y, yaw_deg, z=0.0):
    return make_pose(Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix(), [x, y, z])


def test_3d_pose_ground_truth_distance_and_angle():
    refs = np.stack([_pose(0, 0, 0), _pose(5, 0, 0), _pose(0, 0, 101), _pose(20, 0, 0)])
    queries = np.stack([_pose(1, 0, 10), _pose(50, 50, 0)])
    gt = ground_truth_from_poses(queries, refs, max_distance=6.0, max_angle_deg=90.0)
    assert gt.dense().tolist() == [[True, True, False, False], [False, False, False, False]]
    assert gt.valid.tolist() == [True, False]
    assert gt.summary()["queries_without_ground_truth"] == 1
    np.testing.assert_array_equal(gt.dense(), pose_ground_truth(queries, refs, 6.0, 90.0))


def test_sparse_and_dense_pose_ground_truth_agree_on_random_poses():
    rng = np.random.default_rng(0)
    def random_poses(n):
        return np.stack([make_pose(Rotation.random(random_state=int(s)).as_matrix(), p)
                         for s, p in zip(rng.integers(0, 10**6, n), rng.uniform(0, 30, (n, 3)))])
    q, r = random_poses(40), random_poses(60)
    sparse = ground_truth_from_poses(q, r, 8.0, 60.0)
    np.testing.assert_array_equal(sparse.dense(), pose_ground_truth(q, r, 8.0, 60.0))
    assert sparse.dense().any()


def test_2d_ground_truth_wraps_headings_around():
    refs = np.array([[0.0, 0.0, np.radians(179.0)], [0.0, 0.0, np.radians(90.0)], [3.0, 4.0, np.radians(-179.0)]])
    queries = np.array([[0.0, 0.0, np.radians(-179.0)]])  # 2 degrees from 179, not 358
    gt = ground_truth_from_planar_poses(queries, refs, max_distance=5.0, max_angle_deg=10.0)
    assert gt.dense().tolist() == [[True, False, True]]
    gt = ground_truth_from_planar_poses(queries, refs, max_distance=4.9, max_angle_deg=10.0)
    assert gt.dense().tolist() == [[True, False, False]]


def test_name_ground_truth_with_tolerance_and_unmatched_queries():
    refs = ["s/a.png", "s/b.png", "s/c.png", "s/d.png"]
    queries = ["w/c.png", "w/zzz.png"]
    assert ground_truth_from_names(queries, refs).dense().tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]
    assert ground_truth_from_names(queries, refs, tolerance=1).dense().tolist() == [[0, 1, 1, 1], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="share the name"):
        ground_truth_from_names(queries, ["x/a.png", "y/a.png"])


def test_ground_truth_correct_of_retrieved_rows():
    gt = GroundTruth.from_lists([[1, 3], [], [0]], num_references=4)
    correct = gt.correct(np.array([[3, 0, 1], [0, 1, 2], [-1, 0, 2]]))
    assert correct.tolist() == [[True, False, True], [False, False, False], [False, True, False]]
    with pytest.raises(ValueError, match="only 4 reference"):
        GroundTruth.from_lists([[4]], num_references=4)


def test_vpr_bench_npy_ground_truth(tmp_path):
    rows = np.empty((3, 2), dtype=object)
    rows[0] = [0, [1, 2]]
    rows[1] = [2, [0]]
    rows[2] = [1, np.array([], dtype=int)]
    np.save(tmp_path / "ground_truth_new.npy", rows)
    gt = read_ground_truth_file(tmp_path / "ground_truth_new.npy", ["q0", "q1", "q2"], ["r0", "r1", "r2"])
    assert gt.dense().tolist() == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]
    rows[1] = [2, [7]]
    np.save(tmp_path / "bad.npy", rows)
    with pytest.raises(ValueError, match="bad.npy.*reference row 7"):
        read_ground_truth_file(tmp_path / "bad.npy", ["q0", "q1", "q2"], ["r0", "r1", "r2"])


def test_text_ground_truth_by_names_or_rows(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("# query, references\nquery,reference\nq/0.jpg, r/5.jpg, r/6.jpg\n1.jpg 0\n")
    gt = read_ground_truth_file(path, ["q/0.jpg", "q/1.jpg"], [f"r/{i}.jpg" for i in range(7)])
    assert [gt.positives(0).tolist(), gt.positives(1).tolist()] == [[5, 6], [0]]
    path.write_text("q/0.jpg nothing.jpg\n")
    with pytest.raises(ValueError, match="gt.txt:1: reference 'nothing.jpg'"):
        read_ground_truth_file(path, ["q/0.jpg"], ["r/0.jpg"])


def test_full_size_pca_gives_the_recall_of_the_raw_descriptors():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(30, 16)).astype(np.float32)
    # References x and -x have zero mean, so the full-size PCA is a rotation: same distances, same ranking.
    reference = np.concatenate([base, -base])
    queries = reference[[0, 5, 31, 40]] + 0.3 * rng.normal(size=(4, 16)).astype(np.float32)
    gt = GroundTruth.from_lists([[0], [5], [31], [40]], len(reference))
    raw = rank_references(reference, queries, 10)
    full = rank_references(reference, queries, 10, pca_dims=16)
    np.testing.assert_array_equal(raw.rows, full.rows)
    np.testing.assert_allclose(raw.distances, full.distances, atol=1e-4)
    assert recall_at_n(raw.rows, gt, [1, 5]) == recall_at_n(full.rows, gt, [1, 5])
    reduced = rank_references(reference, queries, 10, pca_dims=4)
    assert reduced.search_dim == 4


def test_rank_references_refuses_mismatched_or_zero_descriptors():
    with pytest.raises(ValueError, match="same method"):
        rank_references(np.ones((3, 4)), np.ones((2, 5)), 2)
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        rank_references(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones((1, 2)), 1)
