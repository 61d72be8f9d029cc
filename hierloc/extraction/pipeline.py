"""Batch description of many images: decode and resize in DataLoader workers while the network runs.

The worker processes (`num_workers`, forked) read and resize the next batches while the main process
runs the network on the current one, so image I/O overlaps inference instead of adding to it.
Workers keep the thread settings they inherit: changing OpenCV's thread count in a forked child
can deadlock on its copied thread pool. Unreadable images never stop a batch; they come back as
failures with their reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..utils.io import atomic_path
from ..utils.processes import worker_init
from .global_descriptors import GlobalExtractor, image_to_tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchConfig:
    """How images reach the network: batch size, decode workers and an optional resize."""

    batch_size: int = 8
    num_workers: int = 2  # decode + resize processes; 0 loads in the main process
    resize: tuple[int, int] | None = None  # (width, height) for every image; None keeps the size
    prefetch_batches: int = 2  # batches each worker prepares ahead

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"number of workers must be >= 0, got {self.num_workers}")
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            raise ValueError(f"resize must be (width, height) with positive sizes, got {self.resize}")


def resize_image(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize to (width, height): area averaging when shrinking, bilinear when enlarging."""
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, tuple(int(s) for s in size),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class ImageDataset(Dataset):
    """Item i -> (i, decoded and resized image or None, failure reason or None)."""

    def __init__(self, items: Sequence[Any], load: Callable[[Any], np.ndarray], resize: tuple[int, int] | None = None,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None):
        self.items = items
        self.load = load
        self.resize = resize
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            # Images cross the process boundary as they are (uint8 is 4x smaller than float tensors).
            image = resize_image(self.load(self.items[i]), self.resize)
            if self.prepare is not None:
                image = self.prepare(image)
            return i, np.ascontiguousarray(image), None
        except Exception as exc:  # any unreadable image is reported, never fatal for the batch
            return i, None, str(exc) or type(exc).__name__


def _keep_list(batch: list) -> list:
    return batch


def describe_items(
    extractor: GlobalExtractor | Any,
    items: Sequence[Any],
    load: Callable[[Any], np.ndarray],
    config: BatchConfig = BatchConfig(),
    desc: str = "describing",
    progress: bool = True,
) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, str]]]]:
    """Yield (item positions, their (n, D) descriptors, [(position, reason)] failures) batch by batch, in order.

    `load(item)` returns an image (HxW or HxWxC); with workers it runs in forked processes, which
    see the items as they were when the iteration started. A `hierloc.describers.Describer` has its
    preprocessing applied there too, and its prepared images go to `describe_prepared` (or `run`).
    """
    preprocessing = getattr(extractor, "preprocessing", None)
    dataset = ImageDataset(items, load, config.resize, preprocessing.apply if preprocessing is not None else None)
    workers = min(config.num_workers, max(0, (len(items) + config.batch_size - 1) // config.batch_size))
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        num_workers=workers,
        collate_fn=_keep_list,
        prefetch_factor=config.prefetch_batches if workers else None,
        persistent_workers=False,
        worker_init_fn=worker_init(),  # workers die with this process (kill -9 included)
    )
    run = getattr(extractor, "run", None)  # describers without a tensor entry point take numpy images
    describe_numpy = getattr(extractor, "describe_prepared", None) or extractor.describe_batch
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress) as bar:
        for batch in loader:
            failures = [(i, reason) for i, image, reason in batch if image is None]
            ready = [(i, image) for i, image, _ in batch if image is not None]
            positions = [i for i, _ in ready]
            descriptors = np.empty((len(ready), extractor.descriptor_dim), np.float32)
            by_shape: dict[tuple, list[int]] = {}
            for slot, (_, image) in enumerate(ready):
                by_shape.setdefault((image.shape, image.dtype.str), []).append(slot)
            for slots in by_shape.values():
                images = [ready[s][1] for s in slots]
                if run is not None:
                    descriptors[slots] = run(torch.cat([image_to_tensor(image) for image in images]))
                else:
                    descriptors[slots] = describe_numpy(images)
            bar.update(len(batch))
            yield positions, descriptors, failures


class PeriodicCommit:
    """Publishes a file that is being written, atomically and now and then, so that a kill loses little.

    A writer fills a private copy (`working`) of `destination` and calls `tick` after each finished batch;
    every `min_seconds` (stretched so that copying stays under `max_overhead` of the run time as the file
    grows) the working copy is flushed, copied beside the destination and renamed onto it. The destination
    is therefore always a complete file holding everything finished up to the last commit, and a rerun
    resumes from it.
    """

    def __init__(self, destination: str | os.PathLike, min_seconds: float = 2.0, max_overhead: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.destination = Path(destination)
        self.min_seconds = min_seconds
        self.max_overhead = max_overhead
        self.clock = clock
        self.commits = 0
        self._last = clock()
        self._interval = min_seconds
        self._pending = 0

    def tick(self, h5file: Any, working: str | os.PathLike, items: int = 1) -> bool:
        """Count `items` finished ones; commit when it is time. Returns whether it committed."""
        self._pending += items
        if self._pending == 0 or self.clock() - self._last < self._interval:
            return False
        self.commit(h5file, working)
        return True

    def commit(self, h5file: Any, working: str | os.PathLike) -> None:
        """Flush `h5file` (open on `working`) and publish a copy of `working` at the destination now."""
        started = self.clock()
        if h5file is not None:
            h5file.flush()  # HDF5 writes all its metadata: the bytes on disk form a complete file
        with atomic_path(self.destination, suffix=".h5") as published:
            shutil.copyfile(working, published)
            with open(published, "rb+") as f:
                os.fsync(f.fileno())
        took = self.clock() - started
        self.commits += 1
        self._pending = 0
        self._last = self.clock()
        self._interval = max(self.min_seconds, took / self.max_overhead)
        logger.info("committed %s (commit %d, %.2f s)", self.destination, self.commits, took)
