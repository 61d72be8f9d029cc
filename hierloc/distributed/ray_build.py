"""Describe a map's keyframes on a Ray cluster: Ray Data reads and resizes the images in CPU tasks,
one model replica per GPU (or per group of CPUs) describes them, and the descriptors are written
as Parquet shards that the driver merges, in keyframe order, into the same arrays as a local run.

Ray is an optional dependency (`pip install "hierloc[ray]"`). On a real cluster, every node needs
hierloc, the model weights (same name or path) and read access to the images, and `shard_dir`
must be storage that all nodes and the driver share (NFS, or a cloud URI such as s3://bucket/run).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ..describers.base import NETWORK_PREPROCESSING, Preprocessing
from ..maps.types import Keyframe

logger = logging.getLogger(__name__)


def ray_available() -> bool:
    """Whether Ray (with Ray Data) can be imported."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise RuntimeError("--ray needs Ray with Ray Data: pip install 'hierloc[ray]' (or 'ray[data]')") from None
    return ray


@dataclass
class RayConfig:
    """Where and how to run: cluster address, model replicas, batching, shard folder."""

    address: str = "local"  # "local" starts Ray here; "auto" joins a running cluster; or host:port / ray://...
    actors: int | None = None  # model replicas (default: one per GPU, else per cpus_per_actor CPUs)
    cpus_per_actor: float = 2.0
    gpus_per_actor: float | None = None  # default: 1 when the cluster has GPUs
    batch_size: int = 8
    preprocessing: Preprocessing = NETWORK_PREPROCESSING  # the describer's, applied in the loading tasks
    shard_dir: str | None = None  # default: a temporary folder, removed after merging
    object_store_bytes: int | None = None  # only for "local" (default: Ray's choice, at most 2 GiB)


def _encode_image(image: np.ndarray | None) -> bytes:
    """An image as .npy bytes (any size and dtype, read back without pickle); b'' for a missing one."""
    if image is None:
        return b""
    buffer = io.BytesIO()
    np.save(buffer, image, allow_pickle=False)
    return buffer.getvalue()


def _decode_image(blob: bytes) -> np.ndarray | None:
    return np.load(io.BytesIO(blob), allow_pickle=False) if blob else None


def _load_images(batch: dict[str, np.ndarray], keyframes: Sequence[Keyframe], preprocessing) -> dict[str, Any]:
    """Ray Data task: keyframe rows -> images (decoded and prepared as the describer does) or why they failed."""
    images, errors = [], []
    for row in batch["row"]:
        try:
            image = np.ascontiguousarray(preprocessing.apply(keyframes[int(row)].load_image()))
            errors.append("")
        except Exception as exc:  # reported per keyframe, as in the local pipeline
            image = None
            errors.append(str(exc) or type(exc).__name__)
        # As bytes, so that images of any sizes (and missing ones) make one binary column.
        images.append(_encode_image(image))
    return {"row": batch["row"], "image": np.array(images, dtype=object), "error": np.array(errors, dtype=object)}


class _DescriptorActor:
    """One model replica: builds the named model once, then describes batches of images."""

    def __init__(self, model_name: str, weights: str | None, device: str, precision: str, threads: int) -> None:
        from ..extraction import GlobalExtractor
        from ..models import load_model
        from ..utils.threads import configure_threads

        configure_threads(threads)
        model = load_model(model_name, weights=weights)
        self.extractor = GlobalExtractor(model, device=device, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from ..extraction.global_descriptors import image_to_tensor

        n = len(batch["row"])
        descriptors = np.full((n, self.extractor.descriptor_dim), np.nan, np.float32)
        images = [_decode_image(blob) for blob in batch["image"]]
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            if image is not None:
                by_shape.setdefault((image.shape, image.dtype.str), []).append(i)
        for slots in by_shape.values():
            tensors = torch.cat([image_to_tensor(images[i]) for i in slots])
            descriptors[slots] = self.extractor.run(tensors)
        return {"row": np.asarray(batch["row"], np.int64), "descriptor": descriptors,
                "error": np.asarray(batch["error"], dtype=object).astype(str)}


@contextlib.contextmanager
def _ray_session(ray, config: RayConfig) -> Iterator[None]:
    if ray.is_initialized():  # the caller manages Ray (e.g. a notebook or a test)
        yield
        return
    if config.address == "local":
        cpus = os.cpu_count() or 1
        store = config.object_store_bytes or min(
            2 * 2**30, int(0.2 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")))
        ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=store, log_to_driver=False,
                 configure_logging=False)
    else:
        ray.init(address=config.address, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _plan_actors(ray, config: RayConfig) -> tuple[int, float, float]:
    """(replicas, CPUs each, GPUs each) from the cluster's resources."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    gpus_each = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    # Keep at least one CPU free for the image-loading tasks, or the pipeline would stall.
    cpus_each = max(0.5, min(config.cpus_per_actor, cpus - 1)) if cpus > 1 else 0.5
    if config.actors is not None:
        actors = config.actors
    elif gpus_each:
        actors = max(1, int(gpus // gpus_each))
    else:
        actors = max(1, int((cpus - 1) // cpus_each))
    return actors, cpus_each, gpus_each


def _read_shards(shard_dir: str, total: int, dim: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import ray.data

    descriptors = np.full((total, dim), np.nan, np.float32)
    seen = np.zeros(total, dtype=bool)
    errors = [""] * total
    # Read back through Ray Data, which decodes its own tensor columns.
    for batch in ray.data.read_parquet(shard_dir).iter_batches(batch_format="numpy", batch_size=4096):
        rows = np.asarray(batch["row"], np.int64)
        descriptors[rows] = np.asarray(batch["descriptor"], np.float32).reshape(len(rows), dim)
        seen[rows] = True
        for row, error in zip(rows.tolist(), batch["error"]):
            errors[row] = str(error)
    if not seen.all():
        raise RuntimeError(f"{shard_dir}: shards lack {int((~seen).sum())} of {total} keyframes")
    return descriptors, seen, errors


def describe_on_ray(
    groups: Sequence[tuple[str, Sequence[Keyframe]]],
    model_name: str,
    weights: str | None,
    config: RayConfig,
    device: str = "auto",
    precision: str = "auto",
) -> list[tuple[np.ndarray, list[int], list[tuple[int, str]]]]:
    """Describe the keyframes of every mission on Ray; one (descriptors, positions, failures) per mission."""
    ray = _require_ray()
    from ..models import build_model

    flat: list[Keyframe] = [kf for _, keyframes in groups for kf in keyframes]
    if not flat:
        return [(np.zeros((0, 0), np.float32), [], []) for _ in groups]
    dim = build_model(model_name).descriptor_dim
    weights = None if weights is None or str(weights).lower() == "none" else str(weights)
    if config.shard_dir is None and config.address != "local":
        logger.warning("no shard folder given: using a local temporary one, which only works when the Ray "
                       "workers run on this machine; pass --shard-dir on shared storage for a cluster")
    shard_dir = config.shard_dir or tempfile.mkdtemp(prefix="hierloc-shards-")
    if "://" not in shard_dir and os.path.isdir(shard_dir) and os.listdir(shard_dir):
        raise FileExistsError(f"{shard_dir}: the shard folder is not empty (shards of another run?)")
    merged = False
    try:
        with _ray_session(ray, config):
            actors, cpus_each, gpus_each = _plan_actors(ray, config)
            logger.info("describing %d keyframes on Ray with %d model replicas (%g CPU, %g GPU each)",
                        len(flat), actors, cpus_each, gpus_each)
            rows = [{"row": i} for i in range(len(flat))]
            dataset = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / 256)))
            dataset = dataset.map_batches(_load_images,
                                          fn_kwargs={"keyframes": flat, "preprocessing": config.preprocessing},
                                          batch_size=config.batch_size, num_cpus=1)
            dataset = dataset.map_batches(
                _DescriptorActor,
                fn_constructor_kwargs={"model_name": model_name, "weights": weights,
                                       "device": "cuda" if gpus_each else (device if device != "auto" else "cpu"),
                                       "precision": precision, "threads": max(1, int(cpus_each))},
                batch_size=config.batch_size, concurrency=actors, num_cpus=cpus_each, num_gpus=gpus_each,
            )
            dataset.write_parquet(shard_dir)
            descriptors, _, errors = _read_shards(shard_dir, len(flat), dim)
            merged = True
    finally:
        # Shards are kept for inspection when the run failed; once merged they are only a copy.
        if "://" not in shard_dir and (merged or config.shard_dir is None):
            shutil.rmtree(shard_dir, ignore_errors=True)
    results, start = [], 0
    for _, keyframes in groups:
        stop = start + len(keyframes)
        positions = [i - start for i in range(start, stop) if not errors[i]]
        failures = [(i - start, errors[i]) for i in range(start, stop) if errors[i]]
        results.append((descriptors[[start + p for p in positions]], positions, failures))
        start = stop
    return results


@contextlib.contextmanager
def ray_describer(model_name: str, weights: str | None, config: RayConfig, device: str = "auto",
                  precision: str = "auto"):
    """A `describe` function for `build_index` that runs on Ray (see `describe_on_ray`)."""
    _require_ray()

    def describe(groups):
        return describe_on_ray(groups, model_name, weights, config, device=device, precision=precision)

    yield describe
