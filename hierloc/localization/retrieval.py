"""The global (retrieval) stage of a 3-D map: which network, its input size, and adapting it to the map."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

logger = logging.getLogger(__name__)

TRAINED_WEIGHTS = "mobilenetvlad_depth-0.35"


@dataclass
class GlobalConfig:
    """Global descriptor network for retrieval; `model` 'auto', 'none' or a name of hierloc.models.MODEL_SPECS."""

    model: str = "auto"
    weights: str = "auto"
    resize_max: int = 640  # longest side of the image given to the network (retrieval needs no detail)


def resize_max_side(image: np.ndarray, resize_max: int | None) -> np.ndarray:
    """The image shrunk (area interpolation) so that its longest side is at most `resize_max`."""
    height, width = image.shape[:2]
    if not resize_max or max(height, width) <= resize_max:
        return image
    scale = resize_max / max(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def needs_adaptation(config: GlobalConfig) -> bool:
    """Whether `prepare_global_model` will initialise NetVLAD clusters on the map images."""
    if config.model in ("none", None):
        return False
    if config.model == "auto":
        from ..models.weights import WeightsNotFoundError, resolve_weights

        try:
            resolve_weights(TRAINED_WEIGHTS)
            return False
        except WeightsNotFoundError:
            return True
    return config.model == "mobilenetvlad_imagenet" and config.weights in ("auto", None)


def prepare_global_model(config: GlobalConfig, map_images: Sequence[np.ndarray] | None = None):
    """(network, {"name", "weights", "resize_max"}, adapted) for a map; None, None, False when retrieval is off.

    'auto' takes the trained MobileNetVLAD when its weights are installed; otherwise the ImageNet
    MobileNetV2 + NetVLAD whose clusters are initialised by k-means on the map images (the
    standard start of NetVLAD without training); that adapted network is saved with the map.
    """
    from ..extraction import image_to_tensor
    from ..models import load_model
    from ..models.aggregation import initialize_vlad_clusters

    if config.model in ("none", None):
        return None, None, False
    adapt = needs_adaptation(config)
    if config.model == "auto" and not adapt:
        name, weights = "mobilenetvlad", TRAINED_WEIGHTS
    elif adapt:
        name, weights = "mobilenetvlad_imagenet", None
    else:
        name, weights = config.model, (None if config.weights in (None, "none") else config.weights)
    model = load_model(name, weights=weights)
    if adapt:
        if not map_images:
            raise ValueError("adapting the global model needs the map images")
        initialize_vlad_clusters(model, (image_to_tensor(im) for im in map_images), features_per_image=200)
        logger.info("global model: %s, NetVLAD clusters initialised by k-means on %d map images", name,
                    len(map_images))
    return model, {"name": name, "weights": weights, "resize_max": config.resize_max}, adapt
