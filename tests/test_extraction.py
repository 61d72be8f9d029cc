"""hloc-layout h5 files, unreadable images, resuming, concurrent queries, the `extract` command."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import h5py
import numpy as np
import pytest
from conftest import shared_path

from hierloc.cli.main import main
from hierloc.extraction import GlobalExtractor, extract_global_descriptors, read_global_descriptors
from hierloc.models import build_model
from hierloc.utils.images import ImageReadError


@pytest.fixture(scope="module")
def extractor():
    return GlobalExtractor(build_model("mobilenetvlad", reduction_dim=512), device="cpu")


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / f"img{i}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "sub" / "deep.jpg"), rng.integers(0, 256, (40, 56), dtype=np.uint8))
    cv2.imwrite(str(root / "sub" / "sixteen.png"), rng.integers(0, 65535, (40, 56), dtype=np.uint16))
    return root


def test_h5_layout_is_hlocs(extractor, image_folder, tmp_path):
    out = tmp_path / "global.h5"
    summary = extract_global_descriptors(extractor, [image_folder], out, batch_size=2)
    assert summary["written"] == 5
    with h5py.File(out, "r") as f:
        assert set(f) == {"img0.png", "img1.png", "img2.png", "sub"}
        d = f["sub/deep.jpg/global_descriptor"]
        assert d.shape == (512,) and d.dtype == np.float32
    names, descriptors = read_global_descriptors(out)
    assert names == ["img0.png", "img1.png", "img2.png", "sub/deep.jpg", "sub/sixteen.png"]
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, rtol=1e-5)


def test_unreadable_image_stops_with_its_name_and_keeps_the_finished_part(extractor, image_folder, tmp_path):
    (image_folder / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "global.h5"
    with pytest.raises(ImageReadError, match="img1.png"):
        extract_global_descriptors(extractor, [image_folder], out)
    names, _ = read_global_descriptors(out)
    assert names == ["img0.png"]  # written before the bad image, kept
    summary = extract_global_descriptors(extractor, [image_folder], out, skip_unreadable=True)
    assert summary["skipped_existing"] == 1 and summary["written"] == 3
    assert summary["unreadable"] == [str(image_folder / "img1.png")]
    assert len(read_global_descriptors(out)[0]) == 4


def test_resume_skips_existing_and_recomputes_nothing(extractor, image_folder, tmp_path):
    out = tmp_path / "global.h5"
    extract_global_descriptors(extractor, [image_folder / "img0.png"], out)
    _, first = read_global_descriptors(out, ["img0.png"])
    summary = extract_global_descriptors(extractor, [image_folder], out)
    assert summary["skipped_existing"] == 1 and summary["written"] == 4
    np.testing.assert_array_equal(read_global_descriptors(out, ["img0.png"])[1], first)


def test_concurrent_single_image_calls_equal_serial_ones(extractor):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(6)] * 2
    serial = [extractor.describe(im) for im in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(extractor.describe, images))
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_extract_command(image_folder, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    assert main(["extract", str(image_folder), "--out", str(out), "--model", "mobilenetvlad", "--weights", "none",
                 "--threads", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    names, descriptors = read_global_descriptors(out)
    assert len(names) == 5 and descriptors.shape == (5, 4096)


def test_extract_command_reports_missing_input(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.h5")]) == 1
    assert "nothing: no such file or folder" in capsys.readouterr().err


def test_extract_seed_images(tmp_path):
    seed = shared_path("seed", "images")
    out = tmp_path / "seed.h5"
    assert main(["extract", "--model", "mobilenetvlad", "--weights", "none", str(seed), "--out", str(out)]) == 0
    names, descriptors = read_global_descriptors(out)
    assert len(names) == 4 and descriptors.shape == (4, 4096)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, rtol=1e-5)
