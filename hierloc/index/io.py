"""Saving and loading descriptor indexes in either format, chosen by extension or detected by content."""

from __future__ import annotations

import os
from pathlib import Path

from hierloc.index.descriptor_index import DescriptorIndex
from hierloc.index.errors import IndexFormatError
from hierloc.index.native_format import HDF5_SIGNATURE, INTEGRITY_MAGIC, read_native_index, write_native_index
from hierloc.index.proto_format import read_proto_index, write_proto_index

FORMATS = ("protobuf", "native")
_EXTENSIONS = {".pb": "protobuf", ".proto": "protobuf", ".protobuf": "protobuf", ".h5": "native", ".hdf5": "native"}
# HDF5 allows a user block before the superblock, which then sits at one of these offsets.
_HDF5_SIGNATURE_OFFSETS = (0, 512, 1024, 2048, 4096)


def format_for_path(path: str | os.PathLike) -> str:
    """Return the index format implied by a file extension (.pb/.proto -> protobuf, .h5/.hdf5 -> native)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ValueError(
            f"{os.fspath(path)}: cannot tell the index format from the extension {suffix!r}; "
            f"use one of {sorted(_EXTENSIONS)} or pass format='protobuf' or format='native'"
        )
    return _EXTENSIONS[suffix]


def detect_format(path: str | os.PathLike) -> str:
    """Return "native" if the file carries hierloc's index header or the HDF5 signature, else "protobuf"
    (which has no signature)."""
    with open(path, "rb") as f:
        head = f.read(_HDF5_SIGNATURE_OFFSETS[-1] + len(HDF5_SIGNATURE))
    if not head:
        raise IndexFormatError(path, "the file is empty, not a descriptor index")
    if head.startswith(INTEGRITY_MAGIC):
        return "native"
    for offset in _HDF5_SIGNATURE_OFFSETS:
        if head[offset : offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return "native"
    return "protobuf"


def save_index(index: DescriptorIndex, path: str | os.PathLike, format: str = "auto", **options) -> None:
    """Write `index` atomically; `options` go to the format's writer (hierloc_extras, or dtype/compression)."""
    chosen = format_for_path(path) if format == "auto" else format
    if chosen == "protobuf":
        write_proto_index(index, path, **options)
    elif chosen == "native":
        write_native_index(index, path, **options)
    else:
        raise ValueError(f"unknown index format {format!r}; expected 'auto' or one of {FORMATS}")


def load_index(path: str | os.PathLike) -> DescriptorIndex:
    """Read an index file of either format, detected from its content rather than its name."""
    if detect_format(path) == "native":
        return read_native_index(path)
    return read_proto_index(path)


def convert_index(
    src: str | os.PathLike, dst: str | os.PathLike, format: str = "auto", **options
) -> DescriptorIndex:
    """Load `src` (any format) and save it to `dst` (format from its extension or `format`); return the index."""
    index = load_index(src)
    save_index(index, dst, format=format, **options)
    return index
