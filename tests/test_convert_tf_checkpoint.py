"""The TensorFlow tensor-bundle reader/writer, against files TensorFlow itself wrote."""

from __future__ import annotations

import base64
import shutil

import numpy as np
import pytest
from conftest import shared_path

from hierloc.models.convert import crc32c as crc
from hierloc.models.convert.tf_checkpoint import (
    CheckpointFormatError,
    TensorBundleReader,
    read_table,
    resolve_checkpoint_prefix,
    write_table,
    write_tensor_bundle,
)

# Written by TensorFlow 2.21 (tf.raw_ops.SaveV2) from the TF_TINY_VALUES below.
TF_TINY_INDEX = (
    "AAAGCAEaAggBABgbTW9iaWxlbmV0VjIvQ29udi93ZWlnaHRzCAESEBICCAISAggCEgIIARICCAMoMDWqizPPAAYRY291bnRzCAkSBBICCAUgMCgo"
    "NWxglw0ABRFmbGFncwgKEgQSAggDIFgoAzV1WZEGAAQRaGFsZggTEgQSAggCIFsoBDWTLzNNAAYNc2NhbGFyCAISACBfKAg13NhDWwANIXZsYWQv"
    "Y2x1c3RlcnMIARIUEgIIARICCAESAggBEgIIAhICCAMgZygYNVwU/58ABBF3aWRlCAMSBBICCAQgfygQNY7x3R0AAAAAAQAAAAD6UL0+AAAAAAEA"
    "AAAAwPKhsAABA3gA8QEAAAAAAQAAAAAPdv1f9gEIgwIPAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAFf7gIskdUfb"
)
TF_TINY_DATA = (
    "AAAAACVJEj4lSZI+t23bPiVJEj9u2zY/t21bPwAAgD8lSZI/SZKkP27btj+SJMk//v///////////////////wAAAAAAAAAAAQAAAAAAAAACAAAA"
    "AAAAAAEAAQA4AMAAAAAAAAAKQAAAgL+amRm/zcxMvs3MTD6amRk/AACAPwAAAAABAAAAAgAAAAMAAAA="
)
TF_TINY_VALUES = {
    "MobilenetV2/Conv/weights": np.arange(12, dtype=np.float32).reshape(2, 2, 1, 3) / 7,
    "counts": np.arange(-2, 3, dtype=np.int64),
    "flags": np.array([True, False, True]),
    "half": np.array([0.5, -2.0], np.float16),
    "scalar": np.float64(3.25),
    "vlad/clusters": np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 1, 1, 2, 3),
    "wide": np.arange(4, dtype=np.int32),
}


@pytest.fixture
def tf_tiny(tmp_path):
    (tmp_path / "ckpt.index").write_bytes(base64.b64decode(TF_TINY_INDEX))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(base64.b64decode(TF_TINY_DATA))
    return tmp_path / "ckpt"


def test_crc32c_known_values_and_mask():
    assert crc.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc.crc32c_python(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 3
    assert crc.crc32c(data) == crc.crc32c_python(data)
    assert crc.crc32c(data[100:], crc.crc32c(data[:100])) == crc.crc32c(data)
    for value in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert crc.unmask(crc.mask(value)) == value
    assert crc.mask(0) != 0


def test_reads_a_checkpoint_written_by_tensorflow(tf_tiny):
    reader = TensorBundleReader(tf_tiny)
    assert reader.num_shards == 1
    assert reader.names() == sorted(TF_TINY_VALUES)
    for name, expected in TF_TINY_VALUES.items():
        value = reader.read(name)
        assert value.dtype == np.asarray(expected).dtype and value.shape == np.shape(expected), name
        np.testing.assert_array_equal(value, expected)
    assert reader.entries["half"].dtype_name == "float16"
    assert reader.shapes()["vlad/clusters"] == (1, 1, 1, 2, 3)


def test_writer_is_byte_identical_to_tensorflow(tf_tiny, tmp_path):
    prefix = write_tensor_bundle(tmp_path / "mine" / "ckpt", TF_TINY_VALUES)
    assert prefix.with_name("ckpt.index").read_bytes() == base64.b64decode(TF_TINY_INDEX)
    assert prefix.with_name("ckpt.data-00000-of-00001").read_bytes() == base64.b64decode(TF_TINY_DATA)


def test_round_trip_with_many_index_blocks(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"scope_{i:04d}/a/long/variable/name": rng.normal(size=(i % 4 + 1, 2)).astype(np.float32)
               for i in range(400)}
    tensors["bf"] = np.arange(3, dtype=np.uint16)
    prefix = write_tensor_bundle(tmp_path / "ckpt", tensors, index_block_size=256)
    table = read_table(prefix.with_name("ckpt.index").read_bytes(), "test")
    assert len(table) == len(tensors) + 1
    # Many data blocks: the index block has one entry per block; rewriting gives the same bytes.
    assert write_table(table, block_size=256) == prefix.with_name("ckpt.index").read_bytes()
    reader = TensorBundleReader(prefix)
    for name, value in tensors.items():
        np.testing.assert_array_equal(reader.read(name), value)


def test_checksums_catch_corruption_and_truncation(tf_tiny):
    data_path = tf_tiny.with_name("ckpt.data-00000-of-00001")
    raw = bytearray(data_path.read_bytes())
    raw[5] ^= 0x40  # inside MobilenetV2/Conv/weights
    data_path.write_bytes(bytes(raw))
    reader = TensorBundleReader(tf_tiny)
    with pytest.raises(CheckpointFormatError, match="checksum mismatch for 'MobilenetV2/Conv/weights'"):
        reader.read("MobilenetV2/Conv/weights")
    np.testing.assert_array_equal(reader.read("counts"), TF_TINY_VALUES["counts"])  # other tensors still fine
    assert TensorBundleReader(tf_tiny, verify=False).read("MobilenetV2/Conv/weights").shape == (2, 2, 1, 3)

    index_path = tf_tiny.with_name("ckpt.index")
    index = bytearray(index_path.read_bytes())
    index[20] ^= 0x01
    index_path.write_bytes(bytes(index))
    with pytest.raises(CheckpointFormatError, match="checksum mismatch in the block"):
        TensorBundleReader(tf_tiny)
    index_path.write_bytes(base64.b64decode(TF_TINY_INDEX)[:-10])
    with pytest.raises(CheckpointFormatError, match="not a TensorFlow checkpoint index"):
        TensorBundleReader(tf_tiny)


def test_missing_shard_truncated_data_and_lfs_pointer(tf_tiny):
    data_path = tf_tiny.with_name("ckpt.data-00000-of-00001")
    data_path.write_bytes(base64.b64decode(TF_TINY_DATA)[:40])
    with pytest.raises(CheckpointFormatError, match="beyond the end of the file"):
        TensorBundleReader(tf_tiny).read("wide")
    data_path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 60020480\n")
    with pytest.raises(CheckpointFormatError, match="Git LFS pointer"):
        TensorBundleReader(tf_tiny).read("wide")
    data_path.unlink()
    reader = TensorBundleReader(tf_tiny)  # listing needs only the index
    assert len(reader) == len(TF_TINY_VALUES)
    with pytest.raises(FileNotFoundError, match="data shard missing"):
        reader.read("wide")


def test_prefix_resolution(tf_tiny, tmp_path):
    assert resolve_checkpoint_prefix(tf_tiny) == tf_tiny
    assert resolve_checkpoint_prefix(tf_tiny.with_name("ckpt.index")) == tf_tiny
    assert resolve_checkpoint_prefix(tf_tiny.with_name("ckpt.data-00000-of-00001")) == tf_tiny
    assert resolve_checkpoint_prefix(tmp_path) == tf_tiny  # a folder with one checkpoint
    saved_model = tmp_path / "model"
    (saved_model / "variables").mkdir(parents=True)
    shutil.copy(tf_tiny.with_name("ckpt.index"), saved_model / "variables" / "variables.index")
    assert resolve_checkpoint_prefix(saved_model) == saved_model / "variables" / "variables"
    with pytest.raises(FileNotFoundError, match="no checkpoint index"):
        resolve_checkpoint_prefix(tmp_path / "nothing")
    v1 = tmp_path / "old.ckpt"
    v1.write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointFormatError, match="TF V1"):
        resolve_checkpoint_prefix(v1)


def test_lists_every_variable_of_the_released_model():
    index = shared_path("seed", "mobilenetvlad_depth-0.35", "variables", "variables.index")
    reader = TensorBundleReader(index)
    shapes = reader.shapes()
    assert len(shapes) == 267
    assert all(e.dtype_name == "float32" and e.shard_id == 0 for e in reader.entries.values())
    assert shapes["MobilenetV2/Conv/weights"] == (3, 3, 3, 16)
    assert shapes["MobilenetV2/expanded_conv/depthwise/depthwise_weights"] == (3, 3, 16, 1)
    assert shapes["MobilenetV2/expanded_conv_16/project/weights"] == (1, 1, 336, 112)
    assert shapes["MobilenetV2/Conv_1/weights"] == (1, 1, 112, 448)
    assert shapes["vlad/clusters"] == (1, 1, 1, 32, 112)
    assert shapes["vlad/memberships/weights"] == (1, 1, 112, 32)
    assert "vlad/memberships/BatchNorm/gamma" not in shapes
    assert shapes["dimensionality_reduction/weights"] == (3584, 4096)
    # Tensors tile the 60 MB data file exactly, in key order (as TF's BundleWriter lays them out).
    entries = sorted(reader.entries.values(), key=lambda e: e.offset)
    assert entries[0].offset == 0
    assert all(a.offset + a.size == b.offset for a, b in zip(entries, entries[1:]))
    assert all(e.size == 4 * int(np.prod(e.shape)) for e in entries)
    assert entries[-1].offset + entries[-1].size == 60020480
