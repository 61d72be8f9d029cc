"""In-memory descriptor index: one global descriptor per indexed keyframe, with its identity and pose."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from hierloc.index.errors import IndexCompatibilityError, IndexValidationError
from hierloc.index.pca import PCA
from hierloc.utils.ids import normalize_id

_ROTATION_TOLERANCE = 1e-3
# Largest descriptor a file may declare (hierloc's largest network gives 32768): readers refuse more
# before allocating anything.
MAX_DESCRIPTOR_SIZE = 2**20
_DRIVE = re.compile(r"^[A-Za-z]:")


def _all_finite(array: np.ndarray) -> bool:
    # A float64 sum is NaN/inf iff some element is (float32 inputs cannot overflow it), and it
    # avoids allocating an N x D boolean mask for large maps.
    return bool(np.isfinite(array.sum(dtype=np.float64)))


def _first_non_finite_row(array: np.ndarray) -> int:
    flat = array.reshape(array.shape[0], -1)
    return int(np.flatnonzero(~np.isfinite(flat).all(axis=1))[0])


def _as_float_array(value: Any, label: str, dtype: type, shape_tail: tuple[int, ...], n: int) -> np.ndarray:
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise IndexValidationError(f"{label} must be real numbers, got dtype {array.dtype}")
    expected = (n, *shape_tail)
    if array.shape != expected:
        raise IndexValidationError(f"{label} must have shape {expected}, got {array.shape}")
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.size and not _all_finite(array):
        raise IndexValidationError(f"{label} row {_first_non_finite_row(array)} contains NaN or infinity")
    return array


def check_directions(descriptors: np.ndarray) -> None:
    """Raise IndexValidationError for a descriptor row of zeros only (it has no direction to search).

    For readers of index files: such a row is damage, and would otherwise fail every search.
    """
    if len(descriptors):
        empty = np.flatnonzero(np.abs(descriptors).max(axis=1) == 0)
        if empty.size:
            raise IndexValidationError(f"descriptors row {empty[0]} is all zeros ({empty.size} such rows)")


def _as_str_list(value: Any, label: str, n: int) -> list[str]:
    if isinstance(value, (str, bytes)):
        raise IndexValidationError(f"{label} must be a sequence of strings, not a single string")
    items = list(value)
    if len(items) != n:
        raise IndexValidationError(f"{label} has {len(items)} entries, expected one per descriptor ({n})")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise IndexValidationError(f"{label}[{i}] must be a string, got {type(item).__name__}")
    return items


@dataclass(eq=False)
class DescriptorIndex:
    """Global descriptors of map keyframes plus what is needed to find those keyframes again."""

    model_name: str
    data_name: str
    descriptors: np.ndarray  # (N, D) float32
    keyframe_ids: list[str]  # 32-hex-char 128-bit vertex ids
    missions: list[str] | None = None  # default: "" (unknown) for every frame
    names: list[str] | None = None  # image names; default: "" for every frame
    frame_index: np.ndarray | None = None  # (N,) uint32 camera index within the vertex; default 0
    resource_names: list[str] | None = None  # hex id of the image resource; default: keyframe id
    positions: np.ndarray | None = None  # (N, 3) float64 vertex positions in the map frame
    rotations: np.ndarray | None = None  # (N, 3, 3) float64 vertex rotations (to the map frame)
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable (model config, ...)
    pca: PCA | None = None  # a PCA fitted on these descriptors, kept by the native format

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check and normalise every field in place; raise IndexValidationError naming the problem."""
        for label in ("model_name", "data_name"):
            if not isinstance(getattr(self, label), str):
                raise IndexValidationError(f"{label} must be a string, got {type(getattr(self, label)).__name__}")
        descriptors = np.asarray(self.descriptors)
        if descriptors.ndim != 2:
            raise IndexValidationError(f"descriptors must be an (N, D) matrix, got shape {descriptors.shape}")
        if not 1 <= descriptors.shape[1] <= MAX_DESCRIPTOR_SIZE:
            raise IndexValidationError(f"descriptors must have 1 to {MAX_DESCRIPTOR_SIZE} dimensions, "
                                       f"got {descriptors.shape[1]}")
        if not np.issubdtype(descriptors.dtype, np.floating):
            raise IndexValidationError(f"descriptors must be floating point, got dtype {descriptors.dtype}")
        n, d = descriptors.shape
        with np.errstate(over="ignore"):  # float64 -> float32 overflow becomes inf, reported below
            self.descriptors = _as_float_array(descriptors, "descriptors", np.float32, (d,), n)

        ids = _as_str_list(self.keyframe_ids, "keyframe_ids", n)
        try:
            self.keyframe_ids = [normalize_id(value) for value in ids]
        except ValueError as exc:
            bad = next(i for i, value in enumerate(ids) if not _is_id(value))
            raise IndexValidationError(f"keyframe_ids[{bad}]: {exc}") from None
        self.missions = [""] * n if self.missions is None else _as_str_list(self.missions, "missions", n)
        self.names = [""] * n if self.names is None else _as_str_list(self.names, "names", n)
        self._check_names()
        self.resource_names = (
            list(self.keyframe_ids)
            if self.resource_names is None
            else _as_str_list(self.resource_names, "resource_names", n)
        )
        self.frame_index = self._validated_frame_index(n)
        self._check_unique_rows()
        if self.positions is not None:
            self.positions = _as_float_array(self.positions, "positions", np.float64, (3,), n)
        if self.rotations is not None:
            self.rotations = _as_float_array(self.rotations, "rotations", np.float64, (3, 3), n)
            self._check_rotations()
        if not isinstance(self.metadata, dict):
            raise IndexValidationError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as exc:
            raise IndexValidationError(f"metadata must be JSON-serialisable: {exc}") from None
        if self.pca is not None:
            if not isinstance(self.pca, PCA):
                raise IndexValidationError(f"pca must be a PCA, got {type(self.pca).__name__}")
            if self.pca.input_dim != d:
                raise IndexValidationError(
                    f"pca was fitted on {self.pca.input_dim}-D descriptors but the index holds {d}-D ones"
                )

    def _validated_frame_index(self, n: int) -> np.ndarray:
        if self.frame_index is None:
            return np.zeros(n, dtype=np.uint32)
        values = np.asarray(self.frame_index)
        if values.shape != (n,):
            raise IndexValidationError(f"frame_index must have shape ({n},), got {values.shape}")
        if n and not np.issubdtype(values.dtype, np.integer):
            raise IndexValidationError(f"frame_index must be integers, got dtype {values.dtype}")
        if n and (values.min() < 0 or values.max() > np.iinfo(np.uint32).max):
            raise IndexValidationError("frame_index values must fit in uint32")
        return values.astype(np.uint32)

    def _check_names(self) -> None:
        # Image names are paths relative to the map's image folder (re-ranking reads them from there):
        # nothing absolute, no "..", no NUL, so that a stored name cannot point outside that folder.
        for row, name in enumerate(self.names):
            parts = re.split(r"[/\\]", name)
            if "\x00" in name or name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
                raise IndexValidationError(f"names[{row}] {name[:80]!r} is not a relative path inside the map")

    def _check_unique_rows(self) -> None:
        # A keyframe is its (vertex id, camera number): the original's multi-camera vertices share an id.
        if len(set(self.keyframe_ids)) == len(self.keyframe_ids):
            return
        seen: dict[tuple[str, int], int] = {}
        for row, key in enumerate(zip(self.keyframe_ids, self.frame_index.tolist())):
            if key in seen:
                raise IndexValidationError(
                    f"rows {seen[key]} and {row} are the same keyframe (id {key[0]}, frame {key[1]})"
                )
            seen[key] = row

    def _check_rotations(self) -> None:
        rotations = self.rotations
        identity_error = np.abs(np.einsum("nji,njk->nik", rotations, rotations) - np.eye(3)).max(axis=(1, 2))
        determinants = np.linalg.det(rotations) if len(rotations) else np.ones(0)
        bad = np.flatnonzero((identity_error > _ROTATION_TOLERANCE) | (np.abs(determinants - 1) > _ROTATION_TOLERANCE))
        if bad.size:
            raise IndexValidationError(f"rotations[{bad[0]}] is not a rotation matrix (orthonormal, det +1)")

    @property
    def descriptor_size(self) -> int:
        """Dimension D of the stored descriptors."""
        return int(self.descriptors.shape[1])

    @property
    def has_poses(self) -> bool:
        """True if both positions and rotations are stored."""
        return self.positions is not None and self.rotations is not None

    def __len__(self) -> int:
        return int(self.descriptors.shape[0])

    def __repr__(self) -> str:
        return (
            f"DescriptorIndex(model_name={self.model_name!r}, data_name={self.data_name!r}, "
            f"frames={len(self)}, descriptor_size={self.descriptor_size}, poses={self.has_poses}, "
            f"pca={None if self.pca is None else self.pca.n_components})"
        )

    def subset(self, mask_or_indices: Sequence[int] | Sequence[bool] | np.ndarray) -> DescriptorIndex:
        """Return a new index with the selected rows (a boolean mask of length N or row indices)."""
        selector = np.asarray(mask_or_indices)
        n = len(self)
        if selector.dtype == bool:
            if selector.shape != (n,):
                raise IndexValidationError(f"a boolean mask must have shape ({n},), got {selector.shape}")
            rows = np.flatnonzero(selector)
        else:
            if selector.size == 0:
                selector = selector.astype(np.int64)
            if selector.ndim != 1 or not np.issubdtype(selector.dtype, np.integer):
                raise IndexValidationError("subset takes a boolean mask or a 1-D sequence of integer row indices")
            if selector.size and (selector.min() < -n or selector.max() >= n):
                raise IndexValidationError(
                    f"row indices must lie in [-{n}, {n}), got {selector.min()}..{selector.max()}"
                )
            rows = np.where(selector < 0, selector + n, selector)
        row_list = rows.tolist()

        def take(values: list[str]) -> list[str]:
            return [values[i] for i in row_list]

        return DescriptorIndex(
            model_name=self.model_name,
            data_name=self.data_name,
            descriptors=self.descriptors[rows],
            keyframe_ids=take(self.keyframe_ids),
            missions=take(self.missions),
            names=take(self.names),
            frame_index=self.frame_index[rows],
            resource_names=take(self.resource_names),
            positions=None if self.positions is None else self.positions[rows],
            rotations=None if self.rotations is None else self.rotations[rows],
            metadata=dict(self.metadata),
            # Still the projection of this map's descriptor distribution, so it stays usable.
            pca=self.pca,
        )

    def concatenate(self, other: DescriptorIndex) -> DescriptorIndex:
        """Return a new index with the rows of `self` followed by those of `other` (same model only)."""
        if not isinstance(other, DescriptorIndex):
            raise TypeError(f"can only concatenate a DescriptorIndex, got {type(other).__name__}")
        if other.model_name != self.model_name or other.descriptor_size != self.descriptor_size:
            raise IndexCompatibilityError(
                f"cannot concatenate an index built by model {other.model_name!r} "
                f"({other.descriptor_size}-D descriptors) to one built by model {self.model_name!r} "
                f"({self.descriptor_size}-D descriptors)"
            )
        for label in ("positions", "rotations"):
            if (getattr(self, label) is None) != (getattr(other, label) is None):
                raise IndexCompatibilityError(
                    f"cannot concatenate an index with {label} to one without; "
                    f"drop them from the other index first (dataclasses.replace(index, {label}=None))"
                )

        def joined(label: str) -> np.ndarray | None:
            mine, theirs = getattr(self, label), getattr(other, label)
            return None if mine is None else np.concatenate([mine, theirs])

        data_name = self.data_name if other.data_name == self.data_name else f"{self.data_name}+{other.data_name}"
        return DescriptorIndex(
            model_name=self.model_name,
            data_name=data_name,
            descriptors=np.concatenate([self.descriptors, other.descriptors]),
            keyframe_ids=self.keyframe_ids + other.keyframe_ids,
            missions=self.missions + other.missions,
            names=self.names + other.names,
            frame_index=np.concatenate([self.frame_index, other.frame_index]),
            resource_names=self.resource_names + other.resource_names,
            positions=joined("positions"),
            rotations=joined("rotations"),
            metadata=dict(self.metadata),
            # A PCA fitted on one part does not describe the union; refit on the result instead.
            pca=self.pca if self.pca is other.pca else None,
        )

    def check_compatible(self, model_name: str | None = None, descriptor_size: int | None = None) -> None:
        """Raise IndexCompatibilityError unless the index was built by `model_name` with `descriptor_size`-D output."""
        built_by = (
            f"index of map {self.data_name!r} was built by model {self.model_name!r} "
            f"({self.descriptor_size}-D descriptors)"
        )
        if model_name is not None and model_name != self.model_name:
            raise IndexCompatibilityError(f"{built_by}, but model {model_name!r} is in use; rebuild the index with it")
        if descriptor_size is not None and int(descriptor_size) != self.descriptor_size:
            raise IndexCompatibilityError(
                f"{built_by}, but the descriptors in use have size {int(descriptor_size)}"
            )


def _is_id(value: object) -> bool:
    try:
        normalize_id(value)
    except ValueError:
        return False
    return True
