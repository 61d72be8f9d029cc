"""Local features, matches and pair lists in hloc's file layouts, so that files can be exchanged with hloc.

Features (`features.h5`): one group per image name (a name with '/' gives nested groups) holding
`keypoints` (N, 2) float, `descriptors` (D, N) (hloc keeps descriptors as columns), `scores` (N,)
and `image_size` (2,) = (width, height). Keypoints on disk use hloc's convention, top-left pixel
centre at (0, 0); in memory hierloc uses COLMAP's (0.5, 0.5), so 0.5 is subtracted on write and
added on read.

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


class FeatureFileError(RuntimeError):
    """A feature or match file is missing, corrupt, or lacks what was asked for."""


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
    except OSError as exc:
        raise FeatureFileError(f"{path}: not a readable h5 file ({exc})") from None
    with handle:
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
    return None if raw is None else json.loads(raw)


def _read_group(group: h5py.Group, path: Path, name: str) -> LocalFeatures:
    missing = [k for k in ("keypoints", "descriptors") if k not in group]
    if missing:
        raise FeatureFileError(f"{path}: image {name!r} lacks {', '.join(missing)}")
    keypoints = np.asarray(group["keypoints"], dtype=np.float32) + 0.5
    descriptors = np.asarray(group["descriptors"], dtype=np.float32).T
    n = len(keypoints)
    scores = np.asarray(group["scores"], dtype=np.float32) if "scores" in group else np.ones(n, np.float32)
    if "image_size" in group:
        image_size = tuple(int(v) for v in np.asarray(group["image_size"]).reshape(-1)[:2])
    else:  # hloc always writes it; a file without it gives the extent of its keypoints
        image_size = tuple(int(np.ceil(v)) + 1 for v in keypoints.max(axis=0)) if n else (1, 1)
    try:
        return LocalFeatures(keypoints, descriptors, scores, image_size)
    except ValueError as exc:
        raise FeatureFileError(f"{path}: image {name!r}: {exc}") from None


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
            if key in f and "matches0" in f[key]:
                matches0 = np.asarray(f[key]["matches0"]).astype(np.int64)
                scores0 = (np.asarray(f[key]["matching_scores0"], dtype=np.float32)
                           if "matching_scores0" in f[key] else np.ones(len(matches0), np.float32))
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
