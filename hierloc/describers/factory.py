"""One factory from any user spelling to a Describer, and the one policy for the default describer.

Spellings accepted by `make_describer`:

    NAME                  a network of hierloc.models.MODEL_SPECS with its default weights
    NAME=WEIGHTS          ... with a checkpoint file or a weight name (`NAME=none`: the untrained network)
    model.pth             a hierloc checkpoint (the model name is inside)
    model.onnx, model.pt  a file exported by `hierloc export-model`
    densevlad=VOCAB.npz   DenseVLAD from a fitted vocabulary file (also: a .npz path alone)
    index.h5, index.pb    the describer recorded in an index file
    MAP_FOLDER            the describer recorded in a 3-D map folder
    auto                  see `default_describer`: trained MobileNetVLAD if installed, else ImageNet
                          MobileNetV2 + NetVLAD initialised by k-means on the map images
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..utils.sampling import spread_rows
from .base import NETWORK_PREPROCESSING, Describer, DescriberError, Preprocessing
from .implementations import DenseVLADDescriber, ExportedDescriber, NetworkDescriber

logger = logging.getLogger(__name__)

AUTO = "auto"
TRAINED_MODEL, TRAINED_WEIGHTS = "mobilenetvlad", "mobilenetvlad_depth-0.35"
ADAPTABLE_MODEL = "mobilenetvlad_imagenet"
# k-means initialisation of NetVLAD on the map: images used at most, local features per image.
ADAPTATION_IMAGES = 200
ADAPTATION_FEATURES_PER_IMAGE = 200


def split_spelling(spelling: str) -> tuple[str, str | None]:
    """'NAME=WEIGHTS' -> (NAME, WEIGHTS); anything else -> (spelling, None). Paths may contain '='."""
    from ..models import MODEL_SPECS
    from ..models.configs import MODEL_ALIASES

    if "=" in spelling and not Path(spelling).exists():
        name, weights = spelling.split("=", 1)
        if name in MODEL_SPECS or name in MODEL_ALIASES or name == "densevlad":
            return name, weights
    return spelling, None


def is_describer_spelling(spelling: str) -> bool:
    """Whether `make_describer` can interpret `spelling` (without loading anything heavy)."""
    from ..models import MODEL_SPECS
    from ..models.configs import MODEL_ALIASES

    name, _ = split_spelling(spelling)
    return name in MODEL_SPECS or name in MODEL_ALIASES or name in ("densevlad", AUTO) or Path(name).exists()


def make_describer(spelling: str, weights: str | os.PathLike | None = "auto", *, device: str = "auto",
                   precision: str = "auto", threads: int | None = None,
                   preprocessing: Preprocessing | None = None, fast: bool = True, runtime: str = "auto",
                   adaptation_images: Callable[[], Iterable[np.ndarray]] | None = None) -> Describer:
    """The describer a user spelled (see the module docstring); `weights` applies to a bare NAME.

    `runtime` ("auto", "torch", "onnxruntime", "openvino") runs a named network; see hierloc.utils.device.
    `preprocessing` replaces the describer's default (or recorded) one. `adaptation_images` gives
    the map images for `auto` when the trained weights are not installed, and for
    `mobilenetvlad_imagenet` with its default weights (its NetVLAD clusters are initialised by k-means).
    """
    from ..models import MODEL_SPECS
    from ..models.configs import canonical_model_name

    spelling = str(spelling)
    name, spelled_weights = split_spelling(spelling)
    if spelled_weights is not None:
        weights = spelled_weights
    if str(weights).lower() == "none":
        weights = None
    if name == AUTO:
        describer = default_describer(adaptation_images, device=device, precision=precision, fast=fast)
    elif name == "densevlad" or (Path(name).suffix.lower() == ".npz" and Path(name).is_file()):
        describer = _densevlad(name if name != "densevlad" else weights)
    elif canonical_model_name(name) in MODEL_SPECS:
        describer = network_describer(canonical_model_name(name), weights, device=device, precision=precision,
                                      fast=fast, runtime=runtime)
        if canonical_model_name(name) == ADAPTABLE_MODEL and weights == "auto" and adaptation_images is not None:
            # Its NetVLAD clusters have no trained values: they start from the map's own local features.
            adapt_to_images(describer, adaptation_images())
    elif Path(name).is_dir() or Path(name).is_file():
        describer = _describer_of_file(Path(name), device=device, precision=precision, threads=threads, fast=fast)
    else:
        raise DescriberError(f"{spelling!r} is neither a model name ({', '.join(sorted(MODEL_SPECS))}, densevlad, "
                             "auto) nor an existing model, vocabulary, index or map file")
    if preprocessing is not None:
        describer.preprocessing = preprocessing
    return describer


def network_describer(name: str, weights: str | os.PathLike | None = "auto", *, device: str = "auto",
                      precision: str = "auto", fast: bool = True,
                      preprocessing: Preprocessing = NETWORK_PREPROCESSING, runtime: str = "auto") -> NetworkDescriber:
    """A named network with `weights`: 'auto' (its default weights), a registry name, a file, or None (untrained).

    Weights that come from the registry by name are recorded by name (artifacts do not copy them).
    """
    from ..models import WEIGHTS, get_model_spec, load_model

    spec = get_model_spec(name)
    registry_name = None
    if weights == "auto":
        registry_name = spec.default_weights
    elif weights is not None and str(weights) in WEIGHTS and not Path(str(weights)).is_file():
        registry_name = str(weights)
    model = load_model(name, weights=registry_name or weights)
    describer = NetworkDescriber(model, preprocessing, device=device, precision=precision, fast=fast, runtime=runtime)
    # A model without default weights (untrained or trunk-only) is stored beside artifacts instead.
    describer.weights_name = registry_name if registry_name and _is_whole_network(registry_name) else None
    return describer


def _is_whole_network(registry_name: str) -> bool:
    """Whether a registry entry holds a whole network (not only the initialisation of a trunk)."""
    from ..models import WEIGHTS

    return registry_name in WEIGHTS and WEIGHTS[registry_name].file_format != "torchvision-mobilenetv2"


def _densevlad(vocabulary: str | os.PathLike | None) -> DenseVLADDescriber:
    from ..models.densevlad import load_densevlad

    try:
        return DenseVLADDescriber(load_densevlad(vocabulary))
    except FileNotFoundError as exc:
        raise DescriberError(str(exc)) from None


def _describer_of_file(path: Path, *, device: str, precision: str, threads: int | None, fast: bool) -> Describer:
    """A model file (checkpoint, ONNX, TorchScript) or an artifact that records its describer."""
    from ..export.runtime import is_exported_model, load_exported_model
    from ..models.checkpoint import is_hierloc_checkpoint, read_checkpoint
    from .stored import is_describer_artifact, load_artifact_describer

    if is_describer_artifact(path):
        return load_artifact_describer(path, device=device, precision=precision, threads=threads, fast=fast)
    if is_exported_model(path):
        return ExportedDescriber(load_exported_model(path, device=device, precision=precision, threads=threads))
    payload = read_checkpoint(path)
    if not is_hierloc_checkpoint(payload):
        raise DescriberError(f"{path}: not a model file hierloc can run (a hierloc checkpoint, ONNX or TorchScript "
                             "export, DenseVLAD vocabulary, index or map)")
    return network_describer(str(payload["model_name"]), path, device=device, precision=precision, fast=fast)


def trained_weights_installed() -> bool:
    """Whether the released MobileNetVLAD weights are available locally (no download is tried)."""
    from ..models.weights import WeightsNotFoundError, resolve_weights

    try:
        resolve_weights(TRAINED_WEIGHTS)
        return True
    except WeightsNotFoundError:
        return False


def default_describer(map_images: Callable[[], Iterable[np.ndarray]] | None, *, device: str = "auto",
                      precision: str = "auto", fast: bool = True) -> NetworkDescriber:
    """The policy for `auto`: the trained MobileNetVLAD when installed, else ImageNet MobileNetV2 + NetVLAD
    with its clusters initialised by k-means on the map's images (NetVLAD's standard start without
    training). `map_images()` yields the map's images; it is called only when adapting."""
    if trained_weights_installed():
        logger.info("global describer: %s with its trained weights", TRAINED_MODEL)
        return network_describer(TRAINED_MODEL, TRAINED_WEIGHTS, device=device, precision=precision, fast=fast)
    if map_images is None:
        raise DescriberError(f"the trained {TRAINED_MODEL} weights are not installed (`hierloc models download "
                             f"{TRAINED_WEIGHTS}`), and adapting {ADAPTABLE_MODEL} needs the map images")
    describer = network_describer(ADAPTABLE_MODEL, "auto", device=device, precision=precision, fast=fast)
    adapt_to_images(describer, map_images())
    return describer


def adaptation_loader(loaders: Sequence[Callable[[], np.ndarray]],
                      limit: int = ADAPTATION_IMAGES) -> Callable[[], list[np.ndarray]]:
    """A lazy loader of up to `limit` of the map's images, spread evenly (only read if a describer adapts)."""
    def load() -> list[np.ndarray]:
        return [loaders[int(i)]() for i in spread_rows(len(loaders), limit)]

    return load


def adapt_to_images(describer: NetworkDescriber, images: Iterable[np.ndarray],
                    max_images: int = ADAPTATION_IMAGES,
                    features_per_image: int = ADAPTATION_FEATURES_PER_IMAGE) -> NetworkDescriber:
    """Initialise the network's NetVLAD clusters by k-means on local features of `images` (in place).

    Images are spread evenly over the given sequence when there are more than `max_images`, and go
    through the describer's preprocessing first, as they will when described.
    """
    from ..extraction import image_to_tensor
    from ..models.aggregation import initialize_vlad_clusters

    images = list(images) if not isinstance(images, Sequence) else images
    if not images:
        raise DescriberError("adapting the global network needs at least one map image")
    rows = spread_rows(len(images), max_images)
    with torch.inference_mode(False):
        initialize_vlad_clusters(describer.model, (image_to_tensor(describer.prepare(images[int(i)])) for i in rows),
                                 features_per_image=features_per_image)
    describer.forget_fingerprint()
    describer.weights_name = None  # the adapted network is the map's own: stored beside it
    logger.info("global describer: %s, NetVLAD clusters initialised by k-means on %d map images",
                describer.name, len(rows))
    return describer
