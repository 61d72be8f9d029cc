"""`hierloc convert netvlad-mat` / `netvlad-tf`: parity with MatConvNet's NetVLAD, recomputed in numpy.

The VGG16 convs have their exact shapes; the VLAD layer uses 8 clusters and the whitening 32
outputs instead of 64 and 4096 (the published 32768 x 4096 whitening matrix alone is 0.5 GB).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from hierloc.cli.main import main
from hierloc.models import load_model, read_checkpoint
from hierloc.models.convert import ConversionError, convert_netvlad_mat, convert_netvlad_tf, write_tensor_bundle

VGG = [("conv1_1", 3, 64), ("conv1_2", 64, 64), None, ("conv2_1", 64, 128), ("conv2_2", 128, 128), None,
       ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), None,
       ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), None,
       ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)]
K, D, N = 8, 512, 32
AVERAGE_RGB = np.array([122.7, 114.9, 101.6], np.float32)


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(5)
    convs = {spec[0]: (rng.normal(0, np.sqrt(2.0 / (9 * spec[1])), (3, 3, spec[1], spec[2])).astype(np.float32),
                       rng.normal(0, 0.01, spec[2]).astype(np.float32)) for spec in VGG if spec}
    return {
        "convs": convs,
        "assignment": rng.normal(0, 3.0, (D, K)).astype(np.float32),  # [D, K]
        "negated_centers": rng.normal(0, 0.05, (D, K)).astype(np.float32),  # MatConvNet's C: a * (x + C)
        "wpca": rng.normal(0, 0.05, (K * D, N)).astype(np.float32),
        "wpca_bias": rng.normal(0, 0.01, N).astype(np.float32),
    }


def cell(*items) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def write_struct_mat(path, a, average_image=AVERAGE_RGB.reshape(1, 1, 3)) -> None:
    """A SimpleNN `net` as netvlad_tf_open's net_class2struct.m (and hloc's Pitts30K_struct.mat) store it."""
    layers = []
    for i, spec in enumerate(VGG):
        if spec is None:
            layers.append({"type": "pool", "name": f"pool{i}", "method": "max", "pool": np.array([2.0, 2.0]),
                           "stride": np.array([2.0, 2.0]), "pad": np.zeros(4)})
            continue
        name = spec[0]
        layers.append({"type": "conv", "name": name, "weights": cell(*a["convs"][name]), "pad": np.ones(4),
                       "stride": np.ones(2)})
        if name != "conv5_3":
            layers.append({"type": "relu", "name": name.replace("conv", "relu"), "leak": 0.0})
    layers += [
        {"type": "normalize", "name": "preL2", "param": np.array([1024.0, 1e-12, 1.0, 0.5])},
        {"type": "custom", "name": "vlad:core", "K": float(K),
         "weights": cell(a["assignment"][None, None], a["negated_centers"])},
        {"type": "custom", "name": "postL2"},
        {"type": "custom", "name": "finalL2"},
        {"type": "conv", "name": "WPCA", "weights": cell(a["wpca"][None, None], a["wpca_bias"]), "pad": 0.0,
         "stride": 1.0},
        {"type": "custom", "name": "finalL2"},
    ]
    scipy.io.savemat(path, {"net": {"layers": cell(*layers),
                                    "meta": {"normalization": {"averageImage": average_image}}}})


def write_tf_checkpoint(prefix, a) -> None:
    """netvlad_tf_open's variables (vgg16_netvlad_pca scope)."""
    tensors = {f"vgg16_netvlad_pca/{n}/kernel": w for n, (w, _) in a["convs"].items()}
    tensors.update({f"vgg16_netvlad_pca/{n}/bias": b for n, (_, b) in a["convs"].items()})
    tensors.update({
        "vgg16_netvlad_pca/assignment/kernel": a["assignment"][None, None],
        "vgg16_netvlad_pca/cluster_centers": a["negated_centers"][None, None, None],
        "vgg16_netvlad_pca/WPCA/kernel": a["wpca"][None, None],
        "vgg16_netvlad_pca/WPCA/bias": a["wpca_bias"],
        "vgg16_netvlad_pca/average_rgb": AVERAGE_RGB,
    })
    write_tensor_bundle(prefix, tensors)


# ---- numpy reference: MatConvNet semantics (HWC, pad 1 convs, 2x2 max-pool, vl_nnnormalize) ------


def conv_pad1(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(0, 1))  # [H, W, C, 3, 3]
    return np.einsum("hwcij,ijco->hwo", win, w, optimize=True) + b


def max_pool(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).max(axis=(1, 3))


def mcn_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.sqrt((x * x).sum(axis=axis, keepdims=True) + 1e-12)


def ref_trunk(image: np.ndarray, a: dict) -> tuple[np.ndarray, np.ndarray]:
    x = image.astype(np.float64) - AVERAGE_RGB
    first = None
    for spec in VGG:
        if spec is None:
            x = max_pool(x)
            continue
        x = conv_pad1(x, *a["convs"][spec[0]])
        first = x if first is None else first
        if spec[0] != "conv5_3":
            x = np.maximum(x, 0)
    return first, mcn_normalize(x)  # preL2


def ref_head(x: np.ndarray, a: dict) -> np.ndarray:
    flat = x.reshape(-1, D)  # [N, D]
    logits = flat @ a["assignment"]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    soft = e / e.sum(-1, keepdims=True)  # [N, K]
    v = flat.T @ soft + a["negated_centers"] * soft.sum(0)  # sum_n a_nk (x_nd + C_dk): [D, K]
    v = mcn_normalize(v, axis=0)  # intra-normalisation (per cluster)
    v = mcn_normalize(v.reshape(-1))  # D-major flattening
    return mcn_normalize(v @ a["wpca"] + a["wpca_bias"])


def test_mat_and_tf_forms_convert_to_the_same_model_that_matches_numpy(arrays, tmp_path):
    write_struct_mat(tmp_path / "Pitts30K_struct.mat", arrays)
    write_tf_checkpoint(tmp_path / "tf" / "vd16_pitts30k_conv5_3_vlad_preL2_intra_white", arrays)
    from_mat = convert_netvlad_mat(tmp_path / "Pitts30K_struct.mat", tmp_path / "mat.pth")
    from_tf = convert_netvlad_tf(tmp_path / "tf", tmp_path / "tf.pth")
    assert from_mat["config"] == from_tf["config"]
    assert from_mat["config"]["num_clusters"] == K and from_mat["config"]["whitening_dim"] == N
    assert from_tf["variables"] == 31 and from_tf["ignored"] == {} and len(from_tf["mapping"]) == 31
    assert from_mat["source_files"][0]["file"] == "Pitts30K_struct.mat" and len(from_mat["mapping"]) == 31
    mat_state = read_checkpoint(tmp_path / "mat.pth")["state_dict"]
    tf_state = read_checkpoint(tmp_path / "tf.pth")["state_dict"]
    assert all(torch.equal(mat_state[k], tf_state[k]) for k in mat_state)

    model = load_model("netvlad", weights=tmp_path / "mat.pth")
    image = np.random.default_rng(6).uniform(0, 255, (37, 44, 3)).astype(np.float32)  # conv5: 2 x 2
    first, features = ref_trunk(image, arrays)
    with torch.no_grad():
        x = torch.from_numpy(image.transpose(2, 0, 1)[None].copy())
        conv1_1 = model.backbone.features[0](model.normalize_input(x))[0].permute(1, 2, 0).numpy()
        local = model.local_features(x)[0].permute(1, 2, 0).numpy()
        head = model.aggregation(torch.from_numpy(features.transpose(2, 0, 1)[None].astype(np.float32)))[0].numpy()
        descriptor = model(x)[0].numpy()
    np.testing.assert_allclose(conv1_1, first, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(local, features, rtol=1e-3, atol=1e-4)
    expected = ref_head(features, arrays)
    np.testing.assert_allclose(head, expected, atol=1e-5)
    np.testing.assert_allclose(descriptor, expected, atol=1e-4)


def test_average_image_and_layer_checks(arrays, tmp_path):
    write_struct_mat(tmp_path / "avg.mat", arrays, average_image=np.tile(AVERAGE_RGB, (2, 3, 1)))
    provenance = convert_netvlad_mat(tmp_path / "avg.mat", tmp_path / "avg.pth")
    np.testing.assert_allclose(provenance["config"]["average_rgb"], AVERAGE_RGB, rtol=1e-6)
    varying = np.tile(AVERAGE_RGB, (2, 3, 1))
    varying[1, 2] += 5
    write_struct_mat(tmp_path / "varying.mat", arrays, average_image=varying)
    with pytest.raises(ConversionError, match="average image varies"):
        convert_netvlad_mat(tmp_path / "varying.mat", tmp_path / "x.pth")
    scipy.io.savemat(tmp_path / "other.mat", {"weights": np.zeros(3)})
    with pytest.raises(ConversionError, match="no variable 'net'"):
        convert_netvlad_mat(tmp_path / "other.mat", tmp_path / "x.pth")
    (tmp_path / "v73.mat").write_bytes(b"MATLAB 7.3 MAT-file" + b"\0" * 200)
    with pytest.raises((ConversionError, ValueError)):
        convert_netvlad_mat(tmp_path / "v73.mat", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


def test_cli_netvlad(arrays, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HIERLOC_WEIGHTS_DIR", str(tmp_path / "cache"))
    write_tf_checkpoint(tmp_path / "tf" / "ckpt", arrays)
    assert main(["convert", "netvlad-tf", str(tmp_path / "tf" / "ckpt")]) == 0
    assert f"wrote {tmp_path / 'cache' / 'netvlad_vgg16_pitts30k.pth'}" in capsys.readouterr().out
    assert load_model("netvlad").descriptor_dim == N  # `--weights auto` finds the converted file (and its config)
