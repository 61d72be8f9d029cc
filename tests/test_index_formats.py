"""Tests of the index file formats: original protobuf (checked against an independent schema) and native HDF5."""

from __future__ import annotations

import importlib
import struct
import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hierloc.index import (
    PCA,
    DescriptorIndex,
    IndexFormatError,
    convert_index,
    decode_proto_index,
    detect_format,
    encode_proto_index,
    load_index,
    read_native_index,
    read_proto_index,
    save_index,
    stable_id,
    write_native_index,
    write_proto_index,
)
from hierloc.index.native_format import edit_native_index, sign_native_index
from hierloc.utils.ids import id_to_pair

# The original schema, written out from SPEC.md section 1 (global-loc + maplab-common), compiled
# by protoc in the test: nothing here is shared with hierloc's own schema code.
ORIGINAL_SCHEMA = {
    "maplab-common/id.proto": """
syntax = "proto2";
package common.proto;
message Id { repeated uint64 uint = 1; }
""",
    "maplab-common/eigen.proto": """
syntax = "proto2";
package common.proto;
message MatrixXf { optional uint32 rows = 1; optional uint32 cols = 2; repeated float data = 3; }
message MatrixXd { optional uint32 rows = 1; optional uint32 cols = 2; repeated double data = 3; }
""",
    "global-loc/descriptor_index.proto": """
syntax = "proto2";
package global_loc.proto;
import "maplab-common/id.proto";
import "maplab-common/eigen.proto";
message DescriptorIndex {
  optional string model_name = 1;
  optional string data_name = 2;
  optional int64 descriptor_size = 3;
  message Frame {
    required common.proto.Id vertex_id = 1;
    required uint32 frame_index = 2;
    required string resource_name = 3;
    required common.proto.MatrixXf global_descriptor = 4;
    optional common.proto.MatrixXd position_vector = 5;
    optional common.proto.MatrixXd rotation_matrix = 6;
  }
  repeated Frame frames = 4;
}
""",
}


def make_index(n: int = 5, d: int = 6, seed: int = 0, poses: bool = True) -> DescriptorIndex:
    rng = np.random.default_rng(seed)
    descriptors = rng.normal(size=(n, d)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    return DescriptorIndex(
        model_name="mobilenetvlad_depth-0.35",
        data_name="lindenhof_afternoon_aligned",
        descriptors=descriptors,
        keyframe_ids=[stable_id(f"v{i}") for i in range(n)],
        missions=[f"m{i % 2}" for i in range(n)],
        names=[f"cam0/img_{i:03d}.png" for i in range(n)],
        frame_index=np.arange(n) % 2,
        resource_names=[stable_id(f"r{i}") for i in range(n)],
        positions=rng.normal(size=(n, 3)) * 10 if poses else None,
        rotations=Rotation.random(n, random_state=seed).as_matrix() if poses else None,
        metadata={"model": {"depth": 0.35}, "subsampling": 1},
    )


def assert_same_index(a: DescriptorIndex, b: DescriptorIndex, missions: bool = True) -> None:
    assert (a.model_name, a.data_name) == (b.model_name, b.data_name)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)
    assert a.keyframe_ids == b.keyframe_ids and a.resource_names == b.resource_names
    np.testing.assert_array_equal(a.frame_index, b.frame_index)
    for label in ("positions", "rotations"):
        x, y = getattr(a, label), getattr(b, label)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    if missions:
        assert a.missions == b.missions and a.names == b.names and a.metadata == b.metadata


# --- independent wire-format helpers --------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def wire_fields(data: bytes) -> list[tuple[int, int, object]]:
    """Decode one message level into (field number, wire type, raw value) triples."""
    fields, pos = [], 0

    def read_varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(data):
        key = read_varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value = read_varint()
        elif wire_type == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire_type == 2:
            size = read_varint()
            value, pos = data[pos : pos + size], pos + size
        elif wire_type == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
        fields.append((number, wire_type, value))
    return fields


@pytest.fixture(scope="module")
def original_pb2(tmp_path_factory):
    """The original schema compiled by grpc_tools' protoc into a fresh module."""
    root = tmp_path_factory.mktemp("original_schema")
    src, out = root / "src", root / "out"
    for name, text in ORIGINAL_SCHEMA.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--python_out={out}", *ORIGINAL_SCHEMA],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("global_loc.descriptor_index_pb2")
    except Exception as exc:  # a runtime that refuses this gencode version; the wire tests still run
        pytest.skip(f"protobuf runtime refuses protoc's generated code: {exc}")
    finally:
        sys.path.remove(str(out))


# --- protobuf format --------------------------------------------------------------------------


@pytest.mark.parametrize("poses", [True, False])
def test_proto_round_trip_all_fields(tmp_path, poses):
    index = make_index(poses=poses)
    path = tmp_path / "index.pb"
    save_index(index, path)
    loaded = load_index(path)
    assert_same_index(index, loaded)
    assert detect_format(path) == "protobuf"


def test_proto_strict_mode_loses_only_missions_names_metadata(tmp_path):
    index = make_index()
    path = tmp_path / "index.pb"
    write_proto_index(index, path, hierloc_extras=False)
    loaded = read_proto_index(path)
    assert_same_index(index, loaded, missions=False)
    assert loaded.missions == [""] * len(index)
    assert loaded.names == index.resource_names and loaded.metadata == {}


def test_proto_decoded_by_independent_schema(tmp_path, original_pb2):
    index = make_index()
    path = tmp_path / "index.pb"
    save_index(index, path)
    message = original_pb2.DescriptorIndex()
    message.ParseFromString(path.read_bytes())  # hierloc's extra field must be skipped silently
    assert message.IsInitialized()
    assert message.model_name == index.model_name and message.data_name == index.data_name
    assert message.descriptor_size == index.descriptor_size and len(message.frames) == len(index)
    for i, frame in enumerate(message.frames):
        assert tuple(frame.vertex_id.uint) == id_to_pair(index.keyframe_ids[i])
        assert frame.frame_index == index.frame_index[i]
        assert frame.resource_name == index.resource_names[i]
        descriptor = frame.global_descriptor
        assert (descriptor.rows, descriptor.cols) == (index.descriptor_size, 1)
        np.testing.assert_array_equal(np.array(descriptor.data, np.float32), index.descriptors[i])
        assert (frame.position_vector.rows, frame.position_vector.cols) == (3, 1)
        np.testing.assert_array_equal(frame.position_vector.data, index.positions[i])
        rotation = frame.rotation_matrix
        assert (rotation.rows, rotation.cols) == (3, 3)
        # Column-major as Eigen stores it: data[row + 3 * col].
        np.testing.assert_array_equal(np.reshape(rotation.data, (3, 3), order="F"), index.rotations[i])


def test_proto_strict_bytes_equal_independent_serialisation(original_pb2):
    index = make_index()
    message = original_pb2.DescriptorIndex(
        model_name=index.model_name, data_name=index.data_name, descriptor_size=index.descriptor_size
    )
    for i in range(len(index)):
        frame = message.frames.add()
        frame.vertex_id.uint.extend(id_to_pair(index.keyframe_ids[i]))
        frame.frame_index = int(index.frame_index[i])
        frame.resource_name = index.resource_names[i]
        frame.global_descriptor.rows, frame.global_descriptor.cols = index.descriptor_size, 1
        frame.global_descriptor.data.extend(index.descriptors[i].tolist())
        frame.position_vector.rows, frame.position_vector.cols = 3, 1
        frame.position_vector.data.extend(index.positions[i].tolist())
        frame.rotation_matrix.rows, frame.rotation_matrix.cols = 3, 3
        frame.rotation_matrix.data.extend(index.rotations[i].T.ravel().tolist())
    expected = message.SerializeToString()
    assert encode_proto_index(index, hierloc_extras=False) == expected
    # With extras, the original bytes follow one extra leading field.
    assert encode_proto_index(index).endswith(expected)


def test_proto_wire_layout_is_unpacked_with_extras_first():
    index = make_index(n=2, d=4)
    fields = wire_fields(encode_proto_index(index))
    assert [number for number, _, _ in fields] == [1000, 1, 2, 3, 4, 4]
    frame = wire_fields(fields[4][2])
    descriptor = wire_fields(next(value for number, _, value in frame if number == 4))
    data = [(number, wire_type) for number, wire_type, _ in descriptor if number == 3]
    assert data == [(3, 5)] * 4  # one fixed32 field per float: unpacked, like the original
    vertex = wire_fields(next(value for number, _, value in frame if number == 1))
    assert [(n, w) for n, w, _ in vertex] == [(1, 0), (1, 0)]
    rotation = wire_fields(next(value for number, _, value in frame if number == 6))
    assert sum(1 for n, w, _ in rotation if (n, w) == (3, 1)) == 9


def test_proto_reader_accepts_packed_repeated_fields(tmp_path):
    descriptor = np.array([0.5, -0.25, 0.125, 1.0], np.float32)
    position = np.array([1.5, -2.0, 3.25])
    rotation = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    words = id_to_pair(stable_id("packed"))

    def packed_matrix(rows: int, cols: int, fmt: str, values: np.ndarray) -> bytes:
        payload = struct.pack(f"<{len(values)}{fmt}", *values)
        return tag(1, 0) + varint(rows) + tag(2, 0) + varint(cols) + length_delimited(3, payload)

    frame = (
        length_delimited(1, length_delimited(1, b"".join(varint(w) for w in words)))
        + tag(2, 0)
        + varint(0)
        + length_delimited(3, b"resource")
        + length_delimited(4, packed_matrix(4, 1, "f", descriptor))
        + length_delimited(5, packed_matrix(3, 1, "d", position))
        + length_delimited(6, packed_matrix(3, 3, "d", rotation.ravel(order="F")))
    )
    data = (
        length_delimited(1, b"model")
        + length_delimited(2, b"map")
        + tag(3, 0)
        + varint(4)
        + length_delimited(4, frame)
    )
    path = tmp_path / "packed.pb"
    path.write_bytes(data)
    index = read_proto_index(path)
    assert index.keyframe_ids == [stable_id("packed")] and index.resource_names == ["resource"]
    np.testing.assert_array_equal(index.descriptors[0], descriptor)
    np.testing.assert_array_equal(index.positions[0], position)
    np.testing.assert_allclose(index.rotations[0], rotation, rtol=0, atol=0)


def test_proto_every_truncation_is_detected(tmp_path):
    data = encode_proto_index(make_index(n=3, d=4))
    path = tmp_path / "cut.pb"
    for size in range(len(data)):
        path.write_bytes(data[:size])
        with pytest.raises(IndexFormatError, match="cut.pb"):
            read_proto_index(path)


def test_proto_strict_truncation_inside_a_frame_is_detected(tmp_path):
    data = encode_proto_index(make_index(n=3, d=4), hierloc_extras=False)
    path = tmp_path / "cut.pb"
    path.write_bytes(data[:-7])
    with pytest.raises(IndexFormatError, match="truncated|corrupt|missing"):
        read_proto_index(path)


def test_proto_inconsistent_descriptor_size_is_reported(tmp_path, original_pb2):
    message = original_pb2.DescriptorIndex(model_name="m", data_name="d", descriptor_size=4)
    for size in (4, 3):
        frame = message.frames.add(frame_index=0, resource_name="r")
        frame.vertex_id.uint.extend([1, 2])
        frame.global_descriptor.rows, frame.global_descriptor.cols = size, 1
        frame.global_descriptor.data.extend([0.5] * size)
    path = tmp_path / "sizes.pb"
    path.write_bytes(message.SerializeToString())
    with pytest.raises(IndexFormatError, match="frame 1: global_descriptor.*holds 3 values, expected 4"):
        read_proto_index(path)


def test_proto_missing_required_field_is_reported(tmp_path, original_pb2):
    message = original_pb2.DescriptorIndex(model_name="m", descriptor_size=2)
    frame = message.frames.add(frame_index=0)
    frame.vertex_id.uint.extend([1, 2])
    frame.global_descriptor.data.extend([1.0, 0.0])
    path = tmp_path / "partial.pb"
    path.write_bytes(message.SerializePartialToString())
    with pytest.raises(IndexFormatError, match="required fields are missing: frames\\[0\\].resource_name"):
        read_proto_index(path)


def test_proto_empty_index_and_pca_warning(tmp_path, caplog):
    index = make_index().subset([])
    index.pca = PCA.fit(make_index(n=8).descriptors, 2)
    index.metadata = {1: "int keys become strings"}
    save_index(index, tmp_path / "empty.pb")
    assert "cannot hold the fitted PCA" in caplog.text
    loaded = load_index(tmp_path / "empty.pb")
    assert len(loaded) == 0 and loaded.descriptor_size == index.descriptor_size and loaded.pca is None
    assert loaded.metadata == {"1": "int keys become strings"}


def test_proto_text_fields_must_be_utf8(tmp_path):
    path = tmp_path / "latin1.pb"
    path.write_bytes(length_delimited(1, "modèle".encode("latin-1")) + tag(3, 0) + varint(4))
    with pytest.raises(IndexFormatError, match="latin1.pb: model_name is not valid UTF-8"):
        read_proto_index(path)


# --- native format ----------------------------------------------------------------------------


@pytest.mark.parametrize("poses", [True, False])
def test_native_round_trip_all_fields(tmp_path, poses):
    index = make_index(poses=poses)
    index.pca = PCA.fit(index.descriptors, 3)
    path = tmp_path / "index.h5"
    save_index(index, path)
    loaded = load_index(path)
    assert_same_index(index, loaded)
    assert detect_format(path) == "native"
    np.testing.assert_array_equal(loaded.pca.components, index.pca.components)
    np.testing.assert_array_equal(loaded.pca.mean, index.pca.mean)
    assert loaded.pca.num_fit_samples == len(index) and not loaded.pca.whiten


def test_native_float16_and_empty_index(tmp_path):
    index = make_index(n=40, d=32)
    save_index(index, tmp_path / "half.h5", dtype="float16", compression="gzip")
    loaded = read_native_index(tmp_path / "half.h5")
    assert loaded.descriptors.dtype == np.float32
    np.testing.assert_allclose(loaded.descriptors, index.descriptors, atol=1e-3)
    empty = index.subset([])
    write_native_index(empty, tmp_path / "empty.h5")
    assert len(read_native_index(tmp_path / "empty.h5")) == 0
    with pytest.raises(ValueError, match="dtype"):
        write_native_index(index, tmp_path / "x.h5", dtype="int8")


def test_convert_between_formats(tmp_path):
    index = make_index()
    save_index(index, tmp_path / "a.h5")
    convert_index(tmp_path / "a.h5", tmp_path / "b.pb")
    convert_index(tmp_path / "b.pb", tmp_path / "c.hdf5")
    assert_same_index(index, load_index(tmp_path / "c.hdf5"))
    with pytest.raises(ValueError, match="extension '.npz'"):
        save_index(index, tmp_path / "x.npz")


def test_native_truncated_and_corrupted_files(tmp_path):
    path = tmp_path / "index.h5"
    save_index(make_index(n=50, d=64), path)
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 100, 9):
        cut = tmp_path / f"cut{size}.h5"
        cut.write_bytes(data[:size])
        with pytest.raises(IndexFormatError, match=f"cut{size}.h5"):
            load_index(cut)
    with h5py.File(path, "r") as f:
        offset = f["descriptors"].id.get_chunk_info(0).byte_offset
    flipped = bytearray(data)
    flipped[offset + 10] ^= 0xFF
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(IndexFormatError, match="corrupt.h5: its contents do not match the CRC-32C"):
        load_index(corrupt)
    sign_native_index(corrupt, replace=True)  # past the file's checksum, each dataset's Fletcher-32 catches it
    with pytest.raises(IndexFormatError, match="corrupt.h5: corrupt index data"):
        load_index(corrupt)


def test_native_foreign_and_incomplete_hdf5(tmp_path):
    foreign = tmp_path / "features.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("keypoints", data=np.zeros((3, 2)))
    with pytest.raises(IndexFormatError, match="features.h5: an HDF5 file but not a hierloc descriptor index"):
        load_index(foreign)
    incomplete = tmp_path / "incomplete.h5"
    save_index(make_index(), incomplete)
    with edit_native_index(incomplete) as f:
        del f["names"]
    with pytest.raises(IndexFormatError, match="lacks the 'names' dataset"):
        load_index(incomplete)


# --- foreign files, any reader ----------------------------------------------------------------

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + length_delimited(1, b"IHDR") * 4
FOREIGN = {
    "empty.pb": b"",
    "image.png": PNG_BYTES,
    "photo.jpg": b"\xff\xd8\xff\xe0" + bytes(range(200)),
    "random.bin": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "notes.txt": b"this is a text file\nnot an index\n",
}


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_foreign_files_raise_index_format_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(FOREIGN[name])
    for reader in (load_index, read_proto_index, read_native_index):
        with pytest.raises(IndexFormatError, match=name):
            reader(path)


def test_hdf5_file_given_to_proto_reader(tmp_path):
    path = tmp_path / "index.h5"
    save_index(make_index(), path)
    with pytest.raises(IndexFormatError, match="index.h5: this is a hierloc native"):
        read_proto_index(path)
    with pytest.raises(IndexFormatError, match="<bytes>: the file is empty"):
        decode_proto_index(b"")
