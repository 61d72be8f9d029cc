"""Tests of 128-bit ids and the in-memory DescriptorIndex (validation, subset, concatenate, compatibility)."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hierloc.index import (
    DescriptorIndex,
    IndexCompatibilityError,
    IndexFormatError,
    IndexValidationError,
    id_to_pair,
    is_valid_id,
    normalize_id,
    pair_to_id,
    stable_id,
)


def make_index(n: int = 6, d: int = 8, seed: int = 0, poses: bool = True, model: str = "netvlad") -> DescriptorIndex:
    rng = np.random.default_rng(seed)
    descriptors = rng.normal(size=(n, d)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    return DescriptorIndex(
        model_name=model,
        data_name="lindenhof",
        descriptors=descriptors,
        keyframe_ids=[stable_id(f"{seed}-{i}") for i in range(n)],
        missions=[f"mission{i % 2}" for i in range(n)],
        names=[f"cam0/{i:04d}.png" for i in range(n)],
        positions=rng.normal(size=(n, 3)) if poses else None,
        rotations=Rotation.random(n, random_state=seed).as_matrix() if poses else None,
        metadata={"model": {"name": model}},
    )


# --- ids -------------------------------------------------------------------------------------


def test_id_pair_round_trip_and_word_order():
    hex_id = "0123456789abcdef" + "fedcba9876543210"
    first, second = id_to_pair(hex_id)
    assert first == 0x0123456789ABCDEF and second == 0xFEDCBA9876543210
    assert pair_to_id(first, second) == hex_id
    assert pair_to_id(np.uint64(1), np.uint64(2**64 - 1)) == "0000000000000001" + "f" * 16
    assert pair_to_id(0, 0) == "0" * 32


def test_stable_id_is_deterministic_128_bit_hex():
    assert stable_id("mission/vertex 7") == stable_id("mission/vertex 7")
    assert stable_id("a") != stable_id("b")
    assert is_valid_id(stable_id("a")) and len(stable_id("a")) == 32


@pytest.mark.parametrize("bad", ["", "xyz", "0" * 31, "0" * 33, "g" * 32, 12])
def test_invalid_ids_are_refused(bad):
    assert not is_valid_id(bad)
    with pytest.raises(ValueError, match="32 hex"):
        normalize_id(bad)


def test_id_words_out_of_range_are_refused():
    for first, second in ((-1, 0), (2**64, 0), (0, 1.5), (True, 0)):
        with pytest.raises(ValueError, match="2\\*\\*64"):
            pair_to_id(first, second)


# --- DescriptorIndex -------------------------------------------------------------------------


def test_defaults_and_properties():
    descriptors = np.eye(3, 5, dtype=np.float64)
    ids = [stable_id(str(i)).upper() for i in range(3)]
    index = DescriptorIndex("m", "map", descriptors, ids)
    assert len(index) == 3 and index.descriptor_size == 5
    assert index.descriptors.dtype == np.float32
    assert index.keyframe_ids == [i.lower() for i in ids]
    assert index.resource_names == index.keyframe_ids
    assert index.missions == [""] * 3 and index.names == [""] * 3
    assert index.frame_index.dtype == np.uint32 and not index.frame_index.any()
    assert not index.has_poses and "frames=3" in repr(index)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(descriptors=np.zeros(4, np.float32)), "descriptors must be an \\(N, D\\) matrix"),
        (dict(descriptors=np.zeros((6, 8), np.int32)), "floating point"),
        (dict(descriptors=np.full((6, 8), np.nan, np.float32)), "descriptors row 0 contains NaN"),
        (dict(keyframe_ids=["nothex"] * 6), "keyframe_ids\\[0\\]"),
        (dict(missions=["a"] * 5), "missions has 5 entries, expected one per descriptor \\(6\\)"),
        (dict(names="abc"), "names must be a sequence of strings"),
        (dict(frame_index=np.full(6, -1)), "uint32"),
        (dict(positions=np.zeros((6, 2))), "positions must have shape \\(6, 3\\)"),
        (dict(rotations=np.tile(2 * np.eye(3), (6, 1, 1))), "rotations\\[0\\] is not a rotation matrix"),
        (dict(metadata={"array": np.zeros(2)}), "JSON-serialisable"),
        (dict(model_name=3), "model_name must be a string"),
    ],
)
def test_validation_errors_are_clear(change, message):
    fields = {f.name: getattr(make_index(), f.name) for f in dataclasses.fields(DescriptorIndex)}
    fields.update(change)
    with pytest.raises(IndexValidationError, match=message):
        DescriptorIndex(**fields)


def test_non_finite_row_is_reported():
    index = make_index()
    descriptors = index.descriptors.copy()
    descriptors[4, 2] = np.inf
    with pytest.raises(IndexValidationError, match="descriptors row 4"):
        dataclasses.replace(index, descriptors=descriptors)


def test_subset_by_mask_and_indices():
    index = make_index(n=6)
    by_indices = index.subset([4, 1, -1])
    assert by_indices.keyframe_ids == [index.keyframe_ids[i] for i in (4, 1, 5)]
    np.testing.assert_array_equal(by_indices.descriptors, index.descriptors[[4, 1, 5]])
    np.testing.assert_array_equal(by_indices.rotations, index.rotations[[4, 1, 5]])
    assert by_indices.names == [index.names[i] for i in (4, 1, 5)]
    mask = np.array([True, False, True, False, False, True])
    by_mask = index.subset(mask)
    assert by_mask.missions == [index.missions[i] for i in (0, 2, 5)]
    assert len(index.subset([])) == 0 and index.subset([]).descriptor_size == 8
    with pytest.raises(IndexValidationError, match="row indices"):
        index.subset([6])
    with pytest.raises(IndexValidationError, match="boolean mask"):
        index.subset(mask[:3])


def test_concatenate_and_refusals():
    a, b = make_index(n=3, seed=1), make_index(n=4, seed=2)
    both = a.concatenate(b)
    assert len(both) == 7 and both.keyframe_ids == a.keyframe_ids + b.keyframe_ids
    np.testing.assert_array_equal(both.positions, np.concatenate([a.positions, b.positions]))
    with pytest.raises(IndexCompatibilityError, match="model 'other'"):
        a.concatenate(make_index(model="other"))
    with pytest.raises(IndexCompatibilityError, match="16-D"):
        a.concatenate(make_index(d=16))
    with pytest.raises(IndexCompatibilityError, match="positions"):
        a.concatenate(make_index(poses=False))


def test_check_compatible_names_the_building_model():
    index = make_index(d=8, model="mobilenetvlad_depth-0.35")
    index.check_compatible("mobilenetvlad_depth-0.35", 8)
    with pytest.raises(IndexCompatibilityError, match="built by model 'mobilenetvlad_depth-0.35'.*'netvlad' is in use"):
        index.check_compatible("netvlad", 8)
    with pytest.raises(IndexCompatibilityError, match="8-D descriptors.*size 4096"):
        index.check_compatible(descriptor_size=4096)


def test_format_error_names_file_and_survives_pickling():
    error = pickle.loads(pickle.dumps(IndexFormatError("maps/a.pb", "truncated")))
    assert str(error) == "maps/a.pb: truncated" and error.path == "maps/a.pb" and error.problem == "truncated"
