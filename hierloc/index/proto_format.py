"""The original global-loc protobuf index format (proto2 `global_loc.proto.DescriptorIndex`), read and written.

The schema is built at import time from descriptor protos in a private pool, so no generated
`*_pb2.py` is committed (generated code is tied to protobuf versions) and nothing clashes with a
user's own generated copy of the original schema in the default pool.

Wire layout, field for field as the original (`global-loc/descriptor_index.proto`, maplab
`common.proto.Id` / `MatrixXf` / `MatrixXd`): repeated scalars unpacked when writing, packed or
unpacked accepted when reading; the descriptor is a D x 1 `MatrixXf`, the position a 3 x 1
`MatrixXd`, the rotation a column-major 3 x 3 `MatrixXd`.

The original schema has no missions, image names or metadata. hierloc keeps them in one extra
field (number 1000, `hierloc_extras`) that the original reader skips as an unknown field; it is
written *before* the frames (field order is free on the wire) together with the frame count, so a
file cut short anywhere is detected. `hierloc_extras=False` writes exactly the original bytes;
such a file reads back with missions "" and names equal to the resource names, and a cut that
falls exactly between two frames cannot be detected in it. A fitted PCA is never stored in this
format (the original recomputed it at load time); use the native format to keep it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from hierloc.index.descriptor_index import MAX_DESCRIPTOR_SIZE, DescriptorIndex, check_directions
from hierloc.index.errors import IndexFormatError, IndexValidationError, parse_metadata_json
from hierloc.utils.ids import id_to_pair, pair_to_id
from hierloc.utils.io import atomic_write_bytes, to_json_text

logger = logging.getLogger(__name__)

EXTRAS_FIELD_NUMBER = 1000
EXTRAS_FORMAT_VERSION = 1

_FIELD = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REQUIRED, _REPEATED = _FIELD.LABEL_OPTIONAL, _FIELD.LABEL_REQUIRED, _FIELD.LABEL_REPEATED

# Magic numbers of files that are easily handed to the wrong reader; protobuf has no magic of its
# own and would otherwise parse some of them into nonsense.
_FOREIGN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (use the native index reader)"),
    (b"hierloc.descriptor_index\n", "a hierloc native (HDF5) index (use the native index reader)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a ZIP archive (or .npz)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"%PDF", "a PDF document"),
)


def _field(name: str, number: int, field_type: int, label: int, type_name: str | None = None) -> _FIELD:
    field = _FIELD(name=name, number=number, type=field_type, label=label)
    if type_name is not None:
        field.type_name = type_name
    return field


def _build_pool() -> descriptor_pool.DescriptorPool:
    id_file = descriptor_pb2.FileDescriptorProto(name="maplab-common/id.proto", package="common.proto", syntax="proto2")
    id_file.message_type.add(name="Id").field.append(_field("uint", 1, _FIELD.TYPE_UINT64, _REPEATED))

    eigen_file = descriptor_pb2.FileDescriptorProto(
        name="maplab-common/eigen.proto", package="common.proto", syntax="proto2"
    )
    for name, scalar in (("MatrixXf", _FIELD.TYPE_FLOAT), ("MatrixXd", _FIELD.TYPE_DOUBLE)):
        matrix = eigen_file.message_type.add(name=name)
        matrix.field.append(_field("rows", 1, _FIELD.TYPE_UINT32, _OPTIONAL))
        matrix.field.append(_field("cols", 2, _FIELD.TYPE_UINT32, _OPTIONAL))
        matrix.field.append(_field("data", 3, scalar, _REPEATED))

    extras_file = descriptor_pb2.FileDescriptorProto(
        name="hierloc/descriptor_index_extras.proto", package="hierloc.proto", syntax="proto2"
    )
    extras = extras_file.message_type.add(name="DescriptorIndexExtras")
    extras.field.append(_field("format_version", 1, _FIELD.TYPE_UINT32, _OPTIONAL))
    extras.field.append(_field("num_frames", 2, _FIELD.TYPE_UINT64, _OPTIONAL))
    extras.field.append(_field("missions", 3, _FIELD.TYPE_STRING, _REPEATED))
    extras.field.append(_field("names", 4, _FIELD.TYPE_STRING, _REPEATED))
    extras.field.append(_field("metadata_json", 5, _FIELD.TYPE_STRING, _OPTIONAL))

    index_file = descriptor_pb2.FileDescriptorProto(
        name="global-loc/descriptor_index.proto",
        package="global_loc.proto",
        syntax="proto2",
        dependency=[id_file.name, eigen_file.name, extras_file.name],
    )
    index = index_file.message_type.add(name="DescriptorIndex")
    index.field.append(_field("model_name", 1, _FIELD.TYPE_STRING, _OPTIONAL))
    index.field.append(_field("data_name", 2, _FIELD.TYPE_STRING, _OPTIONAL))
    index.field.append(_field("descriptor_size", 3, _FIELD.TYPE_INT64, _OPTIONAL))
    index.field.append(
        _field("frames", 4, _FIELD.TYPE_MESSAGE, _REPEATED, ".global_loc.proto.DescriptorIndex.Frame")
    )
    index.field.append(
        _field(
            "hierloc_extras",
            EXTRAS_FIELD_NUMBER,
            _FIELD.TYPE_MESSAGE,
            _OPTIONAL,
            ".hierloc.proto.DescriptorIndexExtras",
        )
    )
    frame = index.nested_type.add(name="Frame")
    frame.field.append(_field("vertex_id", 1, _FIELD.TYPE_MESSAGE, _REQUIRED, ".common.proto.Id"))
    frame.field.append(_field("frame_index", 2, _FIELD.TYPE_UINT32, _REQUIRED))
    frame.field.append(_field("resource_name", 3, _FIELD.TYPE_STRING, _REQUIRED))
    frame.field.append(_field("global_descriptor", 4, _FIELD.TYPE_MESSAGE, _REQUIRED, ".common.proto.MatrixXf"))
    frame.field.append(_field("position_vector", 5, _FIELD.TYPE_MESSAGE, _OPTIONAL, ".common.proto.MatrixXd"))
    frame.field.append(_field("rotation_matrix", 6, _FIELD.TYPE_MESSAGE, _OPTIONAL, ".common.proto.MatrixXd"))

    pool = descriptor_pool.DescriptorPool()
    for file_proto in (id_file, eigen_file, extras_file, index_file):
        pool.AddSerializedFile(file_proto.SerializeToString())  # the one adder every protobuf 4..7 has
    return pool


def _message_class(pool: descriptor_pool.DescriptorPool, full_name: str) -> type[Message]:
    descriptor = pool.FindMessageTypeByName(full_name)
    get_message_class = getattr(message_factory, "GetMessageClass", None)
    if get_message_class is not None:
        return get_message_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # protobuf < 4.22


_POOL = _build_pool()
DescriptorIndexMessage: type[Message] = _message_class(_POOL, "global_loc.proto.DescriptorIndex")


def encode_proto_index(index: DescriptorIndex, *, hierloc_extras: bool = True) -> bytes:
    """Serialise an index to the original protobuf wire format (plus the hierloc extras field if asked)."""
    index.validate()
    message = DescriptorIndexMessage()
    message.model_name = index.model_name
    message.data_name = index.data_name
    message.descriptor_size = index.descriptor_size
    d = index.descriptor_size
    for i in range(len(index)):
        frame = message.frames.add()
        frame.vertex_id.uint.extend(id_to_pair(index.keyframe_ids[i]))
        frame.frame_index = int(index.frame_index[i])
        frame.resource_name = index.resource_names[i]
        _fill_matrix(frame.global_descriptor, index.descriptors[i], d, 1)
        if index.positions is not None:
            _fill_matrix(frame.position_vector, index.positions[i], 3, 1)
        if index.rotations is not None:
            # Eigen's default storage, which the original serialised, is column-major.
            _fill_matrix(frame.rotation_matrix, index.rotations[i].ravel(order="F"), 3, 3)
    body = message.SerializeToString()
    if not hierloc_extras:
        return body
    header = DescriptorIndexMessage()
    extras = header.hierloc_extras
    extras.format_version = EXTRAS_FORMAT_VERSION
    extras.num_frames = len(index)
    extras.missions.extend(index.missions)
    extras.names.extend(index.names)
    extras.metadata_json = to_json_text(index.metadata)
    # Placed first so that any truncation removes frames the header still counts.
    return header.SerializeToString() + body


def _fill_matrix(matrix: Message, values: np.ndarray, rows: int, cols: int) -> None:
    matrix.rows = rows
    matrix.cols = cols
    matrix.data.extend(values.tolist())


def write_proto_index(index: DescriptorIndex, path: str | os.PathLike, *, hierloc_extras: bool = True) -> None:
    """Write an index atomically in the original protobuf format (see the module docstring)."""
    if index.pca is not None:
        logger.warning("%s: the protobuf index format cannot hold the fitted PCA; it is not saved", os.fspath(path))
    atomic_write_bytes(path, encode_proto_index(index, hierloc_extras=hierloc_extras))


def read_proto_index(path: str | os.PathLike) -> DescriptorIndex:
    """Read a protobuf index file, raising IndexFormatError naming the file if it is not a valid one."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_proto_index(data, source=path)


def decode_proto_index(data: bytes, source: str | os.PathLike = "<bytes>") -> DescriptorIndex:
    """Parse protobuf bytes into a DescriptorIndex; `source` names the data in errors."""
    if not data:
        raise IndexFormatError(source, "the file is empty, not a protobuf DescriptorIndex")
    for signature, kind in _FOREIGN_SIGNATURES:
        if data.startswith(signature):
            raise IndexFormatError(source, f"this is {kind}, not a protobuf DescriptorIndex")
    message = DescriptorIndexMessage()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise IndexFormatError(
            source, f"not a valid protobuf DescriptorIndex (truncated, corrupt or another kind of file): {exc}"
        ) from None
    try:
        return _index_from_message(message, source)
    except IndexFormatError:
        raise
    except IndexValidationError as exc:
        raise IndexFormatError(source, f"inconsistent index contents: {exc}") from None


def _text(value: str | bytes, label: str, source: str | os.PathLike) -> str:
    # proto2 strings that are not UTF-8 come back from upb as bytes instead of raising.
    if isinstance(value, bytes):
        raise IndexFormatError(source, f"{label} is not valid UTF-8 text (corrupt or not a descriptor index)")
    return value


def _index_from_message(message: Message, source: str | os.PathLike) -> DescriptorIndex:
    if not message.IsInitialized():
        missing = message.FindInitializationErrors()
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise IndexFormatError(source, f"required fields are missing: {shown}")
    frames = message.frames
    n = len(frames)
    has_header = any(message.HasField(name) for name in ("model_name", "data_name", "descriptor_size"))
    if not has_header and n == 0:
        raise IndexFormatError(source, "no DescriptorIndex fields found (not a descriptor index)")

    extras = message.hierloc_extras if message.HasField("hierloc_extras") else None
    if extras is not None:
        if extras.format_version > EXTRAS_FORMAT_VERSION:
            raise IndexFormatError(
                source,
                f"written by a newer hierloc (extras version {extras.format_version}, "
                f"this one reads up to {EXTRAS_FORMAT_VERSION})",
            )
        if extras.HasField("num_frames") and extras.num_frames != n:
            raise IndexFormatError(
                source,
                f"holds {n} frames but its header announces {extras.num_frames}: the file is truncated or corrupt",
            )

    if message.HasField("descriptor_size"):
        d = message.descriptor_size
    elif n:
        d = len(frames[0].global_descriptor.data)
    else:
        raise IndexFormatError(source, "has neither a descriptor_size nor any frame to infer it from")
    if not 1 <= d <= MAX_DESCRIPTOR_SIZE:
        raise IndexFormatError(source, f"descriptor_size is {d}, expected 1 to {MAX_DESCRIPTOR_SIZE}")
    # Every size is checked against what the message holds before the arrays are allocated.
    for i, frame in enumerate(frames):
        size = len(frame.global_descriptor.data)
        if size != d:
            raise IndexFormatError(source, f"frame {i}: global_descriptor (descriptor_size {d}) holds {size} values, "
                                           f"expected {d}")

    descriptors = np.empty((n, d), dtype=np.float32)
    frame_index = np.empty(n, dtype=np.uint32)
    keyframe_ids: list[str] = []
    resource_names: list[str] = []
    num_positions = sum(frame.HasField("position_vector") for frame in frames)
    num_rotations = sum(frame.HasField("rotation_matrix") for frame in frames)
    for label, count in (("position_vector", num_positions), ("rotation_matrix", num_rotations)):
        if 0 < count < n:
            raise IndexFormatError(source, f"{label} is present in only {count} of {n} frames")
    positions = np.empty((n, 3), dtype=np.float64) if n and num_positions == n else None
    rotations = np.empty((n, 3, 3), dtype=np.float64) if n and num_rotations == n else None

    for i, frame in enumerate(frames):
        words = frame.vertex_id.uint
        if len(words) != 2:
            raise IndexFormatError(source, f"frame {i}: vertex_id has {len(words)} uint64 words, expected 2")
        keyframe_ids.append(pair_to_id(words[0], words[1]))
        frame_index[i] = frame.frame_index
        resource_names.append(_text(frame.resource_name, f"frame {i}: resource_name", source))
        label = f"frame {i}: global_descriptor (descriptor_size {d})"
        descriptors[i] = _matrix_values(frame.global_descriptor, d, 1, label, source)
        if positions is not None:
            positions[i] = _matrix_values(frame.position_vector, 3, 1, f"frame {i}: position_vector", source)
        if rotations is not None:
            values = _matrix_values(frame.rotation_matrix, 3, 3, f"frame {i}: rotation_matrix", source)
            rotations[i] = np.asarray(values).reshape(3, 3, order="F")

    missions: list[str] = [""] * n
    names: list[str] = list(resource_names)
    metadata: dict[str, Any] = {}
    if extras is not None:
        for label, values in (("missions", extras.missions), ("names", extras.names)):
            if len(values) not in (0, n):
                raise IndexFormatError(source, f"has {len(values)} {label} for {n} frames")
        if len(extras.missions):
            missions = [_text(value, "a mission name", source) for value in extras.missions]
        if len(extras.names):
            names = [_text(value, "an image name", source) for value in extras.names]
        if extras.HasField("metadata_json"):
            metadata = parse_metadata_json(_text(extras.metadata_json, "metadata", source), source)

    index = DescriptorIndex(
        model_name=_text(message.model_name, "model_name", source),
        data_name=_text(message.data_name, "data_name", source),
        descriptors=descriptors,
        keyframe_ids=keyframe_ids,
        missions=missions,
        names=names,
        frame_index=frame_index,
        resource_names=resource_names,
        positions=positions,
        rotations=rotations,
        metadata=metadata,
    )
    check_directions(index.descriptors)
    return index


def _matrix_values(matrix: Message, rows: int, cols: int, label: str, source: str | os.PathLike) -> Any:
    values = matrix.data
    if len(values) != rows * cols:
        raise IndexFormatError(source, f"{label} holds {len(values)} values, expected {rows * cols} ({rows} x {cols})")
    if (matrix.HasField("rows") and matrix.rows != rows) or (matrix.HasField("cols") and matrix.cols != cols):
        raise IndexFormatError(source, f"{label} is declared {matrix.rows} x {matrix.cols}, expected {rows} x {cols}")
    return values


