"""Common interface of local feature extractors: numpy image in, `LocalFeatures` in original pixels out."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from ..utils.images import as_uint8, to_grayscale
from .types import LocalFeatures


@dataclass
class ExtractorConfig:
    """Options every extractor has: a keypoint cap and an optional downscaling of large images."""

    max_keypoints: int = 4096
    resize_max: int | None = None  # longest image side fed to the detector; None keeps the full image


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an HxW or HxWx3 (or x4) image and return it as uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    return as_uint8(image)


class LocalFeatureExtractor(abc.ABC):
    """Detects and describes keypoints; `extract` returns them in the original image's COLMAP pixels.

    Subclasses implement `_detect(image)` on the (possibly resized) image and return keypoints in
    the OpenCV convention of that image (top-left pixel centre at (0, 0)); the base class maps them
    back. `extract` is safe to call from several threads.
    """

    name: ClassVar[str] = ""
    grayscale: ClassVar[bool] = True  # whether `_detect` takes HxW (True) or HxWx3 RGB (False)
    size_multiple: ClassVar[int] = 1  # the network needs sides divisible by this
    # Whether `_detect` computes with torch (on its intra-op threads); False lets a localizer run it beside
    # the retrieval network (see LocalizerConfig.concurrent_stages).
    uses_torch: ClassVar[bool] = True

    def __init__(self, config: ExtractorConfig) -> None:
        if config.max_keypoints is not None and config.max_keypoints < 1:
            raise ValueError(f"max_keypoints must be positive, got {config.max_keypoints}")
        if config.resize_max is not None and config.resize_max < 16:
            raise ValueError(f"resize_max must be at least 16 pixels, got {config.resize_max}")
        self.config = config

    @property
    @abc.abstractmethod
    def descriptor_dim(self) -> int:
        """Size of one descriptor."""

    @abc.abstractmethod
    def _detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """keypoints (N, 2) OpenCV pixels of `image`, descriptors (N, D), scores (N,) [, scales, orientations]."""

    def describe_config(self) -> dict[str, Any]:
        """The extractor's name and configuration, stored with feature files and maps."""
        return {"name": self.name, **dataclasses.asdict(self.config)}

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the image the detector sees."""
        scale = 1.0
        if self.config.resize_max is not None and max(width, height) > self.config.resize_max:
            scale = self.config.resize_max / max(width, height)
        m = self.size_multiple
        new_w = max(m, int(round(width * scale / m)) * m)
        new_h = max(m, int(round(height * scale / m)) * m)
        return new_w, new_h

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Keypoints, descriptors and scores of one image (HxW or HxWx3), keypoints in COLMAP pixels."""
        image = check_image(image)
        height, width = image.shape[:2]
        image = to_grayscale(image) if self.grayscale else (
            np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image)
        new_w, new_h = self.working_size(width, height)
        if (new_w, new_h) != (width, height):
            shrinking = new_w < width and new_h < height
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        out = self._detect(np.ascontiguousarray(image))
        keypoints = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
        # OpenCV pixel of the working image -> COLMAP pixel of the original: the pixel grid scales with the image.
        sx, sy = width / new_w, height / new_h
        keypoints = (keypoints + 0.5) * np.array([sx, sy])
        scales = out.get("scales")
        if scales is not None:
            scales = np.asarray(scales, dtype=np.float32) * float(np.sqrt(sx * sy))
        return LocalFeatures(keypoints, out["descriptors"], out["scores"], (width, height), scales,
                             out.get("orientations"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
