"""Untrusted index-side files: indexes and side files, hloc h5 files, checkpoints, ground truth, MatConvNet files.

Each test damages a small synthetic file the way the QA fuzzing did (issue 14) and checks that hierloc
refuses it with one error naming the file, or (for a side file) warns and rebuilds, never reading garbage.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hierloc.cli.main import main
from hierloc.datasets.ground_truth import read_ground_truth_file
from hierloc.extraction.h5_features import read_global_descriptors
from hierloc.features.h5io import FeatureFileError, read_features, write_features
from hierloc.features.types import LocalFeatures
from hierloc.index import PCA, DescriptorIndex, IndexFormatError, load_index, read_native_catalog, save_index
from hierloc.index.native_format import edit_native_index, read_text_dataset, strings_sha256, write_text_dataset
from hierloc.index.proto_format import DescriptorIndexMessage, decode_proto_index
from hierloc.index.stored_search import (
    StoredSearchInfo,
    build_search,
    load_retriever,
    save_index_with_search,
)
from hierloc.index.update import add_keyframes, remove_mission
from hierloc.models import build_model, read_checkpoint, save_checkpoint
from hierloc.models.checkpoint import CHECKSUM_KEY, CheckpointError
from hierloc.models.configs import config_from_dict
from hierloc.models.convert.common import ConversionError
from hierloc.models.convert.netvlad_mat import convert_netvlad_mat
from hierloc.models.loading import load_model
from hierloc.utils.ids import stable_id
from hierloc.utils.safe_npy import UnsafeNpyError, load_npy

ROOT = Path(__file__).resolve().parents[1]


def _index(n: int = 40, d: int = 8, missions: tuple[str, ...] = ("a", "b"), seed: int = 0,
           prefix: str = "kf") -> DescriptorIndex:
    rng = np.random.default_rng(seed)
    descriptors = rng.standard_normal((n, d)).astype(np.float32)
    return DescriptorIndex(
        model_name="m", data_name="map", descriptors=descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True),
        keyframe_ids=[stable_id(f"{prefix}{i}") for i in range(n)], missions=[missions[i % len(missions)]
                                                                           for i in range(n)],
        names=[f"{prefix}{i}.png" for i in range(n)])


def _saved_with_hnsw(path: Path, index: DescriptorIndex | None = None, pca_dims: int | None = None) -> Path:
    index = index or _index()
    backend = build_search(index, "hnsw", pca_dims=pca_dims)
    side = save_index_with_search(index, backend, path, pca=index.pca if pca_dims else None)
    assert side is not None and side.is_file()
    return side


def _edit_metadata(path: Path, edit) -> None:
    with edit_native_index(path) as f:
        metadata = json.loads(read_text_dataset(f, "metadata_json"))
        edit(metadata)
        write_text_dataset(f, "metadata_json", json.dumps(metadata))


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(lines)
    return lines[-1]


# --------------------------------------------------------------------------- protobuf index sizes


def test_proto_huge_descriptor_size_is_refused_before_allocating():
    message = DescriptorIndexMessage(model_name="m", data_name="d", descriptor_size=2**40)
    for i in range(3):
        frame = message.frames.add(frame_index=0, resource_name="r")
        frame.vertex_id.uint.extend([1, i + 1])
        frame.global_descriptor.data.extend([0.5] * 4)
    with pytest.raises(IndexFormatError, match="x.pb: descriptor_size is 1099511627776"):
        decode_proto_index(message.SerializeToString(), source="x.pb")
    message.descriptor_size = 4
    message.frames[2].global_descriptor.data.extend([0.5] * 100)
    with pytest.raises(IndexFormatError, match="frame 2: global_descriptor .* holds 104 values"):
        decode_proto_index(message.SerializeToString(), source="x.pb")


def test_proto_nan_descriptors_and_duplicate_ids_are_refused(tmp_path):
    index = _index(4)
    save_index(index, tmp_path / "map.pb")
    message = DescriptorIndexMessage()
    message.ParseFromString((tmp_path / "map.pb").read_bytes())
    message.frames[1].global_descriptor.data[0] = float("nan")
    with pytest.raises(IndexFormatError, match="descriptors row 1 contains NaN"):
        decode_proto_index(message.SerializeToString(), source="map.pb")
    message.ParseFromString((tmp_path / "map.pb").read_bytes())
    message.frames[3].vertex_id.uint[:] = list(message.frames[0].vertex_id.uint)
    with pytest.raises(IndexFormatError, match="rows 0 and 3 are the same keyframe"):
        decode_proto_index(message.SerializeToString(), source="map.pb")


# --------------------------------------------------------------------------- native index contents


def test_native_sparse_huge_dataset_is_refused_before_reading(tmp_path):
    path = tmp_path / "map.h5"
    save_index(_index(), path)
    with edit_native_index(path) as f:
        del f["descriptors"]
        f.create_dataset("descriptors", shape=(2**31, 8), dtype=np.float32, chunks=(1, 8))  # no chunk written
        f.attrs["num_frames"] = 2**31
    for read in (load_index, read_native_catalog):
        with pytest.raises(IndexFormatError, match=r"map.h5: .*declares shape \(2147483648"):
            read(path)


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.attrs.__setitem__("descriptor_size", 2**40), "declares 40 frames of 1099511627776-D"),
    (lambda f: f.attrs.__setitem__("num_frames", -1), "declares -1 frames"),
    (lambda f: (f.__delitem__("keyframe_ids"), f.create_dataset("keyframe_ids", data=np.arange(40))),
     "keyframe_ids are stored as int64"),
    (lambda f: (f.__delitem__("descriptors"), f.create_dataset("descriptors", data=np.zeros((40, 8), np.int32))),
     "descriptors are stored as int32"),
    (lambda f: (f.__delitem__("names"), f.create_dataset("names", data=np.zeros(40))), "'names' holds float64"),
    (lambda f: f["keyframe_ids"].__setitem__(5, f["keyframe_ids"][0]), "rows 0 and 5 are the same keyframe"),
    (lambda f: f["descriptors"].__setitem__((3, 1), np.nan), "descriptors row 3 contains NaN"),
])
def test_native_declared_sizes_dtypes_and_values_are_validated(tmp_path, damage, message):
    path = tmp_path / "map.h5"
    save_index(_index(), path)
    with edit_native_index(path) as f:
        damage(f)
    with pytest.raises(IndexFormatError, match=f"map.h5: .*{message}"):
        load_index(path)


def test_catalog_read_validates_rows_too(tmp_path):
    path = tmp_path / "map.h5"
    save_index(_index(), path)
    with edit_native_index(path) as f:
        f["keyframe_ids"][7] = f["keyframe_ids"][2]
    with pytest.raises(IndexFormatError, match="map.h5: .*rows 2 and 7 are the same keyframe"):
        read_native_catalog(path)


def test_multi_camera_vertices_share_an_id_with_distinct_frame_numbers():
    index = _index(4)
    ids = [index.keyframe_ids[0]] * 2 + index.keyframe_ids[2:]
    DescriptorIndex(model_name="m", data_name="d", descriptors=index.descriptors, keyframe_ids=ids,
                    frame_index=[0, 1, 0, 0])


@pytest.mark.parametrize("key, value, message", [
    ("mean", np.nan, "PCA mean must be finite"),
    ("components", np.inf, "PCA components must be finite"),
    ("mean", 1e30, "PCA mean has a norm above 1"),
    ("explained_variance", 1e30, "PCA explained_variance sums to more than 2"),
])
def test_stored_pca_damage_blames_the_index_file(tmp_path, key, value, message, capsys):
    path = tmp_path / "map.h5"
    index = _index()
    index.pca = PCA.fit(index.descriptors, 4)
    save_index(index, path)
    with edit_native_index(path) as f:
        values = np.array(f["pca"][key][...])
        values.reshape(-1)[0] = value
        del f["pca"][key]
        f["pca"].create_dataset(key, data=values)
    with pytest.raises(IndexFormatError, match=f"map.h5: invalid PCA parameters: {message}"):
        load_retriever(path)
    assert f"map.h5: invalid PCA parameters: {message}" in _one_line_error(["index", "info", str(path)], capsys)


# --------------------------------------------------------------------------- stored names and side files


@pytest.mark.parametrize("name", ["../victim.faiss", "/tmp/victim.faiss", "sub/map.h5.0123abcd.faiss", "..",
                                  "victim.txt", "map.h5.0123abcd.faiss\x00"])
def test_a_recorded_side_file_name_outside_the_pattern_is_never_opened_nor_deleted(tmp_path, name, caplog):
    folder = tmp_path / "maps"
    folder.mkdir()
    path = folder / "map.h5"
    side = _saved_with_hnsw(path)
    victim = tmp_path / "victim.faiss"
    victim.write_bytes(side.read_bytes())
    (folder / "victim.txt").write_text("keep me")
    _edit_metadata(path, lambda m: m["search_index"].__setitem__("file", name))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        retriever = load_retriever(path)
    assert "is not a plain file name" in caplog.text
    assert len(retriever.retrieve(_index().descriptors[:1], k=3)[0]) == 3
    # Every writer that replaces the structure leaves the named file alone.
    add_keyframes(path, _index(4, prefix="new", seed=1))
    remove_mission(path, "a")
    assert victim.is_file() and (folder / "victim.txt").read_text() == "keep me"


def test_only_the_index_own_side_files_are_deleted(tmp_path):
    path = tmp_path / "map.h5"
    first = _saved_with_hnsw(path)
    other = tmp_path / "other.h5.0123abcd.faiss"  # a plain side-file name, but another index's
    other.write_bytes(first.read_bytes())
    _edit_metadata(path, lambda m: m["search_index"].__setitem__("file", other.name))
    second = _saved_with_hnsw(path)
    assert other.is_file() and first.is_file() and second.is_file()
    third = _saved_with_hnsw(path)  # second is this index's own (recorded, right prefix): replaced
    assert not second.exists() and third.is_file()


@pytest.mark.parametrize("field, value", [
    ("file", 5), ("count", "x"), ("params", [1]), ("kind", None), ("kind", "nonsense"), ("dim", -1),
    ("bytes", None), ("pca", "yes"), ("crc32c", 12), ("evil", 1),
])
def test_a_search_record_of_the_wrong_types_means_exact_search(tmp_path, field, value, caplog, capsys):
    path = tmp_path / "map.h5"
    _saved_with_hnsw(path)
    _edit_metadata(path, lambda m: m["search_index"].__setitem__(field, value))
    with caplog.at_level(logging.WARNING):
        retriever = load_retriever(path)
    assert "invalid 'search_index' record" in caplog.text
    hits = retriever.retrieve(_index().descriptors[3:4], k=1)[0]
    assert hits[0].index_position == 3
    assert main(["index", "info", str(path)]) == 0


@pytest.mark.parametrize("params", [{"ef_search": 1e400}, {"ef_search": 2**40}, {"m": "x"}, {"storage": [1]},
                                    {"unknown": 1}])
def test_recorded_search_parameters_are_bounded(tmp_path, params, caplog):
    path = tmp_path / "map.h5"
    _saved_with_hnsw(path)
    _edit_metadata(path, lambda m: m["search_index"]["params"].update(params))
    assert StoredSearchInfo.from_metadata(json.loads(read_text_dataset(h5py.File(path, "r"), "metadata_json"))) is None
    assert load_retriever(path).retrieve(_index().descriptors[:1], k=1)[0][0].index_position == 0


def test_a_side_file_damaged_without_a_size_change_is_rebuilt(tmp_path, caplog):
    path = tmp_path / "map.h5"
    index = _index()
    side = _saved_with_hnsw(path, index)
    info = StoredSearchInfo.from_metadata(load_index(path).metadata)
    assert len(info.crc32c) == 8
    data = bytearray(side.read_bytes())
    data[len(data) // 2] ^= 0xFF
    side.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        retriever = load_retriever(path)
    assert "fails its CRC-32C check" in caplog.text and "rebuilding the hnsw" in caplog.text
    for row in (0, 17, 39):
        assert retriever.retrieve(index.descriptors[row:row + 1], k=1)[0][0].index_position == row


def test_records_written_before_the_checksum_still_load_their_side_file(tmp_path, caplog):
    path = tmp_path / "map.h5"
    _saved_with_hnsw(path)
    _edit_metadata(path, lambda m: m["search_index"].pop("crc32c"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        retriever = load_retriever(path)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert retriever.retrieve(_index().descriptors[:1], k=1)[0][0].index_position == 0


# --------------------------------------------------------------------------- hloc h5 files


def _features(n: int = 5, d: int = 4) -> LocalFeatures:
    rng = np.random.default_rng(0)
    return LocalFeatures(rng.random((n, 2)) * 30 + 1, rng.random((n, d)), rng.random(n), (64, 48))


@pytest.mark.parametrize("key, value, message", [
    ("keypoints", np.full((5, 2), np.nan), "keypoints contain NaN"),
    ("descriptors", np.full((4, 5), np.inf), "descriptors contain NaN"),
    ("keypoints", np.zeros((5, 3)), r"keypoints have shape \(5, 3\)"),
    ("descriptors", np.zeros((4, 6)), r"descriptors have shape \(4, 6\)"),
    ("descriptors", np.zeros(5), r"descriptors have shape \(5,\)"),
    ("descriptors", np.array([b"x"] * 5), "holds |S1, not numbers"),
    ("scores", np.zeros(3), r"scores have shape \(3,\)"),
    ("image_size", np.array([64, -1]), "image_size"),
    ("image_size", np.array([np.nan, 1.0]), "image_size"),
])
def test_local_feature_files_are_validated(tmp_path, key, value, message):
    path = tmp_path / "features.h5"
    write_features(path, {"a.png": _features()})
    with h5py.File(path, "a") as f:
        del f["a.png"][key]
        f["a.png"].create_dataset(key, data=value)
    with pytest.raises(FeatureFileError, match=f"features.h5: image 'a.png': .*{message}"):
        read_features(path)


def test_local_feature_sparse_datasets_and_h5py_errors_name_the_file(tmp_path):
    path = tmp_path / "features.h5"
    write_features(path, {"a.png": _features()})
    with h5py.File(path, "a") as f:
        del f["a.png"]["descriptors"]
        f["a.png"].create_dataset("descriptors", shape=(4, 2**31), dtype=np.float32, chunks=(4, 1))
    with pytest.raises(FeatureFileError, match="features.h5: image 'a.png': descriptors declares shape"):
        read_features(path)
    data = bytearray((tmp_path / "features.h5").read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    (tmp_path / "damaged.h5").write_bytes(bytes(data))
    try:
        read_features(tmp_path / "damaged.h5")
    except ValueError as exc:  # FeatureFileError is both a RuntimeError and a ValueError
        assert "damaged.h5" in str(exc)


@pytest.mark.parametrize("value, message", [
    (np.array([1.0, np.nan, 0.0]), "contains NaN"), (np.zeros((2, 3)), r"shape \(2, 3\)"),
    (np.array([b"abc"]), "not numbers"),
])
def test_global_descriptor_files_are_validated(tmp_path, value, message):
    path = tmp_path / "descriptors.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a.png/global_descriptor", data=np.ones(3, np.float32))
        f.create_dataset("b.png/global_descriptor", data=value)
    with pytest.raises(ValueError, match=f"descriptors.h5: .*{message}"):
        read_global_descriptors(path)


# --------------------------------------------------------------------------- checkpoints


def _tiny_model():
    return build_model("mobilenetvlad", num_clusters=2, reduction_dim=8)


def test_checkpoints_carry_a_checksum_of_their_tensors(tmp_path):
    path = save_checkpoint(_tiny_model(), tmp_path / "model.pt")
    payload = read_checkpoint(path)
    assert len(payload[CHECKSUM_KEY]) == 64
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel() > 4)
    payload["state_dict"][key].view(-1)[3] += 0.25  # damage that torch cannot see
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="damaged.pt: its tensors do not match the checksum"):
        read_checkpoint(tmp_path / "damaged.pt")
    del payload[CHECKSUM_KEY]  # a checkpoint written before the checksum loads as before
    torch.save(payload, tmp_path / "legacy.pt")
    assert load_model("mobilenetvlad", tmp_path / "legacy.pt").config.num_clusters == 2


@pytest.mark.parametrize("key, value", [
    ("num_clusters", 10**9), ("num_clusters", "32"), ("reduction_dim", 2**40), ("depth_multiplier", 1e9),
    ("depth_multiplier", float("nan")), ("endpoint", "layer_99"), ("input_channels", 7), ("bn_eps", -1.0),
    ("intermediate_proj", 0), ("normalization", None), ("endpoint", None), ("backbone_init", 5),
])
def test_absurd_checkpoint_configurations_are_refused_before_building(tmp_path, key, value, capsys):
    path = save_checkpoint(_tiny_model(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"][key] = value
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=f"bad.pt: (configuration {key}|unknown MobileNetV2 endpoint)"):
        load_model("mobilenetvlad", tmp_path / "bad.pt")


def test_config_bounds_cover_the_head_size():
    with pytest.raises(ValueError, match="head of"):
        config_from_dict("netvlad", {"num_clusters": 1024, "whitening_dim": 65536})
    config_from_dict("netvlad", {"num_clusters": 64, "whitening_dim": 4096})  # the published model


@pytest.mark.parametrize("field, value", [("state_dict", [1, 2]), ("config", "x"), ("model_kind", 5)])
def test_checkpoint_fields_of_the_wrong_type_are_refused(tmp_path, field, value):
    path = save_checkpoint(_tiny_model(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload[field] = value
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=f"bad.pt: '{field}' is a"):
        read_checkpoint(tmp_path / "bad.pt")


# --------------------------------------------------------------------------- netvlad-mat


def test_netvlad_mat_refuses_pickles_and_damaged_files_in_one_line(tmp_path, capsys):
    (tmp_path / "pickle.mat").write_bytes(pickle.dumps({"net": [1, 2]}))
    (tmp_path / "empty.mat").write_bytes(b"")
    for name in ("pickle.mat", "empty.mat"):
        with pytest.raises(ConversionError, match=f"{name}: not a readable MATLAB file"):
            convert_netvlad_mat(tmp_path / name, tmp_path / "out.pt")
        line = _one_line_error(["convert", "netvlad-mat", str(tmp_path / name), str(tmp_path / "out.pt")], capsys)
        assert name in line
    assert not (tmp_path / "out.pt").exists()


def test_netvlad_mat_hostile_layer_fields_end_as_conversion_errors(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench.fuzzing.indexes import NETVLAD_MAT_TARGET

    seed = tmp_path / "seed"
    seed.mkdir()
    (name,) = NETVLAD_MAT_TARGET.make_seed(seed)
    data = (seed / name).read_bytes()
    import random

    for case in range(20):
        damaged = NETVLAD_MAT_TARGET.structured[0](data, random.Random(case))
        (tmp_path / "net.mat").write_bytes(damaged)
        with pytest.raises(ConversionError, match="net.mat"):
            convert_netvlad_mat(tmp_path / "net.mat", tmp_path / "out.pt")


# --------------------------------------------------------------------------- ground truth .npy


def _object_array(items):
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


@pytest.mark.parametrize("array", [
    np.array(5), np.array([[0, np.nan]]), np.array([[0.5, 1.0]]), np.array(["a", "b"]), np.array([[True, False]]),
    np.array([[1 + 1j, 0]]), np.zeros(2, dtype=[("a", int), ("b", float)]),
    _object_array([[0, [[1], [2, 3]]], [1, [0]]]), _object_array([{"a": 1}, None]), _object_array([[0, "x"]]),
    _object_array([[0, [1]], [1, [7]]]),
])
def test_ground_truth_arrays_of_wrong_shapes_and_types_are_refused(tmp_path, array):
    path = tmp_path / "ground_truth.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(ValueError, match="ground_truth.npy"):
        read_ground_truth_file(path, ["q0", "q1"], ["r0", "r1", "r2"])


def test_ground_truth_layouts_still_read(tmp_path):
    vprbench = np.empty((2, 2), dtype=object)
    vprbench[0], vprbench[1] = [0, np.array([1, 2])], [1, np.array([0], dtype=">i4")]
    for array in (vprbench, np.array([[0, 1], [1, 2]]), _object_array([[0, 1], [2]])):
        np.save(tmp_path / "gt.npy", array, allow_pickle=True)
        truth = read_ground_truth_file(tmp_path / "gt.npy", ["q0", "q1"], ["r0", "r1", "r2"])
        assert truth.matrix.nnz >= 2


def test_hostile_pickle_opcodes_are_refused_without_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    # BYTEARRAY8 declaring 2^40 bytes: the C unpickler would allocate them before reading.
    payload = b"\x80\x05\x96" + (2**40).to_bytes(8, "little") + b"abc"
    (tmp_path / "bomb.npy").write_bytes(header.getvalue() + payload)
    with pytest.raises(UnsafeNpyError, match="bomb.npy: damaged object array"):
        load_npy(tmp_path / "bomb.npy")
    rows = _object_array([np.arange(3), 1])
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=True)
    data = buffer.getvalue().replace(b"\x8c\x02i8", b"\x8c\x02U9")  # a dtype outside the simple ones
    (tmp_path / "dtype.npy").write_bytes(data)
    with pytest.raises(UnsafeNpyError, match="dtype.npy: refusing the dtype 'U9'"):
        load_npy(tmp_path / "dtype.npy")


def test_damaged_object_arrays_never_crash_the_reader(tmp_path):
    import random

    rows = np.empty((2, 2), dtype=object)
    rows[0], rows[1] = [0, np.array([1, 2])], [1, [0]]
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=True)
    seed = buffer.getvalue()
    rng = random.Random(3)
    path = tmp_path / "gt.npy"
    for _ in range(300):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            read_ground_truth_file(path, ["q0", "q1"], ["r0", "r1", "r2"])
        except ValueError as exc:
            assert "gt.npy" in str(exc)


def test_zero_and_extreme_descriptors(tmp_path):
    from hierloc.index.pca import l2_normalize

    vectors = np.array([[1e-30, 2e-30], [3, 4], [1e30, 1e30]], np.float32)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(vectors), axis=1), 1, rtol=1e-6)
    index = _index(4)
    index.descriptors[2] = 0
    for name in ("map.h5", "map.pb"):
        save_index(index, tmp_path / name)
        with pytest.raises(IndexFormatError, match=f"{name}: .*descriptors row 2 is all zeros"):
            load_index(tmp_path / name)
    with h5py.File(tmp_path / "descriptors.h5", "w") as f:
        f.create_dataset("a.png/global_descriptor", data=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="descriptors.h5: global descriptor 'a.png' is all zeros"):
        read_global_descriptors(tmp_path / "descriptors.h5")


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd", "day/../../x.png", "C:\\x.png", "a\x00b.png"])
def test_stored_image_names_stay_inside_the_map(tmp_path, name):
    index = _index(4)
    with pytest.raises(ValueError, match=r"names\[1\] .* is not a relative path inside the map"):
        DescriptorIndex(model_name="m", data_name="d", descriptors=index.descriptors,
                        keyframe_ids=index.keyframe_ids, names=["a.png", name, "b.png", "c.png"])


def _write_version_1(index: DescriptorIndex, path: Path) -> None:
    """The native layout hierloc wrote before format version 2: variable-length strings, no integrity header."""
    with h5py.File(path, "w") as f:
        for key, value in [("format", "hierloc.descriptor_index"), ("format_version", 1),
                           ("model_name", index.model_name), ("data_name", index.data_name),
                           ("descriptor_size", index.descriptor_size), ("num_frames", len(index)),
                           ("descriptor_dtype", "float32"), ("metadata_json", json.dumps(index.metadata)),
                           ("strings_sha256", strings_sha256(index.missions, index.names, index.resource_names))]:
            f.attrs[key] = value
        f.create_dataset("descriptors", data=index.descriptors, fletcher32=True, chunks=True)
        f.create_dataset("keyframe_ids", data=np.array(index.keyframe_ids, dtype="S32"))
        for key in ("missions", "names", "resource_names"):
            f.create_dataset(key, data=np.array(getattr(index, key), dtype=h5py.string_dtype()))
        f.create_dataset("frame_index", data=index.frame_index)


def test_version_1_files_are_still_read(tmp_path):
    index = _index()
    _write_version_1(index, tmp_path / "old.h5")
    loaded = load_index(tmp_path / "old.h5")
    assert loaded.names == index.names and loaded.keyframe_ids == index.keyframe_ids
    np.testing.assert_array_equal(loaded.descriptors, index.descriptors)
    assert read_native_catalog(tmp_path / "old.h5").names == index.names


def test_damaged_image_names_of_a_version_1_file_are_caught_by_the_strings_checksum(tmp_path):
    path = tmp_path / "map.h5"
    _write_version_1(_index(), path)
    with h5py.File(path, "a") as f:
        names = f["names"].asstr()[...].tolist()
        names[4] = "kf9.png"  # a plausible name: only the checksum can tell
        del f["names"]
        f.create_dataset("names", data=np.array(names, dtype=h5py.string_dtype()))
    for read in (load_index, read_native_catalog):
        with pytest.raises(IndexFormatError, match="map.h5: its missions or image names do not match the checksum"):
            read(path)


def test_version_2_damage_anywhere_is_caught_before_libhdf5_reads(tmp_path, capsys):
    path = tmp_path / "map.h5"
    save_index(_index(), path)
    data = path.read_bytes()
    assert data.startswith(b"hierloc.descriptor_index\n") and data[512:520] == b"\x89HDF\r\n\x1a\n"
    damaged = tmp_path / "damaged.h5"
    for start in range(512, len(data) - 64, max(1, len(data) // 7)):  # HDF5 structures and data alike
        damaged.write_bytes(data[:start] + bytes(b ^ 0x5A for b in data[start:start + 64]) + data[start + 64:])
        with pytest.raises(IndexFormatError, match="damaged.h5: its contents do not match the CRC-32C"):
            read_native_catalog(damaged)
    damaged.write_bytes(bytes(512) + data[512:])  # a zeroed header: HDF5 would still find its superblock
    with pytest.raises(IndexFormatError, match="damaged.h5: starts with neither hierloc's index header"):
        load_index(damaged)
    damaged.write_bytes(data[:30])
    with pytest.raises(IndexFormatError, match="damaged.h5: is 30 bytes, shorter than its 512-byte header"):
        load_index(damaged)
    damaged.write_bytes(data + b"\x00")
    with pytest.raises(IndexFormatError, match="damaged.h5: is .* bytes but its header records"):
        load_index(damaged)
    damaged.write_bytes(data[512:])  # the header stripped: version 2 without its checksum is refused
    with pytest.raises(IndexFormatError, match="declares format version 2 but is laid out as version 1"):
        load_index(damaged)
    assert "damaged.h5" in _one_line_error(["index", "info", str(damaged)], capsys)


@pytest.mark.parametrize("edit", [
    lambda f: f.attrs.__setitem__("model_name", "a variable-length string"),
    lambda f: (f.__delitem__("names"),
               f.create_dataset("names", data=np.array(["a"] * 40, dtype=h5py.string_dtype()))),
])
def test_version_2_never_reads_variable_length_values(tmp_path, edit):
    # Variable-length values sit on HDF5's global heap, where libhdf5 2.0 loops forever when a collection is zeroed.
    path = tmp_path / "map.h5"
    save_index(_index(), path)
    with edit_native_index(path) as f:  # re-signed: a hostile file has a valid checksum
        edit(f)
    with pytest.raises(IndexFormatError, match="is of variable length"):
        load_index(path)


def test_version_2_string_columns_must_match_the_frame_count(tmp_path):
    path = tmp_path / "map.h5"
    save_index(_index(), path)
    with edit_native_index(path) as f:
        names = read_text_dataset(f, "names").split("\x00")
        write_text_dataset(f, "names", "\x00".join(names[:-1]))
    with pytest.raises(IndexFormatError, match="'names' holds 39 strings, expected 40"):
        load_index(path)
    with pytest.raises(ValueError, match="missions must not contain NUL"):
        save_index(DescriptorIndex(model_name="m", data_name="d", descriptors=np.eye(2, dtype=np.float32),
                                   keyframe_ids=[stable_id("a"), stable_id("b")], missions=["a\x00b", "c"]),
                   tmp_path / "nul.h5")
