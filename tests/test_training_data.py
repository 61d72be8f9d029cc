"""Distillation data, sampler, augmentation and triplet mining."""

from __future__ import annotations

import itertools

import cv2
import h5py
import numpy as np
import pytest
import torch

from hierloc.training.augmentation import build_augmentation
from hierloc.training.config import complete_config, load_config, parse_override, shipped_configs
from hierloc.training.data import (
    DatasetError,
    DistillationDataset,
    InfiniteShuffledSampler,
    collate,
    list_distillation_items,
    preprocess_image,
    split_items,
)
from hierloc.training.triplets import mine_triplets


def make_folder(root, count=12, with_h5=False, size=(20, 30)):
    rng = np.random.default_rng(0)
    (root / "images" / "sub").mkdir(parents=True)
    (root / "desc" / "sub").mkdir(parents=True)
    names = []
    for i in range(count):
        name = f"sub/im{i:02d}" if i % 3 == 0 else f"im{i:02d}"
        cv2.imwrite(str(root / "images" / f"{name}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        np.save(root / "desc" / f"{name}.npy", np.full(4, i, np.float32))
        names.append(f"{name}.png")
    if with_h5:
        with h5py.File(root / "desc.h5", "w") as f:
            for i, name in enumerate(names):
                f.create_group(name).create_dataset("global_descriptor", data=np.full(4, i, np.float32))
    return names


def data_config(**values):
    config = {"image_folders": ["images"], "descriptor_folders": ["desc"], "shuffle": True, "seed": 0,
              "truncate": None}
    config.update(values)
    return config


def test_items_pair_images_with_npy_descriptors_shuffled_with_seed_0(tmp_path):
    names = make_folder(tmp_path)
    items = list_distillation_items(data_config(), tmp_path)
    assert sorted(it.name for it in items) == sorted(names)
    assert [it.name for it in items] != sorted(names)  # shuffled
    assert [it.name for it in items] == [it.name for it in list_distillation_items(data_config(), tmp_path)]
    for item in items:
        assert item.target.name == item.name.split("/")[-1].replace(".png", ".npy")


def test_truncation_and_validation_split(tmp_path):
    make_folder(tmp_path)
    items = list_distillation_items(data_config(truncate=7), tmp_path)
    assert len(items) == 7
    train, validation = split_items(items, 3)
    assert validation == items[:3] and train == items[3:]
    with pytest.raises(DatasetError, match="no training data"):
        split_items(items, 7)


def test_h5_descriptors_give_the_same_targets_as_npy(tmp_path):
    make_folder(tmp_path, with_h5=True)
    preprocessing = {"resize": [16, 24], "grayscale": True}
    npy = DistillationDataset(list_distillation_items(data_config(), tmp_path), preprocessing)
    h5 = DistillationDataset(list_distillation_items(data_config(descriptor_folders=["desc.h5"]), tmp_path),
                             preprocessing)
    for i in range(len(npy)):
        a, b = npy[i], h5[i]
        assert a["name"] == b["name"]
        assert torch.equal(a["descriptor"], b["descriptor"])
        assert a["image"].shape == (1, 16, 24) and a["image"].dtype == torch.uint8


def test_missing_descriptors_are_reported_with_examples(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "desc" / "im01.npy").unlink()
    with pytest.raises(DatasetError, match=r"no teacher descriptor for 1 .*im01\.png"):
        list_distillation_items(data_config(), tmp_path)
    with pytest.raises(DatasetError, match="no such descriptor folder"):
        list_distillation_items(data_config(descriptor_folders=["nowhere"]), tmp_path)


def test_cache_gives_identical_samples(tmp_path):
    make_folder(tmp_path)
    items = list_distillation_items(data_config(), tmp_path)
    preprocessing = {"resize": [16, 24], "grayscale": True}
    cached = DistillationDataset(items, preprocessing, cache_in_memory=True)
    plain = DistillationDataset(items, preprocessing)
    assert len(cached.cache.images) == len(items)
    assert all(torch.equal(cached[i]["image"], plain[i]["image"]) for i in range(len(items)))


def test_preprocessing_resizes_bilinear_and_converts_to_grayscale():
    image = np.zeros((10, 20, 3), np.uint8)
    image[..., 0] = 100  # red only: luma 0.299 * 100
    out = preprocess_image(image, [5, 8], grayscale=True)
    assert out.shape == (5, 8, 1) and out.dtype == np.uint8
    assert np.all(out == 30)
    assert preprocess_image(image, None, grayscale=False).shape == (10, 20, 3)


def test_collate_explains_different_sizes():
    with pytest.raises(DatasetError, match="preprocessing.resize"):
        collate([{"image": torch.zeros(1, 4, 4)}, {"image": torch.zeros(1, 5, 4)}])


def test_sampler_resumes_the_same_stream_and_splits_it_across_ranks():
    full = list(itertools.islice(iter(InfiniteShuffledSampler(7, seed=3)), 30))
    assert sorted(full[:7]) == list(range(7)) and sorted(full[7:14]) == list(range(7))
    assert full[:7] != full[7:14]  # reshuffled every epoch
    resumed = list(itertools.islice(iter(InfiniteShuffledSampler(7, seed=3, start=11)), 19))
    assert resumed == full[11:]
    rank0 = list(itertools.islice(iter(InfiniteShuffledSampler(7, seed=3, rank=0, world_size=2)), 10))
    rank1 = list(itertools.islice(iter(InfiniteShuffledSampler(7, seed=3, rank=1, world_size=2)), 10))
    assert rank0 == full[0:20:2] and rank1 == full[1:20:2]


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    augment = build_augmentation({"photometric": {"enable": True}, "crop": {"enable": True}}, (24, 32))
    images = torch.randint(0, 256, (3, 1, 24, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    a = augment(images)
    torch.manual_seed(0)
    b = augment(images)
    assert a.shape == (3, 1, 24, 32) and a.min() >= 0 and a.max() <= 255
    assert torch.equal(a, b) and not torch.equal(a, images.float())
    assert build_augmentation({}, (24, 32)) is None
    with pytest.raises(ValueError, match="unknown photometric"):
        build_augmentation({"photometric": {"enable": True, "primitives": ["sepia"]}}, (24, 32))


def test_mined_triplets_respect_the_distances():
    rng = np.random.default_rng(1)
    positions = np.cumsum(rng.uniform(0.5, 1.5, (200, 3)) * [1, 1, 0], axis=0)
    missions = np.array(["a", "b"] * 100)
    triplets = mine_triplets(positions, 3.0, 20.0, missions=missions, cross_mission_positives=True, seed=0)
    a, p, n = positions[triplets[:, 0]], positions[triplets[:, 1]], positions[triplets[:, 2]]
    assert np.all(np.linalg.norm(a - p, axis=1) <= 3.0)
    assert np.all(np.linalg.norm(a - n, axis=1) > 20.0)
    assert np.all(missions[triplets[:, 0]] != missions[triplets[:, 1]])
    assert np.all(triplets[:, 0] != triplets[:, 1])
    assert np.array_equal(triplets, mine_triplets(positions, 3.0, 20.0, missions=missions,
                                                  cross_mission_positives=True, seed=0))
    with pytest.raises(ValueError, match="no triplet"):
        mine_triplets(positions, 0.01, 20.0)


def test_shipped_configs_load_and_typos_are_refused(tmp_path):
    assert {"mobilenetvlad_train_distill", "netvlad_train_triplets", "delf_train_triplets",
            "netvlad_export_distill"} <= set(shipped_configs())
    config = load_config("mobilenetvlad_train_distill")
    assert (config["model"]["batch_size"], config["model"]["learning_rate"], config["train_iter"],
            config["validation_interval"], config["data"]["preprocessing"]["resize"]) == (16, 0.001, 150000, 500,
                                                                                           [480, 640])
    with pytest.raises(ValueError, match="unknown model"):
        complete_config({"model": {"name": "mobilenetvlad", "n_clusterz": 3}})
    # the original's key names are accepted
    assert complete_config({"model": {"n_clusters": 8}})["model"]["num_clusters"] == 8
    assert parse_override("model.batch_size=4") == {"model": {"batch_size": 4}}
