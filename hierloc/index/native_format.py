"""hierloc's native index format: one HDF5 file that loads fast at scale.

Layout (format version 2):
  user block   512 bytes before the HDF5 superblock: the integrity header, "hierloc.descriptor_index"
               and a newline, then the length (uint64) and CRC-32C (uint32) of everything after the block
  attrs        format="hierloc.descriptor_index", format_version, model_name, data_name,
               descriptor_size, num_frames, descriptor_dtype (strings as fixed-length UTF-8)
  metadata_json  UTF-8 bytes (uint8)
  descriptors  (N, D) float32 or float16, chunked by rows
  keyframe_ids (N,) fixed 32-byte ASCII hex ids
  missions, names, resource_names  UTF-8 bytes (uint8), the N strings joined by NUL
  frame_index  (N,) uint32
  positions    (N, 3) float64, rotations (N, 3, 3) float64 (both optional)
  pca/         optional group: mean, components, explained_variance datasets; whiten,
               num_fit_samples, format, version attrs (see PCA.to_dict)
Every dataset carries a Fletcher-32 checksum, and the whole file a CRC-32C in its header that is
verified before libhdf5 sees the file: damage anywhere, in the data or in HDF5's own structures, is
reported instead of read. Version 2 stores nothing of variable length, so reading never touches
HDF5's global heap: libhdf5 2.0 loops forever on a zeroed global heap collection.

Version 1 files (no header; strings as HDF5 variable-length strings, a SHA-256 of the string columns
in the attribute strings_sha256) are still read; `hierloc index convert old.h5 new.h5` rewrites one as
version 2.

Reading trusts nothing in the file: every dataset's shape must match the counts in the header, and
its declared size must be backed by bytes stored in the file (HDF5 can declare a huge dataset whose
chunks were never written) before it is read; dtypes are checked; the rows are validated as a
DescriptorIndex is (ids, duplicate (id, frame) pairs, finite poses that are rotations) also when only
the catalog is read; descriptors must be finite; the PCA must be finite and bounded. Any problem is
an IndexFormatError naming the file.
"""

from __future__ import annotations

import hashlib
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import h5py
import numpy as np

from hierloc.index.descriptor_index import MAX_DESCRIPTOR_SIZE, DescriptorIndex, check_directions
from hierloc.index.errors import IndexFormatError, IndexValidationError, parse_metadata_json
from hierloc.index.pca import PCA
from hierloc.utils.io import atomic_path, file_crc32c, to_json_text

NATIVE_FORMAT = "hierloc.descriptor_index"
NATIVE_FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1  # variable-length strings, no integrity header
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
DESCRIPTOR_DTYPES = ("float32", "float16")

_CHUNK_BYTES = 2**20
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_STRING_DATASETS = ("missions", "names", "resource_names")
_PCA_ARRAYS = ("mean", "components", "explained_variance")
STRINGS_CHECKSUM_ATTR = "strings_sha256"
# How much larger than its stored bytes a dataset may declare itself: compression of float descriptors
# reaches a few times at most; an unwritten (sparse) dataset declares any size over nothing.
_MAX_EXPANSION = 1000
_EXPANSION_SLACK = 2**20
_Result = TypeVar("_Result")
# The integrity header fills HDF5's user block (whose size must be a power of two >= 512).
USER_BLOCK_SIZE = 512
INTEGRITY_MAGIC = NATIVE_FORMAT.encode("ascii") + b"\n"
_INTEGRITY_FIELDS = struct.Struct("<QI")  # bytes after the user block, their CRC-32C


@dataclass(eq=False)
class IndexCatalog:
    """A native index file's contents without its descriptors: who the keyframes are, and how to search them."""

    model_name: str
    data_name: str
    descriptor_size: int
    keyframe_ids: list[str]
    missions: list[str]
    names: list[str]
    frame_index: np.ndarray
    resource_names: list[str]
    positions: np.ndarray | None
    rotations: np.ndarray | None
    metadata: dict[str, Any]
    pca: PCA | None

    def __len__(self) -> int:
        return len(self.keyframe_ids)


# What a catalog shares with a DescriptorIndex, field for field, besides metadata and PCA.
_ROW_FIELDS = ("model_name", "data_name", "keyframe_ids", "missions", "names", "frame_index", "resource_names",
               "positions", "rotations")


def _create_dataset(group: h5py.Group, name: str, data: np.ndarray, compression: str | None = None) -> None:
    row_bytes = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize)
    rows = max(1, min(len(data), _CHUNK_BYTES // row_bytes))
    # HDF5 cannot filter variable-length strings, so those go without a checksum.
    fixed_size = h5py.check_string_dtype(data.dtype) is None or data.dtype.kind == "S"
    group.create_dataset(
        name,
        data=data,
        chunks=(rows, *data.shape[1:]),
        maxshape=(None, *data.shape[1:]),  # also lets an empty (0, ...) dataset have a chunk shape
        fletcher32=fixed_size,
        compression=compression,
    )


def write_native_index(
    index: DescriptorIndex,
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    compression: str | None = None,
) -> None:
    """Write an index atomically as HDF5; `dtype` float16 halves the size, `compression` e.g. "gzip"."""
    index.validate()
    if dtype not in DESCRIPTOR_DTYPES:
        raise ValueError(f"descriptor dtype must be one of {DESCRIPTOR_DTYPES}, got {dtype!r}")
    descriptors = index.descriptors
    if dtype == "float16":
        if len(index) and float(np.abs(descriptors).max()) > _FLOAT16_MAX:
            raise ValueError(f"descriptor values exceed the float16 range (+-{_FLOAT16_MAX:g}); store them as float32")
        descriptors = descriptors.astype(np.float16)
    for name in _STRING_DATASETS:
        if any("\x00" in value for value in getattr(index, name)):
            raise ValueError(f"{name} must not contain NUL characters (the native format joins them with NUL)")
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w", userblock_size=USER_BLOCK_SIZE) as f:
            f.attrs["format"] = _fixed_text(NATIVE_FORMAT)
            f.attrs["format_version"] = NATIVE_FORMAT_VERSION
            f.attrs["model_name"] = _fixed_text(index.model_name)
            f.attrs["data_name"] = _fixed_text(index.data_name)
            f.attrs["descriptor_size"] = index.descriptor_size
            f.attrs["num_frames"] = len(index)
            f.attrs["descriptor_dtype"] = _fixed_text(dtype)
            write_text_dataset(f, "metadata_json", to_json_text(index.metadata))
            _create_dataset(f, "descriptors", descriptors, compression)
            _create_dataset(f, "keyframe_ids", np.array(index.keyframe_ids, dtype="S32").reshape(len(index)))
            for name in _STRING_DATASETS:
                write_text_dataset(f, name, "\x00".join(getattr(index, name)))
            _create_dataset(f, "frame_index", index.frame_index)
            if index.positions is not None:
                _create_dataset(f, "positions", index.positions)
            if index.rotations is not None:
                _create_dataset(f, "rotations", index.rotations)
            if index.pca is not None:
                group = f.create_group("pca")
                for key, value in index.pca.to_dict().items():
                    if key in _PCA_ARRAYS:
                        group.create_dataset(key, data=value, fletcher32=True, chunks=value.shape)
                    else:
                        group.attrs[key] = _fixed_text(value) if isinstance(value, str) else value
        sign_native_index(tmp)


def sign_native_index(path: str | os.PathLike, *, replace: bool = False) -> None:
    """Write the integrity header (length and CRC-32C of the HDF5 part) into a file's 512-byte user block.

    `replace=True` re-signs a file that has a header already (after editing it in place with h5py, as
    tests and the fuzzer do); without it, the user block must be empty, as h5py leaves it.
    """
    with open(path, "r+b") as f:
        block = f.read(USER_BLOCK_SIZE)
        _check_signable(block, replace, path)
        size = os.fstat(f.fileno()).st_size
        crc = int(file_crc32c(path, offset=USER_BLOCK_SIZE), 16)
        f.seek(0)
        f.write(INTEGRITY_MAGIC + _INTEGRITY_FIELDS.pack(size - USER_BLOCK_SIZE, crc))


def signed_index_bytes(data: bytes) -> bytes:
    """The bytes of a signed index with the header recomputed over its (edited) contents (for the fuzzer)."""
    _check_signable(data[:USER_BLOCK_SIZE], True, "<bytes>")
    from google_crc32c import value as crc32c

    header = INTEGRITY_MAGIC + _INTEGRITY_FIELDS.pack(len(data) - USER_BLOCK_SIZE, crc32c(data[USER_BLOCK_SIZE:]))
    return header + data[len(header):]


def _check_signable(block: bytes, replace: bool, path: str | os.PathLike) -> None:
    empty = block.count(0) == USER_BLOCK_SIZE
    if len(block) != USER_BLOCK_SIZE or not (empty or (replace and block.startswith(INTEGRITY_MAGIC))):
        raise ValueError(f"{os.fspath(path)}: no empty or hierloc user block of {USER_BLOCK_SIZE} bytes to sign")


@contextmanager
def edit_native_index(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open a native index with h5py for editing in place, and re-sign it (version 2) when the block ends.

    For tests, the fuzzer and hand repairs: the edit is not atomic and nothing in it is validated.
    """
    with h5py.File(path, "a") as f:
        signed = f.userblock_size == USER_BLOCK_SIZE
        yield f
    if signed:
        sign_native_index(path, replace=True)


def write_text_dataset(group: h5py.Group, name: str, text: str) -> None:
    """Store (or replace) a version 2 text dataset: UTF-8 bytes as uint8, checksummed."""
    if name in group:
        del group[name]
    _create_dataset(group, name, encode_text(text))


def read_text_dataset(group: h5py.Group, name: str) -> str:
    """The text of a version 2 text dataset (no validation: use the index readers for untrusted files)."""
    return group[name][...].tobytes().decode("utf-8")


def encode_text(text: str) -> np.ndarray:
    """UTF-8 bytes of a string as a uint8 array (the version 2 storage of text: fixed-size and checksummed)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _fixed_text(text: str) -> np.bytes_:
    # numpy bytes become a fixed-length HDF5 string stored in the attribute itself (a Python str would be a
    # variable-length one on the global heap). An empty one is stored as a single NUL.
    return np.bytes_(text.encode("utf-8"))


def strings_sha256(*columns: list[str]) -> str:
    """SHA-256 of string columns (each string UTF-8, NUL-terminated; each column closed by a record separator)."""
    digest = hashlib.sha256()
    for column in columns:
        for value in column:
            digest.update(value.encode("utf-8", "surrogatepass") + b"\x00")
        digest.update(b"\x1e")
    return digest.hexdigest()


def is_native_index_file(path: str | os.PathLike) -> bool:
    """True if the file starts with hierloc's integrity header or the HDF5 signature (without checking more)."""
    with open(path, "rb") as f:
        return f.read(len(INTEGRITY_MAGIC)).startswith((INTEGRITY_MAGIC, HDF5_SIGNATURE))


def _verify_integrity(path: str | os.PathLike) -> bool:
    """Check the integrity header before libhdf5 reads the file; True if it has one (version 2), False if the
    file starts with the bare HDF5 signature (version 1). Anything else raises IndexFormatError."""
    with open(path, "rb") as f:  # missing files and directories raise their usual OSError here
        head = f.read(USER_BLOCK_SIZE)
        status = os.fstat(f.fileno())
    if not head:
        raise IndexFormatError(path, "the file is empty, not an HDF5 descriptor index")
    if head.startswith(HDF5_SIGNATURE):
        return False
    if not head.startswith(INTEGRITY_MAGIC):
        raise IndexFormatError(path, "starts with neither hierloc's index header nor the HDF5 signature "
                                     "(damaged, or another kind of file)")
    if len(head) < USER_BLOCK_SIZE:
        raise IndexFormatError(path, f"is {len(head)} bytes, shorter than its {USER_BLOCK_SIZE}-byte header "
                                     "(truncated)")
    length, recorded = _INTEGRITY_FIELDS.unpack_from(head, len(INTEGRITY_MAGIC))
    if status.st_size != USER_BLOCK_SIZE + length:
        raise IndexFormatError(path, f"is {status.st_size} bytes but its header records "
                                     f"{USER_BLOCK_SIZE + length} (truncated or extended)")
    # Every open checks the whole file (about 8 GB/s with google-crc32c): no cache by modification time, whose
    # clock ticks too coarsely to notice an edit made just after a check.
    if int(file_crc32c(path, offset=USER_BLOCK_SIZE), 16) != recorded:
        raise IndexFormatError(path, "its contents do not match the CRC-32C recorded when it was written "
                                     "(the file is damaged)")
    return True


def _open_native(path: str | os.PathLike, read: Callable[[h5py.File, str | os.PathLike], _Result]) -> _Result:
    signed = _verify_integrity(path)
    try:
        handle = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise IndexFormatError(
            path, f"not a readable HDF5 file (truncated, corrupt or another kind of file): {exc}"
        ) from None
    with handle:
        try:
            if signed != (handle.userblock_size == USER_BLOCK_SIZE):
                raise IndexFormatError(path, f"its HDF5 user block is {handle.userblock_size} bytes; "
                                             f"a hierloc index has {USER_BLOCK_SIZE if signed else 0}")
            return read(handle, path)
        except IndexFormatError:
            raise
        except IndexValidationError as exc:
            raise IndexFormatError(path, f"inconsistent index contents: {exc}") from None
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            # h5py reports checksum failures and damaged structures as OSError, KeyError or RuntimeError.
            raise IndexFormatError(path, f"corrupt index data: {exc}") from None


def read_native_index(path: str | os.PathLike) -> DescriptorIndex:
    """Read a native (HDF5) index file, raising IndexFormatError naming the file if it is not a valid one."""
    return _open_native(path, _read)


def read_native_catalog(path: str | os.PathLike) -> IndexCatalog:
    """Read everything but the descriptors (for searching a stored structure without holding N x D floats)."""
    return _open_native(path, lambda f, p: _read_catalog(f, p)[0])


def read_native_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Only the metadata dict of a native index file (no rows, no descriptors)."""

    return _open_native(path, _read_metadata)


def _is_version_2(f: h5py.File) -> bool:
    # _open_native has checked that a file with a user block carries a verified integrity header.
    return f.userblock_size == USER_BLOCK_SIZE


def _read_metadata(f: h5py.File, path: str | os.PathLike) -> dict[str, Any]:
    if _is_version_2(f):
        text = _read_text(f, "metadata_json", path)
    else:
        text = _attr(f, "metadata_json", path)
    return parse_metadata_json(text, path)


def _read_text(f: h5py.Group, name: str, path: str | os.PathLike) -> str:
    """A version 2 text dataset: UTF-8 bytes stored as uint8."""
    dataset = _dataset(f, name, None, path)
    if dataset.dtype != np.uint8 or dataset.ndim != 1:
        raise IndexFormatError(path, f"dataset '{name}' holds {dataset.dtype} {dataset.shape}, expected UTF-8 bytes")
    try:
        return dataset[...].tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IndexFormatError(path, f"dataset '{name}' is not UTF-8 text: {exc}") from None


def _read_string_column(f: h5py.File, name: str, n: int, path: str | os.PathLike) -> list[str]:
    if _is_version_2(f):
        values = _read_text(f, name, path).split("\x00") if n else []
        if len(values) != n and not (n == 0 and not values):
            raise IndexFormatError(path, f"dataset '{name}' holds {len(values)} strings, expected {n} from the header")
        return values
    dataset = _dataset(f, name, (n,), path)
    if h5py.check_string_dtype(dataset.dtype) is None:
        raise IndexFormatError(path, f"dataset '{name}' holds {dataset.dtype}, not strings")
    return dataset.asstr()[...].tolist()


def _attr(f: h5py.File, name: str, path: str | os.PathLike) -> Any:
    if name not in f.attrs:
        raise IndexFormatError(path, f"lacks the '{name}' attribute (truncated or corrupt)")
    _refuse_variable_length(f, f.attrs.get_id(name).dtype, f"attribute '{name}'", path)
    value = f.attrs[name]
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _dataset(f: h5py.Group, name: str, shape: tuple[int, ...] | None, path: str | os.PathLike) -> h5py.Dataset:
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise IndexFormatError(path, f"lacks the '{name}' dataset (truncated or corrupt)")
    dataset = f[name]
    _refuse_variable_length(f.file, dataset.dtype, f"dataset '{name}'", path)
    if shape is not None and dataset.shape != shape:
        raise IndexFormatError(path, f"dataset '{name}' has shape {dataset.shape}, expected {shape} from the header")
    _check_backed(dataset, path)
    return dataset


def _refuse_variable_length(f: h5py.File, dtype: np.dtype, what: str, path: str | os.PathLike) -> None:
    # Variable-length values live on the global heap, which version 2 never reads (see the module docstring).
    if _is_version_2(f.file) and dtype.kind == "O":
        raise IndexFormatError(path, f"{what} is of variable length ({dtype}), which a version 2 index never stores")


def _check_backed(dataset: h5py.Dataset, path: str | os.PathLike) -> None:
    """Refuse a dataset that declares far more bytes than the file stores for it (before reading it)."""
    if dataset.shape is None:
        raise IndexFormatError(path, f"dataset '{dataset.name}' has no shape (an empty dataspace)")
    declared = int(np.prod(dataset.shape, dtype=np.float64)) * max(1, dataset.dtype.itemsize)
    stored = int(dataset.id.get_storage_size())
    if declared > _MAX_EXPANSION * stored + _EXPANSION_SLACK:
        raise IndexFormatError(path, f"dataset '{dataset.name}' declares shape {dataset.shape} ({declared} bytes) "
                                     f"but the file stores only {stored} bytes of it")


def _read_numbers(f: h5py.Group, name: str, shape: tuple[int, ...], path: str | os.PathLike,
                  kinds: str = "fiu") -> np.ndarray:
    dataset = _dataset(f, name, shape, path)
    if dataset.dtype.kind not in kinds:
        raise IndexFormatError(path, f"dataset '{name}' holds {dataset.dtype}, not numbers")
    return dataset[...]


def _read_catalog(f: h5py.File, path: str | os.PathLike) -> tuple[IndexCatalog, h5py.Dataset]:
    fmt = _attr(f, "format", path) if "format" in f.attrs else None
    if fmt != NATIVE_FORMAT:
        raise IndexFormatError(path, f"an HDF5 file but not a hierloc descriptor index (format attribute {fmt!r})")
    version = int(_attr(f, "format_version", path))
    if version > NATIVE_FORMAT_VERSION:
        raise IndexFormatError(
            path, f"written by a newer hierloc (format version {version}, this one reads up to {NATIVE_FORMAT_VERSION})"
        )
    expected = NATIVE_FORMAT_VERSION if _is_version_2(f) else LEGACY_FORMAT_VERSION
    if version != expected:
        raise IndexFormatError(path, f"declares format version {version} but is laid out as version {expected} "
                                     "(with or without the integrity header)")
    n = int(_attr(f, "num_frames", path))
    d = int(_attr(f, "descriptor_size", path))
    if n < 0 or not 1 <= d <= MAX_DESCRIPTOR_SIZE:
        raise IndexFormatError(path, f"the header declares {n} frames of {d}-D descriptors "
                                     f"(at most {MAX_DESCRIPTOR_SIZE}-D are read)")
    descriptors = _dataset(f, "descriptors", (n, d), path)
    if descriptors.dtype not in (np.float32, np.float16):
        raise IndexFormatError(path, f"descriptors are stored as {descriptors.dtype}, expected float32 or float16")
    metadata = _read_metadata(f, path)
    ids = _dataset(f, "keyframe_ids", (n,), path)
    if ids.dtype.kind != "S" or ids.dtype.itemsize > 32:
        raise IndexFormatError(path, f"keyframe_ids are stored as {ids.dtype}, expected 32-byte ASCII hex ids")
    strings = {name: _read_string_column(f, name, n, path) for name in _STRING_DATASETS}
    if STRINGS_CHECKSUM_ATTR in f.attrs:
        recorded = _attr(f, STRINGS_CHECKSUM_ATTR, path)
        if recorded != strings_sha256(*(strings[name] for name in _STRING_DATASETS)):
            raise IndexFormatError(path, "its missions or image names do not match the checksum recorded when it "
                                         "was written (the file is damaged)")
    positions = _read_numbers(f, "positions", (n, 3), path) if "positions" in f else None
    rotations = _read_numbers(f, "rotations", (n, 3, 3), path) if "rotations" in f else None
    rows = DescriptorIndex(  # validates the rows (ids, strings, frame numbers, poses) without the descriptors
        model_name=str(_attr(f, "model_name", path)),
        data_name=str(_attr(f, "data_name", path)),
        descriptors=np.zeros((n, 1), np.float32),
        keyframe_ids=[value.decode("ascii") for value in ids[...].tolist()],
        missions=strings["missions"],
        names=strings["names"],
        frame_index=_read_numbers(f, "frame_index", (n,), path, kinds="iu"),
        resource_names=strings["resource_names"],
        positions=positions,
        rotations=rotations,
        metadata=metadata,
    )
    pca = _read_pca(f, path) if "pca" in f else None
    if pca is not None and pca.input_dim != d:
        raise IndexFormatError(path, f"the PCA takes {pca.input_dim}-D descriptors but the index holds {d}-D ones")
    catalog = IndexCatalog(descriptor_size=d, metadata=metadata, pca=pca,
                           **{name: getattr(rows, name) for name in _ROW_FIELDS})
    return catalog, descriptors


def _read(f: h5py.File, path: str | os.PathLike) -> DescriptorIndex:
    catalog, descriptors = _read_catalog(f, path)
    index = DescriptorIndex(
        # float16 files are widened once here so that search always runs on float32.
        descriptors=descriptors[...].astype(np.float32, copy=False),
        metadata=catalog.metadata,
        pca=catalog.pca,
        **{name: getattr(catalog, name) for name in _ROW_FIELDS},
    )
    check_directions(index.descriptors)
    return index


def _read_pca(f: h5py.File, path: str | os.PathLike) -> PCA:
    group = f["pca"]
    if not isinstance(group, h5py.Group):
        raise IndexFormatError(path, "'pca' is not a group")
    params: dict[str, Any] = {key: _attr(group, key, path) for key in group.attrs}
    for key in _PCA_ARRAYS:
        if key in group:
            params[key] = _dataset(group, key, None, path)[...]
    try:
        return PCA.from_dict(params)
    except ValueError as exc:
        raise IndexFormatError(path, f"invalid PCA parameters: {exc}") from None
