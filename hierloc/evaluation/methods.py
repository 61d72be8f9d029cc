"""Descriptor sources to compare: networks, DenseVLAD fitted on the references, NetVLAD layers started by
k-means, and precomputed h5 files. Each knows how to build its describer and a key for caches."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..datasets.base import ImageSet
from .descriptors import Describer

logger = logging.getLogger(__name__)


@dataclass
class Method:
    """One descriptor source of an evaluation."""

    label: str  # shown in tables, plots and file names
    kind: str  # "extractor", "densevlad", "kmeans" or "precomputed"
    identity: str  # what determines its descriptors (cache key together with the image set)
    build: Callable[[ImageSet, Path | None], Describer] | None = None  # (reference set, cache dir) -> describer
    path: Path | None = None  # precomputed h5 file
    prepare: Callable[[np.ndarray], np.ndarray] | None = None  # applied to every image before describing
    notes: list[str] = dataclasses.field(default_factory=list)
    fitted_on_reference: bool = False  # its describer depends on the reference images

    def cache_key(self, reference: ImageSet | None = None) -> str:
        """Short hash of the identity (and of the reference set when fitted on it): file-name safe."""
        identity = self.identity + (f"|fitted-on={reference.identity()}" if self.fitted_on_reference and reference else "")
        return hashlib.sha256(identity.encode()).hexdigest()[:12]

    @property
    def slug(self) -> str:
        """The label as a file-name-safe string."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label).strip("_") or "method"


def file_identity(path: str | os.PathLike | None) -> str:
    """A file's absolute path, size and modification time (cheap identity for caches), or 'none'."""
    if path is None:
        return "none"
    path = Path(path)
    if not path.is_file():
        return str(path)
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"


def upscale_to_min_side(min_side: int | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """An image preparation that upscales (bilinearly) images whose short side is below `min_side`."""
    if not min_side:
        return None

    def prepare(image: np.ndarray) -> np.ndarray:
        short = min(image.shape[:2])
        if short >= min_side:
            return image
        factor = min_side / short
        size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
        return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)

    return prepare


def extractor_method(label: str, factory: Callable[[], Describer], identity: str,
                     min_side: int | None = None) -> Method:
    """A ready network (or any describer) built by `factory`; `min_side` upscales small images for it."""
    return Method(label, "extractor", f"{identity}|min_side={min_side}", build=lambda reference, cache: factory(),
                  prepare=upscale_to_min_side(min_side),
                  notes=[f"images upscaled to a short side of {min_side} px"] if min_side else [])


def precomputed_method(path: str | os.PathLike, label: str | None = None) -> Method:
    """Descriptors read from an hloc-layout h5 file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such descriptor file")
    return Method(label or path.stem, "precomputed", file_identity(path), path=path)


def densevlad_method(vocabulary: str | os.PathLike | None = None, config=None, label: str = "densevlad",
                     vocabulary_images: int | None = 500, pca_images: int | None = 5000) -> Method:
    """DenseVLAD from a vocabulary file, or fitted on the reference images (the fit is cached)."""
    from ..models.densevlad import DenseVLAD, DenseVLADConfig

    if vocabulary is not None:
        path = Path(vocabulary)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such DenseVLAD vocabulary file")
        return Method(label, "densevlad", f"densevlad:{file_identity(path)}",
                      build=lambda reference, cache: DenseVLAD.load(path), notes=[f"vocabulary {path}"])
    config = config or DenseVLADConfig()
    config_json = json.dumps(dataclasses.asdict(config), sort_keys=True)
    settings = f"{config_json}|vocabulary_images={vocabulary_images}|pca_images={pca_images}"

    def build(reference: ImageSet, cache: Path | None) -> Describer:
        key = hashlib.sha256(f"{reference.identity()}|{settings}".encode()).hexdigest()[:12]
        path = cache / "densevlad" / f"vocabulary-{reference.name}-{key}.npz" if cache is not None else None
        if path is not None and path.is_file():
            try:
                model = DenseVLAD.load(path)
                logger.info("DenseVLAD vocabulary from the cache %s", path)
                return model
            except ValueError as exc:
                logger.warning("refitting DenseVLAD: %s", exc)
        model = DenseVLAD.fit(reference, config, vocabulary_images=vocabulary_images, pca_images=pca_images)
        if path is not None:
            model.save(path)
            logger.info("DenseVLAD vocabulary written to %s", path)
        return model

    return Method(label, "densevlad", f"densevlad-fit:{settings}", build=build,
                  notes=["vocabulary and PCA-whitening fitted on the reference images"], fitted_on_reference=True)


def kmeans_method(model_name: str = "mobilenetvlad_imagenet", label: str | None = None, init_images: int = 300,
                  min_side: int | None = None, device: str = "auto", precision: str = "auto") -> Method:
    """A network whose NetVLAD layer is initialised by k-means on local features of reference images
    (no training): the standard start of NetVLAD, here as an untrained baseline."""
    from ..extraction import GlobalExtractor, image_to_tensor
    from ..models import load_model
    from ..models.aggregation import initialize_vlad_clusters

    prepare = upscale_to_min_side(min_side)

    def build(reference: ImageSet, cache: Path | None) -> Describer:
        model = load_model(model_name, weights=None)
        rows = np.unique(np.linspace(0, len(reference) - 1, min(init_images, len(reference))).round().astype(int))

        def tensors():
            for i in rows:
                image = reference.load(int(i))
                yield image_to_tensor(prepare(image) if prepare else image)

        initialize_vlad_clusters(model, tensors(), features_per_image=500)
        return GlobalExtractor(model, device=device, precision=precision)

    return Method(label or f"{model_name}+kmeans", "kmeans", f"kmeans:{model_name}:{init_images}|min_side={min_side}",
                  build=build, prepare=prepare,
                  notes=[f"NetVLAD clusters by k-means on {init_images} reference images (no training)"]
                  + ([f"images upscaled to a short side of {min_side} px"] if min_side else []),
                  fitted_on_reference=True)
