"""DenseVLAD: local features, VLAD by hand, fitting, files, retrieval sanity and use through the CLI."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from hierloc.models.densevlad import (
    DenseVLAD,
    DenseVLADConfig,
    load_densevlad,
    local_descriptors,
    main,
    root_sift,
    vlad,
)

SMALL = DenseVLADConfig(num_clusters=8, pca_dim=6, grid_step=8, scales=(1.0, 0.5))


def _textures(count: int, size=(96, 72), seed=0) -> list[np.ndarray]:
    """Distinct blurred-noise textures (RGB uint8)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        noise = rng.integers(0, 256, (size[1] // 4, size[0] // 4), dtype=np.uint8)
        image = cv2.resize(noise, size, interpolation=cv2.INTER_CUBIC)
        images.append(np.repeat(image[:, :, None], 3, axis=2))
    return images


@pytest.fixture(scope="module")
def fitted() -> DenseVLAD:
    return DenseVLAD.fit(_textures(10), SMALL, progress=False)


def test_dense_rootsift_on_a_grid_at_several_scales():
    image = _textures(1, size=(64, 48))[0]
    config = DenseVLADConfig(grid_step=8, scales=(1.0, 0.5))
    descriptors = local_descriptors(image, config)
    # min_image_side 64 upscales 64x48 to 85x64: grids of 10x8 and 5x4 points.
    assert descriptors.shape == (10 * 8 + 5 * 4, 128)
    assert descriptors.min() >= 0
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)  # RootSIFT is unit-L2
    assert local_descriptors(image[:, :, 0], config).shape == descriptors.shape  # grayscale input
    dog = local_descriptors(np.zeros((48, 64), np.uint8), DenseVLADConfig(detector="dog"))
    assert dog.shape[0] >= 1  # a blank frame still gets a descriptor


def test_flat_patches_are_dropped():
    image = _textures(1, size=(128, 64))[0][:, :, 0].copy()
    image[:, 64:] = 90  # right half flat
    config = DenseVLADConfig(grid_step=8, scales=(1.0,))
    kept = local_descriptors(image, config)
    everything = local_descriptors(image, dataclasses.replace(config, min_patch_contrast=0.0))
    assert everything.shape[0] == 16 * 8 and 0.4 * 128 < kept.shape[0] < 0.7 * 128
    assert local_descriptors(np.full((64, 64), 7, np.uint8), config).shape == (1, 128)  # blank: one descriptor


def test_root_sift_by_hand():
    d = np.array([[1.0, 3.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(root_sift(d), [[0.5, np.sqrt(0.75), 0.0, 0.0]], rtol=1e-6)


def test_vlad_by_hand():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], np.float32)
    descriptors = np.array([[1.0, 0.0], [0.0, 3.0], [9.0, 1.0]], np.float32)  # clusters 0, 0, 1; 2 empty
    raw = np.array([[1.0, 3.0], [-1.0, 1.0], [0.0, 0.0]])
    expected = np.sign(raw) * np.sqrt(np.abs(raw))
    expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-12)
    expected = expected.ravel() / np.linalg.norm(expected)
    np.testing.assert_allclose(vlad(descriptors, centroids), expected, rtol=1e-6)
    plain = vlad(descriptors, centroids, power_norm=False, intra_norm=False)
    np.testing.assert_allclose(plain, raw.ravel() / np.linalg.norm(raw), rtol=1e-6)


def test_fitted_descriptors_are_unit_deterministic_and_batched(fitted):
    images = _textures(3, seed=5)
    assert fitted.descriptor_dim == 6 and fitted.name == "densevlad"
    d = fitted.describe(images[0])
    assert d.shape == (6,) and d.dtype == np.float32 and abs(np.linalg.norm(d) - 1) < 1e-5
    np.testing.assert_allclose(fitted.describe_batch(images), np.stack([fitted.describe(im) for im in images]),
                               atol=1e-6)
    again = DenseVLAD.fit(_textures(10), SMALL, progress=False)
    np.testing.assert_allclose(again.describe(images[1]), fitted.describe(images[1]), atol=1e-5)
    assert fitted.describe_batch([]).shape == (0, 6)


def test_pca_is_capped_by_the_number_of_fitting_images(caplog):
    # 9 directions from 10 images: at least half of pca_dim 12, so the PCA is kept, capped to 9 components.
    model = DenseVLAD.fit(_textures(10), DenseVLADConfig(num_clusters=8, pca_dim=12, grid_step=8), progress=False)
    assert model.descriptor_dim == 9
    assert "only 10 fitting images" in caplog.text
    raw = DenseVLAD.fit(_textures(4), DenseVLADConfig(num_clusters=8, pca_dim=None, grid_step=8), progress=False)
    assert raw.descriptor_dim == 8 * 128


def test_a_small_fitting_set_keeps_the_raw_vlad(caplog):
    """20 images span 19 directions: a 19-D PCA would throw away everything else, so the raw VLAD is kept."""
    import logging

    images = _textures(20)
    with caplog.at_level(logging.INFO, logger="hierloc.models.densevlad"):
        model = DenseVLAD.fit(images, DenseVLADConfig(), progress=False)
    assert DenseVLADConfig().pca_dim == 4096 and model.descriptor_dim == 8192  # not 19
    assert model.pca_matrix is None and model.info["pca"].startswith("skipped: 20 fitting images")
    assert "keeping the raw 8192-D VLAD" in caplog.text
    descriptors = model.describe_batch(images[:3])
    np.testing.assert_allclose(descriptors, np.stack([model.raw_vlad(im) for im in images[:3]]), atol=1e-6)
    assert not DenseVLADConfig().pca_fits(20) and DenseVLADConfig().pca_fits(2049)
    assert DenseVLADConfig(min_pca_fraction=0.0).pca_fits(20)  # the old behaviour: PCA capped to n - 1
    assert DenseVLAD(model.config, model.centroids).with_pca(np.stack([model.raw_vlad(im) for im in images])) \
        .descriptor_dim == 8192  # with_pca follows the same rule
    with pytest.raises(ValueError, match="min_pca_fraction"):
        DenseVLADConfig(min_pca_fraction=2.0)


def test_save_and_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "vocab.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.npz"]  # no temporary file left
    loaded = load_densevlad(path)
    assert loaded.config == fitted.config and loaded.descriptor_dim == fitted.descriptor_dim
    image = _textures(1, seed=9)[0]
    np.testing.assert_array_equal(loaded.describe(image), fitted.describe(image))
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz: not a DenseVLAD vocabulary file"):
        DenseVLAD.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="needs a vocabulary file"):
        load_densevlad("auto")
    with np.load(path) as data:  # a file written before the flat-patch filter existed keeps its behaviour
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays["config_json"]))
    del config["min_patch_contrast"]
    arrays["config_json"] = np.array(json.dumps(config))
    np.savez(tmp_path / "old.npz", **arrays)
    assert DenseVLAD.load(tmp_path / "old.npz").config.min_patch_contrast == 0.0
    with pytest.raises(ValueError, match="DenseVLAD detector"):
        DenseVLADConfig(detector="harris")


def test_retrieves_changed_views_of_the_same_texture(fitted):
    references = _textures(10)
    rng = np.random.default_rng(3)
    queries = []
    for image in references[:6]:
        changed = np.clip(image.astype(np.float32) * 0.8 + 30 + rng.normal(0, 4, image.shape), 0, 255)
        queries.append(np.roll(changed.astype(np.uint8), 3, axis=1))  # brighter, noisier, shifted 3 px
    similarity = fitted.describe_batch(queries) @ fitted.describe_batch(references).T
    assert (similarity.argmax(axis=1) == np.arange(6)).mean() >= 5 / 6


def test_fit_command_and_extraction_through_the_cli(tmp_path):
    from hierloc.cli.main import main as hierloc

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(_textures(6)):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    assert main([str(folder), "--out", str(tmp_path / "v.npz"), "--num-clusters", "8", "--pca-dim", "4",
                 "--grid-step", "8"]) == 0
    assert DenseVLAD.load(tmp_path / "v.npz").descriptor_dim == 4
    code = hierloc(["extract", str(folder), "--out", str(tmp_path / "d.h5"), "--model", "densevlad",
                    "--weights", str(tmp_path / "v.npz")])
    assert code == 0
    from hierloc.extraction import read_global_descriptors

    names, descriptors = read_global_descriptors(tmp_path / "d.h5")
    assert len(names) == 6 and descriptors.shape == (6, 4)


_FIT_SCRIPT = """
import hashlib, sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from hierloc.models.densevlad import kmeans_float64, pca_float64
rng = np.random.default_rng(5)
features = rng.normal(size=(6000, 128)).astype(np.float32)
vectors = rng.normal(size=(300, 700)).astype(np.float32) * np.linspace(2.0, 0.1, 700, dtype=np.float32)
digest = hashlib.sha1(kmeans_float64(features, 24, iterations=8, seed=3).tobytes())
for array in pca_float64(vectors, 40):
    digest.update(array.tobytes())
print(digest.hexdigest())
"""


def test_kmeans_and_pca_are_the_same_bits_whatever_the_thread_counts():
    import os
    import subprocess
    import sys

    digests = set()
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        done = subprocess.run([sys.executable, "-c", _FIT_SCRIPT, threads], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_kmeans_float64_finds_separated_clusters_and_refills_empty_ones():
    from hierloc.models.densevlad import kmeans_float64

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + 0.1 * rng.normal(size=(50, 2)) for c in centres])
    found = kmeans_float64(points, 3, iterations=20, seed=1)
    assert found.dtype == np.float32 and found.shape == (3, 2)
    matched = centres[np.argmin(((found[:, None] - centres[None]) ** 2).sum(-1), axis=1)]
    assert len({tuple(c) for c in matched.tolist()}) == 3
    np.testing.assert_allclose(found, matched, atol=0.05)
    np.testing.assert_array_equal(found, kmeans_float64(points, 3, iterations=20, seed=1))
    # Duplicated rows leave initial centres without members: they take the farthest rows instead.
    duplicates = np.concatenate([np.zeros((20, 2)), [[5.0, 5.0]]])
    refilled = kmeans_float64(duplicates, 2, iterations=5, seed=0)
    assert {tuple(r) for r in refilled.tolist()} == {(0.0, 0.0), (5.0, 5.0)}
    with pytest.raises(ValueError, match="at least 4 rows"):
        kmeans_float64(points[:3], 4)


def test_pca_float64_matches_the_eigendecomposition_with_one_sign_convention():
    from hierloc.models.densevlad import pca_float64

    rng = np.random.default_rng(1)
    for shape in ((40, 12), (8, 30)):  # covariance path and Gram path
        x = rng.normal(size=shape) * np.linspace(3.0, 0.5, shape[1])
        out_dim = min(shape[0] - 1, shape[1], 5)
        mean, components, eigenvalues = pca_float64(x, out_dim)
        centred = x - x.mean(0)
        values, vectors = np.linalg.eigh(centred.T @ centred / len(x))
        np.testing.assert_allclose(mean, x.mean(0), atol=1e-12)
        np.testing.assert_allclose(eigenvalues, values[::-1][:out_dim], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.abs(components @ vectors[:, ::-1][:, :out_dim]), np.eye(out_dim), atol=1e-8)
        rows = np.arange(out_dim)
        assert (components[rows, np.abs(components).argmax(1)] > 0).all()
