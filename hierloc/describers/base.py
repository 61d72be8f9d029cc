"""The describer contract: image -> global descriptor, with an identity that artifacts record.

Every global describer hierloc has (a network, an exported ONNX/TorchScript file, DenseVLAD) is a
`Describer`. It owns one `Preprocessing` (resize policy, minimum side, grayscale) that is applied
the same way when a map is indexed and when a query is described, and an identity (`DescriberIdentity`:
kind, name, descriptor size, a SHA-256 of its weights, the preprocessing) that indexes and 3-D maps
store, so that a query can be checked against what built the map.

Subclasses implement `descriptor_dim`, `describe_prepared` (images that already went through the
preprocessing), `weights_sha256` and `write_weights`; `describe` and `describe_batch` apply the
preprocessing first. `describe_prepared` is what batch pipelines call after preparing images in
worker processes.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Sequence

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Largest side accepted for any resize target: beyond this a value is a typo or a hostile file.
MAX_IMAGE_SIDE = 16384


class DescriberError(ValueError):
    """A describer cannot be built, loaded or used as asked."""


class DescriberMismatchError(DescriberError):
    """The describer in use is not the one that built an index or map."""


def _optional_side(value: Any, label: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= MAX_IMAGE_SIDE:
        raise DescriberError(f"preprocessing {label} must be an integer in 1..{MAX_IMAGE_SIDE} or null, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Preprocessing:
    """How an image is prepared before a describer sees it; the same at build and query time.

    Applied in this order: a fixed `resize` to (width, height) if given; otherwise shrink (area
    averaging) so the longest side is at most `resize_max`, then enlarge (bilinear) so the shortest
    side is at least `min_side` (small frames give networks a feature map of one or two cells);
    finally `grayscale` converts colour images to one channel (ITU-R 601 luma).
    """

    resize: tuple[int, int] | None = None
    resize_max: int | None = None
    min_side: int | None = None
    grayscale: bool = False

    def __post_init__(self) -> None:
        if self.resize is not None:
            if len(self.resize) != 2:
                raise DescriberError(f"preprocessing resize must be (width, height), got {self.resize!r}")
            object.__setattr__(self, "resize", tuple(_optional_side(v, "resize") for v in self.resize))
        object.__setattr__(self, "resize_max", _optional_side(self.resize_max, "resize_max"))
        object.__setattr__(self, "min_side", _optional_side(self.min_side, "min_side"))
        if not isinstance(self.grayscale, bool):
            raise DescriberError(f"preprocessing grayscale must be true or false, got {self.grayscale!r}")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The prepared image (a new array where anything changed, else `image` itself)."""
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or 0 in image.shape[:2]:
            raise DescriberError(f"expected an HxW or HxWxC image, got {getattr(image, 'shape', type(image))}")
        height, width = image.shape[:2]
        if self.resize is not None:
            size = self.resize
        else:
            scale = 1.0
            if self.resize_max and max(height, width) > self.resize_max:
                scale = self.resize_max / max(height, width)
            if self.min_side and min(height, width) * scale < self.min_side:
                scale = self.min_side / min(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != (width, height):
            shrinking = size[0] * size[1] < width * height
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        if self.grayscale and image.ndim == 3 and image.shape[2] >= 3:
            image = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
        return image

    def with_overrides(self, **changes: Any) -> Preprocessing:
        """A copy with the given fields changed (None values are kept as given)."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        values = asdict(self)
        values["resize"] = None if self.resize is None else list(self.resize)
        return values

    @classmethod
    def from_json(cls, values: Any) -> Preprocessing:
        """Rebuild from `to_json` output, refusing unknown keys and bad values with one line."""
        if not isinstance(values, dict):
            raise DescriberError(f"preprocessing must be a JSON object, got {type(values).__name__}")
        unknown = set(values) - {"resize", "resize_max", "min_side", "grayscale"}
        if unknown:
            raise DescriberError(f"unknown preprocessing keys {sorted(unknown)}")
        resize = values.get("resize")
        if resize is not None and (not isinstance(resize, (list, tuple)) or len(resize) != 2):
            raise DescriberError(f"preprocessing resize must be [width, height] or null, got {resize!r}")
        return cls(resize=None if resize is None else tuple(resize), resize_max=values.get("resize_max"),
                   min_side=values.get("min_side"), grayscale=values.get("grayscale", False))

    def describe(self) -> str:
        """Human-readable summary, e.g. 'longest side <= 640, shortest side >= 96'."""
        parts = []
        if self.resize:
            parts.append(f"resized to {self.resize[0]}x{self.resize[1]}")
        if self.resize_max:
            parts.append(f"longest side <= {self.resize_max}")
        if self.min_side:
            parts.append(f"shortest side >= {self.min_side}")
        if self.grayscale:
            parts.append("grayscale")
        return ", ".join(parts) or "images as they are"


# The one policy for networks: retrieval needs no detail beyond 640 px, and below a short side of
# 96 px MobileNet/VGG-type trunks (stride 32) pool over fewer than 3 cells across (Nordland's 64x32
# frames: 2x1). Frames already above it are left alone: resampling a 160x120 frame to 171x128 cost
# the demo world half of its recall@1 (0.69 -> 0.31 on 16 queries).
NETWORK_PREPROCESSING = Preprocessing(resize_max=640, min_side=96)
# DenseVLAD resizes inside (its configuration is part of its fitted file): nothing before it.
IDENTITY_PREPROCESSING = Preprocessing()


@dataclass(frozen=True)
class DescriberIdentity:
    """What determines a describer's descriptors: two describers with equal identities agree."""

    kind: str  # "network", "exported" or "densevlad"
    name: str  # model name (hierloc.models.MODEL_SPECS) or "densevlad"
    descriptor_dim: int
    weights_sha256: str | None  # networks: of the state dict's tensors; files: of the file
    preprocessing: Preprocessing

    def mismatch(self, other: DescriberIdentity) -> str | None:
        """Why `other` would give different descriptors than `self`, or None when it gives the same.

        An exported file and the network it was exported from agree (same name and weights
        fingerprint): the kind alone is not a difference.
        """
        if self.name != other.name:
            return f"model {other.name!r} instead of {self.name!r}"
        if self.descriptor_dim != other.descriptor_dim:
            return f"{other.descriptor_dim}-D descriptors instead of {self.descriptor_dim}-D"
        if self.weights_sha256 and other.weights_sha256 and self.weights_sha256 != other.weights_sha256:
            return (f"other weights (sha256 {other.weights_sha256[:12]}... instead of "
                    f"{self.weights_sha256[:12]}...)")
        if self.preprocessing != other.preprocessing:
            return f"other preprocessing ({other.preprocessing.describe()} instead of {self.preprocessing.describe()})"
        return None

    def summary(self) -> str:
        """One line: name, kind, size, weights and preprocessing."""
        weights = f"weights sha256 {self.weights_sha256[:12]}" if self.weights_sha256 else "untrained"
        return (f"{self.name} ({self.kind}, {self.descriptor_dim}-D, {weights}; "
                f"{self.preprocessing.describe()})")


class Describer(abc.ABC):
    """Base of every global describer: numpy images in, float32 unit descriptors out; thread-safe."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str, preprocessing: Preprocessing) -> None:
        self.name = name
        self.preprocessing = preprocessing
        # Set when the weights are a named entry of the registry: artifacts then reference them by name.
        self.weights_name: str | None = None

    @property
    @abc.abstractmethod
    def descriptor_dim(self) -> int:
        """Size of the descriptors."""

    @property
    @abc.abstractmethod
    def weights_sha256(self) -> str | None:
        """Fingerprint of the weights (None for an untrained network is not allowed: hash its tensors)."""

    @abc.abstractmethod
    def describe_prepared(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[N, D] descriptors of images that already went through `self.preprocessing`."""

    @abc.abstractmethod
    def weights_file_suffix(self) -> str:
        """File name suffix of the weights when stored beside an artifact ('.pth', '.onnx', ...)."""

    @abc.abstractmethod
    def write_weights(self, path) -> None:
        """Write the weights to `path` in the form `load_stored_describer` reads back."""

    @property
    def identity(self) -> DescriberIdentity:
        """The identity artifacts record."""
        return DescriberIdentity(self.kind, self.name, int(self.descriptor_dim), self.weights_sha256,
                                 self.preprocessing)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The preprocessing applied to one image (picklable: batch pipelines call it in workers)."""
        return self.preprocessing.apply(image)

    def describe(self, image: np.ndarray) -> np.ndarray:
        """One image -> [D] float32 unit descriptor (the online query path)."""
        return self.describe_prepared([self.preprocessing.apply(image)])[0]

    def describe_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images of any sizes -> [N, D] float32 unit descriptors."""
        return self.describe_prepared([self.preprocessing.apply(image) for image in images])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity.summary()})"
