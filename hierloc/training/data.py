"""Distillation data: image folders with parallel teacher descriptors, as the original's `distillation` set.

Every image folder is paired with a descriptor source: a folder holding `NAME.npy` for every image
(`NAME` is the image path relative to its folder without the extension, the layout
`hierloc export-descriptors` writes) or an hloc-layout h5 file (`<image name>/global_descriptor`).
The list is shuffled with a fixed seed (0, as the original), truncated, and its first
`validation_size` items are held out for validation. Images are resized (bilinear) and converted to
grayscale as the original; augmentation runs later, on batches (`hierloc.training.augmentation`).
"""

from __future__ import annotations

import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from ..utils.images import list_images, read_image, to_grayscale
from .config import resolve_data_path

logger = logging.getLogger(__name__)
H5_DATASET = "global_descriptor"


class DatasetError(ValueError):
    """Training data is missing, inconsistent or unreadable."""


@dataclass(frozen=True)
class DistillationItem:
    """One training image and where its teacher descriptor is stored."""

    name: str  # image path relative to its folder, with extension
    image_path: Path
    target: Path  # a .npy file, or the .h5 file holding `name`
    target_key: str | None = None  # the h5 group of the image; None for .npy files


def preprocess_image(image: np.ndarray, resize: Sequence[int] | None, grayscale: bool) -> np.ndarray:
    """Resize to [H, W] (bilinear) and convert to grayscale: HxWxC uint8 (C = 1 or 3)."""
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
        else:
            image = np.clip(image.astype(np.float32) * 255.0, 0, 255).round().astype(np.uint8)
    if resize:
        height, width = int(resize[0]), int(resize[1])
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if grayscale:
        image = to_grayscale(image)
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(image)


def _descriptor_source(folder: Path, image_folder: Path) -> tuple[Path, bool]:
    if folder.suffix.lower() in (".h5", ".hdf5"):
        if not folder.is_file():
            raise DatasetError(f"{folder}: no such descriptor file (paired with images in {image_folder})")
        return folder, True
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such descriptor folder (paired with images in {image_folder}); "
                           "write it with `hierloc export-descriptors`")
    return folder, False


def _h5_names(path: Path) -> set[str]:
    names: set[str] = set()
    with h5py.File(path, "r") as f:
        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset) and name.endswith("/" + H5_DATASET):
                names.add(name[: -len(H5_DATASET) - 1])
        f.visititems(visit)
    return names


def list_distillation_items(data: dict, root: str | os.PathLike | None = None) -> list[DistillationItem]:
    """The shuffled, truncated list of (image, teacher descriptor) pairs described by a `data` config."""
    image_folders = data["image_folders"]
    descriptor_folders = data["descriptor_folders"]
    if isinstance(image_folders, str):
        image_folders = [image_folders]
    if isinstance(descriptor_folders, str):
        descriptor_folders = [descriptor_folders]
    if not image_folders:
        raise DatasetError("data.image_folders is empty: give at least one folder of images")
    if len(image_folders) != len(descriptor_folders):
        raise DatasetError(f"data.image_folders ({len(image_folders)}) and data.descriptor_folders "
                           f"({len(descriptor_folders)}) must pair up one to one")
    truncate = data.get("truncate")
    per_folder = truncate if isinstance(truncate, (list, tuple)) else [None] * len(image_folders)
    if len(per_folder) != len(image_folders):
        raise DatasetError(f"data.truncate has {len(per_folder)} entries for {len(image_folders)} image folders")
    items: list[DistillationItem] = []
    for image_folder, descriptor_folder, limit in zip(image_folders, descriptor_folders, per_folder):
        image_folder = resolve_data_path(image_folder, root)
        if not image_folder.is_dir():
            raise DatasetError(f"{image_folder}: no such image folder")
        source, is_h5 = _descriptor_source(resolve_data_path(descriptor_folder, root), image_folder)
        images = list_images([image_folder])
        if not images:
            raise DatasetError(f"{image_folder}: no images found")
        if limit is not None:
            images = images[: int(limit)]
        available = _h5_names(source) if is_h5 else None
        missing = []
        for path, name in images:
            if is_h5:
                if name not in available:
                    missing.append(name)
                    continue
                items.append(DistillationItem(name, path, source, name))
            else:
                target = source / (str(Path(name).with_suffix("")) + ".npy")
                if not target.is_file():
                    missing.append(name)
                    continue
                items.append(DistillationItem(name, path, target))
        if missing:
            raise DatasetError(f"{source}: no teacher descriptor for {len(missing)} of the {len(images)} images in "
                               f"{image_folder} (e.g. {missing[:3]}); run `hierloc export-descriptors` on them")
    if data.get("shuffle", True):
        random.Random(data.get("seed", 0)).shuffle(items)
    if isinstance(truncate, int):
        items = items[:truncate]
    return items


def split_items(items: list, validation_size: int) -> tuple[list, list]:
    """(training, validation): the first `validation_size` items are held out, as the original."""
    if validation_size >= len(items):
        example = max(1, len(items) // 5)
        raise DatasetError(f"validation_size {validation_size} leaves no training data out of {len(items)} items: "
                           f"set data.validation_size lower (e.g. --set data.validation_size={example})")
    return items[validation_size:], items[:validation_size]


class _H5Readers:
    """One open h5 file per path and process (h5py handles must not cross a fork)."""

    def __init__(self) -> None:
        self._pid = None
        self._files: dict[Path, h5py.File] = {}

    def read(self, path: Path, key: str) -> np.ndarray:
        if self._pid != os.getpid():
            self._files = {}
            self._pid = os.getpid()
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        return np.asarray(self._files[path][f"{key}/{H5_DATASET}"], dtype=np.float32)

    def __getstate__(self) -> dict:
        return {"_pid": None, "_files": {}}


class ImageCache:
    """Preprocessed images kept in memory, filled before the workers start so that they share it."""

    def __init__(self) -> None:
        self.images: dict[Path, np.ndarray] = {}

    def fill(self, paths: Sequence[Path], load, threads: int = 4, desc: str = "caching images") -> None:
        """Load every path not cached yet with `load(path)` (threads overlap the decoding)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self.images]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for path, image in tqdm(zip(todo, pool.map(load, todo)), total=len(todo), desc=desc, unit="img"):
                self.images[path] = image

    def get(self, path: Path, load) -> np.ndarray:
        """The cached image, or a freshly loaded one (not cached: workers must not diverge)."""
        image = self.images.get(path)
        return load(path) if image is None else image

    @property
    def nbytes(self) -> int:
        """Memory held by the cached images."""
        return sum(im.nbytes for im in self.images.values())


class DistillationDataset(Dataset):
    """Items -> {"image": uint8 [C, H, W], "descriptor": float32 [D], "name": str}."""

    def __init__(self, items: list[DistillationItem], preprocessing: dict, cache_in_memory: bool = False) -> None:
        if not items:
            raise DatasetError("no distillation items")
        self.items = items
        self.resize = preprocessing.get("resize")
        self.grayscale = bool(preprocessing.get("grayscale", True))
        self._h5 = _H5Readers()
        self.cache = ImageCache()
        if cache_in_memory:
            self.cache.fill([it.image_path for it in items], self.load_image)
            logger.info("cached %d images in memory (%.0f MB)", len(self.cache.images), self.cache.nbytes / 2**20)

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, path: Path) -> np.ndarray:
        """Read and preprocess one image."""
        return preprocess_image(read_image(path), self.resize, self.grayscale)

    def read_descriptor(self, item: DistillationItem) -> np.ndarray:
        """The teacher descriptor of an item as a float32 vector."""
        try:
            if item.target_key is None:
                descriptor = np.load(item.target, allow_pickle=False)
            else:
                descriptor = self._h5.read(item.target, item.target_key)
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"{item.target}: unreadable teacher descriptor for {item.name} ({exc})") from None
        return np.asarray(descriptor, dtype=np.float32).reshape(-1)

    @property
    def descriptor_dim(self) -> int:
        """Size of the teacher descriptors (read from the first item)."""
        return int(self.read_descriptor(self.items[0]).shape[0])

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        image = self.cache.get(item.image_path, self.load_image)
        return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
                "descriptor": torch.from_numpy(self.read_descriptor(item)), "name": item.name}


class InfiniteShuffledSampler(Sampler[int]):
    """An endless stream of indices, reshuffled every epoch from (seed, epoch), starting at `start`.

    Its position is a pure function of how many samples were consumed, so a resumed run continues
    with exactly the batches it would have seen. With several processes, rank r takes every
    `world_size`-th index of the stream.
    """

    def __init__(self, size: int, seed: int = 0, start: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __iter__(self) -> Iterator[int]:
        position = self.start * self.world_size + self.rank
        epoch, offset = divmod(position, self.size)
        order = self._epoch_order(epoch)
        while True:
            while offset < self.size:
                yield int(order[offset])
                offset += self.world_size
            epoch += 1
            offset -= self.size
            order = self._epoch_order(epoch)

    def __len__(self) -> int:  # only used by tools that ask; the stream is endless
        return 2**62


def collate(samples: list[dict]) -> dict:
    """Stack tensors of equal size, with a clear error when image sizes differ."""
    out: dict = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise DatasetError(f"cannot batch {key!r} of different sizes {sorted(shapes)[:3]}: set "
                                   "data.preprocessing.resize to a fixed [height, width]")
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


def ignore_sigint_in_worker(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl+C to the main process, which saves and stops cleanly."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..utils.processes import exit_with_parent

    exit_with_parent()  # a worker never outlives the trainer (kill -9 included)
