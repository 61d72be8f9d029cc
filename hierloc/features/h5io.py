"""Local features, matches and pair lists in hloc's file layouts, so that files can be exchanged with hloc.

Features (`features.h5`): one group per image name (a name with '/' gives nested groups) holding
`keypoints` (N, 2) float, `descriptors` (D, N) (hloc keeps descriptors as columns), `scores` (N,)
and `image_size` (2,) = (width, height). Keypoints on disk use hloc's convention, top-left pixel
centre at (0, 0); in memory hierloc uses COLMAP's (0.5, 0.5), so 0.5 is subtracted on write and
added on read.

Reading validates what it reads: shapes against each other, sizes (at most MAX_KEYPOINTS keypoints of
MAX_DESCRIPTOR_DIM-D descriptors per image, and no dataset declaring more bytes than the file stores
for it), finite keypoints, descriptors and scores; h5py's own errors become FeatureFileError naming
the file.

Matches (`matches.h5`): one group per pair named `names_to_pair(name0, name1)` =
"<name0>/<name1>" with '/' inside the names replaced by '-', holding `matches0` (N0,) (index into
image 1, -1 = unmatched) and `matching_scores0` (N0,). Pairs (`pairs.txt`): "name0 name1" lines.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from ..utils.io import atomic_path, atomic_write_text, to_json_text
from .types import LocalFeatures

FEATURE_DATASETS = ("keypoints", "descriptors", "scores", "image_size")
CONFIG_ATTR = "hierloc_config"
MAX_KEYPOINTS = 2**20
MAX_DESCRIPTOR_DIM = 2**13
MAX_IMAGE_SIDE = 2**17
# How much larger than its stored bytes a dataset may declare itself (compression), plus slack.
_MAX_EXPANSION = 1000
_EXPANSION_SLACK = 2**20
# What h5py raises for damaged files and structures.
H5PY_ERRORS = (OSError, KeyError, TypeError, ValueError, RuntimeError, UnicodeDecodeError)


class FeatureFileError(RuntimeError, ValueError):
    """A feature or match file is missing, corrupt, or lacks what was asked for."""


def checked_dataset(group: h5py.Group, key: str, label: str) -> h5py.Dataset:
    """group[key] if it is a numeric dataset whose declared size the file backs with stored bytes.

    HDF5 can declare a huge dataset whose chunks were never written; reading it would allocate the
    declared size. Raises ValueError (callers add the file name).
    """
    dataset = group.get(key)
    if not isinstance(dataset, h5py.Dataset) or dataset.shape is None:
        raise ValueError(f"{label} is not a dataset")
    if dataset.dtype.kind not in "fiub":
        raise ValueError(f"{label} holds {dataset.dtype}, not numbers")
    declared = int(np.prod(dataset.shape, dtype=np.float64)) * dataset.dtype.itemsize
    stored = int(dataset.id.get_storage_size())
    if declared > _MAX_EXPANSION * stored + _EXPANSION_SLACK:
        raise ValueError(f"{label} declares shape {dataset.shape} ({declared} bytes) but the file stores {stored}")
    return dataset


@contextmanager
def wrapped_h5py_errors(path: Path) -> Iterator[None]:
    """Turn h5py's errors on a damaged file into FeatureFileError naming the file."""
    try:
        yield
    except FeatureFileError:
        raise
    except H5PY_ERRORS as exc:
        raise FeatureFileError(f"{path}: corrupt or unreadable h5 data ({type(exc).__name__}: {exc})") from None


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's key of a pair of images in a match file."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def _pair_candidates(name0: str, name1: str) -> list[tuple[str, bool]]:
    # hloc also accepts the reversed pair and its older '_' separator.
    return [(names_to_pair(name0, name1), False), (names_to_pair(name1, name0), True),
            (names_to_pair(name0, name1, "_"), False), (names_to_pair(name1, name0, "_"), True)]


@contextmanager
def _open(path: Path, mode: str = "r") -> Iterator[h5py.File]:
    if mode == "r" and not path.is_file():
        raise FeatureFileError(f"{path}: no such file")
    try:
        handle = h5py.File(path, mode)
    except H5PY_ERRORS as exc:
        raise FeatureFileError(f"{path}: not a readable h5 file ({exc})") from None
    with handle, wrapped_h5py_errors(path):
        yield handle


def feature_names(path: str | os.PathLike) -> list[str]:
    """Names of the images that have local features in an hloc-layout file."""
    names: list[str] = []
    with _open(Path(path)) as f:
        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Group) and "keypoints" in obj and "descriptors" in obj:
                names.append(name)
        f.visititems(visit)
    return names


def read_feature_config(path: str | os.PathLike) -> dict | None:
    """The extractor configuration hierloc stored in a feature file (None for a file written by hloc)."""
    with _open(Path(path)) as f:
        raw = f.attrs.get(CONFIG_ATTR)
        if raw is None:
            return None
        try:
            config = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise FeatureFileError(f"{path}: its {CONFIG_ATTR} attribute is not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise FeatureFileError(f"{path}: its {CONFIG_ATTR} attribute is not a JSON object")
    return config


def _read_group(group: h5py.Group, path: Path, name: str) -> LocalFeatures:
    if not isinstance(group, h5py.Group):
        raise FeatureFileError(f"{path}: {name!r} is not a group of local features")
    missing = [k for k in ("keypoints", "descriptors") if k not in group]
    if missing:
        raise FeatureFileError(f"{path}: image {name!r} lacks {', '.join(missing)}")
    try:
        return _checked_features(group, name)
    except FeatureFileError:
        raise
    except ValueError as exc:
        raise FeatureFileError(f"{path}: image {name!r}: {exc}") from None


def _checked_features(group: h5py.Group, name: str) -> LocalFeatures:
    keypoints_data = checked_dataset(group, "keypoints", "keypoints")
    if len(keypoints_data.shape) != 2 or keypoints_data.shape[1] != 2 or keypoints_data.shape[0] > MAX_KEYPOINTS:
        raise ValueError(f"keypoints have shape {keypoints_data.shape}, expected (N <= {MAX_KEYPOINTS}, 2)")
    n = keypoints_data.shape[0]
    descriptors_data = checked_dataset(group, "descriptors", "descriptors")
    shape = descriptors_data.shape
    if len(shape) != 2 or shape[1] != n or not 1 <= shape[0] <= MAX_DESCRIPTOR_DIM:
        raise ValueError(f"descriptors have shape {shape}, expected (D <= {MAX_DESCRIPTOR_DIM}, N={n})")
    # Values beyond float32 become infinity, refused below with the dataset's name.
    with np.errstate(over="ignore", invalid="ignore"):
        keypoints = np.asarray(keypoints_data[...], dtype=np.float64)
        descriptors = np.asarray(descriptors_data[...], dtype=np.float32).T
        scores = np.ones(n, np.float32)
        if "scores" in group:
            scores_data = checked_dataset(group, "scores", "scores")
            if scores_data.shape != (n,):
                raise ValueError(f"scores have shape {scores_data.shape}, expected ({n},)")
            scores = np.asarray(scores_data[...], dtype=np.float32)
    for label, values in (("keypoints", keypoints), ("descriptors", descriptors), ("scores", scores)):
        if not np.isfinite(values).all():
            raise ValueError(f"{label} contain NaN or infinity")
    if np.abs(keypoints).max(initial=0.0) > MAX_IMAGE_SIDE:
        raise ValueError(f"keypoint coordinates beyond {MAX_IMAGE_SIDE} pixels")
    if "image_size" in group:
        size_data = checked_dataset(group, "image_size", "image_size")
        if size_data.shape != (2,):
            raise ValueError(f"image_size has shape {size_data.shape}, expected (2,) = (width, height)")
        sizes = np.asarray(size_data[...], dtype=np.float64)
        if not (np.isfinite(sizes).all() and (sizes >= 1).all() and (sizes <= MAX_IMAGE_SIDE).all()):
            raise ValueError(f"image_size {sizes.tolist()} is not (width, height) in [1, {MAX_IMAGE_SIDE}]")
        image_size = (int(sizes[0]), int(sizes[1]))
    else:  # hloc always writes it; a file without it gives the extent of its keypoints
        image_size = tuple(int(np.ceil(v)) + 1 for v in keypoints.max(axis=0) + 0.5) if n else (1, 1)
    return LocalFeatures((keypoints + 0.5).astype(np.float32), descriptors, scores, image_size)


def read_features(path: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, LocalFeatures]:
    """{name: LocalFeatures} for the given images (default: all), keypoints in COLMAP pixels."""
    path = Path(path)
    names = feature_names(path) if names is None else list(names)
    out: dict[str, LocalFeatures] = {}
    with _open(path) as f:
        for name in names:
            if name not in f:
                raise FeatureFileError(f"{path}: no local features for image {name!r}")
            out[name] = _read_group(f[name], path, name)
    return out


def _write_group(f: h5py.File, name: str, features: LocalFeatures, as_half: bool) -> None:
    if name in f:
        del f[name]
    group = f.create_group(name)
    float_type = np.float16 if as_half else np.float32
    keypoints = group.create_dataset("keypoints", data=(features.keypoints.astype(np.float64) - 0.5).astype(np.float32))
    keypoints.attrs["uncertainty"] = 1.0  # hloc reads it as the detection noise in pixels
    group.create_dataset("descriptors", data=features.descriptors.T.astype(float_type))
    group.create_dataset("scores", data=features.scores.astype(float_type))
    group.create_dataset("image_size", data=np.array(features.image_size, dtype=np.int64))


class FeatureWriter:
    """Adds images to a feature file through a temporary copy that replaces the file on `close`.

    Use as a context manager; on an exception the images written so far are kept (the copy still
    replaces the file), so a long extraction can be resumed.
    """

    def __init__(self, path: str | os.PathLike, config: dict | None = None, overwrite: bool = False,
                 as_half: bool = False) -> None:
        self.path = Path(path)
        self.as_half = as_half
        self._atomic = atomic_path(self.path, suffix=".h5")
        tmp = self._atomic.__enter__()
        existing = self.path.is_file() and not overwrite
        if existing:
            shutil.copyfile(self.path, tmp)
        self._file = h5py.File(tmp, "a" if existing else "w")
        if config is not None:
            self._file.attrs[CONFIG_ATTR] = to_json_text(config, sort_keys=True)

    def write(self, name: str, features: LocalFeatures) -> None:
        """Store (or replace) the features of one image."""
        _write_group(self._file, name, features, self.as_half)

    def close(self) -> None:
        """Finish the file and move it into place."""
        self._file.close()
        self._atomic.__exit__(None, None, None)

    def __enter__(self) -> "FeatureWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_features(path: str | os.PathLike, features: dict[str, LocalFeatures], config: dict | None = None,
                   overwrite: bool = True, as_half: bool = False) -> Path:
    """Write {name: LocalFeatures} in hloc's layout (atomically)."""
    with FeatureWriter(path, config, overwrite=overwrite, as_half=as_half) as writer:
        for name, feats in features.items():
            writer.write(name, feats)
    return Path(path)


def write_matches(path: str | os.PathLike, matches: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                  config: dict | None = None, overwrite: bool = True) -> Path:
    """Write {(name0, name1): (matches0, matching_scores0)} in hloc's layout (atomically)."""
    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp:
        existing = path.is_file() and not overwrite
        if existing:
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a" if existing else "w") as f:
            if config is not None:
                f.attrs[CONFIG_ATTR] = to_json_text(config, sort_keys=True)
            for (name0, name1), (matches0, scores0) in matches.items():
                key = names_to_pair(name0, name1)
                if key in f:
                    del f[key]
                group = f.create_group(key)
                group.create_dataset("matches0", data=np.asarray(matches0, dtype=np.int32))
                group.create_dataset("matching_scores0", data=np.asarray(scores0, dtype=np.float16))
    return path


def read_matches(path: str | os.PathLike, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) keypoint index pairs (into image 0, image 1) and their scores; either pair order is found."""
    path = Path(path)
    with _open(path) as f:
        for key, reverse in _pair_candidates(name0, name1):
            if key in f and isinstance(f[key], h5py.Group) and "matches0" in f[key]:
                try:
                    matches0 = np.asarray(checked_dataset(f[key], "matches0", "matches0")[...]).astype(np.int64)
                    scores0 = (np.asarray(checked_dataset(f[key], "matching_scores0", "matching_scores0")[...],
                                          dtype=np.float32)
                               if "matching_scores0" in f[key] else np.ones(len(matches0), np.float32))
                    if matches0.ndim != 1 or scores0.shape != matches0.shape:
                        raise ValueError(f"matches0 {matches0.shape} and matching_scores0 {scores0.shape} "
                                         "are not one value per keypoint")
                except ValueError as exc:
                    raise FeatureFileError(f"{path}: pair {key!r}: {exc}") from None
                i0 = np.flatnonzero(matches0 >= 0)
                pairs = np.stack([i0, matches0[i0]], axis=1)
                return (pairs[:, ::-1].copy() if reverse else pairs), scores0[i0]
    raise FeatureFileError(f"{path}: no matches for the pair ({name0!r}, {name1!r})")


def write_pairs(path: str | os.PathLike, pairs: Iterable[tuple[str, str]]) -> Path:
    """hloc's pair list: one 'name0 name1' line per pair (atomically)."""
    lines = []
    for name0, name1 in pairs:
        if any(c.isspace() for c in name0 + name1):
            raise ValueError(f"image names in a pair list cannot contain spaces: {name0!r}, {name1!r}")
        lines.append(f"{name0} {name1}")
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return Path(path)


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Pairs from an hloc pair list ('#' comments and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pair list")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'name0 name1', got {line[:80]!r}")
        pairs.append((parts[0], parts[1]))
    return pairs
