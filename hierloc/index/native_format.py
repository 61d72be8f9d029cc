"""hierloc's native index format: one HDF5 file that loads fast at scale.

Layout (format version 1):
  attrs        format="hierloc.descriptor_index", format_version, model_name, data_name,
               descriptor_size, num_frames, descriptor_dtype, metadata_json
  descriptors  (N, D) float32 or float16, chunked by rows
  keyframe_ids (N,) fixed 32-byte ASCII hex ids
  missions, names, resource_names  (N,) UTF-8 strings
  frame_index  (N,) uint32
  positions    (N, 3) float64, rotations (N, 3, 3) float64 (both optional)
  pca/         optional group: mean, components, explained_variance datasets; whiten,
               num_fit_samples, format, version attrs (see PCA.to_dict)
Every fixed-size dataset carries a Fletcher-32 checksum so that flipped bytes are reported
instead of read; HDF5 cannot checksum the variable-length strings, so the attribute strings_sha256
holds a SHA-256 of missions, names and resource names, verified when read (files written before it
existed are read without that check).

Reading trusts nothing in the file: every dataset's shape must match the counts in the header, and
its declared size must be backed by bytes stored in the file (HDF5 can declare a huge dataset whose
chunks were never written) before it is read; dtypes are checked; the rows are validated as a
DescriptorIndex is (ids, duplicate (id, frame) pairs, finite poses that are rotations) also when only
the catalog is read; descriptors must be finite; the PCA must be finite and bounded. Any problem is
an IndexFormatError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import h5py
import numpy as np

from hierloc.index.descriptor_index import MAX_DESCRIPTOR_SIZE, DescriptorIndex, check_directions
from hierloc.index.errors import IndexFormatError, IndexValidationError
from hierloc.index.pca import PCA
from hierloc.utils.io import atomic_path, to_json_text

NATIVE_FORMAT = "hierloc.descriptor_index"
NATIVE_FORMAT_VERSION = 1
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
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = NATIVE_FORMAT
            f.attrs["format_version"] = NATIVE_FORMAT_VERSION
            f.attrs["model_name"] = index.model_name
            f.attrs["data_name"] = index.data_name
            f.attrs["descriptor_size"] = index.descriptor_size
            f.attrs["num_frames"] = len(index)
            f.attrs["descriptor_dtype"] = dtype
            f.attrs["metadata_json"] = to_json_text(index.metadata)
            f.attrs[STRINGS_CHECKSUM_ATTR] = strings_sha256(index.missions, index.names, index.resource_names)
            _create_dataset(f, "descriptors", descriptors, compression)
            _create_dataset(f, "keyframe_ids", np.array(index.keyframe_ids, dtype="S32").reshape(len(index)))
            for name in _STRING_DATASETS:
                values = np.array(getattr(index, name), dtype=h5py.string_dtype()).reshape(len(index))
                _create_dataset(f, name, values)
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
                        group.attrs[key] = value


def strings_sha256(*columns: list[str]) -> str:
    """SHA-256 of string columns (each string UTF-8, NUL-terminated; each column closed by a record separator)."""
    digest = hashlib.sha256()
    for column in columns:
        for value in column:
            digest.update(value.encode("utf-8", "surrogatepass") + b"\x00")
        digest.update(b"\x1e")
    return digest.hexdigest()


def is_native_index_file(path: str | os.PathLike) -> bool:
    """True if the file starts with the HDF5 signature (without checking that it is an index)."""
    with open(path, "rb") as f:
        return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def _open_native(path: str | os.PathLike, read: Callable[[h5py.File, str | os.PathLike], _Result]) -> _Result:
    with open(path, "rb") as f:  # missing files and directories raise their usual OSError here
        if not f.read(1):
            raise IndexFormatError(path, "the file is empty, not an HDF5 descriptor index")
    try:
        handle = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise IndexFormatError(
            path, f"not a readable HDF5 file (truncated, corrupt or another kind of file): {exc}"
        ) from None
    with handle:
        try:
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

    def read(f: h5py.File, p: str | os.PathLike) -> dict[str, Any]:
        metadata = json.loads(_attr(f, "metadata_json", p))
        if not isinstance(metadata, dict):
            raise IndexFormatError(p, f"metadata must be a JSON object, got {type(metadata).__name__}")
        return metadata

    return _open_native(path, read)


def _attr(f: h5py.File, name: str, path: str | os.PathLike) -> Any:
    if name not in f.attrs:
        raise IndexFormatError(path, f"lacks the '{name}' attribute (truncated or corrupt)")
    value = f.attrs[name]
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _dataset(f: h5py.Group, name: str, shape: tuple[int, ...] | None, path: str | os.PathLike) -> h5py.Dataset:
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise IndexFormatError(path, f"lacks the '{name}' dataset (truncated or corrupt)")
    dataset = f[name]
    if shape is not None and dataset.shape != shape:
        raise IndexFormatError(path, f"dataset '{name}' has shape {dataset.shape}, expected {shape} from the header")
    _check_backed(dataset, path)
    return dataset


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
    fmt = f.attrs.get("format")
    fmt = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else fmt
    if fmt != NATIVE_FORMAT:
        raise IndexFormatError(path, f"an HDF5 file but not a hierloc descriptor index (format attribute {fmt!r})")
    version = int(_attr(f, "format_version", path))
    if version > NATIVE_FORMAT_VERSION:
        raise IndexFormatError(
            path, f"written by a newer hierloc (format version {version}, this one reads up to {NATIVE_FORMAT_VERSION})"
        )
    n = int(_attr(f, "num_frames", path))
    d = int(_attr(f, "descriptor_size", path))
    if n < 0 or not 1 <= d <= MAX_DESCRIPTOR_SIZE:
        raise IndexFormatError(path, f"the header declares {n} frames of {d}-D descriptors "
                                     f"(at most {MAX_DESCRIPTOR_SIZE}-D are read)")
    descriptors = _dataset(f, "descriptors", (n, d), path)
    if descriptors.dtype not in (np.float32, np.float16):
        raise IndexFormatError(path, f"descriptors are stored as {descriptors.dtype}, expected float32 or float16")
    try:
        metadata = json.loads(_attr(f, "metadata_json", path))
    except json.JSONDecodeError as exc:
        raise IndexFormatError(path, f"metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise IndexFormatError(path, f"metadata must be a JSON object, got {type(metadata).__name__}")
    ids = _dataset(f, "keyframe_ids", (n,), path)
    if ids.dtype.kind != "S" or ids.dtype.itemsize > 32:
        raise IndexFormatError(path, f"keyframe_ids are stored as {ids.dtype}, expected 32-byte ASCII hex ids")
    strings = {}
    for name in _STRING_DATASETS:
        dataset = _dataset(f, name, (n,), path)
        if h5py.check_string_dtype(dataset.dtype) is None:
            raise IndexFormatError(path, f"dataset '{name}' holds {dataset.dtype}, not strings")
        strings[name] = dataset.asstr()[...].tolist()
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
    catalog = IndexCatalog(
        model_name=rows.model_name,
        data_name=rows.data_name,
        descriptor_size=d,
        keyframe_ids=rows.keyframe_ids,
        missions=rows.missions,
        names=rows.names,
        frame_index=rows.frame_index,
        resource_names=rows.resource_names,
        positions=rows.positions,
        rotations=rows.rotations,
        metadata=metadata,
        pca=pca,
    )
    return catalog, descriptors


def _read(f: h5py.File, path: str | os.PathLike) -> DescriptorIndex:
    catalog, descriptors = _read_catalog(f, path)
    index = DescriptorIndex(
        model_name=catalog.model_name,
        data_name=catalog.data_name,
        # float16 files are widened once here so that search always runs on float32.
        descriptors=descriptors[...].astype(np.float32, copy=False),
        keyframe_ids=catalog.keyframe_ids,
        missions=catalog.missions,
        names=catalog.names,
        frame_index=catalog.frame_index,
        resource_names=catalog.resource_names,
        positions=catalog.positions,
        rotations=catalog.rotations,
        metadata=catalog.metadata,
        pca=catalog.pca,
    )
    check_directions(index.descriptors)
    return index


def _read_pca(f: h5py.File, path: str | os.PathLike) -> PCA:
    group = f["pca"]
    if not isinstance(group, h5py.Group):
        raise IndexFormatError(path, "'pca' is not a group")
    params: dict[str, Any] = {key: group.attrs[key] for key in group.attrs}
    for key in _PCA_ARRAYS:
        if key in group:
            params[key] = _dataset(group, key, None, path)[...]
    try:
        return PCA.from_dict(params)
    except ValueError as exc:
        raise IndexFormatError(path, f"invalid PCA parameters: {exc}") from None
