"""Global descriptors of many images into an h5 file in hloc's layout (`<name>/global_descriptor`)."""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np
from tqdm import tqdm

from ..features.h5io import H5PY_ERRORS, checked_dataset
from ..utils.images import ImageReadError, list_images, read_image
from ..utils.io import atomic_path
from .global_descriptors import GlobalExtractor
from .pipeline import PeriodicCommit

logger = logging.getLogger(__name__)
DATASET = "global_descriptor"
# Largest global descriptor read from a file (hierloc's largest network gives 32768).
MAX_GLOBAL_DESCRIPTOR_DIM = 2**20


class FeatureFileError(RuntimeError, ValueError):
    """A feature file is corrupt, foreign, or does not hold what was asked for."""


def existing_names(path: Path) -> set[str]:
    """Image names that already have a global descriptor in an hloc-layout h5 file."""
    names: set[str] = set()
    try:
        with h5py.File(path, "r") as f:
            def visit(name: str, obj) -> None:
                if isinstance(obj, h5py.Dataset) and name.endswith("/" + DATASET):
                    names.add(name[: -len(DATASET) - 1])
            f.visititems(visit)
    except H5PY_ERRORS as exc:
        raise FeatureFileError(f"{path}: not a readable h5 feature file ({exc})") from None
    return names


def _read_descriptor(f: h5py.File, name: str, path: Path) -> np.ndarray:
    """One stored global descriptor, checked: a 1-D finite vector the file really stores."""
    try:
        dataset = checked_dataset(f, f"{name}/{DATASET}", f"{name!r}")
        if len(dataset.shape) != 1 or not 1 <= dataset.shape[0] <= MAX_GLOBAL_DESCRIPTOR_DIM:
            raise ValueError(f"{name!r} has shape {dataset.shape}, expected (D,) with D <= {MAX_GLOBAL_DESCRIPTOR_DIM}")
        with np.errstate(over="ignore"):  # values beyond float32 become infinity, refused below
            descriptor = np.asarray(dataset[...], dtype=np.float32)
    except H5PY_ERRORS as exc:
        raise FeatureFileError(f"{path}: global descriptor {exc}") from None
    if not np.isfinite(descriptor).all():
        raise FeatureFileError(f"{path}: global descriptor {name!r} contains NaN or infinity")
    if not np.abs(descriptor).max(initial=0.0) > 0:
        raise FeatureFileError(f"{path}: global descriptor {name!r} is all zeros (no direction to search)")
    return descriptor


def read_global_descriptors(path: str | os.PathLike,
                            names: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(names, [N, D] float32) from an hloc-layout h5 file, in sorted or the given order."""
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"{path}: no such feature file")
    names = sorted(existing_names(path)) if names is None else list(names)
    try:
        with h5py.File(path, "r") as f:
            missing = [n for n in names if f"{n}/{DATASET}" not in f]
            if missing:
                raise FeatureFileError(f"{path}: no global descriptor for {len(missing)} images, e.g. {missing[:3]}")
            descriptors = [_read_descriptor(f, n, path) for n in names]
    except FeatureFileError:
        raise
    except H5PY_ERRORS as exc:
        raise FeatureFileError(f"{path}: not a readable h5 feature file ({exc})") from None
    if not descriptors:
        return names, np.zeros((0, 0), np.float32)
    sizes = {d.shape for d in descriptors}
    if len(sizes) != 1:
        raise FeatureFileError(f"{path}: global descriptors of different shapes {sorted(sizes)}")
    return names, np.stack(descriptors)


def _load(item: tuple[Path, str]) -> tuple[str, Path, np.ndarray | Exception]:
    path, name = item
    try:
        return name, path, read_image(path)
    except ImageReadError as exc:
        return name, path, exc


def _prefetched(items: list[tuple[Path, str]], workers: int) -> Iterator[tuple[str, Path, np.ndarray | Exception]]:
    # Image decoding (OpenCV releases the GIL) overlaps with the network in threads.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window = workers * 4
        futures = [pool.submit(_load, item) for item in items[:window]]
        for i in range(len(items)):
            if i + window < len(items):
                futures.append(pool.submit(_load, items[i + window]))
            yield futures[i].result()
            futures[i] = None  # release the decoded image


def extract_global_descriptors(
    extractor: GlobalExtractor,
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    batch_size: int = 1,
    skip_unreadable: bool = False,
    overwrite: bool = False,
    as_half: bool = False,
    io_workers: int = 2,
) -> dict:
    """Describe every image of `inputs` (files or folders) into `output`; returns a summary dict.

    Images already in `output` are skipped (resume) unless `overwrite`. The file is updated through a
    temporary copy that replaces it at the end, also when an unreadable image stops the run, so the
    finished part is kept and a crash never leaves a half-written file.
    """
    output = Path(output)
    items = list_images(inputs)
    if not items:
        raise FileNotFoundError(f"no images found in {[str(i) for i in inputs]}")
    done = existing_names(output) if output.exists() and not overwrite else set()
    todo = [item for item in items if item[1] not in done]
    summary = {"output": str(output), "total": len(items), "skipped_existing": len(items) - len(todo),
               "written": 0, "unreadable": [], "descriptor_dim": extractor.descriptor_dim}
    failure: Exception | None = None
    commits = PeriodicCommit(output)  # a kill loses at most the work since the last commit (a few seconds)
    with atomic_path(output, suffix=".h5") as tmp:
        if done:
            shutil.copyfile(output, tmp)
        with h5py.File(tmp, "a" if done else "w") as f:
            pending: list[tuple[str, np.ndarray]] = []

            def flush() -> None:
                if not pending:
                    return
                descriptors = extractor.describe_batch([im for _, im in pending])
                for (name, _), descriptor in zip(pending, descriptors):
                    if name in f:
                        del f[name]
                    f.create_group(name).create_dataset(
                        DATASET, data=descriptor.astype(np.float16 if as_half else np.float32))
                summary["written"] += len(pending)
                pending.clear()
                commits.tick(f, tmp)

            for name, path, image in tqdm(_prefetched(todo, io_workers), total=len(todo), desc="global descriptors",
                                          unit="img"):
                if isinstance(image, Exception):
                    if not skip_unreadable:
                        failure = image
                        break
                    logger.warning("skipping %s", image)
                    summary["unreadable"].append(str(path))
                    continue
                pending.append((name, image))
                if len(pending) >= batch_size:
                    flush()
            flush()
    if failure is not None:
        raise ImageReadError(f"{failure} ({summary['written']} descriptors written before it were kept in {output}; "
                             "rerun to resume, or pass --skip-unreadable)")
    return summary
