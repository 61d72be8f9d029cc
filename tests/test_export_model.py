"""TorchScript and ONNX export: parity with the eager model at several image sizes, and running them by path."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from hierloc.cli.main import main
from hierloc.export import (
    ExportedModelError,
    check_parity,
    export_onnx,
    export_torchscript,
    exported_model_name,
    is_exported_model,
    load_exported_model,
)
from hierloc.extraction import GlobalExtractor
from hierloc.models import build_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def small_model():
    """MobileNetVLAD with TF-SAME padding cut early: the padding depends on the input size."""
    model = build_model("mobilenetvlad", endpoint="layer_6", num_clusters=4, reduction_dim=16)
    # Non-trivial BatchNorm statistics, so that a wrong padding would show in the descriptors.
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    return {"torchscript": export_torchscript(small_model, folder / "m.torchscript.pt", (64, 96)),
            "onnx": export_onnx(small_model, folder / "m.onnx", (64, 96))}


def test_exports_match_the_eager_model_at_other_image_sizes(small_model, exported):
    # odd sizes change TF-SAME's asymmetric padding: a size baked into the graph would show
    results = check_parity(small_model, exported, sizes=((64, 96), (47, 81), (96, 50)), batch=2)
    for fmt, result in results.items():
        assert result["ok"] and result["max_abs_diff"] < 1e-4, (fmt, result)


def test_exported_files_carry_their_description(exported, small_model):
    for path in exported.values():
        assert is_exported_model(path)
        assert exported_model_name(path) == "mobilenetvlad"
        runner = load_exported_model(path, device="cpu")
        assert runner.descriptor_dim == 16 and runner.input_channels == 1


def test_runners_accept_rgb_and_gray_numpy_images_like_the_extractor(small_model, exported):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    expected = GlobalExtractor(small_model, device="cpu", fast=False).describe(gray)
    for path in exported.values():
        runner = load_exported_model(path, device="cpu")
        np.testing.assert_allclose(runner.describe(gray), expected, atol=1e-5)
        np.testing.assert_allclose(runner.describe_batch([rgb, gray])[0], expected, atol=1e-5)


def test_foreign_files_are_refused(tmp_path, small_model):
    plain = tmp_path / "plain.pt"
    save_checkpoint(small_model, plain)  # a torch.save checkpoint is not a TorchScript archive
    assert not is_exported_model(plain)
    with pytest.raises(ExportedModelError, match="neither an ONNX"):
        load_exported_model(plain)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ExportedModelError, match="not a readable ONNX"):
        load_exported_model(broken)


def test_cli_export_then_extract_with_the_files(small_model, tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(small_model, checkpoint)
    assert main(["export-model", str(checkpoint), "--out", str(tmp_path / "out"), "--height", "64", "--width", "96",
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("OK") == 2 and "max |descriptor difference|" in printed
    report = json.loads((tmp_path / "out" / "mobilenetvlad.export.json").read_text())
    assert all(r["ok"] for r in report["parity"].values())
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (40, 60), dtype=np.uint8))
    outputs = {}
    for label, model in (("eager", checkpoint), ("onnx", tmp_path / "out" / "mobilenetvlad.onnx"),
                         ("torchscript", tmp_path / "out" / "mobilenetvlad.torchscript.pt")):
        assert main(["extract", str(images), "--out", str(tmp_path / f"{label}.h5"), "--model", str(model),
                     "--threads", "1"]) == 0
        from hierloc.extraction import read_global_descriptors

        outputs[label] = read_global_descriptors(tmp_path / f"{label}.h5")[1]
    np.testing.assert_allclose(outputs["onnx"], outputs["eager"], atol=1e-5)
    np.testing.assert_allclose(outputs["torchscript"], outputs["eager"], atol=1e-5)


def test_an_index_built_with_the_checkpoint_is_queried_with_the_onnx_file(small_model, exported, tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(small_model, checkpoint)
    images = tmp_path / "map"
    images.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (40, 60), dtype=np.uint8))
    index = tmp_path / "index.h5"
    assert main(["index", "build", str(images), "--out", str(index), "--model", str(checkpoint), "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["query", str(index), str(images / "1.png"), "--model", str(exported["onnx"]), "-k", "3",
                 "--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["describer"].startswith("mobilenetvlad ")  # the ONNX export counts as the same describer
    # the same image: the ONNX descriptor equals the one the checkpoint put in the index
    same = [hit for hit in result["queries"][0]["results"] if hit["name"].endswith("1.png")]
    assert same and same[0]["distance"] < 1e-3


def test_onnx_convolutions_pad_themselves_and_the_grayscale_stem_reads_one_channel(small_model, exported):
    import onnx

    proto = onnx.load(str(exported["onnx"]))
    operators = [node.op_type for node in proto.graph.node]
    # TF-SAME padding as the convolutions' auto_pad (exact for every size, see the parity test): no Pad copies
    assert "Pad" not in operators
    first_conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    stem = next(init for init in proto.graph.initializer if init.name == first_conv.input[1])
    assert list(stem.dims)[1] == 1
    # The folded copy is the export's: the model itself keeps its 3-channel stem for training.
    assert small_model.backbone.features[0][0].weight.shape[1] == 3 and not small_model.stem_takes_gray


def test_padding_fusion_can_be_turned_off(small_model, tmp_path):
    import onnx

    path = export_onnx(small_model, tmp_path / "plain.onnx", (64, 96), fuse_padding=False)
    assert "Pad" in [node.op_type for node in onnx.load(str(path)).graph.node]
    result = check_parity(small_model, {"onnx": path}, sizes=((47, 81),), batch=1)
    assert result["onnx"]["ok"]


def test_exported_models_adapt_channels_in_numpy():
    from hierloc.export.runtime import adapt_channels
    from hierloc.models.base import LUMA_WEIGHTS

    rgb = np.random.default_rng(0).random((2, 3, 5, 7), dtype=np.float32) * 255
    gray = adapt_channels(rgb, 1)
    assert gray.shape == (2, 1, 5, 7) and gray.dtype == np.float32
    expected = sum(np.float32(w) * rgb[:, i:i + 1] for i, w in enumerate(LUMA_WEIGHTS))
    np.testing.assert_allclose(gray, expected, rtol=1e-6)
    repeated = adapt_channels(gray, 3)
    assert repeated.shape == (2, 3, 5, 7) and repeated.flags.c_contiguous
    np.testing.assert_array_equal(repeated[:, 2], gray[:, 0])
    assert adapt_channels(rgb, 3) is rgb
    with pytest.raises(ValueError, match="1 or 3 channels"):
        adapt_channels(np.zeros((1, 2, 4, 4), np.float32), 1)
