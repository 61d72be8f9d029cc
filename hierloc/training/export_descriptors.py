"""Teacher descriptors of image folders, as distillation targets: `NAME.npy` files plus one h5 file.

Any describer works as the teacher: a hierloc network (GlobalExtractor), an exported TorchScript or
ONNX file, or DenseVLAD: anything with `describe_batch(images) -> [N, D]` and `descriptor_dim`.

Layout (the original's): for an image `sub/img.jpg` of an input folder, `OUT/sub/img.npy` holds
its float32 descriptor. `OUT/descriptors.h5` holds the same in hloc's layout
(`sub/img.jpg/global_descriptor`), rebuilt from the .npy files at the end of every run. Each .npy
is written to a temporary name and renamed, so a crash never leaves half a descriptor; a rerun
skips the images that already have one.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from ..utils.images import ImageReadError, list_images, read_image
from ..utils.io import atomic_path, atomic_write_text, to_json_text
from .data import H5_DATASET, preprocess_image

logger = logging.getLogger(__name__)
H5_NAME = "descriptors.h5"


def descriptor_file(out_dir: str | os.PathLike, image_name: str) -> Path:
    """Where the descriptor of image `image_name` (relative path with extension) goes."""
    return Path(out_dir) / (str(Path(image_name).with_suffix("")) + ".npy")


def write_descriptor(path: Path, descriptor: np.ndarray) -> None:
    """np.save to a temporary file renamed onto `path`."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(descriptor, dtype=np.float32))


def collect_h5(out_dir: Path, names: Sequence[str], h5_path: Path) -> int:
    """Write (atomically) the hloc-layout h5 of every name whose .npy exists; returns how many."""
    count = 0
    with atomic_path(h5_path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for name in names:
                path = descriptor_file(out_dir, name)
                if path.is_file():
                    f.create_group(name).create_dataset(H5_DATASET, data=np.load(path).astype(np.float32))
                    count += 1
    return count


def export_descriptors(
    describer,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    preprocessing: dict | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    skip_unreadable: bool = False,
    h5_path: str | os.PathLike | None = None,
    io_workers: int = 2,
    model_label: str | None = None,
) -> dict:
    """Describe every image of `inputs` into `out_dir` (resumable); returns a summary dict.

    `preprocessing`: {"resize": [H, W] or None, "grayscale": bool}, applied before the describer,
    as the original resized its distillation images to 480 x 640 before running the teacher.
    """
    preprocessing = preprocessing or {}
    resize = preprocessing.get("resize")
    grayscale = bool(preprocessing.get("grayscale", False))
    out_dir = Path(out_dir)
    inputs = [Path(p) for p in inputs]
    items = list_images(inputs)
    if not items:
        raise FileNotFoundError(f"no images found in {[str(p) for p in inputs]}")
    todo = [(path, name) for path, name in items if overwrite or not descriptor_file(out_dir, name).is_file()]
    summary = {"output": str(out_dir), "total": len(items), "skipped_existing": len(items) - len(todo),
               "written": 0, "unreadable": [], "descriptor_dim": int(describer.descriptor_dim)}

    def load(item: tuple[Path, str]):
        path, name = item
        try:
            image = preprocess_image(read_image(path), resize, grayscale)
        except ImageReadError as exc:
            return name, exc
        return name, image[:, :, 0] if image.shape[2] == 1 else image

    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        descriptors = np.asarray(describer.describe_batch([im for _, im in pending]), dtype=np.float32)
        for (name, _), descriptor in zip(pending, descriptors):
            write_descriptor(descriptor_file(out_dir, name), descriptor)
        summary["written"] += len(pending)
        pending.clear()

    out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, io_workers)) as pool:
        # pool.map reads ahead of the describer, which runs in this thread.
        for name, image in tqdm(pool.map(load, todo), total=len(todo), desc="teacher descriptors", unit="img"):
            if isinstance(image, Exception):
                if not skip_unreadable:
                    flush()
                    raise ImageReadError(f"{image} ({summary['written']} descriptors written before it are kept "
                                         f"in {out_dir}; rerun to resume, or pass --skip-unreadable)")
                logger.warning("skipping %s", image)
                summary["unreadable"].append(name)
                continue
            pending.append((name, image))
            if len(pending) >= batch_size:
                flush()
        flush()
    h5_path = Path(h5_path) if h5_path else out_dir / H5_NAME
    summary["h5"] = str(h5_path)
    summary["h5_entries"] = collect_h5(out_dir, [name for _, name in items], h5_path)
    info = {"model": model_label or getattr(describer, "name", type(describer).__name__),
            "descriptor_dim": summary["descriptor_dim"], "preprocessing": {"resize": resize, "grayscale": grayscale},
            "inputs": [str(p) for p in inputs], "images": len(items)}
    atomic_write_text(out_dir / "export_info.json", to_json_text(info, indent=2))
    return summary
