"""TensorFlow V2 checkpoints ("tensor bundles") read and written without TensorFlow.

A checkpoint with prefix P is `P.index` plus data shards `P.data-0000i-of-0000N`. The index is a
LevelDB-style sorted string table (TF's `tsl/lib/io/table`): data blocks of prefix-compressed
key/value entries with restart points, an index block of block handles, an empty meta-index block
and a 48-byte footer ending in a magic number; every block is followed by a compression byte and
the masked CRC-32C of block + byte. The key "" holds a `BundleHeaderProto` (shard count,
endianness, version); every other key is a tensor name whose value is a `BundleEntryProto`
(dtype, shape, shard, offset, size, masked CRC-32C of the raw bytes). Tensors are stored raw,
little-endian, row-major.

The two protobuf schemas are rebuilt here from descriptor protos in a private pool (field numbers
as in TF's `tensor_bundle.proto`, `tensor_shape.proto`, `tensor_slice.proto`, `versions.proto`),
so neither TensorFlow nor generated code is needed. Partitioned (sliced) variables and string
tensors are listed but cannot be read: the released models have none.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from ...utils.io import atomic_path
from .crc32c import crc32c, mask, unmask

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked CRC-32C
NO_COMPRESSION = 0
LFS_POINTER_PREFIX = b"version https://git-lfs"

# TF DataType enum values -> numpy dtypes (DT_BFLOAT16 is widened to float32 when read).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 8: np.dtype("<c8"), 9: np.dtype("<i8"), 10: np.dtype("?"), 14: np.dtype("<u2"),
    17: np.dtype("<u2"), 18: np.dtype("<c16"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
    9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128", 19: "float16", 20: "resource",
    21: "variant", 22: "uint32", 23: "uint64",
}
DT_STRING, DT_BFLOAT16 = 7, 14
NUMPY_TO_DTYPE = {np.dtype(v).str: k for k, v in DTYPES.items() if k != DT_BFLOAT16}


class CheckpointFormatError(ValueError):
    """A TensorFlow checkpoint file is missing, truncated, corrupt or of an unsupported kind."""


# --------------------------------------------------------------------------------------------
# Protobuf schemas


def _build_messages() -> tuple[type, type]:
    field = descriptor_pb2.FieldDescriptorProto
    opt, rep = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(
        name="hierloc/tensor_bundle.proto", package="hierloc.tensorflow", syntax="proto3"
    )

    def message(name: str, fields: Iterable[tuple], parent=None):
        msg = (parent.nested_type if parent is not None else proto.message_type).add(name=name)
        for fname, number, ftype, label, *type_name in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name[0]
        return msg

    T = field
    message("VersionDef", [("producer", 1, T.TYPE_INT32, opt), ("min_consumer", 2, T.TYPE_INT32, opt),
                           ("bad_consumers", 3, T.TYPE_INT32, rep)])
    shape = message("TensorShapeProto", [("dim", 2, T.TYPE_MESSAGE, rep, ".hierloc.tensorflow.TensorShapeProto.Dim"),
                                         ("unknown_rank", 3, T.TYPE_BOOL, opt)])
    message("Dim", [("size", 1, T.TYPE_INT64, opt), ("name", 2, T.TYPE_STRING, opt)], parent=shape)
    sl = message("TensorSliceProto", [("extent", 1, T.TYPE_MESSAGE, rep,
                                       ".hierloc.tensorflow.TensorSliceProto.Extent")])
    message("Extent", [("start", 1, T.TYPE_INT64, opt), ("length", 2, T.TYPE_INT64, opt)], parent=sl)
    # Enums (DataType, Endianness) are varints on the wire: int32 fields read them unchanged.
    message("BundleHeaderProto", [("num_shards", 1, T.TYPE_INT32, opt), ("endianness", 2, T.TYPE_INT32, opt),
                                  ("version", 3, T.TYPE_MESSAGE, opt, ".hierloc.tensorflow.VersionDef")])
    message("BundleEntryProto", [
        ("dtype", 1, T.TYPE_INT32, opt), ("shape", 2, T.TYPE_MESSAGE, opt, ".hierloc.tensorflow.TensorShapeProto"),
        ("shard_id", 3, T.TYPE_INT32, opt), ("offset", 4, T.TYPE_INT64, opt), ("size", 5, T.TYPE_INT64, opt),
        ("crc32c", 6, T.TYPE_FIXED32, opt),
        ("slices", 7, T.TYPE_MESSAGE, rep, ".hierloc.tensorflow.TensorSliceProto"),
    ])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)

    def get(name: str) -> type:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"hierloc.tensorflow.{name}"))

    return get("BundleHeaderProto"), get("BundleEntryProto")


BundleHeaderProto, BundleEntryProto = _build_messages()


# --------------------------------------------------------------------------------------------
# Sorted string table (LevelDB format as used by TF)


def _varint(buf: bytes | memoryview, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError(f"{where}: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointFormatError(f"{where}: malformed varint")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_block(data: bytes, offset: int, size: int, where: str) -> memoryview:
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(data):
        raise CheckpointFormatError(f"{where}: block at {offset}+{size} lies beyond the end of the file "
                                    f"({len(data)} bytes): truncated")
    compression = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if crc32c(data[offset:end + 1]) != unmask(stored):
        raise CheckpointFormatError(f"{where}: checksum mismatch in the block at offset {offset}: corrupt file")
    if compression != NO_COMPRESSION:
        raise CheckpointFormatError(f"{where}: block compression type {compression} is not supported "
                                    "(TensorFlow writes checkpoint indexes uncompressed)")
    return memoryview(data)[offset:end]


def _block_entries(block: memoryview, where: str) -> Iterator[tuple[bytes, memoryview]]:
    if len(block) < 4:
        raise CheckpointFormatError(f"{where}: block too small")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise CheckpointFormatError(f"{where}: bad restart count {num_restarts}")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, where)
        non_shared, pos = _varint(block, pos, where)
        value_length, pos = _varint(block, pos, where)
        if shared > len(key) or pos + non_shared + value_length > limit:
            raise CheckpointFormatError(f"{where}: corrupt block entry at {pos}")
        key = key[:shared] + bytes(block[pos:pos + non_shared])
        pos += non_shared
        yield key, block[pos:pos + value_length]
        pos += value_length


def read_table(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """All (key, value) entries of a sorted string table held in `data`, in key order."""
    if len(data) < FOOTER_SIZE:
        raise CheckpointFormatError(f"{where}: {len(data)} bytes is too short for a checkpoint index")
    footer = data[-FOOTER_SIZE:]
    lo, hi = struct.unpack_from("<II", footer, FOOTER_SIZE - 8)
    if (hi << 32 | lo) != TABLE_MAGIC:
        hint = " (a Git LFS pointer, not the file: run `git lfs pull`)" if data.startswith(LFS_POINTER_PREFIX) else ""
        raise CheckpointFormatError(f"{where}: not a TensorFlow checkpoint index (bad magic number){hint}")
    _meta_offset, pos = _varint(footer, 0, where)
    _meta_size, pos = _varint(footer, pos, where)
    index_offset, pos = _varint(footer, pos, where)
    index_size, pos = _varint(footer, pos, where)
    index_block = _read_block(data, index_offset, index_size, where)
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(index_block, where):
        offset, p = _varint(handle, 0, where)
        size, _ = _varint(handle, p, where)
        entries.extend((k, bytes(v)) for k, v in _block_entries(_read_block(data, offset, size, where), where))
    if any(a[0] >= b[0] for a, b in zip(entries, entries[1:])):
        raise CheckpointFormatError(f"{where}: keys are not sorted: corrupt index")
    return entries


class _BlockBuilder:
    """One table block: prefix-compressed entries with a restart point every `restart_interval` keys."""

    def __init__(self, restart_interval: int = 16) -> None:
        self.restart_interval = restart_interval
        self.buffer, self.restarts, self.count, self.last_key = bytearray(), [0], 0, b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count % self.restart_interval == 0:
            if self.count:
                self.restarts.append(len(self.buffer))
        else:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        self.buffer += _encode_varint(shared) + _encode_varint(len(key) - shared) + _encode_varint(len(value))
        self.buffer += key[shared:] + value
        self.last_key, self.count = key, self.count + 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buffer) + struct.pack(f"<{len(self.restarts)}I", *self.restarts) \
            + struct.pack("<I", len(self.restarts))


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's bytewise FindShortestSeparator: a short key in [start, limit)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)):
        byte = start[common]
        if byte < 0xFF and byte + 1 < limit[common]:
            return start[:common] + bytes([byte + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """LevelDB's bytewise FindShortSuccessor: a short key >= `key`."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def write_table(entries: list[tuple[bytes, bytes]], block_size: int = 262144, restart_interval: int = 16) -> bytes:
    """Serialise sorted (key, value) entries as a TF/LevelDB table, uncompressed, as TF's TableBuilder does
    (same block size, restart interval and index separators, so small tables are byte-identical)."""
    out = bytearray()

    def add_block(contents: bytes) -> bytes:
        handle = _encode_varint(len(out)) + _encode_varint(len(contents))
        trailer = bytes([NO_COMPRESSION])
        out.extend(contents + trailer + struct.pack("<I", mask(crc32c(contents + trailer))))
        return handle

    index = _BlockBuilder(restart_interval=1)
    block = _BlockBuilder(restart_interval)
    handle, block_last = None, b""  # the last flushed block is indexed once the next key is known
    for key, value in entries:
        if handle is not None:
            index.add(_shortest_separator(block_last, key), handle)
            handle = None
        block.add(key, value)
        if block.size_estimate() >= block_size:
            block_last, handle = key, add_block(block.finish())
            block = _BlockBuilder(restart_interval)
    if block.count:
        block_last, handle = block.last_key, add_block(block.finish())
    if handle is not None:
        index.add(_short_successor(block_last), handle)
    meta_handle = add_block(_BlockBuilder(restart_interval).finish())
    index_handle = add_block(index.finish())
    footer = (meta_handle + index_handle).ljust(FOOTER_SIZE - 8, b"\0")
    out += footer + struct.pack("<II", TABLE_MAGIC & 0xFFFFFFFF, TABLE_MAGIC >> 32)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Tensor bundles


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor of a bundle lives and what it is."""

    name: str
    dtype: int  # TF DataType enum value
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool = False

    @property
    def dtype_name(self) -> str:
        """TF's name of the dtype (float32, int64, ...)."""
        return DTYPE_NAMES.get(self.dtype, f"DataType({self.dtype})")


def resolve_checkpoint_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix designated by a prefix, an `.index`/`.data-*` file, a SavedModel folder or a
    folder holding one checkpoint (or a TF `checkpoint` state file)."""
    path = Path(path)
    if path.is_dir():
        if (path / "variables" / "variables.index").is_file():
            return path / "variables" / "variables"
        state = path / "checkpoint"
        if state.is_file():
            for line in state.read_text(errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    candidate = Path(name) if Path(name).is_absolute() else path / name
                    if candidate.with_name(candidate.name + ".index").is_file():
                        return candidate
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise FileNotFoundError(f"{path}: no TensorFlow checkpoint (*.index) or SavedModel in this folder")
        raise ValueError(f"{path}: several checkpoints ({', '.join(p.name for p in indexes)}): give the prefix")
    name = path.name
    if name.endswith(".index"):
        prefix = path.with_name(name[: -len(".index")])
    elif ".data-" in name:
        prefix = path.with_name(name.split(".data-")[0])
    else:
        prefix = path
    if not prefix.with_name(prefix.name + ".index").is_file():
        if prefix.is_file():
            raise CheckpointFormatError(f"{path}: a single-file (TF V1) checkpoint or another file: only V2 "
                                        "checkpoints (PREFIX.index + PREFIX.data-*) are supported")
        raise FileNotFoundError(f"{path}: no checkpoint index {prefix.name}.index next to it")
    return prefix


class TensorBundleReader:
    """Read a TF V2 checkpoint: list its tensors, read them by name, verify their checksums."""

    def __init__(self, path: str | os.PathLike, verify: bool = True) -> None:
        self.prefix = resolve_checkpoint_prefix(path)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        self.verify = verify
        where = str(self.index_path)
        table = read_table(self.index_path.read_bytes(), where)
        if not table or table[0][0] != b"":
            raise CheckpointFormatError(f"{where}: no bundle header entry")
        try:
            header = BundleHeaderProto.FromString(table[0][1])
        except DecodeError as exc:
            raise CheckpointFormatError(f"{where}: unreadable bundle header ({exc})") from None
        if header.endianness != 0:
            raise CheckpointFormatError(f"{where}: big-endian checkpoints are not supported")
        self.num_shards = header.num_shards
        self.version = (header.version.producer, header.version.min_consumer)
        self.entries: dict[str, TensorEntry] = {}
        for key, value in table[1:]:
            name = key.decode("utf-8", errors="replace")
            try:
                entry = BundleEntryProto.FromString(value)
            except DecodeError as exc:
                raise CheckpointFormatError(f"{where}: unreadable entry for {name!r} ({exc})") from None
            if entry.shard_id >= max(self.num_shards, 1):
                raise CheckpointFormatError(f"{where}: {name!r} is in shard {entry.shard_id} of {self.num_shards}")
            self.entries[name] = TensorEntry(
                name, entry.dtype, tuple(int(d.size) for d in entry.shape.dim), entry.shard_id, entry.offset,
                entry.size, entry.crc32c, sliced=len(entry.slices) > 0,
            )
        self._shards: dict[int, bytes] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        """Every tensor name, sorted."""
        return sorted(self.entries)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor name -> shape, as TF's `list_variables` gives."""
        return {name: entry.shape for name, entry in sorted(self.entries.items())}

    def shard_path(self, shard_id: int) -> Path:
        """File name of one data shard."""
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def _shard(self, shard_id: int) -> bytes:
        if shard_id not in self._shards:
            path = self.shard_path(shard_id)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: data shard missing (the index {self.index_path.name} needs it)")
            data = path.read_bytes()
            if data.startswith(LFS_POINTER_PREFIX) and len(data) < 1024:
                raise CheckpointFormatError(f"{path}: a Git LFS pointer, not the data: run `git lfs pull` in the "
                                            "clone it comes from")
            self._shards[shard_id] = data
        return self._shards[shard_id]

    def read(self, name: str) -> np.ndarray:
        """The tensor `name` as a numpy array (checksum verified unless `verify=False`)."""
        if name not in self.entries:
            raise KeyError(f"{self.prefix}: no tensor named {name!r}")
        entry = self.entries[name]
        if entry.sliced:
            raise CheckpointFormatError(f"{self.prefix}: {name!r} is a partitioned variable (not supported)")
        if entry.dtype not in DTYPES:
            raise CheckpointFormatError(f"{self.prefix}: {name!r} has dtype {entry.dtype_name} (not supported)")
        data = self._shard(entry.shard_id)
        path = self.shard_path(entry.shard_id)
        if entry.offset + entry.size > len(data):
            raise CheckpointFormatError(f"{path}: {name!r} lies beyond the end of the file "
                                        f"({entry.offset}+{entry.size} > {len(data)} bytes): truncated")
        raw = data[entry.offset:entry.offset + entry.size]
        if self.verify and crc32c(raw) != unmask(entry.crc32c):
            raise CheckpointFormatError(f"{path}: checksum mismatch for {name!r}: corrupt data")
        dtype = DTYPES[entry.dtype]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise CheckpointFormatError(f"{self.index_path}: {name!r} of shape {entry.shape} ({entry.dtype_name}) "
                                        f"cannot take {entry.size} bytes")
        array = np.frombuffer(raw, dtype=dtype, count=count).reshape(entry.shape)
        if entry.dtype == DT_BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array if entry.dtype == DT_BFLOAT16 else array.astype(dtype.newbyteorder("="), copy=True)

    def read_all(self) -> dict[str, np.ndarray]:
        """Every tensor, by name."""
        return {name: self.read(name) for name in self.names()}


def write_tensor_bundle(prefix: str | os.PathLike, tensors: Mapping[str, np.ndarray], index_block_size: int = 262144
                        ) -> Path:
    """Write `tensors` as a single-shard TF V2 checkpoint at `prefix` (PREFIX.index + PREFIX.data-00000-of-00001).

    Both files are written atomically; the layout is what TF's BundleWriter produces (tensors in
    key order, no alignment), so TensorFlow and `TensorBundleReader` read it back.
    """
    prefix = Path(prefix)
    data, entries = bytearray(), []
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        little = array.dtype.newbyteorder("<") if array.dtype.byteorder not in ("|", "<") else array.dtype
        if np.dtype(little).str not in NUMPY_TO_DTYPE:
            raise ValueError(f"{name}: dtype {array.dtype} has no TensorFlow checkpoint equivalent")
        raw = np.ascontiguousarray(array, dtype=little).tobytes()
        entry = BundleEntryProto(dtype=NUMPY_TO_DTYPE[np.dtype(little).str], offset=len(data), size=len(raw),
                                 crc32c=mask(crc32c(raw)))
        entry.shape.SetInParent()  # TF writes an empty shape for scalars
        for size in array.shape:
            entry.shape.dim.add(size=int(size))
        entries.append((name.encode("utf-8"), entry.SerializeToString()))
        data += raw
    header = BundleHeaderProto(num_shards=1)
    header.version.producer = 1
    table = write_table([(b"", header.SerializeToString())] + entries, block_size=index_block_size)
    data_path = prefix.with_name(f"{prefix.name}.data-00000-of-00001")
    with atomic_path(data_path) as tmp:
        tmp.write_bytes(bytes(data))
    with atomic_path(prefix.with_name(prefix.name + ".index")) as tmp:
        tmp.write_bytes(table)
    return prefix
