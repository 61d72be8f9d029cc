"""Descriptors of an image set by a `hierloc.describers.Describer`, computed once and cached in an hloc-layout
h5 file (resumable, atomic)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
from tqdm import tqdm

from ..datasets.base import ImageSet
from ..describers import Describer
from ..extraction.h5_features import DATASET, existing_names, read_global_descriptors
from ..utils.io import atomic_path

logger = logging.getLogger(__name__)

CHUNK = 256  # images per resumable part file


def _write_h5(path: Path, keys: Sequence[str], descriptors: np.ndarray, attrs: dict) -> None:
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for key, descriptor in zip(keys, descriptors):
                f.create_group(key).create_dataset(DATASET, data=descriptor)
            for name, value in attrs.items():
                f.attrs[name] = value


def _part_path(parts: Path, start: int) -> Path:
    return parts / f"part-{start:08d}.npz"


def read_cache(cache: str | os.PathLike | None, keys: Sequence[str]) -> np.ndarray | None:
    """Descriptors of `keys` from a complete cache file, or None (missing, incomplete or unreadable)."""
    if cache is None or not Path(cache).is_file():
        return None
    try:
        if set(keys) <= existing_names(Path(cache)):
            return read_global_descriptors(cache, keys)[1]
    except Exception as exc:  # a damaged cache is recomputed, never trusted
        logger.warning("ignoring the unreadable descriptor cache %s: %s", cache, exc)
    return None


def compute_descriptors(describer: Describer, image_set: ImageSet, cache: str | os.PathLike | None,
                        batch_size: int = 8, io_workers: int = 2, label: str = "",
                        attrs: dict | None = None) -> tuple[np.ndarray, float]:
    """[N, D] float32 descriptors of `image_set` (its `keys` order) and seconds per computed image.

    Images are read and prepared (`describer.prepare`: its resize policy) by `io_workers` threads
    ahead of the describer, which gets them through `describe_prepared` (seconds per image: wall
    time of the computed chunks, reading overlapped with describing).

    With `cache`, an existing complete h5 file is read instead; otherwise every CHUNK images are
    saved as a part file next to it (so an interrupted run resumes), and the parts are merged into
    the h5 file (hloc layout, keys relative to the dataset root) at the end. Seconds per image is
    NaN when everything came from the cache.
    """
    keys = image_set.keys
    cache = Path(cache) if cache is not None else None
    cached = read_cache(cache, keys)
    if cached is not None:
        return cached, float("nan")
    parts = cache.with_name(cache.name + ".parts") if cache is not None else None
    out = np.empty((len(keys), describer.descriptor_dim), np.float32)
    done = np.zeros(len(keys), bool)
    if parts is not None and parts.is_dir():
        for start in range(0, len(keys), CHUNK):
            part = _part_path(parts, start)
            if part.is_file():
                try:
                    with np.load(part) as data:
                        if (list(data["keys"]) == keys[start:start + CHUNK]
                                and data["descriptors"].shape[1] == out.shape[1]):
                            out[start:start + CHUNK] = data["descriptors"]
                            done[start:start + CHUNK] = True
                except (OSError, ValueError, KeyError):
                    logger.warning("recomputing the unreadable part %s", part)
    todo = [start for start in range(0, len(keys), CHUNK) if not done[start]]
    computed, seconds = 0, 0.0
    with tqdm(total=int(len(todo) and sum(min(CHUNK, len(keys) - s) for s in todo)), unit="img",
              desc=f"descriptors {label} {image_set.name}".strip()) as bar, \
            ThreadPoolExecutor(max_workers=io_workers) as pool:
        def load(i: int) -> np.ndarray:
            return describer.prepare(image_set.load(i))

        for start in todo:
            stop = min(start + CHUNK, len(keys))
            images = pool.map(load, range(start, stop))  # decoded ahead of the describer, in order
            batch: list[np.ndarray] = []
            row = start
            begin = time.perf_counter()
            for image in images:
                batch.append(image)
                if len(batch) == batch_size:
                    out[row:row + len(batch)] = describer.describe_prepared(batch)
                    row += len(batch)
                    bar.update(len(batch))
                    batch = []
            if batch:
                out[row:row + len(batch)] = describer.describe_prepared(batch)
                bar.update(len(batch))
            seconds += time.perf_counter() - begin
            computed += stop - start
            if parts is not None:
                parts.mkdir(parents=True, exist_ok=True)
                with atomic_path(_part_path(parts, start), suffix=".npz") as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, keys=np.array(keys[start:stop]), descriptors=out[start:stop])
    if cache is not None:
        _write_h5(cache, keys, out, attrs or {})
        if parts is not None and parts.is_dir():
            shutil.rmtree(parts, ignore_errors=True)
    return out, (seconds / computed if computed else float("nan"))


def read_precomputed(path: str | os.PathLike, image_set: ImageSet) -> np.ndarray:
    """Descriptors of an image set from an hloc-layout h5 file keyed by names relative to the dataset root
    (as `hierloc extract DATASET_FOLDER` writes them), or by names relative to the set's folder."""
    path = Path(path)
    available = existing_names(path)
    for keys in (image_set.keys, image_set.names):
        if set(keys) <= available:
            return read_global_descriptors(path, keys)[1]
    missing = [k for k in image_set.keys if k not in available]
    raise ValueError(f"{path}: no descriptor for {len(missing)} of the {len(image_set)} {image_set.name!r} images, "
                     f"e.g. {missing[0]!r} (keys are image paths relative to the dataset folder, as "
                     f"`hierloc extract DATASET_FOLDER --out FILE.h5` writes them)")
