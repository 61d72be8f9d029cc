"""Parity of `hierloc convert tf-mobilenetvlad` with the TF graph's semantics, recomputed in numpy.

The checkpoint has the released model's exact variable names, shapes and layouts (checked against
the real `variables.index` when ../shared is present), filled with random values. The numpy
reference below is written from TF's definitions (NHWC, HWIO kernels, 'SAME' padding, FusedBatchNorm
with epsilon 0.001, the VLAD layer as in the released graph), without calling hierloc.
"""

from __future__ import annotations

import math
import shutil
import urllib.request

import numpy as np
import pytest
import torch
from conftest import shared_path

from hierloc.cli.main import main
from hierloc.models import load_model, read_checkpoint
from hierloc.models import weights as registry
from hierloc.models.convert import ConversionError, TensorBundleReader, convert_tf_mobilenetvlad, write_tensor_bundle
from hierloc.models.convert.common import CONVERTER_VERSION
from hierloc.models.fetch import fetch_weights
from hierloc.utils.hashing import file_sha256

DEPTH = 0.35
# TF-slim mobilenet_v2 V2_DEF: (expansion, output channels, stride) of the 17 expanded_conv blocks.
BLOCKS = [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1), (6, 64, 2), (6, 64, 1),
          (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1), (6, 96, 1), (6, 160, 2), (6, 160, 1), (6, 160, 1),
          (6, 320, 1)]
CLUSTERS, REDUCTION = 32, 4096


def slim_divisible(v: float, divisor: int = 8) -> int:
    """TF-slim's _make_divisible (min_value = divisor)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def block_scope(i: int) -> str:
    return "MobilenetV2/expanded_conv" + (f"_{i}" if i else "")


def released_variable_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the released MobileNetVLAD's variables, from TF-slim's layer definitions."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(scope: str, kernel: tuple[int, ...], depthwise: bool = False) -> None:
        shapes[f"{scope}/{'depthwise_weights' if depthwise else 'weights'}"] = kernel
        channels = kernel[2] * kernel[3] if depthwise else kernel[3]
        for bn in ("gamma", "beta", "moving_mean", "moving_variance"):
            shapes[f"{scope}/BatchNorm/{bn}"] = (channels,)

    cin = slim_divisible(32 * DEPTH)
    conv_bn("MobilenetV2/Conv", (3, 3, 3, cin))
    for i, (t, c, _) in enumerate(BLOCKS):
        cout, hidden = slim_divisible(c * DEPTH), (slim_divisible(cin * t) if t != 1 else cin)
        if t != 1:
            conv_bn(f"{block_scope(i)}/expand", (1, 1, cin, hidden))
        conv_bn(f"{block_scope(i)}/depthwise", (3, 3, hidden, 1), depthwise=True)
        conv_bn(f"{block_scope(i)}/project", (1, 1, hidden, cout))
        cin = cout
    conv_bn("MobilenetV2/Conv_1", (1, 1, cin, slim_divisible(1280 * DEPTH)))
    shapes["vlad/memberships/weights"] = (1, 1, cin, CLUSTERS)
    for bn in ("beta", "moving_mean", "moving_variance"):  # slim.batch_norm default: no scale
        shapes[f"vlad/memberships/BatchNorm/{bn}"] = (CLUSTERS,)
    shapes["vlad/clusters"] = (1, 1, 1, CLUSTERS, cin)
    shapes["dimensionality_reduction/weights"] = (CLUSTERS * cin, REDUCTION)
    shapes["dimensionality_reduction/biases"] = (REDUCTION,)
    return shapes


def random_values(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        if name.endswith("moving_variance"):
            v = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("gamma"):
            v = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "moving_mean", "biases")):
            v = rng.normal(0.0, 0.1, shape)
        else:
            v = rng.normal(0.0, 1.0 / math.sqrt(np.prod(shape[:-1])), shape)
        values[name] = v.astype(np.float32)
    return values


# ---- numpy reference with TF semantics (NHWC) -------------------------------------------------


def tf_same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    pads = []
    for n in x.shape[:2]:
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)])


def windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    x = tf_same_pad(x, k, s)
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(0, 1))[::s, ::s]  # [h, w, c, k, k]


def conv2d(x: np.ndarray, kernel: np.ndarray, s: int = 1) -> np.ndarray:
    """tf.nn.conv2d(x, kernel [kh, kw, in, out], strides s, 'SAME') for one image [H, W, C]."""
    return np.einsum("hwcij,ijco->hwo", windows(x, kernel.shape[0], s), kernel, optimize=True)


def depthwise_conv2d(x: np.ndarray, kernel: np.ndarray, s: int = 1) -> np.ndarray:
    """tf.nn.depthwise_conv2d(x, kernel [kh, kw, in, multiplier]): output channel c * multiplier + m."""
    out = np.einsum("hwcij,ijcm->hwcm", windows(x, kernel.shape[0], s), kernel, optimize=True)
    return out.reshape(out.shape[0], out.shape[1], -1)


def batch_norm(x: np.ndarray, v: dict, scope: str, scale: bool = True) -> np.ndarray:
    y = (x - v[f"{scope}/BatchNorm/moving_mean"]) / np.sqrt(v[f"{scope}/BatchNorm/moving_variance"] + 1e-3)
    return (y * v[f"{scope}/BatchNorm/gamma"] if scale else y) + v[f"{scope}/BatchNorm/beta"]


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def ref_stem(image: np.ndarray, v: dict) -> np.ndarray:
    x = np.tile((image[..., None].astype(np.float64) - 128.0) / 128.0, (1, 1, 3))
    return relu6(batch_norm(conv2d(x, v["MobilenetV2/Conv/weights"], 2), v, "MobilenetV2/Conv"))


def ref_block(x: np.ndarray, v: dict, i: int) -> np.ndarray:
    t, _, s = BLOCKS[i]
    scope = block_scope(i)
    h = x
    if t != 1:
        h = relu6(batch_norm(conv2d(h, v[f"{scope}/expand/weights"]), v, f"{scope}/expand"))
    h = relu6(batch_norm(depthwise_conv2d(h, v[f"{scope}/depthwise/depthwise_weights"], s), v, f"{scope}/depthwise"))
    h = batch_norm(conv2d(h, v[f"{scope}/project/weights"]), v, f"{scope}/project")
    return h + x if s == 1 and h.shape == x.shape else h


def l2(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.sqrt(np.maximum((x * x).sum(axis=axis, keepdims=True), 1e-12))


def ref_head(features: np.ndarray, v: dict) -> np.ndarray:
    """The released graph's `vlad` and `dimensionality_reduction` scopes for one [H, W, D] feature map."""
    logits = batch_norm(conv2d(features, v["vlad/memberships/weights"]), v, "vlad/memberships", scale=False)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    memberships = e / e.sum(-1, keepdims=True)  # [H, W, K]
    clusters = v["vlad/clusters"].reshape(CLUSTERS, -1)  # [K, D]
    residuals = clusters[None, None] - features[:, :, None, :]  # clusters - expand_dims(features, 3)
    descriptor = (residuals * memberships[..., None]).sum(axis=(0, 1))  # [K, D]
    descriptor = l2(descriptor, axis=0)  # tf.nn.l2_normalize(descriptor, axis=1) on [B, K, D]
    descriptor = l2(descriptor.reshape(-1))  # reshape to [B, K * D]: cluster-major
    fc = descriptor @ v["dimensionality_reduction/weights"] + v["dimensionality_reduction/biases"]
    return l2(fc)


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32))


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).double().numpy()


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released_checkpoint(tmp_path_factory):
    """A SavedModel-style folder (variables/variables.*) with the released layout and random values."""
    folder = tmp_path_factory.mktemp("mobilenetvlad_tf")
    values = random_values(released_variable_shapes())
    write_tensor_bundle(folder / "variables" / "variables", values)
    return folder, values


@pytest.fixture(scope="module")
def converted(released_checkpoint, tmp_path_factory):
    folder, values = released_checkpoint
    output = tmp_path_factory.mktemp("converted") / "mobilenetvlad.pth"
    provenance = convert_tf_mobilenetvlad(folder, output)
    return output, provenance, values


def test_synthetic_variables_are_exactly_the_released_ones():
    reader = TensorBundleReader(shared_path("seed", "mobilenetvlad_depth-0.35", "variables", "variables.index"))
    assert reader.shapes() == dict(sorted(released_variable_shapes().items()))


def test_every_variable_is_consumed_and_provenance_recorded(converted, released_checkpoint):
    output, provenance, values = converted
    assert provenance["variables"] == len(values) == 267
    assert provenance["mapped"] == 267 and sorted(provenance["mapping"]) == sorted(values)
    assert provenance["ignored"] == {} and provenance["filled"] == {}
    assert provenance["unused_trunk_layers"] == ["layer_19"]
    assert provenance["converter_version"] == CONVERTER_VERSION
    data_file = released_checkpoint[0] / "variables" / "variables.data-00000-of-00001"
    assert {r["file"]: r["sha256"] for r in provenance["source_files"]}["variables.data-00000-of-00001"] \
        == file_sha256(data_file)
    payload = read_checkpoint(output)
    assert payload["provenance"]["converter"] == "hierloc convert tf-mobilenetvlad"
    config = payload["config"]
    assert (config["depth_multiplier"], config["endpoint"], config["num_clusters"], config["reduction_dim"]) == \
        (DEPTH, "layer_18", CLUSTERS, REDUCTION)
    assert config["intra_normalization"] == "across_clusters" and config["bn_eps"] == 1e-3
    assert payload["state_dict"]["backbone.features.18.0.weight"].shape == (448, 112, 1, 1)  # Conv_1 kept


def test_stem_block_and_head_match_numpy_layer_by_layer(converted):
    output, _, v = converted
    model = load_model("mobilenetvlad", weights=output)
    image = np.random.default_rng(1).uniform(0, 255, (75, 61)).astype(np.float32)  # odd: asymmetric SAME
    features = model.backbone.features
    with torch.no_grad():
        x = model.normalize_input(model.adapt_channels(torch.from_numpy(image)[None, None]))
        stem = ref_stem(image, v)
        np.testing.assert_allclose(nhwc(features[0](x)), stem, rtol=1e-4, atol=1e-4)
        h = stem
        for i in range(3):  # expanded_conv (no expansion), expanded_conv_1 (stride 2), expanded_conv_2 (residual)
            expected = ref_block(h, v, i)
            np.testing.assert_allclose(nhwc(features[i + 1](nchw(h))), expected, rtol=1e-4, atol=1e-4)
            h = expected
        for i in range(3, len(BLOCKS)):
            h = ref_block(h, v, i)
        np.testing.assert_allclose(nhwc(model.local_features(torch.from_numpy(image)[None, None])), h,
                                   rtol=1e-3, atol=1e-3)
        head = ref_head(h, v)
        np.testing.assert_allclose(model.aggregation(nchw(h))[0].numpy(), head, rtol=1e-4, atol=1e-5)
        descriptor = model(torch.from_numpy(image)[None, None])[0].numpy()
    np.testing.assert_allclose(descriptor, head, atol=1e-4)
    assert descriptor.shape == (REDUCTION,) and abs(np.linalg.norm(descriptor) - 1) < 1e-5


def test_released_graph_settings_are_read(released_checkpoint, tmp_path):
    graph = shared_path("seed", "mobilenetvlad_depth-0.35", "saved_model.pb")
    folder = tmp_path / "mobilenetvlad_depth-0.35"
    shutil.copytree(released_checkpoint[0], folder)
    shutil.copy(graph, folder / "saved_model.pb")
    provenance = convert_tf_mobilenetvlad(folder, tmp_path / "out.pth")
    facts = provenance["graph"]
    assert facts["vlad_endpoint"] == "layer_18" and facts["input_channels"] == 1
    assert (facts["input_offset"], facts["input_scale"]) == (128.0, 128.0)
    assert facts["intra_normalization"] == "across_clusters" and facts["bn_epsilons"] == [0.001]
    assert facts["paddings"] == ["SAME"] and facts["resize_ops"] == []
    assert "saved_model.pb" in [r["file"] for r in provenance["source_files"]]


def test_unknown_or_missing_variables_are_refused(released_checkpoint, tmp_path):
    _, values = released_checkpoint
    small = {k: v for k, v in values.items() if not k.startswith("dimensionality_reduction")}
    extra = dict(small, **{"vlad/unexpected": np.zeros(3, np.float32)})
    write_tensor_bundle(tmp_path / "extra" / "ckpt", extra)
    with pytest.raises(ConversionError, match="vlad/unexpected"):
        convert_tf_mobilenetvlad(tmp_path / "extra" / "ckpt", tmp_path / "out.pth")
    missing = {k: v for k, v in small.items() if k != "MobilenetV2/expanded_conv_3/project/BatchNorm/beta"}
    write_tensor_bundle(tmp_path / "missing" / "ckpt", missing)
    with pytest.raises(ConversionError, match="expanded_conv_3/project/BatchNorm/beta"):
        convert_tf_mobilenetvlad(tmp_path / "missing" / "ckpt", tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()
    # Without the reduction layer the model is the 3584-D VLAD; with a step counter, that is ignored.
    write_tensor_bundle(tmp_path / "noreduce" / "ckpt", dict(small, global_step=np.array(7, np.int64)))
    provenance = convert_tf_mobilenetvlad(tmp_path / "noreduce" / "ckpt", tmp_path / "noreduce.pth")
    assert provenance["config"]["reduction_dim"] is None and "global_step" in provenance["ignored"]
    assert load_model("mobilenetvlad", weights=tmp_path / "noreduce.pth").descriptor_dim == CLUSTERS * 112


def test_cli_converts_into_the_weights_cache(released_checkpoint, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HIERLOC_WEIGHTS_DIR", str(tmp_path / "cache"))
    assert main(["convert", "tf-mobilenetvlad", str(released_checkpoint[0])]) == 0
    out = capsys.readouterr().out
    target = tmp_path / "cache" / "mobilenetvlad_depth-0.35.pth"
    assert f"wrote {target}" in out and "267 variables read, 0 ignored" in out
    # `--weights auto` now finds the converted model.
    assert registry.resolve_weights("mobilenetvlad_depth-0.35") == target
    model = load_model("mobilenetvlad")  # with its stored configuration (Conv_1 kept, 448 channels)
    assert model.config.keep_layers_after_endpoint and model.descriptor_dim == REDUCTION
    assert main(["convert", "tf-mobilenetvlad", str(released_checkpoint[0]), "--list"]) == 0
    assert "267 variables" in capsys.readouterr().out
    assert main(["convert", "tf-mobilenetvlad", str(tmp_path / "nowhere")]) == 1
    assert "no checkpoint index" in capsys.readouterr().err


def test_registry_downloads_and_converts(released_checkpoint, monkeypatch, tmp_path):
    """`fetch_weights` downloads the original files and converts them (file:// URLs here)."""
    folder = released_checkpoint[0]
    spec = registry.WEIGHTS["mobilenetvlad_depth-0.35"]
    assert spec.convert_from == "tf-mobilenetvlad"
    assert [s[1] for s in spec.sources] == ["mobilenetvlad_depth-0.35/saved_model.pb",
                                            "mobilenetvlad_depth-0.35/variables/variables.index",
                                            "mobilenetvlad_depth-0.35/variables/variables.data-00000-of-00001"]
    local = tuple(((folder / rel.split("/", 1)[1]).as_uri(), rel, None)
                  for _, rel, _ in spec.sources if not rel.endswith("saved_model.pb"))
    monkeypatch.setitem(registry.WEIGHTS, spec.name, registry.WeightSpec(
        spec.name, spec.filename, spec.file_format, convert_from=spec.convert_from, sources=local))
    monkeypatch.setenv("HIERLOC_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HIERLOC_OFFLINE", raising=False)  # set for every test by conftest; these URLs are local files
    opened = []
    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, **kw: opened.append(url) or real_urlopen(url, **kw))
    path = fetch_weights(spec.name)
    assert path == tmp_path / "cache" / spec.filename and all(u.startswith("file://") for u in opened)
    assert read_checkpoint(path)["provenance"]["mapped"] == 267
