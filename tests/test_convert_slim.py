"""`hierloc convert tf-slim-mobilenetv2`: ImageNet TF-slim checkpoints -> trunk initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_convert_mobilenetvlad import nhwc, random_values, ref_block, ref_stem, released_variable_shapes

from hierloc.cli.main import main
from hierloc.models import build_model, load_torchvision_mobilenetv2, read_checkpoint
from hierloc.models.convert import ConversionError, convert_slim_mobilenetv2, write_tensor_bundle
from hierloc.models.convert.mobilenetv2_slim import infer_depth_multiplier

EMA = "/ExponentialMovingAverage"


@pytest.fixture(scope="module")
def slim_checkpoint(tmp_path_factory):
    """mobilenet_v2_0.35_224.ckpt's layout: trunk, Logits, EMA shadows of trainable variables, global_step."""
    shapes = {k: v for k, v in released_variable_shapes().items() if k.startswith("MobilenetV2/")}
    shapes["MobilenetV2/Logits/Conv2d_1c_1x1/weights"] = (1, 1, 448, 1001)
    shapes["MobilenetV2/Logits/Conv2d_1c_1x1/biases"] = (1001,)
    raw = random_values(shapes, seed=2)
    ema = random_values(shapes, seed=3)
    tensors = dict(raw)
    for name in shapes:
        if not name.endswith(("moving_mean", "moving_variance")):  # TF averages trainable variables only
            tensors[name + EMA] = ema[name]
    tensors["global_step"] = np.array(1000, np.int64)
    prefix = tmp_path_factory.mktemp("slim") / "mobilenet_v2_0.35_224.ckpt"
    write_tensor_bundle(prefix, tensors)
    averaged = {n: (ema[n] if n + EMA in tensors else raw[n]) for n in shapes}
    return prefix, raw, averaged


def test_converts_with_moving_averages_and_classifier(slim_checkpoint, tmp_path):
    prefix, raw, averaged = slim_checkpoint
    provenance = convert_slim_mobilenetv2(prefix, tmp_path / "trunk.pth")
    assert provenance["depth_multiplier"] == 0.35 and provenance["trunk_layers"] == 19
    assert provenance["last_channels"] == 448 and provenance["logits"] is True
    assert provenance["ignored"]["global_step"] == "training step counter"
    assert "MobilenetV2/Conv/weights" in provenance["ignored"]  # raw value replaced by its average
    state = read_checkpoint(tmp_path / "trunk.pth")
    np.testing.assert_array_equal(state["features.0.0.weight"].numpy(),
                                  averaged["MobilenetV2/Conv/weights"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["features.18.1.running_var"].numpy(),
                                  raw["MobilenetV2/Conv_1/BatchNorm/moving_variance"])
    np.testing.assert_array_equal(state["classifier.1.weight"].numpy(),
                                  averaged["MobilenetV2/Logits/Conv2d_1c_1x1/weights"][0, 0].T)
    assert state["provenance"]["converter"] == "hierloc convert tf-slim-mobilenetv2"

    without = convert_slim_mobilenetv2(prefix, tmp_path / "raw.pth", use_ema=False, include_logits=False)
    assert "MobilenetV2/Conv/weights" + EMA in without["ignored"] and without["logits"] is False
    state = read_checkpoint(tmp_path / "raw.pth")
    np.testing.assert_array_equal(state["features.0.0.weight"].numpy(),
                                  raw["MobilenetV2/Conv/weights"].transpose(3, 2, 0, 1))
    assert "classifier.1.weight" not in state


def test_initialises_a_tf_same_trunk_that_matches_numpy(slim_checkpoint, tmp_path):
    prefix, _, averaged = slim_checkpoint
    convert_slim_mobilenetv2(prefix, tmp_path / "trunk.pth")
    model = build_model("mobilenetvlad")  # depth 0.35, TF 'SAME', BatchNorm epsilon 0.001
    load_torchvision_mobilenetv2(model.backbone, read_checkpoint(tmp_path / "trunk.pth"), "trunk.pth")
    image = np.random.default_rng(4).uniform(0, 255, (33, 47)).astype(np.float32)
    with torch.no_grad():
        x = model.normalize_input(model.adapt_channels(torch.from_numpy(image)[None, None]))
        stem = model.backbone.features[0](x)
        block = model.backbone.features[2](model.backbone.features[1](stem))
    expected_stem = ref_stem(image, averaged)
    np.testing.assert_allclose(nhwc(stem), expected_stem, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nhwc(block), ref_block(ref_block(expected_stem, averaged, 0), averaged, 1),
                               rtol=1e-4, atol=1e-4)


def test_depth_multiplier_is_inferred_from_shapes():
    def shapes(stem: int, outs: list[int]) -> dict:
        d = {"MobilenetV2/Conv/weights": (3, 3, 3, stem)}
        names = ["expanded_conv"] + [f"expanded_conv_{i}" for i in range(1, 17)]
        d.update({f"MobilenetV2/{n}/project/weights": (1, 1, 1, c) for n, c in zip(names, outs)})
        return d

    assert infer_depth_multiplier(shapes(32, [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160,
                                              320])) == 1.0
    assert infer_depth_multiplier(shapes(16, [8, 16, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 80, 80, 80,
                                              160])) == 0.5
    with pytest.raises(ConversionError, match="no depth multiplier"):
        infer_depth_multiplier(shapes(16, [8, 16, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 80, 80, 80, 999]))


def test_cli_and_foreign_variables(slim_checkpoint, tmp_path, capsys):
    prefix, raw, _ = slim_checkpoint
    out = tmp_path / "trunk.pth"
    assert main(["convert", "tf-slim-mobilenetv2", str(prefix.with_name(prefix.name + ".index")), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "backbone_init=" in printed
    write_tensor_bundle(tmp_path / "odd", dict(raw, **{"MobilenetV2/Extra/weights": np.zeros(2, np.float32)}))
    with pytest.raises(ConversionError, match="MobilenetV2/Extra/weights"):
        convert_slim_mobilenetv2(tmp_path / "odd", tmp_path / "odd.pth")
