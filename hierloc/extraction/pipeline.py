"""Batch description of many images: decode and resize in DataLoader workers while the network runs.

The worker processes (`num_workers`, forked) read and resize the next batches while the main process
runs the network on the current one, so image I/O overlaps inference instead of adding to it.
Workers keep the thread settings they inherit: changing OpenCV's thread count in a forked child
can deadlock on its copied thread pool. Unreadable images never stop a batch; they come back as
failures with their reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

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
