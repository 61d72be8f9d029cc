"""hloc-layout feature, match and pair files: layout on disk, keypoint convention, round trips."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from hierloc.features import (
    LocalFeatures,
    matches_to_pairs,
    names_to_pair,
    pairs_to_matches,
    read_features,
    read_matches,
    read_pairs,
    write_features,
    write_matches,
    write_pairs,
)
from hierloc.features.h5io import FeatureFileError, feature_names, read_feature_config


def _features(n: int, dim: int = 8, seed: int = 0) -> LocalFeatures:
    rng = np.random.default_rng(seed)
    descriptors = rng.normal(size=(n, dim)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    return LocalFeatures(rng.uniform(0.5, 99.5, (n, 2)), descriptors, rng.uniform(0, 1, n), (100, 80))


def test_feature_file_uses_hloc_layout_and_pixel_convention(tmp_path):
    feats = _features(5)
    path = write_features(tmp_path / "features.h5", {"seq/a.png": feats, "b.png": _features(3, seed=1)},
                          config={"name": "sift", "max_keypoints": 5})
    with h5py.File(path, "r") as f:
        group = f["seq"]["a.png"]  # a '/' in a name gives nested groups, as hloc writes them
        assert group["descriptors"].shape == (8, 5)  # hloc keeps descriptors as columns
        np.testing.assert_allclose(group["keypoints"][()], feats.keypoints - 0.5, atol=1e-5)  # hloc: pixel centre 0
        assert tuple(group["image_size"][()]) == (100, 80)  # (width, height)
        assert group["scores"].shape == (5,)
    assert sorted(feature_names(path)) == ["b.png", "seq/a.png"]
    assert read_feature_config(path) == {"name": "sift", "max_keypoints": 5}
    back = read_features(path, ["seq/a.png"])["seq/a.png"]
    np.testing.assert_allclose(back.keypoints, feats.keypoints, atol=1e-5)
    np.testing.assert_allclose(back.descriptors, feats.descriptors, atol=1e-6)
    assert back.image_size == (100, 80)


def test_reading_a_missing_image_or_file_is_a_clear_error(tmp_path):
    path = write_features(tmp_path / "f.h5", {"a.png": _features(2)})
    with pytest.raises(FeatureFileError, match="no local features for image 'zzz.png'"):
        read_features(path, ["zzz.png"])
    with pytest.raises(FeatureFileError, match="no such file"):
        read_features(tmp_path / "absent.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FeatureFileError, match="not a readable h5"):
        feature_names(tmp_path / "junk.h5")


def test_match_file_layout_pair_names_and_reversed_lookup(tmp_path):
    assert names_to_pair("seq/a.png", "b.png") == "seq-a.png/b.png"
    matches0 = np.array([2, -1, 0, -1], dtype=np.int32)
    scores0 = np.array([0.9, 0.0, 0.5, 0.0], dtype=np.float32)
    path = write_matches(tmp_path / "matches.h5", {("seq/a.png", "b.png"): (matches0, scores0)})
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["seq-a.png"]["b.png"]["matches0"][()], matches0)
        assert "matching_scores0" in f["seq-a.png"]["b.png"]
    pairs, scores = read_matches(path, "seq/a.png", "b.png")
    np.testing.assert_array_equal(pairs, [[0, 2], [2, 0]])
    np.testing.assert_allclose(scores, [0.9, 0.5], atol=1e-3)
    reversed_pairs, _ = read_matches(path, "b.png", "seq/a.png")
    np.testing.assert_array_equal(reversed_pairs, [[2, 0], [0, 2]])
    with pytest.raises(FeatureFileError, match="no matches"):
        read_matches(path, "a.png", "c.png")


def test_matches_vector_and_pairs_convert_both_ways():
    matches0 = np.array([-1, 3, -1, 0])
    pairs = matches_to_pairs(matches0)
    np.testing.assert_array_equal(pairs, [[1, 3], [3, 0]])
    np.testing.assert_array_equal(pairs_to_matches(pairs, 4), matches0)


def test_pair_list_round_trip_and_errors(tmp_path):
    path = write_pairs(tmp_path / "pairs.txt", [("a.png", "b.png"), ("seq/c.png", "a.png")])
    assert path.read_text() == "a.png b.png\nseq/c.png a.png\n"
    assert read_pairs(path) == [("a.png", "b.png"), ("seq/c.png", "a.png")]
    with pytest.raises(ValueError, match="spaces"):
        write_pairs(tmp_path / "bad.txt", [("a b.png", "c.png")])
    (tmp_path / "broken.txt").write_text("a.png b.png c.png\n")
    with pytest.raises(ValueError, match="broken.txt:1"):
        read_pairs(tmp_path / "broken.txt")


def test_local_features_validate_their_shapes():
    with pytest.raises(ValueError, match="descriptors must be"):
        LocalFeatures(np.zeros((3, 2)), np.zeros((2, 4)), np.zeros(3), (10, 10))
    with pytest.raises(ValueError, match="scores"):
        LocalFeatures(np.zeros((3, 2)), np.zeros((3, 4)), np.zeros(2), (10, 10))
    subset = _features(6).subset(np.array([4, 1]))
    assert len(subset) == 2 and subset.image_size == (100, 80)
