"""Descriptor sources to compare (`hierloc evaluate --method`): every source that computes descriptors is a
`hierloc.describers.Describer`, built by the one factory (`make_describer`), adapted by `adapt_to_images`
or fitted as `DenseVLADDescriber`; precomputed hloc-layout h5 files are read as they are.

    densevlad              DenseVLAD fitted on the reference images (the fit is cached)
    densevlad=VOCAB.npz    DenseVLAD from a vocabulary file
    mobilenetvlad_imagenet ImageNet MobileNetV2 + NetVLAD initialised by k-means on the reference images
    NAME, NAME=WEIGHTS     a named network (NAME=none: untrained); a checkpoint, ONNX or TorchScript file
    INDEX.h5, MAP_FOLDER   the describer recorded in an index file or a 3-D map
    FEATURES.h5            precomputed descriptors (an h5 file that is not an index)

Descriptors are cached under a key that is the describer's identity (kind, name, size, weights SHA-256,
preprocessing), so that other weights or another preprocessing never reuse stale descriptors; a
describer fitted on the references adds the fit's settings and the reference set to the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..datasets.base import ImageSet
from ..describers import (
    DenseVLADDescriber,
    Describer,
    DescriberIdentity,
    adapt_to_images,
    is_describer_artifact,
    is_describer_spelling,
    make_describer,
)

logger = logging.getLogger(__name__)

KINDS = ("network", "densevlad", "kmeans", "index", "precomputed")
KMEANS_MODEL = "mobilenetvlad_imagenet"
# k-means initialisation of NetVLAD for the `kmeans` method: reference images used, local features per image.
KMEANS_IMAGES = 300
KMEANS_FEATURES_PER_IMAGE = 500
PRECOMPUTED_SUFFIXES = (".h5", ".hdf5")

# (the describer as spelled, or None), reference images, cache folder -> the describer fitted on them
FitFn = Callable[[Describer | None, ImageSet, Path | None], Describer]


def identity_key(identity: DescriberIdentity) -> str:
    """The identity as canonical JSON (the part of cache keys that names the describer)."""
    values = dataclasses.asdict(identity)
    values["preprocessing"] = identity.preprocessing.to_json()
    return json.dumps(values, sort_keys=True)


@dataclass
class Method:
    """One descriptor source of an evaluation.

    `make` builds the describer as spelled (loads weights; cheap next to describing a dataset); `fit`,
    when set, turns it (or nothing, for DenseVLAD) into a describer fitted on the reference images.
    """

    label: str  # shown in tables, plots and file names
    kind: str  # one of KINDS
    make: Callable[[], Describer] | None = None
    fit: FitFn | None = None
    fit_settings: str = ""  # what the fit depends on besides `make`'s describer and the reference images
    path: Path | None = None  # precomputed h5 file, index file or map folder
    notes: list[str] = field(default_factory=list)
    _base: Describer | None = field(default=None, init=False, repr=False, compare=False)
    _base_key: str | None = field(default=None, init=False, repr=False, compare=False)
    _fitted: dict[str, Describer] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def fitted_on_reference(self) -> bool:
        """Whether its describer depends on the reference images."""
        return self.fit is not None

    @property
    def slug(self) -> str:
        """The label as a file-name-safe string."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label).strip("_") or "method"

    def base_describer(self) -> Describer | None:
        """The describer as spelled, built once (None for DenseVLAD fitted on the references and precomputed files)."""
        if self._base is None and self.make is not None:
            self._base = self.make()
            # Taken now: a fit may change the describer in place (k-means), the key must not follow.
            self._base_key = identity_key(self._base.identity)
        return self._base

    def cache_key(self, reference: ImageSet | None = None) -> str:
        """Short hash (file-name safe) of the describer's identity, and of the fit and reference set when fitted."""
        if self.make is not None and self._base_key is None:
            self.base_describer()
        parts = [self.kind, self._base_key or ""]
        if self.fit is not None:
            parts += [self.fit_settings, f"fitted-on={reference.identity() if reference is not None else ''}"]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]

    def describer(self, reference: ImageSet, cache_dir: Path | None = None) -> Describer:
        """The describer that computes this method's descriptors (fitted on `reference` when the method fits)."""
        if self.fit is None:
            base = self.base_describer()
            if base is None:
                raise ValueError(f"{self.label}: precomputed descriptors have no describer")
            return base
        key = reference.identity()
        if key not in self._fitted:
            if self.make is not None and self._base_key is None:
                self.base_describer()
            base, self._base = self._base, None  # the fit owns it now (a later fit builds a fresh one)
            self._fitted = {key: self.fit(base, reference, cache_dir)}
        return self._fitted[key]

    def release(self) -> None:
        """Forget the built describers (their networks can be large); the cache key is kept."""
        self._base = None
        self._fitted = {}


class _LazyImages(Sequence):
    """The images of an ImageSet, read on access (so that adapting reads only the images it samples)."""

    def __init__(self, image_set: ImageSet) -> None:
        self.image_set = image_set

    def __len__(self) -> int:
        return len(self.image_set)

    def __getitem__(self, i):  # an int or a slice, as Sequence's protocol
        if isinstance(i, slice):
            return [self.image_set.load(j) for j in range(*i.indices(len(self)))]
        return self.image_set.load(int(i))


def with_min_side(describer: Describer, min_side: int | None) -> Describer:
    """`describer` whose preprocessing enlarges images to a shortest side of `min_side` (0: no enlarging;
    None: its default, `hierloc.describers.NETWORK_PREPROCESSING` for networks)."""
    if min_side is not None:
        describer.preprocessing = describer.preprocessing.with_overrides(min_side=min_side or None)
    return describer


def describer_method(label: str, make: Callable[[], Describer], kind: str = "network",
                     notes: Sequence[str] = ()) -> Method:
    """A ready describer built by `make` (its identity is the cache key)."""
    return Method(label, kind, make=make, notes=list(notes))


def network_method(spelling: str, weights: str | None = None, min_side: int | None = None, *, device: str = "auto",
                   precision: str = "auto", threads: int | None = None) -> Method:
    """A named network (NAME, NAME=WEIGHTS, NAME=none) or a model file (checkpoint, ONNX, TorchScript)."""
    name, sep, spelled = spelling.partition("=")
    if sep and not Path(spelling).exists():
        weights = spelled
    else:
        name = spelling
    weights = weights or "auto"
    if Path(name).is_file():
        label = Path(name).stem
    elif weights == "auto":
        label = name
    else:
        label = f"{name} (untrained)" if weights.lower() == "none" else f"{name} ({Path(weights).name})"

    def make() -> Describer:
        return with_min_side(make_describer(name, weights, device=device, precision=precision, threads=threads),
                             min_side)

    return describer_method(label, make)


def index_method(path: str | os.PathLike, *, device: str = "auto", precision: str = "auto",
                 threads: int | None = None, min_side: int | None = None) -> Method:
    """The describer recorded in an index file or a 3-D map folder, with its recorded preprocessing."""
    path = Path(path)
    label = f"{path.stem} (index)" if path.is_file() else f"{path.name} (map)"
    notes = [f"describer recorded in {path}"]
    if min_side is not None:
        # Its descriptors must be the index's: the preprocessing it was built with is part of its describer.
        notes.append("--min-side not applied: the index's recorded preprocessing is")
    method = describer_method(label, lambda: make_describer(str(path), device=device, precision=precision,
                                                            threads=threads), "index", notes)
    method.path = path
    return method


def precomputed_method(path: str | os.PathLike, label: str | None = None) -> Method:
    """Descriptors read from an hloc-layout h5 file (not an index: see `is_describer_artifact`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such descriptor file")
    return Method(label or path.stem, "precomputed", path=path, notes=[f"descriptors read from {path}"])


def densevlad_method(vocabulary: str | os.PathLike | None = None, config=None, label: str | None = None,
                     vocabulary_images: int | None = 500, pca_images: int | None = 5000) -> Method:
    """DenseVLAD from a vocabulary file, or fitted on the reference images (the fit is cached by its settings
    and the reference set: there is no describer to take an identity from before fitting)."""
    from ..models.densevlad import DenseVLAD, DenseVLADConfig

    if vocabulary is not None:
        path = Path(vocabulary)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such DenseVLAD vocabulary file")
        return describer_method(label or f"densevlad ({path.name})", lambda: make_describer("densevlad", path),
                                "densevlad", [f"vocabulary {path}"])
    config = config or DenseVLADConfig()
    config_json = json.dumps(dataclasses.asdict(config), sort_keys=True)
    settings = f"densevlad-fit:{config_json}|vocabulary_images={vocabulary_images}|pca_images={pca_images}"

    def fit(base: Describer | None, reference: ImageSet, cache: Path | None) -> Describer:
        key = hashlib.sha256(f"{reference.identity()}|{settings}".encode()).hexdigest()[:12]
        path = cache / "densevlad" / f"vocabulary-{reference.name}-{key}.npz" if cache is not None else None
        if path is not None and path.is_file():
            try:
                model = DenseVLAD.load(path)
                logger.info("DenseVLAD vocabulary from the cache %s", path)
                return DenseVLADDescriber(model)
            except ValueError as exc:
                logger.warning("refitting DenseVLAD: %s", exc)
        model = DenseVLAD.fit(reference, config, vocabulary_images=vocabulary_images, pca_images=pca_images)
        if path is not None:
            model.save(path)
            logger.info("DenseVLAD vocabulary written to %s", path)
        return DenseVLADDescriber(model)

    return Method(label or "densevlad", "densevlad", fit=fit, fit_settings=settings,
                  notes=[("vocabulary and PCA-whitening fitted on the reference images (raw VLAD when they are "
                          "too few for the PCA size)")])


def kmeans_method(model_name: str = KMEANS_MODEL, label: str | None = None, init_images: int = KMEANS_IMAGES,
                  min_side: int | None = None, device: str = "auto", precision: str = "auto",
                  features_per_image: int = KMEANS_FEATURES_PER_IMAGE, threads: int | None = None) -> Method:
    """A network whose NetVLAD layer is initialised by k-means on local features of reference images
    (`adapt_to_images`, no training): the standard start of NetVLAD, here as an untrained baseline."""

    def make() -> Describer:
        return with_min_side(make_describer(model_name, "auto", device=device, precision=precision, threads=threads),
                             min_side)

    def fit(base: Describer | None, reference: ImageSet, cache: Path | None) -> Describer:
        return adapt_to_images(base if base is not None else make(), _LazyImages(reference), max_images=init_images,
                               features_per_image=features_per_image)

    return Method(label or f"{model_name} (k-means init)", "kmeans", make=make, fit=fit,
                  fit_settings=f"kmeans:images={init_images}:features={features_per_image}",
                  notes=[(f"NetVLAD clusters by k-means on {init_images} reference images, {features_per_image} "
                          "local features each (no training)")])


def _is_network_spelling(text: str, weights: str | None) -> bool:
    """Whether --weights would apply to this --method value (a network spelled without '=WEIGHTS')."""
    if text.lower().endswith(PRECOMPUTED_SUFFIXES) or Path(text).suffix.lower() == ".npz":
        return False
    if Path(text).exists():
        return Path(text).is_file() and not is_describer_artifact(text)
    return "=" not in text and text != "densevlad" and not (text == KMEANS_MODEL and weights is None)


def parse_method(text: str, weights: str | None = None, min_side: int | None = None, *, device: str = "auto",
                 precision: str = "auto", threads: int | None = None) -> Method:
    """The Method of one `--method` value (see the module documentation); nothing is loaded yet.

    `weights` applies to a network spelled without '=WEIGHTS'. Unknown spellings and missing files are
    refused here, with one line, before any model or image is read.
    """
    options = {"device": device, "precision": precision, "threads": threads}
    name, sep, spelled = text.partition("=")
    if is_describer_artifact(text):
        return index_method(text, min_side=min_side, **options)
    if text.lower().endswith(PRECOMPUTED_SUFFIXES):
        return precomputed_method(text)
    if name == "densevlad":
        return densevlad_method(spelled if sep else None)
    if text == KMEANS_MODEL and weights is None:
        return kmeans_method(min_side=min_side, **options)
    if Path(text).suffix.lower() == ".npz" and Path(text).is_file():
        return densevlad_method(text)
    if is_describer_spelling(text) and (Path(text).is_file() or not Path(text).is_dir()):
        return network_method(text, weights, min_side, **options)
    from ..models import MODEL_SPECS

    raise ValueError(f"--method {text!r}: not densevlad, a model name ({', '.join(sorted(MODEL_SPECS))}), a model "
                     "file, an index file or map folder, or an .h5 descriptor file")


def parse_methods(spellings: Sequence[str], weights: str | None = None, min_side: int | None = None, *,
                  device: str = "auto", precision: str = "auto", threads: int | None = None) -> list[Method]:
    """Methods for `--method` values; `weights` (--weights) needs exactly one network among them."""
    networks = [text for text in spellings if _is_network_spelling(text, weights)]
    if weights is not None and len(networks) != 1:
        raise ValueError("--weights needs exactly one network method; give several as NAME=WEIGHTS")
    methods = [parse_method(text, weights if text in networks else None, min_side, device=device,
                            precision=precision, threads=threads) for text in spellings]
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--method: two methods share a label: {labels}")
    return methods


__all__ = [
    "KINDS", "Method", "densevlad_method", "describer_method", "identity_key", "index_method",
    "kmeans_method", "network_method", "parse_method", "parse_methods", "precomputed_method", "with_min_side",
]
