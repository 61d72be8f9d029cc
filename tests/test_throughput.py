"""Index building throughput: DataLoader workers, batches, resizing, and low-precision inference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hierloc.extraction import GlobalExtractor, image_to_tensor
from hierloc.extraction.pipeline import BatchConfig, describe_items, resize_image
from hierloc.index.build import build_index
from hierloc.maps import load_map
from hierloc.models import build_model
from hierloc.utils.images import read_image


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Two spinning OpenMP threads on a 2-core machine shared with other jobs are many times slower
    than one for these tiny images; the results do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def extractor():
    return GlobalExtractor(build_model("mobilenetvlad", reduction_dim=256), device="cpu")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):
        size = (48, 64) if i % 4 else (40, 56)  # two sizes in one batch
        path = root / f"{i:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(path)
    (root / "05.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return paths


def collect(extractor, paths, config):
    positions, chunks, failures = [], [], []
    for batch_positions, descriptors, batch_failures in describe_items(extractor, paths, read_image, config,
                                                                       progress=False):
        positions += batch_positions
        chunks.append(descriptors)
        failures += batch_failures
    return positions, np.concatenate(chunks), failures


def test_workers_and_batches_give_the_serial_descriptors_in_order(extractor, image_files):
    serial = [extractor.describe(read_image(p)) for i, p in enumerate(image_files) if i != 5]
    for config in (BatchConfig(batch_size=1, num_workers=0), BatchConfig(batch_size=4, num_workers=2)):
        positions, descriptors, failures = collect(extractor, image_files, config)
        assert positions == [i for i in range(11) if i != 5]
        assert [p for p, _ in failures] == [5] and "05.png" in failures[0][1]
        np.testing.assert_allclose(descriptors, np.stack(serial), atol=2e-5)


def test_resize_happens_in_the_loader(extractor, image_files):
    config = BatchConfig(batch_size=8, num_workers=2, resize=(32, 24))
    _, descriptors, _ = collect(extractor, image_files[:4], config)
    expected = extractor.run(torch.cat([image_to_tensor(resize_image(read_image(p), (32, 24)))
                                        for p in image_files[:4]]))
    np.testing.assert_allclose(descriptors, expected, atol=2e-5)
    image = np.zeros((40, 60), np.uint8)
    assert resize_image(image, (30, 20)).shape == (20, 30) and resize_image(image, None) is image
    with pytest.raises(ValueError, match="resize must be"):
        BatchConfig(resize=(0, 10))
    with pytest.raises(ValueError, match="batch size"):
        BatchConfig(batch_size=0)


def test_build_index_with_workers_equals_without(extractor, image_files, tmp_path):
    root = tmp_path / "map"
    (root / "m1").mkdir(parents=True)
    for p in image_files:
        (root / "m1" / p.name).write_bytes(p.read_bytes())
    map_ = load_map(root, kind="folder")
    from hierloc.describers import NetworkDescriber, Preprocessing

    plain, report = build_index(map_, NetworkDescriber(extractor.model, Preprocessing()), batch_size=1, io_workers=0)
    fast, fast_report = build_index(map_, NetworkDescriber(extractor.model, Preprocessing(resize=(64, 48))),
                                    batch_size=8, io_workers=2)
    assert report.indexed == fast_report.indexed == {"m1": 10}
    assert [name for name, _ in report.skipped] == [name for name, _ in fast_report.skipped] == ["m1/05.png"]
    assert plain.keyframe_ids == fast.keyframe_ids and plain.model_name == "mobilenetvlad"
    # Same pixels for the 64x48 frames (no resize needed), so the same descriptors.
    same = [i for i, name in enumerate(plain.names) if int(name[-6:-4]) % 4]
    np.testing.assert_allclose(fast.descriptors[same], plain.descriptors[same], atol=2e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_keeps_descriptors_close(precision):
    model = build_model("mobilenetvlad", reduction_dim=256)
    reference = GlobalExtractor(model, device="cpu", precision="fp32")
    low = GlobalExtractor(model, device="cpu", precision=precision)
    rng = np.random.default_rng(2)
    # Smooth images with structure, as camera images have (pure noise is the worst case for rounding).
    images = [cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (9, 9), 3) for _ in range(4)]
    batch = torch.cat([image_to_tensor(im) for im in images])
    expected = reference.run(batch)
    for _ in range(3):  # eager, then traced from the second call of this shape
        got = low.run(batch)
        cosine = np.sum(got * expected, axis=1)
        assert cosine.min() > 0.99, cosine
    assert low._trunk is not None and next(low._trunk.parameters()).dtype != torch.float32
    assert next(model.parameters()).dtype == torch.float32  # the shared model itself stays fp32
