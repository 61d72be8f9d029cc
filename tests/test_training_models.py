"""The original's triplet models on ResNet-50 block3: NetVLAD and DELF attention pooling."""

from __future__ import annotations

import pytest
import torch

from hierloc.models import CheckpointError, build_model, load_model, save_checkpoint
from hierloc.models.triplet import DelfAttentionPooling, DelfConfig
from hierloc.training.model_setup import configure_trainable

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("name,dim", [("netvlad_triplets", 40), ("delf_triplets", 40), ("resnet_maxpool", 1024)])
def test_named_triplet_models_give_unit_descriptors(name, dim):
    model = build_model(name)
    assert model.backbone.out_channels == 1024 and model.backbone.stride == 16
    with torch.no_grad():
        d = model(torch.rand(2, 1, 64, 80) * 255)
    assert d.shape == (2, dim) and model.descriptor_dim == dim
    assert torch.allclose(d.norm(dim=1), torch.ones(2), atol=1e-5)


def test_netvlad_triplets_matches_the_original_config():
    model = build_model("netvlad_triplets")
    vlad = model.aggregation
    assert (vlad.num_clusters, vlad.feature_dim) == (32, 100)  # 1x1 projection 1024 -> 100
    assert vlad.intra_normalization == "across_clusters" and model.input_channels == 1


def test_delf_pooling_is_the_attention_weighted_average_of_normalised_features():
    config = DelfConfig(reduction_dim=None)
    pooling = DelfAttentionPooling(4, config).eval()
    features = torch.zeros(1, 4, 2, 3)
    features[0, 0] = 2.0  # every local feature points along axis 0
    features[0, 1, 0, 0] = 2.0  # except one, at 45 degrees
    with torch.no_grad():
        scores = pooling.attention(features)
        out = pooling(features)
        normalized = features / features.norm(dim=1, keepdim=True)
        expected = (normalized * scores).sum((2, 3)) / scores.sum((2, 3))
    assert torch.allclose(out, expected / expected.norm(), atol=1e-6)
    max_pool = DelfAttentionPooling(4, DelfConfig(use_attention=False, reduction_dim=None))
    assert torch.allclose(max_pool(features), torch.tensor([[2.0, 2.0, 0.0, 0.0]]) / 8 ** 0.5)


def test_freezing_attention_and_backbone():
    model = build_model("delf_triplets")
    frozen = configure_trainable(model, train_backbone=False, train_vlad=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"aggregation.reduction.fc.weight", "aggregation.reduction.fc.bias"}
    assert model.backbone in frozen and model.aggregation.attention in frozen


def test_checkpoints_and_torchvision_trunks(tmp_path):
    model = build_model("netvlad_triplets")
    save_checkpoint(model, tmp_path / "m.pt")
    again = load_model("netvlad_triplets", weights=tmp_path / "m.pt")
    x = torch.rand(1, 1, 48, 48) * 255
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    trunk = {k: v.clone() + 1.0 if v.is_floating_point() else v for k, v in model.backbone.state_dict().items()}
    trunk.update({"layer4.0.conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)})  # ignored parts
    model.load_backbone_state_dict(trunk, "resnet50.pth")
    assert torch.equal(model.backbone.conv1.weight, trunk["conv1.weight"])
    with pytest.raises(CheckpointError, match="not a torchvision ResNet-50"):
        model.load_backbone_state_dict({"features.0.weight": torch.zeros(1)}, "other.pth")
