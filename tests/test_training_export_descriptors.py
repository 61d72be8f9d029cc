"""Teacher descriptor export: layout, h5 copy, resume, crash safety, CLI."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import torch

from hierloc.cli.main import main
from hierloc.training.data import list_distillation_items
from hierloc.training.export_descriptors import export_descriptors
from hierloc.utils.images import ImageReadError


class MeanTeacher:
    """A describer whose descriptor is (mean, height, width) of the image it is given."""

    name = "mean-teacher"
    descriptor_dim = 3

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def describe_batch(self, images):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("teacher crashed")
        return np.array([[im.mean(), im.shape[0], im.shape[1]] for im in images], np.float32)


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    (root / "seq").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        name = f"seq/{i}.jpg" if i % 2 else f"{i}.png"
        cv2.imwrite(str(root / name), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    return root


def test_layout_h5_and_resume(images, tmp_path):
    out = tmp_path / "desc"
    summary = export_descriptors(MeanTeacher(), [images], out, preprocessing={"resize": [12, 16], "grayscale": True},
                                 batch_size=2)
    assert summary["written"] == 5 and summary["h5_entries"] == 5
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy")) == [
        "0.npy", "2.npy", "4.npy", "seq/1.npy", "seq/3.npy"]
    descriptor = np.load(out / "seq" / "1.npy")
    assert descriptor.dtype == np.float32 and list(descriptor[1:]) == [12, 16]  # resized before the teacher
    with h5py.File(out / "descriptors.h5", "r") as f:
        np.testing.assert_array_equal(f["seq/1.jpg/global_descriptor"][()], descriptor)
    again = export_descriptors(MeanTeacher(), [images], out, preprocessing={"resize": [12, 16]}, batch_size=2)
    assert again["written"] == 0 and again["skipped_existing"] == 5
    # the folder is directly usable as distillation targets, as .npy files or through the h5 file
    for target in (out, out / "descriptors.h5"):
        items = list_distillation_items({"image_folders": [str(images)], "descriptor_folders": [str(target)],
                                         "shuffle": False})
        assert len(items) == 5


def test_a_crash_keeps_finished_descriptors_and_leaves_no_partial_file(images, tmp_path):
    out = tmp_path / "desc"
    with pytest.raises(RuntimeError, match="teacher crashed"):
        export_descriptors(MeanTeacher(fail_after=1), [images], out, batch_size=2)
    assert len(list(out.rglob("*.npy"))) == 2
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    summary = export_descriptors(MeanTeacher(), [images], out, batch_size=2)
    assert (summary["written"], summary["skipped_existing"]) == (3, 2)


def test_unreadable_images_stop_or_are_skipped(images, tmp_path):
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        export_descriptors(MeanTeacher(), [images], tmp_path / "a", batch_size=1)
    summary = export_descriptors(MeanTeacher(), [images], tmp_path / "b", skip_unreadable=True)
    assert summary["unreadable"] == ["broken.jpg"] and summary["written"] == 5


def test_cli_as_dataset_with_a_network_teacher(images, tmp_path, capsys):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["export-descriptors", str(images), "--name", "teacher/mobilenetvlad", "--as-dataset",
                     "--data-root", str(tmp_path / "data"), "--model", "mobilenetvlad", "--weights", "none",
                     "--resize", "32", "48", "--grayscale", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(previous)
    out = tmp_path / "data" / "teacher" / "mobilenetvlad"
    assert len(list(out.rglob("*.npy"))) == 5 and np.load(out / "0.npy").shape == (4096,)
    assert "5 descriptors written (4096-D, mobilenetvlad)" in capsys.readouterr().out
